"""Posterior and prior specifications, the posterior scale, and the closed-form divergences.

Specifications are settings records (``lrtdense.records``): frozen dataclasses whose plain-JSON
config (``to_config``: {"type": TYPE, and each field}), repr, equality and hash follow from their
fields, rebuilt by the family's ``*_from_config``, so that a layer's config never holds code:

* initializers: ``RandomNormal(mean, stddev)``, ``Constant(value)``;
* posteriors: ``NormalPosterior`` (TFP's ``default_mean_field_normal_fn()``: trainable loc and
  untransformed scale, scale = softplus(untransformed_scale) + finfo(dtype).eps) and
  ``DeterministicPosterior`` (``default_mean_field_normal_fn(is_singular=True)``: loc only);
* priors, each with its log density as a kernel: ``NormalPrior(loc, scale)`` on every element
  (TFP's ``default_multivariate_normal_fn`` is ``NormalPrior(0, 1)``), ``TrainableNormalPrior``
  (empirical Bayes: its loc and scale are params), ``ScaleMixturePrior(pi, sigma1, sigma2)``
  (Blundell et al. 2015), ``LaplacePrior(loc, scale)``, ``StudentTPrior(df, loc, scale)``;
* divergences: ``ClosedFormKL(weight)`` (Normal priors) and ``MonteCarloKL(weight, sample)``.

The posterior scale and the divergences are kernels of ``lrtdense.kernels``
(``posterior_scale``, ``kl_normal_normal``; a point-mass posterior's KL is -log p(loc), the
prior's own ``log_prob``).
"""
import dataclasses
import functools
import math
import statistics

import autograd.numpy as anp
import numpy as np
from autograd.scipy.special import erf

from lrtdense import kernels
from lrtdense.checks import check_float
from lrtdense.records import Record, from_config

__all__ = [
    "RandomNormal", "Constant", "NormalPosterior", "DeterministicPosterior", "Prior", "NormalPrior",
    "TrainableNormalPrior", "ScaleMixturePrior", "LaplacePrior", "StudentTPrior",
    "ClosedFormKL", "MonteCarloKL", "divergence_from_config", "PRIORS", "DIVERGENCES",
    "INITIALIZERS", "POSTERIORS", "initializer_from_config", "initializer_field",
    "posterior_from_config", "prior_from_config", "normal_nodes", "NORMAL_NODES",
]


def _finite_fields(record):
    """Every field of a frozen record as a finite float (ValueError naming it otherwise)."""
    for field in dataclasses.fields(record):
        value = check_float(getattr(record, field.name), f"{type(record).__name__}.{field.name}")
        object.__setattr__(record, field.name, value)


@dataclasses.dataclass(frozen=True)
class RandomNormal(Record):
    """Initializer drawing ``N(mean, stddev**2)`` independently per element (tf1 random_normal)."""
    mean: float = 0.0
    stddev: float = 0.1
    TYPE = "random_normal"

    def __post_init__(self):
        _finite_fields(self)
        if self.stddev < 0:
            raise ValueError(f"RandomNormal.stddev must be >= 0, got {self.stddev}")

    def __call__(self, rng, shape, dtype):
        """Draws an array of ``shape`` and ``dtype`` from ``rng`` (a numpy Generator)."""
        return rng.standard_normal(shape, dtype=dtype) * self.stddev + self.mean


@dataclasses.dataclass(frozen=True)
class Constant(Record):
    """Initializer filling every element with ``value`` (draws nothing from the rng)."""
    value: float = 0.0
    TYPE = "constant"

    def __post_init__(self):
        _finite_fields(self)

    def __call__(self, rng, shape, dtype):
        return np.full(shape, self.value, dtype=dtype)


INITIALIZERS = {cls.TYPE: cls for cls in (RandomNormal, Constant)}


def initializer_from_config(config):
    """Rebuilds an initializer from its ``to_config()`` dict (an initializer is returned as is)."""
    if isinstance(config, (RandomNormal, Constant)):
        return config
    return from_config(INITIALIZERS, config, "initializer")


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
class NormalPosterior(Record):
    """Mean-field Normal posterior q = N(loc, softplus(untransformed_scale) + eps)."""
    loc_initializer: object = RandomNormal(0.0, 0.1)
    untransformed_scale_initializer: object = RandomNormal(-3.0, 0.1)
    TYPE = "normal"
    is_normal = True

    def __post_init__(self):
        for name in ("loc_initializer", "untransformed_scale_initializer"):
            object.__setattr__(self, name, initializer_field(getattr(self, name),
                                                             f"NormalPosterior.{name}"))


@dataclasses.dataclass(frozen=True)
class DeterministicPosterior(Record):
    """Point-mass posterior q = Deterministic(loc) (TFP's ``is_singular=True``)."""
    loc_initializer: object = RandomNormal(0.0, 0.1)
    TYPE = "deterministic"
    is_normal = False

    def __post_init__(self):
        object.__setattr__(self, "loc_initializer", initializer_field(
            self.loc_initializer, "DeterministicPosterior.loc_initializer"))


POSTERIORS = {cls.TYPE: cls for cls in (NormalPosterior, DeterministicPosterior)}


def posterior_from_config(config):
    """Rebuilds a posterior from a ``to_config()`` dict, a name ("normal", "deterministic"), or None."""
    return _from_spec(config, POSTERIORS, "posterior", "a posterior must be a NormalPosterior, "
                      "DeterministicPosterior, 'normal', 'deterministic', None or a config dict")


class Prior(Record):
    """The base of every prior: what a prior offers a layer (subclass it for a new prior).
    ``name`` is "kernel" or "bias"; ``params`` the layer's params (a trainable prior keeps its
    own there)."""

    closed_form = False     # has a closed-form KL from a Normal posterior

    def param_shapes(self, name, shape):
        """The prior's own params: {} for a fixed prior."""
        return {}

    def initializers(self, name):
        """dict param name -> initializer of the prior's own params: {} for a fixed prior."""
        return {}

    def log_prob(self, w, params, name, workspace=None):
        """sum over elements of log p(w)."""
        raise NotImplementedError

    def expected_log_prob(self, loc, scale, params, name):
        """`sum over elements of E[log p(w)]`, `w ~ N(loc, scale**2)` element-wise, by the
        equal-weight rule of ``normal_nodes`` (exact for a Normal prior, a quadratic in w;
        robust to a narrow feature or a kink), in one call of ``log_prob`` on all the nodes;
        differentiable in loc, scale and params. loc, scale: arrays of one shape."""
        nodes = normal_nodes()
        w = loc + scale * np.reshape(nodes, (-1,) + (1,) * np.ndim(loc)).astype(loc.dtype)
        return self.log_prob(w, params, name) / nodes.size


NORMAL_NODES = 32768


@functools.lru_cache(maxsize=None)
def normal_nodes(count=NORMAL_NODES):
    """Nodes z_k for `E f(Z) ~ mean_k f(z_k)`, Z ~ N(0, 1): the midpoints of ``count`` cells of
    equal probability, `z_k = Phi^-1((k - 1/2) / count)`, rescaled so that `mean z_k**2 = 1`
    (symmetric, so exact for polynomials of degree <= 3). Equal weights: a sum over elements
    of f at every node is one call. Unlike Gauss-Hermite the rule needs no smoothness: its error
    is O(1 / count) for a step in f (a Laplace prior's derivative) and O(log(count) / count)
    relative for the quartic growth of a narrow mixture component. Read-only (float64)."""
    dist = statistics.NormalDist()
    half = np.array([dist.inv_cdf((k + 0.5) / count) for k in range(count // 2)])
    nodes = np.concatenate([half, -half[::-1]])
    nodes = nodes / math.sqrt(np.mean(nodes * nodes))
    nodes.setflags(write=False)
    return nodes


@dataclasses.dataclass(frozen=True)
class NormalPrior(Prior):
    """Prior ``N(loc, scale**2) on every element`` (TFP's default_multivariate_normal_fn is
    NormalPrior(0, 1)); closed-form KL from a Normal posterior."""
    loc: float = 0.0
    scale: float = 1.0
    TYPE = "normal"
    closed_form = True

    def __post_init__(self):
        _finite_fields(self)
        if self.scale <= 0:
            raise ValueError(f"NormalPrior.scale must be > 0, got {self.scale}")

    def loc_scale(self, params, name, workspace=None):
        """(loc, scale) of the prior, numbers here."""
        return self.loc, self.scale

    def log_prob(self, w, params, name, workspace=None):
        return kernels.normal_log_prob(w, self.loc, self.scale)


@dataclasses.dataclass(frozen=True)
class TrainableNormalPrior(Prior):
    """A Normal prior with its own trainable loc and scale per element (empirical Bayes; TFP's
    ``kernel_prior_fn=default_mean_field_normal_fn()``): params ``<name>_prior_loc`` and
    ``<name>_prior_untransformed_scale`` (scale = softplus + eps), named and ordered as TFP's
    ``layer.weights`` lists them. Closed-form KL from a Normal posterior."""
    loc_initializer: object = RandomNormal(0.0, 0.1)
    untransformed_scale_initializer: object = RandomNormal(-3.0, 0.1)
    TYPE = "trainable_normal"
    closed_form = True

    def __post_init__(self):
        for field in ("loc_initializer", "untransformed_scale_initializer"):
            object.__setattr__(self, field, initializer_field(
                getattr(self, field), f"TrainableNormalPrior.{field}"))

    def param_shapes(self, name, shape):
        return {f"{name}_prior_loc": shape, f"{name}_prior_untransformed_scale": shape}

    def initializers(self, name):
        """{f"{name}_prior_loc", f"{name}_prior_untransformed_scale"} -> their initializers."""
        return {f"{name}_prior_loc": self.loc_initializer,
                f"{name}_prior_untransformed_scale": self.untransformed_scale_initializer}

    def loc_scale(self, params, name, workspace=None):
        """(loc, scale) of the prior from its params: loc and softplus(untransformed) + eps."""
        return (params[f"{name}_prior_loc"],
                kernels.posterior_scale(params[f"{name}_prior_untransformed_scale"]))

    def log_prob(self, w, params, name, workspace=None):
        return kernels.normal_log_prob(w, *self.loc_scale(params, name))


@dataclasses.dataclass(frozen=True)
class ScaleMixturePrior(Prior):
    """The scale mixture ``pi N(0, sigma1**2) + (1 - pi) N(0, sigma2**2)`` on every element
    (Blundell et al. 2015, arXiv 1505.05424, eq. 7: a wide and a narrow component; their grid:
    -log sigma1 in {0, 1, 2}, -log sigma2 in {6, 7, 8}, pi in {1/4, 1/2, 3/4}). Its KL from a
    Normal posterior has no closed form: use a Monte Carlo divergence."""
    pi: float = 0.5
    sigma1: float = 1.0
    sigma2: float = math.exp(-6)
    TYPE = "scale_mixture"

    def __post_init__(self):
        _finite_fields(self)
        if not 0 < self.pi < 1:
            raise ValueError(f"ScaleMixturePrior.pi must lie in (0, 1), got {self.pi}")
        if self.sigma1 <= 0 or self.sigma2 <= 0:
            raise ValueError(f"ScaleMixturePrior.sigma1 and sigma2 must be > 0, got "
                             f"{self.sigma1}, {self.sigma2}")

    def log_prob(self, w, params, name, workspace=None):
        return kernels.scale_mixture_log_prob(w, self.pi, self.sigma1, self.sigma2,
                                              workspace=workspace)


@dataclasses.dataclass(frozen=True)
class LaplacePrior(Prior):
    """Laplace(loc, scale) on every element: density exp(-|w - loc| / scale) / (2 scale)."""
    loc: float = 0.0
    scale: float = 1.0
    TYPE = "laplace"

    def __post_init__(self):
        _finite_fields(self)
        if self.scale <= 0:
            raise ValueError(f"LaplacePrior.scale must be > 0, got {self.scale}")

    def log_prob(self, w, params, name, workspace=None):
        return kernels.laplace_log_prob(w, self.loc, self.scale)

    def expected_log_prob(self, loc, scale, params, name):
        """`sum -E|w - loc_p| / scale_p - log(2 scale_p)` in closed form (|.| has a kink that
        quadrature resolves slowly): `E|w - loc_p| = scale (2 phi(c) + c erf(c / sqrt 2))`,
        c = (loc - loc_p) / scale, phi the standard normal density."""
        c = (loc - self.loc) / scale
        phi = anp.exp(-0.5 * c * c) / math.sqrt(2 * math.pi)
        mean_abs = scale * (2 * phi + c * erf(c / math.sqrt(2)))
        return anp.sum(-mean_abs / self.scale - math.log(2 * self.scale))


@dataclasses.dataclass(frozen=True)
class StudentTPrior(Prior):
    """Student-t with ``df`` degrees of freedom, location ``loc`` and scale ``scale`` on every
    element (TFP's StudentT)."""
    df: float = 3.0
    loc: float = 0.0
    scale: float = 1.0
    TYPE = "student_t"

    def __post_init__(self):
        _finite_fields(self)
        if self.df <= 0 or self.scale <= 0:
            raise ValueError(f"StudentTPrior.df and scale must be > 0, got {self.df}, {self.scale}")

    def log_prob(self, w, params, name, workspace=None):
        return kernels.student_t_log_prob(w, self.df, self.loc, self.scale)


@dataclasses.dataclass(frozen=True)
class ClosedFormKL(Record):
    """The divergence KL(q || p) in closed form (TFP's default ``kl_divergence(q, p)``), times
    ``weight`` (e.g. 1 / N, TFP's ``lambda q, p, _: kl_divergence(q, p) / N`` idiom)."""
    weight: float = 1.0
    TYPE = "closed_form"

    def __post_init__(self):
        _finite_fields(self)
        if self.weight < 0:
            raise ValueError(f"a divergence weight must be >= 0, got {self.weight}")


@dataclasses.dataclass(frozen=True)
class MonteCarloKL(Record):
    """The single-sample estimate log q(w) - log p(w), summed over the elements, times ``weight``.

    ``sample="forward"``: w is the forward pass's own draw where the estimator has one (the
    kernel of DenseReparameterization, a Normal bias), which is what TFP hands a divergence
    function; elsewhere (the kernel of DenseLocalReparameterization and DenseFlipout, for which
    TFP passes None) an extra draw of the weights, noise key "kernel_divergence" (or
    "bias_divergence"), drawn after the forward's noise. ``sample="extra"``: always that extra
    draw. In mean mode w is the posterior mean (eps = 0)."""
    weight: float = 1.0
    sample: str = "forward"
    TYPE = "monte_carlo"

    def __post_init__(self):
        object.__setattr__(self, "weight", check_float(self.weight, "MonteCarloKL.weight"))
        if self.weight < 0:
            raise ValueError(f"a divergence weight must be >= 0, got {self.weight}")
        if self.sample not in ("forward", "extra"):
            raise ValueError(f"MonteCarloKL.sample must be 'forward' or 'extra', got "
                             f"{self.sample!r}")


DIVERGENCES = {cls.TYPE: cls for cls in (ClosedFormKL, MonteCarloKL)}


def divergence_from_config(config):
    """A divergence from a ``to_config()`` dict, a name ("closed_form", "monte_carlo") or a record.

    Raises:
      TypeError / ValueError: anything else, or bad parameters.
    """
    if isinstance(config, tuple(DIVERGENCES.values())):
        return config
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict):
        raise TypeError(f"a divergence must be one of {sorted(DIVERGENCES)} (a name, a config "
                        f"dict or a record), got {config!r}")
    return from_config(DIVERGENCES, config, "divergence")


PRIORS = {cls.TYPE: cls for cls in (NormalPrior, TrainableNormalPrior, ScaleMixturePrior,
                                     LaplacePrior, StudentTPrior)}


def prior_from_config(config):
    """Rebuilds a prior from a ``to_config()`` dict, the name "normal" (N(0, 1)), or None.

    Raises:
      TypeError: ``config`` is another kind of object (e.g. an initializer).
      ValueError: an unknown prior type or a bad parameter.
    """
    return _from_spec(config, PRIORS, "prior", f"a prior must be one of {sorted(PRIORS)} (a name, "
                      f"a config dict or e.g. NormalPrior(0, 1)) or None")


def _from_spec(config, kinds, what, expected):
    """``config`` as an object of ``kinds``: None or such an object as it is, a name as
    ``{"type": name}``, a dict with its initializers rebuilt; else a TypeError saying
    ``expected``."""
    if config is None or isinstance(config, tuple(kinds.values())):
        return config
    if isinstance(config, str):
        config = {"type": config}
    if not isinstance(config, dict):
        raise TypeError(f"{expected}, got {config!r}")
    return from_config(kinds, config, what)

