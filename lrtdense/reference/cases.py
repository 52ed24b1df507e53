"""The reference cases: what each holds, how its inputs are drawn, and how its values are computed.

Every case is seeded by its own name (crc32), so the order in which cases are generated never
matters. Inputs are drawn with non-default magnitudes (loc ~ N(0, 0.5**2), untransformed scale
~ N(-1, 0.5**2)) so that every term of the math shows in the outputs.

Layer and network cases hold: inputs ``x``, ``g`` (cotangent of the sample-mode outputs),
``params/<name>``, ``noise/<key>``; expected ``outputs/sample``, ``outputs/mean``, ``kl/<term>``,
``kl/total`` and ``grads/<param>``, ``grads/x`` = gradients of L = sum(g * outputs/sample) + kl/total.
Adam cases hold: inputs ``init/<p>``, ``grads/<p>`` (T, ...); expected ``<form>/params/<p>``
(T, ...), the parameters after each step.
"""
import dataclasses
import zlib

import numpy as np
from autograd import grad

from lrtdense import layers as _layers
from lrtdense import tree
from lrtdense.distributions import NormalPrior
from lrtdense.network import Sequential
from lrtdense.optimizers import adam

__all__ = ["CASES", "Case", "compute", "build", "tolerances_for"]

RTOL = {"float64": 1e-12, "float32": 2e-5}
ESTIMATORS = {"lrt": _layers.DenseLocalReparameterization,
              "reparam": _layers.DenseReparameterization,
              "flipout": _layers.DenseFlipout}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    kind: str            # "layer", "network" or "adam"
    dtype: str = "float64"
    make: object = None  # () -> layer / network (layer and network cases)
    input_shape: tuple = (5, 4)
    zero_rows: tuple = ()
    untransformed_scale: tuple = ()  # values cycled into every untransformed scale


def _layer(est, units=3, activation="relu", dtype="float64", **kwargs):
    return lambda: ESTIMATORS[est](units, activation, dtype=dtype, **kwargs)


def _cases():
    cases = []
    add = cases.append
    for est in ESTIMATORS:
        for dtype in ("float64", "float32"):
            add(Case(f"{est}_{dtype[-2:]}_basic", f"{est}: relu, TFP defaults, x (5, 4), units 3",
                     "layer", dtype, _layer(est, dtype=dtype)))
            add(Case(f"{est}_{dtype[-2:]}_rank3", f"{est}: rank-3 input (2, 3, 4), tanh",
                     "layer", dtype, _layer(est, activation="tanh", dtype=dtype), (2, 3, 4)))
            add(Case(f"{est}_{dtype[-2:]}_zero_rows",
                     f"{est}: rows 1 and 3 of x all zero (zero-variance gradient convention)",
                     "layer", dtype, _layer(est, activation=None, dtype=dtype), zero_rows=(1, 3)))
            add(Case(f"{est}_{dtype[-2:]}_normal_bias_prior",
                     f"{est}: Normal bias posterior, kernel prior N(0.3, 0.5^2), bias prior "
                     f"N(0.5, 2^2), sigmoid", "layer", dtype,
                     _layer(est, activation="sigmoid", dtype=dtype, bias_posterior="normal",
                            kernel_prior=NormalPrior(0.3, 0.5), bias_prior=NormalPrior(0.5, 2.0))))
        add(Case(f"{est}_64_batch1", f"{est}: batch of one, x (1, 4)", "layer", "float64",
                 _layer(est), (1, 4)))
        add(Case(f"{est}_64_units1", f"{est}: one unit", "layer", "float64",
                 _layer(est, units=1, activation=None)))
        add(Case(f"{est}_64_extreme_scales",
                 f"{est}: untransformed scales -40, -20, -5, 5, 20, 40 (softplus saturation)",
                 "layer", "float64", _layer(est, activation=None),
                 untransformed_scale=(-40.0, -20.0, -5.0, 5.0, 20.0, 40.0)))
        # float32's softplus thresholds are at +-13.94 (float64's at +-34.04): -20 and 15, 20
        # fall in the saturated branches, -10 and 5 in log1p(exp(u)); -20 puts scale at eps
        add(Case(f"{est}_32_extreme_scales",
                 f"{est}: float32, untransformed scales -20, -10, -5, 5, 15, 20 (float32 softplus "
                 f"saturation at +-13.94)", "layer", "float32",
                 _layer(est, activation=None, dtype="float32"),
                 untransformed_scale=(-20.0, -10.0, -5.0, 5.0, 15.0, 20.0)))
        add(Case(f"{est}_64_no_prior", f"{est}: no kernel prior (KL = 0), no bias posterior",
                 "layer", "float64", _layer(est, kernel_prior=None, bias_posterior=None)))
        add(Case(f"{est}_64_det_bias_prior",
                 f"{est}: Deterministic bias with Normal prior N(0, 1.5^2): KL = -log p(loc)",
                 "layer", "float64", _layer(est, bias_prior=NormalPrior(0.0, 1.5))))
    for activation in ("linear", "relu", "tanh", "sigmoid", "softplus", "elu"):
        add(Case(f"lrt_64_act_{activation}", f"lrt: activation {activation}", "layer", "float64",
                 _layer("lrt", activation=activation, units=4), (6, 5)))
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
    return {c.name: c for c in cases}


CASES = _cases()


def tolerances_for(meta, expected):
    """Per-quantity tolerances: |port - ref| <= rtol * |ref| + atol, atol = rtol * max|ref|, with
    rtol from the case's dtype (SPEC §4). ``meta``: a case.json dict (or a dtype name)."""
    rtol = RTOL[meta if isinstance(meta, str) else meta["dtype"]]
    return {k: {"rtol": rtol, "atol": rtol * float(np.max(np.abs(v))) if np.size(v) else 0.0}
            for k, v in expected.items()}


def seed_of(name):
    return zlib.crc32(name.encode())


def build(case):
    """Draws a case's inputs. Returns (meta, inputs) with meta JSON-serializable."""
    rng = np.random.default_rng(seed_of(case.name))
    meta = {"name": case.name, "description": case.description, "kind": case.kind,
            "dtype": case.dtype, "seed": seed_of(case.name)}
    if case.kind == "adam":
        return _build_adam(rng, meta)
    model = case.make()
    meta["model"] = (_layers.serialize(model) if case.kind == "layer"
                     else {"class_name": "Sequential", "config": model.get_config()})
    x = rng.standard_normal(case.input_shape).astype(case.dtype)
    for r in case.zero_rows:
        x[r] = 0
    raw = model.init(rng, case.input_shape[-1])
    params = _spread(raw, rng, case)
    noise = model.sample_noise(rng, x.shape, normal=_ziggurat)
    g = rng.standard_normal(model.compute_output_shape(x.shape)).astype(case.dtype)
    meta["input_shape"] = list(case.input_shape)
    inputs = {"x": x, "g": g, **tree.flatten(params, "params/"), **tree.flatten(noise, "noise/")}
    return meta, inputs


def _ziggurat(rng, shape, dtype):
    """The normal noise of the stored cases: ``rng.standard_normal(shape, dtype)``, as this
    generator has always drawn it. The stored noise is an input of the oracle, whatever sampler
    the layers use by default (``lrtdense.layers.standard_normal``: Box-Muller in float32 since
    2026-11-26); keeping this one keeps the committed cases byte-identical across such changes."""
    return rng.standard_normal(shape, dtype=dtype)


def _spread(params, rng, case):
    """Replaces init's small default draws with larger, non-default values."""
    if all(isinstance(v, dict) for v in params.values()):  # a network: one dict per layer
        return {k: _spread(v, rng, case) for k, v in params.items()}
    out = {}
    for name, value in params.items():
        if "untransformed_scale" in name:
            new = rng.normal(-1.0, 0.5, value.shape)
            if case.untransformed_scale:
                pattern = np.resize(np.array(case.untransformed_scale), value.size)
                new = pattern.reshape(value.shape)
        else:
            new = rng.normal(0.0, 0.5, value.shape)
        out[name] = new.astype(value.dtype)
    return out


def model_from_meta(meta):
    spec = meta["model"]
    if spec["class_name"] == "Sequential":
        return Sequential.from_config(spec["config"])
    return _layers.deserialize(spec)


def compute(meta, inputs):
    """The expected values of a case from its inputs (the reference implementation)."""
    if meta["kind"] == "adam":
        return _compute_adam(meta, inputs)
    model = model_from_meta(meta)
    x, g = inputs["x"], inputs["g"]
    params = tree.unflatten(inputs, "params")
    noise = tree.unflatten(inputs, "noise")
    out_sample, kl = model.forward(params, x, noise=noise)
    out_mean, _ = model.forward(params, x, mode="mean")
    expected = {"outputs/sample": out_sample, "outputs/mean": out_mean,
                "kl/total": np.asarray(kl, dtype=meta["dtype"])}
    if meta["kind"] == "layer":
        for term, value in model.divergences(params).items():
            expected[f"kl/{term}"] = np.asarray(value, dtype=meta["dtype"])
    else:
        for name, layer in zip(model.names, model.layers):
            for term, value in layer.divergences(params[name]).items():
                expected[f"kl/{name}/{term}"] = np.asarray(value, dtype=meta["dtype"])

    def objective(p, x):
        out, k = model.forward(p, x, noise=noise)
        return np.sum(g * out) + k

    expected.update(tree.flatten(grad(objective)(params, x), "grads/"))
    expected["grads/x"] = grad(objective, 1)(params, x)
    return expected


ADAM = {"steps": 50, "step_size": 0.01, "b1": 0.9, "b2": 0.999,
        "eps": {"kingma": 1e-8, "keras": 1e-7}}


def _build_adam(rng, meta):
    steps = ADAM["steps"]
    inputs = {"init/w": rng.standard_normal((3, 4)), "init/b": rng.standard_normal(4)}
    scales = 10.0 ** rng.uniform(-3, 1, steps)
    inputs["grads/w"] = rng.standard_normal((steps, 3, 4)) * scales[:, None, None]
    inputs["grads/b"] = rng.standard_normal((steps, 4)) * scales[:, None]
    inputs["grads/w"][:, 1, 2] = 0.0
    inputs["grads/w"][[0, 20]] = 0.0
    inputs["grads/b"][[0, 20]] = 0.0
    meta["hyperparameters"] = {k: v for k, v in ADAM.items()}
    return meta, inputs


def _compute_adam(meta, inputs):
    h = meta["hyperparameters"]
    expected = {}
    for form in ("kingma", "keras"):
        opt = adam(h["step_size"], h["b1"], h["b2"], h["eps"][form], form=form)
        state = opt.init({"w": inputs["init/w"], "b": inputs["init/b"]})
        traj = {"w": [], "b": []}
        for t in range(h["steps"]):
            state = opt.update(state, {"w": inputs["grads/w"][t], "b": inputs["grads/b"][t]})
            for k in traj:
                traj[k].append(state.params[k])
        for k, v in traj.items():
            expected[f"{form}/params/{k}"] = np.stack(v)
    return expected
