"""Property tests: any layer config is either a layer whose config round-trips through JSON, or
a clear TypeError / ValueError naming what is wrong (never another exception, never a layer that
fails later)."""
import json

import numpy as np
from hypothesis import given, settings, strategies as st, HealthCheck

import lrtdense as L
from lrtdense import registry

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)

GOOD = {
    "units": st.integers(1, 6),
    "activation": st.sampled_from([None, "linear", "relu", "tanh", "sigmoid", "softplus", "elu"]),
    "dtype": st.sampled_from(["float32", "float64", None]),
    "kernel_prior": st.sampled_from([None, "normal", {"type": "normal", "loc": 0.5, "scale": 2.0},
                                     {"type": "trainable_normal"}]),
    "bias_posterior": st.sampled_from([None, "normal", "deterministic"]),
    "use_bias": st.booleans(),
    "threshold": st.floats(-5, 5),
    "prior": st.sampled_from(["trainable", "fixed"]),
    "kl_use_exact": st.booleans(),
}


def _config(draw_value):
    return st.dictionaries(st.sampled_from(sorted(GOOD) + ["kernel_divergence", "bias_prior",
                                                           "log_alpha_initializer", "nonsense"]),
                           draw_value, max_size=5)


def _check(cls, config):
    try:
        layer = cls.from_config(config)
    except (TypeError, ValueError) as err:
        assert str(err), "an error without a message"
        return None
    again = registry.deserialize(json.loads(json.dumps(registry.serialize(layer))))
    assert again == layer and type(again) is cls
    if layer.count_params(3) > 10 ** 5:     # a valid but big layer: its config is what is tested
        return layer
    params = layer.init(np.random.default_rng(0), 3)
    out, kl = layer.forward(params, np.ones((2, 3)), mode="mean")
    assert out.shape == (2, layer.units) and np.isfinite(float(kl))
    return layer


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(list(registry.LAYERS.values())),
       config=_config(JSONISH | st.one_of(*GOOD.values())))
def test_any_config_is_a_working_layer_or_a_clear_error(cls, config):
    _check(cls, config)


@settings(max_examples=150, deadline=None)
@given(cls=st.sampled_from(list(registry.LAYERS.values())),
       units=st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=3),
                       st.just(10 ** 400), st.just(2 ** 31)))
def test_units_must_be_a_reasonable_integer(cls, units):
    layer = _check(cls, {"units": units})
    if layer is not None:
        assert isinstance(units, int) and not isinstance(units, bool) and 1 <= units < 2 ** 31


def test_booleans_are_booleans_and_priors_are_priors():
    for bad in ("false", 0, 1, None):
        for cls, key in ((L.DenseVariationalDropout, "use_bias"), (L.DenseVariational, "use_bias"),
                         (L.DenseVariational, "kl_use_exact")):
            try:
                cls(2, **{key: bad})
            except TypeError as err:
                assert key in str(err)
            else:
                raise AssertionError(f"{cls.__name__}({key}={bad!r}) was accepted")
        try:
            L.GaussianLikelihood(learn_scale=bad)
        except TypeError as err:
            assert "learn_scale" in str(err)
        else:
            raise AssertionError(f"learn_scale={bad!r} was accepted")
    for bad in (L.RandomNormal(), L.Constant(1.0), 3.0, "gaussian", {"type": "normal", "scale": -1}):
        try:
            L.DenseFlipout(2, kernel_prior=bad)
        except (TypeError, ValueError) as err:
            assert "prior" in str(err).lower()
        else:
            raise AssertionError(f"kernel_prior={bad!r} was accepted")
    layer = L.DenseReparameterization(2, dtype=None)           # None: the documented float32
    assert layer.dtype == "float32"
    assert layer.init(np.random.default_rng(0), 2)["kernel_posterior_loc"].dtype == np.float32
