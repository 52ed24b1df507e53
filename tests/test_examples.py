"""The demo's bars, and every example run as a script in a short configuration."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lrtdense import demo
from helpers import load_example





def test_demo_default_seed_meets_the_bars(tmp_path):
    """Default settings: 95% coverage on 1000 fresh points within [0.85, 0.99], and the epistemic
    std at |x| = 6 at least twice its average over |x| <= 3."""
    out = tmp_path / "demo.png"
    result = demo.run(output=str(out), verbose=False)
    cov = result["metrics"]["coverage95"]
    assert 0.85 <= cov <= 0.99, cov
    g, e = result["grid"], result["epistemic_std"]
    assert e[np.abs(g) >= 6].mean() >= 2 * e[np.abs(g) <= 3].mean()
    assert result["metrics"]["rmse"] < 6.0
    pytest.importorskip("matplotlib")
    assert out.stat().st_size > 10000


def test_cli_demo_runs_short(tmp_path):
    png = tmp_path / "d.png"
    proc = subprocess.run([sys.executable, "-m", "lrtdense", "demo", "--epochs", "30",
                           "--samples", "20", "--output", str(png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "95% coverage" in proc.stdout and "epoch    30/30" in proc.stdout


def test_toy_regression_example_short(tmp_path):
    result = load_example("toy_regression").main(epochs=20, num_samples=10, output="", verbose=False)
    assert np.isfinite(result["metrics"]["rmse"])


def test_digits_example_reaches_95_percent():
    pytest.importorskip("sklearn")
    result = load_example("digits_classification").main(verbose=False, output="")
    assert result["accuracy"] >= 0.95, result
    assert 0 <= result["ece"] < 0.2
