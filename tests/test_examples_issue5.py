"""The issue-5 examples (gradient variance, sparse VD on digits) under short configurations, as
scripts without their optional dependencies, and (slow) the sparse VD example's bar."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import EXAMPLES, load_example

SHORT_VARIANCE = dict(hidden=(32, 32), early_epochs=2, late_epochs=10, num_draws=100, batch_size=50)
SHORT_SPARSE = dict(epochs=30, warmup_epochs=10, hidden=64)




def test_gradient_variance_example_short(tmp_path):
    pytest.importorskip("sklearn")
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
    pytest.importorskip("sklearn")
    png = tmp_path / "sparse.png"
    result = load_example("sparse_vd_digits").main(verbose=False, output=str(png), **SHORT_SPARSE)
    elbo, tempered = result["runs"][1.0], result["runs"][0.1]
    assert elbo["sparsity"]["layer_0"] > tempered["sparsity"]["layer_0"] > 0.3
    assert result["baseline_sparsity"]["layer_0"] < 0.05
    assert elbo["sparsity"]["layer_0"] > 0.8 and elbo["sparsity"]["layer_1"] > 0.3
    assert result["baseline_accuracy"] > 0.9 and elbo["accuracy"] > 0.8 and tempered["accuracy"] > 0.85
    assert result["num_test"] == 449
    assert elbo["accuracy_gap"] == pytest.approx(result["baseline_accuracy"] - elbo["accuracy"])
    if importlib.util.find_spec("matplotlib"):
        assert png.stat().st_size > 5000


@pytest.mark.parametrize("name", ["gradient_variance", "sparse_vd_digits"])
def test_scripts_exit_with_one_line_without_scikit_learn(name):
    code = ("import sys, runpy; sys.modules['sklearn'] = None; "
            f"runpy.run_path({os.path.join(EXAMPLES, name + '.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "scikit-learn" in proc.stderr and "pip install 'lrtdense[examples]'" in proc.stderr


def test_sparse_example_without_matplotlib_says_so(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
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
    """The default run (200 epochs, 64-300-10; about a minute). Measured (seed 0): with the
    ELBO, 99.3% of the first layer pruned at 95.3% vs the baseline's 98.7% (gap 3.3 points: the
    bar's accuracy half fails, see docs/variance_study.md); with the KL weight tempered to 0.1,
    96.0% pruned at 97.8% (gap 0.9 points: the bar holds)."""
    pytest.importorskip("sklearn")
    result = load_example("sparse_vd_digits").main(verbose=False, output="")
    tempered, elbo = result["runs"][0.1], result["runs"][1.0]
    assert tempered["sparsity"]["layer_0"] >= 0.9 and tempered["accuracy_gap"] <= 0.01, result
    assert elbo["sparsity"]["layer_0"] >= 0.9
