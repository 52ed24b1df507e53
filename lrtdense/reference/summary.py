"""What ``verify`` prints: a summary a porter can act on.

In this order: the notes on the reference set; the per-family summary (family | cases | rows
passed | failed | not implemented); the hints that apply (``lrtdense.reference.hints``); the
failing rows (every compared row with ``all_rows``: ``report.table_lines``); the coverage line
("coverage: 1 of 10 families, 99 of 992 rows (10%)": the families and rows the port implements,
among those checked); and last, as ever, the totals line ("N passed, M failed[, K not
implemented]", ``report.totals_line``), so that a script reading the last line keeps working.
"""
from lrtdense.reference.families import FAMILIES
from lrtdense.reference.report import NOT_IMPLEMENTED, table_lines, totals_line

__all__ = ["family_summary", "coverage", "coverage_line", "percent", "format_report"]


def family_summary(rows):
    """{family: {"cases", "passed", "failed", "not_implemented"}} for the families in ``rows``,
    in the order of ``FAMILIES`` (a family outside it, from a set of one's own, last)."""
    out = {}
    for r in rows:
        counts = out.setdefault(r.family, {"cases": set(), "passed": 0, "failed": 0,
                                           "not_implemented": 0})
        counts["cases"].add(r.case)
        key = ("passed" if r.passed else "failed" if r.failed else "not_implemented")
        counts[key] += 1
    order = {f: i for i, f in enumerate(FAMILIES)}
    return {f: {**out[f], "cases": len(out[f]["cases"])}
            for f in sorted(out, key=lambda f: (order.get(f, len(order)), f))}


def coverage(rows):
    """What the port implements among the rows checked: {"families", "families_total", "rows",
    "rows_total"}; a family counts when at least one of its rows was compared."""
    implemented = [r for r in rows if r.status != NOT_IMPLEMENTED]
    return {"families": len({r.family for r in implemented}),
            "families_total": len({r.family for r in rows}),
            "rows": len(implemented), "rows_total": len(rows)}


def percent(part, whole):
    """``part / whole`` as a whole percentage that reads 100 only when complete, 0 only when
    nothing (991 of 992: 99%)."""
    if whole == 0 or part == whole:
        return 100 if whole else 0
    return min(99, max(1 if part else 0, round(100 * part / whole)))


def coverage_line(rows):
    """"coverage: F of G families, R of S rows (P%)"."""
    c = coverage(rows)
    return (f"coverage: {c['families']} of {c['families_total']} families, {c['rows']} of "
            f"{c['rows_total']} rows ({percent(c['rows'], c['rows_total'])}%)")


def _summary_table(rows):
    lines = ["| family | cases | rows passed | failed | not implemented |",
             "|---|---:|---:|---:|---:|"]
    for family, c in family_summary(rows).items():
        lines.append(f"| {family} | {c['cases']} | {c['passed']} | {c['failed']} | "
                     f"{c['not_implemented']} |")
    return lines


def format_report(rows, notes=(), hints=(), all_rows=False):
    """The text verify prints (see the module docstring): ``hints`` are ``hints.Hint``s."""
    lines = [f"note: {n}" for n in notes] + ([""] if notes else []) + _summary_table(rows)
    if hints:
        lines += [""] + [f"hint: {h.text}" for h in hints]
    shown = rows if all_rows else [r for r in rows if r.failed]
    if shown:
        lines += [""] + (["failing rows (--all shows every row):"] if not all_rows else [])
        lines += table_lines(shown)
    return "\n".join(lines + ["", coverage_line(rows), totals_line(rows)])
