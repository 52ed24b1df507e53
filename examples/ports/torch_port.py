"""A PyTorch port of TFP's dense variational layers, written from reference_data/SPEC.md alone.

It implements DenseLocalReparameterization, DenseReparameterization, DenseFlipout (with every
prior and divergence of SPEC §3: Normal, trainable Normal, scale mixture, Laplace, Student-t;
closed form or Monte Carlo), DenseVariational and the two variational dropout layers (and the
Sequential networks, the training steps with one or several samples, and the two Adam forms of the
reference set), with every random draw taken
as an explicit input, and computes what the reference set expects: the outputs in sample and
mean mode, the KL terms, and the gradients of L = sum(g * outputs_sample) + kl_total.

It does not import lrtdense: it only reads the reference files (NumPy .npy and case.json) and
writes one RESULTS/<case>.npz per case, which ``lrtdense reference verify RESULTS`` then checks.

    python examples/ports/torch_port.py RESULTS [--reference DIR] [--cases GLOB ...]
                                                [--broken no_square|no_eps]
                                                [--statistical [--samples S] [--seed N]]
    lrtdense reference verify RESULTS                 # or: verify RESULTS --statistical

``--broken`` injects a deliberate bug (no_square: LRT variance (x*x) @ scale instead of
(x*x) @ scale**2; no_eps: scale = softplus(u) without + eps) to show that verify catches it.
``--statistical`` also writes ``samples/outputs`` and the per-draw gradients ``samples/grads/*``
(S draws from torch's own generator) for every single-layer case with a linear activation, and
``samples/loss`` and ``samples/grads/layer_0/*`` (S draws of the first step) for a training case
of one such layer (SPEC §7, "Statistical mode").

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
import torch

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
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ----------------------------------------------------------------------------- elementary pieces

def softplus(u):
    """TensorFlow's softplus (SPEC §2): u above -t, exp(u) below t, log1p(exp(u)) in between,
    with t = log(eps) + 2 of u's dtype."""
    eps = torch.finfo(u.dtype).eps
    t = math.log(eps) + 2.0
    middle = torch.log1p(torch.exp(torch.clamp(u, t, -t)))  # clamped: no overflow in unused lanes
    return torch.where(u > -t, u, torch.where(u < t, torch.exp(u), middle))


def posterior_scale(u, broken=None):
    """scale = softplus(u) + eps (SPEC §2); ``no_eps`` drops the + eps."""
    if broken == "no_eps":
        return softplus(u)
    return softplus(u) + torch.finfo(u.dtype).eps


class ZeroSafeSqrt(torch.autograd.Function):
    """sqrt whose backward is 0 where the output is exactly 0 (SPEC §3 zero-variance convention):
    the cotangent s_bar maps to s_bar / (2 s) where s > 0, else 0 (TFP would give inf * 0 = NaN)."""

    @staticmethod
    def forward(ctx, v):
        s = torch.sqrt(v)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, s_bar):
        (s,) = ctx.saved_tensors
        positive = s > 0
        return torch.where(positive, s_bar / (2 * torch.where(positive, s, torch.ones_like(s))),
                           torch.zeros_like(s))


def activation(name, z):
    if name in (None, "linear"):
        return z
    if name == "relu":
        # where, not clamp: clamp's gradient at z == 0 is 1, TensorFlow's relu'(0) is 0 (SPEC §3)
        return torch.where(z > 0, z, torch.zeros_like(z))
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + torch.exp(-z))
    if name == "softplus":
        return softplus(z)
    if name == "elu":
        # at z == 0 the gradient flows through expm1, whose slope there is 1 = TF's elu'(0)
        return torch.where(z > 0, z, torch.expm1(torch.clamp(z, max=0)))
    raise ValueError(f"unknown activation {name!r}")


def kl_normal(loc, scale, prior):
    """KL(N(loc, scale) || N(mp, sp)) summed over all elements (SPEC §3)."""
    mp, sp = prior["loc"], prior["scale"]
    d = torch.log(scale) - math.log(sp)
    return torch.sum(0.5 * (loc / sp - mp / sp) ** 2 + 0.5 * torch.expm1(2 * d) - d)


def kl_deterministic(loc, prior):
    """KL(Deterministic(loc) || N(mp, sp)) = -log N(loc; mp, sp), summed (SPEC §3)."""
    mp, sp = prior["loc"], prior["scale"]
    return torch.sum(0.5 * (loc / sp - mp / sp) ** 2 + 0.5 * math.log(2 * math.pi) + math.log(sp))


# ------------------------------------------------------------ priors and divergences (SPEC §3)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def prior_loc_scale(prior, params, name):
    """(loc, scale) of a Normal prior: numbers, or a trainable prior's params (scale = softplus
    + eps, as the posterior's)."""
    if prior["type"] == "trainable_normal":
        return (params[f"{name}_prior_loc"],
                posterior_scale(params[f"{name}_prior_untransformed_scale"]))
    return prior["loc"], prior["scale"]


def log_prior(w, prior, params, name, total=torch.sum):
    """sum over elements of log p(w) (SPEC §3, "Priors"); ``total`` sums (``per_draw``: one sum per
    index of the leading draw axis)."""
    kind = prior["type"]
    if kind in ("normal", "trainable_normal"):
        mp, sp = prior_loc_scale(prior, params, name)
        log_sp = torch.log(sp) if torch.is_tensor(sp) else math.log(sp)
        return total(-0.5 * ((w - mp) / sp) ** 2 - log_sp - HALF_LOG_2PI)
    if kind == "scale_mixture":
        parts = [math.log(weight) - math.log(sigma) - HALF_LOG_2PI - 0.5 * (w / sigma) ** 2
                 for weight, sigma in ((prior["pi"], prior["sigma1"]),
                                       (1 - prior["pi"], prior["sigma2"]))]
        return total(torch.logsumexp(torch.stack(parts), dim=0))
    if kind == "laplace":
        return total(-torch.abs(w - prior["loc"]) / prior["scale"]
                         - math.log(2 * prior["scale"]))
    if kind == "student_t":
        df, sc = prior["df"], prior["scale"]
        y = (w - prior["loc"]) / sc
        const = (math.log(sc) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
                 + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1)))
        return total(-0.5 * (df + 1) * torch.log1p(y * y / df) - const)
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


def per_draw(a):
    """The sum of ``a`` over all but its leading (draw) axis."""
    return a.reshape(a.shape[0], -1).sum(1)


def divergence(class_name, cfg, params, name, loc, scale, noise, total=torch.sum):
    """One weighted divergence term: -log p(loc) for a point mass, the closed-form KL, or
    log q(w) - log p(w) at w = loc + scale * eps, log q = sum(-eps**2 / 2 - log scale - log(2 pi) / 2)
    (eps = 0 in mean mode, ``noise`` None)."""
    prior, spec = cfg[f"{name}_prior"], divergence_spec(cfg, name)
    if scale is None:
        value = -log_prior(loc, prior, params, name, total)
    elif spec["type"] == "closed_form":
        mp, sp = prior_loc_scale(prior, params, name)
        d = torch.log(scale) - (torch.log(sp) if torch.is_tensor(sp) else math.log(sp))
        value = total(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * torch.expm1(2 * d) - d)
    else:
        eps = torch.zeros_like(loc) if noise is None else mc_eps(class_name, cfg, name, noise)
        log_q = total(-0.5 * eps * eps - torch.log(scale) - HALF_LOG_2PI)
        value = log_q - log_prior(loc + scale * eps, prior, params, name, total)
    return value if spec["weight"] == 1 else value * spec["weight"]


# ------------------------------------------------------------------ DenseVariational (SPEC §3)

TUTORIAL_C = math.log(math.expm1(1.0))   # softplus^-1(1), posterior_mean_field's c


def dv_moments(params):
    """(loc, scale) of the flat weight vector: the last axis of posterior_constant (a leading
    axis: one copy per draw)."""
    t = params["posterior_constant"]
    n = t.shape[-1] // 2
    return t[..., :n], 1e-5 + softplus(t[..., n:] + TUTORIAL_C)


def dv_forward(cfg, params, x, noise, mode):
    loc, scale = dv_moments(params)
    w = noise["posterior"] * scale + loc if mode == "sample" else loc
    units, d = cfg["units"], x.shape[-1]
    z = torch.matmul(x, w[..., :d * units].reshape(w.shape[:-1] + (d, units)))
    if cfg["use_bias"]:
        bias = w[..., d * units:]
        z = z + (bias.unsqueeze(-2) if w.ndim > 1 else bias)   # a draw's bias: over its batch
    return activation(cfg.get("activation"), z)


def dv_kl(cfg, params, noise, total=torch.sum):
    loc, scale = dv_moments(params)
    mp = params["prior_constant"] if cfg["prior"] == "trainable" else 0.0
    if cfg["kl_use_exact"]:
        d = torch.log(scale)
        kl = total(0.5 * (loc - mp) ** 2 + 0.5 * torch.expm1(2 * d) - d)
    else:
        eps = torch.zeros_like(loc) if noise is None else noise["posterior"]
        w = eps * scale + loc
        kl = (total(-0.5 * eps * eps - torch.log(scale) - HALF_LOG_2PI)
              - total(-0.5 * (w - mp) ** 2 - HALF_LOG_2PI))
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
    return torch.where(a <= 0, a, torch.zeros_like(a))


def log_alpha(class_name, params):
    theta = params["kernel_theta"]
    if class_name == "DenseVariationalDropout":
        return min0(params["kernel_log_alpha"])
    return torch.clamp(params["kernel_log_sigma2"] - torch.log(theta * theta + 1e-8), -8.0, 8.0)


def dropout_forward(class_name, cfg, params, x, noise, mode):
    theta = params["kernel_theta"]
    la = log_alpha(class_name, params)
    if mode == "pruned":
        z = torch.matmul(x, theta * (la <= cfg["threshold"]).to(theta.dtype))
    else:
        z = torch.matmul(x, theta)
    if mode == "sample":
        var = (torch.exp(la) * theta * theta if class_name == "DenseVariationalDropout"
               else torch.exp(params["kernel_log_sigma2"]))
        z = z + noise["kernel"] * ZeroSafeSqrt.apply(torch.matmul(x * x, var))
    if cfg["use_bias"]:
        z = z + params["bias"]
    return activation(cfg.get("activation"), z)


def dropout_kl(class_name, params, total=torch.sum):
    la = log_alpha(class_name, params)
    if class_name == "DenseVariationalDropout":
        c1, c2, c3 = KINGMA_C
        a = torch.exp(la)
        return total(MOLCHANOV_K[0] - (0.5 * la + c1 * a + c2 * a ** 2 + c3 * a ** 3))
    k1, k2, k3 = MOLCHANOV_K
    return total(k1 - k1 * torch.sigmoid(k2 + k3 * la) + 0.5 * torch.log1p(torch.exp(-la)))


def layer_forward(class_name, cfg, params, x, noise, mode, broken=None):
    """One layer's outputs. ``params``/``noise``: dicts of tensors (TFP names / SPEC noise keys);
    ``mode`` "sample", "mean" or "pruned" (sparse variational dropout only)."""
    if class_name in DROPOUT:
        return dropout_forward(class_name, cfg, params, x, noise, mode)
    if class_name == "DenseVariational":
        return dv_forward(cfg, params, x, noise, mode)
    sample = mode == "sample"
    loc = params["kernel_posterior_loc"]
    scale = posterior_scale(params["kernel_posterior_untransformed_scale"], broken)
    mean_term = torch.matmul(x, loc)
    if not sample:
        kernel_term = mean_term
    elif class_name == "DenseLocalReparameterization":
        var = torch.matmul(x * x, scale if broken == "no_square" else scale * scale)
        kernel_term = noise["kernel"] * ZeroSafeSqrt.apply(var) + mean_term
    elif class_name == "DenseReparameterization":
        kernel_term = torch.matmul(x, noise["kernel"] * scale + loc)
    elif class_name == "DenseFlipout":
        perturbation = torch.matmul(x * noise["sign_input"], noise["kernel"] * scale)
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


def layer_kl(class_name, cfg, params, broken=None, noise=None, total=torch.sum):
    """dict "kernel"/"bias" -> KL term, for the terms that exist. ``noise``: the sample-mode
    noise a Monte Carlo term is evaluated at; None for the mean mode (at the posterior mean).
    ``total``: how a term sums its elements (``per_draw``: one KL per copy of the params)."""
    if class_name in DROPOUT:
        return {"kernel": dropout_kl(class_name, params, total)}
    if class_name == "DenseVariational":
        return {"kernel": dv_kl(cfg, params, noise, total)}
    terms = {}
    if cfg.get("kernel_prior") is not None:
        scale = posterior_scale(params["kernel_posterior_untransformed_scale"], broken)
        terms["kernel"] = divergence(class_name, cfg, params, "kernel",
                                     params["kernel_posterior_loc"], scale, noise, total)
    bias, prior = cfg.get("bias_posterior"), cfg.get("bias_prior")
    if bias is not None and prior is not None:
        scale = (posterior_scale(params["bias_posterior_untransformed_scale"], broken)
                 if bias["type"] == "normal" else None)
        terms["bias"] = divergence(class_name, cfg, params, "bias", params["bias_posterior_loc"],
                                   scale, noise, total)
    return terms


# -------------------------------------------------------------------------------------- a case

def _sub(flat, prefix):
    """{"params/a": v} -> {"a": v} for keys under ``prefix``/."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in flat.items() if k.startswith(p)}


def _layers(meta):
    """[(prefix, class_name, config)]: prefix "" for a layer case, "layer_<i>/" for a network."""
    model = meta["model"]
    if model["class_name"] != "Sequential":
        return [("", model["class_name"], model["config"])]
    return [(f"layer_{i}/", layer["class_name"], layer["config"])
            for i, layer in enumerate(model["config"]["layers"])]


def _network(meta, params, noise, x, mode, broken):
    """Every layer in ``mode``, each on the previous layer's output: in mean mode, the network's
    mean output is every layer's mean mode on the previous mean output (SPEC §3)."""
    h = x
    for prefix, class_name, cfg in _layers(meta):
        h = layer_forward(class_name, cfg, _sub(params, prefix.rstrip("/")) if prefix else params,
                          h, _sub(noise, prefix.rstrip("/")) if prefix else noise, mode, broken)
    return h


SAMPLED_DIVERGENCE_KINDS = ("priors", "dense_variational")   # cases with kl_mean/total


def run_layers(meta, inputs, broken=None):
    """Outputs, KL terms and gradients of a layer or network case. Returns dict key -> ndarray."""
    dtype = TORCH_DTYPES[meta["dtype"]]
    t = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in inputs.items()}
    params = {k: v.requires_grad_() for k, v in _sub(t, "params").items()}
    noise = _sub(t, "noise")
    x = t["x"].requires_grad_()

    out_sample = _network(meta, params, noise, x, "sample", broken)
    results = {}
    with torch.no_grad():
        results["outputs/mean"] = _network(meta, params, noise, x, "mean", broken)
        if all(c == "DenseSparseVariationalDropout" for _, c, _ in _layers(meta)):
            results["outputs/pruned"] = _network(meta, params, noise, x, "pruned", broken)

    kl_total = torch.zeros((), dtype=dtype)
    kl_mean = torch.zeros((), dtype=dtype)
    for prefix, class_name, cfg in _layers(meta):
        layer_params = _sub(params, prefix.rstrip("/")) if prefix else params
        layer_noise = _sub(noise, prefix.rstrip("/")) if prefix else noise
        for name, term in layer_kl(class_name, cfg, layer_params, broken, layer_noise).items():
            results[f"kl/{prefix}{name}"] = term
            kl_total = kl_total + term
        with torch.no_grad():
            for term in layer_kl(class_name, cfg, layer_params, broken).values():
                kl_mean = kl_mean + term
    results["kl/total"] = kl_total
    if meta["kind"] in SAMPLED_DIVERGENCE_KINDS:
        results["kl_mean/total"] = kl_mean      # the mean-mode forward's KL (SPEC §3)

    loss = torch.sum(t["g"] * out_sample) + kl_total
    names = sorted(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names] + [x])
    for name, grad in zip(names + ["x"], grads):
        results[f"grads/{name}"] = grad
    results["outputs/sample"] = out_sample
    return {k: v.detach().numpy().copy() for k, v in results.items()}


def run_adam(meta, inputs):
    """Both Adam forms of SPEC §3: ``kingma`` with torch.optim.Adam, ``keras`` by hand."""
    hp = meta["hyperparameters"]
    lr, b1, b2, steps = hp["step_size"], hp["b1"], hp["b2"], hp["steps"]
    dtype = TORCH_DTYPES[meta["dtype"]]
    names = sorted(_sub(inputs, "init"))
    init = {n: torch.tensor(inputs[f"init/{n}"], dtype=dtype) for n in names}
    grads = {n: torch.tensor(inputs[f"grads/{n}"], dtype=dtype) for n in names}
    results = {}

    # kingma: torch.optim.Adam is this form (eps added to sqrt(v) / sqrt(1 - b2^t)).
    ps = {n: init[n].clone().requires_grad_() for n in names}
    opt = torch.optim.Adam([ps[n] for n in names], lr=lr, betas=(b1, b2), eps=hp["eps"]["kingma"],
                           foreach=False)
    traj = {n: [] for n in names}
    for t in range(steps):
        for n in names:
            ps[n].grad = grads[n][t].clone()
        opt.step()
        for n in names:
            traj[n].append(ps[n].detach().clone())
    for n in names:
        results[f"kingma/params/{n}"] = torch.stack(traj[n])

    # keras (tf-keras Adam): lr, b1, b2 rounded to float32, eps added to sqrt(v).
    lr32, b1_32, b2_32 = (float(np.float32(v)) for v in (lr, b1, b2))
    eps = hp["eps"]["keras"]
    p = {n: init[n].clone() for n in names}
    m = {n: torch.zeros_like(init[n]) for n in names}
    v = {n: torch.zeros_like(init[n]) for n in names}
    traj = {n: [] for n in names}
    for t in range(1, steps + 1):
        alpha = lr32 * math.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t)
        for n in names:
            g = grads[n][t - 1]
            m[n] = m[n] + (g - m[n]) * (1 - b1)
            v[n] = v[n] + (g * g - v[n]) * (1 - b2)
            p[n] = p[n] - m[n] * alpha / (torch.sqrt(v[n]) + eps)
            traj[n].append(p[n].clone())
    for n in names:
        results[f"keras/params/{n}"] = torch.stack(traj[n])
    return {k: val.numpy().copy() for k, val in results.items()}


def gaussian_nll(y, f, sigma):
    """The mean over the batch (axis -2) of the sum over outputs of
    0.5 ((y - f) / sigma)**2 + log sigma + 0.5 log(2 pi); f (..., batch, out)."""
    z = (y - f) / sigma
    return torch.mean(torch.sum(0.5 * z * z + math.log(sigma) + 0.5 * math.log(2 * math.pi),
                                dim=-1), dim=-1)


def training_loss(nll, kl, kl_weight, num_examples):
    """A step's loss (SPEC §3 "Training"): the mean NLL + kl_weight * KL / N."""
    return nll + kl_weight * kl / num_examples


def run_training(meta, inputs, broken=None):
    """A training case (SPEC §3 "Training"): for each step t, the minibatch order[epoch][...] of
    batch_size examples, loss = mean Gaussian NLL + kl_weight[epoch] * KL / N with the step's noise,
    its gradient, one Adam step (kingma: torch.optim.Adam; keras: by hand). Returns the params
    after every step and the loss, NLL and KL of every step (before its update)."""
    h = meta["hyperparameters"]
    dtype = TORCH_DTYPES[meta["dtype"]]
    net = {"kind": "network", "model": {"class_name": "Sequential",
                                        "config": meta["model"]["network"]}}
    sigma = meta["model"]["likelihood"]["scale"]
    n, bs = h["num_examples"], h["batch_size"]
    t_in = {k: torch.tensor(np.asarray(v)) for k, v in inputs.items()}
    params = {k: v.to(dtype).requires_grad_() for k, v in _sub(t_in, "init").items()}
    names = sorted(params)
    lr, b1, b2, eps = h["step_size"], h["b1"], h["b2"], h["eps"]
    if h["form"] == "kingma":
        opt = torch.optim.Adam([params[k] for k in names], lr=lr, betas=(b1, b2), eps=eps,
                               foreach=False)
    m = {k: torch.zeros_like(params[k]) for k in names}
    v = {k: torch.zeros_like(params[k]) for k in names}
    lr32, b1_32, b2_32 = (float(np.float32(c)) for c in (lr, b1, b2))
    out = {"loss": [], "nll": [], "kl": []}
    traj = {k: [] for k in names}
    t = 0
    for epoch in range(h["epochs"]):
        order = inputs["order"][epoch]
        for start in range(0, n, bs):
            idx = torch.tensor(order[start:start + bs])
            xb, yb = t_in["x"].to(dtype)[idx], t_in["y"].to(dtype)[idx]
            noise = {k: val.to(dtype) for k, val in _sub(t_in, f"noise/step_{t}").items()}
            samples = h.get("num_samples", 1)
            nll = kl = 0
            for s in range(samples):   # several samples: noise (S, ...), NLL and KL averaged
                ns = noise if samples == 1 else {k: val[s] for k, val in noise.items()}
                f = _network(net, params, ns, xb, "sample", broken)
                for prefix, class_name, cfg in _layers(net):
                    for term in layer_kl(class_name, cfg, _sub(params, prefix.rstrip("/")),
                                         broken, _sub(ns, prefix.rstrip("/"))).values():
                        kl = kl + term
                nll = nll + gaussian_nll(yb, f, sigma)
            if samples > 1:
                nll, kl = nll / samples, kl / samples
            kl = kl + torch.zeros((), dtype=dtype)
            loss = training_loss(nll, kl, h["kl_weights"][epoch], n)
            for key, val in (("loss", loss), ("nll", nll), ("kl", kl)):
                out[key].append(val.detach().clone())
            grads = torch.autograd.grad(loss, [params[k] for k in names])
            t += 1
            with torch.no_grad():
                if h["form"] == "kingma":
                    for k, g in zip(names, grads):
                        params[k].grad = g
                    opt.step()
                else:
                    alpha = lr32 * math.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t)
                    for k, g in zip(names, grads):
                        m[k] = m[k] + (g - m[k]) * (1 - b1)
                        v[k] = v[k] + (g * g - v[k]) * (1 - b2)
                        params[k].sub_(m[k] * alpha / (torch.sqrt(v[k]) + eps))
            for k in names:
                traj[k].append(params[k].detach().clone())
    results = {f"params/{k}": torch.stack(traj[k]).numpy() for k in names}
    results.update({k: torch.stack(val).numpy() for k, val in out.items()})
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


def sampled_calls(class_name, cfg, params, flat, units, s, seed, broken=None):
    """``s`` independent sample-mode calls on ``flat`` (n, d), all at once, with noise from a
    torch.Generator seeded by ``seed``: every parameter (and x) is copied along a leading draw
    axis, so the gradient of sum_s L_s with respect to copy s is draw s's gradient. Returns
    (the params' copies, x's copy (s, n, d), the outputs (s, n, units), each draw's KL (s,)),
    the copies requiring grad; the KL at the draw's own noise (SPEC §3)."""
    dtype = flat.dtype
    n, d = flat.shape
    gen = torch.Generator().manual_seed(seed)
    normal = lambda *shape: torch.randn(shape, generator=gen, dtype=dtype)
    sign = lambda *shape: torch.randint(0, 2, shape, generator=gen).to(dtype) * 2 - 1
    if class_name == "DenseVariational":
        noise = {"posterior": normal(s, params["posterior_constant"].shape[0] // 2)}
    elif class_name == "DenseReparameterization":
        noise = {"kernel": normal(s, d, units)}
    elif class_name == "DenseFlipout":
        noise = {"kernel": normal(s, d, units), "sign_input": sign(s, n, d),
                 "sign_output": sign(s, n, units)}
    else:
        noise = {"kernel": normal(s, n, units)}
    if "bias_posterior_untransformed_scale" in params:
        noise["bias"] = normal(s, 1, units)  # one draw per call, shared by its batch
    if class_name != "DenseVariational":     # extra draws of Monte Carlo divergences (SPEC §3)
        noise["kernel_divergence"] = normal(s, d, units)
        noise["bias_divergence"] = normal(s, 1, units)
    # copies: kernels (and DenseVariational's flat vectors) (S, ...); biases (S, 1, units) to
    # broadcast over the batch
    flat_copy = lambda v: v.ndim == 2 or class_name == "DenseVariational"
    rep = {k: (v.expand((s,) + v.shape) if flat_copy(v) else v.expand(s, 1, *v.shape))
           .clone().requires_grad_() for k, v in params.items()}
    xs = flat.expand(s, n, d).clone().requires_grad_()
    out = layer_forward(class_name, cfg, rep, xs, noise, "sample", broken)
    kl = sum(layer_kl(class_name, cfg, rep, broken, noise, per_draw).values(),
             torch.zeros(s, dtype=dtype))
    return rep, xs, out, kl


def sample_statistical(meta, inputs, num_samples=10000, seed=0, broken=None):
    """SPEC §7: ``num_samples`` independent sample-mode calls (``sampled_calls``) and the
    per-draw gradients of L_s = sum(g * out_s) + 0.5 * sum(out_s**2) + kl_s, kl_s written as
    samples/kl where it is random; for a training case ``sample_training``."""
    if meta["kind"] == "training":
        return sample_training(meta, inputs, num_samples, seed, broken)
    dtype = TORCH_DTYPES[meta["dtype"]]
    class_name, cfg = meta["model"]["class_name"], meta["model"]["config"]
    t = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in inputs.items()}
    params = _sub(t, "params")
    x0 = t["x"]
    flat = x0.reshape(-1, x0.shape[-1])
    n = flat.shape[0]
    units = t["g"].shape[-1]
    s = num_samples
    rep, xs, out, kl = sampled_calls(class_name, cfg, params, flat, units, s, seed, broken)
    g = t["g"].reshape(n, units)
    objective = torch.sum(g * out) + 0.5 * torch.sum(out * out) + torch.sum(kl)
    names = sorted(rep)
    grads = torch.autograd.grad(objective, [rep[k] for k in names] + [xs])
    results = {"samples/outputs": out.detach().reshape((s,) + tuple(x0.shape[:-1]) + (units,)),
               "samples/grads/x": grads[-1].reshape((s,) + tuple(x0.shape))}
    for k, gk in zip(names, grads[:-1]):
        results[f"samples/grads/{k}"] = gk.reshape((s,) + tuple(params[k].shape))
    if random_kl(class_name, cfg):
        results["samples/kl"] = kl.detach()
    return {k: val.numpy().copy() for k, val in results.items()}


def sample_training(meta, inputs, num_samples=10000, seed=0, broken=None):
    """SPEC §7, "A training step": ``num_samples`` independent draws of the first step (the
    examples order[0][:batch_size], kl_weights[0], the init parameters) of the case's one layer
    (``sampled_calls``): each draw's loss (``training_loss``, as ``run_training`` computes it)
    and its gradient w.r.t. the layer's parameters."""
    h = meta["hyperparameters"]
    dtype = TORCH_DTYPES[meta["dtype"]]
    layer = meta["model"]["network"]["layers"][0]
    t = {k: torch.tensor(np.asarray(v)) for k, v in inputs.items()}
    params = {k: v.to(dtype) for k, v in _sub(t, "init/layer_0").items()}
    idx = torch.tensor(inputs["order"][0][:h["batch_size"]])
    xb, yb = t["x"].to(dtype)[idx], t["y"].to(dtype)[idx]
    s = num_samples
    rep, _, out, kl = sampled_calls(layer["class_name"], layer["config"], params, xb,
                                    yb.shape[-1], s, seed, broken)
    loss = training_loss(gaussian_nll(yb, out, meta["model"]["likelihood"]["scale"]), kl,
                         h["kl_weights"][0], h["num_examples"])
    names = sorted(rep)
    grads = torch.autograd.grad(torch.sum(loss), [rep[k] for k in names])
    results = {"samples/loss": loss.detach()}
    for k, gk in zip(names, grads):
        results[f"samples/grads/layer_0/{k}"] = gk.reshape((s,) + tuple(params[k].shape))
    return {k: val.numpy().copy() for k, val in results.items()}


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

        pytest --lrtdense-port=examples/ports/torch_port.py:Adapter
        lrtdense reference verify --port examples/ports/torch_port.py:Adapter

    It implements every family, quantity and dtype (``implements = None``); a port in progress
    declares what it has, e.g. ``implements = {"families": ["lrt"], "quantities": ["outputs/*",
    "kl/*"]}`` (see ``partial_port.py``). ``broken`` injects one of ``BROKEN``'s bugs.
    """
    name = "torch_port (torch)"
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
    parser.add_argument("--seed", type=int, default=0, help="torch.Generator seed")
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
