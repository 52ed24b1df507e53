"""``lrtdense demo``: Bayesian regression on the classic 1-D toy problem, on a CPU in seconds.

Data (Hernandez-Lobato & Adams 2015, arXiv 1502.05336): 20 points x ~ U[-4, 4],
``y = x**3 + eps, eps ~ N(0, 3**2)``. Network: 1 -> 50 (relu) -> 1, both
DenseLocalReparameterization
with TFP's defaults in float64; Gaussian likelihood with the known noise scale 3; trained by
minimising the negative ELBO with Adam on full batches. Inputs are divided by 4 and targets by
their training standard deviation; predictions are mapped back.

Prints the held-out RMSE, NLL and 95%-interval coverage on 1000 fresh points from [-4, 4], and
writes a PNG of the data, the predictive mean and +-2 sigma bands over [-6, 6], the training
range [-4, 4] shaded and the whole of every band in view (matplotlib).
"""
import sys
import time

import numpy as np

from lrtdense.argtypes import check_output_file, integer, number, output_file
from lrtdense.layers import DenseLocalReparameterization
from lrtdense.losses import GaussianLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.metrics import gaussian_nll, interval_coverage, rmse
from lrtdense.predictive import predict
from lrtdense.training import fit

DEFAULTS = dict(seed=0, epochs=8000, hidden=50, learning_rate=0.003, num_samples=500,
                output="lrtdense_demo.png", noise=3.0, num_train=20, num_test=1000)


def toy_data(rng, n, noise=3.0, low=-4.0, high=4.0):
    """x ~ U[low, high] of shape (n, 1), ``y = x**3 + N(0, noise**2)`` of shape (n, 1)."""
    x = rng.uniform(low, high, size=(n, 1))
    return x, x ** 3 + noise * rng.standard_normal((n, 1))


def run(seed=0, epochs=8000, hidden=50, learning_rate=0.003, num_samples=500,
        output="lrtdense_demo.png", noise=3.0, num_train=20, num_test=1000, verbose=True,
        file=None, replace=False):
    """Trains and evaluates; returns a dict of metrics and predictions (also used by the tests).

    ``output`` is the plot's path ('' or None: no plot); a file git tracks is written over only
    with ``replace=True``.

    Raises:
      ValueError: ``output`` cannot be written (checked before training).
    """
    if output:
        check_output_file(output, replace=replace)
    out = file or sys.stdout
    rng = np.random.default_rng(seed)
    x, y = toy_data(rng, num_train, noise)
    x_test, y_test = toy_data(rng, num_test, noise)
    y_scale = float(y.std())
    model = Model(Sequential([DenseLocalReparameterization(hidden, "relu", dtype="float64"),
                              DenseLocalReparameterization(1, dtype="float64")]),
                  GaussianLikelihood(scale=noise / y_scale))
    params = model.init(rng, 1)
    every = max(1, epochs // 10)
    start = time.perf_counter()

    def progress(epoch, p, history):
        if verbose and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            print(f"epoch {epoch + 1:>5}/{epochs}  loss (-ELBO/N) {history['loss'][-1]:8.4f}  "
                  f"nll {history['nll'][-1]:7.4f} (standardized y)  kl {history['kl'][-1]:8.1f}  "
                  f"({time.perf_counter() - start:.1f}s)", file=out, flush=True)

    params, history = fit(model, params, x / 4, y / y_scale, rng=rng, epochs=epochs,
                          batch_size=num_train, optimizer=adam(learning_rate), verbose=False,
                          callback=progress)
    test = predict(model, params, x_test / 4, rng=rng, num_samples=num_samples)
    mean, std = test["mean"] * y_scale, test["std"] * y_scale
    metrics = {"rmse": rmse(y_test, mean), "nll": gaussian_nll(y_test, mean, std),
               "coverage95": interval_coverage(y_test, mean, std, 0.95),
               "train_seconds": history["time"][-1] if history["time"] else 0.0}
    grid = np.linspace(-6, 6, 241)[:, None]
    pred = predict(model, params, grid / 4, rng=rng, num_samples=num_samples)
    result = {"metrics": metrics, "grid": grid[:, 0], "mean": pred["mean"][:, 0] * y_scale,
              "std": pred["std"][:, 0] * y_scale,
              "epistemic_std": pred["epistemic_std"][:, 0] * y_scale,
              "x": x[:, 0], "y": y[:, 0], "history": history, "params": params, "model": model,
              "settings": dict(seed=seed, epochs=epochs, num_samples=num_samples)}
    if verbose:
        print(f"held-out (n={num_test}, x in [-4, 4]): RMSE {metrics['rmse']:.2f}  "
              f"NLL {metrics['nll']:.3f} (in y's units)  95% coverage {metrics['coverage95']:.3f}", file=out)
        inner = result["epistemic_std"][np.abs(result["grid"]) <= 3].mean()
        edge = result["epistemic_std"][np.abs(result["grid"]) >= 6].mean()
        print(f"epistemic std: {inner:.2f} on average over |x| <= 3, {edge:.2f} at |x| = 6",
              file=out)
    if output:
        result["plot"] = plot(result, output, file=out)
    return result


def plot(result, path, file=None):
    """Writes the predictive plot to ``path``; returns the path, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'lrtdense[examples]')",
              file=file or sys.stdout)
        return None
    g, m, s = result["grid"], result["mean"], result["std"]
    e = result["epistemic_std"]
    lo, hi = float(result["x"].min()), float(result["x"].max())
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.axvspan(-4, 4, color="0.93", zorder=0, label="where the training x are drawn: [-4, 4]")
    ax.fill_between(g, m - 2 * s, m + 2 * s, color="tab:blue", alpha=0.2,
                    label="mean ± 2σ, total (epistemic and noise)")
    ax.fill_between(g, m - 2 * e, m + 2 * e, color="tab:blue", alpha=0.35,
                    label="mean ± 2σ, epistemic only")
    ax.plot(g, m, color="tab:blue", label="predictive mean")
    ax.plot(g, g ** 3, "k--", lw=1, label="truth: y = x³")
    ax.scatter(result["x"], result["y"], color="tab:red", zorder=3, s=18,
               label=f"the {len(result['x'])} training points (x in [{lo:.1f}, {hi:.1f}])")
    top = max(float(np.max(m + 2 * s)), float(np.max(g ** 3)))
    bottom = min(float(np.min(m - 2 * s)), float(np.min(g ** 3)))
    pad = 0.05 * (top - bottom)
    ax.set_ylim(bottom - pad, top + pad)            # the whole of every band: nothing clipped
    ax.set_xlim(g[0], g[-1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("Predictive of a Bayesian network: the bands widen away from the data",
                 fontsize=11)
    ax.legend(loc="upper left", fontsize=7.5)
    info = result.get("settings", {})
    fig.text(0.01, 0.01,
             "How it was made: lrtdense demo"
             + (f" (seed {info['seed']}, {info['epochs']} epochs, {info['num_samples']} "
                f"predictive samples)" if info else "")
             + ". A 1-50-1 network of DenseLocalReparameterization layers, Gaussian "
               "likelihood with the known noise σ = 3, trained on the negative ELBO; σ from "
               "the Monte Carlo predictive.", fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=file or sys.stdout)
    return path


# Upper ends of the command-line ranges: beyond them a run only exhausts memory (the predictive
# holds samples x 1000 test points) or time.
LIMITS = dict(hidden=10000, num_samples=10000)
PLOT_EXTENSIONS = {".png", ".pdf", ".svg", ".jpg", ".jpeg"}


def add_arguments(parser):
    """The demo's settings, each checked by its argparse type (see ``lrtdense.argtypes``)."""
    d = DEFAULTS
    parser.add_argument("--seed", type=integer(0), default=d["seed"], metavar="N",
                        help="seed of the data, the initialisation and the noise "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", type=integer(1), default=d["epochs"], metavar="N",
                        help="full-batch Adam steps (default: %(default)s)")
    parser.add_argument("--hidden", type=integer(1, LIMITS["hidden"]), default=d["hidden"],
                        metavar="N", help="hidden units (default: %(default)s)")
    parser.add_argument("--learning-rate", type=number(0, 1), default=d["learning_rate"],
                        metavar="LR", help="Adam's step size, in (0, 1] (default: %(default)s)")
    parser.add_argument("--samples", type=integer(1, LIMITS["num_samples"]),
                        default=d["num_samples"], metavar="S",
                        help="Monte Carlo samples for the predictive (default: %(default)s)")
    parser.add_argument("--output", type=output_file(PLOT_EXTENSIONS), default=d["output"],
                        metavar="FILE", help="the plot, .png, .pdf, .svg or .jpg; '' for none; "
                                             "its folder must exist, and it must not be a file "
                                             "committed to git (default: %(default)s)")


def main(args):
    """Runs the demo from parsed arguments; returns the exit code (1 if training diverged)."""
    if args.samples == 1:
        print("lrtdense demo: warning: --samples 1 makes the epistemic std 0 everywhere (one "
              "sample has no spread): its band and printed value mean nothing; use 2 or more",
              file=sys.stderr)
    try:
        run(seed=args.seed, epochs=args.epochs, hidden=args.hidden,
            learning_rate=args.learning_rate, num_samples=args.samples, output=args.output)
    except FloatingPointError as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        first = first if len(first) <= 200 else first[:200] + "..."
        print(f"lrtdense demo: error: training diverged ({first}); try a smaller "
              f"--learning-rate", file=sys.stderr)
        return 1
    return 0
