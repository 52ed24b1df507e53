"""lrtdense.metrics: closed forms and naive oracles, and a clear error for every input
that used to give a silently wrong number (issue 14); finite answers for finite inputs however
large or small, and the ECE's memory bounded by N whatever the number of bins (issue 20)."""
import math
import tracemalloc
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from scipy import special, stats

import lrtdense as L
from lrtdense import metrics as M
from lrtdense.losses import GaussianLikelihood
from lrtdense.model import Model


def naive_ece(labels, probs, num_bins):
    """The textbook loop (Guo et al. 2017, eq. 3), bins (b/B, (b+1)/B] with exact rational ends."""
    conf, pred = probs.max(1), probs.argmax(1)
    exact = [Fraction(float(c)) for c in conf]
    total = 0.0
    for b in range(num_bins):
        lo, hi = Fraction(b, num_bins), Fraction(b + 1, num_bins)
        mask = np.array([(c > lo or b == 0) and c <= hi for c in exact])
        if mask.any():
            total += mask.sum() / len(labels) * abs((pred[mask] == labels[mask]).mean() - conf[mask].mean())
    return total


def grouped_ece(labels, probs, num_bins):
    """The ECE with each example's bin ceil(c * B) - 1 found in rational arithmetic and only the
    occupied bins held (a dict): any number of bins."""
    groups = {}
    for label, row in zip(labels, np.asarray(probs, np.float64)):
        c = float(row.max())
        b = max(math.ceil(Fraction(c) * num_bins) - 1, 0)
        groups.setdefault(b, []).append((int(row.argmax() == label), c))
    return math.fsum(abs(sum(ok for ok, _ in g) - math.fsum(c for _, c in g))
                     for g in groups.values()) / len(labels)


def exact_rmse(y, mean):
    """sqrt(mean((y - mean)**2)) in 50-digit arithmetic (no overflow), rounded once."""
    with mpmath.workdps(50):
        errors = [mpmath.mpf(float(a)) - mpmath.mpf(float(b)) for a, b in zip(y.flat, mean.flat)]
        return float(mpmath.sqrt(mpmath.fsum(e ** 2 for e in errors) / len(errors)))


def exact_nll(y, mean, std):
    """mean(-log N(y; mean, std**2)) in 50-digit arithmetic, rounded once."""
    with mpmath.workdps(50):
        terms = [(mpmath.mpf(float(a)) - mpmath.mpf(float(b))) ** 2 / (2 * mpmath.mpf(float(c)) ** 2)
                 + mpmath.log(mpmath.mpf(float(c))) + mpmath.log(2 * mpmath.pi) / 2
                 for a, b, c in zip(y.flat, mean.flat, np.broadcast_to(std, y.shape).flat)]
        return float(mpmath.fsum(terms) / len(terms))


def exact_coverage(y, mean, std, level):
    """Fraction of |y - mean| <= z std, compared in rationals, z = sqrt(2) erfinv(level) to 50
    digits."""
    with mpmath.workdps(50):
        z = Fraction(str(mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf(float(level)))))
    inside = [abs(Fraction(float(a)) - Fraction(float(b))) <= z * Fraction(float(c))
              for a, b, c in zip(y.flat, mean.flat, np.broadcast_to(std, y.shape).flat)]
    return sum(inside) / len(inside)


def test_the_issue_column_of_labels_is_refused_not_broadcast():
    """(N, 1) labels against (N,) predictions broadcast to (N, N): 0.375 for a perfect
    classifier. Refused (with the fix in the message); the flat labels give 1.0."""
    probs = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]] * 0.7 + 0.075
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert float(np.mean(np.argmax(probs, -1) == labels[:, None])) == 0.25   # the old broadcast
    for metric in (M.accuracy, M.expected_calibration_error):
        with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(8,\) to match "
                                             r"probs \(8, 4\), got \(8, 1\); pass labels.ravel\(\)"):
            metric(labels[:, None], probs)
    assert M.accuracy(labels, probs) == 1.0
    assert M.expected_calibration_error(labels, probs) == pytest.approx(0.225)


def test_accuracy_and_ece_values():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    assert M.accuracy(labels, probs) == 0.75
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert M.expected_calibration_error(labels, probs, num_bins=10) == pytest.approx(expected, abs=1e-15)
    assert M.expected_calibration_error(labels, probs, num_bins=1) == pytest.approx(abs(0.75 - 0.75))
    assert M.accuracy(np.array([1], np.uint8), np.array([[0.5, 0.5]])) == 0.0     # tie: lowest index
    rng = np.random.default_rng(0)
    for bins in (1, 2, 7, 15, 100):
        probs = special.softmax(3 * rng.standard_normal((500, 6)), axis=1)
        labels = rng.integers(0, 6, 500)
        assert M.expected_calibration_error(labels, probs, num_bins=np.int64(bins)) == \
            pytest.approx(naive_ece(labels, probs, bins), rel=1e-12, abs=1e-15)


def test_the_sum_tolerance():
    """Float32 softmax over 1000 classes averaged over samples passes; rows off by more than
    PROB_SUM_TOLERANCE (logits, unnormalised scores) are refused."""
    rng = np.random.default_rng(1)
    logits = (5 * rng.standard_normal((20, 50, 1000))).astype(np.float32)
    probs = special.softmax(logits, axis=-1).mean(0)
    assert probs.dtype == np.float32 and np.abs(probs.sum(-1) - 1).max() < 1e-5
    assert 0 <= M.accuracy(rng.integers(0, 1000, 50), probs) <= 1
    tol = M.PROB_SUM_TOLERANCE
    assert tol == 1e-3
    ok = np.array([[0.5, 0.5 + 0.9 * tol]])
    assert M.accuracy(np.array([1]), ok) == 1.0
    with pytest.raises(ValueError, match=r"row 1 sums to 1.0011 \(logits or unnormalised scores\?\)"):
        M.accuracy(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5011]]))
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        M.accuracy(np.array([0]), np.array([[2.0, -1.0]]))


@pytest.mark.parametrize("labels,probs,error,match", [
    ([0, 1], [[0.5, 0.5], [np.nan, 0.5]], ValueError, r"probs must be finite; 1 of 4 entries"),
    ([0, 1], [[0.5, 0.5], [np.inf, 0.5]], ValueError, "probs must be finite"),
    ([0, 1], [0.5, 0.5], ValueError, r"probs must have shape \(N, k\) with N, k >= 1, got \(2,\)"),
    ([], np.zeros((0, 3)), ValueError, r"probs must have shape \(N, k\) with N, k >= 1, got \(0, 3\)"),
    ([0, 1], [[[0.5, 0.5]]], ValueError, r"got \(1, 1, 2\)"),
    ([0.0, 1.0], [[0.5, 0.5], [0.5, 0.5]], TypeError, "labels must be integer class indices, got dtype float64"),
    ([[0.0, 1.0], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]], TypeError, r"^one-hot labels are refused: pass integer class indices of shape \(2,\)"),
    ([[0, 1], [1, 0]], [[0.5, 0.5], [0.5, 0.5]], TypeError, "one-hot labels are refused"),
    ([True, False], [[0.5, 0.5], [0.5, 0.5]], TypeError, "got dtype bool"),
    (["a", "b"], [[0.5, 0.5], [0.5, 0.5]], TypeError, "got dtype <U1"),
    ([0, 2], [[0.5, 0.5], [0.5, 0.5]], ValueError, r"labels must lie in \[0, 2\) for 2 classes, got values in \[0, 2\]"),
    ([-1, 0], [[0.5, 0.5], [0.5, 0.5]], ValueError, r"labels must lie in \[0, 2\)"),
    ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], ValueError, r"labels must have shape \(N,\) = \(2,\) .* got \(3,\)$"),
    ([[0, 1]], [[0.5, 0.5], [0.5, 0.5]], ValueError, r"got \(1, 2\); pass labels.ravel\(\)"),
    ([0, 1], [["a", "b"], ["c", "d"]], TypeError, "probs must be an array of real numbers"),
    ([0, 1], [[0.5 + 0j, 0.5], [0.5, 0.5]], TypeError, "probs must be an array of real numbers, got dtype complex128"),
    ([0, 1], [[3.0, -1.0], [0.2, 0.8]], ValueError, r"probs must lie in \[0, 1\]"),
    ([0, 1], [[1.2, 3.4], [0.1, 0.2]], ValueError, r"probs must lie in \[0, 1\]"),
    ([0, 1], [[0.2, 0.3], [0.1, 0.2]], ValueError, "row 1 sums to 0.3"),
])
def test_bad_classification_inputs(labels, probs, error, match):
    for metric in (M.accuracy, M.expected_calibration_error):
        with pytest.raises(error, match=match):
            metric(np.asarray(labels), np.asarray(probs))


@pytest.mark.parametrize("num_bins", [0, -1, 2.5, True, "15", None, np.float64(3), 2 ** 53 + 1,
                                      np.uint64(2 ** 63)])
def test_ece_num_bins_must_be_a_positive_integer(num_bins):
    with pytest.raises(ValueError, match=r"num_bins must be an integer in \[1, 2\*\*53\], got "):
        M.expected_calibration_error(np.array([0]), np.array([[1.0, 0.0]]), num_bins=num_bins)


def test_regression_metrics_values():
    rng = np.random.default_rng(2)
    y, mean, std = rng.standard_normal((50, 2)), rng.standard_normal((50, 2)), rng.uniform(0.5, 2, (50, 2))
    assert M.rmse(y, mean) == pytest.approx(np.sqrt(np.mean((y - mean) ** 2)), rel=1e-15)
    assert M.gaussian_nll(y, mean, std) == pytest.approx(np.mean(-stats.norm.logpdf(y, mean, std)), rel=1e-14)
    assert M.gaussian_nll(y, mean, 1.5) == pytest.approx(np.mean(-stats.norm.logpdf(y, mean, 1.5)), rel=1e-14)
    z = stats.norm.ppf(0.95)
    assert M.interval_coverage(y, mean, std, 0.9) == np.mean(np.abs(y - mean) <= z * std)
    # (N,) targets and std against an (N, 1) mean: taken as (N, 1), as the likelihood does.
    col = mean[:, :1]
    assert M.rmse(y[:, 0], col) == pytest.approx(np.sqrt(np.mean((y[:, 0] - col[:, 0]) ** 2)))
    assert M.gaussian_nll(y[:, 0], col, std[:, 0]) == pytest.approx(
        np.mean(-stats.norm.logpdf(y[:, 0], col[:, 0], std[:, 0])))
    assert M.interval_coverage(np.zeros(3), np.zeros((3, 1)), np.ones(3), np.float32(0.5)) == 1.0
    big = rng.standard_normal((20000, 1))
    assert M.interval_coverage(big, np.zeros_like(big), np.ones_like(big), 0.95) == pytest.approx(0.95, abs=0.006)


@pytest.mark.parametrize("call,error,match", [
    (lambda: M.interval_coverage(np.zeros(3), np.zeros(3), np.array([1.0, np.nan, 1.0])),
     ValueError, r"std must be finite; 1 of 3 entries are NaN or infinite \(the first at flat index 1: nan\)"),
    (lambda: M.interval_coverage(np.zeros(3), np.zeros(3), 0.0), ValueError, "std must be > 0; its smallest entry is 0.0"),
    (lambda: M.gaussian_nll(np.zeros(3), np.zeros(3), -1.0), ValueError, "std must be > 0"),
    (lambda: M.gaussian_nll(np.zeros(3), np.zeros(3), np.inf), ValueError, "std must be finite"),
    (lambda: M.gaussian_nll(np.zeros(3), np.zeros(3), np.ones(4)), ValueError,
     r"std of shape \(4,\) does not match predictions of shape \(3,\)"),
    (lambda: M.gaussian_nll(np.zeros((3, 2)), np.zeros((3, 2)), np.ones(3)), ValueError,
     r"std of shape \(3,\) does not match predictions of shape \(3, 2\)"),
    (lambda: M.rmse(np.zeros(3), np.zeros(4)), ValueError,
     r"targets of shape \(3,\) do not match predictions of shape \(4,\)"),
    (lambda: M.rmse(np.zeros((3, 1)), np.zeros(3)), ValueError, r"targets of shape \(3, 1\) do not match"),
    (lambda: M.rmse(np.zeros(0), np.zeros(0)), ValueError, "expected at least one target"),
    (lambda: M.rmse(np.zeros((3, 0)), np.zeros((3, 0))), ValueError,
     r"y must have shape \(N, ...\) with N >= 1, got \(3, 0\)"),
    (lambda: M.rmse(1.0, 2.0), ValueError, "expected at least one target"),
    (lambda: M.rmse(np.array([1.0, np.nan]), np.zeros(2)), ValueError, "y must be finite"),
    (lambda: M.rmse(np.zeros(2), np.array([np.inf, 0])), ValueError, "mean must be finite"),
    (lambda: M.rmse(np.zeros(2), np.array(["a", "b"])), TypeError, "mean must be an array of real numbers"),
    (lambda: M.rmse(np.zeros(2), [None, 1.0]), TypeError, "got dtype object"),
])
def test_bad_regression_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("level", [0, 1, -0.5, 1.5, np.nan, np.inf, True, "0.95", None])
def test_coverage_level_must_lie_in_the_open_unit_interval(level):
    with pytest.raises(ValueError, match=r"level must be a number in \(0, 1\), got "):
        M.interval_coverage(np.zeros(3), np.zeros(3), np.ones(3), level)


def test_predict_num_samples_and_shapes():
    model = Model(L.DenseLocalReparameterization(2, dtype="float64"), GaussianLikelihood(0.5))
    params = model.init(np.random.default_rng(0), 3)
    x = np.ones((4, 3))
    out = L.predict(model, params, x, rng=np.random.default_rng(0), num_samples=np.int64(3))
    assert out["samples"].shape == (3, 4, 2) and out["mean"].shape == (4, 2)
    np.testing.assert_allclose(out["std"] ** 2, out["epistemic_std"] ** 2 + 0.25, rtol=1e-14)
    one = L.predict(model, params, x, rng=np.random.default_rng(0), num_samples=1)
    assert np.all(one["epistemic_std"] == 0)
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
            L.predict(model, params, x, rng=np.random.default_rng(0), num_samples=bad)


def test_every_public_function_documents_args_returns_and_raises():
    for module in (L.metrics, L.predictive):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                doc = obj.__doc__ or ""
                assert "Returns" in doc, name
                if name != "predict_mean":
                    assert "Args:" in doc and "Raises:" in doc, name


def test_rmse_is_finite_whenever_the_true_value_is():
    """Errors of 1e300 (squares overflow), 1e308 - -1e308 (the difference overflows, the RMSE
    over 4 targets does not) and 1e-200 (squares underflow to 0): the 50-digit value, where the
    plain formula gave inf, inf and 0."""
    cases = [(np.full(3, 1e300), np.zeros(3)),
             (np.array([1e308, 0, 0, 0]), np.array([-1e308, 0, 0, 0])),
             (np.array([1e308, -1e308, 5.0]), np.array([-1e308, 1e308, 0.0])),
             (np.full((2, 2), 3e-200), np.zeros((2, 2))),
             (np.array([1e-320, 0.0]), np.array([0.0, 5e-324])),
             (np.array([1e300, 1e-300]), np.array([-1e300, 0.0]))]
    for y, mean in cases:
        with np.errstate(over="ignore", under="ignore"):
            plain = float(np.sqrt(np.mean((y - mean) ** 2)))
        assert plain != pytest.approx(exact_rmse(y, mean), rel=1e-12, abs=0)   # the old answer
        assert M.rmse(y, mean) == pytest.approx(exact_rmse(y, mean), rel=1e-14, abs=0)
    # beyond float64 only when the RMSE itself is: one error of 2e308
    assert M.rmse(np.array([1e308]), np.array([-1e308])) == math.inf
    assert M.rmse(np.zeros(3), np.zeros(3)) == 0.0


def test_rmse_of_ordinary_errors_is_the_plain_formula_bit_for_bit():
    rng = np.random.default_rng(20)
    for scale in (1e-100, 1e-3, 1.0, 1e5, 1e100):
        y, mean = scale * rng.standard_normal((40, 3)), scale * rng.standard_normal((40, 3))
        assert M.rmse(y, mean) == float(np.sqrt(np.mean((y - mean) ** 2)))
        assert M.rmse(y, mean) == pytest.approx(exact_rmse(y, mean), rel=1e-14)


def test_gaussian_nll_is_finite_whenever_the_true_value_is():
    """y - mean overflows but z = (y - mean) / std is 2e8; z**2 overflows but z**2 / 2 does not;
    every term is finite but their sum overflows: the 50-digit value, where scipy's logpdf gave inf."""
    cases = [(np.array([1e308]), np.array([-1e308]), 1e300),
             (np.array([1.5e154, 0.0]), np.array([0.0, 0.0]), 1.0),
             (np.array([1.4e154, 1.4e154]), np.zeros(2), 1.0),
             (np.array([1e308, 1.0]), np.array([-1e308, 0.0]), np.array([1e154, 1e-3]))]
    for y, mean, std in cases:
        with np.errstate(over="ignore"):
            assert np.mean(-stats.norm.logpdf(y, mean, std)) == math.inf         # the old answer
        assert math.isfinite(exact_nll(y, mean, std))
        assert M.gaussian_nll(y, mean, std) == pytest.approx(exact_nll(y, mean, std), rel=1e-14)
    # inf only where the NLL itself is past float64's range
    assert M.gaussian_nll(np.array([1e200]), np.zeros(1), 1.0) == math.inf
    assert M.gaussian_nll(np.array([1e308]), np.array([-1e308]), 1e-300) == math.inf


def test_gaussian_nll_of_ordinary_inputs_is_scipys():
    rng = np.random.default_rng(21)
    y, mean, std = rng.standard_normal((30, 2)), rng.standard_normal((30, 2)), rng.uniform(1e-3, 9, (30, 2))
    assert M.gaussian_nll(y, mean, std) == pytest.approx(
        float(np.mean(-stats.norm.logpdf(y, mean, std))), rel=1e-15)
    assert M.gaussian_nll(y, mean, std) == pytest.approx(exact_nll(y, mean, std), rel=1e-13)


def test_interval_coverage_compares_overflowed_sides_exactly():
    """|y - mean| = 2e308 and z * std = 1.96e308 both overflow to inf, so inf <= inf counted the
    target as inside; halved, 1e308 > 0.98e308 is outside. With std 1.5e308 it is inside."""
    y, mean = np.array([1e308, 1e308, 0.0, 1.0]), np.array([-1e308, -1e308, 0.0, 0.0])
    std = np.array([1e308, 1.5e308, 1.0, 1e308])
    with np.errstate(over="ignore"):
        assert np.mean(np.abs(y - mean) <= stats.norm.ppf(0.975) * std) == 1.0   # the old answer
    assert M.interval_coverage(y, mean, std, 0.95) == exact_coverage(y, mean, std, 0.95) == 0.75


def test_interval_coverage_level_near_0_and_1():
    """0.5 + level / 2 rounds to 1 for level = 1 - 2**-53 (z = inf: everything inside) and to
    0.5 for level = 1e-300 (z = 0); sqrt(2) erfinv(level) is 8.29 and 1.25e-300."""
    y, mean, std = np.array([0.0, 20.0]), np.zeros(2), np.ones(2)
    level = 1 - 2 ** -53
    assert np.mean(np.abs(y - mean) <= stats.norm.ppf(0.5 + level / 2) * std) == 1.0   # old
    assert M.interval_coverage(y, mean, std, level) == exact_coverage(y, mean, std, level) == 0.5
    y = np.array([1e-301, 1.0])
    assert M.interval_coverage(y, mean, std, 1e-300) == exact_coverage(y, mean, std, 1e-300) == 0.5
    rng = np.random.default_rng(22)
    y, mean, std = rng.standard_normal((200, 1)), rng.standard_normal((200, 1)), rng.uniform(0.5, 2, (200, 1))
    for level in (0.01, 0.5, 0.9, 0.95, 0.999999):
        assert M.interval_coverage(y, mean, std, level) == exact_coverage(y, mean, std, level)


def _rows_with_confidence(conf, k=8):
    """(N, k) probabilities whose largest entry in row i is conf[i] (conf >= 1/k)."""
    rest = (1 - conf) / (k - 1)
    return np.concatenate([conf[:, None], np.repeat(rest[:, None], k - 1, 1)], 1)


def test_ece_bins_are_exact_at_their_ends():
    """Confidences on and next to every bin end b/B (0.2 as a float64 lies above 1/5: bin 1 of
    5, not bin 0): the textbook loop in rationals and the grouped rational computation."""
    rng = np.random.default_rng(23)
    for num_bins in (1, 3, 5, 7, 10, 15, 49, 100):
        ends = np.array([b / num_bins for b in range(1, num_bins + 1)])
        conf = np.concatenate([ends, np.nextafter(ends, 0), np.nextafter(ends, 2)])
        conf = np.clip(conf[conf >= 1 / 8], 1 / 8, 1.0)
        probs = _rows_with_confidence(conf)
        labels = rng.integers(0, 2, len(conf))       # right (class 0) or wrong, at random
        value = M.expected_calibration_error(labels, probs, num_bins)
        assert value == pytest.approx(naive_ece(labels, probs, num_bins), rel=1e-13, abs=1e-15)
        assert value == pytest.approx(grouped_ece(labels, probs, num_bins), rel=1e-13, abs=1e-15)
    # five equal classes: confidence 0.2, which as a float64 lies above 1/5, so in bin 1 of 5
    # (1/5, 2/5] beside 0.3, not in bin 0 (the bin ends of np.linspace put it there)
    probs = np.array([[0.2] * 5, [0.3] + [0.175] * 4])
    labels = np.array([0, 1])                       # right at 0.2, wrong at 0.3
    assert M.expected_calibration_error(labels, probs, 5) == pytest.approx(
        abs(1 - (0.2 + 0.3)) / 2, rel=1e-15)
    assert naive_ece(labels, probs, 5) == pytest.approx(0.25, rel=1e-15)


def test_ece_with_huge_num_bins_holds_only_the_occupied_bins():
    """num_bins = 10**9 and 2**53 (np.linspace of the bin ends alone took 8 GB and 72 PB:
    MemoryError): the value of the rational grouping, in memory that follows N."""
    rng = np.random.default_rng(24)
    probs = special.softmax(3 * rng.standard_normal((2000, 5)), axis=1)
    labels = rng.integers(0, 5, 2000)
    conf = probs.max(1)
    for num_bins in (10 ** 9, np.int64(2 ** 53 - 1), 2 ** 53):
        tracemalloc.start()
        try:
            value = M.expected_calibration_error(labels, probs, num_bins)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2_000_000, peak                # ~100 bytes per example, not per bin
        assert value == pytest.approx(grouped_ece(labels, probs, int(num_bins)), rel=1e-13)
    # with bins this narrow every example is alone in its bin
    alone = math.fsum(abs((probs.argmax(1) == labels) - conf)) / len(labels)
    assert len(np.unique(conf)) == len(conf)
    assert M.expected_calibration_error(labels, probs, 2 ** 53) == pytest.approx(alone, rel=1e-13)
