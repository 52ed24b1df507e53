"""The math of lrtdense, each formula once: array kernels with their gradients beside them.

Every layer, loss, study and the training step computes with these functions and nothing else
restates them. Each is a kernel (``lrtdense.autodiff.kernel``): a ``def`` with the formula as its
docstring's first line, a forward pass on plain arrays that keeps the intermediates its gradient
needs in a named record, and a hand-written vector-Jacobian product that reads them and returns
the gradients by argument name; so ``autograd.grad`` of anything built from kernels is exact and
cheap. A kernel takes ``workspace=`` (a ``lrtdense.workspace.Workspace``): its outputs and
intermediates then live in reused buffers instead of fresh allocations, with the same bits.
Inputs keep their dtype: float32 stays float32.

By concern:

* ``dense``: the kernel terms of the estimators (``lrt``, ``reparameterization``, ``flipout``,
  ``per_example``), ``normal_sample``, ``dense``, ``add_bias``; the zero-variance convention;
* ``elementwise``: ``posterior_scale`` (TF's softplus + eps), ``softplus``, the activations,
  ``clip``; the tie conventions;
* ``divergences``: ``kl_normal_normal``, the variational dropout approximations ``kl_kingma`` and
  ``kl_molchanov`` and their parameterizations;
* ``densities``: the priors' log densities;
* ``likelihoods``: ``categorical_nll``, ``gaussian_nll``;
* ``common``: the helpers they share (buffers, stable softplus and sigmoid passes).

The tutorial (docs/tutorial.md) derives ``per_example``, ``lrt`` and ``flipout`` from one
another.
"""
from lrtdense.kernels.dense import (normal_sample, dense, lrt, reparameterization, flipout,
                                    per_example, add_bias)
from lrtdense.kernels.elementwise import (posterior_scale, softplus, relu, tanh, sigmoid, elu,
                                          ACTIVATIONS, clip)
from lrtdense.kernels.divergences import (kl_normal_normal, kl_kingma, kl_molchanov,
                                          scale_from_log_alpha, scale_from_log_variance,
                                          sparse_log_alpha, KINGMA_C, MOLCHANOV_K, THETA2_EPS)
from lrtdense.kernels.densities import (normal_nll, normal_log_prob, normal_log_prob_of_sample,
                                        scale_mixture_log_prob, laplace_log_prob,
                                        student_t_log_prob)
from lrtdense.kernels.likelihoods import categorical_nll, gaussian_nll

__all__ = [
    "posterior_scale", "softplus", "normal_sample", "dense", "lrt", "reparameterization",
    "flipout", "per_example", "add_bias", "relu", "tanh", "sigmoid", "elu", "ACTIVATIONS",
    "clip", "kl_normal_normal", "kl_kingma", "kl_molchanov", "scale_from_log_alpha",
    "scale_from_log_variance", "sparse_log_alpha", "KINGMA_C", "MOLCHANOV_K", "THETA2_EPS",
    "categorical_nll", "gaussian_nll", "normal_nll", "normal_log_prob",
    "normal_log_prob_of_sample", "scale_mixture_log_prob", "laplace_log_prob",
    "student_t_log_prob",
]
