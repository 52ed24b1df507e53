"""TFP's ``tfp.layers.DenseVariational`` (``layers/dense_variational_v2.py``) with the posterior
and priors of TFP's regression tutorial.

The layer's weights are one flat vector w of n = in * units (+ units with a bias) entries with
a mean-field Normal posterior, sampled once per call (docs/tfp_semantics.md, section 3):

* posterior (the tutorial's ``posterior_mean_field``): params ``posterior_constant`` (2n,) = t;
  loc = t[:n], scale = 1e-5 + softplus(c + t[n:]) with c = log(expm1(1)) (scale 1 at t = 0);
* prior: ``"trainable"`` (``prior_trainable``: N(t', 1), params ``prior_constant`` (n,) = t'),
  or ``"fixed"`` (N(0, 1), no params); TFP initializes both constants to zeros;
* w = eps * scale + loc, eps ~ N(0, 1) of shape (n,) (noise key "posterior"); the kernel is
  w[:in * units] in row-major order, kernel[i, j] = w[i * units + j], the bias the last units
  entries; outputs = activation(x @ kernel + bias);
* divergence: ``kl_use_exact=True``: the closed-form KL(q || p) summed over w;
  ``kl_use_exact=False`` (TFP's default): log q(w) - log p(w) at the forward's own w; times
  ``kl_weight`` when given, applied as float32(kl_weight), the factor TFP 0.25 uses for a
  Python float even in float64 (``tf.cast`` of a Python float goes through a float32 tensor);
* mode "mean": w = loc (the MC divergence at the posterior mean).

The params' names: TFP's ``posterior/constant`` and ``prior/constant`` with "_" for "/" (a "/"
separates the levels of a params tree); ``get_weights`` / ``set_weights`` lists are TFP's order.
TFP also draws an unused sample of the prior on every call; lrtdense does not.
"""
import dataclasses
import math

import numpy as np
import autograd.numpy as anp
from autograd.tracer import getval

from lrtdense import estimators, kernels
from lrtdense.base import Layer, Moments, activation_field, sum_terms
from lrtdense.checks import check_bool, check_float
from lrtdense.distributions import Constant

__all__ = ["DenseVariational", "POSTERIOR_SHIFT", "POSTERIOR_OFFSET"]

POSTERIOR_SHIFT = math.log(math.expm1(1.0))     # softplus^-1(1): the tutorial's c
POSTERIOR_OFFSET = 1e-5


@dataclasses.dataclass(frozen=True)
class DenseVariational(Layer):
    """A dense layer whose flat weight vector has a mean-field Normal posterior (TFP's
    ``DenseVariational`` with the tutorial's ``posterior_mean_field``).

    Args:
      units: output size.
      activation: a name of ``lrtdense.activations``, None or a callable.
      prior: "trainable" (the tutorial's ``prior_trainable``) or "fixed" (N(0, 1)).
      kl_weight: None or a number >= 0 multiplying the divergence (the tutorial: 1 / N).
      kl_use_exact: the closed-form KL (True) or the single-sample estimate (False, TFP's default).
      use_bias: the last ``units`` weights are a bias.
      dtype: "float32" (the default; also for None) or "float64".

    Params: "posterior_constant" (2n,), "prior_constant" (n,) with a trainable prior.
    Noise keys: "posterior" (n,).
    """
    units: int
    activation: object = activation_field()
    _: dataclasses.KW_ONLY
    prior: str = "trainable"
    kl_weight: object = None
    kl_use_exact: bool = False
    use_bias: bool = True
    dtype: object = "float32"

    def _validate(self):
        if self.prior not in ("trainable", "fixed"):
            raise ValueError(f"prior must be 'trainable' or 'fixed', got {self.prior!r}")
        for name in ("kl_use_exact", "use_bias"):
            self._set(name, check_bool(getattr(self, name), name))
        if self.kl_weight is not None:
            self._set("kl_weight", check_float(self.kl_weight, "kl_weight", low=0,
                                               expected="None or a finite number >= 0"))

    def _weight_settings(self):
        return f"prior={self.prior!r}"

    def weight_names(self):
        """TFP's ``layer.weights`` order: the posterior's constant, then the prior's."""
        return ["posterior_constant"] + (["prior_constant"] if self.prior == "trainable" else [])

    def size(self, input_dim):
        """n, the number of weights: in * units (+ units with a bias)."""
        return int(input_dim) * self.units + (self.units if self.use_bias else 0)

    def param_shapes(self, input_dim):
        n = self.size(input_dim)
        shapes = {"posterior_constant": (2 * n,)}
        if self.prior == "trainable":
            shapes["prior_constant"] = (n,)
        return shapes

    def initializers(self):
        return {"posterior_constant": Constant(0.0), "prior_constant": Constant(0.0)}

    def check_params(self, params, input_dim=None):
        """Raises a clear error unless ``params`` fit this layer; returns the input dimension."""
        if not isinstance(getval(params), dict):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        post = params["posterior_constant"] if "posterior_constant" in params else None
        implied = None
        if np.ndim(post) == 1 and np.shape(post)[0] % 2 == 0:
            rows = np.shape(post)[0] // 2 - (self.units if self.use_bias else 0)
            if rows >= self.units and rows % self.units == 0:
                implied = rows // self.units
        if implied is None:
            raise ValueError(f"expected posterior_constant of shape (2 n,) with n = in * "
                             f"{self.units}{' + ' + str(self.units) if self.use_bias else ''}, "
                             f"got {np.shape(post)}")
        if input_dim is not None and input_dim != implied:
            raise ValueError(f"expected x.shape[-1] == {implied} to match "
                             f"posterior_constant.shape[0], got {input_dim}")
        input_dim = implied
        want = self.param_shapes(input_dim)
        names = list(want)
        if set(params) != set(names):
            got = sorted(params)
            raise ValueError(f"params do not match DenseVariational({self._weight_settings()}): "
                             f"expected exactly {names}, got {got}")
        for name, shape in want.items():
            value = params[name]
            if tuple(np.shape(value)) != shape:
                raise ValueError(f"expected {name}.shape == {shape} for x.shape[-1] == "
                                 f"{input_dim}, got {tuple(np.shape(value))}")
            if getattr(value, "dtype", None) != self.dtype:
                raise TypeError(f"expected {name}.dtype == {self.dtype} (the layer's dtype), "
                                f"got {getattr(value, 'dtype', None)}")
        return input_dim

    def noise_shapes(self, input_shape):
        """{"posterior": (n,)}: one draw of the weights per call."""
        self.compute_output_shape(input_shape)
        return {"posterior": (self.size(input_shape[-1]),)}

    def flat_moments(self, params, workspace=None):
        """(loc, scale) of the posterior of the flat weight vector, both (n,)."""
        t = params["posterior_constant"]
        n = t.shape[0] // 2
        scale = kernels.softplus(t[n:] + POSTERIOR_SHIFT) + POSTERIOR_OFFSET
        return t[:n], scale

    estimator = estimators.SINGLE        # one draw of all the weights per call
    kernel_mean = ("posterior_constant", "kernel")     # its first in * units entries

    @property
    def random_bias(self):
        return self.use_bias

    def split(self, flat, input_dim):
        """(kernel (in, units), bias (units,) or None) of a flat weight vector (n,): the kernel
        the first in * units entries, row-major, the bias the last units (TFP's split)."""
        k = input_dim * self.units
        kernel = anp.reshape(flat[:k], (input_dim, self.units))
        return kernel, (flat[k:] if self.use_bias else None)

    def weight_moments(self, params, workspace=None):
        """(loc, scale) of the kernel's posterior, both (in, units), as every layer's (the flat
        vector's: ``flat_moments``)."""
        moments = self.posterior_moments(params, self.check_params(params), workspace)
        return moments.kernel_loc, moments.kernel_scale

    def posterior_moments(self, params, input_dim, workspace=None):
        loc, scale = self.flat_moments(params, workspace)
        (kernel_loc, bias_loc), (kernel_scale, bias_scale) = (self.split(loc, input_dim),
                                                              self.split(scale, input_dim))
        return Moments(kernel_loc, kernel_scale, bias_loc, bias_scale)

    def _prior_loc(self, params):
        return params["prior_constant"] if self.prior == "trainable" else 0.0

    def _forward(self, params, x, noise, mode, workspace):
        loc, scale = self.flat_moments(params, workspace)
        eps = noise["posterior"] if mode == "sample" else np.zeros(loc.shape, self.dtype)
        w = kernels.normal_sample(loc, scale, eps) if mode == "sample" else loc
        kernel, bias = self.split(w, x.shape[-1])
        outputs = kernels.dense(x, kernel, workspace=workspace)
        if bias is not None:
            outputs = kernels.add_bias(outputs, bias, workspace=workspace)
        terms = self._terms(params, loc, scale, w, eps)
        return outputs, sum_terms(terms, self.dtype)

    @property
    def random_divergence(self):
        """Whether a sample-mode call's divergence is random (the Monte Carlo estimate)."""
        return not self.kl_use_exact

    def shares_draw(self, name):
        """Whether the divergence is evaluated at the forward's own draw of the kernel ("kernel")
        and of the bias ("bias"): always for the Monte Carlo estimate (one flat vector)."""
        return name in ("kernel", "bias") and not self.kl_use_exact

    def expected_divergences(self, params):
        """{"kernel": the expectation over the noise of the sample-mode divergence}: the
        Monte Carlo estimate's is the closed-form KL (E_q[log q - log p] = KL(q || p)), weighted
        alike. Differentiable in params (autograd)."""
        self.check_params(params)
        loc, scale = self.flat_moments(params)
        return self._terms(params, loc, scale, loc, np.zeros(loc.shape, self.dtype), exact=True)

    def _terms(self, params, loc, scale, w, eps, exact=None):
        prior_loc = self._prior_loc(params)
        if self.kl_use_exact if exact is None else exact:
            value = kernels.kl_normal_normal(loc, scale, prior_loc, 1.0)
        else:
            value = (kernels.normal_log_prob_of_sample(scale, eps)
                     - kernels.normal_log_prob(w, prior_loc, 1.0))
        if self.kl_weight is not None:
            value = float(np.float32(self.kl_weight)) * value
        return {"kernel": value}

    def divergences(self, params, noise=None):
        """{"kernel": the (weighted) divergence}; the MC one at ``noise`` (or the mean)."""
        self.check_params(params)
        loc, scale = self.flat_moments(params)
        if noise is None:
            return self._terms(params, loc, scale, loc, np.zeros(loc.shape, self.dtype))
        eps = noise["posterior"]
        return self._terms(params, loc, scale, kernels.normal_sample(loc, scale, eps), eps)

    def _divergences(self, params, workspace):
        return self.divergences(params)
