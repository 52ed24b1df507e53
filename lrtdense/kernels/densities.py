"""Log densities of the priors, summed over elements: Normal, the Normal of a reparameterized
draw, Blundell et al.'s scale mixture, Laplace and Student-t.

Each returns a scalar of w's dtype (summed in float64 arithmetic). Parameters given as numbers
are settings; only those documented as differentiable are.
"""
import math
from typing import NamedTuple

import numpy as np

from lrtdense.autodiff import Fresh, add_into, kernel
from lrtdense.kernels.common import HALF_LOG_2PI, like, softplus_and_sigmoid, summed_to

__all__ = ["normal_nll", "normal_log_prob", "normal_log_prob_of_sample",
           "scale_mixture_log_prob", "laplace_log_prob", "student_t_log_prob"]

Array = np.ndarray


def normal_nll(half_z2, log_scale, count=1):
    """``half_z2 + log_scale + count 0.5 log(2 pi)``: ``-log N(y; mean, scale**2)``, ``half_z2 = 0.5 ((y - mean) / scale)**2``.

    The Normal density's one statement. Element-wise on arrays (count 1: the Gaussian
    likelihood, ``likelihoods.gaussian_nll``), or over ``count`` elements when given the sums
    ``sum 0.5 z**2`` and ``sum log scale`` (the Normal prior's ``normal_log_prob``, a
    posterior's ``normal_log_prob_of_sample``, the predictive's ``metrics.gaussian_nll``, the
    oracle's expected loss). Plain arithmetic, so autograd differentiates it too.
    """
    return half_z2 + (log_scale + count * HALF_LOG_2PI)


def _only(wanted, name, kernel_name):
    if wanted != (name,):
        raise NotImplementedError(f"{kernel_name}: only the gradient w.r.t. {name}")


@kernel
def normal_log_prob(w, loc, scale, *, workspace=None):
    """``sum -0.5 z**2 - log scale - 0.5 log(2 pi), z = (w - loc) / scale: log N(w; loc, scale**2)``.

    Args:
      w: array.
      loc, scale: numbers or arrays broadcastable to w (differentiable), scale > 0.
    Returns:
      a scalar of w's dtype.
    """


class NormalResiduals(NamedTuple):
    z: Array
    w_shape: tuple
    loc: object
    scale: object


@normal_log_prob.forward
def _(w, loc, scale, *, workspace=None):
    z = (w - loc) / scale
    # a scale broadcast over w counts once per element of w (as its gradient does)
    log_scale = (w.size // np.size(scale) * np.sum(np.log(scale)) if np.ndim(scale)
                 else w.size * math.log(scale))
    lp = -normal_nll(0.5 * float(np.sum(z * z)), log_scale, w.size)
    return w.dtype.type(lp), NormalResiduals(z, w.shape, loc, scale)


@normal_log_prob.backward
def _(res, g, wanted):
    z, scale, g = res.z, res.scale, float(g)
    grads = {}
    if "w" in wanted:
        grads["w"] = Fresh(summed_to(-g * z / scale, res.w_shape))
    if "loc" in wanted:
        grads["loc"] = Fresh(summed_to(g * z / scale, np.shape(res.loc)))
    if "scale" in wanted:
        grads["scale"] = Fresh(summed_to(g * (z * z - 1.0) / scale, np.shape(scale)))
    return grads


@kernel
def normal_log_prob_of_sample(scale, eps, *, workspace=None):
    """``sum -0.5 eps**2 - log scale - 0.5 log(2 pi)``: log q(w) of a draw w = loc + scale * eps.

    For ``q = N(loc, scale**2)`` and as a function of the parameters this is exact: (w - loc) /
    scale is eps whatever loc and scale are, so the gradient w.r.t. loc is 0 and w.r.t. scale
    -1 / scale; the same as differentiating ``normal_log_prob(normal_sample(loc, scale, eps),
    loc, scale)``, without its cancelling terms.

    Args:
      scale: array (differentiable).
      eps: the draw's standard normals, scale's shape.
      workspace: optional Workspace.
    Returns:
      a scalar of scale's dtype.
    """


class ScaleResiduals(NamedTuple):
    scale: Array
    workspace: object


@normal_log_prob_of_sample.forward
def _(scale, eps, *, workspace=None):
    flat = eps.reshape(-1)
    log_scale = np.log(scale, out=like(workspace, scale))
    lp = -normal_nll(0.5 * float(flat @ flat), float(log_scale.sum()), eps.size)
    return scale.dtype.type(lp), ScaleResiduals(scale, workspace)


@normal_log_prob_of_sample.backward
def _(res, g, wanted):
    _only(wanted, "scale", "normal_log_prob_of_sample")
    scale, ws = res

    def dscale(out):                        # += -g / scale
        out += np.divide(-float(g), scale, out=like(ws, scale))

    return {"scale": add_into(scale, dscale)}


@kernel
def scale_mixture_log_prob(w, pi, sigma1, sigma2, *, workspace=None):
    """``sum log(pi N(w; 0, sigma1**2) + (1 - pi) N(w; 0, sigma2**2))`` (Blundell et al. 2015, arXiv 1505.05424, eq. 7).

    The scale-mixture prior, by a stable logsumexp: ``a + softplus(b - a)`` with
    ``a = log p_wide + log N(w; 0, s_wide**2)`` the wider component's weighted log density
    (``normal_nll``) and b the narrower's (TFP's MixtureSameFamily.log_prob). b - a <= log(p_narrow s_wide / (p_wide
    s_narrow)) for every w, so exp(b - a) never overflows. Differentiable in w only.

    Args:
      w: array.
      pi: in (0, 1); sigma1, sigma2 > 0 (numbers).
      workspace: optional Workspace.
    Returns:
      a scalar of w's dtype.
    """


class MixtureResiduals(NamedTuple):
    w: Array
    narrow_share: Array     # sigmoid(b - a): the narrow component's share of the density
    s_wide: float
    s_narrow: float
    workspace: object


@scale_mixture_log_prob.forward
def _(w, pi, sigma1, sigma2, *, workspace=None):
    ws = workspace
    pi, s1, s2 = float(pi), float(sigma1), float(sigma2)
    (pw, sw), (pn, sn) = sorted([(pi, s1), (1.0 - pi, s2)], key=lambda c: -c[1])
    c1 = 0.5 / sw ** 2 - 0.5 / sn ** 2                   # <= 0
    c0 = math.log(pn) - math.log(pw) + math.log(sw) - math.log(sn)
    flat = w.reshape(-1)
    sq = float(flat @ flat)
    d = np.multiply(w, w, out=like(ws, w))
    d *= c1
    d += c0                                             # b - a
    # below log(tiny) exp(b - a) is subnormal (slow on x86) and softplus(b - a) = exp(b - a) is
    # below the dtype's smallest normal number: clamping there changes no sum and no gradient
    np.maximum(d, math.log(np.finfo(w.dtype).tiny) + 1.0, out=d)
    sp, share = softplus_and_sigmoid(d, ws)
    a = w.size * math.log(pw) - normal_nll(0.5 * sq / sw ** 2, w.size * math.log(sw), w.size)
    lp = a + float(sp.sum())                            # sum a + softplus(b - a)
    return w.dtype.type(lp), MixtureResiduals(w, share, sw, sn, ws)


@scale_mixture_log_prob.backward
def _(res, g, wanted):
    _only(wanted, "w", "scale_mixture_log_prob")
    w, r, sw, sn, ws = res
    out = np.multiply(r, 1.0 / sn ** 2 - 1.0 / sw ** 2, out=like(ws, w))
    out += 1.0 / sw ** 2
    out *= w
    out *= -float(g)                        # -g w ((1 - r) / sw**2 + r / sn**2)
    return {"w": Fresh(out)}


@kernel
def laplace_log_prob(w, loc, scale, *, workspace=None):
    """sum -|w - loc| / scale - log(2 scale): log Laplace(w; loc, scale), differentiable in w.

    Args: w array; loc, scale > 0 numbers. Returns a scalar of w's dtype; TF's |z|' = 0 at z = 0.
    """


class ZScale(NamedTuple):
    z: Array
    scale: float


@laplace_log_prob.forward
def _(w, loc, scale, *, workspace=None):
    z = (w - loc) / scale
    lp = -float(np.sum(np.abs(z))) - w.size * (math.log(2.0) + math.log(scale))
    return w.dtype.type(lp), ZScale(z, scale)


@laplace_log_prob.backward
def _(res, g, wanted):
    _only(wanted, "w", "laplace_log_prob")
    return {"w": Fresh(np.sign(res.z) * (-float(g) / res.scale))}


@kernel
def student_t_log_prob(w, df, loc, scale, *, workspace=None):
    """``sum -0.5 (df + 1) log(1 + y**2) - log(scale sqrt(df) B(1/2, df/2)), y = (w - loc) / (sqrt(df) scale)``.

    The Student-t log density with df degrees of freedom (TFP's StudentT.log_prob),
    differentiable in w.

    Args: w array; df, loc, scale numbers. Returns a scalar of w's dtype.
    """


class StudentResiduals(NamedTuple):
    y: Array
    df: float
    scale: float


@student_t_log_prob.forward
def _(w, df, loc, scale, *, workspace=None):
    from scipy.special import gammaln
    df, loc, scale = float(df), float(loc), float(scale)
    y = (w - loc) * (1.0 / (math.sqrt(df) * scale))
    const = (math.log(scale) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
             + gammaln(0.5 * df) - gammaln(0.5 * (df + 1)))
    lp = -0.5 * (df + 1) * float(np.sum(np.log1p(y * y))) - w.size * const
    return w.dtype.type(lp), StudentResiduals(y, df, scale)


@student_t_log_prob.backward
def _(res, g, wanted):
    _only(wanted, "w", "student_t_log_prob")
    y, df, scale = res
    return {"w": Fresh(-float(g) * (df + 1) / (math.sqrt(df) * scale) * y / (1 + y * y))}
