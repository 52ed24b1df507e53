"""A JAX port of TFP's dense variational layers, written from reference_data/SPEC.md alone.

It implements DenseLocalReparameterization, DenseReparameterization, DenseFlipout (with every
prior and divergence of SPEC §3: Normal, trainable Normal, scale mixture, Laplace, Student-t;
closed form or Monte Carlo), DenseVariational and the two variational dropout layers (and the
Sequential networks, the training steps with one or several samples, and the two Adam forms of the
reference set) as pure functions of the
parameters, the input and explicit noise arrays, and computes what the reference set expects:
the outputs in sample and mean mode, the KL terms, and the gradients of
L = sum(g * outputs_sample) + kl_total with ``jax.value_and_grad``.

It does not import lrtdense: it only reads the reference files (NumPy .npy and case.json) and
writes one RESULTS/<case>.npz per case, which ``lrtdense reference verify RESULTS`` then checks.

    python examples/ports/jax_port.py RESULTS [--reference DIR] [--cases GLOB ...]
                                              [--broken no_square|no_eps]
                                              [--statistical [--samples S] [--seed N]]
    lrtdense reference verify RESULTS                 # or: verify RESULTS --statistical

``--broken`` injects a deliberate bug (no_square: LRT variance (x*x) @ scale instead of
(x*x) @ scale**2; no_eps: scale = softplus(u) without + eps) to show that verify catches it.
``--statistical`` also writes ``samples/outputs`` and the per-draw gradients ``samples/grads/*``
(S draws from ``jax.random``) for every single-layer case with a linear activation, and
``samples/loss`` and ``samples/grads/layer_0/*`` (S draws of the first step) for a training case
of one such layer (SPEC §7, "Statistical mode").

Importing this module turns on ``jax_enable_x64`` (the float64 cases need it; float32 arrays stay
float32) and, unless XLA_FLAGS already sets it and only if no JAX computation has run yet in the
process, adds ``--xla_backend_optimization_level=0`` to XLA_FLAGS: each case is one jit-compiled
function of its own shapes, and on these tiny graphs XLA's optimisation passes cost more time than
they save (the whole reference set runs in about half the time).

From Python: ``run_case(meta, inputs) -> dict`` (``meta`` the parsed case.json, ``inputs`` the
flat dict key -> array, e.g. a ``lrtdense.testing.ReferenceCase``'s ``meta`` and ``inputs``).
"""
import argparse
import fnmatch
import json
import math
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

BROKEN = (None, "no_square", "no_eps")


def _default_reference():
    """The checkout's reference_data/ beside examples/, else the installed set's folder as
    `lrtdense reference path` prints it (the port itself never imports lrtdense)."""
    here = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         os.pardir, os.pardir, "reference_data"))
    if os.path.isdir(here) or shutil.which("lrtdense") is None:
        return here
    done = subprocess.run(["lrtdense", "reference", "path"], capture_output=True, text=True)
    return done.stdout.strip() or here


DEFAULT_REFERENCE = _default_reference()
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


# ----------------------------------------------------------------------------- elementary pieces

def softplus(u):
    """TensorFlow's softplus (SPEC §2): u above -t, exp(u) below t, log1p(exp(u)) in between,
    with t = log(eps) + 2 of u's dtype."""
    t = math.log(float(jnp.finfo(u.dtype).eps)) + 2.0
    middle = jnp.log1p(jnp.exp(jnp.clip(u, t, -t)))  # clipped: no overflow in unused lanes
    return jnp.where(u > -t, u, jnp.where(u < t, jnp.exp(u), middle))


def posterior_scale(u, broken=None):
    """scale = softplus(u) + eps (SPEC §2); ``no_eps`` drops the + eps."""
    if broken == "no_eps":
        return softplus(u)
    return softplus(u) + jnp.finfo(u.dtype).eps


@jax.custom_vjp
def zero_safe_sqrt(v):
    """sqrt whose vjp is 0 where the output is exactly 0 (SPEC §3 zero-variance convention):
    the cotangent s_bar maps to s_bar / (2 s) where s > 0, else 0 (TFP would give NaN)."""
    return jnp.sqrt(v)


def _sqrt_fwd(v):
    s = jnp.sqrt(v)
    return s, s


def _sqrt_bwd(s, s_bar):
    positive = s > 0
    return (jnp.where(positive, s_bar / (2 * jnp.where(positive, s, 1)), 0),)


zero_safe_sqrt.defvjp(_sqrt_fwd, _sqrt_bwd)


def activation(name, z):
    if name in (None, "linear"):
        return z
    if name == "relu":
        # where, not maximum: jnp.maximum splits the gradient at a tie (0.5); TF's relu'(0) is 0
        return jnp.where(z > 0, z, jnp.zeros_like(z))
    if name == "tanh":
        return jnp.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + jnp.exp(-z))
    if name == "softplus":
        return softplus(z)
    if name == "elu":
        # the clamp by where (not jnp.minimum, which splits ties) keeps elu'(0) = 1, as TF's
        return jnp.where(z > 0, z, jnp.expm1(jnp.where(z > 0, jnp.zeros_like(z), z)))
    raise ValueError(f"unknown activation {name!r}")


def kl_normal(loc, scale, prior):
    """KL(N(loc, scale) || N(mp, sp)) summed over all elements (SPEC §3)."""
    mp, sp = prior["loc"], prior["scale"]
    d = jnp.log(scale) - math.log(sp)
    return jnp.sum(0.5 * (loc / sp - mp / sp) ** 2 + 0.5 * jnp.expm1(2 * d) - d)


def kl_deterministic(loc, prior):
    """KL(Deterministic(loc) || N(mp, sp)) = -log N(loc; mp, sp), summed (SPEC §3)."""
    mp, sp = prior["loc"], prior["scale"]
    return jnp.sum(0.5 * (loc / sp - mp / sp) ** 2 + 0.5 * math.log(2 * math.pi) + math.log(sp))


# ------------------------------------------------------------ priors and divergences (SPEC §3)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def prior_loc_scale(prior, params, name):
    """(loc, scale) of a Normal prior: numbers, or a trainable prior's params (scale = softplus
    + eps, as the posterior's)."""
    if prior["type"] == "trainable_normal":
        return (params[f"{name}_prior_loc"],
                posterior_scale(params[f"{name}_prior_untransformed_scale"]))
    return prior["loc"], prior["scale"]


def log_prior(w, prior, params, name):
    """sum over elements of log p(w) (SPEC §3, "Priors")."""
    kind = prior["type"]
    if kind in ("normal", "trainable_normal"):
        mp, sp = prior_loc_scale(prior, params, name)
        return jnp.sum(-0.5 * ((w - mp) / sp) ** 2 - jnp.log(sp) - HALF_LOG_2PI)
    if kind == "scale_mixture":
        parts = [math.log(weight) - math.log(sigma) - HALF_LOG_2PI - 0.5 * (w / sigma) ** 2
                 for weight, sigma in ((prior["pi"], prior["sigma1"]),
                                       (1 - prior["pi"], prior["sigma2"]))]
        return jnp.sum(jnp.logaddexp(*parts))
    if kind == "laplace":
        # sign(d) * d is |d| with the derivative 0 at d == 0 (SPEC §3); jnp.abs's is 1 there
        d = w - prior["loc"]
        return jnp.sum(-(jnp.sign(d) * d) / prior["scale"] - math.log(2 * prior["scale"]))
    if kind == "student_t":
        df, sc = prior["df"], prior["scale"]
        y = (w - prior["loc"]) / sc
        const = (math.log(sc) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
                 + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1)))
        return jnp.sum(-0.5 * (df + 1) * jnp.log1p(y * y / df) - const)
    raise ValueError(f"unknown prior {kind!r}")


def divergence_spec(cfg, name):
    """The case's kernel_divergence / bias_divergence; absent (older cases): closed form, 1."""
    return cfg.get(f"{name}_divergence") or {"type": "closed_form", "weight": 1.0}


def mc_eps(class_name, cfg, name, noise):
    """The standard normals of a Monte Carlo term: the forward's own draw (Reparameterization's
    kernel, a Normal bias) when sample is "forward", else the extra draw <name>_divergence."""
    own = name == "bias" or class_name == "DenseReparameterization"
    if own and divergence_spec(cfg, name)["sample"] == "forward":
        return noise[name]
    return noise[f"{name}_divergence"]


def divergence(class_name, cfg, params, name, loc, scale, noise):
    """One weighted divergence term: -log p(loc) for a point mass, the closed-form KL, or
    log q(w) - log p(w) at w = loc + scale * eps, log q = sum(-eps**2 / 2 - log scale - log(2 pi) / 2)
    (eps = 0 in mean mode, ``noise`` None)."""
    prior, spec = cfg[f"{name}_prior"], divergence_spec(cfg, name)
    if scale is None:
        value = -log_prior(loc, prior, params, name)
    elif spec["type"] == "closed_form":
        mp, sp = prior_loc_scale(prior, params, name)
        d = jnp.log(scale) - jnp.log(sp)
        value = jnp.sum(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * jnp.expm1(2 * d) - d)
    else:
        eps = jnp.zeros_like(loc) if noise is None else mc_eps(class_name, cfg, name, noise)
        log_q = jnp.sum(-0.5 * eps * eps - jnp.log(scale) - HALF_LOG_2PI)
        value = log_q - log_prior(loc + scale * eps, prior, params, name)
    return value if spec["weight"] == 1 else value * spec["weight"]


# ------------------------------------------------------------------ DenseVariational (SPEC §3)

TUTORIAL_C = math.log(math.expm1(1.0))   # softplus^-1(1), posterior_mean_field's c


def dv_moments(params):
    t = params["posterior_constant"]
    n = t.shape[0] // 2
    return t[:n], 1e-5 + softplus(t[n:] + TUTORIAL_C)


def dv_forward(cfg, params, x, noise, mode):
    loc, scale = dv_moments(params)
    w = noise["posterior"] * scale + loc if mode == "sample" else loc
    units, d = cfg["units"], x.shape[-1]
    z = jnp.matmul(x, w[:d * units].reshape(d, units))
    if cfg["use_bias"]:
        z = z + w[d * units:]
    return activation(cfg.get("activation"), z)


def dv_kl(cfg, params, noise):
    loc, scale = dv_moments(params)
    mp = params["prior_constant"] if cfg["prior"] == "trainable" else 0.0
    if cfg["kl_use_exact"]:
        d = jnp.log(scale)
        kl = jnp.sum(0.5 * (loc - mp) ** 2 + 0.5 * jnp.expm1(2 * d) - d)
    else:
        eps = jnp.zeros_like(loc) if noise is None else noise["posterior"]
        w = eps * scale + loc
        kl = (jnp.sum(-0.5 * eps * eps - jnp.log(scale) - HALF_LOG_2PI)
              - jnp.sum(-0.5 * (w - mp) ** 2 - HALF_LOG_2PI))
    if cfg.get("kl_weight") is not None:
        kl = kl * float(np.float32(cfg["kl_weight"]))   # TFP's tf.cast of a Python float
    return kl


# ----------------------------------------------------------------------------------- one layer

# Variational dropout (SPEC §3): Kingma et al.'s KL constants and Molchanov et al.'s
KINGMA_C = (1.16145124, -1.50204118, 0.58629921)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)
DROPOUT = ("DenseVariationalDropout", "DenseSparseVariationalDropout")


def min0(a):
    """min(a, 0) with TensorFlow's tie rule: at a == 0 the whole gradient goes to a."""
    return jnp.where(a <= 0, a, jnp.zeros_like(a))


def log_alpha(class_name, params):
    theta = params["kernel_theta"]
    if class_name == "DenseVariationalDropout":
        return min0(params["kernel_log_alpha"])
    return jnp.clip(params["kernel_log_sigma2"] - jnp.log(theta * theta + 1e-8), -8.0, 8.0)


def dropout_forward(class_name, cfg, params, x, noise, mode):
    theta = params["kernel_theta"]
    la = log_alpha(class_name, params)
    if mode == "pruned":
        z = jnp.matmul(x, theta * (la <= cfg["threshold"]).astype(theta.dtype))
    else:
        z = jnp.matmul(x, theta)
    if mode == "sample":
        var = (jnp.exp(la) * theta * theta if class_name == "DenseVariationalDropout"
               else jnp.exp(params["kernel_log_sigma2"]))
        z = z + noise["kernel"] * zero_safe_sqrt(jnp.matmul(x * x, var))
    if cfg["use_bias"]:
        z = z + params["bias"]
    return activation(cfg.get("activation"), z)


def dropout_kl(class_name, params):
    la = log_alpha(class_name, params)
    if class_name == "DenseVariationalDropout":
        c1, c2, c3 = KINGMA_C
        a = jnp.exp(la)
        return jnp.sum(MOLCHANOV_K[0] - (0.5 * la + c1 * a + c2 * a ** 2 + c3 * a ** 3))
    k1, k2, k3 = MOLCHANOV_K
    return jnp.sum(k1 - k1 * jax.nn.sigmoid(k2 + k3 * la) + 0.5 * jnp.log1p(jnp.exp(-la)))


def layer_forward(class_name, cfg, params, x, noise, mode, broken=None):
    """One layer's outputs. ``params``/``noise``: dicts of arrays (TFP names / SPEC noise keys);
    ``mode`` "sample", "mean" or "pruned" (sparse variational dropout only)."""
    if class_name in DROPOUT:
        return dropout_forward(class_name, cfg, params, x, noise, mode)
    if class_name == "DenseVariational":
        return dv_forward(cfg, params, x, noise, mode)
    sample = mode == "sample"
    loc = params["kernel_posterior_loc"]
    scale = posterior_scale(params["kernel_posterior_untransformed_scale"], broken)
    mean_term = jnp.matmul(x, loc)
    if not sample:
        kernel_term = mean_term
    elif class_name == "DenseLocalReparameterization":
        var = jnp.matmul(x * x, scale if broken == "no_square" else scale * scale)
        kernel_term = noise["kernel"] * zero_safe_sqrt(var) + mean_term
    elif class_name == "DenseReparameterization":
        kernel_term = jnp.matmul(x, noise["kernel"] * scale + loc)
    elif class_name == "DenseFlipout":
        perturbation = jnp.matmul(x * noise["sign_input"], noise["kernel"] * scale)
        kernel_term = mean_term + perturbation * noise["sign_output"]
    else:
        raise ValueError(f"unknown layer class {class_name!r}")

    bias = cfg.get("bias_posterior")
    if bias is None:
        z = kernel_term
    elif bias["type"] == "deterministic" or not sample:
        z = kernel_term + params["bias_posterior_loc"]
    elif bias["type"] == "normal":
        bias_scale = posterior_scale(params["bias_posterior_untransformed_scale"], broken)
        z = kernel_term + (noise["bias"] * bias_scale + params["bias_posterior_loc"])
    else:
        raise ValueError(f"unknown bias posterior {bias['type']!r}")
    return activation(cfg.get("activation"), z)


def layer_kl(class_name, cfg, params, broken=None, noise=None):
    """dict "kernel"/"bias" -> KL term, for the terms that exist. ``noise``: the sample-mode
    noise a Monte Carlo term is evaluated at; None for the mean mode (at the posterior mean)."""
    if class_name in DROPOUT:
        return {"kernel": dropout_kl(class_name, params)}
    if class_name == "DenseVariational":
        return {"kernel": dv_kl(cfg, params, noise)}
    terms = {}
    if cfg.get("kernel_prior") is not None:
        scale = posterior_scale(params["kernel_posterior_untransformed_scale"], broken)
        terms["kernel"] = divergence(class_name, cfg, params, "kernel",
                                     params["kernel_posterior_loc"], scale, noise)
    bias, prior = cfg.get("bias_posterior"), cfg.get("bias_prior")
    if bias is not None and prior is not None:
        scale = (posterior_scale(params["bias_posterior_untransformed_scale"], broken)
                 if bias["type"] == "normal" else None)
        terms["bias"] = divergence(class_name, cfg, params, "bias", params["bias_posterior_loc"],
                                   scale, noise)
    return terms


# -------------------------------------------------------------------------------------- a case

def _sub(flat, prefix):
    """{"params/a": v} -> {"a": v} for keys under ``prefix``/."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in flat.items() if k.startswith(p)}


def _layers(meta):
    """[(prefix, class_name, config)]: prefix "" for a layer case, "layer_<i>" for a network."""
    model = meta["model"]
    if model["class_name"] != "Sequential":
        return [("", model["class_name"], model["config"])]
    return [(f"layer_{i}", layer["class_name"], layer["config"])
            for i, layer in enumerate(model["config"]["layers"])]


def _network(meta, params, noise, x, mode, broken):
    """Every layer in ``mode``, each on the previous layer's output: in mean mode, the network's
    mean output is every layer's mean mode on the previous mean output (SPEC §3)."""
    h = x
    for prefix, class_name, cfg in _layers(meta):
        h = layer_forward(class_name, cfg, _sub(params, prefix) if prefix else params, h,
                          _sub(noise, prefix) if prefix else noise, mode, broken)
    return h


def _kl_terms(meta, params, broken, noise=None):
    """dict "kl/<layer_i/>kernel" ... -> KL term (Monte Carlo terms at ``noise``; None: the
    mean mode's, at the posterior mean)."""
    terms = {}
    for prefix, class_name, cfg in _layers(meta):
        layer_params = _sub(params, prefix) if prefix else params
        layer_noise = None if noise is None else (_sub(noise, prefix) if prefix else noise)
        for name, term in layer_kl(class_name, cfg, layer_params, broken, layer_noise).items():
            terms[f"kl/{prefix + '/' if prefix else ''}{name}"] = term
    return terms


SAMPLED_DIVERGENCE_KINDS = ("priors", "dense_variational")   # cases with kl_mean/total


def run_layers(meta, inputs, broken=None):
    """Outputs, KL terms and gradients of a layer or network case. Returns dict key -> ndarray."""
    dtype = DTYPES[meta["dtype"]]
    arrays = {k: jnp.asarray(np.asarray(v), dtype=dtype) for k, v in inputs.items()}

    def loss(params, x, noise, g):
        outputs = _network(meta, params, noise, x, "sample", broken)
        kl = _kl_terms(meta, params, broken, noise)
        kl_total = sum(kl.values(), jnp.zeros((), dtype))
        return jnp.sum(g * outputs) + kl_total, (outputs, kl, kl_total)

    @jax.jit
    def everything(params, x, noise, g):
        (_, (outputs, kl, kl_total)), (grad_params, grad_x) = jax.value_and_grad(
            loss, argnums=(0, 1), has_aux=True)(params, x, noise, g)
        results = dict(kl)
        results["kl/total"] = kl_total
        results.update({f"grads/{name}": value for name, value in grad_params.items()})
        results["grads/x"] = grad_x
        results["outputs/sample"] = outputs
        results["outputs/mean"] = _network(meta, params, noise, x, "mean", broken)
        if all(c == "DenseSparseVariationalDropout" for _, c, _ in _layers(meta)):
            results["outputs/pruned"] = _network(meta, params, noise, x, "pruned", broken)
        if meta["kind"] in SAMPLED_DIVERGENCE_KINDS:   # the mean-mode forward's KL (SPEC §3)
            results["kl_mean/total"] = sum(_kl_terms(meta, params, broken).values(),
                                           jnp.zeros((), dtype))
        return results

    results = everything(_sub(arrays, "params"), arrays["x"], _sub(arrays, "noise"), arrays["g"])
    return {k: np.asarray(v) for k, v in results.items()}


def run_adam(meta, inputs):
    """Both Adam forms of SPEC §3 (``kingma`` = torch.optim.Adam, ``keras`` = tf-keras Adam),
    one ``lax.scan`` over the steps; the per-step scalars are computed in Python float64."""
    hp = meta["hyperparameters"]
    lr, b1, b2, steps = hp["step_size"], hp["b1"], hp["b2"], hp["steps"]
    dtype = DTYPES[meta["dtype"]]
    names = sorted(_sub(inputs, "init"))
    init = {n: jnp.asarray(inputs[f"init/{n}"], dtype=dtype) for n in names}
    grads = {n: jnp.asarray(inputs[f"grads/{n}"], dtype=dtype) for n in names}
    ts = range(1, steps + 1)
    # kingma (= torch.optim.Adam): step size lr / (1 - b1^t), sqrt(v) divided by sqrt(1 - b2^t).
    kingma_coeffs = (jnp.asarray([lr / (1 - b1 ** t) for t in ts], dtype),
                     jnp.asarray([math.sqrt(1 - b2 ** t) for t in ts], dtype))
    # keras (tf-keras Adam): lr, b1, b2 rounded to float32 in the folded step size alpha only.
    lr32, b1_32, b2_32 = (float(np.float32(v)) for v in (lr, b1, b2))
    keras_alpha = jnp.asarray([lr32 * math.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t) for t in ts],
                              dtype)
    eps_kingma, eps_keras = hp["eps"]["kingma"], hp["eps"]["keras"]

    def kingma_step(state, xs):
        p, m, v = state
        g, step_size, bc2_sqrt = xs
        m = m + (1 - b1) * (g - m)
        v = b2 * v + (1 - b2) * (g * g)
        p = p - step_size * (m / (jnp.sqrt(v) / bc2_sqrt + eps_kingma))
        return (p, m, v), p

    def keras_step(state, xs):
        p, m, v = state
        g, alpha = xs
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        p = p - m * alpha / (jnp.sqrt(v) + eps_keras)
        return (p, m, v), p

    @jax.jit
    def trajectories(init, grads):
        out = {}
        for n in names:
            zero = jnp.zeros_like(init[n])
            _, out[f"kingma/params/{n}"] = jax.lax.scan(
                kingma_step, (init[n], zero, zero), (grads[n],) + kingma_coeffs)
            _, out[f"keras/params/{n}"] = jax.lax.scan(
                keras_step, (init[n], zero, zero), (grads[n], keras_alpha))
        return out

    return {k: np.asarray(v) for k, v in trajectories(init, grads).items()}


def gaussian_nll(y, f, sigma):
    """The mean over the batch of the sum over outputs of
    0.5 ((y - f) / sigma)**2 + log sigma + 0.5 log(2 pi); y, f (batch, out)."""
    z = (y - f) / sigma
    return jnp.mean(jnp.sum(0.5 * z * z + math.log(sigma) + 0.5 * math.log(2 * math.pi), -1))


def training_loss(nll, kl, kl_weight, num_examples):
    """A step's loss (SPEC §3 "Training"): the mean NLL + kl_weight * KL / N."""
    return nll + kl_weight * kl / num_examples


def run_training(meta, inputs, broken=None):
    """A training case (SPEC §3 "Training"): for each step t, the minibatch order[epoch][...] of
    batch_size examples, loss = mean Gaussian NLL + kl_weight[epoch] * KL / N with the step's
    noise, its gradient (jax.value_and_grad), one Adam step of the case's form. Returns the params
    after every step and the loss, NLL and KL of every step (before its update)."""
    h = meta["hyperparameters"]
    dtype = DTYPES[meta["dtype"]]
    net = {"kind": "network", "model": {"class_name": "Sequential",
                                        "config": meta["model"]["network"]}}
    sigma = meta["model"]["likelihood"]["scale"]
    n, bs = h["num_examples"], h["batch_size"]
    arrays = {k: jnp.asarray(np.asarray(v), dtype=dtype) for k, v in inputs.items()
              if k != "order"}

    samples = h.get("num_samples", 1)

    def one_draw(params, xb, yb, noise):
        f = _network(net, params, noise, xb, "sample", broken)
        kl = sum(_kl_terms(net, params, broken, noise).values(), jnp.zeros((), dtype))
        return gaussian_nll(yb, f, sigma), kl

    def loss_fn(params, xb, yb, noise, weight):
        if samples == 1:
            nll, kl = one_draw(params, xb, yb, noise)
        else:   # several samples: noise (S, ...), the NLL and KL averaged over the draws
            draws = [one_draw(params, xb, yb, {k: v[s] for k, v in noise.items()})
                     for s in range(samples)]
            nll = sum(d[0] for d in draws) / samples
            kl = sum(d[1] for d in draws) / samples
        return training_loss(nll, kl, weight, n), (nll, kl)

    step_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    params = _sub(arrays, "init")
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    lr, b1, b2, eps = h["step_size"], h["b1"], h["b2"], h["eps"]
    lr32, b1_32, b2_32 = (float(np.float32(c)) for c in (lr, b1, b2))
    out = {"loss": [], "nll": [], "kl": []}
    traj = []
    t = 0
    for epoch in range(h["epochs"]):
        order = np.asarray(inputs["order"][epoch])
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            noise = _sub(arrays, f"noise/step_{t}")
            (loss, (nll, kl)), g = step_grad(params, arrays["x"][idx], arrays["y"][idx], noise,
                                             h["kl_weights"][epoch])
            for key, val in (("loss", loss), ("nll", nll), ("kl", kl)):
                out[key].append(val)
            t += 1
            if h["form"] == "kingma":
                m = {k: m[k] + (1 - b1) * (g[k] - m[k]) for k in params}
                v = {k: b2 * v[k] + (1 - b2) * (g[k] * g[k]) for k in params}
                step, bc2 = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
                params = {k: params[k] - step * (m[k] / (jnp.sqrt(v[k]) / bc2 + eps))
                          for k in params}
            else:
                alpha = lr32 * math.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t)
                m = {k: m[k] + (g[k] - m[k]) * (1 - b1) for k in params}
                v = {k: v[k] + (g[k] * g[k] - v[k]) * (1 - b2) for k in params}
                params = {k: params[k] - m[k] * alpha / (jnp.sqrt(v[k]) + eps) for k in params}
            traj.append(params)
    results = {f"params/{k}": np.stack([np.asarray(p[k]) for p in traj]) for k in params}
    results.update({k: np.asarray(jnp.stack(val)) for k, val in out.items()})
    return results


def run_case(meta, inputs, broken=None):
    """Every expected quantity of one case: dict key -> ndarray (keys as in SPEC §6)."""
    if broken not in BROKEN:
        raise ValueError(f"broken must be one of {BROKEN}")
    if meta["kind"] == "adam":
        return run_adam(meta, inputs)
    if meta["kind"] == "training":
        return run_training(meta, inputs, broken)
    return run_layers(meta, inputs, broken)


# ---------------------------------------------------------------------------- statistical mode

STATISTICAL_CLASSES = ("DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
                       "DenseVariationalDropout", "DenseSparseVariationalDropout",
                       "DenseVariational")


def supports_statistical(meta):
    """SPEC §7: a single layer of one of the six classes with a linear activation, or a training
    case of one such layer with a KL that is not random, a Gaussian likelihood of fixed scale and
    one sample per step."""
    model = meta.get("model") or {}
    if meta["kind"] == "training":
        layers, likelihood = model["network"]["layers"], model["likelihood"]
        return (len(layers) == 1 and _linear(layers[0])
                and not random_kl(layers[0]["class_name"], layers[0]["config"])
                and likelihood["type"] == "gaussian" and not likelihood.get("learn_scale")
                and meta["hyperparameters"].get("num_samples", 1) == 1)
    return (meta["kind"] in ("layer", "edge", "dropout", "priors", "dense_variational")
            and _linear(model))


def _linear(layer):
    return (layer.get("class_name") in STATISTICAL_CLASSES
            and layer["config"].get("activation") in (None, "linear"))


def random_kl(class_name, cfg):
    """SPEC §7: whether a call's KL is random (a Monte Carlo divergence), so samples/kl is due."""
    if class_name == "DenseVariational":
        return not cfg["kl_use_exact"]
    bias_normal = (cfg.get("bias_posterior") or {}).get("type") == "normal"
    return any(cfg.get(f"{name}_prior") is not None
               and divergence_spec(cfg, name)["type"] == "monte_carlo"
               and (name == "kernel" or bias_normal) for name in ("kernel", "bias"))


def draw_noise(class_name, params, n, d, units, s, seed, dtype):
    """The noise of ``s`` independent sample-mode calls on n rows of d inputs, from
    jax.random.PRNGKey(seed): dict key -> (s, *shape of one call's array)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 7)
    normal = lambda k, *shape: jax.random.normal(k, (s,) + shape, dtype=dtype)
    sign = lambda k, *shape: jax.random.rademacher(k, (s,) + shape, dtype=dtype)
    if class_name == "DenseVariational":
        noise = {"posterior": normal(keys[0], params["posterior_constant"].shape[0] // 2)}
    elif class_name == "DenseReparameterization":
        noise = {"kernel": normal(keys[0], d, units)}
    elif class_name == "DenseFlipout":
        noise = {"kernel": normal(keys[0], d, units), "sign_input": sign(keys[1], n, d),
                 "sign_output": sign(keys[2], n, units)}
    else:
        noise = {"kernel": normal(keys[0], n, units)}
    if "bias_posterior_untransformed_scale" in params:
        noise["bias"] = normal(keys[3], units)
    if class_name != "DenseVariational":   # extra draws of Monte Carlo divergences (SPEC §3)
        noise["kernel_divergence"] = normal(keys[4], d, units)
        noise["bias_divergence"] = normal(keys[5], units)
    return noise


def sample_statistical(meta, inputs, num_samples=10000, seed=0, broken=None):
    """SPEC §7: ``num_samples`` independent sample-mode calls with noise from ``draw_noise``,
    and the per-draw gradients of L_s = sum(g * out_s) + 0.5 * sum(out_s**2) + kl_s: ``jax.vmap``
    of ``jax.grad`` over the draws' noise, the parameters and x held unbatched; kl_s at the draw's
    own noise (SPEC §3: a Monte Carlo term at the forward's draw or at its extra draw), written as
    samples/kl. For a training case ``sample_training``."""
    if meta["kind"] == "training":
        return sample_training(meta, inputs, num_samples, seed, broken)
    dtype = DTYPES[meta["dtype"]]
    class_name, cfg = meta["model"]["class_name"], meta["model"]["config"]
    arrays = {k: jnp.asarray(np.asarray(v), dtype=dtype) for k, v in inputs.items()}
    params = _sub(arrays, "params")
    x0 = arrays["x"]
    flat = x0.reshape(-1, x0.shape[-1])
    n, d = flat.shape
    units = arrays["g"].shape[-1]
    g = arrays["g"].reshape(n, units)
    s = num_samples
    noise = draw_noise(class_name, params, n, d, units, s, seed, dtype)

    def objective(p, x, nz):
        out = layer_forward(class_name, cfg, p, x, nz, "sample", broken)
        kl = sum(layer_kl(class_name, cfg, p, broken, nz).values(), jnp.zeros((), dtype))
        return jnp.sum(g * out) + 0.5 * jnp.sum(out * out) + kl, (out, kl)

    @jax.jit
    def draws(p, x, nz):
        grad_fn = jax.grad(objective, argnums=(0, 1), has_aux=True)
        return jax.vmap(grad_fn, in_axes=(None, None, 0))(p, x, nz)

    (gp, gx), (out, kl) = draws(params, flat, noise)
    results = {"samples/outputs": out.reshape((s,) + tuple(x0.shape[:-1]) + (units,)),
               "samples/grads/x": gx.reshape((s,) + tuple(x0.shape))}
    results.update({f"samples/grads/{k}": v for k, v in gp.items()})
    if random_kl(class_name, cfg):
        results["samples/kl"] = kl
    return {k: np.asarray(v) for k, v in results.items()}


def sample_training(meta, inputs, num_samples=10000, seed=0, broken=None):
    """SPEC §7, "A training step": ``num_samples`` independent draws of the first step (the
    examples order[0][:batch_size], kl_weights[0], the init parameters) of the case's one layer,
    its noise from ``draw_noise``: each draw's loss (``training_loss``, as ``run_training``
    computes it) and its gradient w.r.t. the layer's parameters (vmap of grad)."""
    h = meta["hyperparameters"]
    dtype = DTYPES[meta["dtype"]]
    layer = meta["model"]["network"]["layers"][0]
    class_name, cfg = layer["class_name"], layer["config"]
    sigma = meta["model"]["likelihood"]["scale"]
    params = {k: jnp.asarray(v, dtype=dtype) for k, v in _sub(inputs, "init/layer_0").items()}
    idx = np.asarray(inputs["order"][0][:h["batch_size"]])
    xb = jnp.asarray(inputs["x"][idx], dtype=dtype)
    yb = jnp.asarray(inputs["y"][idx], dtype=dtype)
    noise = draw_noise(class_name, params, xb.shape[0], xb.shape[1], yb.shape[-1],
                       num_samples, seed, dtype)

    def loss(p, nz):
        f = layer_forward(class_name, cfg, p, xb, nz, "sample", broken)
        kl = sum(layer_kl(class_name, cfg, p, broken, nz).values(), jnp.zeros((), dtype))
        value = training_loss(gaussian_nll(yb, f, sigma), kl, h["kl_weights"][0],
                              h["num_examples"])
        return value, value

    @jax.jit
    def draws(p, nz):
        return jax.vmap(jax.grad(loss, has_aux=True), in_axes=(None, 0))(p, nz)

    grads, losses = draws(params, noise)
    results = {"samples/loss": losses}
    results.update({f"samples/grads/layer_0/{k}": v for k, v in grads.items()})
    return {k: np.asarray(v) for k, v in results.items()}


# ------------------------------------------------------------------------------------------ I/O

def case_names(reference, patterns=None):
    with open(os.path.join(reference, "manifest.json")) as f:
        names = sorted(json.load(f)["cases"])
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    return names


def load_case(reference, name):
    """(meta, inputs) of one case, straight from case.json and inputs/<key>.npy."""
    case_dir = os.path.join(reference, "cases", name)
    with open(os.path.join(case_dir, "case.json")) as f:
        meta = json.load(f)
    inputs = {k: np.load(os.path.join(case_dir, "inputs", *k.split("/")) + ".npy",
                         allow_pickle=False) for k in meta["inputs"]}
    return meta, inputs


def case_seed(seed, name):
    """The statistical-mode seed of one case: ``seed`` mixed with the crc32 of its name, so a case
    draws the same samples whichever ``--cases`` are selected."""
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2 ** 32


def write_results(outdir, reference=DEFAULT_REFERENCE, patterns=None, broken=None,
                  statistical=False, num_samples=10000, seed=0):
    """Writes OUTDIR/<case>.npz for every (matching) case. Returns the case names written."""
    os.makedirs(outdir, exist_ok=True)
    names = case_names(reference, patterns)
    for name in names:
        meta, inputs = load_case(reference, name)
        results = run_case(meta, inputs, broken)
        if statistical and supports_statistical(meta):
            results.update(sample_statistical(meta, inputs, num_samples, case_seed(seed, name),
                                              broken))
        np.savez(os.path.join(outdir, name + ".npz"), **results)
    return names


# ------------------------------------------------------------------ the conformance-kit adapter

class Adapter:
    """This port as an adapter of ``lrtdense.conformance`` (duck-typed: nothing of lrtdense is
    imported), so the kit drives it in process, with no result files:

        pytest --lrtdense-port=examples/ports/jax_port.py:Adapter
        lrtdense reference verify --port examples/ports/jax_port.py:Adapter

    It implements every family, quantity and dtype (``implements = None``); a port in progress
    declares what it has, e.g. ``implements = {"families": ["lrt"], "quantities": ["outputs/*",
    "kl/*"]}`` (see ``partial_port.py``). ``broken`` injects one of ``BROKEN``'s bugs.
    """
    name = "jax_port (JAX)"
    implements = None

    def __init__(self, broken=None):
        if broken not in BROKEN:
            raise ValueError(f"broken must be one of {BROKEN}")
        self.broken = broken

    def compute(self, case):
        """Every expected quantity of ``case`` (anything with ``meta`` and ``inputs``)."""
        return run_case(case.meta, case.inputs, self.broken)

    def sample(self, case, draws, seed):
        """SPEC §7: the deterministic quantities and ``draws`` sample-mode calls' samples."""
        results = run_case(case.meta, case.inputs, self.broken)
        results.update(sample_statistical(case.meta, case.inputs, draws,
                                          case_seed(seed, case.name), self.broken))
        return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="results directory (one <case>.npz per case)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="reference set directory")
    parser.add_argument("--cases", nargs="*", default=None, metavar="GLOB")
    parser.add_argument("--broken", choices=BROKEN[1:], default=None,
                        help="inject a deliberate bug to see verify catch it")
    parser.add_argument("--statistical", action="store_true",
                        help="also write samples/outputs and samples/grads/* (SPEC §7)")
    parser.add_argument("--samples", type=int, default=10000, help="draws per statistical case")
    parser.add_argument("--seed", type=int, default=0, help="jax.random.PRNGKey seed")
    args = parser.parse_args(argv)
    names = write_results(args.outdir, args.reference, args.cases, args.broken, args.statistical,
                          args.samples, args.seed)
    if not names:
        print(f"no case matches {args.cases}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} cases to {args.outdir}"
          + (f" (broken: {args.broken})" if args.broken else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
