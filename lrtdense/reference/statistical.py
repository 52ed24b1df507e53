"""The statistical mode of ``verify``: for ports that cannot take noise as an input.

For an eligible case (one layer of any of the six classes, linear activation: SPEC.md section 7)
the port runs S >= 10000 independent sample-mode calls on the case's x with its own generator
and writes, per draw s:

* ``samples/outputs`` (S, ..., units): the outputs;
* ``samples/grads/<param>`` (S, *param.shape) and ``samples/grads/x`` (S, *x.shape): the
  gradients of the statistical objective of that draw,
  `L_s = sum(g * out_s) + 0.5 * sum(out_s ** 2) + kl_s` (the quadratic term makes the expected
  gradient depend on the variance, so a wrong scale gradient shows in its mean);
* ``samples/kl`` (S,), where the KL is random (a Monte Carlo divergence): kl_s, the draw's own
  kl/total (``statistical_kl``);

every array in the case's dtype (another fails as ``report.compare`` fails it). The port's
noise: standard normal N(0, 1) for every Gaussian draw and fair +-1 signs for Flipout's
sign_input and sign_output, fresh for every call (independent across draws).

With a linear activation every output element is exactly Gaussian for all six layers (for
Flipout, s_out * N(0, v) is N(0, v) whatever the signs), with mean and covariance known in closed
form (``moments``). Twelve families of tests, each at alpha = ALPHA_PER_CASE / 12,
Bonferroni-split over its elements (two-sided); 11 and 12 are ``statistical_kl``'s:

1. ``mean``: each element's sample mean within z * sigma / sqrt(S) of the analytic mean (exact:
   the sample mean of Gaussians is Gaussian). Elements with variance 0 (all-zero input rows) must
   equal the mean in every draw.
2. ``variance``: each element's sample variance within the chi-square(S - 1) interval around the
   analytic variance (exact).
3. ``covariance``: for every pair of distinct elements, the sample covariance (about the analytic
   means) within z standard errors of the analytic covariance: 0 between rows for LRT, Flipout
   and the dropout layers, `x_i (scale**2) x_j'` between rows for Reparameterization, plus
   `bias_scale**2` for a Normal bias shared by the batch. This catches noise shared across rows and
   a batch-shared weight draw passed off as LRT. Standard error from the S products (CLT).
4. ``normality``: each element's standardized draws against N(0, 1) by the Kolmogorov-Smirnov
   distance, rejected above sqrt(log(2 / a) / (2 S)): the Dvoretzky-Kiefer-Wolfowitz inequality
   with Massart's constant, a bound valid for every S, not an approximation.
5. ``kurtosis``: the per-draw average of `z**4` over the elements has mean 3 under the null; its
   sample mean within z standard errors (CLT over the S independent draws; the elements of one
   draw may be correlated). Catches non-Gaussian noise of the right variance (uniform: 1.8).
6. ``quartic``: the pooled joint fourth moment of two rows and two units (``_quartic_row``):
   cov_ijk cov_ijk' / (sigma ...) for every class; catches a Flipout without sign_output,
   whose second moments are right.
7. ``gradients``: the mean of the per-draw gradients of every parameter and of x within z
   analytic standard errors sqrt(Var / S) (CLT) of the gradient of the expected objective,
   `E[L] = sum(g * mean) + 0.5 * sum(mean**2 + variance) + E[kl]`, computed by autograd from the
   closed-form moments; Var is family 8's.
8. ``gradient_spread``: each per-draw gradient element's mean squared deviation from that
   analytic mean at most z standard errors (CLT; from the draws' fourth moments about Var)
   above its exact variance Var (``statistical_grads``: the gradient is a quadratic polynomial
   in the noise). One-sided, the side whose tail the normal approximation overstates
   (``statistical_grads.gradient_rows``). Catches noise added to the gradients, under which a
   bias passed when the mean was judged by the draws' own spread.
9. ``duplicates``: no two draws identical in every random element (``duplicates_row``): the
   count of coincident pairs below a limit from the case dtype's resolution (Markov's
   inequality; one pair fails wherever chance ties are negligible). Catches reused draws,
   such as the whole set tiled.
10. ``serial``: the lag-1 correlation of the standardized draws, averaged over the elements,
   within z analytic standard errors |R|_F / (L sqrt(S - 1)) of 0 (CLT). Catches each draw
   repeated in a row, and noise carried over from one call to the next.
11. ``kl_mean``: a random KL's per-draw mean against its expectation (CLT, own standard errors).
12. ``kl_covariance``: its covariance with each output element against Stein's (CLT).

False alarms: families 1, 2, 4 and 9 are exact bounds; 3, 5, 6, 7, 8, 10, 11 and 12 use the normal
approximation to a mean of S >= 10000 terms with finite moments of every order (independent, or
for 10 uncorrelated martingale differences), whose tail error at the thresholds used (|z| ~ 6 to
7) is kept inside the budget by running them at a tenth of their share (``CLT_MARGIN``). So a
correct port fails a case with probability <= ALPHA_PER_CASE = 1e-8 and a run of at most
MAX_CASES = 100 statistical cases with probability <= 1e-6 (union bound).
"""

import autograd.numpy as anp
import numpy as np
from autograd import grad

from lrtdense import tree
from lrtdense.bounded import short
from lrtdense.reference import store
from lrtdense.reference.generation import model_from_meta
from lrtdense.reference import statistical_training as training
from lrtdense.reference.report import Row
from lrtdense.reference.statistical_grads import gradient_rows, gradient_variance, untested
from lrtdense.reference.statistical_kl import expected_kl, kl_rows, random_kl
from lrtdense.reference.statistical_moments import moments
from lrtdense.reference.statistical_rows import (ALPHA_PER_CASE, ALPHA_PER_RUN, CLT_FAMILIES,
                                                 CLT_MARGIN, FAMILIES, MAX_CASES, covariance_row,
                                                 duplicates_row, family_alpha, kurtosis_row,
                                                 live_covariance, mean_row, pooled_mean_row,
                                                 normality_row, row, serial_row, variance_row)

__all__ = ["eligible", "describe_eligible", "check", "check_case", "moments", "expected_objective",
           "sample_keys", "sample_shapes", "deterministic_keys", "ALPHA_PER_RUN", "ALPHA_PER_CASE", "MAX_CASES",
           "MIN_SAMPLES", "FAMILIES", "CLT_FAMILIES", "CLT_MARGIN", "family_alpha"]

MIN_SAMPLES = 10000
CLASSES = ("DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout",
           "DenseVariationalDropout", "DenseSparseVariationalDropout", "DenseVariational")
KINDS = ("layer", "edge", "dropout", "priors", "dense_variational")


def eligible(meta):
    """True if a case supports the statistical mode: one layer of a known class, linear, or a
    training case of one such layer (``statistical_training.eligible``)."""
    if meta.get("kind") == "training":
        return training.eligible(meta)
    if meta.get("kind") not in KINDS:
        return False
    model = meta.get("model") or {}
    if not isinstance(model, dict) or model.get("class_name") not in CLASSES:
        return False
    config = model.get("config", {})
    return isinstance(config, dict) and config.get("activation") in ("linear", None)


def describe_eligible():
    """A line saying which cases the statistical mode checks (for messages and ``list``)."""
    return ("single-layer cases (any of the six layer classes, DenseVariational included) with a "
            "linear activation, and training cases of one such layer with a closed-form KL; "
            "`lrtdense reference list` shows them with kind layer, edge, dropout, priors, "
            "dense_variational or training")


def sample_keys(meta, inputs):
    """The keys a port writes for a statistical case with these inputs: ``samples/kl`` too
    where the case's KL is random (``statistical_kl.random_kl``); a training case's
    ``statistical_training.sample_shapes``."""
    if meta.get("kind") == "training":
        return list(training.sample_shapes(inputs))
    params = sorted(k[len("params/"):] for k in inputs if k.startswith("params/"))
    return (["samples/outputs"] + [f"samples/grads/{p}" for p in params] + ["samples/grads/x"]
            + (["samples/kl"] if random_kl(meta) else []))


def sample_shapes(meta, inputs, expected):
    """{key: the shape of one draw} for the keys of ``sample_keys``: a port writes (S, *shape)
    (``samples/kl`` listed for every case with a ``kl_mean/total``, where it may be written)."""
    if meta.get("kind") == "training":
        return training.sample_shapes(inputs)
    shapes = {"samples/outputs": expected["outputs/sample"].shape}
    if "kl_mean/total" in expected:
        shapes["samples/kl"] = ()
    shapes.update({f"samples/grads/{k[len('params/'):]}": v.shape
                   for k, v in inputs.items() if k.startswith("params/")})
    shapes["samples/grads/x"] = inputs["x"].shape
    return shapes


def expected_objective(meta, params, x, g):
    """`E[sum(g * out) + 0.5 * sum(out**2) + kl]`, differentiable in params and x (autograd);
    a random KL's expectation is ``statistical_kl.expected_kl``."""
    mean, var, _ = moments(meta, params, x)
    g2 = anp.reshape(g, mean.shape)
    return anp.sum(g2 * mean) + 0.5 * anp.sum(mean * mean + var) + expected_kl(meta, params)


def deterministic_keys(meta, expected):
    """The expected keys a statistical case still compares exactly: the outputs but the sampled
    ones, ``kl_mean/*``, and ``kl/*`` unless the KL is random (the case's own draw's KL, which a
    port that draws its own noise cannot reproduce); none of a training case (every step's
    values follow the draws)."""
    if meta.get("kind") == "training":
        return []
    random = random_kl(meta)
    return [k for k in expected if k.startswith("outputs/") and k != "outputs/sample"
            or k.startswith("kl_mean/") or k.startswith("kl/") and not random]


def check_case(name, meta, inputs, expected):
    """Raises ReferenceError unless the case's model builds and its params, x and g fit it (what
    the statistical checks compute with: a re-signed set may hold anything there)."""
    if meta.get("kind") == "training":
        training.check_case(name, meta, inputs, expected)
        return
    if "x" not in inputs or "g" not in inputs or "outputs/sample" not in expected:
        raise store.ReferenceError(f"case {name}: a statistical case needs inputs/x, inputs/g "
                                   f"and expected/outputs/sample")
    try:
        layer = model_from_meta(meta)
        x = inputs["x"]
        layer.check_params(tree.unflatten(inputs, "params"), x.shape[-1])
        out_shape = layer.compute_output_shape(x.shape)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as err:
        raise store.ReferenceError(f"case {name}: its model and params do not fit together "
                                   f"({type(err).__name__}: {short(str(err))}); the "
                                   f"reference set is corrupt") from None
    for key in ("outputs/sample", "g"):
        shape = expected[key].shape if key in expected else inputs[key].shape
        if tuple(shape) != tuple(out_shape) or inputs["x"].dtype != np.dtype(layer.dtype):
            raise store.ReferenceError(f"case {name}: {key} has shape {tuple(shape)} and x dtype "
                                       f"{inputs['x'].dtype}; the model gives {tuple(out_shape)} "
                                       f"{layer.dtype}: the reference set is corrupt")


# ----------------------------------------------------------------------------------- tests

def _present(name, key, results, shape, dtype):
    """A failing row if ``key`` is missing from ``results`` or not ``_finite``, else None."""
    if key not in results:
        return Row(name, key, note="missing from the port's results")
    return _finite(name, key, results[key], shape, dtype)


def _kl_rows(name, meta, params, x, results, outputs):
    """The two KL families' rows (``statistical_kl``), "not random" rows where the KL is not."""
    if not random_kl(meta):
        return [row(name, f, 0, 0.0, 1.0, "the KL is not random: kl/* compared exactly", "")
                for f in ("kl_mean", "kl_covariance")]
    problem = _present(name, "samples/kl", results, (), meta["dtype"])
    if problem is None and np.shape(results["samples/kl"])[0] != outputs.shape[0]:
        problem = Row(name, "samples/kl", note=f"{np.shape(results['samples/kl'])[0]} draws, "
                                               f"samples/outputs has {outputs.shape[0]}")
    if problem is not None:
        return [problem]
    mean, var, _ = (np.asarray(v, dtype=np.float64) for v in moments(meta, params, x))
    dev = outputs.reshape((outputs.shape[0],) + mean.shape) - mean
    return kl_rows(name, meta, params, x, np.asarray(results["samples/kl"], dtype=np.float64),
                   dev, var)

def _finite(name, key, arr, shape, dtype):
    """A failing row if ``arr`` is not (S >= MIN_SAMPLES, *shape) of finite numbers of the case's
    ``dtype`` (the rule and wording of ``report.compare``), else None."""
    arr = np.asarray(arr)
    if arr.ndim != len(shape) + 1 or arr.shape[1:] != tuple(shape) or arr.shape[0] < MIN_SAMPLES:
        return Row(name, key, note=f"expected shape (S >= {MIN_SAMPLES}, {', '.join(map(str, shape))}), "
                                   f"got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        return Row(name, key, note=f"dtype {arr.dtype} is not numeric")
    if arr.dtype != np.dtype(dtype):
        return Row(name, key, note=f"dtype {arr.dtype}, expected {np.dtype(dtype)} (the case's "
                                   f"dtype)")
    bad = ~np.isfinite(arr)
    if bad.any():
        return Row(name, key, note=f"{int(bad.sum())} NaN or inf among the {arr.size} sampled "
                                   f"values")
    return None


def check(name, meta, inputs, expected, results):
    """The statistical rows of one case. Returns (rows, deterministic keys still to compare)."""
    keys = deterministic_keys(meta, expected)
    if meta.get("kind") == "training":
        return training.check(name, meta, inputs, expected, results, _present), keys
    params = tree.unflatten(inputs, "params")
    x = inputs["x"]
    out_shape = expected["outputs/sample"].shape
    grad_keys = [f"samples/grads/{p}" for p in sorted(params)] + ["samples/grads/x"]
    shapes = {f"samples/grads/{p}": v.shape for p, v in params.items()}
    shapes["samples/grads/x"] = x.shape
    rows = []
    problem = _present(name, "samples/outputs", results, out_shape, meta["dtype"])
    if problem is None:
        outputs = np.asarray(results["samples/outputs"], dtype=np.float64)
        rows.extend(_output_rows(name, meta, params, x, outputs))
        rows.extend(_kl_rows(name, meta, params, x, results, outputs))
    else:
        rows.append(problem)
    grads, bad = {}, []
    for key in grad_keys:
        problem = _present(name, key, results, shapes[key], meta["dtype"])
        if problem is not None:
            bad.append(problem)
        else:
            grads[key] = np.asarray(results[key], dtype=np.float64)
    if bad:
        rows.extend(bad)
    else:
        rows.extend(_gradient_rows(name, meta, params, x, inputs["g"], grads))
    return rows, keys


def _output_rows(name, meta, params, x, samples):
    """The rows of the eight output families (1 to 6, 9 and 10 of the module docstring) for
    ``samples`` (S, ..., units), the port's S draws of the case's outputs, against the
    closed-form ``moments``. The batch is flattened to N rows: every element is one (row, unit)
    of (N, U); an element of variance 0 (such as one of an all-zero input row) is "not live"."""
    mean, var, cov = (np.asarray(v, dtype=np.float64) for v in moments(meta, params, x))
    s = samples.shape[0]
    n, u = mean.shape
    draws = samples.reshape(s, n, u)
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    live = var > 0
    dev = draws - mean
    # the live elements' draws standardized by the analytic moments: (S, number live)
    zstd = dev.reshape(s, n * u)[:, live.reshape(-1)] / np.sqrt(var.reshape(-1)[live.reshape(-1)])
    full = live_covariance(cov, live)
    corr = full / np.sqrt(np.outer(np.diag(full), np.diag(full)))
    return [mean_row(name, draws, dev, mean, var, rtol),
            variance_row(name, draws, var),
            covariance_row(name, dev, cov, live),
            normality_row(name, zstd),
            kurtosis_row(name, zstd),
            _quartic_row(name, meta, params, dev, var, cov),
            duplicates_row(name, draws, mean, var, meta["dtype"]),
            serial_row(name, zstd, corr)]


def _quartic_row(name, meta, params, dev, var, cov):
    """Joint fourth moments of two rows and two units, pooled: the per-draw mean over (i < j,
    k < k') of X_ik X_ik' X_jk X_jk' / (sigma_ik sigma_ik' sigma_jk sigma_jk'), X centered.
    It is cov_ijk cov_ijk' / (...) for every class: Isserlis's theorem for the Gaussian layers
    (the other two pairings are across units, uncorrelated); for Flipout every term holding a
    perturbation vanishes, since each (example, unit) has its own sign_output, leaving the shared
    bias's b_k b_k', which is cov_ijk cov_ijk' there. A Flipout without sign_output (the rows then
    share one dW up to input signs) has the right covariances but fails here."""
    s, n, u = dev.shape
    live_rows = [i for i in range(n) if np.all(var[i] > 0)]
    if len(live_rows) < 2 or u < 2:
        return row(name, "quartic", 0, 0.0, 1.0, "needs 2 random rows and 2 units: not "
                                                  "applicable", "")
    r = np.array(live_rows)
    zstd = dev[:, r, :] / np.sqrt(var[r])
    corr = cov[np.ix_(r, r)] / np.sqrt(var[r][:, None, :] * var[r][None, :, :])
    i, j = np.triu_indices(len(r), 1)
    k, k2 = np.triu_indices(u, 1)
    prod = (zstd[:, i][:, :, k] * zstd[:, i][:, :, k2] * zstd[:, j][:, :, k] * zstd[:, j][:, :, k2])
    want = float(np.mean(corr[i, j][:, k] * corr[i, j][:, k2]))
    return pooled_mean_row(name, "quartic", prod.reshape(s, -1).mean(1), want,
                           "the joint 4th moment of pairs of rows and units",
                           "rows not independent in the way the estimator makes them (Flipout "
                           "without sign_output?)")


def _gradient_rows(name, meta, params, x, g, grads):
    """The two gradient families (``statistical_grads``): the analytic mean of each per-draw
    gradient element is the gradient of ``expected_objective`` (autograd), its variance
    ``gradient_variance``."""
    analytic_p = grad(lambda p: expected_objective(meta, p, x, g))(params)
    mean = {f"samples/grads/{k}": np.asarray(v, dtype=np.float64) for k, v in analytic_p.items()}
    mean["samples/grads/x"] = np.asarray(
        grad(lambda xx: expected_objective(meta, params, xx, g))(x), dtype=np.float64)
    rtol = {"float64": 1e-12, "float32": 2e-5}[meta["dtype"]]
    return gradient_rows(name, grads, mean, gradient_variance(meta, params, x, g), rtol,
                         untested(meta, x))
