"""Generating a reference case: ``build`` draws its inputs (seeded by the crc32 of its name, so
the order in which cases are generated never matters; non-default magnitudes so that every term
of the math shows), ``compute`` computes its expected values from them with lrtdense itself. The
schema of what each kind holds is in ``lrtdense.reference.cases``.
"""
import zlib

import numpy as np
from autograd import grad

from lrtdense import registry
from lrtdense import tree
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.reference.cases import SAMPLED_DIVERGENCE_KINDS

__all__ = ["build", "compute", "seed_of", "model_from_meta", "modes_of", "ADAM"]


def seed_of(name):
    """The seed of the case ``name``: the crc32 of its name."""
    return zlib.crc32(name.encode())


def build(case):
    """Draws a case's inputs. Returns (meta, inputs) with meta JSON-serializable."""
    rng = np.random.default_rng(seed_of(case.name))
    meta = {"name": case.name, "description": case.description, "kind": case.kind,
            "dtype": case.dtype, "seed": seed_of(case.name)}
    if case.kind == "adam":
        return _build_adam(rng, meta)
    model = case.make()
    if case.kind == "training":
        return _build_training(rng, meta, case, model)
    meta["model"] = (registry.serialize(model) if not isinstance(model, Sequential)
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
    for key, where, value in case.pinned:      # after every draw: the draws stay the name's
        inputs[key].flat[list(where)] = value
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
                new = _cycled(case.untransformed_scale, value.shape)
        elif name == "posterior_constant":
            # DenseVariational's [loc, untransformed scale] halves: scale = 1e-5 +
            # softplus(log(expm1(1)) + t) around 0.3, as the TFP layers' scales
            n = value.shape[0] // 2
            new = np.concatenate([rng.normal(0.0, 0.5, n), rng.normal(-1.5, 0.5, n)])
        elif name == "kernel_log_alpha":
            new = _cycled(case.log_alpha, value.shape) if case.log_alpha else rng.uniform(
                -3.0, 1.0, value.shape)
        elif name == "kernel_log_sigma2":
            # log alpha = log sigma2 - log(theta**2 + 1e-8) spread over (-11, 11): across the
            # clip at +-8 and the pruning threshold 3
            theta = out["kernel_theta"].astype(np.float64)
            new = np.log(theta * theta + 1e-8) + rng.uniform(-11.0, 11.0, value.shape)
        else:
            new = rng.normal(0.0, 0.5, value.shape)
        out[name] = new.astype(value.dtype)
    return out


def _cycled(values, shape):
    return np.resize(np.array(values, dtype=np.float64), int(np.prod(shape))).reshape(shape)


def model_from_meta(meta):
    """The layer, network or model a case.json's "model" describes."""
    spec = meta["model"]
    if meta["kind"] == "training":
        return Model.from_config(spec)
    if spec["class_name"] == "Sequential":
        return Sequential.from_config(spec["config"])
    return registry.deserialize(spec)


def modes_of(model):
    """The forward modes of a layer or network beyond "sample": "mean", and "pruned" when every
    layer has it (DenseSparseVariationalDropout)."""
    layers = model.layers if isinstance(model, Sequential) else [model]
    extra = ["pruned"] if all("pruned" in getattr(l, "MODES", ()) for l in layers) else []
    return ["mean"] + extra


def compute(meta, inputs):
    """The expected values of a case from its inputs (the reference implementation)."""
    if meta["kind"] == "adam":
        return _compute_adam(meta, inputs)
    if meta["kind"] == "training":
        return _compute_training(meta, inputs)
    model = model_from_meta(meta)
    x, g = inputs["x"], inputs["g"]
    params = tree.unflatten(inputs, "params")
    noise = tree.unflatten(inputs, "noise")
    out_sample, kl = model.forward(params, x, noise=noise)
    expected = {"outputs/sample": out_sample, "kl/total": np.asarray(kl, dtype=meta["dtype"])}
    for mode in modes_of(model):
        expected[f"outputs/{mode}"] = model.forward(params, x, mode=mode)[0]
    if meta["kind"] in SAMPLED_DIVERGENCE_KINDS:
        # a Monte Carlo term is a function of the case's noise; the mean mode's at the mean (in
        # a network, every layer's at its own posterior mean)
        terms = (model.divergences(params, noise) if not isinstance(model, Sequential) else
                 {f"{name}/{term}": value for name, layer in zip(model.names, model.layers)
                  for term, value in layer.divergences(params[name], noise[name]).items()})
        for term, value in terms.items():
            expected[f"kl/{term}"] = np.asarray(value, dtype=meta["dtype"])
        expected["kl_mean/total"] = np.asarray(model.forward(params, x, mode="mean")[1],
                                               dtype=meta["dtype"])
    elif not isinstance(model, Sequential):
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


def _build_training(rng, meta, case, model):
    """Inputs of a training case: data, initial params, the minibatch order of every epoch and
    the noise of every step (drawn as the stored cases draw theirs)."""
    h = dict(case.training)
    n, dim = case.input_shape
    dtype = case.dtype
    meta["model"] = model.get_config()
    h["num_examples"] = n
    h["eps"] = {"kingma": 1e-8, "keras": 1e-7}[h["form"]]
    meta["hyperparameters"] = h
    meta["input_shape"] = [n, dim]
    x = rng.standard_normal((n, dim)).astype(dtype)
    y = rng.standard_normal((n, model.network.units)).astype(dtype)
    params = _spread(model.init(rng, dim)["network"], rng, case)
    inputs = {"x": x, "y": y, **tree.flatten(params, "init/")}
    inputs["order"] = np.stack([rng.permutation(n) for _ in range(h["epochs"])]).astype(np.int64)
    samples = h.get("num_samples", 1)
    for t, (epoch, idx) in enumerate(minibatches(h, inputs["order"])):
        draws = [model.network.sample_noise(rng, (len(idx), dim), normal=_ziggurat)
                 for _ in range(samples)]
        noise = draws[0] if samples == 1 else tree.map(lambda *d: np.stack(d), *draws)
        inputs.update(tree.flatten(noise, f"noise/step_{t}/"))
    return meta, inputs


def minibatches(h, order):
    """(epoch, example indices) of every step: each epoch's order cut into batch_size pieces,
    the last one shorter when batch_size does not divide N."""
    bs, n = h["batch_size"], order.shape[1]
    return [(e, order[e, i:i + bs]) for e in range(h["epochs"]) for i in range(0, n, bs)]


def _compute_training(meta, inputs):
    """Each step: loss = mean NLL over the minibatch + kl_weight[epoch] * KL / N (Model.loss,
    both averaged over num_samples draws when the case has several), its gradient (autograd), one
    Adam update; the params after it and the loss, NLL, KL before it."""
    h = meta["hyperparameters"]
    samples = h.get("num_samples", 1)
    model = Model.from_config(meta["model"])
    opt = adam(h["step_size"], h["b1"], h["b2"], h["eps"], form=h["form"])
    params = {"network": tree.unflatten(inputs, "init"), "likelihood": {}}
    state = opt.init(params)

    def loss_fn(p, xb, yb, noise, weight):
        return model.loss(p, xb, yb, noise=noise, num_examples=h["num_examples"],
                          kl_weight=weight, num_samples=samples)[0]

    grad_fn = grad(loss_fn)
    traj, terms = [], {"loss": [], "nll": [], "kl": []}
    for t, (epoch, idx) in enumerate(minibatches(h, inputs["order"])):
        xb, yb = inputs["x"][idx], inputs["y"][idx]
        noise = tree.unflatten(inputs, f"noise/step_{t}")
        weight = h["kl_weights"][epoch]
        p = opt.get_params(state)
        loss, nll, kl = model.loss(p, xb, yb, noise=noise, num_examples=h["num_examples"],
                                   kl_weight=weight, num_samples=samples)
        for key, value in (("loss", loss), ("nll", nll), ("kl", kl)):
            terms[key].append(value)
        state = opt.update(state, grad_fn(p, xb, yb, noise, weight))
        traj.append(tree.flatten(opt.get_params(state)["network"]))
    dtype = meta["dtype"]
    expected = {f"params/{k}": np.stack([step[k] for step in traj]).astype(dtype)
                for k in traj[0]}
    expected.update({k: np.asarray(v, dtype=dtype) for k, v in terms.items()})
    return expected
