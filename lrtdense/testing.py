"""Helpers for checking a port of the layers against the reference set from its own pytest suite.

    import pytest
    from lrtdense.testing import reference_cases, assert_case

    @pytest.mark.parametrize("case", reference_cases("lrt_*"), ids=str)
    def test_my_port(case):
        results = my_port.run(case.model, case.x, case.params, case.noise, case.g)  # dict key -> array
        assert_case(case, results)

A ``ReferenceCase`` exposes the JSON metadata (``meta``, ``model``: {"class_name", "config"},
``dtype``), the inputs (``x``, ``g``, ``params`` and ``noise`` as nested dicts of arrays, and
``inputs`` flat) and the expected arrays (``expected``: dict key -> array, keys like
"outputs/sample", "kl/total", "grads/kernel_posterior_loc"). ``assert_case`` raises an
AssertionError whose message reports, per failing quantity, the max abs / rel error, the number of
failing elements and the worst elements with their reference and port values.
"""
import numpy as np

from lrtdense.reference import default_dir, store
from lrtdense.reference.reference_case import ReferenceCase
from lrtdense.reference.report import compare
from lrtdense.reference.verify import select_cases

__all__ = ["reference_cases", "assert_case", "ReferenceCase"]


def reference_cases(*patterns, root=None, check=True):
    """The reference cases (all, or those whose names match any case-sensitive glob in
    ``patterns``), from the shipped set unless ``root`` names another.

    Raises:
      lrtdense.reference.store.ReferenceError: the set is missing, corrupt or inconsistent (with
        ``check``, also a file that fails its sha256).
      lrtdense.reference.verify.UsageError: a pattern matches no case.
    """
    ref = store.open_reference(root or default_dir(), check=check)
    return [ReferenceCase(n, *store.read_case(ref, n)) for n in select_cases(ref.names, patterns)]


def assert_case(case, results, keys=None, max_report=5):
    """Asserts ``results`` (dict key -> array) matches ``case.expected`` within the tolerances.

    Every expected key (or those in ``keys``) must be present.
    """
    problems = []
    for key in keys or sorted(case.expected):
        ref = case.expected[key]
        if key not in results:
            problems.append(f"{key}: missing from the results")
            continue
        row = compare(case.name, key, results[key], ref, case.tolerances[key])
        if row.passed:
            continue
        lines = [f"{key}: {row.note}", f"  max abs error {row.max_abs:.6g}, max rel error "
                 f"{row.max_rel:.6g}, max ULPs {row.ulps:.0f}"]
        got = np.asarray(results[key], dtype=np.float64)
        if got.shape == ref.shape:
            r64 = ref.astype(np.float64)
            tol = case.tolerances[key]
            err = np.where(np.isnan(got) & np.isnan(r64), 0.0, np.abs(got - r64))
            err = np.where(np.isnan(got) != np.isnan(r64), np.inf, err)
            bad = ~(err <= tol["atol"] + tol["rtol"] * np.abs(r64))
            flat = np.argsort(np.where(bad, err, -1.0), axis=None)[::-1][:max_report]
            for i in flat:
                idx = np.unravel_index(i, ref.shape) if ref.ndim else ()
                if ref.ndim and not bad[idx]:
                    continue
                lines.append(f"  at {tuple(int(j) for j in idx)}: reference {r64[idx]!r}, "
                             f"port {got[idx]!r}, abs error {err[idx]:.3g}")
        problems.append("\n".join(lines))
    if problems:
        raise AssertionError(f"case {case.name} ({case.meta.get('description', '')}):\n"
                             + "\n".join(problems))
