"""lrtdense's layers replay the priors / divergences / DenseVariational fixtures of real TFP 0.25.

tests/fixtures/tfp_priors/ was recorded by tools/record_tfp_priors.py (docs/tfp_semantics.md says
what TFP computes); tests/test_tfp_priors_fixtures.py checks the fixtures against a naive oracle.
Here each fixture's model is rebuilt with lrtdense's own layers from its JSON description, fed
TFP's weights and draws, and must give TFP's outputs, every entry of ``layer.losses`` and the
gradients of L = sum(g * outputs) + sum(losses) w.r.t. x and every weight (prior parameters
included): max |lrtdense - TFP| <= rtol * max |TFP| per array, rtol 1e-10 (float64), 1e-5
(float32).
"""
import glob
import json
import os

import numpy as np
import pytest
from autograd import grad

import lrtdense as L

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tfp_priors")
CASES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(FIXTURES, "*.json")))
# TFP's d.sample(3) kernel tensor makes one layer's outputs and losses vectors over 3 samples, a
# shape Keras' own fit refuses (docs/tfp_semantics.md 1.2); lrtdense's several samples per step
# are the loss's num_samples instead.
MULTI_SAMPLE = {"reparam_f64_mixture_mc_3samples", "dv_f64_mc_trainable_3samples_nobias"}
RTOL = {"float64": 1e-10, "float32": 1e-5}
CLASSES = {"DenseReparameterization": L.DenseReparameterization,
           "DenseLocalReparameterization": L.DenseLocalReparameterization,
           "DenseFlipout": L.DenseFlipout, "DenseVariational": L.DenseVariational}


def load(name):
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(FIXTURES, name + ".npz"), allow_pickle=False) as data:
        return meta, {k: data[k] for k in data.files}


def prior_of(spec):
    if spec is None:
        return None
    kind = spec["type"]
    if kind == "normal":
        return L.NormalPrior(spec["loc"], spec["scale"])
    if kind == "trainable_normal":
        return L.TrainableNormalPrior()
    if kind == "scale_mixture_normal":
        return L.ScaleMixturePrior(spec["pi"], spec["sigma1"], spec["sigma2"])
    if kind == "laplace":
        return L.LaplacePrior(spec["loc"], spec["scale"])
    if kind == "student_t":
        return L.StudentTPrior(spec["df"], spec["loc"], spec["scale"])
    raise ValueError(kind)


def divergence_of(spec):
    weight = 1.0 / spec["divide_by"] if spec and spec.get("divide_by") else 1.0
    if spec is None or spec["type"] == "kl_exact":
        return L.ClosedFormKL(weight)
    return L.MonteCarloKL(weight, "forward" if spec["sample"] == "layer" else "extra")


def build(meta):
    """(layer, params names in TFP's order)."""
    cls = CLASSES[meta["layer"]]
    dtype, act = meta["dtype"], meta["activation"]
    if cls is L.DenseVariational:
        prior = "trainable" if meta["make_prior_fn"]["type"] == "prior_trainable" else "fixed"
        layer = cls(meta["units"], act, prior=prior, kl_weight=meta["kl_weight"],
                    kl_use_exact=meta["kl_use_exact"], use_bias=meta["use_bias"], dtype=dtype)
        return layer, [n.replace("/", "_") for n in meta["weights_order"]]
    posterior = lambda spec: None if spec is None else spec["type"]  # noqa: E731
    layer = cls(meta["units"], act, dtype=dtype,
                kernel_prior=prior_of(meta["kernel_prior"]),
                bias_posterior=posterior(meta["bias_posterior"]),
                bias_prior=prior_of(meta.get("bias_prior")),
                kernel_divergence=divergence_of(meta.get("kernel_divergence")),
                bias_divergence=divergence_of(meta.get("bias_divergence")))
    return layer, list(meta["weights_order"])


def noise_of(meta, arrays, layer, x):
    keys = {"kernel": "eps/kernel", "bias": "eps/bias", "sign_input": "sign/sign_input",
            "sign_output": "sign/sign_output", "kernel_divergence": "eps/kernel_divergence",
            "bias_divergence": "eps/bias_divergence", "posterior": "eps/posterior"}
    shapes = layer.noise_shapes(x.shape)
    return {k: arrays[keys[k]].reshape(shape) for k, shape in shapes.items()}


def rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-300))


@pytest.mark.parametrize("name", [c for c in CASES if c not in MULTI_SAMPLE])
def test_lrtdense_replays_tfp(name):
    meta, a = load(name)
    layer, names = build(meta)
    params = {ours: a[tfp] for ours, tfp in zip(names, meta["weights_order"])}
    assert layer.weight_names() == names          # TFP's names and order
    x, g = a["x"], a["g"]
    noise = noise_of(meta, a, layer, x)
    assert list(noise) == [k for k in layer.noise_shapes(x.shape)]
    out, kl = layer.forward(params, x, noise=noise)
    terms = layer.divergences(params, noise=noise)
    tol = RTOL[meta["dtype"]]
    errors = {"outputs": rel(out, a["outputs"])}
    for term, loss in zip(terms.values(), meta["losses"]):
        errors["loss/" + loss] = rel(term, a["loss/" + loss])
    assert len(terms) == len(meta["losses"])

    def objective(p, x):
        o, k = layer.forward(p, x, noise=noise)
        return np.sum(g * o) + k

    grads = grad(objective)(params, x)
    errors["grad/x"] = rel(grad(objective, 1)(params, x), a["grad/x"])
    for ours, tfp in zip(names, meta["weights_order"]):
        errors["grad/" + tfp] = rel(grads[ours], a["grad/" + tfp])
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{name}: {bad} (rtol {tol})"
    assert set(errors) >= {"grad/" + w for w in meta["weights_order"]}


def test_every_fixture_is_replayed_or_its_exclusion_explained():
    assert len(CASES) >= 30 and MULTI_SAMPLE <= set(CASES)
