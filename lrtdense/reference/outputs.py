"""The files verify writes for CI: ``--json`` (schema ``lrtdense-verify/1``), ``--junit``, and how
every output file is written (``write_atomic``).

JSON (``to_json``; the JSON Schema is ``verify.schema.json`` beside this module, ``SCHEMA_PATH``):
``{"schema": "lrtdense-verify/1", "rows": [...], "summary": {...}, "badge": {...}}``. A row is
``{case, family, quantity, status, max_abs, max_rel, ulps, worst, tolerance: {rtol, atol} or
null, note}`` with ``status`` "pass", "FAIL" or "not implemented". Numbers that are not finite
are written as JSON allows: NaN (an error not computed: missing, wrong shape or dtype) as
``null``, infinities as the strings ``"Infinity"`` and ``"-Infinity"`` (an error of inf: NaN in
one array and not in the other). ``badge`` is a shields.io endpoint object
(``jq .badge verify.json > badge.json``): message "passed/rows", brightgreen when every row of
the shipped set passed, yellow when none failed but some are not implemented (or the set is
not the shipped one), red when a row failed.

JUnit XML (``to_junit``): one ``testcase`` per row, ``classname`` family.case and ``name`` the
quantity; a failing row has a ``failure`` with its note, a row not implemented is ``skipped``.
"""
import math
import os
import tempfile
import xml.etree.ElementTree as ET

import lrtdense
from lrtdense.reference.report import FAIL, NOT_IMPLEMENTED
from lrtdense.reference.summary import coverage, family_summary

__all__ = ["SCHEMA", "SCHEMA_PATH", "to_json", "to_junit", "badge", "write_atomic"]

SCHEMA = "lrtdense-verify/1"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "verify.schema.json")


def _number(x):
    """A float as JSON holds it: NaN -> None, +-inf -> "Infinity" / "-Infinity"."""
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _record(row):
    tol = row.tolerance
    return {"case": row.case, "family": row.family, "quantity": row.quantity,
            "status": row.status, "max_abs": _number(row.max_abs),
            "max_rel": _number(row.max_rel), "ulps": _number(row.ulps), "worst": row.worst,
            "tolerance": (None if not tol else {"rtol": _number(tol["rtol"]),
                                                 "atol": _number(tol["atol"])}),
            "note": row.note}


def _counts(rows):
    return {"rows": len(rows), "passed": sum(r.passed for r in rows),
            "failed": sum(r.failed for r in rows),
            "not_implemented": sum(r.status == NOT_IMPLEMENTED for r in rows)}


def badge(rows, shipped=True):
    """The shields.io endpoint object: {"schemaVersion": 1, "label", "message", "color"}."""
    c = _counts(rows)
    color = ("red" if c["failed"] or not c["passed"] else
             "brightgreen" if c["passed"] == c["rows"] and shipped else "yellow")
    return {"schemaVersion": 1, "label": "lrtdense conformance",
            "message": f"{c['passed']}/{c['rows']}", "color": color}


def to_json(report, hints=()):
    """The ``--json`` document of a ``verify.Report`` and the ``hints.Hint``s that apply."""
    rows = report.rows
    return {
        "schema": SCHEMA,
        "rows": [_record(r) for r in rows],
        "summary": {
            "counts": _counts(rows),
            "families": family_summary(rows),
            "coverage": coverage(rows),
            "hints": [{"name": h.name, "text": h.text} for h in hints],
            "notes": list(report.notes),
            "reference": {"manifest_sha256": report.manifest_sha256, "shipped": report.shipped},
            "lrtdense_version": lrtdense.__version__,
        },
        "badge": badge(rows, report.shipped),
    }


def to_junit(rows):
    """The ``--junit`` document (an XML string) of verify's rows."""
    c = _counts(rows)
    suites = ET.Element("testsuites", name="lrtdense reference verify")
    suite = ET.SubElement(suites, "testsuite", name="lrtdense conformance", tests=str(c["rows"]),
                          failures=str(c["failed"]), errors="0",
                          skipped=str(c["not_implemented"]))
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"{r.family}.{r.case}", name=r.quantity)
        if r.status == FAIL:
            failure = ET.SubElement(case, "failure", message=r.note)
            failure.text = (f"max abs err {r.max_abs:.3g}, max rel err {r.max_rel:.3g}, worst "
                            f"index {r.worst or '-'}, tolerance {r.tolerance}: {r.note}")
        elif r.status == NOT_IMPLEMENTED:
            ET.SubElement(case, "skipped", message="not implemented")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_atomic(path, text):
    """Writes ``text`` to ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader sees the old file or the new one, never a part.

    Raises:
      OSError: the file could not be written (the temporary file is removed).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would differ from a plain open's
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
