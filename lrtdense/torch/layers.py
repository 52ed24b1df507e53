"""TFP's DenseLocalReparameterization, DenseReparameterization and DenseFlipout as
``torch.nn.Module``s (the contract: ``lrtdense.torch.base``).

Parameters (TFP's names, shapes and order; ``state_dict`` keys), kernel (in, units), bias (units,):

* ``kernel_posterior_loc``, ``kernel_posterior_untransformed_scale``: always;
* ``kernel_prior_loc``, ``kernel_prior_untransformed_scale``: a ``trainable_normal`` kernel prior;
* ``bias_posterior_loc``: a bias posterior; ``bias_posterior_untransformed_scale``: a Normal one;
* ``bias_prior_loc``, ``bias_prior_untransformed_scale``: a ``trainable_normal`` bias prior.

With scale = softplus(untransformed_scale) + eps, each estimator is one method, ``_kernel_term``
(as TFP's subclasses override ``_apply_variational_kernel``); noise keys as the NumPy layers':

* LocalReparameterization (Kingma et al. 2015, arXiv 1506.02557): noise["kernel"] (..., units) *
  sqrt((x * x) @ scale**2) + x @ loc;
* Reparameterization: x @ (noise["kernel"] * scale + loc), noise["kernel"] (in, units);
* Flipout (Wen et al. 2018, arXiv 1803.04386): x @ loc + ((x * noise["sign_input"]) @
  (noise["kernel"] * scale)) * noise["sign_output"].

Then the bias (Deterministic: + loc; Normal: + noise["bias"] * bias_scale + loc, one draw per
call) and the activation. Divergences, per term with a prior, times its weight: closed form
KL(q || p) (Normal priors), -log p(loc) for a Deterministic bias, or the Monte Carlo
log q(w) - log p(w) at w = loc + scale * eps, eps the term's own draw
(``kernel_divergence`` / ``bias_divergence``) when the noise layout has one, else the forward's
(Reparameterization's kernel, a Normal bias), 0 in mean mode.
"""
import torch

from lrtdense import layers as numpy_layers
from lrtdense.distributions import ClosedFormKL
from lrtdense.torch import functional as F
from lrtdense.torch.base import BayesianModule
from lrtdense.torch.priors import loc_scale, log_prob

__all__ = ["MeanFieldDense", "DenseLocalReparameterization", "DenseReparameterization",
           "DenseFlipout"]


class MeanFieldDense(BayesianModule):
    """A dense layer with a mean-field Normal kernel posterior (settings: ``units``,
    ``activation``, ``kernel_posterior``, ``kernel_prior``, ``bias_posterior``, ``bias_prior``,
    ``kernel_divergence``, ``bias_divergence``, as ``lrtdense.layers.MeanFieldDense``)."""

    def kernel_moments(self):
        """(loc, scale) of the kernel's posterior, both (in, units)."""
        return (self.kernel_posterior_loc,
                F.posterior_scale(self.kernel_posterior_untransformed_scale))

    def _kernel_term(self, x, loc, scale, noise):
        """The estimator's sample of x @ W, (..., units)."""
        raise NotImplementedError

    def _forward(self, x, noise, mode):
        loc, scale = self.kernel_moments()
        z = torch.matmul(x, loc) if noise is None else self._kernel_term(x, loc, scale, noise)
        posterior, bias_scale = self.settings.bias_posterior, None
        if posterior is not None and posterior.is_normal:
            bias_scale = F.posterior_scale(self.bias_posterior_untransformed_scale)
        if posterior is not None:
            bias = self.bias_posterior_loc
            if noise is not None and bias_scale is not None:     # one draw for the batch
                bias = noise["bias"] * bias_scale + bias
            z = z + bias
        scales = {"kernel": scale, "bias": bias_scale}
        return z, self._divergences(scales, noise)

    def _divergences(self, scales, noise):
        """dict "kernel" / "bias" -> weight * divergence, for the terms with a prior; ``scales``
        the posterior scales (None for a Deterministic bias)."""
        params = self.params()
        posteriors = {"kernel": self.settings.kernel_posterior,
                      "bias": self.settings.bias_posterior}
        terms = {}
        for name, posterior in posteriors.items():
            prior = getattr(self.settings, f"{name}_prior")
            if prior is None or posterior is None:
                continue
            value = self._divergence(name, prior, scales[name], params, noise)
            weight = getattr(self.settings, f"{name}_divergence").weight
            terms[name] = value if weight == 1 else value * weight
        return terms

    def _divergence(self, name, prior, scale, params, noise):
        """The unweighted divergence of the term ``name`` ("kernel" or "bias")."""
        loc = params[f"{name}_posterior_loc"]
        if scale is None:                               # a point mass: KL = -log p(loc)
            return -log_prob(prior, loc, params, name)
        if isinstance(getattr(self.settings, f"{name}_divergence"), ClosedFormKL):
            return F.kl_normal_normal(loc, scale, *loc_scale(prior, params, name))
        if noise is None:
            eps = torch.zeros_like(loc)
        else:
            eps = noise.get(f"{name}_divergence", noise.get(name))
        return (F.normal_log_prob_of_sample(scale, eps)
                - log_prob(prior, loc + scale * eps, params, name))


class DenseLocalReparameterization(MeanFieldDense):
    """Dense layer with the local reparameterization estimator (TFP's
    ``DenseLocalReparameterization``; Kingma et al. 2015, arXiv 1506.02557).

    >>> layer = DenseLocalReparameterization(784, 400, "relu")      # doctest: +SKIP
    >>> out = layer(x); loss = nll(out) + layer.divergence / n      # doctest: +SKIP
    """
    settings_class = numpy_layers.DenseLocalReparameterization

    def _kernel_term(self, x, loc, scale, noise):
        stddev = F.zero_safe_sqrt(torch.matmul(x * x, scale * scale))
        return noise["kernel"] * stddev + torch.matmul(x, loc)


class DenseReparameterization(MeanFieldDense):
    """Dense layer with one kernel draw per call (TFP's ``DenseReparameterization``)."""
    settings_class = numpy_layers.DenseReparameterization

    def _kernel_term(self, x, loc, scale, noise):
        return torch.matmul(x, noise["kernel"] * scale + loc)


class DenseFlipout(MeanFieldDense):
    """Dense layer with the Flipout estimator (TFP's ``DenseFlipout``; Wen et al. 2018,
    arXiv 1803.04386)."""
    settings_class = numpy_layers.DenseFlipout

    def _kernel_term(self, x, loc, scale, noise):
        perturbation = torch.matmul(x * noise["sign_input"], noise["kernel"] * scale)
        return torch.matmul(x, loc) + perturbation * noise["sign_output"]
