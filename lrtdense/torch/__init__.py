"""lrtdense's layers as PyTorch modules, certified against the reference set.

``DenseLocalReparameterization``, ``DenseReparameterization``, ``DenseFlipout``,
``DenseVariational``, ``DenseVariationalDropout`` and ``DenseSparseVariationalDropout`` are
``torch.nn.Module``s with TFP's parameter names and the NumPy layers' settings and numbers (the
contract: ``lrtdense.torch.base``)::

    import torch, lrtdense.torch as LT
    model = torch.nn.Sequential(LT.DenseLocalReparameterization(784, 400, "relu"),
                                LT.DenseLocalReparameterization(400, 10))
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y) + LT.divergence(model) / num_examples

``divergence(model)`` sums the divergences of the last call of every layer; ``set_mode`` and
``set_generator`` set every layer's mode and generator; ``from_config`` builds a layer or an
``nn.Sequential`` from a NumPy layer's / reference case's JSON config;
``lrtdense.torch.conformance.Adapter`` runs the layers through the reference cases.

This package imports torch; ``import lrtdense`` never does.
"""
import torch

from lrtdense.torch.base import BayesianModule
from lrtdense.torch.dense_variational import DenseVariational
from lrtdense.torch.dropout import DenseSparseVariationalDropout, DenseVariationalDropout
from lrtdense.torch.layers import (DenseFlipout, DenseLocalReparameterization,
                                   DenseReparameterization)
from lrtdense.torch.optim import KerasAdam

__all__ = ["DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
           "DenseVariational", "DenseVariationalDropout", "DenseSparseVariationalDropout",
           "BayesianModule", "KerasAdam", "LAYERS", "divergence", "set_mode", "set_generator",
           "from_config"]

LAYERS = {cls.__name__: cls for cls in (
    DenseLocalReparameterization, DenseReparameterization, DenseFlipout, DenseVariational,
    DenseVariationalDropout, DenseSparseVariationalDropout)}


def _layers(model):
    return [m for m in model.modules() if isinstance(m, BayesianModule)]


def divergence(model):
    """The sum of the divergences of the last call of every lrtdense layer in ``model`` (a
    scalar tensor in the graph; TFP's ``sum(model.losses)``).

    Raises:
      ValueError: ``model`` holds no lrtdense layer, or one that has not been called yet.
    """
    layers = _layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} holds no lrtdense.torch layer")
    total = None
    for name, module in model.named_modules():
        if not isinstance(module, BayesianModule):
            continue
        if module.divergence is None:
            raise ValueError(f"layer {name or type(module).__name__!r} has not been called: "
                             f"its divergence is that of a call")
        total = module.divergence if total is None else total + module.divergence
    return total


def set_mode(model, mode):
    """Sets ``mode`` ("sample", "mean", "pruned") on every lrtdense layer of ``model``; returns
    ``model``. Raises ValueError if a layer has no such mode."""
    for layer in _layers(model):
        layer.mode = mode
    return model


def set_generator(model, generator):
    """Makes every lrtdense layer of ``model`` draw its noise from ``generator`` (a
    ``torch.Generator``, or None for torch's default); returns ``model``."""
    for layer in _layers(model):
        layer.generator = generator
    return model


def from_config(config, in_features=None, **kwargs):
    """A layer, or an ``nn.Sequential`` of layers, from its JSON config.

    Args:
      config: ``{"class_name": NAME, "config": {...}}`` as ``lrtdense.serialize`` writes it (a
        reference case's ``model``), NAME a key of ``LAYERS`` or "Sequential" (config
        ``{"layers": [...]}``).
      in_features: the input size (each further layer's is the previous one's units); None
        when the config holds it (a torch layer's ``get_config()``).
      kwargs: passed to every layer (``device``, ``generator``, ``mode``).
    Raises:
      ValueError: an unknown class or a bad config (one line naming it).
    """
    if not isinstance(config, dict) or set(config) != {"class_name", "config"}:
        raise ValueError(f"expected a dict with keys 'class_name' and 'config', got {config!r}")
    name = config["class_name"]
    if name == "Sequential":
        layers = []
        for layer_config in config["config"]["layers"]:
            layers.append(from_config(layer_config, in_features, **kwargs))
            in_features = layers[-1].units
        return torch.nn.Sequential(*layers)
    if name not in LAYERS:
        raise ValueError(f"unknown layer class {name!r}; expected one of {sorted(LAYERS)} or "
                         f"'Sequential'")
    return LAYERS[name].from_config({**config["config"], **kwargs}, in_features)
