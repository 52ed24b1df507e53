"""The demo's bars and the numbers the README quotes about it, every example run as a script in a
short configuration (the digits example in its default one, whose numbers the README quotes), and
where they write by default: places git ignores."""
import argparse
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from lrtdense import demo
from lrtdense.studies import cli as study_cli
from helpers import load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS_SKLEARN = "the digits data ship with scikit-learn: pip install 'lrtdense[examples]'"
NEEDS_MPL = "plots need matplotlib: pip install 'lrtdense[examples]'"


def test_demo_default_seed_meets_the_bars(tmp_path):
    """Default settings: 95% coverage on 1000 fresh points within [0.85, 0.99], and the epistemic
    std at |x| = 6 at least twice its average over |x| <= 3. The README quotes this run (seed 0):
    RMSE 3.92, NLL 2.79, coverage 0.917, epistemic std 0.57 over |x| <= 3 and 23.0 at |x| = 6."""
    out = tmp_path / "demo.png"
    result = demo.run(output=str(out), verbose=False)
    metrics = result["metrics"]
    cov = metrics["coverage95"]
    assert 0.85 <= cov <= 0.99, cov
    g, e = result["grid"], result["epistemic_std"]
    inner, edge = e[np.abs(g) <= 3].mean(), e[np.abs(g) >= 6].mean()
    assert edge >= 2 * inner
    assert metrics["rmse"] < 6.0
    # the README's numbers (tolerances for BLAS rounding over 8000 steps)
    assert abs(metrics["rmse"] - 3.92) < 0.05 and abs(metrics["nll"] - 2.79) < 0.02, metrics
    assert abs(cov - 0.917) < 0.006, cov
    assert abs(inner - 0.57) < 0.03 and abs(edge - 23.0) < 1.0, (inner, edge)
    pytest.importorskip("matplotlib", reason=NEEDS_MPL)
    assert out.stat().st_size > 10000


def test_cli_demo_runs_short(tmp_path):
    png = tmp_path / "d.png"
    proc = subprocess.run([sys.executable, "-m", "lrtdense", "demo", "--epochs", "30",
                           "--samples", "20", "--output", str(png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "95% coverage" in proc.stdout and "epoch    30/30" in proc.stdout


def test_toy_regression_example_short(tmp_path, monkeypatch):
    """20 epochs, written where SETTINGS says relative to the current folder (created)."""
    monkeypatch.chdir(tmp_path)
    module = load_example("toy_regression")
    result = module.main(epochs=20, num_samples=10, verbose=False)
    assert np.isfinite(result["metrics"]["rmse"])
    if _installed("matplotlib"):
        assert (tmp_path / module.SETTINGS["output"]).stat().st_size > 10000


def test_digits_example_reaches_95_percent(tmp_path):
    """The default run (100 epochs, seed 0). The README quotes it: test accuracy 0.976 (Monte
    Carlo predictive) and 0.982 (mean network), calibration error 0.072 and 0.0068. The
    reliability bins hold every test digit and reproduce the ECE."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    png = tmp_path / "reliability.png"
    result = load_example("digits_classification").main(verbose=False, output=str(png))
    assert result["accuracy"] >= 0.95, result
    assert 0 <= result["ece"] < 0.2
    assert abs(result["accuracy"] - 0.976) < 0.007 and abs(result["mean_mode_accuracy"] - 0.982) < 0.007
    assert abs(result["ece"] - 0.072) < 0.01 and result["mean_mode_ece"] < 0.012, result
    for key, ece in (("mc", result["ece"]), ("mean", result["mean_mode_ece"])):
        b = result["bins"][key]
        assert b["count"].sum() == 449 and len(b["count"]) == 15
        full = b["count"] > 0
        again = np.sum(b["count"][full] * np.abs(b["accuracy"][full] - b["confidence"][full])) / 449
        assert again == pytest.approx(ece, abs=1e-12)
    if _installed("matplotlib"):
        assert png.stat().st_size > 20000


def _installed(name):
    return importlib.util.find_spec(name) is not None


def _git_ignores(path):
    proc = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", path], capture_output=True)
    if proc.returncode == 128:
        pytest.skip("needs a git checkout to ask git what it ignores")
    return proc.returncode == 0


def test_default_outputs_are_files_git_ignores():
    """What the demo, the examples and the study write by default (relative to the folder they
    are run from) is ignored by git, run from the checkout or from a subfolder of it; nothing
    lands on a tracked file."""
    defaults = [demo.DEFAULTS["output"],
                load_example("digits_classification").SETTINGS["output"],
                load_example("toy_regression").SETTINGS["output"],
                load_example("sparse_vd_digits").SETTINGS["output"],
                os.path.join(load_example("gradient_variance").SETTINGS["out"], "variance.png"),
                os.path.join(load_example("gradient_variance").SETTINGS["out"], "variance_table.md")]
    parser = argparse.ArgumentParser()
    study_cli.add_arguments(parser)
    study_out = parser.parse_args(["variance"]).out
    defaults += [os.path.join(study_out, "variance_table.md"), os.path.join(study_out, "variance.png")]
    for path in defaults:
        assert path and not os.path.isabs(path), path
        for where in (path, os.path.join("examples", path)):
            assert _git_ignores(where), where
    assert not _git_ignores("docs/tutorial_cost.png") and not _git_ignores("README.md")
