"""Sparsifying an MLP on scikit-learn's bundled 8x8 digits with sparse variational dropout.

Run: python examples/sparse_vd_digits.py   (needs scikit-learn: pip install 'lrtdense[examples]')

Molchanov, Ashukha & Vetrov 2017 (arXiv 1701.05369): every weight gets its own dropout rate
alpha, learned through the ELBO with the log-uniform prior; weights whose log alpha exceeds 3 carry
no information and are pruned. The network 64 -> hidden (relu) -> 10 of
``DenseSparseVariationalDropout`` layers is trained on the negative ELBO with a linear KL warm-up
(the KL weight grows from 0 to its final value over ``warmup_epochs``), then evaluated with the
pruned weights removed (``mode="pruned"``). The baseline is the same network, same seed and
optimizer, trained without sparsification (KL weight 0: no prior pulls alpha up), evaluated in
mean mode.

One run per final KL weight in ``kl_weights``: 1 is the ELBO itself. Digits has only 1348
training images, 45x fewer than MNIST's 60000, so the KL / N term weighs 45x more per weight than
in the paper's experiments: the ELBO prunes over 99% of the first layer and gives up about three
points of test accuracy. A final weight of 0.1 (a tempered posterior, no longer the ELBO) keeps
about 4% of the first layer and stays within a point of the baseline; docs/variance_study.md
records the numbers for three seeds.

Prints the test accuracy and the pruned fraction per layer of every run next to the baseline,
and draws the first layer's surviving weights (of the first run) as 8x8 images when matplotlib
is installed.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    hidden=300,
    epochs=200,
    warmup_epochs=50,       # KL weight = final * min(1, epoch / warmup_epochs)
    kl_weights=(1.0, 0.1),  # final KL weights to compare: 1.0 is the ELBO; 0.1 tempers the prior
    batch_size=100,
    learning_rate=1e-3,
    test_fraction=0.25,
    threshold=3.0,          # prune weights with log alpha > threshold (the paper's 3)
    output="sparse_vd_digits.png",
)
# -------------------------------------------------------------------------------------------

import sys
import time

import numpy as np

from lrtdense.datasets import load_digits_split
from lrtdense.dropout import DenseSparseVariationalDropout, network_sparsity
from lrtdense.losses import CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.studies.variance import one_blas_thread
from lrtdense.training import fit


def build_model(hidden, threshold):
    return Model(Sequential([DenseSparseVariationalDropout(hidden, "relu", threshold=threshold),
                             DenseSparseVariationalDropout(10, threshold=threshold)]),
                 CategoricalLikelihood())


def train(s, x_tr, y_tr, kl_weight, verbose):
    """Trains one network from the seed's initial params. Returns (model, params, seconds)."""
    rng = np.random.default_rng(s["seed"])
    model = build_model(s["hidden"], s["threshold"])
    params = model.init(rng, x_tr.shape[1])
    every = max(1, s["epochs"] // 5)

    def progress(epoch, p, history):
        if verbose and ((epoch + 1) % every == 0 or epoch + 1 == s["epochs"]):
            sparsity = network_sparsity(model.network, p["network"])
            print(f"  epoch {epoch + 1:>4}/{s['epochs']}  -ELBO/N {history['loss'][-1]:.4f}  "
                  f"kl weight {history['kl_weight'][-1]:.2f}  pruned "
                  + ", ".join(f"{k} {v:.1%}" for k, v in sparsity.items()), flush=True)

    start = time.perf_counter()
    params, _ = fit(model, params, x_tr, y_tr, rng=rng, epochs=s["epochs"],
                    batch_size=s["batch_size"], optimizer=adam(s["learning_rate"]),
                    kl_weight=kl_weight, verbose=False, callback=progress)
    return model, params, time.perf_counter() - start


def accuracy(model, params, x, y, mode):
    return float(np.mean(np.argmax(model.forward(params, x, mode=mode)[0], -1) == y))


def main(verbose=True, **overrides):
    """Trains one sparse VD network per final KL weight and the baseline. Returns a dict:
    "runs" {final KL weight: {"accuracy" (pruned), "mean_mode_accuracy", "sparsity" {layer:
    fraction}, "accuracy_gap" (baseline - accuracy)}}, "baseline_accuracy", "baseline_sparsity",
    "num_test", "seconds", "settings"."""
    s = {**SETTINGS, **overrides}
    unknown = set(s) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected a subset of {sorted(SETTINGS)}")
    try:
        x_tr, y_tr, x_te, y_te = load_digits_split(s["seed"], s["test_fraction"])
    except ImportError as err:
        sys.exit(f"this example {err}")
    x_te = x_te.astype(np.float32)
    warmup = max(1, s["warmup_epochs"])
    runs, seconds, trained = {}, 0.0, {}
    with one_blas_thread():
        for final in s["kl_weights"]:
            if verbose:
                print(f"sparse VD, KL weight warmed up to {final} over {warmup} epochs"
                      + (" (the ELBO)" if final == 1 else " (tempered)"))
            model, params, sec = train(s, x_tr, y_tr,
                                       lambda epoch, f=final: f * min(1.0, epoch / warmup), verbose)
            seconds += sec
            trained[final] = (model, params)
            runs[final] = {"accuracy": accuracy(model, params, x_te, y_te, "pruned"),
                           "mean_mode_accuracy": accuracy(model, params, x_te, y_te, "mean"),
                           "sparsity": network_sparsity(model.network, params["network"])}
        if verbose:
            print("baseline: the same network without sparsification (KL weight 0)")
        base_model, base_params, sec = train(s, x_tr, y_tr, 0.0, verbose)
        seconds += sec
    base_acc = accuracy(base_model, base_params, x_te, y_te, "mean")
    for run in runs.values():
        run["accuracy_gap"] = base_acc - run["accuracy"]
    result = {"runs": runs, "baseline_accuracy": base_acc,
              "baseline_sparsity": network_sparsity(base_model.network, base_params["network"]),
              "num_test": len(y_te), "seconds": seconds, "settings": s}
    if verbose:
        shapes = [f"{a}x{b}" for a, b in (p["kernel_theta"].shape
                                          for p in base_params["network"].values())]
        print(f"\ntest accuracy on {len(y_te)} digits; pruned = log alpha > {s['threshold']}")
        print(f"{'final KL weight':>16} {'accuracy':>9} {'gap':>6}  pruned per layer ("
              + ", ".join(shapes) + ")")
        for final, run in runs.items():
            print(f"{final:>16} {run['accuracy']:>9.4f} {100 * run['accuracy_gap']:>+6.2f}  "
                  + ", ".join(f"{v:.1%}" for v in run["sparsity"].values()))
        print(f"{'baseline (0)':>16} {base_acc:>9.4f} {0:>+6.2f}  "
              + ", ".join(f"{v:.1%}" for v in result["baseline_sparsity"].values()))
        print(f"(gap: baseline minus sparse, in accuracy points; trained in {seconds:.1f}s)")
    if s["output"]:
        plot_first_layer(trained, s["output"])
    return result


def plot_first_layer(trained, path):
    """Per input pixel, how many first-layer connections survive pruning, one 8x8 panel per run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')")
        return
    fig, axes = plt.subplots(1, len(trained), figsize=(3.2 * len(trained), 3.4), squeeze=False)
    for ax, (final, (model, params)) in zip(axes[0], trained.items()):
        layer, p = model.network.layers[0], params["network"]["layer_0"]
        kept = (np.asarray(layer.log_alpha(p)) <= layer.threshold).sum(1).reshape(8, 8)
        image = ax.imshow(kept, cmap="viridis")
        ax.set_title(f"KL weight {final}: {kept.sum()} of {p['kernel_theta'].size} kept", fontsize=9)
        ax.axis("off")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("sparse VD on digits: surviving first-layer connections per input pixel", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
