"""Rows of the verification table: one comparison of a port's array with the reference.

``compare`` is the one place a port's value meets a reference value (``verify``, ``assert_case``
and the statistical mode's deterministic quantities all call it); ``format_table`` prints rows
with the totals line ``N passed, M failed`` (N + M is always the number of rows).
"""
import dataclasses

import numpy as np

__all__ = ["Row", "PASS", "FAIL", "NOT_IMPLEMENTED", "compare", "ulp_distance", "format_table",
           "table_lines", "totals_line"]


PASS, FAIL, NOT_IMPLEMENTED = "pass", "FAIL", "not implemented"


@dataclasses.dataclass
class Row:
    """One case and quantity: its errors, its verdict (``status``: "pass", "FAIL" or "not
    implemented", a quantity outside what the port declares) and why (``note``)."""
    case: str
    quantity: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    ulps: float = float("nan")
    worst: str = ""
    status: str = FAIL
    note: str = ""
    family: str = ""
    tolerance: dict = None

    @property
    def passed(self):
        """True when this row's quantity is within its tolerance."""
        return self.status == PASS

    @property
    def failed(self):
        """True when this row's quantity is wrong, missing or unreadable."""
        return self.status == FAIL


def ulp_distance(a, b):
    """Max distance in units in the last place between arrays of one float dtype."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.dtype.kind != "f" or a.size == 0:
        return float("nan")
    ints = {4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(v):
        i = v.view(ints).astype(np.int64)
        return np.where(i < 0, np.iinfo(ints).min - i, i)

    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return float("nan")
    return float(np.max(np.abs(ordered(a[finite]) - ordered(b[finite]))))


def compare(case, quantity, got, ref, tol):
    """One row: the port's array ``got`` against the reference ``ref`` within ``tol``.

    ``got`` must have ``ref``'s shape and dtype (float32 results in a float64 case fail, naming
    both dtypes: they would hide what float32 rounding does, or lose what float64 must hold).
    """
    row = Row(case, quantity, tolerance=dict(tol))
    got = np.asarray(got)
    if got.shape != ref.shape:
        row.note = f"shape {got.shape}, expected {ref.shape}"
        return row
    if got.dtype.kind not in "fiu":
        row.note = f"dtype {got.dtype} is not numeric"
        return row
    g64, r64 = got.astype(np.float64), ref.astype(np.float64)
    nan_mismatch = np.isnan(g64) != np.isnan(r64)
    err = np.where(np.isnan(r64) & np.isnan(g64), 0.0, np.abs(g64 - r64))
    err = np.where(nan_mismatch, np.inf, err)
    with np.errstate(over="ignore"):  # an error of 1e300 on a reference of 1e-10 is inf
        rel = err / np.maximum(np.abs(r64), np.finfo(np.float64).tiny)
    row.max_abs = float(np.max(err)) if err.size else 0.0
    row.max_rel = float(np.max(rel)) if rel.size else 0.0
    row.ulps = ulp_distance(got.astype(ref.dtype) if got.dtype.kind == "f" else got, ref)
    bad = ~(err <= tol["atol"] + tol["rtol"] * np.abs(r64))
    if err.size:
        worst = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0) if bad.any() else err)),
                                 err.shape)
        row.worst = str(tuple(int(i) for i in worst)) if err.ndim else "()"
    notes = []
    if got.dtype != ref.dtype:
        notes.append(f"dtype {got.dtype}, expected {ref.dtype} (the case's dtype)")
    if bad.any():
        notes.append(f"{int(bad.sum())} of {bad.size} elements outside atol={tol['atol']:.2g} + "
                     f"rtol={tol['rtol']:.2g}*|ref|")
        if nan_mismatch.any():
            notes.append(f"{int(nan_mismatch.sum())} NaN where the reference has none (or vice "
                         f"versa)")
    if notes:
        row.note = "; ".join(notes)
    else:
        row.status = PASS
    return row


def format_table(rows, notes=()):
    """A Markdown table of the rows, then the totals line ("N passed, M failed", N + M rows)."""
    lines = [f"note: {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines + table_lines(rows) + ["", totals_line(rows)])


def table_lines(rows):
    """The lines of the Markdown table of ``rows`` (those not implemented left out)."""
    lines = ["| case | quantity | max abs err | max rel err | ULPs | worst index | result |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        if r.status == NOT_IMPLEMENTED:
            continue
        ulps = "" if np.isnan(r.ulps) else f"{r.ulps:.0f}"
        lines.append(f"| {r.case} | {r.quantity} | {r.max_abs:.3g} | {r.max_rel:.3g} | {ulps} | "
                     f"{r.worst} | {'pass' if r.passed else 'FAIL: ' + r.note} |")
    return lines


def totals_line(rows):
    """"N passed, M failed" (and ", K not implemented" when a port declared less than all)."""
    failed = sum(r.failed for r in rows)
    missing = sum(r.status == NOT_IMPLEMENTED for r in rows)
    return (f"{sum(r.passed for r in rows)} passed, {failed} failed"
            + (f", {missing} not implemented" if missing else ""))
