# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Uncertainty in practice
#
# **What you will learn:** to read what a trained Bayesian network says about its own
# uncertainty: predictive bands on a toy regression and how they widen away from the data;
# why function draws need one weight sample per function (and LRT's samples are not functions);
# whether the bands are calibrated (interval coverage at several levels, PIT histogram); and
# whether the uncertainty flags inputs unlike the training data (out-of-distribution detection
# on scikit-learn's digits, with AUROC).
#
# **How long:** about 30 minutes to read; running every cell takes about 20 seconds (two small
# trainings). Needs `pip install -e ".[examples]"` (matplotlib, scikit-learn; the digits ship
# with scikit-learn, nothing is downloaded).

# %%
import matplotlib.pyplot as plt
import numpy as np

import lrtdense as L
from lrtdense import demo
from lrtdense.datasets import load_digits_split

# %% [markdown]
# ## 1. Predictive bands on the toy cubic
#
# `lrtdense demo` fits a 1-50-1 network of `DenseLocalReparameterization` layers to 20 noisy
# points of `y = x**3 + N(0, 3**2)` on [-4, 4] (Hernández-Lobato & Adams 2015). We reuse it
# (`lrtdense.demo.run`) with fewer epochs. Inputs are divided by 4 and targets by their
# standard deviation for training; the predictions come back in the data's units.

# %%
result = demo.run(epochs=3000, num_samples=200, output="", verbose=False)
grid, mean, std, epistemic = (result[k] for k in ("grid", "mean", "std", "epistemic_std"))
x, y = result["x"], result["y"]

fig, ax = plt.subplots(figsize=(7, 4))
ax.axvspan(-4, 4, color="0.93", label="training range")
ax.fill_between(grid, mean - 2 * std, mean + 2 * std, alpha=0.25, label="±2 total std")
ax.fill_between(grid, mean - 2 * epistemic, mean + 2 * epistemic, alpha=0.45,
                label="±2 epistemic std")
ax.plot(grid, grid ** 3, "k--", lw=1, label="truth")
ax.plot(grid, mean, lw=1.5, label="predictive mean")
ax.plot(x, y, "k.", ms=6, label="20 training points")
ax.set_ylim(-150, 150)
ax.legend(fontsize=8, loc="upper left")
plt.show()
inside = epistemic[np.abs(grid) <= 3].mean()
outside = epistemic[np.abs(grid) >= 6].mean()
print(f"epistemic std: {inside:.2f} inside (|x| <= 3), {outside:.1f} at |x| = 6")
assert outside > 5 * inside

# %% [markdown]
# ## 2. Function draws: one weight sample per function
#
# `L.predict` runs the network with fresh noise and, with LRT, every input gets its own noise:
# its samples have the right marginal distribution at each x but are not functions of x (the
# jagged lines on the left). To draw whole functions, sample the weights once per draw and use
# them for every x: the same layers with the "single" estimator (`estimator="single"`, a
# shared weight sample) on the same trained parameters (right).

# %%
model, params = result["model"], result["params"]
y_scale = float(y.std())
rng = np.random.default_rng(1)
xs = grid[:, None] / 4
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, estimator, title in zip(axes, ("lrt", "single"),
                                ("LRT samples: noise per input", "one weight sample per draw")):
    for _ in range(8):
        f, _ = model.network.forward(params["network"], xs, rng, estimator=estimator)
        ax.plot(grid, f[:, 0] * y_scale, lw=0.8)
    ax.plot(x, y, "k.", ms=5)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(-150, 150)
plt.show()

# %% [markdown]
# ## 3. Are the bands calibrated?
#
# A central p-interval of a calibrated predictive holds a fraction p of fresh targets.
# `L.metrics.interval_coverage` counts it at several levels (the moment-matched Gaussian of
# the predictive); `L.metrics.pit_values` gives, for each target, the predictive mixture's CDF
# at it: uniform on [0, 1] when calibrated (`pit_histogram` bins it). Reading the histogram: a
# U shape means bands too narrow (overconfident), a hump bands too wide, a slope a mean that
# sits on one side of the targets more often than the other.

# %%
test_rng = np.random.default_rng(2)
x_test, y_test = demo.toy_data(test_rng, 1000)
pred = L.predict(model, params, x_test / 4, rng=test_rng, num_samples=200)
test_mean, test_std = pred["mean"] * y_scale, pred["std"] * y_scale
levels = [0.5, 0.8, 0.9, 0.95, 0.99]
coverage = [L.metrics.interval_coverage(y_test, test_mean, test_std, p) for p in levels]
pit = L.metrics.pit_values(y_test / y_scale, pred["samples"], pred["noise_scale"])
density, edges = L.metrics.pit_histogram(pit, 10)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].plot([0, 1], [0, 1], "k:", lw=1)
axes[0].plot(levels, coverage, "o-")
axes[0].set_xlabel("nominal level p")
axes[0].set_ylabel("fraction of fresh targets inside")
axes[1].bar(edges[:-1], density, width=np.diff(edges), align="edge", alpha=0.7)
axes[1].axhline(1, color="k", lw=1, ls=":")
axes[1].set_xlabel("PIT value")
axes[1].set_ylabel("density (1 = calibrated)")
plt.show()
print(f"95% interval coverage on fresh data: {coverage[3]:.3f}")
print("coverage at", {p: round(float(c), 3) for p, c in zip(levels, coverage)})

# %% [markdown]
# ## 4. Out-of-distribution detection on digits
#
# Train a classifier on the digits 0 to 4 only, then show it test digits 0 to 4 (in
# distribution) and 5 to 9 (out of distribution, OOD). A useful uncertainty is higher on the
# OOD ones. Two scores from the Monte Carlo samples of `L.predict`: the predictive entropy
# (total uncertainty) and the mutual information between the prediction and the weights
# (epistemic: how much the sampled networks disagree). `L.metrics.ood_auroc` is the
# probability that a random OOD input scores higher than a random in-distribution one (0.5:
# chance).

# %%
x_train, y_train, x_test, y_test = load_digits_split(0)
known = y_train < 5
rng = np.random.default_rng(3)
clf = L.Model(L.Sequential([L.DenseLocalReparameterization(50, "relu", dtype="float64"),
                            L.DenseLocalReparameterization(5, dtype="float64")]),
              L.CategoricalLikelihood())
clf_params = clf.init(rng, 64)
clf_params, _ = L.fit(clf, clf_params, x_train[known], y_train[known], rng=rng, epochs=40,
                      batch_size=64, optimizer=L.adam(5e-3), verbose=False)

inside, outside = y_test < 5, y_test >= 5
samples = L.predict(clf, clf_params, x_test, rng=rng, num_samples=100)["samples"]   # (S, N, 5)
accuracy = L.metrics.accuracy(y_test[inside], samples[:, inside].mean(axis=0))
entropy = L.metrics.predictive_entropy(samples)
mutual = L.metrics.mutual_information(samples)
print(f"accuracy on test digits 0-4: {accuracy:.3f}")
print(f"AUROC of the predictive entropy: {L.metrics.ood_auroc(entropy[inside], entropy[outside]):.3f}")
print(f"AUROC of the mutual information: {L.metrics.ood_auroc(mutual[inside], mutual[outside]):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, score, name in zip(axes, (entropy, mutual), ("predictive entropy", "mutual information")):
    bins = np.linspace(0, score.max(), 30)
    ax.hist(score[inside], bins, alpha=0.6, density=True, label="digits 0-4 (trained on)")
    ax.hist(score[outside], bins, alpha=0.6, density=True, label="digits 5-9 (never seen)")
    ax.set_xlabel(name)
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Both scores separate the unseen digits far better than chance, but not perfectly: many 5-9s
# look enough like a 0-4 (a 7 like a 1, an 8 like a 3) for the network to be confidently wrong.
# Epistemic uncertainty from a mean-field posterior is a useful signal, not a guarantee.
#
# ## Where next
#
# * `lrtdense.metrics`: the CRPS, the Brier score and its decomposition, expected calibration
#   error and the mixture's NLL for your own models.
# * `lrtdense bench uci --data DIR`: the UCI regression benchmark on its published splits.
