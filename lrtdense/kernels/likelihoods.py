"""Likelihood kernels: the negative log-likelihood per position of a categorical (softmax) and
of a Gaussian model."""
from typing import NamedTuple

import numpy as np

from lrtdense.autodiff import Fresh, kernel
from lrtdense.kernels.common import as_matrix, like, summed_to
from lrtdense.kernels.densities import normal_nll

__all__ = ["categorical_nll", "gaussian_nll"]

Array = np.ndarray


@kernel
def categorical_nll(logits, labels, *, workspace=None):
    """log sum_k exp(logits_k) - logits[label] per position: -log softmax(logits)[label].

    By logsumexp (the maximum subtracted); gradient g (softmax(logits) - onehot(label)),
    differentiable in the logits.

    Args:
      logits: (..., k).
      labels: integers of logits.shape[:-1] in [0, k) (checked by the likelihood, not here).
      workspace: optional Workspace.
    Returns:
      logits.shape[:-1].
    """


class SoftmaxResiduals(NamedTuple):
    softmax: Array          # (n, k)
    rows: Array             # arange(n)
    labels: Array           # (n,)
    logits_shape: tuple
    workspace: object


@categorical_nll.forward
def _(logits, labels, *, workspace=None):
    z = as_matrix(logits)
    rows, labels = np.arange(z.shape[0]), labels.reshape(-1)
    top = z.max(axis=1, keepdims=True)
    p = np.subtract(z, top, out=like(workspace, z))
    np.exp(p, out=p)
    total = p.sum(axis=1, keepdims=True)
    nll = np.log(total[:, 0]) + top[:, 0] - z[rows, labels]
    p /= total                                          # softmax, kept for the gradient
    res = SoftmaxResiduals(p, rows, labels, logits.shape, workspace)
    return nll.reshape(logits.shape[:-1]), res


@categorical_nll.backward
def _(res, g, wanted):
    if wanted != ("logits",):
        raise NotImplementedError("categorical_nll: only the gradient w.r.t. the logits")
    gv = np.reshape(g, (-1, 1))
    out = np.multiply(res.softmax, gv, out=like(res.workspace, res.softmax))   # g softmax
    out[res.rows, res.labels] -= gv[:, 0]                                      # - g onehot
    return {"logits": Fresh(out.reshape(res.logits_shape))}


@kernel
def gaussian_nll(y, mean, scale, *, workspace=None):
    """``0.5 ((y - mean) / scale)**2 + log(scale) + 0.5 log(2 pi): -log N(y; mean, scale**2)``.

    Element-wise, broadcasting. Gradients (z = (y - mean) / scale): dy = g z / scale,
    dmean = -g z / scale, ``dscale = g (1 - z**2) / scale``.

    Args:
      y, mean: arrays.
      scale: a number or array, > 0.
      workspace: optional Workspace.
    Returns:
      the broadcast shape.
    """


class GaussianResiduals(NamedTuple):
    z: Array
    scale: object
    y_shape: tuple
    mean_shape: tuple
    workspace: object


@gaussian_nll.forward
def _(y, mean, scale, *, workspace=None):
    ws = workspace
    z = np.subtract(y, mean, out=like(ws, mean, np.broadcast_shapes(np.shape(y), mean.shape)))
    z /= scale
    half_z2 = np.multiply(z, z, out=like(ws, z))
    half_z2 *= 0.5
    out = normal_nll(half_z2, np.log(scale))
    return out, GaussianResiduals(z, scale, np.shape(y), mean.shape, ws)


@gaussian_nll.backward
def _(res, g, wanted):
    z, scale = res.z, res.scale
    grads = {}
    if "y" in wanted:
        grads["y"] = Fresh(summed_to(g * z / scale, res.y_shape))
    if "mean" in wanted:                                # -g z / scale
        out = np.multiply(g, z, out=like(res.workspace, z))
        out /= -scale
        grads["mean"] = Fresh(summed_to(out, res.mean_shape))
    if "scale" in wanted:
        grads["scale"] = Fresh(summed_to(g * (1 - z * z) / scale, np.shape(scale)))
    return grads
