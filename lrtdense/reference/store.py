"""Reading and writing reference cases: one directory per case, JSON metadata and ``.npy`` arrays.

Layout of a reference set (see reference_data/SPEC.md)::

    manifest.json                       schema version, case list, sha256 of every file
    cases/<case>/case.json              metadata (config, dtype, tolerances, array keys)
    cases/<case>/inputs/<key>.npy       x, g, params/..., noise/..., ...
    cases/<case>/expected/<key>.npy     outputs/sample, kl/total, grads/..., ...

Keys use "/" for nesting, which maps to sub-directories. Arrays load with ``allow_pickle=False``.
"""
import hashlib
import json
import os
import zipfile

import numpy as np

from lrtdense.reference import SCHEMA_VERSION

__all__ = ["write_case", "read_case", "write_manifest", "read_manifest", "load_results",
           "sha256", "ReferenceError"]


class ReferenceError(ValueError):
    """A reference set or a results directory is missing, corrupt or inconsistent."""


def sha256(path):
    """The hex sha256 digest of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _key_path(root, key):
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ReferenceError(f"invalid array key {key!r}")
    return os.path.join(root, *parts) + ".npy"


def write_case(root, name, meta, inputs, expected):
    """Writes one case under ``root/cases/name``. Returns the list of files (relative to root)."""
    case_dir = os.path.join(root, "cases", name)
    files = []
    for group, arrays in (("inputs", inputs), ("expected", expected)):
        for key, value in arrays.items():
            path = _key_path(os.path.join(case_dir, group), key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            np.save(path, np.ascontiguousarray(value) if np.ndim(value) else np.asarray(value),
                    allow_pickle=False)
            files.append(os.path.relpath(path, root))
    meta = {**meta, "inputs": sorted(inputs), "expected": sorted(expected)}
    path = os.path.join(case_dir, "case.json")
    with open(path, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    files.append(os.path.relpath(path, root))
    return sorted(f.replace(os.sep, "/") for f in files)


def write_manifest(root, cases):
    """cases: dict name -> list of files. Writes manifest.json with a sha256 per file."""
    manifest = {"schema_version": SCHEMA_VERSION, "generator": "lrtdense reference generate",
                "cases": {name: {f: sha256(os.path.join(root, f)) for f in files}
                          for name, files in sorted(cases.items())}}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


def read_manifest(root, check=True):
    """Loads manifest.json; with ``check``, verifies every file's sha256 (ReferenceError if not)."""
    path = os.path.join(root, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ReferenceError(f"{path} not found: is {root!r} a reference set?") from None
    except json.JSONDecodeError as err:
        raise ReferenceError(f"{path} is not valid JSON: {err}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ReferenceError(f"{path}: schema_version {manifest.get('schema_version')!r}, this "
                             f"lrtdense reads {SCHEMA_VERSION}")
    if check:
        for name, files in manifest["cases"].items():
            for rel, digest in files.items():
                full = os.path.join(root, *rel.split("/"))
                if not os.path.isfile(full):
                    raise ReferenceError(f"case {name}: {rel} is listed in the manifest but missing")
                if sha256(full) != digest:
                    raise ReferenceError(f"case {name}: {rel} does not match its sha256 in the "
                                         f"manifest: the reference file was modified or corrupted")
    return manifest


def _load_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ReferenceError(f"{path}: not a plain numeric .npy ({err})") from None
    except (OSError, EOFError) as err:
        raise ReferenceError(f"{path}: unreadable ({err})") from None


def read_case(root, name):
    """Returns (meta, inputs, expected) of one case; arrays keyed like "params/kernel_posterior_loc"."""
    case_dir = os.path.join(root, "cases", name)
    try:
        with open(os.path.join(case_dir, "case.json")) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ReferenceError(f"case {name}: case.json unreadable ({err})") from None
    inputs = {k: _load_npy(_key_path(os.path.join(case_dir, "inputs"), k)) for k in meta["inputs"]}
    expected = {k: _load_npy(_key_path(os.path.join(case_dir, "expected"), k))
                for k in meta["expected"]}
    return meta, inputs, expected


def load_results(results_root, name, keys):
    """A port's results for case ``name``: ``RESULTS/name.npz`` (keys like "outputs/sample") or the
    directory layout ``RESULTS/name/<key>.npy``. Returns dict key -> array for the keys found."""
    npz = os.path.join(results_root, name + ".npz")
    if os.path.isfile(npz):
        try:
            with np.load(npz, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise ReferenceError(f"{npz}: not a plain .npz ({err})") from None
    case_dir = os.path.join(results_root, name)
    out = {}
    for key in keys:
        path = _key_path(case_dir, key)
        if os.path.isfile(path):
            out[key] = _load_npy(path)
    return out
