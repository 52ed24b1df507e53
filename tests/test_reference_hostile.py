"""Issue 20, "nothing lost, round 2": hostile files given to `lrtdense reference`, each reproduced,
then shown handled as documented: a bad result file is a failing row naming it, a bad reference
set is exit 3 with one line on stderr, an unwritable --markdown is exit 2 before any work, and
`generate` never writes through a symlink nor into the installed set. Memory is checked in a
child process whose address space is limited to its own baseline plus EXTRA_MB."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from lrtdense import bounded
from lrtdense.reference import default_dir, store
from lrtdense.reference import cli as reference_cli
from lrtdense.reference import verify as verify_module
from lrtdense.reference.verify import UsageError, generate, verify
from lrtdense.testing import reference_cases
import spec_port
from helpers import run_lrtdense

CASE = "lrt_64_basic"
EXTRA_MB = 256          # the child's address space: its baseline after a benign verify + this
BOMB_ELEMENTS = 137_500_000     # 1.1 GB of float64 zeros, deflated to ~1 MB


# ------------------------------------------------------------------------------ hostile files

def huge_npy(elements=2 ** 40):
    """A ~200-byte .npy whose header declares ``elements`` float64 (np.load allocates them all)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (elements,)})
    return buf.getvalue() + bytes(72)


def zip_bytes(entries):
    """A zip archive written by hand: entries (name, method, crc, size, payload); one of 200,000
    members or a deflated gigabyte is written in a fraction of a second this way."""
    local, central, offset = [], [], 0
    for name, method, crc, size, payload in entries:
        n = name.encode()
        local.append(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc,
                                 len(payload), size, len(n), 0) + n)
        local.append(payload)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0,
                                   crc, len(payload), size, len(n), 0, 0, 0, 0, 0, offset) + n)
        offset += len(local[-2]) + len(payload)
    directory = b"".join(central)
    count = min(len(entries), 0xFFFF)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), offset, 0)
    return b"".join(local) + directory + end


def zip_bomb(elements=BOMB_ELEMENTS):
    """An .npz whose outputs/sample.npy declares (elements,) float64 zeros, honestly: the zip
    directory and the .npy header both state the 1.1 GB it inflates to (CRC included)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (elements,)})
    header = buf.getvalue()
    block = bytes(1 << 24)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    # after a full flush the compressor starts afresh, so every 16 MB block compresses the same
    same = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(elements * 8, len(block))
    tail = deflate.compress(bytes(rest)) + deflate.flush()
    crc = zlib.crc32(header)
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(bytes(rest), crc)
    payload = first + same * blocks + tail
    return zip_bytes([("outputs/sample.npy", zipfile.ZIP_DEFLATED, crc,
                       len(header) + elements * 8, payload)])


def many_members(count=200_000):
    """An .npz of ``count`` empty members: np.load parses every one of them."""
    return zip_bytes([(f"m{i}.npy", zipfile.ZIP_STORED, 0, 0, b"") for i in range(count)])


def deep_json(depth=100_000):
    """Valid JSON nested ``depth`` deep (json.loads: RecursionError)."""
    return "[" * depth + "]" * depth


def sparse_file(path, size=3 << 30):
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)


def good_results():
    case = reference_cases(CASE)[0]
    return spec_port.run_case(case.meta, case.inputs)


def write_results(root, kind):
    """RESULTS for CASE: the spec port's, with one hostile file (``kind``)."""
    root.mkdir(parents=True)
    npz = root / f"{CASE}.npz"
    if kind == "good":
        np.savez(npz, **good_results())
    elif kind == "huge_npy_file":          # 3a, directory layout
        for key, value in good_results().items():
            path = root / CASE / (key + ".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, value)
        (root / CASE / "outputs" / "sample.npy").write_bytes(huge_npy())
    elif kind == "huge_npy_member":        # 3a, inside an .npz
        with zipfile.ZipFile(npz, "w") as z:
            z.writestr("outputs/sample.npy", huge_npy())
    elif kind == "zip_bomb":               # 3b
        npz.write_bytes(zip_bomb())
    elif kind == "many_members":           # 3c
        npz.write_bytes(many_members())
    elif kind == "garbage":
        npz.write_bytes(b"not a zip archive at all \x00\xff" * 8)
    return root


def resign(root):
    """Recomputes every sha256 of the manifest (what an attacker editing the set would do)."""
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    for files in manifest["cases"].values():
        for rel in files:
            files[rel] = store.sha256(root / rel)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def hostile_reference(tmp_path, kind):
    """A one-case reference set (written by generate) made hostile by ``kind``."""
    root = tmp_path / f"ref_{kind}"
    generate(str(root), [CASE])
    case_dir = root / "cases" / CASE
    if kind == "huge_npy":                 # an attacker re-signs the manifest
        (case_dir / "expected" / "outputs" / "sample.npy").write_bytes(huge_npy())
        resign(root)
    elif kind == "deep_manifest":
        manifest = (root / "manifest.json").read_text()
        (root / "manifest.json").write_text(manifest[:-2] + ', "x": ' + deep_json() + "}\n")
    elif kind == "big_manifest":
        sparse_file(root / "manifest.json")
    elif kind == "deep_case_json":
        (case_dir / "case.json").write_text(deep_json())
        resign(root)
    elif kind == "big_case_json":          # too large to re-sign in a test: refused by its size
        sparse_file(case_dir / "case.json")
    return root


RESULT_KINDS = ["huge_npy_file", "huge_npy_member", "zip_bomb", "many_members", "garbage"]
REFERENCE_KINDS = ["huge_npy", "deep_manifest", "big_manifest", "deep_case_json",
                   "big_case_json"]


# ------------------------------------------------------------------------------------ results

def failing_row(results):
    rows = verify(default_dir(), str(results), [CASE])
    assert len(rows) == 1 and rows[0].quantity == "*" and not rows[0].passed, rows
    return rows[0].note


def test_huge_header_npy_is_a_failing_row_naming_it(tmp_path):
    """3a: np.load allocated the 2**40 elements the header declares (MemoryError traceback)."""
    note = failing_row(write_results(tmp_path / "file", "huge_npy_file"))
    assert str(tmp_path / "file" / CASE / "outputs" / "sample.npy") in note
    assert "(1099511627776,)" in note and "allowed" in note
    note = failing_row(write_results(tmp_path / "member", "huge_npy_member"))
    assert f"{CASE}.npz: member outputs/sample.npy declares shape (1099511627776,)" in note


def test_zip_bomb_is_refused_uninflated(tmp_path):
    """3b: a 1 MB .npz inflating to 1.1 GB; its declared size is refused before inflating."""
    results = write_results(tmp_path / "r", "zip_bomb")
    assert (results / f"{CASE}.npz").stat().st_size < 2e6
    note = failing_row(results)
    assert f"declares {BOMB_ELEMENTS * 8 + 128} bytes uncompressed" in note


def test_a_zip_directory_of_200000_members_is_not_parsed(tmp_path):
    """3c: np.load parsed 200,000 members (75 s); the directory's declared size is checked
    first."""
    note = failing_row(write_results(tmp_path / "r", "many_members"))
    assert "declares a zip directory of" in note and "at most" in note


def test_garbage_npz_says_it_is_not_a_zip(tmp_path):
    note = failing_row(write_results(tmp_path / "r", "garbage"))
    assert "not a valid .npz" in note and "pickled" not in note


def test_unneeded_members_are_never_read(tmp_path):
    results = tmp_path / "r"
    results.mkdir()
    with zipfile.ZipFile(results / f"{CASE}.npz", "w") as z:
        for key, value in good_results().items():
            buf = io.BytesIO()
            np.save(buf, value)
            z.writestr(key + ".npy", buf.getvalue())
        z.writestr("debug/huge.npy", huge_npy())
        z.writestr("debug/garbage.npy", b"garbage")
    rows = verify(default_dir(), str(results), [CASE])
    assert rows and all(r.passed for r in rows), [r.note for r in rows if not r.passed]


@pytest.mark.parametrize("layout", ["npz", "npz_compressed", "files"])
def test_big_endian_and_fortran_order_results_pass(tmp_path, layout):
    """Right values in '>f8' (converted to native after the bounded read) or Fortran order."""
    res = {k: (np.asfortranarray(v) if np.ndim(v) == 2 else v).astype(">f8")
           for k, v in good_results().items()}
    assert any(np.isfortran(v) for v in res.values())
    results = tmp_path / "r"
    results.mkdir()
    if layout == "files":
        for key, value in res.items():
            path = results / CASE / (key + ".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, value)
    else:
        (np.savez if layout == "npz" else np.savez_compressed)(results / f"{CASE}.npz", **res)
    rows = verify(default_dir(), str(results), [CASE])
    assert len(rows) == len(res) and all(r.passed for r in rows), [r.note for r in rows]


def test_wrong_shape_within_the_bound_is_still_compared(tmp_path):
    res = good_results()
    res["outputs/sample"] = np.zeros((7, 2))
    np.savez(tmp_path / f"{CASE}.npz", **res)
    rows = {r.quantity: r for r in verify(default_dir(), str(tmp_path), [CASE])}
    assert not rows["outputs/sample"].passed and "shape (7, 2)" in rows["outputs/sample"].note
    assert rows["grads/x"].passed


# ----------------------------------------------------------------------------- reference sets

@pytest.fixture
def cli(capsys):
    """``lrtdense reference ARGS`` in this process: (code, stdout, stderr)."""
    return lambda *args: run_lrtdense(capsys, "reference", *args)


@pytest.mark.parametrize("kind", REFERENCE_KINDS)
def test_hostile_reference_set_is_exit_3_in_one_line(tmp_path, cli, kind):
    """A huge-header .npy (re-signed), a manifest.json or case.json nested 100,000 deep
    (RecursionError) or of 3 GB (MemoryError): `verify` and `list` exit 3 with one line."""
    root = hostile_reference(tmp_path, kind)
    results = write_results(tmp_path / "results", "good")
    for args in (["verify", str(results), "--reference", str(root)],
                 ["list", "--reference", str(root)]):
        code, out, err = cli(*args)
        assert code == 3 and out == "" and err.count("\n") == 1, (code, err[-2000:])
        assert err.startswith("lrtdense reference: error: ") and "Traceback" not in err
    assert ("manifest.json" if "manifest" in kind else CASE) in err


def test_json_depth_is_checked_on_the_raw_bytes(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"a": [[["[[[[{{{{ brackets in a string \" ]]"]]]}))
    assert bounded.read_json(str(path), 1000, 4)["a"][0][0][0].startswith("[[[[")
    with pytest.raises(bounded.FileRefused, match="nests"):
        bounded.read_json(str(path), 1000, 3)
    path.write_text(deep_json())
    with pytest.raises(bounded.FileRefused, match="100000 deep"):
        bounded.read_json(str(path), 1 << 20, 32)
    with pytest.raises(bounded.TooLarge, match="at most 1000"):
        bounded.read_json(str(path), 1000, 32)


def test_npy_reader_refuses_before_allocating(tmp_path):
    path = tmp_path / "a.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 ** 32 - 1) + b"{")
    with pytest.raises(bounded.FileRefused, match="header declares 4294967295 bytes; at most"):
        bounded.read_npy(str(path), None, 1 << 20)
    np.save(path, np.arange(6.0).reshape(2, 3))
    assert bounded.read_npy(str(path), None, 48).shape == (2, 3)
    with pytest.raises(bounded.TooLarge, match="48 bytes of data, more than the 47"):
        bounded.read_npy(str(path), None, 47)
    with pytest.raises(bounded.FileRefused, match=r"expected \(3, 2\)"):
        bounded.read_npy(str(path), None, 48, expected_shape=(3, 2))
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(bounded.FileRefused, match="49 follow its header"):
        bounded.read_npy(str(path), None, 1000)
    np.save(path, np.array([None]), allow_pickle=True)
    with pytest.raises(bounded.FileRefused, match="pickled"):
        bounded.read_npy(str(path), None, 1000)


# ------------------------------------------------------------------------------------- memory

CHILD = r"""
import contextlib, io, json, resource, sys, traceback
from lrtdense import cli

def status(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024

def call(argv):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        code = None
        err.write(traceback.format_exc())
    return {"code": code, "stdout": out.getvalue()[-3000:], "stderr": err.getvalue()[-3000:]}

spec = json.load(open(sys.argv[1]))
benign = call(spec["benign"])
baseline = status("VmPeak:")
limit = baseline + spec["extra"]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
runs = [call(argv) for argv in spec["runs"]]
print(json.dumps({"benign": benign, "baseline": baseline, "limit": limit,
                  "peak": status("VmPeak:"), "runs": runs}))
"""


def test_every_hostile_file_within_a_memory_bound(tmp_path):
    """All of the above in one child process limited (RLIMIT_AS) to its own peak after a benign
    verify plus EXTRA_MB: every hostile result is a failing row naming its file, every hostile
    reference set exit 3 in one line; nothing raises (MemoryError included)."""
    good = write_results(tmp_path / "good", "good")
    runs, expect = [], []
    for kind in RESULT_KINDS:
        results = write_results(tmp_path / kind, kind)
        runs.append(["reference", "verify", str(results), "--cases", CASE])
        expect.append((1, str(results)))
    for kind in REFERENCE_KINDS:
        root = hostile_reference(tmp_path, kind)
        runs.append(["reference", "verify", str(good), "--reference", str(root)])
        expect.append((3, None))
        runs.append(["reference", "list", "--reference", str(root)])
        expect.append((3, None))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"benign": ["reference", "verify", str(good), "--cases", CASE],
                                "runs": runs, "extra": EXTRA_MB << 20}))
    child = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout)
    assert report["benign"]["code"] == 0, report["benign"]
    for argv, run, (code, names) in zip(runs, report["runs"], expect):
        assert run["code"] == code and "Traceback" not in run["stderr"], (argv, run)
        if code == 1:
            failed = [line for line in run["stdout"].splitlines() if "FAIL" in line]
            assert len(failed) == 1 and f"| {CASE} | * |" in failed[0] and names in failed[0]
        else:
            assert run["stdout"] == "" and run["stderr"].count("\n") == 1, (argv, run)


# ------------------------------------------------------------------------------------ generate

def tree(root):
    """{relative path: bytes or link target} of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


@pytest.mark.parametrize("link", ["cases", "case", "group", "file", "dangling"])
def test_generate_never_writes_through_a_symlink(tmp_path, link):
    """A set generate wrote whose cases/ folder (or a case, a group folder, a file) was moved
    elsewhere and replaced by a symlink: generate followed cases/ and rewrote the other folder."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    generate(str(out), ["adam_64_trajectory"])
    elsewhere.mkdir()
    moved = {"cases": out / "cases", "case": out / "cases" / "adam_64_trajectory",
             "group": out / "cases" / "adam_64_trajectory" / "inputs",
             "file": out / "cases" / "adam_64_trajectory" / "case.json",
             "dangling": out / "cases" / "adam_64_trajectory" / "case.json"}[link]
    shutil.move(str(moved), str(elsewhere / "moved"))
    moved.symlink_to(elsewhere / ("gone" if link == "dangling" else "moved"))
    before = tree(tmp_path)
    with pytest.raises(UsageError, match="symbolic link"):
        generate(str(out), ["adam_64_trajectory"])
    with pytest.raises(UsageError, match="symbolic link"):
        generate(str(out))
    assert tree(tmp_path) == before


def test_generate_refuses_the_installed_set(tmp_path, monkeypatch, cli):
    """generate DIR where DIR is (through the checkout's reference_data symlink, too) the
    installed set: it was rewritten, and every verify then exited 3. Writing is disarmed here so
    that a regression cannot touch the shipped files."""
    def disarmed(*args, **kwargs):
        raise AssertionError("generate started writing into the installed set")
    for name in ("write_case", "write_manifest"):
        monkeypatch.setattr(store, name, disarmed)
    monkeypatch.setattr(verify_module, "_remove", disarmed)
    monkeypatch.setattr(os, "makedirs", disarmed)
    digest = store.sha256(os.path.join(default_dir(), "manifest.json"))
    checkout_link = os.path.join(os.path.dirname(os.path.dirname(__file__)), "reference_data")
    targets = [default_dir(), os.path.join(default_dir(), "cases", "new")]
    if os.path.realpath(checkout_link) == os.path.realpath(default_dir()):
        targets.append(checkout_link)
    for target in targets:
        with pytest.raises(UsageError, match="installed with lrtdense"):
            generate(target, ["adam_64_trajectory"])
        code, out, err = cli("generate", target, "--cases", "adam_64_trajectory")
        assert code == 2 and err.count("\n") == 1 and "installed with lrtdense" in err
    assert not os.path.exists(targets[1])
    assert store.sha256(os.path.join(default_dir(), "manifest.json")) == digest


# ------------------------------------------------------------------------------------ --markdown

@pytest.mark.parametrize("where", ["no_folder", "a_folder", "under_a_file"])
def test_unwritable_markdown_is_a_usage_error_before_the_work(tmp_path, monkeypatch, cli, where):
    """--markdown to a path that cannot be written: a traceback after the whole verification."""
    def no_work(*args, **kwargs):
        raise AssertionError("the verification started")
    monkeypatch.setattr(reference_cli, "run", no_work)
    (tmp_path / "file").write_text("x")
    path = {"no_folder": tmp_path / "nope" / "t.md", "a_folder": tmp_path,
            "under_a_file": tmp_path / "file" / "t.md"}[where]
    code, out, err = cli("verify", str(tmp_path), "--markdown", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1 and "--markdown" in err, err


def test_markdown_is_written_only_when_the_table_is(tmp_path, cli):
    results = write_results(tmp_path / "r", "good")
    kept = tmp_path / "kept.md"
    kept.write_text("earlier table\n")
    new = tmp_path / "new.md"
    for path in (kept, new):
        code, _, err = cli("verify", str(results), "--reference", str(tmp_path), "--markdown",
                           str(path))
        assert code == 3 and err.count("\n") == 1
    assert kept.read_text() == "earlier table\n" and not new.exists()
    code, out, _ = cli("verify", str(results), "--cases", CASE, "--markdown", str(kept))
    assert code == 0 and kept.read_text() == out


STATISTICAL_CASE = "flipout_64_extreme_scales"


def _edit_case(root, name, edit):
    path = root / "cases" / name / "case.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit", [
    lambda m: m["model"]["config"].update(units="three"),
    lambda m: m["model"]["config"].update(units=7),
    lambda m: m["model"]["config"].update(dtype="float32"),
    lambda m: m["model"]["config"].update(kernel_posterior={"type": "nonsense"}),
    lambda m: m["model"].update(class_name="NoSuchLayer"),
    lambda m: m["model"].update(config=[]),
], ids=["units text", "units 7", "another dtype", "bad posterior", "unknown class",
        "config a list"])
def test_a_resigned_statistical_case_whose_model_does_not_fit_is_exit_3(tmp_path, cli, edit):
    """--statistical builds the case's model: a re-signed set whose model config is malformed
    or does not fit its params is a bad reference set (exit 3, one line), not a traceback."""
    root = tmp_path / "ref"
    generate(str(root), [STATISTICAL_CASE])
    _edit_case(root, STATISTICAL_CASE, edit)
    resign(root)
    results = tmp_path / "results"
    results.mkdir()
    code, out, err = cli("verify", str(results), "--reference", str(root), "--statistical")
    assert err.count("\n") == 1 and "Traceback" not in err, (code, err[-2000:])
    if code == 2:           # a class the statistical mode does not know: no eligible case
        assert "supports the statistical mode" in err
    else:
        assert code == 3 and STATISTICAL_CASE in err, (code, err)
