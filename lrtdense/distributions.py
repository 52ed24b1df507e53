"""Posterior and prior specifications, the posterior scale, and the closed-form divergences.

Specifications are small immutable records that serialize to plain JSON (``to_config``) and back
(``from_config``), so that a layer's config never holds code:

* initializers: ``RandomNormal(mean, stddev)``, ``Constant(value)``;
* posteriors: ``NormalPosterior`` (TFP's ``default_mean_field_normal_fn()``: trainable loc and
  untransformed scale, scale = softplus(untransformed_scale) + finfo(dtype).eps) and
  ``DeterministicPosterior`` (``default_mean_field_normal_fn(is_singular=True)``: loc only);
* priors: ``NormalPrior(loc, scale)`` on every element (TFP's ``default_multivariate_normal_fn`` is
  ``NormalPrior(0, 1)``).

The posterior scale and the divergences are kernels of ``lrtdense.kernels``
(``posterior_scale``, ``kl_normal_normal``, ``kl_deterministic_normal``); ``posterior_scale`` is
re-exported here for the code that reads the settings and the scale together.
"""
import dataclasses
import math

import numpy as np

from lrtdense.kernels import posterior_scale

__all__ = [
    "RandomNormal", "Constant", "NormalPosterior", "DeterministicPosterior", "NormalPrior",
    "posterior_scale", "initializer_from_config", "initializer_field", "posterior_from_config", "prior_from_config",
]


def _finite_float(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _finite_fields(record):
    """Every field of a frozen record as a finite float (ValueError naming it otherwise)."""
    for field in dataclasses.fields(record):
        value = _finite_float(getattr(record, field.name), f"{type(record).__name__}.{field.name}")
        object.__setattr__(record, field.name, value)


@dataclasses.dataclass(frozen=True)
class RandomNormal:
    """Initializer drawing N(mean, stddev**2) independently per element (tf1 random_normal)."""
    mean: float = 0.0
    stddev: float = 0.1

    def __post_init__(self):
        _finite_fields(self)
        if self.stddev < 0:
            raise ValueError(f"RandomNormal.stddev must be >= 0, got {self.stddev}")

    def __call__(self, rng, shape, dtype):
        """Draws an array of ``shape`` and ``dtype`` from ``rng`` (a numpy Generator)."""
        return rng.standard_normal(shape, dtype=dtype) * self.stddev + self.mean

    def to_config(self):
        return {"type": "random_normal", "mean": self.mean, "stddev": self.stddev}


@dataclasses.dataclass(frozen=True)
class Constant:
    """Initializer filling every element with ``value`` (draws nothing from the rng)."""
    value: float = 0.0

    def __post_init__(self):
        _finite_fields(self)

    def __call__(self, rng, shape, dtype):
        return np.full(shape, self.value, dtype=dtype)

    def to_config(self):
        return {"type": "constant", "value": self.value}


def initializer_from_config(config):
    """Rebuilds an initializer from its ``to_config()`` dict."""
    kinds = {"random_normal": RandomNormal, "constant": Constant}
    return _from_config(config, kinds, "initializer")


def initializer_field(value, what, default=None):
    """An initializer setting: a RandomNormal or Constant, their config dict, or None for
    ``default``. Raises TypeError naming the setting for anything else."""
    if value is None and default is not None:
        return default
    if isinstance(value, (RandomNormal, Constant)):
        return value
    if isinstance(value, dict):
        return initializer_from_config(value)
    raise TypeError(f"{what} must be a RandomNormal, a Constant or their config dict, got "
                    f"{value!r}")


@dataclasses.dataclass(frozen=True)
class NormalPosterior:
    """Mean-field Normal posterior q = N(loc, softplus(untransformed_scale) + eps)."""
    loc_initializer: object = RandomNormal(0.0, 0.1)
    untransformed_scale_initializer: object = RandomNormal(-3.0, 0.1)
    is_normal = True

    def __post_init__(self):
        for name in ("loc_initializer", "untransformed_scale_initializer"):
            object.__setattr__(self, name, initializer_field(getattr(self, name),
                                                             f"NormalPosterior.{name}"))

    def to_config(self):
        return {"type": "normal", "loc_initializer": self.loc_initializer.to_config(),
                "untransformed_scale_initializer": self.untransformed_scale_initializer.to_config()}


@dataclasses.dataclass(frozen=True)
class DeterministicPosterior:
    """Point-mass posterior q = Deterministic(loc) (TFP's ``is_singular=True``)."""
    loc_initializer: object = RandomNormal(0.0, 0.1)
    is_normal = False

    def __post_init__(self):
        object.__setattr__(self, "loc_initializer", initializer_field(
            self.loc_initializer, "DeterministicPosterior.loc_initializer"))

    def to_config(self):
        return {"type": "deterministic", "loc_initializer": self.loc_initializer.to_config()}


def posterior_from_config(config):
    """Rebuilds a posterior from a ``to_config()`` dict, a name ("normal", "deterministic"), or None."""
    if config is None or isinstance(config, (NormalPosterior, DeterministicPosterior)):
        return config
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict):
        raise TypeError(f"a posterior must be a NormalPosterior, DeterministicPosterior, "
                        f"'normal', 'deterministic', None or a config dict, got {config!r}")
    config = dict(config)
    for key in ("loc_initializer", "untransformed_scale_initializer"):
        if key in config:
            config[key] = initializer_from_config(config[key])
    return _from_config(config, {"normal": NormalPosterior,
                                 "deterministic": DeterministicPosterior}, "posterior")


@dataclasses.dataclass(frozen=True)
class NormalPrior:
    """Prior N(loc, scale**2) on every element."""
    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        _finite_fields(self)
        if self.scale <= 0:
            raise ValueError(f"NormalPrior.scale must be > 0, got {self.scale}")

    def to_config(self):
        return {"type": "normal", "loc": self.loc, "scale": self.scale}


PRIORS = {"normal": NormalPrior}


def prior_from_config(config):
    """Rebuilds a prior from a ``to_config()`` dict, the name "normal" (N(0, 1)), or None.

    Raises:
      TypeError: ``config`` is another kind of object (e.g. an initializer).
      ValueError: an unknown prior type or a bad parameter.
    """
    if config is None or isinstance(config, tuple(PRIORS.values())):
        return config
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict):
        raise TypeError(f"a prior must be one of {sorted(PRIORS)} (a name, a config dict or "
                        f"e.g. NormalPrior(0, 1)) or None, got {config!r}")
    return _from_config(config, PRIORS, "prior")


def _from_config(config, kinds, what):
    if isinstance(config, tuple(kinds.values())):
        return config
    if not isinstance(config, dict) or "type" not in config:
        raise TypeError(f"a {what} config must be a dict with a 'type' key, got {config!r}")
    kind = config["type"]
    if kind not in kinds:
        raise ValueError(f"unknown {what} type {kind!r}; expected one of {sorted(kinds)}")
    cls = kinds[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = set(config) - fields - {"type"}
    if extra:
        raise ValueError(f"unexpected keys {sorted(extra)} in {what} config of type {kind!r}; "
                         f"expected a subset of {sorted(fields)}")
    return cls(**{k: v for k, v in config.items() if k != "type"})
