"""``save`` and ``check_save_target``: a model folder written atomically (see ``lrtdense.io``)."""
import errno
import json
import os
import shutil

import numpy as np

from lrtdense import tree
from lrtdense.io import folders, layout
from lrtdense.io.jsonvalues import check_depth, check_json
from lrtdense.io.npz import write_npz
from lrtdense.model import Model

__all__ = ["save", "check_save_target"]

_ATTEMPTS = 5                   # a check that raced a save looks again this many times at most


def save(path, model, params, *, state=None, meta=None):
    """Writes the model folder ``path`` atomically (see the module docstring).

    Args:
      path: the folder to write; its parent must exist. An empty folder or a model folder there
        is replaced; anything else is refused.
      model: a ``Model``.
      params: its params, ``{"network": {...}, "likelihood": {...}}``, of the model's shapes and
        dtype (any memory order; written in C order).
      state: optional nested dict (string keys) whose leaves are numeric arrays or scalars, e.g.
        ``{"m": ..., "v": ...}``; leaves come back as arrays, empty dicts are kept.
      meta: optional dict of plain JSON: str keys; values None, bool, int (at most 1024 bits),
        finite float, str, list or dict. Encode NaN or infinities yourself (e.g. as strings).
    Raises:
      ValueError: params that do not match the model, a bad state or meta, a config larger
        than ``MAX_CONFIG_BYTES``, or a ``path`` that is not a model folder.
      TypeError: a leaf of params or state that is not a numeric array.
      OSError: from the file system; the previous model at ``path`` is then untouched.
    """
    config, arrays = _config_and_arrays(model, params, state, meta)
    target = os.path.realpath(path)
    parent, name = os.path.split(target)
    if not name:
        raise ValueError(f"cannot save a model as {path!r}: expected a path naming a folder")
    check_save_target(path)
    folders.remove_stale(parent, name, layout.FILES)
    tmp, lock = folders.make_temporary(parent, name)
    old = None
    try:
        config["files"] = {filename: folders.write_file(os.path.join(tmp, filename),
                                                        lambda f, m=members: write_npz(f, m))
                           for filename, members in arrays.items()}
        text = json.dumps(config, indent=1, allow_nan=False).encode()
        folders.write_file(os.path.join(tmp, "config.json"), lambda f: f.write(text))
        folders.fsync_dir(tmp)
        old = folders.put_in_place(tmp, target)     # the commit point
        folders.fsync_dir(parent)
    except BaseException:
        if old is None:                             # not committed: only the new copy to remove
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        folders.unlock(lock)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _config_and_arrays(model, params, state, meta):
    """(the config, less its "files"; {file name: {key: array}}) of a save, all checked."""
    flat, input_dim = _checked_params(model, params)
    config = {"format": layout.FORMAT, "version": layout.VERSION, "model": model.get_config(),
              "input_dim": input_dim, "params": {k: layout.spec_json(v.shape, v.dtype) for k, v in flat.items()}}
    arrays = {"params.npz": flat}
    if state is not None:
        state_flat = _checked_state(state)
        config["state"] = {"structure": tree.structure(state),
                           "arrays": {k: layout.spec_json(v.shape, v.dtype) for k, v in state_flat.items()}}
        arrays["state.npz"] = state_flat
    if meta is not None:
        check_json(meta, "meta")
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        config["meta"] = meta
    files_room = 200 * len(arrays)              # what "files" adds to the text below
    if len(json.dumps(config, indent=1, allow_nan=False)) + files_room > layout.MAX_CONFIG_BYTES:
        raise ValueError(f"the config (model, listing and meta) would exceed "
                         f"{layout.MAX_CONFIG_BYTES} bytes of JSON; keep large records out of "
                         f"meta (arrays belong in the state)")
    return config, arrays


def check_save_target(path):
    """Raises unless ``save(path, ...)`` may write there: the parent folder exists and is
    writable, and ``path`` is absent, an empty folder or an lrtdense model folder (see the module
    docstring). ``fit`` calls it before training, so a bad checkpoint path fails at once.

    Raises:
      FileNotFoundError: the parent folder does not exist.
      PermissionError: the parent folder is not writable.
      ValueError: ``path`` holds something that is not a model (the message names the entry).
    """
    target = os.path.realpath(path)
    parent, name = os.path.split(target)
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, "the folder to save into does not exist", parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "the folder to save into is not writable", parent)
    folders.recover(target)
    for _ in range(_ATTEMPTS):
        before = folders.identity(target)
        try:
            problem = layout.not_replaceable(target)
        except FileNotFoundError:
            problem = "its files vanished while they were read"
        if not problem or folders.identity(target) == before:
            break                               # else a save replaced it meanwhile: again
    if problem:
        raise ValueError(f"{path} {problem}; refusing to replace it (save to a new folder, or "
                         f"move it away yourself)")


def _checked_params(model, params):
    """(params flattened in the model's order, each leaf a C-ordered array; the input dimension
    they imply); raises if they differ from the model's."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an lrtdense.model.Model, got {type(model).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    input_dim = layout.input_dim_of(model, params)
    spec = layout.param_spec(model, input_dim)
    flat = tree.flatten(params)
    missing, extra = sorted(set(spec) - set(flat)), sorted(set(flat) - set(spec))
    if missing or extra:
        raise ValueError(f"params do not match the model: missing {missing}, unexpected {extra}")
    out = {}
    for key, (shape, dtype) in spec.items():
        value = _numeric_array(flat[key], f"params[{key!r}]")
        if value.shape != shape or value.dtype != dtype:
            raise ValueError(f"params[{key!r}] has shape {value.shape} and dtype {value.dtype}; "
                             f"the model expects {shape} {dtype}")
        out[key] = value
    return out, input_dim


def _checked_state(state):
    if not isinstance(state, dict):
        raise TypeError(f"state must be a nested dict of arrays, got {type(state).__name__}")
    check_depth(state, "state")
    flat = tree.flatten(state)
    out = {}
    for key, value in flat.items():
        if "\x00" in key or not _utf8(key):
            raise ValueError(f"state key {key!r} cannot name a zip member; expected UTF-8 "
                             f"text without NUL")
        value = _numeric_array(value, f"state[{key!r}]")
        if value.dtype.name not in layout.STATE_DTYPES or not value.dtype.isnative:
            raise TypeError(f"state[{key!r}] has dtype {value.dtype}; expected one of "
                            f"{sorted(layout.STATE_DTYPES)} in native byte order")
        out[key] = value
    return out


def _utf8(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _numeric_array(value, what):
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise TypeError(f"{what} must be a numeric array, got {type(value).__name__}")
    value = np.asarray(value)
    if value.dtype.kind not in "biufc":
        raise TypeError(f"{what} must be a numeric array, got dtype {value.dtype}")
    return np.asarray(value, order="C")      # (ascontiguousarray would make a 0-d array 1-d)
