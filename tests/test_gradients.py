"""autograd gradients of every layer against central finite differences (float64)."""
import itertools
import zlib

import numpy as np
import pytest
from autograd import grad

import lrtdense as L
from helpers import directional_fd_check

CLASSES = [L.DenseLocalReparameterization, L.DenseReparameterization, L.DenseFlipout]
ACTIVATIONS = [None, "relu", "tanh", "sigmoid", "softplus", "elu"]
BIASES = [("deterministic", None), ("normal", "normal"), (None, None), ("deterministic", "normal")]


def _setup(cls, activation, bias, bias_prior, seed, shape=(4, 5)):
    rng = np.random.default_rng(seed)
    layer = cls(3, activation, bias_posterior=bias, bias_prior=bias_prior, dtype="float64",
                kernel_prior=L.NormalPrior(0.1, 0.7))
    params = layer.init(rng, shape[-1])
    # Larger, non-default values so every term matters.
    params = {k: v + rng.normal(0, 0.5, v.shape) for k, v in params.items()}
    params["kernel_posterior_untransformed_scale"] += 2.0
    x = rng.standard_normal(shape)
    g = rng.standard_normal(layer.compute_output_shape(shape))
    noise = layer.sample_noise(rng, shape)
    return layer, params, x, g, noise


@pytest.mark.parametrize("cls,activation,bias,mode", [
    (c, a, b, m) for c, a, b, m in itertools.product(CLASSES, ACTIVATIONS, BIASES, ["sample", "mean"])])
def test_gradients_match_finite_differences(cls, activation, bias, mode):
    layer, params, x, g, noise = _setup(cls, activation, *bias, seed=zlib.crc32(f"{cls.__name__}{activation}{bias}{mode}".encode()))

    def loss(p, x):
        out, kl = layer.forward(p, x, noise=noise if mode == "sample" else None, mode=mode)
        return np.sum(g * out) + kl

    rng = np.random.default_rng(0)
    directional_fd_check(loss, (params, x), 0, rng)
    directional_fd_check(loss, (params, x), 1, rng)


@pytest.mark.parametrize("cls", CLASSES)
def test_rank3_gradients(cls):
    layer, params, x, g, noise = _setup(cls, "tanh", "normal", "normal", seed=3, shape=(2, 3, 4))

    def loss(p, x):
        out, kl = layer.forward(p, x, noise=noise)
        return np.sum(g * out) + kl

    rng = np.random.default_rng(1)
    directional_fd_check(loss, (params, x), 0, rng)
    directional_fd_check(loss, (params, x), 1, rng)


def test_zero_rows_give_finite_gradients_equal_to_the_limit():
    """An all-zero input row makes s = 0. TFP's gradients are NaN there; ours use the limit 0 for
    that row's contribution through s, so the kernel gradients equal those of the batch without the
    row, and the row's x-gradient is the one through the mean alone."""
    layer, params, x, g, noise = _setup(L.DenseLocalReparameterization, None, "deterministic", None,
                                        seed=5, shape=(5, 4))
    x[[1, 3]] = 0.0

    def loss(p, x, g, eps):
        out, kl = layer.forward(p, x, noise={"kernel": eps})
        return np.sum(g * out) + kl

    grads = grad(loss)(params, x, g, noise["kernel"])
    gx = grad(loss, 1)(params, x, g, noise["kernel"])
    assert all(np.all(np.isfinite(v)) for v in grads.values()) and np.all(np.isfinite(gx))
    keep = [0, 2, 4]
    grads_without = grad(loss)(params, x[keep], g[keep], noise["kernel"][keep])
    for name in ["kernel_posterior_loc", "kernel_posterior_untransformed_scale"]:
        np.testing.assert_allclose(grads[name], grads_without[name], rtol=1e-13, atol=1e-15)
    # x-gradient of a zero row: only the mean path m = x @ loc contributes.
    np.testing.assert_allclose(gx[1], params["kernel_posterior_loc"] @ g[1], rtol=1e-13)
    # The scale gradient is the limit of the gradient for rows t * v as t -> 0.
    v = np.random.default_rng(9).standard_normal(4)
    for t in [1e-3, 1e-5]:
        x_t = x.copy()
        x_t[1] = t * v
        x_t[3] = t * v[::-1]
        g_t = grad(loss)(params, x_t, g, noise["kernel"])
        np.testing.assert_allclose(g_t["kernel_posterior_untransformed_scale"],
                                   grads["kernel_posterior_untransformed_scale"], atol=20 * t)


def test_gradients_keep_float32():
    layer = L.DenseFlipout(3, "elu", bias_posterior="normal", bias_prior="normal")
    rng = np.random.default_rng(0)
    params = layer.init(rng, 4)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    noise = layer.sample_noise(rng, x.shape)

    def loss(p, x):
        out, kl = layer.forward(p, x, noise=noise)
        return np.sum(out) + kl

    assert {v.dtype for v in grad(loss)(params, x).values()} == {np.dtype(np.float32)}
    assert grad(loss, 1)(params, x).dtype == np.float32
