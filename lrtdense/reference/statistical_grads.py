"""The two gradient families of the statistical mode (``lrtdense.reference.statistical``): the
mean of the per-draw gradients against the gradient of the expected objective, in analytic
standard errors, and their spread against the analytic per-element variance.

The per-draw gradient of `L = sum(g * out) + 0.5 * sum(out**2) + kl` w.r.t. every parameter and x
is a quadratic polynomial in the Gaussian noise eta of the draw: with a linear activation, out =
mu + A eta with mu and A functions of the parameters and x (LRT and the dropout layers: m + s *
eps; Reparameterization: x @ (loc + scale * eps)), so

```
grad = a + B eta + eta' C eta,    Var(grad_i) = |B_i|**2 + 2 |C_i|_F**2    (C_i symmetric)
```

for eta ~ N(0, I) (Isserlis). ``gradient_polynomial`` reads a, B and C off the gradient itself,
through lrtdense's own forward with explicit noise (``forward(..., noise=, estimator=)``), at
eta = 0, +-u_e and u_e + u_f (exact for a quadratic, whatever the layer).

Flipout draws eps (in, units) and signs. Its output is that of independent per-example weights
(``estimators.SEPARATE``) with eta[n, j, k] = s_out[n, k] s_in[n, j] eps[j, k], so its gradient
is the SEPARATE polynomial of that eta. This eta has E[eta] = 0, E[eta eta'] = I and no third
moments, but its fourth moments are not Gaussian: `eta[n,j,k]**2 eta[n',j,k]**2 = eps[j,k]**4` has
mean 3 where independent normals give 1, for every n != n' (all other fourth moments agree with
Isserlis's, because `s**2 = 1` and the signs of distinct (n, j), (n, k) are independent). So,
exactly,

```
Var_flipout(grad_i) = |B_i|**2 + 2 |C_i|_F**2
                      + 2 sum_{j,k} sum_{n != n'} (C_i[p, p] C_i[q, q] + 2 C_i[p, q]**2),
p = (n, j, k), q = (n', j, k).
```

A random KL (``statistical_kl``) of Normal priors joins the polynomial: its draws are part of eta
(the layer's own noise layout). One of another prior is no polynomial; ``_kl_part`` adds its
gradient's variance and its covariance with the outputs' polynomial (one normal per element).

The polynomial is computed in float64 (the variances are judged to a few percent; the case
dtype's rounding would only add noise to C).
"""
import dataclasses
import hashlib
import json
import math

import autograd.numpy as anp
import numpy as np
from autograd import grad

from lrtdense import estimators
from lrtdense.reference.generation import model_from_meta
from lrtdense.reference.statistical_kl import kl_gradient_moments
from lrtdense.reference.statistical_rows import family_alpha, row, z_quantile

__all__ = ["gradient_polynomial", "gradient_variance", "gradient_rows", "untested", "MAX_NOISE"]

MAX_NOISE = 200      # noise elements of one draw: the polynomial takes about MAX_NOISE**2 / 2 grads


def polynomial_kl(layer):
    """Whether the whole per-draw gradient, a random KL's included, is a quadratic polynomial in
    the noise: no random KL, or one of Normal priors (DenseVariational's is) outside Flipout,
    whose SEPARATE form has no room for the divergence's draw."""
    if not layer.random_divergence:
        return True
    priors = [getattr(layer, f"{n}_prior", None) for n in ("kernel", "bias")]
    return layer.estimator is not estimators.FLIPOUT and all(
        p is None or p.closed_form for p in priors)


def _noise(layer, x_shape):
    """(estimator or None, noise shapes) of the polynomial: the layer's own noise, its Monte
    Carlo divergence's draws included, where ``polynomial_kl`` and the KL is random; else its
    estimator's (Flipout's as SEPARATE's), the KL then at the posterior mean (``kl_part``
    adds the rest)."""
    if layer.random_divergence and polynomial_kl(layer):
        return None, layer.noise_shapes(x_shape)
    est = estimators.SEPARATE if layer.estimator is estimators.FLIPOUT else layer.estimator
    return est, layer.estimator_noise_shapes(est, x_shape)


def untested(meta, x):
    """Why the per-draw gradient's variance is not computed (None where it is): more than
    MAX_NOISE noise elements."""
    layer = model_from_meta(meta)
    if sum(math.prod(s) for s in _noise(layer, x.shape)[1].values()) > MAX_NOISE:
        return f"a draw has more than {MAX_NOISE} noise elements"
    return None


def _probe(meta, params, x, g):
    """(G, shapes): G(eta) the per-draw gradient, one flat float64 vector (params by
    sorted name, then x), of the noise ``eta`` flattened in ``shapes``' order."""
    layer = model_from_meta(meta)
    est, shapes = _noise(layer, x.shape)
    layer = dataclasses.replace(layer, dtype="float64")
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x64 = np.asarray(x, dtype=np.float64)
    g64 = np.asarray(g, dtype=np.float64)

    def objective(p, xx, noise):
        out, kl = layer.forward(p, xx, noise=noise, estimator=est)
        return anp.sum(g64 * out) + 0.5 * anp.sum(out * out) + kl

    gradient = grad(objective, (0, 1))

    def at(eta):
        noise, start = {}, 0
        for key, shape in shapes.items():
            noise[key] = eta[start:start + math.prod(shape)].reshape(shape)
            start += math.prod(shape)
        gp, gx = gradient(p64, x64, noise)
        return np.concatenate([np.ravel(gp[k]) for k in sorted(gp)] + [np.ravel(gx)])
    return at, shapes


def gradient_polynomial(meta, params, x, g):
    """The per-draw gradient as a + B eta + eta' C eta in the noise eta (module docstring).

    Returns:
      (a (P,), B (P, E), C (P, E, E) symmetric in its last two axes, shapes): P the gradient's
      elements (params by sorted name, then x), E the noise's (``shapes``' order: the layer's
      estimator's noise, Flipout's as SEPARATE's).
    """
    at, shapes = _probe(meta, params, x, g)
    e = sum(math.prod(s) for s in shapes.values())
    unit = np.eye(e)
    a = at(np.zeros(e))
    plus = np.stack([at(unit[i]) for i in range(e)], 1)
    minus = np.stack([at(-unit[i]) for i in range(e)], 1)
    b = (plus - minus) / 2
    c = np.zeros((a.size, e, e))
    c[:, np.arange(e), np.arange(e)] = (plus + minus) / 2 - a[:, None]
    for i in range(e):
        for j in range(i + 1, e):
            c[:, i, j] = c[:, j, i] = (at(unit[i] + unit[j]) - plus[:, i] - plus[:, j] + a) / 2
    return a, b, c, shapes


def _variance(meta, params, x, g):
    """Var of every per-draw gradient element, flat (P,) (module docstring's formulas)."""
    _, b, c, shapes = gradient_polynomial(meta, params, x, g)
    var = np.sum(b * b, 1) + 2 * np.sum(c * c, (1, 2))
    if not polynomial_kl(model_from_meta(meta)):
        var = var + _kl_part(meta, params, x, b, c, shapes)
    if model_from_meta(meta).estimator is estimators.FLIPOUT:
        n, d, u = shapes["kernel"]                   # SEPARATE's kernel noise comes first
        ck = c[:, :n * d * u, :n * d * u].reshape(-1, n, d * u, n, d * u)
        jk = np.arange(d * u)
        cross = ck[:, :, jk, :, jk]                  # (d*u, P, n, n): C[(n,jk), (n',jk)]
        diag = np.diagonal(cross, axis1=2, axis2=3)  # (d*u, P, n)
        off = 1 - np.eye(n)
        var = var + 2 * np.sum(np.einsum("tpn,tpm,nm->tp", diag, diag, off)
                               + 2 * np.einsum("tpnm,nm->tp", cross * cross, off), 0)
    return var


def _kl_part(meta, params, x, b, c, shapes):
    """What a non-polynomial random KL adds to the variances, flat (P,): its gradient K_i is a
    function of one standard normal Z (its element's), so with the polynomial's B, C at that
    element m where the forward shares the draw (``layer.shares_draw``),
    `Var(K_i) + 2 (B_im E[Z K_i] + C_imm E[(Z**2 - 1) K_i])` (Isserlis; ``kl_gradient_moments``)."""
    layer = model_from_meta(meta)
    moments = kl_gradient_moments(meta, params, x.shape)
    offsets, start = {}, 0
    for key, shape in shapes.items():
        offsets[key] = (start, shape)
        start += math.prod(shape)
    extra, at = [], 0
    for name in sorted(params):
        term = "kernel" if name.startswith("kernel") else "bias"
        size = params[name].size
        part = moments["var"][name].ravel().copy()
        if layer.shares_draw(term):
            first, shape = offsets[term]
            m = first + np.arange(size)          # the element's own noise: the same index
            rows = at + np.arange(size)
            part += 2 * (b[rows, m] * moments["z"][name].ravel()
                         + c[rows, m, m] * moments["z2"][name].ravel())
        extra.append(part)
        at += size
    return np.concatenate(extra + [np.zeros(x.size)])


_MEMO = {}  # content digest -> variances: verify and the tests check one case many times


def gradient_variance(meta, params, x, g):
    """{"samples/grads/<param>" and "samples/grads/x": the analytic variance of each element of
    the per-draw gradient, float64 of the parameter's (x's) shape} (module docstring), or None
    where ``untested`` says why not (the shipped cases have at most 75 noise elements)."""
    if untested(meta, x) is not None:
        return None
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for k, arr in sorted(params.items()) + [("x", x), ("g", g)]:
        h.update(f"{k} {arr.shape} {arr.dtype}".encode() + np.ascontiguousarray(arr).tobytes())
    key = h.hexdigest()
    if key not in _MEMO:
        if len(_MEMO) >= 256:
            _MEMO.clear()
        _MEMO[key] = _variance(meta, params, x, g)
    flat, out, start = _MEMO[key], {}, 0
    for k in sorted(params) + ["x"]:
        shape = (params[k] if k != "x" else x).shape
        out[f"samples/grads/{k}"] = flat[start:start + math.prod(shape)].reshape(shape).copy()
        start += math.prod(shape)
    return out


def _worst(zs_by_key):
    """(worst |z|, where: "param(index)")."""
    key = max(zs_by_key, key=lambda k: float(zs_by_key[k].max()))
    zs = zs_by_key[key]
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(zs)), zs.shape))
    return float(zs.max()), f"{key[len('samples/grads/'):]}{index}"


def gradient_rows(name, grads, mean, var, rtol, why=None):
    """The rows of the two gradient families.

    Args:
      grads: {key: (S, *shape) float64}, the port's per-draw gradients.
      mean, var: {key: shape}, the analytic mean (gradient of the expected objective) and
        variance (``gradient_variance``) of each element; var None (a case too large for it):
        the mean is judged by the draws' own spread and the spread is not tested.
      rtol: the case dtype's relative rounding.
      why: with var None, why it is (``untested``).
    Returns:
      [the "gradients" row: each element's mean within z * sqrt(var / S) of ``mean``;
       the "gradient_spread" row: each element's mean squared deviation d from ``mean`` at most
       z standard errors above ``var``, the errors from the draws' own fourth moments about
       ``var`` (a self-normalized sum)].

    One-sided: d (degree 4 in the noise) is so right-skewed that its self-normalized mean has a
    heavy lower tail (Edgeworth; SPEC section 7), and too little spread moves the mean anyway.
    """
    total = sum(v.size for v in mean.values())
    s = next(iter(grads.values())).shape[0]
    own = var is None
    if own:
        var = {key: draws.var(0, ddof=1) for key, draws in grads.items()}
    z_mean = z_quantile(family_alpha("gradients"), total)
    z_var = z_quantile(family_alpha("gradient_spread"), total)
    zm, zv, ratio = {}, {}, {}
    for key, want in mean.items():
        # the floor: the port's rounding of a gradient (10 * rtol of the case's scale), which
        # matters only for elements of (near) zero variance; it can only lower false alarms
        floor = 10 * rtol * (1 + float(np.max(np.abs(want))))
        dev = grads[key] - want
        zm[key] = np.abs(dev.mean(0)) / np.sqrt(var[key] / s + floor ** 2)
        sq = dev * dev
        se2 = np.mean((sq - var[key]) ** 2, 0) / s
        vfloor = 2 * np.sqrt(var[key]) * floor + floor ** 2
        zv[key] = np.maximum(sq.mean(0) - var[key], 0.0) / np.sqrt(se2 + vfloor ** 2)
        ratio[key] = sq.mean(0) / np.maximum(var[key], 1e-300)
    bad_m = sum(int((v > z_mean).sum()) for v in zm.values())
    bad_v = sum(int((v > z_var).sum()) for v in zv.values())
    wm, where_m = _worst(zm)
    wv, where_v = _worst(zv)
    lo = min(float(r.min()) for r in ratio.values())
    hi = max(float(r.max()) for r in ratio.values())
    errors = "of the draws' own standard errors" if own else "analytic standard errors"
    if own:
        bad_v, wv, hi, lo = 0, 0.0, 1.0, 1.0
    return [row(name, "gradients", bad_m, wm, z_mean,
                f"{total} gradient elements: worst |z| {wm:.2f} of {z_mean:.2f}"
                + (f" (in the draws' own standard errors: {why})" if own else ""),
                f"{bad_m} of {total} mean per-draw gradient elements off the gradient of the "
                f"expected objective by more than {z_mean:.2f} {errors} (worst {where_m}, "
                f"|z| {wm:.3g})", where_m),
            row(name, "gradient_spread", bad_v, wv, z_var,
                (f"not tested: {why}" if own else
                 f"{total} gradient variances: ratios to the analytic in [{lo:.4f}, {hi:.4f}], "
                 f"worst z {wv:.2f} of {z_var:.2f}"),
                f"{bad_v} of {total} per-draw gradient variances above the analytic ones by more "
                f"than {z_var:.2f} standard errors (worst {where_v}, z {wv:.3g}; ratios "
                f"[{lo:.4g}, {hi:.4g}]): noise added to the gradients?", where_v)]
