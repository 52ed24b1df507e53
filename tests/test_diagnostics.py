"""fit's warnings (lrtdense.diagnostics): each fires on the slip it names, in one line, with its
numbers recomputed here from the history and params, and none fires on an ordinary fit."""
import warnings

import numpy as np
import pytest

import lrtdense as L
from lrtdense.diagnostics import FitWarning


def _problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([[1.0], [-0.5], [0.2]]) + 0.1 * rng.normal(size=(n, 1))
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(8, "relu", dtype="float64"),
                                  L.DenseLocalReparameterization(1, dtype="float64")]),
                    L.GaussianLikelihood(0.1))
    return model, model.init(rng, 3), x, y


def _fit(**kwargs):
    model, params, x, y = _problem()
    settings = dict(rng=np.random.default_rng(1), epochs=1, batch_size=16, verbose=False,
                    optimizer=L.adam(1e-2))
    settings.update(kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params_after, history = L.fit(model, params, x, y, **settings)
    fit_warnings = [str(w.message) for w in caught if issubclass(w.category, FitWarning)]
    # each points at the line that called fit
    assert all(w.filename == __file__ for w in caught if issubclass(w.category, FitWarning))
    return fit_warnings, params, params_after, history


@pytest.mark.parametrize("settings, names, factor", [
    (dict(num_examples=16), "divided by the batch size (16)", 64 / 16),
    (dict(num_examples=4), "number of minibatches (4)", 64 / 4),
    (dict(kl_weight=1 / 64), "divided by N twice", 1 / 64),
    (dict(num_examples=1), "not divided at all", 64.0),
])
def test_an_accidental_kl_weight_is_one_line_naming_the_slip(settings, names, factor):
    messages, *_ = _fit(**settings)
    assert len(messages) == 1 and "\n" not in messages[0]
    assert names in messages[0] and f"this is {factor:.3g} times that" in messages[0]


@pytest.mark.parametrize("settings", [dict(), dict(kl_weight=0.3),
                                      dict(kl_weight=lambda epoch: 0.5)])
def test_the_elbo_tempering_and_warm_up_do_not_warn(settings):
    assert _fit(**settings)[0] == []


def test_posterior_scales_that_did_not_move_warn():
    # 13 epochs of 4 steps at a learning rate of 1e-9: nothing moves
    messages, before, after, _ = _fit(epochs=26, optimizer=L.adam(1e-9))
    assert len(messages) == 1 and "posterior scales moved by" in messages[0]
    name = "kernel_posterior_untransformed_scale"
    for layer in ("layer_0", "layer_1"):
        s0, s1 = (np.log1p(np.exp(p["network"][layer][name])) for p in (before, after))
        assert np.mean(np.abs(s1 - s0) / s0) < 0.01
    # the same number of steps at an ordinary learning rate moves them
    assert _fit(epochs=26)[0] == []


def test_a_dominating_kl_term_warns_with_its_numbers():
    messages, _, _, history = _fit(kl_weight=1000.0)
    term = 1000.0 * history["kl"][-1] / 64
    assert term > 10 * max(abs(history["nll"][-1]), 0.1)
    assert len(messages) == 1 and f"({term:.3g} per example)" in messages[0]
