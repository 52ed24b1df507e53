"""The estimators against an independent naive implementation, and the KL against integration."""
import numpy as np
import pytest
from scipy import integrate, stats

import lrtdense as L
from lrtdense.kernels import kl_normal_normal, posterior_scale


def _softplus(u):
    return np.log1p(np.exp(-np.abs(u))) + np.maximum(u, 0)


def naive_outputs(params, x, rng, n_draws, activation):
    """Independent reference: a full weight matrix W_i ~ N(loc, scale) drawn per example and per
    draw, outputs activation(x_i @ W_i + b). Shape (n_draws, batch, units)."""
    loc = params["kernel_posterior_loc"]
    scale = _softplus(params["kernel_posterior_untransformed_scale"]) + np.finfo(float).eps
    batch = x.shape[0]
    W = loc + scale * rng.standard_normal((n_draws, batch) + loc.shape)
    pre = np.einsum("bi,nbiu->nbu", x, W) + params["bias_posterior_loc"]
    return activation(pre)


@pytest.mark.parametrize("cls", [L.DenseLocalReparameterization, L.DenseFlipout,
                                 L.DenseReparameterization])
@pytest.mark.parametrize("activation", [None, "tanh"])
def test_marginal_moments_match_per_example_weight_sampling(cls, activation):
    rng = np.random.default_rng(42)
    layer = cls(3, activation, dtype="float64")
    params = layer.init(rng, 4)
    params["kernel_posterior_untransformed_scale"] += 2.5  # scale ~ 0.4: noise matters
    params["kernel_posterior_loc"] *= 5
    x = rng.standard_normal((3, 4))
    n = 20000
    fn = {None: lambda a: a, "tanh": np.tanh}[activation]
    ref = naive_outputs(params, x, rng, n, fn)
    ours = np.stack([layer.forward(params, x, rng)[0] for _ in range(n)])
    # Two-sample z-tests on mean and variance of every output element, 5 standard errors.
    for a, b in [(ours, ref)]:
        mean_se = np.sqrt(a.var(0) / n + b.var(0) / n)
        assert np.all(np.abs(a.mean(0) - b.mean(0)) < 5 * mean_se), "means differ"
        var_se = np.sqrt((np.var((a - a.mean(0)) ** 2, 0) + np.var((b - b.mean(0)) ** 2, 0)) / n)
        assert np.all(np.abs(a.var(0) - b.var(0)) < 5 * var_se), "variances differ"
    if activation is None:
        # And against the analytic moments x @ loc + b, (x**2) @ scale**2.
        scale = posterior_scale(params["kernel_posterior_untransformed_scale"])
        mean = x @ params["kernel_posterior_loc"] + params["bias_posterior_loc"]
        var = (x ** 2) @ scale ** 2
        assert np.all(np.abs(ours.mean(0) - mean) < 5 * np.sqrt(var / n))
        assert np.all(np.abs(ours.var(0) / var - 1) < 5 * np.sqrt(2 / n))


def test_lrt_draws_are_independent_across_examples_and_flipout_not_fully():
    """LRT: outputs of two examples are uncorrelated (independent weights per example);
    DenseReparameterization: strongly correlated (one weight sample for the batch)."""
    rng = np.random.default_rng(3)
    x = np.ones((2, 4))
    for cls, correlated in [(L.DenseLocalReparameterization, False), (L.DenseReparameterization, True)]:
        layer = cls(1, dtype="float64")
        params = layer.init(rng, 4)
        params["kernel_posterior_untransformed_scale"] += 3
        draws = np.stack([layer.forward(params, x, rng)[0][:, 0] for _ in range(4000)])
        r = np.corrcoef(draws.T)[0, 1]
        assert (r > 0.99) if correlated else (abs(r) < 5 / np.sqrt(4000))


@pytest.mark.parametrize("mq,sq,mp,sp", [(0.3, 0.2, 0.0, 1.0), (-1.0, 2.5, 0.5, 0.7),
                                         (2.0, 0.01, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0)])
def test_kl_normal_normal_against_quadrature_and_monte_carlo(mq, sq, mp, sp):
    prior = L.NormalPrior(mp, sp)
    closed = float(kl_normal_normal(np.array([mq]), np.array([sq]), prior.loc, prior.scale))
    q, p = stats.norm(mq, sq), stats.norm(mp, sp)
    integrand = lambda w: q.pdf(w) * (q.logpdf(w) - p.logpdf(w))
    quad, _ = integrate.quad(integrand, mq - 40 * sq, mq + 40 * sq, points=[mq], limit=200)
    assert abs(closed - quad) <= 1e-8 * max(1.0, abs(quad))
    w = q.rvs(size=400000, random_state=np.random.default_rng(1))
    terms = q.logpdf(w) - p.logpdf(w)
    assert abs(closed - terms.mean()) < 5 * terms.std() / np.sqrt(len(w)) + 1e-12


def test_layer_kl_is_the_sum_of_elementwise_kls():
    rng = np.random.default_rng(0)
    layer = L.DenseLocalReparameterization(2, bias_posterior="normal",
                                           kernel_prior=L.NormalPrior(0.2, 0.5),
                                           bias_prior=L.NormalPrior(-0.1, 2.0), dtype="float64")
    params = layer.init(rng, 3)
    terms = layer.divergences(params)
    for name, prior in [("kernel", layer.kernel_prior), ("bias", layer.bias_prior)]:
        loc = params[f"{name}_posterior_loc"].ravel()
        scale = _softplus(params[f"{name}_posterior_untransformed_scale"]).ravel() + 2.0 ** -52
        expected = sum(
            integrate.quad(lambda w: stats.norm.pdf(w, m, s) * (stats.norm.logpdf(w, m, s)
                           - stats.norm.logpdf(w, prior.loc, prior.scale)),
                           m - 40 * s, m + 40 * s, points=[m], limit=200)[0]
            for m, s in zip(loc, scale))
        np.testing.assert_allclose(terms[name], expected, rtol=1e-7)
    assert layer.forward(params, np.ones((1, 3)), mode="mean")[1] == terms["kernel"] + terms["bias"]


def test_kl_deterministic_normal_is_negative_log_density():
    loc = np.array([0.3, -2.0, 5.0])
    prior = L.NormalPrior(0.5, 1.5)
    expected = -stats.norm.logpdf(loc, 0.5, 1.5).sum()
    # what a layer with a point-mass posterior computes as its KL
    np.testing.assert_allclose(-prior.log_prob(loc, {}, "kernel", None), expected, rtol=1e-14)
