"""Predictive distributions by Monte Carlo over the posterior (the metrics that judge them are in
``lrtdense.metrics``).

Regression (Gaussian likelihood): with S forward samples f_s(x),
  ``mean = (1/S) sum_s f_s``,  ``epistemic variance = (1/S) sum_s (f_s - mean)**2``,
  ``total variance = epistemic + noise_scale**2``  (the moment-matched Gaussian of the predictive
  mixture, which ``lrtdense.metrics.gaussian_nll`` and ``interval_coverage`` then use).
Classification: probabilities averaged over the S samples (the posterior predictive).
"""
import numpy as np
from scipy import special

from lrtdense.checks import check_int
from lrtdense.losses import CategoricalLikelihood

__all__ = ["predict", "predict_mean"]


def predict(model, params, x, *, rng, num_samples=100):
    """Monte Carlo predictive over ``num_samples`` stochastic forward passes.

    Args:
      model: a ``Model``; params: its params.
      x: inputs, (N, ..., in).
      rng: a ``numpy.random.Generator``; the passes draw from it in turn.
      num_samples: S, an integer >= 1 (with S == 1 the epistemic std is 0 everywhere).
    Returns:
      A dict. Regression: "mean" and "epistemic_std" (N, ..., d), "std" (the total,
      ``sqrt(epistemic_std**2 + noise_scale**2)``), "noise_scale" (a float), "samples"
      (S, N, ..., d). Classification: "probs" (N, k), the average of the per-sample softmax
      probabilities "samples" (S, N, k).
    Raises:
      ValueError: a bad num_samples (or, from the model, bad inputs).
    """
    num_samples = check_int(num_samples, "num_samples", low=1)
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
    """Deterministic prediction with every layer in mean mode (no sampling).

    Returns:
      Regression: the outputs (N, ..., d). Classification: softmax probabilities (N, k).
    """
    out = model.forward(params, x, mode="mean")[0]
    if isinstance(model.likelihood, CategoricalLikelihood):
        return special.softmax(out, axis=-1)
    return out
