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
# # Solutions to the exercises, and what a wrong answer looks like
#
# **What you will learn:** one way to write each of the four formulas of `02_exercises.py` (the
# LRT mean and standard deviation, the Normal KL, Molchanov's KL approximation, Adam's update),
# why each is written that way, and how the checks report a mistake: at the end, a planted wrong
# answer (a standard deviation without its square root) and the report it gets.
#
# **How long:** about 15 minutes to read; running every cell takes about 5 seconds.
#
# Try the exercises first: the checks tell you what is wrong, and the hint where to look.

# %%
import numpy as np

from lrtdense.exercises import check_exercise

# %% [markdown]
# ## 1. The pre-activations' mean and standard deviation
#
# A dense layer with a random kernel `W` (in, units), `W_ij ~ N(loc_ij, scale_ij**2)`
# independent, maps `x` (..., in) to `x @ W`. Write the mean and the standard deviation of each
# entry of `x @ W`, both of shape (..., units). The layer then samples `mean + std * eps`.
#
# Mind the zero-variance case: an input row of zeros gives a pre-activation that is exactly its
# mean, with standard deviation exactly 0. One of the reference cases has such rows.

# %%
def lrt_moments(x, loc, scale):
    """Mean and standard deviation of x @ W, W ~ N(loc, scale**2) element-wise.

    x: (..., in); loc, scale: (in, units). Returns (mean, std), each (..., units).
    """
    mean = x @ loc
    # a sum of independent terms x_i W_ij: the variances add, x_i**2 scale_ij**2; no epsilon
    # under the square root, so an all-zero row gives exactly 0
    std = np.sqrt((x ** 2) @ (scale ** 2))
    return mean, std


# %%
check_exercise("lrt_moments", lrt_moments)

# %% [markdown]
# ## 2. The KL divergence between two Normals
#
# The layer's loss adds `KL(q || p)` between the posterior `q = N(loc, scale**2)` of each weight
# and its prior `p = N(prior_loc, prior_scale**2)`, summed over all the weights. Write it.
# (`prior_loc` and `prior_scale` are numbers here: the default prior is N(0, 1).)

# %%
def kl_normal(loc, scale, prior_loc, prior_scale):
    """sum over the elements of KL(N(loc, scale**2) || N(prior_loc, prior_scale**2)), a float."""
    per_element = (np.log(prior_scale / scale)
                   + (scale ** 2 + (loc - prior_loc) ** 2) / (2 * prior_scale ** 2) - 0.5)
    return np.sum(per_element)          # summed over the weights, not averaged


# %%
check_exercise("kl_normal", kl_normal)

# %% [markdown]
# ## 3. Molchanov's approximation of the sparse variational dropout KL
#
# Sparse variational dropout puts a log-uniform prior on each weight and a posterior
# `N(theta, alpha theta**2)`; the KL between them depends on `alpha` only and has no closed
# form. Molchanov, Ashukha & Vetrov 2017 (arXiv:1701.05369, eq. 14) fit
#
# `-KL ≈ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1`,
#
# with `k1 = 0.63576`, `k2 = 1.87320`, `k3 = 1.48695`. Write the KL (not its negative), summed
# over the weights, from `log_alpha`. Computing `log(1 + 1/alpha)` as `np.log1p(np.exp(-log_alpha))`
# keeps it accurate for large `log_alpha`.

# %%
def kl_molchanov(log_alpha):
    """sum over the weights of Molchanov et al.'s approximation of KL(q || log-uniform)."""
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    sigmoid = 1 / (1 + np.exp(-(k2 + k3 * log_alpha)))
    minus_kl = k1 * sigmoid - 0.5 * np.log1p(np.exp(-log_alpha)) - k1
    return -np.sum(minus_kl)


# %%
check_exercise("kl_molchanov", kl_molchanov)

# %% [markdown]
# ## 4. A training step: Adam's update
#
# `lrtdense.fit` minimises the negative ELBO with Adam (Kingma & Ba 2015, arXiv:1412.6980,
# Algorithm 1). Write one step for one array: given the parameter `p`, its gradient `g`, the
# moment estimates `m` and `v` (zeros before the first step) and the step number `t` (1 for
# the first step), return the new `(p, m, v)`. The check runs your step 50 times from recorded
# gradients and compares the whole trajectory.

# %%
def adam_step(p, g, m, v, t, step_size, b1, b2, eps):
    """One Adam update; returns (p, m, v) after it."""
    m = b1 * m + (1 - b1) * g                 # first moment
    v = b2 * v + (1 - b2) * g * g             # second moment
    m_hat = m / (1 - b1 ** t)                 # bias corrections: m and v start at 0
    v_hat = v / (1 - b2 ** t)
    return p - step_size * m_hat / (np.sqrt(v_hat) + eps), m, v


# %%
check_exercise("adam_step", adam_step)

# %% [markdown]
# ## What a wrong answer looks like
#
# A common slip: returning the variance `(x**2) @ (scale**2)` as the standard deviation. The
# mean is right, so the check names `std`, shows where the sampled outputs
# `mean + std * eps` (after the layer's activation) differ most from the reference, and hints at
# the square root.

# %%
def lrt_moments_without_sqrt(x, loc, scale):
    return x @ loc, (x ** 2) @ (scale ** 2)


result = check_exercise("lrt_moments", lrt_moments_without_sqrt)
assert not result and {quantity for _, quantity in result.wrong} == {"std"}

# %% [markdown]
# ## Going further
#
# * Gradients: `lrtdense.testing.reference_cases("lrt_*")` also store the gradients of
#   `sum(g * outputs)` with respect to every parameter (`case.expected["grads/..."]`). Write
#   them with the zero-variance convention of `lrtdense/kernels/dense.py` (the limit, 0, where
#   the standard deviation is 0) and check with `lrtdense.testing.assert_case`.
# * A whole port: `lrtdense reference spec` prints the reference set's specification, and
#   `lrtdense reference verify RESULTS_DIR` grades every case at once.
