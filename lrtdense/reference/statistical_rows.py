"""The per-family tests of the statistical mode (``lrtdense.reference.statistical``): each
family's row from the draws, at that family's share of the false-alarm budget.

The budget: a run of at most MAX_CASES statistical cases fails a correct port with probability
<= ALPHA_PER_RUN (union bound); each case has ALPHA_PER_CASE, split evenly over FAMILIES, and the
families whose threshold rests on the central limit theorem (CLT_FAMILIES) run at 1 / CLT_MARGIN
of their share (the module docstring of ``statistical`` argues each family's test).
"""
import math

import numpy as np
from scipy import special, stats

from lrtdense.reference.report import Row

__all__ = ["ALPHA_PER_RUN", "MAX_CASES", "ALPHA_PER_CASE", "FAMILIES", "CLT_FAMILIES",
           "CLT_MARGIN", "family_alpha", "z_quantile", "row", "index_of", "mean_row",
           "pooled_mean_row", "variance_row", "live_covariance", "covariance_row",
           "normality_row", "kurtosis_row", "chance_coincidence", "duplicates_row", "serial_row"]

ALPHA_PER_RUN = 1e-6
MAX_CASES = 100                      # statistical cases one run can hold (the shipped set: fewer)
ALPHA_PER_CASE = ALPHA_PER_RUN / MAX_CASES
FAMILIES = ("mean", "variance", "covariance", "normality", "kurtosis", "quartic", "gradients",
            "gradient_spread", "duplicates", "serial", "kl_mean", "kl_covariance")
CLT_FAMILIES = ("covariance", "kurtosis", "quartic", "gradients", "gradient_spread", "serial",
                "kl_mean", "kl_covariance", "loss_mean")   # loss_mean: training cases only
CLT_MARGIN = 10.0


def family_alpha(family):
    """The false-alarm budget of one family of tests in one case."""
    alpha = ALPHA_PER_CASE / len(FAMILIES)
    return alpha / CLT_MARGIN if family in CLT_FAMILIES else alpha


def z_quantile(alpha, count):
    """Two-sided normal quantile for ``count`` tests sharing ``alpha``."""
    return float(stats.norm.isf(alpha / (2 * max(count, 1))))


def row(name, family, bad, worst, limit, note_ok, note_bad, index=""):
    """The report row of one family's test: its worst statistic against its limit, failing with
    ``note_bad`` if ``bad``, else passing with ``note_ok``."""
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


def index_of(flat_position, shape):
    """The (row, unit) index, as a string, of a position in an array of ``shape`` flattened."""
    return str(tuple(int(i) for i in np.unravel_index(flat_position, shape)))


def mean_row(name, draws, dev, mean, var, rtol):
    """Family 1: each live element's sample mean within z standard errors of ``mean``; each
    element of variance 0 equal to its mean in every draw. draws, dev: (S, N, U), dev the draws
    less ``mean``; mean, var: (N, U); rtol: the case dtype's relative rounding."""
    s = draws.shape[0]
    live = var > 0
    z = z_quantile(family_alpha("mean"), live.sum())
    m_hat = draws.mean(0)
    # the floor: the port's and this mean differ by rounding (10 * rtol of the case's scale), which
    # matters only where sigma / sqrt(S) is below it; it can only lower the false-alarm rate
    const_tol = 10 * rtol * (1 + np.max(np.abs(mean)))
    zs = np.where(live, np.abs(m_hat - mean) / np.sqrt(np.where(live, var, 1) / s + const_tol ** 2),
                  0.0)
    const_err = np.where(live, 0.0, np.max(np.abs(dev), axis=0))
    n_bad = int((zs > z).sum()) + int((const_err > const_tol).sum())
    return row(name, "mean", n_bad, zs.max(), z,
                f"S={s}: worst |z| {zs.max():.2f} of {z:.2f}",
                f"{int((zs > z).sum())} element means outside +-{z:.2f} standard errors of "
                f"x @ loc + bias, {int((const_err > const_tol).sum())} zero-variance "
                f"elements not constant (S={s}; worst |z| {zs.max():.3g})",
                index_of(int(np.argmax(zs)), zs.shape))


def variance_row(name, draws, var):
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
    return row(name, "variance", n_bad, np.abs(ratio - 1).max(), hi - 1,
                f"variance ratios in [{ratio.min():.4f}, {ratio.max():.4f}] within "
                f"[{lo:.4f}, {hi:.4f}]",
                f"{n_bad} element variances outside the chi-square interval [{lo:.4f}, "
                f"{hi:.4f}] x analytic (x*x) @ scale**2 (+ bias scale**2); ratios "
                f"[{ratio.min():.4g}, {ratio.max():.4g}]", index_of(int(np.argmax(far)), far.shape))


def live_covariance(cov, live):
    """The analytic covariance matrix of the live elements, (L, L) in the order of their flat
    positions in (N, U): cov (N, N, U) within each unit, 0 between units."""
    n, u = live.shape
    idx = np.flatnonzero(live.reshape(-1))
    full = np.zeros((n * u, n * u))
    for k_ in range(u):
        rows_k = np.arange(n) * u + k_
        full[np.ix_(rows_k, rows_k)] = cov[:, :, k_]
    return full[np.ix_(idx, idx)]


def covariance_row(name, dev, cov, live):
    """Family 3: the sample covariance (about the analytic means) of every pair of distinct
    live elements within z standard errors (CLT over the S products) of the analytic one: in
    the same unit ``cov``, across units 0. dev: (S, N, U), the draws less the analytic means;
    cov: (N, N, U); live: (N, U) bool."""
    s, n, u = dev.shape
    flat_dev = dev.reshape(s, n * u)[:, live.reshape(-1)]
    idx = np.flatnonzero(live.reshape(-1))
    full = live_covariance(cov, live)
    iu = np.triu_indices(len(idx), 1)
    if not len(iu[0]):
        return row(name, "covariance", 0, 0.0, 1.0, "one random element: no pairs", "")
    prod = flat_dev[:, iu[0]] * flat_dev[:, iu[1]]
    c_hat = prod.mean(0)
    se = prod.std(0, ddof=1) / np.sqrt(s)
    sd = np.sqrt(np.diag(full))
    se = np.maximum(se, 1e-300)
    zc = np.abs(c_hat - full[iu]) / se
    z = z_quantile(family_alpha("covariance"), len(zc))
    corr = (c_hat - full[iu]) / (sd[iu[0]] * sd[iu[1]])
    j = int(np.argmax(zc))
    pair = (divmod(int(idx[iu[0][j]]), u), divmod(int(idx[iu[1][j]]), u))
    return row(name, "covariance", int((zc > z).sum()), zc.max(), z,
                f"{len(zc)} pairs: worst |z| {zc.max():.2f} of {z:.2f}",
                f"{int((zc > z).sum())} of {len(zc)} covariances between output "
                f"elements off the analytic ones by more than {z:.2f} standard errors "
                f"(worst: elements {pair[0]} and {pair[1]} (row, unit), correlation off "
                f"by {corr[j]:+.3f}): noise shared across rows, or one weight draw "
                f"for the batch where each example needs its own (or the reverse)?",
                f"{pair[0]}-{pair[1]}")


def normality_row(name, zstd):
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
    return row(name, "normality", int((d > d_max).sum()), d.max(), d_max,
                f"max KS distance {d.max():.4f} of {d_max:.4f} (DKW)",
                f"{int((d > d_max).sum())} elements whose standardized draws are not N(0, 1): "
                f"KS distance up to {d.max():.4f} > {d_max:.4f} (DKW bound; S={s})")


def mean_z(t, want):
    """|mean(t) - want| in standard errors of the mean of the S per-draw values ``t`` (CLT over
    independent draws); 0 or inf when the draws do not vary."""
    se = t.std(ddof=1) / math.sqrt(t.shape[0])
    return abs(t.mean() - want) / se if se > 0 else (0.0 if t.mean() == want else math.inf)


def kurtosis_row(name, zstd):
    """Family 5, pooled kurtosis: the per-draw mean of `z**4` over the live elements has mean 3;
    its sample mean within z standard errors (CLT over the S draws). zstd: (S, number of live
    elements)."""
    s, live_count = zstd.shape
    if not live_count:
        return row(name, "kurtosis", 0, 0.0, 1.0, "no random element", "")
    return pooled_mean_row(name, "kurtosis", np.mean(zstd ** 4, axis=1), 3.0,
                           "mean z**4 over the standardized draws",
                           "noise of the right variance but not normal?")


def pooled_mean_row(name, family, t, want, what, suspect):
    """The row of a test of a mean: the S per-draw values ``t`` (``what``) have mean ``want``,
    within the family's z standard errors (``mean_z``); ``suspect`` says what a failure
    suggests."""
    zt, z = mean_z(t, want), z_quantile(family_alpha(family), 1)
    return row(name, family, int(zt > z), zt, z,
               f"{what} {t.mean():+.4f} ({want:+.4f} expected), |z| {zt:.2f} of {z:.2f}",
               f"{what} is {t.mean():+.4f}, expected {want:+.4f} (|z| {zt:.1f} > {z:.2f}): "
               f"{suspect}")


def chance_coincidence(mean, var, dtype):
    """An upper bound on the probability that two independent correct draws of a case's outputs
    are identical: the product over units of the chance that one element of that unit repeats,
    since the units of a row are independent for every class (for Flipout given its signs, with
    the same N(mean, var)). Two draws of `N(mu, sigma**2)` rounded to ``dtype`` coincide with
    probability `sum_v P(v)**2 <= max_v P(v) <= max(spacing(|mu| + 30 sigma) / (sigma sqrt(2 pi)),
    P(|z| > 30))`. mean, var: (N, U)."""
    sd = np.sqrt(var)
    reach = np.asarray(np.abs(mean) + 30 * sd, dtype=dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(var > 0, np.spacing(reach).astype(np.float64) / (sd * math.sqrt(2 * math.pi)),
                     1.0)
    p = np.minimum(np.maximum(p, 2 * special.ndtr(-30.0)), 1.0)
    return float(np.prod(p.min(0)))


def duplicates_row(name, draws, mean, var, dtype):
    """Family 9: no draw repeats another exactly. Coincident pairs of draws (equal in every live
    element) are counted; the expected count for a correct sampler is at most lambda = S (S - 1)
    / 2 * ``chance_coincidence``, so m = max(1, ceil(lambda / a)) or more pairs happen by chance
    with probability <= a (Markov). draws: (S, N, U); mean, var: (N, U)."""
    s = draws.shape[0]
    live = (var > 0).reshape(-1)
    if not live.any():
        return row(name, "duplicates", 0, 0.0, 1.0, "no random element", "")
    a = family_alpha("duplicates")
    expected = s * (s - 1) / 2 * chance_coincidence(mean, var, dtype)
    limit = max(1, math.ceil(expected / a))
    _, counts = np.unique(draws.reshape(s, -1)[:, live], axis=0, return_counts=True)
    pairs = int(np.sum(counts * (counts - 1) // 2))
    repeats = int(np.sum(counts - 1))
    return row(name, "duplicates", int(pairs >= limit), pairs, limit,
               f"{pairs} coincident pairs of draws ({limit} would fail)",
               f"{repeats} of {s} draws repeat another draw exactly ({pairs} coincident pairs, "
               f"{limit} or more have probability <= {a:.1e} for independent draws of "
               f"{dtype}): draws reused, not independent?")


def serial_row(name, zstd, corr):
    """Family 10: lag-1 serial correlation. t_s = mean over the live elements of z[s] z[s + 1]
    (standardized by the analytic moments) has mean 0 and variance `|R|_F**2 / L**2` for
    independent draws (R the elements' analytic correlation matrix, L of them), and the t_s are
    uncorrelated; their mean within z standard errors (CLT). zstd: (S, L); corr: (L, L)."""
    s, count = zstd.shape
    if not count:
        return row(name, "serial", 0, 0.0, 1.0, "no random element", "")
    t = np.mean(zstd[:-1] * zstd[1:], axis=1)
    se = float(np.sqrt(np.sum(corr * corr))) / (count * math.sqrt(s - 1))
    zs = abs(float(t.mean())) / se
    z = z_quantile(family_alpha("serial"), 1)
    return row(name, "serial", int(zs > z), zs, z,
               f"lag-1 correlation {t.mean():+.4f}, |z| {zs:.2f} of {z:.2f}",
               f"consecutive draws correlate: lag-1 correlation {t.mean():+.4f} averaged over "
               f"the elements (|z| {zs:.1f} > {z:.2f}): draws repeated or noise reused?")
