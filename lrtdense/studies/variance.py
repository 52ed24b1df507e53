"""The gradient-variance study of Kingma et al. 2015 (arXiv 1506.02557, Table 1) on digits.

Question: for one objective, the minibatch estimate of the expected log-likelihood of an MLP with
Gaussian multiplicative weight noise (variational dropout, W = theta * (1 + sqrt(alpha) * eps)),

    L(theta) = (N / M) * sum_{i in minibatch} log p(y_i | x_i, W_i),

how much do its gradients w.r.t. theta vary from one minibatch draw to the next under each
estimator of the noise?

Each layer's weights are ``w ~ N(theta, scale**2) with scale = sqrt(alpha) |theta|``
(``layer.posterior_moments``). The five estimators (local reparameterization, separate weight
samples, a single weight sample shared by the minibatch, Flipout, no noise) and the measurement
are ``lrtdense.studies.gradient_variance`` (``lrtdense.studies.estimators``), which works on any
network of lrtdense layers; this module is its application to Kingma et al.'s protocol. All five
have the same expectation over the noise; the first four are unbiased estimators of the same
objective. The KL term of the ELBO depends on alpha only, so it adds nothing to the gradient
w.r.t. theta and is left out.

Protocol (``DEFAULTS``; ``SHORT`` for tests): scikit-learn's bundled 8x8 digits (1797 images, no
download), pixels / 16, a seeded 75/25 train/test split. The MLP 64 -> hidden -> ... -> 10 of
``DenseVariationalDropout`` layers (relu, float64) with alpha fixed for every weight (log alpha
frozen) is trained once with LRT and Adam on the negative ELBO. At the early and the late
checkpoint (in epochs), for each estimator, draw ``num_draws`` pairs (minibatch of
``batch_size`` examples sampled without replacement from the training set, noise); the minibatches
are the same for every estimator (common random numbers), drawn with the noise seeds from
``default_rng([seed, 1, checkpoint index])``. The variance of each weight's gradient over the draws (ddof=1) is averaged over the
weights of the top layer (hidden -> 10) and of the bottom layer (64 -> hidden).

Run: ``lrtdense study variance [--short] [--out DIR] [--seed N]`` writes ``variance_table.md``
and ``variance.png`` to DIR (never over files committed to git) and prints the table. The
default run takes about two minutes on two CPU cores; ``--short`` a few seconds.
"""
import contextlib
import copy
import math
import os
import sys
import time

import numpy as onp

from lrtdense import tree
from lrtdense.argtypes import check_output_folder
from lrtdense.dropout import DenseVariationalDropout
from lrtdense.distributions import Constant
from lrtdense.losses import CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import Optimizer, adam
from lrtdense.datasets import load_digits_split
from lrtdense.studies.estimators import ESTIMATORS, LABELS, format_value, gradient_variance
from lrtdense.training import fit

__all__ = ["one_blas_thread", "ESTIMATORS", "LABELS", "COLUMNS", "DEFAULTS", "SHORT", "PAPER",
           "OUTPUT_FILES", "run", "build_network", "markdown_table", "plot", "check_bars"]
OUTPUT_FILES = ("variance_table.md", "variance.png")      # what ``run`` writes in ``out``
COLUMNS = (("top", "early"), ("top", "late"), ("bottom", "early"), ("bottom", "late"))

# Kingma et al. 2015, Table 1 (MNIST, their network; early = 10 epochs, late = 100 epochs).
PAPER = {"lrt": (7.8e3, 1.2e3, 1.9e2, 1.1e2), "separate": (1.4e4, 2.6e3, 4.3e2, 2.5e2),
         "single": (4.9e4, 4.3e3, 8.5e2, 3.3e2), "none": (2.8e3, 5.9e1, 1.3e2, 9.0e0)}

DEFAULTS = dict(
    seed=0,
    hidden=(100, 100),      # hidden layer sizes
    alpha=0.5,              # fixed dropout variance ratio of every weight (log alpha frozen)
    learning_rate=1e-3,     # Adam
    train_batch_size=100,
    early_epochs=10,        # the paper's checkpoints: 10 and 100 epochs
    late_epochs=100,
    batch_size=100,         # minibatch size of the gradient estimates
    num_draws=1000,         # (minibatch, noise) draws per estimator and checkpoint
    test_fraction=0.25,
)
SHORT = dict(DEFAULTS, hidden=(32, 32), early_epochs=2, late_epochs=10, num_draws=100,
             batch_size=50)


# ------------------------------------------------------------------------------------- data
def build_network(hidden, alpha, dtype="float64"):
    """Sequential of DenseVariationalDropout layers: relu hidden layers, a linear 10-way top."""
    log_alpha = Constant(math.log(alpha))
    layers = [DenseVariationalDropout(h, "relu", log_alpha_initializer=log_alpha, dtype=dtype)
              for h in hidden]
    layers.append(DenseVariationalDropout(10, log_alpha_initializer=log_alpha, dtype=dtype))
    return Sequential(layers)


# ------------------------------------------------------------------------------------ study
def _freeze(optimizer, names):
    """Wraps an optimizer so that parameters whose key is in ``names`` get zero gradients."""
    def zero(grads):
        frozen = lambda path: path.rsplit(tree.SEP, 1)[-1] in names      # noqa: E731
        return tree.map_with_path(lambda path, g: onp.zeros_like(g) if frozen(path) else g, grads)
    return Optimizer(optimizer.init, lambda state, grads, inplace=False:
                     optimizer.update(state, zero(grads), inplace=inplace), optimizer.get_params)


def run(short=False, out=None, verbose=True, file=None, replace=False, **overrides):
    """Runs the study. Returns a dict (see the keys below); writes the table and plot to ``out``.

    Args:
      short: use ``SHORT`` instead of ``DEFAULTS`` (then ``overrides`` on top).
      out: directory for ``OUTPUT_FILES`` (the table and the plot), created if needed (None:
        write nothing).
      verbose: print progress and the table to ``file`` (default stdout).
      replace: write over those files even if git tracks them (refused otherwise).
    Returns:
      {"settings", "variance": {estimator: {(layer, checkpoint): value}}, "accuracy":
      {checkpoint: test accuracy in mean mode}, "checks": check_bars(...), "table": markdown,
      "seconds": wall time, "files": paths written}.
    Raises:
      ValueError: unknown or inconsistent settings, or ``out`` cannot take the files (both
        checked before the study runs).
    """
    if out:
        check_output_folder(out, OUTPUT_FILES, replace=replace)
    with one_blas_thread():
        return _run(short, out, verbose, file, overrides)


def one_blas_thread():
    """One BLAS thread for the duration of the study, when threadpoolctl (a scikit-learn
    dependency) is there: the matrices are small, and on a busy machine a multi-threaded BLAS
    spends most of its time waiting (``benchmarks/README.md`` has the measurement)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _run(short, out, verbose, file, overrides):
    s = _settings(short, overrides)
    say = _printer(verbose, file or sys.stdout)
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_digits_split(s["seed"], s["test_fraction"])
    network = build_network(tuple(s["hidden"]), s["alpha"])
    model = Model(network, CategoricalLikelihood())
    checkpoints, accuracy = _train(model, s, (x_tr, y_tr), (x_te, y_te), say, start)
    variance = _measure(model, checkpoints, x_tr, y_tr, s, say)
    result = {"settings": s, "full": is_full_protocol(s), "variance": variance,
              "accuracy": {c: accuracy[c] for c in ("early", "late")},
              "num_train": len(x_tr), "layer_shapes": _layer_shapes(network, x_tr.shape[1]),
              "seconds": time.perf_counter() - start, "files": []}
    result["checks"] = check_bars(variance)
    result["table"] = markdown_table(result)
    say("")
    say(result["table"])
    if out:
        result["files"] = _write(result, out, say)
    return result


def _settings(short, overrides):
    """``SHORT`` or ``DEFAULTS`` with ``overrides`` on top; a ValueError for an unknown or
    inconsistent setting."""
    s = {**(SHORT if short else DEFAULTS), **overrides}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected a subset of {sorted(DEFAULTS)}")
    if not s["late_epochs"] > s["early_epochs"] >= 1:
        raise ValueError(f"need late_epochs > early_epochs >= 1, got {s['early_epochs']}, "
                         f"{s['late_epochs']}")
    if not 0 < s["alpha"] <= 1:
        raise ValueError(f"alpha must lie in (0, 1] (Kingma's cap), got {s['alpha']}")
    return s


def _printer(verbose, stream):
    """``say(text)``: prints a line to ``stream`` at once when ``verbose``, else nothing."""
    def say(text):
        if verbose:
            print(text, file=stream, flush=True)
    return say


def _train(model, s, train, test, say, start):
    """Trains ``model`` from its seeded init with LRT and Adam (log alpha frozen) for
    ``s["late_epochs"]`` epochs on ``train`` = (x, y). Returns ({"early", "late": a copy of the
    params at that checkpoint}, {"early", "late": test accuracy in mean mode there})."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    rng = onp.random.default_rng(s["seed"])
    params = model.init(rng, x_tr.shape[1])
    checkpoints, accuracy = {}, {}

    def snapshot(epoch, p, history):
        if epoch + 1 in (s["early_epochs"], s["late_epochs"]):
            name = "early" if epoch + 1 == s["early_epochs"] else "late"
            checkpoints[name] = copy.deepcopy(p)    # fit updates its params in place
            acc = float(onp.mean(onp.argmax(model.forward(p, x_te, mode="mean")[0], -1) == y_te))
            say(f"trained {epoch + 1} epochs with LRT ({time.perf_counter() - start:.1f}s): "
                f"-ELBO/N {history['loss'][-1]:.4f}, test accuracy (mean mode) {acc:.4f}")
            accuracy[name] = acc

    fit(model, params, x_tr, y_tr, rng=rng, epochs=s["late_epochs"],
        batch_size=s["train_batch_size"], verbose=False, callback=snapshot,
        optimizer=_freeze(adam(s["learning_rate"]), {"kernel_log_alpha"}))
    return checkpoints, accuracy


def _measure(model, checkpoints, x_tr, y_tr, s, say):
    """``gradient_variance`` of every estimator at each checkpoint, on the top and bottom
    layers' kernel_theta. Returns {estimator: {(layer, checkpoint): variance}}."""
    names = model.network.names
    wrt = {"top": (names[-1], "kernel_theta"), "bottom": (names[0], "kernel_theta")}
    variance = {e: {} for e in ESTIMATORS}
    for c, checkpoint in enumerate(("early", "late")):
        def progress(estimator, v, seconds):
            say(f"{checkpoint:>5} {estimator:>8}: top {v['top']:.3e}  bottom {v['bottom']:.3e}  "
                f"({seconds:.1f}s)")

        table = gradient_variance(model, checkpoints[checkpoint], x_tr, y_tr, ESTIMATORS,
                                  rng=onp.random.default_rng([s["seed"], 1, c]),
                                  batch_size=s["batch_size"], num_draws=s["num_draws"], wrt=wrt,
                                  progress=progress)
        for estimator in ESTIMATORS:
            for label, value in table.variance[estimator].items():
                variance[estimator][(label, checkpoint)] = value
    return variance


def _write(result, out, say):
    """Writes ``OUTPUT_FILES`` (the table; the plot when matplotlib is there) to ``out``, says
    so, and returns the paths written."""
    os.makedirs(out, exist_ok=True)
    table_name, plot_name = OUTPUT_FILES
    table_path = os.path.join(out, table_name)
    with open(table_path, "w") as f:
        f.write(result["table"] + "\n")
    files = [table_path]
    png = plot(result, os.path.join(out, plot_name))
    if png:
        files.append(png)
    for path in files:
        say(f"wrote {path}")
    if not png:
        say("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')")
    return files


def is_full_protocol(settings):
    """Whether ``settings`` are ``DEFAULTS`` (any seed): the study proper, not a smoke run."""
    return {k: v for k, v in settings.items() if k != "seed"} == \
        {k: v for k, v in DEFAULTS.items() if k != "seed"}


SMOKE_NOTE = ("Smoke run (--short or changed settings): a small network, few epochs and draws, "
              "to check that the code runs; its numbers are not the study's result (run "
              "`lrtdense study variance` for that).")


def _layer_shapes(network, input_dim):
    shapes, n_in = {}, input_dim
    for name, layer in zip(network.names, network.layers):
        shapes[name] = (n_in, layer.units)
        n_in = layer.units
    return shapes


def check_bars(variance):
    """The study's checks on the measured variances (the orderings of Kingma et al.'s Table 1).

    Returns a dict: "ordering" {(layer, checkpoint): bool for none < lrt < separate < single},
    "flipout_between" {(layer, checkpoint): bool for lrt < flipout < single},
    "single_over_lrt" {(layer, checkpoint): ratio}.
    """
    out = {"ordering": {}, "flipout_between": {}, "single_over_lrt": {}}
    for col in COLUMNS:
        v = {e: variance[e][col] for e in ESTIMATORS}
        out["ordering"][col] = v["none"] < v["lrt"] < v["separate"] < v["single"]
        out["flipout_between"][col] = v["lrt"] < v["flipout"] < v["single"]
        out["single_over_lrt"][col] = v["single"] / v["lrt"]
    return out


def markdown_table(result):
    """The paper's Table 1 layout, then the protocol and the checks, as Markdown."""
    s, v, chk = result["settings"], result["variance"], result["checks"]
    e_ep, l_ep = s["early_epochs"], s["late_epochs"]
    head = (f"| Estimator | Top layer, {e_ep} epochs | Top layer, {l_ep} epochs | "
            f"Bottom layer, {e_ep} epochs | Bottom layer, {l_ep} epochs |")
    lines = ([] if result.get("full", True) else [SMOKE_NOTE, ""]) + [head, "|---|---:|---:|---:|---:|"]
    for est in ESTIMATORS:
        lines.append(f"| {LABELS[est]} | " + " | ".join(format_value(v[est][c]) for c in COLUMNS) + " |")
    shapes = result["layer_shapes"]
    top, bottom = list(shapes.values())[-1], list(shapes.values())[0]
    lines += [
        "",
        f"Average empirical variance of the minibatch gradient of -(N/M) sum_i log p(y_i | x_i, W) "
        f"w.r.t. the weight means theta, over {s['num_draws']} draws of (minibatch of "
        f"{s['batch_size']} of the N = {result['num_train']} training digits, weight noise), "
        f"averaged over the {top[0]}x{top[1]} top-layer and {bottom[0]}x{bottom[1]} bottom-layer "
        f"weights. MLP 64-{'-'.join(str(h) for h in s['hidden'])}-10 (relu), Gaussian "
        f"multiplicative weight noise with fixed alpha = {s['alpha']}, trained with LRT and Adam "
        f"(lr {s['learning_rate']}, batch {s['train_batch_size']}, seed {s['seed']}); test "
        f"accuracy (mean mode) {result['accuracy']['early']:.3f} after {e_ep} epochs, "
        f"{result['accuracy']['late']:.3f} after {l_ep}. The same minibatches for every "
        f"estimator.",
        "",
        "Checks: " + "; ".join(
            f"{layer} {ckpt}: none < LRT < separate < single {_yes(chk['ordering'][(layer, ckpt)])}, "
            f"LRT < Flipout < single {_yes(chk['flipout_between'][(layer, ckpt)])}, "
            f"single/LRT = {chk['single_over_lrt'][(layer, ckpt)]:.1f}x"
            for layer, ckpt in COLUMNS) + ".",
    ]
    return "\n".join(lines)


def _yes(flag):
    return "holds" if flag else "FAILS"


def plot(result, path):
    """Grouped bars (log scale) of the table, one group per (layer, checkpoint). Returns the path,
    or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    s, v = result["settings"], result["variance"]
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    width = 0.8 / len(ESTIMATORS)
    for i, est in enumerate(ESTIMATORS):
        xs = [j + (i - (len(ESTIMATORS) - 1) / 2) * width for j in range(len(COLUMNS))]
        ax.bar(xs, [v[est][c] for c in COLUMNS], width, label=LABELS[est], edgecolor="k", lw=0.5)
    epochs = {"early": s["early_epochs"], "late": s["late_epochs"]}
    ax.set_xticks(range(len(COLUMNS)))
    ax.set_xticklabels([f"{layer} layer\n{epochs[c]} epochs" for layer, c in COLUMNS])
    ax.set_yscale("log")
    ax.set_ylabel("variance of the gradient w.r.t. theta\n(mean over the layer's weights)")
    hidden = "-".join(str(h) for h in s["hidden"])
    full = result.get("full", is_full_protocol(s))
    title = ("Minibatch gradient variance of five estimators on digits" if full else
             "SMOKE RUN (--short): checks the code runs, not the study's result")
    ax.set_title(title, color="black" if full else "tab:red", fontsize=11)
    ax.legend(fontsize=8, loc="upper right")
    fig.text(0.01, 0.01,
             f"How it was made: lrtdense study variance{'' if full else ' --short'} (seed "
             f"{s['seed']}). MLP 64-{hidden}-10 of DenseVariationalDropout layers, alpha = "
             f"{s['alpha']} fixed, trained with LRT; gradient of -(N/M) sum log p(y|x, W) over "
             f"{s['num_draws']} draws of (minibatch of {s['batch_size']}, noise), the same "
             f"minibatches for every estimator. Kingma et al. 2015, Table 1.",
             fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
