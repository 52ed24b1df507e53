"""The metrics that judge a predictive distribution (``lrtdense.predictive``'s output).

Regression: ``rmse`` of the predictive mean, ``gaussian_nll`` and ``interval_coverage`` of the
moment-matched Gaussian predictive (mean, std). Classification: ``accuracy`` and
``expected_calibration_error`` of the averaged class probabilities. Every metric checks its
inputs (shapes, finiteness, ranges) and says in one line what is wrong.

The uncertainty metrics of the Monte Carlo predictive (entropies and mutual information, Brier
score and its decomposition, the mixture's NLL, CRPS and PIT, interval width, out-of-distribution
AUROC / AUPR) live in ``lrtdense.uncertainty`` and are re-exported here.
"""
import math

import numpy as np
from scipy import special

from lrtdense.checks import check_float, check_int
from lrtdense.kernels.densities import normal_nll
from lrtdense.metric_inputs import (MAX_BINS, PROB_SUM_TOLERANCE, ceil_of_product,
                                    classification_pair, std_array, target_pair)

from lrtdense.uncertainty import (brier_decomposition, brier_score, categorical_nll,
                                  expected_entropy, interval_width, mixture_crps, mixture_nll,
                                  mutual_information, ood_aupr, ood_auroc, pit_histogram,
                                  pit_values, predictive_entropy)

__all__ = ["rmse", "gaussian_nll", "interval_coverage", "accuracy", "expected_calibration_error",
           "predictive_entropy", "expected_entropy", "mutual_information", "categorical_nll",
           "brier_score", "brier_decomposition", "mixture_nll", "mixture_crps", "pit_values",
           "pit_histogram", "interval_width", "ood_auroc", "ood_aupr",
           "PROB_SUM_TOLERANCE", "MAX_BINS"]


def rmse(y, mean):
    """Root mean squared error of the predictive mean.

    Args:
      y: targets, (N, d) or (N,) (taken as (N, 1) against an (N, 1) mean); finite.
      mean: predictions of the same shape; finite.
    Returns:
      ``sqrt(mean((y - mean)**2))``, a float: finite whenever that value is (inf only past
      float64's range), however large or small the errors.
    Raises:
      ValueError: shapes differ, N == 0, or a value is NaN or infinite.
      TypeError: an array that is not real numbers.
    """
    y, mean = target_pair(y, mean)
    with np.errstate(over="ignore", under="ignore"):
        mean_square = np.mean((y - mean) ** 2)
    if _SQUARES_IN_RANGE <= mean_square < np.inf:
        return float(np.sqrt(mean_square))
    # Squares (or y - mean itself) left float64's range: as hypot does, divide by the largest
    # error before squaring (having halved y and mean if their difference overflowed).
    error, scale = _difference(y, mean)
    largest = np.max(np.abs(error))
    if largest == 0:
        return 0.0
    with np.errstate(over="ignore", under="ignore"):   # inf: past the range; tiny squares: 0
        return float(largest * (scale * np.sqrt(np.mean((error / largest) ** 2))))


def gaussian_nll(y, mean, std):
    """Average ``-log N(y; mean, std**2)`` per target (the moment-matched predictive's NLL).

    Args:
      y: targets, (N, d) or (N,) (taken as (N, 1) against an (N, 1) mean); finite.
      mean: predictive means of the same shape; finite.
      std: predictive standard deviations: a scalar or an array broadcastable to mean's shape
        ((N,) is taken as (N, 1) like y); finite and > 0.
    Returns:
      The mean NLL over all N * d targets, a float: finite whenever that value is (inf only past
      float64's range), however far the targets lie from the means.
    Raises:
      ValueError: shapes that do not match, N == 0, or a bad value (the message says which).
      TypeError: an array that is not real numbers.
    """
    y, mean = target_pair(y, mean)
    std = std_array(std, mean.shape)
    log_std = np.log(std)
    with np.errstate(over="ignore"):
        z = (y - mean) / std
        nll = np.mean(normal_nll(0.5 * z * z, log_std))
    if np.isfinite(nll):
        return float(nll)
    # z**2 (or y - m, or the sum over targets) overflowed. With h = z / 2 and its largest
    # magnitude H, mean(z**2 / 2) = 2 H**2 mean((h / H)**2), in float64's range whenever the
    # NLL is.
    with np.errstate(over="ignore", under="ignore"):    # inf: the NLL is past the range too
        half_z = (0.5 * y - 0.5 * mean) / std
        largest = np.max(np.abs(half_z))
        if not np.isfinite(largest):
            return math.inf
        quadratic = (2 * largest) * (largest * np.mean((half_z / largest) ** 2))
    return float(normal_nll(quadratic, np.mean(log_std)))


def interval_coverage(y, mean, std, level=0.95):
    """Fraction of targets inside the central ``level`` interval mean +- z * std.

    z = sqrt(2) erfinv(level) = Phi^-1(0.5 + level / 2) (1.96 for 0.95): a calibrated Gaussian
    predictive covers ``level`` of the targets. (Through erfinv, z stays accurate for a level
    near 0 or 1, where 0.5 + level / 2 would round.)

    Args:
      y, mean, std: as in ``gaussian_nll`` (std finite and > 0).
      level: the interval's probability, a number in (0, 1).
    Returns:
      A float in [0, 1].
    Raises:
      ValueError: a level outside (0, 1), shapes that do not match, N == 0 or a bad value.
      TypeError: an array that is not real numbers.
    """
    level = check_float(level, "level", low=0, high=1, open_low=True, open_high=True)
    y, mean = target_pair(y, mean)
    std = std_array(std, mean.shape)
    z = math.sqrt(2) * float(special.erfinv(level))
    with np.errstate(over="ignore"):
        error, bound = np.abs(y - mean), z * std
    inside = error <= bound
    overflowed = np.isinf(error) | np.isinf(bound)
    if overflowed.any():
        # halve both sides where one overflowed: exact there, as those values are far above
        # the subnormals (or the other side decides alone)
        with np.errstate(over="ignore", under="ignore"):
            inside[overflowed] = (np.abs(0.5 * y[overflowed] - 0.5 * mean[overflowed])
                                  <= (0.5 * z) * std[overflowed])
    return float(np.mean(inside))


def accuracy(labels, probs):
    """Fraction of examples whose most probable class is the label.

    Args:
      labels: integer class indices, shape (N,), values in [0, k). An (N, 1) column is
        refused, not squeezed: compared against (N,) it would broadcast to (N, N).
      probs: class probabilities, shape (N, k): finite, in [0, 1], each row summing to 1
        within ``PROB_SUM_TOLERANCE``.
    Returns:
      A float in [0, 1] (ties go to the lowest class index, as ``argmax``).
    Raises:
      ValueError: shapes, ranges or sums as above, or N == 0.
      TypeError: labels that are not integers, probs that are not real numbers.
    """
    labels, probs = classification_pair(labels, probs)
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def expected_calibration_error(labels, probs, num_bins=15):
    """ECE with equal-width confidence bins (Guo et al. 2017, arXiv 1706.04599).

    ECE = sum_b (|B_b| / N) |accuracy(B_b) - confidence(B_b)|, where the confidence of an
    example is its largest probability and bin b holds confidences in (b/B, (b+1)/B] (the first
    bin also holds 0), exactly: confidence c goes to bin ceil(c * B) - 1, computed without
    rounding. Only occupied bins are held, so memory grows with N, not with B.

    Args:
      labels, probs: as in ``accuracy``.
      num_bins: the number of bins B, an integer in ``[1, 2**53]`` (B must be exact in float64).
    Returns:
      A float in [0, 1].
    Raises:
      ValueError: a bad num_bins, or inputs as in ``accuracy``.
      TypeError: as in ``accuracy``.
    """
    num_bins = check_int(num_bins, "num_bins", low=1, high=MAX_BINS)
    labels, probs = classification_pair(labels, probs)
    conf = probs.max(-1)
    correct = np.argmax(probs, -1) == labels
    bins = np.clip(ceil_of_product(conf, num_bins) - 1, 0, num_bins - 1)
    _, members = np.unique(bins, return_inverse=True)
    # (|B_b| / N) |mean(correct) - mean(conf)| over B_b = |sum(correct) - sum(conf)| / N
    gap = np.bincount(members, weights=correct) - np.bincount(members, weights=conf)
    return float(np.abs(gap).sum() / len(labels))


# Below this mean square, some squares may have lost digits to gradual underflow (float64's
# smallest normal over its epsilon: their loss is then below one ulp of the mean).
_SQUARES_IN_RANGE = np.finfo(float).tiny / np.finfo(float).eps


def _difference(y, mean):
    """(d, s) with y - mean = s * d exactly rounded: s = 1, or 2 where y - mean overflowed."""
    with np.errstate(over="ignore"):
        d = y - mean
    if np.all(np.isfinite(d)):
        return d, 1.0
    return 0.5 * y - 0.5 * mean, 2.0
