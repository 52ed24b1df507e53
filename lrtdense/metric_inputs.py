"""Input checks shared by the metric modules (``lrtdense.metrics``, ``lrtdense.uncertainty``):
one rule for targets, predictions, standard deviations and class probabilities, each refusal a
one-line message that names the input and what was expected.
"""
import numpy as np

__all__ = ["real_array", "target_pair", "std_array", "classification_pair",
           "probability_rows", "ceil_of_product", "PROB_SUM_TOLERANCE", "MAX_BINS"]

# Rows of probs must sum to 1 within this. Softmax in float32 and an average over samples are
# off by a few float32 ulps (~1e-6: each p_i carries a relative error of a few eps, and the p_i
# sum to 1); probabilities written with 4 decimals by another tool are off by up to k * 5e-5.
# The mistakes this catches (logits, unnormalised scores, the wrong axis) are off by far more,
# and a sum off by 1e-3 moves a confidence, hence the ECE, by at most 1e-3.
PROB_SUM_TOLERANCE = 1e-3

# The most equal-width bins a metric takes: the exact binning (``ceil_of_product``) needs B exact
# in float64.
MAX_BINS = 2 ** 53


def real_array(x, name):
    """``x`` as a float64 array; TypeError unless real numbers, ValueError naming the first NaN or
    infinite entry."""
    a = np.asarray(x)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
    a = a.astype(float, copy=False)
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a.reshape(-1)))
        raise ValueError(f"{name} must be finite; {bad.size} of {a.size} entries are NaN or "
                         f"infinite (the first at flat index {bad[0]}: {a.reshape(-1)[bad[0]]})")
    return a


def target_pair(y, mean):
    """(y, mean) as float64 arrays of one shape (N, ...), N >= 1; an (N,) y against an (N, 1)
    mean is taken as (N, 1)."""
    y, mean = real_array(y, "y"), real_array(mean, "mean")
    if y.ndim == 1 and mean.ndim == 2 and mean.shape[1] == 1:
        y = y[:, None]
    if y.shape != mean.shape:
        raise ValueError(f"targets of shape {y.shape} do not match predictions of shape {mean.shape}")
    if y.ndim == 0 or y.size == 0:
        raise ValueError(f"expected at least one target: y must have shape (N, ...) with N >= 1, "
                         f"got {y.shape}")
    return y, mean


def std_array(std, shape, name="std"):
    """``std`` broadcast to ``shape`` (an (N,) std against (N, 1) taken as (N, 1)); finite, > 0.
    ``name``: what the messages call it."""
    std = real_array(std, name)
    if std.ndim == 1 and len(shape) == 2 and shape[1] == 1 and std.shape[0] == shape[0]:
        std = std[:, None]
    try:
        std = np.broadcast_to(std, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {std.shape} does not match predictions of shape {shape}; "
                         f"expected a scalar or that shape") from None
    if not np.all(std > 0):
        raise ValueError(f"{name} must be > 0; its smallest entry is {std.min()}")
    return std


def classification_pair(labels, probs):
    """(labels (N,) integers in [0, k), probs (N, k) float64 in [0, 1] with rows summing to 1
    within ``PROB_SUM_TOLERANCE``), checked."""
    labels, probs = np.asarray(labels), real_array(probs, "probs")
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must have shape (N, k) with N, k >= 1, got {probs.shape}")
    if labels.shape == probs.shape and labels.dtype.kind in "iufb":
        raise TypeError(f"one-hot labels are refused: pass integer class indices of shape "
                        f"({probs.shape[0]},) (labels.argmax(axis=1)), got {labels.dtype} of "
                        f"shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    n, k = probs.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},) to match probs {probs.shape}, got "
                         f"{labels.shape}" + ("; pass labels.ravel()" if labels.size == n else ""))
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}) for {k} classes, got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels, probability_rows(probs, "probs")


def probability_rows(probs, name):
    """``probs`` (..., k) float64, checked: finite, in [0, 1], each row (last axis) summing to 1
    within ``PROB_SUM_TOLERANCE``. The caller checks the shape."""
    probs = real_array(probs, name)
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{probs.min()}, {probs.max()}]")
    sums = probs.sum(-1)
    worst = np.unravel_index(int(np.argmax(np.abs(sums - 1))), sums.shape)
    if abs(sums[worst] - 1) > PROB_SUM_TOLERANCE:
        row = int(worst[0]) if len(worst) == 1 else tuple(int(i) for i in worst)
        raise ValueError(f"each row of {name} must sum to 1 (within {PROB_SUM_TOLERANCE}); row "
                         f"{row} sums to {sums[worst]} (logits or unnormalised scores?)")
    return probs


def ceil_of_product(c, n):
    """ceil(c * n) exactly (int64) for float64 c in [0, 1], shape (N,), and an integer n in
    ``[1, 2**53]``.

    p = fl(c * n) has the ceiling of c * n unless p is an integer and c * n lies above it: no
    integer lies strictly between c * n and p, as ``every integer up to 2**53`` is a float64 and p is
    the nearest one. Where p is an integer, Dekker's two-product (NumPy has no fma) gives
    c * n - p exactly; it needs no underflow, true there since ``c >= 0.5 / n >= 2**-54``.
    """
    n = float(n)
    p = c * n
    ceil = np.ceil(p)
    on_integer = np.flatnonzero((p == ceil) & (p > 0))
    if on_integer.size:
        a, q = c[on_integer], p[on_integer]
        a_hi, a_lo = _split(a)
        n_hi, n_lo = _split(n)
        above = ((a_hi * n_hi - q) + a_hi * n_lo + a_lo * n_hi) + a_lo * n_lo > 0
        ceil[on_integer] += above
    return ceil.astype(np.int64)


def _split(a):
    """Veltkamp's split: a = hi + lo exactly, each with at most 26 significant bits."""
    t = 134217729.0 * a                 # 2**27 + 1
    hi = t - (t - a)
    return hi, a - hi
