"""Saving and loading a model (and, optionally, training state beside it) as plain files.

A model folder written by ``save(path, model, params, state=..., meta=...)`` holds:

* ``config.json``: ``{"format", "version", "model": model.get_config(), "input_dim",
  "params": {key: {"shape", "dtype"}}, "files": {name: {"size", "sha256"}}}``, plus
  ``"state": {"structure", "arrays"}`` when a state was saved and ``"meta"`` (any plain JSON the
  caller passed, e.g. an optimizer's step count, ``rng.bit_generator.state``, the epoch, the
  history);
* ``params.npz``: one uncompressed ``.npy`` member per param, keyed by its path in the params
  tree (``network/layer_0/kernel_posterior_loc``), written in C order without pickling;
* ``state.npz``: the arrays of ``state`` (a nested dict, e.g. Adam's moments), the same way.

One save is one unit. ``config.json`` records the size and sha256 of the other files, and ``load``
checks them: a folder whose files come from two saves (copied in from another run, or read while
another process replaced the folder) never loads as a model. ``load`` opens the folder once and
its files relative to it, so a reader racing a writer sees one save or the next, and retries when
the folder it opened was replaced and removed under it.

Saving is atomic: everything is written into a temporary sibling folder ``.NAME.saving-XXXX``
(locked while it is written), each file and the folder are fsynced, and only then does the folder
take the place of ``path`` (one ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames,
the previous folder set aside as ``.NAME.saving-XXXX-previous`` in between, which the next
``save`` or ``load`` puts back if a crash left no folder at ``path``). Any failure before the
commit (a full disk, a file-size limit, an exception, Ctrl-C) removes the temporary folder and
leaves the previous model untouched; the temporary folders of killed saves are removed by the next
save of the same path once no process holds their lock.

``save`` never deletes what it did not write: it replaces only an empty folder or a folder it can
prove is an lrtdense model (its ``config.json`` parses as one, every other entry is one of the
model's regular files, of the size and digest the config records). Anything else is refused with
a message naming the entry.

Loading is bounded by the files on disk and never executes code (JSON and ``.npy`` headers only,
no pickle). The expected key, shape and dtype of every param are computed from the config (the
layers' ``param_shapes``, walking ``model.network.layers``; nothing is initialized); the state's
are read from the config. Before anything is allocated, ``load`` checks that the zip directory
names exactly the expected members, stored uncompressed, whose declared sizes match the expected
shapes and fit in the file; it then reads each member's ``.npy`` header and refuses a shape,
dtype or memory order that differs. Peak memory is the size of the arrays, plus a zip directory
bounded by the number of expected members, one 1 MB buffer and the parsed config (at most
``MAX_CONFIG_BYTES`` = 4 MB of JSON, which parses to at most ~100 MB of Python objects). Every
malformed file is a ``ValueError`` naming the file and what is wrong.
"""
import collections
import ctypes
import errno
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import stat
import struct
import sys
import time
import zipfile

import numpy as np

from lrtdense import tree
from lrtdense.bounded import directory_size
from lrtdense.model import Model

try:
    import fcntl
except ImportError:                         # Windows: no advisory locks; stale folders by age
    fcntl = None

__all__ = ["save", "load", "read_meta", "check_save_target", "FORMAT", "VERSION", "FILES",
           "MAX_CONFIG_BYTES", "MAX_JSON_DEPTH"]

FORMAT = "lrtdense-model"
VERSION = 2                     # 2 added "files" (sizes and digests); version 1 still loads
FILES = ("config.json", "params.npz", "state.npz")
MAX_CONFIG_BYTES = 4 << 20      # JSON parses to at most ~25x its size in objects: ~100 MB
MAX_JSON_DEPTH = 64             # a model config nests 6 deep; meta is for small records
MAX_INT_BITS = 1024             # meta's ints (a PCG64 state is 128-bit)
STALE_SECONDS = 2.0             # an unlocked temporary folder older than this is a killed save's
_LOAD_ATTEMPTS = 5              # a load that raced a save starts again this many times at most
_MAX_NPY_HEADER = 10000         # numpy's own max_header_size (np.save writes 128 bytes)
_MAX_ENTRY_EXTRA = 1024         # extra field and comment allowed per zip directory entry
_CHUNK = 1 << 20                # bytes read per call: the only buffer beside the arrays
_ZIP_FLAGS_OK = 0x08 | 0x800    # data descriptor, UTF-8 names; others mean encryption or patches
_STATE_DTYPES = {name: np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")}
_CONFIG_KEYS = {"format", "version", "model", "input_dim", "params", "state", "meta", "files"}
_SAVING = ".saving-"
# Errors the zipfile module raises on a corrupted directory or local header.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
               OverflowError, struct.error, NotImplementedError, RuntimeError, UnicodeDecodeError,
               IndexError, KeyError)


# ------------------------------------------------------------------------------------- save
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
    flat, input_dim = _checked_params(model, params)
    config = {"format": FORMAT, "version": VERSION, "model": model.get_config(),
              "input_dim": input_dim, "params": {k: _spec_entry(v) for k, v in flat.items()}}
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
    files_room = 200 * len(arrays)              # what "files" adds to the text below
    if len(json.dumps(config, indent=1, allow_nan=False)) + files_room > MAX_CONFIG_BYTES:
        raise ValueError(f"the config (model, listing and meta) would exceed "
                         f"{MAX_CONFIG_BYTES} bytes of JSON; keep large records out of meta "
                         f"(arrays belong in the state)")

    target = os.path.realpath(path)
    parent, name = os.path.split(target)
    if not name:
        raise ValueError(f"cannot save a model as {path!r}: expected a path naming a folder")
    check_save_target(path)
    _remove_stale(parent, name)
    tmp, lock = _make_sibling(parent, name)
    old = None
    try:
        config["files"] = {filename: _write_file(os.path.join(tmp, filename),
                                                 lambda f, m=members: _write_npz(f, m))
                           for filename, members in arrays.items()}
        text = json.dumps(config, indent=1, allow_nan=False).encode()
        _write_file(os.path.join(tmp, "config.json"), lambda f: f.write(text))
        _fsync_dir(tmp)
        old = _put_in_place(tmp, target)        # the commit point
        _fsync_dir(parent)
    except BaseException:
        if old is None:                         # not committed: only the new copy to remove
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _unlock(lock)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


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
    _recover(target)
    for _ in range(_LOAD_ATTEMPTS):
        before = _identity(target)
        try:
            problem = _not_replaceable(target)
        except FileNotFoundError:
            problem = "its files vanished while they were read"
        if not problem or _identity(target) == before:
            break                               # else a save replaced it meanwhile: again
    if problem:
        raise ValueError(f"{path} {problem}; refusing to replace it (save to a new folder, or "
                         f"move it away yourself)")


def _identity(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _not_replaceable(target):
    """Why ``save`` may not replace ``target``, or "" if it may (absent, empty, or a model)."""
    if not os.path.lexists(target):
        return ""
    if not os.path.isdir(target):
        return "exists and is not a folder"
    entries = sorted(os.listdir(target))
    others = [e for e in entries if e not in FILES]
    if others:
        return f"holds files other than a saved model's ({_short(others[:5])})"
    if not entries:
        return ""
    problem = _not_a_model(target, entries)
    return f"is not a folder lrtdense saved: {problem}" if problem else ""


def _not_a_model(target, entries):
    """Why the folder ``target`` (holding only names in FILES) is not provably a saved model,
    or "" if it is."""
    for entry in entries:
        if not stat.S_ISREG(os.lstat(os.path.join(target, entry)).st_mode):
            return f"{entry} is not a regular file"
    if "config.json" not in entries:
        return "it has no config.json"
    try:
        with open(os.path.join(target, "config.json"), "rb") as f:
            config = _read_config(f, os.path.join(target, "config.json"))
    except ValueError as err:
        return f"config.json is not an lrtdense model config ({_short(err, 120)})"
    recorded = config.get("files")
    if recorded is None:                        # version 1: no digests, the names must fit
        expected = {"params.npz"} | ({"state.npz"} if "state" in config else set())
        if not set(entries) - {"config.json"} <= expected:
            return f"its files {entries} are not those its version-1 config declares"
        return ""
    if not isinstance(recorded, dict) or not set(entries) - {"config.json"} <= set(recorded):
        return f"its files {entries} are not those config.json records ({_short(recorded)})"
    for entry in set(entries) - {"config.json"}:
        try:
            with open(os.path.join(target, entry), "rb") as f:
                problem = _digest_problem(f, recorded[entry])
        except (TypeError, KeyError):
            problem = f"config.json records it as {_short(recorded[entry])}"
        if problem:
            return (f"{entry} is not the file config.json records ({problem}): the folder "
                    f"mixes the files of two saves")
    return ""


def _checked_params(model, params):
    """(params flattened in the model's order, each leaf a C-ordered array; the input dimension
    they imply); raises if they differ from the model's."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an lrtdense.model.Model, got {type(model).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    input_dim = _input_dim_of(model, params)
    spec = _param_spec(model, input_dim)
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


def _make_sibling(parent, name):
    """A new temporary folder beside ``name`` and the lock that marks it as being written."""
    while True:
        tmp = os.path.join(parent, f".{name}{_SAVING}{secrets.token_hex(4)}")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        return tmp, _lock(tmp, blocking=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _lock(folder, blocking):
    """An exclusive advisory lock on ``folder`` (an open descriptor, or True where the platform
    has no locks); None if ``blocking`` is False and another process holds it."""
    if fcntl is None:
        return True
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(lock):
    if lock is not True and lock is not None:
        os.close(lock)                          # closing the descriptor releases the lock


def _temporaries(parent, name):
    """The temporary folders that saves of ``name`` made in ``parent`` (folders, not links)."""
    prefix = f".{name}{_SAVING}"
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, e) for e in sorted(entries)
            if e.startswith(prefix) and _is_folder(os.path.join(parent, e))]


def _is_folder(path):
    """A folder, not a link to one (False for what another save removed meanwhile)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_stale(parent, name):
    """Removes what killed saves of ``name`` left: temporary folders that no process holds
    locked, older than STALE_SECONDS (a live save locks its folder right after making it), and
    holding only a model's files (never anything else)."""
    for folder in _temporaries(parent, name):
        try:
            age = time.time() - os.lstat(folder).st_mtime
            if age < STALE_SECONDS or (fcntl is None and age < 3600):
                continue
            lock = _lock(folder, blocking=False)
        except OSError:
            continue                            # removed meanwhile, or not ours to open
        if lock is None:
            continue                            # a save in progress
        try:
            entries = os.listdir(folder)
            if all(e in FILES and stat.S_ISREG(os.lstat(os.path.join(folder, e)).st_mode)
                   for e in entries):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass
        finally:
            _unlock(lock)


def _recover(target):
    """Where a crash between the two renames of the non-Linux path left no folder at ``target``,
    puts the previous model (set aside as ``.NAME.saving-XXXX-previous``) back."""
    if os.path.lexists(target):
        return
    parent, name = os.path.split(target)
    for folder in reversed(_temporaries(parent, name)):
        if folder.endswith("-previous") and os.path.isfile(os.path.join(folder, "config.json")):
            try:
                os.rename(folder, target)
            except OSError:
                continue                        # another process got there first
            return


def _write_file(filename, write):
    """Writes and fsyncs a new file; returns its {"size", "sha256"} as read back from disk."""
    with open(filename, "x+b") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        return _digest(f)


def _digest(f):
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        h.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def _digest_problem(f, recorded):
    """Why the open file ``f`` is not the one ``recorded`` ({"size", "sha256"}) describes ("" if
    it is); its size is compared before anything is read."""
    size = os.fstat(f.fileno()).st_size
    if size != recorded["size"]:
        return f"{size} bytes, config.json records {recorded['size']}"
    f.seek(0)
    digest = _digest(f)["sha256"]
    f.seek(0)
    if digest != recorded["sha256"]:
        return f"sha256 {digest[:16]}..., config.json records {recorded['sha256'][:16]}..."
    return ""


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
      ValueError: a missing or malformed file, or files of two saves (the message names the
        file and the problem).
    """
    for _ in range(_LOAD_ATTEMPTS):
        try:
            return _load_once(path, with_state)
        except _Replaced:
            continue                            # a save replaced the folder while it was read
    raise ValueError(f"{path} was replaced by other saves {_LOAD_ATTEMPTS} times while it was "
                     f"being read; try again when the process writing it pauses")


class _Replaced(Exception):
    """The folder being read was replaced by a save meanwhile: start again."""


class _Folder:
    """The folder opened once: its files are opened relative to it, so they all come from the
    folder as it was when it was opened (where the platform supports ``dir_fd``)."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        if os.open in os.supports_dir_fd and os.path.isdir(path):
            try:
                self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                self.fd = None

    def open(self, name, required):
        """The file ``name`` opened for reading, or None if absent and not ``required``."""
        where = os.path.join(self.path, name)
        try:
            if self.fd is None:
                fd = os.open(where, os.O_RDONLY)
            else:
                fd = os.open(name, os.O_RDONLY, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            if self.replaced():
                raise _Replaced() from None     # the folder is being removed after a swap
            if required:
                raise ValueError(f"{where} does not exist or is not a regular file; expected a "
                                 f"folder written by lrtdense.io.save") from None
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            if not required:
                raise ValueError(f"{where} is not a regular file")
            raise ValueError(f"{where} does not exist or is not a regular file; expected a "
                             f"folder written by lrtdense.io.save")
        return os.fdopen(fd, "rb")

    def replaced(self):
        """True if ``path`` no longer names the folder that was opened."""
        if self.fd is None:
            return False
        then = os.fstat(self.fd)
        try:
            now = os.stat(self.path)
        except OSError:
            return True
        return (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)


def _load_once(path, with_state):
    target = _readable_folder(path)
    folder = _Folder(target)
    files = []
    try:
        config_path = os.path.join(path, "config.json")
        params_path = os.path.join(path, "params.npz")
        state_path = os.path.join(path, "state.npz")
        config_file = folder.open("config.json", required=True)
        files.append(config_file)
        params_file = folder.open("params.npz", required=True)
        files.append(params_file)
        state_file = folder.open("state.npz", required=False) if with_state else None
        if state_file is not None:
            files.append(state_file)
        config = _read_config(config_file, config_path)
        recorded = config.get("files")
        if recorded is not None:
            _check_files(recorded, config, config_path)
            _check_same_save(folder, path, config_file, recorded,
                             {"params.npz": params_file, "state.npz": state_file})
        model, input_dim = _model_from_config(config, config_path)
        spec = _param_spec(model, input_dim, config_path)
        _check_listing(config["params"], {k: _spec_json(*v) for k, v in spec.items()},
                       f"{config_path}: the 'params' listed do not match the model's for "
                       f"input_dim {input_dim}")
        flat = _read_npz(params_file, params_path, spec)
        params = {"network": {}, "likelihood": {}}
        params.update(tree.unflatten(flat))
        if not with_state:
            return model, params
        meta = config.get("meta", {})
        if "state" not in config:
            if state_file is not None:
                raise ValueError(f"{state_path} exists but {config_path} declares no state")
            return model, params, {}, meta
        structure, state_spec = _state_spec(config["state"], config_path)
        if state_file is None:
            raise ValueError(f"{state_path} does not exist; {config_path} declares a state")
        state_flat = _read_npz(state_file, state_path, state_spec)
        return model, params, tree.map_with_path(lambda path, _: state_flat[path], structure), meta
    finally:
        for f in files:
            f.close()
        folder.close()


def read_meta(path):
    """The meta saved in the model folder ``path`` ({} if none), or None if ``path`` holds no
    config.json; only the config is read (bounded, as ``load`` reads it).

    Raises:
      ValueError: a malformed config.json.
    """
    config_path = os.path.join(_readable_folder(path), "config.json")
    try:
        with open(config_path, "rb") as f:
            return _read_config(f, config_path).get("meta", {})
    except (FileNotFoundError, NotADirectoryError):
        return None


def _readable_folder(path):
    """``path``, or the previous model a crash between two renames left set aside."""
    target = os.path.realpath(path)
    if os.path.lexists(target):
        return path
    parent, name = os.path.split(target)
    for folder in reversed(_temporaries(parent, name)):
        if folder.endswith("-previous") and os.path.isfile(os.path.join(folder, "config.json")):
            return folder
    return path


def _check_files(recorded, config, config_path):
    expected = {"params.npz"} | ({"state.npz"} if "state" in config else set())
    ok = isinstance(recorded, dict) and set(recorded) == expected and all(
        isinstance(v, dict) and set(v) == {"size", "sha256"} and type(v["size"]) is int
        and v["size"] >= 0 and isinstance(v["sha256"], str) and len(v["sha256"]) == 64
        for v in recorded.values())
    if not ok:
        raise ValueError(f"{config_path}: 'files' must map {sorted(expected)} to "
                         f"{{'size': bytes, 'sha256': 64 hex digits}}, got {_short(recorded)}")


def _check_same_save(folder, path, config_file, recorded, opened):
    """Raises unless every file matches the size and digest config.json records: _Replaced if
    config.json changed meanwhile (a save raced this load), a ValueError otherwise."""
    for name, f in opened.items():
        if f is None or name not in recorded:
            continue
        problem = _digest_problem(f, recorded[name])
        if not problem:
            continue
        if _changed(folder, path, config_file):
            raise _Replaced()
        raise ValueError(f"{os.path.join(path, name)} is not the file {path}/config.json "
                         f"records ({problem}): the folder mixes the files of two saves (copied "
                         f"in from another run or epoch?); restore the matching file or save "
                         f"again")


def _changed(folder, path, config_file):
    """True if the config.json now at ``path`` is not the one that was read."""
    try:
        with open(os.path.join(path, "config.json"), "rb") as f:
            now = os.fstat(f.fileno())
    except OSError:
        return True
    then = os.fstat(config_file.fileno())
    return (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev)


def _read_config(f, config_path):
    """The parsed config.json from the open file ``f``, bounded in size and depth."""
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
    version = config.get("version")
    if type(version) is not int or version not in (1, VERSION):
        raise ValueError(f"{config_path} has format version {_short(version)}; this "
                         f"lrtdense reads versions 1 and {VERSION}")
    if ("files" in config) != (version >= 2):
        raise ValueError(f"{config_path}: format version {version} "
                         f"{'requires' if version >= 2 else 'has no'} 'files' (sizes and digests)")
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
    """The input size the first layer's params imply (its own ``check_params`` decides: a
    kernel's first dimension, or DenseVariational's flat posterior size)."""
    first = model.network.names[0]
    try:
        layer_params = params["network"][first]
    except (KeyError, TypeError) as err:
        raise ValueError(f"params have no network/{first} ({_short(err)})") from None
    try:
        return int(model.network.layers[0].check_params(layer_params))
    except (TypeError, ValueError) as err:
        raise ValueError(f"params['network'][{first!r}] do not fit the first layer: "
                         f"{_short(err, 400)}") from None


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




def _read_npz(f, path, spec):
    """The arrays of ``spec`` ({key: (shape, dtype)}) from the .npz open as ``f`` (named ``path``
    in messages), each checked against the zip directory and its .npy header before it is
    allocated."""
    f.seek(0)
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
    directory = directory_size(f, size)       # zipfile parses all it declares: bounded first
    allowed = sum(46 + len(key.encode()) + 4 + _MAX_ENTRY_EXTRA for key in spec)
    if directory is not None and directory[0] > allowed:
        raise ValueError(f"{path} declares a zip directory of {directory[0]} bytes; "
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
