"""Driving a port's adapter through the reference cases in process (see ``lrtdense.conformance``)."""
import importlib
import importlib.util
import math
import os
import sys

import numpy as np

from lrtdense.bounded import short
from lrtdense.reference import default_dir
from lrtdense.reference.families import Selection
from lrtdense.reference.results import ResultsError
from lrtdense.reference.verify import run

__all__ = ["Adapter", "check", "load_adapter", "results_of", "DEFAULT_DRAWS"]

DEFAULT_DRAWS = 10000  # the statistical mode's minimum (SPEC.md section 7)


class Adapter:
    """A base class for adapters (optional: any object with ``compute`` will do).

    ``implements`` (None: everything) is a dict with the keys ``families``, ``quantities`` and
    ``dtypes``, each a list of globs (``lrtdense.reference.families.Selection``).
    """
    name = None
    implements = None

    def compute(self, case):
        """The expected quantities of ``case`` (a ReferenceCase): dict key -> array."""
        raise NotImplementedError

    def sample(self, case, draws, seed):
        """The statistical mode's samples of ``case`` (SPEC.md section 7): dict key -> array."""
        raise NotImplementedError


def load_adapter(spec):
    """The adapter named by ``"package.module:Name"``: a class (instantiated without arguments),
    an instance, or a function ``compute(case)``.

    Raises:
      ValueError: ``spec`` is not of that form, the module cannot be imported, or the name is
        missing or has no ``compute`` (one line saying which).
    """
    module_name, sep, attr = str(spec).rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"adapter {spec!r}: expected 'package.module:Name' or 'path/to/file.py:Name', "
                         f"for instance 'my_port.conformance:Adapter'")
    try:
        module = _import(module_name)
    except Exception as err:  # the port's own import error, reported in one line
        raise ValueError(f"adapter {spec!r}: importing {module_name!r} failed "
                         f"({type(err).__name__}: {short(str(err))})") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"adapter {spec!r}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, type):
        target = target()
    if not callable(getattr(target, "compute", None)):
        if callable(target):
            return _FunctionAdapter(target)
        raise ValueError(f"adapter {spec!r}: {type(target).__name__} has no compute(case) method")
    return target


def _import(module_name):
    """A module by dotted name, or by the path of a ``.py`` file (imported under its stem)."""
    if not module_name.endswith(".py"):
        return importlib.import_module(module_name)
    if not os.path.isfile(module_name):
        raise FileNotFoundError(f"no file {module_name}")
    stem = os.path.splitext(os.path.basename(module_name))[0]
    spec = importlib.util.spec_from_file_location(stem, module_name)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(stem, module)
    spec.loader.exec_module(module)
    return module


class _FunctionAdapter(Adapter):
    def __init__(self, function):
        self.name = getattr(function, "__name__", None)
        self._function = function

    def compute(self, case):
        return self._function(case)


def _to_numpy(value):
    """A NumPy array from a port's value (torch tensors are detached and moved to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach()
        if hasattr(value, "cpu"):
            value = value.cpu()
        if hasattr(value, "numpy"):
            return value.numpy()
    return np.asarray(value)


def results_of(adapter, draws=DEFAULT_DRAWS, seed=0):
    """``results(case, statistical) -> dict`` for ``lrtdense.reference.verify.run``: the adapter's
    ``compute(case)`` (or ``sample(case, draws, seed)``), as NumPy arrays. An exception in the
    port becomes a ResultsError, so the case's rows fail with its one-line message."""
    def results(case, statistical):
        method = "sample" if statistical else "compute"
        function = getattr(adapter, method, None)
        if not callable(function):
            raise ResultsError(f"the adapter has no {method}() method")
        try:
            out = function(case, draws, seed) if statistical else function(case)
        except NotImplementedError:
            raise ResultsError(f"the adapter's {method}() raised NotImplementedError") from None
        except Exception as err:  # the port's bug: a failing row, not a crash of the harness
            raise ResultsError(f"the adapter's {method}() raised {type(err).__name__}: "
                               f"{short(str(err))}") from None
        if not isinstance(out, dict):
            raise ResultsError(f"the adapter's {method}() returned {type(out).__name__}, "
                               f"expected a dict key -> array")
        try:
            return {str(k): _to_numpy(v) for k, v in out.items()}
        except Exception as err:
            raise ResultsError(f"the adapter's {method}() returned a value that is not an array "
                               f"({type(err).__name__}: {short(str(err))})") from None
    return results


def check(adapter, cases=None, *, families=None, quantities=None, dtypes=None,
          statistical=False, draws=DEFAULT_DRAWS, seed=0, reference=None):
    """Runs ``adapter`` on the reference cases and compares. Returns a ``verify.Report``.

    Args:
      adapter: an object with ``compute(case)`` (see ``lrtdense.conformance``), or a
        "package.module:Name" string.
      cases: case-sensitive globs of the cases (None: all).
      families, quantities, dtypes: narrow further what the adapter's ``implements`` declares
        (rows outside either are "not implemented").
      statistical: the statistical mode, through ``adapter.sample(case, draws, seed)``.
      reference: another reference set (default: the shipped one).
    Raises:
      ValueError: a bad adapter or declaration.
      lrtdense.reference.store.ReferenceError, lrtdense.reference.verify.UsageError: as ``run``.
    """
    if isinstance(adapter, str):
        adapter = load_adapter(adapter)
    if statistical and (not isinstance(draws, int) or draws < DEFAULT_DRAWS or
                        not math.isfinite(draws)):
        raise ValueError(f"draws: expected an int >= {DEFAULT_DRAWS}, got {draws!r}")
    declared = Selection.from_declaration(getattr(adapter, "implements", None))
    selection = declared & Selection(families, quantities, dtypes)
    if isinstance(cases, str):
        cases = [cases]
    return run(reference or default_dir(), results_of(adapter, draws, seed), cases, statistical,
               selection)
