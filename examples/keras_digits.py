"""The digits classifier (examples/digits_classification.py) trained with lrtdense.keras: Keras'
own loop (``model.fit``), ``keras.optimizers.Adam``, and the same recipe, data and metrics as the
NumPy run, side by side.

Run: KERAS_BACKEND=jax python examples/keras_digits.py   (also torch; needs scikit-learn)

Recipe (``digits_classification.SETTINGS``): scikit-learn's 8x8 digits, 75/25 split by the seed;
a 64-128-10 ``keras.Sequential`` of DenseLocalReparameterization layers (relu, TFP's defaults,
float32); minibatches of 64 in a new order each epoch (``model.fit``'s shuffle); Adam at 5e-3 on
the negative ELBO per example: ``model.fit``'s loss, the batch's mean cross-entropy, plus
``sum(model.losses)``, the layers' divergences each weighted 1/N
(``kernel_divergence=ClosedFormKL(1/N)``, TFP's ``kl_divergence(q, p) / N``). Held out: accuracy
and expected calibration error (15 bins) of the Monte Carlo predictive (``num_samples`` calls of
the model, each a fresh draw) and of the mean network (``mode="mean"``). Each seed's split is the
NumPy run's; the Keras run draws its initialization and noise from the layers' SeedGenerators and
its minibatch order from ``keras.utils.set_random_seed`` of the same seed, so the runs differ by
their random numbers only, and parity means: the Keras runs' metrics lie within the seed-to-seed
spread of lrtdense's.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seeds=(0, 1, 2, 3, 4),
    epochs=100,
    compare_numpy=True,   # also run lrtdense's own (NumPy) training of each seed
)
# -------------------------------------------------------------------------------------------

import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits_classification as numpy_run  # noqa: E402

from lrtdense.datasets import load_digits_split  # noqa: E402



def train_keras(seed, epochs, recipe=numpy_run.SETTINGS):
    """One Keras run of the NumPy example's recipe; returns its ``PARITY_METRICS``."""
    import keras
    from lrtdense import ClosedFormKL
    from lrtdense.keras import DenseLocalReparameterization

    x_tr, y_tr, x_te, y_te = load_digits_split(seed, recipe["test_fraction"])
    keras.utils.set_random_seed(seed)             # model.fit's minibatch order
    kl = ClosedFormKL(1.0 / len(x_tr))            # the negative ELBO per example
    model = keras.Sequential([
        keras.Input((x_tr.shape[1],)),
        DenseLocalReparameterization(recipe["hidden"], "relu", kernel_divergence=kl, seed=seed),
        DenseLocalReparameterization(10, kernel_divergence=kl, seed=seed + 1)])
    model.compile(keras.optimizers.Adam(recipe["learning_rate"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_tr.astype("float32"), y_tr, batch_size=recipe["batch_size"], epochs=epochs,
              shuffle=True, verbose=0)
    xs = x_te.astype("float32")
    probs = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(model(xs)))
                     for _ in range(recipe["num_samples"])], axis=0)
    h = xs
    for layer in model.layers:
        h = layer(h, mode="mean")
    mean_probs = keras.ops.convert_to_numpy(keras.ops.softmax(h))
    return numpy_run.parity_metrics(y_te, probs, mean_probs, recipe["num_bins"])


def main(**overrides):
    """Runs every seed with both packages; prints and returns {"keras": [...], "numpy": [...]}."""
    import keras
    s = {**SETTINGS, **overrides}
    runs = {"keras": [train_keras(seed, s["epochs"]) for seed in s["seeds"]]}
    if s["compare_numpy"]:
        runs["numpy"] = [numpy_run.parity_run(seed, s["epochs"]) for seed in s["seeds"]]
    numpy_run.print_parity(f"digits, keras ({keras.backend.backend()}), {s['epochs']} epochs, "
                           f"seeds {list(s['seeds'])}", runs)
    return runs


if __name__ == "__main__":
    try:
        import keras  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as err:
        sys.exit(f"this example needs keras and scikit-learn ({err.name} is missing): "
                 f"pip install 'keras>=3' jax scikit-learn")
    main()
