"""What KL warm-up changes in training: the per-epoch NLL and KL of ``fit``'s history, with and
without it, on scikit-learn's diabetes regression.

Run: python examples/training_history.py [--epochs N] [--seed N] [--warmup F] [--figure PATH]
(needs scikit-learn, which ships the data offline; the figure needs matplotlib:
pip install 'lrtdense[examples]')

The model is the recipe of ``lrtdense bench uci`` (docs/uci_benchmark.md): one hidden layer of 50
relu units of DenseLocalReparameterization (float64), a Gaussian likelihood whose noise scale is
learned, Adam (0.01), batch size 32, inputs and target standardised with the training part's
statistics. It is trained twice from the same seed, so with the same initial weights, minibatches
and noise: once on the ELBO from the first step (KL weight 1), once with the KL weight rising
linearly from 1/w to 1 over the first w = round(warmup * epochs) epochs (the recipe's warm-up,
0.2, chosen on validation). ``fit``'s history keeps, per epoch, the mean NLL per example, the
KL (unweighted) and the weight it had, and its loss is ``nll + kl_weight * kl / N``; the figure
draws the three. The script prints each run's final NLL and KL, its learned noise scale and its
test RMSE and log-likelihood (of the Monte Carlo mixture, in the target's units).
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    hidden=50,
    epochs=300,
    batch_size=32,
    learning_rate=1e-2,
    warmup=0.2,           # fraction of the epochs over which the KL weight rises to 1
    initial_noise=0.5,    # the learned noise scale's start, in standardised units
    num_samples=100,      # Monte Carlo samples of the test predictive
    test_fraction=0.2,
)
# -------------------------------------------------------------------------------------------

import argparse
import sys

import numpy as np

import lrtdense as L
from lrtdense.argtypes import integer, number, output_file

RUNS = {"elbo": "ELBO from the first step", "warmup": "KL warm-up"}
FIGURE_TYPES = {".png", ".pdf", ".svg"}


def load_diabetes_split(seed, test_fraction):
    """scikit-learn's diabetes (442 patients, 10 inputs, disease progression after a year),
    split with a seeded permutation: x_tr (n, 10), y_tr (n, 1), x_te (m, 10), y_te (m, 1).
    Raises ImportError (one line) when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_diabetes
    except ImportError:
        raise ImportError("this needs scikit-learn, which ships the diabetes data offline: "
                          "pip install 'lrtdense[examples]'") from None
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train, None], x[test], y[test, None]


def run(verbose=False, **overrides):
    """Trains both runs. Returns {"runs": {run: {"history": fit's history, "test_rmse",
    "test_ll", "noise_scale" (the target's units)}} for run in ``RUNS``, "num_examples" (N, the
    training rows), "settings"}. Raises ImportError without scikit-learn."""
    s = {**SETTINGS, **overrides}
    x_tr, y_tr, x_te, y_te = load_diabetes_split(s["seed"], s["test_fraction"])
    x_mean, x_std, y_mean, y_std = x_tr.mean(0), x_tr.std(0), y_tr.mean(), y_tr.std()
    weights = {"elbo": 1.0, "warmup": L.kl_warmup(s["warmup"], s["epochs"])}
    runs = {}
    for name, kl_weight in weights.items():
        rng = np.random.default_rng(s["seed"])
        model = L.Model(L.Sequential([L.DenseLocalReparameterization(s["hidden"], "relu",
                                                                     dtype="float64"),
                                      L.DenseLocalReparameterization(1, dtype="float64")]),
                        L.GaussianLikelihood(s["initial_noise"], learn_scale=True))
        params = model.init(rng, x_tr.shape[1])
        params, history = L.fit(model, params, (x_tr - x_mean) / x_std, (y_tr - y_mean) / y_std,
                                rng=rng, epochs=s["epochs"], batch_size=s["batch_size"],
                                optimizer=L.adam(s["learning_rate"]), kl_weight=kl_weight,
                                verbose=verbose)
        pred = L.predict(model, params, (x_te - x_mean) / x_std, rng=rng,
                         num_samples=s["num_samples"])
        samples, noise = pred["samples"] * y_std + y_mean, pred["noise_scale"] * y_std
        runs[name] = {"history": history, "noise_scale": noise,
                      "test_rmse": L.metrics.rmse(y_te, pred["mean"] * y_std + y_mean),
                      "test_ll": -L.metrics.mixture_nll(y_te, samples, noise)}
    return {"runs": runs, "num_examples": len(x_tr), "settings": s}


def report(result):
    """The lines ``main`` prints: per run, the last epoch's NLL and KL and the test scores."""
    s = result["settings"]
    lines = [f"diabetes, {result['num_examples']} training rows, {s['epochs']} epochs, seed "
             f"{s['seed']}; warm-up over the first {round(s['warmup'] * s['epochs'])} epochs"]
    for name, label in RUNS.items():
        r = result["runs"][name]
        h = r["history"]
        lines.append(f"  {label:25s} last epoch: nll {h['nll'][-1]:.3f}  kl {h['kl'][-1]:8.1f}   "
                     f"noise scale {r['noise_scale']:5.1f}   test RMSE {r['test_rmse']:5.1f}  "
                     f"test LL {r['test_ll']:.3f}   ({h['time'][-1]:.1f}s)")
    return lines


def history_figure(result, path):
    """The NLL, the KL and the KL weight per epoch of both runs, side by side; returns the path,
    or None (saying so in one line) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure written (pip install 'lrtdense[examples]')")
        return None
    s, n = result["settings"], result["num_examples"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (("nll", "mean NLL per example (standardised target)", "linear"),
              ("kl", "KL(posterior || prior), unweighted", "log"),
              ("kl_weight", "KL weight (the loss is nll + weight * KL / N)", "linear"))
    for ax, (key, title, scale) in zip(axes, panels):
        for name, label in RUNS.items():
            values = result["runs"][name]["history"][key]
            ax.plot(np.arange(1, len(values) + 1), values, lw=1.3, label=label)
        ax.set_yscale(scale)
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("fit's history with and without KL warm-up (diabetes regression)", fontsize=11)
    fig.text(0.01, 0.01,
             f"How it was made: python examples/training_history.py --epochs {s['epochs']} "
             f"--seed {s['seed']} --warmup {s['warmup']}. 10-{s['hidden']}-1 "
             f"DenseLocalReparameterization, learned noise scale, Adam ({s['learning_rate']}, "
             f"batch {s['batch_size']}), N = {n}; both runs share the seed.",
             fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def parse_args(argv=None):
    """The command line: {"epochs", "seed", "warmup", "figure"} ('' for no figure; the path is
    checked before any training)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=integer(1), default=SETTINGS["epochs"], metavar="N",
                        help="passes over the training rows (default: %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=SETTINGS["seed"], metavar="N",
                        help="draws the split, the weights and the noise (default: %(default)s)")
    parser.add_argument("--warmup", type=number(0, 1, low_open=False), default=SETTINGS["warmup"],
                        metavar="F", help="fraction of the epochs of the warm-up (default: "
                                          "%(default)s)")
    parser.add_argument("--figure", type=output_file(FIGURE_TYPES), default="", metavar="PATH",
                        help="write the history figure there (.png, .pdf or .svg; default: no "
                             "figure)")
    return vars(parser.parse_args(argv))


def main(argv=None):
    """Runs the command line ``argv`` (default: sys.argv[1:]); returns ``run``'s dict."""
    args = parse_args(argv)
    figure = args.pop("figure")
    try:
        result = run(**args)
    except ImportError as err:
        sys.exit(f"training_history.py: {err}")
    print("\n".join(report(result)))
    if figure:
        history_figure(result, figure)
    return result


if __name__ == "__main__":
    main()
