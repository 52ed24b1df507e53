"""What every layer of ``lrtdense.torch`` shares: settings, parameters, noise, modes, divergence.

The contract (the PyTorch form of ``lrtdense.base``'s):

* A layer is a ``torch.nn.Module`` built as ``Layer(in_features, units, activation, **settings,
  dtype=None, device=None)``. Its settings are the NumPy layer's (``layer.settings``, a frozen
  record of ``lrtdense.layers`` / ``dropout`` / ``dense_variational``, checked there, so a bad
  setting is the same one-line error in both packages and a config is the same JSON).
* Its parameters are ``nn.Parameter``s registered in ``__init__`` under TFP's names, shapes and
  order (``state_dict`` keys such as ``kernel_posterior_loc``); ``reset_parameters`` draws them
  from the settings' initializers (from ``layer.generator`` when set).
* ``layer(x, noise=None, mode=None) -> outputs``: x (..., in), rank >= 2, cast to the
  parameters' dtype; outputs (..., units). ``mode`` (default ``layer.mode``, "sample"): "sample"
  draws the noise of the call from ``layer.generator`` (torch's default generator when None) or
  takes the explicit ``noise`` dict (the NumPy layers' keys and shapes, ``noise_shapes``), "mean"
  uses the posterior means ("pruned" too for sparse variational dropout) and draws nothing.
* The call's divergence stays on the layer, as TFP keeps ``layer.losses``: ``layer.divergence``
  (a scalar tensor in the graph, 0 when the layer has no prior) and ``layer.divergence_terms``
  ({"kernel": ..., "bias": ...}, each weighted); ``lrtdense.torch.divergence(model)`` sums a
  model's. A Monte Carlo term uses the call's noise; in mean mode the posterior mean.
* Nothing assumes a device or dtype: every constant takes the tensors' dtype and device.
"""
import torch

from lrtdense.torch import functional as F
from lrtdense.torch.priors import initialize_

__all__ = ["BayesianModule", "torch_dtype"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NAMES = {v: k for k, v in _DTYPES.items()}


def torch_dtype(dtype):
    """torch.float32 / torch.float64 for a torch dtype or its name; None: torch's default.

    Raises:
      ValueError: any other dtype.
    """
    if dtype is None:
        dtype = torch.get_default_dtype()
    dtype = _DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if dtype not in _NAMES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (or their names, or None "
                         f"for torch's default), got {dtype!r}")
    return dtype


class BayesianModule(torch.nn.Module):
    """The shared machinery (see the module docstring); a subclass sets ``settings_class`` and
    defines ``_forward(x, noise, mode)``."""

    settings_class = None        # the NumPy layer class whose frozen settings this layer holds

    def __init__(self, in_features, units, activation=None, *, dtype=None, device=None,
                 generator=None, mode="sample", **settings):
        super().__init__()
        dtype = torch_dtype(dtype)
        self.settings = self.settings_class(units, activation, dtype=_NAMES[dtype], **settings)
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
        self.in_features = in_features
        self.generator = generator
        self.mode = mode
        for name, shape in self.settings.param_shapes(in_features).items():
            self.register_parameter(name, torch.nn.Parameter(
                torch.empty(shape, device=device, dtype=dtype)))
        self.divergence = None
        self.divergence_terms = {}
        self.reset_parameters()

    def __getstate__(self):
        """The module's state without the last call's divergence (a tensor in that call's graph,
        which ``copy.deepcopy`` refuses), so that deepcopy and pickle work after a call."""
        state = super().__getstate__()
        return {**state, "divergence": None, "divergence_terms": {}}

    # ----------------------------------------------------------------------------- settings
    @property
    def units(self):
        """The output size (the settings' ``units``)."""
        return self.settings.units

    @property
    def mode(self):
        """"sample", "mean" (or "pruned", sparse variational dropout): the default of a call."""
        return self._mode

    @mode.setter
    def mode(self, mode):
        self._mode = self._check_mode(mode)

    def _check_mode(self, mode):
        if mode not in self.settings.MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of "
                             f"{list(self.settings.MODES)}, got {mode!r}")
        return mode

    def get_config(self):
        """The NumPy layer's JSON config plus ``in_features``, with the parameters' dtype now
        (after a ``.double()``, say); ``from_config`` rebuilds it."""
        dtype = _NAMES.get(next(iter(self.params().values())).dtype, self.settings.dtype)
        return {"in_features": self.in_features, **self.settings.get_config(), "dtype": dtype}

    @classmethod
    def from_config(cls, config, in_features=None):
        """A layer from ``get_config()`` or a NumPy layer's / reference case's config (then
        ``in_features`` is needed). Raises ValueError / TypeError for a bad config."""
        config = dict(config)
        in_features = config.pop("in_features", in_features)
        if in_features is None:
            raise ValueError(f"{cls.__name__}.from_config: in_features is neither in the config "
                             f"nor given")
        return cls(in_features, **config)

    def extra_repr(self):
        """in_features, units, activation and every setting that differs from its default."""
        fields = [f"in_features={self.in_features}", f"units={self.units}",
                  f"activation={self.settings.activation!r}"]
        defaults = self.settings_class(self.units)
        for name, value in vars(self.settings).items():
            if name not in ("units", "activation", "dtype") and value != getattr(defaults, name):
                fields.append(f"{name}={value!r}")
        if self.mode != "sample":
            fields.append(f"mode={self.mode!r}")
        return ", ".join(fields)

    # --------------------------------------------------------------------------- parameters
    def reset_parameters(self):
        """Draws every parameter from its initializer (TFP's order; ``self.generator`` if set)."""
        initializers = self.settings.initializers()
        for name in self.settings.weight_names():
            initialize_(initializers[name], getattr(self, name), self.generator)

    def params(self):
        """dict TFP name -> parameter, in TFP's order (what the prior functions read)."""
        return {name: getattr(self, name) for name in self.settings.weight_names()}

    # -------------------------------------------------------------------------------- noise
    def noise_shapes(self, input_shape):
        """dict key -> shape of every random array of one sample-mode call on ``input_shape``
        (the NumPy layer's keys, in its draw order)."""
        return self.settings.noise_shapes(tuple(input_shape))

    def sample_noise(self, input_shape, generator=None, sample_shape=()):
        """Every random array of one call (``sample_shape`` + each shape): standard normals and
        +-1 signs in the parameters' dtype and on their device, drawn from ``generator`` (else
        ``self.generator``, else torch's default) on that generator's device."""
        generator = generator if generator is not None else self.generator
        reference = next(iter(self.params().values()))
        device = reference.device if generator is None else generator.device
        kinds = self.settings.noise_kinds()
        noise = {}
        for key, shape in self.noise_shapes(input_shape).items():
            shape = tuple(sample_shape) + tuple(shape)
            if kinds.get(key) == "sign":
                bits = torch.randint(0, 2, shape, generator=generator, device=device)
                draw = bits.to(reference.dtype) * 2 - 1
            else:
                draw = torch.randn(shape, generator=generator, device=device,
                                   dtype=reference.dtype)
            noise[key] = draw.to(reference.device)
        return noise

    def _check_noise(self, noise, x):
        """``noise`` as tensors of x's dtype and device. Raises ValueError for other keys or
        shapes than ``noise_shapes(x.shape)``."""
        shapes = self.noise_shapes(x.shape)
        if not isinstance(noise, dict) or set(noise) != set(shapes):
            got = sorted(noise) if isinstance(noise, dict) else type(noise).__name__
            raise ValueError(f"{type(self).__name__}: noise must be a dict with the keys "
                             f"{list(shapes)} for x of shape {tuple(x.shape)}, got {got}")
        out = {}
        for key, shape in shapes.items():
            value = torch.as_tensor(noise[key], dtype=x.dtype, device=x.device)
            if tuple(value.shape) != tuple(shape):
                raise ValueError(f"{type(self).__name__}: expected noise[{key!r}].shape == "
                                 f"{tuple(shape)} for x of shape {tuple(x.shape)}, got "
                                 f"{tuple(value.shape)}")
            out[key] = value
        return out

    # ------------------------------------------------------------------------------ compute
    def _check_input(self, x):
        reference = next(iter(self.params().values()))
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: x must be a floating torch tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected x of shape (batch, ..., "
                             f"{self.in_features}) (rank >= 2, in_features last), got "
                             f"{tuple(x.shape)}")
        return x.to(reference.dtype)

    def forward(self, x, noise=None, mode=None):
        """outputs = activation(pre-activations) of shape (..., units); keeps the call's
        divergence in ``self.divergence`` / ``self.divergence_terms``.

        Args:
          x: tensor (..., in_features), rank >= 2.
          noise: None (drawn from ``self.generator``) or a dict key -> array of
            ``noise_shapes(x.shape)``; used in sample mode only.
          mode: None (``self.mode``), "sample", "mean" (or "pruned" where the layer has it).
        Raises:
          TypeError / ValueError: a bad x, noise or mode (one line naming it).
        """
        mode = self.mode if mode is None else self._check_mode(mode)
        x = self._check_input(x)
        if mode != "sample":
            noise = None
        elif noise is None:
            noise = self.sample_noise(x.shape)
        else:
            noise = self._check_noise(noise, x)
        z, self.divergence_terms = self._forward(x, noise, mode)
        self.divergence = sum(self.divergence_terms.values(), z.new_zeros(()))
        return F.activation(self.settings.activation, z)

    def _forward(self, x, noise, mode):
        """(pre-activations (..., units), dict term -> weighted divergence) of ``mode``; noise
        None outside "sample" (a Monte Carlo divergence is then at the posterior mean)."""
        raise NotImplementedError
