"""Uncertainty metrics of a Monte Carlo predictive (``lrtdense.predict``'s "samples").

Classification, from the per-sample probabilities p_s (S, N, k) and their average
pbar = (1/S) sum_s p_s (``predict``'s "probs"):
  predictive entropy  H[pbar]                   (total uncertainty)
  expected entropy    (1/S) sum_s H[p_s]        (aleatoric part)
  mutual information  H[pbar] - (1/S) sum_s H[p_s] = (1/S) sum_s KL(p_s || pbar)  (epistemic)
and the Brier score with its decomposition, the NLL of pbar, and the AUROC / AUPR of any such
score used to detect out-of-distribution inputs.

Regression, from the sample means mu_s (S, N, ...) and the noise scale sigma: the predictive is
the equal-weight Gaussian mixture ``p(y) = (1/S) sum_s N(y; mu_s, sigma**2)``, judged per target
(each output dimension by its own marginal mixture, as ``metrics.gaussian_nll`` judges the
moment-matched Gaussian): its NLL, its CRPS in closed form, its PIT values and their histogram;
and the width of the moment-matched interval beside ``metrics.interval_coverage``.

Entropies are in nats, with 0 log 0 = 0. Every function checks its inputs and says in one line
what is wrong (``lrtdense.metric_inputs``).
"""
import math

import numpy as np
from scipy import special, stats

from lrtdense.checks import check_float, check_int
from lrtdense.metric_inputs import (MAX_BINS, ceil_of_product, classification_pair,
                                    probability_rows, real_array, std_array, target_pair)

__all__ = ["predictive_entropy", "expected_entropy", "mutual_information", "categorical_nll",
           "brier_score", "brier_decomposition", "mixture_nll", "mixture_crps", "pit_values",
           "pit_histogram", "interval_width", "ood_auroc", "ood_aupr"]


# ---------------------------------------------------------------------------- classification
def predictive_entropy(samples):
    """H[pbar] = -sum_c pbar_c log pbar_c with pbar = (1/S) sum_s p_s: the total uncertainty.

    Args:
      samples: per-sample class probabilities p_s, (S, N, k) (``predict``'s "samples"; pass
        probs[None] for a single distribution per example).
    Returns:
      (N,) entropies in nats, in [0, log k].
    Raises:
      ValueError: not (S, N, k) with S, N, k >= 1, or rows that are not probabilities.
      TypeError: not real numbers.
    """
    return special.entr(_samples(samples).mean(0)).sum(-1)


def expected_entropy(samples):
    """(1/S) sum_s H[p_s]: the aleatoric part of the predictive entropy (Depeweg et al. 2018,
    arXiv 1710.07283).

    Args:
      samples: p_s, (S, N, k), as in ``predictive_entropy``.
    Returns:
      (N,) entropies in nats, in [0, log k].
    Raises:
      ValueError, TypeError: as in ``predictive_entropy``.
    """
    return special.entr(_samples(samples)).sum(-1).mean(0)


def mutual_information(samples):
    """I[y; w | x] = H[pbar] - (1/S) sum_s H[p_s]: the epistemic part (BALD, Houlsby et al. 2011,
    arXiv 1112.5745), the mean KL(p_s || pbar), >= 0 (rounding below 0 is clipped to 0).

    Args:
      samples: p_s, (S, N, k), as in ``predictive_entropy``.
    Returns:
      (N,) values in nats, in [0, min(log k, log S)].
    Raises:
      ValueError, TypeError: as in ``predictive_entropy``.
    """
    p = _samples(samples)
    return np.maximum(special.entr(p.mean(0)).sum(-1) - special.entr(p).sum(-1).mean(0), 0.0)


def categorical_nll(labels, probs):
    """-(1/N) sum_n log probs[n, labels[n]]: the NLL of the predictive pbar (``predict``'s "probs").

    Args:
      labels: (N,) integer class indices in [0, k); probs: (N, k) probabilities (rows sum to 1).
    Returns:
      A float >= 0; inf when an example's label has probability 0 (no clipping, unlike
      scikit-learn's ``log_loss``).
    Raises:
      ValueError, TypeError: as ``metrics.accuracy``.
    """
    labels, probs = classification_pair(labels, probs)
    with np.errstate(divide="ignore"):
        return float(-np.mean(np.log(probs[np.arange(len(labels)), labels])))


def brier_score(labels, probs):
    """``(1/N) sum_n sum_c (probs[n, c] - 1[c == labels[n]])**2`` (Brier 1950, the multi-category form).

    In [0, 2]; for k = 2 twice scikit-learn's binary ``brier_score_loss`` (which scores the
    positive class only).

    Args:
      labels: (N,) integer class indices in [0, k); probs: (N, k) probabilities.
    Returns:
      A float in [0, 2].
    Raises:
      ValueError, TypeError: as ``metrics.accuracy``.
    """
    labels, probs = classification_pair(labels, probs)
    return float(np.mean(np.sum((probs - _one_hot(labels, probs.shape[1])) ** 2, -1)))


def brier_decomposition(labels, probs, num_bins=10):
    """Brier score = reliability - resolution + uncertainty (+ within-bin terms), per class.

    Murphy 1973 ("A new vector partition of the probability score", J. Appl. Meteor. 12) applied
    to each class's forecast p_c against its outcome o_c = 1[label == c] and summed over classes
    (one-vs-rest). Forecasts are grouped into bins b of n_b examples, with bin means fbar_b,
    obar_b and the base rate obar:
      ``reliability  = (1/N) sum_b n_b (fbar_b - obar_b)**2``
      ``resolution   = (1/N) sum_b n_b (obar_b - obar)**2``
      ``uncertainty  = obar (1 - obar)``
    Binned (``num_bins`` = B: p_c in (b/B, (b+1)/B], 0 in the first bin, as the ECE's bins), the
    identity needs Stephenson et al. 2008's two within-bin terms (Weather and Forecasting 23):
      ``within_bin_variance   = (1/N) sum_i (f_i - fbar_b(i))**2``
      ``within_bin_covariance = (2/N) sum_i (o_i - obar_b(i)) (f_i - fbar_b(i))``
    so that brier = reliability - resolution + uncertainty + within_bin_variance
    - within_bin_covariance exactly (up to rounding). ``num_bins=None`` groups equal forecast
    values instead (Murphy's exact form): the within-bin terms are then 0.

    Args:
      labels, probs: as in ``brier_score``.
      num_bins: B, an integer in ``[1, 2**53]``, or None.
    Returns:
      A dict of floats: "brier", "reliability", "resolution", "uncertainty",
      "within_bin_variance", "within_bin_covariance".
    Raises:
      ValueError: a bad num_bins, or inputs as in ``brier_score``.
    """
    if num_bins is not None:
        num_bins = check_int(num_bins, "num_bins", low=1, high=MAX_BINS)
    labels, probs = classification_pair(labels, probs)
    n = len(labels)
    outcomes = _one_hot(labels, probs.shape[1])
    terms = dict.fromkeys(["reliability", "resolution", "uncertainty", "within_bin_variance",
                           "within_bin_covariance"], 0.0)
    for f, o in zip(probs.T, outcomes.T):
        if num_bins is None:
            _, bins = np.unique(f, return_inverse=True)
        else:
            _, bins = np.unique(np.clip(ceil_of_product(f, num_bins) - 1, 0, num_bins - 1),
                                return_inverse=True)
        counts = np.bincount(bins)
        f_bar, o_bar = np.bincount(bins, f) / counts, np.bincount(bins, o) / counts
        base_rate = o.mean()
        terms["reliability"] += np.sum(counts * (f_bar - o_bar) ** 2) / n
        terms["resolution"] += np.sum(counts * (o_bar - base_rate) ** 2) / n
        terms["uncertainty"] += base_rate * (1 - base_rate)
        terms["within_bin_variance"] += np.sum((f - f_bar[bins]) ** 2) / n
        terms["within_bin_covariance"] += 2 * np.sum((o - o_bar[bins]) * (f - f_bar[bins])) / n
    return {"brier": float(np.mean(np.sum((probs - outcomes) ** 2, -1))),
            **{name: float(value) for name, value in terms.items()}}


# -------------------------------------------------------------------------------- regression
def mixture_nll(y, samples, noise_scale):
    """``-(1/N) sum log (1/S) sum_s N(y; mu_s, sigma**2)``: the NLL of the Monte Carlo mixture.

    The "test log-likelihood" of Hernández-Lobato & Adams 2015 (arXiv 1502.05336) is its
    negative. Computed as ``-logsumexp_s(-z_s**2 / 2) + log S + log sigma + log(2 pi) / 2`` with
    z_s = (y - mu_s) / sigma, so a target far from every mu_s gives its large finite value
    rather than -log 0.

    Args:
      y: targets (N, ...) (an (N,) y against (S, N, 1) samples is taken as (N, 1)).
      samples: the sample means mu_s, (S, N, ...) (``predict``'s "samples"); S >= 1.
      noise_scale: sigma, a scalar or an array broadcastable to y's shape; > 0.
    Returns:
      The mean over all targets, a float.
    Raises:
      ValueError: shapes that do not match, N == 0, or a bad value (the message says which).
      TypeError: not real numbers.
    """
    y, mu, sigma = _mixture(y, samples, noise_scale)
    with np.errstate(over="ignore"):
        half_z = (0.5 * y - 0.5 * mu) / sigma              # no overflow of y - mu
        log_kernel = -2 * half_z ** 2
    nll = (np.log(mu.shape[0]) - special.logsumexp(log_kernel, axis=0) + np.log(sigma)
           + 0.5 * math.log(2 * math.pi))
    return _mean(nll)


def mixture_crps(y, samples, noise_scale):
    """CRPS(F, y) = E|X - y| - E|X - X'| / 2 for the mixture ``F = (1/S) sum_s N(mu_s, sigma**2)``.

    Exact, with A(m, s) = E|m + s Z| = m erf(m / (s sqrt 2)) + 2 s phi(m / s) for Z ~ N(0, 1):
      ``E|X - y|  = (1/S) sum_s A(y - mu_s, sigma)``,
      ``E|X - X'| = (1/S**2) sum_{s,t} A(mu_s - mu_t, sqrt(2) sigma)``,
    the closed form of Grimit et al. 2006 (Q. J. R. Meteorol. Soc. 132) for a Gaussian mixture;
    with S = 1, Gneiting & Raftery 2007's sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)).
    Cost ``O(S**2 N)`` time, O(S N) memory. In y's units; lower is better.

    Args:
      y, samples, noise_scale: targets (N, ...), sample means (S, N, ...), sigma, as in
        ``mixture_nll``.
    Returns:
      The mean CRPS over all targets, a float >= 0.
    Raises:
      ValueError, TypeError: as in ``mixture_nll``.
    """
    y, mu, sigma = _mixture(y, samples, noise_scale)
    # A is homogeneous, A(2m, 2s) = 2 A(m, s): halve near float64's limit, so that no
    # difference y - mu_s or mu_s - mu_t overflows
    scale = 2.0 if max(np.abs(y).max(), np.abs(mu).max()) > 2.0 ** 1020 else 1.0
    y, mu, sigma = y / scale, mu / scale, sigma / scale
    to_target = _abs_moment(y - mu, sigma).mean(0)
    spread = np.mean([_abs_moment(mu_s - mu, math.sqrt(2) * sigma).mean(0) for mu_s in mu], 0)
    crps = np.maximum(to_target - 0.5 * spread, 0.0)
    with np.errstate(over="ignore"):                   # inf: past float64's range
        return scale * _mean(crps)


def pit_values(y, samples, noise_scale):
    """u = F(y) = (1/S) sum_s Phi((y - mu_s) / sigma): the probability integral transform.

    Uniform on [0, 1] when the predictive is calibrated (Dawid 1984; Gneiting, Balabdaoui &
    Raftery 2007, J. R. Stat. Soc. B 69); a U shape is overconfidence, a hump underconfidence.

    Args:
      y, samples, noise_scale: as in ``mixture_nll``.
    Returns:
      u, y's shape, in [0, 1].
    Raises:
      ValueError, TypeError: as in ``mixture_nll``.
    """
    y, mu, sigma = _mixture(y, samples, noise_scale)
    with np.errstate(over="ignore"):
        return special.ndtr((y - mu) / sigma).mean(0)      # an overflow is an infinite z


def pit_histogram(pit, num_bins=10):
    """Density of the PIT values on B equal bins of [0, 1] (1 everywhere when calibrated).

    Args:
      pit: PIT values, any shape, in [0, 1] (``pit_values``).
      num_bins: B, an integer in ``[1, 10**6]``.
    Returns:
      (density (B,), edges (B + 1,)): numpy.histogram's bins ([b/B, (b+1)/B), the last closed)
      and its density = count * B / number of values.
    Raises:
      ValueError: a bad num_bins, no values, or values outside [0, 1].
    """
    num_bins = check_int(num_bins, "num_bins", low=1, high=10 ** 6)
    pit = real_array(pit, "pit").reshape(-1)
    if pit.size == 0 or pit.min() < 0 or pit.max() > 1:
        raise ValueError("pit must be at least one value in [0, 1], got "
                         + (f"values in [{pit.min()}, {pit.max()}]" if pit.size else "none"))
    counts, edges = np.histogram(pit, bins=num_bins, range=(0.0, 1.0))
    return counts * (num_bins / pit.size), edges


def interval_width(std, level=0.95):
    """Mean width 2 z std of the central ``level`` intervals that ``metrics.interval_coverage``
    counts (z = Phi^-1(0.5 + level / 2)): report it beside the coverage, as a wide interval
    covers trivially.

    Args:
      std: predictive standard deviations (``predict``'s "std"), any non-empty shape; > 0.
      level: a number in (0, 1).
    Returns:
      A float > 0, in std's units.
    Raises:
      ValueError: a level outside (0, 1), no values, or a std that is not finite and > 0.
    """
    level = check_float(level, "level", low=0, high=1, open_low=True, open_high=True)
    std = real_array(std, "std")
    if std.size == 0 or not np.all(std > 0):
        raise ValueError("std must be at least one value > 0, got "
                         + (f"a smallest entry {std.min()}" if std.size else "none"))
    with np.errstate(over="ignore"):
        return 2 * math.sqrt(2) * float(special.erfinv(level)) * _mean(std)


# ------------------------------------------------------------------- out-of-distribution
def ood_auroc(score_in, score_out):
    """Area under the ROC curve of a score that should be higher on out-of-distribution inputs.

    AUROC = P(s_out > s_in) + P(s_out == s_in) / 2 over independent pairs (Mann-Whitney, from
    average ranks), equal to scikit-learn's ``roc_auc_score`` with the OOD inputs as positives,
    ties included. Hendrycks & Gimpel 2017 (arXiv 1610.02136). 0.5: no better than chance.

    Args:
      score_in: (n_in,) scores of in-distribution inputs (e.g. ``predictive_entropy``);
      score_out: (n_out,) scores of out-of-distribution inputs; finite, n_in, n_out >= 1.
    Returns:
      A float in [0, 1].
    Raises:
      ValueError: not 1-D, empty, or not finite. TypeError: not real numbers.
    """
    score_in, score_out = _scores(score_in, score_out)
    ranks = stats.rankdata(np.concatenate([score_in, score_out]))[len(score_in):]
    n_in, n_out = len(score_in), len(score_out)
    return float((ranks.sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def ood_aupr(score_in, score_out):
    """Area under the precision-recall curve, OOD inputs positive ("AUPR-Out"), as average precision.

    AP = sum_j (R_j - R_{j-1}) P_j over the distinct score thresholds, highest first (tied scores
    enter together; no interpolation): scikit-learn's ``average_precision_score``. For "AUPR-In"
    (in-distribution positive, Hendrycks & Gimpel 2017, arXiv 1610.02136) call
    ``ood_aupr(-score_out, -score_in)``. A chance score gets n_out / (n_in + n_out).

    Args:
      score_in, score_out: (n_in,) and (n_out,) scores, as in ``ood_auroc``.
    Returns:
      A float in (0, 1].
    Raises:
      ValueError, TypeError: as in ``ood_auroc``.
    """
    score_in, score_out = _scores(score_in, score_out)
    scores = np.concatenate([score_in, score_out])
    positive = np.concatenate([np.zeros(len(score_in)), np.ones(len(score_out))])
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    true_pos = np.cumsum(positive)[last_of_tie]
    precision = true_pos / (last_of_tie + 1)
    recall = true_pos / len(score_out)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


# ------------------------------------------------------------------------------- helpers
def _samples(samples):
    p = real_array(samples, "samples")
    if p.ndim != 3 or 0 in p.shape:
        raise ValueError(f"samples must have shape (S, N, k) with S, N, k >= 1 (predict's "
                         f"\"samples\" for a classifier), got {p.shape}")
    return probability_rows(p, "samples")


def _one_hot(labels, k):
    return (labels[:, None] == np.arange(k)).astype(float)


def _mixture(y, samples, noise_scale):
    mu = real_array(samples, "samples")
    if mu.ndim < 2 or mu.shape[0] == 0:
        raise ValueError(f"samples must have shape (S, N, ...) with S >= 1 (predict's "
                         f"\"samples\"), got {mu.shape}")
    y, _ = target_pair(y, mu[0])
    sigma = std_array(noise_scale, y.shape, "noise_scale")
    return y, mu, sigma


def _abs_moment(m, s):
    """E|m + s Z| = m erf(m / (s sqrt 2)) + 2 s phi(m / s), Z ~ N(0, 1) (elementwise)."""
    with np.errstate(over="ignore", under="ignore"):
        z = m / s
        return m * special.erf(z / math.sqrt(2)) + 2 * s * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _scores(score_in, score_out):
    arrays = real_array(score_in, "score_in"), real_array(score_out, "score_out")
    for name, a in zip(["score_in", "score_out"], arrays):
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{name} must have shape (n,) with n >= 1, got {a.shape}")
    return arrays


def _mean(values):
    """The mean of finite values, without overflowing in the sum when each value is in range."""
    with np.errstate(over="ignore"):
        mean = np.mean(values)
    if np.isfinite(mean) or not np.all(np.isfinite(values)):
        return float(mean)
    largest = np.max(np.abs(values))
    return float(largest * np.mean(values / largest))
