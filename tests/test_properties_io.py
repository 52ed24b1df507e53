"""Property tests for model files: random truncations, bit flips, hostile configs and npy headers,
huge declared sizes. Each example must load to a ValueError naming the file, or to exactly the
saved params; never another exception, never different numbers.

The hostile tests run in a child process under a 2 GB address-space limit
(``test_hostile_files_load_to_errors_under_a_2gb_address_space_limit``, the issue's bar); in the
parent they are skipped. ``LRTDENSE_PROPERTY_EXAMPLES`` sets the examples per property (default
100; the slow test runs 2000).
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lrtdense import io as lio
from lrtdense.model import Model
from test_io import (KERNEL0, resign, assert_same_params, flat_members, mixed_model, npy_bytes,
                     patch_member, write_zip, zip_bomb)

CHILD = os.environ.get("LRTDENSE_HOSTILE_CHILD") == "1"
EXAMPLES = int(os.environ.get("LRTDENSE_PROPERTY_EXAMPLES", "100"))
LIMIT = 2 << 30
hostile = pytest.mark.skipif(not CHILD, reason="runs in the child process under a 2 GB "
                                               "address-space limit (see the last tests)")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
EXAMPLES_RUN = {}          # property -> examples run (reported by the child)


def _count(name):
    EXAMPLES_RUN[name] = EXAMPLES_RUN.get(name, 0) + 1


class Saved:
    """One saved model folder (params, a state and meta), kept as bytes to copy per example."""

    def __init__(self):
        self.model, self.params = mixed_model()
        self.state = {"m": self.params, "step": np.int64(3), "empty": {}}
        self.meta = {"epoch": 2, "rng": np.random.default_rng(0).bit_generator.state}
        root = tempfile.mkdtemp()
        path = os.path.join(root, "m")
        lio.save(path, self.model, self.params, state=self.state, meta=self.meta)
        self.files = {}
        for name in lio.FILES:
            with open(os.path.join(path, name), "rb") as f:
                self.files[name] = f.read()
        shutil.rmtree(root)

    def folder(self, replace=None):
        """(root, root/m): a fresh folder holding the saved files, ``replace`` {name: bytes}
        written instead of some."""
        root = tempfile.mkdtemp()
        path = os.path.join(root, "m")
        os.mkdir(path)
        for name, data in {**self.files, **(replace or {})}.items():
            with open(os.path.join(path, name), "wb") as f:
                f.write(data)
        return root, path


SAVED = Saved()


def load_or_refuse(path, *, with_state=True):
    """Loads (after ``resign``, so that the readers behind the digests are what is tested);
    returns the result, or None after checking the ValueError names a file in path."""
    resign(path)
    try:
        return lio.load(path, with_state=with_state)
    except ValueError as err:
        message = str(err)
        assert any(os.path.join(path, name) in message for name in lio.FILES), message
        assert "\n" not in message and len(message) < 700, message
        return None


def check_equal_or_refused(path):
    result = load_or_refuse(path)
    if result is not None:
        model, params, state, meta = result
        assert model.get_config() == SAVED.model.get_config()
        assert_same_params(SAVED.params, params)
        assert_same_params(SAVED.state["m"], state["m"])
        assert state["step"] == 3 and state["empty"] == {} and meta == SAVED.meta
    return result


def flip_bits(data, positions):
    data = bytearray(data)
    for p in positions:
        data[p // 8 % len(data)] ^= 1 << (p % 8)
    return bytes(data)


# ---------------------------------------------------------------------- truncation, bit flips
@hostile
@SETTINGS
@given(name=st.sampled_from(lio.FILES), fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_files_are_refused(name, fraction):
    _count("truncation")
    data = SAVED.files[name]
    root, path = SAVED.folder({name: data[:int(fraction * len(data))]})
    try:
        assert load_or_refuse(path) is None
    finally:
        shutil.rmtree(root)


@hostile
@SETTINGS
@given(name=st.sampled_from(lio.FILES),
       positions=st.lists(st.integers(0, 2 ** 40), min_size=1, max_size=4))
def test_bit_flips_give_an_error_or_the_saved_numbers(name, positions):
    _count("bit flips")
    flipped = flip_bits(SAVED.files[name], positions)
    root, path = SAVED.folder({name: flipped})
    try:
        if name == "config.json":
            result = load_or_refuse(path)     # a flipped digit may be a valid other model
            if result is not None:
                assert_same_params(SAVED.params, result[1])
        else:
            check_equal_or_refused(path)
    finally:
        shutil.rmtree(root)


@hostile
@SETTINGS
@given(positions=st.lists(st.integers(0, 2 ** 40), min_size=1, max_size=3))
def test_bit_flips_in_the_zip_directory(positions):
    """Flips aimed at the central directory and the end record, where zipfile reads sizes,
    offsets, names, methods and flags."""
    _count("zip directory flips")
    data = SAVED.files["params.npz"]
    start = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x01\x02") - 1)   # last two entries
    span = len(data) - start
    flipped = flip_bits(data, [start * 8 + p % (span * 8) for p in positions])
    root, path = SAVED.folder({"params.npz": flipped})
    try:
        check_equal_or_refused(path)
    finally:
        shutil.rmtree(root)


# ----------------------------------------------------------------------------- hostile configs
huge_ints = st.sampled_from([0, -1, 1, 2, 5, 6, 2 ** 31, 2 ** 32 + 6, 2 ** 62, 2 ** 63, 10 ** 9,
                             10 ** 18, 10 ** 400, -(10 ** 400)])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | huge_ints
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["float32", "float64", "normal", "deterministic", "relu", "*", "O",
                       "DenseFlipout", "gaussian"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)


def _nodes(value, path=()):
    """Every (path, value) in a JSON tree, the root first."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _nodes(child, path + (key,))


def _replace(tree, path, value):
    if not path:
        return value
    tree = json.loads(json.dumps(tree))
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


@hostile
@SETTINGS
@given(data=st.data(), value=json_values)
def test_hostile_config_values(data, value):
    """Any node of the config replaced by any JSON value: an error naming a file, or a model
    that loads with the saved params and saves and loads back to the same config."""
    _count("hostile config values")
    config = json.loads(SAVED.files["config.json"])
    nodes = list(_nodes(config))
    path, _ = nodes[data.draw(st.integers(0, len(nodes) - 1), label="node")]
    text = json.dumps(_replace(config, path, value))
    root, folder = SAVED.folder({"config.json": text.encode()})
    try:
        result = load_or_refuse(folder)
        if result is not None:
            model, params, state, meta = result
            assert_same_params(SAVED.params, params)
            again = os.path.join(root, "again")
            lio.save(again, model, params, state=state, meta=meta)
            assert lio.load(again)[0].get_config() == model.get_config()
    finally:
        shutil.rmtree(root)


@hostile
@SETTINGS
@given(input_dim=huge_ints | st.integers(1, 2 ** 70), units=huge_ints | st.integers(1, 2 ** 70),
       layer=st.integers(0, 2))
def test_huge_declared_sizes_with_a_consistent_listing(input_dim, units, layer):
    """The attacker's best try: input_dim and units changed and the 'params' listing rewritten
    to agree, with the saved (small) params.npz."""
    _count("huge declared sizes")
    config = json.loads(SAVED.files["config.json"])
    config["input_dim"] = input_dim
    config["model"]["network"]["layers"][layer]["config"]["units"] = units
    try:
        config["params"] = expected_listing(Model.from_config(config["model"]), input_dim)
    except ValueError:
        pass                                    # refused from the config alone: fine too
    root, folder = SAVED.folder({"config.json": json.dumps(config).encode()})
    try:
        result = load_or_refuse(folder)
        if result is not None:
            assert (input_dim, units) == (6, SAVED.model.network.layers[layer].units)
    finally:
        shutil.rmtree(root)


def expected_listing(model, input_dim):
    """The config's 'params' listing for ``input_dim``, from the layers' public settings."""
    listing, dim = {}, input_dim
    for i, layer in enumerate(model.network.layers):
        for name in layer.weight_names():
            shape = [dim, layer.units] if name.startswith("kernel") else [layer.units]
            listing[f"network/layer_{i}/{name}"] = {"shape": shape, "dtype": layer.dtype}
        dim = layer.units
    if model.likelihood.get_config().get("learn_scale"):
        listing["likelihood/untransformed_noise_scale"] = {"shape": [], "dtype": model.dtype}
    return listing


descrs = st.sampled_from(["<f4", ">f4", "<f8", "|O", "<i4", "|V8", "|b1", "<U2", "<c8",
                          [("a", "<f4")], [("a", "|O")]])


@hostile
@SETTINGS
@given(descr=descrs, fortran=st.booleans(),
       shape=st.lists(huge_ints | st.integers(0, 10), max_size=3).map(tuple),
       size=st.integers(0, 400), declared=st.none() | huge_ints | st.integers(0, 2 ** 32 - 1))
def test_hostile_npy_headers(descr, fortran, shape, size, declared):
    """Layer 0's kernel replaced by a hand-made header (any dtype, shape, order) and ``size``
    bytes of data; optionally the zip directory declares another size."""
    _count("hostile npy headers")
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    try:
        member = npy_bytes(header=header, data=b"\x01" * size)
    except (ValueError, TypeError, OverflowError):
        return                                   # numpy cannot even write such a header
    root, folder = SAVED.folder()
    npz = os.path.join(folder, "params.npz")
    write_zip(npz, flat_members(SAVED.params, **{KERNEL0: member}))
    if declared is not None and 0 <= declared < 2 ** 32:
        patch_member(npz, KERNEL0 + ".npy", size=declared, compressed=declared)
    try:
        result = load_or_refuse(folder)
        if result is not None:                  # only the exact kernel shape and dtype pass
            assert (descr, fortran, shape) == ("<f4", False, (6, 5))
            assert np.all(result[1]["network"]["layer_0"]["kernel_posterior_loc"].view(np.uint8) == 1)
    finally:
        shutil.rmtree(root)


@hostile
@SETTINGS
@given(names=st.lists(st.sampled_from([KERNEL0 + ".npy", KERNEL0 + "/x.npy", "bomb.npy",
                                       "network/layer_1/bias_posterior_loc.npy", "../evil.npy",
                                       "/abs.npy", "a"]), max_size=6),
       compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                    zipfile.ZIP_LZMA]))
def test_hostile_member_lists(names, compression):
    """Members added, repeated or replaced, in any compression: refused unless exactly the
    expected members, stored."""
    _count("hostile member lists")
    members = flat_members(SAVED.params) + [(n, npy_bytes(np.zeros(5, np.float32))) for n in names]
    root, folder = SAVED.folder()
    write_zip(os.path.join(folder, "params.npz"), members, compression)
    try:
        result = load_or_refuse(folder)
        if result is not None:
            assert not names and compression == zipfile.ZIP_STORED
            assert_same_params(SAVED.params, result[1])
    finally:
        shutil.rmtree(root)


# ---------------------------------------------------------------------------- state and meta
state_trees = st.recursive(
    st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.uint8]).flatmap(
        lambda t: st.lists(st.integers(0, 3), max_size=3).map(
            lambda s: (np.arange(int(np.prod(s)) if s else 1) % 7).astype(t).reshape(s))),
    lambda kids: st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                                         max_size=6), kids, max_size=3),
    max_leaves=8).filter(lambda t: isinstance(t, dict))
plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 128, 2 ** 128)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=10)


def _same_tree(a, b):
    assert isinstance(b, dict) and list(a) == list(b)
    for k in a:
        if isinstance(a[k], dict):
            _same_tree(a[k], b[k])
        else:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
            assert np.array_equal(a[k], b[k])


in_parent = pytest.mark.skipif(CHILD, reason="bounded by construction; run in the parent")


@in_parent
@settings(SETTINGS, max_examples=min(EXAMPLES, 50))
@given(state=state_trees, meta=st.dictionaries(st.text(max_size=6), plain_json, max_size=4))
def test_state_and_meta_round_trip_exactly(state, meta):
    _count("state/meta round trip")
    root = tempfile.mkdtemp()
    try:
        path = os.path.join(root, "m")
        lio.save(path, SAVED.model, SAVED.params, state=state, meta=meta)
        _, params, state2, meta2 = lio.load(path, with_state=True)
        _same_tree(state, state2)
        assert meta2 == meta and json.dumps(meta2) == json.dumps(meta)
        assert_same_params(SAVED.params, params)
    finally:
        shutil.rmtree(root)


not_json = st.sampled_from([float("nan"), float("inf"), -float("inf"), (1, 2), np.float32(1),
                            np.int64(1), np.zeros(2), {1: 2}, {None: 1}, set(), b"x", 2 ** 1100,
                            object()])


@in_parent
@SETTINGS
@given(meta=st.dictionaries(st.text(max_size=4), plain_json, max_size=3), bad=not_json,
       data=st.data())
def test_meta_that_is_not_plain_json_is_refused_at_save(meta, bad, data):
    _count("bad meta")
    key = data.draw(st.text(max_size=4), label="key")
    nested = data.draw(st.integers(0, 3), label="depth")
    value = bad
    for _ in range(nested):
        value = [value] if nested % 2 else {"k": value}
    meta = {**meta, key: value}
    root = tempfile.mkdtemp()
    try:
        with pytest.raises(ValueError, match="meta"):
            lio.save(os.path.join(root, "m"), SAVED.model, SAVED.params, meta=meta)
        assert os.listdir(root) == []
    finally:
        shutil.rmtree(root)


# ------------------------------------------------------------- the hostile folders
def _config(**edits):
    config = json.loads(SAVED.files["config.json"])
    for key, value in edits.items():
        config[key] = value
    return config


def _consistent(config, input_dim):
    config["input_dim"] = input_dim
    for key in (KERNEL0, KERNEL0.replace("loc", "untransformed_scale")):
        config["params"][key]["shape"][0] = input_dim
    return config


def _huge_units(config):
    config["model"]["network"]["layers"][0]["config"]["units"] = 10 ** 400
    return config


HOSTILE_FOLDERS = {
    # name: (function(folder) writing the hostile files, message expected)
    "input_dim 1e9 in a 5 KB folder": (
        lambda f: _write(f, "config.json", json.dumps(_config(input_dim=10 ** 9))),
        "the 'params' listed do not match"),
    "input_dim 1e9 with a consistent listing": (
        lambda f: _write(f, "config.json", json.dumps(_consistent(_config(), 10 ** 9))),
        r"holds \d+ bytes but its config declares"),
    "units 10**400": (lambda f: _write(f, "config.json", json.dumps(_huge_units(_config()))),
                      "units must be an integer >= 1"),
    "a 2 GB deflated extra member": (
        lambda f: zip_bomb(os.path.join(f, "params.npz"), flat_members(SAVED.params)),
        r"unexpected \['bomb.npy'\]"),
    "a 2 GB deflated member under the kernel's name": (
        lambda f: zip_bomb(os.path.join(f, "params.npz"), flat_members(SAVED.params, **{KERNEL0: None}),
                           name=KERNEL0 + ".npy"),
        r"is compressed \(method 8\)"),
    "a stored member declaring 4 GB": (
        lambda f: patch_member(os.path.join(f, "params.npz"), KERNEL0 + ".npy",
                               size=2 ** 32 - 2, compressed=2 ** 32 - 2),
        "declares 4294967294 bytes"),
    "a state declaring 2**60 bytes": (
        lambda f: _write(f, "config.json", json.dumps(_state_shape(_config(), [2 ** 57]))),
        r"state.npz holds \d+ bytes but its config declares"),
    "JSON nested 10**6 deep": (
        lambda f: _write(f, "config.json", "[" * 10 ** 6 + "]" * 10 ** 6),
        "RecursionError"),
    "MAX_CONFIG_BYTES of empty dicts": (
        lambda f: _write(f, "config.json", "[" + "{}," * (lio.MAX_CONFIG_BYTES // 3 - 1) + "{}]"),
        "not an lrtdense model config"),
    "a 17 MB config": (lambda f: _write(f, "config.json", " " * (17 << 20)), "is larger than"),
}


def _write(folder, name, text):
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def _state_shape(config, shape):
    config["state"]["arrays"]["m/" + KERNEL0]["shape"] = shape
    return config


@hostile
@pytest.mark.parametrize("case", sorted(HOSTILE_FOLDERS))
def test_hostile_folder_loads_to_an_error(case):
    write, match = HOSTILE_FOLDERS[case]
    root, folder = SAVED.folder()
    try:
        write(folder)
        resign(folder)                          # past the digests: the readers hold alone
        with pytest.raises(ValueError, match=match):
            lio.load(folder, with_state=True)
    finally:
        shutil.rmtree(root)


@hostile
def test_the_limit_is_in_force():
    """The child really runs under the limit: 3 GB cannot be allocated."""
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == LIMIT
    with pytest.raises(MemoryError):
        np.ones(3 << 30, np.uint8)


# ------------------------------------------------------------------- the child process
def run_child(examples, tmp_path):
    report = tmp_path / "report.json"
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, resource.RLIM_INFINITY))
        import pytest
        code = pytest.main([{__file__!r}, "-q", "-p", "no:cacheprovider"])
        status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
        module = sys.modules.get("test_properties_io")
        json.dump({{"code": int(code), "VmPeak": status["VmPeak"].strip(),
                    "VmHWM": status["VmHWM"].strip(),
                    "examples": getattr(module, "EXAMPLES_RUN", None)}}, open({str(report)!r}, "w"))
        sys.exit(int(code))
    """)
    env = {**os.environ, "LRTDENSE_HOSTILE_CHILD": "1", "LRTDENSE_PROPERTY_EXAMPLES": str(examples),
           "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=1800, env=env, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    result = json.loads(report.read_text())
    print("child under RLIMIT_AS 2 GB:", result)
    assert result["code"] == 0 and "passed" in proc.stdout and "failed" not in proc.stdout
    assert len(result["examples"]) == 7, result
    assert all(n >= min(examples, 50) for n in result["examples"].values()), result
    return result


@pytest.mark.skipif(CHILD, reason="this is the child")
def test_hostile_files_load_to_errors_under_a_2gb_address_space_limit(tmp_path):
    run_child(EXAMPLES, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(CHILD, reason="this is the child")
def test_hostile_files_under_a_2gb_address_space_limit_long(tmp_path):
    run_child(2000, tmp_path)
