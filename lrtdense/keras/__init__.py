"""lrtdense's layers for Keras 3: one implementation in ``keras.ops``, on JAX, PyTorch, TensorFlow.

    import keras
    from lrtdense.keras import DenseLocalReparameterization, DenseFlipout
    model = keras.Sequential([keras.Input((13,)),
                              DenseLocalReparameterization(50, "relu", seed=1),
                              DenseFlipout(1, seed=2)])
    model.compile(keras.optimizers.Adam(1e-2), loss=...)   # + the divergences, added by add_loss

The six layers of ``lrtdense`` (``DenseLocalReparameterization``, ``DenseReparameterization``,
``DenseFlipout``, ``DenseVariational``, ``DenseVariationalDropout``,
``DenseSparseVariationalDropout``) with the NumPy layers' settings and numbers, TFP's weight
names and order, divergences as ``layer.losses``, ``get_config`` and the ``.keras`` format, seeded
by ``keras.random.SeedGenerator`` (``lrtdense.keras.base`` states the contract). For custom
training loops: the reference set's two Adam forms as Keras optimizers (``KingmaAdam``,
``TFKerasAdam``: ``lrtdense.keras.optimizers``) and the gradients on every backend
(``value_and_grad``: ``lrtdense.keras.gradients``). Certified by the reference set, training
included: ``lrtdense.keras.conformance.Adapter``. Importing ``lrtdense`` never imports Keras;
importing ``lrtdense.keras`` does (the backend is Keras', ``KERAS_BACKEND``).
"""
from lrtdense.keras.base import BayesianDense
from lrtdense.keras.gradients import value_and_grad
from lrtdense.keras.layers import (LAYERS, DenseFlipout, DenseLocalReparameterization,
                                   DenseReparameterization, DenseSparseVariationalDropout,
                                   DenseVariational, DenseVariationalDropout)
from lrtdense.keras.optimizers import KingmaAdam, TFKerasAdam

__all__ = ["DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
           "DenseVariational", "DenseVariationalDropout", "DenseSparseVariationalDropout",
           "BayesianDense", "LAYERS", "from_lrtdense_config", "divergence", "KingmaAdam",
           "TFKerasAdam", "value_and_grad"]


def from_lrtdense_config(data, **kwargs):
    """The Keras layer of an lrtdense JSON form ``{"class_name": ..., "config": ...}``
    (``lrtdense.serialize``, a reference case's ``model``); ``kwargs``: Keras' own settings
    (seed, name).

    Raises:
      ValueError: not such a dict, or an unknown class.
    """
    if not isinstance(data, dict) or set(data) != {"class_name", "config"}:
        raise ValueError(f"expected a dict with keys 'class_name' and 'config', got {data!r}")
    name = data["class_name"]
    if name not in LAYERS:
        raise ValueError(f"unknown layer class {name!r}; expected one of {sorted(LAYERS)}")
    return LAYERS[name](**data["config"], **kwargs)


def divergence(model):
    """The sum of a model's (or layer's) divergences of its last call, ``sum(model.losses)``
    (0.0 when there is none)."""
    losses = list(model.losses)
    return sum(losses[1:], losses[0]) if losses else 0.0
