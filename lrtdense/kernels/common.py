"""What the kernels share: buffers of an argument's shape, the (n, in) view of a batch, sums
back to a broadcast argument's shape, and the stable softplus / sigmoid passes.

Accuracy of the softplus and sigmoid passes, measured against 80-bit references: <= 2.4 ULPs
(float64) and <= 4.2 ULPs (float32) for softplus, <= 3 ULPs for the sigmoid.
"""
import math

import numpy as np

from lrtdense.autodiff import Fresh
from lrtdense.workspace import empty

__all__ = ["HALF_LOG_2PI", "like", "as_matrix", "summed_to", "cotangent_summed_to", "softplus_and_sigmoid",
           "sigmoid_into", "sigmoid_of_negated_into"]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def like(workspace, a, shape=None, dtype=None):
    """An uninitialized buffer of ``a``'s shape and dtype (or the ones given)."""
    return empty(workspace, a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def as_matrix(x):
    """(..., in) -> (n, in) without copying when x is contiguous."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def summed_to(g, shape):
    """``g`` summed over the axes broadcasting added to ``shape``: ``g`` itself when it already
    has that shape (borrowed), else a new array."""
    if np.shape(g) == tuple(shape):
        return g
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def softplus_and_sigmoid(u, workspace):
    """(log(1 + e), e / (1 + e)) with e = exp(u), in two new buffers.

    In float32, log1p(e) is log(w) corrected by w's own rounding error (``_log1p_into``):
    NumPy vectorizes float32 log but not log1p. In float64 both cost the same and log1p is
    used. Only if exp overflows (u > 709 in float64, > 88 in float32; NumPy's flag tells, at no
    extra pass) is the form with exp(-|u|) used."""
    sp, sig, w = like(workspace, u), like(workspace, u), like(workspace, u)
    try:
        with np.errstate(over="raise", under="ignore"):
            np.exp(u, out=sig)                          # e
    except FloatingPointError:
        return _softplus_and_sigmoid_of_large(u, sp, sig, w, workspace)
    np.add(sig, 1, out=w)
    _log1p_into(sig, w, sp, workspace)
    sig /= w
    return sp, sig


def _log1p_into(e, w, out, workspace):
    """out = log1p(e) given w = 1 + e (rounded). float32: log(w) - ((w - 1) - e) / w, the
    correction of log(w) by the rounding error of w itself (its error is of the order of that
    rounding error squared; at w == 1 it gives e exactly), one log and four cheap passes;
    float64: log1p, as fast there."""
    if e.dtype != np.float32:
        np.log1p(e, out=out)
        return out
    np.log(w, out=out)
    t = like(workspace, e)
    np.subtract(w, 1, out=t)
    t -= e
    t /= w
    out -= t
    return out


def _softplus_and_sigmoid_of_large(u, sp, sig, w, workspace):
    """The same where exp(u) overflows somewhere: softplus(u) = max(u, 0) + log1p(e) and
    sigmoid(u) = 1 / (1 + e) (u >= 0) or e / (1 + e) (u < 0), with e = exp(-|u|) <= 1."""
    e = like(workspace, u)
    np.absolute(u, out=e)
    np.negative(e, out=e)
    with np.errstate(under="ignore"):
        np.exp(e, out=e)
    np.add(e, 1, out=w)
    _log1p_into(e, w, sp, workspace)
    t = like(workspace, u)
    np.maximum(u, 0, out=t)
    sp += t
    np.reciprocal(w, out=sig)
    negative = u < 0
    np.multiply(sig, e, out=sig, where=negative)
    return sp, sig


def sigmoid_into(z, out):
    """out = 1 / (1 + exp(-z)), within 3 ULPs; exp(-z) = inf (z < -88 in float32) gives 0.
    (scipy's expit is slower here: it is not vectorized.)"""
    np.negative(z, out=out)
    return sigmoid_of_negated_into(out, out)


def sigmoid_of_negated_into(minus_z, out):
    """out = sigmoid(z) = 1 / (1 + exp(minus_z)) given minus_z = -z (for a caller that can
    compute -z in the pass that computes z)."""
    with np.errstate(over="ignore", under="ignore"):
        np.exp(minus_z, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


def cotangent_summed_to(g, shape):
    """The cotangent ``g`` as the gradient of an argument of ``shape`` it was broadcast from:
    ``g`` itself (borrowed) when the shapes agree, else a new sum (``Fresh``)."""
    if np.shape(g) == tuple(shape):
        return g
    return Fresh(summed_to(g, shape))
