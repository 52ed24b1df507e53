"""The contract every lrtdense layer follows, and the machinery that implements it once.

* A layer is a settings record (``lrtdense.records.Record``: a frozen dataclass of units,
  activation, priors, dtype, ...): its config (``get_config``, and the one way back,
  ``from_config``), repr, equality and hash follow from the declaration. It never holds
  parameters.
* ``init(rng, input_dim) -> params``: a flat dict of named arrays (``weight_names()`` order, the
  order they are drawn in).
* ``forward(params, x, rng=None, *, noise=None, mode="sample", workspace=None)
  -> (outputs, kl)``: x of shape (..., in), rank >= 2; outputs (..., units); kl the scalar sum of
  ``divergences(params)``. ``mode="sample"`` draws the noise from ``rng`` (a
  ``numpy.random.Generator``) with ``sample_noise``, or takes it from ``noise``; the other modes
  (``MODES``: "mean" for every layer) draw nothing. ``forward(params, x, rng=g)`` equals
  ``forward(params, x, noise=layer.sample_noise(g, x.shape))`` bit for bit.
* ``sample_noise(rng, input_shape)``: every random array of one forward call, drawn in the order
  of ``noise_shapes(input_shape)``: standard normals in the layer's dtype by
  ``lrtdense.samplers.standard_normal``, signs (``noise_kinds`` "sign") by ``rademacher``.
* ``workspace``: an optional ``lrtdense.workspace.Workspace`` for the arrays of the call (the
  training step's); results are then views of its buffers, the same bits as without it.

A subclass declares its settings as dataclass fields, checks them in ``_validate``, and defines
``weight_names``, ``param_shapes``, ``initializers``, ``noise_shapes`` and ``_forward`` (the
computation proper, on checked inputs) and ``_divergences``.
"""
import math
import typing

import numpy as np
from autograd.tracer import getval

from lrtdense import activations, estimators, kernels
from lrtdense.checks import check_int, check_rng
from lrtdense.layer_noise import DTYPES, LayerNoise
from lrtdense.records import Record, record_field

__all__ = ["Layer", "Moments", "dtype_name", "positive_int", "DTYPES"]

MAX_UNITS = 2 ** 31 - 1


def dtype_name(dtype):
    """'float32' or 'float64' for a dtype-like; None means the default, 'float32'.

    Raises:
      ValueError: any other dtype.
    """
    if dtype is None:
        return "float32"
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64' (or None for float32), got "
                         f"{dtype!r}")
    return name


def positive_int(value, what, maximum=MAX_UNITS):
    """``value`` as an int in [1, maximum]; a ValueError naming ``what`` otherwise."""
    return check_int(value, what, low=1, high=maximum,
                     expected=f"an integer >= 1 (and <= {maximum})")


class Moments(typing.NamedTuple):
    """A layer's posterior as its estimators read it: the kernel's mean and standard deviation,
    both (in, units), and the bias's ((units,) each; ``bias_scale`` None for a deterministic
    bias, both None without a bias)."""
    kernel_loc: object
    kernel_scale: object
    bias_loc: object = None
    bias_scale: object = None


def activation_field():
    """The ``activation`` setting of a layer: None (linear), a name of ``lrtdense.activations`` or
    a callable; its config holds the name (``activations.config_name``: a callable is refused)."""
    return record_field(default=None, to_json=activations.config_name)


class Layer(LayerNoise, Record):
    """The shared machinery of every layer; see the module docstring for the contract (the
    noise of a call: ``lrtdense.layer_noise.LayerNoise``)."""

    MODES = ("sample", "mean")
    estimator: typing.ClassVar = None       # the layer's own (an lrtdense.estimators.Estimator)
    kernel_mean: typing.ClassVar = None     # (param, index) holding the kernel's posterior mean

    # ----------------------------------------------------------------------------- settings
    def __post_init__(self):
        object.__setattr__(self, "units", positive_int(self.units, "units"))
        object.__setattr__(self, "activation", activations.canonical(self.activation))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        self._validate()

    def _validate(self):
        """Checks and normalises the subclass's own settings (frozen: use object.__setattr__)."""

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    # --------------------------------------------------------------------------- parameters
    def weight_names(self):
        """Param names, in the order ``init`` draws them."""
        raise NotImplementedError

    def param_shapes(self, input_dim):
        """dict name -> shape for an input of last dimension ``input_dim``."""
        raise NotImplementedError

    def _weight_settings(self):
        """The settings that decide ``weight_names``, as text for error messages."""
        return ""

    def initializers(self):
        """dict name -> initializer ``(rng, shape, dtype) -> array``, in ``weight_names()`` order."""
        raise NotImplementedError

    def count_params(self, input_dim):
        """Total number of scalars in the params for an input of last dimension ``input_dim``."""
        return sum(math.prod(s) for s in self.param_shapes(input_dim).values())

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

    def init(self, rng, input_dim):
        """Draws fresh params from ``rng`` in ``weight_names()`` order.

        Args:
          rng: numpy.random.Generator.
          input_dim: size of the input's last axis.
        Returns:
          dict name -> array of the layer's dtype.
        """
        check_rng(rng)
        input_dim = positive_int(input_dim, "input_dim")
        dtype = DTYPES[self.dtype]
        inits = self.initializers()
        return {name: np.asarray(inits[name](rng, shape, dtype), dtype=dtype)
                for name, shape in self.param_shapes(input_dim).items()}

    def get_weights(self, params):
        """The params as a list in ``weight_names()`` order (TFP's ``layer.weights`` order)."""
        self.check_params(params)
        return [params[name] for name in self.weight_names()]

    def set_weights(self, weights):
        """Builds params from a list in ``weight_names()`` order (e.g. TFP's get_weights()).

        Floating arrays are cast to the layer's dtype, as Keras does.
        Raises:
          ValueError: wrong number of arrays or inconsistent shapes.
        """
        names = self.weight_names()
        if not isinstance(weights, (list, tuple)) or len(weights) != len(names):
            got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
            raise ValueError(f"expected a list of {len(names)} arrays {names}, got {got}")
        arrays = [np.asarray(w) for w in weights]
        for name, a in zip(names, arrays):
            if a.dtype.kind != "f":
                raise TypeError(f"{name} must be a floating array, got dtype {a.dtype}")
        params = {n: np.ascontiguousarray(a, dtype=self.dtype) for n, a in zip(names, arrays)}
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
        extra = sorted(set(params) - set(names), key=str)
        if missing or extra:
            raise ValueError(f"params do not match {type(self).__name__}("
                             f"{self._weight_settings()}): missing {missing}, unexpected "
                             f"{extra}; expected exactly {names}")
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

    def posterior_moments(self, params, input_dim, workspace=None):
        """The posterior as ``Moments``: the kernel's (loc, scale), both (in, units), and the
        bias's (every layer family's one hook for its estimators)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ compute
    def check_input(self, x):
        """x as an array of the layer's dtype, rank >= 2. Raises TypeError / ValueError."""
        raw = getval(x)
        if not hasattr(raw, "dtype"):
            raw = x = np.asarray(x)
        if raw.dtype.kind != "f":
            raise TypeError(f"x must be an array of real floating numbers (it is cast to the "
                            f"layer's {self.dtype}), got dtype {raw.dtype}")
        if raw.ndim < 2:
            raise ValueError(f"expected x of rank >= 2 with shape (batch, ..., in), got shape "
                             f"{raw.shape}; reshape a single example to (1, in)")
        if raw.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    def forward(self, params, x, rng=None, *, noise=None, mode="sample", workspace=None,
                estimator=None):
        """Stochastic (``mode="sample"``) or deterministic forward pass.

        Args:
          params: dict of arrays (see ``init``).
          x: float array (..., in), rank >= 2; cast to the layer's dtype if floating.
          rng: numpy.random.Generator for the noise (sample mode, unless ``noise`` is given).
          noise: dict of explicit noise arrays (see ``noise_shapes``); makes forward deterministic.
          mode: one of ``MODES``; rng and noise are ignored outside "sample".
          workspace: optional Workspace for the arrays of the call.
          estimator: None (the layer's own) or another estimator of ``lrtdense.estimators``
            (a name or record) to sample the same posterior with: the noise is then
            ``estimator_noise_shapes``' layout, and the kl the layer's divergences without
            noise (a Monte Carlo one at the posterior mean).
        Returns:
          (outputs of shape (..., units), kl scalar), both of the layer's dtype.
        Raises:
          ValueError / TypeError naming the offending argument.

        NaN or inf in x or params propagate to the outputs (they are not checked here);
        ``lrtdense.training.fit`` refuses a non-finite loss.
        """
        x = self.check_input(x)
        self.check_params(params, x.shape[-1])
        if estimator is None:
            noise = self._resolve_noise(x, rng, noise, mode, workspace)
            outputs, kl = self._forward(params, x, noise, mode, workspace)
        else:
            outputs, kl = self._estimate(params, x, rng, noise, estimators.get(estimator),
                                         workspace)
        return activations.get(self.activation)(outputs, workspace=workspace), kl

    def _estimate(self, params, x, rng, noise, estimator, workspace):
        """(pre-activations, kl) of the posterior sampled by ``estimator``."""
        if noise is not None:
            if rng is not None:
                raise ValueError("pass either rng or noise to forward, not both")
            noise = self.check_noise(noise, x.shape, estimator)
        elif estimator.noisy:
            if rng is None:
                raise ValueError(f"estimator {estimator.name!r} needs rng or an explicit noise dict")
            noise = self.sample_estimator_noise(estimator, rng, x.shape)
        moments = self.posterior_moments(params, x.shape[-1], workspace)
        outputs, _ = self._pre_activations(moments, x, estimator, noise, workspace)
        return outputs, sum_terms(self._divergences(params, workspace), self.dtype)

    def _pre_activations(self, moments, x, estimator, noise, workspace):
        """(estimator's kernel term of ``moments`` + the bias, the bias draw or None): the bias
        is drawn from noise["bias"] when it is random and the noise has one."""
        outputs = estimator.term(x, moments.kernel_loc, moments.kernel_scale, noise, workspace)
        return self._add_bias(outputs, moments, noise, workspace)

    def _add_bias(self, outputs, moments, noise, workspace):
        """(outputs + the bias, the bias draw or None): a random bias is drawn from
        noise["bias"] when the noise has one, else its mean is added."""
        if moments.bias_loc is None:
            return outputs, None
        draw = None
        if moments.bias_scale is not None and noise is not None and "bias" in noise:
            draw = kernels.normal_sample(moments.bias_loc, moments.bias_scale, noise["bias"])
        bias = moments.bias_loc if draw is None else draw
        return kernels.add_bias(outputs, bias, workspace=workspace), draw

    def _forward(self, params, x, noise, mode, workspace):
        """(pre-activations, kl) on checked inputs."""
        raise NotImplementedError

    def divergences(self, params):
        """dict term -> scalar divergence of the posterior from the prior (TFP's ``losses``)."""
        self.check_params(params)
        return self._divergences(params, None)

    def _divergences(self, params, workspace):
        raise NotImplementedError

    random_divergence = False      # a sample-mode call's divergence is random (Monte Carlo)

    def shares_draw(self, name):
        """Whether divergence term ``name`` is evaluated at the forward's own weight draw."""
        return False

    def expected_divergences(self, params):
        """dict term -> the expectation over the noise of the sample-mode divergence (the
        ``divergences`` themselves where none is random)."""
        return self.divergences(params)

    def kl(self, params):
        """The sum of ``divergences`` (0 of the layer's dtype when there is none)."""
        return sum_terms(self.divergences(params), self.dtype)


def sum_terms(terms, dtype):
    """The sum of a dict of scalars (a 0 of ``dtype`` when it is empty)."""
    total = None
    for value in terms.values():
        total = value if total is None else total + value
    return np.zeros((), dtype=dtype) if total is None else total
