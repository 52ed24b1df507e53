"""The fast hand-written step equals the reference autograd step (float64, <= 1e-12 relative)."""
import numpy as np
import pytest
from autograd import grad

import lrtdense as L
from lrtdense import fast
from lrtdense.losses import CategoricalLikelihood, GaussianLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.training import make_step, fit
from helpers import replay_completed_steps


def _model(likelihood, dtype="float64", prior=L.NormalPrior(0.0, 1.0), bias="deterministic"):
    return Model(Sequential([
        L.DenseLocalReparameterization(7, "relu", dtype=dtype, kernel_prior=prior, bias_posterior=bias),
        L.DenseLocalReparameterization(5, "tanh", dtype=dtype, kernel_prior=L.NormalPrior(0.2, 0.7)),
        L.DenseLocalReparameterization(3, dtype=dtype, kernel_prior=prior, bias_posterior=bias)]), likelihood)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("likelihood", [CategoricalLikelihood(), GaussianLikelihood(0.7)])
@pytest.mark.parametrize("prior,bias", [(L.NormalPrior(0.0, 1.0), "deterministic"), (None, None)])
def test_fast_gradients_equal_reference(likelihood, prior, bias):
    model = _model(likelihood, prior=prior, bias=bias)
    rng = np.random.default_rng(0)
    params = model.init(rng, 6)
    for layer in params["network"].values():
        layer["kernel_posterior_untransformed_scale"] += 2.0
    if prior is None:  # saturated scales: large u, exp underflow, and exp overflow (the stable branch)
        params["network"]["layer_0"]["kernel_posterior_untransformed_scale"][0, :3] = [45.0, -800.0, 31.0]
        params["network"]["layer_2"]["kernel_posterior_untransformed_scale"][0, :2] = [750.0, -40.0]
    x = rng.standard_normal((9, 6))
    x[2] = 0.0  # an all-zero row: s = 0 in the first layer
    y = rng.integers(0, 3, 9) if isinstance(likelihood, CategoricalLikelihood) else rng.standard_normal((9, 3))
    step = fast.FastStep(model, adam(), num_examples=50)
    loss, nll, kl, g = step.grads(params["network"], x, y, np.random.default_rng(5), kl_weight=0.7)

    def objective(p):
        return model.loss(p, x, y, np.random.default_rng(5), num_examples=50, kl_weight=0.7)[0]

    ref = grad(objective)(params)["network"]
    ref_loss, ref_nll, ref_kl = model.loss(params, x, y, np.random.default_rng(5), num_examples=50, kl_weight=0.7)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert abs(kl - ref_kl) <= 1e-12 * max(abs(ref_kl), 1.0)
    for name in ref:
        for key in ref[name]:
            assert _rel(g[name][key], ref[name][key]) <= 1e-12, (name, key)


def test_fast_training_trajectory_equals_reference():
    """43 examples in batches of 10: the short last batch of each epoch changes every buffer's
    shape twice per epoch."""
    model = _model(CategoricalLikelihood())
    rng = np.random.default_rng(1)
    params = model.init(rng, 6)
    x, y = rng.standard_normal((43, 6)), rng.integers(0, 3, 43)
    out = {}
    for impl in ("fast", "reference"):
        out[impl], hist = fit(model, params, x, y, rng=np.random.default_rng(2), epochs=3, batch_size=10,
                              optimizer=adam(0.01), verbose=False, implementation=impl)
        out[impl + "_loss"] = hist["loss"]
    np.testing.assert_allclose(out["fast_loss"], out["reference_loss"], rtol=1e-12)
    for name, layer in out["reference"]["network"].items():
        for key, value in layer.items():
            assert _rel(out["fast"]["network"][name][key], value) <= 1e-12, (name, key)


def test_fast_step_keeps_float32():
    model = _model(CategoricalLikelihood(), dtype="float32")
    rng = np.random.default_rng(3)
    params = model.init(rng, 6)
    opt = adam()
    step = make_step(model, opt, 100)
    assert isinstance(step, fast.FastStep)
    state = opt.init(params)
    state, loss, nll, kl = step(state, rng.standard_normal((8, 6)), rng.integers(0, 3, 8), rng)
    assert loss.dtype == np.float32
    for layer in state.params["network"].values():
        assert all(v.dtype == np.float32 for v in layer.values())
    for tree in (state.m, state.v):
        assert all(v.dtype == np.float32 for layer in tree["network"].values() for v in layer.values())


def test_unsupported_models_use_the_reference_path():
    model = Model(Sequential([L.DenseFlipout(3, dtype="float64")]), CategoricalLikelihood())
    assert not fast.supports(model, adam())
    with pytest.raises(ValueError, match="fast step supports"):
        make_step(model, adam(), 10, implementation="fast")
    assert not isinstance(make_step(model, adam(), 10), fast.FastStep)


def test_fast_fit_interrupt_keeps_the_last_completed_step(monkeypatch):
    model = _model(CategoricalLikelihood())
    rng = np.random.default_rng(4)
    params = model.init(rng, 6)
    x, y = rng.standard_normal((20, 6)), rng.integers(0, 3, 20)
    original = fast.FastStep.grads
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fast.FastStep, "grads", flaky)
    out, hist = fit(model, params, x, y, rng=np.random.default_rng(1), epochs=5, batch_size=5,
                    verbose=False, implementation="fast")
    monkeypatch.setattr(fast.FastStep, "grads", original)
    assert hist["interrupted"] and len(hist["loss"]) == 1
    # replaying the 6 completed steps (4 in epoch 1, 2 in epoch 2) gives the same bits
    replayed = replay_completed_steps(model, params, x, y, "fast", (4, 2))
    for name, layer in replayed["network"].items():
        for k, v in layer.items():
            assert np.array_equal(out["network"][name][k], v), (name, k)


def test_fast_gradients_with_linear_hidden_layers():
    model = Model(Sequential([L.DenseLocalReparameterization(5, dtype="float64"),
                              L.DenseLocalReparameterization(4, dtype="float64"),
                              L.DenseLocalReparameterization(3, "relu", dtype="float64"),
                              L.DenseLocalReparameterization(2, dtype="float64")]), GaussianLikelihood(0.3))
    rng = np.random.default_rng(7)
    params = model.init(rng, 6)
    x, y = rng.standard_normal((8, 6)), rng.standard_normal((8, 2))
    loss, _, _, g = fast.FastStep(model, adam(), 30).grads(params["network"], x, y, np.random.default_rng(1))
    ref = grad(lambda p: model.loss(p, x, y, np.random.default_rng(1), num_examples=30)[0])(params)["network"]
    for name in ref:
        for key in ref[name]:
            assert _rel(g[name][key], ref[name][key]) <= 1e-12, (name, key)
