"""Replays the fixtures of tools/record_tfp_priors.py with a naive NumPy + autograd oracle.

No TensorFlow and no lrtdense here: each fixture holds the inputs, TFP's weights and every draw
TFP made (``eps/*``, ``sign/*``), and TFP's outputs, losses and gradients of
``L = sum(g * outputs) + sum(sum(loss) for loss in layer.losses)``. The oracle below rebuilds
them from the semantics written down in docs/tfp_semantics.md, in float64 whatever the fixture's
dtype, with every log density written out (the mixture as log(pi N1 + (1 - pi) N2), not TFP's
logsumexp), and autograd for the gradients. Agreement proves that the fixtures and the written
semantics say the same thing.

Tolerance: max |ours - TFP| <= rtol * max |TFP| for each array, rtol = 1e-10 (float64) and
1e-5 (float32). ``python tests/test_tfp_priors_fixtures.py`` prints the worst error per dtype.
"""
import glob
import json
import os

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad
from scipy.special import gammaln

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tfp_priors")
CASES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FIXTURES, "*.json")))
RTOL = {"float64": 1e-10, "float32": 1e-5}
EPS = {"float64": float(onp.finfo(onp.float64).eps), "float32": float(onp.finfo(onp.float32).eps)}
LOG_2PI = onp.log(2.0 * onp.pi)

ACTIVATIONS = {
    None: lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def load_case(name):
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        meta = json.load(f)
    with onp.load(os.path.join(FIXTURES, name + ".npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return meta, arrays


def softplus(u):
    return np.log(1.0 + np.exp(u))


# Log densities, elementwise (the Independent wrapper's sum is taken by the caller).
def normal_logpdf(w, loc, scale):
    return -0.5 * ((w - loc) / scale) ** 2 - np.log(scale) - 0.5 * LOG_2PI


def normal_pdf(w, scale):
    return np.exp(-0.5 * (w / scale) ** 2) / (scale * onp.sqrt(2.0 * onp.pi))


def prior_logpdf(spec, w, params, which, dtype):
    kind = spec["type"]
    if kind == "normal":
        return normal_logpdf(w, spec["loc"], spec["scale"])
    if kind == "trainable_normal":
        loc = params[which + "_prior_loc"]
        scale = EPS[dtype] + softplus(params[which + "_prior_untransformed_scale"])
        return normal_logpdf(w, loc, scale)
    if kind == "laplace":
        return -np.abs(w - spec["loc"]) / spec["scale"] - np.log(2.0 * spec["scale"])
    if kind == "student_t":
        df, y = spec["df"], (w - spec["loc"]) / spec["scale"]
        return (gammaln(0.5 * (df + 1.0)) - gammaln(0.5 * df) - 0.5 * onp.log(df * onp.pi)
                - onp.log(spec["scale"]) - 0.5 * (df + 1.0) * np.log(1.0 + y ** 2 / df))
    if kind == "scale_mixture_normal":  # Blundell et al. 2015, arXiv 1505.05424, eq. 7
        pi = spec["pi"]
        return np.log(pi * normal_pdf(w, spec["sigma1"])
                      + (1.0 - pi) * normal_pdf(w, spec["sigma2"]))
    raise ValueError(f"unknown prior type {kind!r}")


def prior_loc_scale(spec, params, which, dtype):
    if spec["type"] == "normal":
        return spec["loc"], spec["scale"]
    if spec["type"] == "trainable_normal":
        return (params[which + "_prior_loc"],
                EPS[dtype] + softplus(params[which + "_prior_untransformed_scale"]))
    raise ValueError(f"no closed-form KL for a {spec['type']!r} prior")


def kl_normal(qloc, qscale, ploc, pscale):
    """KL(N(qloc, qscale^2) || N(ploc, pscale^2)) elementwise, the textbook form."""
    return (np.log(pscale / qscale) + (qscale ** 2 + (qloc - ploc) ** 2) / (2.0 * pscale ** 2)
            - 0.5)


def posterior(meta, params, which):
    spec = meta[which + "_posterior"]
    loc = params[which + "_posterior_loc"]
    if spec["type"] == "deterministic":
        return loc, None
    return loc, EPS[meta["dtype"]] + softplus(params[which + "_posterior_untransformed_scale"])


def divergence(meta, params, noise, which, layer_sample):
    """(one entry of layer.losses, {name: intermediate}) for the _DenseVariational layers."""
    spec, prior = meta[which + "_divergence"], meta[which + "_prior"]
    loc, scale = posterior(meta, params, which)
    event_axes = (-2, -1) if which == "kernel" else (-1,)
    record = {}
    if spec["type"] == "kl_exact":
        ploc, pscale = prior_loc_scale(prior, params, which, meta["dtype"])
        value = np.sum(kl_normal(loc, scale, ploc, pscale))
    else:
        if spec["sample"] == "layer":
            w = layer_sample
        else:
            w = noise["eps/" + which + "_divergence"] * scale + loc
            record[which + "_divergence_tensor"] = w
        log_q = np.sum(normal_logpdf(w, loc, scale), axis=event_axes)
        log_p = np.sum(prior_logpdf(prior, w, params, which, meta["dtype"]), axis=event_axes)
        record["aux/" + which + "_log_q"] = log_q
        record["aux/" + which + "_log_p"] = log_p
        value = log_q - log_p
    if spec["divide_by"] is not None:
        value = value / spec["divide_by"]
    return value, record


def forward_dense_variational_v1(meta, params, x, noise):
    """DenseReparameterization / DenseLocalReparameterization / DenseFlipout.

    Returns (outputs, {loss name: value}, {recorded array name: value}).
    """
    layer = meta["layer"]
    record = {}
    loc, scale = posterior(meta, params, "kernel")
    record["kernel_posterior_scale"] = scale
    eps = noise["eps/kernel"]
    kernel_sample = None
    if layer == "DenseReparameterization":
        kernel_sample = eps * scale + loc
        record["kernel_tensor"] = kernel_sample
        out = np.matmul(x, kernel_sample)
    elif layer == "DenseLocalReparameterization":
        m = np.matmul(x, loc)
        s = np.sqrt(np.matmul(x ** 2, scale ** 2))
        record.update(affine_loc=m, affine_scale=s)
        out = eps * s + m
        record["affine_tensor"] = out
    else:  # DenseFlipout
        perturbation = eps * scale
        record["kernel_tensor"] = perturbation
        out = np.matmul(x, loc) + np.matmul(x * noise["sign/sign_input"], perturbation) * \
            noise["sign/sign_output"]
    bias_sample = None
    if meta["bias_posterior"] is not None:
        bloc, bscale = posterior(meta, params, "bias")
        if bscale is None:
            bias_sample = bloc
        else:
            record["bias_posterior_scale"] = bscale
            bias_sample = noise["eps/bias"] * bscale + bloc
        record["bias_tensor"] = bias_sample
        out = out + bias_sample
    out = ACTIVATIONS[meta["activation"]](out)
    losses = {}
    # TFP hands the kernel divergence the layer's kernel sample only for Reparameterization
    # (None for LRT and Flipout); the bias divergence always gets the sampled bias.
    if meta["kernel_prior"] is not None and meta["kernel_divergence"] is not None:
        losses["divergence_kernel"], extra = divergence(meta, params, noise, "kernel",
                                                        kernel_sample)
        record.update(extra)
    if meta["bias_posterior"] is not None and meta["bias_prior"] is not None:
        losses["divergence_bias"], extra = divergence(meta, params, noise, "bias", bias_sample)
        record.update(extra)
    for which in ("kernel", "bias"):
        spec = meta[which + "_prior"]
        if spec is not None and spec["type"] == "trainable_normal":
            record[which + "_prior_scale"] = prior_loc_scale(spec, params, which,
                                                             meta["dtype"])[1]
    return out, losses, record


def forward_dense_variational_v2(meta, params, x, noise):
    """tfp.layers.DenseVariational with the tutorial's posterior_mean_field and a prior.

    Returns (outputs, {loss name: value}, {recorded array name: value}).
    """
    record = {}
    post_spec, prior_spec = meta["make_posterior_fn"], meta["make_prior_fn"]
    units, d_in = meta["units"], x.shape[-1]
    t = params["posterior/constant"]
    n = t.shape[0] // 2
    loc = t[:n]
    scale = post_spec["scale_offset"] + softplus(post_spec["c"] + t[n:])
    w = noise["eps/posterior"] * scale + loc
    if prior_spec["type"] == "prior_trainable":
        ploc, pscale = params["prior/constant"], prior_spec["scale"]
    else:
        ploc, pscale = prior_spec["loc"] * onp.ones(n), prior_spec["scale"]
    record.update(posterior_loc=loc, posterior_scale=scale, posterior_tensor=w,
                  prior_loc=ploc, prior_scale=pscale * onp.ones(n),
                  prior_tensor=noise["eps/prior"] * pscale + ploc)
    k = d_in * units
    kernel = np.reshape(w[..., :k], w.shape[:-1] + (d_in, units))  # row-major, as tf.reshape
    record["aux/kernel"] = kernel
    out = np.matmul(x, kernel)
    if meta["use_bias"]:
        bias = w[..., k:]
        record["aux/bias"] = bias
        out = out + bias
    out = ACTIVATIONS[meta["activation"]](out)
    if meta["kl_use_exact"]:
        kl = np.sum(kl_normal(loc, scale, ploc, pscale))
    else:
        # The same sample as the forward; several samples are summed.
        kl = np.sum(normal_logpdf(w, loc, scale) - normal_logpdf(w, ploc, pscale))
    if meta["kl_weight"] is not None:
        # tf.cast(kl_weight, dtype) of a Python float rounds it to float32 first.
        kl = float(onp.float32(meta["kl_weight"])) * kl
    return out, {"kl_divergence": kl}, record


def replay(name):
    """(meta, {key: (ours, TFP's)}) for every recorded array the oracle recomputes."""
    meta, a = load_case(name)
    f64 = {k: onp.asarray(v, dtype=onp.float64) for k, v in a.items()}
    params = {k: f64[k] for k in meta["weights_order"]}
    noise = {k: v for k, v in f64.items() if k.startswith(("eps/", "sign/"))}
    fwd = (forward_dense_variational_v2 if meta["layer"] == "DenseVariational"
           else forward_dense_variational_v1)
    x, g = f64["x"], f64["g"]

    out, losses, record = fwd(meta, params, x, noise)

    def objective(p, x):
        o, ls, _ = fwd(meta, p, x, noise)
        return np.sum(g * o) + sum(np.sum(v) for v in ls.values())

    grads = grad(objective)(params, x)
    grads["x"] = grad(objective, 1)(params, x)

    pairs = {"outputs": (out, a["outputs"])}
    assert list(losses) == meta["losses"], (name, list(losses), meta["losses"])
    for k, v in losses.items():
        pairs["loss/" + k] = (v, a["loss/" + k])
    for k, v in grads.items():
        pairs["grad/" + k] = (v, a["grad/" + k])
    for k, v in record.items():
        pairs[k] = (v, a[k])
    return meta, a, pairs


def rel_error(ours, ref):
    ours, ref = onp.asarray(ours, dtype=onp.float64), onp.asarray(ref, dtype=onp.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != {ref.shape}"
    scale = max(float(onp.max(onp.abs(ref))), 1e-300) if ref.size else 1.0
    return float(onp.max(onp.abs(ours - ref))) / scale if ref.size else 0.0


def test_fixtures_are_present():
    assert len(CASES) >= 30, f"expected the recorded TFP fixtures in {FIXTURES}"


@pytest.mark.parametrize("name", CASES)
def test_oracle_matches_tfp(name):
    meta, a, pairs = replay(name)
    rtol = RTOL[meta["dtype"]]
    failures = []
    for key, (ours, ref) in sorted(pairs.items()):
        err = rel_error(ours, ref)
        if not err <= rtol:
            worst = onp.unravel_index(onp.argmax(onp.abs(onp.asarray(ours) - ref)),
                                      onp.shape(ref)) if onp.ndim(ref) else ()
            failures.append(f"{key}: max error relative to max|TFP| {err:.3g} > {rtol} "
                            f"(worst at {worst})")
    assert not failures, f"{name}:\n  " + "\n  ".join(failures)
    # Every loss, every gradient and every recorded weight was compared.
    assert {"loss/" + k for k in meta["losses"]} <= set(pairs)
    assert {"grad/" + k for k in ["x"] + meta["weights_order"]} <= set(pairs)


@pytest.mark.parametrize("name", CASES)
def test_fixture_is_self_consistent(name):
    meta, a = load_case(name)
    assert [w["name"] for w in meta["weights"]] == meta["weights_order"]
    assert all(w["tfp_name"] == meta["layer_name"] + "/" + w["name"] + ":0"
               for w in meta["weights"])
    assert meta["grads_finite"] and not meta["grads_none"]
    for d in meta["draws"]:
        assert d["key"] in a, d
    if meta["layer"] == "DenseFlipout":
        for role in ("sign_input", "sign_output"):
            assert onp.array_equal(a["sign/" + role], 2 * a["raw/" + role] - 1)
    dtype = onp.dtype(meta["dtype"])
    for k, v in a.items():
        assert v.dtype == (onp.int64 if k.startswith("raw/") else dtype), (k, v.dtype)


def test_semantic_facts():
    """The facts docs/tfp_semantics.md states, read off the fixtures."""
    meta, a = load_case("reparam_f64_mixture_mc")
    # The MC divergence of DenseReparameterization is evaluated at the forward's own W.
    assert [d["role"] for d in meta["draws"]] == ["kernel"]
    meta, _ = load_case("lrt_f64_mixture_mc_selfdraw")
    assert [d["role"] for d in meta["draws"]] == ["kernel", "kernel_divergence"]
    meta, _ = load_case("flipout_f64_mixture_mc_selfdraw")
    assert [d["role"] for d in meta["draws"]] == ["kernel", "sign_input", "sign_output",
                                                  "kernel_divergence"]
    meta, _ = load_case("lrt_f64_trainable_prior_kl_scaled")
    assert meta["weights_order"] == [
        "kernel_posterior_loc", "kernel_posterior_untransformed_scale",
        "kernel_prior_loc", "kernel_prior_untransformed_scale",
        "bias_posterior_loc", "bias_posterior_untransformed_scale",
        "bias_prior_loc", "bias_prior_untransformed_scale"]
    meta, a = load_case("dv_f64_mc_trainable_klw")
    assert meta["weights_order"] == ["posterior/constant", "prior/constant"]
    assert [d["role"] for d in meta["draws"]] == ["posterior", "prior"]
    # The MC KL uses the forward's sample: kl = kl_weight * (log q(w) - log p(w)).
    w, t, r = a["posterior_tensor"], a["posterior/constant"], a["prior/constant"]
    n = r.shape[0]
    scale = 1e-5 + onp.logaddexp(0.0, onp.log(onp.expm1(1.0)) + t[n:])
    kl = float(onp.float32(0.02)) * onp.sum(normal_logpdf(w, t[:n], scale)
                                            - normal_logpdf(w, r, 1.0))
    assert meta["divergence"]["kl_weight_as_applied"] == float(onp.float32(0.02))
    assert abs(kl - a["loss/kl_divergence"]) <= 1e-12 * abs(kl)
    meta, a = load_case("reparam_f64_mixture_mc_3samples")
    assert a["loss/divergence_kernel"].shape == (3,) and a["outputs"].shape == (3, 5, 3)


def worst_errors():
    """{dtype: (worst relative error, case, key)} over every compared array."""
    worst = {}
    for name in CASES:
        meta, _, pairs = replay(name)
        for key, (ours, ref) in pairs.items():
            err = rel_error(ours, ref)
            if err > worst.get(meta["dtype"], (-1.0,))[0]:
                worst[meta["dtype"]] = (err, name, key)
    return worst


if __name__ == "__main__":
    for dtype, (err, name, key) in sorted(worst_errors().items()):
        print(f"{dtype}: worst max|ours - TFP| / max|TFP| = {err:.3g} ({name}, {key}); "
              f"tolerance {RTOL[dtype]}")
