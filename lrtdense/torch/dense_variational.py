"""TFP's ``tfp.layers.DenseVariational`` with the regression tutorial's posterior and priors, as
a ``torch.nn.Module`` (the contract: ``lrtdense.torch.base``; the math:
``lrtdense.dense_variational``'s docstring and SPEC section 3).

Parameters: ``posterior_constant`` (2n,) and, with ``prior="trainable"``, ``prior_constant``
(n,), n = in * units (+ units with a bias). Noise: "posterior" (n,), one draw per call.
loc = t[:n], scale = 1e-5 + softplus(c + t[n:]), c = log(expm1(1)); w = eps * scale + loc (loc in
mean mode); kernel = w[:in * units] row-major (in, units), bias = w[in * units:].
"""
import numpy as np
import torch

from lrtdense import dense_variational as numpy_dv
from lrtdense.torch import functional as F
from lrtdense.torch.base import BayesianModule

__all__ = ["DenseVariational"]


class DenseVariational(BayesianModule):
    """A dense layer whose flat weight vector has a mean-field Normal posterior (settings:
    ``prior`` "trainable" | "fixed", ``kl_weight``, ``kl_use_exact``, ``use_bias``)."""
    settings_class = numpy_dv.DenseVariational

    def flat_moments(self):
        """(loc, scale) of the flat weight vector's posterior, both (n,)."""
        t = self.posterior_constant
        n = t.shape[0] // 2
        return t[:n], F.softplus(t[n:] + numpy_dv.POSTERIOR_SHIFT) + numpy_dv.POSTERIOR_OFFSET

    def _weights(self, noise):
        """(w, eps, loc, scale): the call's weight vector and its standard normals."""
        loc, scale = self.flat_moments()
        if noise is None:
            return loc, torch.zeros_like(loc), loc, scale
        eps = noise["posterior"]
        return eps * scale + loc, eps, loc, scale

    def _forward(self, x, noise, mode):
        w, eps, loc, scale = self._weights(noise)
        k = self.in_features * self.units
        z = torch.matmul(x, w[:k].reshape(self.in_features, self.units))
        if self.settings.use_bias:
            z = z + w[k:]
        return z, {"kernel": self._divergence(w, eps, loc, scale)}

    def _divergence(self, w, eps, loc, scale):
        """The (weighted) divergence of the flat weight vector: exact, or log q(w) - log p(w)."""
        prior_loc = self.prior_constant if self.settings.prior == "trainable" else 0.0
        if self.settings.kl_use_exact:
            value = F.kl_normal_normal(loc, scale, prior_loc, 1.0)
        else:
            value = (F.normal_log_prob_of_sample(scale, eps)
                     - F.normal_log_prob(w, prior_loc, 1.0))
        if self.settings.kl_weight is not None:
            # TFP's tf.cast of a Python float goes through float32, even in float64
            value = value * float(np.float32(self.settings.kl_weight))
        return value
