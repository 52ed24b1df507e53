"""Out-of-distribution detection on scikit-learn's digits: train on 0-4, flag 5-9 as unseen.

Run: python examples/digits_ood.py [--epochs N] [--seed N] [--figure PATH]
(needs scikit-learn, which ships the digits offline; the figure needs matplotlib:
pip install 'lrtdense[examples]')

A 64-50-5 network of DenseLocalReparameterization layers (float64) is trained with ``fit`` on the
training digits 0 to 4 only. The test digits 0 to 4 are then in distribution and the test digits
5 to 9 out of distribution (OOD): the network has never seen them, so a useful uncertainty is
higher on them. Two scores of the Monte Carlo predictive (``num_samples`` forward passes) are
compared, both from ``lrtdense.metrics``: the predictive entropy (total uncertainty) and the
mutual information between the prediction and the weights (epistemic: how much the sampled
networks disagree). For each the script prints the AUROC (the probability that a random unseen
digit scores higher than a random seen one; 0.5 is chance) and the AUPR with the unseen digits
as positives (chance: their share of the test set). With ``--figure PATH`` it draws the
histograms of both scores over the seen and the unseen test digits. ``seed`` draws the
train/test split, the initial weights, the minibatches and the noise: the same seed gives the
same numbers.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    known=5,              # digits 0 .. known-1 are trained on; the others are unseen
    hidden=50,
    epochs=100,
    batch_size=64,
    learning_rate=5e-3,
    num_samples=100,      # Monte Carlo samples of the predictive
    test_fraction=0.25,
)
# -------------------------------------------------------------------------------------------

import argparse
import sys

import numpy as np

import lrtdense as L
from lrtdense.argtypes import integer, output_file
from lrtdense.datasets import load_digits_split

SCORES = {"predictive_entropy": "predictive entropy (total)",
          "mutual_information": "mutual information (epistemic)"}
FIGURE_TYPES = {".png", ".pdf", ".svg"}


def run(verbose=False, **overrides):
    """Trains on the digits below ``known`` and scores every test digit.

    Returns:
      {"auroc": {score: float}, "aupr": {score: float} (unseen digits positive), "scores":
      {score: {"in": (n_in,), "out": (n_out,)}} for score in ``SCORES``, "accuracy_in" (on the
      seen test digits), "n_in", "n_out", "seconds" (training), "settings"}.
    Raises:
      ImportError: scikit-learn is not installed (it ships the digits).
    """
    s = {**SETTINGS, **overrides}
    rng = np.random.default_rng(s["seed"])
    x_tr, y_tr, x_te, y_te = load_digits_split(s["seed"], s["test_fraction"])
    seen = y_tr < s["known"]
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(s["hidden"], "relu",
                                                                 dtype="float64"),
                                  L.DenseLocalReparameterization(s["known"], dtype="float64")]),
                    L.CategoricalLikelihood())
    params = model.init(rng, x_tr.shape[1])
    params, history = L.fit(model, params, x_tr[seen], y_tr[seen], rng=rng, epochs=s["epochs"],
                            batch_size=s["batch_size"], optimizer=L.adam(s["learning_rate"]),
                            verbose=verbose)
    inside, outside = y_te < s["known"], y_te >= s["known"]
    samples = L.predict(model, params, x_te, rng=rng, num_samples=s["num_samples"])["samples"]
    values = {"predictive_entropy": L.metrics.predictive_entropy(samples),
              "mutual_information": L.metrics.mutual_information(samples)}
    scores = {name: {"in": v[inside], "out": v[outside]} for name, v in values.items()}
    return {"auroc": {name: L.metrics.ood_auroc(v["in"], v["out"]) for name, v in scores.items()},
            "aupr": {name: L.metrics.ood_aupr(v["in"], v["out"]) for name, v in scores.items()},
            "scores": scores,
            "accuracy_in": L.metrics.accuracy(y_te[inside], samples[:, inside].mean(axis=0)),
            "n_in": int(inside.sum()), "n_out": int(outside.sum()),
            "seconds": history["time"][-1] if history["time"] else 0.0, "settings": s}


def report(result):
    """The lines ``main`` prints: accuracy, then AUROC and AUPR per score."""
    s = result["settings"]
    chance = result["n_out"] / (result["n_in"] + result["n_out"])
    lines = [f"trained on digits 0-{s['known'] - 1} for {s['epochs']} epochs "
             f"({result['seconds']:.1f}s, seed {s['seed']}); accuracy on the "
             f"{result['n_in']} seen test digits {result['accuracy_in']:.3f}",
             f"{result['n_out']} unseen test digits ({s['known']}-9) against the "
             f"{result['n_in']} seen ones; chance: AUROC 0.5, AUPR {chance:.3f}"]
    for name, label in SCORES.items():
        lines.append(f"  {label:32s} AUROC {result['auroc'][name]:.4f}   "
                     f"AUPR {result['aupr'][name]:.4f}")
    return lines


def histogram_figure(result, path):
    """Histograms of each score over the seen and the unseen test digits, side by side; returns
    the path, or None (saying so in one line) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure written (pip install 'lrtdense[examples]')")
        return None
    s, known = result["settings"], result["settings"]["known"]
    fig, axes = plt.subplots(1, len(SCORES), figsize=(10, 4))
    for ax, (name, label) in zip(axes, SCORES.items()):
        v = result["scores"][name]
        bins = np.linspace(0, max(v["in"].max(), v["out"].max()), 31)
        ax.hist(v["in"], bins, alpha=0.6, density=True,
                label=f"digits 0-{known - 1}, trained on ({len(v['in'])})")
        ax.hist(v["out"], bins, alpha=0.6, density=True,
                label=f"digits {known}-9, never seen ({len(v['out'])})")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.set_title(f"AUROC {result['auroc'][name]:.3f}, AUPR {result['aupr'][name]:.3f}",
                     fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Is the network more uncertain on digits it has never seen? (test digits)",
                 fontsize=11)
    fig.text(0.01, 0.01,
             f"How it was made: python examples/digits_ood.py --epochs {s['epochs']} --seed "
             f"{s['seed']}.\n64-{s['hidden']}-{known} DenseLocalReparameterization MLP trained "
             f"with fit on the digits 0-{known - 1}; scores of the Monte Carlo predictive "
             f"({s['num_samples']} samples).", fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def parse_args(argv=None):
    """The command line: {"epochs", "seed", "figure"} ('' for no figure; the path is checked
    before any training)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=integer(1), default=SETTINGS["epochs"], metavar="N",
                        help="passes over the training digits (default: %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=SETTINGS["seed"], metavar="N",
                        help="draws the split, the weights and the noise (default: %(default)s)")
    parser.add_argument("--figure", type=output_file(FIGURE_TYPES), default="", metavar="PATH",
                        help="write the score histograms there (.png, .pdf or .svg; default: "
                             "no figure)")
    return vars(parser.parse_args(argv))


def main(argv=None):
    """Runs the command line ``argv`` (default: sys.argv[1:]); returns ``run``'s dict."""
    args = parse_args(argv)
    try:
        result = run(epochs=args["epochs"], seed=args["seed"])
    except ImportError as err:
        sys.exit(f"digits_ood.py: {err}")
    print("\n".join(report(result)))
    if args["figure"]:
        histogram_figure(result, args["figure"])
    return result


if __name__ == "__main__":
    main()
