"""Saving and loading a model (and, optionally, training state beside it) as plain files.

A model folder written by ``save(path, model, params, state=..., meta=...)`` holds:

* ``config.json``: ``{"format", "version", "model": model.get_config(), "input_dim",
  "params": {key: {"shape", "dtype"}}}``, plus ``"state": {"structure", "arrays"}`` when a state
  was saved and ``"meta"`` (any plain JSON the caller passed, e.g. an optimizer's step count,
  ``rng.bit_generator.state``, the epoch, the history);
* ``params.npz``: one uncompressed ``.npy`` member per param, keyed by its path in the params
  tree (``network/layer_0/kernel_posterior_loc``), written in C order without pickling;
* ``state.npz``: the arrays of ``state`` (a nested dict, e.g. Adam's moments), the same way.

Saving is atomic: everything is written into a temporary sibling folder ``.NAME.saving-XXXX``,
each file and the folder are fsynced, and only then does the folder take the place of ``path``
(one ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, undone if the second fails).
Any failure before that point (a full disk, a file-size limit, an exception, Ctrl-C) removes the
temporary folder and leaves the previous model untouched. ``save`` refuses to replace a folder
that holds anything but a model's files, so it never deletes a user's other files.

Loading is bounded by the files on disk and never executes code (JSON and ``.npy`` headers only,
no pickle). The expected key, shape and dtype of every param are computed from the config (the
layers' ``param_shapes``, walking ``model.network.layers``; nothing is initialized); the state's
are read from the config. Before anything is allocated, ``load`` checks that the zip directory
names exactly the expected members, stored uncompressed, whose declared sizes match the expected
shapes and fit in the file; it then reads each member's ``.npy`` header and refuses a shape,
dtype or memory order that differs. Peak memory is the size of the arrays, plus a zip directory
bounded by the number of expected members, one 1 MB buffer and the config (at most
``MAX_CONFIG_BYTES`` of JSON). Every malformed file is a ``ValueError`` naming the file and what
is wrong.
"""
import collections
import ctypes
import errno
import io
import json
import math
import os
import secrets
import shutil
import struct
import sys
import zipfile

import numpy as np

from lrtdense import tree
from lrtdense.model import Model

__all__ = ["save", "load", "FORMAT", "VERSION", "FILES", "MAX_CONFIG_BYTES", "MAX_JSON_DEPTH"]

FORMAT = "lrtdense-model"
VERSION = 1
FILES = ("config.json", "params.npz", "state.npz")
MAX_CONFIG_BYTES = 16 << 20     # JSON parses to at most ~25x its size in objects: < 0.5 GB
MAX_JSON_DEPTH = 64             # a model config nests 6 deep; meta is for small records
MAX_INT_BITS = 1024             # meta's ints (a PCG64 state is 128-bit)
_MAX_NPY_HEADER = 10000         # numpy's own max_header_size (np.save writes 128 bytes)
_MAX_ENTRY_EXTRA = 1024         # extra field and comment allowed per zip directory entry
_CHUNK = 1 << 20                # bytes read per call: the only buffer beside the arrays
_ZIP_FLAGS_OK = 0x08 | 0x800    # data descriptor, UTF-8 names; others mean encryption or patches
_STATE_DTYPES = {name: np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")}
_CONFIG_KEYS = {"format", "version", "model", "input_dim", "params", "state", "meta"}
# Errors the zipfile module raises on a corrupted directory or local header.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
               OverflowError, struct.error, NotImplementedError, RuntimeError, UnicodeDecodeError,
               IndexError, KeyError)


# ------------------------------------------------------------------------------------- save
def save(path, model, params, *, state=None, meta=None):
    """Writes the model folder ``path`` atomically (see the module docstring).

    Args:
      path: the folder to write; its parent must exist. An existing model folder there is
        replaced; any other existing file or folder is refused.
      model: a ``Model``.
      params: its params, ``{"network": {...}, "likelihood": {...}}``, of the model's shapes and
        dtype (any memory order; written in C order).
      state: optional nested dict (string keys) whose leaves are numeric arrays or scalars, e.g.
        ``{"m": ..., "v": ...}``; leaves come back as arrays, empty dicts are kept.
      meta: optional dict of plain JSON: str keys; values None, bool, int (at most 1024 bits),
        finite float, str, list or dict. Encode NaN or infinities yourself (e.g. as strings).
    Raises:
      ValueError: params that do not match the model, a bad state or meta, or a ``path`` that
        is not a model folder.
      TypeError: a leaf of params or state that is not a numeric array.
      OSError: from the file system; the previous model at ``path`` is then untouched.
    """
    flat = _checked_params(model, params)
    config = {"format": FORMAT, "version": VERSION, "model": model.get_config(),
              "input_dim": _input_dim_of(model, params),
              "params": {k: _spec_entry(v) for k, v in flat.items()}}
    arrays = {"params.npz": flat}
    if state is not None:
        state_flat = _checked_state(state)
        config["state"] = {"structure": tree.structure(state),
                           "arrays": {k: _spec_entry(v) for k, v in state_flat.items()}}
        arrays["state.npz"] = state_flat
    if meta is not None:
        _check_json(meta, "meta")
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        config["meta"] = meta
    text = json.dumps(config, indent=1, allow_nan=False)

    target = os.path.realpath(path)
    parent, name = os.path.split(target)
    if not name:
        raise ValueError(f"cannot save a model as {path!r}: expected a path naming a folder")
    _check_replaceable(target, path)
    tmp = _make_sibling(parent, name)
    old = None
    try:
        _write_file(os.path.join(tmp, "config.json"), lambda f: f.write(text.encode()))
        for filename, members in arrays.items():
            _write_file(os.path.join(tmp, filename), lambda f, m=members: _write_npz(f, m))
        _fsync_dir(tmp)
        old = _put_in_place(tmp, target)        # the commit point
        _fsync_dir(parent)
    except BaseException:
        if old is None:                         # not committed: only the new copy to remove
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _checked_params(model, params):
    """params flattened in the model's order, each leaf a C-ordered array; raises if they differ."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an lrtdense.model.Model, got {type(model).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    spec = _param_spec(model, _input_dim_of(model, params))
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
    return out


def _checked_state(state):
    if not isinstance(state, dict):
        raise TypeError(f"state must be a nested dict of arrays, got {type(state).__name__}")
    _check_depth(state, "state")
    flat = tree.flatten(state)
    out = {}
    for key, value in flat.items():
        if "\x00" in key or not _utf8(key):
            raise ValueError(f"state key {key!r} cannot name a zip member; expected UTF-8 "
                             f"text without NUL")
        value = _numeric_array(value, f"state[{key!r}]")
        if value.dtype.name not in _STATE_DTYPES or not value.dtype.isnative:
            raise TypeError(f"state[{key!r}] has dtype {value.dtype}; expected one of "
                            f"{sorted(_STATE_DTYPES)} in native byte order")
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


def _spec_entry(array):
    return {"shape": list(array.shape), "dtype": array.dtype.name}


def _check_replaceable(target, path):
    """Refuses to replace anything but a folder holding only a model's files."""
    if not os.path.lexists(target):
        return
    if not os.path.isdir(target):
        raise ValueError(f"{path} exists and is not a folder; refusing to replace it with a model")
    others = sorted(set(os.listdir(target)) - set(FILES))
    if others:
        raise ValueError(f"{path} holds files other than a saved model's ({others[:5]}); "
                         f"refusing to replace it (save to a new folder instead)")


def _make_sibling(parent, name):
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, "the folder to save into does not exist", parent)
    while True:
        tmp = os.path.join(parent, f".{name}.saving-{secrets.token_hex(4)}")
        try:
            os.mkdir(tmp)
            return tmp
        except FileExistsError:
            continue


def _write_file(filename, write):
    with open(filename, "xb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _write_npz(f, arrays):
    """An uncompressed .npz, as ``np.savez`` writes it, but never pickling."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_in_place(tmp, target):
    """Moves folder ``tmp`` to ``target``; returns where the previous target now is (or None)."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return None
    if _exchange(tmp, target):
        return tmp
    aside = tmp + "-previous"
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def _exchange(a, b):
    """Atomically swaps two paths (Linux renameat2); False where the call does not exist."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


# ------------------------------------------------------------------------------------- load
def load(path, *, with_state=False):
    """Reads a model folder written by ``save``, in bounded memory (see the module docstring).

    Args:
      path: the folder.
      with_state: also read the state and meta saved beside the model.
    Returns:
      ``(model, params)``; with ``with_state=True``, ``(model, params, state, meta)`` where
      state is the saved nested dict of arrays and meta the saved dict ({} for either when
      none was saved).
    Raises:
      ValueError: a missing or malformed file (the message names the file and the problem).
    """
    config_path = os.path.join(path, "config.json")
    params_path = os.path.join(path, "params.npz")
    state_path = os.path.join(path, "state.npz")
    for p in (config_path, params_path):
        if not os.path.isfile(p):
            raise ValueError(f"{p} does not exist or is not a regular file; expected a folder "
                             f"written by lrtdense.io.save")
    config = _read_config(config_path)
    model, input_dim = _model_from_config(config, config_path)
    spec = _param_spec(model, input_dim, config_path)
    _check_listing(config["params"], {k: _spec_json(*v) for k, v in spec.items()},
                   f"{config_path}: the 'params' listed do not match the model's for input_dim "
                   f"{input_dim}")
    flat = _read_npz(params_path, spec)
    params = {"network": {}, "likelihood": {}}
    params.update(tree.unflatten(flat))
    if not with_state:
        return model, params
    meta = config.get("meta", {})
    if "state" not in config:
        if os.path.lexists(state_path):
            raise ValueError(f"{state_path} exists but {config_path} declares no state")
        return model, params, {}, meta
    structure, state_spec = _state_spec(config["state"], config_path)
    if not os.path.isfile(state_path):
        raise ValueError(f"{state_path} does not exist; {config_path} declares a state")
    state_flat = _read_npz(state_path, state_spec)
    return model, params, _fill(structure, state_flat, ""), meta


def _read_config(config_path):
    with open(config_path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes; a model "
                         f"config is a few KB (put large arrays in the state)")
    try:
        config = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant,
                            parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({type(err).__name__}: "
                         f"{str(err)[:200]}); the file is corrupted") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not an lrtdense model config (format != {FORMAT!r})")
    if config.get("version") != VERSION:
        raise ValueError(f"{config_path} has format version {_short(config.get('version'))}; this "
                         f"lrtdense reads version {VERSION}")
    try:
        _check_depth(config, "the config")
        if "meta" in config:
            _check_json(config["meta"], "meta")
    except ValueError as err:
        raise ValueError(f"{config_path}: {_short(err)}") from None
    extra = sorted(set(config) - _CONFIG_KEYS)
    missing = sorted({"model", "input_dim", "params"} - set(config))
    if extra or missing:
        raise ValueError(f"{config_path}: missing keys {missing}, unexpected keys {_short(extra)}")
    if "meta" in config and not isinstance(config["meta"], dict):
        raise ValueError(f"{config_path}: meta must be a dict, got {type(config['meta']).__name__}")
    return config


def _refuse_constant(name):
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} overflows a float")
    return value


def _unique_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {_short(key)}")
        out[key] = value
    return out


def _model_from_config(config, config_path):
    input_dim = config["input_dim"]
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or not 1 <= input_dim < 2 ** 62:
        raise ValueError(f"{config_path}: input_dim must be an integer in [1, 2**62), got "
                         f"{_short(input_dim)}")
    try:
        model = Model.from_config(config["model"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as err:
        raise ValueError(f"{config_path}: invalid model config: {_short(err)}") from None
    return model, input_dim


def _param_spec(model, input_dim, where="the model"):
    """{key: (shape, dtype)} of the params in init order, from the settings alone."""
    spec, dim = {}, input_dim
    try:
        for name, layer in zip(model.network.names, model.network.layers):
            dtype = np.dtype(layer.dtype)
            for key, shape in layer.param_shapes(dim).items():
                spec[f"network/{name}/{key}"] = (tuple(int(d) for d in shape), dtype)
            dim = layer.units
        for key, value in model.likelihood.init(model.dtype).items():
            value = np.asarray(value)
            spec[f"likelihood/{key}"] = (value.shape, value.dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{where}: the model's params cannot be laid out: {_short(err)}") from None
    for key, (shape, dtype) in spec.items():
        if not all(0 <= d < 2 ** 62 for d in shape) or math.prod(shape) * dtype.itemsize >= 2 ** 62:
            raise ValueError(f"{where}: {key} would have shape {_short(shape)}: larger than any "
                             f"array (check units and input_dim)")
    return spec


def _input_dim_of(model, params):
    """The input size implied by the first layer's kernel (its first weight, shape (in, units))."""
    first = model.network.layers[0].weight_names()[0]
    try:
        shape = np.shape(params["network"]["layer_0"][first])
    except (KeyError, TypeError) as err:
        raise ValueError(f"params have no network/layer_0/{first} ({_short(err)})") from None
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"params['network']['layer_0'][{first!r}] has shape {shape}; "
                         f"expected (input_dim, units)")
    return int(shape[0])


def _check_listing(listed, expected, where):
    if listed == expected:
        return
    if not isinstance(listed, dict):
        raise ValueError(f"{where}: expected a dict, got {type(listed).__name__}")
    missing, extra = sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected))
    if missing or extra:
        raise ValueError(f"{where}: missing {_short(missing)}, unexpected {_short(extra)}")
    key = next(k for k in expected if listed[k] != expected[k])
    raise ValueError(f"{where}: {key} is listed as {_short(listed[key])}, the model has "
                     f"{_short(expected[key])}")


def _spec_json(shape, dtype):
    return {"shape": list(shape), "dtype": dtype.name}


def _state_spec(entry, config_path):
    """(structure, {key: (shape, dtype)}) of the state declared in the config."""
    if not isinstance(entry, dict) or set(entry) != {"structure", "arrays"}:
        raise ValueError(f"{config_path}: state must be a dict with keys 'structure' and "
                         f"'arrays'")
    structure, arrays = entry["structure"], entry["arrays"]
    try:
        if not isinstance(structure, dict) or not isinstance(arrays, dict):
            raise ValueError("structure and arrays must be dicts")
        paths = tree.flatten(structure)
        if any(leaf != "*" for leaf in paths.values()):
            raise ValueError("the structure's leaves must be '*'")
        if set(paths) != set(arrays):
            raise ValueError(f"the structure has leaves {_short(sorted(paths))} but arrays "
                             f"lists {_short(sorted(arrays))}")
        spec = {}
        for key in paths:
            item = arrays[key]
            if not isinstance(item, dict) or set(item) != {"shape", "dtype"}:
                raise ValueError(f"arrays[{_short(key)}] must be a dict with 'shape' and 'dtype'")
            shape, dtype = item["shape"], item["dtype"]
            if (not isinstance(shape, list) or len(shape) > 32 or
                    not all(type(d) is int and 0 <= d < 2 ** 62 for d in shape)):
                raise ValueError(f"arrays[{_short(key)}] has shape {_short(shape)}; expected a list of "
                                 f"at most 32 integers >= 0")
            if not isinstance(dtype, str) or dtype not in _STATE_DTYPES:
                raise ValueError(f"arrays[{_short(key)}] has dtype {_short(dtype)}; expected one of "
                                 f"{sorted(_STATE_DTYPES)}")
            spec[key] = (tuple(shape), _STATE_DTYPES[dtype])
            if math.prod(shape) * spec[key][1].itemsize >= 2 ** 62:
                raise ValueError(f"arrays[{_short(key)}] has shape {_short(shape)}: larger than any array")
    except ValueError as err:
        raise ValueError(f"{config_path}: invalid state: {err}") from None
    return structure, spec


def _fill(structure, flat, prefix):
    return {k: _fill(v, flat, prefix + k + tree.SEP) if isinstance(v, dict) else flat[prefix + k]
            for k, v in structure.items()}


def _read_npz(path, spec):
    """The arrays of ``spec`` ({key: (shape, dtype)}) from the .npz at ``path``, each checked
    against the zip directory and its .npy header before it is allocated."""
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path} is a plain .npy file; expected an .npz archive written by "
                             f"lrtdense.io.save")
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        need = sum(math.prod(shape) * dtype.itemsize for shape, dtype in spec.values())
        if need > size:
            raise ValueError(f"{path} holds {size} bytes but its config declares "
                             f"{_short(need)} bytes of arrays; the file is truncated or the "
                             f"config's sizes are wrong")
        directory = _directory_size(f, size)
        allowed = sum(46 + len(key.encode()) + 4 + _MAX_ENTRY_EXTRA for key in spec)
        if directory is not None and directory > allowed:
            raise ValueError(f"{path} declares a zip directory of {directory} bytes; "
                             f"{len(spec)} members need at most {allowed}")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except _ZIP_ERRORS as err:
            raise ValueError(f"{path} could not be read as a plain .npz ({type(err).__name__}: "
                             f"{_short(err)}); the file is corrupted or is not an .npz") from None
        with zf:
            infos = _checked_directory(zf, spec, size, path)
            out = {}
            for key, (shape, dtype) in spec.items():
                try:
                    with zf.open(infos[key]) as member:
                        out[key] = _read_member(member, infos[key], shape, dtype)
                except ValueError as err:
                    raise ValueError(f"{path}: member {_short(key + '.npy')}: {err}") from None
                except _ZIP_ERRORS as err:
                    raise ValueError(f"{path} could not be read: member {_short(key + '.npy')} is "
                                     f"corrupted ({type(err).__name__}: {_short(err)})") from None
    return out


def _directory_size(f, size):
    """The size of the central directory as the zip's end record declares it (the larger of the
    classic and the zip64 values; None without an end record, which zipfile then reports).

    zipfile parses as many entries as this size holds, each into a ~300-byte object, so it is
    checked against the expected members first (APPNOTE 4.3.14-4.3.16)."""
    tail_size = min(size, 22 + 65535)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    declared = struct.unpack("<I", tail[at + 12:at + 16])[0]
    end = size - tail_size + at                  # the end record's offset in the file
    if end >= 76:                                # a zip64 record (56) and its locator (20)
        f.seek(end - 76)
        record = f.read(76)
        if record[:4] == b"PK\x06\x06" and record[56:60] == b"PK\x06\x07":
            declared = max(declared, struct.unpack("<Q", record[40:48])[0])
    return declared


def _checked_directory(zf, spec, size, path):
    """{key: ZipInfo} after checking names, compression, flags and sizes (nothing read yet)."""
    infos = zf.infolist()
    names = [info.filename for info in infos]
    wanted = {key + ".npy": key for key in spec}
    duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    missing = sorted(set(wanted) - set(names))
    extra = sorted(set(names) - set(wanted))
    if duplicates or missing or extra:
        raise ValueError(f"{path} does not hold the expected arrays: missing {_short(missing)}, "
                         f"unexpected {_short(extra)}, duplicated {_short(duplicates)}")
    total = 0
    by_key = {}
    for info in infos:
        key = wanted[info.filename]
        shape, dtype = spec[key]
        nbytes = math.prod(shape) * dtype.itemsize
        where = f"{path}: member {_short(info.filename)}"
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{where} is compressed (method {info.compress_type}); lrtdense "
                             f"reads only the uncompressed members np.savez and save write")
        if info.flag_bits & ~_ZIP_FLAGS_OK:
            raise ValueError(f"{where} has zip flags {info.flag_bits:#x} (encrypted or "
                             f"patched data); expected a plain stored member")
        if not nbytes + 10 <= info.file_size <= nbytes + _MAX_NPY_HEADER:
            raise ValueError(f"{where} declares {info.file_size} bytes; an array of shape "
                             f"{_short(shape)} and dtype {dtype} with its header needs "
                             f"{nbytes + 10} to {nbytes + _MAX_NPY_HEADER}")
        if info.compress_size != info.file_size:
            raise ValueError(f"{where} declares {info.compress_size} stored bytes for "
                             f"{info.file_size} bytes of data; the zip directory is corrupted")
        if info.header_offset + info.compress_size > size:
            raise ValueError(f"{where} extends past the end of the file; the file is truncated")
        total += info.compress_size
        by_key[key] = info
    if total > size:
        raise ValueError(f"{path}: its members declare {total} bytes in a file of {size}; the "
                         f"zip directory is corrupted")
    return by_key


def _read_member(member, info, shape, dtype):
    """One .npy member: its header (bounded) checked against (shape, dtype), then its data."""
    nbytes = math.prod(shape) * dtype.itemsize
    header_size = info.file_size - nbytes
    head = io.BytesIO(_read_exactly(member, header_size, "the .npy header"))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(head, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(head, max_header_size=_MAX_NPY_HEADER)
        else:
            raise ValueError(f".npy format version {version}; expected 1.0 or 2.0")
    except (ValueError, SyntaxError, TypeError, struct.error, EOFError) as err:
        raise ValueError(f"invalid .npy header ({_short(err)})") from None
    got_shape, fortran_order, got_dtype = header
    if got_dtype.hasobject:
        raise ValueError("holds Python objects (a pickled array); expected "
                         f"{dtype} numbers (lrtdense never unpickles)")
    if got_shape != shape or got_dtype != dtype:
        raise ValueError(f"has shape {_short(got_shape)} and dtype {str(got_dtype)[:200]}; expected "
                         f"{_short(shape)} {dtype}")
    if fortran_order:
        raise ValueError("is stored in Fortran order; lrtdense writes C order")
    if head.tell() != header_size:
        raise ValueError(f"the .npy header is {head.tell()} bytes but the zip directory implies "
                         f"{header_size} for an array of shape {_short(shape)} and dtype {dtype}")
    out = np.empty(shape, dtype)
    view = out.reshape(-1).view(np.uint8)
    for start in range(0, nbytes, _CHUNK):
        chunk = view[start:start + _CHUNK]
        if member.readinto(chunk) != len(chunk):
            raise ValueError(f"the data ends before {nbytes} bytes; the file is truncated")
    if member.read(1):
        raise ValueError("has data after the array")
    return out


def _read_exactly(member, n, what):
    data = member.read(n)
    if len(data) != n:
        raise ValueError(f"{what} ends after {len(data)} of {n} bytes; the file is truncated")
    return data


# ------------------------------------------------------------------------------------- JSON
def _check_depth(value, what):
    """Refuses nesting deeper than MAX_JSON_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _check_json(value, where, depth=0):
    """Raises ValueError unless ``value`` is plain JSON that loads back equal to itself."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if type(value) is int:
        if value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"{where} is an integer of {value.bit_length()} bits; at most "
                             f"{MAX_INT_BITS} are stored")
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}; JSON holds finite numbers only (encode it, "
                             f"e.g. as the string {str(value)!r})")
        return
    if type(value) is list:
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
        return
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r} of type {type(key).__name__}; "
                                 f"JSON keys are strings")
            _check_json(item, f"{where}[{key!r}]", depth + 1)
        return
    raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__name__}; expected "
                     f"plain JSON (None, bool, int, float, str, list, dict; arrays belong in "
                     f"the state)")


def _short(value, limit=200):
    """repr(value) cut to ``limit`` characters (and safe for ints too long to print)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value) if not isinstance(value, BaseException) else str(value)
    except ValueError:
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit] + "..."
