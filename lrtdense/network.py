"""Stacks of layers with the same pure contract as a single layer.

``Sequential([layer, ...])`` has ``init(rng, input_dim)`` and
``forward(params, x, rng=None, *, noise=None, mode="sample") -> (outputs, kl)``, where params is
``{"layer_0": {...}, "layer_1": {...}, ...}`` (each entry the layer's own flat dict, TFP names) and
kl is the sum of the layers' KL. Layers of any estimator mix freely. Noise, like params, is a dict
of the layers' noise dicts; ``forward(rng=g)`` draws layer by layer, in order, exactly what
``sample_noise(g, x.shape)`` draws.
"""
import dataclasses

import numpy as np

from lrtdense.records import Record, record_field
from lrtdense.registry import serialize, deserialize

__all__ = ["Sequential"]


def _serialize_layers(layers):
    return [serialize(layer) for layer in layers]


def _deserialize_layers(items):
    if not isinstance(items, list):
        raise TypeError(f"a Sequential config's 'layers' must be a list, got {items!r}")
    return [deserialize(item) for item in items]


@dataclasses.dataclass(frozen=True)
class Sequential(Record):
    """A chain of layers (kept as a tuple); settings only, no parameters. Config:
    {"layers": [{"class_name": ..., "config": ...}, ...]} (``lrtdense.registry.serialize``)."""

    layers: tuple = record_field(to_json=_serialize_layers, from_json=_deserialize_layers)

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) != 1:
            raise ValueError(f"all layers must share one dtype, got {sorted(dtypes)}")
        for i, layer in enumerate(layers):
            if not hasattr(layer, "forward") or not hasattr(layer, "init"):
                raise TypeError(f"layer {i} ({layer!r}) has no init/forward")
        object.__setattr__(self, "layers", layers)

    @property
    def dtype(self):
        """The layers' dtype, "float32" or "float64"."""
        return self.layers[0].dtype

    @property
    def names(self):
        """The layers' keys in params and noise: "layer_0", "layer_1", ..."""
        return [f"layer_{i}" for i in range(len(self.layers))]

    @property
    def units(self):
        """The last layer's units (the output size)."""
        return self.layers[-1].units

    def init(self, rng, input_dim):
        """Params of every layer, drawn from ``rng`` layer by layer."""
        params = {}
        for name, layer in zip(self.names, self.layers):
            params[name] = layer.init(rng, input_dim)
            input_dim = layer.units
        return params

    def compute_output_shape(self, input_shape):
        """(..., in) -> (..., units of the last layer)."""
        for layer in self.layers:
            input_shape = layer.compute_output_shape(input_shape)
        return input_shape

    def noise_shapes(self, input_shape):
        """{layer name: the layer's noise_shapes}."""
        shapes = {}
        for name, layer in zip(self.names, self.layers):
            shapes[name] = layer.noise_shapes(tuple(input_shape))
            input_shape = layer.compute_output_shape(input_shape)
        return shapes

    def param_shapes(self, input_dim):
        """{layer name: {param name: shape}} for an input of last dimension ``input_dim``."""
        shapes = {}
        for name, layer in zip(self.names, self.layers):
            shapes[name] = layer.param_shapes(input_dim)
            input_dim = layer.units
        return shapes

    def sample_noise(self, rng, input_shape, normal=None, workspace=None, *, estimator=None):
        """Every layer's noise dict, drawn in layer order (``normal``, ``workspace`` as in the
        layers'); with ``estimator``, each layer's ``sample_estimator_noise`` of it."""
        noise = {}
        for name, layer in zip(self.names, self.layers):
            if estimator is None:
                noise[name] = layer.sample_noise(rng, tuple(input_shape), normal, workspace)
            else:
                noise[name] = layer.sample_estimator_noise(estimator, rng, tuple(input_shape))
            input_shape = layer.compute_output_shape(input_shape)
        return noise

    def check_params(self, params, input_dim=None):
        """Raises a clear error unless ``params`` fit every layer, in order, for an input of
        last dimension ``input_dim`` (if given)."""
        self._check_params(params)
        for name, layer in zip(self.names, self.layers):
            layer.check_params(params[name], input_dim)
            input_dim = layer.units

    def _check_params(self, params):
        if not isinstance(params, dict) and not hasattr(params, "keys"):
            raise TypeError(f"params must be a dict of the layers' dicts, got {type(params).__name__}")
        if sorted(params.keys()) != sorted(self.names):
            raise ValueError(f"params keys {sorted(params.keys())} do not match the network's "
                             f"layers {self.names}")

    def forward(self, params, x, rng=None, *, noise=None, mode="sample", workspace=None,
                estimator=None):
        """Runs the layers in order, each in ``mode`` (or with ``estimator``, as
        ``Layer.forward`` takes it) on the previous layer's output.

        Returns (outputs (..., units), kl scalar: the sum of the layers' KL)."""
        self._check_params(params)
        if noise is not None and rng is not None and mode == "sample":
            raise ValueError("pass either rng or noise to forward, not both")
        if noise is not None:
            if not isinstance(noise, dict) or sorted(noise) != sorted(self.names):
                got = sorted(noise) if isinstance(noise, dict) else type(noise).__name__
                raise ValueError(f"noise must be a dict with keys {self.names}, got {got}")
        kl = None
        for name, layer in zip(self.names, self.layers):
            layer_noise = None if noise is None else noise[name]
            x, layer_kl = layer.forward(params[name], x, None if noise is not None else rng,
                                        noise=layer_noise, mode=mode, workspace=workspace,
                                        estimator=estimator)
            kl = layer_kl if kl is None else kl + layer_kl
        return x, kl

    def kl(self, params):
        """The sum of the layers' KL."""
        self._check_params(params)
        total = np.zeros((), dtype=self.dtype)
        for name, layer in zip(self.names, self.layers):
            total = total + layer.kl(params[name])
        return total

    def count_params(self, input_dim):
        """Total number of scalars in the params for an input of last dimension ``input_dim``."""
        total = 0
        for layer in self.layers:
            total += layer.count_params(input_dim)
            input_dim = layer.units
        return total
