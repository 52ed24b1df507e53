"""Networks, losses and the ELBO scaling, fit, prediction and metrics (save/load: test_io.py)."""
import io
import os

import numpy as np
import pytest
from scipy import stats

import lrtdense as L
from lrtdense.losses import (GaussianLikelihood, CategoricalLikelihood, softmax_cross_entropy,
                             gaussian_nll, neg_elbo)
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.metrics import rmse, accuracy, interval_coverage, expected_calibration_error
from lrtdense.metrics import gaussian_nll as predictive_nll
from lrtdense.predictive import predict, predict_mean
from lrtdense.training import fit, make_step
from lrtdense.tree import flatten
from helpers import directional_fd_check, replay_completed_steps


def mixed_net(dtype="float64"):
    return Sequential([L.DenseLocalReparameterization(5, "tanh", dtype=dtype),
                       L.DenseFlipout(4, "relu", bias_posterior="normal", bias_prior="normal", dtype=dtype),
                       L.DenseReparameterization(3, dtype=dtype)])


def test_sequential_kl_is_sum_and_rng_equals_noise():
    net = mixed_net()
    rng = np.random.default_rng(0)
    params = net.init(rng, 6)
    assert list(params) == ["layer_0", "layer_1", "layer_2"]
    x = rng.standard_normal((7, 6))
    out, kl = net.forward(params, x, np.random.default_rng(5))
    out2, kl2 = net.forward(params, x, noise=net.sample_noise(np.random.default_rng(5), x.shape))
    assert np.array_equal(out, out2) and kl == kl2 and out.shape == (7, 3)
    expected = sum(layer.kl(params[name]) for name, layer in zip(net.names, net.layers))
    assert kl == pytest.approx(expected, rel=1e-15)
    assert net.count_params(6) == sum(v.size for p in params.values() for v in p.values())


def test_gradients_through_the_stack_match_finite_differences():
    net = mixed_net()
    rng = np.random.default_rng(1)
    params = net.init(rng, 6)
    x = rng.standard_normal((4, 6))
    noise = net.sample_noise(rng, x.shape)
    g = rng.standard_normal((4, 3))

    def loss(p, x):
        out, kl = net.forward(p, x, noise=noise)
        return np.sum(g * out) + kl

    for name in net.names:
        directional_fd_check(lambda q, x: loss({**params, name: q}, x), (params[name], x), 0, rng)
    directional_fd_check(loss, (params, x), 1, rng)


def test_softmax_cross_entropy_is_stable_and_correct():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.1, 0.2, 0.3]])
    ce = softmax_cross_entropy(logits, np.array([0, 2]))
    assert np.all(np.isfinite(ce))
    np.testing.assert_allclose(ce[0], 0.0, atol=1e-300)
    p = np.exp(logits[1]) / np.exp(logits[1]).sum()
    np.testing.assert_allclose(ce[1], -np.log(p[2]), rtol=1e-14)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        softmax_cross_entropy(logits, np.array([0.0, 1.0]))


def test_gaussian_nll_matches_scipy():
    y, m, s = np.array([0.3, -2.0]), np.array([0.0, 1.0]), 1.7
    np.testing.assert_allclose(gaussian_nll(y, m, s), -stats.norm.logpdf(y, m, s), rtol=1e-14)


def test_minibatch_elbo_sums_to_full_data_elbo_over_n():
    """Mean over an epoch's minibatches of (mean NLL + KL / N) == (sum NLL + KL) / N, exactly when
    the noise is fixed at zero (the posterior mean) and in expectation otherwise."""
    rng = np.random.default_rng(2)
    model = Model(Sequential([L.DenseLocalReparameterization(4, "tanh", dtype="float64"),
                              L.DenseLocalReparameterization(1, dtype="float64")]),
                  GaussianLikelihood(0.5))
    params = model.init(rng, 3)
    n, b = 24, 6
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 1))

    def zero_noise(shape):
        return {k: {kk: np.zeros(s) for kk, s in v.items()} for k, v in
                model.network.noise_shapes(shape).items()}

    batches = [model.loss(params, x[i:i + b], y[i:i + b], noise=zero_noise((b, 3)), num_examples=n)[0]
               for i in range(0, n, b)]
    out, kl = model.forward(params, x, mode="mean")
    full = (np.sum(model.likelihood.nll(params["likelihood"], out, y)) + kl) / n
    np.testing.assert_allclose(np.mean(batches), full, rtol=1e-13)
    # In expectation over the noise: Monte Carlo with 2000 draws per minibatch.
    draws = [np.mean([model.loss(params, x[i:i + b], y[i:i + b], rng, num_examples=n)[0]
                      for i in range(0, n, b)]) for _ in range(2000)]
    nll_mc = np.mean([np.sum(model.likelihood.nll(params["likelihood"], model.forward(params, x, rng)[0], y))
                      for _ in range(2000)])
    se = np.std(draws) / np.sqrt(len(draws))
    assert abs(np.mean(draws) - (nll_mc + kl) / n) < 6 * se + 1e-3
    assert neg_elbo(2.0, 10.0, 5) == 4.0


def test_fit_learns_decreases_loss_and_reports_progress():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (200, 2))
    y = (x[:, :1] * 2 - x[:, 1:]) + 0.1 * rng.standard_normal((200, 1))
    model = Model(Sequential([L.DenseLocalReparameterization(16, "relu"),
                              L.DenseLocalReparameterization(1)]), GaussianLikelihood(0.1))
    params = model.init(rng, 2)
    before = {k: v.copy() for k, v in params["network"]["layer_0"].items()}
    buf = io.StringIO()
    out, hist = fit(model, params, x, y, rng=rng, epochs=40, batch_size=50, optimizer=adam(0.01),
                    file=buf)
    assert all(np.array_equal(before[k], params["network"]["layer_0"][k]) for k in before)
    assert len(hist["loss"]) == 40 and hist["loss"][-1] < hist["loss"][0] / 5
    assert buf.getvalue().count("\n") == 40 and "epoch   40/40" in buf.getvalue()
    mean = predict_mean(model, out, x.astype(np.float32))
    assert rmse(y, mean) < 0.3


def test_fit_is_deterministic_and_quiet_when_asked(capsys):
    rng0 = np.random.default_rng(4)
    x, y = rng0.standard_normal((30, 2)), rng0.integers(0, 3, 30)
    model = Model(L.DenseFlipout(3, dtype="float64"), CategoricalLikelihood())
    params = model.init(rng0, 2)
    a, ha = fit(model, params, x, y, rng=np.random.default_rng(9), epochs=3, batch_size=7, verbose=False)
    b, hb = fit(model, params, x, y, rng=np.random.default_rng(9), epochs=3, batch_size=7, verbose=False)
    assert capsys.readouterr().out == ""
    assert ha["loss"] == hb["loss"]
    assert all(np.array_equal(a["network"]["layer_0"][k], b["network"]["layer_0"][k])
               for k in a["network"]["layer_0"])


def test_fit_callback_can_stop_and_kl_warmup_is_recorded():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((20, 1))
    model = Model(L.DenseLocalReparameterization(1), GaussianLikelihood())
    seen = []
    _, hist = fit(model, model.init(rng, 2), x, y, rng=rng, epochs=10, verbose=False,
                  kl_weight=lambda e: min(1.0, e / 4), callback=lambda e, p, h: seen.append(e) or e == 2)
    assert seen == [0, 1, 2] and hist["kl_weight"] == [0.0, 0.25, 0.5]


def test_fit_with_a_learning_rate_schedule():
    """The schedule is called once per update with 0, 1, 2, ...; a schedule of zeros leaves the
    params exactly as they were; a decaying schedule ends with smaller moves than a fixed rate."""
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    model = Model(Sequential([L.DenseLocalReparameterization(5, "relu", dtype="float64"),
                              L.DenseLocalReparameterization(2, dtype="float64")]),
                  CategoricalLikelihood())
    params = model.init(rng, 3)
    calls = []
    out, _ = fit(model, params, x, y, rng=np.random.default_rng(0), epochs=3, batch_size=16,
                 optimizer=adam(lambda i: calls.append(i) or 0.0), verbose=False)
    assert calls == list(range(9))   # 3 epochs x ceil(40 / 16) updates
    assert all(np.array_equal(out["network"][n][k], params["network"][n][k])
               for n in params["network"] for k in params["network"][n])
    from lrtdense.optimizers import polynomial_decay
    moves = {}
    for name, opt in [("fixed", adam(1e-2)), ("decay", adam(polynomial_decay(1e-2, 9)))]:
        last = []
        fit(model, params, x, y, rng=np.random.default_rng(0), epochs=3, batch_size=16,
            optimizer=opt, verbose=False,
            callback=lambda e, p, h: last.append({k: v.copy() for k, v in p["network"]["layer_0"].items()}))
        moves[name] = np.max(np.abs(last[2]["kernel_posterior_loc"] - last[1]["kernel_posterior_loc"]))
    assert moves["decay"] < 0.5 * moves["fixed"]   # the last epoch runs at 1/3 of the rate or less


def test_fit_keyboard_interrupt_keeps_the_last_completed_step():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((20, 1))
    model = Model(L.DenseLocalReparameterization(1, dtype="float64"), GaussianLikelihood())
    params = model.init(rng, 2)
    calls = {"n": 0}
    original = model.loss

    def flaky_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    object.__setattr__(model, "loss", flaky_loss)     # (a Model is frozen)
    out, hist = fit(model, params, x, y, rng=np.random.default_rng(1), epochs=5, batch_size=5,
                    verbose=False)
    assert hist["interrupted"] and len(hist["loss"]) == 1
    # Replaying the 6 completed steps (4 in epoch 1, 2 in epoch 2) gives the same bits.
    object.__delattr__(model, "loss")
    replayed = replay_completed_steps(model, params, x, y, (4, 2))
    for k, v in replayed["network"]["layer_0"].items():
        assert np.array_equal(out["network"]["layer_0"][k], v), k


def test_fit_refuses_nan_naming_step_and_term():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((10, 2)), rng.standard_normal((10, 1))
    y[3] = np.nan
    model = Model(L.DenseLocalReparameterization(1, dtype="float64"), GaussianLikelihood())
    params = model.init(rng, 2)
    with pytest.raises(FloatingPointError, match=r"at epoch 1, step \d+: non-finite value.*terms: \['nll'\]"):
        fit(model, params, x, y, rng=rng, epochs=1, batch_size=10, verbose=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_finite_catches_nan_and_both_infinities_but_not_huge_finite_values(dtype):
    from lrtdense.training import _check_finite
    huge = np.finfo(dtype).max / 4   # finite, but its square (the fast check) overflows
    grads = {"network": {"layer_0": {"a": np.ones((3, 4), dtype), "b": np.full(5, huge, dtype)}},
             "likelihood": {"s": np.array(-huge, dtype)}}
    _check_finite(1.0, 1.0, 0.5, grads)                                # no error
    for bad in (np.nan, np.inf, -np.inf):
        grads["network"]["layer_0"]["a"][1, 2] = bad
        with pytest.raises(FloatingPointError, match=r"non-finite gradients: \['network/layer_0/a'\]"):
            _check_finite(1.0, 1.0, 0.5, grads)
        grads["network"]["layer_0"]["a"][1, 2] = 1.0
    with pytest.raises(FloatingPointError, match=r"terms: \['kl'\]; non-finite gradients: none"):
        _check_finite(np.inf, 1.0, np.inf, grads)


def test_predict_regression_and_metrics():
    rng = np.random.default_rng(8)
    model = Model(L.DenseLocalReparameterization(1, dtype="float64"), GaussianLikelihood(0.5))
    params = model.init(rng, 2)
    params["network"]["layer_0"]["kernel_posterior_untransformed_scale"][:] = 0.0
    x = rng.standard_normal((50, 2))
    pred = predict(model, params, x, rng=rng, num_samples=4000)
    scale = np.log1p(np.exp(0.0))
    exact_var = (x ** 2) @ np.full((2, 1), scale ** 2)
    np.testing.assert_allclose(pred["epistemic_std"] ** 2, exact_var, rtol=0.1)
    np.testing.assert_allclose(pred["std"] ** 2, exact_var + 0.25, rtol=0.1)
    y = rng.standard_normal((1000, 1))
    assert interval_coverage(y, np.zeros_like(y), np.ones_like(y), 0.95) == pytest.approx(0.95, abs=0.03)
    assert rmse(np.array([1.0, 2.0]), np.array([[1.0], [4.0]])) == pytest.approx(np.sqrt(2))
    assert predictive_nll(np.zeros(3), np.zeros((3, 1)), 1.0) == pytest.approx(0.5 * np.log(2 * np.pi))


def test_classification_prediction_accuracy_and_ece():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    assert accuracy(labels, probs) == 0.75
    # Bins by confidence: {0.9}: acc 1, {0.8}: acc 0, {0.7}: acc 1, {0.6}: acc 1.
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert expected_calibration_error(labels, probs, num_bins=10) == pytest.approx(expected)
    model = Model(L.DenseLocalReparameterization(3, dtype="float64"), CategoricalLikelihood())
    params = model.init(np.random.default_rng(0), 2)
    out = predict(model, params, np.ones((4, 2)), rng=np.random.default_rng(0), num_samples=10)
    np.testing.assert_allclose(out["probs"].sum(-1), 1.0)


# ------------------------------------------------------------------- nothing lost, signals
def _small_problem(seed=6):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((20, 1))
    model = Model(L.DenseLocalReparameterization(1, dtype="float64"), GaussianLikelihood())
    return model, model.init(rng, 2), x, y


@pytest.mark.parametrize("failure", ["step", "callback", "memory"])
def test_an_exception_after_completed_steps_carries_their_work(failure):
    """Whatever fails after 6 completed steps (4 in epoch 1, 2 in epoch 2), the exception
    carries the params, optimizer state and history of step 6, bit-equal to a replay."""
    model, params, x, y = _small_problem()
    calls = {"n": 0}
    original = model.loss

    def flaky_loss(*args, **kwargs):
        calls["n"] += 1
        if failure != "callback" and calls["n"] == 7:
            raise RuntimeError("disk full") if failure == "step" else MemoryError()
        return original(*args, **kwargs)

    def callback(epoch, p, history):
        if failure == "callback" and epoch == 1:
            raise ValueError("a bug in the callback")

    object.__setattr__(model, "loss", flaky_loss)     # (a Model is frozen)
    expected = {"step": RuntimeError, "callback": ValueError, "memory": MemoryError}[failure]
    with pytest.raises(expected) as info:
        fit(model, params, x, y, rng=np.random.default_rng(1), epochs=5, batch_size=5,
            verbose=False, callback=callback)
    object.__delattr__(model, "loss")
    state = info.value.fit_state
    done = (4, 2) if failure != "callback" else (4, 4)
    assert (state.epoch, state.step) == ((2, 2) if failure != "callback" else (2, 4))
    replayed = replay_completed_steps(model, params, x, y, done)
    for k, v in replayed["network"]["layer_0"].items():
        assert np.array_equal(state.params["network"]["layer_0"][k], v), k
    assert state.optimizer_state.step == sum(done)
    assert len(state.history["loss"]) == (1 if failure != "callback" else 2)
    assert "err.fit_state" in "".join(getattr(info.value, "__notes__", ["err.fit_state"]))


def _with_signal_during_update(optimizer):
    """The optimizer, its update sending this process a real SIGINT in its middle."""
    import os
    import signal
    from lrtdense.optimizers import Optimizer

    def update(state, grads, inplace=False):
        os.kill(os.getpid(), signal.SIGINT)
        return optimizer.update(state, grads, inplace=inplace)

    return Optimizer(optimizer.init, update, optimizer.get_params, optimizer.hyperparams)


def test_ctrl_c_during_an_update_waits_for_it_then_reaches_the_users_handler():
    import signal
    model, params, x, y = _small_problem()
    seen = []

    def handler(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        out, hist = fit(model, params, x, y, rng=np.random.default_rng(1), epochs=2, batch_size=10,
                        optimizer=_with_signal_during_update(adam(1e-3)), verbose=False)
        assert signal.getsignal(signal.SIGINT) is handler           # restored after fit
    finally:
        signal.signal(signal.SIGINT, previous)
    # the user's handler ran once per update, after it; it did not stop the training
    assert seen == [signal.SIGINT] * 4 and not hist["interrupted"] and len(hist["loss"]) == 2
    replayed = replay_completed_steps(model, params, x, y, (2, 2), batch_size=10)
    for k, v in replayed["network"]["layer_0"].items():
        assert np.array_equal(out["network"]["layer_0"][k], v), k


def test_ctrl_c_with_the_default_handler_stops_after_the_update():
    import signal
    # Python's own handler, installed here: a test run started in the background by a
    # non-interactive shell inherits SIGINT ignored instead
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        model, params, x, y = _small_problem()
        out, hist = fit(model, params, x, y, rng=np.random.default_rng(1), epochs=3,
                        batch_size=10, optimizer=_with_signal_during_update(adam(1e-3)),
                        verbose=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert hist["interrupted"] and hist["loss"] == []
    replayed = replay_completed_steps(model, params, x, y, (1,), batch_size=10)
    for k, v in replayed["network"]["layer_0"].items():       # the interrupted update completed
        assert np.array_equal(out["network"]["layer_0"][k], v), k


def test_a_checkpointed_fit_resumes_bit_for_bit_after_a_crash(tmp_path):
    """Epochs 1-2 checkpointed, a crash in epoch 3, the same fit call again: it resumes after
    epoch 2 and ends with the bits of a run never interrupted (params, Adam state, history)."""
    rng0 = np.random.default_rng(11)
    x, y = rng0.standard_normal((23, 3)), rng0.integers(0, 2, 23)
    model = Model(Sequential([L.DenseFlipout(4, "relu", dtype="float64"),
                              L.DenseLocalReparameterization(2, dtype="float64")]),
                  CategoricalLikelihood())
    params = model.init(rng0, 3)
    kwargs = dict(epochs=4, batch_size=5, optimizer=adam(0.01), verbose=False)
    reference, ref_hist = fit(model, params, x, y, rng=np.random.default_rng(5), **kwargs)
    path = str(tmp_path / "ckpt")

    def crash(epoch, p, h):
        if epoch == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        fit(model, params, x, y, rng=np.random.default_rng(5), checkpoint=path, callback=crash,
            **kwargs)
    rng = np.random.default_rng(999)                 # any generator: its state is restored
    out, hist = fit(model, model.init(rng, 3), x, y, rng=rng, checkpoint=path, **kwargs)
    for path_, value in flatten(reference).items():
        assert np.array_equal(flatten(out)[path_], value), path_
    for key in ("loss", "nll", "kl", "kl_weight"):
        assert hist[key] == ref_hist[key], key
    # the last checkpoint is the finished run; fitting again trains no further epoch
    again, hist2 = fit(model, params, x, y, rng=np.random.default_rng(5), checkpoint=path, **kwargs)
    assert hist2["loss"] == ref_hist["loss"]
    assert all(np.array_equal(v, flatten(reference)[k]) for k, v in flatten(again).items())


def test_a_checkpoint_of_another_training_is_refused_and_kept(tmp_path):
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((10, 2)), rng.standard_normal((10, 1))
    model = Model(L.DenseLocalReparameterization(1, dtype="float64"), GaussianLikelihood())
    params = model.init(rng, 2)
    path = str(tmp_path / "ckpt")
    fit(model, params, x, y, rng=rng, epochs=1, verbose=False, checkpoint=path)
    before = {f: open(os.path.join(path, f), "rb").read() for f in os.listdir(path)}
    with pytest.raises(ValueError, match=r"another training \(it differs in \['batch_size', 'x'\]"):
        fit(model, params, x + 1, y, rng=rng, epochs=2, batch_size=4, verbose=False, checkpoint=path)
    assert {f: open(os.path.join(path, f), "rb").read() for f in os.listdir(path)} == before
    from lrtdense.optimizers import Optimizer
    opt = adam()
    plain = Optimizer(opt.init, opt.update, opt.get_params)     # no hyperparams: not Adam
    with pytest.raises(ValueError, match="built-in Adam"):
        fit(model, params, x, y, rng=rng, epochs=1, verbose=False, optimizer=plain,
            checkpoint=str(tmp_path / "other"))


def test_make_step_returns_the_gradients_it_applied_as_a_copy():
    """return_grads=True: the gradients Adam applied, a copy the next step does not overwrite
    (checked against value_and_grad of the same loss with the same noise)."""
    from lrtdense.autodiff import value_and_grad
    model, params, x, y = _small_problem()
    opt = adam(1e-3)
    step = make_step(model, opt, num_examples=len(x), return_grads=True)
    state = opt.init(params)
    state, loss, _, _, grads = step(state, x, y, np.random.default_rng(3))
    _, _, expected = value_and_grad(
        lambda p, r: (model.loss(p, x, y, r, num_examples=len(x))[0], None), params,
        np.random.default_rng(3))
    kept = flatten(grads)
    for key, value in flatten(expected).items():
        np.testing.assert_array_equal(kept[key], value)
    step(state, x, y, np.random.default_rng(4))                  # the next step
    for key, value in flatten(expected).items():
        np.testing.assert_array_equal(kept[key], value)


def test_the_callback_gets_params_that_later_steps_do_not_overwrite():
    model, params, x, y = _small_problem()
    seen = []
    out, _ = fit(model, params, x, y, rng=np.random.default_rng(1), epochs=3, batch_size=10,
                 verbose=False, callback=lambda e, p, h: seen.append(p))
    first, last = flatten(seen[0]), flatten(seen[-1])
    assert any(not np.array_equal(first[k], last[k]) for k in first)
    assert all(np.array_equal(v, flatten(out)[k]) for k, v in last.items())
