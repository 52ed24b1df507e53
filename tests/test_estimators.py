"""The estimator records (lrtdense.estimators): every layer family samples its posterior through
one record, computes with another one through its own forward, and a new estimator is one record
and one short subclass."""
import dataclasses
import os
import re

import numpy as np
import pytest

import lrtdense as L
from lrtdense import estimators, kernels
from lrtdense.layers import MeanFieldDense
from lrtdense.training import fit

FAMILIES = {
    "lrt": lambda **kw: L.DenseLocalReparameterization(3, "tanh", dtype="float64", **kw),
    "reparam": lambda **kw: L.DenseReparameterization(3, "tanh", dtype="float64", **kw),
    "flipout": lambda **kw: L.DenseFlipout(3, "tanh", dtype="float64", **kw),
    "vdrop": lambda **kw: L.DenseVariationalDropout(3, "tanh", dtype="float64"),
    "sparse_vd": lambda **kw: L.DenseSparseVariationalDropout(3, "tanh", dtype="float64"),
    "dense_variational": lambda **kw: L.DenseVariational(3, "tanh", dtype="float64"),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_layers_own_estimator_is_its_forward(family):
    """forward(estimator=layer.estimator) with that record's noise layout is the layer's own
    forward (DenseVariational's flat "posterior" noise is its kernel's then its bias's)."""
    layer = FAMILIES[family]()
    rng = np.random.default_rng(0)
    params = layer.init(rng, 4)
    x = rng.standard_normal((5, 4))
    noise = layer.sample_estimator_noise(layer.estimator, np.random.default_rng(1), x.shape)
    own = noise
    if family == "dense_variational":
        own = {"posterior": np.concatenate([noise["kernel"].ravel(), noise["bias"]])}
    np.testing.assert_array_equal(layer.forward(params, x, noise=noise, estimator=layer.estimator)[0],
                                  layer.forward(params, x, noise=own)[0])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_posterior_moments_are_in_units_of_the_kernel(family):
    layer = FAMILIES[family](bias_posterior="normal") if family in ("lrt", "reparam", "flipout") \
        else FAMILIES[family]()
    params = layer.init(np.random.default_rng(2), 4)
    m = layer.posterior_moments(params, 4)
    assert np.shape(m.kernel_loc) == np.shape(m.kernel_scale) == (4, 3)
    assert np.all(np.asarray(m.kernel_scale) > 0)
    assert (m.bias_scale is not None) == layer.random_bias
    assert np.shape(m.bias_loc) == (3,)
    # weight_moments means the kernel's (loc, scale) in every family, DenseVariational included
    loc, scale = layer.weight_moments(params)
    np.testing.assert_array_equal(loc, m.kernel_loc)
    np.testing.assert_array_equal(scale, m.kernel_scale)


@pytest.mark.parametrize("name", sorted(estimators.ESTIMATORS))
def test_every_estimator_has_the_mean_of_the_mean_forward(name):
    """Averaged over its noise, each estimator's linear outputs are x @ loc + bias (checked to
    the Monte Carlo error of 4000 draws)."""
    layer = L.DenseLocalReparameterization(2, dtype="float64", bias_posterior="normal")
    rng = np.random.default_rng(3)
    params = layer.init(rng, 3)
    params["kernel_posterior_untransformed_scale"] += 2.0
    x = rng.standard_normal((4, 3))
    draws = np.stack([layer.forward(params, x, rng=rng, estimator=name)[0] for _ in range(4000)])
    mean = layer.forward(params, x, mode="mean")[0]
    err = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - mean) <= 5 * err + 1e-12), name


def test_a_new_estimator_is_one_record_and_one_subclass():
    """A "double LRT" (two independent half-variance LRT draws averaged: the same mean and
    variance per example) trains through fit like the built-in layers."""
    def term(x, loc, scale, noise, ws):
        half = scale * 0.5 ** 0.5
        return kernels.lrt(x, loc, half, noise["a"]) + kernels.lrt(x, 0 * loc, half, noise["b"])

    double = estimators.Estimator(
        "double", "Two LRT draws", lambda shape, units: {
            "a": tuple(shape)[:-1] + (units,), "b": tuple(shape)[:-1] + (units,)}, (), term)

    @dataclasses.dataclass(frozen=True)
    class DenseDouble(MeanFieldDense):
        estimator = double

    layer = DenseDouble(2, dtype="float64")
    rng = np.random.default_rng(4)
    params = layer.init(rng, 3)
    x = rng.standard_normal((6, 3))
    assert list(layer.noise_shapes(x.shape)) == ["a", "b"]
    out, kl = layer.forward(params, x, rng=rng)
    assert out.shape == (6, 2) and np.isfinite(kl)
    model = L.Model(layer, L.GaussianLikelihood(1.0))
    y = x[:, :2] @ np.ones((2, 2))
    trained, history = fit(model, model.init(rng, 3), x, y, rng=rng, epochs=2, batch_size=3,
                           verbose=False)
    assert len(history["loss"]) == 2


def test_estimator_names_are_checked():
    layer = FAMILIES["lrt"]()
    params = layer.init(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="estimator must be one of"):
        layer.forward(params, np.zeros((1, 2)), rng=np.random.default_rng(0), estimator="magic")
    with pytest.raises(ValueError, match="noise keys do not match"):
        layer.forward(params, np.zeros((1, 2)), noise={"kernel": np.zeros((1, 3))},
                      estimator="flipout")


def test_no_dispatch_on_layer_classes_outside_the_layers():
    """Who computes what is a record or a method, never an isinstance or a class-name test."""
    root = os.path.join(os.path.dirname(__file__), os.pardir, "lrtdense")
    layer_classes = r"(MeanFieldDense|DropoutDense|DenseVariational|DenseLocalReparameterization|" \
                    r"DenseReparameterization|DenseFlipout|DenseVariationalDropout|" \
                    r"DenseSparseVariationalDropout)"
    pattern = re.compile(r"isinstance\([^)]*\b" + layer_classes + r"\b|__name__ *== *['\"]Dense")
    hits = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    hits += [f"{name}:{i}" for i, line in enumerate(f, 1) if pattern.search(line)]
    assert hits == []
