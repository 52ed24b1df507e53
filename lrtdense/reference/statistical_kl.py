"""The random divergence of the statistical mode (``lrtdense.reference.statistical``): cases whose
KL is a Monte Carlo estimate (kind ``priors`` with a ``monte_carlo`` divergence,
``dense_variational`` with ``kl_use_exact`` false), so that each sample-mode call's KL is random.

The port writes ``samples/kl`` (S,): each call's `kl/total`, the one in that call's objective
`L_s`. Its expectation over the noise is ``expected_kl`` (the layers' ``expected_divergences``:
`E_q[log q(w) - log p(w)]` per Monte Carlo term, the Normal's entropy and the prior's
``expected_log_prob``: Gauss-Hermite quadrature of its log density, or a closed form for the
Laplace prior), and the expected objective's gradient uses it (pathwise: `E[grad kl_s] =
grad E[kl_s]`).

A term evaluated at the forward's own weight draw (``layer.shares_draw``: Reparameterization's
kernel with ``sample: forward``, a Normal bias with ``sample: forward``, DenseVariational's flat
vector) covaries with the outputs; one at an extra draw does not. With a linear activation
`out[n, k] = mean + sum_j x[n, j] scale[j, k] eta[j, k] + bias_scale[k] eta_b[k]` (the shared
draws' standard normals), and kl a sum of one function per element of its own eta, so Stein's
lemma `E[eta h(eta)] = E[h'(eta)]` and `E[h'(loc + scale eta)] = d/dloc E[h]` give

```
Cov(out[n, k], kl) = sum_j x[n, j] scale[j, k]**2 dE[kl]/dloc[j, k] + bias_scale[k]**2 dE[kl]/dbias_loc[k]
```

(each term only where shared; autograd through ``expected_kl``). Two families, both CLT at a tenth
of their share (``statistical_rows.CLT_MARGIN``):

* ``kl_mean``: the mean of the S draws within z of their own standard errors of ``expected_kl``
  (the draws are independent with finite moments of every order: each term is a smooth or
  Lipschitz function of Gaussians);
* ``kl_covariance``: each output element's sample covariance with kl (about the analytic means)
  within z standard errors (from the S products) of the formula above: catches a KL evaluated at
  an independent draw where it must use the forward's (0 instead of the covariance), and the
  reverse.
"""
import dataclasses
import math

import autograd.numpy as anp
import numpy as np
from autograd import grad

from lrtdense.base import sum_terms
from lrtdense.distributions import normal_nodes
from lrtdense.reference.generation import model_from_meta
from lrtdense.reference.statistical_rows import family_alpha, index_of, row, z_quantile

__all__ = ["random_kl", "expected_kl", "kl_output_covariance", "kl_gradient_moments", "kl_rows",
           "KL_FAMILIES", "MOMENT_NODES"]

KL_FAMILIES = ("kl_mean", "kl_covariance")
MOMENT_NODES = 2048        # nodes of the equal-weight rule for the KL gradient's moments


def random_kl(meta):
    """True if a sample-mode call's KL of the case is random (a Monte Carlo divergence)."""
    return bool(model_from_meta(meta).random_divergence)


def expected_kl(meta, params):
    """`E[kl/total]` over the sample-mode noise, a scalar of the case's dtype, differentiable in
    params (autograd): ``layer.kl(params)`` where the KL is not random."""
    layer = model_from_meta(meta)
    return sum_terms(layer.expected_divergences(params), layer.dtype)


def _shifted_means(params, kernel_shift, bias_shift):
    """``params`` with the posterior means of the kernel (in, units) and bias (units,) moved:
    TFP's names, or DenseVariational's flat ``posterior_constant`` (its first in * units + units
    entries, kernel row-major then bias)."""
    out = dict(params)
    if "posterior_constant" in params:
        t = params["posterior_constant"]
        parts = [anp.ravel(kernel_shift)] + ([bias_shift] if bias_shift is not None else [])
        size = sum(np.size(v) for v in parts)
        out["posterior_constant"] = t + anp.concatenate(parts + [np.zeros(t.shape[0] - size,
                                                                          t.dtype)])
        return out
    out["kernel_posterior_loc"] = params["kernel_posterior_loc"] + kernel_shift
    if bias_shift is not None:
        out["bias_posterior_loc"] = params["bias_posterior_loc"] + bias_shift
    return out


def kl_output_covariance(meta, params, x):
    """`Cov(out[n, k], kl)` (N, U), N the flattened batch, as float64 (module docstring; the
    case's dtype inside)."""
    layer = model_from_meta(meta)
    x2 = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    moments = layer.posterior_moments(params, x2.shape[-1])
    kscale = np.asarray(moments.kernel_scale, dtype=np.float64)
    has_bias = moments.bias_scale is not None
    kzero = np.zeros(kscale.shape, layer.dtype)
    bzero = np.zeros(kscale.shape[1], layer.dtype) if has_bias else None

    def expected(dk, db):
        return expected_kl(meta, _shifted_means(params, dk, db))
    cov = np.zeros((x2.shape[0], kscale.shape[1]))
    if layer.shares_draw("kernel"):
        cov = cov + x2 @ (kscale ** 2 * grad(expected, 0)(kzero, bzero))
    if has_bias and layer.shares_draw("bias"):
        bscale = np.asarray(moments.bias_scale, dtype=np.float64)
        cov = cov + bscale ** 2 * grad(expected, 1)(kzero, bzero)
    return cov


def kl_gradient_moments(meta, params, x_shape):
    """Moments of the random KL's gradient K w.r.t. every parameter, each element a function of
    its own standard normal Z (every Monte Carlo term is a sum over elements): {"var": Var K,
    "z": E[Z K], "z2": E[(Z**2 - 1) K]}, each {param: float64 of its shape}. Setting every
    noise element to one z gives every K_i at Z = z at once; the equal-weight rule of
    ``distributions.normal_nodes`` (MOMENT_NODES nodes) averages over z."""
    layer = dataclasses.replace(model_from_meta(meta), dtype="float64")
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    shapes = layer.noise_shapes(x_shape)
    kinds = layer.noise_kinds()
    gradient = grad(lambda p, noise: sum_terms(layer.divergences(p, noise), "float64"))
    total = {k: np.zeros((4,) + v.shape) for k, v in p64.items()}
    nodes = normal_nodes(MOMENT_NODES)
    for z in nodes:
        noise = {k: np.full(v, 0.0 if kinds.get(k) == "sign" else z) for k, v in shapes.items()}
        for k, gk in gradient(p64, noise).items():
            total[k] += np.stack([gk, gk * gk, z * gk, (z * z - 1) * gk])
    out = {"var": {}, "z": {}, "z2": {}}
    for k, (mean, square, zk, z2k) in total.items():
        mean, square = mean / nodes.size, square / nodes.size
        out["var"][k] = np.maximum(square - mean * mean, 0.0)
        out["z"][k], out["z2"][k] = zk / nodes.size, z2k / nodes.size
    return out


def kl_rows(name, meta, params, x, kl_draws, dev, var):
    """The rows of the two KL families.

    Args:
      kl_draws: (S,) float64, the port's per-draw kl/total.
      dev: (S, N, U), the port's outputs less their analytic means; var: (N, U) their variances.
    """
    s = kl_draws.shape[0]
    want = float(expected_kl(meta, params))
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    floor = 10 * rtol * (1 + abs(want))
    zm = abs(kl_draws.mean() - want) / math.sqrt(kl_draws.var(ddof=1) / s + floor ** 2)
    z1 = z_quantile(family_alpha("kl_mean"), 1)
    rows = [row(name, "kl_mean", int(zm > z1), zm, z1,
                f"mean kl {kl_draws.mean():.6g} ({want:.6g} expected), |z| {zm:.2f} of {z1:.2f}",
                f"the per-draw KL averages {kl_draws.mean():.6g}, its expectation is {want:.6g} "
                f"(|z| {zm:.3g} > {z1:.2f}): a term missing, averaged over its elements instead "
                f"of summed, or weighted wrongly?")]
    live = var > 0
    cov = kl_output_covariance(meta, params, x)
    prod = dev[:, live] * (kl_draws - want)[:, None]
    se = np.maximum(prod.std(0, ddof=1) / math.sqrt(s), 1e-300)
    zc = np.abs(prod.mean(0) - cov[live]) / se
    if not zc.size:
        return rows + [row(name, "kl_covariance", 0, 0.0, 1.0, "no random output element", "")]
    zq = z_quantile(family_alpha("kl_covariance"), zc.size)
    where = index_of(int(np.flatnonzero(live.reshape(-1))[int(np.argmax(zc))]), var.shape)
    shared = "covaries" if np.any(cov != 0) else "is independent of the outputs"
    rows.append(row(name, "kl_covariance", int((zc > zq).sum()), zc.max(), zq,
                    f"{zc.size} covariances of kl with the outputs (the KL {shared}): worst "
                    f"|z| {zc.max():.2f} of {zq:.2f}",
                    f"{int((zc > zq).sum())} of {zc.size} covariances of the per-draw KL with "
                    f"the outputs off the analytic ones by more than {zq:.2f} standard errors "
                    f"(worst {where}, |z| {zc.max():.3g}): the KL evaluated at another draw than "
                    f"the one SPEC section 3 names (the forward's own or an extra one)?", where))
    return rows
