"""Variational dropout layers, trained with the local reparameterization trick.

Two dense layers with multiplicative Gaussian weight noise and a log-uniform prior
p(log|w|) = const, following the contract of ``lrtdense.layers`` (settings on the object, a flat
params dict, explicit noise, pure ``forward(params, x, rng=None, *, noise=None, mode=...)``):

* ``DenseVariationalDropout`` (Kingma, Salimans & Welling 2015, arXiv 1506.02557, "variational
  dropout A", independent weight noise): ``q(w_ij) = N(theta_ij, alpha_ij * theta_ij**2)``, one
  learned alpha per weight, capped at 1 (log alpha clipped to <= 0) as the paper does.
* ``DenseSparseVariationalDropout`` (Molchanov, Ashukha & Vetrov 2017, arXiv 1701.05369): the
  additive reparameterization q(w_ij) = N(theta_ij, sigma2_ij) with free log sigma2, so the
  gradient w.r.t. theta does not carry the multiplicative noise;
  ``log alpha = log sigma2 - log(theta**2 + 1e-8)``, clipped to [-8, 8], enters only the KL and
  the pruning rule.

  ==========================  ===========  ===================================================
  key                         shape        layer
  ==========================  ===========  ===================================================
  ``kernel_theta``            (in, units)  both: the posterior mean of the kernel
  ``kernel_log_alpha``        (in, units)  DenseVariationalDropout
  ``kernel_log_sigma2``       (in, units)  DenseSparseVariationalDropout
  ``bias``                    (units,)     both, when ``use_bias`` (a deterministic bias)
  ==========================  ===========  ===================================================

  Draw order in ``init``: the rows of the table, top to bottom.

Forward (x contracted on its last axis), with the weight's standard deviation
scale = sqrt(alpha) |theta| (Kingma, ``kernels.scale_from_log_alpha``) or exp(log_sigma2 / 2)
(Molchanov, ``kernels.scale_from_log_variance``):

* ``mode="sample"``: the local reparameterization trick, ``kernels.lrt``: m = x @ theta,
  ``s = sqrt((x**2) @ scale**2)``, kernel term m + s * noise["kernel"], noise["kernel"] ~ N(0, 1)
  of shape (..., units).
* ``mode="mean"``: x @ theta.
* ``mode="pruned"`` (sparse layer only): x @ (theta * [log alpha <= threshold]), threshold 3 by
  default: the sparsified network evaluated in the paper.

Then + bias and the activation. The KL terms are the papers' approximations, summed over the
weights; the KL to an improper log-uniform prior is defined only up to an additive constant, and
both layers use the constant C = -k1 of Molchanov et al., the one for which the sparse
approximation vanishes as alpha -> infinity (the exact KL, so normalised, is
KL(alpha) = -0.5 log alpha + E log|1 + sqrt(alpha) eps| + (gamma + log 2) / 2, gamma Euler's constant):

* Kingma (``kernels.kl_kingma``):
  ``KL ~= k1 - (0.5 log alpha + c1 alpha + c2 alpha**2 + c3 alpha**3)``, alpha <= 1,
  c1 = 1.16145124, c2 = -1.50204118, c3 = 0.58629921 (arXiv 1506.02557).
* Molchanov (``kernels.kl_molchanov``): KL ~= k1 - k1 sigmoid(k2 + k3 log alpha) +
  0.5 log(1 + 1/alpha), k1 = 0.63576, k2 = 1.87320, k3 = 1.48695 (arXiv 1701.05369).

The clips of log alpha (to <= 0, to [-8, 8]) pass the gradient at their bounds (``kernels.clip``).

Both are >= 0 on their domains. ``tests/test_dropout.py`` compares them with the exact KL by
quadrature (measured max |error|: 0.0398 for Kingma's on alpha in (0, 1], 0.0094 for
Molchanov's on log alpha in [-12, 12]).
"""
import dataclasses

import numpy as np
from autograd.tracer import getval

from lrtdense import estimators, kernels
from lrtdense.base import Layer, Moments, activation_field, sum_terms
from lrtdense.checks import check_bool, check_float
from lrtdense.distributions import Constant, RandomNormal, initializer_field
from lrtdense.kernels import KINGMA_C, MOLCHANOV_K, THETA2_EPS, kl_kingma, kl_molchanov

__all__ = ["DropoutDense", "DenseVariationalDropout", "DenseSparseVariationalDropout",
           "network_sparsity", "kl_kingma", "kl_molchanov", "KINGMA_C", "MOLCHANOV_K",
           "LOG_ALPHA_CLIP", "THETA2_EPS"]

LOG_ALPHA_CLIP = 8.0                                  # Molchanov's clip of log alpha to [-8, 8]


@dataclasses.dataclass(frozen=True)
class DropoutDense(Layer):
    """The settings and machinery both variational dropout layers share; each adds the
    initializer of its second kernel parameter (and the sparse layer its threshold)."""
    units: int
    activation: object = activation_field()
    _: dataclasses.KW_ONLY
    use_bias: bool = True
    theta_initializer: object = RandomNormal(0.0, 0.1)
    bias_initializer: object = Constant(0.0)
    dtype: object = "float32"

    _VARIANCE_NAME = None           # the second kernel parameter

    def _validate(self):
        self._set("use_bias", check_bool(self.use_bias, "use_bias"))
        for field in dataclasses.fields(self):
            if field.name.endswith("_initializer"):
                self._set(field.name, initializer_field(
                    getattr(self, field.name), f"{field.name}", field.default))

    def weight_names(self):
        """Param names in ``init``'s draw order."""
        return ["kernel_theta", self._VARIANCE_NAME] + (["bias"] if self.use_bias else [])

    def _weight_settings(self):
        return f"use_bias={self.use_bias}"

    def param_shapes(self, input_dim):
        kernel = (int(input_dim), self.units)
        return {name: (self.units,) if name == "bias" else kernel for name in self.weight_names()}

    def initializers(self):
        variance = self._VARIANCE_NAME.replace("kernel_", "") + "_initializer"
        return {"kernel_theta": self.theta_initializer,
                self._VARIANCE_NAME: getattr(self, variance), "bias": self.bias_initializer}

    estimator = estimators.LRT
    kernel_mean = ("kernel_theta", None)

    def noise_shapes(self, input_shape):
        """{"kernel": (..., units)}: one standard normal per output pre-activation."""
        return self.estimator_noise_shapes(self.estimator, input_shape)

    def log_alpha(self, params, workspace=None):
        """log alpha per weight, (in, units), as the KL and the noise use it."""
        raise NotImplementedError

    def weight_moments(self, params, workspace=None):
        """(loc, scale) of the kernel's posterior: (theta, the weight's standard deviation)."""
        return self._moments(params, self.log_alpha(params, workspace), workspace)

    def posterior_moments(self, params, input_dim=None, workspace=None):
        return self._posterior(params, self.log_alpha(params, workspace), workspace)

    def _posterior(self, params, log_alpha, workspace):
        _, scale = self._moments(params, log_alpha, workspace)
        return Moments(params["kernel_theta"], scale, params["bias"] if self.use_bias else None)

    def _moments(self, params, log_alpha, workspace):
        raise NotImplementedError

    def _kl(self, log_alpha, workspace):
        raise NotImplementedError

    def _forward(self, params, x, noise, mode, workspace):
        log_alpha = self.log_alpha(params, workspace)
        theta = params["kernel_theta"]
        if mode == "sample":
            moments = self._posterior(params, log_alpha, workspace)
            outputs, _ = self._pre_activations(moments, x, self.estimator, noise, workspace)
        else:
            if mode == "pruned":
                keep = (getval(log_alpha) <= self.threshold).astype(self.dtype)
                outputs = kernels.dense(x, theta * keep)
            else:
                outputs = kernels.dense(x, theta, workspace=workspace)
            if self.use_bias:
                outputs = kernels.add_bias(outputs, params["bias"], workspace=workspace)
        return outputs, sum_terms({"kernel": self._kl(log_alpha, workspace)}, self.dtype)

    def _divergences(self, params, workspace):
        """{"kernel": the approximate KL(q || log-uniform prior) summed over the weights}."""
        return {"kernel": self._kl(self.log_alpha(params, workspace), workspace)}


@dataclasses.dataclass(frozen=True)
class DenseVariationalDropout(DropoutDense):
    """Variational dropout with a learned alpha per weight (Kingma et al. 2015, arXiv 1506.02557,
    "variational dropout A"): ``q(w) = N(theta, alpha theta**2)``,
    ``alpha = exp(min(log_alpha, 0))``.

    Params: "kernel_theta" (in, units), "kernel_log_alpha" (in, units), "bias" (units,) when
    ``use_bias``. Noise keys: "kernel" (..., units). Modes: "sample", "mean".

    Args:
      units: output size.
      activation: a name from ``lrtdense.activations``, None or a callable.
      use_bias: add a deterministic bias.
      theta_initializer: default RandomNormal(0, 0.1).
      log_alpha_initializer: default Constant(-4.0) (alpha = 0.018: little noise at the start).
      bias_initializer: default Constant(0.0).
      dtype: "float32" (the default; also for None) or "float64".
    """
    _: dataclasses.KW_ONLY
    log_alpha_initializer: object = Constant(-4.0)

    _VARIANCE_NAME = "kernel_log_alpha"

    def log_alpha(self, params, workspace=None):
        """min(kernel_log_alpha, 0): alpha capped at 1, as in the paper."""
        return kernels.clip(params["kernel_log_alpha"], -np.inf, 0.0, workspace=workspace)

    def _moments(self, params, log_alpha, workspace):
        theta = params["kernel_theta"]
        return theta, kernels.scale_from_log_alpha(theta, log_alpha, workspace=workspace)

    def _kl(self, log_alpha, workspace):
        return kl_kingma(log_alpha, workspace=workspace)


@dataclasses.dataclass(frozen=True)
class DenseSparseVariationalDropout(DropoutDense):
    """Sparse variational dropout (Molchanov et al. 2017, arXiv 1701.05369) with the additive
    reparameterization q(w) = N(theta, sigma2) and
    ``log alpha = clip(log sigma2 - log(theta**2 + 1e-8), -8, 8)``. Weights with log alpha >
    ``threshold`` are dropped in ``mode="pruned"``.

    Params: "kernel_theta" (in, units), "kernel_log_sigma2" (in, units), "bias" (units,) when
    ``use_bias``. Noise keys: "kernel" (..., units). Modes: "sample", "mean", "pruned".

    Args:
      units: output size.
      activation: a name from ``lrtdense.activations``, None or a callable.
      use_bias: add a deterministic bias.
      theta_initializer: default RandomNormal(0, 0.1).
      log_sigma2_initializer: default Constant(-10.0) (the paper's code).
      bias_initializer: default Constant(0.0).
      threshold: log alpha above which a weight is pruned; default 3 (the paper's).
      dtype: "float32" (the default; also for None) or "float64".
    """
    _: dataclasses.KW_ONLY
    log_sigma2_initializer: object = Constant(-10.0)
    threshold: float = 3.0

    MODES = ("sample", "mean", "pruned")
    _VARIANCE_NAME = "kernel_log_sigma2"

    def _validate(self):
        super()._validate()
        self._set("threshold", check_float(self.threshold, "threshold",
                                           expected="a finite number (a log alpha)"))

    def log_alpha(self, params, workspace=None):
        """``clip(log sigma2 - log(theta**2 + 1e-8), -8, 8)``, (in, units)."""
        return kernels.sparse_log_alpha(params["kernel_theta"], params["kernel_log_sigma2"],
                                        -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP, workspace=workspace)

    def _moments(self, params, log_alpha, workspace):
        return (params["kernel_theta"],
                kernels.scale_from_log_variance(params["kernel_log_sigma2"], workspace=workspace))

    def _kl(self, log_alpha, workspace):
        return kl_molchanov(log_alpha, workspace=workspace)

    def sparsity(self, params):
        """Fraction of kernel weights with log alpha > threshold (pruned in mode="pruned")."""
        self.check_params(params)
        return float(np.mean(getval(self.log_alpha(params)) > self.threshold))


def network_sparsity(network, params):
    """{layer name: pruned fraction} for every layer of a Sequential that has ``sparsity``."""
    return {name: layer.sparsity(params[name])
            for name, layer in zip(network.names, network.layers) if hasattr(layer, "sparsity")}
