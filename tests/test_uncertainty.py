"""lrtdense.uncertainty against a second computation: scikit-learn's metrics where one exists
(skipped with a reason without scikit-learn, the ``examples`` extra), scipy's entropy and
numerical integration, closed forms and direct loops otherwise."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

import lrtdense as L
from lrtdense import metrics as M


def _sklearn_metrics():
    return pytest.importorskip("sklearn.metrics", reason="scikit-learn (the examples extra) is "
                               "not installed: its metrics are the second computation here")


def _probs(rng, shape, sharpness=3.0):
    logits = sharpness * rng.standard_normal(shape)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _mixture(rng, n=7, s=5):
    y = rng.standard_normal(n) * 2
    mu = rng.standard_normal((s, n, 1)) + 0.5
    return y, mu, 0.7


# --------------------------------------------------------------------- entropies, MI
def test_entropies_match_scipy_and_the_mean_kl():
    rng = np.random.default_rng(0)
    p = _probs(rng, (6, 9, 4))
    p[0, 0] = [1, 0, 0, 0]                            # 0 log 0 = 0
    pbar = p.mean(0)
    np.testing.assert_allclose(M.predictive_entropy(p), stats.entropy(pbar, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(M.expected_entropy(p), stats.entropy(p, axis=-1).mean(0),
                               rtol=1e-12)
    mean_kl = np.mean([stats.entropy(p_s, pbar, axis=-1) for p_s in p], 0)
    np.testing.assert_allclose(M.mutual_information(p), mean_kl, rtol=1e-9, atol=1e-15)


def test_mutual_information_is_zero_when_the_samples_agree_and_log2_at_most():
    p = np.tile(_probs(np.random.default_rng(1), (1, 5, 3)), (4, 1, 1))
    np.testing.assert_array_equal(M.mutual_information(p), 0.0)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])        # two certain, opposite samples
    np.testing.assert_allclose(M.mutual_information(disagree), [math.log(2)], rtol=1e-15)
    np.testing.assert_allclose(M.expected_entropy(disagree), [0.0])


@pytest.mark.parametrize("bad, message", [
    (np.ones((3, 2)) / 2, r"samples must have shape \(S, N, k\)"),
    (np.zeros((2, 0, 3)), r"samples must have shape \(S, N, k\)"),
    (np.full((2, 1, 2), 0.7), r"each row of samples must sum to 1.*row \(0, 0\)"),
    (np.array([[[1.5, -0.5]]]), r"samples must lie in \[0, 1\]"),
    (np.array([[[np.nan, 1.0]]]), r"samples must be finite"),
])
def test_entropies_refuse_bad_samples_in_one_line(bad, message):
    for f in (M.predictive_entropy, M.expected_entropy, M.mutual_information):
        with pytest.raises(ValueError, match=message) as info:
            f(bad)
        assert "\n" not in str(info.value)


# ------------------------------------------------------------------------ Brier, NLL
def test_brier_score_and_nll_match_scikit_learn():
    skm = _sklearn_metrics()
    rng = np.random.default_rng(2)
    for k in (2, 3, 5):
        probs = _probs(rng, (40, k))
        labels = rng.integers(0, k, 40)
        labels[:k] = np.arange(k)                     # every class present, as sklearn needs
        expected = skm.brier_score_loss(labels, probs, scale_by_half=False)
        assert M.brier_score(labels, probs) == pytest.approx(expected, rel=1e-12)
        assert M.categorical_nll(labels, probs) == pytest.approx(
            skm.log_loss(labels, probs, labels=np.arange(k)), rel=1e-12)
    binary = skm.brier_score_loss(labels := rng.integers(0, 2, 30), (p := _probs(rng, (30, 2)))[:, 1])
    assert M.brier_score(labels, p) == pytest.approx(2 * binary, rel=1e-12)


def test_categorical_nll_is_infinite_where_the_label_has_probability_zero():
    assert M.categorical_nll([0, 1], [[1.0, 0.0], [1.0, 0.0]]) == math.inf


def _naive_decomposition(labels, probs, bin_of):
    """Murphy's terms by an explicit loop over classes and groups, and the Brier score by sklearn's
    definition rebuilt from scratch."""
    n, k = probs.shape
    rel = res = unc = 0.0
    for c in range(k):
        f, o = probs[:, c], (labels == c).astype(float)
        groups = {}
        for i in range(n):
            groups.setdefault(bin_of(f[i]), []).append(i)
        base = o.mean()
        unc += base * (1 - base)
        for members in groups.values():
            fb, ob = f[members].mean(), o[members].mean()
            rel += len(members) * (fb - ob) ** 2 / n
            res += len(members) * (ob - base) ** 2 / n
    return rel, res, unc


def test_brier_decomposition_exact_form_and_binned_identity():
    rng = np.random.default_rng(3)
    k, n = 3, 60
    levels = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    probs = levels[rng.integers(0, 3, n)]                        # few distinct forecasts
    labels = rng.integers(0, k, n)
    d = M.brier_decomposition(labels, probs, num_bins=None)
    rel, res, unc = _naive_decomposition(labels, probs, lambda f: f)
    assert (d["reliability"], d["resolution"], d["uncertainty"]) == pytest.approx((rel, res, unc),
                                                                                  rel=1e-12)
    assert d["within_bin_variance"] == pytest.approx(0, abs=1e-15)
    assert d["brier"] == pytest.approx(rel - res + unc, rel=1e-12)
    assert d["brier"] == pytest.approx(M.brier_score(labels, probs), rel=1e-15)
    # binned: Murphy's terms from bin means, and Stephenson et al.'s identity
    probs, labels = _probs(rng, (200, 4), 1.5), rng.integers(0, 4, 200)
    d = M.brier_decomposition(labels, probs, num_bins=10)
    rel, res, unc = _naive_decomposition(labels, probs, lambda f: max(math.ceil(f * 10) - 1, 0))
    assert (d["reliability"], d["resolution"], d["uncertainty"]) == pytest.approx((rel, res, unc),
                                                                                  rel=1e-10)
    assert d["brier"] == pytest.approx(d["reliability"] - d["resolution"] + d["uncertainty"]
                                       + d["within_bin_variance"] - d["within_bin_covariance"],
                                       rel=1e-12)
    with pytest.raises(ValueError, match="num_bins must be an integer in"):
        M.brier_decomposition(labels, probs, num_bins=0)


# ------------------------------------------------------------------- regression mixture
def _mixture_cdf(x, mu, sigma):
    return np.mean(stats.norm.cdf(x, mu, sigma))


def test_mixture_nll_matches_a_direct_loop_and_the_gaussian_at_one_sample():
    rng = np.random.default_rng(4)
    y, mu, sigma = _mixture(rng)
    direct = np.mean([-math.log(np.mean([stats.norm.pdf(y[n], mu[s, n, 0], sigma)
                                         for s in range(mu.shape[0])])) for n in range(len(y))])
    assert M.mixture_nll(y, mu, sigma) == pytest.approx(direct, rel=1e-12)
    assert M.mixture_nll(y, mu[:1], sigma) == pytest.approx(
        M.gaussian_nll(y, mu[0], sigma), rel=1e-12)
    # far from every component: the large finite value, not -log 0
    far = M.mixture_nll(np.array([100.0]), np.zeros((3, 1, 1)), 0.01)
    assert far == pytest.approx(0.5 * 1e4 ** 2 + math.log(0.01) + 0.5 * math.log(2 * math.pi),
                                rel=1e-12)


def test_mixture_crps_matches_quadrature_and_gneiting_raftery():
    rng = np.random.default_rng(5)
    y, mu, sigma = _mixture(rng, n=4, s=3)
    by_quadrature = []
    for n in range(len(y)):
        def sq(x):
            return (_mixture_cdf(x, mu[:, n, 0], sigma) - (x >= y[n])) ** 2
        left, _ = integrate.quad(sq, -np.inf, y[n], epsabs=1e-13, epsrel=1e-12)
        right, _ = integrate.quad(sq, y[n], np.inf, epsabs=1e-13, epsrel=1e-12)
        by_quadrature.append(left + right)
    assert M.mixture_crps(y, mu, sigma) == pytest.approx(np.mean(by_quadrature), rel=1e-9)
    z = (y - mu[0, :, 0]) / sigma
    closed = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert M.mixture_crps(y, mu[:1], sigma) == pytest.approx(closed.mean(), rel=1e-12)
    # homogeneous of degree 1, through the halving near float64's limit
    assert M.mixture_crps(y * 2.0 ** 1000, mu * 2.0 ** 1000, sigma * 2.0 ** 1000) == pytest.approx(
        M.mixture_crps(y, mu, sigma) * 2.0 ** 1000, rel=1e-12)
    big = 1.5e308
    # E|X - y| = big, E|X - X'| = big: the differences 2 big are past the range
    assert M.mixture_crps([big], [[[-big]], [[big]]], 1.0) == pytest.approx(big / 2, rel=1e-12)


def test_pit_matches_quadrature_of_the_density_and_its_histogram_numpy():
    rng = np.random.default_rng(6)
    y, mu, sigma = _mixture(rng, n=5, s=4)
    pit = M.pit_values(y, mu, sigma)
    assert pit.shape == (5, 1)
    for n in range(5):
        density = lambda x: np.mean(stats.norm.pdf(x, mu[:, n, 0], sigma))  # noqa: E731
        integral, _ = integrate.quad(density, -np.inf, y[n], epsabs=1e-13)
        assert pit[n, 0] == pytest.approx(integral, abs=1e-10)
    # calibrated draws from the mixture give a flat histogram (within sampling error)
    s, n = 4, 20000
    mu = rng.standard_normal((s, n, 1))
    y = mu[rng.integers(0, s, n), np.arange(n), 0] + sigma * rng.standard_normal(n)
    density, edges = M.pit_histogram(M.pit_values(y, mu, sigma), num_bins=10)
    counts, np_edges = np.histogram(M.pit_values(y, mu, sigma), bins=10, range=(0, 1))
    np.testing.assert_allclose(density, counts * 10 / n, rtol=1e-15)
    np.testing.assert_array_equal(edges, np_edges)
    assert np.max(np.abs(density - 1)) < 0.1                  # ~5 standard errors
    with pytest.raises(ValueError, match=r"pit must be at least one value in \[0, 1\]"):
        M.pit_histogram([0.5, 1.2])


def test_interval_width_matches_scipy_intervals():
    std = np.array([[0.5], [1.0], [2.5]])
    lo, hi = stats.norm.interval(0.9, loc=0.0, scale=std)
    assert M.interval_width(std, 0.9) == pytest.approx(np.mean(hi - lo), rel=1e-12)
    assert M.interval_width([1e308, 1e308], 0.95) == math.inf
    assert M.interval_width([1e307, 1e307], 0.5) == pytest.approx(2 * 0.6744897501960817e307,
                                                                  rel=1e-12)
    with pytest.raises(ValueError, match="std must be at least one value > 0"):
        M.interval_width([1.0, 0.0])


@pytest.mark.parametrize("args, message", [
    ((np.zeros(3), np.zeros((2, 4, 1)), 1.0), r"targets of shape \(3, 1\) do not match"),
    ((np.zeros(3), np.zeros(3), 1.0), r"samples must have shape \(S, N, ...\)"),
    ((np.zeros(3), np.zeros((2, 3)), -1.0), "noise_scale must be > 0"),
    ((np.zeros(3), np.zeros((2, 3)), np.ones(4)), "noise_scale of shape"),
    ((np.array([np.inf, 0, 0]), np.zeros((2, 3)), 1.0), "y must be finite"),
])
def test_mixture_metrics_refuse_bad_input_in_one_line(args, message):
    for f in (M.mixture_nll, M.mixture_crps, M.pit_values):
        with pytest.raises(ValueError, match=message) as info:
            f(*args)
        assert "\n" not in str(info.value)


def test_predict_returns_what_the_mixture_metrics_need():
    rng = np.random.default_rng(7)
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(1, dtype="float64")]),
                    L.GaussianLikelihood(0.5, learn_scale=True))
    params = model.init(rng, 2)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 1))
    out = L.predict(model, params, x, rng=rng, num_samples=8)
    assert out["samples"].shape == (8, 6, 1)
    assert M.mixture_nll(y, out["samples"], out["noise_scale"]) > 0
    assert M.mixture_crps(y[:, 0], out["samples"], out["noise_scale"]) > 0
    assert M.interval_width(out["std"]) > 2 * 1.959 * out["noise_scale"]


# ------------------------------------------------------------------- OOD detection
def test_ood_auroc_and_aupr_match_scikit_learn_with_ties():
    skm = _sklearn_metrics()
    rng = np.random.default_rng(8)
    for trial in range(20):
        n_in, n_out = rng.integers(1, 30, 2)
        s_in = rng.integers(0, 6, n_in).astype(float)            # many ties
        s_out = rng.integers(2, 8, n_out).astype(float)
        truth = np.r_[np.zeros(n_in), np.ones(n_out)]
        scores = np.r_[s_in, s_out]
        assert M.ood_auroc(s_in, s_out) == pytest.approx(skm.roc_auc_score(truth, scores),
                                                        rel=1e-12)
        assert M.ood_aupr(s_in, s_out) == pytest.approx(
            skm.average_precision_score(truth, scores), rel=1e-12)
        assert M.ood_aupr(-s_out, -s_in) == pytest.approx(
            skm.average_precision_score(1 - truth, -scores), rel=1e-12)


def test_ood_auroc_is_the_pair_probability():
    rng = np.random.default_rng(9)
    s_in, s_out = rng.integers(0, 4, 13).astype(float), rng.integers(1, 5, 11).astype(float)
    pairs = (s_out[:, None] > s_in).mean() + 0.5 * (s_out[:, None] == s_in).mean()
    assert M.ood_auroc(s_in, s_out) == pytest.approx(pairs, rel=1e-14)
    with pytest.raises(ValueError, match=r"score_out must have shape \(n,\) with n >= 1"):
        M.ood_auroc([1.0], [])
