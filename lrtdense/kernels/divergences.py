"""Divergences: KL(N || N) in closed form, the variational dropout approximations of
KL(q || log-uniform), and the parameterizations of variational dropout's weight scale.

Each returns a scalar of its input's dtype (summed over weights, in float64 arithmetic on the
dtype's sums) or an array of its input's shape.
"""
import math
from typing import NamedTuple

import numpy as np

from lrtdense.autodiff import Fresh, add_into, kernel
from lrtdense.kernels.common import like, sigmoid_of_negated_into, softplus_and_sigmoid, summed_to

__all__ = ["kl_normal_normal", "kl_kingma", "kl_molchanov", "scale_from_log_alpha", "scale_from_log_variance",
           "sparse_log_alpha", "KINGMA_C", "MOLCHANOV_K", "THETA2_EPS"]

Array = np.ndarray
KINGMA_C = (1.16145124, -1.50204118, 0.58629921)      # c1, c2, c3 (arXiv 1506.02557)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)             # k1, k2, k3 (arXiv 1701.05369)
THETA2_EPS = 1e-8                                     # in log(theta**2 + eps) (Molchanov's code)


# ---------------------------------------------------------------------------- KL(N || N)
@kernel
def kl_normal_normal(loc, scale, prior_loc, prior_scale, *, workspace=None):
    """``sum 0.5 ((loc - mp) / sp)**2 + 0.5 (scale / sp)**2 - 0.5 - log(scale / sp)``: ``KL(N(loc, scale**2) || N(mp, sp**2))``.

    Summed over the elements of loc; mp, sp = prior_loc, prior_scale. This is TFP's
    ``_kl_normal_normal`` (``0.5 ((loc - mp) / sp)**2 + 0.5 expm1(2 d) - d``,
    ``d = log scale - log sp``) rearranged into three sums,
    ``0.5 (sum z**2 + sum r**2) - sum log scale + sum log sp - 0.5 n`` with
    ``z = (loc - mp) / sp``, ``r = scale / sp``. For a prior of numbers (the layers' fixed prior)
    the squares are summed by BLAS dots before the one division by ``sp**2``; a prior of arrays (a trainable prior, broadcastable to loc's shape) is
    divided element by element.

    Gradients: ``dloc = g (loc - mp) / sp**2``, ``dscale = g (scale / sp**2 - 1 / scale)`` (each
    added into the other gradient of the same array, ``add_into``), ``dmp = -dloc`` and
    ``dsp = g (1 - z**2 - r**2) / sp``, summed to the prior's shapes.

    Args:
      loc, scale: arrays of one shape, scale > 0 (differentiable).
      prior_loc, prior_scale: numbers, or arrays broadcastable to loc's shape (differentiable);
        prior_scale > 0.
      workspace: optional Workspace.
    Returns:
      a scalar of loc's dtype.
    """


class KLResiduals(NamedTuple):
    loc: Array
    scale: Array
    prior_loc: object
    prior_scale: object
    workspace: object


def _sum_of_squares_over(a, sp, workspace):
    """``sum (a / sp)**2``; for a number sp, one dot and one division."""
    if np.ndim(sp) == 0:
        flat = a.reshape(-1)
        return float(flat @ flat) / float(sp) ** 2
    t = np.divide(a, sp, out=like(workspace, a))
    return float(np.sum(t * t))


@kl_normal_normal.forward
def _(loc, scale, prior_loc, prior_scale, *, workspace=None):
    mp, sp = _number_or_array(prior_loc), _number_or_array(prior_scale)
    d = loc if np.ndim(mp) == 0 and mp == 0 else np.subtract(loc, mp, out=like(workspace, loc))
    sum_z2 = _sum_of_squares_over(d, sp, workspace)
    sum_r2 = _sum_of_squares_over(scale, sp, workspace)
    sum_log_scale = float(np.log(scale, out=like(workspace, scale)).sum())
    sum_log_sp = (loc.size * math.log(sp) if np.ndim(sp) == 0
                  else loc.size // np.size(sp) * float(np.sum(np.log(sp))))
    kl = 0.5 * (sum_z2 + sum_r2) - sum_log_scale + sum_log_sp - 0.5 * loc.size
    return loc.dtype.type(kl), KLResiduals(loc, scale, mp, sp, workspace)


def _number_or_array(a):
    return float(a) if np.ndim(a) == 0 else np.asarray(a)


@kl_normal_normal.backward
def _(res, g, wanted):
    loc, scale, mp, sp, ws = res
    c = float(g) / sp ** 2                  # g / sp**2: a number, or an array like sp

    def dloc(out):                          # += g (loc - mp) / sp**2
        t = np.subtract(loc, mp, out=like(ws, loc))
        t *= c
        out += t

    def dscale(out):                        # += g (scale / sp**2 - 1 / scale)
        t = np.multiply(scale, c, out=like(ws, scale))
        out += t
        np.divide(float(g), scale, out=t)
        out -= t

    grads = {}
    if "loc" in wanted:
        grads["loc"] = add_into(loc, dloc)
    if "scale" in wanted:
        grads["scale"] = add_into(scale, dscale)
    if "prior_loc" in wanted:
        grads["prior_loc"] = Fresh(summed_to(-c * (loc - mp), np.shape(mp)))
    if "prior_scale" in wanted:
        z2, r2 = ((loc - mp) / sp) ** 2, (scale / sp) ** 2
        grads["prior_scale"] = Fresh(summed_to(float(g) * (1.0 - z2 - r2) / sp, np.shape(sp)))
    return grads


# ------------------------------------------------------------- KL(q || log-uniform), approx.
@kernel
def kl_kingma(log_alpha, *, workspace=None):
    """``sum k1 - (0.5 log a + c1 a + c2 a**2 + c3 a**3), a = exp(log_alpha)`` (arXiv 1506.02557, eq. 7).

    Kingma et al.'s approximation of KL(q || log-uniform) per weight, for a <= 1 (log_alpha
    already clipped to <= 0), with the constant C = -k1 of Molchanov et al. so that both
    approximations share one normalisation. Gradient: -g (0.5 + a (c1 + a (2 c2 + 3 c3 a))).
    """


class Alpha(NamedTuple):
    alpha: Array
    workspace: object


@kl_kingma.forward
def _(log_alpha, *, workspace=None):
    c1, c2, c3 = KINGMA_C
    a = np.exp(log_alpha, out=like(workspace, log_alpha))
    poly = np.multiply(a, c3, out=like(workspace, log_alpha))      # a (c1 + a (c2 + a c3))
    poly += c2
    poly *= a
    poly += c1
    poly *= a
    kl = log_alpha.size * MOLCHANOV_K[0] - 0.5 * float(log_alpha.sum()) - float(poly.sum())
    return log_alpha.dtype.type(kl), Alpha(a, workspace)


@kl_kingma.backward
def _(res, g, wanted):
    a = res.alpha
    c1, c2, c3 = KINGMA_C
    out = np.multiply(a, 3 * c3, out=like(res.workspace, a))  # -g (0.5 + a (c1 + a (2 c2 + 3 c3 a)))
    out += 2 * c2
    out *= a
    out += c1
    out *= a
    out += 0.5
    out *= -float(g)
    return {"log_alpha": Fresh(out)}


@kernel
def kl_molchanov(log_alpha, *, workspace=None):
    """sum k1 - k1 sigmoid(k2 + k3 log a) + 0.5 log(1 + 1 / a) (arXiv 1701.05369, eq. 14).

    Molchanov et al.'s approximation of KL(q || log-uniform) per weight, any log_alpha; it
    vanishes as log a -> infinity. Gradient (s = sigmoid(k2 + k3 log a)):
    g (-k1 k3 s (1 - s) - 0.5 sigmoid(-log a)).
    """


class MolchanovResiduals(NamedTuple):
    s: Array                # sigmoid(k2 + k3 log a)
    sigmoid_minus: Array    # sigmoid(-log a)
    workspace: object


@kl_molchanov.forward
def _(log_alpha, *, workspace=None):
    k1, k2, k3 = MOLCHANOV_K
    s = np.multiply(log_alpha, -k3, out=like(workspace, log_alpha))   # -(k2 + k3 log a), bit
    s -= k2                                                           # for bit
    sigmoid_of_negated_into(s, s)                                     # sigmoid(k2 + k3 log a)
    minus = np.negative(log_alpha, out=like(workspace, log_alpha))
    sp, sig = softplus_and_sigmoid(minus, workspace)    # log(1 + 1 / a), sigmoid(-log a)
    kl = log_alpha.size * k1 - k1 * float(s.sum()) + 0.5 * float(sp.sum())
    return log_alpha.dtype.type(kl), MolchanovResiduals(s, sig, workspace)


@kl_molchanov.backward
def _(res, g, wanted):
    s, ws = res.s, res.workspace
    k1, k2, k3 = MOLCHANOV_K
    g = float(g)
    out = np.subtract(1, s, out=like(ws, s))    # g (-k1 k3 s (1 - s) - 0.5 sigmoid(-log a))
    out *= s
    out *= -k1 * k3 * g
    t = np.multiply(res.sigmoid_minus, 0.5 * g, out=like(ws, s))
    out -= t
    return {"log_alpha": Fresh(out)}


# ------------------------------------------------------------------- parameterizations
@kernel
def scale_from_log_alpha(theta, log_alpha, *, workspace=None):
    """sqrt(alpha) |theta|: the weight's standard deviation under Gaussian multiplicative noise
    w = theta (1 + sqrt(alpha) eps) (Kingma et al. 2015, arXiv 1506.02557).

    Gradients: dtheta = g sqrt(alpha) sign(theta), dlog_alpha = g scale / 2.
    """


class ScaleFromAlpha(NamedTuple):
    theta: Array
    sqrt_alpha: Array
    scale: Array
    workspace: object


@scale_from_log_alpha.forward
def _(theta, log_alpha, *, workspace=None):
    e = np.multiply(log_alpha, 0.5, out=like(workspace, log_alpha))
    np.exp(e, out=e)                                            # sqrt(alpha)
    out = np.absolute(theta, out=like(workspace, theta))
    out *= e
    return out, ScaleFromAlpha(theta, e, out, workspace)


@scale_from_log_alpha.backward
def _(res, g, wanted):
    ws = res.workspace
    grads = {}
    if "theta" in wanted:                                       # g sqrt(alpha) sign(theta)
        out = np.sign(res.theta, out=like(ws, res.theta))
        out *= res.sqrt_alpha
        out *= g
        grads["theta"] = Fresh(out)
    if "log_alpha" in wanted:                                   # g scale / 2
        out = np.multiply(g, res.scale, out=like(ws, res.scale))
        out *= 0.5
        grads["log_alpha"] = Fresh(out)
    return grads


@kernel
def scale_from_log_variance(log_variance, *, workspace=None):
    """exp(log_variance / 2): the standard deviation of the additive reparameterization
    ``q(w) = N(theta, sigma**2)`` (Molchanov et al. 2017, arXiv 1701.05369); d/du = scale / 2."""


class Scale(NamedTuple):
    scale: Array
    workspace: object


@scale_from_log_variance.forward
def _(log_variance, *, workspace=None):
    out = np.multiply(log_variance, 0.5, out=like(workspace, log_variance))
    np.exp(out, out=out)
    return out, Scale(out, workspace)


@scale_from_log_variance.backward
def _(res, g, wanted):
    out = np.multiply(g, res.scale, out=like(res.workspace, res.scale))
    out *= 0.5
    return {"log_variance": Fresh(out)}


@kernel
def sparse_log_alpha(theta, log_sigma2, lo, hi, *, workspace=None):
    """``clip(log sigma2 - log(theta**2 + 1e-8), lo, hi)``: log alpha of sparse variational dropout
    (Molchanov et al. 2017, arXiv 1701.05369, with their code's 1e-8 and clip to [-8, 8]).

    Gradients (gm = g where lo <= value <= hi, else 0):
    ``dtheta = -gm 2 theta / (theta**2 + 1e-8)``, ``dlog_sigma2 = gm``.
    """


class SparseResiduals(NamedTuple):
    theta: Array
    theta2: Array           # theta**2 + 1e-8
    inside: Array           # lo <= raw value <= hi
    workspace: object


@sparse_log_alpha.forward
def _(theta, log_sigma2, lo, hi, *, workspace=None):
    ws = workspace
    t2 = np.multiply(theta, theta, out=like(ws, theta))
    t2 += THETA2_EPS
    raw = np.log(t2, out=like(ws, theta))
    np.subtract(log_sigma2, raw, out=raw)               # log sigma2 - log(theta**2 + 1e-8)
    out = np.clip(raw, lo, hi, out=like(ws, theta))
    inside = np.equal(out, raw, out=like(ws, theta, dtype=bool))    # NaN: False either way
    return out, SparseResiduals(theta, t2, inside, ws)


@sparse_log_alpha.backward
def _(res, g, wanted):
    ws = res.workspace
    gm = np.multiply(g, res.inside, out=like(ws, res.theta))      # the clip passes at its bounds
    grads = {}
    if "theta" in wanted:                                   # -gm 2 theta / (theta**2 + 1e-8)
        out = np.multiply(res.theta, -2.0, out=like(ws, res.theta))
        out /= res.theta2
        out *= gm
        grads["theta"] = Fresh(out)
    if "log_sigma2" in wanted:
        grads["log_sigma2"] = Fresh(gm)
    return grads
