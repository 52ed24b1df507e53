"""Variational dropout layers, trained with the local reparameterization trick.

Two dense layers with multiplicative Gaussian weight noise and a log-uniform prior
p(log|w|) = const, following the contract of ``lrtdense.layers`` (settings on the object, a flat
params dict, explicit noise, pure ``forward(params, x, rng=None, *, noise=None, mode=...)``):

* ``DenseVariationalDropout`` (Kingma, Salimans & Welling 2015, arXiv 1506.02557, "variational
  dropout A", independent weight noise): q(w_ij) = N(theta_ij, alpha_ij * theta_ij**2), one learned
  alpha per weight, capped at 1 (log alpha clipped to <= 0) as the paper does.
* ``DenseSparseVariationalDropout`` (Molchanov, Ashukha & Vetrov 2017, arXiv 1701.05369): the
  additive reparameterization q(w_ij) = N(theta_ij, sigma2_ij) with free log sigma2, so the
  gradient w.r.t. theta does not carry the multiplicative noise; log alpha = log sigma2 -
  log(theta**2 + 1e-8), clipped to [-8, 8], enters only the KL and the pruning rule.

  ==========================  ===========  ===================================================
  key                         shape        layer
  ==========================  ===========  ===================================================
  ``kernel_theta``            (in, units)  both: the posterior mean of the kernel
  ``kernel_log_alpha``        (in, units)  DenseVariationalDropout
  ``kernel_log_sigma2``       (in, units)  DenseSparseVariationalDropout
  ``bias``                    (units,)     both, when ``use_bias`` (a deterministic bias)
  ==========================  ===========  ===================================================

  Draw order in ``init``: the rows of the table, top to bottom.

Forward (x contracted on its last axis), with the kernel variance v = alpha * theta**2
(Kingma) or v = exp(log_sigma2) (Molchanov):

* ``mode="sample"``: m = x @ theta, s = sqrt0((x**2) @ v), kernel term m + s * noise["kernel"],
  noise["kernel"] ~ N(0, 1) of shape (..., units): the local reparameterization trick.
* ``mode="mean"``: x @ theta.
* ``mode="pruned"`` (sparse layer only): x @ (theta * [log alpha <= threshold]), threshold 3 by
  default: the sparsified network evaluated in the paper.

Then + bias and the activation. The KL terms are the papers' approximations, summed over the
weights; the KL to an improper log-uniform prior is defined only up to an additive constant, and
both layers use the constant C = -k1 of Molchanov et al., the one for which the sparse
approximation vanishes as alpha -> infinity (the exact KL, so normalised, is
KL(alpha) = -0.5 log alpha + E log|1 + sqrt(alpha) eps| + (gamma + log 2) / 2, gamma Euler's constant):

* Kingma:   KL ~= k1 - (0.5 log alpha + c1 alpha + c2 alpha**2 + c3 alpha**3), alpha <= 1,
  c1 = 1.16145124, c2 = -1.50204118, c3 = 0.58629921 (arXiv 1506.02557).
* Molchanov: KL ~= k1 - k1 sigmoid(k2 + k3 log alpha) + 0.5 log(1 + 1/alpha),
  k1 = 0.63576, k2 = 1.87320, k3 = 1.48695 (arXiv 1701.05369).

Both are >= 0 on their domains. ``tests/test_dropout.py`` compares them with the exact KL by
quadrature (measured max |error|: 0.0398 for Kingma's on alpha in (0, 1], 0.0094 for
Molchanov's on log alpha in [-12, 12]).
"""
import math

import numpy as onp
import autograd.numpy as np
from autograd.scipy.special import expit
from autograd.tracer import getval

from lrtdense import activations as _activations
from lrtdense.distributions import Constant, RandomNormal, initializer_from_config
from lrtdense.layers import LAYERS, _DTYPES, _DenseVariational, _check_rng, _dtype_name, contract
from lrtdense.primitives import sqrt0

__all__ = ["DenseVariationalDropout", "DenseSparseVariationalDropout", "network_sparsity",
           "kl_kingma", "kl_molchanov", "KINGMA_C", "MOLCHANOV_K"]

KINGMA_C = (1.16145124, -1.50204118, 0.58629921)      # c1, c2, c3 (arXiv 1506.02557)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)             # k1, k2, k3 (arXiv 1701.05369)
LOG_ALPHA_CLIP = 8.0                                  # Molchanov's clip of log alpha to [-8, 8]
THETA2_EPS = 1e-8                                     # in log(theta**2 + eps), as in their code


def kl_kingma(log_alpha):
    """Kingma et al.'s KL approximation per weight, normalised by C = -k1.

    Args:
      log_alpha: array, any shape; values above 0 are clipped to 0 (alpha <= 1).
    Returns:
      Array of log_alpha's shape and dtype: k1 - (0.5 log a + c1 a + c2 a**2 + c3 a**3).
    """
    c1, c2, c3 = KINGMA_C
    log_alpha = np.minimum(log_alpha, 0.0)
    alpha = np.exp(log_alpha)
    return MOLCHANOV_K[0] - (0.5 * log_alpha + alpha * (c1 + alpha * (c2 + alpha * c3)))


def kl_molchanov(log_alpha):
    """Molchanov et al.'s KL approximation per weight (vanishes as log alpha -> infinity).

    Args:
      log_alpha: array, any shape (not clipped here).
    Returns:
      Array of log_alpha's shape and dtype: k1 - k1 sigmoid(k2 + k3 log a) + 0.5 log1p(1 / a).
    """
    k1, k2, k3 = MOLCHANOV_K
    return k1 - k1 * expit(k2 + k3 * log_alpha) + 0.5 * np.log1p(np.exp(-log_alpha))


class _DenseDropout(_DenseVariational):
    """Settings and machinery shared by the two variational dropout layers."""

    MODES = ("sample", "mean")
    _VARIANCE_NAME = None           # the second kernel parameter
    _VARIANCE_DEFAULT = None        # its default initializer

    def __init__(self, units, activation=None, *, use_bias=True, theta_initializer=None,
                 variance_initializer=None, bias_initializer=None, dtype="float32"):
        if isinstance(units, bool) or not isinstance(units, (int, onp.integer)) or units < 1:
            raise ValueError(f"units must be an integer >= 1, got {units!r}")
        if not isinstance(use_bias, bool):
            raise TypeError(f"use_bias must be True or False, got {use_bias!r}")
        self.units = int(units)
        self.activation = activation
        self._activation_fn = _activations.get(activation)
        self.use_bias = use_bias
        self.theta_initializer = _initializer(theta_initializer, RandomNormal(0.0, 0.1),
                                              "theta_initializer")
        self.variance_initializer = _initializer(variance_initializer, self._VARIANCE_DEFAULT,
                                                 self._variance_setting())
        self.bias_initializer = _initializer(bias_initializer, Constant(0.0), "bias_initializer")
        self.dtype = _dtype_name(dtype)

    @classmethod
    def _variance_setting(cls):
        return cls._VARIANCE_NAME.replace("kernel_", "") + "_initializer"

    # ----------------------------------------------------------------------------- settings
    def weight_names(self):
        """Param names in ``init``'s draw order."""
        return ["kernel_theta", self._VARIANCE_NAME] + (["bias"] if self.use_bias else [])

    def get_config(self):
        """Plain JSON-serializable settings; ``type(self).from_config(cfg)`` rebuilds the layer."""
        name = _activations.config_name(self.activation)
        return {"units": self.units, "activation": name, "use_bias": self.use_bias,
                "dtype": self.dtype, "theta_initializer": self.theta_initializer.to_config(),
                self._variance_setting(): self.variance_initializer.to_config(),
                "bias_initializer": self.bias_initializer.to_config()}

    def _key(self):
        return (type(self), self.units, self.dtype, self.use_bias, self.theta_initializer,
                self.variance_initializer, self.bias_initializer,
                _activations.name_of(self.activation) or self.activation)

    def __repr__(self):
        act = _activations.name_of(self.activation) or repr(self.activation)
        return (f"{type(self).__name__}(units={self.units}, activation={act!r}, "
                f"use_bias={self.use_bias}, dtype={self.dtype!r})")

    # --------------------------------------------------------------------------- parameters
    def _initializers(self):
        return {"kernel_theta": self.theta_initializer,
                self._VARIANCE_NAME: self.variance_initializer, "bias": self.bias_initializer}

    def _settings_text(self):
        return f"use_bias={self.use_bias}"

    # -------------------------------------------------------------------------------- noise
    def noise_shapes(self, input_shape):
        """{"kernel": (..., units)}: one standard normal per output pre-activation."""
        return {"kernel": self.compute_output_shape(tuple(input_shape))}

    # ------------------------------------------------------------------------------ compute
    def log_alpha(self, params):
        """log alpha per weight, (in, units), as the KL and the noise use it."""
        raise NotImplementedError

    def _kernel_variance(self, params):
        raise NotImplementedError

    def _kl_terms(self, log_alpha):
        raise NotImplementedError

    def divergences(self, params):
        """{"kernel": the approximate KL(q || log-uniform prior) summed over the weights}."""
        self.check_params(params)
        return {"kernel": np.sum(self._kl_terms(self.log_alpha(params)))}

    def kl(self, params):
        """The sum of ``divergences`` (a scalar of the layer's dtype)."""
        return self.divergences(params)["kernel"]

    def forward(self, params, x, rng=None, *, noise=None, mode="sample"):
        """Stochastic (``mode="sample"``) or deterministic forward pass.

        Args:
          params: dict of arrays (see the module docstring).
          x: float array (..., in), rank >= 2; cast to the layer's dtype if floating.
          rng: numpy.random.Generator for the noise (sample mode, unless ``noise`` is given).
          noise: {"kernel": array (..., units)} of standard normals; makes forward deterministic.
          mode: one of ``MODES``; rng and noise are ignored outside "sample".
        Returns:
          (outputs of shape (..., units), kl scalar), both of the layer's dtype.
        Raises:
          ValueError / TypeError naming the offending argument.
        """
        x = self._check_input(x)
        self.check_params(params, x.shape[-1])
        noise = self._resolve_noise(x, rng, noise, mode, self.MODES)
        log_alpha = self.log_alpha(params)
        theta = params["kernel_theta"]
        if mode == "pruned":
            keep = (getval(log_alpha) <= self.threshold).astype(self.dtype)
            outputs = contract(x, theta * keep)
        else:
            outputs = contract(x, theta)
        if mode == "sample":
            std = sqrt0(contract(x * x, self._kernel_variance(params)))
            outputs = outputs + noise["kernel"] * std
        if self.use_bias:
            outputs = outputs + params["bias"]
        kl = np.sum(self._kl_terms(log_alpha))
        return self._activation_fn(outputs), kl


class DenseVariationalDropout(_DenseDropout):
    """Variational dropout with a learned alpha per weight (Kingma et al. 2015, arXiv 1506.02557,
    "variational dropout A"): q(w) = N(theta, alpha theta**2), alpha = exp(min(log_alpha, 0)).

    Params: "kernel_theta" (in, units), "kernel_log_alpha" (in, units), "bias" (units,) when
    ``use_bias``. Noise keys: "kernel" (..., units). Modes: "sample", "mean".

    Args:
      units: output size.
      activation: a name from ``lrtdense.activations`` or None.
      use_bias: add a deterministic bias.
      theta_initializer: default RandomNormal(0, 0.1).
      log_alpha_initializer: default Constant(-4.0) (alpha = 0.018: little noise at the start).
      bias_initializer: default Constant(0.0).
      dtype: "float32" or "float64".
    """

    _VARIANCE_NAME = "kernel_log_alpha"
    _VARIANCE_DEFAULT = Constant(-4.0)

    def __init__(self, units, activation=None, *, use_bias=True, theta_initializer=None,
                 log_alpha_initializer=None, bias_initializer=None, dtype="float32"):
        super().__init__(units, activation, use_bias=use_bias, theta_initializer=theta_initializer,
                         variance_initializer=log_alpha_initializer,
                         bias_initializer=bias_initializer, dtype=dtype)

    def log_alpha(self, params):
        """min(kernel_log_alpha, 0): alpha capped at 1, as in the paper."""
        return np.minimum(params["kernel_log_alpha"], 0.0)

    def _kernel_variance(self, params):
        theta = params["kernel_theta"]
        return np.exp(self.log_alpha(params)) * (theta * theta)

    def _kl_terms(self, log_alpha):
        return kl_kingma(log_alpha)


class DenseSparseVariationalDropout(_DenseDropout):
    """Sparse variational dropout (Molchanov et al. 2017, arXiv 1701.05369) with the additive
    reparameterization q(w) = N(theta, sigma2) and log alpha = clip(log sigma2 - log(theta**2 +
    1e-8), -8, 8). Weights with log alpha > ``threshold`` are dropped in ``mode="pruned"``.

    Params: "kernel_theta" (in, units), "kernel_log_sigma2" (in, units), "bias" (units,) when
    ``use_bias``. Noise keys: "kernel" (..., units). Modes: "sample", "mean", "pruned".

    Args:
      units: output size.
      activation: a name from ``lrtdense.activations`` or None.
      use_bias: add a deterministic bias.
      theta_initializer: default RandomNormal(0, 0.1).
      log_sigma2_initializer: default Constant(-10.0) (the paper's code).
      bias_initializer: default Constant(0.0).
      threshold: log alpha above which a weight is pruned; default 3 (the paper's).
      dtype: "float32" or "float64".
    """

    MODES = ("sample", "mean", "pruned")
    _VARIANCE_NAME = "kernel_log_sigma2"
    _VARIANCE_DEFAULT = Constant(-10.0)

    def __init__(self, units, activation=None, *, use_bias=True, theta_initializer=None,
                 log_sigma2_initializer=None, bias_initializer=None, threshold=3.0,
                 dtype="float32"):
        super().__init__(units, activation, use_bias=use_bias, theta_initializer=theta_initializer,
                         variance_initializer=log_sigma2_initializer,
                         bias_initializer=bias_initializer, dtype=dtype)
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                or not math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number (a log alpha), got {threshold!r}")
        self.threshold = float(threshold)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}

    def _key(self):
        return super()._key() + (self.threshold,)

    def log_alpha(self, params):
        """clip(log sigma2 - log(theta**2 + 1e-8), -8, 8), (in, units)."""
        theta = params["kernel_theta"]
        raw = params["kernel_log_sigma2"] - np.log(theta * theta + THETA2_EPS)
        return np.clip(raw, -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)

    def _kernel_variance(self, params):
        return np.exp(params["kernel_log_sigma2"])

    def _kl_terms(self, log_alpha):
        return kl_molchanov(log_alpha)

    def sparsity(self, params):
        """Fraction of kernel weights with log alpha > threshold (pruned in mode="pruned")."""
        self.check_params(params)
        return float(onp.mean(getval(self.log_alpha(params)) > self.threshold))


def network_sparsity(network, params):
    """{layer name: pruned fraction} for every layer of a Sequential that has ``sparsity``."""
    return {name: layer.sparsity(params[name])
            for name, layer in zip(network.names, network.layers) if hasattr(layer, "sparsity")}


def _initializer(value, default, what):
    if value is None:
        return default
    if isinstance(value, (RandomNormal, Constant)):
        return value
    if isinstance(value, dict):
        return initializer_from_config(value)
    raise TypeError(f"{what} must be a RandomNormal, a Constant or their config dict, got "
                    f"{value!r}")


for _cls in (DenseVariationalDropout, DenseSparseVariationalDropout):
    LAYERS[_cls.__name__] = _cls
