"""A second, independent implementation of reference_data/SPEC.md in autograd.numpy (no lrtdense
layer code), used to test `verify` against a port, including deliberately broken variants."""
import math

import autograd.numpy as np
from autograd import grad
from autograd.extend import primitive, defvjp
from autograd.scipy.special import expit


@primitive
def _sqrt(u):
    return np.sqrt(u)


defvjp(_sqrt, lambda ans, u: lambda g: np.where(ans > 0, g / (2 * np.where(ans > 0, ans, 1)), 0 * g))

# Ties follow TensorFlow (SPEC section 3): relu'(0) = 0, elu'(0) = 1, and min(a, 0) passes the
# whole gradient to a at a == 0 (tf.minimum); np.where on one side gives exactly these.
ACT = {"linear": lambda z: z, "relu": lambda z: np.where(z > 0, z, 0 * z), "tanh": np.tanh,
       "sigmoid": expit, "softplus": lambda z: np.logaddexp(0 * z, z),
       "elu": lambda z: np.where(z > 0, z, np.exp(np.where(z > 0, 0 * z, z)) - 1)}


def min0(a):
    """min(a, 0) with tf.minimum's gradient: all of it to a where a <= 0."""
    return np.where(a <= 0, a, 0 * a)


def _scale(u, broken):
    sp = np.logaddexp(0 * u, u)
    return sp if broken == "no_eps" else sp + np.finfo(u.dtype).eps


HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _prior_loc_scale(prior, p, name):
    """(loc, scale) of a Normal or trainable Normal prior (SPEC section 3, "Priors")."""
    if prior["type"] == "trainable_normal":
        return p[f"{name}_prior_loc"], _scale(p[f"{name}_prior_untransformed_scale"], None)
    return prior["loc"], prior["scale"]


# Planted bugs in the priors, divergences and DenseVariational (``broken=``), each a plausible
# misreading of SPEC section 3 that a case must catch (tests/test_oracle_priors.py)
PRIOR_BUGS = ("naive_mixture", "no_divergence_weight", "extra_as_forward", "flipout_forward_noise",
              "mean_kl_at_sample", "kl_weight_exact", "dv_column_major", "laplace_sign_at_zero")
# ... in a network's pruned chain and in training (tests/test_oracle_catches.py)
NETWORK_BUGS = ("pruned_on_mean",)
TRAINING_BUGS = ("first_draw_only", "kl_summed_over_draws", "kl_recorded_weighted",
                 "draw_axis_when_explicit_1")


def _total(a, per_draw=False):
    """The sum of ``a``'s elements; with ``per_draw``, per index of its leading (draw) axis."""
    return np.sum(a, axis=tuple(range(1, np.ndim(a)))) if per_draw else np.sum(a)


def log_prior(w, prior, p, name, broken=None, per_draw=False):
    """sum over elements of log p(w) for every prior type of SPEC section 3 (``per_draw``: over
    all but the leading axis)."""
    kind = prior["type"]
    if kind in ("normal", "trainable_normal"):
        mp, sp = _prior_loc_scale(prior, p, name)
        return _total(-0.5 * ((w - mp) / sp) ** 2 - np.log(sp + 0 * w) - HALF_LOG_2PI, per_draw)
    if kind == "scale_mixture":
        pi, s1, s2 = prior["pi"], prior["sigma1"], prior["sigma2"]
        l1 = math.log(pi) - math.log(s1) - HALF_LOG_2PI - 0.5 * (w / s1) ** 2
        l2 = math.log(1 - pi) - math.log(s2) - HALF_LOG_2PI - 0.5 * (w / s2) ** 2
        if broken == "naive_mixture":
            return _total(np.log(np.exp(l1) + np.exp(l2)), per_draw)
        return _total(np.logaddexp(l1, l2), per_draw)
    if kind == "laplace":
        d = w - prior["loc"]
        # the planted bug's |d| has the derivative sign(d) with sign(0) = 1 (JAX's abs)
        a = np.where(d >= 0, d, -d) if broken == "laplace_sign_at_zero" else np.abs(d)
        return _total(-a / prior["scale"] - math.log(2 * prior["scale"]), per_draw)
    if kind == "student_t":
        df, loc, sc = prior["df"], prior["loc"], prior["scale"]
        y = (w - loc) / sc
        const = (math.log(sc) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
                 + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1)))
        return _total(-0.5 * (df + 1) * np.log1p(y * y / df) - const, per_draw)
    raise ValueError(f"unknown prior {kind!r}")


def divergence(name, cfg, p, loc, scale, eps, broken=None, per_draw=False):
    """The weighted divergence of the kernel or bias (SPEC section 3, "Priors and divergences"):
    a point mass -log p(loc); closed form KL; or Monte Carlo log q(w) - log p(w) at
    w = loc + scale * eps (eps all zero in mean mode). ``per_draw``: arrays with a leading draw
    axis, one value per draw."""
    prior = cfg[f"{name}_prior"]
    spec = cfg.get(f"{name}_divergence") or {"type": "closed_form", "weight": 1.0}
    if scale is None:
        value = -log_prior(loc, prior, p, name, broken, per_draw)
    elif spec["type"] == "closed_form":
        mp, sp = _prior_loc_scale(prior, p, name)
        d = np.log(scale) - np.log(sp + 0 * scale)
        value = _total(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * np.expm1(2 * d) - d, per_draw)
    else:
        w = loc + scale * eps
        log_q = _total(-0.5 * eps * eps - np.log(scale) - HALF_LOG_2PI, per_draw)
        value = log_q - log_prior(w, prior, p, name, broken, per_draw)
        if broken == "kl_mean_over_elements":
            value = value / (np.size(eps) // (np.shape(eps)[0] if per_draw else 1))
    if broken == "no_divergence_weight":
        return value
    return value if spec["weight"] == 1 else spec["weight"] * value


def _mc(cfg, name):
    spec = cfg.get(f"{name}_divergence") or {}
    return cfg[f"{name}_prior"] is not None and spec.get("type") == "monte_carlo"


def _mc_eps(cls, cfg, name, noise, shape, dtype, broken=None):
    """The standard normals of a Monte Carlo term: the forward's own draw where the estimator has
    one and sample is "forward", else the extra draw <name>_divergence; zeros in mean mode."""
    if noise is None:
        return np.zeros(shape, dtype)
    forward = cfg[f"{name}_divergence"]["sample"] == "forward" or broken == "extra_as_forward"
    if forward and (name == "bias" or cls == "DenseReparameterization"):
        return noise[name]
    if broken == "flipout_forward_noise" and cls == "DenseFlipout" and name == "kernel":
        return noise["kernel"]
    return noise[f"{name}_divergence"]


def _kl(loc, scale, prior):
    if prior is None:
        return 0.0
    mp, sp = prior["loc"], prior["scale"]
    if scale is None:
        return np.sum(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * math.log(2 * math.pi) + math.log(sp))
    d = np.log(scale) - math.log(sp)  # a Python float: float32 stays float32
    return np.sum(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * np.expm1(2 * d) - d)


K1, K2, K3 = 0.63576, 1.87320, 1.48695     # Molchanov et al.'s KL approximation
C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921   # Kingma et al.'s


def dropout_layer(spec, p, x, noise, mode):
    """DenseVariationalDropout / DenseSparseVariationalDropout (SPEC section 3)."""
    cls, cfg = spec["class_name"], spec["config"]
    theta = p["kernel_theta"]
    flat = np.reshape(x, (-1, x.shape[-1]))
    if cls == "DenseVariationalDropout":
        la = min0(p["kernel_log_alpha"])
        var = np.exp(la) * theta * theta
        a = np.exp(la)
        kl = np.sum(K1 - (0.5 * la + C1 * a + C2 * a ** 2 + C3 * a ** 3))
    else:
        la = np.clip(p["kernel_log_sigma2"] - np.log(theta * theta + 1e-8), -8.0, 8.0)
        var = np.exp(p["kernel_log_sigma2"])
        kl = np.sum(K1 - K1 * expit(K2 + K3 * la) + 0.5 * np.log1p(np.exp(-la)))
    if mode == "pruned":
        z = np.dot(flat, theta * (la <= cfg["threshold"]))
    else:
        z = np.dot(flat, theta)
    if mode == "sample":
        z = z + np.reshape(noise["kernel"], z.shape) * _sqrt(np.dot(flat * flat, var))
    if cfg["use_bias"]:
        z = z + p["bias"]
    z = np.reshape(z, x.shape[:-1] + (theta.shape[1],))
    return ACT[cfg["activation"]](z), {"kernel": kl}


def dense_variational(spec, p, x, noise, mode, broken=None):
    """TFP's DenseVariational with the tutorial's posterior_mean_field (SPEC section 3)."""
    cfg = spec["config"]
    units = cfg["units"]
    t = p["posterior_constant"]
    n = t.shape[0] // 2
    loc = t[:n]
    scale = 1e-5 + np.logaddexp(0 * t[n:], t[n:] + math.log(math.expm1(1.0)))
    eps = noise["posterior"] if mode == "sample" else np.zeros(n, t.dtype)
    w = loc + scale * eps
    d = x.shape[-1]
    kernel = (np.reshape(w[:d * units], (units, d)).T if broken == "dv_column_major"
              else np.reshape(w[:d * units], (d, units)))
    z = np.reshape(np.dot(np.reshape(x, (-1, d)), kernel), x.shape[:-1] + (units,))
    if cfg["use_bias"]:
        z = z + w[d * units:]
    mp = p["prior_constant"] if cfg["prior"] == "trainable" else 0.0
    if cfg["kl_use_exact"]:
        dl = np.log(scale)
        kl = np.sum(0.5 * (loc - mp) ** 2 + 0.5 * np.expm1(2 * dl) - dl)
    else:
        kl = (np.sum(-0.5 * eps * eps - np.log(scale) - HALF_LOG_2PI)
              - np.sum(-0.5 * (w - mp) ** 2 - HALF_LOG_2PI))
    if cfg["kl_weight"] is not None:
        kl = (cfg["kl_weight"] if broken == "kl_weight_exact"
              else float(np.float32(cfg["kl_weight"]))) * kl
    return ACT[cfg["activation"]](z), {"kernel": kl}


def layer(spec, p, x, noise, mode, broken=None):
    cls, cfg = spec["class_name"], spec["config"]
    if cls in ("DenseVariationalDropout", "DenseSparseVariationalDropout"):
        return dropout_layer(spec, p, x, noise, mode)
    if cls == "DenseVariational":
        return dense_variational(spec, p, x, noise if mode == "sample" else None, mode, broken)
    loc = p["kernel_posterior_loc"]
    scale = _scale(p["kernel_posterior_untransformed_scale"], broken)
    flat = np.reshape(x, (-1, x.shape[-1]))
    out_shape = x.shape[:-1] + (loc.shape[1],)
    if mode == "mean":
        z = np.dot(flat, loc)
    elif cls == "DenseLocalReparameterization":
        var_w = scale if broken == "no_square" else scale ** 2
        z = np.dot(flat, loc) + np.reshape(noise["kernel"], (-1, loc.shape[1])) * _sqrt(np.dot(flat ** 2, var_w))
    elif cls == "DenseReparameterization":
        z = np.dot(flat, loc + scale * noise["kernel"])
    else:
        s_in = np.reshape(noise["sign_input"], flat.shape)
        s_out = np.reshape(noise["sign_output"], (-1, loc.shape[1]))
        z = np.dot(flat, loc) + np.dot(flat * s_in, scale * noise["kernel"]) * s_out
    z = np.reshape(z, out_shape)
    kl = {}
    dtype = loc.dtype
    # the mean mode's Monte Carlo terms at eps = 0 (noise None); the planted bug uses the sample's
    mc_noise = noise if mode == "sample" or broken == "mean_kl_at_sample" else None
    if cfg["kernel_prior"] is not None:
        eps = (_mc_eps(cls, cfg, "kernel", mc_noise, loc.shape, dtype, broken)
               if _mc(cfg, "kernel") else None)
        kl["kernel"] = divergence("kernel", cfg, p, loc, scale, eps, broken)
    bias = cfg["bias_posterior"]
    if bias is not None:
        b = p["bias_posterior_loc"]
        bscale = None
        if bias["type"] == "normal":
            bscale = _scale(p["bias_posterior_untransformed_scale"], broken)
            if mode == "sample":
                b = b + bscale * noise["bias"]
        z = z + b
        if cfg["bias_prior"] is not None:
            eps = (_mc_eps(cls, cfg, "bias", mc_noise, b.shape, dtype, broken)
                   if bscale is not None and _mc(cfg, "bias") else None)
            kl["bias"] = divergence("bias", cfg, p, p["bias_posterior_loc"], bscale, eps, broken)
    return ACT[cfg["activation"]](z), kl


def run_case(meta, inputs, broken=None):
    """Every expected quantity of a layer, edge, dropout, network or training case."""
    if meta["kind"] == "training":
        return run_training(meta, inputs, broken)

    def tree(prefix):
        out = {}
        for k, v in inputs.items():
            if k.startswith(prefix + "/"):
                node = out
                *parents, leaf = k[len(prefix) + 1:].split("/")
                for q in parents:
                    node = node.setdefault(q, {})
                node[leaf] = v
        return out

    params, noise = tree("params"), tree("noise")
    spec = meta["model"]
    layers = (spec["config"]["layers"] if spec["class_name"] == "Sequential" else [spec])
    network = spec["class_name"] == "Sequential"

    def forward(p, x, mode):
        terms = {}
        mean_x = x                # the planted pruned_on_mean feeds layer i the mean chain's
        for i, ls in enumerate(layers):
            name = f"layer_{i}"
            lp, ln = (p[name], noise[name]) if network else (p, noise)
            if broken == "pruned_on_mean" and mode == "pruned":
                x, mean_x = layer(ls, lp, mean_x, ln, mode)[0], layer(ls, lp, mean_x, ln, "mean")[0]
                continue
            x, kl = layer(ls, lp, x, ln, mode, broken)
            terms.update({(f"{name}/{k}" if network else k): v for k, v in kl.items()})
        return x, terms

    def objective(p, x):
        out, terms = forward(p, x, "sample")
        return np.sum(inputs["g"] * out) + sum(terms.values())

    out, terms = forward(params, inputs["x"], "sample")
    mean_out, mean_terms = forward(params, inputs["x"], "mean")
    res = {"outputs/sample": out, "outputs/mean": mean_out,
           "kl/total": np.asarray(sum(terms.values()), dtype=meta["dtype"])}
    if meta["kind"] in ("priors", "dense_variational"):
        res["kl_mean/total"] = np.asarray(sum(mean_terms.values()), dtype=meta["dtype"])
    if all(ls["class_name"] == "DenseSparseVariationalDropout" for ls in layers):
        res["outputs/pruned"] = forward(params, inputs["x"], "pruned")[0]
    res.update({f"kl/{k}": v for k, v in terms.items()})
    gp = grad(objective)(params, inputs["x"])
    flat = {}

    def walk(t, prefix):
        for k, v in t.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}/{k}")
            else:
                flat[f"{prefix}/{k}"] = v
    walk(gp, "grads")
    res.update(flat)
    res["grads/x"] = grad(objective, 1)(params, inputs["x"])
    return res


def run_training(meta, inputs, broken=None):
    """A training case (SPEC section 3, "Training cases"): for each step, the minibatch of the
    given order, loss = mean Gaussian NLL + kl_weight[epoch] * KL / N with the step's noise, its
    gradient, one Adam update of the given form."""
    h = meta["hyperparameters"]
    layers = meta["model"]["network"]["layers"]
    sigma = meta["model"]["likelihood"]["scale"]
    n = h["num_examples"]

    def sub(prefix):
        head = prefix + "/"
        out = {}
        for k, v in inputs.items():
            if k.startswith(head):
                lname, pname = k[len(head):].split("/")
                out.setdefault(lname, {})[pname] = v
        return out

    samples = h.get("num_samples", 1)

    def one_draw(p, xb, yb, noise):
        h_, kl = xb, 0.0
        for i, ls in enumerate(layers):
            h_, terms = layer(ls, p[f"layer_{i}"], h_, noise[f"layer_{i}"], "sample")
            kl = kl + sum(terms.values())
        z = (yb - h_) / sigma
        nll = np.mean(np.sum(0.5 * z * z + math.log(sigma) + 0.5 * math.log(2 * math.pi), axis=-1))
        return nll, kl

    def loss_terms(p, xb, yb, noise, weight):
        """num_samples > 1: the NLL and KL averaged over the draws (noise arrays (S, ...))."""
        axis = samples > 1 or (broken == "draw_axis_when_explicit_1" and "num_samples" in h)
        if not axis:
            nll, kl = one_draw(p, xb, yb, noise)
        else:
            used = 1 if broken == "first_draw_only" else samples
            draws = [one_draw(p, xb, yb, {l: {k: v[s] for k, v in d.items()}
                                          for l, d in noise.items()}) for s in range(used)]
            nll = sum(d[0] for d in draws) / used
            kl = sum(d[1] for d in draws) / (1 if broken == "kl_summed_over_draws" else used)
        loss = nll + weight * kl / n
        return loss, nll, (weight * kl / n if broken == "kl_recorded_weighted" else kl)

    params = sub("init")
    m = {l: {k: 0 * v for k, v in d.items()} for l, d in params.items()}
    v2 = {l: {k: 0 * v for k, v in d.items()} for l, d in params.items()}
    lr, b1, b2, eps = h["step_size"], h["b1"], h["b2"], h["eps"]
    dtype = meta["dtype"]
    out = {"loss": [], "nll": [], "kl": []}
    traj = []
    t = 0
    for epoch in range(h["epochs"]):
        order = inputs["order"][epoch]
        for start in range(0, n, h["batch_size"]):
            idx = order[start:start + h["batch_size"]]
            noise = sub(f"noise/step_{t}")
            weight = h["kl_weights"][epoch]
            xb, yb = inputs["x"][idx], inputs["y"][idx]
            loss, nll, kl = loss_terms(params, xb, yb, noise, weight)
            for key, value in (("loss", loss), ("nll", nll), ("kl", kl)):
                out[key].append(value)
            g = grad(lambda p: loss_terms(p, xb, yb, noise, weight)[0])(params)
            t += 1
            if h["form"] == "keras":
                lr32, b1_32, b2_32 = (float(np.float32(c)) for c in (lr, b1, b2))
                alpha = lr32 * math.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t)
            for l in params:
                for k in params[l]:
                    gk = g[l][k]
                    if h["form"] == "kingma":
                        m[l][k] = m[l][k] + (1 - b1) * (gk - m[l][k])
                        v2[l][k] = b2 * v2[l][k] + (1 - b2) * gk * gk
                        params[l][k] = params[l][k] - (lr / (1 - b1 ** t)) * (
                            m[l][k] / (np.sqrt(v2[l][k]) / math.sqrt(1 - b2 ** t) + eps))
                    else:
                        m[l][k] = m[l][k] + (gk - m[l][k]) * (1 - b1)
                        v2[l][k] = v2[l][k] + (gk * gk - v2[l][k]) * (1 - b2)
                        params[l][k] = params[l][k] - (m[l][k] * alpha) / (np.sqrt(v2[l][k]) + eps)
            traj.append({f"params/{l}/{k}": params[l][k] for l in params for k in params[l]})
    res = {k: np.stack([step[k] for step in traj]) for k in traj[0]}
    res.update({k: np.asarray(np.stack(v), dtype=dtype) for k, v in out.items()})
    return res


def main(argv=None):
    """python tests/spec_port.py RESULTS --reference DIR: results of every case but Adam's (how CI
    checks an installed wheel when torch is absent). Reads the files directly."""
    import argparse
    import json
    import os

    import numpy

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results")
    parser.add_argument("--reference", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.reference, "manifest.json")) as f:
        names = sorted(json.load(f)["cases"])
    written = 0
    for name in names:
        case_dir = os.path.join(args.reference, "cases", name)
        with open(os.path.join(case_dir, "case.json")) as f:
            meta = json.load(f)
        if meta["kind"] == "adam":
            continue
        inputs = {k: numpy.load(os.path.join(case_dir, "inputs", *k.split("/")) + ".npy",
                                allow_pickle=False) for k in meta["inputs"]}
        res = run_case(meta, inputs)
        numpy.savez(os.path.join(args.results, name + ".npz"),
                    **{k: numpy.asarray(v) for k, v in res.items()})
        written += 1
    print(f"wrote {written} cases to {args.results}")


if __name__ == "__main__":
    main()


# ------------------------------------------------------------------------------ statistical mode

STAT_BUGS = ("no_square", "shared_rows", "batch_weight", "per_example_weight", "uniform_noise",
             "rademacher_noise", "bias_per_example", "flipout_no_sign_output", "no_alpha_cap",
             "sparse_alpha_variance", "grad_no_sigmoid", "grad_detached_noise",
             "grad_x_mean_only", "grad_no_kl", "nan_half", "edward2_sign_output",
             "repeat_draws_4", "tiled_4", "grad_noisy_biased", "kl_other_draw",
             "kl_mean_over_elements", "dv_draw_per_example", "train_kl_not_over_n",
             "train_nll_summed", "train_wrong_batch")


def sample_statistical(meta, inputs, num_samples, rng, bug=None):
    """What a port that cannot inject noise writes for a statistical case (SPEC section 7): S
    sample-mode outputs of the case's linear layer, each from fresh noise, and the per-draw
    gradients of L_s = sum(g * out_s) + 0.5 * sum(out_s**2) + kl, by autograd over parameters
    replicated along the draw axis (so the gradient of sum_s L_s w.r.t. copy s is draw s's).
    ``bug`` plants one of STAT_BUGS. A random (Monte Carlo) KL adds samples/kl, each draw's
    kl/total, its Monte Carlo terms at the forward's own draw or an extra one (SPEC section 3).
    A training case: ``_training_statistical``."""
    if meta["kind"] == "training":
        return _training_statistical(meta, inputs, num_samples, rng, bug)
    return _layer_statistical(meta, inputs, num_samples, rng, bug)


def _training_statistical(meta, inputs, s, rng, bug=None):
    """SPEC section 7, "A training step": S independent draws of the first step (the examples
    order[0][:batch_size], kl_weights[0], the init parameters): each draw's loss (mean Gaussian
    NLL over the batch + kl_weights[0] * KL / N) and its gradient w.r.t. the layer's
    parameters, the layer sampled as ``_layer_statistical`` samples it."""
    h = meta["hyperparameters"]
    sigma = meta["model"]["likelihood"]["scale"]
    b = h["batch_size"]
    idx = inputs["order"][0][b:2 * b] if bug == "train_wrong_batch" else inputs["order"][0][:b]
    xb, yb = inputs["x"][idx], inputs["y"][idx]
    single = {"kind": "layer", "dtype": meta["dtype"],
              "model": meta["model"]["network"]["layers"][0]}
    head = "init/layer_0/"
    layer_inputs = {"x": xb, "g": np.zeros_like(yb),
                    **{"params/" + k[len(head):]: v for k, v in inputs.items()
                       if k.startswith(head)}}
    weight, n = h["kl_weights"][0], h["num_examples"]

    def loss(out, kl):
        """(S,) each draw's loss from its outputs (S, B, units) and KL (S,)."""
        z = (yb - out) / sigma
        nll = np.sum(0.5 * z * z + math.log(sigma) + 0.5 * math.log(2 * math.pi), axis=-1)
        nll = np.sum(nll, -1) if bug == "train_nll_summed" else np.mean(nll, -1)
        return nll + weight * kl / (1 if bug == "train_kl_not_over_n" else n)

    if single["model"]["class_name"] == "DenseVariational":
        res = _dv_statistical(single, layer_inputs, s, rng, bug, loss)
    else:
        res = _layer_statistical(single, layer_inputs, s, rng, bug, loss)
    return _finish({k.replace("samples/grads/", "samples/grads/layer_0/"): v
                    for k, v in res.items()}, s, rng, bug, xb.dtype)


def _layer_statistical(meta, inputs, num_samples, rng, bug=None, loss=None):
    """sample_statistical's results for a linear TFP-estimator or dropout layer; with ``loss``
    ((S, n, units) outputs, (S,) KLs -> (S,) losses) instead ``samples/loss`` and the per-draw
    gradients of that loss, unfinished (``_training_statistical``)."""
    from autograd.tracer import getval

    cls = meta["model"]["class_name"]
    if cls == "DenseVariational":
        return _finish(_dv_statistical(meta, inputs, num_samples, rng, bug), num_samples, rng,
                       bug, inputs["x"].dtype)
    cfg = meta["model"]["config"]
    s = num_samples
    x0 = inputs["x"]
    dtype = x0.dtype
    flat = x0.reshape(-1, x0.shape[-1])
    n, d = flat.shape
    params = {k[len("params/"):]: v for k, v in inputs.items() if k.startswith("params/")}
    units = inputs["g"].shape[-1]

    def normal(shape):
        if bug == "uniform_noise":
            return rng.uniform(-np.sqrt(3), np.sqrt(3), shape).astype(dtype)
        if bug == "rademacher_noise":
            return (2.0 * rng.integers(0, 2, shape) - 1).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    def signs(shape):
        return (2.0 * rng.integers(0, 2, shape) - 1).astype(dtype)

    lrt_like = cls in ("DenseLocalReparameterization", "DenseVariationalDropout",
                       "DenseSparseVariationalDropout")
    if bug == "shared_rows" and lrt_like:
        eps = np.broadcast_to(normal((s, 1, units)), (s, n, units))
    else:
        eps = normal((s, n, units))
    eps_w = normal((s, d, units)) if not lrt_like or bug == "batch_weight" else None
    if cls == "DenseReparameterization" and bug == "per_example_weight":
        eps = normal((s, n, units))
    s_in = signs((s, n, d))
    s_out = signs((s, 1, units)) if bug == "shared_rows" else signs((s, n, units))
    if bug == "edward2_sign_output":  # 2 * U[0, 2) - 1, as Edward2's DenseFlipout draws it
        s_out = (2 * rng.uniform(0, 2, (s, n, units)) - 1).astype(dtype)
    eps_b = normal((s, n, units)) if bug == "bias_per_example" else normal((s, 1, units))
    mean_field = cls not in ("DenseVariationalDropout", "DenseSparseVariationalDropout")
    random_kl = mean_field and _random_kl(cfg)
    eps_kl = (_kl_eps(cls, cfg, {"kernel": eps_w, "bias": eps_b[:, 0, :]},
                      {"kernel": (s, d, units), "bias": (s, units)}, normal, bug)
              if random_kl else {})
    kl_draws = lambda p: _kl_draws(cfg, p, eps_kl, s, dtype, bug)

    def kernel_variance(p):
        if cls == "DenseVariationalDropout":
            la = p["kernel_log_alpha"] if bug == "no_alpha_cap" else min0(p["kernel_log_alpha"])
            return np.exp(la) * p["kernel_theta"] ** 2
        if cls == "DenseSparseVariationalDropout":
            if bug == "sparse_alpha_variance":
                la = np.clip(p["kernel_log_sigma2"] - np.log(p["kernel_theta"] ** 2 + 1e-8), -8, 8)
                return np.exp(la) * p["kernel_theta"] ** 2
            return np.exp(p["kernel_log_sigma2"])
        scale = _scale(p["kernel_posterior_untransformed_scale"], None)
        if bug == "grad_no_sigmoid":
            scale = _scale(getval(p["kernel_posterior_untransformed_scale"]), None) + (
                p["kernel_posterior_untransformed_scale"]
                - getval(p["kernel_posterior_untransformed_scale"]))
        return scale if bug == "no_square" else scale * scale

    def kl(p, per_draw=False):
        total = 0.0
        if cls == "DenseVariationalDropout":
            c1, c2, c3 = 1.16145124, -1.50204118, 0.58629921
            la = min0(p["kernel_log_alpha"])
            a = np.exp(la)
            return _total(0.63576 - (0.5 * la + c1 * a + c2 * a ** 2 + c3 * a ** 3), per_draw)
        if cls == "DenseSparseVariationalDropout":
            la = np.clip(p["kernel_log_sigma2"] - np.log(p["kernel_theta"] ** 2 + 1e-8), -8, 8)
            return _total(0.63576 - 0.63576 * expit(1.87320 + 1.48695 * la)
                          + 0.5 * np.log1p(np.exp(-la)), per_draw)
        if cfg["kernel_prior"] is not None:
            total = total + _kl(p["kernel_posterior_loc"],
                                _scale(p["kernel_posterior_untransformed_scale"], None),
                                cfg["kernel_prior"])
        bias = cfg["bias_posterior"]
        if bias is not None and cfg["bias_prior"] is not None:
            bscale = (_scale(p["bias_posterior_untransformed_scale"], None)
                      if bias["type"] == "normal" else None)
            total = total + _kl(p["bias_posterior_loc"], bscale, cfg["bias_prior"])
        return total

    def outputs(p, x):
        """p: params replicated (S, ...); x: (S, n, d). Returns (S, n, units)."""
        loc = p.get("kernel_posterior_loc", p.get("kernel_theta"))
        mean = np.einsum("snd,sdu->snu", x, loc)
        var_w = kernel_variance(p)
        if lrt_like and bug != "batch_weight":
            xs = getval(x) if bug == "grad_x_mean_only" else x
            var = np.einsum("snd,sdu->snu", xs * xs, var_w)
            std = _sqrt(var)
            if bug == "grad_detached_noise":
                std = getval(std)
            z = mean + eps * std
        else:
            dw = eps_w * (getval(np.sqrt(var_w)) if bug == "grad_detached_noise" else np.sqrt(var_w))
            if cls == "DenseReparameterization" and bug == "per_example_weight":
                z = mean + eps * _sqrt(np.einsum("snd,sdu->snu", x * x, var_w))
            elif cls == "DenseFlipout":
                pert = np.einsum("snd,sdu->snu", x * s_in, dw)
                z = mean + (pert if bug == "flipout_no_sign_output" else pert * s_out)
            else:
                z = mean + np.einsum("snd,sdu->snu", x, dw)
        if "bias_posterior_loc" in p:
            b = p["bias_posterior_loc"][:, None, :]
            if "bias_posterior_untransformed_scale" in p:
                b = b + eps_b * _scale(p["bias_posterior_untransformed_scale"], None)[:, None, :]
            z = z + b
        if "bias" in p:
            z = z + p["bias"][:, None, :]
        return z

    g = inputs["g"].reshape(n, units)

    def objective(p, x):
        out = outputs(p, x)
        if loss is not None:
            return np.sum(loss(out, kl_draws(p) if mean_field else kl(p, per_draw=True)))
        total = np.sum(g * out) + 0.5 * np.sum(out * out)
        if bug != "grad_no_kl":  # a sum over elements: over the copies, the sum of their KLs
            total = total + (np.sum(kl_draws(p)) if mean_field else kl(p))
        return total

    rep = {k: np.broadcast_to(v, (s,) + v.shape).copy() for k, v in params.items()}
    xr = np.broadcast_to(flat, (s, n, d)).copy()
    out = outputs(rep, xr)
    gp = grad(objective)(rep, xr)
    if loss is not None:
        res = {"samples/loss": np.asarray(
            loss(out, kl_draws(rep) if mean_field else kl(rep, per_draw=True)))}
        res.update({f"samples/grads/{k}": np.asarray(v) for k, v in gp.items()})
        return res
    gx = grad(objective, 1)(rep, xr)
    res = {"samples/outputs": np.asarray(out).reshape((s,) + x0.shape[:-1] + (units,)),
           "samples/grads/x": np.asarray(gx).reshape((s,) + x0.shape)}
    for k, v in gp.items():
        res[f"samples/grads/{k}"] = np.asarray(v)
    if random_kl:
        res["samples/kl"] = np.asarray(kl_draws(rep))
    return _finish(res, s, rng, bug, dtype)


def _random_kl(cfg):
    """Whether a TFP-estimator layer's KL is random: a Monte Carlo term on a Normal posterior."""
    return _mc(cfg, "kernel") or (_mc(cfg, "bias")
                                  and (cfg["bias_posterior"] or {}).get("type") == "normal")


def _kl_eps(cls, cfg, forward_eps, shapes, normal, bug=None):
    """{term: the standard normals of its Monte Carlo divergence, (S, ...)}: the forward's own
    (``forward_eps``) where SPEC section 3 shares it (``kl_other_draw``: never), else a fresh
    extra draw ``normal(shape)``."""
    out = {}
    for name in ("kernel", "bias"):
        if not _mc(cfg, name):
            continue
        shared = cfg[f"{name}_divergence"]["sample"] == "forward" and (
            name == "bias" or cls == "DenseReparameterization")
        out[name] = (forward_eps[name] if shared and bug != "kl_other_draw"
                     else normal(shapes[name]))
    return out


def _kl_draws(cfg, p, eps_kl, s, dtype, bug=None):
    """(S,) each draw's kl/total of a TFP-estimator layer: SPEC section 3's divergences of the
    params' copies ``p`` (S, ...), per draw, Monte Carlo terms at ``eps_kl``."""
    total = np.zeros(s, dtype)
    for name in ("kernel", "bias"):
        post = {"type": "normal"} if name == "kernel" else cfg["bias_posterior"]
        if post is None or cfg[f"{name}_prior"] is None:
            continue
        scale = (_scale(p[f"{name}_posterior_untransformed_scale"], None)
                 if post["type"] == "normal" else None)
        total = total + divergence(name, cfg, p, p[f"{name}_posterior_loc"], scale,
                                   eps_kl.get(name), bug, per_draw=True)
    return total


def _finish(res, s, rng, bug, dtype):
    """The bugs that act on the written results, then every array in the case's dtype."""
    if bug == "nan_half":
        key = "samples/outputs" if "samples/outputs" in res else "samples/loss"
        res[key] = res[key].copy()
        res[key][::2] = np.nan
    if bug == "repeat_draws_4":  # each draw written 4 times in a row
        res = {k: np.repeat(v[:-(-s // 4)], 4, axis=0)[:s] for k, v in res.items()}
    if bug == "tiled_4":  # the first quarter of the draws, written 4 times over
        res = {k: np.concatenate([v[:-(-s // 4)]] * 4)[:s] for k, v in res.items()}
    if bug == "grad_noisy_biased":
        # each gradient off by 8 of its standard errors, hidden under 10x its own noise: its
        # own spread then puts the bias at 0.8 of the draws' standard errors
        for k in res:
            if k.startswith("samples/grads/"):
                sd = np.asarray(res[k]).std(0)
                res[k] = (res[k] + 8 * sd / np.sqrt(s)
                          + 10 * sd * rng.standard_normal(res[k].shape))
    return {k: v.astype(dtype) for k, v in res.items()}


def _dv_statistical(meta, inputs, s, rng, bug=None, loss=None):
    """sample_statistical's results for a linear DenseVariational (SPEC section 3): one draw of
    the flat weight vector per call (``dv_draw_per_example``: one per example), its KL exact or
    at that draw (``kl_other_draw``: at an independent one); ``loss`` as
    ``_layer_statistical``'s."""
    cfg = meta["model"]["config"]
    x0, g0 = inputs["x"], inputs["g"]
    dtype = x0.dtype
    flat = x0.reshape(-1, x0.shape[-1])
    n, d = flat.shape
    units = g0.shape[-1]
    half = inputs["params/posterior_constant"].shape[0] // 2
    eps = rng.standard_normal((s, n if bug == "dv_draw_per_example" else 1, half)).astype(dtype)
    eps_kl = (rng.standard_normal((s, half)).astype(dtype) if bug == "kl_other_draw"
              else eps[:, 0, :])
    g = g0.reshape(n, units)

    def outputs_and_kl(p, x):
        t = p["posterior_constant"]
        loc = t[:, :half]
        scale = 1e-5 + np.logaddexp(0 * t[:, half:], t[:, half:] + math.log(math.expm1(1.0)))
        w = loc[:, None, :] + scale[:, None, :] * eps
        kernel = np.reshape(w[..., :d * units], w.shape[:2] + (d, units))
        z = np.sum(x[..., None] * kernel, axis=-2)
        if cfg["use_bias"]:
            z = z + w[..., d * units:]
        mp = p["prior_constant"] if cfg["prior"] == "trainable" else 0.0
        if cfg["kl_use_exact"]:
            dl = np.log(scale)
            kl = np.sum(0.5 * (loc - mp) ** 2 + 0.5 * np.expm1(2 * dl) - dl, axis=1)
        else:
            wk = loc + scale * eps_kl
            kl = (np.sum(-0.5 * eps_kl * eps_kl - np.log(scale) - HALF_LOG_2PI, axis=1)
                  - np.sum(-0.5 * (wk - mp) ** 2 - HALF_LOG_2PI, axis=1))
            if bug == "kl_mean_over_elements":
                kl = kl / half
        if cfg["kl_weight"] is not None:
            kl = float(np.float32(cfg["kl_weight"])) * kl
        return z, kl

    def objective(p, x):
        z, kl = outputs_and_kl(p, x)
        if loss is not None:
            return np.sum(loss(z, kl))
        return np.sum(g * z) + 0.5 * np.sum(z * z) + np.sum(kl)

    params = {k[len("params/"):]: v for k, v in inputs.items() if k.startswith("params/")}
    rep = {k: np.broadcast_to(v, (s,) + v.shape).copy() for k, v in params.items()}
    xr = np.broadcast_to(flat, (s, n, d)).copy()
    out, kl = outputs_and_kl(rep, xr)
    gp, gx = grad(objective, (0, 1))(rep, xr)
    if loss is not None:
        return {"samples/loss": np.asarray(loss(out, kl)),
                **{f"samples/grads/{k}": np.asarray(v) for k, v in gp.items()}}
    res = {"samples/outputs": np.asarray(out).reshape((s,) + x0.shape[:-1] + (units,)),
           "samples/grads/x": np.asarray(gx).reshape((s,) + x0.shape)}
    res.update({f"samples/grads/{k}": np.asarray(v) for k, v in gp.items()})
    if not cfg["kl_use_exact"]:
        res["samples/kl"] = np.asarray(kl)
    return res
