"""The README's toy regression (`lrtdense demo`) trained with lrtdense.torch: torch's own loop,
torch.optim.Adam, and the same recipe, data and metrics as the NumPy run, side by side.

Run: python examples/torch_toy_regression.py      (prints a table; a few minutes at 8000 epochs)

Recipe (``lrtdense.demo``; Hernandez-Lobato & Adams 2015, arXiv 1502.05336): 20 points
x ~ U[-4, 4], y = x**3 + N(0, 3**2); a 1-50-1 network of DenseLocalReparameterization layers
(relu, TFP's defaults, float64); Gaussian likelihood with the known noise 3; full-batch Adam on
the negative ELBO / N = mean NLL + KL / N; inputs / 4, targets / their std. Held-out: RMSE, NLL
and 95% coverage on 1000 fresh points, from 500 predictive samples. For each seed the data are
the demo's (NumPy's generator); the torch run draws its initialization and noise from a
torch.Generator of the same seed, so the two runs differ by their random numbers only, and
parity means: the torch runs' metrics lie within the seed-to-seed spread of lrtdense's.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seeds=(0, 1, 2, 3, 4),
    epochs=8000,          # full-batch Adam steps
    hidden=50,
    learning_rate=0.003,
    num_samples=500,      # Monte Carlo samples of the predictive
    compare_numpy=True,   # also run lrtdense's own (NumPy) training of each seed
)
# -------------------------------------------------------------------------------------------

import math

import numpy as np
import torch

import lrtdense.torch as LT
from lrtdense import demo
from lrtdense.metrics import gaussian_nll, interval_coverage, rmse
from lrtdense.torch.functional import gaussian_nll as torch_gaussian_nll


def train_torch(seed, epochs, hidden, learning_rate, num_samples, noise=3.0, num_train=20,
                num_test=1000):
    """One torch run of the demo's recipe; returns {"rmse", "nll", "coverage95"}."""
    rng = np.random.default_rng(seed)
    x, y = demo.toy_data(rng, num_train, noise)
    x_test, y_test = demo.toy_data(rng, num_test, noise)
    y_scale = float(y.std())
    sigma = noise / y_scale
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        LT.DenseLocalReparameterization(1, hidden, "relu", dtype=torch.float64,
                                        generator=generator),
        LT.DenseLocalReparameterization(hidden, 1, dtype=torch.float64, generator=generator))
    xt, yt = torch.tensor(x / 4), torch.tensor(y / y_scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch_gaussian_nll(yt, model(xt), sigma) + LT.divergence(model) / num_train
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        xs = torch.tensor(x_test / 4)
        draws = torch.stack([model(xs) for _ in range(num_samples)]).numpy()
    mean = draws.mean(0) * y_scale
    std = np.sqrt(draws.var(0) + sigma ** 2) * y_scale
    return {"rmse": rmse(y_test, mean), "nll": gaussian_nll(y_test, mean, std),
            "coverage95": interval_coverage(y_test, mean, std, 0.95)}


def train_numpy(seed, epochs, hidden, learning_rate, num_samples):
    """lrtdense's own run of the same seed (``lrtdense.demo.run``)."""
    result = demo.run(seed=seed, epochs=epochs, hidden=hidden, learning_rate=learning_rate,
                      num_samples=num_samples, output="", verbose=False)
    return {k: result["metrics"][k] for k in ("rmse", "nll", "coverage95")}


def main(**overrides):
    """Runs every seed with both packages; prints and returns {"torch": [...], "numpy": [...]}."""
    s = {**SETTINGS, **overrides}
    args = {k: s[k] for k in ("epochs", "hidden", "learning_rate", "num_samples")}
    runs = {"torch": [train_torch(seed, **args) for seed in s["seeds"]]}
    if s["compare_numpy"]:
        runs["numpy"] = [train_numpy(seed, **args) for seed in s["seeds"]]
    print(f"toy regression, {s['epochs']} epochs, seeds {list(s['seeds'])}: held-out metrics")
    print(f"{'':8}" + "".join(f"{k:>26}" for k in ("rmse", "nll", "coverage95")))
    for package, results in runs.items():
        cells = []
        for key in ("rmse", "nll", "coverage95"):
            values = np.array([r[key] for r in results])
            spread = values.std(ddof=1) if len(values) > 1 else math.nan
            cells.append(f"{values.mean():8.3f} ± {spread:5.3f} "
                         f"[{values.min():.2f}, {values.max():.2f}]")
        print(f"{package:8}" + "".join(f"{c:>26}" for c in cells))
    return runs


if __name__ == "__main__":
    main()
