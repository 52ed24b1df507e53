"""The Monte Carlo divergences are unbiased: their mean over draws is the KL, known in closed form
(Normal prior) or by numerical integration (scale-mixture, Laplace and Student-t priors), within
a tolerance of 5 standard errors of the draws (a false alarm has probability < 6e-7 per check)."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

import lrtdense as L

PRIORS = {
    "normal": (L.NormalPrior(0.3, 0.8), lambda w: stats.norm.logpdf(w, 0.3, 0.8)),
    "mixture": (L.ScaleMixturePrior(0.25, 1.5, 0.1),
                lambda w: np.log(0.25 * stats.norm.pdf(w, 0, 1.5) + 0.75 * stats.norm.pdf(w, 0, 0.1))),
    "laplace": (L.LaplacePrior(0.1, 0.5), lambda w: stats.laplace.logpdf(w, 0.1, 0.5)),
    "student_t": (L.StudentTPrior(3.0, 0.0, 0.5), lambda w: stats.t.logpdf(w, 3.0, 0.0, 0.5)),
}


def _kl_by_quadrature(m, s, log_p):
    q = stats.norm(m, s)
    f = lambda w: q.pdf(w) * (q.logpdf(w) - log_p(w))      # noqa: E731
    value, _ = integrate.quad(f, m - 30 * s, m + 30 * s, points=[m, 0.0], limit=400)
    return value


@pytest.mark.parametrize("name", sorted(PRIORS))
@pytest.mark.parametrize("cls", [L.DenseLocalReparameterization, L.DenseReparameterization])
def test_monte_carlo_kl_is_unbiased(name, cls):
    prior, log_p = PRIORS[name]
    layer = cls(2, kernel_prior=prior, kernel_divergence="monte_carlo", bias_posterior=None,
                dtype="float64")
    rng = np.random.default_rng(7)
    params = {"kernel_posterior_loc": rng.normal(0, 0.5, (3, 2)),
              "kernel_posterior_untransformed_scale": rng.normal(-1, 0.5, (3, 2))}
    loc = params["kernel_posterior_loc"]
    scale = np.log1p(np.exp(params["kernel_posterior_untransformed_scale"])) + 2.0 ** -52
    exact = sum(_kl_by_quadrature(m, s, log_p) for m, s in zip(loc.ravel(), scale.ravel()))
    if name == "normal":
        closed = L.DenseLocalReparameterization(2, kernel_prior=prior, bias_posterior=None,
                                                dtype="float64").kl(params)
        assert abs(closed - exact) <= 1e-8 * abs(exact)
    n = 20000
    draws = np.array([float(layer.divergences(params, layer.sample_noise(rng, (4, 3)))["kernel"])
                      for _ in range(n)])
    err = abs(draws.mean() - exact)
    assert err <= 5 * draws.std(ddof=1) / math.sqrt(n), (draws.mean(), exact, draws.std())


def test_monte_carlo_kl_of_dense_variational_is_unbiased():
    layer = L.DenseVariational(2, prior="trainable", dtype="float64")
    rng = np.random.default_rng(8)
    n_w = layer.size(3)
    params = {"posterior_constant": rng.normal(0, 0.5, 2 * n_w), "prior_constant": rng.normal(0, 0.5, n_w)}
    exact = float(L.DenseVariational(2, prior="trainable", kl_use_exact=True,
                                     dtype="float64").kl(params))
    n = 20000
    draws = np.array([float(layer.divergences(params, layer.sample_noise(rng, (4, 3)))["kernel"])
                      for _ in range(n)])
    assert abs(draws.mean() - exact) <= 5 * draws.std(ddof=1) / math.sqrt(n)


def test_mean_mode_evaluates_the_monte_carlo_divergence_at_the_posterior_mean():
    layer = L.DenseFlipout(2, kernel_prior=L.LaplacePrior(), kernel_divergence="monte_carlo",
                           dtype="float64")
    rng = np.random.default_rng(9)
    params = layer.init(rng, 3)
    loc = params["kernel_posterior_loc"]
    scale = np.log1p(np.exp(params["kernel_posterior_untransformed_scale"])) + 2.0 ** -52
    expected = np.sum(stats.norm.logpdf(loc, loc, scale) - stats.laplace.logpdf(loc, 0, 1))
    assert layer.forward(params, np.ones((1, 3)), mode="mean")[1] == pytest.approx(expected, rel=1e-12)
    assert layer.divergences(params)["kernel"] == pytest.approx(expected, rel=1e-12)
