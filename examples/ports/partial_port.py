"""A porter's first step: DenseLocalReparameterization's forward and KL in plain NumPy.

Written from reference_data/SPEC.md sections 2 and 3 alone (it does not import lrtdense). It
declares what it implements, so the conformance kit reports the rest of the reference set as
"not implemented" instead of hundreds of failures:

    pytest --lrtdense-port=examples/ports/partial_port.py:Adapter
    lrtdense reference verify --port examples/ports/partial_port.py:Adapter

The next steps of a port (gradients, the other estimators, priors, networks, training) widen
``implements`` one family or quantity at a time (SPEC.md, "Porting guide").
"""
import math

import numpy as np


def softplus(u):
    """TensorFlow's softplus (SPEC section 2): thresholds at t = log(eps) + 2."""
    t = math.log(np.finfo(u.dtype).eps) + 2
    return np.where(u > -t, u, np.where(u < t, np.exp(u), np.log1p(np.exp(np.minimum(u, -t)))))


def scale_of(u):
    """A posterior scale: softplus(u) + eps, in u's dtype."""
    return softplus(u) + np.finfo(u.dtype).eps


ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "softplus": softplus,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
}


def lrt_forward(config, params, x, noise, mode):
    """SPEC section 3: m = x @ loc, s = sqrt((x*x) @ scale**2), z = m + noise * s (+ bias)."""
    loc = params["kernel_posterior_loc"]
    scale = scale_of(params["kernel_posterior_untransformed_scale"])
    z = x @ loc
    if mode == "sample":
        z = z + noise["kernel"] * np.sqrt((x * x) @ (scale * scale))
    bias = config["bias_posterior"]
    if bias is not None:
        b = params["bias_posterior_loc"]
        if bias["type"] == "normal" and mode == "sample":
            b = noise["bias"] * scale_of(params["bias_posterior_untransformed_scale"]) + b
        z = z + b
    return ACTIVATIONS[config["activation"]](z)


def kl_term(prior, loc, scale, weight):
    """SPEC section 3, "KL terms": the closed form against a Normal prior N(mp, sp)."""
    mp, sp = prior["loc"], prior["scale"]
    if scale is None:                                    # Deterministic posterior
        kl = 0.5 * (loc / sp - mp / sp) ** 2 + 0.5 * math.log(2 * math.pi) + math.log(sp)
    else:
        d = np.log(scale) - math.log(sp)
        kl = 0.5 * (loc / sp - mp / sp) ** 2 + 0.5 * np.expm1(2 * d) - d
    return np.asarray(weight * np.sum(kl), dtype=loc.dtype)


def lrt_kl(config, params):
    """{"kl/kernel", "kl/bias" (the terms that exist), "kl/total"}."""
    dtype = params["kernel_posterior_loc"].dtype
    out = {}
    for name in ("kernel", "bias"):
        prior, posterior = config.get(f"{name}_prior"), config.get(f"{name}_posterior")
        if prior is None or posterior is None:
            continue
        weight = (config.get(f"{name}_divergence") or {}).get("weight", 1.0)
        u = params.get(f"{name}_posterior_untransformed_scale")
        out[f"kl/{name}"] = kl_term(prior, params[f"{name}_posterior_loc"],
                                    None if u is None else scale_of(u), weight)
    out["kl/total"] = np.asarray(sum(out.values(), np.zeros((), dtype)), dtype=dtype)
    return out


class Adapter:
    """The adapter of ``lrtdense.conformance``: LRT outputs and KL, both dtypes."""
    name = "partial_port (NumPy, LRT forward and KL)"
    implements = {"families": ["lrt"], "quantities": ["outputs/*", "kl/*"],
                  "dtypes": ["float32", "float64"]}

    def compute(self, case):
        config = case.model["config"]
        params, x, noise = case.params, case.x, case.noise
        results = {f"outputs/{mode}": lrt_forward(config, params, x, noise, mode)
                   for mode in ("sample", "mean")}
        results.update(lrt_kl(config, params))
        return results
