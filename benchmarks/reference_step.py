"""The reference training step of issue 6, four ways, each as a zero-argument ``run()``.

The step: an MLP 784 -> 400 -> 400 -> 10 (ReLU), every layer a DenseLocalReparameterization with
TFP's defaults (Normal kernel posterior, N(0, 1) kernel prior, Deterministic bias, no bias
prior), softmax cross-entropy + KL / 60000 on one minibatch: forward, all gradients, one Adam
update (lr 1e-3). Per layer, with scale = softplus(untransformed_scale) + eps (Kingma et al.
2015, arXiv 1506.02557):

    m = x @ loc,  s = sqrt((x**2) @ (scale**2)),  out = act(m + s * noise + bias)
    kl = sum(0.5 * loc**2 + 0.5 * expm1(2 log scale) - log scale)

Contenders (each ``run()`` performs one full step and returns only when it is complete):

* ``lrtdense``: the model built as a user builds it, the step ``lrtdense.training.make_step``
  returns (exactly what ``fit`` runs), called as ``state, *_ = step(state, xb, yb, rng)``.
* ``floor``: the 16 matrix products the step needs, ``np.matmul(a, b, out=c)`` on preallocated
  arrays (see ``GEMM_FLOOR_PRODUCTS``). No step can do less BLAS work.
* ``torch``: the same step in PyTorch eager with ``torch.optim.Adam(lr=1e-3)``.
* ``jax``: the same step as one ``jax.jit`` function (forward, ``jax.value_and_grad``, Adam in
  ``jax.numpy``); float64 needs ``jax_enable_x64`` (``setup_jax``).

Every contender starts from the same params and minibatch (``reference_problem``). The peers'
``loss_and_grads(noise)`` evaluates their loss and gradients with lrtdense's explicit noise
dict, so that ``check_peer`` can compare them with lrtdense's on identical inputs.
"""
import collections

import numpy as np

LAYERS = (784, 400, 400, 10)
NUM_EXAMPLES = 60000
LEARNING_RATE = 1e-3
B1, B2, ADAM_EPS = 0.9, 0.999, 1e-8

GEMM_FLOOR_PRODUCTS = (
    "forward, each layer l = 1..3:   x_l @ loc_l  and  (x_l**2) @ scale_l**2            (6)",
    "backward, each layer l = 1..3:  x_l.T @ g_m_l  and  (x_l**2).T @ g_s_l             (6)",
    "backward, layers 2 and 3:       g_m_l @ loc_l.T  and  g_s_l @ (scale_l**2).T        (4)",
)

Contender = collections.namedtuple("Contender", ["name", "label", "run", "notes",
                                                 "loss_and_grads"])
Problem = collections.namedtuple("Problem", ["model", "params", "x", "y", "sizes", "dtype",
                                             "batch", "seed"])


def build_model(dtype, sizes=LAYERS, package="lrtdense"):
    """The reference network of ``sizes`` (input, hidden..., classes), TFP's defaults, built
    from ``package`` (another copy of lrtdense, e.g. ``ab_step``'s ``lrtdense_base``)."""
    import importlib

    dense = importlib.import_module(package + ".layers").DenseLocalReparameterization
    likelihood = importlib.import_module(package + ".losses").CategoricalLikelihood
    model = importlib.import_module(package + ".model").Model
    sequential = importlib.import_module(package + ".network").Sequential

    layers = [dense(units, "relu", dtype=dtype) for units in sizes[1:-1]]
    layers.append(dense(sizes[-1], dtype=dtype))
    return model(sequential(layers), likelihood())


def reference_problem(dtype, batch, sizes=LAYERS, seed=0):
    """Model, initial params and one random minibatch: x ~ U[0, 1) (batch, sizes[0]) of ``dtype``,
    labels (batch,) in [0, sizes[-1]). Nothing is downloaded."""
    model = build_model(dtype, sizes)
    rng = np.random.default_rng(seed)
    params = model.init(rng, sizes[0])
    x = rng.random((batch, sizes[0]), dtype=np.dtype(dtype).type)
    y = rng.integers(0, sizes[-1], size=batch)
    return Problem(model, params, x, y, tuple(sizes), np.dtype(dtype).name, batch, seed)


def layer_params(problem):
    """[(loc, untransformed_scale, bias_loc), ...] per layer, from lrtdense's params dict."""
    net = problem.params["network"]
    return [(net[name]["kernel_posterior_loc"], net[name]["kernel_posterior_untransformed_scale"],
             net[name]["bias_posterior_loc"]) for name in sorted(net, key=_layer_index)]


def layer_noise(noise):
    """[noise (batch, units), ...] per layer, from lrtdense's nested noise dict."""
    return [noise[name]["kernel"] for name in sorted(noise, key=_layer_index)]


def as_params_dict(problem, layers):
    """Per-layer (loc, untransformed_scale, bias) triples back into lrtdense's nested dict."""
    names = ["kernel_posterior_loc", "kernel_posterior_untransformed_scale", "bias_posterior_loc"]
    return {"network": {f"layer_{i}": dict(zip(names, (np.asarray(a) for a in triple)))
                        for i, triple in enumerate(layers)}, "likelihood": {}}


def _layer_index(name):
    return int(name.rsplit("_", 1)[1])


# ------------------------------------------------------------------------------------ lrtdense
def lrtdense_contender(problem, implementation=None):
    """The step exactly as ``fit`` runs it (``make_step`` + ``adam(1e-3)``, Adam state owned).

    ``implementation``: None for ``make_step``'s default (what ``fit`` uses); otherwise passed
    on as ``make_step(..., implementation=...)`` (e.g. "reference", the plain autograd path).
    Raises RuntimeError when this lrtdense's ``make_step`` has no such argument.
    """
    import inspect

    from autograd import value_and_grad
    from lrtdense.optimizers import adam
    from lrtdense.training import make_step

    model, x, y = problem.model, problem.x, problem.y
    optimizer = adam(LEARNING_RATE)
    if implementation is None:
        step, name, label = make_step(model, optimizer, num_examples=NUM_EXAMPLES), "lrtdense", \
            "lrtdense"
        notes = "make_step(model, adam(1e-3), num_examples=60000), as fit runs it"
    else:
        if "implementation" not in inspect.signature(make_step).parameters:
            raise RuntimeError("this lrtdense's make_step has no implementation argument")
        step = make_step(model, optimizer, num_examples=NUM_EXAMPLES,
                         implementation=implementation)
        name, label = f"lrtdense_{implementation}", f"lrtdense ({implementation})"
        notes = f"make_step(..., implementation={implementation!r})"
    state = optimizer.init(problem.params)
    rng = np.random.default_rng(problem.seed + 1)

    def run():
        nonlocal state
        state, *_ = step(state, x, y, rng)

    def loss_and_grads(noise):
        def loss(params):
            return model.loss(params, x, y, noise=noise, num_examples=NUM_EXAMPLES)[0]
        value, grads = value_and_grad(loss)(problem.params)
        return float(value), grads

    return Contender(name, label, run, f"{notes}; step is {type(step).__name__}", loss_and_grads)


# ---------------------------------------------------------------------------------- GEMM floor
def gemm_floor_contender(problem):
    """The 16 products of ``GEMM_FLOOR_PRODUCTS`` on preallocated arrays, nothing else."""
    dtype, batch, sizes = problem.dtype, problem.batch, problem.sizes
    rng = np.random.default_rng(problem.seed + 2)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    layers = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(dict(
            x=rand(batch, n_in), x2=rand(batch, n_in), loc=rand(n_in, n_out),
            s2=rand(n_in, n_out), m=rand(batch, n_out), v=rand(batch, n_out),
            g_m=rand(batch, n_out), g_s=rand(batch, n_out), g_loc=rand(n_in, n_out),
            g_s2=rand(n_in, n_out),
            g_xm=rand(batch, n_in) if l > 0 else None,
            g_xs=rand(batch, n_in) if l > 0 else None))
    matmul = np.matmul

    def run():
        for a in layers:
            matmul(a["x"], a["loc"], out=a["m"])
            matmul(a["x2"], a["s2"], out=a["v"])
        for a in reversed(layers):
            matmul(a["x"].T, a["g_m"], out=a["g_loc"])
            matmul(a["x2"].T, a["g_s"], out=a["g_s2"])
            if a["g_xm"] is not None:
                matmul(a["g_m"], a["loc"].T, out=a["g_xm"])
                matmul(a["g_s"], a["s2"].T, out=a["g_xs"])

    return Contender("floor", "GEMM floor", run,
                     "16 × np.matmul(a, b, out=c) on preallocated arrays:", None)


# ------------------------------------------------------------------------------------- PyTorch
def torch_contender(problem):
    """PyTorch eager: the same math, ``loss.backward()``, ``torch.optim.Adam(lr=1e-3)``.

    Raises ImportError when torch is not installed.
    """
    import torch

    dtype = getattr(torch, problem.dtype)
    x = torch.from_numpy(problem.x)
    y = torch.from_numpy(problem.y.astype(np.int64))
    eps = float(np.finfo(problem.dtype).eps)
    units = problem.sizes[1:]

    def loss_fn(params, noise):
        h, kl = x, 0.0
        for i, (loc, untransformed, bias) in enumerate(params):
            scale = torch.nn.functional.softplus(untransformed) + eps
            m = h @ loc
            s = torch.sqrt((h * h) @ (scale * scale))
            h = m + s * noise[i] + bias
            if i < len(params) - 1:
                h = torch.relu(h)
            log_scale = torch.log(scale)
            kl = kl + torch.sum(0.5 * loc * loc + 0.5 * torch.expm1(2.0 * log_scale) - log_scale)
        return torch.nn.functional.cross_entropy(h, y) + kl / NUM_EXAMPLES

    def fresh_params():
        return [tuple(torch.tensor(np.array(a), requires_grad=True) for a in triple)
                for triple in layer_params(problem)]

    params = fresh_params()
    optimizer = torch.optim.Adam([p for triple in params for p in triple], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(problem.seed + 3)

    def run():
        optimizer.zero_grad(set_to_none=True)
        noise = [torch.randn(problem.batch, n, dtype=dtype, generator=generator) for n in units]
        loss = loss_fn(params, noise)
        loss.backward()
        optimizer.step()

    def loss_and_grads(noise):
        p = fresh_params()
        loss = loss_fn(p, [torch.from_numpy(n) for n in layer_noise(noise)])
        loss.backward()
        return loss.item(), as_params_dict(problem, [[a.grad.numpy() for a in t] for t in p])

    notes = (f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
             f"torch.optim.Adam(lr=1e-3) with its defaults (foreach="
             f"{optimizer.defaults.get('foreach')})")
    return Contender("torch", "PyTorch eager", run, notes, loss_and_grads)


# ----------------------------------------------------------------------------------------- JAX
def setup_jax(enable_x64):
    """Imports jax and sets ``jax_enable_x64`` once, before any JAX array exists.

    Returns the jax module. Raises ImportError when jax is not installed.
    """
    import jax
    jax.config.update("jax_enable_x64", bool(enable_x64))
    return jax


def jax_contender(problem):
    """The whole step as one ``jax.jit`` function (params and Adam moments donated).

    Raises ImportError when jax is not installed, RuntimeError for float64 without x64.
    """
    import jax
    import jax.numpy as jnp

    if problem.dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 JAX needs jax_enable_x64 (call setup_jax(True) first)")
    dtype = jnp.dtype(problem.dtype)
    eps = float(np.finfo(problem.dtype).eps)
    units = problem.sizes[1:]
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y.astype(np.int32))

    def loss_fn(params, x, y, noise):
        h, kl = x, 0.0
        for i, (loc, untransformed, bias) in enumerate(params):
            scale = jax.nn.softplus(untransformed) + eps
            m = h @ loc
            s = jnp.sqrt((h * h) @ (scale * scale))
            h = m + s * noise[i] + bias
            if i < len(params) - 1:
                h = jax.nn.relu(h)
            log_scale = jnp.log(scale)
            kl = kl + jnp.sum(0.5 * loc * loc + 0.5 * jnp.expm1(2.0 * log_scale) - log_scale)
        logits_y = jnp.take_along_axis(h, y[:, None], axis=1)[:, 0]
        nll = jnp.mean(jax.nn.logsumexp(h, axis=1) - logits_y)
        return nll + kl / NUM_EXAMPLES

    def adam_leaf(p, m, v, g, t):
        m = m + (1 - B1) * (g - m)                                  # first moment
        v = B2 * v + (1 - B2) * (g * g)                              # second moment
        step_size = LEARNING_RATE / (1 - B1 ** t)                    # bias corrections
        denom = jnp.sqrt(v) / jnp.sqrt(1 - B2 ** t) + ADAM_EPS
        return p - step_size * (m / denom), m, v

    def step(state, x, y, key):
        params, m, v, t = state
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, len(units))
        noise = [jax.random.normal(k, (problem.batch, n), dtype) for k, n in zip(keys, units)]
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, noise)
        t = t + 1
        leaves, treedef = jax.tree_util.tree_flatten(params)
        updated = [adam_leaf(*leaf, t) for leaf in zip(leaves, jax.tree_util.tree_leaves(m),
                                                         jax.tree_util.tree_leaves(v),
                                                         jax.tree_util.tree_leaves(grads))]
        p, m, v = (jax.tree_util.tree_unflatten(treedef, list(column)) for column in zip(*updated))
        return (p, m, v, t), key, loss

    params = [tuple(jnp.asarray(a) for a in triple) for triple in layer_params(problem)]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros((), dtype))
    key = jax.random.PRNGKey(problem.seed + 4)
    jit_step = jax.jit(step, donate_argnums=(0,))

    def run():
        nonlocal state, key
        state, key, loss = jit_step(state, x, y, key)
        jax.block_until_ready((state, loss))

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))

    def loss_and_grads(noise):
        p = [tuple(jnp.asarray(a) for a in triple) for triple in layer_params(problem)]
        loss, grads = value_and_grad(p, x, y, [jnp.asarray(n) for n in layer_noise(noise)])
        return float(loss), as_params_dict(problem, grads)

    notes = (f"jax {jax.__version__}, backend {jax.default_backend()}, "
             f"x64 {'on' if jax.config.jax_enable_x64 else 'off'}, jit of the whole step")
    return Contender("jax", "JAX jit", run, notes, loss_and_grads)


PEERS = {"torch": torch_contender, "jax": jax_contender}


# --------------------------------------------------------------------------------- sanity check
def check_peer(problem, reference, peer, seed=123):
    """Loss and gradients of ``peer`` vs ``reference`` (lrtdense) on the same params and noise.

    Returns:
      dict: loss_rel (|loss_peer - loss_ref| / |loss_ref|), grad_rel (max over params of
      max|g_peer - g_ref| / max|g_ref|), worst (the param name of grad_rel).
    """
    noise = problem.model.network.sample_noise(np.random.default_rng(seed), problem.x.shape)
    ref_loss, ref_grads = reference.loss_and_grads(noise)
    peer_loss, peer_grads = peer.loss_and_grads(noise)
    worst, grad_rel = None, 0.0
    for layer, ref_layer in ref_grads["network"].items():
        for name, ref in ref_layer.items():
            got = peer_grads["network"][layer][name]
            rel = float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny))
            if rel >= grad_rel:
                worst, grad_rel = f"{layer}/{name}", rel
    return {"loss_rel": abs(peer_loss - ref_loss) / abs(ref_loss), "grad_rel": grad_rel,
            "worst": worst, "loss": ref_loss}
