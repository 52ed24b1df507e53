"""The statistical mode of a training step (SPEC.md section 7, "A training step").

Eligible: a ``training`` case whose network is one layer that a layer case would make eligible
(any of the six classes, linear activation) with a KL that is not random, a Gaussian likelihood
of fixed scale sigma, and one draw per step (``num_samples`` 1 or absent). The port runs S >=
10000 independent draws of the case's *first* step (step 0: the examples
``order[0][:batch_size]``, ``kl_weights[0]``, the ``init/`` parameters, fresh noise each draw) and
writes, per draw s:

* ``samples/loss`` (S,): the step's loss `loss_s = mean_i nll_i + kl_weights[0] * KL / N`
  (section 3, "Training cases");
* ``samples/grads/layer_0/<param>`` (S, *param.shape): its gradient, what the optimizer gets.

For the batch's inputs x_b and targets y_b (B rows) and the layer's sample-mode output f,

  `loss = (1 / (B sigma**2)) * (0.5 * sum((f - y_b)**2)) + w * KL / N + U (log sigma + 0.5 log 2 pi)`

so with `f ~ N(m, C)` (``statistical_moments.moments``: the rows of a unit jointly Gaussian for every
class but Flipout, different units uncorrelated) and c = 1 / (B sigma**2):

* `E[loss] = c * 0.5 * sum((m - y_b)**2 + var) + w * KL / N + const`, differentiable in the
  parameters: its autograd gradient is each per-draw gradient's expected value;
* `Var[loss] = c**2 * sum_k (0.5 tr(C_k**2) + (m_k - y_k)' C_k (m_k - y_k))` (the variance of a
  Gaussian quadratic form); for Flipout, whose rows are not jointly Gaussian, the draws' own;
* the per-draw gradient is c times that of the layer's statistical objective
  `sum(g * f) + 0.5 * sum(f**2) + KL / c'` with g = -y_b, whose KL term is deterministic here:
  its variance is c**2 times ``statistical_grads.gradient_variance`` at g = -y_b.

Four families: ``loss_mean`` (the mean loss within z analytic standard errors of E[loss], CLT
over the S draws), ``serial`` (the lag-1 correlation of the standardized losses: each draw
repeated in a row), ``gradients`` and ``gradient_spread`` (``statistical_grads.gradient_rows``),
each at the share of the case budget a layer case's family of the same name has (so a training
case spends less than a layer case's ALPHA_PER_CASE). Catches a KL not divided by N or not
weighted, a loss summed over the batch, a wrong batch, a wrong sigma, and every sampling bug
that moves a gradient's mean or inflates its spread. The shape of the noise (Gaussian or not,
shared across rows or not) is the layer cases' to judge: a port samples its training step with
the layer it certifies there.
"""
import autograd.numpy as anp
import numpy as np
from autograd import grad

from lrtdense import estimators, tree
from lrtdense.kernels.densities import normal_nll
from lrtdense.reference import generation, store
from lrtdense.reference.report import Row
from lrtdense.reference.statistical_grads import gradient_rows, gradient_variance, untested
from lrtdense.reference.statistical_kl import expected_kl, random_kl
from lrtdense.reference.statistical_moments import moments
from lrtdense.reference.statistical_rows import (family_alpha, mean_z, row, serial_row,
                                                 z_quantile)

__all__ = ["eligible", "layer_meta", "first_step", "sample_shapes", "expected_loss",
           "loss_variance", "check", "check_case", "FAMILIES"]

FAMILIES = ("loss_mean", "serial", "gradients", "gradient_spread")
_LAYER_CLASSES = ("DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
                  "DenseVariationalDropout", "DenseSparseVariationalDropout", "DenseVariational")


def layer_meta(meta):
    """The case.json of the training network's one layer as a layer case (kind "layer")."""
    return {"kind": "layer", "dtype": meta["dtype"], "model": meta["model"]["network"]["layers"][0]}


def eligible(meta):
    """True for a training case the statistical mode checks (module docstring)."""
    model = meta.get("model")
    if meta.get("kind") != "training" or not isinstance(model, dict):
        return False
    network, likelihood = model.get("network"), model.get("likelihood")
    h = meta.get("hyperparameters") or {}
    if not (isinstance(network, dict) and isinstance(likelihood, dict) and isinstance(h, dict)):
        return False
    layers = network.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        return False
    config = layers[0].get("config")
    if layers[0].get("class_name") not in _LAYER_CLASSES or not isinstance(config, dict) \
            or config.get("activation") not in ("linear", None):
        return False
    if likelihood.get("type") != "gaussian" or likelihood.get("learn_scale"):
        return False
    if h.get("num_samples", 1) != 1:
        return False
    try:
        return not random_kl(layer_meta(meta))
    except (KeyError, TypeError, ValueError):
        return False


def first_step(meta, inputs):
    """(params, x_b, y_b, sigma, w, N) of the case's first step: the ``init/layer_0`` parameters,
    the batch ``order[0][:batch_size]`` (``generation.minibatches``), the likelihood's scale, the
    first epoch's KL weight and the number of examples."""
    h = meta["hyperparameters"]
    _, idx = generation.minibatches(h, inputs["order"])[0]
    params = tree.unflatten(inputs, "init")["layer_0"]
    return (params, inputs["x"][idx], inputs["y"][idx], float(meta["model"]["likelihood"]["scale"]),
            float(h["kl_weights"][0]), int(h["num_examples"]))


def sample_shapes(inputs):
    """{key: the shape of one draw} a port writes: (S,) loss, (S, *shape) per parameter."""
    shapes = {"samples/loss": ()}
    shapes.update({f"samples/grads/{k[len('init/'):]}": v.shape
                   for k, v in inputs.items() if k.startswith("init/layer_0/")})
    return shapes


def expected_loss(meta, params, xb, yb, sigma, w, n):
    """`E[loss]` of the first step over its noise, differentiable in params (autograd)."""
    single = layer_meta(meta)
    mean, var, _ = moments(single, params, xb)
    y2 = anp.reshape(yb, mean.shape)
    half_z2 = 0.5 * anp.sum((mean - y2) ** 2 + var) / sigma ** 2      # E[0.5 z**2], summed
    nll = normal_nll(half_z2, mean.size * anp.log(sigma), mean.size)
    return nll / xb.shape[0] + w * expected_kl(single, params) / n


def loss_variance(meta, params, xb, yb, sigma):
    """`Var[loss]` of the first step (module docstring), or None where the layer's rows are not
    jointly Gaussian (Flipout)."""
    single = layer_meta(meta)
    if generation.model_from_meta(single).estimator is estimators.FLIPOUT:
        return None
    mean, _, cov = (np.asarray(v, dtype=np.float64) for v in moments(single, params, xb))
    d = mean - np.reshape(np.asarray(yb, dtype=np.float64), mean.shape)      # (B, U)
    c = 1.0 / (xb.shape[0] * sigma ** 2)
    quad = 0.5 * np.einsum("iju,jiu->", cov, cov) + np.einsum("iu,iju,ju->", d, cov, d)
    return c * c * float(quad)


def check_case(name, meta, inputs, expected):
    """Raises ReferenceError unless the case's one layer builds and fits its ``init/layer_0``
    parameters, x, y and order (what the checks compute with: a re-signed set may hold anything)."""
    try:
        params, xb, yb, sigma, _, n = first_step(meta, inputs)
        layer = generation.model_from_meta(layer_meta(meta))
        layer.check_params(params, xb.shape[-1])
        out_shape = layer.compute_output_shape(xb.shape)
        ok = (tuple(out_shape) == tuple(yb.shape) and sigma > 0 and n == inputs["x"].shape[0]
              and inputs["x"].dtype == np.dtype(layer.dtype) and xb.shape[0] > 0)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as err:
        raise store.ReferenceError(f"case {name}: its layer and inputs do not fit together "
                                   f"({type(err).__name__}: {err}); the reference set is "
                                   f"corrupt") from None
    if not ok:
        raise store.ReferenceError(f"case {name}: its x, y, order, likelihood scale or "
                                   f"num_examples do not fit its layer; the reference set is "
                                   f"corrupt")


def check(name, meta, inputs, expected, results, present):
    """The statistical rows of one training case; ``present(name, key, results, shape, dtype)``
    is ``statistical``'s presence and dtype check (a failing Row or None)."""
    params, xb, yb, sigma, w, n = first_step(meta, inputs)
    shapes = sample_shapes(inputs)
    rows, draws = [], {}
    for key, shape in shapes.items():
        problem = present(name, key, results, shape, meta["dtype"])
        if problem is None:
            draws[key] = np.asarray(results[key], dtype=np.float64)
        else:
            rows.append(problem)
    counts = {np.shape(v)[0] for v in draws.values()}
    if len(counts) > 1:
        rows.append(Row(name, "samples/*", note=f"the sampled arrays hold different numbers of "
                                                f"draws: {sorted(counts)}"))
    if rows:
        return rows
    rows.extend(_loss_rows(name, meta, params, xb, yb, sigma, w, n, draws["samples/loss"]))
    rows.extend(_gradient_rows(name, meta, params, xb, yb, sigma, w, n, draws))
    return rows


def _loss_rows(name, meta, params, xb, yb, sigma, w, n, losses):
    """The ``loss_mean`` row and the ``serial`` row of the losses (``statistical_rows.serial_row``
    on the loss standardized by its analytic moments; by its own for Flipout)."""
    want = float(expected_loss(meta, params, xb, yb, sigma, w, n))
    var = loss_variance(meta, params, xb, yb, sigma)
    s = losses.shape[0]
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    floor = 10 * rtol * (1 + abs(want))           # the port's rounding of the loss
    if var is None:
        zl = mean_z(losses, want)
        zstd = (losses - losses.mean()) / max(float(losses.std()), floor)
        errors = "the draws' own standard error (Flipout: rows not jointly Gaussian)"
    else:
        zl = abs(float(losses.mean()) - want) / np.sqrt(var / s + floor ** 2)
        zstd = (losses - want) / np.sqrt(var + floor ** 2)
        errors = "the analytic standard error"
    z = z_quantile(family_alpha("loss_mean"), 1)
    return [row(name, "loss_mean", int(zl > z), zl, z,
                f"mean loss {losses.mean():.6g} ({want:.6g} expected), |z| {zl:.2f} of {z:.2f}",
                f"the mean loss over {s} first steps is {losses.mean():.6g}, expected "
                f"{want:.6g} (|z| {zl:.1f} > {z:.2f} in {errors}): is the loss the batch's mean "
                f"NLL plus kl_weights[0] * KL / num_examples, at the first batch of order?"),
            serial_row(name, zstd[:, None], np.ones((1, 1)))]


def _gradient_rows(name, meta, params, xb, yb, sigma, w, n, draws):
    prefix = "samples/grads/layer_0/"
    analytic = grad(lambda p: expected_loss(meta, p, xb, yb, sigma, w, n))(params)
    mean = {prefix + k: np.asarray(v, dtype=np.float64) for k, v in analytic.items()}
    single = layer_meta(meta)
    c = 1.0 / (xb.shape[0] * sigma ** 2)
    var = gradient_variance(single, params, xb, -np.asarray(yb))
    if var is not None:
        var = {prefix + k[len("samples/grads/"):]: c * c * v for k, v in var.items()
               if k != "samples/grads/x"}
    grads = {key: draws[key] for key in mean}
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    return gradient_rows(name, grads, mean, var, rtol, untested(single, xb))
