"""Likelihoods and the minibatch negative ELBO.

The one place where the KL is scaled (TFP: "make sure to scale this loss such that it is applied
just once per epoch (kl / num_examples_per_epoch)"):

    neg_elbo_minibatch = mean_{i in batch} NLL_i + kl_weight * KL / num_examples

Summed over the minibatches of one epoch and divided by their number, its expectation is the
full-data negative ELBO divided by N: (sum_i NLL_i + KL) / N. Each minibatch carries the KL once
divided by N, never the raw KL and never the KL once per example.

An example is one row x[i] of the data; its NLL_i sums over every other axis of the targets (the
outputs of one rank-3 example (T, units) are T positions of one example, as the KL counts them).
The likelihoods check their targets on every call (``check_targets``) with the same errors
``lrtdense.training.fit`` raises for the whole data set before it trains.
"""
import dataclasses
import math

import numpy as np
import autograd.numpy as anp
from autograd.tracer import getval

from lrtdense import kernels
from lrtdense.checks import check_bool, check_float, check_int
from lrtdense.records import Record, from_config

__all__ = ["gaussian_nll", "softmax_cross_entropy", "neg_elbo", "check_num_examples",
           "GaussianLikelihood", "CategoricalLikelihood", "LIKELIHOODS", "likelihood_from_config"]


def gaussian_nll(y, mean, scale):
    """``-log N(y; mean, scale**2)``, element-wise (broadcasting): ``lrtdense.kernels.gaussian_nll``."""
    return kernels.gaussian_nll(y, mean, scale)


def softmax_cross_entropy(logits, labels):
    """-log softmax(logits)[labels] per example, labels checked first.

    Args:
      logits: (batch, ..., classes).
      labels: integer array of logits.shape[:-1], values in [0, classes).
    Returns:
      logits.shape[:-1] per-position cross-entropy.
    Raises:
      TypeError / ValueError: labels of another dtype, shape or range.
    """
    labels = CategoricalLikelihood().check_targets(labels, np.shape(logits))
    return kernels.categorical_nll(logits, labels)


def check_num_examples(num_examples):
    """``num_examples`` as an int >= 1 (the N of KL / N); a ValueError otherwise."""
    return check_int(num_examples, "num_examples (the N of KL / N)", low=1)


def neg_elbo(nll_mean, kl, num_examples, kl_weight=1.0):
    """Minibatch negative ELBO per example: nll_mean + kl_weight * kl / num_examples.

    Raises:
      ValueError: num_examples not an integer >= 1, or kl_weight not a finite number >= 0.
    """
    num_examples = check_num_examples(num_examples)
    kl_weight = check_float(kl_weight, "kl_weight", low=0)
    return nll_mean + (kl_weight / num_examples) * kl


def _per_example(values):
    """Sums a per-position array (batch, ...) over all but the first axis."""
    if len(values.shape) == 1:
        return values
    return anp.sum(anp.reshape(values, (values.shape[0], -1)), axis=1)


@dataclasses.dataclass(frozen=True)
class GaussianLikelihood(Record):
    """``y ~ N(f(x), scale**2)`` per output dimension; scale fixed or learned.

    Learned: params {"untransformed_noise_scale": ()}, scale = softplus(u) + eps (the kernel
    ``posterior_scale``), initialised at ``scale``. Targets: the outputs' shape, or (N,) for
    outputs (N, 1); real numbers. Config: {"type": "gaussian", "scale", "learn_scale"}.
    """
    scale: float = 1.0
    learn_scale: bool = False
    TYPE = "gaussian"

    def __post_init__(self):
        object.__setattr__(self, "scale", check_float(self.scale, "scale", low=0, open_low=True))
        object.__setattr__(self, "learn_scale", check_bool(self.learn_scale, "learn_scale"))

    def init(self, dtype):
        """The likelihood's params: {} or {"untransformed_noise_scale": 0-d array}."""
        if not self.learn_scale:
            return {}
        return {"untransformed_noise_scale": np.asarray(math.log(math.expm1(self.scale)),
                                                        dtype=dtype)}

    def noise_scale(self, params):
        """The observation noise's standard deviation (a number, or a 0-d traced array)."""
        if self.learn_scale:
            return kernels.posterior_scale(params["untransformed_noise_scale"])
        return self.scale

    def check_targets(self, y, output_shape):
        """y as a float array of ``output_shape`` ((N,) is taken as (N, 1) for one output).

        Raises:
          TypeError: y is not real numbers.
          ValueError: y has another shape.
        """
        y = np.asarray(y)
        output_shape = tuple(output_shape)
        if y.dtype.kind not in "fiu" or y.dtype == bool:
            raise TypeError(f"regression targets must be real numbers, got dtype {y.dtype}")
        if y.ndim == 1 and len(output_shape) == 2 and output_shape[1] == 1:
            y = y[:, None]
        if y.shape != output_shape:
            raise ValueError(f"expected targets of shape {output_shape} to match the outputs, "
                             f"got {y.shape}")
        return y

    def nll(self, params, outputs, y, workspace=None):
        """Per-example NLL summed over the output dimensions: (batch,)."""
        y = self.check_targets(y, np.shape(outputs)).astype(getval(outputs).dtype, copy=False)
        values = kernels.gaussian_nll(y, outputs, self.noise_scale(params), workspace=workspace)
        return _per_example(values)


@dataclasses.dataclass(frozen=True)
class CategoricalLikelihood(Record):
    """y ~ Categorical(softmax(f(x))): integer labels of the outputs' shape without the last axis.
    Config: {"type": "categorical"}."""
    TYPE = "categorical"

    def init(self, dtype):
        """No params: {}."""
        return {}

    def check_targets(self, y, output_shape):
        """y as an integer array of ``output_shape[:-1]`` with values in [0, classes).

        Raises:
          TypeError: y is not integers (one-hot labels are refused: pass class indices).
          ValueError: y has another shape or a value outside [0, classes).
        """
        y = np.asarray(y)
        output_shape = tuple(output_shape)
        k = output_shape[-1]
        if y.dtype.kind not in "iu":
            if y.shape == output_shape:
                raise TypeError(f"one-hot labels are refused: pass integer class indices of "
                                f"shape {output_shape[:-1]} (y.argmax(axis=-1)), got {y.dtype} "
                                f"of shape {y.shape}")
            raise TypeError(f"labels must be integer class indices in [0, {k}), got dtype "
                            f"{y.dtype}")
        if y.shape != output_shape[:-1]:
            hint = " (one-hot labels are refused: pass class indices)" if y.shape == output_shape else ""
            raise ValueError(f"expected labels of shape {output_shape[:-1]} to match logits "
                             f"{output_shape}, got {y.shape}{hint}")
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels must lie in [0, {k}), got values in [{y.min()}, {y.max()}]")
        return y

    def nll(self, params, outputs, y, workspace=None):
        """Per-example cross-entropy: (batch,)."""
        y = self.check_targets(y, np.shape(outputs))
        return _per_example(kernels.categorical_nll(outputs, y, workspace=workspace))


LIKELIHOODS = {cls.TYPE: cls for cls in (GaussianLikelihood, CategoricalLikelihood)}


def likelihood_from_config(config):
    """Rebuilds a likelihood from its ``get_config()`` dict (``lrtdense.records.from_config``).

    Raises:
      TypeError / ValueError: not a dict with a known "type", unknown keys, or bad values.
    """
    return from_config(LIKELIHOODS, config, "likelihood")
