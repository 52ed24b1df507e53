"""lrtdense.torch: certified by the reference set and by the recorded real TFP, and idiomatic.

* every reference case through ``lrtdense.torch.conformance.Adapter`` (conformance kit), every
  family declared and passing, and the statistical mode with the modules' own torch.Generator;
* the recorded real-TFP fixtures (tests/fixtures/tfp*) replayed through the torch modules at the
  NumPy layers' tolerances (max |torch - TFP| / max |TFP| <= 1e-10 float64, 1e-5 float32);
* the PyTorch idioms: state_dict, nn.Sequential, generators, dtypes, modes, errors, devices.
Skipped when torch is not installed (the ``torch`` extra).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="lrtdense.torch needs torch (pip install "
                                             "'lrtdense[torch]')")

import lrtdense as L                                                       # noqa: E402
import lrtdense.torch as LT                                                # noqa: E402
from lrtdense.conformance import FAMILIES, check                           # noqa: E402
from lrtdense.reference import default_dir, store                          # noqa: E402
from lrtdense.reference.verify import compare                              # noqa: E402
from lrtdense.testing import reference_cases                               # noqa: E402
from lrtdense.torch.conformance import Adapter                             # noqa: E402

import test_tfp_conformance as tfp_layers                                  # noqa: E402
import test_tfp_priors_conformance as tfp_priors                           # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = {"float64": 1e-10, "float32": 1e-5}


def _errors(report):
    """{dtype: worst max_abs / atol over the passing rows} and the rows per (family, status)."""
    worst, counts = {}, {}
    for row in report.rows:
        counts[(row.family, row.status)] = counts.get((row.family, row.status), 0) + 1
        dtype = "float64" if "_64_" in row.case else "float32"
        if row.passed and row.tolerance and row.tolerance["atol"] > 0:
            worst[dtype] = max(worst.get(dtype, 0.0), row.max_abs / row.tolerance["atol"])
    return worst, counts


# ------------------------------------------------------------------------------ certification

def test_every_reference_case_passes_and_every_family_is_declared():
    adapter = Adapter()
    assert adapter.implements is None                      # every family, quantity and dtype
    report = check(adapter)
    worst, counts = _errors(report)
    failed = [f"{r.case}[{r.quantity}]: {r.note}" for r in report.rows if not r.passed]
    assert not failed, "\n".join(failed[:20])
    assert report.passed and len(report.rows) >= 1000
    assert {family for family, _ in counts} == set(FAMILIES)
    # the worst error in units of the reference's atol (rtol * max|ref|): 1 would be the bar
    assert worst["float64"] < 1.0 and worst["float32"] < 1.0, worst


def test_statistical_mode_passes_with_torch_generators():
    report = check(Adapter(), statistical=True, draws=10000, seed=1)
    failed = [f"{r.case}[{r.quantity}]: {r.note}" for r in report.rows if not r.passed]
    assert not failed, "\n".join(failed[:20])
    cases = {r.case for r in report.rows if r.quantity.startswith("samples")}
    assert len(cases) >= 20


def test_a_planted_bug_fails_its_rows():
    """The kit catches this package's bugs: eps dropped from the posterior scale."""
    import lrtdense.torch.layers as layers
    real = layers.F.posterior_scale
    try:
        layers.F.posterior_scale = layers.F.softplus
        report = check(Adapter(), "lrt_64_extreme_scales")
    finally:
        layers.F.posterior_scale = real
    assert any(r.failed for r in report.rows)


# ------------------------------------------------------------------------- the real TFP

def _load_state(layer, arrays):
    layer.load_state_dict({k: torch.tensor(v) for k, v in arrays.items()})


def _grads(layer, x):
    out = {name: torch.zeros_like(p) if p.grad is None else p.grad
           for name, p in layer.named_parameters()}
    out["x"] = x.grad
    return out


@pytest.mark.parametrize("name", tfp_layers.CASES)
def test_replays_tfp_layer_fixture(name):
    meta, a = tfp_layers.load_case(name)
    numpy_layer = tfp_layers.build_layer(meta)
    layer = LT.from_config(L.serialize(numpy_layer), a["x"].shape[-1])
    _load_state(layer, {k: a[k] for k in meta["weights_order"]})
    noise = {k[len("noise/"):]: v for k, v in a.items() if k.startswith("noise/")}
    noise.update({k[len("eps/"):]: v for k, v in a.items() if k.startswith("eps/")})
    x = torch.tensor(a["x"], requires_grad=True)
    out = layer(x, noise=noise if meta["mode"] == "sample" else None, mode=meta["mode"])
    rtol = RTOL[meta["dtype"]]
    assert out.dtype == getattr(torch, meta["dtype"])
    tfp_layers.assert_close(out.detach().numpy(), a["outputs"], rtol, "outputs")
    assert sorted("kl_" + k for k in layer.divergence_terms) == sorted(meta["losses"])
    for key, value in layer.divergence_terms.items():
        tfp_layers.assert_close(value.detach().numpy(), a["kl_" + key], rtol, "kl_" + key)
    (torch.sum(torch.tensor(a["g"]) * out) + layer.divergence).backward()
    for key, grad in _grads(layer, x).items():
        ours, ref = grad.numpy(), a["grad/" + key]
        assert np.all(np.isfinite(ours)), f"lrtdense.torch's gradient w.r.t. {key} is not finite"
        finite = np.isfinite(ref) if not meta["grads_finite"] else np.ones(ref.shape, bool)
        tfp_layers.assert_close(ours[finite], ref[finite], rtol, "grad/" + key)


@pytest.mark.parametrize("name", [c for c in tfp_priors.CASES if c not in tfp_priors.MULTI_SAMPLE])
def test_replays_tfp_priors_fixture(name):
    meta, a = tfp_priors.load(name)
    numpy_layer, names = tfp_priors.build(meta)
    x_np = a["x"]
    layer = LT.from_config(L.serialize(numpy_layer), x_np.shape[-1])
    _load_state(layer, {ours: a[tfp] for ours, tfp in zip(names, meta["weights_order"])})
    assert list(layer.state_dict()) == names                  # TFP's names and order
    x = torch.tensor(x_np, requires_grad=True)
    out = layer(x, noise=tfp_priors.noise_of(meta, a, numpy_layer, x_np))
    errors = {"outputs": tfp_priors.rel(out.detach().numpy(), a["outputs"])}
    assert len(layer.divergence_terms) == len(meta["losses"])
    for term, loss in zip(layer.divergence_terms.values(), meta["losses"]):
        errors["loss/" + loss] = tfp_priors.rel(term.detach().numpy(), a["loss/" + loss])
    (torch.sum(torch.tensor(a["g"]) * out) + layer.divergence).backward()
    grads = _grads(layer, x)
    errors["grad/x"] = tfp_priors.rel(grads["x"].numpy(), a["grad/x"])
    for ours, tfp in zip(names, meta["weights_order"]):
        errors["grad/" + tfp] = tfp_priors.rel(grads[ours].numpy(), a["grad/" + tfp])
    bad = {k: v for k, v in errors.items() if not v <= RTOL[meta["dtype"]]}
    assert not bad, f"{name}: {bad}"


def _tfp_on_reference():
    """(case, TFP's recorded values) of every reference case recorded in real TFP."""
    out = []
    for folder in ("tfp_reference", "tfp_reference_priors"):
        path = os.path.join(HERE, "fixtures", folder)
        for file in sorted(os.listdir(path)):
            if file.endswith(".npz"):
                out.append((folder, file[:-4]))
    return out


def test_replays_tfp_on_the_reference_inputs():
    """TFP's own values on the reference cases' inputs (tests/fixtures/tfp_reference*), at the
    reference's tolerances and within the issue's bars; TFP's NaN (sqrt at s == 0) skipped."""
    adapter, worst, recorded = Adapter(), {"float64": 0.0, "float32": 0.0}, _tfp_on_reference()
    assert len(recorded) >= 80
    cases = {case.name: case for case in reference_cases()}
    for folder, name in recorded:
        case = cases[name]
        ours = {k: v.detach().numpy() for k, v in adapter.compute(case).items()}
        with np.load(os.path.join(HERE, "fixtures", folder, name + ".npz")) as data:
            tfp = {k: data[k] for k in data.files}
        for key, ref in tfp.items():
            ok = np.isfinite(ref)
            if not ok.any():
                continue            # every element NaN in TFP: nothing to compare
            row = compare(name, key, ours[key][ok], ref[ok], case.meta["tolerances"][key])
            assert row.passed, f"{name} {key}: {row.note}"
            scale = float(np.max(np.abs(ref[ok]))) or 1.0
            err = float(np.max(np.abs(ours[key][ok].astype(np.float64) - ref[ok]))) / scale
            worst[case.dtype] = max(worst[case.dtype], err)
    assert worst["float64"] <= 1e-10 and worst["float32"] <= 1e-5, worst
