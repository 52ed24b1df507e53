"""Classifying scikit-learn's bundled 8x8 digits (offline) with a Bayesian MLP trained by LRT.

Run: python examples/digits_classification.py   (needs scikit-learn: pip install 'lrtdense[examples]')

A 64-128-10 network of DenseLocalReparameterization layers, trained on the negative ELBO. Prints
the test accuracy and the expected calibration error (ECE, 15 equal-width bins) of two ways to
predict with it: the Monte Carlo predictive (probabilities averaged over ``num_samples``
stochastic forward passes) and the mean network (every weight at its posterior mean, one
deterministic pass). Writes a reliability diagram of both to ``output`` when matplotlib is
installed: per confidence bin, the accuracy of the test digits in it against their mean
confidence, with the number of digits in each bin and the ECE.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    hidden=128,
    epochs=100,
    batch_size=64,
    learning_rate=5e-3,
    num_samples=50,       # Monte Carlo samples of the predictive
    num_bins=15,          # confidence bins of the ECE and of the diagram
    test_fraction=0.25,
    output="out/digits_reliability.png",   # '' for no plot
)
# -------------------------------------------------------------------------------------------

import os
import sys

import numpy as np

import lrtdense as L
from lrtdense.datasets import load_digits_split
from lrtdense.metrics import accuracy, expected_calibration_error
from lrtdense.predictive import predict, predict_mean


def main(verbose=True, **overrides):
    """Trains and evaluates; returns {"accuracy", "ece" (MC predictive), "mean_mode_accuracy",
    "mean_mode_ece", "seconds", "bins": {"mc": ..., "mean": ...} (``reliability_bins``)}."""
    s = {**SETTINGS, **overrides}
    rng = np.random.default_rng(s["seed"])
    try:
        x_tr, y_tr, x_te, y_te = load_digits_split(s["seed"], s["test_fraction"])
    except ImportError as err:
        sys.exit(f"this example {err}")
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(s["hidden"], "relu"),
                                  L.DenseLocalReparameterization(10)]), L.CategoricalLikelihood())
    params = model.init(rng, x_tr.shape[1])
    params, history = L.fit(model, params, x_tr, y_tr, rng=rng, epochs=s["epochs"],
                            batch_size=s["batch_size"], optimizer=L.adam(s["learning_rate"]),
                            verbose=verbose)
    x_te32 = x_te.astype(np.float32)
    probs = predict(model, params, x_te32, rng=rng, num_samples=s["num_samples"])["probs"]
    mean_probs = predict_mean(model, params, x_te32)
    bins = s["num_bins"]
    result = {**parity_metrics(y_te, probs, mean_probs, bins),
              "seconds": history["time"][-1] if history["time"] else 0.0,
              "bins": {"mc": reliability_bins(y_te, probs, bins),
                       "mean": reliability_bins(y_te, mean_probs, bins)}}
    if verbose:
        print(f"test accuracy {result['accuracy']:.4f} (MC predictive, {s['num_samples']} samples), "
              f"{result['mean_mode_accuracy']:.4f} (mean network)")
        print(f"expected calibration error {result['ece']:.4f} (MC predictive), "
              f"{result['mean_mode_ece']:.4f} (mean network); trained in {result['seconds']:.1f}s")
    if s["output"]:
        reliability_plot(result, s, len(y_te), s["output"])
    return result


PARITY_METRICS = ("accuracy", "ece", "mean_mode_accuracy", "mean_mode_ece")


def parity_metrics(labels, probs, mean_probs, num_bins):
    """``PARITY_METRICS`` of the Monte Carlo predictive's ``probs`` and the mean network's
    ``mean_probs``: accuracy and ECE (``num_bins`` bins) of each."""
    return {"accuracy": accuracy(labels, probs),
            "ece": expected_calibration_error(labels, probs, num_bins),
            "mean_mode_accuracy": accuracy(labels, mean_probs),
            "mean_mode_ece": expected_calibration_error(labels, mean_probs, num_bins)}


def parity_run(seed, epochs):
    """This example's metrics for one seed, no plot: the NumPy side of the framework parity
    examples (examples/torch_digits.py, examples/keras_digits.py)."""
    result = main(verbose=False, seed=seed, epochs=epochs, output="")
    return {k: result[k] for k in PARITY_METRICS}


def print_parity(title, runs):
    """Prints ``runs`` ({package: [metrics per seed]}) as mean ± std [min, max] per metric."""
    print(f"{title}: held-out metrics (mean ± std [min, max])")
    print(f"{'':8}" + "".join(f"{k:>32}" for k in PARITY_METRICS))
    for package, results in runs.items():
        cells = []
        for key in PARITY_METRICS:
            values = np.array([r[key] for r in results])
            spread = values.std(ddof=1) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.4f} ± {spread:.4f} "
                         f"[{values.min():.3f}, {values.max():.3f}]")
        print(f"{package:8}" + "".join(f"{c:>32}" for c in cells))


def reliability_bins(labels, probs, num_bins):
    """Per equal-width confidence bin (the ECE's bins): {"count", "accuracy", "confidence"},
    arrays of num_bins (accuracy and confidence NaN in empty bins)."""
    conf, correct = probs.max(-1), probs.argmax(-1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins)
    with np.errstate(invalid="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=num_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=num_bins) / count
    return {"count": count, "accuracy": acc, "confidence": mean_conf}


def reliability_plot(result, settings, num_test, path):
    """Two reliability diagrams side by side (MC predictive, mean network); returns the path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')")
        return None
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    nb = settings["num_bins"]
    edges = np.linspace(0, 1, nb + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharey=True)
    panels = (("mc", f"Monte Carlo predictive ({settings['num_samples']} samples)",
               result["accuracy"], result["ece"]),
              ("mean", "mean network (weights at their means)", result["mean_mode_accuracy"],
               result["mean_mode_ece"]))
    for ax, (key, name, acc, ece) in zip(axes, panels):
        b = result["bins"][key]
        full = b["count"] > 0
        ax.bar(edges[:-1][full], b["accuracy"][full], width=1 / nb, align="edge",
               edgecolor="k", color="tab:blue", alpha=0.75, label="accuracy in the bin")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.plot(b["confidence"][full], b["accuracy"][full], "o", color="tab:orange", ms=4,
                label="(mean confidence, accuracy)")
        for left, count, a in zip(edges[:-1][full], b["count"][full], b["accuracy"][full]):
            ax.text(left + 0.5 / nb, a + 0.015, str(count), ha="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.12)
        ax.set_xlabel("confidence (largest predicted probability)")
        ax.set_title(f"{name}\naccuracy {acc:.3f}, ECE {ece:.4f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=7.5)
    axes[0].set_ylabel("accuracy (the number over a bar: test digits in the bin)")
    fig.suptitle("Reliability on the digits test set: is a confidence of p right a fraction p "
                 "of the time?", fontsize=11)
    fig.text(0.01, 0.01,
             f"How it was made: python examples/digits_classification.py (seed {settings['seed']}). "
             f"64-{settings['hidden']}-10 DenseLocalReparameterization MLP, {settings['epochs']} "
             f"epochs of Adam ({settings['learning_rate']}, batch {settings['batch_size']}) on the "
             f"negative ELBO; {num_test} test digits in {nb} equal-width confidence bins (the "
             f"ECE's: sum over bins of count/N |accuracy - confidence|).",
             fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
