"""Element-wise kernels: the posterior scale, softplus, the activations and clip.

Conventions where calculus leaves a choice, all TensorFlow's:

* ties: relu'(0) = 0; elu'(0) = 1 (TF's EluGrad reads the output: g * (y + 1) where y < 0,
  else g); a clip passes the gradient at its bounds (lo <= x <= hi), as ``tf.minimum``,
  ``tf.maximum`` and ``tf.clip_by_value`` do;
* softplus(u) = log1p(exp(u)) (exact to rounding; TF's thresholded formula, which returns
  exp(u) below log(eps) + 2 and u above its negative, agrees to 8.2e-16 relative in float64 and
  4.4e-7 in float32, at its thresholds), with derivative sigmoid(u) = e / (1 + e), e = exp(u);
  where exp overflows the stable forms are used (``common.softplus_and_sigmoid``).

Each activation takes z (any shape) and ``workspace=``, and returns z's shape and dtype.
"""
from typing import NamedTuple

import numpy as np

from lrtdense.autodiff import Fresh, kernel
from lrtdense.kernels.common import like, sigmoid_into, softplus_and_sigmoid

__all__ = ["posterior_scale", "softplus", "relu", "tanh", "sigmoid", "elu", "ACTIVATIONS",
           "clip"]

Array = np.ndarray


class Sigmoid(NamedTuple):
    sigmoid: Array          # sigmoid(u): d softplus(u) / du
    workspace: object


def _times_sigmoid(res, g, wanted):
    return {"u": Fresh(np.multiply(g, res.sigmoid, out=like(res.workspace, res.sigmoid)))}


@kernel
def posterior_scale(u, *, workspace=None):
    """softplus(u) + finfo(dtype).eps, d/du = sigmoid(u): TFP's posterior scale.

    Args:
      u: untransformed scale, float array of any shape (float32 or float64).
      workspace: optional Workspace for the output.
    Returns:
      scale, u's shape and dtype (> 0).
    """


@posterior_scale.forward
def _(u, *, workspace=None):
    scale, sig = softplus_and_sigmoid(u, workspace)
    scale += np.finfo(u.dtype).eps
    return scale, Sigmoid(sig, workspace)


posterior_scale.backward(_times_sigmoid)


@kernel
def softplus(u, *, workspace=None):
    """log(1 + exp(u)), d/du = sigmoid(u) (TF's ``tf.nn.softplus``)."""


@softplus.forward
def _(u, *, workspace=None):
    sp, sig = softplus_and_sigmoid(u, workspace)
    return sp, Sigmoid(sig, workspace)


softplus.backward(_times_sigmoid)


class Output(NamedTuple):
    h: Array                # the activation's output, which its derivative reads
    workspace: object


@kernel
def relu(z, *, workspace=None):
    """max(z, 0); relu'(0) = 0 (TensorFlow's)."""


@relu.forward
def _(z, *, workspace=None):
    return (h := np.maximum(z, 0, out=like(workspace, z))), Output(h, workspace)


@relu.backward
def _(res, g, wanted):
    positive = np.greater(res.h, 0, out=like(res.workspace, res.h, dtype=bool))  # relu'(0) = 0
    return {"z": Fresh(np.multiply(g, positive, out=like(res.workspace, res.h)))}


@kernel
def tanh(z, *, workspace=None):
    """tanh(z), derivative ``1 - tanh(z)**2`` (as TF's TanhGrad)."""


@tanh.forward
def _(z, *, workspace=None):
    return (h := np.tanh(z, out=like(workspace, z))), Output(h, workspace)


@tanh.backward
def _(res, g, wanted):
    h = res.h
    out = np.multiply(h, h, out=like(res.workspace, h))
    out = np.subtract(1, out, out=out)                  # 1 - h**2
    out *= g
    return {"z": Fresh(out)}


@kernel
def sigmoid(z, *, workspace=None):
    """1 / (1 + exp(-z)), derivative sigmoid(z) (1 - sigmoid(z)) (as TF's SigmoidGrad)."""


@sigmoid.forward
def _(z, *, workspace=None):
    return (h := sigmoid_into(z, like(workspace, z))), Output(h, workspace)


@sigmoid.backward
def _(res, g, wanted):
    h = res.h
    out = np.subtract(1, h, out=like(res.workspace, h))     # (1 - h) h g
    out *= h
    out *= g
    return {"z": Fresh(out)}


@kernel
def elu(z, *, workspace=None):
    """z if z > 0 else exp(z) - 1 (Keras' elu, alpha = 1); elu'(0) = 1 (TF's)."""


@elu.forward
def _(z, *, workspace=None):
    h = np.minimum(z, 0, out=like(workspace, z))
    np.expm1(h, out=h)
    positive = np.greater(z, 0, out=like(workspace, z, dtype=bool))
    np.copyto(h, z, where=positive)                     # z if z > 0 else expm1(z)
    return h, Output(h, workspace)


@elu.backward
def _(res, g, wanted):
    h, ws = res.h, res.workspace
    out = np.add(h, 1, out=like(ws, h))                 # TF's EluGrad: g (h + 1) where h < 0,
    at_or_above_0 = np.greater_equal(h, 0, out=like(ws, h, dtype=bool))
    np.copyto(out, 1, where=at_or_above_0)              # else g: elu'(0) = 1
    out *= g
    return {"z": Fresh(out)}


def _linear(z, workspace=None):
    return z


ACTIVATIONS = {"linear": _linear, "relu": relu, "tanh": tanh, "sigmoid": sigmoid,
               "softplus": softplus, "elu": elu}


@kernel
def clip(x, lo, hi, *, workspace=None):
    """min(max(x, lo), hi); the gradient passes where lo <= x <= hi (TF's tie rule)."""


class ClipResiduals(NamedTuple):
    x: Array
    clipped: Array
    workspace: object


@clip.forward
def _(x, lo, hi, *, workspace=None):
    out = np.clip(x, lo, hi, out=like(workspace, x))
    return out, ClipResiduals(x, out, workspace)


@clip.backward
def _(res, g, wanted):
    if wanted != ("x",):
        raise NotImplementedError("clip: only the gradient w.r.t. x")
    ws = res.workspace
    inside = np.equal(res.clipped, res.x, out=like(ws, res.x, dtype=bool))  # lo <= x <= hi
    return {"x": Fresh(np.multiply(g, inside, out=like(ws, res.x)))}
