"""``lrtdense bench uci`` on the shared copy of the published UCI splits (``../shared/uci``
beside the checkout; skipped when it is absent), with a few epochs: the protocol's numbers
recomputed from the split, resuming, and the output checks."""
import json
import os

import numpy as np
import pytest

import lrtdense as L
from lrtdense import bench, cli

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
    assert len(rows) == 2 and results["settings"]["epochs"] == 5
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
    # other settings are not mixed in
    assert cli.main(argv[:-3] + ["6", "--samples", "20"]) == 2
    assert "was made with the settings" in capsys.readouterr().err


@needs_uci
def test_the_split_is_scored_in_original_units_with_the_mixture_ll():
    x_train, y_train, x_test, y_test = bench.load_split(os.path.join(UCI, "yacht"), 0)
    assert x_train.shape == (277, 6) and y_test.shape == (31, 1)
    row = bench.run_split(x_train, y_train, x_test, y_test, rng=np.random.default_rng(0),
                          hidden=8, epochs=2, batch_size=64, learning_rate=1e-2, num_samples=10,
                          initial_noise=0.5)
    # the same draws again, scored by hand: standardise with the training split's statistics,
    # map the samples and the noise back, and average the mixture's density in a loop
    rng = np.random.default_rng(0)
    xm, xs = x_train.mean(0), x_train.std(0)
    ym, ys = y_train.mean(), y_train.std()
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(8, "relu", dtype="float64"),
                                  L.DenseLocalReparameterization(1, dtype="float64")]),
                    L.GaussianLikelihood(0.5, learn_scale=True))
    params = model.init(rng, 6)
    params, _ = L.fit(model, params, (x_train - xm) / xs, (y_train - ym) / ys, rng=rng, epochs=2,
                      batch_size=64, optimizer=L.adam(1e-2), verbose=False)
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
