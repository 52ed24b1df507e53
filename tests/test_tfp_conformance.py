"""Replays fixtures recorded from the real TensorFlow Probability (tools/record_tfp_fixtures.py).

No TensorFlow is needed here: each fixture holds the inputs, TFP's weights, the noise TFP drew
(recovered as standard normals and signs), and TFP's outputs, KL terms and gradients of
L = sum(g * outputs) + sum(layer.losses). Tolerances (relative to the largest magnitude of each
recorded array): float64 1e-10, float32 1e-5.
"""
import glob
import json
import os

import numpy as np
import pytest
from autograd import grad

import lrtdense as L

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tfp")
CASES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FIXTURES, "*.json")))
RTOL = {"float64": 1e-10, "float32": 1e-5}


def load_case(name):
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(FIXTURES, name + ".npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return meta, arrays


def build_layer(meta):
    def prior(spec, default):
        return default if spec is None else L.NormalPrior(spec["loc"], spec["scale"])

    kernel_default = L.NormalPrior(0.0, 1.0) if meta.get("kernel_prior_is_default", True) else None
    cls = getattr(L, meta["layer"])
    bias = {"none": None}.get(meta["bias_posterior"], meta["bias_posterior"])
    return cls(meta["units"], meta["activation"], dtype=meta["dtype"], bias_posterior=bias,
               kernel_prior=prior(meta["kernel_prior"], kernel_default),
               bias_prior=prior(meta["bias_prior"], None))


def assert_close(ours, ref, rtol, what):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
    err = np.abs(ours - ref)
    assert np.all(err <= rtol * (np.abs(ref) + scale)), (
        f"{what}: max abs error {err.max():.3g}, max error relative to max|ref| "
        f"{err.max() / scale:.3g} > {rtol}")


def test_fixtures_are_present():
    assert len(CASES) >= 20, f"expected the recorded TFP fixtures in {FIXTURES}"


@pytest.mark.parametrize("name", CASES)
def test_matches_tfp(name):
    meta, a = load_case(name)
    layer = build_layer(meta)
    params = {k: a[k] for k in meta["weights_order"]}
    assert layer.weight_names() == meta["weights_order"]
    x, g = a["x"], a["g"]
    # Prefer the exact standard normals TFP drew ("eps/"); "noise/" holds the same draws recovered
    # from TFP's sampled tensors (and the Flipout signs).
    noise = {k[len("noise/"):]: v for k, v in a.items() if k.startswith("noise/")}
    noise.update({k[len("eps/"):]: v for k, v in a.items() if k.startswith("eps/")})
    mode = meta["mode"]
    kwargs = {"noise": noise} if mode == "sample" else {}
    rtol = RTOL[meta["dtype"]]

    out, kl = layer.forward(params, x, mode=mode, **kwargs)
    assert out.dtype == meta["dtype"]
    assert_close(out, a["outputs"], rtol, "outputs")
    terms = layer.divergences(params)
    assert sorted("kl_" + k for k in terms) == sorted(meta["losses"])
    for key in terms:
        assert_close(terms[key], a["kl_" + key], rtol, "kl_" + key)

    def objective(p, x):
        o, k = layer.forward(p, x, mode=mode, **kwargs)
        return np.sum(g * o) + k

    grads = grad(objective)(params, x)
    grads["x"] = grad(objective, 1)(params, x)
    for key, ours in grads.items():
        ref = a["grad/" + key]
        assert ours.dtype == meta["dtype"]
        assert np.all(np.isfinite(ours)), f"lrtdense gradient w.r.t. {key} is not finite"
        finite = np.isfinite(ref)
        if meta["grads_finite"]:
            assert_close(ours, ref, rtol, "grad/" + key)
        else:
            # TFP's gradient is NaN through sqrt at s == 0 (all-zero input rows); ours is the
            # limit. Elements TFP does get right must still agree.
            assert_close(ours[finite], ref[finite], rtol, "grad/" + key + " (finite part)")


def test_tfp_gives_nan_where_lrtdense_is_finite():
    """The documented difference: TFP's LRT gradients at an all-zero input row are NaN."""
    for name in ["lrt_f64_zero_rows", "lrt_f32_zero_rows"]:
        meta, a = load_case(name)
        assert not meta["grads_finite"]
        assert np.any(np.isnan(a["grad/kernel_posterior_untransformed_scale"]))
        zero_rows = np.all(a["x"] == 0, axis=-1)
        assert zero_rows.sum() == 2
