"""Likelihoods and the minibatch negative ELBO.

The one place where the KL is scaled (TFP: "make sure to scale this loss such that it is applied
just once per epoch (kl / num_examples_per_epoch)"):

    neg_elbo_minibatch = mean_{i in batch} NLL_i + kl_weight * KL / num_examples

Summed over the minibatches of one epoch and divided by their number, its expectation is the
full-data negative ELBO divided by N: (sum_i NLL_i + KL) / N. Each minibatch carries the KL once
divided by N, never the raw KL and never the KL once per example.
"""
import math

import numpy as onp
import autograd.numpy as np
from autograd.scipy.special import logsumexp
from autograd.tracer import getval

from lrtdense.primitives import softplus

__all__ = ["gaussian_nll", "softmax_cross_entropy", "neg_elbo", "GaussianLikelihood",
           "CategoricalLikelihood", "likelihood_from_config"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll(y, mean, scale):
    """-log N(y; mean, scale**2), element-wise (broadcasting). Shapes: any, broadcastable."""
    z = (y - mean) / scale
    return 0.5 * z * z + np.log(scale) + _HALF_LOG_2PI


def softmax_cross_entropy(logits, labels):
    """-log softmax(logits)[labels], stable via logsumexp.

    Args:
      logits: (batch, classes).
      labels: integer array (batch,) with values in [0, classes).
    Returns:
      (batch,) per-example cross-entropy.
    """
    labels = onp.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    n, k = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"expected labels of shape ({n},) to match logits {logits.shape}, got "
                         f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values in [{labels.min()}, {labels.max()}]")
    picked = logits[onp.arange(n), labels]
    return logsumexp(logits, axis=1) - picked


def neg_elbo(nll_mean, kl, num_examples, kl_weight=1.0):
    """Minibatch negative ELBO per example: nll_mean + kl_weight * kl / num_examples."""
    if not num_examples >= 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    return nll_mean + (kl_weight / num_examples) * kl


class GaussianLikelihood:
    """y ~ N(f(x), scale**2) per output dimension; scale fixed or learned.

    Learned: params {"untransformed_noise_scale": ()}, scale = softplus(u) + eps, initialised at
    ``scale``.
    """

    def __init__(self, scale=1.0, learn_scale=False):
        if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.scale, self.learn_scale = float(scale), bool(learn_scale)

    def init(self, dtype):
        if not self.learn_scale:
            return {}
        return {"untransformed_noise_scale": onp.asarray(math.log(math.expm1(self.scale)), dtype=dtype)}

    def noise_scale(self, params):
        if self.learn_scale:
            u = params["untransformed_noise_scale"]
            return softplus(u) + onp.finfo(getval(u).dtype).eps
        return self.scale

    def nll(self, params, outputs, y):
        """Per-example NLL summed over output dimensions: (batch,)."""
        y = _as_targets(y, outputs)
        return np.sum(gaussian_nll(y, outputs, self.noise_scale(params)), axis=-1)

    def get_config(self):
        return {"type": "gaussian", "scale": self.scale, "learn_scale": self.learn_scale}


class CategoricalLikelihood:
    """y ~ Categorical(softmax(f(x))), integer labels."""

    def init(self, dtype):
        return {}

    def nll(self, params, outputs, y):
        return softmax_cross_entropy(outputs, y)

    def get_config(self):
        return {"type": "categorical"}


def likelihood_from_config(config):
    if not isinstance(config, dict) or config.get("type") not in ("gaussian", "categorical"):
        raise ValueError(f"unknown likelihood config {config!r}; expected type 'gaussian' or "
                         "'categorical'")
    if config["type"] == "categorical":
        return CategoricalLikelihood()
    return GaussianLikelihood(config.get("scale", 1.0), config.get("learn_scale", False))


def _as_targets(y, outputs):
    y = onp.asarray(y)
    if y.ndim == 1 and len(outputs.shape) == 2 and outputs.shape[1] == 1:
        y = y[:, None]
    if y.shape != tuple(outputs.shape):
        raise ValueError(f"expected targets of shape {tuple(outputs.shape)}, got {y.shape}")
    return y.astype(getval(outputs).dtype, copy=False)
