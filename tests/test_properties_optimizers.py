"""Property tests for Adam's settings: any value of step_size, b1, b2, eps and form is either
refused by ``adam(...)`` (or, for an eps that is 0 in the params' dtype, by ``init``) with a
ValueError naming the setting, or accepted exactly when it meets the documented range, and then
every update of finite gradients keeps the params finite."""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from lrtdense.optimizers import adam

SETTINGS = settings(max_examples=300, deadline=None, database=None)
ACCEPTED = []

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-0.5, 1.5), st.floats(0, 1e-6),
    st.integers(-2, 2), st.booleans(), st.none(), st.text(max_size=3),
    st.sampled_from([np.float32(0.9), np.float64(0.999), np.float32("nan"), np.int64(0),
                     np.float16(1e-4), [0.9], 1j]))


def is_number(x):
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and math.isfinite(x))


def float32(x):
    with np.errstate(over="ignore"):
        return np.float32(x)


def contract(step_size, b1, b2, eps, form):
    """The first setting that breaks the documented ranges, or None."""
    if not (isinstance(form, str) and form in ("kingma", "keras")):
        return "form"
    for name, b in (("b1", b1), ("b2", b2)):
        if not (is_number(b) and 0 <= b < 1) or form == "keras" and np.float32(b) == 1:
            return name
    if not (callable(step_size) or is_number(step_size) and step_size > 0):
        return "step_size"
    if eps is not None and not (is_number(eps) and eps > 0 and 0 < float32(eps) < np.inf):
        return "eps"                            # the params include float32
    return None


def mostly(valid):
    """``valid`` three times in four, else any value (so that all five are valid ~24% of the
    time; hypothesis flattens nested one_of, which would drown the valid branch)."""
    return st.integers(0, 3).flatmap(lambda i: valid if i else values)


@SETTINGS
@given(step_size=mostly(st.floats(1e-8, 10)), b1=mostly(st.floats(0, 1, exclude_max=True)),
       b2=mostly(st.floats(0, 1, exclude_max=True)),
       eps=mostly(st.one_of(st.floats(1e-300, 1), st.none())),
       form=mostly(st.sampled_from(["kingma", "keras"])), seed=st.integers(0, 2 ** 32 - 1))
def test_settings_are_refused_or_give_finite_updates(step_size, b1, b2, eps, form, seed):
    broken = contract(step_size, b1, b2, eps, form)
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal(6), "v": rng.standard_normal(3).astype(np.float32)}
    try:
        opt = adam(step_size, b1, b2, eps, form=form)
        state = opt.init(params)
    except ValueError as err:
        assert broken is not None and str(err).startswith(broken), (broken, err)
        return
    assert broken is None
    ACCEPTED.append(1)
    # A step is m * lr / (sqrt(v) + eps) with |m| below the largest gradient (1e8 here). The
    # keras form's v + (g*g - v) * (1 - b2) cancels to exactly 0 in float32 when a tiny gradient
    # follows a large one (tf-keras computes the same), leaving m * lr / eps: finite for
    # lr <= 10 and eps >= 1e-20. Beyond that an overflow is the arithmetic, not a setting error.
    bounded = float(step_size) <= 10 and (eps is None or eps >= 1e-20)
    for _ in range(4):
        grads = {k: (rng.standard_normal(p.shape) * 10.0 ** rng.integers(-8, 8)).astype(p.dtype)
                 for k, p in params.items()}
        with np.errstate(**({} if bounded else {"all": "ignore"})):
            state = opt.update(state, grads, inplace=bool(seed % 2))
        for k, p in state.params.items():
            assert p.dtype == params[k].dtype, (k, p)
            assert np.all(np.isfinite(p)) or not bounded, (k, p)
    for name in ("b1", "b2", "eps"):
        assert type(opt.hyperparams[name]) is float and math.isfinite(opt.hyperparams[name])


def test_the_property_saw_accepted_settings_too():
    """Guards the property above against testing refusals only (runs after it, in file order)."""
    assert len(ACCEPTED) >= 20, len(ACCEPTED)
