"""The toy regression of examples/toy_regression.py, trained with Keras 3's ``model.fit`` and Adam.

Run: KERAS_BACKEND=jax python examples/keras_toy_regression.py   (also torch, tensorflow)

The same recipe as ``lrtdense demo`` (lrtdense/demo.py): the same data for the same seed (20
points x ~ U[-4, 4], y = x**3 + N(0, 3**2); 1000 held-out points), a 1 -> 50 (relu) -> 1 network
of ``lrtdense.keras.DenseLocalReparameterization`` layers with TFP's defaults in float64, the
Gaussian likelihood with the known noise scale, full batches and Adam. The loss ``model.fit``
minimises is TFP's: the mean Gaussian NLL of the batch plus ``sum(model.losses)``, the layers'
divergences each weighted 1/N (``kernel_divergence=ClosedFormKL(1/N)``: TFP's
``lambda q, p, _: kl_divergence(q, p) / N``), i.e. the negative ELBO / N, what lrtdense's
``fit`` minimises. The predictive: ``num_samples`` calls of the model (each call a fresh draw,
as TFP's layers), mean and std (epistemic and noise) as ``lrtdense.predict``. Prints the held-out
RMSE, NLL and 95% coverage, in y's units.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    epochs=8000,          # full-batch Adam steps (lrtdense demo's)
    hidden=50,
    learning_rate=0.003,
    num_samples=500,      # Monte Carlo samples of the predictive
    noise=3.0,
    num_train=20,
    num_test=1000,
)
# -------------------------------------------------------------------------------------------

import math
import os

STEPS_PER_CALL = 100

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

if keras.backend.backend() == "jax":
    import jax
    jax.config.update("jax_enable_x64", True)   # the float64 layers need it on JAX

from lrtdense import ClosedFormKL  # noqa: E402
from lrtdense.demo import toy_data  # noqa: E402
from lrtdense.keras import DenseLocalReparameterization  # noqa: E402
from lrtdense.metrics import gaussian_nll, interval_coverage, rmse  # noqa: E402


def gaussian_nll_loss(sigma):
    """Keras loss: per example 0.5 ((y - f)/sigma)^2 + log sigma + 0.5 log 2 pi (mean over the
    batch by Keras)."""
    const = math.log(sigma) + 0.5 * math.log(2 * math.pi)

    def loss(y, f):
        z = (y - f) / sigma
        return keras.ops.sum(0.5 * z * z + const, axis=-1)
    return loss


def build_model(hidden, num_train, seed):
    """1 -> hidden (relu) -> 1, DenseLocalReparameterization layers, divergences weighted 1/N."""
    kl = ClosedFormKL(1.0 / num_train)
    return keras.Sequential([
        keras.Input((1,), dtype="float64"),
        DenseLocalReparameterization(hidden, "relu", dtype="float64", kernel_divergence=kl,
                                     seed=seed),
        DenseLocalReparameterization(1, dtype="float64", kernel_divergence=kl, seed=seed + 1),
    ])


def run(seed=0, epochs=8000, hidden=50, learning_rate=0.003, num_samples=500, noise=3.0,
        num_train=20, num_test=1000, verbose=True, return_model=False):
    """Trains and evaluates; returns {"rmse", "nll", "coverage95", "loss"} (and the trained
    model with ``return_model``)."""
    rng = np.random.default_rng(seed)
    x, y = toy_data(rng, num_train, noise)        # the demo's data for this seed
    x_test, y_test = toy_data(rng, num_test, noise)
    y_scale = float(y.std())
    sigma = noise / y_scale
    model = build_model(hidden, num_train, seed)
    # ``epochs`` full-batch steps, run as epochs / STEPS_PER_CALL passes over the full batch
    # repeated STEPS_PER_CALL times (identical batches, in one compiled call: Keras' per-epoch
    # overhead would otherwise dominate a 20-point problem)
    steps = min(STEPS_PER_CALL, epochs)
    if epochs % steps:
        raise ValueError(f"epochs must be a multiple of {steps}, got {epochs}")
    model.compile(keras.optimizers.Adam(learning_rate), loss=gaussian_nll_loss(sigma),
                  steps_per_execution=steps)
    history = model.fit(np.tile(x / 4, (steps, 1)), np.tile(y / y_scale, (steps, 1)),
                        batch_size=num_train, epochs=epochs // steps, verbose=0, shuffle=False)
    samples = np.stack([keras.ops.convert_to_numpy(model(x_test / 4)) for _ in range(num_samples)])
    mean = samples.mean(0) * y_scale
    std = np.sqrt(samples.var(0) + sigma ** 2) * y_scale
    metrics = {"rmse": rmse(y_test, mean), "nll": gaussian_nll(y_test, mean, std),
               "coverage95": interval_coverage(y_test, mean, std, 0.95),
               "loss": float(history.history["loss"][-1])}
    if verbose:
        print(f"keras ({keras.backend.backend()}), seed {seed}, {epochs} epochs: held-out "
              f"(n={num_test}) RMSE {metrics['rmse']:.2f}  NLL {metrics['nll']:.3f}  95% "
              f"coverage {metrics['coverage95']:.3f}  (final loss {metrics['loss']:.4f})")
    return (metrics, model) if return_model else metrics


def main(**overrides):
    """Runs with SETTINGS updated by ``overrides``; returns ``run``'s metrics."""
    return run(**{**SETTINGS, **overrides})


if __name__ == "__main__":
    main()
