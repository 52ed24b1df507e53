"""Scalar settings, checked in one place with one rule.

A number setting is a Python or NumPy scalar: ``int``/``numpy.integer`` for an integer,
``int``/``float``/``numpy.integer``/``numpy.floating`` for a real number; never a ``bool`` (a
``True`` that means 1 is a mistake, not a count), never a string or a 0-d array. A flag is
``True`` or ``False`` (``numpy.bool_`` too). Each check returns the value as a plain Python
``int``, ``float`` or ``bool``, so that a NumPy scalar cannot change the precision or the JSON of
what is built from it, and raises a one-line error that names the setting, says what was
expected and shows what was given: ``epochs must be an integer >= 0, got 2.5``.

Wrong types and wrong values both raise ValueError for numbers (the callers' long-standing
contract); a flag that is not a bool raises TypeError.
"""
import math

import numpy as np

__all__ = ["check_int", "check_float", "check_bool", "check_rng", "is_finite_number"]


def check_int(value, name, low=None, high=None, *, expected=None):
    """``value`` as a Python int in [low, high] (a bound None: unbounded on that side).

    Args:
      value: the setting; name: what the message calls it.
      low, high: inclusive bounds, or None.
      expected: the message's description of a valid value, when the default
        ("an integer >= low", "an integer in [low, high]") does not say enough.
    Raises:
      ValueError: not an int or NumPy integer (or a bool), or outside the bounds.
    """
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))
            or (low is not None and value < low) or (high is not None and value > high)):
        raise ValueError(f"{name} must be {expected or _describe('an integer', low, high)}, "
                         f"got {value!r}")
    return int(value)


def check_float(value, name, low=None, high=None, *, open_low=False, open_high=False,
                expected=None):
    """``value`` as a finite Python float in [low, high] (``open_low``/``open_high``: excluding
    that bound; a bound None: unbounded on that side).

    Raises:
      ValueError: not a real Python or NumPy scalar (or a bool), not finite (a Python int past
        float64's range included), or outside the bounds.
    """
    number = _finite_float(value)
    if (number is None or (low is not None and (number < low or open_low and number == low))
            or (high is not None and (number > high or open_high and number == high))):
        described = _describe("a finite number" if high is None else "a number", low, high,
                              open_low, open_high)
        raise ValueError(f"{name} must be {expected or described}, got {value!r}")
    return number


def check_bool(value, name):
    """``value`` as a Python bool. Raises TypeError for anything but True/False (numpy.bool_)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_rng(rng):
    """Raises TypeError unless ``rng`` is a ``numpy.random.Generator`` (the package's one source
    of randomness: no global state)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0)), "
                        f"got {type(rng).__name__}")


def is_finite_number(value):
    """True for a finite real Python or NumPy scalar that is not a bool (``check_float``'s
    types), for callers whose message depends on more than the number."""
    return _finite_float(value) is not None


def _finite_float(value):
    """float(value) for an accepted finite scalar; None otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        return None
    try:
        number = float(value)
    except OverflowError:               # a Python int past float64's range
        return None
    return number if math.isfinite(number) else None


def _describe(kind, low, high, open_low=False, open_high=False):
    if low is not None and high is not None:
        return (f"{kind} in {'(' if open_low else '['}{_show(low)}, {_show(high)}"
                f"{')' if open_high else ']'}")
    if low is not None:
        return f"{kind} {'>' if open_low else '>='} {_show(low)}"
    if high is not None:
        return f"{kind} {'<' if open_high else '<='} {_show(high)}"
    return kind


def _show(bound):
    """A bound as the message prints it: a large power of two as ``2**k``."""
    if isinstance(bound, int) and bound >= 2 ** 20 and bound & (bound - 1) == 0:
        return f"2**{bound.bit_length() - 1}"
    return f"{bound}"
