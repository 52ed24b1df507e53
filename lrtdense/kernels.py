"""The math of lrtdense, each formula once: array kernels with their gradients beside them.

Every layer, loss, study and the training step computes with these functions and nothing else
restates them. Each is an autograd primitive (``lrtdense.autodiff.custom_vjp``): a forward pass
on plain arrays that keeps the intermediates its gradient needs, and a hand-written
vector-Jacobian product (VJP) that reuses them, so ``autograd.grad`` of anything built from
kernels is exact and cheap. A kernel takes ``workspace=`` (a ``lrtdense.workspace.Workspace``):
its outputs and intermediates then live in reused buffers instead of fresh allocations, with the
same bits. Inputs keep their dtype: float32 stays float32.

Weights w ~ N(loc, scale**2) independently (a mean-field Normal posterior); x contracts on its
last axis, (..., in) with (in, units); the kernel terms of the three estimators:

==========================  ==========================================================  ========
kernel                      output (..., units)                                         noise
==========================  ==========================================================  ========
``lrt``                     m + s * eps,  m = x @ loc,  s = sqrt0((x**2) @ scale**2)    (..., units)
``reparameterization``      x @ W,  W = eps * scale + loc (one W for the batch)         (in, units)
``flipout``                 x @ loc + ((x * sign_in) @ (eps * scale)) * sign_out        (in, units)
``per_example``             x_b @ (loc + scale * eps_b), one W per example (naive)       (B, in, units)
==========================  ==========================================================  ========

(Kingma et al. 2015, arXiv 1506.02557; Wen et al. 2018, arXiv 1803.04386.) Around them:
``posterior_scale`` (TF's softplus + eps), ``normal_sample``, ``dense`` (x @ w), ``add_bias``,
the activations, the divergences (``kl_normal_normal``, ``kl_deterministic_normal``, the
variational dropout approximations ``kl_kingma`` and ``kl_molchanov`` with their
parameterizations) and the likelihoods (``categorical_nll``, ``gaussian_nll``).

Conventions where calculus leaves a choice, all TensorFlow's:

* zero variance: s = sqrt0(u) has derivative 0 at u = 0 (an all-zero input row), where TF's
  sqrt gives 0 * inf = NaN (``sqrt0``, and inside ``lrt``);
* ties: relu'(0) = 0; elu'(0) = 1 (TF's EluGrad reads the output: g * (y + 1) where y < 0,
  else g); a clip passes the gradient at its bounds (lo <= x <= hi), as ``tf.minimum``,
  ``tf.maximum`` and ``tf.clip_by_value`` do;
* softplus(u) = log1p(exp(u)) (exact to rounding; TF's thresholded formula, which returns
  exp(u) below log(eps) + 2 and u above its negative, agrees to 8.2e-16 relative in float64 and
  4.4e-7 in float32, at its thresholds), with derivative
  sigmoid(u) = e / (1 + e), e = exp(u); where exp overflows the stable forms are used.
"""
import math

import numpy as np
from autograd.extend import defvjp, primitive

from lrtdense.autodiff import add_into, custom_vjp
from lrtdense.workspace import empty

__all__ = [
    "posterior_scale", "softplus", "sqrt0", "normal_sample", "dense", "lrt", "lrt_moments",
    "reparameterization", "flipout", "per_example", "add_bias", "relu", "tanh", "sigmoid",
    "elu", "ACTIVATIONS", "kl_normal_normal", "kl_deterministic_normal", "clip",
    "kl_kingma", "kl_molchanov", "scale_from_log_alpha", "scale_from_log_variance",
    "sparse_log_alpha", "categorical_nll", "gaussian_nll", "KINGMA_C", "MOLCHANOV_K",
    "normal_log_prob", "normal_log_prob_of_sample", "scale_mixture_log_prob",
    "laplace_log_prob", "student_t_log_prob",
    "THETA2_EPS",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
KINGMA_C = (1.16145124, -1.50204118, 0.58629921)      # c1, c2, c3 (arXiv 1506.02557)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)             # k1, k2, k3 (arXiv 1701.05369)
THETA2_EPS = 1e-8                                     # in log(theta**2 + eps) (Molchanov's code)


def _like(workspace, a, shape=None, dtype=None):
    return empty(workspace, a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def _matrix(x):
    """(..., in) -> (n, in) without copying when x is contiguous."""
    return x if x.ndim == 2 else x.reshape(-1, x.shape[-1])


def _grads(argnums, table):
    return tuple(table[i]() for i in argnums)


# ------------------------------------------------------------------------ softplus, scales
def _softplus_and_sigmoid(u, workspace):
    """(log(1 + e), e / (1 + e)) with e = exp(u), in two buffers.

    In float32, log1p(e) is log(w) corrected by w's own rounding error (``_log1p_into``):
    NumPy vectorizes float32 log but not log1p (0.54 against 1.6 ms for 313,600 elements here).
    In float64 both cost the same and log1p is used. Only if exp overflows (u > 709 in float64,
    > 88 in float32; NumPy's flag tells, at no extra pass) is the form with exp(-|u|) used.
    Measured against 80-bit references: <= 2.4 ULPs (float64), <= 4.2 ULPs (float32) for
    softplus; <= 3 ULPs for the sigmoid."""
    sp, sig, w = _like(workspace, u), _like(workspace, u), _like(workspace, u)
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
    t = _like(workspace, e)
    np.subtract(w, 1, out=t)
    t -= e
    t /= w
    out -= t
    return out


def _softplus_and_sigmoid_of_large(u, sp, sig, w, workspace):
    """The same where exp(u) overflows somewhere: softplus(u) = max(u, 0) + log1p(e) and
    sigmoid(u) = 1 / (1 + e) (u >= 0) or e / (1 + e) (u < 0), with e = exp(-|u|) <= 1."""
    e = _like(workspace, u)
    np.absolute(u, out=e)
    np.negative(e, out=e)
    with np.errstate(under="ignore"):
        np.exp(e, out=e)
    np.add(e, 1, out=w)
    _log1p_into(e, w, sp, workspace)
    t = _like(workspace, u)
    np.maximum(u, 0, out=t)
    sp += t
    np.reciprocal(w, out=sig)
    negative = u < 0
    np.multiply(sig, e, out=sig, where=negative)
    return sp, sig


def _sigmoid_into(z, out):
    """out = 1 / (1 + exp(-z)), within 3 ULPs; exp(-z) = inf (z < -88 in float32) gives 0.
    (scipy's expit is not vectorized here: 4.3 against 1.7 ns per float32 element.)"""
    np.negative(z, out=out)
    return _sigmoid_of_negated_into(out, out)


def _sigmoid_of_negated_into(minus_z, out):
    """out = sigmoid(z) = 1 / (1 + exp(minus_z)) given minus_z = -z (for a caller that can
    compute -z in the pass that computes z)."""
    with np.errstate(over="ignore", under="ignore"):
        np.exp(minus_z, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


def _posterior_scale_fwd(u, *, needs, workspace=None):
    scale, sig = _softplus_and_sigmoid(u, workspace)
    scale += np.finfo(u.dtype).eps
    return scale, (sig, workspace)


def _times_sigmoid_bwd(res, g, argnums):
    sig, ws = res
    out = _like(ws, sig)
    np.multiply(g, sig, out=out)
    return (out,)


posterior_scale = custom_vjp(_posterior_scale_fwd, _times_sigmoid_bwd, "posterior_scale")
posterior_scale.__doc__ = """TFP's posterior scale softplus(u) + finfo(dtype).eps, d/du = sigmoid(u).

Args:
  u: untransformed scale, float array of any shape (float32 or float64).
  workspace: optional Workspace for the output.
Returns:
  scale, u's shape and dtype (> 0).
"""


def _softplus_fwd(u, *, needs, workspace=None):
    sp, sig = _softplus_and_sigmoid(u, workspace)
    return sp, (sig, workspace)


softplus = custom_vjp(_softplus_fwd, _times_sigmoid_bwd, "softplus")
softplus.__doc__ = """softplus(u) = log(1 + exp(u)) (TF's ``tf.nn.softplus``), d/du = sigmoid(u)."""


@primitive
def sqrt0(u):
    """sqrt(u) whose derivative at u == 0 is taken as 0 (the zero-variance convention).

    In the local reparameterization trick u = (x**2) @ (scale**2) is 0 exactly when an input
    row is all zeros, and d sqrt(u) / du = 1 / (2 sqrt(u)) is infinite there: TFP's gradient is
    then 0 * inf = NaN for every parameter. The limit is 0 (that row's output does not depend
    on the scales at all), so the cotangent flowing back through sqrt0 at u == 0 is 0. Outputs
    are unchanged.

    Args:
      u: non-negative float array, any shape.
    Returns:
      sqrt(u), same shape and dtype.
    """
    return np.sqrt(u)


def _sqrt0_vjp(ans, u):
    def vjp(g):
        out = np.zeros_like(ans)
        np.divide(g, 2 * ans, out=out, where=ans > 0)
        return out
    return vjp


defvjp(sqrt0, _sqrt0_vjp)


def _normal_sample_fwd(loc, scale, eps, *, needs, workspace=None):
    w = _like(workspace, loc, np.broadcast_shapes(loc.shape, np.shape(scale), eps.shape))
    np.multiply(eps, scale, out=w)
    w += loc
    return w, (loc, scale, eps, workspace)


def _normal_sample_bwd(res, g, argnums):
    loc, scale, eps, ws = res

    def times(a, shape):                    # g * a, summed to the argument's shape
        if np.shape(g) != tuple(shape):
            return _unbroadcast(g * a, shape)
        out = _like(ws, g)
        np.multiply(g, a, out=out)
        return out

    return _grads(argnums, {0: lambda: _unbroadcast(g, loc.shape),
                            1: lambda: times(eps, np.shape(scale)),
                            2: lambda: times(scale, eps.shape)})


normal_sample = custom_vjp(_normal_sample_fwd, _normal_sample_bwd, "normal_sample")
normal_sample.__doc__ = """A draw of N(loc, scale**2) from standard normals: eps * scale + loc."""


def _unbroadcast(g, shape):
    if np.shape(g) == tuple(shape):
        return g
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


# ----------------------------------------------------------------------- the kernel terms
def _dense_fwd(x, w, *, needs, workspace=None):
    x2 = _matrix(x)
    out = _like(workspace, x2, (x2.shape[0], w.shape[1]))
    np.matmul(x2, w, out=out)
    return out.reshape(x.shape[:-1] + (w.shape[1],)), (x2, w, x.shape, workspace)


def _dense_bwd(res, g, argnums):
    x2, w, x_shape, ws = res
    g2 = _matrix(g)

    def dx():
        out = _like(ws, x2)
        np.matmul(g2, w.T, out=out)
        return out.reshape(x_shape)

    def dw():
        out = _like(ws, w)
        np.matmul(x2.T, g2, out=out)
        return out

    return _grads(argnums, {0: dx, 1: dw})


dense = custom_vjp(_dense_fwd, _dense_bwd, "dense")
dense.__doc__ = """x @ w contracting x's last axis: (..., in) with (in, units) -> (..., units)."""


def _input_cotangent(ws, g, loc, a, b, c, shape):
    """g @ loc.T + (a @ b.T) * c, reshaped to x's shape: the cotangent of x in a kernel term
    x @ loc + f(x), whose second part contributes (a @ b.T) * c."""
    out, t = _like(ws, c), _like(ws, c)
    np.matmul(g, loc.T, out=out)
    np.matmul(a, b.T, out=t)
    t *= c
    out += t
    return out.reshape(shape)


def lrt_moments(x, loc, scale, workspace=None):
    """The pre-activations' mean and standard deviation under w ~ N(loc, scale**2).

    Args:
      x: (n, in) (plain arrays; see ``lrt`` for the differentiable output).
      loc, scale: (in, units).
    Returns:
      (m, s), both (n, units): m = x @ loc, s = sqrt((x**2) @ scale**2).
    """
    m = _like(workspace, x, (x.shape[0], loc.shape[1]))
    np.matmul(x, loc, out=m)
    xx, s2 = _like(workspace, x), _like(workspace, scale)
    np.multiply(x, x, out=xx)
    np.multiply(scale, scale, out=s2)
    s = _like(workspace, m)
    np.matmul(xx, s2, out=s)
    np.sqrt(s, out=s)
    return m, s


def _lrt_fwd(x, loc, scale, eps, *, needs, workspace=None):
    ws = workspace
    x2 = _matrix(x)
    n, units = x2.shape[0], loc.shape[1]
    s2, xx = _like(ws, scale), _like(ws, x2)
    np.multiply(scale, scale, out=s2)
    np.multiply(x2, x2, out=xx)
    out, s = _like(ws, x2, (n, units)), _like(ws, x2, (n, units))
    np.matmul(x2, loc, out=out)
    np.matmul(xx, s2, out=s)
    np.sqrt(s, out=s)
    e = _matrix(eps)
    t = _like(ws, s)
    np.multiply(e, s, out=t)
    out += t                                            # m + s * eps
    q = None
    if needs[0] or needs[2]:                            # q = eps / s, 0 where s == 0
        q = t
        try:    # the flags say at no extra pass whether some s == 0 (x / 0 or 0 / 0)
            with np.errstate(divide="raise", invalid="raise"):
                np.divide(e, s, out=q)
        except FloatingPointError:      # raised after the whole division is written
            q[s == 0] = 0
    res = (x2, xx if needs[2] else None, s2 if needs[0] else None, q, loc, scale,
           s if needs[3] else None, x.shape, ws)
    return out.reshape(x.shape[:-1] + (units,)), res


def _lrt_bwd(res, g, argnums):
    x2, xx, s2, q, loc, scale, s, x_shape, ws = res
    g2 = _matrix(g)
    r = None
    if 0 in argnums or 2 in argnums:        # r = g eps / s: 2 d(s**2), where s > 0
        r = _like(ws, g2)
        np.multiply(g2, q, out=r)

    def dx():                               # g @ loc.T + x * (r @ (scale**2).T)
        return _input_cotangent(ws, g2, loc, r, s2, x2, x_shape)

    def dloc():                             # x.T @ g
        out = _like(ws, loc)
        np.matmul(x2.T, g2, out=out)
        return out

    def dscale():                           # 2 scale d(scale**2) = scale ((x**2).T @ r)
        out = _like(ws, scale)
        np.matmul(xx.T, r, out=out)
        out *= scale
        return out

    def deps():
        return (g2 * s).reshape(g.shape)

    return _grads(argnums, {0: dx, 1: dloc, 2: dscale, 3: deps})


lrt = custom_vjp(_lrt_fwd, _lrt_bwd, "lrt")
lrt.__doc__ = """The local reparameterization trick: the pre-activations sampled directly.

m + s * eps with m = x @ loc and s = sqrt0((x**2) @ scale**2): for w ~ N(loc, scale**2), each
pre-activation of each example is N(m, s**2), drawn with its own eps (Kingma et al. 2015,
arXiv 1506.02557). Gradients follow the zero-variance convention at s == 0.

Args:
  x: (..., in).
  loc, scale: (in, units), scale >= 0.
  eps: (..., units) standard normals.
  workspace: optional Workspace.
Returns:
  (..., units).
"""


def _reparameterization_fwd(x, loc, scale, eps, *, needs, workspace=None):
    ws = workspace
    x2 = _matrix(x)
    w, _ = _normal_sample_fwd(loc, scale, eps, needs=needs, workspace=ws)
    out = _like(ws, x2, (x2.shape[0], loc.shape[1]))
    np.matmul(x2, w, out=out)
    return out.reshape(x.shape[:-1] + (loc.shape[1],)), (x2, w, scale, eps, x.shape, ws)


def _reparameterization_bwd(res, g, argnums):
    x2, w, scale, eps, x_shape, ws = res
    g2 = _matrix(g)
    dw = None
    if {1, 2, 3} & set(argnums):
        dw = _like(ws, w)
        np.matmul(x2.T, g2, out=dw)

    def dx():
        out = _like(ws, x2)
        np.matmul(g2, w.T, out=out)
        return out.reshape(x_shape)

    def times(a):
        out = _like(ws, dw)
        np.multiply(dw, a, out=out)
        return out

    return _grads(argnums, {0: dx, 1: lambda: dw, 2: lambda: times(eps),
                            3: lambda: times(scale)})


reparameterization = custom_vjp(_reparameterization_fwd, _reparameterization_bwd,
                                "reparameterization")
reparameterization.__doc__ = """One kernel sample for the whole batch: x @ (eps * scale + loc).

TFP's DenseReparameterization. Args: x (..., in); loc, scale, eps (in, units). Returns (..., units).
"""


def _flipout_fwd(x, loc, scale, eps, sign_in, sign_out, *, needs, workspace=None):
    ws = workspace
    x2 = _matrix(x)
    n, units = x2.shape[0], loc.shape[1]
    si, so = _matrix(sign_in), _matrix(sign_out)
    xs = _like(ws, x2)
    np.multiply(x2, si, out=xs)
    dw = _like(ws, scale)
    np.multiply(eps, scale, out=dw)
    out, p = _like(ws, x2, (n, units)), _like(ws, x2, (n, units))
    np.matmul(x2, loc, out=out)
    np.matmul(xs, dw, out=p)
    p *= so
    out += p                                            # mean + perturbation
    return out.reshape(x.shape[:-1] + (units,)), (x2, xs, dw, loc, scale, eps, si, so, x.shape, ws)


def _flipout_bwd(res, g, argnums):
    x2, xs, dw, loc, scale, eps, si, so, x_shape, ws = res
    g2 = _matrix(g)
    gs = _like(ws, g2)
    np.multiply(g2, so, out=gs)                         # cotangent of the perturbation product

    def dx():                                           # g @ loc.T + (gs @ dw.T) * sign_in
        return _input_cotangent(ws, g2, loc, gs, dw, si, x_shape)

    def dloc():
        out = _like(ws, loc)
        np.matmul(x2.T, g2, out=out)
        return out

    def ddw(factor):                                    # (xs.T @ gs) * factor
        out = _like(ws, dw)
        np.matmul(xs.T, gs, out=out)
        out *= factor
        return out

    def dsign_in():
        t = gs @ dw.T
        return (t * x2).reshape(x_shape)

    def dsign_out():
        return (g2 * (xs @ dw)).reshape(g.shape)

    return _grads(argnums, {0: dx, 1: dloc, 2: lambda: ddw(eps), 3: lambda: ddw(scale),
                            4: dsign_in, 5: dsign_out})


flipout = custom_vjp(_flipout_fwd, _flipout_bwd, "flipout")
flipout.__doc__ = """Flipout (Wen et al. 2018, arXiv 1803.04386): one perturbation eps * scale
per batch, decorrelated across examples by random signs.

x @ loc + ((x * sign_in) @ (eps * scale)) * sign_out. Args: x (..., in); loc, scale, eps
(in, units); sign_in x's shape; sign_out (..., units), of +-1. Returns (..., units).
"""


def _per_example_fwd(x, loc, scale, eps, *, needs, workspace=None):
    x2 = _matrix(x)
    e = eps.reshape((x2.shape[0],) + loc.shape)
    w = loc + scale * e                                 # (n, in, units): one kernel per example
    out = np.einsum("bi,bio->bo", x2, w)
    return out.reshape(x.shape[:-1] + (loc.shape[1],)), (x2, w, scale, e, x.shape)


def _per_example_bwd(res, g, argnums):
    x2, w, scale, e, x_shape = res
    g2 = _matrix(g)
    dw = None if {1, 2, 3}.isdisjoint(argnums) else np.einsum("bi,bo->bio", x2, g2)
    return _grads(argnums, {
        0: lambda: np.einsum("bo,bio->bi", g2, w).reshape(x_shape),
        1: lambda: dw.sum(axis=0),
        2: lambda: (dw * e).sum(axis=0),
        3: lambda: (dw * scale).reshape((-1,) + scale.shape)})


per_example = custom_vjp(_per_example_fwd, _per_example_bwd, "per_example")
per_example.__doc__ = """Explicit per-example weight samples, the naive estimator the local
reparameterization trick replaces: output b is x_b @ (loc + scale * eps_b).

Args: x (..., in); loc, scale (in, units); eps (n, in, units) with n = prod(x.shape[:-1]).
Returns (..., units). Costs n times the kernel's memory: for teaching and checking, not training.
"""


def _add_bias_fwd(z, b, *, needs, workspace=None):
    out = _like(workspace, z)
    np.add(z, b, out=out)
    return out, (z.shape, b, workspace)


def _add_bias_bwd(res, g, argnums):
    z_shape, b, ws = res

    def db():
        out = _like(ws, b)
        np.sum(_matrix(g), axis=0, out=out)
        return out

    return _grads(argnums, {0: lambda: g, 1: db})


add_bias = custom_vjp(_add_bias_fwd, _add_bias_bwd, "add_bias")
add_bias.__doc__ = """z + b with b (units,) broadcast over z (..., units)."""


# ----------------------------------------------------------------------------- activations
def _relu_fwd(z, *, needs, workspace=None):
    h = _like(workspace, z)
    np.maximum(z, 0, out=h)
    return h, (h, workspace)


def _relu_bwd(res, g, argnums):
    h, ws = res
    mask, out = _like(ws, h, dtype=bool), _like(ws, h)
    np.greater(h, 0, out=mask)                          # relu'(0) = 0
    np.multiply(g, mask, out=out)
    return (out,)


def _tanh_fwd(z, *, needs, workspace=None):
    h = _like(workspace, z)
    np.tanh(z, out=h)
    return h, (h, workspace)


def _tanh_bwd(res, g, argnums):
    h, ws = res
    out = _like(ws, h)
    np.multiply(h, h, out=out)                          # g (1 - h**2), as TF's TanhGrad
    np.subtract(1, out, out=out)
    out *= g
    return (out,)


def _sigmoid_fwd(z, *, needs, workspace=None):
    h = _sigmoid_into(z, _like(workspace, z))
    return h, (h, workspace)


def _sigmoid_bwd(res, g, argnums):
    h, ws = res
    out = _like(ws, h)
    np.subtract(1, h, out=out)                          # g h (1 - h), as TF's SigmoidGrad
    out *= h
    out *= g
    return (out,)


def _elu_fwd(z, *, needs, workspace=None):
    h, mask = _like(workspace, z), _like(workspace, z, dtype=bool)
    np.minimum(z, 0, out=h)
    np.expm1(h, out=h)
    np.greater(z, 0, out=mask)
    np.copyto(h, z, where=mask)                         # z if z > 0 else expm1(z)
    return h, (h, workspace)


def _elu_bwd(res, g, argnums):
    h, ws = res
    out, mask = _like(ws, h), _like(ws, h, dtype=bool)
    np.add(h, 1, out=out)                               # TF's EluGrad: g (h + 1) where h < 0,
    np.greater_equal(h, 0, out=mask)                    # else g: elu'(0) = 1
    np.copyto(out, 1, where=mask)
    out *= g
    return (out,)


relu = custom_vjp(_relu_fwd, _relu_bwd, "relu")
relu.__doc__ = """max(z, 0); relu'(0) = 0 (TensorFlow's)."""
tanh = custom_vjp(_tanh_fwd, _tanh_bwd, "tanh")
tanh.__doc__ = """tanh(z), derivative 1 - tanh(z)**2."""
sigmoid = custom_vjp(_sigmoid_fwd, _sigmoid_bwd, "sigmoid")
sigmoid.__doc__ = """1 / (1 + exp(-z)), derivative sigmoid(z) (1 - sigmoid(z))."""
elu = custom_vjp(_elu_fwd, _elu_bwd, "elu")
elu.__doc__ = """Keras' elu with alpha = 1: z if z > 0 else exp(z) - 1; elu'(0) = 1 (TF's)."""


def _linear(z, workspace=None):
    return z


ACTIVATIONS = {"linear": _linear, "relu": relu, "tanh": tanh, "sigmoid": sigmoid,
               "softplus": softplus, "elu": elu}


# ----------------------------------------------------------------------------- divergences
def _kl_normal_normal_fwd(loc, scale, prior_loc, prior_scale, *, needs, workspace=None):
    if np.ndim(prior_loc) or np.ndim(prior_scale) or needs[2] or needs[3]:
        return _kl_normal_normal_elementwise(loc, scale, prior_loc, prior_scale)
    # sum 0.5 ((loc - mp) / sp)**2 + 0.5 (scale / sp)**2 - 0.5 - log scale + log sp, by
    # reductions (BLAS dots and one log pass) instead of ~8 passes per element
    mp, sp = float(prior_loc), float(prior_scale)
    n = loc.size
    flat = loc.reshape(-1)
    if mp == 0:
        sq = float(flat @ flat)
    else:
        d = _like(workspace, flat)
        np.subtract(flat, mp, out=d)
        sq = float(d @ d)
    flat_scale = scale.reshape(-1)
    ss = float(flat_scale @ flat_scale)
    logs = _like(workspace, scale)
    np.log(scale, out=logs)
    kl = 0.5 * (sq + ss) / sp ** 2 - float(logs.sum()) + n * (math.log(sp) - 0.5)
    return loc.dtype.type(kl), ("sums", loc, scale, mp, sp, workspace)


def _kl_normal_normal_elementwise(loc, scale, mp, sp):
    """TFP's per-element form, for a prior with its own (trainable) loc and scale arrays."""
    z = (loc - mp) / sp
    d = np.log(scale) - np.log(sp)
    kl = np.sum(0.5 * z * z + 0.5 * np.expm1(2.0 * d) - d)
    return loc.dtype.type(kl), ("elements", loc, scale, mp, sp, z)


def _kl_normal_normal_bwd(res, g, argnums):
    if res[0] == "elements":
        _, loc, scale, mp, sp, z = res
        g = float(g)
        r = scale / sp
        return _grads(argnums, {
            0: lambda: g * z / sp,
            1: lambda: g * (r / sp - 1.0 / scale),
            2: lambda: _unbroadcast(-g * z / sp, np.shape(mp)),
            3: lambda: _unbroadcast(g * (1.0 - z * z - r * r) / sp, np.shape(sp))})
    _, loc, scale, mp, sp, ws = res
    c = float(g) / sp ** 2

    def dloc(out):                          # += g (loc - mp) / sp**2
        t = _like(ws, loc)
        if mp == 0:
            np.multiply(loc, c, out=t)
        else:
            np.subtract(loc, mp, out=t)
            t *= c
        out += t

    def dscale(out):                        # += g (scale / sp**2 - 1 / scale)
        t = _like(ws, scale)
        np.multiply(scale, c, out=t)
        out += t
        np.divide(float(g), scale, out=t)
        out -= t

    return _grads(argnums, {0: lambda: add_into(loc, dloc), 1: lambda: add_into(scale, dscale)})


kl_normal_normal = custom_vjp(_kl_normal_normal_fwd, _kl_normal_normal_bwd, "kl_normal_normal")
kl_normal_normal.__doc__ = """sum over elements of KL(N(loc, scale**2) || N(prior_loc, prior_scale**2)).

Per element 0.5 ((loc - mp) / sp)**2 + 0.5 (scale / sp)**2 - 0.5 - log(scale / sp), which is
TFP's ``_kl_normal_normal`` (0.5 ((loc - mp) / sp)**2 + 0.5 expm1(2 d) - d, d = log scale -
log sp) rearranged; summed by reductions, in float64 arithmetic on the dtype's sums.

Args:
  loc, scale: arrays of one shape, scale > 0.
  prior_loc, prior_scale: numbers (a fixed prior: summed by reductions), or arrays
    broadcastable to loc's shape (a trainable prior: TFP's per-element form, differentiable in
    them too), prior_scale > 0.
Returns:
  a scalar of loc's dtype.
"""


def _kl_deterministic_normal_fwd(loc, prior_loc, prior_scale, *, needs, workspace=None):
    mp, sp = float(prior_loc), float(prior_scale)
    z = (loc - mp) / sp
    kl = float(0.5 * (z @ z) if z.ndim == 1 else 0.5 * np.sum(z * z))
    kl += loc.size * (_HALF_LOG_2PI + math.log(sp))
    return loc.dtype.type(kl), (z, sp)


def _kl_deterministic_normal_bwd(res, g, argnums):
    z, sp = res
    if argnums != (0,):
        raise NotImplementedError("kl_deterministic_normal: only the gradient w.r.t. loc")
    return ((float(g) / sp) * z,)


kl_deterministic_normal = custom_vjp(_kl_deterministic_normal_fwd, _kl_deterministic_normal_bwd,
                                     "kl_deterministic_normal")
kl_deterministic_normal.__doc__ = """sum -log N(loc; prior_loc, prior_scale**2) over elements: TFP's KL of
a point mass Deterministic(loc) from a Normal (its infinite entropy term left out).

Args: loc array; prior_loc, prior_scale numbers (not differentiated). Returns a scalar.
"""


def _clip_fwd(x, lo, hi, *, needs, workspace=None):
    out = _like(workspace, x)
    np.clip(x, lo, hi, out=out)
    return out, (x, out, workspace)


def _clip_bwd(res, g, argnums):
    x, clipped, ws = res
    if argnums != (0,):
        raise NotImplementedError("clip: only the gradient w.r.t. x")
    inside = _like(ws, x, dtype=bool)
    np.equal(clipped, x, out=inside)                    # lo <= x <= hi: passes at the bounds, as TF's
    out = _like(ws, x)
    np.multiply(g, inside, out=out)
    return (out,)


clip = custom_vjp(_clip_fwd, _clip_bwd, "clip")
clip.__doc__ = """min(max(x, lo), hi); the gradient passes where lo <= x <= hi (TF's tie rule)."""


def _kl_kingma_fwd(log_alpha, *, needs, workspace=None):
    c1, c2, c3 = KINGMA_C
    a = _like(workspace, log_alpha)
    np.exp(log_alpha, out=a)
    poly = _like(workspace, log_alpha)
    np.multiply(a, c3, out=poly)                        # a (c1 + a (c2 + a c3))
    poly += c2
    poly *= a
    poly += c1
    poly *= a
    kl = log_alpha.size * MOLCHANOV_K[0] - 0.5 * float(log_alpha.sum()) - float(poly.sum())
    return log_alpha.dtype.type(kl), (a, workspace)


def _kl_kingma_bwd(res, g, argnums):
    a, ws = res
    c1, c2, c3 = KINGMA_C
    out = _like(ws, a)
    np.multiply(a, 3 * c3, out=out)                     # -g (0.5 + a (c1 + a (2 c2 + 3 c3 a)))
    out += 2 * c2
    out *= a
    out += c1
    out *= a
    out += 0.5
    out *= -float(g)
    return (out,)


kl_kingma = custom_vjp(_kl_kingma_fwd, _kl_kingma_bwd, "kl_kingma")
kl_kingma.__doc__ = """Kingma et al.'s approximation of KL(q || log-uniform), summed over weights.

k1 - (0.5 log a + c1 a + c2 a**2 + c3 a**3) per weight, a = exp(log_alpha) <= 1 (arXiv
1506.02557, eq. 7, with the constant C = -k1 of Molchanov et al. so that both approximations
share one normalisation). Args: log_alpha (already clipped to <= 0). Returns a scalar.
"""


def _kl_molchanov_fwd(log_alpha, *, needs, workspace=None):
    k1, k2, k3 = MOLCHANOV_K
    s = _like(workspace, log_alpha)
    np.multiply(log_alpha, -k3, out=s)                  # -(k2 + k3 log a), bit for bit
    s -= k2
    _sigmoid_of_negated_into(s, s)                      # sigmoid(k2 + k3 log a)
    minus = _like(workspace, log_alpha)
    np.negative(log_alpha, out=minus)
    sp, sig = _softplus_and_sigmoid(minus, workspace)   # log(1 + 1 / a), sigmoid(-log a)
    kl = log_alpha.size * k1 - k1 * float(s.sum()) + 0.5 * float(sp.sum())
    return log_alpha.dtype.type(kl), (s, sig, workspace)


def _kl_molchanov_bwd(res, g, argnums):
    s, sig, ws = res
    k1, k2, k3 = MOLCHANOV_K
    g = float(g)
    out, t = _like(ws, s), _like(ws, s)
    np.subtract(1, s, out=out)                          # g (-k1 k3 s (1 - s) - 0.5 sigmoid(-log a))
    out *= s
    out *= -k1 * k3 * g
    np.multiply(sig, 0.5 * g, out=t)
    out -= t
    return (out,)


kl_molchanov = custom_vjp(_kl_molchanov_fwd, _kl_molchanov_bwd, "kl_molchanov")
kl_molchanov.__doc__ = """Molchanov et al.'s approximation of KL(q || log-uniform), summed over weights.

k1 - k1 sigmoid(k2 + k3 log a) + 0.5 log(1 + 1 / a) per weight (arXiv 1701.05369, eq. 14);
it vanishes as log a -> infinity. Args: log_alpha, any shape. Returns a scalar.
"""


def _scale_from_log_alpha_fwd(theta, log_alpha, *, needs, workspace=None):
    e = _like(workspace, log_alpha)
    np.multiply(log_alpha, 0.5, out=e)
    np.exp(e, out=e)                                    # sqrt(alpha)
    out = _like(workspace, theta)
    np.absolute(theta, out=out)
    out *= e
    return out, (theta, e, out, workspace)


def _scale_from_log_alpha_bwd(res, g, argnums):
    theta, e, scale, ws = res

    def dtheta():                           # g sqrt(alpha) sign(theta)
        out = _like(ws, theta)
        np.sign(theta, out=out)
        out *= e
        out *= g
        return out

    def dlog_alpha():                       # g scale / 2
        out = _like(ws, scale)
        np.multiply(g, scale, out=out)
        out *= 0.5
        return out

    return _grads(argnums, {0: dtheta, 1: dlog_alpha})


scale_from_log_alpha = custom_vjp(_scale_from_log_alpha_fwd, _scale_from_log_alpha_bwd,
                                  "scale_from_log_alpha")
scale_from_log_alpha.__doc__ = """The weight's standard deviation sqrt(alpha) |theta| of Gaussian
multiplicative noise w = theta (1 + sqrt(alpha) eps) (Kingma et al. 2015)."""


def _scale_from_log_variance_fwd(log_variance, *, needs, workspace=None):
    out = _like(workspace, log_variance)
    np.multiply(log_variance, 0.5, out=out)
    np.exp(out, out=out)
    return out, (out, workspace)


def _scale_from_log_variance_bwd(res, g, argnums):
    scale, ws = res
    out = _like(ws, scale)
    np.multiply(g, scale, out=out)
    out *= 0.5
    return (out,)


scale_from_log_variance = custom_vjp(_scale_from_log_variance_fwd, _scale_from_log_variance_bwd,
                                     "scale_from_log_variance")
scale_from_log_variance.__doc__ = """exp(log_variance / 2): the standard deviation of the additive
reparameterization q(w) = N(theta, sigma**2) (Molchanov et al. 2017)."""


def _sparse_log_alpha_fwd(theta, log_sigma2, lo, hi, *, needs, workspace=None):
    ws = workspace
    t2 = _like(ws, theta)
    np.multiply(theta, theta, out=t2)
    t2 += THETA2_EPS
    raw = _like(ws, theta)
    np.log(t2, out=raw)
    np.subtract(log_sigma2, raw, out=raw)               # log sigma2 - log(theta**2 + 1e-8)
    out = _like(ws, theta)
    np.clip(raw, lo, hi, out=out)
    mask = _like(ws, theta, dtype=bool)
    np.equal(out, raw, out=mask)                        # lo <= raw <= hi (NaN: False either way)
    return out, (theta, t2, mask, ws)


def _sparse_log_alpha_bwd(res, g, argnums):
    theta, t2, mask, ws = res
    gm = _like(ws, theta)
    np.multiply(g, mask, out=gm)                        # the clip passes at its bounds

    def dtheta():                           # -gm 2 theta / (theta**2 + 1e-8)
        out = _like(ws, theta)
        np.multiply(theta, -2.0, out=out)
        out /= t2
        out *= gm
        return out

    return _grads(argnums, {0: dtheta, 1: lambda: gm})


sparse_log_alpha = custom_vjp(_sparse_log_alpha_fwd, _sparse_log_alpha_bwd, "sparse_log_alpha")
sparse_log_alpha.__doc__ = """clip(log sigma2 - log(theta**2 + 1e-8), lo, hi): log alpha of sparse
variational dropout (Molchanov et al. 2017, with their code's 1e-8 and clip to [-8, 8])."""


# ------------------------------------------------------------------------ prior densities
def _normal_log_prob_fwd(w, loc, scale, *, needs, workspace=None):
    z = (w - loc) / scale
    lp = -0.5 * float(np.sum(z * z)) - (np.sum(np.log(scale)) if np.ndim(scale) else
                                        w.size * math.log(scale)) - w.size * _HALF_LOG_2PI
    return w.dtype.type(lp), (z, w.shape, loc, scale)


def _normal_log_prob_bwd(res, g, argnums):
    z, shape, loc, scale = res
    g = float(g)
    return _grads(argnums, {
        0: lambda: _unbroadcast(-g * z / scale, shape),
        1: lambda: _unbroadcast(g * z / scale, np.shape(loc)),
        2: lambda: _unbroadcast(g * (z * z - 1.0) / scale, np.shape(scale))})


normal_log_prob = custom_vjp(_normal_log_prob_fwd, _normal_log_prob_bwd, "normal_log_prob")
normal_log_prob.__doc__ = """sum over elements of log N(w; loc, scale**2).

Args: w array; loc, scale numbers or arrays broadcastable to w (differentiable). Returns a scalar.
"""


def _normal_log_prob_of_sample_fwd(scale, eps, *, needs, workspace=None):
    flat = eps.reshape(-1)
    logs = _like(workspace, scale)
    np.log(scale, out=logs)
    lp = -0.5 * float(flat @ flat) - float(logs.sum()) - eps.size * _HALF_LOG_2PI
    return scale.dtype.type(lp), (scale, workspace)


def _normal_log_prob_of_sample_bwd(res, g, argnums):
    scale, ws = res
    if argnums != (0,):
        raise NotImplementedError("normal_log_prob_of_sample: only the gradient w.r.t. scale")

    def dscale(out):                        # += -g / scale
        t = _like(ws, scale)
        np.divide(-float(g), scale, out=t)
        out += t

    return (add_into(scale, dscale),)


normal_log_prob_of_sample = custom_vjp(_normal_log_prob_of_sample_fwd,
                                       _normal_log_prob_of_sample_bwd, "normal_log_prob_of_sample")
normal_log_prob_of_sample.__doc__ = """log q(w) of a reparameterized draw w = loc + scale * eps of
q = N(loc, scale**2), summed: -0.5 eps**2 - log scale - 0.5 log(2 pi) per element.

As a function of the parameters this is exact: (w - loc) / scale is eps whatever loc and scale
are, so the gradient w.r.t. loc is 0 and w.r.t. scale -1 / scale; the same as differentiating
``normal_log_prob(normal_sample(loc, scale, eps), loc, scale)``, without its cancelling terms.
Args: scale (differentiable), eps (the draw's standard normals). Returns a scalar.
"""


def _scale_mixture_log_prob_fwd(w, pi, sigma1, sigma2, *, needs, workspace=None):
    # log(pi N(w; 0, s1) + (1 - pi) N(w; 0, s2)) = a + softplus(b - a), a stable logsumexp of
    # the components (TFP's MixtureSameFamily.log_prob), with a = log p_wide - log s_wide -
    # w**2 / (2 s_wide**2) the wider component's and b the narrower's: b - a <= log(p_narrow
    # s_wide / (p_wide s_narrow)) for every w, so exp(b - a) never overflows
    ws = workspace
    pi, s1, s2 = float(pi), float(sigma1), float(sigma2)
    (pw, sw), (pn, sn) = sorted([(pi, s1), (1.0 - pi, s2)], key=lambda c: -c[1])
    c1 = 0.5 / sw ** 2 - 0.5 / sn ** 2                   # <= 0
    c0 = math.log(pn) - math.log(pw) + math.log(sw) - math.log(sn)
    flat = w.reshape(-1)
    sq = float(flat @ flat)
    d = _like(ws, w)
    np.multiply(w, w, out=d)
    d *= c1
    d += c0                                             # b - a
    # below log(tiny) exp(b - a) is subnormal (slow on x86) and softplus(b - a) = exp(b - a) is
    # below the dtype's smallest normal number: clamping there changes no sum and no gradient
    np.maximum(d, math.log(np.finfo(w.dtype).tiny) + 1.0, out=d)
    sp, sig = _softplus_and_sigmoid(d, ws)              # sigmoid(b - a): the narrow component's share
    lp = (w.size * (math.log(pw) - math.log(sw) - _HALF_LOG_2PI) - 0.5 * sq / sw ** 2
          + float(sp.sum()))
    return w.dtype.type(lp), (w, sig, sw, sn, ws)


def _scale_mixture_log_prob_bwd(res, g, argnums):
    w, sig, sw, sn, ws = res
    if argnums != (0,):
        raise NotImplementedError("scale_mixture_log_prob: only the gradient w.r.t. w")
    out = _like(ws, w)                      # -g w ((1 - r) / sw**2 + r / sn**2), r = sig
    np.multiply(sig, 1.0 / sn ** 2 - 1.0 / sw ** 2, out=out)
    out += 1.0 / sw ** 2
    out *= w
    out *= -float(g)
    return (out,)


scale_mixture_log_prob = custom_vjp(_scale_mixture_log_prob_fwd, _scale_mixture_log_prob_bwd,
                                    "scale_mixture_log_prob")
scale_mixture_log_prob.__doc__ = """sum over elements of log(pi N(w; 0, sigma1**2) +
(1 - pi) N(w; 0, sigma2**2)): the scale-mixture prior of Blundell et al. 2015 (arXiv
1505.05424, eq. 7), by a stable logsumexp. Args: w; pi in (0, 1), sigma1, sigma2 > 0 (numbers).
"""


def _laplace_log_prob_fwd(w, loc, scale, *, needs, workspace=None):
    z = (w - loc) / scale
    lp = -float(np.sum(np.abs(z))) - w.size * (math.log(2.0) + math.log(scale))
    return w.dtype.type(lp), (z, scale)


def _laplace_log_prob_bwd(res, g, argnums):
    z, scale = res
    if argnums != (0,):
        raise NotImplementedError("laplace_log_prob: only the gradient w.r.t. w")
    return (np.sign(z) * (-float(g) / scale),)          # TF's |z|' = 0 at z = 0


laplace_log_prob = custom_vjp(_laplace_log_prob_fwd, _laplace_log_prob_bwd, "laplace_log_prob")
laplace_log_prob.__doc__ = """sum over elements of log Laplace(w; loc, scale) =
-|w - loc| / scale - log(2 scale). Args: w; loc, scale > 0 (numbers). Returns a scalar."""


def _student_t_log_prob_fwd(w, df, loc, scale, *, needs, workspace=None):
    from scipy.special import gammaln
    df, loc, scale = float(df), float(loc), float(scale)
    y = (w - loc) * (1.0 / (math.sqrt(df) * scale))
    const = (math.log(scale) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
             + gammaln(0.5 * df) - gammaln(0.5 * (df + 1)))
    lp = -0.5 * (df + 1) * float(np.sum(np.log1p(y * y))) - w.size * const
    return w.dtype.type(lp), (y, df, scale)


def _student_t_log_prob_bwd(res, g, argnums):
    y, df, scale = res
    if argnums != (0,):
        raise NotImplementedError("student_t_log_prob: only the gradient w.r.t. w")
    return (-float(g) * (df + 1) / (math.sqrt(df) * scale) * y / (1 + y * y),)


student_t_log_prob = custom_vjp(_student_t_log_prob_fwd, _student_t_log_prob_bwd,
                                "student_t_log_prob")
student_t_log_prob.__doc__ = """sum over elements of the Student-t log density with df degrees of
freedom, location loc and scale: -0.5 (df + 1) log(1 + y**2) - log(scale sqrt(df) B(1/2, df/2)),
y = (w - loc) / (sqrt(df) scale) (TFP's StudentT.log_prob). Args: w; df, loc, scale numbers."""


# ----------------------------------------------------------------------------- likelihoods
def _categorical_nll_fwd(logits, labels, *, needs, workspace=None):
    ws = workspace
    z = _matrix(logits)
    n = z.shape[0]
    rows = np.arange(n)
    top = z.max(axis=1, keepdims=True)
    p = _like(ws, z)
    np.subtract(z, top, out=p)
    np.exp(p, out=p)
    total = p.sum(axis=1, keepdims=True)
    nll = np.log(total[:, 0]) + top[:, 0] - z[rows, labels.reshape(-1)]
    p /= total                                          # softmax, kept for the gradient
    return nll.reshape(logits.shape[:-1]), (p, rows, labels.reshape(-1), logits.shape, ws)


def _categorical_nll_bwd(res, g, argnums):
    p, rows, labels, shape, ws = res
    if argnums != (0,):
        raise NotImplementedError("categorical_nll: only the gradient w.r.t. the logits")
    out = _like(ws, p)
    gv = np.reshape(g, (-1, 1))
    np.multiply(p, gv, out=out)                         # g (softmax - onehot)
    out[rows, labels] -= gv[:, 0]
    return (out.reshape(shape),)


categorical_nll = custom_vjp(_categorical_nll_fwd, _categorical_nll_bwd, "categorical_nll")
categorical_nll.__doc__ = """-log softmax(logits)[label] per position, by logsumexp.

Args:
  logits: (..., k).
  labels: integers of logits.shape[:-1] in [0, k) (checked by the likelihood, not here).
Returns:
  logits.shape[:-1].
"""


def _gaussian_nll_fwd(y, mean, scale, *, needs, workspace=None):
    ws = workspace
    z = _like(ws, mean, np.broadcast_shapes(np.shape(y), mean.shape))
    np.subtract(y, mean, out=z)
    z /= scale
    out = _like(ws, z)
    np.multiply(z, z, out=out)
    out *= 0.5
    out += np.log(scale) + _HALF_LOG_2PI
    return out, (z, scale, np.shape(y), mean.shape, ws)


def _gaussian_nll_bwd(res, g, argnums):
    z, scale, y_shape, mean_shape, ws = res

    def dmean():                            # -g z / scale
        out = _like(ws, z)
        np.multiply(g, z, out=out)
        out /= -scale
        return _unbroadcast(out, mean_shape)

    def dscale():                           # g (1 - z**2) / scale
        return _unbroadcast(g * (1 - z * z) / scale, np.shape(scale))

    return _grads(argnums, {0: lambda: _unbroadcast(g * z / scale, y_shape), 1: dmean,
                            2: dscale})


gaussian_nll = custom_vjp(_gaussian_nll_fwd, _gaussian_nll_bwd, "gaussian_nll")
gaussian_nll.__doc__ = """-log N(y; mean, scale**2) element-wise (broadcasting).

0.5 ((y - mean) / scale)**2 + log(scale) + 0.5 log(2 pi). Args: y, mean arrays; scale a
number or array (> 0). Returns the broadcast shape.
"""
