"""Predictive distributions by Monte Carlo over the posterior, and the metrics that judge them.

Regression (Gaussian likelihood): with S forward samples f_s(x),
  mean = (1/S) sum_s f_s,  epistemic variance = (1/S) sum_s (f_s - mean)**2,
  total variance = epistemic + noise_scale**2  (the moment-matched Gaussian of the predictive
  mixture, which ``gaussian_nll`` and ``interval_coverage`` then use).
Classification: probabilities averaged over the S samples (the posterior predictive).
"""
import math

import numpy as np
from scipy import special, stats

from lrtdense.losses import CategoricalLikelihood

__all__ = ["predict", "predict_mean", "rmse", "gaussian_nll", "accuracy",
           "expected_calibration_error", "interval_coverage", "PROB_SUM_TOLERANCE"]


def predict(model, params, x, *, rng, num_samples=100):
    """Monte Carlo predictive over ``num_samples`` stochastic forward passes.

    Args:
      model: a ``Model``; params: its params.
      x: inputs, (N, ..., in).
      rng: a ``numpy.random.Generator``; the passes draw from it in turn.
      num_samples: S, an integer >= 1 (with S == 1 the epistemic std is 0 everywhere).
    Returns:
      A dict. Regression: "mean" and "epistemic_std" (N, ..., d), "std" (the total,
      sqrt(epistemic_std**2 + noise_scale**2)), "noise_scale" (a float), "samples"
      (S, N, ..., d). Classification: "probs" (N, k), the average of the per-sample softmax
      probabilities "samples" (S, N, k).
    Raises:
      ValueError: a bad num_samples (or, from the model, bad inputs).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
            or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    outs = np.stack([model.forward(params, x, rng)[0] for _ in range(int(num_samples))])
    if isinstance(model.likelihood, CategoricalLikelihood):
        probs = special.softmax(outs, axis=-1)
        return {"probs": probs.mean(0), "samples": probs}
    mean = outs.mean(0)
    epistemic = outs.var(0)
    noise = float(np.asarray(model.likelihood.noise_scale(params["likelihood"])))
    return {"mean": mean, "epistemic_std": np.sqrt(epistemic), "noise_scale": noise,
            "std": np.sqrt(epistemic + noise ** 2), "samples": outs}


def predict_mean(model, params, x):
    """Deterministic prediction with every layer in mean mode (no sampling).

    Returns:
      Regression: the outputs (N, ..., d). Classification: softmax probabilities (N, k).
    """
    out = model.forward(params, x, mode="mean")[0]
    if isinstance(model.likelihood, CategoricalLikelihood):
        return special.softmax(out, axis=-1)
    return out


def rmse(y, mean):
    """Root mean squared error of the predictive mean.

    Args:
      y: targets, (N, d) or (N,) (taken as (N, 1) against an (N, 1) mean); finite.
      mean: predictions of the same shape; finite.
    Returns:
      sqrt(mean((y - mean)**2)), a float.
    Raises:
      ValueError: shapes differ, N == 0, or a value is NaN or infinite.
      TypeError: an array that is not real numbers.
    """
    y, mean = _pair(y, mean)
    return float(np.sqrt(np.mean((y - mean) ** 2)))


def gaussian_nll(y, mean, std):
    """Average -log N(y; mean, std**2) per target (the moment-matched predictive's NLL).

    Args:
      y: targets, (N, d) or (N,) (taken as (N, 1) against an (N, 1) mean); finite.
      mean: predictive means of the same shape; finite.
      std: predictive standard deviations: a scalar or an array broadcastable to mean's shape
        ((N,) is taken as (N, 1) like y); finite and > 0.
    Returns:
      The mean NLL over all N * d targets, a float.
    Raises:
      ValueError: shapes that do not match, N == 0, or a bad value (the message says which).
      TypeError: an array that is not real numbers.
    """
    y, mean = _pair(y, mean)
    std = _std(std, mean.shape)
    return float(np.mean(-stats.norm.logpdf(y, mean, std)))


def interval_coverage(y, mean, std, level=0.95):
    """Fraction of targets inside the central ``level`` interval mean +- z * std.

    z = Phi^-1(0.5 + level / 2) (1.96 for 0.95): a calibrated Gaussian predictive covers
    ``level`` of the targets.

    Args:
      y, mean, std: as in ``gaussian_nll`` (std finite and > 0).
      level: the interval's probability, a number in (0, 1).
    Returns:
      A float in [0, 1].
    Raises:
      ValueError: a level outside (0, 1), shapes that do not match, N == 0 or a bad value.
      TypeError: an array that is not real numbers.
    """
    if not (_is_real_number(level) and 0 < level < 1):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    y, mean = _pair(y, mean)
    std = _std(std, mean.shape)
    z = stats.norm.ppf(0.5 + level / 2)
    return float(np.mean(np.abs(y - mean) <= z * std))


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
    bin also holds 0).

    Args:
      labels, probs: as in ``accuracy``.
      num_bins: the number of bins B, an integer >= 1.
    Returns:
      A float in [0, 1].
    Raises:
      ValueError: a bad num_bins, or inputs as in ``accuracy``.
      TypeError: as in ``accuracy``.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
    num_bins = int(num_bins)
    labels, probs = _classification(labels, probs)
    conf = probs.max(-1)
    correct = np.argmax(probs, -1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, num_bins - 1)
    # (|B_b| / N) |mean(correct) - mean(conf)| over B_b = |sum(correct) - sum(conf)| / N
    gap = (np.bincount(bins, weights=correct, minlength=num_bins)
           - np.bincount(bins, weights=conf, minlength=num_bins))
    return float(np.abs(gap).sum() / len(labels))


# Rows of probs must sum to 1 within this. Softmax in float32 and an average over samples are
# off by a few float32 ulps (~1e-6: each p_i carries a relative error of a few eps, and the p_i
# sum to 1); probabilities written with 4 decimals by another tool are off by up to k * 5e-5.
# The mistakes this catches (logits, unnormalised scores, the wrong axis) are off by far more,
# and a sum off by 1e-3 moves a confidence, hence the ECE, by at most 1e-3.
PROB_SUM_TOLERANCE = 1e-3


def _is_real_number(x):
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and math.isfinite(x))


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
