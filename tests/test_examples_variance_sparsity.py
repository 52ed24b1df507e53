"""The variance and sparsity examples (gradient variance, sparse VD on digits) under short configurations, as
scripts without their optional dependencies, the sparse VD example's shift augmentation and
command line, and (slow) the sparse VD example's bar with the defaults and the shifted recipe."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import EXAMPLES, load_example

NEEDS_SKLEARN = "the digits data ship with scikit-learn: pip install 'lrtdense[examples]'"

SHORT_VARIANCE = dict(hidden=(32, 32), early_epochs=2, late_epochs=10, num_draws=100, batch_size=50)
SHORT_SPARSE = dict(epochs=30, warmup_epochs=10, hidden=64)
SHORT_SHIFTED = dict(shifts=4, epochs=6, warmup_epochs=2, learning_rate=3e-3, hidden=64, output="")
RECIPE = ["--shifts", "4", "--epochs", "100", "--warmup-epochs", "25", "--learning-rate", "3e-3"]


def test_gradient_variance_example_short(tmp_path):
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    result = load_example("gradient_variance").main(verbose=False, out=str(tmp_path), **SHORT_VARIANCE)
    ratios = result["ratios_to_lrt"]
    assert all(ours == 1.0 and paper == 1.0 for ours, paper in ratios["lrt"].values())
    assert ratios["flipout"][("top", "early")][1] is None                  # not in the paper
    assert ratios["single"][("top", "early")][1] == pytest.approx(4.9e4 / 7.8e3)
    assert all(ours > 1 for ours, _ in ratios["single"].values())
    assert (tmp_path / "variance_table.md").exists()


def test_sparse_vd_example_short(tmp_path):
    """30 epochs of a 64-64-10 network: a few seconds. Measured (seed 0): ELBO 89.5% of the first
    layer pruned at 90.9% accuracy; KL weight 0.1 65.3% at 94.4%; baseline 96.0%."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    png = tmp_path / "sparse.png"
    result = load_example("sparse_vd_digits").main(verbose=False, output=str(png), **SHORT_SPARSE)
    elbo, tempered = result["runs"][1.0], result["runs"][0.1]
    assert elbo["sparsity"]["layer_0"] > tempered["sparsity"]["layer_0"] > 0.3
    assert result["baseline_sparsity"]["layer_0"] < 0.05
    assert elbo["sparsity"]["layer_0"] > 0.8 and elbo["sparsity"]["layer_1"] > 0.3
    assert result["baseline_accuracy"] > 0.9 and elbo["accuracy"] > 0.8 and tempered["accuracy"] > 0.85
    assert result["num_test"] == 449 and result["num_train"] == 1348     # shifts=0: no copies
    assert elbo["accuracy_gap"] == pytest.approx(result["baseline_accuracy"] - elbo["accuracy"])
    if importlib.util.find_spec("matplotlib"):
        assert png.stat().st_size > 5000


def _image(pixels):
    """An 8x8 image, flattened row-major, with the given {(row, col): value} and 0 elsewhere."""
    img = np.zeros((8, 8))
    for (r, c), v in pixels.items():
        img[r, c] = v
    return img.reshape(64)


def _pixels(row):
    img = row.reshape(8, 8)
    return {(int(r), int(c)): float(img[r, c]) for r, c in zip(*np.nonzero(img))}


# a corner, an interior pixel and the opposite corner; moved (dr, dc): content at (r, c) goes to
# (r + dr, c + dc) and falls off when that leaves the 8x8 grid
CORNERS = {(0, 0): 1.0, (3, 4): 2.0, (7, 7): 3.0}
MOVED = {   # offset -> nonzero pixels of the shifted copy, written out by hand
    (-1, 0): {(2, 4): 2.0, (6, 7): 3.0},                  # up: (0, 0) falls off the top
    (1, 0): {(1, 0): 1.0, (4, 4): 2.0},                   # down: (7, 7) falls off the bottom
    (0, -1): {(3, 3): 2.0, (7, 6): 3.0},                  # left
    (0, 1): {(0, 1): 1.0, (3, 5): 2.0},                   # right
    (-1, -1): {(2, 3): 2.0, (6, 6): 3.0},                 # up-left
    (-1, 1): {(2, 5): 2.0},                               # up-right: both corners fall off
    (1, -1): {(4, 3): 2.0},                               # down-left: both corners fall off
    (1, 1): {(1, 1): 1.0, (4, 5): 2.0},                   # down-right
}


@pytest.mark.parametrize("shifts, offsets", [
    (4, [(-1, 0), (1, 0), (0, -1), (0, 1)]),
    (8, [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)])])
def test_shift_augment_on_a_hand_made_image(shifts, offsets):
    """Row order (the docstring's): 1 + shifts blocks of N rows, block 0 the images themselves,
    block k every image under the k-th offset (up, down, left, right, then the diagonals);
    labels tiled."""
    module = load_example("sparse_vd_digits")
    assert list(module.SHIFT_OFFSETS[shifts]) == offsets
    other = _image({(4, 4): 5.0, (0, 7): 6.0})
    x = np.stack([_image(CORNERS), other]).astype(np.float32)
    x_before = x.copy()
    y = np.array([3, 8])
    x_aug, y_aug = module.shift_augment(x, y, shifts)
    assert x_aug.shape == (2 * (1 + shifts), 64) and x_aug.dtype == np.float32
    assert y_aug.tolist() == [3, 8] * (1 + shifts)
    np.testing.assert_array_equal(x_aug[:2], x)                # block 0: the originals
    np.testing.assert_array_equal(x, x_before)                 # the input is not modified
    for k, offset in enumerate(offsets, start=1):
        assert _pixels(x_aug[2 * k]) == MOVED[offset], offset  # the first image's copy
        (dr, dc) = offset
        expected_other = {(r + dr, c + dc): v for (r, c), v in {(4, 4): 5.0, (0, 7): 6.0}.items()
                          if 0 <= r + dr < 8 and 0 <= c + dc < 8}
        assert _pixels(x_aug[2 * k + 1]) == expected_other, offset
    # zero fill: the vacated row / column of every copy is 0 even where the image is not
    full = np.ones((1, 64))
    x_full, _ = module.shift_augment(full, [0], shifts)
    for k, (dr, dc) in enumerate(offsets, start=1):
        img = x_full[k].reshape(8, 8)
        assert img.sum() == (8 - abs(dr)) * (8 - abs(dc))
        if dr:
            assert not img[0 if dr > 0 else 7].any()
        if dc:
            assert not img[:, 0 if dc > 0 else 7].any()


def test_shift_augment_zero_shifts_is_the_identity():
    module = load_example("sparse_vd_digits")
    x, y = np.arange(128.0).reshape(2, 64), np.array([1, 2])
    x_aug, y_aug = module.shift_augment(x, y, 0)
    np.testing.assert_array_equal(x_aug, x)
    np.testing.assert_array_equal(y_aug, y)


@pytest.mark.parametrize("bad", [1, 2, 3, 5, -4, 9, 16, True, None, "4"])
def test_shift_augment_rejects_other_values(bad):
    module = load_example("sparse_vd_digits")
    with pytest.raises(ValueError, match=r"shifts must be one of \[0, 4, 8\]"):
        module.shift_augment(np.zeros((3, 64)), np.zeros(3, int), bad)


def test_shift_augment_rejects_other_shapes():
    module = load_example("sparse_vd_digits")
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        module.shift_augment(np.zeros((3, 8, 8)), np.zeros(3, int), 4)


def test_sparse_vd_example_command_line():
    module = load_example("sparse_vd_digits")
    assert module.parse_args([]) == {}                          # the defaults: SETTINGS
    assert module.parse_args(RECIPE) == dict(shifts=4, epochs=100, warmup_epochs=25,
                                             learning_rate=3e-3)
    assert set(module.parse_args(RECIPE + ["--seed", "1", "--output", ""])) <= set(module.SETTINGS)
    with pytest.raises(SystemExit):
        module.parse_args(["--shifts", "2"])
    assert module.SETTINGS["shifts"] == 0


def test_sparse_vd_example_rejects_bad_shifts_before_training():
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    with pytest.raises(ValueError, match=r"\[0, 4, 8\]"):
        load_example("sparse_vd_digits").main(verbose=False, output="", shifts=2)


def test_sparse_vd_example_short_with_shifts(monkeypatch):
    """6 epochs of a 64-64-10 network on the 4-shift set (5 x 1348 = 6740 images, the N of
    KL / N, for the baseline too), lr 3e-3: about 4 s. Measured (seed 0): ELBO 56.2% of the first
    layer pruned at 91.8% test accuracy; KL weight 0.1 18.9% at 93.8%; baseline 93.8%."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    module = load_example("sparse_vd_digits")
    seen, fit = [], module.fit

    def recording_fit(model, params, x, y, **kwargs):
        seen.append((len(x), len(y), kwargs.get("num_examples")))
        return fit(model, params, x, y, **kwargs)

    monkeypatch.setattr(module, "fit", recording_fit)
    result = module.main(verbose=False, **SHORT_SHIFTED)
    # every training (ELBO, tempered, baseline) saw the augmented set and N defaulted to its size
    assert seen == [(6740, 6740, None)] * 3
    assert result["num_train"] == 6740 and result["num_test"] == 449
    elbo, tempered = result["runs"][1.0], result["runs"][0.1]
    assert 0.45 < elbo["sparsity"]["layer_0"] < 0.7 and elbo["sparsity"]["layer_1"] > 0.2
    assert elbo["sparsity"]["layer_0"] > tempered["sparsity"]["layer_0"] > 0.1
    assert result["baseline_sparsity"]["layer_0"] < 0.02
    assert result["baseline_accuracy"] > 0.9 and elbo["accuracy"] > 0.88 and tempered["accuracy"] > 0.9


@pytest.mark.parametrize("name", ["gradient_variance", "sparse_vd_digits"])
def test_scripts_exit_with_one_line_without_scikit_learn(name):
    code = ("import sys, runpy; sys.modules['sklearn'] = None; "
            f"runpy.run_path({os.path.join(EXAMPLES, name + '.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "scikit-learn" in proc.stderr and "pip install 'lrtdense[examples]'" in proc.stderr


def test_sparse_example_without_matplotlib_says_so(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = load_example("sparse_vd_digits").main(
        verbose=False, output=str(tmp_path / "x.png"), epochs=2, warmup_epochs=1, hidden=8,
        kl_weights=(1.0,))
    assert "matplotlib is not installed: no plot written" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists() and set(result["runs"]) == {1.0}
    from lrtdense.studies import variance
    assert variance.plot({}, str(tmp_path / "v.png")) is None


@pytest.mark.slow
def test_sparse_vd_example_default_bar():
    """The default run (200 epochs, 64-300-10; about 40 s). Measured (seed 0, float32 noise by
    Box-Muller): with the ELBO, 99.3% of the first layer pruned at 95.77% vs the baseline's
    98.22% (gap 2.45 points: the bar's accuracy half fails, see docs/variance_study.md); with the
    KL weight tempered to 0.1 (the weight cross-validation chooses), 96.1% pruned at 98.00% (gap
    0.22 points: the bar holds)."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    result = load_example("sparse_vd_digits").main(verbose=False, output="")
    tempered, elbo = result["runs"][0.1], result["runs"][1.0]
    assert tempered["sparsity"]["layer_0"] >= 0.9 and tempered["accuracy_gap"] <= 0.01, result
    assert elbo["sparsity"]["layer_0"] >= 0.9


@pytest.mark.slow
def test_sparse_vd_example_shifted_recipe():
    """The augmented recipe, seed 0: ``python examples/sparse_vd_digits.py --shifts 4 --epochs
    100 --warmup-epochs 25 --learning-rate 3e-3`` with the ELBO run and the baseline only (about
    70 s). Measured: the ELBO (on the 6740 images, N = 6740) prunes 91.3% of the first layer and
    84.9% of the second at 97.77% test accuracy vs the baseline's 99.33%: a gap of 1.56 points,
    so the bar's accuracy half still fails with the ELBO (seeds 1, 2: 0.45 and 0.89 points; see
    docs/variance_study.md). Asserted: the sparsity half and the measured accuracies, not the
    1-point bar."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    module = load_example("sparse_vd_digits")
    result = module.main(verbose=False, output="", kl_weights=(1.0,), **module.parse_args(RECIPE))
    elbo = result["runs"][1.0]
    assert result["num_train"] == 6740
    assert elbo["sparsity"]["layer_0"] >= 0.9 and elbo["sparsity"]["layer_1"] >= 0.8, result
    assert elbo["accuracy"] >= 0.97 and result["baseline_accuracy"] >= 0.985, result
    assert elbo["accuracy_gap"] <= 0.02, result


# ---- choosing the tempered KL weight by cross-validation on the training part --------------

SHORT_CV = dict(epochs=4, warmup_epochs=2, hidden=16, cv_folds=2, cv_kl_weights=(1.0, 0.1),
                output="")


def test_cv_folds_partition_the_training_part():
    module = load_example("sparse_vd_digits")
    folds = module.cv_folds(1348, 5)
    assert [len(f) for f in folds] == [270, 270, 270, 269, 269]
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(1348))
    order = np.random.default_rng(12345).permutation(1348)      # the documented protocol
    np.testing.assert_array_equal(folds[2], np.sort(order[2::5]))
    for bad in (1, 0, 1349, 2.0, True, None):
        with pytest.raises(ValueError, match=r"cv_folds must be an int in \[2, 1348\]"):
            module.cv_folds(1348, bad)


def test_select_kl_weight_takes_the_largest_weight_that_passes_both_halves():
    select = load_example("sparse_vd_digits").select_kl_weight
    rows = {1.0: {"gap": 0.025, "pruned": 0.99}, 0.3: {"gap": 0.0111, "pruned": 0.98},
            0.1: {"gap": 0.0052, "pruned": 0.96}, 0.03: {"gap": 0.0044, "pruned": 0.906}}
    assert select(rows, 0.01, 0.9) == 0.1                        # the seed-0 numbers, rounded
    assert select(rows, 0.02, 0.9) == 0.3
    assert select(rows, 0.01, 0.97) is None                      # 0.3 prunes, but misses the gap
    assert select(rows, 0.0044, 0.906) == 0.03                   # the bounds are inclusive
    assert select(rows, 0.004, 0.5) is None
    assert select({}, 0.01, 0.9) is None


def test_cross_validate_short_trains_on_the_other_folds_only(monkeypatch):
    """2 folds, a 64-16-10 network for 4 epochs: about 2 s. Checks the protocol, not accuracy:
    every training sees exactly the training part minus the validation fold (never the test
    set), one baseline and one run per candidate per fold, and the summary is the folds' mean."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    from lrtdense.datasets import load_digits_split
    module = load_example("sparse_vd_digits")
    x_tr, _, _, _ = load_digits_split(0, 0.25)
    folds = module.cv_folds(len(x_tr), 2)
    seen, fit = [], module.fit

    def recording_fit(model, params, x, y, **kwargs):
        seen.append((x.copy(), kwargs["kl_weight"]))
        return fit(model, params, x, y, **kwargs)

    monkeypatch.setattr(module, "fit", recording_fit)
    result = module.cross_validate(verbose=False, **SHORT_CV)
    assert len(seen) == 2 * 3 and result["folds"] == [674, 674]
    for k, val in enumerate(folds):
        keep = np.setdiff1d(np.arange(len(x_tr)), val)
        for x, _ in seen[3 * k:3 * k + 3]:
            np.testing.assert_array_equal(x, x_tr[keep])
        assert seen[3 * k][1] == 0.0                             # the baseline first
        assert [kl(50) for _, kl in seen[3 * k + 1:3 * k + 3]] == [1.0, 0.1]
        assert [kl(1) for _, kl in seen[3 * k + 1:3 * k + 3]] == [0.5, 0.05]   # warm-up: 2 epochs
    rows = result["rows"]
    assert set(rows) == {1.0, 0.1}
    for row in rows.values():
        assert len(row["gaps"]) == 2 and len(row["pruned_per_fold"]) == 2
        assert row["gap"] == pytest.approx(result["baseline_accuracy"] - row["accuracy"])
        assert row["pruned"] == pytest.approx(np.mean(row["pruned_per_fold"]))
        assert row["pruned"] == pytest.approx(row["sparsity"]["layer_0"])
    assert rows[1.0]["pruned"] > rows[0.1]["pruned"]
    assert result["chosen"] == module.select_kl_weight(rows, 0.01, 0.9)


def test_cross_validate_rejects_bad_candidates_before_training(monkeypatch):
    module = load_example("sparse_vd_digits")
    monkeypatch.setattr(module, "fit", lambda *a, **k: pytest.fail("trained"))
    for bad in ((), (0.1, float("nan")), (0.0,), ("0.1",)):
        with pytest.raises(ValueError, match="cv_kl_weights must be a non-empty sequence"):
            module.cross_validate(verbose=False, cv_kl_weights=bad)
    with pytest.raises(ValueError, match="unknown settings"):
        module.cross_validate(verbose=False, cv_weights=(0.1,))


@pytest.mark.parametrize("chosen, tested", [(0.1, (1.0, 0.1)), (1.0, (1.0,)), (None, (1.0,))])
def test_cross_validate_command_line_tests_the_chosen_weight(monkeypatch, chosen, tested):
    module = load_example("sparse_vd_digits")
    overrides = module.parse_args(["--cross-validate", "--seed", "2"])
    assert overrides == {"cross_validate": True, "seed": 2}
    calls = []
    monkeypatch.setattr(module, "cross_validate",
                        lambda **kw: calls.append(("cv", kw)) or {"chosen": chosen})
    monkeypatch.setattr(module, "main", lambda **kw: calls.append(("main", kw)) or "result")
    assert module.run(overrides) == "result"
    assert calls == [("cv", {"seed": 2}), ("main", {"kl_weights": tested, "seed": 2})]
    calls.clear()
    module.run({"seed": 2})                                      # without the flag: main only
    assert calls == [("main", {"seed": 2})]


@pytest.mark.slow
def test_cross_validation_chooses_the_tempered_weight():
    """``python examples/sparse_vd_digits.py --cross-validate``'s selection, seed 0 (5 folds x (1
    baseline + 4 candidates), about 4 minutes). Measured: mean validation gaps 1.0: 4.1 points,
    0.3: 1.11, 0.1: 0.52, 0.03: 0.44, at 99.3 / 98.3 / 96.1 / 90.6 % of the first layer pruned
    (baseline 97.55 %): the rule chooses 0.1, the weight whose test-set run meets the bar."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    result = load_example("sparse_vd_digits").cross_validate(verbose=False)
    rows = result["rows"]
    assert result["chosen"] == 0.1, rows
    assert rows[0.3]["gap"] > 0.01 and rows[1.0]["gap"] > 0.02, rows
    assert rows[0.1]["gap"] <= 0.01 and rows[0.1]["pruned"] >= 0.9, rows
    assert rows[0.03]["pruned"] >= 0.9 and rows[0.03]["pruned"] < rows[0.1]["pruned"], rows
