"""The priors and initializers of ``lrtdense.distributions`` on torch tensors.

The settings records (``NormalPrior``, ``ScaleMixturePrior``, ``RandomNormal``, ...) are the NumPy
package's, so a torch layer's config is the NumPy layer's, number for number; this module gives
each record its torch meaning, one ``register``-ed function per record type (the records carry
NumPy methods; torch's live here, so that ``import lrtdense`` never imports torch):

* ``log_prob(prior, w, params, name)``: sum over the elements of log p(w); ``params`` the layer's
  parameters by TFP name (a trainable prior keeps its own there), ``name`` "kernel" or "bias";
* ``loc_scale(prior, params, name)``: (loc, scale) of a Normal prior, numbers or tensors;
* ``initialize_(initializer, tensor, generator)``: fills ``tensor`` in place.
"""
import functools

import torch

from lrtdense.distributions import (Constant, LaplacePrior, NormalPrior, RandomNormal,
                                    ScaleMixturePrior, StudentTPrior, TrainableNormalPrior)
from lrtdense.torch import functional as F

__all__ = ["log_prob", "loc_scale", "initialize_"]


@functools.singledispatch
def loc_scale(prior, params, name):
    """(loc, scale) of a Normal prior. Raises TypeError for a prior without a closed-form KL."""
    raise TypeError(f"{prior!r} is not a Normal prior: it has no closed-form KL")


@loc_scale.register
def _(prior: NormalPrior, params, name):
    return prior.loc, prior.scale


@loc_scale.register
def _(prior: TrainableNormalPrior, params, name):
    return (params[f"{name}_prior_loc"],
            F.posterior_scale(params[f"{name}_prior_untransformed_scale"]))


@functools.singledispatch
def log_prob(prior, w, params, name):
    """sum over the elements of log p(w) (w any shape)."""
    raise TypeError(f"no torch log density for the prior {prior!r}")


@log_prob.register(NormalPrior)
@log_prob.register(TrainableNormalPrior)
def _(prior, w, params, name):
    return F.normal_log_prob(w, *loc_scale(prior, params, name))


@log_prob.register
def _(prior: ScaleMixturePrior, w, params, name):
    return F.scale_mixture_log_prob(w, prior.pi, prior.sigma1, prior.sigma2)


@log_prob.register
def _(prior: LaplacePrior, w, params, name):
    return F.laplace_log_prob(w, prior.loc, prior.scale)


@log_prob.register
def _(prior: StudentTPrior, w, params, name):
    return F.student_t_log_prob(w, prior.df, prior.loc, prior.scale)


@functools.singledispatch
def initialize_(initializer, tensor, generator=None):
    """Fills ``tensor`` in place from ``initializer`` (drawing from ``generator`` if random)."""
    raise TypeError(f"no torch initializer for {initializer!r}")


@initialize_.register
def _(initializer: RandomNormal, tensor, generator=None):
    with torch.no_grad():
        return torch.nn.init.normal_(tensor, initializer.mean, initializer.stddev,
                                     generator=generator)


@initialize_.register
def _(initializer: Constant, tensor, generator=None):
    with torch.no_grad():
        return torch.nn.init.constant_(tensor, initializer.value)
