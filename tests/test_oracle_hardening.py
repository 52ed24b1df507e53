"""Issue 13, "hard to fool": each hole in the reference set, the results or the CLI, reproduced
first, then shown closed. Every test builds its own copy of the shipped set in a temporary folder."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lrtdense.reference import SHIPPED_MANIFEST_SHA256, default_dir, spec_path, store
from lrtdense.reference.verify import UsageError, format_table, generate, run, verify
from lrtdense.testing import reference_cases
from helpers import run_lrtdense
import spec_port

REF = default_dir()
CASE = "lrt_64_basic"


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def copy(tmp_path):
    """A copy of the shipped set that a test may edit."""
    dest = tmp_path / "ref"
    shutil.copytree(REF, dest)
    return dest


def manifest_of(root):
    with open(root / "manifest.json") as f:
        return json.load(f)


def resign(root, manifest):
    """Writes ``manifest`` with the sha256 of every listed file recomputed (what an editor of the
    set would do to hide an edit)."""
    for files in manifest["cases"].values():
        for rel in files:
            files[rel] = sha(root / rel)
    with open(root / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


@pytest.fixture
def good_results(tmp_path):
    """The spec port's results for CASE and lrt_64_units1."""
    out = tmp_path / "results"
    out.mkdir()
    for case in reference_cases(CASE, "lrt_64_units1"):
        np.savez(out / f"{case.name}.npz", **spec_port.run_case(case.meta, case.inputs))
    return out


def test_the_pin_is_the_shipped_manifest():
    assert sha(os.path.join(REF, "manifest.json")) == SHIPPED_MANIFEST_SHA256
    ref = store.open_reference(REF)
    assert ref.installed and ref.shipped
    assert os.path.isfile(spec_path()) and spec_path().startswith(REF)


def test_unlisted_file_is_refused(copy, good_results):
    """Hole: deleting a file's manifest entry disabled its checksum, so loosened tolerances or a
    wrong expected array passed."""
    manifest = manifest_of(copy)
    meta_path = copy / "cases" / CASE / "case.json"
    meta = json.load(open(meta_path))
    for tol in meta["tolerances"].values():
        tol["rtol"] = tol["atol"] = 1.0
    json.dump(meta, open(meta_path, "w"))
    del manifest["cases"][CASE][f"cases/{CASE}/case.json"]
    resign(copy, manifest)
    with pytest.raises(store.ReferenceError, match="does not list cases/lrt_64_basic/case.json"):
        verify(str(copy), str(good_results))
    # the same with an expected array
    manifest = manifest_of(copy)
    manifest["cases"][CASE][f"cases/{CASE}/case.json"] = ""
    del manifest["cases"][CASE][f"cases/{CASE}/expected/outputs/sample.npy"]
    resign(copy, manifest)
    with pytest.raises(store.ReferenceError, match="expected/outputs/sample.npy is not listed"):
        verify(str(copy), str(good_results))


def test_loosened_tolerances_are_refused_even_when_re_signed(copy, good_results):
    meta_path = copy / "cases" / CASE / "case.json"
    meta = json.load(open(meta_path))
    meta["tolerances"]["outputs/sample"]["rtol"] = 0.5
    json.dump(meta, open(meta_path, "w"))
    resign(copy, manifest_of(copy))
    with pytest.raises(store.ReferenceError, match="looser than SPEC"):
        verify(str(copy), str(good_results), [CASE])


def test_case_deleted_from_the_manifest_is_reported(copy, good_results):
    """Hole: deleting a case's entry silently skipped it (439 rows instead of 447)."""
    manifest = manifest_of(copy)
    del manifest["cases"][CASE]
    resign(copy, manifest)
    with pytest.raises(store.ReferenceError, match="cases/lrt_64_basic is not in manifest.json"):
        verify(str(copy), str(good_results))
    shutil.rmtree(copy / "cases" / CASE)  # both gone: a set of one's own, reported as not shipped
    report = run(str(copy), str(good_results), ["lrt_64_units1"])
    assert report.passed
    assert any("NOT the set shipped" in n and "1 missing (lrt_64_basic)" in n for n in report.notes)


def test_referenced_but_unlisted_key_is_refused(copy):
    meta_path = copy / "cases" / CASE / "case.json"
    meta = json.load(open(meta_path))
    meta["expected"].append("outputs/extra")
    json.dump(meta, open(meta_path, "w"))
    resign(copy, manifest_of(copy))
    with pytest.raises(store.ReferenceError, match="expected/outputs/extra.npy, which manifest"):
        store.read_case(str(copy), CASE)


@pytest.mark.parametrize("bad", ["../outside", "a/b", "..", "", ".hidden"])
def test_case_names_outside_the_folder_are_refused(copy, bad):
    """Hole: a case name with "../" read outside the reference folder."""
    manifest = manifest_of(copy)
    manifest["cases"][bad] = manifest["cases"].pop(CASE)
    resign_ok = json.dumps(manifest)
    (copy / "manifest.json").write_text(resign_ok)
    with pytest.raises(store.ReferenceError, match="invalid case name"):
        store.open_reference(str(copy), check=False)
    with pytest.raises(store.ReferenceError, match="invalid case name"):
        store.read_case(str(copy), bad)


def test_paths_outside_the_case_are_refused(copy, tmp_path):
    manifest = manifest_of(copy)
    files = manifest["cases"][CASE]
    files[f"cases/{CASE}/../lrt_64_units1/case.json"] = files[f"cases/{CASE}/case.json"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(store.ReferenceError, match="not a plain relative"):
        store.open_reference(str(copy), check=False)
    # a symlink that leaves the folder
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros((5, 3)))
    target = copy / "cases" / CASE / "expected" / "outputs" / "sample.npy"
    target.unlink()
    target.symlink_to(outside)
    shutil.copy(os.path.join(REF, "manifest.json"), copy / "manifest.json")
    with pytest.raises(store.ReferenceError, match="resolves outside"):
        store.open_reference(str(copy), check=False)


def test_re_signed_copy_is_reported_and_the_installed_set_refused(copy, good_results, monkeypatch):
    """An edited-and-re-signed copy: accepted as a user's own set with a line saying it is not
    the shipped one; as the installed set (default_dir), refused with exit code 3."""
    target = copy / "cases" / CASE / "expected" / "outputs" / "sample.npy"
    arr = np.load(target)
    arr[0, 0] += 1.0
    np.save(target, arr)
    resign(copy, manifest_of(copy))
    report = run(str(copy), str(good_results), [CASE])
    assert any("NOT the set shipped" in n and "1 changed (lrt_64_basic)" in n for n in report.notes)
    assert not report.passed  # the port is right, the edited set is not
    unedited = run(str(REF), str(good_results), [CASE])
    assert unedited.passed and not unedited.notes
    monkeypatch.setattr(store, "default_dir", lambda: str(copy))
    with pytest.raises(store.ReferenceError, match="installed reference set .* was modified"):
        run(str(copy), str(good_results), [CASE])


def test_a_faithful_copy_says_so(copy, good_results):
    report = run(str(copy), str(good_results), [CASE])
    assert report.passed and report.notes == [report.notes[0]]
    assert "a copy of the shipped set" in report.notes[0]


def test_wrong_dtype_results_fail_and_say_so(tmp_path):
    case = reference_cases(CASE)[0]
    res = spec_port.run_case(case.meta, case.inputs)
    res["outputs/sample"] = res["outputs/sample"].astype(np.float32)
    np.savez(tmp_path / f"{CASE}.npz", **res)
    rows = verify(REF, str(tmp_path), [CASE])
    bad = [r for r in rows if not r.passed]
    assert [r.quantity for r in bad] == ["outputs/sample"]
    assert "dtype float32, expected float64" in bad[0].note


def test_stale_npz_beside_a_folder_is_reported(good_results):
    case_dir = good_results / CASE
    case_dir.mkdir()
    rows = verify(REF, str(good_results), [CASE, "lrt_64_units1"])
    stale = [r for r in rows if r.case == CASE]
    assert len(stale) == 1 and not stale[0].passed and "stale" in stale[0].note
    assert all(r.passed for r in rows if r.case == "lrt_64_units1")


def test_totals_add_up(good_results):
    (good_results / "lrt_64_units1.npz").unlink()
    rows = verify(REF, str(good_results), [CASE, "lrt_64_units1", "adam_*"])
    table = format_table(rows)
    passed, failed = sum(r.passed for r in rows), sum(not r.passed for r in rows)
    assert table.splitlines()[-1] == f"{passed} passed, {failed} failed"
    assert passed + failed == len(rows) == table.count("\n| ") and failed == 2


@pytest.mark.parametrize("fill", ["all", "half"])
def test_nan_samples_fail_the_statistical_mode(tmp_path, fill):
    """Hole: all-NaN or half-NaN samples passed (comparisons with NaN are false)."""
    case = reference_cases("lrt_64_units1")[0]
    res = {k: v for k, v in spec_port.run_case(case.meta, case.inputs).items()}
    samples = np.full((10000,) + res["outputs/sample"].shape, np.nan)
    if fill == "half":
        samples[::2] = res["outputs/mean"]
    res["samples/outputs"] = samples
    np.savez(tmp_path / "lrt_64_units1.npz", **res)
    rows = verify(REF, str(tmp_path), ["lrt_64_units1"], statistical=True)
    stat = [r for r in rows if r.quantity.startswith("samples/")]
    assert stat and not any(r.passed for r in stat)
    assert any("NaN or inf" in r.note for r in stat)


def test_statistical_with_no_eligible_case_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="supports the statistical mode"):
        run(REF, str(tmp_path), ["adam_*"], statistical=True)


def test_pattern_without_match_lists_the_closest_names(tmp_path):
    with pytest.raises(UsageError) as info:
        run(REF, str(tmp_path), ["LRT_64_basic"])
    msg = str(info.value)
    assert "case-sensitive globs" in msg and "lrt_64_basic" in msg


# ------------------------------------------------------------------------------------ generate

def test_generate_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="refusing to write"):
        generate(str(tmp_path), ["adam_64_trajectory"])
    assert os.listdir(tmp_path) == ["notes.txt"]
    with pytest.raises(UsageError, match="explicit output folder"):
        generate(None)


def test_generate_replaces_only_its_own_files(tmp_path):
    root = tmp_path / "ref"
    generate(str(root), ["adam_64_trajectory", "lrt_64_units1"])
    (root / "SPEC.md").write_text("a user's file beside cases/")
    kept = (root / "cases" / "lrt_64_units1" / "case.json").read_bytes()
    generate(str(root), ["adam_64_trajectory"])  # only that case rewritten, the other kept as is
    assert (root / "SPEC.md").read_text() == "a user's file beside cases/"
    assert store.open_reference(str(root)).names == ["adam_64_trajectory", "lrt_64_units1"]
    assert (root / "cases" / "lrt_64_units1" / "case.json").read_bytes() == kept
    user = root / "cases" / "adam_64_trajectory" / "my_notes.npy"
    np.save(user, np.zeros(1))
    with pytest.raises(UsageError, match="my_notes.npy is not listed"):
        generate(str(root), ["adam_64_trajectory"])
    assert user.exists()


def test_generate_pin_only_for_the_package_folder(tmp_path):
    with pytest.raises(UsageError, match="--pin"):
        generate(str(tmp_path / "x"), ["adam_64_trajectory"], pin=True)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ CLI

class Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """``lrtdense reference ARGS`` in this process (the entry point's main; argparse's exits
    caught): returncode, stdout, stderr. test_cli_closed_pipe_is_quiet runs a real process."""
    return lambda *args: Done(*run_lrtdense(capsys, "reference", *args))


def test_cli_options_in_any_order_and_exit_codes(cli, good_results, tmp_path):
    before = cli("verify", "--cases", "lrt_64_basic", str(good_results))
    after = cli("verify", str(good_results), "--cases", "lrt_64_basic,lrt_64_units1")
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    assert before.stdout.splitlines()[-1].endswith(" 0 failed")
    fail = cli("verify", str(good_results), "--cases", "lrt_64_b*", "--cases", "flipout_64_basic")
    assert fail.returncode == 1 and "no results" in fail.stdout
    nomatch = cli("verify", str(good_results), "--cases", "LRT*")
    assert nomatch.returncode == 2 and nomatch.stderr.count("\n") == 1
    assert "case-sensitive" in nomatch.stderr and "lrt_" in nomatch.stderr
    stat = cli("verify", str(good_results), "--cases", "adam_*", "--statistical")
    assert stat.returncode == 2 and "statistical mode" in stat.stderr
    missing = cli("verify", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    badref = cli("verify", str(good_results), "--reference", str(tmp_path))
    assert badref.returncode == 3 and "manifest.json not found" in badref.stderr
    assert badref.stderr.count("\n") == 1 and "Traceback" not in badref.stderr


def test_cli_bad_flag_prints_the_subcommand_usage(cli, good_results):
    out = cli("verify", str(good_results), "--bogus")
    assert out.returncode == 2
    assert "usage: lrtdense reference verify" in out.stderr and "--bogus" in out.stderr


def test_cli_list_path_spec(cli, tmp_path):
    out = cli("list", "lrt_64_act_*")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == [
        f"lrt_64_act_{a}" for a in ("elu", "linear", "relu", "sigmoid", "softplus", "tanh")]
    assert cli("path").stdout.strip() == REF
    assert cli("spec").stdout.strip() == spec_path()
    assert cli("spec", "--show").stdout.startswith("# lrtdense reference data")
    gen = cli("generate")
    assert gen.returncode == 2 and "usage: lrtdense reference generate" in gen.stderr


def test_cli_closed_pipe_is_quiet(good_results):
    code = (f"{sys.executable} -m lrtdense reference verify {good_results} | head -n 1; "
            f"echo rc=${{PIPESTATUS[0]}}")
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stderr == "" and out.stdout.splitlines()[-1] in ("rc=1",), out.stdout + out.stderr
    listing = subprocess.run(["bash", "-c", f"{sys.executable} -m lrtdense reference list | "
                                            f"head -n 2; echo rc=${{PIPESTATUS[0]}}"],
                             capture_output=True, text=True, timeout=300)
    assert listing.stderr == "" and listing.stdout.splitlines()[-1] == "rc=0"
