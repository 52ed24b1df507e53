"""Layer API: defaults, config and weights round-trips, determinism, properties, bad input."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lrtdense as L
from lrtdense.kernels import softplus

CLASSES = [L.DenseLocalReparameterization, L.DenseReparameterization, L.DenseFlipout]


def test_tfp_defaults():
    layer = L.DenseLocalReparameterization(7)
    assert layer.dtype == "float32"
    assert layer.kernel_prior == L.NormalPrior(0.0, 1.0)
    assert layer.bias_posterior == L.DeterministicPosterior(L.RandomNormal(0.0, 0.1))
    assert layer.kernel_posterior == L.NormalPosterior(L.RandomNormal(0.0, 0.1), L.RandomNormal(-3.0, 0.1))
    assert layer.bias_prior is None
    params = layer.init(np.random.default_rng(0), 300)
    assert list(params) == ["kernel_posterior_loc", "kernel_posterior_untransformed_scale",
                            "bias_posterior_loc"]
    loc, u = params["kernel_posterior_loc"], params["kernel_posterior_untransformed_scale"]
    assert loc.shape == (300, 7) and loc.dtype == np.float32
    # Initializer moments: N(0, 0.1^2) and N(-3, 0.1^2), 2100 draws each (5 standard errors).
    assert abs(loc.mean()) < 5 * 0.1 / np.sqrt(2100) and abs(loc.std() - 0.1) < 0.01
    assert abs(u.mean() + 3) < 5 * 0.1 / np.sqrt(2100) and abs(u.std() - 0.1) < 0.01
    assert layer.count_params(300) == 300 * 7 * 2 + 7
    assert layer.compute_output_shape((None, 5, 300)) == (None, 5, 7)


def test_same_shaped_layers_get_different_initial_weights():
    rng = np.random.default_rng(0)
    a, b = L.DenseLocalReparameterization(3), L.DenseLocalReparameterization(3)
    pa, pb = a.init(rng, 4), b.init(rng, 4)
    assert not np.array_equal(pa["kernel_posterior_loc"], pb["kernel_posterior_loc"])


def test_scale_is_softplus_plus_eps_and_stable_for_large_arguments():
    u = np.array([-800.0, -40.0, -3.0, 0.0, 3.0, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp = softplus(u)
    np.testing.assert_allclose(sp, np.logaddexp(0, u), rtol=1e-15, atol=0)
    sp32 = softplus(u.astype(np.float32))
    assert sp32.dtype == np.float32
    np.testing.assert_allclose(sp32, np.logaddexp(0, u).astype(np.float32), rtol=2e-7)
    from lrtdense.kernels import posterior_scale
    assert posterior_scale(np.array([-800.0]))[0] == np.finfo(np.float64).eps


@pytest.mark.parametrize("cls", CLASSES)
def test_config_round_trip_is_plain_json(cls):
    layer = cls(5, "elu", kernel_prior=L.NormalPrior(0.5, 2.0), bias_posterior="normal",
                bias_prior=L.NormalPrior(0, 3), dtype="float64",
                kernel_posterior=L.NormalPosterior(L.Constant(0.25), L.RandomNormal(-5, 0.2)))
    text = json.dumps(L.serialize(layer))
    again = L.deserialize(json.loads(text))
    assert again == layer and type(again) is cls
    assert again.get_config() == layer.get_config()
    p1 = layer.init(np.random.default_rng(1), 3)
    p2 = again.init(np.random.default_rng(1), 3)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert np.all(p1["kernel_posterior_loc"] == 0.25)


def test_custom_activation_is_refused_by_get_config_not_serialized():
    import autograd.numpy as anp
    layer = L.DenseFlipout(2, activation=lambda z: anp.sin(z))
    with pytest.raises(ValueError, match="never hold code"):
        layer.get_config()
    out, _ = layer.forward(layer.init(np.random.default_rng(0), 3), np.ones((2, 3)), mode="mean")
    assert out.shape == (2, 2)


@pytest.mark.parametrize("cls", CLASSES)
def test_weights_round_trip_in_tfp_order(cls):
    layer = cls(3, bias_posterior="normal")
    params = layer.init(np.random.default_rng(0), 4)
    weights = layer.get_weights(params)
    assert [w.shape for w in weights] == [(4, 3), (4, 3), (3,), (3,)]
    again = layer.set_weights([w.astype(np.float64) for w in weights])
    assert all(again[k].dtype == np.float32 and np.array_equal(again[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="expected a list of 4 arrays"):
        layer.set_weights(weights[:3])
    with pytest.raises(ValueError, match=r"bias_posterior_loc.shape == \(3,\)"):
        layer.set_weights(weights[:2] + [np.zeros(4, np.float32), weights[3]])


@pytest.mark.parametrize("cls", CLASSES)
def test_same_seed_same_bits_and_rng_equals_explicit_noise(cls):
    layer = cls(4, "tanh", bias_posterior="normal")
    params = layer.init(np.random.default_rng(0), 6)
    x = np.random.default_rng(1).standard_normal((3, 2, 6)).astype(np.float32)
    a = layer.forward(params, x, np.random.default_rng(7))
    b = layer.forward(params, x, np.random.default_rng(7))
    c = layer.forward(params, x, noise=layer.sample_noise(np.random.default_rng(7), x.shape))
    for other in (b, c):
        assert np.array_equal(a[0], other[0]) and np.array_equal(a[1], other[1])
    assert not np.array_equal(a[0], layer.forward(params, x, np.random.default_rng(8))[0])


def test_module_forward_is_the_default_lrt_layer():
    layer = L.DenseLocalReparameterization(3, dtype="float64")
    params = layer.init(np.random.default_rng(0), 4)
    x = np.ones((2, 4))
    a = L.forward(params, x, np.random.default_rng(3))
    b = layer.forward(params, x, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_normal_bias_draw_is_shared_across_the_batch():
    layer = L.DenseReparameterization(2, bias_posterior="normal", dtype="float64")
    params = layer.init(np.random.default_rng(0), 3)
    params["kernel_posterior_untransformed_scale"][:] = -1000  # kernel noise ~ eps: negligible
    params["bias_posterior_untransformed_scale"][:] = 1.0
    out, _ = layer.forward(params, np.zeros((5, 3)), np.random.default_rng(1))
    assert np.all(out == out[0]) and np.all(out[0] != params["bias_posterior_loc"])


def test_flipout_mean_mode_has_no_perturbation():
    layer = L.DenseFlipout(3, dtype="float64")
    params = layer.init(np.random.default_rng(0), 4)
    x = np.random.default_rng(1).standard_normal((5, 4))
    out, _ = layer.forward(params, x, mode="mean")
    np.testing.assert_array_equal(out, x @ params["kernel_posterior_loc"] + params["bias_posterior_loc"])


def test_no_prior_gives_zero_kl_of_the_layer_dtype():
    layer = L.DenseLocalReparameterization(2, kernel_prior=None)
    params = layer.init(np.random.default_rng(0), 3)
    _, kl = layer.forward(params, np.ones((1, 3), np.float32), mode="mean")
    assert kl == 0 and np.asarray(kl).dtype == np.float32
    assert layer.divergences(params) == {}


def test_nan_in_inputs_propagates_to_outputs():
    layer = L.DenseLocalReparameterization(2, dtype="float64")
    params = layer.init(np.random.default_rng(0), 3)
    x = np.ones((3, 3))
    x[1, 0] = np.nan
    out, kl = layer.forward(params, x, np.random.default_rng(0))
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]])) and np.isfinite(kl)


# ---------------------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(cls=st.sampled_from(CLASSES), dtype=st.sampled_from(["float32", "float64"]),
       lead=st.lists(st.integers(1, 3), min_size=1, max_size=3), n_in=st.integers(1, 5),
       units=st.integers(1, 4), bias=st.sampled_from(["deterministic", "normal", None]),
       activation=st.sampled_from([None, "relu", "tanh", "sigmoid", "softplus", "elu"]),
       seed=st.integers(0, 2**32 - 1))
def test_properties(cls, dtype, lead, n_in, units, bias, activation, seed):
    rng = np.random.default_rng(seed)
    layer = cls(units, activation, bias_posterior=bias, dtype=dtype,
                bias_prior="normal" if bias == "normal" else None)
    params = layer.init(rng, n_in)
    x = rng.standard_normal(tuple(lead) + (n_in,))
    out, kl = layer.forward(params, x, rng)
    assert out.shape == tuple(lead) + (units,) and out.dtype == dtype
    assert np.asarray(kl).dtype == dtype and kl >= 0
    assert all(v >= 0 for v in layer.divergences(params).values())
    # The mean is the expectation of the pre-activation: antithetic noise averages to it exactly.
    linear = cls(units, None, bias_posterior=bias, dtype=dtype)
    noise = linear.sample_noise(rng, x.shape)
    flipped = {k: (-v if k in ("kernel", "bias") else v) for k, v in noise.items()}
    plus = linear.forward(params, x, noise=noise)[0]
    minus = linear.forward(params, x, noise=flipped)[0]
    mean = linear.forward(params, x, mode="mean")[0]
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose((plus + minus) / 2, mean, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def lrt():
    layer = L.DenseLocalReparameterization(3)
    return layer, layer.init(np.random.default_rng(0), 4)


def test_bad_last_axis(lrt):
    layer, params = lrt
    with pytest.raises(ValueError, match=r"expected x.shape\[-1\] == 4 to match kernel_posterior_loc.shape\[0\], got 5"):
        layer.forward(params, np.ones((2, 5)), mode="mean")


def test_bad_rank(lrt):
    layer, params = lrt
    with pytest.raises(ValueError, match="rank >= 2"):
        layer.forward(params, np.ones(4), mode="mean")


def test_non_floating_input(lrt):
    layer, params = lrt
    with pytest.raises(TypeError, match="floating"):
        layer.forward(params, np.ones((2, 4), dtype=int), mode="mean")


def test_float64_input_is_cast_to_layer_dtype(lrt):
    layer, params = lrt
    assert layer.forward(params, np.ones((2, 4)), mode="mean")[0].dtype == np.float32


def test_missing_extra_and_misshapen_params(lrt):
    layer, params = lrt
    with pytest.raises(ValueError, match=r"missing \['bias_posterior_loc'\]"):
        layer.forward({k: v for k, v in params.items() if k != "bias_posterior_loc"}, np.ones((1, 4)), mode="mean")
    with pytest.raises(ValueError, match=r"unexpected \['bias_posterior_untransformed_scale'\]"):
        layer.forward({**params, "bias_posterior_untransformed_scale": np.zeros(3, np.float32)}, np.ones((1, 4)), mode="mean")
    with pytest.raises(ValueError, match=r"expected kernel_posterior_untransformed_scale.shape == \(4, 3\), got \(3, 4\)"):
        layer.forward({**params, "kernel_posterior_untransformed_scale": np.zeros((3, 4), np.float32)}, np.ones((1, 4)), mode="mean")
    with pytest.raises(TypeError, match="params must be a dict"):
        layer.forward([1, 2], np.ones((1, 4)), mode="mean")


def test_wrong_param_dtype(lrt):
    layer, params = lrt
    with pytest.raises(TypeError, match="expected kernel_posterior_loc.dtype == float32"):
        layer.forward({**params, "kernel_posterior_loc": params["kernel_posterior_loc"].astype(float)}, np.ones((1, 4)), mode="mean")


@pytest.mark.parametrize("kwargs,match", [
    ({"units": 0}, "units must be an integer >= 1"),
    ({"units": 2.5}, "units must be an integer >= 1"),
    ({"units": 2, "activation": "swish"}, "unknown activation 'swish'"),
    ({"units": 2, "kernel_prior": "cauchy"}, "unknown prior type 'cauchy'"),
    ({"units": 2, "kernel_prior": "laplace"}, "no closed-form KL .* kernel_divergence='monte_carlo'"),
    ({"units": 2, "kernel_prior": L.RandomNormal()}, "a prior must be one of"),
    ({"units": 2, "kernel_divergence": "sampled"}, "unknown divergence type 'sampled'"),
    ({"units": 2, "dtype": None}, None),
    ({"units": 2, "bias_posterior": "cauchy"}, "unknown posterior type 'cauchy'"),
    ({"units": 2, "dtype": "float16"}, "dtype must be 'float32' or 'float64'"),
    ({"units": 2, "bias_posterior": None, "bias_prior": "normal"}, "no bias"),
    ({"units": 2, "kernel_prior": {"type": "normal", "scale": -1.0}}, "scale must be > 0"),
])
def test_bad_settings(kwargs, match):
    if match is None:       # dtype None is the documented default, float32
        assert L.DenseLocalReparameterization(**kwargs).dtype == "float32"
        return
    with pytest.raises((ValueError, TypeError), match=match):
        L.DenseLocalReparameterization(**kwargs)


def test_bad_noise(lrt):
    layer, params = lrt
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"missing \['kernel'\]"):
        layer.forward(params, x, noise={})
    with pytest.raises(ValueError, match=r"expected noise\['kernel'\].shape == \(2, 3\)"):
        layer.forward(params, x, noise={"kernel": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="either rng or noise"):
        layer.forward(params, x, np.random.default_rng(0), noise={"kernel": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="needs rng"):
        layer.forward(params, x)
    flip = L.DenseFlipout(3)
    fp = flip.init(np.random.default_rng(0), 4)
    noise = flip.sample_noise(np.random.default_rng(0), x.shape)
    with pytest.raises(ValueError, match=r"noise\['sign_input'\] must hold only \+1 and -1"):
        flip.forward(fp, x, noise={**noise, "sign_input": np.zeros((2, 4))})


def test_bad_mode_and_rng(lrt):
    layer, params = lrt
    with pytest.raises(ValueError, match="mode must be one of"):
        layer.forward(params, np.ones((1, 4)), mode="median")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        layer.forward(params, np.ones((1, 4)), 0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        layer.init(np.random.RandomState(0), 4)
