"""Reading and writing reference cases: one directory per case, JSON metadata and ``.npy`` arrays.

Layout of a reference set (see reference_data/SPEC.md)::

    manifest.json                       schema version, every case, the sha256 of every file
    cases/<case>/case.json              metadata (config, dtype, tolerances, array keys)
    cases/<case>/inputs/<key>.npy       x, g, params/..., noise/..., ...
    cases/<case>/expected/<key>.npy     outputs/sample, kl/total, grads/..., ...

Keys use "/" for nesting, which maps to sub-directories. Arrays load with ``allow_pickle=False``;
loading never executes code.

What ``open_reference`` refuses (each a ``ReferenceError`` naming the file and what was expected),
so that a reference set cannot be bent without it showing:

* a case name or a file path that is not a plain relative name, or that resolves (through ``..``
  or a symlink) outside its case's folder;
* a case folder on disk that the manifest does not list, or a file under ``cases/`` that it does
  not list (a file without a checksum could hold anything);
* a listed file that is missing, or (``check=True``) whose sha256 differs from the manifest's.

``read_case`` also refuses a case.json that references a file the manifest does not list, or a
listed array that case.json does not reference.

Every file is read through ``lrtdense.bounded`` (sizes checked before anything is allocated or
parsed), with these bounds, so that neither a hostile reference set nor hostile results can make
``verify`` run out of memory or time; a file over its bound is refused like a malformed one:

* ``manifest.json`` at most ``MAX_MANIFEST_BYTES``, a ``case.json`` at most
  ``MAX_CASE_JSON_BYTES``, both nested at most ``MAX_JSON_DEPTH`` deep;
* the arrays of one reference case at most ``MAX_CASE_BYTES`` in all (a listed file larger than
  its bound is refused before its sha256 is computed);
* a port's results: see ``lrtdense.reference.results``.
"""
import dataclasses
import hashlib
import json
import os
import re

import numpy as np

from lrtdense import bounded
from lrtdense.reference import SCHEMA_VERSION, SHIPPED_MANIFEST_SHA256, default_dir

__all__ = ["write_case", "read_case", "write_manifest", "read_manifest", "open_reference",
           "sha256", "check_case_name", "key_path", "ReferenceSet", "ReferenceError", "GENERATOR",
           "MAX_MANIFEST_BYTES", "MAX_CASE_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_CASE_BYTES"]

GENERATOR = "lrtdense reference generate"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_ARRAY_KINDS = "fiu"  # float, signed and unsigned integer arrays; never objects or strings
MAX_MANIFEST_BYTES = 4 << 20      # the shipped manifest: 0.3 MB for 109 cases
MAX_CASE_JSON_BYTES = 1 << 20     # the shipped case.json files: at most 8 KB
MAX_JSON_DEPTH = 32               # the shipped files nest at most 8 deep
MAX_CASE_BYTES = 16 << 20         # the arrays of one case; the shipped cases: at most 20 KB


class ReferenceError(ValueError):
    """A reference set is missing, corrupt, tampered with or inconsistent."""


def sha256(path):
    """The hex sha256 digest of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def check_case_name(name):
    """Raises ReferenceError unless ``name`` is a plain case name (letters, digits, ``_.-``)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ReferenceError(f"invalid case name {name!r}: expected letters, digits, '_', '.' "
                             f"and '-' only (no path separators, no '..')")
    return name


def key_path(root, key):
    """The ``.npy`` file of array ``key`` ("a/b" nests) below ``root``; refuses a key that is not
    plain names."""
    parts = key.split("/") if isinstance(key, str) else [""]
    if any(not _NAME.match(p) or ".." in p for p in parts):
        raise ReferenceError(f"invalid array key {key!r}: expected names of letters, digits, "
                             f"'_', '.' and '-' separated by '/'")
    return os.path.join(root, *parts) + ".npy"


def _inside(path, folder):
    """True if ``path`` resolves (symlinks followed) to ``folder`` or below it."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


# ------------------------------------------------------------------------------------ writing

def _real_folder(root, folder):
    """Creates ``folder`` (below ``root``) one level at a time, refusing a symlink or a file on the
    way, so that nothing is written outside ``root`` through a link."""
    rel = os.path.relpath(folder, root)
    path = root
    for part in [] if rel == os.curdir else rel.split(os.sep):
        path = os.path.join(path, part)
        if part in (os.curdir, os.pardir) or os.path.islink(path):
            raise ReferenceError(f"{path} is a symbolic link or leaves {root!r}; generate writes "
                                 f"only into real folders inside its target")
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path) or os.path.islink(path):
                raise ReferenceError(f"{path} exists and is not a folder") from None


def _new_file(root, path, mode):
    """``open(path, mode + "x")`` after ``_real_folder``: the file must not exist (a symlink
    included), so an existing file is never written through."""
    _real_folder(root, os.path.dirname(path))
    try:
        return open(path, mode + "x")
    except FileExistsError:
        raise ReferenceError(f"{path} already exists; generate writes only new files") from None


def write_case(root, name, meta, inputs, expected):
    """Writes one case under ``root/cases/name``, into new files in real folders (never through a
    symlink). Returns the list of files (relative to root).

    Raises:
      ReferenceError: a folder on the way is a symlink, or a file already exists.
    """
    check_case_name(name)
    case_dir = os.path.join(root, "cases", name)
    files = []
    for group, arrays in (("inputs", inputs), ("expected", expected)):
        for key, value in arrays.items():
            path = key_path(os.path.join(case_dir, group), key)
            with _new_file(root, path, "b") as f:
                np.save(f, np.ascontiguousarray(value) if np.ndim(value) else np.asarray(value),
                        allow_pickle=False)
            files.append(os.path.relpath(path, root))
    meta = {**meta, "inputs": sorted(inputs), "expected": sorted(expected)}
    path = os.path.join(case_dir, "case.json")
    with _new_file(root, path, "") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    files.append(os.path.relpath(path, root))
    return sorted(f.replace(os.sep, "/") for f in files)


def write_manifest(root, cases):
    """cases: dict name -> list of files. Writes manifest.json (a new file), a sha256 per file."""
    manifest = {"schema_version": SCHEMA_VERSION, "generator": GENERATOR,
                "cases": {name: {f: sha256(os.path.join(root, f)) for f in files}
                          for name, files in sorted(cases.items())}}
    with _new_file(root, os.path.join(root, "manifest.json"), "") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


# ------------------------------------------------------------------------------------ reading

@dataclasses.dataclass
class ReferenceSet:
    """A validated reference set.

    Attributes:
      root: its folder.
      manifest: the parsed manifest.json.
      manifest_sha256: the sha256 of manifest.json's bytes.
      shipped: True if that digest is the one pinned in ``lrtdense.reference.pin`` (this is the
        set shipped with this lrtdense, wherever it lies).
      installed: True if ``root`` is the package's own folder (``default_dir()``).
    """
    root: str
    manifest: dict
    manifest_sha256: str
    shipped: bool
    installed: bool

    @property
    def names(self):
        """The case names of the set, sorted."""
        return sorted(self.manifest["cases"])

    def files(self, name):
        """The files of case ``name``, as the manifest lists them."""
        return self.manifest["cases"][name]


def _load_manifest(root):
    if not os.path.isdir(root):
        raise ReferenceError(f"reference folder {root!r} does not exist (the shipped set is at "
                             f"{default_dir()!r}: `lrtdense reference path`)")
    path = os.path.join(root, "manifest.json")
    try:
        raw = bounded.read_bytes(path, MAX_MANIFEST_BYTES, "a reference manifest")
        manifest = bounded.parse_json(raw, MAX_JSON_DEPTH, path)
    except FileNotFoundError:
        raise ReferenceError(f"{path} not found: is {root!r} a reference set?") from None
    except OSError as err:
        raise ReferenceError(f"{path} unreadable ({err.strerror or err})") from None
    except bounded.FileRefused as err:
        raise ReferenceError(str(err)) from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        got = manifest.get("schema_version") if isinstance(manifest, dict) else manifest
        raise ReferenceError(f"{path}: schema_version {bounded.short(got)}, this lrtdense "
                             f"reads {SCHEMA_VERSION}")
    cases = manifest.get("cases")
    if not isinstance(cases, dict) or not cases:
        raise ReferenceError(f"{path}: expected a non-empty \"cases\" object {{name: {{file: "
                             f"sha256}}}}, got {type(cases).__name__}")
    return manifest, hashlib.sha256(raw).hexdigest()


def _check_entries(root, manifest):
    """The manifest's names and paths: plain, inside their case folder, case.json listed."""
    cases_dir = os.path.join(root, "cases")
    for name, files in manifest["cases"].items():
        check_case_name(name)
        if not isinstance(files, dict):
            raise ReferenceError(f"manifest.json: case {name}: expected {{file: sha256}}, got "
                                 f"{type(files).__name__}")
        if not _inside(os.path.join(cases_dir, name), cases_dir):
            raise ReferenceError(f"case {name}: its folder resolves outside {cases_dir!r}")
        prefix = f"cases/{name}/"
        for rel, digest in files.items():
            if not isinstance(rel, str) or not rel.startswith(prefix):
                raise ReferenceError(f"case {name}: manifest path {rel!r} is not under {prefix}")
            parts = rel[len(prefix):].split("/")
            if any(not _NAME.match(p) or ".." in p for p in parts) or not rel.endswith(
                    (".npy", ".json")):
                raise ReferenceError(f"case {name}: manifest path {rel!r} is not a plain "
                                     f"relative .npy or .json path")
            if not isinstance(digest, str) or not _DIGEST.match(digest):
                raise ReferenceError(f"case {name}: {rel}: expected a sha256 of 64 lowercase hex "
                                     f"digits, got {digest!r}")
            if not _inside(os.path.join(root, *rel.split("/")), os.path.join(cases_dir, name)):
                raise ReferenceError(f"case {name}: {rel} resolves outside the case's folder")
        if prefix + "case.json" not in files:
            raise ReferenceError(f"case {name}: the manifest does not list {prefix}case.json")


def _check_disk(root, manifest):
    """Every folder and file under cases/ is one the manifest lists."""
    cases_dir = os.path.join(root, "cases")
    if not os.path.isdir(cases_dir):
        raise ReferenceError(f"{cases_dir} not found: is {root!r} a reference set?")
    listed = manifest["cases"]
    for entry in sorted(os.listdir(cases_dir)):
        full = os.path.join(cases_dir, entry)
        if not os.path.isdir(full):
            raise ReferenceError(f"cases/{entry} is a file directly under cases/; a reference set "
                                 f"holds one folder per case")
        if entry not in listed:
            raise ReferenceError(f"case folder cases/{entry} is not in manifest.json: the case "
                                 f"set on disk differs from the manifest's")
        files = listed[entry]
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames.sort()
            for fname in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, fname), root).replace(os.sep, "/")
                if rel not in files:
                    raise ReferenceError(f"case {entry}: {rel} is not listed in manifest.json "
                                         f"(every file of a case must carry a checksum)")


def open_reference(root, check=True):
    """Loads and validates a reference set (see the module docstring). Returns a ReferenceSet.

    Args:
      root: the reference folder.
      check: also verify every file's sha256 (the structure is always validated).
    Raises:
      ReferenceError: naming the first problem found.
    """
    manifest, digest = _load_manifest(root)
    _check_entries(root, manifest)
    _check_disk(root, manifest)
    for name, files in sorted(manifest["cases"].items()):
        for rel, want in sorted(files.items()):
            full = os.path.join(root, *rel.split("/"))
            if not os.path.isfile(full):
                raise ReferenceError(f"case {name}: {rel} is listed in the manifest but missing")
            limit = (MAX_CASE_JSON_BYTES if rel.endswith(".json")
                     else MAX_CASE_BYTES + bounded.MAX_NPY_HEADER)
            if os.path.getsize(full) > limit:
                raise ReferenceError(f"case {name}: {rel} is {os.path.getsize(full)} bytes; a "
                                     f"reference file holds at most {limit}")
            if check and sha256(full) != want:
                raise ReferenceError(f"case {name}: {rel} does not match its sha256 in the "
                                     f"manifest: the reference file was modified or corrupted")
    installed = os.path.realpath(root) == os.path.realpath(default_dir())
    return ReferenceSet(root, manifest, digest, digest == SHIPPED_MANIFEST_SHA256, installed)


def read_manifest(root, check=True):
    """The manifest of a validated reference set (``open_reference(root, check).manifest``)."""
    return open_reference(root, check).manifest


def _load_npy(path, max_bytes):
    try:
        array = bounded.read_npy(path, None, max_bytes)
    except bounded.TooLarge as err:
        raise ReferenceError(f"{err} (the arrays of one reference case hold at most "
                             f"{MAX_CASE_BYTES} bytes in all)") from None
    except bounded.FileRefused as err:
        raise ReferenceError(str(err)) from None
    except OSError as err:
        raise ReferenceError(f"{path}: unreadable ({err.strerror or err})") from None
    if array.dtype.kind not in _ARRAY_KINDS:
        raise ReferenceError(f"{path}: dtype {array.dtype} is not a float or integer type")
    return array


def read_case(root, name):
    """Returns (meta, inputs, expected) of one case; arrays keyed like "params/kernel_posterior_loc".

    Args:
      root: a reference folder or a ``ReferenceSet`` (then its validated manifest is used).
      name: the case name.
    Raises:
      ReferenceError: the case is not in the manifest, its case.json is unreadable, or it
        references a file the manifest does not list (or the manifest lists an array that
        case.json does not reference).
    """
    if isinstance(root, ReferenceSet):
        ref = root
    else:
        manifest, digest = _load_manifest(root)
        ref = ReferenceSet(root, manifest, digest, digest == SHIPPED_MANIFEST_SHA256, False)
    check_case_name(name)
    if name not in ref.manifest["cases"]:
        raise ReferenceError(f"case {name} is not in {os.path.join(ref.root, 'manifest.json')}")
    files = ref.files(name)
    case_dir = os.path.join(ref.root, "cases", name)
    if not _inside(case_dir, os.path.join(ref.root, "cases")):
        raise ReferenceError(f"case {name}: its folder resolves outside the reference set")
    try:
        meta = bounded.read_json(os.path.join(case_dir, "case.json"), MAX_CASE_JSON_BYTES,
                                 MAX_JSON_DEPTH, "a case.json")
    except (OSError, bounded.FileRefused) as err:
        raise ReferenceError(f"case {name}: case.json unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("name") != name:
        named = meta.get("name") if isinstance(meta, dict) else meta
        raise ReferenceError(f"case {name}: case.json names the case {bounded.short(named)}")
    for field in ("description", "kind", "dtype"):
        if not isinstance(meta.get(field), str):
            raise ReferenceError(f"case {name}: case.json {field!r} must be a string, got "
                                 f"{bounded.short(meta.get(field))}")
    if not isinstance(meta.get("model", {}), dict):
        raise ReferenceError(f"case {name}: case.json 'model' must be an object, got "
                             f"{type(meta['model']).__name__}")
    referenced = set()
    arrays = {}
    budget = MAX_CASE_BYTES
    for group in ("inputs", "expected"):
        keys = meta.get(group)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ReferenceError(f"case {name}: case.json {group!r} must be a list of keys")
        arrays[group] = {}
        for key in keys:
            path = key_path(os.path.join(case_dir, group), key)
            rel = f"cases/{name}/{group}/{key}.npy"
            if rel not in files:
                raise ReferenceError(f"case {name}: case.json references {rel}, which "
                                     f"manifest.json does not list (no checksum: refused)")
            referenced.add(rel)
            arrays[group][key] = _load_npy(path, budget)
            budget -= arrays[group][key].nbytes
    unreferenced = sorted(r for r in files if r.endswith(".npy") and r not in referenced)
    if unreferenced:
        raise ReferenceError(f"case {name}: manifest.json lists {unreferenced[0]}, which case.json "
                             f"does not reference ({len(unreferenced)} such files)")
    return meta, arrays["inputs"], arrays["expected"]
