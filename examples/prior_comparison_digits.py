"""The scale-mixture prior against the Normal prior on scikit-learn's bundled 8x8 digits.

Run: python examples/prior_comparison_digits.py [--seeds 0 1 2 --epochs 600 ...; see --help]
     (needs scikit-learn: pip install 'lrtdense[examples]'; about 45 minutes on a busy 2-core
     machine: 33 selection runs and 9 final ones)

Blundell et al. 2015 (arXiv 1505.05424), "Weight Uncertainty in Neural Networks", section 5.1:
Bayes by Backprop with the scale-mixture prior pi N(0, sigma1**2) + (1 - pi) N(0, sigma2**2)
(sigma2 tiny: a spike at 0 next to a wide slab) against a Normal prior; then pruning by the
signal-to-noise ratio |mu| / sigma of each weight's posterior (their figure 3 and table 2): the
weights with the lowest SNR are set to 0 in the mean network, and the test accuracy is read as a
function of the fraction removed.

The network and the estimator, the same for every arm: 64 -> 100 (relu) -> 100 (relu) -> 10 of
``DenseReparameterization``. Two hidden layers as in Blundell's MNIST networks, scaled to the 64
inputs. DenseReparameterization is the estimator of Bayes by Backprop: one kernel sample W per
minibatch, and the Monte Carlo divergence log q(W) - log p(W) at that same W (Blundell's eq. 2;
what TFP hands ``kernel_divergence_fn``), so the mixture runs are Blundell's algorithm step for
step. Three arms (``ARMS``): "normal", the Normal prior with its closed-form KL (TFP's default);
"normal_mc", the Normal prior with the mixture's Monte Carlo KL, so that mixture against
normal_mc differs in the prior alone; "mixture". Biases are deterministic (TFP's default), carry
no SNR and are never pruned. Trained with ``fit`` on the negative ELBO (KL / N, N the training
examples), Adam 1e-2 for 600 epochs of minibatches of 100, one sample per step.

That recipe was chosen on the validation split below (never the test set) with the grids'
first points: with Adam 1e-3 the negative ELBO was still falling steeply after 1000 epochs (the
KL / N term dominates with 1078 examples and 17,400 kernel weights); at 1e-2 the mixture's levels off
after about 600 epochs (near its floor: a Gaussian posterior pays about -log max(pi, 1 - pi)
nats per weight against the mixture) while the Normal's creeps on.

Selecting the prior parameters, the rule fixed before any run. The training part of the split is
cut once into a fit part and a validation part (``validation_fraction``, a permutation seeded by
``VALIDATION_SEED``); for every point of an arm's grid a network is trained on the fit part with
the first seed and scored on the validation part; the winner is the point with the highest
mean-network validation accuracy, ties broken by the lower mean-network validation negative
log-likelihood, then by grid order. The mixture's grid is Blundell's: -log sigma1 in {0, 1, 2},
-log sigma2 in {6, 7, 8}, pi in {1/4, 1/2, 3/4} (27 points); the Normal prior gets the same rule
over its scale, -log sigma in {0, 1, 2}. ``select`` receives the training part only; the test set
is loaded beside it and first read after the choice is made. Then each arm, with its chosen
parameters, is trained on the whole training part once per seed (the seed sets the initial
params, the minibatch order and the noise; the train/test split is the same for every seed, so
the spread is that of training, not of the test sample: with 449 test digits, one digit is
0.22 points).

Reported per arm (mean and sample standard deviation over the seeds): test accuracy of the mean
network and of the Monte Carlo predictive (``predict_samples`` draws), the expected calibration
error of both, the test accuracy of the mean network with the lowest-SNR fraction of all kernel
weights (pooled over the layers) set to 0, and the fit time per step. The step times are also
measured head to head: the arms' training steps (``make_step``, the step fit runs) alternate on
the same minibatches in this process, and the ratio of the medians mixture / normal is printed
(issue 15's bar: <= 1.3).

What the default run showed (seeds 0-2; mean +- sd; the README section "Priors compared on
digits" has the table). The rule chose Normal sigma = 1 (closed form), Normal sigma = e^-1 (MC
KL) and the mixture (1/2, e^-1, e^-6). Unpruned, the three are within their spread: mean-network
test accuracy 94.95 +- 0.68, 94.80 +- 0.64 and 95.40 +- 0.46 %. The mixture does NOT prune better
here: all three lose nothing up to 75% removed, but at 95% and 98% removed the mixture is the
worst (93.3 +- 1.8 and 91.2 +- 2.0 %) and the Normal prior with the same MC KL the best (95.0 +-
0.7 and 94.4 +- 0.4 %; closed form: 95.2 +- 0.7 and 92.2 +- 0.8 %). The closed-form Normal
drives the unused weights' means to 0 (43% of them below SNR 1e-8), the MC-trained posteriors
keep SNR near 0.1-1 (the mixture's log10 SNR peaks near -0.3). The test numbers are the same
bits from run to run; the step times are not: head to head the mixture's step was 1.43x and
1.81x the closed-form Normal's in two runs (1.30x, 1.67x the MC Normal's), above issue 15's bar
of 1.3 either way.

A figure (accuracy against the fraction removed, and the density of log10 SNR) goes to
``out/`` at the repository's root, which git ignores.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seeds=(0, 1, 2),        # one training per prior and seed; the first seed also runs the selection
    hidden=(100, 100),
    epochs=600,
    batch_size=100,
    learning_rate=1e-2,     # Adam, constant
    train_samples=1,        # samples per step (fit's num_samples): 1, as Bayes by Backprop
    predict_samples=100,    # Monte Carlo samples of the predictive
    test_fraction=0.25,
    split_seed=0,           # the train/test split, the same for every seed
    validation_fraction=0.2,
    # Blundell et al. 2015's grid for the mixture, and -log sigma for the Normal prior
    mixture_pi=(0.25, 0.5, 0.75),
    mixture_neg_log_sigma1=(0, 1, 2),
    mixture_neg_log_sigma2=(6, 7, 8),
    normal_neg_log_sigma=(0, 1, 2),
    arms=("normal", "normal_mc", "mixture"),   # the priors compared, as ARMS names them
    dtype="float32",        # TFP's default; "float64" for the same run in double precision
    prune_fractions=(0.0, 0.5, 0.75, 0.9, 0.95, 0.98),
    timing_rounds=40,       # head-to-head step pairs for the step time ratio (0: skip)
    output="out/prior_comparison_digits.png",   # relative to the repository root; '' for none
)
VALIDATION_SEED = 20150520  # the fit / validation permutation of the training part
# arm -> (prior family, kernel divergence); normal_mc: the Normal prior with the mixture's estimator
ARMS = {"normal": ("normal", "closed_form"), "normal_mc": ("normal", "monte_carlo"),
        "mixture": ("mixture", "monte_carlo")}
# -------------------------------------------------------------------------------------------

import argparse
import itertools
import math
import os
import subprocess
import sys
import time

import numpy as np
from scipy import special

import lrtdense as L
from lrtdense.datasets import load_digits_split
from lrtdense.losses import CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.metrics import accuracy, expected_calibration_error
from lrtdense.predictive import predict, predict_mean
from lrtdense.studies.variance import one_blas_thread
from lrtdense.training import fit, make_step

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


# ---------------------------------------------------------------------------------- models
def mixture_grid(s):
    """Blundell's grid: (pi, sigma1, sigma2) for every pi, -log sigma1, -log sigma2, in that
    nesting order (the order that breaks the last ties)."""
    return [(pi, math.exp(-a), math.exp(-b)) for pi, a, b in itertools.product(
        s["mixture_pi"], s["mixture_neg_log_sigma1"], s["mixture_neg_log_sigma2"])]


def candidates(s):
    """{arm: [its priors, in grid order]} for the arms of ``s["arms"]``."""
    grids = {"normal": [L.NormalPrior(0.0, math.exp(-a)) for a in s["normal_neg_log_sigma"]],
             "mixture": [L.ScaleMixturePrior(*p) for p in mixture_grid(s)]}
    return {arm: grids[ARMS[arm][0]] for arm in s["arms"]}


def build_model(prior, divergence, s):
    """64 -> hidden... -> 10 of DenseReparameterization with ``prior`` on every kernel and the
    kernel divergence ``divergence`` ("closed_form" or "monte_carlo": log q(W) - log p(W) at the
    forward's own kernel draw W)."""
    settings = dict(kernel_prior=prior, kernel_divergence=divergence, dtype=s["dtype"])
    layers = [L.DenseReparameterization(h, "relu", **settings) for h in s["hidden"]]
    layers.append(L.DenseReparameterization(10, **settings))
    return Model(Sequential(layers), CategoricalLikelihood())


def train(arm, prior, s, x, y, seed):
    """One network of ``arm`` with ``prior`` trained with ``fit`` on the negative ELBO.
    Returns (model, params, seconds per step)."""
    rng = np.random.default_rng(seed)
    model = build_model(prior, ARMS[arm][1], s)
    params = model.init(rng, x.shape[1])
    params, history = fit(model, params, x, y, rng=rng, epochs=s["epochs"],
                          batch_size=s["batch_size"], optimizer=adam(s["learning_rate"]),
                          num_samples=s["train_samples"], verbose=False)
    steps = s["epochs"] * math.ceil(len(x) / s["batch_size"])
    return model, params, (history["time"][-1] / steps if steps else 0.0)


# ------------------------------------------------------------------------- signal to noise
def signal_to_noise(model, params):
    """|mu| / sigma of every kernel weight, the layers' kernels flattened and concatenated in
    layer order (row-major within a layer). Returns a float64 array (total kernel weights,)."""
    parts = []
    for layer, name in zip(model.network.layers, model.network.names):
        loc, scale = layer.weight_moments(params["network"][name])
        parts.append((np.abs(np.asarray(loc, np.float64)) / np.asarray(scale, np.float64)).ravel())
    return np.concatenate(parts)


def prune(model, params, fraction):
    """The params with the ``round(fraction * n)`` kernel weights of lowest SNR (pooled over all
    layers, n kernel weights in all; ties in the order of ``signal_to_noise``) set to 0 in the
    posterior mean; everything else, and ``params`` itself, unchanged.

    Returns:
      (pruned params, the boolean keep mask over ``signal_to_noise``'s order).
    Raises:
      ValueError: fraction outside [0, 1].
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"the fraction removed must lie in [0, 1], got {fraction!r}")
    snr = signal_to_noise(model, params)
    keep = np.ones(snr.size, bool)
    keep[np.argsort(snr, kind="stable")[:int(round(fraction * snr.size))]] = False
    network, start = {}, 0
    for name in model.network.names:
        layer_params = dict(params["network"][name])
        loc = layer_params["kernel_posterior_loc"]
        mask = keep[start:start + loc.size].reshape(loc.shape)
        layer_params["kernel_posterior_loc"] = np.where(mask, loc, np.zeros((), loc.dtype))
        network[name], start = layer_params, start + loc.size
    return {**params, "network": network}, keep


# ------------------------------------------------------------------------------ evaluation
def mean_network_scores(model, params, x, y):
    """(accuracy, mean negative log-likelihood) of the mean network (mode="mean") on (x, y)."""
    logits = np.asarray(model.forward(params, x, mode="mean")[0], np.float64)
    nll = -np.mean(special.log_softmax(logits, -1)[np.arange(len(y)), y])
    return float(np.mean(np.argmax(logits, -1) == y)), float(nll)


def evaluate(model, params, s, x_te, y_te, rng):
    """The test numbers of one trained network (see the module docstring)."""
    probs = predict(model, params, x_te, rng=rng, num_samples=s["predict_samples"])["probs"]
    mean_probs = predict_mean(model, params, x_te)
    pruned = {}
    for fraction in s["prune_fractions"]:
        pruned_params, _ = prune(model, params, fraction)
        pruned[fraction] = accuracy(y_te, predict_mean(model, pruned_params, x_te))
    return {"mean_accuracy": accuracy(y_te, mean_probs),
            "mc_accuracy": accuracy(y_te, probs),
            "mean_ece": expected_calibration_error(y_te, mean_probs),
            "mc_ece": expected_calibration_error(y_te, probs),
            "pruned_accuracy": pruned,
            "log10_snr": np.log10(signal_to_noise(model, params))}


# ------------------------------------------------------------------------------- selection
def validation_split(num_train, fraction):
    """(fit indices, validation indices) of the training part: a permutation seeded by
    ``VALIDATION_SEED``, its first round(fraction * num_train) indices the validation part;
    both sorted, disjoint, together range(num_train)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
    order = np.random.default_rng(VALIDATION_SEED).permutation(num_train)
    n_val = int(round(fraction * num_train))
    if not 0 < n_val < num_train:
        raise ValueError(f"validation_fraction {fraction} of {num_train} training examples "
                         f"leaves an empty fit or validation part")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def selection_key(row, index):
    """The rule's order (smaller is better): higher validation accuracy, then lower validation
    NLL, then earlier in the grid."""
    return (-row["val_accuracy"], row["val_nll"], index)


def select(s, x_train, y_train, verbose=False):
    """Chooses each prior's parameters on the training part alone (the rule of the docstring).

    Args:
      s: the settings.
      x_train (n, 64), y_train (n,): the training part; nothing else is seen.
    Returns:
      {arm: {"chosen": the prior, "rows": [{"prior", "val_accuracy", "val_nll"}, ...] in grid
      order}, "num_fit", "num_validation"}.
    """
    fit_idx, val_idx = validation_split(len(y_train), s["validation_fraction"])
    x_fit, y_fit = x_train[fit_idx], y_train[fit_idx]
    x_val, y_val = x_train[val_idx].astype(s["dtype"]), y_train[val_idx]
    result = {"num_fit": len(fit_idx), "num_validation": len(val_idx)}
    for arm, priors in candidates(s).items():
        rows = []
        for prior in priors:
            model, params, _ = train(arm, prior, s, x_fit, y_fit, s["seeds"][0])
            acc, nll = mean_network_scores(model, params, x_val, y_val)
            rows.append({"prior": prior, "val_accuracy": acc, "val_nll": nll})
            if verbose:
                print(f"  {arm:<9} {describe(prior):<37} validation accuracy {acc:.4f}  "
                      f"NLL {nll:.4f}", flush=True)
        best = min(range(len(rows)), key=lambda i: selection_key(rows[i], i))
        result[arm] = {"chosen": rows[best]["prior"], "rows": rows}
    return result


# ---------------------------------------------------------------------------------- timing
def step_times(priors, s, x, y, rounds):
    """Median seconds of the training step (``make_step``, as fit builds it) of each arm's
    network from fresh params, the arms' steps alternating (order reversed every other round)
    on the same minibatches of (x, y), after one untimed step each.

    Args:
      priors: {arm: prior}.
    Returns:
      {arm: median seconds, ..., "ratio": mixture / normal, "ratio_mc": mixture / normal_mc
      (each when both arms are there)}.
    """
    rng = np.random.default_rng(12345)
    steps, states = {}, {}
    for kind, prior in priors.items():
        model = build_model(prior, ARMS[kind][1], s)
        optimizer = adam(s["learning_rate"])
        steps[kind] = make_step(model, optimizer, len(x), s["train_samples"])
        states[kind] = optimizer.init(model.init(np.random.default_rng(0), x.shape[1]))
    x = x.astype(s["dtype"])
    batches = [rng.permutation(len(x))[:s["batch_size"]] for _ in range(max(rounds, 1))]
    times = {kind: [] for kind in steps}
    for kind in steps:
        states[kind] = steps[kind](states[kind], x[batches[0]], y[batches[0]], rng)[0]
    for r in range(rounds):
        for kind in (list(steps) if r % 2 else list(steps)[::-1]):
            start = time.perf_counter()
            states[kind] = steps[kind](states[kind], x[batches[r]], y[batches[r]], rng)[0]
            times[kind].append(time.perf_counter() - start)
    med = {kind: float(np.median(t)) for kind, t in times.items()}
    for key, base in (("ratio", "normal"), ("ratio_mc", "normal_mc")):
        if "mixture" in med and base in med:
            med[key] = med["mixture"] / med[base]
    return med


# ------------------------------------------------------------------------------------ main
def describe(prior):
    if isinstance(prior, L.ScaleMixturePrior):
        return (f"mixture pi={prior.pi:g} sigma1=e^{math.log(prior.sigma1):.0f} "
                f"sigma2=e^{math.log(prior.sigma2):.0f}")
    return f"Normal sigma=e^{math.log(prior.scale):.0f}"


def label(arm, prior):
    return describe(prior) + (", MC KL" if ARMS[arm] == ("normal", "monte_carlo") else "")


def _settings(overrides):
    s = {**SETTINGS, **overrides}
    unknown = set(s) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected a subset of {sorted(SETTINGS)}")
    if not s["seeds"]:
        raise ValueError("seeds must name at least one seed")
    if not s["arms"] or not set(s["arms"]) <= set(ARMS):
        raise ValueError(f"arms must be a non-empty subset of {sorted(ARMS)}, got {s['arms']!r}")
    return s


def _load(s):
    try:
        return load_digits_split(s["split_seed"], s["test_fraction"])
    except ImportError as err:
        sys.exit(f"this example {err}")


def _stats(values):
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main(verbose=True, **overrides):
    """Selects, trains and evaluates every arm. Returns a dict: "selection" (``select``), "runs"
    {arm: [per seed: ``evaluate``'s dict plus "seed", "seconds_per_step"]}, "summary" {arm:
    {metric: (mean, sd)}, "pruned_accuracy" {fraction: (mean, sd)}}, "timing" (``step_times``,
    or None), "num_train", "num_test", "settings".
    """
    s = _settings(overrides)
    x_tr, y_tr, x_te, y_te = _load(s)
    x_te = x_te.astype(s["dtype"])
    say = print if verbose else (lambda *a, **k: None)
    with one_blas_thread():
        say(f"selecting on the training part ({len(y_tr)} digits; seed {s['seeds'][0]}, "
            f"{s['epochs']} epochs per grid point)")
        selection = select(s, x_tr, y_tr, verbose)
        chosen = {arm: selection[arm]["chosen"] for arm in s["arms"]}
        for arm, prior in chosen.items():
            say(f"chosen for {arm}: {describe(prior)}")
        runs = {kind: [] for kind in chosen}
        for seed in s["seeds"]:
            for kind, prior in chosen.items():
                model, params, per_step = train(kind, prior, s, x_tr, y_tr, seed)
                run = evaluate(model, params, s, x_te, y_te, np.random.default_rng([seed, 1]))
                runs[kind].append({**run, "seed": seed, "seconds_per_step": per_step})
                say(f"  seed {seed} {kind:<9} mean-network accuracy {run['mean_accuracy']:.4f}, "
                    f"MC {run['mc_accuracy']:.4f}; pruned "
                    + " ".join(f"{f:.0%}:{a:.3f}" for f, a in run["pruned_accuracy"].items()),
                    flush=True)
        timing = (step_times(chosen, s, x_tr, y_tr, s["timing_rounds"])
                  if s["timing_rounds"] else None)
    summary = {}
    for kind, kind_runs in runs.items():
        summary[kind] = {key: _stats([r[key] for r in kind_runs])
                         for key in ("mean_accuracy", "mc_accuracy", "mean_ece", "mc_ece",
                                     "seconds_per_step")}
        summary[kind]["pruned_accuracy"] = {f: _stats([r["pruned_accuracy"][f] for r in kind_runs])
                                            for f in s["prune_fractions"]}
    result = {"selection": selection, "runs": runs, "summary": summary, "timing": timing,
              "num_train": len(y_tr), "num_test": len(y_te), "settings": s}
    if verbose:
        print_summary(result, chosen)
    if s["output"]:
        plot(result, output_path(s["output"]))
    return result


def print_summary(result, chosen):
    s, summary = result["settings"], result["summary"]
    print(f"\n{result['num_train']} training / {result['num_test']} test digits; mean +- sd over "
          f"{len(s['seeds'])} seed(s) {tuple(s['seeds'])}; 64-{'-'.join(map(str, s['hidden']))}-10 "
          f"DenseReparameterization, {s['epochs']} epochs")
    for arm, prior in chosen.items():
        print(f"  {arm}: {label(arm, prior)} (chosen on validation)")
    print(f"{'':<22}" + "".join(f"{arm:>20}" for arm in chosen))
    rows = [("mean-network accuracy", "mean_accuracy"), ("MC accuracy", "mc_accuracy"),
            ("mean-network ECE", "mean_ece"), ("MC ECE", "mc_ece")]
    for name, key in rows:
        print(f"{name:<22}" + "".join(f"{_pm(summary[k][key]):>20}" for k in chosen))
    for f in s["prune_fractions"]:
        print(f"{'pruned ' + format(f, '.0%'):<22}"
              + "".join(f"{_pm(summary[k]['pruned_accuracy'][f]):>20}" for k in chosen))
    print(f"{'fit ms per step':<22}" + "".join(
        f"{_pm(tuple(1e3 * v for v in summary[k]['seconds_per_step']), 2):>20}" for k in chosen))
    t = result["timing"]
    if t:
        print(f"step time head to head ({s['timing_rounds']} alternating rounds, medians): "
              + ", ".join(f"{arm} {1e3 * t[arm]:.2f} ms" for arm in chosen)
              + (f"; mixture / normal {t['ratio']:.2f} (issue 15's bar: <= 1.3)" if "ratio" in t else "")
              + (f", mixture / normal_mc {t['ratio_mc']:.2f}" if "ratio_mc" in t else ""))


def _pm(stat, digits=4):
    mean, sd = stat
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def output_path(path):
    """``path`` resolved against the repository root (unless absolute). Refuses a file git tracks.

    Raises:
      ValueError: the file is committed in the repository (it would be overwritten).
    """
    path = path if os.path.isabs(path) else os.path.join(REPO, path)
    if os.path.exists(path):
        try:
            tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=REPO,
                                     capture_output=True).returncode == 0
        except OSError:
            tracked = False
        if tracked:
            raise ValueError(f"refusing to overwrite {path}: git tracks it; choose another output")
    return path


SNR_FLOOR = -8     # log10 SNR below this is left out of the histogram (its share is in the legend)


def plot(result, path):
    """Accuracy against the fraction removed (mean, min-max band over seeds) and the density of
    log10 SNR (all seeds' kernel weights pooled; those below SNR_FLOOR counted, not drawn)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')")
        return
    s = result["settings"]
    positions = np.arange(len(s["prune_fractions"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(SNR_FLOOR, 1.5, 96)
    for (arm, runs), color in zip(result["runs"].items(), ("C0", "C2", "C3")):
        name = label(arm, result["selection"][arm]["chosen"])
        acc = np.array([[r["pruned_accuracy"][f] for f in s["prune_fractions"]] for r in runs])
        left.plot(positions, acc.mean(0), "o-", color=color, label=name)
        left.fill_between(positions, acc.min(0), acc.max(0), color=color, alpha=0.15)
        snr = np.concatenate([r["log10_snr"] for r in runs])
        drawn = snr[snr >= SNR_FLOOR]
        below = 1 - drawn.size / snr.size
        # a density of all the weights: the area drawn is the fraction at or above the floor
        right.hist(drawn, bins=bins, weights=np.full(drawn.size, 1 / (snr.size * (bins[1] - bins[0]))),
                   histtype="step", color=color, lw=1.5,
                   label=name + (f" ({below:.0%} below 1e{SNR_FLOOR}, not drawn)" if below else ""))
    left.set_xticks(positions, [f"{100 * f:g}" for f in s["prune_fractions"]])
    left.set_xlabel("kernel weights removed, lowest |mu| / sigma first (%)")
    left.set_ylabel("test accuracy of the mean network")
    left.set_title(f"pruning by signal-to-noise (mean; band: min-max over {len(s['seeds'])} seeds)",
                   fontsize=9)
    left.legend(fontsize=8)
    right.set_xlabel("log10 |mu| / sigma")
    right.set_ylabel("density")
    right.set_title("signal-to-noise of the kernel weights (seeds pooled)", fontsize=9)
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def parse_args(argv=None):
    """Command-line overrides of SETTINGS, as a dict for main(**overrides) (only those given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2")
    parser.add_argument("--epochs", type=int, help=f"default {SETTINGS['epochs']}")
    parser.add_argument("--learning-rate", type=float, help=f"default {SETTINGS['learning_rate']}")
    parser.add_argument("--hidden", type=int, nargs="+", help="hidden layer sizes (default 100 100)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS),
                        help="the priors compared (default normal normal_mc mixture)")
    parser.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    parser.add_argument("--timing-rounds", type=int, help=f"default {SETTINGS['timing_rounds']}")
    parser.add_argument("--output", help=f"figure, '' for none (default {SETTINGS['output']})")
    args = vars(parser.parse_args(argv))
    out = {key.replace("-", "_"): value for key, value in args.items() if value is not None}
    for key in ("seeds", "hidden", "arms"):
        if key in out:
            out[key] = tuple(out[key])
    return out


if __name__ == "__main__":
    main(**parse_args())
