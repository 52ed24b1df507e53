"""Settings records: frozen dataclasses whose config, repr, equality and hash follow from their
fields.

A record declares its settings once, as the fields of a frozen dataclass deriving from ``Record``
(as Flax's ``Dense`` declares its own); dataclasses give it its repr, ``==`` and hash, this module
its plain-JSON config and the one way back:

* ``to_config(record)`` (the method ``record.to_config()``, or ``get_config()``, Keras's name) is
  ``{"type": TYPE, field: value, ...}`` in field order, or the fields alone for a record without a
  ``TYPE`` (``Model``, ``Sequential``). A value is a JSON scalar, a nested record's config, or
  what the field's ``to_json`` hook makes of it (``record_field``: Sequential's layers go through
  ``lrtdense.registry.serialize``).
* ``from_config(kinds, config)`` rebuilds a record, ``kinds`` being its class or a family
  ``{TYPE: class}`` (the priors, the posteriors, ...). It refuses, with a one-line error naming
  the class and the key, a config that is not a dict, an unknown ``type``, an unknown key, a
  missing required key and code (a callable anywhere in the config: configs never hold code);
  then it calls the class with the fields, each through its field's ``from_json`` hook if it has
  one, and the class's ``__post_init__`` checks the values (a nested record's config dict
  included).
"""
import dataclasses
import typing

__all__ = ["Record", "record_field", "to_config", "from_config"]


class Record:
    """The base of a settings record; a subclass is a ``@dataclasses.dataclass(frozen=True)``
    and sets ``TYPE`` when its config carries a "type" tag."""

    TYPE: typing.ClassVar = None

    def to_config(self):
        """Plain JSON: {"type": TYPE (if any), then every field} (``records.to_config``)."""
        return to_config(self)

    get_config = to_config

    @classmethod
    def from_config(cls, config):
        """Rebuilds the record from ``to_config()``'s dict (``records.from_config``).

        Raises:
          TypeError / ValueError: not a dict, a wrong type, unknown or missing keys, code, or a
            bad value (the record's own check).
        """
        return from_config(cls, config)


def record_field(*, to_json=None, from_json=None, **kwargs):
    """A dataclass field whose config holds ``to_json(value)`` and whose value is rebuilt by
    ``from_json(config value)`` (other keyword arguments go to ``dataclasses.field``)."""
    return dataclasses.field(metadata={"to_json": to_json, "from_json": from_json}, **kwargs)


def to_config(record):
    """``record``'s plain-JSON config, derived from its fields (see the module docstring).

    Raises:
      ValueError: a field holds code (a callable that is not a record).
      TypeError: a field holds another value that is not plain JSON.
    """
    config = {} if record.TYPE is None else {"type": record.TYPE}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        hook = field.metadata.get("to_json")
        if hook is not None:
            value = hook(value)
        elif isinstance(value, Record):
            value = to_config(value)
        elif callable(value):
            raise ValueError(f"{type(record).__name__}.{field.name} is code ({value!r}): configs "
                             f"never hold code")
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"{type(record).__name__}.{field.name} is not plain JSON: {value!r}")
        config[field.name] = value
    return config


def from_config(kinds, config, what=None):
    """A record from its config: ``kinds`` is the record's class or a family {TYPE: class};
    ``what`` names the family in errors (the class's name by default).

    Raises:
      TypeError: ``config`` is not a dict (or a tagged one has no "type").
      ValueError: an unknown type, unknown or missing keys, a callable in the config, or the
        class's own check of a value.
    """
    if isinstance(kinds, type):
        what = what or kinds.__name__
        kinds = kinds if kinds.TYPE is None else {kinds.TYPE: kinds}
    if isinstance(kinds, dict):
        if not isinstance(config, dict) or "type" not in config:
            raise TypeError(f"a {what} config must be a dict with a 'type' key, got {config!r}")
        kind = config["type"]
        if not isinstance(kind, str) or kind not in kinds:
            raise ValueError(f"unknown {what} type {kind!r}; expected one of {sorted(kinds)}")
        cls, values = kinds[kind], {k: v for k, v in config.items() if k != "type"}
    else:
        if not isinstance(config, dict):
            raise TypeError(f"a {what} config must be a dict, got {config!r}")
        cls, values = kinds, config
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    extra = sorted((k for k in values if k not in names), key=str)
    if extra:
        raise ValueError(f"unexpected keys {extra} in a {cls.__name__} config; expected a subset "
                         f"of {names}")
    missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing keys {missing} in a {cls.__name__} config")
    for key, value in values.items():
        code = _code(value)
        if code is not None:
            raise ValueError(f"key {key!r} of a {cls.__name__} config holds code ({code!r}): "
                             f"configs never hold code")
    hooks = {f.name: f.metadata.get("from_json") for f in fields}
    return cls(**{k: v if hooks[k] is None else hooks[k](v) for k, v in values.items()})


def _code(value):
    """The first callable that is not a record in a config value, its dicts and lists; or None."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return next((code for code in map(_code, value) if code is not None), None)
    return value if callable(value) and not isinstance(value, Record) else None
