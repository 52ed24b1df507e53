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
# # The local reparameterization trick, by hand
#
# **What you will learn:** what a Bayesian dense layer computes when every weight is a Normal
# random variable; that each of its pre-activations is itself Normal, with a mean and a variance
# you can write down; that the local reparameterization trick (LRT, Kingma, Salimans & Welling
# 2015, arXiv:1506.02557) samples those pre-activations directly instead of the weights; why that
# makes the gradient less noisy (the covariance term of section 2.2, measured here); and how
# Flipout (Wen et al. 2018, arXiv:1803.04386) gets a similar effect with random signs.
#
# **How long:** about 20 minutes to read and play with; running every cell takes about 15
# seconds on a laptop CPU. Needs `pip install -e ".[examples]"` (matplotlib, scikit-learn).
# The long-form companion is `docs/tutorial.md`; the exercises are in `02_exercises.py`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import lrtdense as L
from lrtdense.datasets import load_digits_split

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A Bayesian dense layer by hand
#
# A dense layer maps inputs `x` of shape (N, in) to pre-activations `x @ W + b`. In a Bayesian
# layer the kernel `W` (in, units) is random: under the mean-field posterior each weight is an
# independent Normal, `W_ij ~ N(loc_ij, scale_ij**2)`. TensorFlow Probability stores `scale` as
# `softplus(untransformed_scale)` so that it stays positive; lrtdense uses TFP's names.

# %%
layer = L.DenseLocalReparameterization(3, dtype="float64")
params = layer.init(rng, 4)                   # TFP's initializers: loc ~ N(0, 0.1), scale ~ 0.05
params["kernel_posterior_untransformed_scale"] += 2.0   # widen the posterior so the noise shows
loc = params["kernel_posterior_loc"]                                     # (4, 3)
scale = np.logaddexp(0.0, params["kernel_posterior_untransformed_scale"])   # softplus, (4, 3)
bias = params["bias_posterior_loc"]                                      # (3,)
x = rng.standard_normal((5, 4))                                          # 5 examples

# The naive way: one weight sample per example (the "separate" estimator).
W = loc + scale * rng.standard_normal((5, 4, 3))          # (examples, in, units)
naive = np.einsum("ni,niu->nu", x, W) + bias
print("pre-activations of 5 examples, one weight sample each:\n", naive.round(3))

# %% [markdown]
# ## 2. The distribution of one pre-activation
#
# For a fixed input row `x`, the pre-activation `b_j = sum_i x_i W_ij` is a sum of independent
# Normals, so it is Normal too, with
#
# `mean m_j = sum_i x_i loc_ij` and `variance v_j = sum_i x_i**2 scale_ij**2`,
#
# that is `m = x @ loc` and `s = sqrt((x**2) @ (scale**2))`. Let us check it by sampling the
# weights 20,000 times for the first example.

# %%
draws = 20_000
W_many = loc + scale * rng.standard_normal((draws, 4, 3))
b_first = np.einsum("i,diu->du", x[0], W_many)[:, 0]     # first unit, first example
m = x @ loc
s = np.sqrt((x ** 2) @ (scale ** 2))
print(f"sampled: mean {b_first.mean():.4f}, std {b_first.std():.4f}")
print(f"formula: mean {m[0, 0]:.4f}, std {s[0, 0]:.4f}")
assert abs(b_first.mean() - m[0, 0]) < 5 * s[0, 0] / np.sqrt(draws)
assert abs(b_first.std() / s[0, 0] - 1) < 0.02

grid = np.linspace(m[0, 0] - 4 * s[0, 0], m[0, 0] + 4 * s[0, 0], 200)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.hist(b_first, bins=80, density=True, alpha=0.5, label="x @ W, W sampled 20,000 times")
ax.plot(grid, np.exp(-0.5 * ((grid - m[0, 0]) / s[0, 0]) ** 2) / (s[0, 0] * np.sqrt(2 * np.pi)),
        "k", label="N(m, s²) from the formula")
ax.set_xlabel("pre-activation of unit 0, example 0")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 3. The trick: sample the pre-activation, not the weights
#
# Since we know the distribution of `x @ W`, we can draw from it directly: `m + s * eps` with
# `eps ~ N(0, 1)` of shape (N, units), one per example and unit. That is the same distribution
# as the naive layer (a separate weight sample per example) at the cost of two matrix products
# instead of N. lrtdense's `DenseLocalReparameterization` computes exactly that; with its noise
# given explicitly, we can reproduce it to the last bit of float64.

# %%
eps = rng.standard_normal((5, 3))
by_hand = m + s * eps + bias
outputs, kl = layer.forward(params, x, noise={"kernel": eps})
print("largest difference from lrtdense:", np.abs(outputs - by_hand).max())
assert np.allclose(outputs, by_hand, rtol=1e-12, atol=1e-12)
print(f"and the layer's KL(q || N(0, 1)) over its 12 weights: {float(kl):.3f}")

# %% [markdown]
# ## 4. Why it matters: the variance of the gradient
#
# Training uses minibatch gradients. With one weight sample shared by the minibatch (the plain
# reparameterization trick), the M examples' gradients all see the same weight noise, so they are
# correlated. Kingma et al. write the variance of the minibatch estimate of the data term as
#
# `Var = N² [ (1/M) Var(L_i) + ((M - 1)/M) Cov(L_i, L_j) ]`,
#
# and the covariance term does not shrink as M grows. With LRT every example has its own noise,
# the covariance from weight noise is zero, and the variance keeps falling as 1/M.
#
# `lrtdense.studies.gradient_variance` measures it on any model: it draws minibatches (the same
# ones for every estimator), draws each estimator's noise, and reports the variance of the
# gradient with respect to each layer's weight means, averaged over the weights.

# %%
x_train, y_train, _, _ = load_digits_split(0)
net = L.Model(L.Sequential([L.DenseLocalReparameterization(32, "relu", dtype="float64"),
                            L.DenseLocalReparameterization(10, dtype="float64")]),
              L.CategoricalLikelihood())
net_params = net.init(rng, 64)
net_params, _ = L.fit(net, net_params, x_train, y_train, rng=rng, epochs=5, batch_size=64,
                      optimizer=L.adam(1e-2), verbose=False)

batch_sizes = (1, 8, 64, 512)
estimators = ("lrt", "single", "flipout")
variance = {e: [] for e in estimators}
for M in batch_sizes:
    table = L.studies.gradient_variance(net, net_params, x_train, y_train, estimators,
                                        batch_size=M, num_draws=60, rng=np.random.default_rng(M))
    for e in estimators:
        variance[e].append(table.variance[e]["layer_0"])
print(table)                                    # the table at M = 512

# %% [markdown]
# Now fit the formula above, `a / M + c (1 - 1/M)`, to each estimator: `a` is the per-example
# variance and `c` the covariance term. A shared weight sample has a large `c`: its variance
# stops falling. LRT's and Flipout's `c` are zero within the noise of 60 draws (a few units,
# either sign, against a per-example term `a` of thousands).

# %%
def fit_terms(v):
    """Least squares of v(M) = a / M + c (1 - 1 / M) on the measured batch sizes."""
    M = np.array(batch_sizes, dtype=float)
    design = np.stack([1 / M, 1 - 1 / M], axis=1)
    (a, c), *_ = np.linalg.lstsq(design / np.array(v)[:, None], np.ones(len(M)), rcond=None)
    return a, c


fig, ax = plt.subplots(figsize=(6.5, 3.8))
Ms = np.geomspace(1, 512, 50)
for e, style in zip(estimators, ("o", "s", "^")):
    a, c = fit_terms(variance[e])
    line, = ax.loglog(batch_sizes, variance[e], style, label=f"{e}: a = {a:.2g}, c = {c:.2g}")
    ax.loglog(Ms, a / Ms + c * (1 - 1 / Ms), "-", color=line.get_color(), lw=1)
ax.set_xlabel("minibatch size M")
ax.set_ylabel("variance of the gradient\nw.r.t. the bottom layer's means")
ax.legend(fontsize=8)
plt.show()

print(f"at M = 512 a shared sample is {variance['single'][-1] / variance['lrt'][-1]:.1f} times "
      f"noisier than LRT")
assert variance["single"][-1] > 2 * variance["lrt"][-1]

# %% [markdown]
# ## 5. Flipout: one weight sample, decorrelated by random signs
#
# Flipout keeps a single weight perturbation `dW = scale * eps` but multiplies it, for each
# example, by random signs on its inputs and outputs:
#
# `x @ loc + ((x * sign_in) @ dW) * sign_out`.
#
# Each example's pre-activations still have the right distribution's mean and variance, and the
# sign flips make the examples' noise nearly uncorrelated, so its variance (the triangles above)
# is close to LRT's while it still samples weights (which LRT cannot do for convolutions).

# %%
flip = L.DenseFlipout(3, dtype="float64")
noise = flip.sample_noise(rng, x.shape)            # kernel (4, 3), sign_input (5, 4), sign_output (5, 3)
dW = scale * noise["kernel"]
by_hand = x @ loc + ((x * noise["sign_input"]) @ dW) * noise["sign_output"] + bias
outputs, _ = flip.forward(params, x, noise=noise)
assert np.allclose(outputs, by_hand, rtol=1e-12, atol=1e-12)
print("Flipout by hand agrees with lrtdense.DenseFlipout:", np.abs(outputs - by_hand).max())

# %% [markdown]
# ## Where next
#
# * `02_exercises.py`: write the LRT moments, the KLs and an Adam step yourself; the reference
#   set grades them.
# * `03_uncertainty_in_practice.py`: what the trained posterior tells you.
# * `docs/tutorial.md` sections 4 to 6: the full study and what each estimator costs.
