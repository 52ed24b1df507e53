"""The digits classifier (examples/digits_classification.py) trained with lrtdense.torch: torch's
own loop, torch.optim.Adam, and the same recipe, data and metrics as the NumPy run, side by side.

Run: python examples/torch_digits.py   (needs torch and scikit-learn; about a minute)

Recipe (``digits_classification.SETTINGS``): scikit-learn's 8x8 digits, 75/25 split by the seed;
a 64-128-10 network of DenseLocalReparameterization layers (relu, TFP's defaults, float32);
minibatches of 64 in a new order each epoch; Adam at 5e-3 on the negative ELBO per example,
cross-entropy + KL / N. Held out: accuracy and expected calibration error (15 bins) of the Monte
Carlo predictive (``num_samples`` passes) and of the mean network. Each seed's split is the
NumPy run's; the torch run draws its initialization, minibatch order and noise from a
torch.Generator of the same seed, so the runs differ by their random numbers only, and parity
means: the torch runs' metrics lie within the seed-to-seed spread of lrtdense's.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits_classification as numpy_run  # noqa: E402

from lrtdense.datasets import load_digits_split  # noqa: E402


def train_torch(seed, epochs, recipe=numpy_run.SETTINGS):
    """One torch run of the NumPy example's recipe; returns its ``PARITY_METRICS``."""
    import torch
    import torch.nn.functional as F
    import lrtdense.torch as LT

    x_tr, y_tr, x_te, y_te = load_digits_split(seed, recipe["test_fraction"])
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        LT.DenseLocalReparameterization(x_tr.shape[1], recipe["hidden"], "relu",
                                        dtype=torch.float32, generator=generator),
        LT.DenseLocalReparameterization(recipe["hidden"], 10, dtype=torch.float32,
                                        generator=generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["learning_rate"])
    xt, yt = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=torch.int64)
    n, batch = len(xt), recipe["batch_size"]
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx]) + LT.divergence(model) / n
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        xs = torch.tensor(x_te, dtype=torch.float32)
        probs = torch.stack([F.softmax(model(xs), -1)
                             for _ in range(recipe["num_samples"])]).mean(0).numpy()
        mean_probs = F.softmax(LT.set_mode(model, "mean")(xs), -1).numpy()
    return numpy_run.parity_metrics(y_te, probs, mean_probs, recipe["num_bins"])


def main(**overrides):
    """Runs every seed with both packages; prints and returns {"torch": [...], "numpy": [...]}."""
    s = {**SETTINGS, **overrides}
    runs = {"torch": [train_torch(seed, s["epochs"]) for seed in s["seeds"]]}
    if s["compare_numpy"]:
        runs["numpy"] = [numpy_run.parity_run(seed, s["epochs"]) for seed in s["seeds"]]
    numpy_run.print_parity(f"digits, {s['epochs']} epochs, seeds {list(s['seeds'])}", runs)
    return runs


if __name__ == "__main__":
    try:
        import torch  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as err:
        sys.exit(f"this example needs torch and scikit-learn ({err.name} is missing): "
                 f"pip install torch==2.13.0 scikit-learn")
    main()
