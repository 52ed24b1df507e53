"""The gradient-variance study of Kingma et al. 2015 (arXiv 1506.02557, Table 1) on digits.

Question: for one objective, the minibatch estimate of the expected log-likelihood of an MLP with
Gaussian multiplicative weight noise (variational dropout, W = theta * (1 + sqrt(alpha) * eps)),

    L(theta) = (N / M) * sum_{i in minibatch} log p(y_i | x_i, W_i),

how much do its gradients w.r.t. theta vary from one minibatch draw to the next under each
estimator of the noise?

Each layer's weights are w ~ N(theta, scale**2) with scale = sqrt(alpha) |theta|
(``layer.weight_moments``), and each estimator is one kernel of ``lrtdense.kernels``:

* ``lrt``: local reparameterization (``kernels.lrt``): every pre-activation
  b = h @ theta + sqrt((h**2) @ scale**2) * eps, eps of shape (batch, units) (exactly
  ``DenseVariationalDropout``'s forward);
* ``separate``: a separate weight sample per example (``kernels.per_example``),
  W_i = theta + scale * eps_i, eps of shape (batch, in, units), materialised;
* ``single``: one weight sample shared by the minibatch (``kernels.reparameterization``), eps
  of shape (in, units);
* ``flipout``: the shared perturbation scale * eps decorrelated by random signs (Wen et al.
  2018, arXiv 1803.04386; ``kernels.flipout``): h @ theta + ((h * s_in) @ (scale eps)) * s_out;
* ``none``: no weight noise (h @ theta): the variance from minibatch sampling alone, a lower bound.

All five have the same expectation over the noise; the first four are unbiased estimators of the
same objective. The KL term of the ELBO depends on alpha only, so it adds nothing to the
gradient w.r.t. theta and is left out.

Protocol (``DEFAULTS``; ``SHORT`` for tests): scikit-learn's bundled 8x8 digits (1797 images, no
download), pixels / 16, a seeded 75/25 train/test split. The MLP 64 -> hidden -> ... -> 10 of
``DenseVariationalDropout`` layers (relu, float64) with alpha fixed for every weight (log alpha
frozen) is trained once with LRT and Adam on the negative ELBO. At the early and the late
checkpoint (in epochs), for each estimator, draw ``num_draws`` pairs (minibatch of
``batch_size`` examples sampled without replacement from the training set, noise); the minibatches
are the same for every estimator (common random numbers), the noise is seeded per (checkpoint,
estimator). The variance of each weight's gradient over the draws (ddof=1) is averaged over the
weights of the top layer (hidden -> 10) and of the bottom layer (64 -> hidden).

Run: ``lrtdense study variance [--short] [--out DIR] [--seed N]`` writes ``variance_table.md``
and ``variance.png`` to DIR and prints the table. The default run takes about two minutes on
two CPU cores; ``--short`` a few seconds.
"""
import contextlib
import copy
import math
import os
import sys
import time

import numpy as onp
import autograd.numpy as np
from autograd import grad

from lrtdense import activations as _activations
from lrtdense import kernels
from lrtdense.dropout import DenseVariationalDropout
from lrtdense.distributions import Constant
from lrtdense.losses import CategoricalLikelihood, softmax_cross_entropy
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import Optimizer, adam
from lrtdense.samplers import rademacher, standard_normal
from lrtdense.datasets import load_digits_split
from lrtdense.training import fit

__all__ = ["one_blas_thread", "ESTIMATORS", "LABELS", "DEFAULTS", "SHORT", "PAPER", "run", "load_digits_split",
           "build_network", "estimator_logits", "sample_estimator_noise", "objective",
           "gradient_variance", "markdown_table", "plot", "check_bars"]

ESTIMATORS = ("lrt", "separate", "single", "flipout", "none")
LABELS = {"lrt": "Local reparameterization", "separate": "Separate weight samples",
          "single": "Single weight sample", "flipout": "Flipout",
          "none": "No noise (minimal var.)"}
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


# ------------------------------------------------------------------------------- estimators
def sample_estimator_noise(estimator, network, rng, batch, input_dim):
    """Every random array one forward pass of ``estimator`` uses, per layer, drawn from ``rng``.

    Returns {layer name: {key: array}}; keys and shapes per layer (in -> units):
    lrt {"kernel": (batch, units)}; separate {"kernel": (batch, in, units)}; single
    {"kernel": (in, units)}; flipout {"kernel": (in, units), "sign_input": (batch, in),
    "sign_output": (batch, units)}; none {}.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    noise, n_in = {}, input_dim
    dtype = network.dtype
    for name, layer in zip(network.names, network.layers):
        shape = (n_in, layer.units)
        if estimator == "lrt":
            nz = {"kernel": standard_normal(rng, (batch, layer.units), dtype)}
        elif estimator == "separate":
            nz = {"kernel": standard_normal(rng, (batch,) + shape, dtype)}
        elif estimator == "single":
            nz = {"kernel": standard_normal(rng, shape, dtype)}
        elif estimator == "flipout":
            nz = {"kernel": standard_normal(rng, shape, dtype),
                  "sign_input": rademacher(rng, (batch, n_in), dtype),
                  "sign_output": rademacher(rng, (batch, layer.units), dtype)}
        else:
            nz = {}
        noise[name] = nz
        n_in = layer.units
    return noise


def _preactivation(estimator, layer, p, h, nz):
    theta, scale = layer.weight_moments(p)
    if estimator == "lrt":
        out = kernels.lrt(h, theta, scale, nz["kernel"])
    elif estimator == "separate":
        out = kernels.per_example(h, theta, scale, nz["kernel"])
    elif estimator == "single":
        out = kernels.reparameterization(h, theta, scale, nz["kernel"])
    elif estimator == "flipout":
        out = kernels.flipout(h, theta, scale, nz["kernel"], nz["sign_input"], nz["sign_output"])
    else:
        out = kernels.dense(h, theta)
    return kernels.add_bias(out, p["bias"]) if "bias" in p else out


def estimator_logits(estimator, network, net_params, x, noise):
    """The network's outputs (batch, 10) under ``estimator`` with explicit ``noise``."""
    h = x
    for name, layer in zip(network.names, network.layers):
        h = _activations.get(layer.activation)(_preactivation(estimator, layer, net_params[name],
                                                              h, noise[name]))
    return h


def objective(net_params, x, y, noise, estimator, network, num_examples):
    """-(N / M) sum_i log p(y_i | x_i, W_i): minus the minibatch estimate of the expected
    log-likelihood of the N training examples (the data term of the negative ELBO)."""
    logits = estimator_logits(estimator, network, net_params, x, noise)
    return num_examples * np.mean(softmax_cross_entropy(logits, y))


def gradient_variance(estimator, network, net_params, x, y, batches, rng, layers):
    """Per-weight variance of the gradient of ``objective`` w.r.t. kernel_theta, over draws.

    Args:
      batches: list of index arrays (one minibatch per draw).
      rng: numpy Generator for the noise.
      layers: dict label -> layer name, e.g. {"top": "layer_2", "bottom": "layer_0"}.
    Returns:
      dict label -> mean over the layer's weights of the unbiased variance across draws.
    """
    g_fn = grad(objective)
    count, mean, m2 = 0, {k: 0.0 for k in layers}, {k: 0.0 for k in layers}
    for idx in batches:
        noise = sample_estimator_noise(estimator, network, rng, len(idx), x.shape[1])
        g = g_fn(net_params, x[idx], y[idx], noise, estimator, network, len(x))
        count += 1
        for label, name in layers.items():          # Welford: stable for any mean / spread
            value = g[name]["kernel_theta"]
            delta = value - mean[label]
            mean[label] = mean[label] + delta / count
            m2[label] = m2[label] + delta * (value - mean[label])
    return {label: float(onp.mean(m2[label] / (count - 1))) for label in layers}


# ------------------------------------------------------------------------------------ study
def _freeze(optimizer, names):
    """Wraps an optimizer so that parameters whose key is in ``names`` get zero gradients."""
    def zero(tree):
        return {k: zero(v) if isinstance(v, dict) else onp.zeros_like(v) if k in names else v
                for k, v in tree.items()}
    return Optimizer(optimizer.init, lambda state, grads, inplace=False:
                     optimizer.update(state, zero(grads), inplace=inplace), optimizer.get_params)


def run(short=False, out=None, verbose=True, file=None, **overrides):
    """Runs the study. Returns a dict (see the keys below); writes the table and plot to ``out``.

    Args:
      short: use ``SHORT`` instead of ``DEFAULTS`` (then ``overrides`` on top).
      out: directory for ``variance_table.md`` and ``variance.png`` (None: write nothing).
      verbose: print progress and the table to ``file`` (default stdout).
    Returns:
      {"settings", "variance": {estimator: {(layer, checkpoint): value}}, "accuracy":
      {checkpoint: test accuracy in mean mode}, "checks": check_bars(...), "table": markdown,
      "seconds": wall time, "files": paths written}.
    """
    with one_blas_thread():
        return _run(short, out, verbose, file, overrides)


def one_blas_thread():
    """One BLAS thread for the duration of the study, when threadpoolctl (a scikit-learn
    dependency) is there: the matrices are small, and on a busy machine a multi-threaded BLAS
    spends most of its time waiting (measured: 5 to 7x slower gradients at a load of 3 on 2 cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _run(short, out, verbose, file, overrides):
    stream = file or sys.stdout
    s = {**(SHORT if short else DEFAULTS), **overrides}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected a subset of {sorted(DEFAULTS)}")
    if not s["late_epochs"] > s["early_epochs"] >= 1:
        raise ValueError(f"need late_epochs > early_epochs >= 1, got {s['early_epochs']}, "
                         f"{s['late_epochs']}")
    if not 0 < s["alpha"] <= 1:
        raise ValueError(f"alpha must lie in (0, 1] (Kingma's cap), got {s['alpha']}")

    def say(text):
        if verbose:
            print(text, file=stream, flush=True)

    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_digits_split(s["seed"], s["test_fraction"])
    network = build_network(tuple(s["hidden"]), s["alpha"])
    model = Model(network, CategoricalLikelihood())
    rng = onp.random.default_rng(s["seed"])
    params = model.init(rng, x_tr.shape[1])
    checkpoints = {}

    def snapshot(epoch, p, history):
        if epoch + 1 in (s["early_epochs"], s["late_epochs"]):
            name = "early" if epoch + 1 == s["early_epochs"] else "late"
            checkpoints[name] = copy.deepcopy(p)    # fit updates its params in place
            acc = float(onp.mean(onp.argmax(model.forward(p, x_te, mode="mean")[0], -1) == y_te))
            say(f"trained {epoch + 1} epochs with LRT ({time.perf_counter() - start:.1f}s): "
                f"-ELBO/N {history['loss'][-1]:.4f}, test accuracy (mean mode) {acc:.4f}")
            checkpoints[name + "_accuracy"] = acc

    fit(model, params, x_tr, y_tr, rng=rng, epochs=s["late_epochs"],
        batch_size=s["train_batch_size"], verbose=False, callback=snapshot,
        optimizer=_freeze(adam(s["learning_rate"]), {"kernel_log_alpha"}))

    layers = {"top": network.names[-1], "bottom": network.names[0]}
    variance = {e: {} for e in ESTIMATORS}
    for c, checkpoint in enumerate(("early", "late")):
        data_rng = onp.random.default_rng([s["seed"], 1, c])
        batches = [data_rng.choice(len(x_tr), s["batch_size"], replace=False)
                   for _ in range(s["num_draws"])]
        for e, estimator in enumerate(ESTIMATORS):
            t0 = time.perf_counter()
            noise_rng = onp.random.default_rng([s["seed"], 2, c, e])
            v = gradient_variance(estimator, network, checkpoints[checkpoint]["network"], x_tr,
                                  y_tr, batches, noise_rng, layers)
            for label, value in v.items():
                variance[estimator][(label, checkpoint)] = value
            say(f"{checkpoint:>5} {estimator:>8}: top {v['top']:.3e}  bottom {v['bottom']:.3e}  "
                f"({time.perf_counter() - t0:.1f}s)")

    result = {"settings": s, "variance": variance,
              "accuracy": {c: checkpoints[c + "_accuracy"] for c in ("early", "late")},
              "num_train": len(x_tr), "layer_shapes": _layer_shapes(network, x_tr.shape[1]),
              "seconds": time.perf_counter() - start, "files": []}
    result["checks"] = check_bars(variance)
    result["table"] = markdown_table(result)
    say("")
    say(result["table"])
    if out:
        os.makedirs(out, exist_ok=True)
        table_path = os.path.join(out, "variance_table.md")
        with open(table_path, "w") as f:
            f.write(result["table"] + "\n")
        result["files"].append(table_path)
        png = plot(result, os.path.join(out, "variance.png"))
        if png:
            result["files"].append(png)
        for path in result["files"]:
            say(f"wrote {path}")
        if not png:
            say("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')")
    return result


def _layer_shapes(network, input_dim):
    shapes, n_in = {}, input_dim
    for name, layer in zip(network.names, network.layers):
        shapes[name] = (n_in, layer.units)
        n_in = layer.units
    return shapes


def check_bars(variance):
    """The issue's bars on the measured variances.

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


def _fmt(value):
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def markdown_table(result):
    """The paper's Table 1 layout, then the protocol and the checks, as Markdown."""
    s, v, chk = result["settings"], result["variance"], result["checks"]
    e_ep, l_ep = s["early_epochs"], s["late_epochs"]
    head = (f"| Estimator | Top layer, {e_ep} epochs | Top layer, {l_ep} epochs | "
            f"Bottom layer, {e_ep} epochs | Bottom layer, {l_ep} epochs |")
    lines = [head, "|---|---:|---:|---:|---:|"]
    for est in ESTIMATORS:
        lines.append(f"| {LABELS[est]} | " + " | ".join(_fmt(v[est][c]) for c in COLUMNS) + " |")
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
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(ESTIMATORS)
    for i, est in enumerate(ESTIMATORS):
        xs = [j + (i - (len(ESTIMATORS) - 1) / 2) * width for j in range(len(COLUMNS))]
        ax.bar(xs, [v[est][c] for c in COLUMNS], width, label=LABELS[est], edgecolor="k", lw=0.5)
    epochs = {"early": s["early_epochs"], "late": s["late_epochs"]}
    ax.set_xticks(range(len(COLUMNS)))
    ax.set_xticklabels([f"{layer} layer\n{epochs[c]} epochs" for layer, c in COLUMNS])
    ax.set_yscale("log")
    ax.set_ylabel("mean gradient variance")
    ax.set_title(f"Gradient variance on digits (alpha = {s['alpha']}, batch {s['batch_size']}, "
                 f"{s['num_draws']} draws)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
