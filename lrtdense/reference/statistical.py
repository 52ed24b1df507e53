"""The statistical mode of ``verify``: for ports that cannot take noise as an input.

For an eligible case (one layer of any of the five classes, linear activation: SPEC.md section 7)
the port runs S >= 10000 independent sample-mode calls on the case's x with its own generator
and writes, per draw s:

* ``samples/outputs`` (S, ..., units): the outputs;
* ``samples/grads/<param>`` (S, *param.shape) and ``samples/grads/x`` (S, *x.shape): the
  gradients of the statistical objective of that draw,
  L_s = sum(g * out_s) + 0.5 * sum(out_s ** 2) + kl/total (the quadratic term makes the expected
  gradient depend on the variance, so a wrong scale gradient shows in its mean).

With a linear activation every output element is exactly Gaussian for all five layers (for
Flipout, s_out * N(0, v) is N(0, v) whatever the signs), with mean and covariance known in closed
form (``moments``). Seven families of tests, each at alpha = ALPHA_PER_CASE / 7, Bonferroni-split
over its elements (two-sided):

1. ``mean``: each element's sample mean within z * sigma / sqrt(S) of the analytic mean (exact:
   the sample mean of Gaussians is Gaussian). Elements with variance 0 (all-zero input rows) must
   equal the mean in every draw.
2. ``variance``: each element's sample variance within the chi-square(S - 1) interval around the
   analytic variance (exact).
3. ``covariance``: for every pair of distinct elements, the sample covariance (about the analytic
   means) within z standard errors of the analytic covariance: 0 between rows for LRT, Flipout
   and the dropout layers, x_i (scale**2) x_j' between rows for Reparameterization, plus
   bias_scale**2 for a Normal bias shared by the batch. This catches noise shared across rows and
   a batch-shared weight draw passed off as LRT. Standard error from the S products (CLT).
4. ``normality``: each element's standardized draws against N(0, 1) by the Kolmogorov-Smirnov
   distance, rejected above sqrt(log(2 / a) / (2 S)): the Dvoretzky-Kiefer-Wolfowitz inequality
   with Massart's constant, a bound valid for every S, not an approximation.
5. ``kurtosis``: the per-draw average of z**4 over the elements has mean 3 under the null; its
   sample mean within z standard errors (CLT over the S independent draws; the elements of one
   draw may be correlated). Catches non-Gaussian noise of the right variance (uniform: 1.8).
6. ``quartic``: the pooled joint fourth moment of two rows and two units (``_quartic_row``):
   cov_ijk cov_ijk' / (sigma ...) for every class; catches a Flipout without sign_output,
   whose second moments are right.
7. ``gradients``: the mean of the per-draw gradients of every parameter and of x within z
   standard errors (CLT) of the gradient of the expected objective,
   E[L] = sum(g * mean) + 0.5 * sum(mean**2 + variance) + kl, computed by autograd from the
   closed-form moments.

False alarms: families 1, 2 and 4 are exact bounds; 3, 5, 6 and 7 use the normal approximation to a
mean of S >= 10000 i.i.d. terms with finite moments of every order, whose tail error at the
thresholds used (|z| ~ 6 to 7) is kept inside the budget by running them at a tenth of their
share (``CLT_MARGIN``). So a correct port fails a case with probability <= ALPHA_PER_CASE = 1e-8
and a run of at most MAX_CASES = 100 statistical cases with probability <= 1e-6 (union bound).
"""
import math

import autograd.numpy as anp
import numpy as np
from autograd import grad
from scipy import special, stats

from lrtdense import kernels, tree
from lrtdense.reference.generation import model_from_meta
from lrtdense.reference.report import Row

__all__ = ["eligible", "describe_eligible", "check", "moments", "expected_objective",
           "sample_keys", "sample_shapes", "ALPHA_PER_RUN", "ALPHA_PER_CASE", "MAX_CASES",
           "MIN_SAMPLES", "FAMILIES"]

ALPHA_PER_RUN = 1e-6
MAX_CASES = 100                      # statistical cases one run can hold (the shipped set: fewer)
ALPHA_PER_CASE = ALPHA_PER_RUN / MAX_CASES
FAMILIES = ("mean", "variance", "covariance", "normality", "kurtosis", "quartic", "gradients")
CLT_FAMILIES = ("covariance", "kurtosis", "quartic", "gradients")
CLT_MARGIN = 10.0
MIN_SAMPLES = 10000
CLASSES = ("DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
           "DenseVariationalDropout", "DenseSparseVariationalDropout")


def eligible(meta):
    """True if a case supports the statistical mode: one layer of a known class, linear."""
    if meta.get("kind") not in ("layer", "edge", "dropout"):
        return False
    model = meta.get("model") or {}
    if not isinstance(model, dict) or model.get("class_name") not in CLASSES:
        return False
    config = model.get("config", {})
    return isinstance(config, dict) and config.get("activation") in ("linear", None)


def describe_eligible():
    """A line saying which cases the statistical mode checks (for messages and ``list``)."""
    return ("single-layer cases (any of the five layer classes) with a linear activation; "
            "`lrtdense reference list` shows them with kind layer, edge or dropout")


def sample_keys(inputs):
    """The keys a port writes for a statistical case with these inputs."""
    params = sorted(k[len("params/"):] for k in inputs if k.startswith("params/"))
    return ["samples/outputs"] + [f"samples/grads/{p}" for p in params] + ["samples/grads/x"]


def sample_shapes(inputs, expected):
    """{key: the shape of one draw} for the keys of ``sample_keys``: a port writes (S, *shape)."""
    shapes = {"samples/outputs": expected["outputs/sample"].shape}
    shapes.update({f"samples/grads/{k[len('params/'):]}": v.shape
                   for k, v in inputs.items() if k.startswith("params/")})
    shapes["samples/grads/x"] = inputs["x"].shape
    return shapes


def family_alpha(family):
    """The false-alarm budget of one family of tests in one case."""
    alpha = ALPHA_PER_CASE / len(FAMILIES)
    return alpha / CLT_MARGIN if family in CLT_FAMILIES else alpha


# ----------------------------------------------------------------------------- the moments

def _layer(meta):
    return model_from_meta(meta)


def moments(meta, params, x):
    """Closed-form moments of the sample-mode outputs of a linear single-layer case.

    Returns:
      (mean (N, U), variance (N, U), cov (N, N, U)) with N the flattened batch: cov[i, j, k] is
      Cov(out[i, k], out[j, k]); outputs of different units are uncorrelated for every class.
      Computed in the case's dtype (its softplus thresholds and eps), as the port computes.
      The variances are those of the posterior the layer itself samples
      (``layer.posterior_moments``); examples covary only under an estimator that shares one
      weight draw across the batch (``layer.estimator.examples_covary``).
    """
    layer = _layer(meta)
    x2 = anp.reshape(x, (-1, x.shape[-1]))
    mean = anp.reshape(layer.forward(params, x, mode="mean")[0], (x2.shape[0], -1))
    posterior = layer.posterior_moments(params, x2.shape[-1])
    kvar = posterior.kernel_scale * posterior.kernel_scale
    bvar = 0.0 if posterior.bias_scale is None else posterior.bias_scale * posterior.bias_scale
    var = kernels.dense(x2 * x2, kvar) + bvar
    n = x2.shape[0]
    if layer.estimator.examples_covary:                    # one weight draw for the batch
        cross = anp.einsum("ij,kj,ju->iku", x2, x2, kvar)
    else:                                                  # independent across examples
        cross = anp.einsum("ij,iu->iju", anp.eye(n), kernels.dense(x2 * x2, kvar))
    return mean, var, cross + bvar


def expected_objective(meta, params, x, g):
    """E[sum(g * out) + 0.5 * sum(out**2)] + KL, differentiable in params and x (autograd)."""
    layer = _layer(meta)
    mean, var, _ = moments(meta, params, x)
    g2 = anp.reshape(g, mean.shape)
    return anp.sum(g2 * mean) + 0.5 * anp.sum(mean * mean + var) + layer.kl(params)


# ----------------------------------------------------------------------------------- tests

def _z(alpha, count):
    """Two-sided normal quantile for ``count`` tests sharing ``alpha``."""
    return float(stats.norm.isf(alpha / (2 * max(count, 1))))


def _row(name, family, bad, worst, limit, note_ok, note_bad, index=""):
    row = Row(name, f"samples: {family}")
    row.max_abs = float(worst)
    row.max_rel = float(worst / limit) if limit else float("nan")
    row.worst = index
    if bad:
        row.note = note_bad
    else:
        row.status = "pass"
        row.note = note_ok
    return row


def _finite(name, key, arr, shape):
    """A failing row if ``arr`` is not (S >= MIN_SAMPLES, *shape) of finite floats, else None."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        return Row(name, key, note=f"dtype {arr.dtype}, expected a float array")
    if arr.ndim != len(shape) + 1 or arr.shape[1:] != tuple(shape) or arr.shape[0] < MIN_SAMPLES:
        return Row(name, key, note=f"expected shape (S >= {MIN_SAMPLES}, {', '.join(map(str, shape))}), "
                                   f"got {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        return Row(name, key, note=f"{int(bad.sum())} NaN or inf among the {arr.size} sampled "
                                   f"values")
    return None


def check(name, meta, inputs, expected, results):
    """The statistical rows of one case. Returns (rows, deterministic keys still to compare)."""
    keys = [k for k in expected if k.startswith("outputs/") and k != "outputs/sample"
            or k.startswith("kl/")]
    params = tree.unflatten(inputs, "params")
    x = inputs["x"]
    out_shape = expected["outputs/sample"].shape
    grad_keys = [f"samples/grads/{p}" for p in sorted(params)] + ["samples/grads/x"]
    shapes = {f"samples/grads/{p}": v.shape for p, v in params.items()}
    shapes["samples/grads/x"] = x.shape
    rows = []
    problem = _finite(name, "samples/outputs", results.get("samples/outputs", np.zeros(0)),
                      out_shape) if "samples/outputs" in results else Row(
        name, "samples/outputs", note="missing from the port's results")
    if problem is None:
        rows.extend(_output_rows(name, meta, params, x, np.asarray(
            results["samples/outputs"], dtype=np.float64)))
    else:
        rows.append(problem)
    grads, bad = {}, []
    for key in grad_keys:
        if key not in results:
            bad.append(Row(name, key, note="missing from the port's results"))
            continue
        problem = _finite(name, key, results[key], shapes[key])
        if problem is not None:
            bad.append(problem)
        else:
            grads[key] = np.asarray(results[key], dtype=np.float64)
    if bad:
        rows.extend(bad)
    else:
        rows.append(_gradient_row(name, meta, params, x, inputs["g"], grads))
    return rows, keys


def _output_rows(name, meta, params, x, samples):
    """The rows of the six output families (1 to 6 in the module docstring) for ``samples``
    (S, ..., units), the port's S draws of the case's outputs, against the closed-form
    ``moments``. The batch is flattened to N rows: every element is one (row, unit) of (N, U);
    an element of variance 0 (such as one of an all-zero input row) is "not live"."""
    mean, var, cov = (np.asarray(v, dtype=np.float64) for v in moments(meta, params, x))
    s = samples.shape[0]
    n, u = mean.shape
    draws = samples.reshape(s, n, u)
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    live = var > 0
    dev = draws - mean
    # the live elements' draws standardized by the analytic moments: (S, number live)
    zstd = dev.reshape(s, n * u)[:, live.reshape(-1)] / np.sqrt(var.reshape(-1)[live.reshape(-1)])
    return [_mean_row(name, draws, dev, mean, var, rtol),
            _variance_row(name, draws, var),
            _covariance_row(name, dev, cov, live),
            _normality_row(name, zstd),
            _kurtosis_row(name, zstd),
            _quartic_row(name, meta, params, dev, var, cov)]


def _index(flat_position, shape):
    """The (row, unit) index, as a string, of a position in an array of ``shape`` flattened."""
    return str(tuple(int(i) for i in np.unravel_index(flat_position, shape)))


def _mean_row(name, draws, dev, mean, var, rtol):
    """Family 1: each live element's sample mean within z standard errors of ``mean``; each
    element of variance 0 equal to its mean in every draw. draws, dev: (S, N, U), dev the draws
    less ``mean``; mean, var: (N, U); rtol: the case dtype's relative rounding."""
    s = draws.shape[0]
    live = var > 0
    z = _z(family_alpha("mean"), live.sum())
    m_hat = draws.mean(0)
    # the floor: the port's and this mean differ by rounding (10 * rtol of the case's scale), which
    # matters only where sigma / sqrt(S) is below it; it can only lower the false-alarm rate
    const_tol = 10 * rtol * (1 + np.max(np.abs(mean)))
    zs = np.where(live, np.abs(m_hat - mean) / np.sqrt(np.where(live, var, 1) / s + const_tol ** 2),
                  0.0)
    const_err = np.where(live, 0.0, np.max(np.abs(dev), axis=0))
    n_bad = int((zs > z).sum()) + int((const_err > const_tol).sum())
    return _row(name, "mean", n_bad, zs.max(), z,
                f"S={s}: worst |z| {zs.max():.2f} of {z:.2f}",
                f"{int((zs > z).sum())} element means outside +-{z:.2f} standard errors of "
                f"x @ loc + bias, {int((const_err > const_tol).sum())} zero-variance "
                f"elements not constant (S={s}; worst |z| {zs.max():.3g})",
                _index(int(np.argmax(zs)), zs.shape))


def _variance_row(name, draws, var):
    """Family 2: each live element's sample variance (ddof=1) within the chi-square(S - 1)
    interval around ``var``, Bonferroni-split over the live elements. draws: (S, N, U); var:
    (N, U)."""
    s = draws.shape[0]
    live = var > 0
    a = family_alpha("variance")
    k = max(int(live.sum()), 1)
    lo = stats.chi2.ppf(a / (2 * k), s - 1) / (s - 1)
    hi = stats.chi2.isf(a / (2 * k), s - 1) / (s - 1)
    ratio = np.where(live, draws.var(0, ddof=1) / np.where(live, var, 1), 1.0)
    n_bad = int(((ratio < lo) | (ratio > hi)).sum())
    far = np.abs(np.log(ratio))
    return _row(name, "variance", n_bad, np.abs(ratio - 1).max(), hi - 1,
                f"variance ratios in [{ratio.min():.4f}, {ratio.max():.4f}] within "
                f"[{lo:.4f}, {hi:.4f}]",
                f"{n_bad} element variances outside the chi-square interval [{lo:.4f}, "
                f"{hi:.4f}] x analytic (x*x) @ scale**2 (+ bias scale**2); ratios "
                f"[{ratio.min():.4g}, {ratio.max():.4g}]", _index(int(np.argmax(far)), far.shape))


def _live_covariance(cov, live):
    """The analytic covariance matrix of the live elements, (L, L) in the order of their flat
    positions in (N, U): cov (N, N, U) within each unit, 0 between units."""
    n, u = live.shape
    idx = np.flatnonzero(live.reshape(-1))
    full = np.zeros((n * u, n * u))
    for k_ in range(u):
        rows_k = np.arange(n) * u + k_
        full[np.ix_(rows_k, rows_k)] = cov[:, :, k_]
    return full[np.ix_(idx, idx)]


def _covariance_row(name, dev, cov, live):
    """Family 3: the sample covariance (about the analytic means) of every pair of distinct
    live elements within z standard errors (CLT over the S products) of the analytic one: in
    the same unit ``cov``, across units 0. dev: (S, N, U), the draws less the analytic means;
    cov: (N, N, U); live: (N, U) bool."""
    s, n, u = dev.shape
    flat_dev = dev.reshape(s, n * u)[:, live.reshape(-1)]
    idx = np.flatnonzero(live.reshape(-1))
    full = _live_covariance(cov, live)
    iu = np.triu_indices(len(idx), 1)
    if not len(iu[0]):
        return _row(name, "covariance", 0, 0.0, 1.0, "one random element: no pairs", "")
    prod = flat_dev[:, iu[0]] * flat_dev[:, iu[1]]
    c_hat = prod.mean(0)
    se = prod.std(0, ddof=1) / np.sqrt(s)
    sd = np.sqrt(np.diag(full))
    se = np.maximum(se, 1e-300)
    zc = np.abs(c_hat - full[iu]) / se
    z = _z(family_alpha("covariance"), len(zc))
    corr = (c_hat - full[iu]) / (sd[iu[0]] * sd[iu[1]])
    j = int(np.argmax(zc))
    pair = (divmod(int(idx[iu[0][j]]), u), divmod(int(idx[iu[1][j]]), u))
    return _row(name, "covariance", int((zc > z).sum()), zc.max(), z,
                f"{len(zc)} pairs: worst |z| {zc.max():.2f} of {z:.2f}",
                f"{int((zc > z).sum())} of {len(zc)} covariances between output "
                f"elements off the analytic ones by more than {z:.2f} standard errors "
                f"(worst: elements {pair[0]} and {pair[1]} (row, unit), correlation off "
                f"by {corr[j]:+.3f}): noise shared across rows, or one weight draw "
                f"for the batch where each example needs its own (or the reverse)?",
                f"{pair[0]}-{pair[1]}")


def _normality_row(name, zstd):
    """Family 4: each live element's standardized draws against N(0, 1) by the KS distance,
    rejected above the DKW-Massart bound. zstd: (S, number of live elements)."""
    s, live_count = zstd.shape
    k = max(live_count, 1)
    d_max = math.sqrt(math.log(2 * k / family_alpha("normality")) / (2 * s))
    srt = np.sort(zstd, axis=0)
    cdf = special.ndtr(srt)
    grid = np.arange(1, s + 1)[:, None] / s
    d = (np.maximum(np.max(grid - cdf, axis=0), np.max(cdf - (grid - 1.0 / s), axis=0))
         if live_count else np.zeros(1))
    return _row(name, "normality", int((d > d_max).sum()), d.max(), d_max,
                f"max KS distance {d.max():.4f} of {d_max:.4f} (DKW)",
                f"{int((d > d_max).sum())} elements whose standardized draws are not N(0, 1): "
                f"KS distance up to {d.max():.4f} > {d_max:.4f} (DKW bound; S={s})")


def _kurtosis_row(name, zstd):
    """Family 5, pooled kurtosis: the per-draw mean of z**4 over the live elements has mean 3;
    its sample mean within z standard errors (CLT over the S draws). zstd: (S, number of live
    elements)."""
    s, live_count = zstd.shape
    if not live_count:
        return _row(name, "kurtosis", 0, 0.0, 1.0, "no random element", "")
    t = np.mean(zstd ** 4, axis=1)
    se = t.std(ddof=1) / math.sqrt(s)
    zk = abs(t.mean() - 3.0) / se if se > 0 else (0.0 if t.mean() == 3.0 else math.inf)
    z = _z(family_alpha("kurtosis"), 1)
    return _row(name, "kurtosis", int(zk > z), zk, z,
                f"mean z**4 {t.mean():.4f} (3 expected), |z| {zk:.2f} of {z:.2f}",
                f"mean of z**4 over the standardized draws is {t.mean():.4f}, expected 3 "
                f"for Gaussian noise (|z| {zk:.1f} > {z:.2f}): noise of the right "
                f"variance but not normal?")


def _quartic_row(name, meta, params, dev, var, cov):
    """Joint fourth moments of two rows and two units, pooled: the per-draw mean over (i < j,
    k < k') of X_ik X_ik' X_jk X_jk' / (sigma_ik sigma_ik' sigma_jk sigma_jk'), X centered.
    It is cov_ijk cov_ijk' / (...) for every class: Isserlis's theorem for the Gaussian layers
    (the other two pairings are across units, uncorrelated); for Flipout every term holding a
    perturbation vanishes, since each (example, unit) has its own sign_output, leaving the shared
    bias's b_k b_k', which is cov_ijk cov_ijk' there. A Flipout without sign_output (the rows then
    share one dW up to input signs) has the right covariances but fails here."""
    s, n, u = dev.shape
    live_rows = [i for i in range(n) if np.all(var[i] > 0)]
    if len(live_rows) < 2 or u < 2:
        return _row(name, "quartic", 0, 0.0, 1.0, "needs 2 random rows and 2 units: not "
                                                  "applicable", "")
    r = np.array(live_rows)
    zstd = dev[:, r, :] / np.sqrt(var[r])
    corr = cov[np.ix_(r, r)] / np.sqrt(var[r][:, None, :] * var[r][None, :, :])
    i, j = np.triu_indices(len(r), 1)
    k, k2 = np.triu_indices(u, 1)
    prod = (zstd[:, i][:, :, k] * zstd[:, i][:, :, k2] * zstd[:, j][:, :, k] * zstd[:, j][:, :, k2])
    t = prod.reshape(s, -1).mean(1)
    want = float(np.mean(corr[i, j][:, k] * corr[i, j][:, k2]))
    zq = abs(t.mean() - want) / max(t.std(ddof=1) / math.sqrt(s), 1e-300)
    z = _z(family_alpha("quartic"), 1)
    return _row(name, "quartic", int(zq > z), zq, z,
                f"pooled 4th moment {t.mean():+.4f} ({want:+.4f} expected), |z| {zq:.2f} of {z:.2f}",
                f"joint 4th moments of pairs of rows and units average {t.mean():+.4f}, expected "
                f"{want:+.4f} (|z| {zq:.1f} > {z:.2f}): rows not independent in the way the "
                f"estimator makes them (Flipout without sign_output?)")


def _gradient_row(name, meta, params, x, g, grads):
    """The mean of the per-draw gradients against the gradient of the expected objective."""
    analytic_p = grad(lambda p: expected_objective(meta, p, x, g))(params)
    analytic = {f"samples/grads/{k}": np.asarray(v, dtype=np.float64) for k, v in analytic_p.items()}
    analytic["samples/grads/x"] = np.asarray(
        grad(lambda xx: expected_objective(meta, params, xx, g))(x), dtype=np.float64)
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    total = sum(v.size for v in analytic.values())
    z = _z(family_alpha("gradients"), total)
    worst, worst_where, n_bad = 0.0, "", 0
    s = next(iter(grads.values())).shape[0]
    for key, want in analytic.items():
        draws = grads[key]
        se = draws.std(0, ddof=1) / math.sqrt(s)
        floor = 10 * rtol * (1 + float(np.max(np.abs(want))))  # deterministic elements
        zs = np.abs(draws.mean(0) - want) / np.sqrt(se ** 2 + floor ** 2)
        n_bad += int((zs > z).sum())
        if zs.max() > worst:
            worst = float(zs.max())
            worst_where = f"{key[len('samples/grads/'):]}{tuple(int(i) for i in np.unravel_index(int(np.argmax(zs)), zs.shape))}"
    return _row(name, "gradients", n_bad, worst, z,
                f"{total} gradient elements: worst |z| {worst:.2f} of {z:.2f}",
                f"{n_bad} of {total} mean per-draw gradient elements off the gradient of the "
                f"expected objective by more than {z:.2f} standard errors (worst {worst_where}, "
                f"|z| {worst:.3g})", worst_where)
