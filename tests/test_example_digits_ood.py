"""examples/digits_ood.py: its AUROC and AUPR are scikit-learn's on the same scores and far above
chance, the same seed gives the same numbers, and the figure is written when asked for (or one
line says why not)."""
import sys
import warnings

import numpy as np
import pytest

from helpers import load_example
from lrtdense.diagnostics import FitWarning

NEEDS_SKLEARN = "the digits data ship with scikit-learn: pip install 'lrtdense[examples]'"
# A 10-epoch training prompts fit's warning that the KL still dominates the NLL; the default
# 100 epochs does not.
SHORT = dict(epochs=10, seed=0)


@pytest.fixture(scope="module")
def example():
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    return load_example("digits_ood")


@pytest.fixture(scope="module")
def short_run(example):
    """``--epochs 10 --seed 0`` (about 1 s): AUROC 0.943 (predictive entropy) and 0.930 (mutual
    information), AUPR 0.940 and 0.925, on 218 seen and 231 unseen test digits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return example.run(**SHORT)


def test_auroc_and_aupr_are_sklearns_and_far_above_chance(short_run):
    from sklearn.metrics import average_precision_score, roc_auc_score
    assert (short_run["n_in"], short_run["n_out"]) == (218, 231)
    for name in ("predictive_entropy", "mutual_information"):
        inside, outside = short_run["scores"][name]["in"], short_run["scores"][name]["out"]
        assert inside.shape == (218,) and outside.shape == (231,)
        is_out = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
        both = np.r_[inside, outside]
        auroc, aupr = short_run["auroc"][name], short_run["aupr"][name]
        assert auroc == pytest.approx(roc_auc_score(is_out, both), abs=1e-12), name
        assert aupr == pytest.approx(average_precision_score(is_out, both), abs=1e-12), name
        # measured 0.943 / 0.930 and 0.940 / 0.925; chance is 0.5 and 231/449 = 0.514
        assert auroc > 0.88 and aupr > 0.85, (name, auroc, aupr)
    assert short_run["accuracy_in"] > 0.95


def test_the_same_seed_gives_the_same_numbers(example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        first, again = (example.run(epochs=1, seed=3, num_samples=5) for _ in range(2))
        other = example.run(epochs=1, seed=4, num_samples=5)
    for name in example.SCORES:
        for part in ("in", "out"):
            assert np.array_equal(first["scores"][name][part], again["scores"][name][part])
        assert first["auroc"][name] == again["auroc"][name]
        assert first["aupr"][name] == again["aupr"][name]
        assert first["auroc"][name] != other["auroc"][name]


def test_main_prints_both_scores_and_writes_the_figure_asked_for(example, short_run, tmp_path,
                                                                  monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="the figure needs matplotlib: "
                                             "pip install 'lrtdense[examples]'")
    calls = []
    monkeypatch.setattr(example, "run", lambda **kw: calls.append(kw) or short_run)
    png = tmp_path / "ood.png"
    assert example.main(["--epochs", "7", "--seed", "2", "--figure", str(png)]) is short_run
    assert calls == [{"epochs": 7, "seed": 2}]
    out = capsys.readouterr().out
    assert "AUROC 0.9432   AUPR 0.9401" in out and f"wrote {png}" in out, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000


def test_without_matplotlib_one_line_says_so(example, short_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib fails
    png = tmp_path / "ood.png"
    assert example.histogram_figure(short_run, str(png)) is None
    assert capsys.readouterr().out == ("matplotlib is not installed: no figure written "
                                       "(pip install 'lrtdense[examples]')\n")
    assert not png.exists()


def test_a_bad_figure_path_fails_before_training(example, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(example, "run", lambda **kw: pytest.fail("trained"))
    for bad in (str(tmp_path / "missing" / "ood.png"), str(tmp_path / "ood.txt")):
        with pytest.raises(SystemExit) as stop:
            example.main(["--figure", bad])
        assert stop.value.code == 2
        assert "--figure" in capsys.readouterr().err



def test_without_scikit_learn_one_line_says_so(example, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)   # the digits cannot be loaded
    with pytest.raises(SystemExit) as stop:
        example.main(["--epochs", "1"])
    message = str(stop.value.code)
    assert "\n" not in message and "scikit-learn" in message and "pip install" in message, message
