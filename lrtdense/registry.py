"""The layer classes by name, built in one place, and the JSON form of a layer.

``serialize(layer)`` gives ``{"class_name": ..., "config": layer.get_config()}`` (plain JSON);
``deserialize`` rebuilds the layer, refusing any class not in ``LAYERS``.
"""
from lrtdense.dense_variational import DenseVariational
from lrtdense.dropout import DenseSparseVariationalDropout, DenseVariationalDropout
from lrtdense.layers import DenseFlipout, DenseLocalReparameterization, DenseReparameterization

__all__ = ["LAYERS", "serialize", "deserialize"]

LAYERS = {cls.__name__: cls for cls in (
    DenseLocalReparameterization, DenseReparameterization, DenseFlipout,
    DenseVariationalDropout, DenseSparseVariationalDropout, DenseVariational)}


def serialize(layer):
    """{"class_name": ..., "config": layer.get_config()} (plain JSON)."""
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(data):
    """Rebuilds a layer from ``serialize``'s output.

    Raises:
      ValueError: not such a dict, or an unknown class.
    """
    if not isinstance(data, dict) or set(data) != {"class_name", "config"}:
        raise ValueError(f"expected a dict with keys 'class_name' and 'config', got {data!r}")
    name = data["class_name"]
    if not isinstance(name, str) or name not in LAYERS:
        raise ValueError(f"unknown layer class {name!r}; expected one of {sorted(LAYERS)}")
    return LAYERS[name].from_config(data["config"])
