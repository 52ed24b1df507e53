"""The built-in Adam: invariants, structure errors, and conformance with recorded torch.optim.Adam
and tf-keras Adam trajectories (tools/record_adam_fixtures_*.py)."""
import json
import os

import numpy as np
import pytest

from lrtdense.optimizers import adam, tree_map

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
