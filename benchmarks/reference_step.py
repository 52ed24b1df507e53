"""The reference training steps of issues 6 and 12, each contender a zero-argument ``run()``.

The step: an MLP 784 -> 400 -> 400 -> 10 (ReLU hidden layers), every layer of one class with its
defaults, softmax cross-entropy + KL / 60000 on one minibatch: forward, all gradients, one Adam
update (lr 1e-3). Five estimators (``ESTIMATORS``), per layer, x the layer's input:

* ``lrt``, DenseLocalReparameterization (Kingma et al. 2015, arXiv 1506.02557), TFP's defaults
  (Normal kernel posterior, N(0, 1) kernel prior, Deterministic bias, no bias prior), with
  scale = softplus(untransformed_scale) + eps:
  z = x @ loc + sqrt((x**2) @ scale**2) * eps_z, eps_z (batch, units);
* ``reparameterization``, DenseReparameterization: z = x @ (eps_w * scale + loc), eps_w (in, units);
* ``flipout``, DenseFlipout (Wen et al. 2018, arXiv 1803.04386):
  z = x @ loc + ((x * sign_in) @ (eps_w * scale)) * sign_out;
  the three with the closed-form kl = sum(0.5 loc**2 + 0.5 expm1(2 log scale) - log scale);
* ``vd``, DenseVariationalDropout (Kingma et al. 2015): theta, log_alpha; a = exp(min(log_alpha,
  0)), z = x @ theta + sqrt((x**2) @ (a theta**2)) * eps_z, kl = sum(k1 - (0.5 log a + c1 a +
  c2 a**2 + c3 a**3));
* ``svd``, DenseSparseVariationalDropout (Molchanov et al. 2017, arXiv 1701.05369): theta,
  log_sigma2; z = x @ theta + sqrt((x**2) @ exp(log_sigma2)) * eps_z, log_alpha = clip(log_sigma2
  - log(theta**2 + 1e-8), -8, 8), kl = sum(k1 - k1 sigmoid(k2 + k3 log_alpha) + 0.5 log1p(exp(
  -log_alpha)));

then z + bias and the activation. (The constants are ``lrtdense.kernels``' KINGMA_C and
MOLCHANOV_K; ``lrtdense/kernels/`` and ``lrtdense/dropout.py`` state the formulas.)

Contenders (each ``run()`` performs one full step and returns only when it is complete):

* ``lrtdense``: the model built as a user builds it, the step ``lrtdense.training.make_step``
  returns (exactly what ``fit`` runs), called as ``state, *_ = step(state, xb, yb, rng)``.
* ``floor``: the 16 matrix products the LRT step needs, ``np.matmul(a, b, out=c)`` on
  preallocated arrays (``GEMM_FLOOR_PRODUCTS``). No LRT step can do less BLAS work.
* ``torch``: the same step in PyTorch eager with ``torch.optim.Adam(lr=1e-3)``, noise from
  torch's generator.
* ``jax``: the same step as one ``jax.jit`` function (forward, ``jax.value_and_grad``, Adam in
  ``jax.numpy``), noise from ``jax.random``; float64 needs ``jax_enable_x64`` (``setup_jax``).
* ``oracle`` (a diagnostic): ``tests/oracle.py``'s plain autograd expression of the loss,
  ``autograd.grad``, then lrtdense's Adam: what the step costs without lrtdense's kernels.

The peers' math is written once (``peer_loss``) over a small table of array functions
(``TorchOps``, ``JaxOps``). Every contender starts from the same params and minibatch
(``reference_problem``). ``loss_and_grads(noise)`` evaluates a contender's loss and gradients
with lrtdense's explicit noise dict, so that ``check_peer`` compares them on identical inputs;
lrtdense's comes from its real step (``make_step``) with an optimizer that records the
gradients.
"""
import collections
import functools
import importlib
import math
import os
import sys

import numpy as np

LAYERS = (784, 400, 400, 10)
NUM_EXAMPLES = 60000
LEARNING_RATE = 1e-3
B1, B2, ADAM_EPS = 0.9, 0.999, 1e-8

# short name -> (lrtdense class name, label)
ESTIMATORS = {
    "lrt": ("DenseLocalReparameterization", "LRT"),
    "reparameterization": ("DenseReparameterization", "Reparameterization"),
    "flipout": ("DenseFlipout", "Flipout"),
    "vd": ("DenseVariationalDropout", "VariationalDropout"),
    "svd": ("DenseSparseVariationalDropout", "SparseVariationalDropout"),
}
TFP_ESTIMATORS = ("lrt", "reparameterization", "flipout")
LIBRARIES = {"lrtdense": "lrtdense", "torch": "PyTorch eager", "jax": "JAX jit",
             "ltorch": "lrtdense.torch", "oracle": "autograd oracle"}

GEMM_FLOOR_PRODUCTS = (
    "forward, each layer l = 1..3:   x_l @ loc_l  and  (x_l**2) @ scale_l**2            (6)",
    "backward, each layer l = 1..3:  x_l.T @ g_m_l  and  (x_l**2).T @ g_s_l             (6)",
    "backward, layers 2 and 3:       g_m_l @ loc_l.T  and  g_s_l @ (scale_l**2).T        (4)",
)

Contender = collections.namedtuple("Contender", ["name", "label", "run", "notes", "loss_and_grads",
                                                 "library", "estimator"],
                                   defaults=(None, None))
Problem = collections.namedtuple("Problem", ["model", "params", "x", "y", "sizes", "dtype",
                                             "batch", "seed", "estimator"])


def contender_name(library, estimator):
    """The key of a contender in the results: "lrtdense:lrt", "torch:flipout", ..."""
    return f"{library}:{estimator}"


def build_model(dtype, sizes=LAYERS, package="lrtdense", estimator="lrt"):
    """The reference network of ``sizes`` (input, hidden..., classes), every layer of
    ``estimator``'s class with its defaults, ReLU hidden layers, a categorical likelihood; built
    from ``package`` (another copy of lrtdense, e.g. ``ab_step``'s ``lrtdense_base``, whose
    ``model``, ``network`` and ``losses`` modules and top-level layer classes it uses)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {sorted(ESTIMATORS)}")
    cls = getattr(importlib.import_module(package), ESTIMATORS[estimator][0])
    likelihood = importlib.import_module(package + ".losses").CategoricalLikelihood
    model = importlib.import_module(package + ".model").Model
    sequential = importlib.import_module(package + ".network").Sequential

    layers = [cls(units, "relu", dtype=dtype) for units in sizes[1:-1]]
    layers.append(cls(sizes[-1], dtype=dtype))
    return model(sequential(layers), likelihood())


def reference_problem(dtype, batch, sizes=LAYERS, seed=0, estimator="lrt"):
    """Model, initial params and one random minibatch: x ~ U[0, 1) (batch, sizes[0]) of ``dtype``,
    labels (batch,) in [0, sizes[-1]). Nothing is downloaded. The minibatch depends on the seed
    only, not on the estimator."""
    model = build_model(dtype, sizes, estimator=estimator)
    data = np.random.default_rng(seed)
    x = data.random((batch, sizes[0]), dtype=np.dtype(dtype).type)
    y = data.integers(0, sizes[-1], size=batch)
    params = model.init(np.random.default_rng([seed, 1]), sizes[0])
    return Problem(model, params, x, y, tuple(sizes), np.dtype(dtype).name, batch, seed,
                   estimator)


def float64_twin(problem):
    """The same problem in float64: ``problem``'s params and minibatch cast (float32 to float64
    is exact), for checking float32 contenders' math where rounding cannot hide a difference."""
    from lrtdense import tree

    model = build_model("float64", problem.sizes, estimator=problem.estimator)
    return problem._replace(model=model, dtype="float64",
                            params=tree.map(lambda a: a.astype(np.float64), problem.params),
                            x=problem.x.astype(np.float64))


def lrtdense_noise(problem, noise_seed):
    """The noise dict lrtdense's step draws from ``default_rng(noise_seed)`` (its draw order:
    layer by layer, ``sample_noise``), in the problem's dtype."""
    return problem.model.network.sample_noise(np.random.default_rng(noise_seed), problem.x.shape)


def layer_names(problem):
    return list(problem.model.network.names)


def layer_params(problem):
    """[(arrays in the layer's weight_names order), ...] per layer, from lrtdense's params."""
    net = problem.params["network"]
    return [tuple(net[name][w] for w in layer.weight_names())
            for name, layer in zip(layer_names(problem), problem.model.network.layers)]


def layer_noise(problem, noise):
    """[{key: array}, ...] per layer, from lrtdense's nested noise dict."""
    return [noise[name] for name in layer_names(problem)]


def noise_spec(problem):
    """[[(key, shape, kind "normal" / "sign"), ...] per layer]: what one step draws, in
    lrtdense's draw order, for the peers to draw from their own generators."""
    spec, shape = [], problem.x.shape
    for layer in problem.model.network.layers:
        kinds = layer.noise_kinds()
        spec.append([(key, tuple(s), kinds.get(key, "normal"))
                     for key, s in layer.noise_shapes(shape).items()])
        shape = layer.compute_output_shape(shape)
    return spec


def as_params_dict(problem, layers):
    """Per-layer sequences (weight_names order) back into lrtdense's nested params dict."""
    return {"network": {name: dict(zip(layer.weight_names(), (np.asarray(a) for a in arrays)))
                        for name, layer, arrays in zip(layer_names(problem),
                                                       problem.model.network.layers, layers)},
            "likelihood": {}}


# ------------------------------------------------------------------------------------ lrtdense
def lrtdense_contender(problem, threads=None, name=None, workers=None):
    """The step exactly as ``fit`` runs it (``make_step`` + ``adam(1e-3)``, Adam state owned).

    ``threads``: make_step's (None: fit's default, one BLAS thread; "auto": the automatic
    count, whose trial steps run here, untimed, so that the timings are of the count it keeps).
    ``workers``: make_step's (None: fit's default, one per usable CPU). ``name``: the
    contender's, if not the default "lrtdense:<estimator>". ``run.step`` is the step
    (``run.step.threads.count``)."""
    from lrtdense.optimizers import adam
    from lrtdense.training import make_step

    model, x, y = problem.model, problem.x, problem.y
    optimizer = adam(LEARNING_RATE)
    step = make_step(model, optimizer, num_examples=NUM_EXAMPLES, threads=threads, workers=workers)
    state = optimizer.init(problem.params)
    rng = np.random.default_rng([problem.seed, 2])

    def run():
        nonlocal state
        state, *_ = step(state, x, y, rng)

    run.step = step
    while getattr(step.threads, "deciding", False) or getattr(step.workers, "deciding", False):
        run()                   # the automatic counts' trials: untimed

    def loss_and_grads(noise_seed):
        # the real step, its noise drawn from default_rng(noise_seed), returning its gradients
        record = make_step(model, optimizer, num_examples=NUM_EXAMPLES, return_grads=True)
        _, loss, _, _, grads = record(optimizer.init(problem.params), x, y,
                                      np.random.default_rng(noise_seed))
        return float(loss), grads

    notes = "make_step(model, adam(1e-3), num_examples=60000), as fit runs it"
    return Contender(name or contender_name("lrtdense", problem.estimator), "lrtdense", run, notes,
                     loss_and_grads, "lrtdense", problem.estimator)


# -------------------------------------------------------------------------- autograd oracle
def load_oracle():
    """``tests/oracle.py`` as a module (the plain autograd expression of the math).

    Raises ImportError when the tests are not beside the benchmarks (an installed copy)."""
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests")
    if not os.path.isfile(os.path.join(tests, "oracle.py")):
        raise ImportError(f"no tests/oracle.py beside the benchmarks (looked in {tests})")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("oracle")


def oracle_contender(problem):
    """The oracle's loss, ``autograd.grad``, lrtdense's Adam in place (a diagnostic)."""
    from autograd import value_and_grad
    from lrtdense.optimizers import adam

    oracle = load_oracle()
    model, x, y = problem.model, problem.x, problem.y
    optimizer = adam(LEARNING_RATE)
    state = optimizer.init(problem.params)
    rng = np.random.default_rng([problem.seed, 3])

    def loss(params, noise):
        return oracle.loss(model, params, x, y, noise, NUM_EXAMPLES)[0]

    vg = value_and_grad(loss)

    def run():
        nonlocal state
        noise = model.network.sample_noise(rng, x.shape)
        _, grads = vg(optimizer.get_params(state), noise)
        state = optimizer.update(state, grads, inplace=True)

    def loss_and_grads(noise_seed):
        value, grads = vg(problem.params, lrtdense_noise(problem, noise_seed))
        return float(value), grads

    notes = ("tests/oracle.py's loss (autograd.numpy only), autograd.value_and_grad, "
             "lrtdense's adam(1e-3) in place; noise by sample_noise")
    return Contender(contender_name("oracle", problem.estimator), LIBRARIES["oracle"], run, notes,
                     loss_and_grads, "oracle", problem.estimator)


# ---------------------------------------------------------------------------------- GEMM floor
def gemm_floor_contender(problem):
    """The 16 products of ``GEMM_FLOOR_PRODUCTS`` on preallocated arrays, nothing else."""
    dtype, batch, sizes = problem.dtype, problem.batch, problem.sizes
    rng = np.random.default_rng([problem.seed, 4])

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
                     "16 × np.matmul(a, b, out=c) on preallocated arrays (the LRT step's):",
                     None, "floor", None)


# -------------------------------------------------------------------------- the peers' math
KINGMA_C = (1.16145124, -1.50204118, 0.58629921)      # lrtdense.kernels.KINGMA_C
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)             # lrtdense.kernels.MOLCHANOV_K
THETA2_EPS = 1e-8                                     # lrtdense.kernels.THETA2_EPS
LOG_ALPHA_CLIP = 8.0                                  # lrtdense.dropout.LOG_ALPHA_CLIP


def peer_loss(xp, estimator, params, x, y, noise):
    """The minibatch negative ELBO of the reference network, in a peer's array library.

    Args:
      xp: the library's functions (``TorchOps`` or ``JaxOps``).
      estimator: a key of ``ESTIMATORS``.
      params: per layer, its arrays in lrtdense's weight_names order.
      x: (batch, in); y: (batch,) integer labels.
      noise: per layer, a dict of lrtdense's noise keys.
    Returns:
      mean cross-entropy + KL / NUM_EXAMPLES, a scalar.
    """
    h, kl = x, 0.0
    eps = xp.eps(x)                                   # TFP's posterior scale offset
    last = len(params) - 1
    for i, (p, n) in enumerate(zip(params, noise)):
        if estimator in TFP_ESTIMATORS:
            loc, untransformed, bias = p
            scale = xp.softplus(untransformed) + eps
            if estimator == "lrt":
                z = h @ loc + xp.sqrt((h * h) @ (scale * scale)) * n["kernel"]
            elif estimator == "reparameterization":
                z = h @ (n["kernel"] * scale + loc)
            else:
                z = h @ loc + ((h * n["sign_input"]) @ (n["kernel"] * scale)) * n["sign_output"]
            log_scale = xp.log(scale)
            kl = kl + xp.sum(0.5 * loc * loc + 0.5 * xp.expm1(2.0 * log_scale) - log_scale)
        elif estimator == "vd":
            theta, log_alpha, bias = p
            c1, c2, c3 = KINGMA_C
            log_alpha = xp.clip(log_alpha, None, 0.0)
            alpha = xp.exp(log_alpha)
            z = h @ theta + xp.sqrt((h * h) @ (alpha * theta * theta)) * n["kernel"]
            kl = kl + xp.sum(MOLCHANOV_K[0] - (0.5 * log_alpha + c1 * alpha + c2 * alpha * alpha
                                                + c3 * alpha * alpha * alpha))
        else:
            theta, log_sigma2, bias = p
            k1, k2, k3 = MOLCHANOV_K
            z = h @ theta + xp.sqrt((h * h) @ xp.exp(log_sigma2)) * n["kernel"]
            log_alpha = xp.clip(log_sigma2 - xp.log(theta * theta + THETA2_EPS),
                                -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)
            kl = kl + xp.sum(k1 - k1 * xp.sigmoid(k2 + k3 * log_alpha)
                             + 0.5 * xp.log1p(xp.exp(-log_alpha)))
        h = z + bias
        if i < last:
            h = xp.relu(h)
    return xp.cross_entropy(h, y) + kl / NUM_EXAMPLES


class TorchOps:
    """``peer_loss``'s array functions in PyTorch."""

    def __init__(self):
        import torch
        F = torch.nn.functional
        self.softplus, self.relu, self.sigmoid = F.softplus, torch.relu, torch.sigmoid
        self.sqrt, self.exp, self.log = torch.sqrt, torch.exp, torch.log
        self.log1p, self.expm1, self.sum = torch.log1p, torch.expm1, torch.sum
        self.cross_entropy = F.cross_entropy
        self.clip = lambda a, lo, hi: torch.clamp(a, min=lo, max=hi)
        self.eps = lambda a: torch.finfo(a.dtype).eps


class JaxOps:
    """``peer_loss``'s array functions in JAX."""

    def __init__(self):
        import jax
        import jax.numpy as jnp
        self.softplus, self.relu, self.sigmoid = jax.nn.softplus, jax.nn.relu, jax.nn.sigmoid
        self.sqrt, self.exp, self.log = jnp.sqrt, jnp.exp, jnp.log
        self.log1p, self.expm1, self.sum = jnp.log1p, jnp.expm1, jnp.sum
        self.clip = jnp.clip
        self.eps = lambda a: float(jnp.finfo(a.dtype).eps)

        def cross_entropy(logits, y):
            picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
            return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)
        self.cross_entropy = cross_entropy


# ------------------------------------------------------------------------------------- PyTorch
def torch_contender(problem):
    """PyTorch eager: ``peer_loss``, ``loss.backward()``, ``torch.optim.Adam(lr=1e-3)``.

    Raises ImportError when torch is not installed.
    """
    import torch

    xp = TorchOps()
    dtype = getattr(torch, problem.dtype)
    x = torch.from_numpy(problem.x)
    y = torch.from_numpy(problem.y.astype(np.int64))
    spec = noise_spec(problem)
    est = problem.estimator

    def fresh_params():
        return [tuple(torch.tensor(np.array(a), requires_grad=True) for a in arrays)
                for arrays in layer_params(problem)]

    params = fresh_params()
    optimizer = torch.optim.Adam([p for arrays in params for p in arrays], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(problem.seed + 3)

    def draw(shape, kind):
        if kind == "sign":
            return torch.randint(0, 2, shape, generator=generator, dtype=dtype).mul_(2).sub_(1)
        return torch.randn(shape, dtype=dtype, generator=generator)

    def run():
        optimizer.zero_grad(set_to_none=True)
        noise = [{key: draw(shape, kind) for key, shape, kind in layer} for layer in spec]
        loss = peer_loss(xp, est, params, x, y, noise)
        loss.backward()
        optimizer.step()

    def loss_and_grads(noise_seed):
        p = fresh_params()
        noise = [{k: torch.from_numpy(a) for k, a in n.items()}
                 for n in layer_noise(problem, lrtdense_noise(problem, noise_seed))]
        loss = peer_loss(xp, est, p, x, y, noise)
        loss.backward()
        return loss.item(), as_params_dict(problem, [[a.grad.numpy() for a in t] for t in p])

    notes = (f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
             f"torch.optim.Adam(lr=1e-3) with its defaults (foreach="
             f"{optimizer.defaults.get('foreach')}); noise torch.randn / torch.randint")
    return Contender(contender_name("torch", est), LIBRARIES["torch"], run, notes, loss_and_grads,
                     "torch", est)


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
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y.astype(np.int32))
    spec = noise_spec(problem)
    est = problem.estimator
    loss_fn = _jax_loss(est)

    def adam_leaf(p, m, v, g, t):
        m = m + (1 - B1) * (g - m)                                  # first moment
        v = B2 * v + (1 - B2) * (g * g)                              # second moment
        step_size = LEARNING_RATE / (1 - B1 ** t)                    # bias corrections
        denom = jnp.sqrt(v) / jnp.sqrt(1 - B2 ** t) + ADAM_EPS
        return p - step_size * (m / denom), m, v

    def draw(key, shape, kind):
        if kind == "sign":
            return jax.random.rademacher(key, shape, dtype)
        return jax.random.normal(key, shape, dtype)

    def step(state, x, y, key):
        params, m, v, t = state
        key, sub = jax.random.split(key)
        keys = iter(jax.random.split(sub, sum(len(layer) for layer in spec)))
        noise = [{name: draw(next(keys), shape, kind) for name, shape, kind in layer}
                 for layer in spec]
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, noise)
        t = t + 1
        leaves, treedef = jax.tree_util.tree_flatten(params)
        updated = [adam_leaf(*leaf, t) for leaf in zip(leaves, jax.tree_util.tree_leaves(m),
                                                         jax.tree_util.tree_leaves(v),
                                                         jax.tree_util.tree_leaves(grads))]
        p, m, v = (jax.tree_util.tree_unflatten(treedef, list(column)) for column in zip(*updated))
        return (p, m, v, t), key, loss

    params = [tuple(jnp.asarray(a) for a in arrays) for arrays in layer_params(problem)]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros((), dtype))
    key = jax.random.PRNGKey(problem.seed + 4)
    jit_step = jax.jit(step, donate_argnums=(0,))

    def run():
        nonlocal state, key
        state, key, loss = jit_step(state, x, y, key)
        jax.block_until_ready((state, loss))

    value_and_grad = _jax_value_and_grad(est)

    def loss_and_grads(noise_seed):
        p = [tuple(jnp.asarray(a) for a in arrays) for arrays in layer_params(problem)]
        noise = [{k: jnp.asarray(a) for k, a in n.items()}
                 for n in layer_noise(problem, lrtdense_noise(problem, noise_seed))]
        loss, grads = value_and_grad(p, x, y, noise)
        return float(loss), as_params_dict(problem, grads)

    notes = (f"jax {jax.__version__}, backend {jax.default_backend()}, "
             f"x64 {'on' if jax.config.jax_enable_x64 else 'off'}, jit of the whole step; "
             f"noise jax.random.normal / rademacher")
    return Contender(contender_name("jax", est), LIBRARIES["jax"], run, notes, loss_and_grads,
                     "jax", est)


@functools.lru_cache(maxsize=None)
def _jax_loss(estimator):
    xp = JaxOps()

    def loss_fn(params, x, y, noise):
        return peer_loss(xp, estimator, params, x, y, noise)
    return loss_fn


@functools.lru_cache(maxsize=None)
def _jax_value_and_grad(estimator):
    # one jitted function per estimator: JAX compiles it once per dtype and shape, so the float64
    # checks of the float32 configurations reuse the float64 configurations' compilations
    import jax
    return jax.jit(jax.value_and_grad(_jax_loss(estimator)))


# ----------------------------------------------------------------------------- lrtdense.torch
def lrtdense_torch_contender(problem):
    """lrtdense.torch's modules (the same layers, certified by the reference set) in PyTorch
    eager: ``model(x)``, cross-entropy + ``LT.divergence(model) / N``, ``backward``,
    ``torch.optim.Adam(lr=1e-3)``; the step a user who moves to torch runs.

    Raises ImportError when torch is not installed.
    """
    import torch
    import lrtdense.torch as LT

    from lrtdense.registry import serialize

    config = {"class_name": "Sequential",
              "config": {"layers": [serialize(l) for l in problem.model.network.layers]}}
    x = torch.from_numpy(problem.x)
    y = torch.from_numpy(problem.y.astype(np.int64))

    def fresh_model():
        model = LT.from_config(config, problem.x.shape[-1])
        with torch.no_grad():
            for layer, arrays in zip(model, layer_params(problem)):
                names = [n for n, _ in layer.named_parameters()]
                for name, array in zip(names, arrays):
                    getattr(layer, name).copy_(torch.from_numpy(np.array(array)))
        return model

    def loss_of(model, noise=None):
        h = x
        for i, layer in enumerate(model):
            h = layer(h, noise=None if noise is None else noise[i])
        return (torch.nn.functional.cross_entropy(h, y)
                + LT.divergence(model) / NUM_EXAMPLES)

    model = fresh_model()
    LT.set_generator(model, torch.Generator().manual_seed(problem.seed + 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss_of(model).backward()
        optimizer.step()

    def loss_and_grads(noise_seed):
        m = fresh_model()
        noise = [{k: torch.from_numpy(a) for k, a in n.items()}
                 for n in layer_noise(problem, lrtdense_noise(problem, noise_seed))]
        loss = loss_of(m, noise)
        loss.backward()
        return loss.item(), as_params_dict(
            problem, [[p.grad.numpy() for _, p in layer.named_parameters()] for layer in m])

    notes = (f"lrtdense.torch on torch {torch.__version__}, torch.get_num_threads() = "
             f"{torch.get_num_threads()}, torch.optim.Adam(lr=1e-3)")
    return Contender(contender_name("ltorch", problem.estimator), LIBRARIES["ltorch"], run, notes,
                     loss_and_grads, "ltorch", problem.estimator)


PEERS = {"torch": torch_contender, "jax": jax_contender, "ltorch": lrtdense_torch_contender}


# --------------------------------------------------------------------------------- sanity check
def check_peer(reference, peer, noise_seed=123):
    """Loss and gradients of ``peer`` vs ``reference`` (lrtdense's step) on the same params,
    minibatch and noise (lrtdense's draw from ``default_rng(noise_seed)``).

    Returns:
      dict: loss (lrtdense's), loss_rel (|loss_peer - loss_ref| / |loss_ref|), grad_rel (max over
      params of max|g_peer - g_ref| / max|g_ref|), worst (the param name of grad_rel).
    Raises:
      ValueError: the peer's gradients miss a param of lrtdense's.
    """
    ref_loss, ref_grads = reference.loss_and_grads(noise_seed)
    peer_loss_value, peer_grads = peer.loss_and_grads(noise_seed)
    worst, grad_rel = None, 0.0
    for layer, ref_layer in ref_grads["network"].items():
        for name, ref in ref_layer.items():
            try:
                got = np.asarray(peer_grads["network"][layer][name], dtype=np.float64)
            except KeyError:
                raise ValueError(f"{peer.name}: no gradient for {layer}/{name}") from None
            ref = np.asarray(ref, dtype=np.float64)
            rel = float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny))
            if not math.isfinite(rel) or rel >= grad_rel:
                worst, grad_rel = f"{layer}/{name}", rel if math.isfinite(rel) else math.inf
    return {"loss_rel": abs(peer_loss_value - ref_loss) / abs(ref_loss), "grad_rel": grad_rel,
            "worst": worst, "loss": ref_loss}
