"""The reference set agrees with the REAL TensorFlow Probability on the reference cases' own inputs.

``tools/record_tfp_on_reference.py`` (run in the TensorFlow virtualenv) fed every ``layer`` and
``network`` case of ``reference_data/`` to the real ``tfp.layers`` classes, injecting the case's
recorded noise, and stored TFP's values of every expected quantity in
``tests/fixtures/tfp_reference/<case>.npz``. No TensorFlow is needed here: each quantity is
compared with ``lrtdense.reference.verify.compare`` at the tolerances the reference publishes.

The one documented difference (SPEC section 3, zero-variance convention): in ``lrt_*_zero_rows``
the all-zero rows of x make the local-reparameterization scale sqrt(0); TF's gradient through sqrt
there is inf * 0 = NaN, while the reference uses the limit. There TFP's NaNs are asserted to be
exactly where expected, the reference to be finite, and every element TFP does get right to agree.
"""
import hashlib
import json
import os

import numpy as np
import pytest

from lrtdense.reference import default_dir, store
from lrtdense.reference.verify import compare

REF = default_dir()
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tfp_reference")
with open(os.path.join(FIXTURES, "versions.json")) as _f:
    RECORDING = json.load(_f)

# Reference layer/network cases that cannot be expressed with tfp.layers (with the reason).
# Every current configuration is expressible, so this is empty; a case added here is exempt
# from the complete-overlap test below.
NOT_EXPRESSIBLE_IN_TFP = {}

# Quantities where TFP's gradient is NaN by construction (sqrt at s == 0), per case.
TFP_NAN = {
    "lrt_64_zero_rows": {"grads/x", "grads/kernel_posterior_untransformed_scale"},
    "lrt_32_zero_rows": {"grads/x", "grads/kernel_posterior_untransformed_scale"},
}

CONFIG_FIELDS = ("kind", "dtype", "model", "input_shape", "inputs", "expected")


def _layer_and_network_cases():
    manifest = store.read_manifest(REF, check=False)
    names = []
    for name in sorted(manifest["cases"]):
        with open(os.path.join(REF, "cases", name, "case.json")) as f:
            if json.load(f)["kind"] in ("layer", "network"):
                names.append(name)
    return names


CASES = _layer_and_network_cases()
RECORDED = sorted(n[:-4] for n in os.listdir(FIXTURES) if n.endswith(".npz"))
COMPARED = [n for n in CASES if n not in NOT_EXPRESSIBLE_IN_TFP]


def load_tfp(name):
    with np.load(os.path.join(FIXTURES, name + ".npz"), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_overlap_is_complete():
    """Every reference layer/network case has a TFP recording (or is listed as inexpressible)."""
    assert len(CASES) == 51, CASES
    assert all(n.startswith(("lrt_", "reparam_", "flipout_", "mixed_")) for n in CASES)
    missing = sorted(set(COMPARED) - set(RECORDED))
    assert not missing, f"no TFP recording for {missing}: run tools/record_tfp_on_reference.py"
    stale = sorted(set(RECORDED) - set(CASES))
    assert not stale, f"TFP recordings without a reference layer/network case: {stale}"
    assert set(NOT_EXPRESSIBLE_IN_TFP) <= set(CASES)
    assert sorted(RECORDING["cases"]) == RECORDED


def test_recordings_are_of_the_current_reference_inputs():
    """The recordings were made from exactly the reference inputs and configs now committed."""
    manifest = store.read_manifest(REF, check=True)
    for name in COMPARED:
        rec = RECORDING["cases"][name]
        inputs = {rel.split("/inputs/", 1)[1][:-len(".npy")]: digest
                  for rel, digest in manifest["cases"][name].items() if "/inputs/" in rel}
        assert rec["inputs_sha256"] == inputs, f"{name}: reference inputs changed; re-record"
        meta, _, _ = store.read_case(REF, name)
        blob = json.dumps({k: meta[k] for k in CONFIG_FIELDS}, sort_keys=True)
        assert rec["config_sha256"] == hashlib.sha256(blob.encode()).hexdigest(), (
            f"{name}: reference config changed; re-record")


def test_recording_versions():
    v = RECORDING["versions"]
    assert v["tensorflow_probability"].startswith("0.25")
    assert v["tensorflow"].startswith("2.18") and v["tf_keras"].startswith("2.18")
    total = sum(os.path.getsize(os.path.join(FIXTURES, f)) for f in os.listdir(FIXTURES))
    assert total < 1_000_000, f"the TFP recordings should stay small, they are {total} bytes"


@pytest.mark.parametrize("name", COMPARED)
def test_reference_matches_tfp(name):
    meta, inputs, expected = store.read_case(REF, name)
    tfp = load_tfp(name)
    assert sorted(tfp) == sorted(expected), f"{name}: TFP keys differ from the expected keys"
    nan_keys = {k for k, v in tfp.items() if np.isnan(v).any()}
    assert nan_keys == TFP_NAN.get(name, set()), f"{name}: TFP has NaN in {sorted(nan_keys)}"
    failures = []
    for key, ref in expected.items():
        got, tol = tfp[key], meta["tolerances"][key]
        assert got.dtype == ref.dtype and got.shape == ref.shape, (name, key, got.dtype, got.shape)
        if key in nan_keys:
            continue  # test_zero_variance_nan_is_the_only_difference
        row = compare(name, key, got, ref, tol)
        if not row.passed:
            failures.append(f"{key}: max abs {row.max_abs:.3g}, max rel {row.max_rel:.3g}, "
                            f"worst {row.worst}: {row.note}")
    assert not failures, f"{name} disagrees with TFP:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", sorted(TFP_NAN))
def test_zero_variance_nan_is_the_only_difference(name):
    """TFP's NaN gradients at s == 0 versus the reference's finite limit (SPEC section 3)."""
    meta, inputs, expected = store.read_case(REF, name)
    tfp = load_tfp(name)
    x = inputs["x"]
    zero_rows = np.all(x == 0, axis=-1)
    assert zero_rows.any() and not zero_rows.all()
    for key in sorted(TFP_NAN[name]):
        got, ref, tol = tfp[key], expected[key], meta["tolerances"][key]
        nan = np.isnan(got)
        assert nan.any(), (name, key)
        assert np.all(np.isfinite(ref)), f"{name} {key}: the reference must be finite"
        if key == "grads/x":
            # NaN exactly in the zero rows of x; the other rows are right.
            np.testing.assert_array_equal(nan, np.broadcast_to(zero_rows[..., None], x.shape))
        else:
            # Every kernel element gets a NaN contribution from the zero rows: nothing to compare.
            assert key == "grads/kernel_posterior_untransformed_scale"
            assert nan.all(), (name, key)
        ok = ~nan
        if ok.any():
            row = compare(name, key, got[ok], ref[ok], tol)
            assert row.passed, f"{name} {key} (non-NaN elements): {row.note}"
    # Everything else in the case agrees fully (outputs, KL, grads of loc and bias).
    for key in sorted(set(expected) - TFP_NAN[name]):
        row = compare(name, key, tfp[key], expected[key], meta["tolerances"][key])
        assert row.passed, f"{name} {key}: {row.note}"
