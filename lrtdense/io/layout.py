"""The model folder's format: what ``config.json`` must hold, the params and state it lays out,
the sizes and digests that bind the files of one save, and what counts as a model folder that a
save may replace (see ``lrtdense.io``)."""
import json
import math
import os
import stat

import numpy as np

from lrtdense import tree
from lrtdense.io.folders import digest
from lrtdense.io.jsonvalues import check_depth, check_json, short
from lrtdense.model import Model

__all__ = ["FORMAT", "VERSION", "FILES", "MAX_CONFIG_BYTES", "STATE_DTYPES", "not_replaceable",
           "digest_problem", "read_config", "check_files", "model_from_config", "param_spec",
           "input_dim_of", "check_listing", "spec_json", "state_spec"]

FORMAT = "lrtdense-model"
VERSION = 2                     # 2 added "files" (sizes and digests); version 1 still loads
FILES = ("config.json", "params.npz", "state.npz")
MAX_CONFIG_BYTES = 4 << 20      # JSON parses to at most ~25x its size in objects: ~100 MB
STATE_DTYPES = {name: np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")}
_CONFIG_KEYS = {"format", "version", "model", "input_dim", "params", "state", "meta", "files"}


def not_replaceable(target):
    """Why ``save`` may not replace ``target``, or "" if it may (absent, empty, or a model)."""
    if not os.path.lexists(target):
        return ""
    if not os.path.isdir(target):
        return "exists and is not a folder"
    entries = sorted(os.listdir(target))
    others = [e for e in entries if e not in FILES]
    if others:
        return f"holds files other than a saved model's ({short(others[:5])})"
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
            config = read_config(f, os.path.join(target, "config.json"))
    except ValueError as err:
        return f"config.json is not an lrtdense model config ({short(err, 120)})"
    recorded = config.get("files")
    if recorded is None:                        # version 1: no digests, the names must fit
        expected = {"params.npz"} | ({"state.npz"} if "state" in config else set())
        if not set(entries) - {"config.json"} <= expected:
            return f"its files {entries} are not those its version-1 config declares"
        return ""
    if not isinstance(recorded, dict) or not set(entries) - {"config.json"} <= set(recorded):
        return f"its files {entries} are not those config.json records ({short(recorded)})"
    for entry in set(entries) - {"config.json"}:
        try:
            with open(os.path.join(target, entry), "rb") as f:
                problem = digest_problem(f, recorded[entry])
        except (TypeError, KeyError):
            problem = f"config.json records it as {short(recorded[entry])}"
        if problem:
            return (f"{entry} is not the file config.json records ({problem}): the folder "
                    f"mixes the files of two saves")
    return ""


def digest_problem(f, recorded):
    """Why the open file ``f`` is not the one ``recorded`` ({"size", "sha256"}) describes ("" if
    it is); its size is compared before anything is read."""
    size = os.fstat(f.fileno()).st_size
    if size != recorded["size"]:
        return f"{size} bytes, config.json records {recorded['size']}"
    f.seek(0)
    sha256 = digest(f)["sha256"]
    f.seek(0)
    if sha256 != recorded["sha256"]:
        return f"sha256 {sha256[:16]}..., config.json records {recorded['sha256'][:16]}..."
    return ""


def read_config(f, config_path):
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
        raise ValueError(f"{config_path} has format version {short(version)}; this "
                         f"lrtdense reads versions 1 and {VERSION}")
    if ("files" in config) != (version >= 2):
        raise ValueError(f"{config_path}: format version {version} "
                         f"{'requires' if version >= 2 else 'has no'} 'files' (sizes and digests)")
    try:
        check_depth(config, "the config")
        if "meta" in config:
            check_json(config["meta"], "meta")
    except ValueError as err:
        raise ValueError(f"{config_path}: {short(err)}") from None
    extra = sorted(set(config) - _CONFIG_KEYS)
    missing = sorted({"model", "input_dim", "params"} - set(config))
    if extra or missing:
        raise ValueError(f"{config_path}: missing keys {missing}, unexpected keys {short(extra)}")
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
            raise ValueError(f"duplicate key {short(key)}")
        out[key] = value
    return out


def check_files(recorded, config, config_path):
    """Raises unless the config's "files" records a size and a sha256 for each of its files."""
    expected = {"params.npz"} | ({"state.npz"} if "state" in config else set())
    ok = isinstance(recorded, dict) and set(recorded) == expected and all(
        isinstance(v, dict) and set(v) == {"size", "sha256"} and type(v["size"]) is int
        and v["size"] >= 0 and isinstance(v["sha256"], str) and len(v["sha256"]) == 64
        for v in recorded.values())
    if not ok:
        raise ValueError(f"{config_path}: 'files' must map {sorted(expected)} to "
                         f"{{'size': bytes, 'sha256': 64 hex digits}}, got {short(recorded)}")


def model_from_config(config, config_path):
    """(the Model, input_dim) the config describes; a ValueError naming ``config_path`` if invalid."""
    input_dim = config["input_dim"]
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or not 1 <= input_dim < 2 ** 62:
        raise ValueError(f"{config_path}: input_dim must be an integer in [1, 2**62), got "
                         f"{short(input_dim)}")
    try:
        model = Model.from_config(config["model"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as err:
        raise ValueError(f"{config_path}: invalid model config: {short(err)}") from None
    return model, input_dim


def param_spec(model, input_dim, where="the model"):
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
        raise ValueError(f"{where}: the model's params cannot be laid out: {short(err)}") from None
    for key, (shape, dtype) in spec.items():
        if not all(0 <= d < 2 ** 62 for d in shape) or math.prod(shape) * dtype.itemsize >= 2 ** 62:
            raise ValueError(f"{where}: {key} would have shape {short(shape)}: larger than any "
                             f"array (check units and input_dim)")
    return spec


def input_dim_of(model, params):
    """The input size the first layer's params imply (its own ``check_params`` decides: a
    kernel's first dimension, or DenseVariational's flat posterior size)."""
    first = model.network.names[0]
    try:
        layer_params = params["network"][first]
    except (KeyError, TypeError) as err:
        raise ValueError(f"params have no network/{first} ({short(err)})") from None
    try:
        return int(model.network.layers[0].check_params(layer_params))
    except (TypeError, ValueError) as err:
        raise ValueError(f"params['network'][{first!r}] do not fit the first layer: "
                         f"{short(err, 400)}") from None


def check_listing(listed, expected, where):
    """Raises a ValueError naming the first difference unless ``listed == expected``."""
    if listed == expected:
        return
    if not isinstance(listed, dict):
        raise ValueError(f"{where}: expected a dict, got {type(listed).__name__}")
    missing, extra = sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected))
    if missing or extra:
        raise ValueError(f"{where}: missing {short(missing)}, unexpected {short(extra)}")
    key = next(k for k in expected if listed[k] != expected[k])
    raise ValueError(f"{where}: {key} is listed as {short(listed[key])}, the model has "
                     f"{short(expected[key])}")


def spec_json(shape, dtype):
    """The config's {"shape", "dtype"} entry of an array."""
    return {"shape": list(shape), "dtype": dtype.name}


def state_spec(entry, config_path):
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
            raise ValueError(f"the structure has leaves {short(sorted(paths))} but arrays "
                             f"lists {short(sorted(arrays))}")
        spec = {}
        for key in paths:
            item = arrays[key]
            if not isinstance(item, dict) or set(item) != {"shape", "dtype"}:
                raise ValueError(f"arrays[{short(key)}] must be a dict with 'shape' and 'dtype'")
            shape, dtype = item["shape"], item["dtype"]
            if (not isinstance(shape, list) or len(shape) > 32 or
                    not all(type(d) is int and 0 <= d < 2 ** 62 for d in shape)):
                raise ValueError(f"arrays[{short(key)}] has shape {short(shape)}; expected a list of "
                                 f"at most 32 integers >= 0")
            if not isinstance(dtype, str) or dtype not in STATE_DTYPES:
                raise ValueError(f"arrays[{short(key)}] has dtype {short(dtype)}; expected one of "
                                 f"{sorted(STATE_DTYPES)}")
            spec[key] = (tuple(shape), STATE_DTYPES[dtype])
            if math.prod(shape) * spec[key][1].itemsize >= 2 ** 62:
                raise ValueError(f"arrays[{short(key)}] has shape {short(shape)}: larger than any array")
    except ValueError as err:
        raise ValueError(f"{config_path}: invalid state: {err}") from None
    return structure, spec
