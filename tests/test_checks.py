"""lrtdense.checks: one rule for scalar settings (Python and NumPy ints and floats, never bool),
and every setting of the package following it. The copies it replaced disagreed: NumPy floats were
refused by the priors, initializers, divergences, the sparse layer's threshold and DenseVariational's
kl_weight but accepted by the likelihood and Adam; a Python int past float64's range raised
OverflowError instead of the setting's ValueError."""
import json

import numpy as np
import pytest

import lrtdense as L
from lrtdense.checks import check_bool, check_float, check_int, is_finite_number
from lrtdense.losses import neg_elbo


def test_check_int_accepts_python_and_numpy_integers_and_returns_a_python_int():
    for value in (3, np.int64(3), np.uint8(3), np.int32(3)):
        got = check_int(value, "epochs", low=0)
        assert got == 3 and type(got) is int


@pytest.mark.parametrize("value", [2.5, 3.0, np.float64(3.0), True, np.True_, "3", None,
                                   np.array(3), -1])
def test_check_int_refuses_anything_else_in_one_line(value):
    with pytest.raises(ValueError) as err:
        check_int(value, "epochs", low=0)
    assert str(err.value) == f"epochs must be an integer >= 0, got {value!r}"


def test_check_int_messages_name_the_range():
    with pytest.raises(ValueError, match=r"^num_bins must be an integer in \[1, 2\*\*53\], got 0$"):
        check_int(0, "num_bins", low=1, high=2 ** 53)
    with pytest.raises(ValueError, match=r"^units must be an integer >= 1 \(and <= 7\), got 8$"):
        check_int(8, "units", low=1, high=7, expected="an integer >= 1 (and <= 7)")


def test_check_float_accepts_ints_and_floats_of_python_and_numpy():
    for value in (2, 0.5, np.float32(0.5), np.float16(0.5), np.int64(2), np.float64(0.5)):
        got = check_float(value, "scale", low=0, open_low=True)
        assert got == float(value) and type(got) is float


@pytest.mark.parametrize("value", [True, np.False_, "1", None, np.nan, np.inf, -np.inf,
                                   np.float32("nan"), 10 ** 400, 1j, np.array(0.5)])
def test_check_float_refuses_bools_strings_non_finite_and_overflowing_ints(value):
    with pytest.raises(ValueError, match=r"^scale must be a finite number > 0, got "):
        check_float(value, "scale", low=0, open_low=True)
    assert not is_finite_number(value)


def test_check_float_bounds_open_and_closed():
    assert check_float(0, "b1", low=0, high=1, open_high=True) == 0.0
    with pytest.raises(ValueError, match=r"^b1 must be a number in \[0, 1\), got 1$"):
        check_float(1, "b1", low=0, high=1, open_high=True)
    with pytest.raises(ValueError, match=r"^level must be a number in \(0, 1\), got 0$"):
        check_float(0, "level", low=0, high=1, open_low=True, open_high=True)
    with pytest.raises(ValueError, match=r"^kl_weight must be a finite number >= 0, got -1$"):
        check_float(-1, "kl_weight", low=0)


def test_check_bool():
    assert check_bool(np.True_, "use_bias") is True and check_bool(False, "use_bias") is False
    for value in (1, 0, "yes", None, np.int64(1)):
        with pytest.raises(TypeError, match=r"^use_bias must be True or False, got "):
            check_bool(value, "use_bias")


# ------------------------------------------------------- the settings that used to disagree
NUMPY_SETTINGS = {
    "ScaleMixturePrior.pi": lambda v: L.ScaleMixturePrior(pi=v),
    "NormalPrior.scale": lambda v: L.NormalPrior(0.0, v),
    "LaplacePrior.scale": lambda v: L.LaplacePrior(0.0, v),
    "StudentTPrior.df": lambda v: L.StudentTPrior(df=v),
    "RandomNormal.stddev": lambda v: L.RandomNormal(0.0, v),
    "Constant.value": lambda v: L.Constant(v),
    "ClosedFormKL.weight": lambda v: L.ClosedFormKL(v),
    "MonteCarloKL.weight": lambda v: L.MonteCarloKL(v),
    "GaussianLikelihood.scale": lambda v: L.GaussianLikelihood(v),
    "threshold": lambda v: L.DenseSparseVariationalDropout(2, threshold=v),
    "kl_weight": lambda v: L.DenseVariational(2, kl_weight=v),
}


@pytest.mark.parametrize("name", sorted(NUMPY_SETTINGS))
def test_a_numpy_float_setting_is_accepted_and_stored_as_a_python_float(name):
    make = NUMPY_SETTINGS[name]
    from_numpy, from_python = make(np.float32(0.5)), make(0.5)
    assert from_numpy == from_python
    config = getattr(from_numpy, "to_config", getattr(from_numpy, "get_config", None))()
    assert json.dumps(config) == json.dumps(getattr(
        from_python, "to_config", getattr(from_python, "get_config", None))())


@pytest.mark.parametrize("name", sorted(NUMPY_SETTINGS))
def test_a_bool_or_an_overflowing_int_setting_is_a_value_error(name):
    for value in (True, 10 ** 400):
        with pytest.raises(ValueError, match="must be "):
            NUMPY_SETTINGS[name](value)


def test_the_scale_mixture_of_the_issue():
    """issue 21: ScaleMixturePrior(pi=np.float32(0.5)) raised, GaussianLikelihood(np.float32(0.5))
    did not."""
    prior = L.ScaleMixturePrior(pi=np.float32(0.5))
    assert type(prior.pi) is float and prior == L.ScaleMixturePrior(pi=0.5)


def test_numpy_bool_flags_are_accepted_as_python_bools():
    layer = L.DenseVariational(2, use_bias=np.False_, kl_use_exact=np.True_)
    assert layer.use_bias is False and layer.kl_use_exact is True
    assert L.DenseVariationalDropout(2, use_bias=np.True_).use_bias is True
    assert L.GaussianLikelihood(1.0, learn_scale=np.True_).learn_scale is True


def test_overflowing_ints_are_value_errors_in_every_float_setting():
    with pytest.raises(ValueError, match="step_size must be a finite number > 0 or a schedule"):
        L.adam(10 ** 400)
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0"):
        neg_elbo(1.0, 1.0, 10, kl_weight=10 ** 400)
    with pytest.raises(ValueError, match=r"level must be a number in \(0, 1\)"):
        L.metrics.interval_coverage(np.zeros(3), np.zeros(3), np.ones(3), 10 ** 400)
