"""Classifying scikit-learn's bundled 8x8 digits (offline) with an LRT MLP.

Run: python examples/digits_classification.py   (needs scikit-learn: pip install 'lrtdense[examples]')
Prints test accuracy and expected calibration error of the Monte Carlo predictive, next to the
deterministic mean-mode network, and writes a reliability diagram when matplotlib is installed.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    hidden=128,
    epochs=100,
    batch_size=64,
    learning_rate=5e-3,
    num_samples=50,       # Monte Carlo samples of the predictive
    test_fraction=0.25,
    output="digits_reliability.png",
)
# -------------------------------------------------------------------------------------------

import sys

import numpy as np

from lrtdense.datasets import load_digits_split
import lrtdense as L
from lrtdense.losses import CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.predict import predict, predict_mean, accuracy, expected_calibration_error
from lrtdense.training import fit


def main(verbose=True, **overrides):
    s = {**SETTINGS, **overrides}
    rng = np.random.default_rng(s["seed"])
    try:
        x_tr, y_tr, x_te, y_te = load_digits_split(s["seed"], s["test_fraction"])
    except ImportError as err:
        sys.exit(f"this example {err}")
    model = Model(Sequential([L.DenseLocalReparameterization(s["hidden"], "relu"),
                              L.DenseLocalReparameterization(10)]), CategoricalLikelihood())
    params = model.init(rng, x_tr.shape[1])
    params, history = fit(model, params, x_tr, y_tr, rng=rng, epochs=s["epochs"],
                          batch_size=s["batch_size"], optimizer=adam(s["learning_rate"]),
                          verbose=verbose)
    x_te32 = x_te.astype(np.float32)
    probs = predict(model, params, x_te32, rng=rng, num_samples=s["num_samples"])["probs"]
    mean_probs = predict_mean(model, params, x_te32)
    result = {"accuracy": accuracy(y_te, probs), "ece": expected_calibration_error(y_te, probs),
              "mean_mode_accuracy": accuracy(y_te, mean_probs),
              "mean_mode_ece": expected_calibration_error(y_te, mean_probs),
              "seconds": history["time"][-1] if history["time"] else 0.0}
    if verbose:
        print(f"test accuracy {result['accuracy']:.4f} (MC predictive, {s['num_samples']} samples), "
              f"{result['mean_mode_accuracy']:.4f} (mean mode)")
        print(f"expected calibration error {result['ece']:.4f} (MC), {result['mean_mode_ece']:.4f} "
              f"(mean mode); trained in {result['seconds']:.1f}s")
    if s["output"]:
        reliability_plot(y_te, probs, s["output"])
    return result


def reliability_plot(labels, probs, path, num_bins=10):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')")
        return
    conf, correct = probs.max(-1), probs.argmax(-1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, num_bins - 1)
    accs = [correct[idx == b].mean() if np.any(idx == b) else np.nan for b in range(num_bins)]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(edges[:-1], accs, width=1 / num_bins, align="edge", edgecolor="k", alpha=0.7)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("digits: reliability of the LRT MLP")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
