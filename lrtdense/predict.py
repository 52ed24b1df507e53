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

from lrtdense.losses import GaussianLikelihood, CategoricalLikelihood

__all__ = ["predict", "predict_mean", "rmse", "gaussian_nll", "accuracy",
           "expected_calibration_error", "interval_coverage"]


def predict(model, params, x, *, rng, num_samples=100):
    """Monte Carlo predictive over ``num_samples`` stochastic forward passes.

    Returns a dict. Regression: "mean", "std" (total), "epistemic_std", "noise_scale",
    "samples" (S, ...). Classification: "probs" (batch, classes) and "samples" (S, batch, classes)
    of per-sample probabilities.
    """
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    outs = np.stack([model.forward(params, x, rng)[0] for _ in range(num_samples)])
    if isinstance(model.likelihood, CategoricalLikelihood):
        probs = special.softmax(outs, axis=-1)
        return {"probs": probs.mean(0), "samples": probs}
    mean = outs.mean(0)
    epistemic = outs.var(0)
    noise = float(np.asarray(model.likelihood.noise_scale(params["likelihood"])))
    return {"mean": mean, "epistemic_std": np.sqrt(epistemic), "noise_scale": noise,
            "std": np.sqrt(epistemic + noise ** 2), "samples": outs}


def predict_mean(model, params, x):
    """Deterministic prediction with every layer in mean mode (no sampling)."""
    out = model.forward(params, x, mode="mean")[0]
    if isinstance(model.likelihood, CategoricalLikelihood):
        return special.softmax(out, axis=-1)
    return out


def rmse(y, mean):
    y, mean = _pair(y, mean)
    return float(np.sqrt(np.mean((y - mean) ** 2)))


def gaussian_nll(y, mean, std):
    """Average -log N(y; mean, std**2) per target."""
    y, mean = _pair(y, mean)
    std = np.broadcast_to(np.asarray(std, dtype=float).reshape(np.shape(std)), mean.shape)
    return float(np.mean(-stats.norm.logpdf(y, mean, std)))


def interval_coverage(y, mean, std, level=0.95):
    """Fraction of targets inside the central ``level`` interval mean +- z * std."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    y, mean = _pair(y, mean)
    std = np.broadcast_to(np.asarray(std, dtype=float), mean.shape)
    z = stats.norm.ppf(0.5 + level / 2)
    return float(np.mean(np.abs(y - mean) <= z * std))


def accuracy(labels, probs):
    return float(np.mean(np.argmax(probs, axis=-1) == np.asarray(labels)))


def expected_calibration_error(labels, probs, num_bins=15):
    """ECE with equal-width confidence bins (Guo et al. 2017, arXiv 1706.04599):
    sum_b (|B_b| / n) |accuracy(B_b) - confidence(B_b)|."""
    probs = np.asarray(probs)
    conf = probs.max(-1)
    correct = np.argmax(probs, -1) == np.asarray(labels)
    edges = np.linspace(0, 1, num_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def _pair(y, mean):
    y, mean = np.asarray(y, dtype=float), np.asarray(mean, dtype=float)
    if y.ndim == 1 and mean.ndim == 2 and mean.shape[1] == 1:
        y = y[:, None]
    if y.shape != mean.shape:
        raise ValueError(f"targets of shape {y.shape} do not match predictions of shape {mean.shape}")
    return y, mean
