"""Saving and loading a model: its config as plain JSON, its params as an ``.npz``.

``save(path, model, params)`` writes ``path`` as a directory holding ``config.json`` and
``params.npz`` (keys like ``network/layer_0/kernel_posterior_loc``). ``load(path)`` returns
``(model, params)`` after checking the file format, every key, shape and dtype against the model;
arrays load with ``allow_pickle=False`` and the config with ``json``, so nothing loaded can execute
code. Any problem is a ``ValueError`` that names the file and what is wrong.
"""
import json
import os
import zipfile

import numpy as np

from lrtdense.model import Model
from lrtdense.tree import flatten, unflatten

__all__ = ["save", "load"]

FORMAT = "lrtdense-model"
VERSION = 1


def save(path, model, params):
    """Writes ``path/config.json`` and ``path/params.npz`` (creating the directory)."""
    flat = flatten(params)
    _check_against_model(model, params, "params")
    os.makedirs(path, exist_ok=True)
    config = {"format": FORMAT, "version": VERSION, "model": model.get_config(),
              "input_dim": _input_dim(model, params),
              "params": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)}
                         for k, v in flat.items()}}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    np.savez(os.path.join(path, "params.npz"), **{k: np.asarray(v) for k, v in flat.items()})


def load(path):
    """Reads a model saved by ``save``. Returns (model, params). Raises ValueError on any problem."""
    config_path = os.path.join(path, "config.json")
    params_path = os.path.join(path, "params.npz")
    for p in (config_path, params_path):
        if not os.path.isfile(p):
            raise ValueError(f"{p} does not exist; expected a directory written by lrtdense.io.save")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}); the file is corrupted") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not an lrtdense model config (format != {FORMAT!r})")
    if config.get("version") != VERSION:
        raise ValueError(f"{config_path} has format version {config.get('version')!r}; this "
                         f"lrtdense reads version {VERSION}")
    try:
        model = Model.from_config(config["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: invalid model config: {err}") from None
    try:
        with np.load(params_path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
        raise ValueError(f"{params_path} could not be read as a plain .npz ({type(err).__name__}: "
                         f"{err}); the file is corrupted or holds pickled objects") from None
    params = unflatten(flat)
    params.setdefault("likelihood", {})
    _check_against_model(model, params, params_path, config.get("input_dim"))
    return model, params


def _check_against_model(model, params, where, input_dim=None):
    try:
        if input_dim is None:
            input_dim = _input_dim(model, params)
        expected = model.init(np.random.default_rng(0), int(input_dim))
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{where}: params do not have the structure of the model ({err!r})") from None
    want, got = flatten(expected), flatten(params)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(f"{where}: params do not match the model: missing {missing}, "
                         f"unexpected {extra}")
    for key, ref in want.items():
        value = np.asarray(got[key])
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise ValueError(f"{where}: {key} has shape {value.shape} and dtype {value.dtype}; "
                             f"the model expects {ref.shape} {ref.dtype}")


def _input_dim(model, params):
    """The input size implied by the first layer's kernel (its first weight, shape (in, units))."""
    first = model.network.layers[0].weight_names()[0]
    return int(np.shape(params["network"]["layer_0"][first])[0])
