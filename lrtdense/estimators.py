"""How a layer samples its kernel term: one small record per estimator.

Every layer of lrtdense has a kernel posterior ``w ~ N(loc, scale**2)``, both (in, units) (the
layer's ``posterior_moments``), and its pre-activations hold the *kernel term* of its input
h (..., in). The estimators differ only in how they sample that term, that is in the noise they
draw and in how the examples of a minibatch share it (Kingma, Salimans & Welling 2015,
arXiv 1506.02557, section 2.2; Wen et al. 2018, arXiv 1803.04386):

| estimator | kernel term (a kernel of ``lrtdense.kernels``) | noise, in draw order |
|---|---|---|
| ``LRT`` | ``lrt``: ``m + s * eps``, ``m = h @ loc``, ``s = sqrt((h**2) @ scale**2)`` | "kernel" (..., units) |
| ``SEPARATE`` | ``per_example``: ``h_b @ (loc + scale * eps_b)`` | "kernel" (n, in, units) |
| ``SINGLE`` | ``reparameterization``: ``h @ (loc + scale * eps)`` | "kernel" (in, units) |
| ``FLIPOUT`` | ``flipout``: ``h @ loc + ((h * s_in) @ (scale * eps)) * s_out`` | "kernel" (in, units), "sign_input" (h's shape), "sign_output" (..., units) |
| ``NONE`` | ``dense``: ``h @ loc`` | (none) |

(n is the number of examples, prod(h.shape[:-1]).) A random bias is drawn after the kernel's
noise, as "bias" (units,), by every noisy estimator. A layer class fixes its own estimator
(``DenseLocalReparameterization.estimator is LRT``); ``layer.forward(..., estimator=...)``
computes the same layer with another one, which is how the gradient-variance study and the
statistical oracle compare them on one set of weights.

A new estimator is one record here and, for a TFP-style layer class, one short subclass of
``lrtdense.layers.MeanFieldDense`` that sets ``estimator``.
"""
import dataclasses
import math
from typing import Callable

from lrtdense import kernels

__all__ = ["Estimator", "LRT", "SEPARATE", "SINGLE", "FLIPOUT", "NONE", "ESTIMATORS", "get"]


@dataclasses.dataclass(frozen=True)
class Estimator:
    """One way of sampling a dense layer's kernel term.

    Attributes:
      name: its short name (``ESTIMATORS``' key).
      label: a name for tables.
      noise_shapes: ``(input_shape, units) -> {key: shape}``, the kernel noise in draw order.
      signs: the noise keys that hold +-1 signs (the others are standard normals).
      term: ``(x, loc, scale, noise, workspace) -> (..., units)``, the kernel term.
      draws_kernel: the term is x @ W with one weight draw W = loc + scale * eps for the call
        (a Monte Carlo divergence may then use that same W).
      examples_covary: the examples of a call share one weight draw, so their outputs covary.
    """
    name: str
    label: str
    noise_shapes: Callable
    signs: tuple
    term: Callable
    draws_kernel: bool = False
    examples_covary: bool = False

    @property
    def noisy(self):
        """Whether the estimator draws anything (all but ``NONE``)."""
        return self.name != "none"


def _output_shape(input_shape, units):
    return tuple(input_shape)[:-1] + (units,)


LRT = Estimator(
    "lrt", "Local reparameterization",
    lambda shape, units: {"kernel": _output_shape(shape, units)}, (),
    lambda x, loc, scale, noise, ws: kernels.lrt(x, loc, scale, noise["kernel"], workspace=ws))

SEPARATE = Estimator(
    "separate", "Separate weight samples",
    lambda shape, units: {"kernel": (math.prod(tuple(shape)[:-1]), tuple(shape)[-1], units)}, (),
    lambda x, loc, scale, noise, ws: kernels.per_example(x, loc, scale, noise["kernel"]))

SINGLE = Estimator(
    "single", "Single weight sample",
    lambda shape, units: {"kernel": (tuple(shape)[-1], units)}, (),
    lambda x, loc, scale, noise, ws: kernels.reparameterization(x, loc, scale, noise["kernel"],
                                                                workspace=ws),
    draws_kernel=True, examples_covary=True)

FLIPOUT = Estimator(
    "flipout", "Flipout",
    lambda shape, units: {"kernel": (tuple(shape)[-1], units), "sign_input": tuple(shape),
                          "sign_output": _output_shape(shape, units)},
    ("sign_input", "sign_output"),
    lambda x, loc, scale, noise, ws: kernels.flipout(x, loc, scale, noise["kernel"],
                                                     noise["sign_input"], noise["sign_output"],
                                                     workspace=ws))

NONE = Estimator(
    "none", "No noise (minimal var.)", lambda shape, units: {}, (),
    lambda x, loc, scale, noise, ws: kernels.dense(x, loc, workspace=ws))

ESTIMATORS = {e.name: e for e in (LRT, SEPARATE, SINGLE, FLIPOUT, NONE)}


def get(estimator):
    """The ``Estimator`` named ``estimator`` (or ``estimator`` itself if it is one).

    Raises:
      ValueError: an unknown name.
    """
    if isinstance(estimator, Estimator):
        return estimator
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)}, got {estimator!r}")
    return ESTIMATORS[estimator]
