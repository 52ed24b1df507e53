"""The benchmark harness (benchmarks/bench_step.py) runs as a script in a tiny configuration and
reports finite, positive numbers. The peers (PyTorch, JAX) are disabled; the timings themselves
are not checked (that is the benchmark's job, on a quiet machine)."""
import json
import math
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "bench_step.py")
SIZES = (12, 8, 8, 10)
DTYPES = ("float32", "float64")
BATCHES = (4, 16)


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_step_tiny_configuration(tmp_path):
    out, raw = tmp_path / "results.md", tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, BENCH, "--quick", "--no-peers", "--repeats", "3",
         "--sizes", ",".join(map(str, SIZES)), "--dtypes", ",".join(DTYPES),
         "--batches", ",".join(map(str, BATCHES)), "--out", str(out), "--json", str(raw)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text == proc.stdout
    for heading in ("## Step time", "## Ratios of medians", "## Memory of lrtdense's training step",
                    "## Page faults per step", "## What each contender runs"):
        assert heading in text, heading
    assert "| dtype | batch | GEMM floor | lrtdense | CPU used by other processes |" in text
    assert "peers: disabled (--no-peers)" in text and "PyTorch eager |" not in text
    assert "BLAS" in text and "OPENBLAS_CORETYPE=" in text

    results = json.loads(raw.read_text())
    assert [(c["dtype"], c["batch"]) for c in results["configs"]] == [
        (d, b) for d in DTYPES for b in BATCHES]
    n_params = sum(2 * i * o + o for i, o in zip(SIZES[:-1], SIZES[1:]))
    for cfg in results["configs"]:
        row = f"| {cfg['dtype']} | {cfg['batch']} |"
        assert text.count(row) >= 4, row   # step time, ratios, spread, page faults
        assert sorted(cfg["time"]) == ["floor", "lrtdense"]
        for t in cfg["time"].values():
            assert t["n"] == 3 and _positive(t["median_ms"]) and t["min_ms"] <= t["median_ms"]
        assert _positive(cfg["ratios"]["lrtdense/floor"])
        assert cfg["bar"]["met"] is None            # not the reference network: no bars
        mem = cfg["memory"]["lrtdense"]
        item = 4 if cfg["dtype"] == "float32" else 8
        assert mem["needs"]["params"] == n_params * item
        assert mem["explicit_noise"] == cfg["batch"] * (12 * 8 + 8 * 8 + 8 * 10) * item
        for key in ("footprint_peak", "retained", "step_peak", "footprint_over_needs"):
            assert _positive(mem[key]), key
        assert mem["minflt_per_step"] >= 0 and all(f >= 0 for f in cfg["faults"].values())
        if mem["numpy_allocs_per_step"] is not None:
            assert _positive(mem["numpy_allocs_per_step"])
            assert _positive(mem["numpy_bytes_per_step"])
    assert _positive(results["rss_lrtdense_only"])
    assert results["rss_end"] >= results["rss_lrtdense_only"]


def test_ab_step_compares_the_working_tree_with_a_revision():
    """benchmarks/ab_step.py imports HEAD's lrtdense beside the working tree's and times both."""
    import re
    import shutil
    import pytest
    root = os.path.join(os.path.dirname(__file__), os.pardir)
    if shutil.which("git") is None or subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode != 0:
        pytest.skip("needs a git checkout")
    script = os.path.join(root, "benchmarks", "ab_step.py")
    proc = subprocess.run([sys.executable, script, "--base", "HEAD", "--configs", "float32:4",
                           "--rounds", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"float32 batch +4: base +([\d.]+) +new +([\d.]+) +new/base ([\d.]+)", line)
    assert match, proc.stdout
    assert all(float(v) > 0 for v in match.groups())
    bad = subprocess.run([sys.executable, script, "--configs", "float16:4"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "expected dtype:batch like float32:100" in bad.stderr
