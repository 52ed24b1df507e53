"""The six lrtdense layers as Keras 3 layers (``keras.ops`` only: JAX, PyTorch, TensorFlow).

Weights (TFP's names, in TFP's ``layer.weights`` order; SPEC.md section 2), for in inputs:

==========================================  ============  ====================================
weight                                      shape         layer
==========================================  ============  ====================================
``kernel_posterior_loc``                    (in, units)   the three TFP estimators
``kernel_posterior_untransformed_scale``    (in, units)   the three TFP estimators
``kernel_prior_loc``, ``..._untransformed_scale``  (in, units)  trainable Normal kernel prior
``bias_posterior_loc``                      (units,)      bias posterior not None
``bias_posterior_untransformed_scale``      (units,)      Normal bias posterior
``bias_prior_loc``, ``..._untransformed_scale``    (units,)     trainable Normal bias prior
``kernel_theta``, ``kernel_log_alpha`` / ``kernel_log_sigma2``, ``bias``  the dropout layers
``posterior_constant`` (2n,), ``prior_constant`` (n,)   DenseVariational, n = in units (+ units)
==========================================  ============  ====================================

The estimators (scale = softplus(u) + eps; x @ K contracts x's last axis):

* LocalReparameterization (Kingma et al. 2015, arXiv 1506.02557):
  x @ loc + noise["kernel"] * sqrt((x*x) @ scale^2), noise["kernel"] (..., units);
* Reparameterization: x @ (noise["kernel"] * scale + loc), noise["kernel"] (in, units);
* Flipout (Wen et al. 2018, arXiv 1803.04386): x @ loc + ((x * noise["sign_input"]) @
  (noise["kernel"] * scale)) * noise["sign_output"];

then the bias (Normal: noise["bias"] * bias_scale + bias_loc, one draw for the batch) and the
activation. The dropout layers (arXiv 1506.02557, 1701.05369) and DenseVariational (TFP's
``dense_variational_v2`` with the tutorial's posterior): ``lrtdense.dropout`` and
``lrtdense.dense_variational`` state their math, repeated in ``_compute`` below.
"""
import keras
import numpy as np
from keras import ops

import lrtdense
from lrtdense.distributions import ClosedFormKL
from lrtdense.keras import kernels
from lrtdense.keras.base import BayesianDense

__all__ = ["MeanFieldDense", "DropoutDense", "DenseLocalReparameterization",
           "DenseReparameterization", "DenseFlipout",
           "DenseVariationalDropout", "DenseSparseVariationalDropout", "DenseVariational",
           "LAYERS"]

_register = keras.saving.register_keras_serializable(package="lrtdense")


class MeanFieldDense(BayesianDense):
    """TFP's three estimators; each subclass overrides ``_kernel_term`` (as TFP's
    ``_apply_variational_kernel``)."""

    def divergence_names(self):
        s = self.settings
        return (["kernel"] if s.kernel_prior is not None else []) + (
            ["bias"] if s.bias_posterior is not None and s.bias_prior is not None else [])

    def _kernel_term(self, x, loc, scale, noise):
        """The kernel's contribution (..., units) in sample mode."""
        raise NotImplementedError

    def _compute(self, params, x, noise, mode):
        loc = params["kernel_posterior_loc"]
        scale = kernels.posterior_scale(params["kernel_posterior_untransformed_scale"])
        z = kernels.dense(x, loc) if noise is None else self._kernel_term(x, loc, scale, noise)
        bias_scale = None
        if self.settings.bias_posterior is not None:
            bias_loc = params["bias_posterior_loc"]
            if self.settings.bias_posterior.is_normal:
                bias_scale = kernels.posterior_scale(params["bias_posterior_untransformed_scale"])
            z = z + (bias_loc if noise is None or bias_scale is None
                     else noise["bias"] * bias_scale + bias_loc)
        names, terms = self.divergence_names(), {}
        if "kernel" in names:
            terms["kernel"] = self._divergence("kernel", params, loc, scale, noise)
        if "bias" in names:
            terms["bias"] = self._divergence("bias", params, params["bias_posterior_loc"],
                                             bias_scale, noise)
        return z, terms

    def _divergence(self, name, params, loc, scale, noise):
        """The weighted divergence of the kernel or bias (SPEC.md section 3, "Divergences"):
        -log p(loc) for a point mass; the closed-form KL; or log q(w) - log p(w) at
        w = loc + scale * eps, eps the call's draw (the extra "<name>_divergence" one when the
        noise has it) or 0 in mean mode."""
        prior = getattr(self.settings, f"{name}_prior")
        divergence = getattr(self.settings, f"{name}_divergence")
        loc_scale = self._prior_loc_scale(prior, params, name)
        log_prior = kernels.LOG_PRIORS[prior.TYPE]
        if scale is None:
            value = -log_prior(loc, prior, loc_scale)
        elif isinstance(divergence, ClosedFormKL):
            value = kernels.kl_normal(loc, scale, *loc_scale)
        else:
            if noise is None:
                eps = ops.zeros_like(loc)
            else:
                eps = noise.get(f"{name}_divergence", noise.get(name))
            value = (kernels.normal_log_prob_of_sample(scale, eps)
                     - log_prior(loc + scale * eps, prior, loc_scale))
        return value if divergence.weight == 1 else value * divergence.weight

    @staticmethod
    def _prior_loc_scale(prior, params, name):
        """(mp, sp) of a Normal prior: its numbers, or a trainable prior's weights."""
        if prior.TYPE == "trainable_normal":
            return (params[f"{name}_prior_loc"],
                    kernels.posterior_scale(params[f"{name}_prior_untransformed_scale"]))
        if prior.TYPE == "normal":
            return prior.loc, prior.scale
        return None


@_register
class DenseLocalReparameterization(MeanFieldDense):
    """TFP's ``DenseLocalReparameterization`` (arXiv 1506.02557) as a Keras 3 layer: samples
    the pre-activations, x @ loc + noise["kernel"] * sqrt((x*x) @ scale^2).
    Settings: ``lrtdense.DenseLocalReparameterization``'s; see ``BayesianDense``."""
    SETTINGS = lrtdense.DenseLocalReparameterization

    def _kernel_term(self, x, loc, scale, noise):
        s = kernels.zero_safe_sqrt(kernels.dense(x * x, scale * scale))
        return noise["kernel"] * s + kernels.dense(x, loc)


@_register
class DenseReparameterization(MeanFieldDense):
    """TFP's ``DenseReparameterization``: one kernel draw W = noise["kernel"] * scale + loc per
    call, x @ W. Settings: ``lrtdense.DenseReparameterization``'s."""
    SETTINGS = lrtdense.DenseReparameterization

    def _kernel_term(self, x, loc, scale, noise):
        return kernels.dense(x, noise["kernel"] * scale + loc)


@_register
class DenseFlipout(MeanFieldDense):
    """TFP's ``DenseFlipout`` (arXiv 1803.04386): x @ loc + ((x * sign_input) @
    (noise["kernel"] * scale)) * sign_output. Settings: ``lrtdense.DenseFlipout``'s."""
    SETTINGS = lrtdense.DenseFlipout

    def _kernel_term(self, x, loc, scale, noise):
        perturbation = kernels.dense(x * noise["sign_input"], noise["kernel"] * scale)
        return kernels.dense(x, loc) + perturbation * noise["sign_output"]


class DropoutDense(BayesianDense):
    """The two variational dropout layers: LRT on N(theta, variance), a deterministic bias."""

    def _log_alpha(self, params):
        raise NotImplementedError

    def _variance(self, params, log_alpha):
        raise NotImplementedError

    def _compute(self, params, x, noise, mode):
        theta = params["kernel_theta"]
        log_alpha = self._log_alpha(params)
        if mode == "pruned":   # the mask is a constant for the gradients
            keep = ops.cast(log_alpha <= self.settings.threshold, theta.dtype)
            z = kernels.dense(x, theta * ops.stop_gradient(keep))
        else:
            z = kernels.dense(x, theta)
        if noise is not None:
            variance = self._variance(params, log_alpha)
            z = z + noise["kernel"] * kernels.zero_safe_sqrt(kernels.dense(x * x, variance))
        if self.settings.use_bias:
            z = z + params["bias"]
        return z, {"kernel": self._kl(log_alpha)}


@_register
class DenseVariationalDropout(DropoutDense):
    """Variational dropout A (Kingma, Salimans & Welling 2015, arXiv 1506.02557): la =
    min(kernel_log_alpha, 0), variance exp(la) theta^2, Kingma's KL. Settings:
    ``lrtdense.DenseVariationalDropout``'s."""
    SETTINGS = lrtdense.DenseVariationalDropout

    def _log_alpha(self, params):
        return kernels.min0(params["kernel_log_alpha"])

    def _variance(self, params, log_alpha):
        return ops.exp(log_alpha) * ops.square(params["kernel_theta"])

    def _kl(self, log_alpha):
        return kernels.kl_kingma(log_alpha)


@_register
class DenseSparseVariationalDropout(DropoutDense):
    """Sparse variational dropout (Molchanov, Ashukha & Vetrov 2017, arXiv 1701.05369):
    la = clip(log_sigma2 - log(theta^2 + 1e-8), -8, 8), variance exp(log_sigma2), Molchanov's
    KL; ``mode="pruned"`` keeps the weights with la <= threshold. Settings:
    ``lrtdense.DenseSparseVariationalDropout``'s."""
    SETTINGS = lrtdense.DenseSparseVariationalDropout

    def _log_alpha(self, params):
        theta = params["kernel_theta"]
        return kernels.clip(params["kernel_log_sigma2"] - ops.log(ops.square(theta) + 1e-8),
                            -8.0, 8.0)

    def _variance(self, params, log_alpha):
        return ops.exp(params["kernel_log_sigma2"])

    def _kl(self, log_alpha):
        return kernels.kl_molchanov(log_alpha)


@_register
class DenseVariational(BayesianDense):
    """TFP's ``DenseVariational`` with the tutorial's ``posterior_mean_field`` (one flat weight
    vector w of n entries): loc = t[:n], scale = 1e-5 + softplus(c + t[n:]), c = log(expm1(1)),
    w = noise["posterior"] * scale + loc, kernel = w[:in units] row-major, bias = the rest.
    Settings: ``lrtdense.DenseVariational``'s (prior "trainable"/"fixed", kl_weight,
    kl_use_exact, use_bias)."""
    SETTINGS = lrtdense.DenseVariational

    def _compute(self, params, x, noise, mode):
        s = self.settings
        t = params["posterior_constant"]
        n = ops.shape(t)[0] // 2
        loc = t[:n]
        scale = lrtdense.dense_variational.POSTERIOR_OFFSET + kernels.softplus(
            t[n:] + lrtdense.dense_variational.POSTERIOR_SHIFT)
        eps = ops.zeros_like(loc) if noise is None else noise["posterior"]
        w = eps * scale + loc
        in_units = ops.shape(x)[-1] * s.units
        z = kernels.dense(x, ops.reshape(w[:in_units], (-1, s.units)))
        if s.use_bias:
            z = z + w[in_units:]
        prior_loc = params["prior_constant"] if s.prior == "trainable" else 0.0
        if s.kl_use_exact:
            kl = kernels.kl_normal(loc, scale, prior_loc, 1.0)
        else:
            kl = (kernels.normal_log_prob_of_sample(scale, eps)
                  - ops.sum(-0.5 * ops.square(w - prior_loc) - kernels.HALF_LOG_2PI))
        if s.kl_weight is not None:   # TFP's tf.cast of a Python float: float32(kl_weight)
            kl = kl * float(np.float32(s.kl_weight))
        return z, {"kernel": kl}


LAYERS = {cls.__name__: cls for cls in (
    DenseLocalReparameterization, DenseReparameterization, DenseFlipout,
    DenseVariationalDropout, DenseSparseVariationalDropout, DenseVariational)}
