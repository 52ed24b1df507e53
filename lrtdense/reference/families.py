"""What a port implements: the families of reference cases, the quantities of each, a selection.

A porter works family by family (SPEC.md, "Porting guide"): one estimator's layer, then its KL,
its gradients, the priors, the networks, training. Every case belongs to exactly one family:

| family | cases | kind |
|---|---|---|
| ``lrt``, ``reparam``, ``flipout`` | one layer of that estimator, its edge cases | layer, edge |
| ``vdrop``, ``sparsevd`` | the variational dropout layers | dropout |
| ``network`` | Sequential networks (``*_network3``) | network, dropout |
| ``priors`` | the priors and Monte Carlo divergences (``priors_*``) | priors |
| ``dv`` | DenseVariational (``dv_*``) | dense_variational |
| ``train`` | training trajectories (``train_*``) | training |
| ``adam`` | the two Adam forms (``adam_*``) | adam |

A quantity is an expected key (``outputs/sample``, ``kl/total``, ``grads/kernel_posterior_loc``,
``params/layer_0/bias_posterior_loc``, ...); in statistical mode also ``samples/*`` and the
family rows (``mean``, ``variance``, ...), which belong to ``samples/*``. A ``Selection`` is
what a port declares it implements (families, quantities, dtypes, as case-sensitive globs);
every row outside it is reported as "not implemented", never as a failure.
"""
import dataclasses
import fnmatch

__all__ = ["FAMILIES", "family_of", "Selection", "ALL"]

FAMILIES = ("lrt", "reparam", "flipout", "vdrop", "sparsevd", "network", "priors", "dv", "train",
            "adam")

_LAYER_FAMILY = {"DenseLocalReparameterization": "lrt", "DenseReparameterization": "reparam",
                 "DenseFlipout": "flipout", "DenseVariationalDropout": "vdrop",
                 "DenseSparseVariationalDropout": "sparsevd"}
_KIND_FAMILY = {"network": "network", "priors": "priors", "dense_variational": "dv",
                "training": "train", "adam": "adam"}


def family_of(meta):
    """The family of a case from its ``case.json`` (``meta``): one of ``FAMILIES``.

    Raises:
      ValueError: the case's kind or layer class belongs to no family.
    """
    kind = meta.get("kind")
    if kind in _KIND_FAMILY:
        return _KIND_FAMILY[kind]
    model = meta.get("model")
    name = model.get("class_name") if isinstance(model, dict) else None
    if kind in ("layer", "edge", "dropout") and name == "Sequential":
        return "network"
    if kind in ("layer", "edge", "dropout") and name in _LAYER_FAMILY:
        return _LAYER_FAMILY[name]
    raise ValueError(f"case {meta.get('name')!r}: kind {kind!r} with class {name!r} belongs to "
                     f"no family (expected one of {', '.join(FAMILIES)})")


def _globs(what, values):
    if values is None:
        return ("*",)
    if isinstance(values, str):
        values = [values]
    out = tuple(v.strip() for v in values for v in str(v).split(","))
    if not out or not all(out):
        raise ValueError(f"{what}: expected non-empty globs, got {values!r}")
    return out


@dataclasses.dataclass(frozen=True)
class Selection:
    """What a port implements: ``families`` (globs on ``FAMILIES``), ``quantities`` (globs on
    keys, such as ``"outputs/*"``, ``"kl/*"``, ``"grads/*"``) and ``dtypes`` ("float32",
    "float64"). Each is a list of case-sensitive globs (or one string of comma-separated globs);
    None means everything.

    Raises:
      ValueError: an empty glob, or a family glob that matches no family.
    """
    families: tuple = ("*",)
    quantities: tuple = ("*",)
    dtypes: tuple = ("*",)

    def __post_init__(self):
        for field in ("families", "quantities", "dtypes"):
            object.__setattr__(self, field, _globs(field, getattr(self, field)))
        for pattern in self.families:
            if not any(fnmatch.fnmatchcase(f, pattern) for f in FAMILIES):
                raise ValueError(f"families: {pattern!r} matches no family (the families are "
                                 f"{', '.join(FAMILIES)})")

    @classmethod
    def from_declaration(cls, declared):
        """A Selection from an adapter's ``implements`` (None, a Selection or a dict with the
        keys ``families``, ``quantities``, ``dtypes``).

        Raises:
          ValueError: an unknown key or a bad glob.
        """
        if declared is None:
            return cls()
        if isinstance(declared, cls):
            return declared
        if not isinstance(declared, dict):
            raise ValueError(f"implements: expected a dict with the keys families, quantities, "
                             f"dtypes, got {type(declared).__name__}")
        unknown = sorted(set(declared) - {"families", "quantities", "dtypes"})
        if unknown:
            raise ValueError(f"implements: unknown keys {unknown}; expected families, "
                             f"quantities, dtypes")
        return cls(*(declared.get(k) for k in ("families", "quantities", "dtypes")))

    def covers_case(self, family, dtype):
        """True if the port implements this family in this dtype."""
        return (any(fnmatch.fnmatchcase(family, p) for p in self.families)
                and any(fnmatch.fnmatchcase(dtype, p) for p in self.dtypes))

    def covers_quantity(self, key):
        """True if the port implements the quantity ``key`` (statistical rows: ``samples/*``)."""
        return any(fnmatch.fnmatchcase(key, p) for p in self.quantities)

    def __and__(self, other):
        """Rows both selections cover (an adapter's declaration and a user's filter)."""
        return _Both(self, other)

    @property
    def everything(self):
        """True if nothing is excluded."""
        return self.families == self.quantities == self.dtypes == ("*",)


@dataclasses.dataclass(frozen=True)
class _Both:
    a: object
    b: object

    def covers_case(self, family, dtype):
        return self.a.covers_case(family, dtype) and self.b.covers_case(family, dtype)

    def covers_quantity(self, key):
        return self.a.covers_quantity(key) and self.b.covers_quantity(key)

    @property
    def everything(self):
        return self.a.everything and self.b.everything

    def __and__(self, other):
        return _Both(self, other)


ALL = Selection()
