"""lrtdense.io: round trips (params, state, meta), atomic save under injected faults and a real
file-size limit, and a ValueError naming the file for every malformed model folder.

The helpers at the top (``write_zip``, ``npy_bytes``, ``patch_member``, ``zip_bomb``) build
hostile files byte by byte; test_properties_io.py uses them too.
"""
import builtins
import errno
import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy as np
import pytest

import lrtdense as L
from lrtdense import io as lio
from lrtdense.io import folders, layout
from lrtdense.losses import GaussianLikelihood, CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam, AdamState
from lrtdense.tree import flatten, map as tree_map

KERNEL0 = "network/layer_0/kernel_posterior_loc"


# ------------------------------------------------------------------------------ helpers
def mixed_model(dtype="float32", input_dim=6, seed=9):
    """Three estimators, a Normal bias with a prior, a learned noise scale; and its params."""
    net = Sequential([L.DenseLocalReparameterization(5, "tanh", dtype=dtype),
                      L.DenseFlipout(4, "relu", bias_posterior="normal", bias_prior="normal",
                                     dtype=dtype),
                      L.DenseReparameterization(3, dtype=dtype)])
    model = Model(net, GaussianLikelihood(0.3, learn_scale=True))
    return model, model.init(np.random.default_rng(seed), input_dim)


def saved_model(tmp_path, name="m", **kwargs):
    model, params = mixed_model(**kwargs)
    path = str(tmp_path / name)
    lio.save(path, model, params)
    return path, model, params


def assert_same_params(a, b):
    fa, fb = flatten(a), flatten(b)
    assert list(fa) == list(fb)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


def npy_bytes(array=None, *, header=None, data=None, allow_pickle=False):
    """An .npy file: ``array`` as np.save writes it, or a hand-made ``header`` dict + ``data``."""
    buf = io.BytesIO()
    if header is None:
        np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=allow_pickle)
    else:
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(data)
    return buf.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    """A zip of ``members``: a list of (name, bytes) (names may repeat)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "Duplicate name"
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in members:
                zf.writestr(name, data)


def flat_members(params, **replace):
    """[(key.npy, npy bytes)] of params, with some keys' bytes replaced (None: left out)."""
    out = []
    for key, value in flatten(params).items():
        data = replace.get(key, npy_bytes(value))
        if data is not None:
            out.append((key + ".npy", data))
    return out


# Offsets of fields in a zip local file header / central directory entry (APPNOTE 4.3.7, 4.3.12).
LOCAL = {"flags": 6, "method": 8, "crc": 14, "compressed": 18, "size": 22}
CENTRAL = {"flags": 8, "method": 10, "crc": 16, "compressed": 20, "size": 24}


def patch_member(path, name, **fields):
    """Overwrites fields (flags, method: 2 bytes; crc, compressed, size: 4) of member ``name`` in
    both its local header and its central directory entry."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    encoded = name.encode()
    for signature, offsets, name_at in ((b"PK\x03\x04", LOCAL, 30), (b"PK\x01\x02", CENTRAL, 46)):
        start = 0
        while True:
            at = data.find(signature, start)
            assert at >= 0, f"{name} not found after {signature}"
            if data[at + name_at:at + name_at + len(encoded)] == encoded:
                break
            start = at + 1
        for field, value in fields.items():
            fmt = "<H" if field in ("flags", "method") else "<I"
            struct.pack_into(fmt, data, at + offsets[field], value)
    with open(path, "wb") as f:
        f.write(data)


def zip_bomb(path, members, size=2 << 30, name="bomb.npy"):
    """``members`` plus a member ``name`` that deflates ~2 MB into ``size`` zero bytes (a
    valid zip: the right CRC and sizes). Built in ~1 s from one 16 MB deflate block repeated."""
    chunk = bytes(1 << 24)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert size % len(chunk) == 0
    deflated = piece * (size // len(chunk)) + c.flush()
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    write_zip(path, members + [(name, deflated)])
    patch_member(path, name, method=zipfile.ZIP_DEFLATED, crc=crc, size=size)


def resign(path):
    """Records the files now in ``path`` in its config.json's "files" (sizes and sha256), as an
    attacker who edits a model folder would: the readers behind the digests must hold alone."""
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError, RecursionError):
        return
    if not isinstance(config, dict) or not isinstance(config.get("files"), dict):
        return
    changed = False
    for name in list(config["files"]):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, "rb") as f:
                data = f.read()
            entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            changed |= config["files"][name] != entry
            config["files"][name] = entry
    if not changed:
        return                                   # (the config's own text stays as it is)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1)


def assert_refused(path, match, filename=None, with_state=False, resigned=True):
    """load(path) raises a ValueError whose message names the file and matches ``match``; with
    ``resigned``, after the config records the tampered files' digests (see ``resign``)."""
    if resigned:
        resign(path)
    with pytest.raises(ValueError) as info:
        lio.load(path, with_state=with_state)
    message = str(info.value)
    assert re.search(match, message), message
    if filename is not None:
        assert os.path.join(path, filename) in message, message
    assert "\n" not in message and len(message) < 700, message
    return message


# --------------------------------------------------------------------------- round trips
def test_save_load_round_trip(tmp_path):
    path, model, params = saved_model(tmp_path)
    model2, params2 = lio.load(path)
    assert model2.get_config() == model.get_config()
    assert_same_params(params, params2)
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    assert np.array_equal(model.forward(params, x, mode="mean")[0],
                          model2.forward(params2, x, mode="mean")[0])
    assert sorted(os.listdir(path)) == ["config.json", "params.npz"]
    assert os.listdir(tmp_path) == ["m"]
    for value in flatten(params2).values():
        assert value.flags.c_contiguous and value.flags.writeable and value.flags.owndata


def test_save_load_variational_dropout_model(tmp_path):
    rng = np.random.default_rng(10)
    model = Model(Sequential([L.DenseSparseVariationalDropout(4, "relu", dtype="float64"),
                              L.DenseVariationalDropout(2, dtype="float64")]),
                  CategoricalLikelihood())
    params = model.init(rng, 3)
    lio.save(str(tmp_path / "vd"), model, params)
    model2, params2 = lio.load(str(tmp_path / "vd"))
    assert model2.get_config() == model.get_config()
    assert_same_params(params, params2)
    x = rng.standard_normal((2, 3))
    assert np.array_equal(model.forward(params, x, mode="mean")[0],
                          model2.forward(params2, x, mode="mean")[0])


def test_fortran_ordered_params_are_written_in_c_order(tmp_path):
    model, params = mixed_model("float64")
    params["network"]["layer_0"]["kernel_posterior_loc"] = np.asfortranarray(
        params["network"]["layer_0"]["kernel_posterior_loc"])
    lio.save(str(tmp_path / "m"), model, params)
    _, params2 = lio.load(str(tmp_path / "m"))
    assert_same_params(params, params2)
    assert params2["network"]["layer_0"]["kernel_posterior_loc"].flags.c_contiguous


def test_reads_a_folder_written_by_the_previous_save(tmp_path):
    """The old save (np.savez, same config) wrote version-1 folders: they still load."""
    model, params = mixed_model()
    path = tmp_path / "old"
    path.mkdir()
    flat = flatten(params)
    config = {"format": "lrtdense-model", "version": 1, "model": model.get_config(),
              "input_dim": 6, "params": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                         for k, v in flat.items()}}
    (path / "config.json").write_text(json.dumps(config, indent=1))
    np.savez(path / "params.npz", **flat)
    assert_same_params(params, lio.load(str(path))[1])


@pytest.mark.parametrize("form", ["kingma", "keras"])
def test_state_and_meta_resume_adam_bit_for_bit(tmp_path, form):
    """Adam's moments in the state, its step count and the rng in meta: after load, the next
    updates and draws are exactly those of the run that never stopped."""
    model, params = mixed_model("float64")
    opt = adam(3e-3, form=form)
    rng = np.random.default_rng(5)
    draw = lambda r, p: tree_map(lambda a: r.standard_normal(np.shape(a)), p)
    grads = lambda: draw(rng, params)
    state = opt.init(params)
    for _ in range(3):
        state = opt.update(state, grads(), inplace=True)
    path = str(tmp_path / "ckpt")
    lio.save(path, model, opt.get_params(state), state={"m": state.m, "v": state.v},
             meta={"step": state.step, "rng": rng.bit_generator.state, "history": [1.5, 2.0]})
    assert lio.load(path)[1].keys() == params.keys()         # still (model, params)
    _, p2, saved, meta = lio.load(path, with_state=True)
    assert meta["history"] == [1.5, 2.0] and meta["step"] == 3
    resumed = AdamState(meta["step"], p2, saved["m"], saved["v"])
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = meta["rng"]
    for _ in range(4):
        g = grads()
        g2 = draw(rng2, resumed.params)
        assert_same_params(g, g2)
        state = opt.update(state, g, inplace=True)
        resumed = opt.update(resumed, g2, inplace=True)
    assert resumed.step == state.step
    for a, b in ((state.params, resumed.params), (state.m, resumed.m), (state.v, resumed.v)):
        assert_same_params(a, b)


def test_state_keeps_empty_dicts_scalars_and_key_order(tmp_path):
    model, params = mixed_model()
    state = {"z": {"empty": {}, "n": 7, "flag": np.bool_(True)}, "a": np.arange(3, dtype=np.int32)}
    lio.save(str(tmp_path / "m"), model, params, state=state)
    _, _, got, meta = lio.load(str(tmp_path / "m"), with_state=True)
    assert meta == {} and list(got) == ["z", "a"] and list(got["z"]) == ["empty", "n", "flag"]
    assert got["z"]["empty"] == {} and got["z"]["n"].dtype == np.int64 and got["z"]["n"] == 7
    assert got["z"]["flag"].dtype == np.bool_ and np.array_equal(got["a"], np.arange(3))
    path = str(tmp_path / "plain")
    lio.save(path, model, params)
    assert lio.load(path, with_state=True)[2:] == ({}, {})


@pytest.mark.parametrize("meta,match", [
    ({"loss": float("nan")}, r"meta\['loss'\] is nan; JSON holds finite numbers only"),
    ({"h": [1.0, float("inf")]}, r"meta\['h'\]\[1\] is inf"),
    ({1: "a"}, r"meta has the key 1 of type int; JSON keys are strings"),
    ({"t": (1, 2)}, r"meta\['t'\] is a builtins.tuple; expected plain JSON"),
    ({"n": np.int64(3)}, r"meta\['n'\] is a numpy.int64"),
    ({"a": np.zeros(2)}, r"meta\['a'\] is a numpy.ndarray; .*arrays belong in the state"),
    ({"big": 2 ** 2000}, r"meta\['big'\] is an integer of 2001 bits"),
    ({"deep": json.loads("[" * 70 + "]" * 70)}, "nested deeper than 64"),
    ([1, 2], "meta must be a dict"),
])
def test_meta_must_be_plain_json(tmp_path, meta, match):
    model, params = mixed_model()
    with pytest.raises(ValueError, match=match):
        lio.save(str(tmp_path / "m"), model, params, meta=meta)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("state,error,match", [
    ({"a": np.array([object()])}, TypeError, r"state\['a'\] must be a numeric array, got dtype object"),
    ({"a": "text"}, TypeError, r"state\['a'\] must be a numeric array, got str"),
    ({"a": np.zeros(2, ">f8")}, TypeError, "native byte order"),
    ({"a/b": np.zeros(2)}, ValueError, "must be a non-empty string without '/'"),
    ({"a\x00": np.zeros(2)}, ValueError, "cannot name a zip member; expected UTF-8 text without NUL"),
    ({"\udcff": np.zeros(2)}, ValueError, "cannot name a zip member"),
    ([np.zeros(2)], TypeError, "state must be a nested dict"),
])
def test_bad_state_is_refused_before_writing(tmp_path, state, error, match):
    model, params = mixed_model()
    with pytest.raises(error, match=match):
        lio.save(str(tmp_path / "m"), model, params, state=state)
    assert os.listdir(tmp_path) == []


def test_save_refuses_params_that_do_not_match_the_model(tmp_path):
    model, params = mixed_model()
    bad = {**params, "network": {**params["network"],
                                 "layer_1": {**params["network"]["layer_1"],
                                             "kernel_posterior_loc": np.zeros((5, 9), np.float32)}}}
    with pytest.raises(ValueError, match=r"layer_1/kernel_posterior_loc'\] has shape \(5, 9\) .*"
                                         r"expects \(5, 4\) float32"):
        lio.save(str(tmp_path / "m"), model, bad)
    wrong_dtype = {**params, "likelihood": {"untransformed_noise_scale": np.float64(0.1)}}
    with pytest.raises(ValueError, match=r"dtype float64; the model expects \(\) float32"):
        lio.save(str(tmp_path / "m"), model, wrong_dtype)
    with pytest.raises(ValueError, match=r"missing \['likelihood/untransformed_noise_scale'\]"):
        lio.save(str(tmp_path / "m"), model, {**params, "likelihood": {}})
    obj = {**params, "likelihood": {"untransformed_noise_scale": np.array(object())}}
    with pytest.raises(TypeError, match="must be a numeric array, got dtype object"):
        lio.save(str(tmp_path / "m"), model, obj)
    assert os.listdir(tmp_path) == []


def test_save_never_replaces_what_is_not_a_model(tmp_path):
    model, params = mixed_model()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match=r"holds files other than a saved model's \(\['thesis.tex'\]\)"):
        lio.save(str(tmp_path / "home"), model, params)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        lio.save(str(tmp_path / "file"), model, params)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lio.save(str(tmp_path / "no" / "m"), model, params)
    (tmp_path / "empty").mkdir()
    lio.save(str(tmp_path / "empty"), model, params)                # an empty folder is fine
    assert_same_params(params, lio.load(str(tmp_path / "empty"))[1])
    assert sorted(os.listdir(tmp_path)) == ["empty", "file", "home"]


def test_save_through_a_symlink_replaces_the_model_it_points_to(tmp_path):
    path, model, params = saved_model(tmp_path, "real")
    os.symlink(path, tmp_path / "link")
    _, new = mixed_model(seed=1)
    lio.save(str(tmp_path / "link"), model, new)
    assert os.path.islink(tmp_path / "link")
    assert_same_params(new, lio.load(path)[1])
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


# ------------------------------------------------------------------------------ atomicity
class Fault(Exception):
    pass


def record_and_inject(monkeypatch, fail_at=None, exc=Fault):
    """Wraps the file-system calls save makes; returns the list of calls seen. With ``fail_at``,
    call number ``fail_at`` raises ``exc`` instead of running."""
    calls = []

    def wrap(name, fn):
        def wrapper(*args, **kwargs):
            calls.append(name)
            if fail_at is not None and len(calls) - 1 == fail_at:
                raise exc(f"injected at {name}")
            return fn(*args, **kwargs)
        return wrapper

    for name in ("mkdir", "fsync", "rename"):
        monkeypatch.setattr(os, name, wrap(name, getattr(os, name)))
    for module in (folders, layout):        # the modules that open files while saving
        monkeypatch.setattr(module, "open", wrap("open", builtins.open), raising=False)
    monkeypatch.setattr(np.lib.format, "write_array", wrap("write_array", np.lib.format.write_array))
    monkeypatch.setattr(folders, "exchange", wrap("exchange", folders.exchange))
    return calls


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
@pytest.mark.parametrize("exc", [Fault, KeyboardInterrupt, OSError])
def test_a_failure_at_any_point_of_save_leaves_one_complete_model(tmp_path, monkeypatch,
                                                                  exchange, exc):
    """Every file-system call of save in turn raises: before the commit the old model is intact,
    after it the new one; never a mix, never a leftover temporary folder."""
    path, model, old = saved_model(tmp_path)
    _, new = mixed_model(seed=2)
    state = {"m": new}
    if not exchange:
        monkeypatch.setattr(folders, "exchange", lambda a, b: False)
    with monkeypatch.context() as m:
        calls = record_and_inject(m)
        lio.save(path, model, new, state=state)
    commit = calls.index("exchange") if exchange else len(calls) - 1 - calls[::-1].index("rename")
    assert calls.count("fsync") == 5 and calls.count("write_array") == 2 * len(flatten(new))
    lio.save(path, model, old)
    for k in range(len(calls)):
        with monkeypatch.context() as m:
            record_and_inject(m, fail_at=k, exc=exc)
            with pytest.raises(exc, match="injected"):
                lio.save(path, model, new, state=state)
        assert os.listdir(tmp_path) == ["m"], (k, calls[k], os.listdir(tmp_path))
        _, got = lio.load(path)
        assert_same_params(old if k <= commit else new, got)
        if k > commit:
            lio.save(path, model, old)


def test_a_real_file_size_limit_leaves_the_old_model(tmp_path):
    """RLIMIT_FSIZE (a full disk, in effect): writing params.npz fails with EFBIG midway."""
    script = textwrap.dedent(f"""
        import json, os, resource, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import numpy as np
        from test_io import mixed_model, assert_same_params
        from lrtdense import io as lio
        path = {str(tmp_path / "m")!r}
        model, old = mixed_model()
        lio.save(path, model, old)
        big, new = mixed_model(input_dim=4000)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        try:
            lio.save(path, big, new)
            result = {{"error": None}}
        except OSError as err:
            result = {{"error": err.errno}}
        _, got = lio.load(path)
        assert_same_params(old, got)
        result["listing"] = os.listdir(os.path.dirname(path))
        print(json.dumps(result))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result == {"error": errno.EFBIG, "listing": ["m"]}


# -------------------------------------------------------------------------- malformed files
def test_corrupted_and_pickled_params_are_refused(tmp_path):
    path, model, params = saved_model(tmp_path)
    params_path = os.path.join(path, "params.npz")
    with open(params_path, "wb") as f:
        f.write(b"not a zip file" * 100)
    assert_refused(path, "could not be read as a plain .npz", "params.npz")
    with open(params_path, "wb") as f:
        f.write(b"short")
    assert_refused(path, r"holds 5 bytes but its config declares \d+ bytes", "params.npz")
    with open(params_path, "wb") as f:
        np.save(f, np.zeros(1000))
    assert_refused(path, "is a plain .npy file; expected an .npz archive", "params.npz")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    """An object array of the kernel's exact size: refused from its header, pickle never called."""
    path, model, params = saved_model(tmp_path)
    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was called")
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    header = {"descr": "|O", "fortran_order": False, "shape": (6, 5)}
    evil = npy_bytes(header=header, data=pickle.dumps([os.system]).ljust(120, b"."))
    write_zip(os.path.join(path, "params.npz"), flat_members(params, **{KERNEL0: evil}))
    assert_refused(path, "holds Python objects .* never unpickles", "params.npz")
    obj = npy_bytes(np.array([None] * 30, dtype=object).reshape(6, 5), allow_pickle=True)
    write_zip(os.path.join(path, "params.npz"), flat_members(params, **{KERNEL0: obj}))
    assert_refused(path, "params.npz", "params.npz")


def _kernel(params):
    return params["network"]["layer_0"]["kernel_posterior_loc"]


MEMBER_CASES = {
    # name: (replacement bytes for layer 0's kernel given the params, message)
    "wrong dtype, same size": (lambda p: npy_bytes(_kernel(p).view(np.int32)),
                               r"has shape \(6, 5\) and dtype int32; expected \(6, 5\) float32"),
    "float64 instead of float32": (lambda p: npy_bytes(_kernel(p).astype(np.float64)),
                                   r"has shape \(6, 5\) and dtype float64; expected \(6, 5\) float32"),
    "a float64 matrix of 10000 elements": (lambda p: npy_bytes(np.zeros((100, 100))),
                                           r"declares 80128 bytes; an array of shape \(6, 5\) and "
                                           r"dtype float32 with its header needs 130 to 10120"),
    "big-endian": (lambda p: npy_bytes(_kernel(p).astype(">f4")), r"dtype >f4; expected"),
    "transposed shape": (lambda p: npy_bytes(_kernel(p).T.copy()),
                         r"has shape \(5, 6\) and dtype float32; expected \(6, 5\)"),
    "Fortran order": (lambda p: npy_bytes(np.asfortranarray(_kernel(p))),
                      "is stored in Fortran order; lrtdense writes C order"),
    "bad header": (lambda p: npy_bytes(_kernel(p)).replace(b"'descr'", b"'dexcr'"),
                   "invalid .npy header"),
    "header hides a shorter array": (
        lambda p: npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (6, 4)},
                            data=b"\0" * 120),
        r"has shape \(6, 4\)"),
    "npy version 3": (lambda p: npy_bytes(_kernel(p)).replace(b"NUMPY\x01\x00", b"NUMPY\x03\x00"),
                      r"invalid .npy header \(.npy format version \(3, 0\)"),
    "not an npy": (lambda p: b"x" * 248, "invalid .npy header"),
}


@pytest.mark.parametrize("case", sorted(MEMBER_CASES))
def test_malformed_member_is_refused(tmp_path, case):
    path, model, params = saved_model(tmp_path)
    make, match = MEMBER_CASES[case]
    write_zip(os.path.join(path, "params.npz"), flat_members(params, **{KERNEL0: make(params)}))
    message = assert_refused(path, match, "params.npz")
    assert "kernel_posterior_loc.npy" in message


def test_zip_directory_problems_are_refused_before_decompressing(tmp_path):
    path, model, params = saved_model(tmp_path)
    npz = os.path.join(path, "params.npz")
    members = flat_members(params)
    write_zip(npz, members + [(KERNEL0 + "/a.npy", npy_bytes(np.zeros(1)))])   # keys a and a/b
    assert_refused(path, r"unexpected \['network/layer_0/kernel_posterior_loc/a.npy'\]", "params.npz")
    write_zip(npz, members[1:])
    assert_refused(path, r"missing \['network/layer_0/kernel_posterior_loc.npy'\]", "params.npz")
    write_zip(npz, members + members[:1])
    assert_refused(path, r"duplicated \['network/layer_0/kernel_posterior_loc.npy'\]", "params.npz")
    write_zip(npz, members, zipfile.ZIP_DEFLATED)
    assert_refused(path, r"is compressed \(method 8\); lrtdense reads only the uncompressed", "params.npz")
    np.savez_compressed(npz, **flatten(params))
    assert_refused(path, r"is compressed \(method 8\)", "params.npz")


@pytest.mark.parametrize("field,value,match", [
    ("method", 99, r"is compressed \(method 99\)"),
    ("method", 8, r"is compressed \(method 8\)"),
    ("flags", 0x1, r"has zip flags 0x1 \(encrypted"),
    ("flags", 0x20, r"has zip flags 0x20"),
    ("size", 10 ** 9, r"declares 1000000000 bytes"),
    ("compressed", 10 ** 9, r"declares 1000000000 stored bytes"),
    ("crc", 12345, r"is corrupted \(BadZipFile: Bad CRC-32"),
])
def test_flipped_fields_of_the_zip_directory_are_refused(tmp_path, field, value, match):
    path, model, params = saved_model(tmp_path)
    npz = os.path.join(path, "params.npz")
    write_zip(npz, flat_members(params))
    patch_member(npz, KERNEL0 + ".npy", **{field: value})
    assert_refused(path, match, "params.npz")


def test_flipped_name_and_truncation_are_refused(tmp_path):
    path, model, params = saved_model(tmp_path)
    npz = os.path.join(path, "params.npz")
    with open(npz, "rb") as f:
        data = f.read()
    at = data.rfind(b"PK\x01\x02")                        # the last central directory entry
    flipped = bytearray(data)
    flipped[at + 46] ^= 0x04                              # first byte of its file name
    with open(npz, "wb") as f:
        f.write(flipped)
    assert_refused(path, r"does not hold the expected arrays: missing \[", "params.npz")
    for cut in (len(data) // 2, len(data) - 10, 1200):
        with open(npz, "wb") as f:
            f.write(data[:cut])
        assert_refused(path, "params.npz", "params.npz")


def test_an_extra_2gb_member_is_not_decompressed(tmp_path):
    path, model, params = saved_model(tmp_path)
    npz = os.path.join(path, "params.npz")
    zip_bomb(npz, flat_members(params))
    assert os.path.getsize(npz) < 2.5e6
    with zipfile.ZipFile(npz) as zf:
        assert zf.getinfo("bomb.npy").file_size == 2 << 30
    assert_refused(path, r"unexpected \['bomb.npy'\]", "params.npz")


def rewrite_config(path, edit):
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    result = edit(config)
    text = result if isinstance(result, str) else json.dumps(config)
    with open(config_path, "w") as f:
        f.write(text)


def layer0(config):
    return config["model"]["network"]["layers"][0]["config"]


CONFIG_CASES = {
    "not JSON": (lambda c: "{ nope", "config.json is not valid JSON"),
    "not UTF-8": (lambda c: json.dumps(c) + "\udcff", "is not valid JSON"),
    "other format": (lambda c: '{"format": "something-else"}', "not an lrtdense model config"),
    "a list": (lambda c: "[1, 2]", "not an lrtdense model config"),
    "version 3": (lambda c: c.update(version=3),
                  "has format version 3; this lrtdense reads versions 1 and 2"),
    "version 1 with files": (lambda c: c.update(version=1), "format version 1 has no 'files'"),
    "no files": (lambda c: c.pop("files"), "format version 2 requires 'files'"),
    "NaN": (lambda c: json.dumps(c).replace('"scale": 0.3', '"scale": NaN'),
            "NaN is not a finite number"),
    "1e400": (lambda c: json.dumps(c).replace('"scale": 0.3', '"scale": 1e400'),
              "1e400 overflows a float"),
    "duplicate key": (lambda c: json.dumps(c).replace('"input_dim": 6', '"input_dim": 6, "input_dim": 7'),
                      "duplicate key 'input_dim'"),
    "deep nesting": (lambda c: json.dumps(c)[:-1] + ', "meta": ' + "[" * 100000 + "]" * 100000 + "}",
                     "RecursionError"),
    "nested 100": (lambda c: c.update(meta={"a": json.loads("[" * 100 + "]" * 100)}),
                   "nested deeper than 64 levels"),
    "extra key": (lambda c: c.update(code="import os"), r"unexpected keys \['code'\]"),
    "no input_dim": (lambda c: c.pop("input_dim"), r"missing keys \['input_dim'\]"),
    "input_dim 0": (lambda c: c.update(input_dim=0), r"input_dim must be an integer in \[1, 2\*\*62\), got 0"),
    "input_dim str": (lambda c: c.update(input_dim="6"), r"input_dim must be an integer .* got '6'"),
    "input_dim float": (lambda c: c.update(input_dim=6.0), r"input_dim must be an integer .* got 6.0"),
    "input_dim true": (lambda c: c.update(input_dim=True), r"input_dim must be an integer .* got True"),
    "input_dim 2**70": (lambda c: c.update(input_dim=2 ** 70), "got an integer of 71 bits"),
    "input_dim 1e9": (lambda c: c.update(input_dim=10 ** 9),
                      r"'params' listed do not match the model's for input_dim 1000000000: "
                      r"network/layer_0/kernel_posterior_loc is listed as \{'shape': \[6, 5\], "
                      r"'dtype': 'float32'\}, the model has \{'shape': \[1000000000, 5\]"),
    "units 10**400": (lambda c: layer0(c).update(units=10 ** 400),
                      r"invalid model config: units must be an integer >= 1 \(and <= 2147483647\)"),
    "units str": (lambda c: layer0(c).update(units="5"), r"invalid model config: units must be an integer"),
    "unknown layer": (lambda c: c["model"]["network"]["layers"][0].update(class_name="os.system"),
                      "invalid model config: unknown layer class 'os.system'"),
    "activation dict": (lambda c: layer0(c).update(activation={"a": 1}), "invalid model config"),
    "bad dtype": (lambda c: layer0(c).update(dtype="float16"), "invalid model config"),
    "unknown setting": (lambda c: layer0(c).update(evil=1), "invalid model config"),
    "no layers": (lambda c: c["model"]["network"].update(layers=[]), "invalid model config"),
    "likelihood": (lambda c: c["model"].update(likelihood={}), "invalid model config"),
    "huge noise scale": (lambda c: c["model"]["likelihood"].update(scale=1e308),
                         "cannot be laid out"),
    "params listing": (lambda c: c["params"].pop(KERNEL0),
                       r"the 'params' listed do not match .*: missing \['network/layer_0/kernel_posterior_loc'\]"),
    "params listing not a dict": (lambda c: c.update(params=[1]), r"the 'params' listed .* expected a dict"),
    "meta not a dict": (lambda c: c.update(meta=[1]), "meta must be a dict"),
    "meta huge int": (lambda c: c.update(meta={"n": 10 ** 1000}), r"meta\['n'\] is an integer of 3322 bits"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_malformed_config_is_refused(tmp_path, case):
    path, model, params = saved_model(tmp_path)
    edit, match = CONFIG_CASES[case]
    if case == "not UTF-8":
        with open(os.path.join(path, "config.json"), "ab") as f:
            f.write(b"\xff")
    else:
        rewrite_config(path, edit)
    assert_refused(path, match, "config.json")


def test_huge_declared_sizes_are_refused_before_allocating(tmp_path):
    """A consistent config declaring a 200 GB kernel (listing and input_dim agree)."""
    path, model, params = saved_model(tmp_path)

    def huge(config):
        config["input_dim"] = 10 ** 10
        config["params"][KERNEL0]["shape"][0] = 10 ** 10
        config["params"][KERNEL0.replace("loc", "untransformed_scale")]["shape"][0] = 10 ** 10
    rewrite_config(path, huge)
    assert_refused(path, r"params.npz holds \d+ bytes but its config declares 400000000\d+ bytes",
                   "params.npz")


def test_missing_files_and_folders(tmp_path):
    assert_refused(str(tmp_path / "nothing"), "does not exist or is not a regular file",
                   "config.json")
    path, model, params = saved_model(tmp_path)
    os.remove(os.path.join(path, "params.npz"))
    os.mkdir(os.path.join(path, "params.npz"))
    assert_refused(path, "does not exist or is not a regular file", "params.npz")
    path, model, params = saved_model(tmp_path, "big")
    with open(os.path.join(path, "config.json"), "ab") as f:
        f.write(b" " * lio.MAX_CONFIG_BYTES)
    assert_refused(path, f"is larger than {lio.MAX_CONFIG_BYTES} bytes", "config.json")


def test_malformed_state_is_refused(tmp_path):
    model, params = mixed_model()
    path = str(tmp_path / "m")
    lio.save(path, model, params, state={"m": {"a": np.zeros(3)}}, meta={"step": 1})
    state_npz = os.path.join(path, "state.npz")
    assert lio.load(path)[1].keys() == params.keys()          # the state is not read
    with open(state_npz, "r+b") as f:
        f.truncate(50)
    assert_refused(path, "state.npz", "state.npz", with_state=True)
    write_zip(state_npz, [("m/a.npy", npy_bytes(np.zeros(4)))])
    assert_refused(path, r"'m/a.npy': has shape \(4,\) and dtype float64; expected \(3,\) float64",
                   "state.npz", with_state=True)
    os.remove(state_npz)
    assert_refused(path, "state.npz does not exist", "state.npz", with_state=True)
    for edit, match in [
            (lambda c: c["state"]["arrays"]["m/a"].update(dtype="object"), "has dtype 'object'"),
            (lambda c: c["state"]["arrays"]["m/a"].update(shape=[-1]), "has shape \\[-1\\]"),
            (lambda c: c["state"]["arrays"]["m/a"].update(shape=[2 ** 40, 2 ** 40]),
             "larger than any array"),
            (lambda c: c["state"]["structure"].update(extra="*"), "the structure has leaves"),
            (lambda c: c["state"].update(structure={"m": {"a": 1}}), "leaves must be '\\*'"),
            (lambda c: c["state"].pop("arrays"), "keys 'structure' and 'arrays'")]:
        lio.save(path, model, params, state={"m": {"a": np.zeros(3)}})
        rewrite_config(path, edit)
        assert_refused(path, ("invalid state: .*" if "keys" not in match else "") + match,
                       "config.json", with_state=True)
    lio.save(path, model, params)
    write_zip(state_npz, [])
    assert_refused(path, "state.npz exists but .*config.json declares no state", "state.npz",
                   with_state=True)


@pytest.mark.parametrize("zip64", [False, True])
def test_a_huge_zip_directory_is_refused_before_zipfile_parses_it(tmp_path, monkeypatch, zip64):
    """zipfile turns every directory entry (46 bytes and a name) into a ~300-byte object: the
    directory's declared size is bounded by the expected members first, classic or zip64."""
    if zip64:      # zipfile writes the zip64 end records past this many entries
        monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    path, model, params = saved_model(tmp_path)
    npz = os.path.join(path, "params.npz")
    write_zip(npz, flat_members(params))
    with open(npz, "rb") as f:
        assert (b"PK\x06\x06" in f.read()) == zip64
    resign(path)
    assert_same_params(params, lio.load(path)[1])                 # zip64 records are fine
    write_zip(npz, flat_members(params) + [(f"x{i}", b"") for i in range(20000)])
    real_zipfile = zipfile.ZipFile
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("zipfile parsed it"))
    assert_refused(path, r"declares a zip directory of \d{7} bytes; 11 members need at most \d{5}$",
                   "params.npz")
    monkeypatch.setattr(zipfile, "ZipFile", real_zipfile)
