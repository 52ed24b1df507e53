"""Generating the reference set and verifying a port's results against it.

``generate(root)`` writes every case of ``lrtdense.reference.cases`` and the manifest into a new or
empty folder, or over a set it wrote itself (removing only the files that set's manifest lists).
It never writes into the installed set (``default_dir()``) but with ``pin``, and never through a
symlink below ``root``.

``run(reference_root, results_root)`` validates the reference set (``store.open_reference``),
then compares every expected quantity of every selected case with the port's results using the
case's tolerances: a quantity passes when it has the expected shape and dtype and
|port - ref| <= atol + rtol * |ref| element-wise (NaN only where the reference is NaN). It returns
a ``Report``: rows (case, quantity, max abs error, max rel error, max ULPs, worst index, status)
and notes (e.g. that the reference folder is not the shipped set). ``verify`` returns its rows.

``statistical=True`` is for ports that cannot inject noise (``lrtdense.reference.statistical``).

One case is in memory at a time, and every file is read within the bounds ``store`` states.
"""
import dataclasses
import difflib
import fnmatch
import os

import numpy as np

from lrtdense.reference import SHIPPED_MANIFEST_SHA256, default_dir
from lrtdense.reference import cases as _cases
from lrtdense.reference import families, generation
from lrtdense.reference import statistical as _statistical
from lrtdense.reference import results as port_results, store
from lrtdense.reference.reference_case import ReferenceCase
from lrtdense.reference.report import NOT_IMPLEMENTED, Row, compare, format_table

__all__ = ["generate", "verify", "run", "case_rows", "read_checked_case", "Report", "Row", "compare", "format_table",
           "select_cases", "statistical_cases", "UsageError"]

PIN_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pin.py")


class UsageError(ValueError):
    """The request cannot be carried out as asked (exit code 2): a pattern that matches no case,
    no case eligible for the statistical mode, a folder generate will not write into."""


# ---------------------------------------------------------------------------------- generate

def _check_target(root, pin):
    """Refuses the installed reference set (but with ``pin``), a folder inside it, and a target
    holding a symlink where generate would write (manifest.json, cases/ and everything below)."""
    real, installed = os.path.realpath(root), os.path.realpath(default_dir())
    if (real == installed and not pin) or real.startswith(installed + os.sep):
        raise UsageError(f"refusing to write into {root!r}: it is (inside) the reference set "
                         f"installed with lrtdense ({default_dir()}), which verify checks against "
                         f"its pinned sha256; generate into a new folder (a maintainer changing "
                         f"the shipped set passes --pin)")
    if not os.path.isdir(root):
        return
    links = [os.path.join(root, n) for n in ("manifest.json", "cases")
             if os.path.islink(os.path.join(root, n))]
    cases_dir = os.path.join(root, "cases")
    if not links and os.path.isdir(cases_dir):
        for dirpath, dirnames, filenames in os.walk(cases_dir):
            links += [os.path.join(dirpath, n) for n in sorted(dirnames + filenames)
                      if os.path.islink(os.path.join(dirpath, n))]
            if links:
                break
    if links:
        raise UsageError(f"refusing to write into {root!r}: {links[0]} is a symbolic link; "
                         f"generate writes only into real folders inside its target")


def _own_set(root):
    """The reference set a previous ``generate`` wrote into ``root`` (a ReferenceSet), or None if
    ``root`` is new or empty. Raises UsageError if ``root`` holds anything else under cases/, or
    is not empty and holds no set of ours."""
    if not os.path.exists(root):
        return None
    if not os.path.isdir(root):
        raise UsageError(f"{root!r} is not a folder")
    if not os.listdir(root):
        return None
    try:
        ref = store.open_reference(root, check=False)
    except store.ReferenceError as err:
        raise UsageError(f"refusing to write into {root!r}: it is not empty and is not a complete "
                         f"reference set written by `{store.GENERATOR}` ({err}); choose a new or "
                         f"empty folder") from None
    if ref.manifest.get("generator") != store.GENERATOR:
        raise UsageError(f"refusing to write into {root!r}: its manifest.json was not written by "
                         f"`{store.GENERATOR}`; choose a new or empty folder")
    return ref


def _remove(root, files):
    """Removes exactly ``files`` (relative to root), then the folders under cases/ left empty."""
    for rel in files:
        os.remove(os.path.join(root, *rel.split("/")))
    cases_dir = os.path.join(root, "cases")
    for dirpath, _, _ in sorted(os.walk(cases_dir), key=lambda w: -len(w[0])):
        if not os.listdir(dirpath):
            os.rmdir(dirpath)


def generate(root, names=None, *, pin=False):
    """Writes the reference set into ``root``. Returns the manifest.

    ``root`` must be new, empty, or a reference set written by ``generate``. Without ``names``
    every case is (re)written and the set's old files are removed (only those its manifest lists:
    a SPEC.md or any other file beside cases/ is kept). With ``names``, only those cases are
    (re)written and the set's other cases of ``lrtdense.reference.cases`` are kept byte for byte
    (cases it no longer defines are removed): how new cases join the committed set without
    rewriting the last bits of the others. With ``pin``, ``root`` must be the package's own folder
    and ``lrtdense/reference/pin.py`` is rewritten with the new manifest's sha256.

    Raises:
      UsageError: ``root`` holds files that generate did not write, or a symlink below it, or is
        the installed set without ``pin``; an unknown case name; ``pin`` for another folder.
    """
    if root is None or root == "":
        raise UsageError("generate needs an explicit output folder")
    if pin and os.path.realpath(root) != os.path.realpath(default_dir()):
        raise UsageError(f"--pin rewrites the pin of the shipped set; it needs the package's own "
                         f"folder {default_dir()!r}, got {root!r}")
    chosen = sorted(_cases.CASES) if names is None else sorted(set(names))
    unknown = [n for n in chosen if n not in _cases.CASES]
    if unknown:
        raise UsageError(f"unknown cases {unknown}")
    _check_target(root, pin)
    old = _own_set(root)
    kept = {}
    if old is not None:
        if names is not None:
            kept = {n: sorted(old.files(n)) for n in old.names
                    if n in _cases.CASES and n not in chosen}
        _remove(root, ["manifest.json"] + [rel for n in old.names if n not in kept
                                           for rel in old.files(n)])
    os.makedirs(root, exist_ok=True)
    written = dict(kept)
    for name in chosen:
        meta, inputs = generation.build(_cases.CASES[name])
        expected = generation.compute(meta, inputs)
        meta["tolerances"] = _cases.tolerances_for(meta, expected)
        try:
            written[name] = store.write_case(root, name, meta, inputs, expected)
        except store.ReferenceError as err:
            raise UsageError(f"stopped writing into {root!r}: {err}") from None
    try:
        manifest = store.write_manifest(root, written)
    except store.ReferenceError as err:
        raise UsageError(f"stopped writing into {root!r}: {err}") from None
    if pin:
        digest = store.sha256(os.path.join(root, "manifest.json"))
        with open(PIN_FILE) as f:
            text = f.read()
        with open(PIN_FILE, "w") as f:
            f.write(text.replace(SHIPPED_MANIFEST_SHA256, digest))
    return manifest


# ------------------------------------------------------------------------------------- verify

def statistical_cases(meta):
    """True if a case supports the statistical mode (see ``lrtdense.reference.statistical``)."""
    return _statistical.eligible(meta)


def select_cases(names, patterns):
    """The names matching any of the case-sensitive glob ``patterns`` (all names if none).

    Raises:
      UsageError: a pattern matches no case (the message lists the closest names).
    """
    if not patterns:
        return list(names)
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.4)
            if not close:
                stem = pattern.split("*")[0].split("?")[0].lower()
                close = [n for n in names if n.lower().startswith(stem[:3])][:5] if stem else []
            raise UsageError(f"no reference case matches {pattern!r} (patterns are case-sensitive "
                             f"globs such as 'lrt_*' or 'flipout_64_basic'); closest names: "
                             f"{', '.join(close) if close else 'none'}; "
                             f"`lrtdense reference list` shows all {len(names)}")
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in names if n in chosen]


@dataclasses.dataclass
class Report:
    """What ``run`` found: ``rows`` (one per case and quantity), ``notes`` (lines on the set),
    ``shipped`` (False for a set not shipped with lrtdense: exit 4) and its ``manifest_sha256``."""
    rows: list
    notes: list
    shipped: bool = True
    manifest_sha256: str = ""

    @property
    def passed(self):
        """True when no row failed and at least one passed."""
        return any(r.passed for r in self.rows) and not any(r.failed for r in self.rows)


def _provenance(ref):
    """Lines saying whether a reference folder other than the installed one is the shipped set."""
    if ref.shipped:
        return [f"reference {ref.root}: a copy of the shipped set (manifest sha256 "
                f"{ref.manifest_sha256[:16]}...)"]
    line = (f"reference {ref.root}: NOT the set shipped with this lrtdense (manifest sha256 "
            f"{ref.manifest_sha256[:16]}..., shipped {SHIPPED_MANIFEST_SHA256[:16]}...); results "
            f"are checked against it as given")
    try:
        shipped = store.open_reference(default_dir(), check=False).manifest["cases"]
    except store.ReferenceError:
        return [line]
    mine = ref.manifest["cases"]
    missing = sorted(set(shipped) - set(mine))
    added = sorted(set(mine) - set(shipped))
    changed = sorted(n for n in set(mine) & set(shipped) if mine[n] != shipped[n])
    parts = []
    for what, names in (("missing", missing), ("changed", changed), ("not shipped", added)):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{len(names)} {what} ({shown})")
    if parts:
        line += "; against the shipped set: cases " + "; ".join(parts)
    return [line]


def _check_case(meta, expected, name):
    """The case's own consistency: dtype of the expected arrays, tolerances no looser than SPEC §4."""
    dtype = meta.get("dtype")
    if dtype not in ("float32", "float64"):
        raise store.ReferenceError(f"case {name}: dtype {dtype!r}, expected 'float32' or 'float64'")
    tolerances = meta.get("tolerances")
    if not isinstance(tolerances, dict) or sorted(tolerances) != sorted(expected):
        raise store.ReferenceError(f"case {name}: case.json must give tolerances for exactly the "
                                   f"expected keys")
    try:
        rule = _cases.tolerances_for(meta, expected)
    except (KeyError, ValueError, TypeError) as err:
        raise store.ReferenceError(f"case {name}: {err}") from None
    for key, array in expected.items():
        if array.dtype != np.dtype(dtype):
            raise store.ReferenceError(f"case {name}: expected/{key}.npy has dtype {array.dtype}, "
                                       f"the case's dtype is {dtype}")
        tol = tolerances[key]
        ok = isinstance(tol, dict) and all(
            isinstance(tol.get(k), (int, float)) and 0 <= tol[k] <= rule[key][k] * (1 + 1e-9)
            for k in ("rtol", "atol"))
        if not ok:
            raise store.ReferenceError(f"case {name}: tolerance of {key} is {tol}, looser than "
                                       f"SPEC §4 allows ({rule[key]})")


def run(reference_root, results, patterns=None, statistical=False, selection=None):
    """Validates the reference set and compares a port's results with it. Returns a Report.

    Args:
      reference_root: the reference folder.
      results: the port's results folder, or a callable ``results(case, statistical) -> dict``
        (key -> array) given a ``ReferenceCase`` (``lrtdense.conformance`` drives an adapter this
        way); it may raise ``ResultsError`` (a failing row naming the case).
      patterns: case-sensitive globs of the cases to check (None: all).
      statistical: the statistical mode (``lrtdense.reference.statistical``).
      selection: what the port implements (``lrtdense.reference.families.Selection``): rows
        outside it are "not implemented", and their results are not read.
    Raises:
      ReferenceError: the reference set is missing, corrupt or inconsistent, or it is the
        installed set and its manifest differs from the pinned sha256.
      UsageError: a pattern matches nothing; no selected case supports the statistical mode.
    """
    ref = store.open_reference(reference_root, check=True)
    if ref.installed and not ref.shipped:
        raise store.ReferenceError(
            f"the installed reference set {ref.root} was modified: its manifest.json has sha256 "
            f"{ref.manifest_sha256}, lrtdense pins {SHIPPED_MANIFEST_SHA256} (reinstall lrtdense)")
    notes = [] if ref.installed else _provenance(ref)
    source = results if callable(results) else _folder_source(results)
    names = select_cases(ref.names, patterns)
    rows, eligible = [], 0
    for name in names:  # one case in memory at a time
        case = read_checked_case(ref, name, statistical)
        if case is None:
            continue
        eligible += 1
        rows.extend(case_rows(case, source, statistical, selection or families.ALL))
    if statistical and not eligible:
        raise UsageError(f"none of the {len(names)} selected cases supports the statistical "
                         f"mode; eligible: {_statistical.describe_eligible()}")
    return Report(rows, notes, ref.shipped, ref.manifest_sha256)


def read_checked_case(ref, name, statistical=False):
    """Case ``name`` of the open reference set ``ref`` as a ReferenceCase, its consistency checked
    (dtypes, tolerances; in statistical mode that its model fits its params), or None in
    statistical mode for a case that is not eligible.

    Raises:
      ReferenceError: the case is corrupt or inconsistent.
    """
    case = ReferenceCase(name, *store.read_case(ref, name))
    if statistical and not _statistical.eligible(case.meta):
        return None
    _check_case(case.meta, case.expected, name)
    if statistical:
        _statistical.check_case(name, case.meta, case.inputs, case.expected)
    return case


def _folder_source(results_root):
    """``results(case, statistical)`` reading ``RESULTS/<case>.npz`` or ``RESULTS/<case>/`` within
    ``port_results.result_bounds``."""
    def results(case, statistical):
        samples = (_statistical.sample_shapes(case.meta, case.inputs, case.expected) if statistical
                   else None)
        found = port_results.load_results(
            results_root, case.name, port_results.result_bounds(case.expected, samples))
        if not found:
            raise port_results.ResultsError(f"no results for this case in {results_root}")
        return found
    return results


def case_rows(case, source, statistical=False, selection=families.ALL):
    """The rows of one case (a ReferenceCase): what ``selection`` covers compared with what
    ``source(case, statistical)`` returns, the rest "not implemented". A ResultsError from the
    source is one failing row (quantity "*")."""
    name, meta, expected = case.name, case.meta, case.expected
    try:
        family = families.family_of(meta)
    except ValueError as err:
        raise store.ReferenceError(str(err)) from None
    keys = list(expected)
    if statistical:
        keys = ["samples/*"] + _statistical.deterministic_keys(meta, expected)
    wanted = [k for k in keys if selection.covers_case(family, meta["dtype"])
              and selection.covers_quantity(k)]
    rows = [Row(name, k, status=NOT_IMPLEMENTED) for k in keys if k not in wanted]
    if wanted:
        try:
            results = source(case, statistical)
        except port_results.ResultsError as err:
            results, rows = None, rows + [Row(name, "*", note=str(err))]
        if results is not None:
            rows.extend(_compare_case(case, results, statistical, wanted))
    for r in rows:
        r.family = family
    return rows


def _compare_case(case, results, statistical, wanted):
    """The compared rows of ``wanted`` keys ("samples/*": the statistical families' rows)."""
    name, rows = case.name, []
    if statistical and "samples/*" in wanted:
        rows, _ = _statistical.check(name, case.meta, case.inputs, case.expected, results)
    for key in wanted:
        if key == "samples/*":
            continue
        if key not in results:
            rows.append(Row(name, key, note="missing from the port's results"))
        else:
            rows.append(compare(name, key, results[key], case.expected[key],
                                case.meta["tolerances"][key]))
    return rows


def verify(reference_root, results, patterns=None, statistical=False, selection=None):
    """``run(...).rows``: the table's rows (see ``run``)."""
    return run(reference_root, results, patterns, statistical, selection).rows
