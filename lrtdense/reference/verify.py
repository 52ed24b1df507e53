"""Generating the reference set and verifying a port's results against it.

``generate(root)`` writes every case of ``lrtdense.reference.cases`` and the manifest.
``verify(reference_root, results_root)`` compares every expected quantity of every case with the
port's results using the case's tolerances: a quantity passes when
|port - ref| <= atol + rtol * |ref| element-wise (NaN only where the reference is NaN). It returns
rows (case, quantity, max abs error, max rel error, max ULPs, worst index, status).

``verify(..., statistical=True)`` is for ports that cannot inject noise: for the
local-reparameterization cases with a linear activation and no Normal bias, the port provides
``samples/outputs`` (S, ...) drawn with its own randomness, and each element's sample mean and
variance are tested against the analytic x @ loc + b and (x**2) @ scale**2 with bounds from the
number of draws (Bonferroni-corrected over the elements, overall false-alarm rate 1e-6).
Deterministic quantities (``outputs/mean``, ``kl/*``) are still compared exactly.
"""
import dataclasses
import fnmatch
import os
import shutil

import numpy as np
from scipy import stats

from lrtdense.distributions import posterior_scale
from lrtdense.reference import cases as _cases
from lrtdense.reference import store

__all__ = ["generate", "verify", "Row", "compare", "format_table", "statistical_cases"]


def generate(root, names=None):
    """Writes the reference set (all cases, or ``names``) into ``root``. Returns the manifest."""
    names = sorted(_cases.CASES) if names is None else names
    cases_dir = os.path.join(root, "cases")
    if os.path.isdir(cases_dir):
        shutil.rmtree(cases_dir)
    written = {}
    for name in names:
        meta, inputs = _cases.build(_cases.CASES[name])
        expected = _cases.compute(meta, inputs)
        meta["tolerances"] = _cases.tolerances_for(meta["dtype"], expected)
        written[name] = store.write_case(root, name, meta, inputs, expected)
    return store.write_manifest(root, written)


@dataclasses.dataclass
class Row:
    case: str
    quantity: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    ulps: float = float("nan")
    worst: str = ""
    status: str = "FAIL"
    note: str = ""

    @property
    def passed(self):
        """Whether the row's status is "pass"."""
        return self.status == "pass"


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
    """One row: the port's array ``got`` against the reference ``ref`` within ``tol``."""
    row = Row(case, quantity)
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
    rel = err / np.maximum(np.abs(r64), np.finfo(np.float64).tiny)
    row.max_abs = float(np.max(err)) if err.size else 0.0
    row.max_rel = float(np.max(rel)) if rel.size else 0.0
    row.ulps = ulp_distance(got.astype(ref.dtype) if got.dtype.kind == "f" else got, ref)
    bad = ~(err <= tol["atol"] + tol["rtol"] * np.abs(r64))
    if err.size:
        worst = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0) if bad.any() else err)),
                                 err.shape)
        row.worst = str(tuple(int(i) for i in worst)) if err.ndim else "()"
    if bad.any():
        row.note = (f"{int(bad.sum())} of {bad.size} elements outside atol={tol['atol']:.2g} + "
                    f"rtol={tol['rtol']:.2g}*|ref|")
        if nan_mismatch.any():
            row.note += f"; {int(nan_mismatch.sum())} NaN where the reference has none (or vice versa)"
    else:
        row.status = "pass"
    return row


def statistical_cases(meta):
    """True if a case supports the statistical mode (LRT layer, linear, no Normal bias)."""
    if meta["kind"] != "layer" or meta["model"]["class_name"] != "DenseLocalReparameterization":
        return False
    cfg = meta["model"]["config"]
    bias = cfg.get("bias_posterior")
    return cfg.get("activation") in ("linear", None) and (bias is None or bias["type"] == "deterministic")


def _statistical_row(name, meta, inputs, samples, alpha=1e-6):
    """Sample mean and variance of ``samples`` (S, ...) against the analytic LRT moments."""
    row = Row(name, "samples/outputs (statistical)")
    x = inputs["x"].astype(np.float64)
    loc = inputs["params/kernel_posterior_loc"].astype(np.float64)
    # the scale in the case's own dtype (its softplus thresholds and eps), then the moments in float64
    scale = posterior_scale(inputs["params/kernel_posterior_untransformed_scale"]).astype(np.float64)
    mean = x @ loc + (inputs["params/bias_posterior_loc"] if "params/bias_posterior_loc" in inputs else 0)
    var = (x ** 2) @ scale ** 2
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != mean.ndim + 1 or samples.shape[1:] != mean.shape or samples.shape[0] < 100:
        row.note = f"expected samples of shape (S >= 100, {mean.shape}), got {samples.shape}"
        return row
    s = samples.shape[0]
    per = alpha / (2 * mean.size)  # Bonferroni over elements and the two tests
    z = stats.norm.ppf(1 - per / 2)
    m_hat, v_hat = samples.mean(0), samples.var(0, ddof=1)
    zero = var == 0
    mean_err = np.abs(m_hat - mean)
    mean_bad = np.where(zero, mean_err > 1e-6 * (1 + np.abs(mean)), mean_err > z * np.sqrt(var / s))
    lo = stats.chi2.ppf(per / 2, s - 1) / (s - 1)
    hi = stats.chi2.ppf(1 - per / 2, s - 1) / (s - 1)
    ratio = np.where(zero, 1.0, v_hat / np.where(zero, 1.0, var))
    var_bad = np.where(zero, v_hat > 1e-12 * (1 + mean ** 2), (ratio < lo) | (ratio > hi))
    row.max_abs = float(mean_err.max())
    row.max_rel = float(np.max(np.abs(ratio - 1)))
    if mean_bad.any() or var_bad.any():
        row.note = (f"{int(mean_bad.sum())} means outside +-{z:.2f} standard errors, "
                    f"{int(var_bad.sum())} variances outside the chi-square interval "
                    f"[{lo:.3f}, {hi:.3f}] x analytic (S={s})")
    else:
        row.status = "pass"
        row.note = f"S={s}, variance ratio bounds [{lo:.3f}, {hi:.3f}]"
    return row


def verify(reference_root, results_root, patterns=None, statistical=False):
    """Compares a port's results with the reference set. Returns a list of Rows.

    Raises:
      ReferenceError: the reference set is missing, or a file fails its manifest checksum.
    """
    manifest = store.read_manifest(reference_root, check=True)
    names = sorted(manifest["cases"])
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not names:
            raise store.ReferenceError(f"no reference case matches {patterns}")
    rows = []
    for name in names:
        meta, inputs, expected = store.read_case(reference_root, name)
        if statistical and not statistical_cases(meta):
            continue
        try:
            results = store.load_results(results_root, name, list(expected) + ["samples/outputs"])
        except store.ReferenceError as err:
            rows.append(Row(name, "*", note=str(err)))
            continue
        if not results:
            rows.append(Row(name, "*", note=f"no results for this case in {results_root}"))
            continue
        keys = list(expected)
        if statistical:
            keys = [k for k in keys if k == "outputs/mean" or k.startswith("kl/")]
            if "samples/outputs" in results:
                rows.append(_statistical_row(name, meta, inputs, results["samples/outputs"]))
            else:
                rows.append(Row(name, "samples/outputs (statistical)", note="missing"))
        for key in keys:
            if key not in results:
                rows.append(Row(name, key, note="missing from the port's results"))
            else:
                rows.append(compare(name, key, results[key], expected[key], meta["tolerances"][key]))
    return rows


def format_table(rows):
    """A Markdown table of the rows, failures first noted at the end."""
    head = "| case | quantity | max abs err | max rel err | ULPs | worst index | result |"
    lines = [head, "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        ulps = "" if np.isnan(r.ulps) else f"{r.ulps:.0f}"
        lines.append(f"| {r.case} | {r.quantity} | {r.max_abs:.3g} | {r.max_rel:.3g} | {ulps} | "
                     f"{r.worst} | {'pass' if r.passed else 'FAIL: ' + r.note} |")
    failed = sum(not r.passed for r in rows)
    lines.append("")
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
