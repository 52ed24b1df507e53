"""The dense kernel terms: ``x @ W`` for a weight matrix ``W ~ N(loc, scale**2)``, by each estimator.

Weights are independent Normals (a mean-field posterior); x contracts on its last axis, (..., in)
with (in, units); every term returns (..., units):

| kernel | output | noise eps |
|---|---|---|
| ``lrt`` | ``m + s * eps``, ``m = x @ loc``, ``s = sqrt((x**2) @ scale**2)`` | (..., units) |
| ``reparameterization`` | ``x @ W``, ``W = eps * scale + loc`` (one W for the batch) | (in, units) |
| ``flipout`` | ``x @ loc + ((x * sign_in) @ (eps * scale)) * sign_out`` | (in, units) |
| ``per_example`` | ``x_b @ (loc + scale * eps_b)``, one W per example (naive) | (n, in, units) |

(Kingma et al. 2015, arXiv 1506.02557; Wen et al. 2018, arXiv 1803.04386.) Around them:
``normal_sample`` (a draw of W), ``dense`` (x @ w) and ``add_bias``.

The zero-variance convention. In the local reparameterization trick ``s = sqrt(v)`` with
``v = (x**2) @ scale**2``, which is 0 exactly when an input row is all zeros; ds/dv = 1 / (2 s) is
infinite there, and TensorFlow's gradient is 0 * inf = NaN for every parameter. The limit is 0:
that row's output m + 0 * eps does not depend on the scales at all. So every gradient that flows
through s divides by s with ``_over_s``, which gives 0 where s == 0. Outputs are unchanged.
"""
from typing import NamedTuple, Optional

import numpy as np

from lrtdense.autodiff import Fresh, kernel
from lrtdense.kernels.common import as_matrix, cotangent_summed_to, like, summed_to
from lrtdense.parallel import matmul

__all__ = ["normal_sample", "dense", "lrt", "reparameterization", "flipout", "per_example",
           "add_bias"]

Array = np.ndarray


def _over_s(a, s, out):
    """a / s, and 0 where s == 0: the zero-variance convention (module docstring)."""
    try:        # NumPy's flags say, at no extra pass, whether some s == 0 (x / 0 or 0 / 0)
        with np.errstate(divide="raise", invalid="raise"):
            np.divide(a, s, out=out)
    except FloatingPointError:          # raised after the whole division is written
        out[s == 0] = 0
    return out


def _input_cotangent(g, loc, a, b, c, shape, ws):
    """dx = g @ loc^T + (a @ b^T) * c, reshaped to x's shape: the cotangent of x in a kernel term
    x @ loc + f(x) whose second part contributes (a @ b^T) * c."""
    t = matmul(a, b.T, out=like(ws, c))
    t *= c
    dx = matmul(g, loc.T, out=like(ws, c))
    dx += t
    return dx.reshape(shape)


# ------------------------------------------------------------------------------- lrt
@kernel
def lrt(x, loc, scale, eps, *, workspace=None):
    """``m + s * eps with m = x @ loc and s = sqrt((x**2) @ scale**2)`` (Kingma et al. 2015, arXiv 1506.02557).

    The local reparameterization trick: for ``w ~ N(loc, scale**2)``, each pre-activation of each
    example is ``N(m, s**2)``, drawn with its own eps. Gradients, with ``r = g * eps / s``:
    ``dx = g @ loc^T + x * (r @ (scale**2)^T), dloc = x^T g, dscale = scale * ((x**2)^T r)``,
    deps = g * s; at s == 0 they follow the zero-variance convention (module docstring).

    Args:
      x: (..., in).
      loc, scale: (in, units), scale >= 0.
      eps: (..., units) standard normals.
      workspace: optional Workspace.
    Returns:
      (..., units).
    """


class LrtResiduals(NamedTuple):
    x: Array                        # (n, in)
    x_squared: Optional[Array]      # (n, in), kept when scale is differentiated
    scale_squared: Optional[Array]  # (in, units), kept when x is
    eps_over_s: Optional[Array]     # eps / s, 0 where s == 0 (n, units), when x or scale is
    loc: Array
    scale: Array
    s: Optional[Array]              # (n, units), kept when eps is differentiated
    x_shape: tuple
    workspace: object


@lrt.forward
def _(x, loc, scale, eps, *, needs, workspace=None):
    ws, x_shape = workspace, x.shape
    x, eps = as_matrix(x), as_matrix(eps)
    n, units = x.shape[0], loc.shape[1]
    x_squared = np.multiply(x, x, out=like(ws, x))
    scale_squared = np.multiply(scale, scale, out=like(ws, scale))
    m = matmul(x, loc, out=like(ws, x, (n, units)))
    v = matmul(x_squared, scale_squared, out=like(ws, x, (n, units)))
    s = np.sqrt(v, out=v)
    s_eps = np.multiply(s, eps, out=like(ws, s))
    out = np.add(m, s_eps, out=m)                                   # m + s * eps, in m's buffer
    eps_over_s = None
    if "x" in needs or "scale" in needs:
        eps_over_s = _over_s(eps, s, out=s_eps)                     # in s * eps's buffer
    res = LrtResiduals(x, x_squared if "scale" in needs else None,
                       scale_squared if "x" in needs else None, eps_over_s, loc, scale,
                       s if "eps" in needs else None, x_shape, ws)
    return out.reshape(x_shape[:-1] + (units,)), res


@lrt.backward
def _(res, g, wanted):
    ws, x, scale = res.workspace, res.x, res.scale
    g_shape, g = np.shape(g), as_matrix(g)
    grads = {}
    if "x" in wanted or "scale" in wanted:
        r = np.multiply(g, res.eps_over_s, out=like(ws, g))
    if "x" in wanted:
        dx = _input_cotangent(g, res.loc, r, res.scale_squared, x, res.x_shape, ws)
        grads["x"] = Fresh(dx)
    if "loc" in wanted:
        dloc = matmul(x.T, g, out=like(ws, res.loc))
        grads["loc"] = Fresh(dloc)
    if "scale" in wanted:
        x_squared_t_r = matmul(res.x_squared.T, r, out=like(ws, scale))
        dscale = np.multiply(scale, x_squared_t_r, out=x_squared_t_r)
        grads["scale"] = Fresh(dscale)
    if "eps" in wanted:
        deps = (g * res.s).reshape(g_shape)
        grads["eps"] = Fresh(deps)
    return grads


# ------------------------------------------------------------------ normal_sample, dense
@kernel
def normal_sample(loc, scale, eps, *, workspace=None):
    """``W = eps * scale + loc: a draw of N(loc, scale**2)`` from standard normals eps.

    Args: loc; scale, eps broadcastable with it; workspace. Returns the broadcast shape.
    """


class SampleResiduals(NamedTuple):
    loc: Array
    scale: Array
    eps: Array
    workspace: object


@normal_sample.forward
def _(loc, scale, eps, *, workspace=None):
    shape = np.broadcast_shapes(loc.shape, np.shape(scale), eps.shape)
    w = np.multiply(eps, scale, out=like(workspace, loc, shape))
    w += loc
    return w, SampleResiduals(loc, scale, eps, workspace)


@normal_sample.backward
def _(res, g, wanted):
    def g_times(a, shape):                      # g * a, summed to the argument's shape
        if np.shape(g) != tuple(shape):
            return Fresh(summed_to(g * a, shape))
        return Fresh(np.multiply(g, a, out=like(res.workspace, g)))

    grads = {}
    if "loc" in wanted:
        grads["loc"] = cotangent_summed_to(g, res.loc.shape)
    if "scale" in wanted:
        grads["scale"] = g_times(res.eps, np.shape(res.scale))
    if "eps" in wanted:
        grads["eps"] = g_times(res.scale, res.eps.shape)
    return grads


@kernel
def dense(x, w, *, workspace=None):
    """x @ w contracting x's last axis: (..., in) with (in, units) -> (..., units).

    Gradients: dx = g @ w^T, dw = x^T g.
    """


class DenseResiduals(NamedTuple):
    x: Array            # (n, in)
    w: Array
    x_shape: tuple
    workspace: object


@dense.forward
def _(x, w, *, workspace=None):
    x_shape, x = x.shape, as_matrix(x)
    out = matmul(x, w, out=like(workspace, x, (x.shape[0], w.shape[1])))
    return out.reshape(x_shape[:-1] + (w.shape[1],)), DenseResiduals(x, w, x_shape, workspace)


@dense.backward
def _(res, g, wanted):
    ws, g = res.workspace, as_matrix(g)
    grads = {}
    if "x" in wanted:
        grads["x"] = Fresh(matmul(g, res.w.T, out=like(ws, res.x)).reshape(res.x_shape))
    if "w" in wanted:
        grads["w"] = Fresh(matmul(res.x.T, g, out=like(ws, res.w)))
    return grads


# ----------------------------------------------------------------- reparameterization
def reparameterization(x, loc, scale, eps, *, workspace=None):
    """x @ W with W = eps * scale + loc: one kernel sample for the whole batch.

    TFP's DenseReparameterization: ``dense(x, normal_sample(loc, scale, eps))``, so its
    gradients are theirs: dW = x^T g, dx = g @ W^T, dloc = dW, dscale = dW * eps,
    deps = dW * scale.

    Args: x (..., in); loc, scale, eps (in, units); workspace. Returns (..., units).
    """
    return dense(x, normal_sample(loc, scale, eps, workspace=workspace), workspace=workspace)


# ---------------------------------------------------------------------------- flipout
@kernel
def flipout(x, loc, scale, eps, sign_in, sign_out, *, workspace=None):
    """x @ loc + ((x * sign_in) @ (eps * scale)) * sign_out (Wen et al. 2018, arXiv 1803.04386).

    Flipout: one perturbation eps * scale per batch, decorrelated across examples by random
    signs. Gradients (gs = g * sign_out, P = eps * scale): dx = g @ loc^T + (gs @ P^T) * sign_in,
    dloc = x^T g, dscale = ((x * sign_in)^T gs) * eps, deps = ((x * sign_in)^T gs) * scale.

    Args: x (..., in); loc, scale, eps (in, units); sign_in x's shape and sign_out (..., units),
    of +-1; workspace. Returns (..., units).
    """


class FlipoutResiduals(NamedTuple):
    x: Array                # (n, in)
    xs: Array               # x * sign_in
    perturbation: Array     # eps * scale
    loc: Array
    scale: Array
    eps: Array
    sign_in: Array          # (n, in)
    sign_out: Array         # (n, units)
    x_shape: tuple
    workspace: object


@flipout.forward
def _(x, loc, scale, eps, sign_in, sign_out, *, workspace=None):
    ws, x_shape = workspace, x.shape
    x, sign_in, sign_out = as_matrix(x), as_matrix(sign_in), as_matrix(sign_out)
    n, units = x.shape[0], loc.shape[1]
    xs = np.multiply(x, sign_in, out=like(ws, x))
    perturbation = np.multiply(eps, scale, out=like(ws, scale))
    mean = matmul(x, loc, out=like(ws, x, (n, units)))
    p = matmul(xs, perturbation, out=like(ws, x, (n, units)))
    p *= sign_out
    out = np.add(mean, p, out=mean)                             # mean + perturbation
    res = FlipoutResiduals(x, xs, perturbation, loc, scale, eps, sign_in, sign_out, x_shape, ws)
    return out.reshape(x_shape[:-1] + (units,)), res


@flipout.backward
def _(res, g, wanted):
    ws, x, g_shape, g = res.workspace, res.x, np.shape(g), as_matrix(g)
    gs = np.multiply(g, res.sign_out, out=like(ws, g))          # the perturbation's cotangent

    def dperturbation_times(factor):                            # ((x * sign_in)^T gs) * factor
        out = matmul(res.xs.T, gs, out=like(ws, res.perturbation))
        out *= factor
        return Fresh(out)

    grads = {}
    if "x" in wanted:
        grads["x"] = Fresh(_input_cotangent(g, res.loc, gs, res.perturbation, res.sign_in,
                                            res.x_shape, ws))
    if "loc" in wanted:
        grads["loc"] = Fresh(matmul(x.T, g, out=like(ws, res.loc)))
    if "scale" in wanted:
        grads["scale"] = dperturbation_times(res.eps)
    if "eps" in wanted:
        grads["eps"] = dperturbation_times(res.scale)
    if "sign_in" in wanted:
        grads["sign_in"] = Fresh(((gs @ res.perturbation.T) * x).reshape(res.x_shape))
    if "sign_out" in wanted:
        grads["sign_out"] = Fresh((g * (res.xs @ res.perturbation)).reshape(g_shape))
    return grads


# ------------------------------------------------------------------------ per_example
@kernel
def per_example(x, loc, scale, eps, *, workspace=None):
    """x_b @ (loc + scale * eps_b) for each example b: one weight sample per example.

    The naive estimator the local reparameterization trick replaces; it costs n times the
    kernel's memory: for teaching and checking, not training.

    Args: x (..., in); loc, scale (in, units); eps (n, in, units), n = prod(x.shape[:-1]).
    Returns (..., units).
    """


class PerExampleResiduals(NamedTuple):
    x: Array        # (n, in)
    w: Array        # (n, in, units)
    scale: Array
    eps: Array      # (n, in, units)
    x_shape: tuple


@per_example.forward
def _(x, loc, scale, eps, *, workspace=None):
    x_shape, x = x.shape, as_matrix(x)
    eps = eps.reshape((x.shape[0],) + loc.shape)
    w = loc + scale * eps                               # (n, in, units): one kernel per example
    out = np.einsum("bi,bio->bo", x, w)
    return out.reshape(x_shape[:-1] + (loc.shape[1],)), PerExampleResiduals(x, w, scale, eps,
                                                                             x_shape)


@per_example.backward
def _(res, g, wanted):
    g = as_matrix(g)
    grads = {}
    if "x" in wanted:
        grads["x"] = Fresh(np.einsum("bo,bio->bi", g, res.w).reshape(res.x_shape))
    if "loc" in wanted or "scale" in wanted or "eps" in wanted:
        dw = np.einsum("bi,bo->bio", res.x, g)
        if "loc" in wanted:
            grads["loc"] = Fresh(dw.sum(axis=0))
        if "scale" in wanted:
            grads["scale"] = Fresh((dw * res.eps).sum(axis=0))
        if "eps" in wanted:
            grads["eps"] = Fresh((dw * res.scale).reshape((-1,) + res.scale.shape))
    return grads


# --------------------------------------------------------------------------- add_bias
@kernel
def add_bias(z, b, *, workspace=None):
    """z + b with b (units,) broadcast over z (..., units); dz = g, db = g summed over z's rows."""


class BiasResiduals(NamedTuple):
    b: Array
    workspace: object


@add_bias.forward
def _(z, b, *, workspace=None):
    return np.add(z, b, out=like(workspace, z)), BiasResiduals(b, workspace)


@add_bias.backward
def _(res, g, wanted):
    grads = {}
    if "z" in wanted:
        grads["z"] = g
    if "b" in wanted:
        grads["b"] = Fresh(np.sum(as_matrix(g), axis=0, out=like(res.workspace, res.b)))
    return grads
