"""Activations by name, as Keras names them: "linear" (or None), "relu", "tanh", "sigmoid",
"softplus", "elu".

``get(activation)`` returns ``f(z, workspace=None)``: the kernel of ``lrtdense.kernels`` for a
name (derivatives at ties as TensorFlow's: relu'(0) = 0, elu'(0) = 1), or a custom
autograd-differentiable callable (which configs refuse: they are plain JSON, never code).
"""
from lrtdense.kernels import ACTIVATIONS

__all__ = ["get", "canonical", "name_of", "config_name", "ACTIVATIONS"]


def get(activation):
    """The function ``f(z, workspace=None)`` of an activation name, None or a callable.

    Raises:
      ValueError: unknown name.
      TypeError: neither a string, None nor a callable.
    """
    activation = canonical(activation)
    if isinstance(activation, str):
        return ACTIVATIONS[activation]
    return lambda z, workspace=None: activation(z)


def canonical(activation):
    """The activation's name for None, a name or a kernel of ``ACTIVATIONS``; a custom callable
    unchanged.

    Raises:
      ValueError: unknown name.
      TypeError: neither a string, None nor a callable.
    """
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}, "
                "None, or an autograd-differentiable callable")
        return activation
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name
    if callable(activation):
        return activation
    raise TypeError(f"activation must be a name, None or a callable, got {type(activation).__name__}")


def name_of(activation):
    """The JSON name of an activation, or None when it is a custom callable."""
    name = canonical(activation)
    return name if isinstance(name, str) else None


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
