"""What every lrtdense Keras layer shares: settings, weights, noise, modes, losses, config.

The contract (Keras 3's ``keras/src/layers/core/dense.py`` with TFP's names):

* Settings are the NumPy layer's (``settings``, an ``lrtdense`` layer object, frozen): the same
  keywords, the same checks and one-line errors, the same plain-JSON config, so a
  ``case.json`` or ``lrtdense.serialize`` config builds the Keras layer as it is.
* ``build(input_shape)`` creates the weights with ``add_weight(name=..., shape=...,
  initializer=...)``, named and ordered as TFP's ``layer.weights`` (SPEC.md section 2), so
  `layer.set_weights(tfp_layer.get_weights())` moves a trained tf_keras layer over.
* ``call(x, training=None, noise=None, mode=None)``: x (..., in) -> outputs (..., units).
  ``mode`` "sample" (the default, in training and inference alike, as TFP's layers: every call
  is a fresh draw), "mean", or "pruned" (DenseSparseVariationalDropout). In sample mode the noise
  is ``noise`` (the NumPy layers' noise dict: ``settings.noise_shapes(x.shape)``) or drawn with
  ``keras.random`` from the layer's ``SeedGenerator``, in that dict's order. Each divergence term
  ("kernel", then "bias": ``divergence_names()``) is added with
  `keras.layers.Layer.add_loss`, as TFP does;
  Monte Carlo terms are evaluated at the call's draw (mean mode: at the posterior mean).
* A subclass defines ``_compute(params, x, noise, mode) -> (pre-activations, {term: value})``
  with ``params`` a dict name -> tensor.
"""
import dataclasses

import keras
from keras import ops

from lrtdense.base import dtype_name
from lrtdense.keras import kernels

__all__ = ["BayesianDense", "keras_initializer"]

_MODES = ("sample", "mean", "pruned")


def keras_initializer(record, seed):
    """The Keras initializer of an lrtdense initializer record (RandomNormal, Constant)."""
    if record.TYPE == "random_normal":
        return keras.initializers.RandomNormal(record.mean, record.stddev, seed=seed)
    return keras.initializers.Constant(record.value)


class BayesianDense(keras.layers.Layer):
    """Base class of the six layers; ``SETTINGS`` is the NumPy layer class whose settings (and
    config) the Keras layer takes.

    Args:
      units, activation: as the NumPy layer (activation: a name, "linear" or None).
      seed: int or None, the ``keras.random.SeedGenerator`` seed of the initializers and noise.
      dtype: "float32" (default) or "float64" (JAX: needs ``jax_enable_x64``).
      **kwargs: the NumPy layer's other settings (priors, divergences, initializers, ...), then
        Keras' own (name, trainable).
    Raises:
      ValueError / TypeError: a bad setting, one line naming it.
    """
    SETTINGS = None

    def __init__(self, units, activation=None, *, seed=None, dtype=None, **kwargs):
        fields = {f.name for f in dataclasses.fields(self.SETTINGS)} - {"units", "activation",
                                                                         "dtype"}
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(dtype=dtype_name(dtype), **kwargs)
        self.settings = self.SETTINGS(units, activation, dtype=dtype_name(dtype), **settings)
        if not isinstance(self.settings.activation, str):
            raise ValueError(f"activation must be one of {sorted(kernels.ACTIVATIONS)} or None "
                             f"(a config holds names, never code), got {activation!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def units(self):
        """The output size (``settings.units``)."""
        return self.settings.units

    # --------------------------------------------------------------------------- weights
    def build(self, input_shape):
        """Creates the weights of an input (..., in) in TFP's order (``weight_names()``)."""
        in_dim = self._input_dim(input_shape)
        dtype = self.settings.dtype
        if dtype == "float64" and keras.backend.backend() == "jax":
            import jax
            if not jax.config.jax_enable_x64:
                raise ValueError("a float64 layer on the JAX backend needs "
                                 "jax.config.update('jax_enable_x64', True) before the first "
                                 "computation (JAX silently computes in float32 otherwise)")
        initializers = self.settings.initializers()
        for name, shape in self.settings.param_shapes(in_dim).items():
            self.add_weight(name=name, shape=shape, dtype=dtype,
                            initializer=keras_initializer(initializers[name], self.seed_generator))

    def _input_dim(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects inputs of shape (batch, ..., in) with "
                             f"a known last dimension, got {tuple(input_shape)}")
        return int(input_shape[-1])

    def weight_names(self):
        """The weights' names in TFP's ``layer.weights`` order (the order of
        `keras.layers.Layer.get_weights`)."""
        return self.settings.weight_names()

    def compute_output_shape(self, input_shape):
        """(..., in) -> (..., units)."""
        self._input_dim(input_shape)
        return tuple(input_shape[:-1]) + (self.units,)

    def divergence_names(self):
        """The divergence terms one call adds with `keras.layers.Layer.add_loss`, in that order."""
        return ["kernel"]

    # ------------------------------------------------------------------------------ call
    def call(self, inputs, training=None, noise=None, mode=None):
        """outputs (..., units) of inputs (..., in); adds the divergences with
        `keras.layers.Layer.add_loss`."""
        mode = "sample" if mode is None else mode
        if mode not in self.settings.MODES:
            raise ValueError(f"mode must be one of {self.settings.MODES}, got {mode!r}")
        if mode != "sample":
            noise = None
        elif noise is None:
            noise = self._draw_noise(tuple(ops.shape(inputs)))
        else:
            noise = self._check_noise(noise, tuple(ops.shape(inputs)))
        params = {w.name: w.value for w in self.weights}
        z, terms = self._compute(params, inputs, noise, mode)
        for name in self.divergence_names():
            self.add_loss(terms[name])
        return kernels.activation(self.settings.activation, z)

    def _compute(self, params, x, noise, mode):
        raise NotImplementedError

    def _draw_noise(self, input_shape):
        """Every random array of one call, in ``settings.noise_shapes`` order: standard normals,
        and +-1 signs where ``settings.noise_kinds()`` says "sign"."""
        dtype, kinds = self.settings.dtype, self.settings.noise_kinds()
        noise = {}
        for key, shape in self.settings.noise_shapes(input_shape).items():
            if kinds.get(key) == "sign":
                bits = keras.random.randint(shape, 0, 2, seed=self.seed_generator)
                noise[key] = 2 * ops.cast(bits, dtype) - 1
            else:
                noise[key] = keras.random.normal(shape, dtype=dtype, seed=self.seed_generator)
        return noise

    def _check_noise(self, noise, input_shape):
        """``noise`` with exactly the keys and shapes of ``settings.noise_shapes(input_shape)``,
        cast to the layer's dtype. Raises ValueError / TypeError naming the key."""
        if not isinstance(noise, dict):
            raise TypeError(f"noise must be a dict of arrays, got {type(noise).__name__}")
        shapes = self.settings.noise_shapes(input_shape)
        if set(noise) != set(shapes):
            raise ValueError(f"noise keys do not match {type(self).__name__}: got "
                             f"{sorted(noise)}, expected exactly {list(shapes)}")
        out = {}
        for key, shape in shapes.items():
            value = ops.convert_to_tensor(noise[key], dtype=self.settings.dtype)
            if tuple(ops.shape(value)) != tuple(shape):
                raise ValueError(f"expected noise[{key!r}].shape == {tuple(shape)} for an input "
                                 f"of shape {input_shape}, got {tuple(ops.shape(value))}")
            out[key] = value
        return out

    # ---------------------------------------------------------------------------- config
    def get_config(self):
        """Plain JSON: Keras' name and trainable, the NumPy layer's settings, and the seed."""
        return {"name": self.name, "trainable": self.trainable, **self.settings.get_config(),
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        """The layer of ``get_config()``'s dict."""
        return cls(**config)
