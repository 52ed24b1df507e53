"""The reference set: reproducible, checksummed, and `verify` catches broken ports."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lrtdense.reference import default_dir, store
from lrtdense.reference.cases import CASES
from lrtdense.reference.verify import generate, verify, format_table, statistical_cases
from lrtdense.testing import reference_cases, assert_case
import spec_port

REF = default_dir()


def write_results(root, fn, patterns=("*",)):
    os.makedirs(root, exist_ok=True)
    for case in reference_cases(*patterns):
        if case.meta["kind"] == "adam":
            continue
        res = fn(case)
        np.savez(os.path.join(root, case.name + ".npz"), **{k: np.asarray(v) for k, v in res.items()})


def test_manifest_lists_every_case_and_checks_out():
    manifest = store.read_manifest(REF, check=True)
    assert sorted(manifest["cases"]) == sorted(CASES)
    size = sum(os.path.getsize(os.path.join(REF, *f.split("/")))
               for files in manifest["cases"].values() for f in files)
    assert size < 3e6, f"the reference set should stay small, it is {size} bytes"


def test_regenerating_reproduces_the_committed_set(tmp_path):
    """CI regenerates the set and compares it with the committed one within each case's tolerance
    (inputs: the same draws to 2 ULPs; expected values: within tolerance, never byte for byte)."""
    generate(str(tmp_path))
    results = tmp_path / "as_results"
    for name in CASES:
        shutil.copytree(tmp_path / "cases" / name / "expected", results / name)
        meta, inputs, _ = store.read_case(str(tmp_path), name)
        _, ref_inputs, _ = store.read_case(REF, name)
        for k in ref_inputs:
            # raw draws are bit-exact; the Adam case's gradient scales 10 ** u go through NumPy's
            # pow, whose last bit differs between NumPy versions (2.4 vs 2.2: 1 ULP)
            np.testing.assert_array_max_ulp(inputs[k], ref_inputs[k], maxulp=2)
    rows = verify(REF, str(results))
    assert rows and all(r.passed for r in rows), format_table([r for r in rows if not r.passed])


def test_independent_spec_port_passes_every_case(tmp_path):
    """Every case but Adam's (the ports cover it), new families included: layers, edge cases
    (exact ties by TF's convention), dropout layers and networks, training trajectories."""
    write_results(tmp_path, lambda c: spec_port.run_case(c.meta, c.inputs))
    rows = verify(REF, str(tmp_path), [n for n in sorted(CASES) if not n.startswith("adam_")])
    failed = [r for r in rows if not r.passed]
    assert len(rows) > 600 and not failed, format_table(failed)
    assert {r.case for r in rows} == set(CASES) - {"adam_64_trajectory"}


@pytest.mark.parametrize("broken,case,quantity", [
    ("no_square", "lrt_64_basic", "outputs/sample"),
    ("no_eps", "lrt_64_extreme_scales", "kl/kernel"),  # s hardly moves; log(scale) does
])
def test_broken_port_fails_naming_the_quantity(tmp_path, broken, case, quantity):
    write_results(tmp_path, lambda c: spec_port.run_case(c.meta, c.inputs, broken=broken), ["lrt_*"])
    rows = verify(REF, str(tmp_path), ["lrt_*"])
    bad = {(r.case, r.quantity) for r in rows if not r.passed}
    assert (case, quantity) in bad
    table = format_table(rows)
    assert f"| {case} | {quantity} |" in table and "FAIL" in table


def test_missing_quantity_and_missing_case_fail(tmp_path):
    case = reference_cases("lrt_64_basic")[0]
    res = spec_port.run_case(case.meta, case.inputs)
    del res["grads/x"]
    np.savez(tmp_path / "lrt_64_basic.npz", **res)
    rows = verify(REF, str(tmp_path), ["lrt_64_basic", "lrt_64_units1"])
    notes = {(r.case, r.quantity): r.note for r in rows if not r.passed}
    assert "missing" in notes[("lrt_64_basic", "grads/x")]
    assert "no results" in notes[("lrt_64_units1", "*")]


def test_tampered_reference_is_detected(tmp_path):
    copy = tmp_path / "ref"
    shutil.copytree(REF, copy)
    target = copy / "cases" / "lrt_64_basic" / "expected" / "outputs" / "sample.npy"
    arr = np.load(target)
    arr[0, 0] += 1e-3
    np.save(target, arr)
    with pytest.raises(store.ReferenceError, match="does not match its sha256"):
        verify(str(copy), str(tmp_path))
    with pytest.raises(store.ReferenceError, match="sha256"):
        reference_cases(root=str(copy))


def test_pickled_results_are_refused(tmp_path):
    np.save(tmp_path / "dummy.npy", np.array([1.0]))
    np.savez(tmp_path / "lrt_64_basic.npz", **{"outputs/sample": np.array([object()], dtype=object)})
    rows = verify(REF, str(tmp_path), ["lrt_64_basic"])
    assert rows and not any(r.passed for r in rows)


def test_testing_helper_reports_like_scipy():
    case = reference_cases("lrt_64_basic")[0]
    res = spec_port.run_case(case.meta, case.inputs)
    assert_case(case, res)
    res["outputs/sample"] = res["outputs/sample"] + np.where(np.arange(res["outputs/sample"].size).reshape(res["outputs/sample"].shape) == 4, 1e-6, 0)
    with pytest.raises(AssertionError) as info:
        assert_case(case, res)
    msg = str(info.value)
    assert "outputs/sample: 1 of 15 elements outside" in msg
    assert "max abs error 1e-06" in msg and "at (1, 1): reference" in msg


@pytest.mark.parametrize("bug", [None, "no_square"])
def test_statistical_mode(tmp_path, bug):
    """spec_port's sampler (its own draws, per-draw gradients) through verify --statistical: a
    correct one passes every eligible case; LRT variance (x*x) @ scale fails every case of the
    three TFP estimators (DenseVariational's scale is another code path)."""
    rng = np.random.default_rng(0)
    names = []
    for case in reference_cases():
        if not statistical_cases(case.meta):
            continue
        names.append(case.name)
        res = {k: v for k, v in case.expected.items()
               if k.startswith(("outputs/mean", "outputs/pruned", "kl/", "kl_mean/"))}
        res.update(spec_port.sample_statistical(case.meta, case.inputs, 10000, rng, bug))
        np.savez(tmp_path / (case.name + ".npz"), **res)
    assert len(names) >= 20
    rows = verify(REF, str(tmp_path), names, statistical=True)
    stat_rows = [r for r in rows if r.quantity.startswith("samples: ")]
    assert {r.case for r in stat_rows} == set(names)
    if bug is None:
        assert all(r.passed for r in rows), format_table([r for r in rows if not r.passed])
    else:
        failed = {r.case for r in stat_rows if not r.passed}
        tfp = {n for n in names if not n.startswith(("vdrop_", "sparsevd_", "dv_"))}
        assert failed == tfp, sorted(tfp - failed)
        assert all(r.passed for r in rows if not r.quantity.startswith("samples"))


def test_cli_verify_exit_codes(tmp_path):
    write_results(tmp_path / "ok", lambda c: spec_port.run_case(c.meta, c.inputs), ["lrt_64_*"])
    run = lambda *a: subprocess.run([sys.executable, "-m", "lrtdense", "reference", "verify", *a],
                                    capture_output=True, text=True, timeout=300)
    ok = run(str(tmp_path / "ok"), "--cases", "lrt_64_*", "--all")
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    assert "| lrt_64_basic | outputs/sample |" in ok.stdout and " 0 failed" in ok.stdout
    bad = run(str(tmp_path / "ok"), "--cases", "flipout_64_basic")
    assert bad.returncode == 1 and "no results" in bad.stdout
    missing = run(str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    badref = run(str(tmp_path / "ok"), "--reference", str(tmp_path / "ok"))
    assert badref.returncode == 3 and "manifest.json not found" in badref.stderr


@pytest.mark.parametrize("est", ["lrt", "reparam", "flipout"])
def test_a_softplus_switching_to_u_at_20_fails_the_middle_cases(est):
    """PyTorch's softplus returns u above 20; TF's runs log1p(exp(u)) up to 34.04. In float64 the
    difference (1e-10 relative at u = 20.25) fails *_softplus_middle's KL, nothing else needed."""
    case = reference_cases(f"{est}_64_softplus_middle")[0]
    u = case.params["kernel_posterior_untransformed_scale"]
    eps = np.finfo(u.dtype).eps
    prior = case.model["config"]["kernel_prior"]
    right = spec_port._kl(case.params["kernel_posterior_loc"], np.logaddexp(0, u) + eps, prior)
    torchlike = spec_port._kl(case.params["kernel_posterior_loc"],
                              np.where(u > 20, u, np.log1p(np.exp(np.minimum(u, 20)))) + eps, prior)
    from lrtdense.reference.report import compare
    tol = case.tolerances["kl/kernel"]
    assert compare(case.name, "kl/kernel", np.asarray(right), case.expected["kl/kernel"], tol).passed
    assert not compare(case.name, "kl/kernel", np.asarray(torchlike), case.expected["kl/kernel"],
                       tol).passed
