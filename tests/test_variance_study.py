"""The gradient-variance study: the estimators of ``lrtdense.studies.estimators`` against each other
and the layers, ``lrtdense.studies.gradient_variance`` against a naive computation, the study's
bookkeeping, the ordering of the variances in the short mode, the CLI, and (slow) the default
run's bars."""
import subprocess
import sys

import numpy as np
import pytest
from autograd import grad

import lrtdense as L
from lrtdense import studies
from lrtdense.studies import estimators as E
from lrtdense.dropout import DropoutDense
from lrtdense.studies import variance as V

NEEDS_SKLEARN = "the digits data ship with scikit-learn: pip install 'lrtdense[examples]'"
NEEDS_MPL = "plots need matplotlib: pip install 'lrtdense[examples]'"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    out = tmp_path_factory.mktemp("variance")
    return V.run(short=True, out=str(out), verbose=False), out


# ------------------------------------------------------------------ the short-mode bars
def test_short_mode_orders_the_estimators_as_the_paper(short_run):
    """SHORT (64-32-32-10, 2 and 10 epochs, 100 draws of 50 examples, seed 0): no noise < LRT <
    separate < single in both layers at both checkpoints, and Flipout between LRT and the single
    sample. These sizes were chosen for stability: the ordering held for all of seeds 0..9."""
    result, _ = short_run
    checks = result["checks"]
    assert all(checks["ordering"].values()), (checks, result["variance"])
    assert checks["flipout_between"][("top", "early")] and checks["flipout_between"][("top", "late")]
    assert all(r > 1.5 for r in checks["single_over_lrt"].values()), checks["single_over_lrt"]


def test_short_run_writes_the_table_and_the_plot(short_run):
    result, out = short_run
    table = (out / "variance_table.md").read_text()
    assert table.strip() == result["table"].strip()
    assert table.startswith(V.SMOKE_NOTE) and result["full"] is False
    assert "| Estimator | Top layer, 2 epochs | Top layer, 10 epochs |" in table
    for label in V.LABELS.values():
        assert f"| {label} |" in table
    assert "over 100 draws of (minibatch of 50 of the N = 1348 training digits" in table
    assert "32x10 top-layer and 64x32 bottom-layer" in table
    pytest.importorskip("matplotlib", reason=NEEDS_MPL)
    assert (out / "variance.png").stat().st_size > 10000
    assert result["seconds"] < 60


def test_cli_prints_the_table_and_writes_files(tmp_path):
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    proc = subprocess.run([sys.executable, "-m", "lrtdense", "study", "variance", "--short",
                           "--out", str(tmp_path), "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| Local reparameterization |" in proc.stdout and "seed 1" in proc.stdout
    assert (tmp_path / "variance_table.md").exists()


# ------------------------------------------------------------------------- estimators
def _mixed(seed=0, n_in=5, dtype="float64"):
    """A network of every layer kind, with a Normal bias and posteriors wide enough to matter."""
    rng = np.random.default_rng(seed)
    network = L.Sequential([
        L.DenseLocalReparameterization(4, "relu", bias_posterior="normal", dtype=dtype),
        L.DenseFlipout(4, "tanh", dtype=dtype),
        L.DenseVariationalDropout(3, "relu", dtype=dtype),
        L.DenseVariational(3, dtype=dtype),
        L.DenseReparameterization(2, dtype=dtype)])
    params = network.init(rng, n_in)
    for p in params.values():
        for k, v in p.items():
            p[k] = (v + rng.normal(0, 0.5, v.shape)).astype(dtype)
    x = rng.standard_normal((6, n_in)).astype(dtype)
    return network, params, x, rng


@pytest.mark.parametrize("estimator, layer_class, bias", [
    (estimator, layer_class, bias)
    for estimator, layer_class in (("lrt", L.DenseLocalReparameterization),
                                   ("single", L.DenseReparameterization),
                                   ("flipout", L.DenseFlipout),
                                   ("lrt", L.DenseVariationalDropout),
                                   ("lrt", L.DenseSparseVariationalDropout))
    for bias in (("deterministic",) if issubclass(layer_class, DropoutDense)
                 else ("deterministic", "normal"))])
def test_each_estimator_is_its_layer_forward(estimator, layer_class, bias):
    """With the same noise, an estimator's outputs are its layer's own forward (rank-3 inputs
    too), the Normal bias drawn once per call as TFP draws it (the variational dropout layers
    have a deterministic bias only)."""
    kwargs = {"bias_posterior": bias} if bias == "normal" else {}
    rng = np.random.default_rng(1)
    network = L.Sequential([layer_class(4, "relu", dtype="float64", **kwargs),
                            layer_class(3, dtype="float64", **kwargs)])
    params = network.init(rng, 5)
    for x in (rng.standard_normal((7, 5)), rng.standard_normal((2, 3, 5))):
        noise = E.sample_noise(estimator, network, np.random.default_rng(2), x.shape)
        layer_noise = network.sample_noise(np.random.default_rng(2), x.shape)
        assert {k: sorted(v) for k, v in noise.items()} == \
            {k: sorted(v) for k, v in layer_noise.items()}
        for name in noise:
            for key in noise[name]:
                np.testing.assert_array_equal(noise[name][key], layer_noise[name][key])
        np.testing.assert_allclose(E.outputs(estimator, network, params, x, noise),
                                   network.forward(params, x, noise=noise)[0], rtol=1e-14)
        none = E.outputs("none", network, params, x, E.sample_noise("none", network, rng, x.shape))
        np.testing.assert_allclose(none, network.forward(params, x, mode="mean")[0], rtol=1e-14)


def test_single_is_dense_variational_forward():
    """DenseVariational samples its flat weight vector once per call: the "single" estimator,
    with the kernel the first in * units entries (row-major) and the bias the last units."""
    rng = np.random.default_rng(3)
    layer = L.DenseVariational(3, "relu", dtype="float64")
    params = layer.init(rng, 4)
    params["posterior_constant"] = rng.normal(0, 0.7, params["posterior_constant"].shape)
    x = rng.standard_normal((5, 4))
    noise = E.sample_noise("single", layer, rng, x.shape)["layer_0"]
    assert noise["kernel"].shape == (4, 3) and noise["bias"].shape == (3,)
    flat = np.concatenate([noise["kernel"].ravel(), noise["bias"]])
    np.testing.assert_allclose(E.outputs("single", layer, params, x, {"layer_0": noise}),
                               layer.forward(params, x, noise={"posterior": flat})[0], rtol=1e-14)


def test_separate_single_and_flipout_coincide_when_their_noise_does():
    """With the same eps for every example, separate samples are the single sample; with all
    signs +1, Flipout is the single sample too; written out by hand for variational dropout."""
    network = V.build_network((4,), 0.6)
    rng = np.random.default_rng(0)
    params = network.init(rng, 5)
    for p in params.values():
        p["kernel_theta"] = rng.normal(0, 0.8, p["kernel_theta"].shape)
        p["kernel_log_alpha"] = p["kernel_log_alpha"] + rng.uniform(-1, 0.5, p["kernel_log_alpha"].shape)
        p["bias"] = rng.normal(0, 0.3, p["bias"].shape)
    x = rng.standard_normal((3, 5))
    single = E.sample_noise("single", network, rng, x.shape)
    separate = {k: {"kernel": np.broadcast_to(v["kernel"], (len(x),) + v["kernel"].shape)}
                for k, v in single.items()}
    flip = E.sample_noise("flipout", network, rng, x.shape)
    flip = {k: {"kernel": single[k]["kernel"], "sign_input": np.ones_like(v["sign_input"]),
                "sign_output": np.ones_like(v["sign_output"])} for k, v in flip.items()}
    ref = E.outputs("single", network, params, x, single)
    np.testing.assert_allclose(E.outputs("separate", network, params, x, separate), ref, rtol=1e-13)
    np.testing.assert_allclose(E.outputs("flipout", network, params, x, flip), ref, rtol=1e-13)
    # W = theta + sqrt(alpha) |theta| eps (the weight's N(theta, alpha theta**2)), alpha <= 1
    def weights(p, eps):
        alpha = np.exp(np.minimum(p["kernel_log_alpha"], 0))
        return p["kernel_theta"] + np.sqrt(alpha) * np.abs(p["kernel_theta"]) * eps
    p0, p1 = params["layer_0"], params["layer_1"]
    h = np.maximum(x @ weights(p0, single["layer_0"]["kernel"]) + p0["bias"], 0)
    np.testing.assert_allclose(h @ weights(p1, single["layer_1"]["kernel"]) + p1["bias"], ref, rtol=1e-13)


def test_every_estimator_has_the_same_per_example_output_distribution():
    """Per example, the outputs of all four noisy estimators have one distribution (they differ
    only in how the noise is shared across examples): the mean and the variance over 2000 draws
    agree within 5 standard errors, on a network of every layer kind. How they differ: with
    non-negative inputs, one shared weight sample makes two examples' outputs move together;
    LRT and separate samples do not; Flipout decorrelates exactly through one layer (and nearly
    through several)."""
    network, params, x, _ = _mixed(seed=3)
    n = 2000
    draws = {}
    for i, est in enumerate(("lrt", "separate", "single", "flipout")):
        rng = np.random.default_rng(100 + i)
        draws[est] = np.stack([E.outputs(est, network, params, x, E.sample_noise(
            est, network, rng, x.shape)) for _ in range(n)])
    ref = draws["lrt"]

    def kurtosis(d):
        return np.mean((d - d.mean(0)) ** 4, 0) / d.var(0) ** 2

    for est, d in draws.items():
        se = np.sqrt((ref.var(0) + d.var(0)) / n)
        assert np.all(np.abs(d.mean(0) - ref.mean(0)) < 5 * se), est
        se_ratio = np.sqrt((kurtosis(d) - 1 + kurtosis(ref) - 1) / n)
        assert np.all(np.abs(d.var(0) / ref.var(0) - 1) < 5 * se_ratio), est
    rng = np.random.default_rng(7)
    layer = L.DenseLocalReparameterization(6, dtype="float64")
    p = layer.init(rng, 8)
    p["kernel_posterior_untransformed_scale"] += 3.0
    xp = rng.uniform(0, 1, (2, 8))
    corr = {}
    for i, est in enumerate(("lrt", "separate", "single", "flipout")):
        g = np.random.default_rng(200 + i)
        d = np.stack([E.outputs(est, layer, p, xp, E.sample_noise(est, layer, g, xp.shape))
                      for _ in range(2000)])
        corr[est] = np.mean([np.corrcoef(d[:, 0, k], d[:, 1, k])[0, 1] for k in range(6)])
    # 2000 draws: the standard error of a correlation near 0 is 1 / sqrt(2000) / sqrt(6) = 0.009
    assert max(abs(corr["lrt"]), abs(corr["separate"]), abs(corr["flipout"])) < 0.05, corr
    assert corr["single"] > 0.5, corr


# --------------------------------------------------------------- gradient_variance (the API)
def _regression(seed=5):
    network, params, x, rng = _mixed(seed)
    model = L.Model(network, L.GaussianLikelihood(0.5, learn_scale=True))
    xs = rng.standard_normal((20, x.shape[1]))
    ys = rng.standard_normal((20, 2))
    full = {"network": params, "likelihood": model.likelihood.init(model.dtype)}
    return model, full, xs, ys


def test_gradient_variance_is_the_unbiased_variance_averaged_over_entries():
    """Against a naive computation: the gradients stacked, np.var(ddof=1) per entry, averaged;
    the minibatches given explicitly; every layer kind, a learned noise scale."""
    model, params, xs, ys = _regression()
    batches = [np.random.default_rng(i).choice(20, 6, replace=False) for i in range(12)]
    wrt = {"bottom": ("layer_0", "kernel_posterior_loc"),
           "vd": ("layer_2", "kernel_theta"), "dv": ("layer_3", "posterior_constant")}
    for est in E.ESTIMATORS:
        table = studies.gradient_variance(model, params, xs, ys, (est,), rng=np.random.default_rng(1),
                                          batches=batches, wrt=wrt)
        seed = np.random.SeedSequence(np.random.default_rng(1).integers(2 ** 63, size=4)).spawn(5)
        noise_rng = np.random.default_rng(seed[E.ESTIMATORS.index(est)])
        g_fn = grad(E.data_term)
        grads = []
        for idx in batches:
            noise = E.sample_noise(est, model.network, noise_rng, xs[idx].shape)
            grads.append(g_fn(params, model, xs[idx], ys[idx], noise, est, 20))
        for label, (layer, param) in wrt.items():
            stack = np.stack([g["network"][layer][param] for g in grads])
            assert table.variance[est][label] == pytest.approx(
                np.mean(np.var(stack, axis=0, ddof=1)), rel=1e-10), (est, label)
            np.testing.assert_allclose(table.mean[est][label], stack.mean(0), rtol=1e-10, atol=1e-12)
        assert table.batch_size == 6 and table.num_draws == 12 and table.num_examples == 20


def test_gradient_variance_defaults_are_each_layers_kernel_mean():
    model, params, xs, ys = _regression()
    table = studies.gradient_variance(model, params, xs, ys, ("lrt", "none"), batch_size=5,
                                      num_draws=4, rng=np.random.default_rng(0))
    assert table.columns == {"layer_0": ("layer_0", "kernel_posterior_loc", None),
                             "layer_1": ("layer_1", "kernel_posterior_loc", None),
                             "layer_2": ("layer_2", "kernel_theta", None),
                             "layer_3": ("layer_3", "posterior_constant", "kernel"),
                             "layer_4": ("layer_4", "kernel_posterior_loc", None)}
    assert table.entry_variance["lrt"]["layer_3"].shape == (3 * 3,)       # the kernel's means
    assert table.estimators == ("lrt", "none")
    md = table.to_markdown()
    assert md.splitlines()[0] == "| Estimator | layer_0 | layer_1 | layer_2 | layer_3 | layer_4 |"
    assert "| Local reparameterization | " in md and "over 4 draws of (minibatch of M = 5" in md
    assert str(table) == md
    ratio = table.ratio("none")
    assert ratio == {c: table.variance["none"][c] / table.variance["lrt"][c] for c in table.columns}
    every = studies.gradient_variance(model, params, xs, ys, ("lrt",), batch_size=5, num_draws=3,
                                      rng=np.random.default_rng(0), wrt="all")
    assert set(every.columns) == {f"{layer}/{name}" for layer, p in params["network"].items()
                                  for name in p}


def test_an_estimators_numbers_do_not_depend_on_the_others_asked():
    model, params, xs, ys = _regression()
    both = studies.gradient_variance(model, params, xs, ys, ("flipout", "single"), batch_size=4,
                                     num_draws=5, rng=np.random.default_rng(9))
    alone = studies.gradient_variance(model, params, xs, ys, ("single",), batch_size=4,
                                      num_draws=5, rng=np.random.default_rng(9))
    assert alone.variance["single"] == both.variance["single"]
    assert params["network"]["layer_0"]["kernel_posterior_loc"].dtype == np.float64


def test_the_noisy_estimators_are_unbiased_and_single_is_the_noisiest():
    """The mean gradient of the four noisy estimators agrees within 5 standard errors (one
    objective); at a batch of 16 of non-negative inputs the shared sample's variance exceeds LRT's
    (the examples' terms covary through the shared weights)."""
    rng = np.random.default_rng(4)
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(8, "relu", dtype="float64"),
                                  L.DenseLocalReparameterization(3, dtype="float64")]),
                    L.CategoricalLikelihood())
    params = model.init(rng, 4)
    for p in params["network"].values():
        p["kernel_posterior_untransformed_scale"] += 2.5           # scale ~ 0.3
    x = rng.uniform(0, 1, (200, 4))
    y = rng.integers(0, 3, 200)
    table = studies.gradient_variance(model, params, x, y, ("lrt", "separate", "single", "flipout"),
                                      batch_size=16, num_draws=400, rng=np.random.default_rng(5))
    for est in ("separate", "single", "flipout"):
        for c in table.columns:
            se = np.sqrt((table.entry_variance[est][c] + table.entry_variance["lrt"][c]) / 400)
            assert np.all(np.abs(table.mean[est][c] - table.mean["lrt"][c]) < 5 * se + 1e-12), (est, c)
    assert all(table.ratio("single")[c] > 1.5 for c in table.columns), table


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(estimators=("reinforce",)), ValueError, "estimator must be one of"),
    (dict(estimators=()), ValueError, "at least one"),
    (dict(num_draws=1), ValueError, "num_draws must be >= 2"),
    (dict(batch_size=21), ValueError, r"batch_size must be an integer >= 1 \(and <= 20\)"),
    (dict(batches=[np.arange(3)]), ValueError, "at least 2 minibatches"),
    (dict(wrt={"a": ("layer_9", "kernel_theta")}), ValueError, "names no param; the params are"),
    (dict(wrt="some"), ValueError, "wrt must be None, 'all'"),
    (dict(rng=0), TypeError, "numpy.random.Generator"),
])
def test_gradient_variance_refuses_bad_arguments(kwargs, error, match):
    model, params, xs, ys = _regression()
    kwargs = {"rng": np.random.default_rng(0), "batch_size": 5, "num_draws": 3, **kwargs}
    with pytest.raises(error, match=match):
        studies.gradient_variance(model, params, xs, ys, **kwargs)


def test_a_layer_without_weight_moments_is_refused():
    class Plain:
        units, activation, dtype = 2, None, "float64"
    with pytest.raises(TypeError, match="expected a layer of lrtdense"):
        E.outputs("lrt", Plain(), {}, np.zeros((1, 2)), {"layer_0": {}})


def test_the_study_measures_with_the_api(monkeypatch):
    """The built-in study calls ``gradient_variance`` once per checkpoint, on the top and bottom
    layers' kernel_theta, with every estimator and the protocol's sizes."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    calls = []
    real = V.gradient_variance

    def recording(model, params, x, y, estimators, **kw):
        calls.append((estimators, kw["wrt"], kw["batch_size"], kw["num_draws"], len(x)))
        return real(model, params, x, y, estimators, **kw)

    monkeypatch.setattr(V, "gradient_variance", recording)
    V.run(short=True, verbose=False, num_draws=3, late_epochs=3)
    wrt = {"top": ("layer_2", "kernel_theta"), "bottom": ("layer_0", "kernel_theta")}
    assert calls == [(E.ESTIMATORS, wrt, 50, 3, 1348)] * 2


# --------------------------------------------------------------------- bookkeeping
def test_check_bars_and_number_format():
    variance = {e: {c: v for c in V.COLUMNS} for e, v in
                zip(V.ESTIMATORS, (2.0, 3.0, 8.0, 4.0, 1.0))}
    checks = V.check_bars(variance)
    assert all(checks["ordering"].values()) and all(checks["flipout_between"].values())
    assert checks["single_over_lrt"][("top", "early")] == 4.0
    variance["flipout"][("top", "late")] = 9.0
    variance["none"][("bottom", "late")] = 2.5
    checks = V.check_bars(variance)
    assert not checks["flipout_between"][("top", "late")] and not checks["ordering"][("bottom", "late")]
    assert E.format_value(7812.0) == "7.8e3" and E.format_value(0.0123) == "1.2e-2"


@pytest.mark.parametrize("overrides,match", [
    ({"num_layers": 3}, r"unknown settings \['num_layers'\]"),
    ({"alpha": 1.5}, r"alpha must lie in \(0, 1\]"),
    ({"early_epochs": 5, "late_epochs": 5}, "late_epochs > early_epochs"),
])
def test_bad_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        V.run(short=True, verbose=False, **overrides)


def test_unknown_estimator():
    network = V.build_network((4,), 0.5)
    for call in (lambda: E.sample_noise("reinforce", network, np.random.default_rng(0), (3, 5)),
                 lambda: E.outputs("reinforce", network, {}, np.zeros((3, 5)), {})):
        with pytest.raises(ValueError, match="estimator must be one of"):
            call()


def test_smoke_runs_say_so():
    """A short (or otherwise changed) run's table and plot title say that it is a smoke run."""
    assert V.is_full_protocol(dict(V.DEFAULTS, seed=3))
    assert not V.is_full_protocol(V.SHORT)
    assert not V.is_full_protocol(dict(V.DEFAULTS, num_draws=999))


# ------------------------------------------------------------------ the default run
@pytest.mark.slow
def test_default_run_meets_the_bars(tmp_path):
    """About two minutes on two idle cores. Measured (seed 0): single/LRT = 8.9x in the top layer after
    10 epochs; every ordering holds; Flipout between LRT and single everywhere."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    result = V.run(out=str(tmp_path), verbose=False)
    checks = result["checks"]
    assert all(checks["ordering"].values()), result["table"]
    assert checks["single_over_lrt"][("top", "early")] >= 3.0
    assert checks["flipout_between"][("top", "early")] and checks["flipout_between"][("top", "late")]
