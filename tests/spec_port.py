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

ACT = {"linear": lambda z: z, "relu": lambda z: np.where(z > 0, z, 0 * z), "tanh": np.tanh,
       "sigmoid": expit, "softplus": lambda z: np.logaddexp(0 * z, z),
       "elu": lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1)}


def _scale(u, broken):
    sp = np.logaddexp(0 * u, u)
    return sp if broken == "no_eps" else sp + np.finfo(u.dtype).eps


def _kl(loc, scale, prior):
    if prior is None:
        return 0.0
    mp, sp = prior["loc"], prior["scale"]
    if scale is None:
        return np.sum(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * math.log(2 * math.pi) + math.log(sp))
    d = np.log(scale) - math.log(sp)  # a Python float: float32 stays float32
    return np.sum(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * np.expm1(2 * d) - d)


def layer(spec, p, x, noise, mode, broken=None):
    cls, cfg = spec["class_name"], spec["config"]
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
    if cfg["kernel_prior"] is not None:
        kl["kernel"] = _kl(loc, scale, cfg["kernel_prior"])
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
            kl["bias"] = _kl(p["bias_posterior_loc"], bscale, cfg["bias_prior"])
    return ACT[cfg["activation"]](z), kl


def run_case(meta, inputs, broken=None):
    """Every expected quantity of a layer or network case."""
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
        for i, ls in enumerate(layers):
            name = f"layer_{i}"
            x, kl = layer(ls, p[name] if network else p, x,
                          (noise[name] if network else noise) if mode == "sample" else None, mode, broken)
            terms.update({(f"{name}/{k}" if network else k): v for k, v in kl.items()})
        return x, terms

    def objective(p, x):
        out, terms = forward(p, x, "sample")
        return np.sum(inputs["g"] * out) + sum(terms.values())

    out, terms = forward(params, inputs["x"], "sample")
    res = {"outputs/sample": out, "outputs/mean": forward(params, inputs["x"], "mean")[0],
           "kl/total": np.asarray(sum(terms.values()), dtype=meta["dtype"])}
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


def main(argv=None):
    """python tests/spec_port.py RESULTS --reference DIR: results of every layer and network case
    (how CI checks an installed wheel when torch is absent). Reads the files directly."""
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
        if meta["kind"] not in ("layer", "network"):
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
