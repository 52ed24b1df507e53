"""Dense variational layers: TFP's DenseLocalReparameterization, DenseReparameterization and
DenseFlipout, as pure functions of a flat params dict.

The contract, shared by every layer in lrtdense:

* A layer object holds settings only (units, activation, posteriors, priors, dtype).
* ``init(rng, input_dim) -> params``: a dict of named arrays, TFP's variable names:

  ==========================================  ===============  ==============================
  key                                         shape            when
  ==========================================  ===============  ==============================
  ``kernel_posterior_loc``                    (in, units)      always
  ``kernel_posterior_untransformed_scale``    (in, units)      always
  ``bias_posterior_loc``                      (units,)         bias posterior not None
  ``bias_posterior_untransformed_scale``      (units,)         bias posterior Normal
  ==========================================  ===============  ==============================

  Draw order in ``init``: the rows of the table, top to bottom.
* ``forward(params, x, rng=None, *, noise=None, mode="sample") -> (outputs, kl)``: x has shape
  (..., in) with rank >= 2, outputs (..., units), kl a scalar (the sum of ``divergences``).
  ``mode="sample"`` draws the noise from ``rng`` (a ``numpy.random.Generator``) with
  ``sample_noise``, or takes it from ``noise``; ``mode="mean"`` uses the posterior means
  (TFP's ``tensor_fn=lambda d: d.mean()``) and draws nothing.
* ``sample_noise(rng, input_shape) -> noise``: every random array ``forward`` uses, drawn in the
  order of the class's ``noise_shapes`` (standard normals in the layer's dtype via
  ``standard_normal(rng, shape, dtype)``: NumPy's ziggurat in float64, Box-Muller in float32;
  signs as ``2 * rng.integers(0, 2, shape) - 1``).
  ``forward(params, x, rng=g)`` equals ``forward(params, x, noise=layer.sample_noise(g, x.shape))``
  bit for bit.

The math (x contracted on its last axis; scale = softplus(untransformed_scale) + eps):

* LocalReparameterization (Kingma et al. 2015, arXiv 1506.02557):
  m = x @ loc, s = sqrt((x**2) @ (scale**2)), kernel term = noise["kernel"] * s + m.
* Reparameterization: W = noise["kernel"] * scale + loc, kernel term = x @ W.
* Flipout (Wen et al. 2018, arXiv 1803.04386): kernel term = x @ loc +
  ((x * noise["sign_input"]) @ (noise["kernel"] * scale)) * noise["sign_output"].

Then the bias (Deterministic: + loc; Normal: + noise["bias"] * scale + loc, one draw shared by the
batch) and the activation. Gradients at s == 0 (all-zero input rows) follow the zero-variance
convention of ``lrtdense.primitives.sqrt0``: finite, where TFP's are NaN.
"""
import numpy as onp
import autograd.numpy as np
from autograd.tracer import getval

from lrtdense import activations as _activations
from lrtdense.distributions import (
    NormalPosterior, DeterministicPosterior, NormalPrior, posterior_from_config,
    prior_from_config, posterior_scale, kl_normal_normal, kl_deterministic_normal)
from lrtdense.primitives import sqrt0
from lrtdense.samplers import standard_normal, rademacher

__all__ = ["DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
           "forward", "serialize", "deserialize", "LAYERS", "standard_normal", "rademacher"]

MODES = ("sample", "mean")
_DTYPES = {"float32": onp.float32, "float64": onp.float64}


def _dtype_name(dtype):
    try:
        name = onp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name


def contract(x, w):
    """x @ w contracting the last axis of x: (..., in) x (in, out) -> (..., out)."""
    if len(x.shape) == 2:
        return np.dot(x, w)
    lead = x.shape[:-1]
    return np.reshape(np.dot(np.reshape(x, (-1, x.shape[-1])), w), lead + (w.shape[-1],))


class _DenseVariational:
    """Settings and the shared machinery of the three estimators (see the module docstring)."""

    def __init__(self, units, activation=None, *, kernel_posterior="normal",
                 kernel_prior="normal", bias_posterior="deterministic", bias_prior=None,
                 dtype="float32"):
        if isinstance(units, bool) or not isinstance(units, (int, onp.integer)) or units < 1:
            raise ValueError(f"units must be an integer >= 1, got {units!r}")
        self.units = int(units)
        self.activation = activation
        self._activation_fn = _activations.get(activation)
        self.kernel_posterior = posterior_from_config(kernel_posterior)
        if not isinstance(self.kernel_posterior, NormalPosterior):
            raise ValueError(f"{type(self).__name__} needs a Normal kernel posterior, got "
                             f"{kernel_posterior!r}")
        self.kernel_prior = prior_from_config(kernel_prior)
        self.bias_posterior = posterior_from_config(bias_posterior)
        self.bias_prior = prior_from_config(bias_prior)
        if self.bias_prior is not None and self.bias_posterior is None:
            raise ValueError("bias_prior was given but bias_posterior is None: there is no bias to "
                             "put a prior on (TFP silently drops this divergence)")
        self.dtype = _dtype_name(dtype)

    # ----------------------------------------------------------------------------- settings
    def weight_names(self):
        """Param names in TFP's ``layer.weights`` order."""
        names = ["kernel_posterior_loc", "kernel_posterior_untransformed_scale"]
        if self.bias_posterior is not None:
            names.append("bias_posterior_loc")
            if self.bias_posterior.is_normal:
                names.append("bias_posterior_untransformed_scale")
        return names

    def param_shapes(self, input_dim):
        """dict name -> shape for an input of last dimension ``input_dim``."""
        kernel = (int(input_dim), self.units)
        return {name: kernel if name.startswith("kernel") else (self.units,)
                for name in self.weight_names()}

    def count_params(self, input_dim):
        """Total number of scalars in the params for an input of last dimension ``input_dim``."""
        return sum(int(onp.prod(s)) for s in self.param_shapes(input_dim).values())

    def compute_output_shape(self, input_shape):
        """(..., in) -> (..., units). Raises ValueError if rank < 2 or the last dim is None."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"expected an input shape of rank >= 2 (batch, ..., in), got "
                             f"{input_shape}")
        if input_shape[-1] is None:
            raise ValueError(f"the last dimension of the input shape must be defined, got "
                             f"{input_shape}")
        return input_shape[:-1] + (self.units,)

    def get_config(self):
        """Plain JSON-serializable settings; ``type(self).from_config(cfg)`` rebuilds the layer.

        Raises:
          ValueError: the activation is a custom callable (configs never hold code).
        """
        name = _activations.config_name(self.activation)
        return {
            "units": self.units,
            "activation": name,
            "dtype": self.dtype,
            "kernel_posterior": self.kernel_posterior.to_config(),
            "kernel_prior": None if self.kernel_prior is None else self.kernel_prior.to_config(),
            "bias_posterior": None if self.bias_posterior is None else self.bias_posterior.to_config(),
            "bias_prior": None if self.bias_prior is None else self.bias_prior.to_config(),
        }

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        return cls(**config)

    def _key(self):
        return (type(self), self.units, self.dtype, self.kernel_posterior, self.kernel_prior,
                self.bias_posterior, self.bias_prior,
                _activations.name_of(self.activation) or self.activation)

    def __eq__(self, other):
        return isinstance(other, _DenseVariational) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        act = _activations.name_of(self.activation) or repr(self.activation)
        return (f"{type(self).__name__}(units={self.units}, activation={act!r}, "
                f"dtype={self.dtype!r}, kernel_prior={self.kernel_prior}, "
                f"bias_posterior={self.bias_posterior}, bias_prior={self.bias_prior})")

    # --------------------------------------------------------------------------- parameters
    def init(self, rng, input_dim):
        """Draws fresh params from ``rng`` in ``weight_names()`` order.

        Args:
          rng: numpy.random.Generator.
          input_dim: size of the input's last axis.
        Returns:
          dict name -> array of the layer's dtype (shapes in the module docstring).
        """
        _check_rng(rng)
        if isinstance(input_dim, bool) or not isinstance(input_dim, (int, onp.integer)) or input_dim < 1:
            raise ValueError(f"input_dim must be an integer >= 1, got {input_dim!r}")
        dtype = _DTYPES[self.dtype]
        inits = self._initializers()
        return {name: onp.asarray(inits[name](rng, shape, dtype), dtype=dtype)
                for name, shape in self.param_shapes(input_dim).items()}

    def _initializers(self):
        """dict param name -> initializer, in ``weight_names()`` order."""
        inits = {"kernel_posterior_loc": self.kernel_posterior.loc_initializer,
                 "kernel_posterior_untransformed_scale":
                     self.kernel_posterior.untransformed_scale_initializer}
        if self.bias_posterior is not None:
            inits["bias_posterior_loc"] = self.bias_posterior.loc_initializer
            if self.bias_posterior.is_normal:
                inits["bias_posterior_untransformed_scale"] = (
                    self.bias_posterior.untransformed_scale_initializer)
        return inits

    def get_weights(self, params):
        """The params as a list in TFP's ``layer.weights`` order."""
        self.check_params(params)
        return [params[name] for name in self.weight_names()]

    def set_weights(self, weights):
        """Builds params from a list in TFP's ``layer.weights`` order (e.g. TFP's get_weights()).

        Floating arrays are cast to the layer's dtype, as Keras does.
        Raises:
          ValueError: wrong number of arrays or inconsistent shapes.
        """
        names = self.weight_names()
        if not isinstance(weights, (list, tuple)) or len(weights) != len(names):
            got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
            raise ValueError(f"expected a list of {len(names)} arrays {names}, got {got}")
        arrays = [onp.asarray(w) for w in weights]
        for name, a in zip(names, arrays):
            if a.dtype.kind != "f":
                raise TypeError(f"{name} must be a floating array, got dtype {a.dtype}")
        params = {n: a.astype(self.dtype) for n, a in zip(names, arrays)}
        self.check_params(params)
        return params

    def check_params(self, params, input_dim=None):
        """Raises a clear error unless ``params`` has exactly this layer's keys, shapes and dtype.

        Returns the input dimension the params imply.
        """
        if not isinstance(getval(params), dict):
            raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
        names = self.weight_names()
        missing = [n for n in names if n not in params]
        extra = sorted(set(params) - set(names))
        if missing or extra:
            raise ValueError(f"params do not match {type(self).__name__}({self._settings_text()}): "
                             f"missing {missing}, unexpected {extra}; expected exactly {names}")
        kernel = names[0]
        kernel_shape = tuple(getattr(params[kernel], "shape", ()))
        if len(kernel_shape) != 2 or kernel_shape[1] != self.units:
            raise ValueError(f"expected {kernel}.shape == (in, {self.units}), got {kernel_shape}")
        if input_dim is not None and kernel_shape[0] != input_dim:
            raise ValueError(f"expected x.shape[-1] == {kernel_shape[0]} to match "
                             f"{kernel}.shape[0], got {input_dim}")
        for name, shape in self.param_shapes(kernel_shape[0]).items():
            value = params[name]
            got_shape = tuple(getattr(value, "shape", ()))
            if got_shape != shape:
                raise ValueError(f"expected {name}.shape == {shape}, got {got_shape}")
            dtype = getattr(value, "dtype", None)
            if dtype != self.dtype:
                raise TypeError(f"expected {name}.dtype == {self.dtype} (the layer's dtype), got "
                                f"{dtype}")
        return kernel_shape[0]

    def _settings_text(self):
        return f"bias_posterior={_kind(self.bias_posterior)}"

    # -------------------------------------------------------------------------------- noise
    def noise_shapes(self, input_shape):
        """dict key -> shape of every random array ``forward`` uses, in draw order."""
        raise NotImplementedError

    def _noise_kinds(self):
        return {}

    def _bias_noise_shape(self):
        if self.bias_posterior is not None and self.bias_posterior.is_normal:
            return {"bias": (self.units,)}
        return {}

    def sample_noise(self, rng, input_shape, normal=None):
        """Draws every random array of one ``forward`` call, in ``noise_shapes`` order.

        Args:
          rng: numpy.random.Generator.
          input_shape: shape of x, (..., in).
          normal: ``(rng, shape, dtype) -> array`` for the normal noise; default
            ``standard_normal`` (what ``forward(..., rng=...)`` uses).
        Returns:
          dict key -> array of the layer's dtype.
        """
        _check_rng(rng)
        normal = normal or standard_normal
        dtype = _DTYPES[self.dtype]
        kinds = self._noise_kinds()
        noise = {}
        for key, shape in self.noise_shapes(tuple(input_shape)).items():
            if kinds.get(key) == "sign":
                noise[key] = rademacher(rng, shape, dtype)
            else:
                noise[key] = normal(rng, shape, dtype)
        return noise

    def check_noise(self, noise, input_shape):
        """Validates a noise dict against ``noise_shapes(input_shape)`` and casts it to the dtype."""
        if not isinstance(noise, dict):
            raise TypeError(f"noise must be a dict of arrays, got {type(noise).__name__}")
        shapes = self.noise_shapes(tuple(input_shape))
        missing = [k for k in shapes if k not in noise]
        extra = sorted(set(noise) - set(shapes))
        if missing or extra:
            raise ValueError(f"noise keys do not match {type(self).__name__}: missing {missing}, "
                             f"unexpected {extra}; expected exactly {list(shapes)}")
        kinds = self._noise_kinds()
        out = {}
        for key, shape in shapes.items():
            value = onp.asarray(noise[key])
            if value.shape != shape:
                raise ValueError(f"expected noise[{key!r}].shape == {shape} for an input of shape "
                                 f"{tuple(input_shape)}, got {value.shape}")
            if value.dtype.kind not in "fi":
                raise TypeError(f"noise[{key!r}] must be numeric, got dtype {value.dtype}")
            value = value.astype(self.dtype, copy=False)
            if kinds.get(key) == "sign" and not onp.all(onp.abs(value) == 1):
                raise ValueError(f"noise[{key!r}] must hold only +1 and -1")
            out[key] = value
        return out

    # ------------------------------------------------------------------------------ compute
    def divergences(self, params):
        """TFP's ``losses``: dict "kernel" / "bias" -> scalar KL(q || p), for the terms with a prior."""
        self.check_params(params)
        return self._divergences(params, posterior_scale(params["kernel_posterior_untransformed_scale"]))

    def _divergences(self, params, kernel_scale):
        out = {}
        if self.kernel_prior is not None:
            out["kernel"] = kl_normal_normal(params["kernel_posterior_loc"], kernel_scale,
                                             self.kernel_prior)
        if self.bias_prior is not None:
            loc = params["bias_posterior_loc"]
            if self.bias_posterior.is_normal:
                scale = posterior_scale(params["bias_posterior_untransformed_scale"])
                out["bias"] = kl_normal_normal(loc, scale, self.bias_prior)
            else:
                out["bias"] = kl_deterministic_normal(loc, self.bias_prior)
        return out

    def kl(self, params):
        """The sum of ``divergences`` (0 of the layer's dtype when there is no prior)."""
        self.check_params(params)
        scale = posterior_scale(params["kernel_posterior_untransformed_scale"])
        return self._kl_sum(self._divergences(params, scale))

    def _kl_sum(self, terms):
        total = onp.zeros((), dtype=self.dtype)
        for value in terms.values():
            total = total + value
        return total

    def forward(self, params, x, rng=None, *, noise=None, mode="sample"):
        """Stochastic (``mode="sample"``) or mean (``mode="mean"``) forward pass.

        Args:
          params: dict of arrays (see ``init``).
          x: float array (..., in), rank >= 2; cast to the layer's dtype if floating.
          rng: numpy.random.Generator for the noise (sample mode, unless ``noise`` is given).
          noise: dict of explicit noise arrays (see ``noise_shapes``); makes forward deterministic.
          mode: "sample" or "mean". rng and noise are ignored in mean mode.
        Returns:
          (outputs of shape (..., units), kl scalar), both of the layer's dtype.
        Raises:
          ValueError / TypeError naming the offending argument.

        NaN or inf in x or params propagate to the outputs (they are not checked here);
        ``lrtdense.training.fit`` refuses a non-finite loss.
        """
        x = self._check_input(x)
        self.check_params(params, x.shape[-1])
        noise = self._resolve_noise(x, rng, noise, mode, MODES)
        scale = posterior_scale(params["kernel_posterior_untransformed_scale"])
        outputs = self._kernel_term(x, params["kernel_posterior_loc"], scale, noise, mode)
        outputs = self._add_bias(outputs, params, noise, mode)
        outputs = self._activation_fn(outputs)
        return outputs, self._kl_sum(self._divergences(params, scale))

    def _resolve_noise(self, x, rng, noise, mode, modes):
        """The noise dict of one forward call: checked ``noise``, or drawn from ``rng`` (sample
        mode); None in the other modes. Raises ValueError for an unknown mode or a missing or
        doubled source of randomness."""
        if mode not in modes:
            raise ValueError(f"mode must be one of {modes}, got {mode!r}")
        if mode != "sample":
            return None
        if noise is not None:
            if rng is not None:
                raise ValueError("pass either rng or noise to forward, not both")
            return self.check_noise(noise, x.shape)
        if rng is None:
            raise ValueError("mode='sample' needs rng=numpy.random.Generator(...) or an "
                             "explicit noise dict; use mode='mean' for the posterior mean")
        return self.sample_noise(rng, x.shape)

    def _add_bias(self, outputs, params, noise, mode):
        if self.bias_posterior is None:
            return outputs
        loc = params["bias_posterior_loc"]
        if self.bias_posterior.is_normal and mode == "sample":
            scale = posterior_scale(params["bias_posterior_untransformed_scale"])
            return outputs + (noise["bias"] * scale + loc)
        return outputs + loc

    def _kernel_term(self, x, loc, scale, noise, mode):
        raise NotImplementedError

    def _check_input(self, x):
        raw = getval(x)
        if not hasattr(raw, "dtype"):
            raw = x = onp.asarray(x)
        if raw.dtype.kind != "f":
            raise TypeError(f"x must be a floating array (it is cast to the layer's {self.dtype}), "
                            f"got dtype {raw.dtype}")
        if raw.ndim < 2:
            raise ValueError(f"expected x of rank >= 2 with shape (batch, ..., in), got shape "
                             f"{raw.shape}; reshape a single example to (1, in)")
        if raw.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x


class DenseLocalReparameterization(_DenseVariational):
    """Dense layer with the local reparameterization estimator (TFP's
    ``tfp.layers.DenseLocalReparameterization``; Kingma et al. 2015, arXiv 1506.02557).

    Samples the pre-activations instead of the weights: with m = x @ loc and
    s = sqrt((x**2) @ (scale**2)), the kernel term is m + s * eps, eps ~ N(0, 1) of shape (..., units).

    Noise keys: "kernel" (..., units); "bias" (units,) when the bias posterior is Normal.
    """

    def noise_shapes(self, input_shape):
        return {"kernel": self.compute_output_shape(input_shape), **self._bias_noise_shape()}

    def _kernel_term(self, x, loc, scale, noise, mode):
        mean = contract(x, loc)
        if mode == "mean":
            return mean
        std = sqrt0(contract(x * x, scale * scale))
        return noise["kernel"] * std + mean


class DenseReparameterization(_DenseVariational):
    """Dense layer with one kernel sample per call (TFP's ``tfp.layers.DenseReparameterization``).

    W = eps * scale + loc with eps ~ N(0, 1) of shape (in, units), shared by the whole batch.

    Noise keys: "kernel" (in, units); "bias" (units,) when the bias posterior is Normal.
    """

    def noise_shapes(self, input_shape):
        self.compute_output_shape(input_shape)
        return {"kernel": (input_shape[-1], self.units), **self._bias_noise_shape()}

    def _kernel_term(self, x, loc, scale, noise, mode):
        if mode == "mean":
            return contract(x, loc)
        return contract(x, noise["kernel"] * scale + loc)


class DenseFlipout(_DenseVariational):
    """Dense layer with the Flipout estimator (TFP's ``tfp.layers.DenseFlipout``; Wen et al. 2018,
    arXiv 1803.04386).

    One perturbation dW = eps * scale per call, decorrelated across examples by random signs:
    x @ loc + ((x * sign_input) @ dW) * sign_output.

    Noise keys, in draw order: "kernel" (in, units), "sign_input" (x's shape), "sign_output"
    (..., units), then "bias" (units,) when the bias posterior is Normal.
    """

    def noise_shapes(self, input_shape):
        out_shape = self.compute_output_shape(input_shape)
        return {"kernel": (input_shape[-1], self.units), "sign_input": tuple(input_shape),
                "sign_output": out_shape, **self._bias_noise_shape()}

    def _noise_kinds(self):
        return {"sign_input": "sign", "sign_output": "sign"}

    def _kernel_term(self, x, loc, scale, noise, mode):
        mean = contract(x, loc)
        if mode == "mean":
            return mean
        perturbed = contract(x * noise["sign_input"], noise["kernel"] * scale) * noise["sign_output"]
        return mean + perturbed


LAYERS = {cls.__name__: cls for cls in
          (DenseLocalReparameterization, DenseReparameterization, DenseFlipout)}


def serialize(layer):
    """{"class_name": ..., "config": layer.get_config()} (plain JSON)."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(data):
    """Rebuilds a layer from ``serialize``'s output. Raises ValueError for unknown classes."""
    if not isinstance(data, dict) or set(data) != {"class_name", "config"}:
        raise ValueError(f"expected a dict with keys 'class_name' and 'config', got {data!r}")
    try:
        cls = LAYERS[data["class_name"]]
    except (KeyError, TypeError):
        raise ValueError(f"unknown layer class {data['class_name']!r}; expected one of "
                         f"{sorted(LAYERS)}") from None
    return cls.from_config(data["config"])


def forward(params, x, rng=None, *, noise=None, mode="sample"):
    """Pure forward of the default DenseLocalReparameterization implied by ``params``.

    Units and dtype are read from ``kernel_posterior_loc``; the bias posterior is Normal when
    ``bias_posterior_untransformed_scale`` is present, Deterministic when only
    ``bias_posterior_loc`` is, and None otherwise. Prior: N(0, 1) on the kernel, none on the bias.
    Returns (outputs, kl).
    """
    if not isinstance(getval(params), dict) or "kernel_posterior_loc" not in params:
        raise ValueError("params must be a dict with at least 'kernel_posterior_loc'")
    loc = params["kernel_posterior_loc"]
    if len(loc.shape) != 2:
        raise ValueError(f"expected kernel_posterior_loc of shape (in, units), got {loc.shape}")
    if "bias_posterior_untransformed_scale" in params:
        bias = NormalPosterior()
    elif "bias_posterior_loc" in params:
        bias = DeterministicPosterior()
    else:
        bias = None
    layer = DenseLocalReparameterization(loc.shape[1], bias_posterior=bias,
                                         dtype=getval(loc).dtype)
    return layer.forward(params, x, rng, noise=noise, mode=mode)


def _kind(posterior):
    return None if posterior is None else posterior.to_config()["type"]


def _check_rng(rng):
    if not isinstance(rng, onp.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
                        f"got {type(rng).__name__}")
