"""examples/prior_comparison_digits.py: its pruning, its selection rule (and that the test set never
reaches it), and its numbers in a short configuration; the full run is marked slow."""
import math
import os
import subprocess

import numpy as np
import pytest

import lrtdense as L
from helpers import load_example

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (the examples extra)")
example = load_example("prior_comparison_digits")

# a few seconds: two seeds, a two-point grid per prior, a tiny network
SHORT = dict(seeds=(0, 1), hidden=(16,), epochs=2, predict_samples=5, timing_rounds=3,
             mixture_pi=(0.25, 0.5), mixture_neg_log_sigma1=(0,), mixture_neg_log_sigma2=(6,),
             normal_neg_log_sigma=(0, 1), prune_fractions=(0.0, 0.5, 0.9, 1.0))
POISON = 7.0    # digits lie in [0, 1]: an array holding 7.0 holds a test image


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("priors") / "priors.png"
    return example.main(verbose=False, output=str(out), **SHORT), out


def _trained(prior, seed=0):
    s = example._settings({"hidden": (8, 6), "epochs": 1})
    rng = np.random.default_rng(seed)
    x = rng.random((40, 64))
    y = rng.integers(0, 10, 40)
    arm = "mixture" if isinstance(prior, L.ScaleMixturePrior) else "normal"
    model, params, _ = example.train(arm, prior, s, x, y, seed)
    return model, params


def test_signal_to_noise_is_abs_loc_over_softplus_scale():
    model, params = _trained(L.NormalPrior())
    expected = []
    for name in model.network.names:
        p = params["network"][name]
        u = p["kernel_posterior_untransformed_scale"].astype(np.float64)
        scale = np.logaddexp(0, u) + np.finfo(np.float32).eps
        expected.append(np.abs(p["kernel_posterior_loc"].astype(np.float64)).ravel() / scale.ravel())
    snr = example.signal_to_noise(model, params)
    assert snr.shape == (64 * 8 + 8 * 6 + 6 * 10,)
    np.testing.assert_allclose(snr, np.concatenate(expected), rtol=1e-5)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9, 0.98, 1.0])
def test_prune_removes_exactly_the_lowest_snr_weights(fraction):
    model, params = _trained(L.ScaleMixturePrior(0.5, 1.0, math.exp(-6)))
    before = {n: {k: v.copy() for k, v in p.items()} for n, p in params["network"].items()}
    snr = example.signal_to_noise(model, params)
    pruned, keep = example.prune(model, params, fraction)
    removed = int(round(fraction * snr.size))
    assert (~keep).sum() == removed
    if 0 < removed < snr.size:      # the SNR ordering: every removed weight at or below every kept
        assert snr[~keep].max() <= snr[keep].min()
    new_loc = np.concatenate([pruned["network"][n]["kernel_posterior_loc"].ravel()
                              for n in model.network.names])
    old_loc = np.concatenate([before[n]["kernel_posterior_loc"].ravel() for n in before])
    assert np.all(new_loc[~keep] == 0)
    np.testing.assert_array_equal(new_loc[keep], old_loc[keep])       # kept weights bit for bit
    for n, p in before.items():                                         # params untouched, and
        for k, v in p.items():                                          # only the kernel locs move
            np.testing.assert_array_equal(params["network"][n][k], v)
            if k != "kernel_posterior_loc":
                np.testing.assert_array_equal(pruned["network"][n][k], v)


def test_prune_refuses_a_fraction_outside_0_1():
    model, params = _trained(L.NormalPrior())
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="fraction removed"):
            example.prune(model, params, bad)


def test_validation_split_partitions_the_training_part():
    fit_idx, val_idx = example.validation_split(1348, 0.2)
    assert len(val_idx) == 270 and len(fit_idx) == 1078
    assert not set(fit_idx) & set(val_idx)
    np.testing.assert_array_equal(np.sort(np.concatenate([fit_idx, val_idx])), np.arange(1348))
    again = example.validation_split(1348, 0.2)          # fixed by VALIDATION_SEED
    np.testing.assert_array_equal(again[1], val_idx)
    with pytest.raises(ValueError, match="validation_fraction"):
        example.validation_split(1348, 0.0)


def test_selection_rule_accuracy_then_nll_then_grid_order():
    rows = [{"val_accuracy": 0.95, "val_nll": 0.10}, {"val_accuracy": 0.97, "val_nll": 0.30},
            {"val_accuracy": 0.97, "val_nll": 0.20}, {"val_accuracy": 0.97, "val_nll": 0.20}]
    best = min(range(len(rows)), key=lambda i: example.selection_key(rows[i], i))
    assert best == 2


def test_the_grids_are_blundells():
    s = example._settings({})
    grid = example.mixture_grid(s)
    assert len(grid) == 27
    assert {round(-math.log(s1)) for _, s1, _ in grid} == {0, 1, 2}
    assert {round(-math.log(s2)) for _, _, s2 in grid} == {6, 7, 8}
    assert {pi for pi, _, _ in grid} == {0.25, 0.5, 0.75}
    grids = example.candidates(s)
    assert [p.scale for p in grids["normal"]] == [1.0, math.exp(-1), math.exp(-2)]
    assert grids["normal_mc"] == grids["normal"] and len(grids["mixture"]) == 27
    assert {arm: example.ARMS[arm][1] for arm in grids} == \
        {"normal": "closed_form", "normal_mc": "monte_carlo", "mixture": "monte_carlo"}


def test_short_run_numbers(short_run):
    result, out = short_run
    s = result["settings"]
    assert result["num_train"] == 1348 and result["num_test"] == 449
    n_weights = 64 * 16 + 16 * 10
    for kind, runs in result["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            for key in ("mean_accuracy", "mc_accuracy", "mean_ece", "mc_ece"):
                assert 0 <= r[key] <= 1, (kind, key, r[key])
            assert set(r["pruned_accuracy"]) == set(s["prune_fractions"])
            assert all(0 <= a <= 1 for a in r["pruned_accuracy"].values())
            # removing nothing is the unpruned mean network, exactly
            assert r["pruned_accuracy"][0.0] == r["mean_accuracy"]
            # removing every kernel weight leaves the biases alone: one class for every digit
            assert r["pruned_accuracy"][1.0] <= 0.2
            assert r["log10_snr"].shape == (n_weights,) and np.all(np.isfinite(r["log10_snr"]))
            assert r["seconds_per_step"] > 0
        mean, sd = result["summary"][kind]["mean_accuracy"]
        vals = [r["mean_accuracy"] for r in runs]
        assert mean == pytest.approx(np.mean(vals)) and sd == pytest.approx(np.std(vals, ddof=1))
    t = result["timing"]
    assert t["normal"] > 0 and t["mixture"] > 0 and t["ratio"] == t["mixture"] / t["normal"]
    assert t["ratio_mc"] == t["mixture"] / t["normal_mc"]
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib (the examples extra)")
    assert out.stat().st_size > 10000


def test_short_run_chooses_from_the_grid_by_the_rule(short_run):
    result, _ = short_run
    s, sel = result["settings"], result["selection"]
    assert sel["num_fit"] + sel["num_validation"] == result["num_train"]
    assert set(result["runs"]) == {"normal", "normal_mc", "mixture"}
    for kind in ("normal", "normal_mc", "mixture"):
        rows, grid = sel[kind]["rows"], example.candidates(s)[kind]
        assert [r["prior"] for r in rows] == grid
        best = min(range(len(rows)), key=lambda i: example.selection_key(rows[i], i))
        assert sel[kind]["chosen"] == grid[best]
        assert all(0 <= r["val_accuracy"] <= 1 and r["val_nll"] > 0 for r in rows)
    # the chosen priors are the ones trained and reported
    for kind, prior in (("normal", L.NormalPrior), ("normal_mc", L.NormalPrior),
                        ("mixture", L.ScaleMixturePrior)):
        assert isinstance(sel[kind]["chosen"], prior)
    # the arms differ in what they say: the divergence of every layer
    model = example.build_model(sel["normal_mc"]["chosen"], example.ARMS["normal_mc"][1], s)
    assert all(isinstance(layer.kernel_divergence, L.MonteCarloKL) for layer in model.network.layers)


def test_the_test_set_never_reaches_training_or_selection(short_run, monkeypatch):
    """Replace every test image by POISON: no array given to fit or to the validation scoring
    holds it, and the selection (every validation score, the choices) is bit-identical to the
    run on the real test set, which only the final evaluation reads."""
    clean, _ = short_run
    real = example.load_digits_split

    def poisoned(seed, test_fraction):
        x_tr, y_tr, x_te, y_te = real(seed, test_fraction)
        return x_tr, y_tr, np.full_like(x_te, POISON), y_te

    seen = []

    def spy(name, f):
        def wrapped(*args, **kwargs):
            seen.extend((name, a) for a in args if isinstance(a, np.ndarray) and a.ndim == 2)
            return f(*args, **kwargs)
        return wrapped

    evaluated, evaluate = [], example.evaluate

    def evaluate_spy(model, params, s, x_te, y_te, rng):
        evaluated.append(x_te)
        return evaluate(model, params, s, x_te, y_te, rng)

    monkeypatch.setattr(example, "load_digits_split", poisoned)
    monkeypatch.setattr(example, "fit", spy("fit", example.fit))
    monkeypatch.setattr(example, "mean_network_scores",
                        spy("mean_network_scores", example.mean_network_scores))
    monkeypatch.setattr(example, "evaluate", evaluate_spy)
    result = example.main(verbose=False, output="", **SHORT)
    assert {name for name, _ in seen} == {"fit", "mean_network_scores"}
    assert not any(np.any(a == POISON) for _, a in seen)
    assert all(np.all(x == POISON) for x in evaluated) and len(evaluated) == 6
    for kind in ("normal", "normal_mc", "mixture"):
        got, want = result["selection"][kind], clean["selection"][kind]
        assert got["chosen"] == want["chosen"]
        assert [(r["val_accuracy"], r["val_nll"]) for r in got["rows"]] == \
               [(r["val_accuracy"], r["val_nll"]) for r in want["rows"]]


def test_float64_runs_the_same_pipeline():
    result = example.main(verbose=False, output="", dtype="float64",
                          **{**SHORT, "seeds": (0,), "epochs": 1, "timing_rounds": 0,
                             "arms": ("normal", "mixture")})
    run = result["runs"]["mixture"][0]
    assert run["pruned_accuracy"][0.0] == run["mean_accuracy"] and result["timing"] is None


def test_output_goes_to_an_ignored_folder_and_never_over_a_tracked_file():
    path = example.output_path(example.SETTINGS["output"])
    assert path == os.path.join(example.REPO, "out", "prior_comparison_digits.png")
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=example.REPO)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0, f"{path} is not ignored by git"
    with pytest.raises(ValueError, match="git tracks it"):
        example.output_path("README.md")


def test_command_line_overrides():
    assert example.parse_args(["--seeds", "0", "3", "--hidden", "50", "--epochs", "5"]) == \
        {"seeds": (0, 3), "hidden": (50,), "epochs": 5}
    assert example.parse_args(["--dtype", "float64", "--arms", "normal", "mixture"]) == \
        {"dtype": "float64", "arms": ("normal", "mixture")}
    assert example.parse_args([]) == {}
    with pytest.raises(ValueError, match="unknown settings"):
        example.main(verbose=False, epoch=3)
    with pytest.raises(ValueError, match="arms must be"):
        example.main(verbose=False, arms=("laplace",))


@pytest.mark.slow
def test_full_run():
    """The default settings (about 45 minutes on a busy 2-core machine): every arm chooses from
    its grid and reaches 93% on the test set (measured: 94.8-95.4% on average over the seeds),
    and removing nothing is the unpruned network."""
    result = example.main(verbose=False, output="")
    s = result["settings"]
    for arm in s["arms"]:
        assert result["selection"][arm]["chosen"] in example.candidates(s)[arm]
        assert result["summary"][arm]["mean_accuracy"][0] >= 0.93, result["summary"][arm]
        for r in result["runs"][arm]:
            assert r["pruned_accuracy"][0.0] == r["mean_accuracy"]
