"""Activations by name, as Keras names them.

``get(name_or_callable)`` returns an autograd-differentiable function. Names: "linear" (or None),
"relu", "tanh", "sigmoid", "softplus", "elu". Derivatives at kinks follow TensorFlow: relu'(0) = 0,
elu'(0) = 1.
"""
import autograd.numpy as np
from autograd.scipy.special import expit

from lrtdense.primitives import softplus

__all__ = ["get", "name_of", "config_name", "ACTIVATIONS"]


def linear(x):
    return x


def relu(x):
    return np.where(x > 0, x, 0 * x)


def elu(x):
    """Keras elu with alpha = 1: x if x > 0 else exp(x) - 1."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


ACTIVATIONS = {
    "linear": linear,
    "relu": relu,
    "tanh": np.tanh,
    "sigmoid": expit,
    "softplus": softplus,
    "elu": elu,
}


def get(activation):
    """Returns the function for an activation name, None, or an autograd-differentiable callable.

    Raises:
      ValueError: unknown name.
      TypeError: neither a string, None nor a callable.
    """
    if activation is None:
        return linear
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}, "
                "None, or an autograd-differentiable callable") from None
    if callable(activation):
        return activation
    raise TypeError(f"activation must be a name, None or a callable, got {type(activation).__name__}")


def name_of(activation):
    """The JSON name of an activation, or None when it is a custom callable."""
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        get(activation)
        return activation
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name
    return None


def config_name(activation):
    """The activation's name for a JSON config.

    Raises:
      ValueError: the activation is a custom callable (configs are plain JSON, never code).
    """
    name = name_of(activation)
    if name is None:
        raise ValueError(
            f"cannot put the custom activation {activation!r} in a config: lrtdense "
            f"configs are plain JSON and never hold code. Use one of "
            f"{sorted(ACTIVATIONS)} or rebuild the layer in code.")
    return name
