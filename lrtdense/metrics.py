"""The metrics that judge a predictive distribution (``lrtdense.predictive``'s output).

Regression: ``rmse`` of the predictive mean, ``gaussian_nll`` and ``interval_coverage`` of the
moment-matched Gaussian predictive (mean, std). Classification: ``accuracy`` and
``expected_calibration_error`` of the averaged class probabilities. Every metric checks its
inputs (shapes, finiteness, ranges) and says in one line what is wrong.
"""
import math

import numpy as np
from scipy import special, stats

from lrtdense.checks import check_float, check_int

__all__ = ["rmse", "gaussian_nll", "interval_coverage", "accuracy", "expected_calibration_error",
           "PROB_SUM_TOLERANCE", "MAX_BINS"]


def rmse(y, mean):
    """Root mean squared error of the predictive mean.

    Args:
      y: targets, (N, d) or (N,) (taken as (N, 1) against an (N, 1) mean); finite.
      mean: predictions of the same shape; finite.
    Returns:
      sqrt(mean((y - mean)**2)), a float: finite whenever that value is (inf only past
      float64's range), however large or small the errors.
    Raises:
      ValueError: shapes differ, N == 0, or a value is NaN or infinite.
      TypeError: an array that is not real numbers.
    """
    y, mean = _pair(y, mean)
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
    """Average -log N(y; mean, std**2) per target (the moment-matched predictive's NLL).

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
    y, mean = _pair(y, mean)
    std = _std(std, mean.shape)
    with np.errstate(over="ignore"):
        nll = np.mean(-stats.norm.logpdf(y, mean, std))
    if np.isfinite(nll):
        return float(nll)
    # -log N(y; m, s**2) = z**2 / 2 + log s + log(2 pi) / 2 with z = (y - m) / s: z**2 (or y - m,
    # or the sum over targets) overflowed. With h = z / 2 and its largest magnitude H,
    # mean(z**2 / 2) = 2 H**2 mean((h / H)**2), in float64's range whenever the NLL is.
    with np.errstate(over="ignore", under="ignore"):    # inf: the NLL is past the range too
        half_z = (0.5 * y - 0.5 * mean) / std
        largest = np.max(np.abs(half_z))
        if not np.isfinite(largest):
            return math.inf
        quadratic = (2 * largest) * (largest * np.mean((half_z / largest) ** 2))
    return float(quadratic + np.mean(np.log(std)) + 0.5 * math.log(2 * math.pi))


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
    y, mean = _pair(y, mean)
    std = _std(std, mean.shape)
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
    labels, probs = _classification(labels, probs)
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def expected_calibration_error(labels, probs, num_bins=15):
    """ECE with equal-width confidence bins (Guo et al. 2017, arXiv 1706.04599).

    ECE = sum_b (|B_b| / N) |accuracy(B_b) - confidence(B_b)|, where the confidence of an
    example is its largest probability and bin b holds confidences in (b/B, (b+1)/B] (the first
    bin also holds 0), exactly: confidence c goes to bin ceil(c * B) - 1, computed without
    rounding. Only occupied bins are held, so memory grows with N, not with B.

    Args:
      labels, probs: as in ``accuracy``.
      num_bins: the number of bins B, an integer in [1, 2**53] (B must be exact in float64).
    Returns:
      A float in [0, 1].
    Raises:
      ValueError: a bad num_bins, or inputs as in ``accuracy``.
      TypeError: as in ``accuracy``.
    """
    num_bins = check_int(num_bins, "num_bins", low=1, high=MAX_BINS)
    labels, probs = _classification(labels, probs)
    conf = probs.max(-1)
    correct = np.argmax(probs, -1) == labels
    bins = np.clip(_ceil_of_product(conf, num_bins) - 1, 0, num_bins - 1)
    _, members = np.unique(bins, return_inverse=True)
    # (|B_b| / N) |mean(correct) - mean(conf)| over B_b = |sum(correct) - sum(conf)| / N
    gap = np.bincount(members, weights=correct) - np.bincount(members, weights=conf)
    return float(np.abs(gap).sum() / len(labels))


# Rows of probs must sum to 1 within this. Softmax in float32 and an average over samples are
# off by a few float32 ulps (~1e-6: each p_i carries a relative error of a few eps, and the p_i
# sum to 1); probabilities written with 4 decimals by another tool are off by up to k * 5e-5.
# The mistakes this catches (logits, unnormalised scores, the wrong axis) are off by far more,
# and a sum off by 1e-3 moves a confidence, hence the ECE, by at most 1e-3.
PROB_SUM_TOLERANCE = 1e-3

# The most bins ``expected_calibration_error`` takes: its exact binning needs B exact in float64.
MAX_BINS = 2 ** 53

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


def _ceil_of_product(c, n):
    """ceil(c * n) exactly (int64) for float64 c in [0, 1], shape (N,), and an integer n in
    [1, 2**53].

    p = fl(c * n) has the ceiling of c * n unless p is an integer and c * n lies above it: no
    integer lies strictly between c * n and p, as every integer up to 2**53 is a float64 and p is
    the nearest one. Where p is an integer, Dekker's two-product (NumPy has no fma) gives
    c * n - p exactly; it needs no underflow, true there since c >= 0.5 / n >= 2**-54.
    """
    n = float(n)
    p = c * n
    ceil = np.ceil(p)
    on_integer = np.flatnonzero((p == ceil) & (p > 0))
    if on_integer.size:
        a, q = c[on_integer], p[on_integer]
        a_hi, a_lo = _split(a)
        n_hi, n_lo = _split(n)
        above = ((a_hi * n_hi - q) + a_hi * n_lo + a_lo * n_hi) + a_lo * n_lo > 0
        ceil[on_integer] += above
    return ceil.astype(np.int64)


def _split(a):
    """Veltkamp's split: a = hi + lo exactly, each with at most 26 significant bits."""
    t = 134217729.0 * a                 # 2**27 + 1
    hi = t - (t - a)
    return hi, a - hi


def _real_array(x, name):
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    a = a.astype(float, copy=False)
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a.reshape(-1)))
        raise ValueError(f"{name} must be finite; {bad.size} of {a.size} entries are NaN or "
                         f"infinite (the first at flat index {bad[0]}: {a.reshape(-1)[bad[0]]})")
    return a


def _pair(y, mean):
    y, mean = _real_array(y, "y"), _real_array(mean, "mean")
    if y.ndim == 1 and mean.ndim == 2 and mean.shape[1] == 1:
        y = y[:, None]
    if y.shape != mean.shape:
        raise ValueError(f"targets of shape {y.shape} do not match predictions of shape {mean.shape}")
    if y.ndim == 0 or y.size == 0:
        raise ValueError(f"expected at least one target: y must have shape (N, ...) with N >= 1, "
                         f"got {y.shape}")
    return y, mean


def _std(std, shape):
    std = _real_array(std, "std")
    if std.ndim == 1 and len(shape) == 2 and shape[1] == 1 and std.shape[0] == shape[0]:
        std = std[:, None]
    try:
        std = np.broadcast_to(std, shape)
    except ValueError:
        raise ValueError(f"std of shape {std.shape} does not match predictions of shape {shape}; "
                         f"expected a scalar or that shape") from None
    if not np.all(std > 0):
        raise ValueError(f"std must be > 0; its smallest entry is {std.min()}")
    return std


def _classification(labels, probs):
    labels, probs = np.asarray(labels), _real_array(probs, "probs")
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must have shape (N, k) with N, k >= 1, got {probs.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    n, k = probs.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},) to match probs {probs.shape}, got "
                         f"{labels.shape}" + ("; pass labels.ravel()" if labels.size == n else ""))
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes, got values in "
                         f"[{labels.min()}, {labels.max()}]")
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"probs must lie in [0, 1], got values in [{probs.min()}, {probs.max()}]")
    sums = probs.sum(-1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > PROB_SUM_TOLERANCE:
        raise ValueError(f"each row of probs must sum to 1 (within {PROB_SUM_TOLERANCE}); row "
                         f"{worst} sums to {sums[worst]} (logits or unnormalised scores?)")
    return labels, probs
