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
# # Exercises: write the pieces yourself, the golden values grade them
#
# **What you will learn:** to write, in NumPy, the four formulas a Bayesian dense layer is
# trained with: the mean and standard deviation of its pre-activations (the local
# reparameterization trick, with the zero-variance case), the KL divergence between two
# Normals, Molchanov et al.'s approximation of the KL of sparse variational dropout
# (arXiv:1701.05369), and a training step (Adam's update).
#
# **How long:** about 45 minutes; running every cell takes about 5 seconds.
#
# Each exercise is a function to fill in, followed by a check cell. The check runs your function
# on cases of lrtdense's reference set (golden values recorded against TensorFlow Probability,
# `lrtdense.testing.reference_cases`) and compares with `lrtdense.testing.assert_case`, under
# the tolerances stored beside each case. When something is wrong it prints which quantity,
# in which case, the worst elements (the reference value and yours) and a hint. Until you fill
# a function in, its check reports that it raised `NotImplementedError`. The answers are in
# `02_exercises_solutions.py`: try first.

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
    raise NotImplementedError("write the mean and the std of x @ W")


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
    raise NotImplementedError("write the KL between two Normals, summed")


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
    raise NotImplementedError("write Molchanov's KL approximation")


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
    raise NotImplementedError("write one Adam step")


# %%
check_exercise("adam_step", adam_step)

# %% [markdown]
# ## Going further
#
# * Gradients: `lrtdense.testing.reference_cases("lrt_*")` also store the gradients of
#   `sum(g * outputs)` with respect to every parameter (`case.expected["grads/..."]`). Write
#   them with the zero-variance convention of `lrtdense/kernels/dense.py` (the limit, 0, where
#   the standard deviation is 0) and check with `lrtdense.testing.assert_case`.
# * A whole port: `lrtdense reference spec` prints the reference set's specification, and
#   `lrtdense reference verify RESULTS_DIR` grades every case at once.
