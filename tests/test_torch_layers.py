"""lrtdense.torch: certified by the reference set and by the recorded real TFP, and idiomatic.

* every reference case through ``lrtdense.torch.conformance.Adapter`` (conformance kit), every
  family declared and passing, and the statistical mode with the modules' own torch.Generator
  (the training step's too);
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
from lrtdense.reference.verify import compare                              # noqa: E402
from lrtdense.testing import reference_cases                               # noqa: E402
import lrtdense.torch.conformance as torch_conformance                    # noqa: E402
from lrtdense.torch.conformance import Adapter                             # noqa: E402

from helpers import load_example                                          # noqa: E402
import test_tfp_conformance as tfp_layers                                  # noqa: E402
import test_tfp_priors_conformance as tfp_priors                           # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = {"float64": 1e-10, "float32": 1e-5}


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same torch global seed: initial weights and torch.randn inputs
    are the same on every run, so no assertion depends on a lucky draw."""
    torch.manual_seed(0)


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


# the training cases of the statistical mode (its first step) and the rows each must pass
TRAINING = ["train_64_lrt_linear", "train_32_reparam_linear"]
TRAINING_ROWS = {(case, f"samples: {family}") for case in TRAINING
                 for family in ("loss_mean", "serial", "gradients", "gradient_spread")}


def test_statistical_mode_passes_with_torch_generators():
    report = check(Adapter(), statistical=True, draws=10000, seed=1)
    failed = [f"{r.case}[{r.quantity}]: {r.note}" for r in report.rows if not r.passed]
    assert not failed, "\n".join(failed[:20])
    cases = {r.case for r in report.rows if r.quantity.startswith("samples")}
    assert len(cases) == 43           # every eligible case, the two training cases included
    assert TRAINING_ROWS <= {(r.case, r.quantity) for r in report.rows if r.passed}


def test_statistical_mode_catches_a_kl_not_divided_by_n(monkeypatch):
    """The training step's loss without / num_examples on the KL: its mean loss or its mean
    gradients fail, for both training cases."""
    monkeypatch.setattr(torch_conformance, "training_loss", lambda nll, kl, w, n: nll + w * kl)
    report = check(Adapter(), TRAINING, statistical=True)
    failed = {(r.case, r.quantity) for r in report.rows if r.failed}
    for case in TRAINING:
        assert {(case, "samples: loss_mean"), (case, "samples: gradients")} & failed


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


# ------------------------------------------------------------------------------- the idioms

ALL_LAYERS = sorted(LT.LAYERS)


def _layer(name, in_features=4, units=3, **kwargs):
    return LT.LAYERS[name](in_features, units, "tanh", **kwargs)


def test_import_lrtdense_never_imports_torch():
    code = "import sys, lrtdense, lrtdense.conformance; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_state_dict_round_trip_and_tfp_names(name):
    a = _layer(name, dtype=torch.float64)
    b = _layer(name, dtype=torch.float64)
    numpy_names = a.settings.weight_names()
    assert list(a.state_dict()) == numpy_names == [n for n, _ in a.named_parameters()]
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 4, dtype=torch.float64)
    noise = a.sample_noise(x.shape, torch.Generator().manual_seed(0))
    assert torch.equal(a(x, noise=noise), b(x, noise=noise))
    assert torch.equal(a.divergence, b.divergence)


@pytest.mark.parametrize("name", ALL_LAYERS)
def test_same_numbers_as_the_numpy_layer(name):
    """The torch module and the NumPy layer of the same config, params and noise agree."""
    layer = _layer(name, dtype="float64")
    numpy_layer = L.deserialize({"class_name": name, "config": layer.settings.get_config()})
    params = {k: v.detach().numpy() for k, v in layer.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((6, 4))
    noise = numpy_layer.sample_noise(np.random.default_rng(1), x.shape)
    for mode in numpy_layer.MODES:
        ours = layer(torch.tensor(x), noise=noise, mode=mode).detach().numpy()
        theirs, kl = numpy_layer.forward(params, x, noise=noise if mode == "sample" else None,
                                         mode=mode)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.divergence.detach().numpy(), kl, rtol=1e-12, atol=1e-13)


def test_sequential_divergence_and_backward():
    model = torch.nn.Sequential(LT.DenseLocalReparameterization(4, 8, "relu"),
                                LT.DenseFlipout(8, 8, "elu"),
                                LT.DenseSparseVariationalDropout(8, 2))
    LT.set_generator(model, torch.Generator().manual_seed(0))
    out = model(torch.randn(16, 4))
    kl = LT.divergence(model)
    assert out.shape == (16, 2)
    assert torch.allclose(kl, sum(m.divergence for m in model))
    (out.pow(2).mean() + kl / 100).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_deepcopy_and_pickle_after_a_call():
    import copy
    import pickle
    model = torch.nn.Sequential(LT.DenseLocalReparameterization(3, 2, dtype=torch.float64))
    model(torch.randn(4, 3))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin[0].divergence is None and model[0].divergence is not None
        assert torch.equal(twin[0].kernel_posterior_loc, model[0].kernel_posterior_loc)
        twin(torch.randn(4, 3))
        assert LT.divergence(twin).dtype == torch.float64


def test_generator_determinism():
    def run(seed):
        layer = LT.DenseFlipout(4, 3, generator=torch.Generator().manual_seed(seed),
                                bias_posterior="normal")
        return layer(torch.ones(5, 4)), layer.state_dict()
    (a, sa), (b, sb), (c, _) = run(1), run(1), run(2)
    assert torch.equal(a, b) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    layer = LT.DenseLocalReparameterization(4, 3, dtype=dtype)
    assert all(p.dtype == dtype for p in layer.parameters())
    out = layer(torch.randn(2, 4, dtype=torch.float64))      # x is cast, as the NumPy layers do
    assert out.dtype == dtype and layer.divergence.dtype == dtype
    assert LT.DenseLocalReparameterization(4, 3).kernel_posterior_loc.dtype == \
        torch.get_default_dtype()
    layer.double()
    assert layer(torch.randn(2, 4)).dtype == torch.float64


def test_mean_and_pruned_modes():
    layer = LT.DenseSparseVariationalDropout(4, 3, dtype="float64")
    x = torch.randn(5, 4, dtype=torch.float64)
    mean = layer(x, mode="mean")
    assert torch.equal(mean, x @ layer.kernel_theta + layer.bias)
    with torch.no_grad():
        # |theta| >= 0.1 everywhere, so only row 0 is pruned whatever the initial draw (a random
        # theta of 1e-3 has log alpha = -10 - log(1e-6) > 3 and is pruned too)
        layer.kernel_theta.copy_(torch.linspace(0.1, 1.2, 12, dtype=torch.float64).reshape(4, 3))
        layer.kernel_log_sigma2.fill_(-10.0)
        layer.kernel_log_sigma2[0] = 5.0                 # log alpha > 3: row 0 pruned
    pruned = LT.set_mode(torch.nn.Sequential(layer), "pruned")(x)
    assert torch.allclose(pruned, x[:, 1:] @ layer.kernel_theta[1:] + layer.bias)
    assert layer.sparsity() == pytest.approx(0.25)
    assert not torch.equal(layer(x, mode="sample"), layer(x, mode="sample"))
    assert torch.equal(layer(x), pruned)                 # the module's mode is the default


@pytest.mark.parametrize("make, message", [
    (lambda: LT.DenseLocalReparameterization(4, 0), "units"),
    (lambda: LT.DenseLocalReparameterization(0, 3), "in_features"),
    (lambda: LT.DenseLocalReparameterization(4, 3, "swish"), "unknown activation"),
    (lambda: LT.DenseFlipout(4, 3, kernel_prior=L.LaplacePrior()), "monte_carlo"),
    (lambda: LT.DenseFlipout(4, 3, dtype=torch.int32), "dtype"),
    (lambda: LT.DenseFlipout(4, 3, mode="pruned"), "mode must be one of"),
    (lambda: LT.DenseVariational(4, 3, prior="wide"), "prior"),
    (lambda: LT.DenseLocalReparameterization(4, 3)(torch.ones(2, 5)), "expected x of shape"),
    (lambda: LT.DenseLocalReparameterization(4, 3)(torch.ones(2, 4), noise={"k": 1}),
     "noise must be a dict with the keys ['kernel']"),
    (lambda: LT.divergence(torch.nn.Sequential(LT.DenseFlipout(4, 3))), "has not been called"),
    (lambda: LT.from_config({"class_name": "Dense", "config": {}}, 3), "unknown layer class"),
])
def test_bad_settings_are_one_line_errors(make, message):
    with pytest.raises((ValueError, TypeError)) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_round_trip_and_repr():
    layer = LT.DenseReparameterization(4, 3, "relu", kernel_prior=L.ScaleMixturePrior(),
                                       kernel_divergence=L.MonteCarloKL(0.1, "extra"))
    again = type(layer).from_config(layer.get_config())
    assert again.settings == layer.settings and again.in_features == 4
    assert layer.double().get_config()["dtype"] == "float64"
    rebuilt = LT.from_config({"class_name": "DenseReparameterization", "config": layer.get_config()})
    assert rebuilt.in_features == 4 and rebuilt.kernel_posterior_loc.dtype == torch.float64
    text = repr(layer)
    assert "in_features=4, units=3, activation='relu'" in text and "ScaleMixturePrior" in text


def test_meta_device_and_no_hard_coded_cpu():
    layer = LT.DenseFlipout(784, 400, device="meta", bias_posterior="normal")
    out = layer(torch.empty(100, 784, device="meta"), noise=None, mode="mean")
    assert out.device.type == "meta" and out.shape == (100, 400)
    sources = os.path.join(os.path.dirname(HERE), "lrtdense", "torch")
    for file in os.listdir(sources):
        if file.endswith(".py"):
            with open(os.path.join(sources, file)) as f:
                text = f.read()
            assert not re.search(r"\.cpu\(\)|device=.cpu.|\.numpy\(\)", text), file


def test_torch_func_per_example_gradients():
    """functional_call + vmap(grad) work on the modules (the statistical mode's machinery)."""
    layer = LT.DenseLocalReparameterization(3, 2, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    noise = layer.sample_noise(x.shape, torch.Generator().manual_seed(0), sample_shape=(7,))
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p, eps):
        return torch.func.functional_call(layer, p, (x,), {"noise": eps}).sum()
    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, noise)
    assert grads["kernel_posterior_loc"].shape == (7, 3, 2)
    one = torch.func.grad(loss)(params, {"kernel": noise["kernel"][3]})
    assert torch.allclose(grads["kernel_posterior_untransformed_scale"][3],
                          one["kernel_posterior_untransformed_scale"])


# -------------------------------------------------------------------------- training parity

def test_toy_regression_parity_with_lrtdense_short():
    """examples/torch_toy_regression.py at a short configuration: torch's loop and
    torch.optim.Adam reach lrtdense's RMSE, NLL and coverage within lrtdense's own seed-to-seed
    spread (the mean over seeds of each within the other's range, widened by two std)."""
    runs = load_example("torch_toy_regression").main(seeds=(0, 1, 2), epochs=400, hidden=20,
                                                     num_samples=100)
    for key in ("rmse", "nll", "coverage95"):
        ours = np.array([r[key] for r in runs["torch"]])
        theirs = np.array([r[key] for r in runs["numpy"]])
        margin = 2 * theirs.std(ddof=1)
        assert theirs.min() - margin <= ours.mean() <= theirs.max() + margin, (key, ours, theirs)
        assert np.all(np.isfinite(ours))


def test_digits_parity_with_lrtdense_short():
    """examples/torch_digits.py at a short configuration: the digits classifier trained by
    torch's loop reaches lrtdense's accuracy and calibration error (Monte Carlo predictive and
    mean network) within lrtdense's own seed-to-seed spread, as the regression parity above."""
    pytest.importorskip("sklearn", reason="the digits ship with scikit-learn")
    runs = load_example("torch_digits").main(seeds=(0, 1, 2), epochs=10)
    for key in ("accuracy", "ece", "mean_mode_accuracy", "mean_mode_ece"):
        ours = np.array([r[key] for r in runs["torch"]])
        theirs = np.array([r[key] for r in runs["numpy"]])
        margin = 2 * theirs.std(ddof=1)
        assert theirs.min() - margin <= ours.mean() <= theirs.max() + margin, (key, ours, theirs)
    assert np.mean([r["accuracy"] for r in runs["torch"]]) > 0.9      # and it learned


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_combined_batch():
    """examples/torch_ddp.py: DistributedDataParallel (gloo, 2 CPU processes) and one process
    with the combined batch and the same noise end at the same parameters (float64 rounding),
    the divergence counted once per example. Slow: it spawns two Python processes."""
    import json
    script = os.path.join(os.path.dirname(HERE), "examples", "torch_ddp.py")
    done = subprocess.run([sys.executable, script, "--steps", "5"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["max_parameter_change"] > 1e-3
    assert result["max_abs_difference"] <= 1e-12, result
