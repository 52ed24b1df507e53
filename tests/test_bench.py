"""``lrtdense bench uci`` on the shared copy of the published UCI splits (``../shared/uci``
beside the checkout; skipped when it is absent), with a few epochs: the protocol's numbers
recomputed from the split, resuming, and the output checks."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lrtdense as L
from lrtdense import bench, cli, interrupts, tree

UCI = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "shared",
                   "uci")
needs_uci = pytest.mark.skipif(not os.path.isfile(os.path.join(UCI, "yacht", "data.txt")),
                               reason="the UCI splits are not at ../shared/uci beside the checkout")


@needs_uci
def test_bench_uci_yacht_two_splits_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["bench", "uci", "--data", UCI, "--datasets", "yacht", "--splits", "2", "--out",
            str(out), "--epochs", "5", "--samples", "20"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "yacht split 2/2" in printed and "| yacht | 2 |" in printed
    results = json.loads((out / "results.json").read_text())["yacht"]
    rows = results["splits"]
    assert len(rows) == 2 and results["settings"]["recipe"]["epochs"] == 5
    # each split chose its grid point on validation, and says so
    for row in rows:
        assert row["chosen"]["kl_scale"] in bench.GRID["kl_scale"]
        assert 1 <= row["chosen"]["epochs"] <= 5
        best = max(row["validation"], key=lambda r: r["validation_ll"])
        assert row["chosen"] == {k: v for k, v in best.items() if not k.startswith("valid")}
    assert "| lrtdense | VI | PBP | MC dropout | deep ensembles |" in printed
    assert "1.02 ± 0.05" in printed      # the published PBP RMSE on yacht
    mean, se = results["summary"]["rmse"]["mean"], results["summary"]["rmse"]["se"]
    assert mean == pytest.approx(np.mean([r["rmse"] for r in rows]), rel=1e-12)
    assert se == pytest.approx(abs(rows[0]["rmse"] - rows[1]["rmse"]) / 2, rel=1e-12)
    assert "± " in (out / "results.md").read_text()
    # a rerun keeps the finished splits (and trains nothing)
    before = (out / "yacht" / "split_1.json").read_text()
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("(kept)") == 2
    assert (out / "yacht" / "split_1.json").read_text() == before
    assert not [p for p in (out / "yacht").iterdir() if p.suffix == ".tmp"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    # other settings are not mixed in
    assert cli.main(argv[:-3] + ["6", "--samples", "20"]) == 2
    assert "was made with the settings" in capsys.readouterr().err


@needs_uci
@pytest.mark.parametrize("average", [0.0, 0.7])
def test_the_split_is_scored_in_original_units_with_the_mixture_ll(average):
    x_train, y_train, x_test, y_test = bench.load_split(os.path.join(UCI, "yacht"), 0)
    assert x_train.shape == (277, 6) and y_test.shape == (31, 1)
    row = bench.run_split(x_train, y_train, x_test, y_test, rng=np.random.default_rng(0),
                          hidden=8, epochs=3, batch_size=64, learning_rate=1e-2, num_samples=10,
                          initial_noise=0.5, average=average)
    # the same draws again, scored by hand: standardise with the training split's statistics,
    # map the samples and the noise back, and average the mixture's density in a loop
    rng = np.random.default_rng(0)
    xm, xs = x_train.mean(0), x_train.std(0)
    ym, ys = y_train.mean(), y_train.std()
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(8, "relu", dtype="float64"),
                                  L.DenseLocalReparameterization(1, dtype="float64")]),
                    L.GaussianLikelihood(0.5, learn_scale=True))
    params = model.init(rng, 6)
    ends = []       # the params at the end of each epoch, averaged by hand
    L.fit(model, params, (x_train - xm) / xs, (y_train - ym) / ys, rng=rng, epochs=3,
          batch_size=64, optimizer=L.adam(1e-2), verbose=False,
          callback=lambda epoch, p, history: ends.append(p))
    params = ends[0]
    for p in ends[1:]:
        params = tree.map(lambda avg, q: average * avg + (1 - average) * q, params, p)
    last = [np.array_equal(a, b) for a, b in zip(tree.leaves(params), tree.leaves(ends[-1]))]
    assert all(last) if average == 0 else not any(last)
    pred = L.predict(model, params, (x_test - xm) / xs, rng=rng, num_samples=10)
    mu, sigma = pred["samples"][:, :, 0] * ys + ym, pred["noise_scale"] * ys
    ll = np.mean([np.log(np.mean(np.exp(-0.5 * ((y_test[n, 0] - mu[:, n]) / sigma) ** 2)
                                 / (sigma * np.sqrt(2 * np.pi)))) for n in range(len(y_test))])
    assert row["test_ll"] == pytest.approx(ll, rel=1e-10)
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean((mu.mean(0) - y_test[:, 0]) ** 2)),
                                        rel=1e-10)
    assert row["noise_scale"] == pytest.approx(sigma, rel=1e-12)


def test_bad_data_and_output_are_refused_before_training(tmp_path, capsys):
    assert cli.main(["bench", "uci", "--data", str(tmp_path / "none"), "--out",
                     str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "uci", "--data", str(tmp_path), "--out", str(tmp_path / "file")])
    assert info.value.code == 2 and "is not a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no data set 'yacht'"):
        bench.uci(str(tmp_path), ["yacht"], 1, None)
    # bad settings and grids are refused before any data is read or any training starts
    for grid, match in [({"kl_scale": [1.0, -1.0]}, "kl_scale"), ({"epochs": []}, "non-empty"),
                        ({"dropout": [0.1]}, "recipe settings")]:
        with pytest.raises(ValueError, match=match):
            bench.uci(str(tmp_path / "none"), grid=grid)
    with pytest.raises(ValueError, match="kl_warmup"):
        bench.uci(str(tmp_path / "none"), recipe={"kl_warmup": 2.0})
    with pytest.raises(ValueError, match="average"):
        bench.uci(str(tmp_path / "none"), recipe={"average": 1.0})
    assert cli.main(["bench", "uci", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--grid", '{"learn_noise": [1]}']) == 2
    assert capsys.readouterr().err.count("\n") == 1


@needs_uci
def test_the_choice_never_reads_the_test_split():
    """Selection sees the training split only: other test targets change the test scores and
    nothing of the choice."""
    x_train, y_train, x_test, y_test = bench.load_split(os.path.join(UCI, "yacht"), 1)
    grid = {"prior_scale": [1.0, 0.3], "kl_warmup": [0.0, 0.5]}
    rows = [bench.recipe.run_split_tuned(x_train, y_train, x_test, y, rng=np.random.default_rng(3),
                                         grid=grid, hidden=8, epochs=4, num_samples=5)
            for y in (y_test, 10 * y_test + 7)]
    assert rows[0]["chosen"] == rows[1]["chosen"]
    assert rows[0]["validation"] == rows[1]["validation"]
    assert len(rows[0]["validation"]) == 4 and rows[0]["rmse"] != rows[1]["rmse"]


@needs_uci
def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    def run(workers):
        results = bench.uci(UCI, ["yacht"], 3, str(tmp_path / f"w{workers}"), workers=workers,
                            recipe=dict(hidden=8, epochs=3, num_samples=5), verbose=False)
        return [{k: v for k, v in row.items() if not k.endswith("seconds")}
                for row in results["yacht"]["splits"]]
    assert run(1) == run(2)


def _state_and_parent(pid):
    """(state letter, parent pid) of a process from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return state, int(ppid)


def _alive(pid):
    stat = _state_and_parent(pid)
    return stat is not None and stat[0] != "Z"          # a zombie has ended


def _live_children(pid):
    stats = {int(e): _state_and_parent(e) for e in os.listdir("/proc") if e.isdigit()}
    return [child for child, stat in stats.items()
            if stat is not None and stat[1] == pid and stat[0] != "Z"]


@needs_uci
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the processes from /proc")
def test_sigterm_ends_the_worker_processes_with_the_command(tmp_path):
    # A scheduler's or a user's `kill` reaches the command's own process; its workers must not go
    # on training (and writing split files) orphaned once it has stopped.
    log = tmp_path / "log"
    argv = [sys.executable, "-m", "lrtdense", "bench", "uci", "--data", UCI, "--datasets",
            "yacht", "--splits", "4", "--epochs", "2000", "--samples", "5", "--workers", "2",
            "--out", str(tmp_path / "out")]
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            workers = _live_children(proc.pid)
        assert len(workers) == 2, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
        deadline = time.monotonic() + 60
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers))
        assert log.read_text().strip().endswith(
            "lrtdense bench uci: stopped on SIGTERM; the worker processes were ended, and the "
            "splits finished so far are kept in their files")
    finally:
        proc.kill()
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(signal.getsignal(signal.SIGTERM) != signal.SIG_DFL,
                    reason="a SIGTERM handler is installed around the tests")
def test_sigterm_raises_within_the_block_only():
    class Stop(Exception):
        pass
    with pytest.raises(Stop):
        with interrupts.sigterm_raises(Stop):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)               # the handler runs at the next bytecode; never reached
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_download_without_a_network_is_one_line_and_leaves_nothing(tmp_path, capsys,
                                                                    monkeypatch):
    closed = "http://127.0.0.1:9/{name}/{file}"          # a port nothing listens on
    with pytest.raises(ValueError, match=r"^could not download http://127\.0\.0\.1:9/yacht/"):
        bench.download(str(tmp_path), ["yacht"], source=closed)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(bench.data, "SOURCE", closed)
    assert cli.main(["bench", "uci", "--data", str(tmp_path / "d"), "--download", "--datasets",
                     "yacht", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not download" in err
    with pytest.raises(ValueError, match="cannot download"):
        bench.download(str(tmp_path), ["mnist"])


def test_the_published_columns_agree_with_a_second_printing():
    """PBP's numbers come from Gal & Ghahramani 2016, Table 1; Lakshminarayanan et al. 2017,
    Table 1, reprints them too (test NLL, so with the other sign): the two printings agree."""
    ensembles_paper_pbp = {     # (RMSE, +-), (NLL, +-) as printed in arXiv 1612.01474, Table 1
        "boston": ((3.01, 0.18), (2.57, 0.09)), "concrete": ((5.67, 0.09), (3.16, 0.02)),
        "energy": ((1.80, 0.05), (2.04, 0.02)), "kin8nm": ((0.10, 0.00), (-0.90, 0.01)),
        "naval": ((0.01, 0.00), (-3.73, 0.01)), "power": ((4.12, 0.03), (2.84, 0.01)),
        "protein": ((4.73, 0.01), (2.97, 0.00)), "wine": ((0.64, 0.01), (0.97, 0.01)),
        "yacht": ((1.02, 0.05), (1.63, 0.02))}
    for name, ((rmse, rmse_pm), (nll, nll_pm)) in ensembles_paper_pbp.items():
        pbp = bench.published.PUBLISHED[name]["PBP"]
        assert pbp["rmse"] == (rmse, rmse_pm) and pbp["test_ll"] == (-nll, nll_pm), name
    assert {bench.published.published_name(f) for f in bench.data.DOWNLOADABLE} == set(
        bench.published.PUBLISHED)


def test_the_figure_needs_matplotlib_and_says_so(tmp_path, monkeypatch, capsys):
    import builtins
    results = {"yacht": {"splits": [{}, {}], "settings": {}, "summary": {
        m: {"mean": 1.0, "se": 0.1} for m in ("rmse", "test_ll", "test_ll_gaussian")}}}
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert bench.report.figure(results, str(tmp_path / "f.png")) is False
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()
    monkeypatch.setattr(builtins, "__import__", real_import)
    pytest.importorskip("matplotlib")
    assert bench.report.figure(results, str(tmp_path / "f.png")) is True
    assert (tmp_path / "f.png").stat().st_size > 0


def test_max_steps_caps_the_epochs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 2)), rng.normal(size=(100, 1))
    row = bench.run_split(x, y, x[:10], y[:10], rng=rng, hidden=4, epochs=50, max_steps=10,
                          num_samples=3)
    assert row["epochs"] == 10 // -(-100 // 32) == 2
    assert bench.run_split(x, y, x[:10], y[:10], rng=rng, hidden=4, epochs=3, max_steps=None,
                           num_samples=3)["epochs"] == 3
