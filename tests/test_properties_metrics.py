"""Property tests for lrtdense.metrics: any input gives either the value of a naive
oracle, or a ValueError/TypeError naming the input; an input is accepted exactly when it meets
the documented contract."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from lrtdense import metrics as M
from test_predict import exact_nll, exact_rmse, naive_ece

SETTINGS = settings(max_examples=200, deadline=None, database=None)

floats_any = st.floats(allow_nan=True, allow_infinity=True, width=64)
small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
any_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_]),
               small_shapes),
    hnp.arrays(np.float64, small_shapes, elements=st.floats(-0.1, 1.1)),
    hnp.arrays(np.int64, small_shapes, elements=st.integers(-2, 6)),
    st.just(np.array(["a"])), st.just(np.array([1 + 1j])))


@st.composite
def classification(draw):
    """Valid (labels, probs): softmax of drawn logits, labels in range."""
    n, k = draw(st.integers(1, 40)), draw(st.integers(1, 8))
    logits = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-30, 30)))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    if draw(st.booleans()):
        probs = probs.astype(np.float32)
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return labels, probs


@SETTINGS
@given(data=classification(), num_bins=st.integers(1, 40))
def test_valid_classification_inputs_give_the_naive_values(data, num_bins):
    labels, probs = data
    acc = M.accuracy(labels, probs)
    assert acc == np.mean(probs.argmax(1) == labels) and 0 <= acc <= 1
    ece = M.expected_calibration_error(labels, probs, num_bins)
    assert 0 <= ece <= 1 + 1e-12
    assert ece == pytest.approx(naive_ece(labels, np.asarray(probs, np.float64), num_bins),
                                rel=1e-9, abs=1e-12)


def meets_classification_contract(labels, probs):
    labels, probs = np.asarray(labels), np.asarray(probs)
    if probs.dtype.kind not in "iuf" or labels.dtype.kind not in "iu":
        return False
    if probs.ndim != 2 or 0 in probs.shape or labels.shape != (probs.shape[0],):
        return False
    p = probs.astype(float)
    return bool(np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1
                and np.all(np.abs(p.sum(1) - 1) <= M.PROB_SUM_TOLERANCE)
                and labels.min() >= 0 and labels.max() < probs.shape[1])


@SETTINGS
@given(labels=any_arrays, probs=any_arrays)
def test_any_classification_input_is_checked_exactly(labels, probs):
    try:
        acc = M.accuracy(labels, probs)
    except (ValueError, TypeError) as err:
        assert not meets_classification_contract(labels, probs)
        assert "labels" in str(err) or "probs" in str(err), err
    else:
        assert meets_classification_contract(labels, probs)
        assert 0 <= acc <= 1


@SETTINGS
@given(num_bins=st.one_of(st.integers(-3, 3), floats_any, st.booleans(), st.none(), st.text(max_size=2)))
def test_num_bins_is_an_integer_at_least_one(num_bins):
    labels, probs = np.array([0, 1]), np.array([[0.7, 0.3], [0.2, 0.8]])
    ok = type(num_bins) is int and num_bins >= 1
    try:
        ece = M.expected_calibration_error(labels, probs, num_bins)
    except ValueError as err:
        assert not ok and "num_bins" in str(err)
    else:
        assert ok and ece == pytest.approx(naive_ece(labels, probs, num_bins))


def regression_contract(y, mean, std):
    """The expected (y, mean, std) as (N, ...) float arrays, or None where an error is due."""
    y, mean, std = np.asarray(y), np.asarray(mean), np.asarray(std)
    if any(a.dtype.kind not in "iuf" for a in (y, mean, std)):
        return None
    y, mean, std = y.astype(float), mean.astype(float), std.astype(float)
    if not all(np.all(np.isfinite(a)) for a in (y, mean, std)):
        return None
    if y.ndim == 1 and mean.shape == (len(y), 1):
        y = y[:, None]
        if std.shape == (len(y),):
            std = std[:, None]
    if y.shape != mean.shape or y.ndim == 0 or y.size == 0:
        return None
    try:
        std = np.broadcast_to(std, mean.shape)
    except ValueError:
        return None
    return (y, mean, std) if np.all(std > 0) else None


@SETTINGS
@given(y=any_arrays, mean=any_arrays, std=st.one_of(any_arrays, floats_any),
       level=st.one_of(st.floats(-0.5, 1.5), floats_any, st.booleans()))
def test_any_regression_input_is_checked_exactly(y, mean, std, level):
    expected = regression_contract(y, mean, std)
    level_ok = type(level) is float and 0 < level < 1
    for name, metric in (("rmse", lambda: M.rmse(y, mean)),
                         ("nll", lambda: M.gaussian_nll(y, mean, std)),
                         ("coverage", lambda: M.interval_coverage(y, mean, std, level))):
        try:
            value = metric()
        except (ValueError, TypeError) as err:
            message = str(err)
            assert any(w in message for w in ("y", "mean", "std", "targets", "level")), message
            if name == "rmse":
                assert regression_contract(y, mean, 1.0) is None
            elif name == "nll":
                assert expected is None
            else:
                assert expected is None or not level_ok
            continue
        if name == "rmse":      # any finite floats, 1e308 included: the 50-digit value
            yy, mm, _ = regression_contract(y, mean, 1.0)
            assert value == pytest.approx(exact_rmse(yy, mm), rel=1e-13, abs=0)
        elif name == "nll":
            yy, mm, ss = expected
            assert value == pytest.approx(exact_nll(yy, mm, ss), rel=1e-9, abs=1e-9)
        else:
            assert expected is not None and level_ok and 0 <= value <= 1
