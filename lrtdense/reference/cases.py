"""The reference cases: what each holds (``CASES``) and the tolerances they are compared with;
``lrtdense.reference.generation`` draws their inputs and computes their expected values.

Every case is seeded by its own name (crc32), so the order in which cases are generated never
matters. Inputs are drawn with non-default magnitudes (`loc ~ N(0, 0.5**2)`, untransformed scale
`~ N(-1, 0.5**2)`) so that every term of the math shows in the outputs.

Layer and network cases hold: inputs ``x``, ``g`` (cotangent of the sample-mode outputs),
``params/<name>``, ``noise/<key>``; expected ``outputs/sample``, ``outputs/mean``, ``kl/<term>``,
``kl/total`` and ``grads/<param>``, ``grads/x`` = gradients of L = sum(g * outputs/sample) + kl/total.
Adam cases hold: inputs ``init/<p>``, ``grads/<p>`` (T, ...); expected ``<form>/params/<p>``
(T, ...), the parameters after each step.

Kinds (SPEC.md section 5): ``layer`` and ``network`` (TFP's estimators; recorded against real TFP
0.25 by tests/test_reference_vs_tfp.py), ``edge`` (one TFP layer at an exact activation tie, in
softplus's middle branch, or shaped for the statistical mode; same schema as ``layer``, not part
of that recording), ``dropout`` (the variational dropout layers, single or stacked), ``training``
(k steps of minibatch training from a given order, noise and KL weights) and ``adam``;
``priors`` (one TFP layer, or a network of them, with a prior or divergence beyond the fixed
Normal prior's closed-form KL: scale-mixture, Laplace and Student-t priors with the Monte Carlo
divergence, its extra draw, the closed-form KL scaled by a weight, trainable Normal priors, a
Deterministic bias under a non-Normal prior, exact Laplace ties) and ``dense_variational``
(TFP's DenseVariational); both with the ``layer`` schema plus ``kl_mean/total``, the KL the
mean-mode forward returns (a Monte Carlo term at the posterior mean), and with ``kl/<term>`` the
sample-mode terms (a Monte Carlo term at the case's noise). Recorded against real TFP 0.25 by
tests/test_reference_priors_vs_tfp.py, but for ``prior_cases.NOT_RECORDED`` (added after that
recording). Their tables are in ``lrtdense.reference.prior_cases``; ``Case`` is in
``lrtdense.reference.case_types``.
"""
import numpy as np

from lrtdense import layers as _layers
from lrtdense.dense_variational import DenseVariational
from lrtdense.distributions import LaplacePrior, NormalPrior
from lrtdense.dropout import DenseSparseVariationalDropout, DenseVariationalDropout
from lrtdense.losses import GaussianLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.reference.case_types import ESTIMATORS, Case, tfp_layer
from lrtdense.reference.prior_cases import (MC, MIXTURE, SCALED, dense_variational_cases,
                                            prior_cases)

__all__ = ["CASES", "Case", "tolerances_for", "RTOL", "SAMPLED_DIVERGENCE_KINDS", "ESTIMATORS"]

RTOL = {"float64": 1e-12, "float32": 2e-5}
SAMPLED_DIVERGENCE_KINDS = ("priors", "dense_variational")   # kl/<term> at the noise


def _cases():
    """Every case, by name (long because it is a table: one line or loop per family of cases)."""
    cases = []
    add = cases.append
    for est in ESTIMATORS:
        for dtype in ("float64", "float32"):
            add(Case(f"{est}_{dtype[-2:]}_basic", f"{est}: relu, TFP defaults, x (5, 4), units 3",
                     "layer", dtype, tfp_layer(est, dtype=dtype)))
            add(Case(f"{est}_{dtype[-2:]}_rank3", f"{est}: rank-3 input (2, 3, 4), tanh",
                     "layer", dtype, tfp_layer(est, activation="tanh", dtype=dtype), (2, 3, 4)))
            add(Case(f"{est}_{dtype[-2:]}_zero_rows",
                     f"{est}: rows 1 and 3 of x all zero (zero-variance gradient convention)",
                     "layer", dtype, tfp_layer(est, activation=None, dtype=dtype), zero_rows=(1, 3)))
            add(Case(f"{est}_{dtype[-2:]}_normal_bias_prior",
                     f"{est}: Normal bias posterior, kernel prior N(0.3, 0.5^2), bias prior "
                     f"N(0.5, 2^2), sigmoid", "layer", dtype,
                     tfp_layer(est, activation="sigmoid", dtype=dtype, bias_posterior="normal",
                            kernel_prior=NormalPrior(0.3, 0.5), bias_prior=NormalPrior(0.5, 2.0))))
        add(Case(f"{est}_64_batch1", f"{est}: batch of one, x (1, 4)", "layer", "float64",
                 tfp_layer(est), (1, 4)))
        add(Case(f"{est}_64_units1", f"{est}: one unit", "layer", "float64",
                 tfp_layer(est, units=1, activation=None)))
        add(Case(f"{est}_64_extreme_scales",
                 f"{est}: untransformed scales -40, -20, -5, 5, 20, 40 (softplus saturation)",
                 "layer", "float64", tfp_layer(est, activation=None),
                 untransformed_scale=(-40.0, -20.0, -5.0, 5.0, 20.0, 40.0)))
        # float32's softplus thresholds are at +-13.94 (float64's at +-34.04): -20 and 15, 20
        # fall in the saturated branches, -10 and 5 in log1p(exp(u)); -20 puts scale at eps
        add(Case(f"{est}_32_extreme_scales",
                 f"{est}: float32, untransformed scales -20, -10, -5, 5, 15, 20 (float32 softplus "
                 f"saturation at +-13.94)", "layer", "float32",
                 tfp_layer(est, activation=None, dtype="float32"),
                 untransformed_scale=(-20.0, -10.0, -5.0, 5.0, 15.0, 20.0)))
        add(Case(f"{est}_64_no_prior", f"{est}: no kernel prior (KL = 0), no bias posterior",
                 "layer", "float64", tfp_layer(est, kernel_prior=None, bias_posterior=None)))
        add(Case(f"{est}_64_det_bias_prior",
                 f"{est}: Deterministic bias with Normal prior N(0, 1.5^2): KL = -log p(loc)",
                 "layer", "float64", tfp_layer(est, bias_prior=NormalPrior(0.0, 1.5))))
    for activation in ("linear", "relu", "tanh", "sigmoid", "softplus", "elu"):
        add(Case(f"lrt_64_act_{activation}", f"lrt: activation {activation}", "layer", "float64",
                 tfp_layer("lrt", activation=activation, units=4), (6, 5)))
    for dtype in ("float64", "float32"):
        add(Case(f"lrt_{dtype[-2:]}_network3",
                 "lrt: 3-layer network 6 -> 5 (relu) -> 4 (tanh) -> 3, all LRT", "network", dtype,
                 lambda dtype=dtype: Sequential([
                     _layers.DenseLocalReparameterization(5, "relu", dtype=dtype),
                     _layers.DenseLocalReparameterization(4, "tanh", dtype=dtype),
                     _layers.DenseLocalReparameterization(3, dtype=dtype)]), (7, 6)))
    add(Case("mixed_64_network3",
             "3-layer network: LRT (relu) -> Flipout (tanh, Normal bias) -> Reparameterization",
             "network", "float64",
             lambda: Sequential([
                 _layers.DenseLocalReparameterization(5, "relu", dtype="float64"),
                 _layers.DenseFlipout(4, "tanh", bias_posterior="normal",
                                      bias_prior=NormalPrior(0, 1), dtype="float64"),
                 _layers.DenseReparameterization(3, dtype="float64")]), (7, 6)))
    add(Case("adam_64_trajectory",
             "Adam, both forms, 50 steps from given gradients on w (3, 4) and b (4,)", "adam"))
    cases.extend(_edge_cases())
    cases.extend(_dropout_cases())
    cases.extend(_training_cases())
    cases.extend(prior_cases())
    cases.extend(dense_variational_cases())
    return {c.name: c for c in cases}


# softplus's middle branch log1p(exp(u)) in float64 runs up to u = 34.04; implementations that
# switch to u at 20 (PyTorch's threshold) are off by log1p(exp(-u)): 1e-10 relative at u = 20.25,
# 4e-12 at 23, so the cases stay in (20, 23) plus a few points up to and past the threshold
SOFTPLUS_MIDDLE = (20.25, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0, 30.0, 33.5, 34.5)


def _edge_cases():
    out = []
    for est in ESTIMATORS:
        for act in ("relu", "elu"):
            # all-zero rows and no bias make the pre-activation exactly 0 whatever the order of
            # summation: relu'(0) = 0 and elu'(0) = 1 (TensorFlow's ReluGrad and EluGrad)
            out.append(Case(f"{est}_64_tie_{act}",
                            f"{est}: {act} at exact ties (rows 0 and 2 of x all zero, no bias: "
                            f"z == 0 there)", "edge", "float64",
                            tfp_layer(est, activation=act, bias_posterior=None), (4, 3),
                            zero_rows=(0, 2)))
        out.append(Case(f"{est}_64_softplus_middle",
                        f"{est}: float64 untransformed scales in (20, 34.04), softplus's "
                        f"log1p(exp(u)) branch where a threshold at 20 differs", "edge", "float64",
                        tfp_layer(est, activation=None), untransformed_scale=SOFTPLUS_MIDDLE))
        out.append(Case(f"{est}_64_normal_bias_linear",
                        f"{est}: linear, Normal bias posterior (one draw shared by the batch) with "
                        f"prior N(0, 1): the statistical mode's shared-bias covariance",
                        "edge", "float64",
                        tfp_layer(est, units=3, activation=None, bias_posterior="normal",
                               bias_prior=NormalPrior(0.0, 1.0)), (6, 4)))
    return out


# kernel_log_alpha of DenseVariationalDropout: below, at (the tie of min(log_alpha, 0), whose
# gradient passes in full, as tf.minimum's) and above 0 (clipped: alpha capped at 1)
VD_LOG_ALPHA = (-3.0, -1.5, -0.5, 0.0, 0.5, 1.5)


def _vd(units=3, activation="relu", dtype="float64"):
    return lambda: DenseVariationalDropout(units, activation, dtype=dtype)


def _svd(units=3, activation="relu", dtype="float64"):
    return lambda: DenseSparseVariationalDropout(units, activation, dtype=dtype)


def _dropout_cases():
    out = []
    for dtype in ("float64", "float32"):
        b = dtype[-2:]
        out.append(Case(f"vdrop_{b}_basic", "DenseVariationalDropout: relu, log alpha "
                        "-3..1.5 with ties at 0 (min(log_alpha, 0))", "dropout", dtype,
                        _vd(dtype=dtype), log_alpha=VD_LOG_ALPHA))
        out.append(Case(f"sparsevd_{b}_basic", "DenseSparseVariationalDropout: relu, log alpha "
                        "across the clip at +-8 and the pruning threshold 3", "dropout", dtype,
                        _svd(dtype=dtype)))
    out.append(Case("vdrop_64_linear", "DenseVariationalDropout: linear (statistical mode), "
                    "zero row 1", "dropout", "float64", _vd(activation=None),
                    (6, 4), zero_rows=(1,), log_alpha=VD_LOG_ALPHA))
    out.append(Case("sparsevd_64_linear", "DenseSparseVariationalDropout: linear (statistical "
                    "mode), zero row 1", "dropout", "float64", _svd(activation=None), (6, 4),
                    zero_rows=(1,)))
    out.append(Case("sparsevd_64_network3", "3 sparse VD layers 6 -> 5 (relu) -> 4 (tanh) -> 3: "
                    "sample, mean (every layer in mean mode on the previous mean output) and "
                    "pruned modes", "dropout", "float64",
                    lambda: Sequential([DenseSparseVariationalDropout(5, "relu", dtype="float64"),
                                        DenseSparseVariationalDropout(4, "tanh", dtype="float64"),
                                        DenseSparseVariationalDropout(3, dtype="float64")]),
                    (7, 6)))
    out.append(Case("sparsevd_32_network2", "2 sparse VD layers 5 -> 4 (elu) -> 3, float32, "
                    "rank-3 x (2, 3, 5): pruned mode chains every layer in pruned mode on the "
                    "previous pruned output", "dropout", "float32",
                    lambda: Sequential([DenseSparseVariationalDropout(4, "elu", dtype="float32"),
                                        DenseSparseVariationalDropout(3, dtype="float32")]),
                    (2, 3, 5)))
    return out


def _training_model(dtype):
    return lambda: Model(Sequential([
        _layers.DenseLocalReparameterization(4, "relu", dtype=dtype),
        _layers.DenseFlipout(3, "tanh", bias_posterior="normal", bias_prior=NormalPrior(0.0, 1.0),
                             dtype=dtype),
        _layers.DenseReparameterization(2, dtype=dtype)]), GaussianLikelihood(0.5))


def _training_cases():
    out = []
    for name, form, dtype in (("train_64_kingma", "kingma", "float64"),
                              ("train_64_keras", "keras", "float64"),
                              ("train_32_kingma", "kingma", "float32")):
        out.append(Case(name, f"6 Adam ({form}) steps of a 3 -> 4 (LRT relu) -> 3 (Flipout tanh, "
                        f"Normal bias) -> 2 (Reparameterization) Gaussian regression: N = 10, "
                        f"batches 4, 4, 2 per epoch, 2 epochs, KL weights 0.25 then 1",
                        "training", dtype, _training_model(dtype), (10, 3),
                        training=_adam_steps(form, [0.25, 1.0])))
    out.append(Case("train_64_mc_s2", "6 Adam (kingma) steps, 2 samples per step (num_samples "
                    "2: NLL and KL averaged over 2 noise draws) of a 3 -> 4 (LRT relu, "
                    "scale-mixture prior, Monte Carlo KL at an extra draw) -> 2 "
                    "(DenseVariational, trainable prior, Monte Carlo KL, kl_weight 1/50) "
                    "Gaussian regression: N = 10, batches 4, 4, 2, 2 epochs, KL weights 0.25 "
                    "then 1", "training", "float64", _training_model_mc("float64"), (10, 3),
                    training=_adam_steps("kingma", [0.25, 1.0], num_samples=2)))
    out.append(Case("train_32_keras_mc_s3", "6 Adam (keras) steps, float32, 3 samples per step "
                    "(NLL and KL averaged over 3 noise draws) of a 3 -> 4 (Reparameterization "
                    "tanh, Laplace prior, Monte Carlo KL at the forward's W) -> 2 (Flipout, "
                    "Normal bias, scale-mixture kernel prior, Monte Carlo KL at an extra draw) "
                    "Gaussian regression: N = 10, batches 4, 4, 2, 2 epochs, KL weights 0.5 "
                    "then 1", "training", "float32", _training_model_mc3("float32"), (10, 3),
                    training=_adam_steps("keras", [0.5, 1.0], num_samples=3)))
    out.append(Case("train_64_dv_s1", "6 Adam (keras) steps with num_samples 1 written out "
                    "(noise without a leading draw axis) of a 3 -> 4 (LRT relu) -> 2 "
                    "(DenseVariational, fixed prior, exact KL, kl_weight 1/50) Gaussian "
                    "regression: N = 10, batches 4, 4, 2, 2 epochs, KL weights 0.25 then 1; the "
                    "recorded kl holds DenseVariational's kl_weight", "training", "float64",
                    lambda: Model(Sequential([
                        _layers.DenseLocalReparameterization(4, "relu", dtype="float64"),
                        DenseVariational(2, prior="fixed", kl_weight=SCALED, kl_use_exact=True,
                                         dtype="float64")]), GaussianLikelihood(0.5)), (10, 3),
                    training=_adam_steps("keras", [0.25, 1.0], num_samples=1)))
    # one linear layer, closed-form KL: eligible for the statistical mode's training step
    out.append(Case("train_64_lrt_linear", "6 Adam (kingma) steps of a 3 -> 2 (LRT, linear) "
                    "Gaussian regression: N = 10, batches 4, 4, 2, 2 epochs, KL weights 0.25 "
                    "then 1; statistical mode: the first step's loss and gradients",
                    "training", "float64",
                    lambda: Model(Sequential([_layers.DenseLocalReparameterization(
                        2, dtype="float64")]), GaussianLikelihood(0.5)), (10, 3),
                    training=_adam_steps("kingma", [0.25, 1.0])))
    out.append(Case("train_32_reparam_linear", "6 Adam (keras) steps, float32, of a 3 -> 2 "
                    "(Reparameterization, linear, Normal bias with a Normal prior: one weight "
                    "draw shared by the batch) Gaussian regression: N = 10, batches 4, 4, 2, 2 "
                    "epochs, KL weights 0.5 then 1; statistical mode: the first step's loss and "
                    "gradients", "training", "float32",
                    lambda: Model(Sequential([_layers.DenseReparameterization(
                        2, bias_posterior="normal", bias_prior=NormalPrior(0.0, 1.0),
                        dtype="float32")]), GaussianLikelihood(0.5)), (10, 3),
                    training=_adam_steps("keras", [0.5, 1.0])))
    return out


def _adam_steps(form, kl_weights, **extra):
    """The ``training`` settings of the training cases: batches of 4 of N = 10, 2 epochs, Adam
    (``form``) with step size 0.05, b1 0.9, b2 0.999; ``extra``: num_samples."""
    return {"form": form, "batch_size": 4, "epochs": 2, "kl_weights": kl_weights,
            "step_size": 0.05, "b1": 0.9, "b2": 0.999, **extra}


def _training_model_mc(dtype):
    return lambda: Model(Sequential([
        _layers.DenseLocalReparameterization(4, "relu", kernel_prior=MIXTURE,
                                             kernel_divergence=MC, dtype=dtype),
        DenseVariational(2, prior="trainable", kl_weight=SCALED, dtype=dtype)]),
        GaussianLikelihood(0.5))


def _training_model_mc3(dtype):
    return lambda: Model(Sequential([
        _layers.DenseReparameterization(4, "tanh", kernel_prior=LaplacePrior(0.1, 0.5),
                                        kernel_divergence=MC, dtype=dtype),
        _layers.DenseFlipout(2, bias_posterior="normal", kernel_prior=MIXTURE,
                             kernel_divergence=MC, dtype=dtype)]), GaussianLikelihood(0.5))


CASES = _cases()


def tolerances_for(meta, expected):
    """Per-quantity tolerances: |port - ref| <= rtol * |ref| + atol, atol = rtol * max|ref|, with
    rtol from the case's dtype (SPEC §4). ``meta``: a case.json dict (or a dtype name)."""
    rtol = RTOL[meta if isinstance(meta, str) else meta["dtype"]]
    return {k: {"rtol": rtol, "atol": rtol * float(np.max(np.abs(v))) if np.size(v) else 0.0}
            for k, v in expected.items()}
