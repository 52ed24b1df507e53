"""The built-in Adam: invariants, structure errors, and conformance with recorded torch.optim.Adam
and tf-keras Adam trajectories (tools/record_adam_fixtures_*.py)."""
import json
import os

import numpy as np
import pytest

import lrtdense as L
from lrtdense.optimizers import adam
from lrtdense.tree import flatten, map as tree_map, map_with_path

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "adam")


def test_get_params_of_init_is_identity_with_fresh_buffers():
    params = {"a": np.arange(3.0), "nested": {"b": np.ones((2, 2), np.float32)}}
    opt = adam()
    state = opt.init(params)
    got = opt.get_params(state)
    assert tree_map(lambda x, y: bool(np.array_equal(x, y) and x.dtype == y.dtype), got, params) == \
        {"a": True, "nested": {"b": True}}
    state2 = opt.update(state, tree_map(np.ones_like, params))
    assert np.array_equal(params["a"], np.arange(3.0)), "init must not alias the caller's arrays"
    assert np.array_equal(opt.get_params(state)["a"], np.arange(3.0)), "update must be pure by default"
    assert opt.get_params(state2)["nested"]["b"].dtype == np.float32


def test_structure_mismatch_is_a_type_error_naming_both():
    opt = adam()
    state = opt.init({"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(TypeError, match=r"\{'a': '\*', 'b': '\*'\} vs \{'a': '\*'\}"):
        opt.update(state, {"a": np.zeros(2)})
    with pytest.raises(TypeError, match="shape"):
        opt.update(state, {"a": np.zeros(2), "b": np.zeros(4)})


def test_first_step_moves_each_weight_by_lr_in_the_direction_of_minus_sign_of_grad():
    """Algorithm 1 at t = 1: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)."""
    opt = adam(0.1)
    g = np.array([3.0, -0.5, 1e-3])
    p = opt.get_params(opt.update(opt.init({"w": np.zeros(3)}), {"w": g}))["w"]
    np.testing.assert_allclose(p, -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-14)


def test_inplace_update_equals_pure_update():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 2)), "big": rng.standard_normal((300, 311)),
              "f32": rng.standard_normal(140000).astype(np.float32)}  # several chunks each
    for form in ["kingma", "keras"]:
        opt = adam(0.01, form=form)
        pure, fast = opt.init(params), opt.init(params)
        for _ in range(5):
            g = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
            pure, fast = opt.update(pure, g), opt.update(fast, g, inplace=True)
        for k in params:  # chunked in-place updates are bit-identical to whole-array ones
            assert np.array_equal(pure.params[k], fast.params[k]) and fast.params[k].dtype == params[k].dtype


def test_adam_minimises_a_quadratic():
    opt = adam(0.05)
    state = opt.init({"w": np.array([5.0, -3.0])})
    for _ in range(2000):
        state = opt.update(state, {"w": 2 * opt.get_params(state)["w"]})
    assert np.all(np.abs(opt.get_params(state)["w"]) < 1e-3)


@pytest.mark.parametrize("library,form", [("torch", "kingma"), ("keras", "keras")])
def test_replays_recorded_trajectory(library, form):
    with open(os.path.join(FIXTURES, f"{library}_adam_f64.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(FIXTURES, f"{library}_adam_f64.npz"), allow_pickle=False) as d:
        data = {k: d[k] for k in d.files}
    h = meta["hyperparameters"]
    lr = h.get("lr", h.get("learning_rate"))
    b1, b2 = h.get("betas", [h.get("beta_1"), h.get("beta_2")])
    eps = h.get("eps", h.get("epsilon"))
    opt = adam(lr, b1, b2, eps, form=form)
    state = opt.init({"w": data["init/w"], "b": data["init/b"]})
    worst = 0.0
    for t in range(meta["T"]):
        state = opt.update(state, {"w": data["grads/w"][t], "b": data["grads/b"][t]})
        for k in ("w", "b"):
            ref = data[f"params/{k}"][t]
            err = np.max(np.abs(state.params[k] - ref) / np.maximum(np.abs(ref), 1e-300))
            worst = max(worst, err)
    assert worst <= 1e-12, f"max relative error {worst:.3g} against {library}"


def test_map_with_path_sees_flatten_paths_and_keeps_empty_dicts():
    params = {"network": {"layer_0": {"a": np.zeros(2)}, "layer_1": {}}, "likelihood": {"s": 1.0}}
    seen = map_with_path(lambda path, leaf: path, params)
    assert seen == {"network": {"layer_0": {"a": "network/layer_0/a"}, "layer_1": {}},
                    "likelihood": {"s": "likelihood/s"}}
    assert list(flatten(seen).values()) == list(flatten(seen))
    assert map_with_path(lambda path, leaf: path, 7) == ""


def test_structure_mismatch_is_a_type_error_printing_both_structures():
    params = {"network": {"layer_0": {"a": np.zeros(2), "b": np.zeros(3)}}, "likelihood": {}}
    nested_missing = {"network": {"layer_0": {"a": np.zeros(2)}}, "likelihood": {}}
    with pytest.raises(TypeError, match=r"tree structures differ: .*'b': '\*'.* vs .*'layer_0': \{'a': '\*'\}"):
        tree_map(lambda x, y: x, params, nested_missing)
    opt = adam()
    state = opt.init(params)
    with pytest.raises(TypeError, match=r"grads do not match params: tree structures differ"):
        opt.update(state, nested_missing)
    wrong_shape = {"network": {"layer_0": {"a": np.zeros(2), "b": np.zeros(4)}}, "likelihood": {}}
    with pytest.raises(TypeError, match=r"gradient of shape \(4,\) for a parameter of shape \(3,\)"):
        opt.update(state, wrong_shape, inplace=True)
    assert np.array_equal(state.params["network"]["layer_0"]["b"], np.zeros(3))   # untouched


# ---- learning-rate schedules -----------------------------------------------------------------

@pytest.mark.parametrize("form", ["kingma", "keras"])
@pytest.mark.parametrize("inplace", [False, True])
def test_schedule_equals_a_fixed_rate_per_update_bit_for_bit(form, inplace):
    """Adam's state (t, m, v) does not depend on the rate, so update i of a schedule must equal
    an update by adam(lr_i) of the same state; calls are 0, 1, 2, ... (updates already made)."""
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((40, 30)), "b": rng.standard_normal(7).astype(np.float32)}
    rates, calls = [3e-3, 1e-3, 2.5e-4, 0.0, 7e-3], []

    def schedule(i):
        calls.append(i)
        return rates[i]

    sched = adam(schedule, form=form)
    s_state, f_state = sched.init(params), sched.init(params)
    for lr in rates:
        g = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
        before = {k: v.copy() for k, v in s_state.params.items()}
        s_state = sched.update(s_state, g, inplace=inplace)
        if lr == 0:   # adam() refuses a fixed rate 0: rate 0 moves nothing, m and v still advance
            f_state = adam(1.0, form=form).update(f_state, g)._replace(params=before)
        else:
            f_state = adam(lr, form=form).update(f_state, g)
        for k in params:
            assert np.array_equal(s_state.params[k], f_state.params[k]), (form, lr, k)
            assert np.array_equal(s_state.m[k], f_state.m[k]) and np.array_equal(s_state.v[k], f_state.v[k])
    assert calls == [0, 1, 2, 3, 4]


def test_polynomial_decay_values():
    """Hand-computed: linear from 1e-2 to 0 over 4 updates, then flat; power 2; a floor."""
    from lrtdense.optimizers import polynomial_decay
    lin = polynomial_decay(1e-2, 4)
    np.testing.assert_allclose([lin(i) for i in range(7)], [1e-2, 7.5e-3, 5e-3, 2.5e-3, 0, 0, 0],
                               rtol=1e-15, atol=0)
    sq = polynomial_decay(1e-2, 4, final_step_size=1e-3, power=2)
    np.testing.assert_allclose([sq(i) for i in range(6)],
                               [1e-2, 9e-3 * 0.5625 + 1e-3, 9e-3 * 0.25 + 1e-3, 9e-3 * 0.0625 + 1e-3,
                                1e-3, 1e-3], rtol=1e-15)


def test_schedule_and_decay_bad_input_is_refused_and_state_kept():
    from lrtdense.optimizers import polynomial_decay
    for bad in [0.0, -1e-3, float("nan"), float("inf"), "1e-3", True, None]:
        with pytest.raises(ValueError, match="step_size must be a finite number > 0 or a schedule"):
            adam(bad)
    params = {"w": np.arange(4.0)}
    for bad in [float("nan"), -1e-3, float("inf"), "0.1", None]:
        opt = adam(lambda i, bad=bad: bad)
        for inplace in (False, True):
            state = opt.init(params)
            with pytest.raises(ValueError, match=r"the step_size schedule returned .* for update 0; "
                                                 r"expected a finite number >= 0"):
                opt.update(state, {"w": np.ones(4)}, inplace=inplace)
            assert state.step == 0 and np.array_equal(state.params["w"], np.arange(4.0))
            assert not state.m["w"].any() and not state.v["w"].any()
    for kwargs, match in [(dict(step_size=0.0, decay_steps=3), "step_size must be > 0"),
                          (dict(step_size=1e-3, decay_steps=0), "decay_steps must be an integer >= 1"),
                          (dict(step_size=1e-3, decay_steps=2.5), "decay_steps must be an integer >= 1"),
                          (dict(step_size=1e-3, decay_steps=3, final_step_size=2e-3),
                           r"final_step_size must lie in \[0, step_size=0.001\]"),
                          (dict(step_size=1e-3, decay_steps=3, power=0), "power must be > 0"),
                          (dict(step_size=float("nan"), decay_steps=3), "step_size must be a finite number")]:
        with pytest.raises(ValueError, match=match):
            polynomial_decay(**kwargs)


# ---- settings validated where adam(...) is called (issue 14) ----------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=float("nan")), r"eps must be a finite number > 0 \(or None for the form's default\), got nan"),
    (dict(eps=-1), "eps must be a finite number > 0 .* got -1"),
    (dict(eps=0.0), "eps must be a finite number > 0"),
    (dict(eps=float("inf")), "got inf"),
    (dict(eps="1e-8"), "got '1e-8'"),
    (dict(eps=True), "got True"),
    (dict(b1=1.0), r"b1 must be a number in \[0, 1\), got 1.0"),
    (dict(b1=-0.1), r"b1 must be a number in \[0, 1\), got -0.1"),
    (dict(b1=False), r"b1 must be a number in \[0, 1\), got False"),
    (dict(b1=float("nan")), r"b1 must be a number in \[0, 1\), got nan"),
    (dict(b1="0.9"), r"b1 must be a number in \[0, 1\), got '0.9'"),
    (dict(b1=None), "b1 must be a number"),
    (dict(b2=True), r"b2 must be a number in \[0, 1\), got True"),
    (dict(b2=1), r"b2 must be a number in \[0, 1\), got 1"),
    (dict(b2=np.float64(np.inf)), "b2 must be a number"),
    (dict(b1=0.9999999999999999, form="keras"),
     r"b1=0.9999999999999999 rounds to 1 in float32, which the keras form uses; expected b1 <= 0.99999994"),
    (dict(b2=1 - 2 ** -25, form="keras"), "b2=.* rounds to 1 in float32"),
    (dict(form="Kingma"), "form must be 'kingma' or 'keras', got 'Kingma'"),
    (dict(form=["kingma"]), r"form must be 'kingma' or 'keras', got \['kingma'\]"),
    (dict(form=None), "form must be"),
    (dict(step_size=np.float32("nan")), "step_size must be a finite number > 0 or a schedule"),
    (dict(step_size=False), "step_size must be a finite number > 0 or a schedule"),
])
def test_bad_settings_are_refused_where_adam_is_called(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adam(**kwargs)


def test_the_issue_eps_nan_no_longer_reaches_the_params():
    """adam(eps=nan) used to be accepted and fit then returned NaN params without an error."""
    with pytest.raises(ValueError, match="eps"):
        adam(eps=float("nan"))
    adam(b1=0.9999999999999999)                               # kingma works in float64
    adam(b1=float(np.nextafter(np.float32(1), 0)), form="keras")
    opt = adam(b1=0.0, b2=0.0, eps=np.float32(1e-8))          # the edges of the ranges are fine
    state = opt.update(opt.init({"w": np.zeros(3)}), {"w": np.zeros(3)})
    assert np.array_equal(state.params["w"], np.zeros(3))
    assert opt.hyperparams["eps"] == float(np.float32(1e-8)) and type(opt.hyperparams["eps"]) is float


@pytest.mark.parametrize("form", ["kingma", "keras"])
def test_numpy_scalar_settings_update_exactly_as_python_floats(form):
    """np.float32(0.9) is used as the Python float 0.9 it equals, so the update runs in the
    params' precision exactly as with floats (NumPy 2 would keep float32 arithmetic for it)."""
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal(50), "h": rng.standard_normal(7).astype(np.float32)}
    values = dict(step_size=np.float32(1e-2), b1=np.float32(0.9), b2=np.float64(0.999),
                  eps=np.float32(1e-7))
    a = adam(**values, form=form)
    b = adam(**{k: float(v) for k, v in values.items()}, form=form)
    sa, sb = a.init(params), b.init(params)
    for _ in range(3):
        g = tree_map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), params)
        sa, sb = a.update(sa, g), b.update(sb, g)
    for k in params:
        assert sa.params[k].dtype == params[k].dtype
        assert np.array_equal(sa.params[k], sb.params[k]) and np.array_equal(sa.v[k], sb.v[k])


def test_eps_that_is_zero_or_infinite_in_the_params_dtype_is_refused_at_init():
    """Keras form, b1 = b2 = 0, float32: m and v cancel to exactly 0 when a tiny gradient follows
    a large one, and an eps of 1e-300 is 0 in float32: 0 / 0. Refused when the dtype is known."""
    opt = adam(1.0, 0.0, 0.0, 1e-300, form="keras")
    with pytest.raises(ValueError, match=r"eps=1e-300 is 0.0 in float32, the dtype of "
                                         r"params\['b/c'\]; expected eps in \[1.4e-45, 3.4e\+38\]"):
        opt.init({"a": np.zeros(2), "b": {"c": np.zeros(2, np.float32)}})
    with pytest.raises(ValueError, match=r"eps=1e\+300 is inf in float32"):
        adam(eps=1e300).init({"c": np.zeros(2, np.float32)})
    state = opt.init({"a": np.zeros(2)})                     # float64 holds 1e-300
    for g in (400.0, 1e-9):
        state = opt.update(state, {"a": np.full(2, g)})
    assert np.all(np.isfinite(state.params["a"]))


def test_kl_warmup_rises_linearly_then_holds():
    """kl_warmup(0.2, 400): 1/80, 2/80, ..., 1 at epoch 79, then 1; scaled; a constant when the
    warm-up rounds to no epoch; bad settings refused in one line."""
    w = L.kl_warmup(0.2, 400)
    np.testing.assert_allclose([w(e) for e in range(82)], np.minimum(np.arange(1, 83) / 80, 1.0),
                               rtol=0, atol=0)
    assert L.kl_warmup(0.5, 10, scale=0.3)(0) == 0.3 * 1 / 5 and L.kl_warmup(0.5, 10, 0.3)(9) == 0.3
    assert L.kl_warmup(0.0, 10) == 1.0 and L.kl_warmup(0.04, 10, 0.3) == 0.3   # round(0.4) = 0
    for args, match in (((1.5, 10), "fraction"), ((0.2, 0), "epochs"), ((0.2, 10, -1), "scale"),
                        ((True, 10), "fraction")):
        with pytest.raises((TypeError, ValueError), match=match):
            L.kl_warmup(*args)
