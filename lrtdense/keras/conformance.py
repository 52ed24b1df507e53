"""``lrtdense.keras`` as an adapter of the conformance kit (``lrtdense.conformance``).

    KERAS_BACKEND=jax   pytest --lrtdense-port=lrtdense.keras.conformance:Adapter
    KERAS_BACKEND=torch lrtdense reference verify --port lrtdense.keras.conformance:Adapter

For each case the layers are built from ``case.model`` (the lrtdense/TFP JSON config) with
``lrtdense.keras.from_lrtdense_config``, given ``case.params`` in TFP's order, and called with
``noise=`` (sample mode) and ``mode="mean"`` / ``"pruned"``; the divergences are read from
``layer.losses`` (``divergence_names()`` order). The gradients of
L = sum(g * outputs/sample) + kl/total w.r.t. every weight and x come from the backend's own
autodiff: ``layer.stateless_call`` under ``jax.value_and_grad`` on JAX, ``torch.autograd.grad``
on PyTorch. Importing this module on the JAX backend turns on ``jax_enable_x64`` (the float64
cases need it; float32 arrays stay float32).

Adam cases run ``KingmaAdam`` (kingma) and ``TFKerasAdam`` (keras) on the case's gradients.
Training cases (SPEC.md section 3, "Training cases") put the network in a ``keras.Sequential``
with the case's initial weights; each step calls it on its minibatch with its noise, takes the
loss ``lrtdense.losses.neg_elbo`` of ``minibatch_nll_kl`` (mean Gaussian NLL, KL / N, both
averaged over the step's draws), its gradients by ``lrtdense.keras.value_and_grad`` and one
``optimizer.apply``.

``sample(case, draws, seed)`` (SPEC.md section 7, JAX and PyTorch backends): ``draws`` calls,
each with the layer's own ``keras.random`` draws from a ``SeedGenerator`` state of its own, and
their gradients of L_s = sum(g * out) + 0.5 sum(out^2) + kl by ``per_draw_grad`` (``jax.vmap``
of ``jax.grad`` over the seed states on JAX, a loop of ``torch.autograd.grad`` on PyTorch); for a
training case, the first step's loss and gradients, drawn the same way.
"""
import zlib

import keras
import numpy as np
from keras import ops

from lrtdense import tree
from lrtdense.keras import from_lrtdense_config, kernels
from lrtdense.keras.gradients import per_draw_grad, value_and_grad
from lrtdense.keras.optimizers import KingmaAdam, TFKerasAdam
from lrtdense.losses import neg_elbo

__all__ = ["Adapter", "build", "build_layers", "evaluate", "minibatch_nll_kl", "OPTIMIZERS"]

OPTIMIZERS = {"kingma": KingmaAdam, "keras": TFKerasAdam}   # SPEC.md section 3's two forms

BACKEND = keras.backend.backend()
if BACKEND == "jax":
    import jax
    jax.config.update("jax_enable_x64", True)


def _sub(tree, prefix):
    """The arrays of one layer in a case's nested dict: ``tree[prefix]`` ("": all of it)."""
    return dict(tree) if not prefix else dict(tree.get(prefix, {}))


def build(case):
    """[(prefix, layer)]: the case's layers, built for its input and holding its params."""
    return build_layers(case.model, case.params, tuple(case.x.shape))


def build_layers(model, params, input_shape):
    """[(prefix, layer)] of a layer or Sequential config, built for ``input_shape`` and holding
    ``params`` (nested by "layer_<i>" for a network)."""
    specs = ([("", model)] if model["class_name"] != "Sequential" else
             [(f"layer_{i}", spec) for i, spec in enumerate(model["config"]["layers"])])
    shape, layers = tuple(input_shape), []
    for prefix, spec in specs:
        layer = from_lrtdense_config(spec)
        layer.build(shape)
        layer_params = _sub(params, prefix)
        if sorted(layer_params) != sorted(layer.weight_names()):
            raise ValueError(f"{prefix or 'the layer'}: the case's params {sorted(layer_params)} "
                             f"are not the layer's weights {layer.weight_names()}")
        layer.set_weights([layer_params[name] for name in layer.weight_names()])
        layers.append((prefix, layer))
        shape = layer.compute_output_shape(shape)
    return layers


def _key(prefix, name):
    return f"{prefix}/{name}" if prefix else name


def _modes(layers):
    """The modes besides "sample" of the network: "mean", and "pruned" when every layer has it."""
    pruned = all("pruned" in layer.settings.MODES for _, layer in layers)
    return ["mean"] + (["pruned"] if pruned else [])


class Adapter:
    """The conformance adapter of ``lrtdense.keras`` on the current Keras backend."""
    name = f"lrtdense.keras ({BACKEND})"
    implements = {"families": ["lrt", "reparam", "flipout", "vdrop", "sparsevd", "network",
                               "priors", "dv", "train", "adam"]}

    def compute(self, case):
        """Every expected quantity of a case: dict key -> array."""
        if case.kind == "adam":
            return _adam(case)
        if case.kind == "training":
            return _training(case)
        layers = build(case)
        results = evaluate(layers, case.x, case.g, case.noise)
        results["outputs/sample"] = results.pop("outputs")
        for mode in _modes(layers):
            outputs, terms = _forward(layers, case.x, None, mode, _eager_call)
            results[f"outputs/{mode}"] = _numpy(outputs)
            if mode == "mean" and "kl_mean/total" in case.expected:
                results["kl_mean/total"] = _numpy(_total(terms, case.dtype))
        return results

    def sample(self, case, draws, seed):
        """SPEC.md section 7: the deterministic quantities and ``draws`` sample-mode calls; for a
        training case ("A training step") ``draws`` draws of its first step's loss and
        gradients."""
        seed = (seed * 0x9E3779B1 + zlib.crc32(case.name.encode())) % 2 ** 31
        if case.kind == "training":
            return _statistical_training(case, draws, seed)
        results = self.compute(case)
        results.update(_statistical(case, build(case), draws, seed))
        return results


def _optimizer(form, hyperparameters, eps):
    """The case's optimizer (``OPTIMIZERS[form]``), its learning-rate variable made in float64
    (Keras makes it in floatx, whose float32 would round the kingma form's lr)."""
    floatx = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        return OPTIMIZERS[form](learning_rate=hyperparameters["step_size"],
                                beta_1=hyperparameters["b1"], beta_2=hyperparameters["b2"],
                                epsilon=eps)
    finally:
        keras.config.set_floatx(floatx)


def _snapshot(variable):
    """A NumPy copy of a variable's value (PyTorch's shares memory, and the optimizer updates
    it in place)."""
    return np.array(_numpy(variable.value), copy=True)


def _adam(case):
    """SPEC.md section 3, "Adam cases": both forms on the case's gradients, one
    ``optimizer.apply`` per step; "<form>/params/<p>" (T, ...) the parameters after each."""
    hp = case.meta["hyperparameters"]
    names = sorted(k[len("init/"):] for k in case.inputs if k.startswith("init/"))
    results = {}
    for form in OPTIMIZERS:
        variables = [keras.Variable(case.inputs[f"init/{n}"], dtype=case.dtype, name=n)
                     for n in names]
        optimizer = _optimizer(form, hp, hp["eps"][form])
        trajectory = {n: [] for n in names}
        for t in range(hp["steps"]):
            optimizer.apply([ops.convert_to_tensor(case.inputs[f"grads/{n}"][t]) for n in names],
                            variables)
            for n, variable in zip(names, variables):
                trajectory[n].append(_snapshot(variable))
        results.update({f"{form}/params/{n}": np.stack(v) for n, v in trajectory.items()})
    return results


def minibatch_nll_kl(layers, x, y, noise, sigma, num_samples=1, call=None):
    """(nll, kl) of one training step (SPEC.md section 3, "Training cases", "Several samples per
    step"): the minibatch's mean Gaussian NLL (sum over outputs) and the network's KL (its
    layers' terms as each weights them), each averaged over the ``num_samples`` draws of
    ``noise`` (a leading draw axis when num_samples > 1). The step's loss is
    ``lrtdense.losses.neg_elbo(nll, kl, N, kl_weight)``. ``noise`` None: the layers' own draws;
    ``call``: how a layer is called (``_forward``'s; default: eagerly)."""
    y = ops.convert_to_tensor(y)
    nll = kl = 0.0
    for s in range(num_samples):
        draw = noise if num_samples == 1 or noise is None else tree.map(lambda v: v[s], noise)
        outputs, terms = _forward(layers, x, draw, "sample", call or _eager_call)
        per_example = ops.sum(kernels.gaussian_nll(y, outputs, sigma), axis=-1)
        nll = nll + ops.sum(per_example) / ops.shape(per_example)[0]   # ops.mean: float32
        kl = kl + _total(terms, kernels.dtype_of(outputs))
    return (nll, kl) if num_samples == 1 else (nll / num_samples, kl / num_samples)


def _training(case):
    """SPEC.md section 3, "Training cases": the case's network in a ``keras.Sequential``, its
    minibatches in the case's order, each step's noise, loss = ``neg_elbo`` of
    ``minibatch_nll_kl``, gradients by ``value_and_grad``, one ``optimizer.apply`` per step."""
    h = case.meta["hyperparameters"]
    x, y, order = case.inputs["x"], case.inputs["y"], case.inputs["order"]
    network = {"class_name": "Sequential", "config": case.model["network"]}
    layers = build_layers(network, tree.unflatten(case.inputs, "init"), x.shape)
    model = keras.Sequential([layer for _, layer in layers])
    variables = model.trainable_variables
    key_of = {id(w): f"params/{_key(prefix, w.name)}"
              for prefix, layer in layers for w in layer.trainable_variables}
    keys = [key_of[id(v)] for v in variables]
    optimizer = _optimizer(h["form"], h, h["eps"])
    sigma, n, size = case.model["likelihood"]["scale"], h["num_examples"], h["batch_size"]
    noise = case.noise
    records = {"loss": [], "nll": [], "kl": [], **{k: [] for k in keys}}
    t = 0
    for epoch, kl_weight in enumerate(h["kl_weights"][:h["epochs"]]):
        for start in range(0, n, size):
            index = order[epoch][start:start + size]

            def objective():
                nll, kl = minibatch_nll_kl(layers, x[index], y[index], noise[f"step_{t}"],
                                           sigma, h.get("num_samples", 1))
                return neg_elbo(nll, kl, n, kl_weight), (nll, kl)

            (loss, (nll, kl)), grads = value_and_grad(objective, variables, has_aux=True)
            optimizer.apply(grads, variables)
            for key, value in zip(("loss", "nll", "kl"), (loss, nll, kl)):
                records[key].append(_numpy(value))
            for key, variable in zip(keys, variables):
                records[key].append(_snapshot(variable))
            t += 1
    return {k: np.stack(v) for k, v in records.items()}


def _numpy(value):
    if hasattr(value, "detach"):
        value = value.detach()
    return keras.ops.convert_to_numpy(value)


def _total(terms, dtype):
    return sum(terms.values(), keras.ops.zeros((), dtype=dtype))


def _forward(layers, x, noise, mode, call):
    """(outputs, {"<prefix/>kernel": term, ...}) of the layers in ``mode``, each on the previous
    one's output; ``call(index, layer, h, noise, mode) -> (h, losses)``."""
    h, terms = x, {}
    for index, (prefix, layer) in enumerate(layers):
        layer_noise = None if noise is None else _sub(noise, prefix)
        h, losses = call(index, layer, h, layer_noise, mode)
        for name, loss in zip(layer.divergence_names(), losses):
            terms[_key(prefix, name)] = loss
    return h, terms


def _eager_call(index, layer, h, noise, mode):
    outputs = layer(h, noise=noise, mode=mode)
    return outputs, list(layer.losses)


def evaluate(layers, x, g, noise=None, mode="sample"):
    """Outputs, divergences and gradients of the layers in ``mode`` on the backend's autodiff.

    Args:
      layers: [(prefix, layer)], built and holding their weights (``build``; prefix "" for one
        layer, "layer_<i>" in a network).
      x: NumPy input (..., in); g: NumPy cotangent of the outputs' shape.
      noise: the case's (nested) noise dict for sample mode, else None.
    Returns:
      dict of NumPy arrays: "outputs", "kl/<prefix/>kernel" ..., "kl/total", and the gradients
      of sum(g * outputs) + kl/total, "grads/<prefix/><weight>" and "grads/x".
    """
    x_var = keras.Variable(x, dtype=x.dtype.name, name="x")    # x differentiated as a weight
    g = ops.convert_to_tensor(g, dtype=x.dtype.name)
    weights = [w for _, layer in layers for w in layer.trainable_variables]

    def objective():
        outputs, terms = _forward(layers, x_var.value, noise, mode, _eager_call)
        return ops.sum(g * outputs) + _total(terms, x.dtype.name), (outputs, terms)

    (_, (outputs, terms)), grads = value_and_grad(objective, weights + [x_var], has_aux=True)
    results = {"outputs": outputs, "kl/total": _total(terms, x.dtype.name), "grads/x": grads[-1]}
    results.update({f"kl/{k}": v for k, v in terms.items()})
    results.update({f"grads/{k}": v for k, v in zip(_weight_keys(layers), grads[:-1])})
    return {k: _numpy(v) for k, v in results.items()}


def _weight_keys(layers):
    return [_key(prefix, w.name) for prefix, layer in layers for w in layer.trainable_variables]


def _seed_states(layer, draws, seed):
    """(draws, 2): a state [s_d, 0] per draw for the layer's one ``SeedGenerator``, in its
    dtype, as ``SeedGenerator(s_d)`` starts. The s_d are distinct random multiples of 64: a
    call's k-th random array is seeded by s_d + k (on PyTorch, ``torch.Generator.manual_seed``
    of the state's sum), so no two arrays of any draws share a seed (random pairs would, now
    and then: the kit flags the repeated draw)."""
    seeds = list(layer.non_trainable_variables)
    if len(seeds) != 1 or tuple(seeds[0].shape) != (2,):
        raise ValueError(f"expected one SeedGenerator state of shape (2,), got "
                         f"{[tuple(v.shape) for v in seeds]}")
    starts = np.random.default_rng(seed).choice(2 ** 24, draws, replace=False) * 64
    states = np.stack([starts, np.zeros_like(starts)], axis=1)
    return ops.convert_to_tensor(states, dtype=seeds[0].dtype)


def _statistical_training(case, draws, seed):
    """SPEC.md section 7, "A training step": samples/loss (each draw's ``neg_elbo`` of
    ``minibatch_nll_kl``, as ``_training`` computes a step's loss) and
    samples/grads/layer_0/* of ``draws`` draws of the first step (the examples
    order[0][:batch_size], kl_weights[0], the init/ parameters) of the case's one layer, each
    with the layer's own keras.random draws from a SeedGenerator state of its own
    (``per_draw_grad`` over the states)."""
    h = case.meta["hyperparameters"]
    index = case.inputs["order"][0][:h["batch_size"]]
    x, y = ops.convert_to_tensor(case.inputs["x"][index]), case.inputs["y"][index]
    (_, layer), = layers = build_layers(case.model["network"]["layers"][0],
                                        tree.unflatten(case.inputs, "init")["layer_0"], x.shape)
    names = [w.name for w in layer.trainable_variables]
    sigma = case.model["likelihood"]["scale"]

    def loss(weights, state):
        def call(index, layer, h, layer_noise, mode):
            out, _, losses = layer.stateless_call(weights, [state], h, mode=mode,
                                                  return_losses=True)
            return out, losses
        nll, kl = minibatch_nll_kl(layers, x, y, None, sigma, call=call)
        value = neg_elbo(nll, kl, h["num_examples"], h["kl_weights"][0])
        return value, value

    grads, losses = per_draw_grad(loss, [w.value for w in layer.trainable_variables],
                                  _seed_states(layer, draws, seed))
    results = {"samples/loss": losses}
    results.update({f"samples/grads/layer_0/{n}": v for n, v in zip(names, grads)})
    return {k: _numpy(v) for k, v in results.items()}


def _statistical(case, layers, draws, seed):
    """samples/outputs, samples/grads/* and samples/kl (each draw's KL) of ``draws`` calls of a
    single layer, each seeded by its own SeedGenerator state (``per_draw_grad`` over the
    states, x differentiated as the last of the params)."""
    (_, layer), = layers
    names = [w.name for w in layer.trainable_variables]
    g = ops.convert_to_tensor(case.g)

    def objective(params, state):
        *weights, x = params
        out, _, losses = layer.stateless_call(weights, [state], x, mode="sample",
                                              return_losses=True)
        total = _total(dict(enumerate(losses)), case.dtype)
        return ops.sum(g * out) + 0.5 * ops.sum(out * out) + total, (out, total)

    params = [w.value for w in layer.trainable_variables] + [ops.convert_to_tensor(case.x)]
    grads, (outputs, kl) = per_draw_grad(objective, params, _seed_states(layer, draws, seed))
    results = {"samples/outputs": outputs, "samples/grads/x": grads[-1], "samples/kl": kl}
    results.update({f"samples/grads/{n}": v for n, v in zip(names, grads[:-1])})
    return {k: _numpy(v) for k, v in results.items()}
