"""The statistical mode of ``verify``, for ports that cannot take noise as an input.

(Being extended: see SPEC.md "Statistical mode".)
"""
import numpy as np
from scipy import stats

from lrtdense.distributions import posterior_scale
from lrtdense.reference.report import Row

__all__ = ["eligible", "describe_eligible", "check", "SAMPLE_KEYS", "ALPHA_PER_RUN"]

SAMPLE_KEYS = ("samples/outputs",)
ALPHA_PER_RUN = 1e-6


def eligible(meta):
    """True if a case supports the statistical mode (LRT layer, linear, no Normal bias)."""
    if meta["kind"] != "layer" or meta["model"]["class_name"] != "DenseLocalReparameterization":
        return False
    cfg = meta["model"]["config"]
    bias = cfg.get("bias_posterior")
    return cfg.get("activation") in ("linear", None) and (bias is None or bias["type"] == "deterministic")


def describe_eligible():
    return "DenseLocalReparameterization layer cases with a linear activation and no Normal bias"


def check(name, meta, inputs, expected, results):
    keys = [k for k in expected if k == "outputs/mean" or k.startswith("kl/")]
    if "samples/outputs" not in results:
        return [Row(name, "samples/outputs (statistical)", note="missing")], keys
    return [_lrt_row(name, inputs, results["samples/outputs"])], keys


def _lrt_row(name, inputs, samples, alpha=ALPHA_PER_RUN):
    row = Row(name, "samples/outputs (statistical)")
    x = inputs["x"].astype(np.float64)
    loc = inputs["params/kernel_posterior_loc"].astype(np.float64)
    scale = posterior_scale(inputs["params/kernel_posterior_untransformed_scale"]).astype(np.float64)
    mean = x @ loc + (inputs["params/bias_posterior_loc"] if "params/bias_posterior_loc" in inputs else 0)
    var = (x ** 2) @ scale ** 2
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != mean.ndim + 1 or samples.shape[1:] != mean.shape or samples.shape[0] < 100:
        row.note = f"expected samples of shape (S >= 100, {mean.shape}), got {samples.shape}"
        return row
    if not np.all(np.isfinite(samples)):
        row.note = f"{int((~np.isfinite(samples)).sum())} NaN or inf among the samples"
        return row
    s = samples.shape[0]
    per = alpha / (2 * mean.size)
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
