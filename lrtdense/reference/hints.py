"""Hints: where to look, for the bug patterns a verify report can recognise.

Each rule is one row of ``RULES``: a name, the line verify prints, and a test on the compared rows
(those neither passed nor failed, "not implemented", are left out before any rule sees them).
A rule fires only on failing rows, so a correct port never gets a hint. Several may fire at once;
they are printed in the order of ``RULES``, the most specific first.

| rule | fires when | where to look |
|---|---|---|
| ``dtype`` | a row failed because its array has another dtype than the case | the cast |
| ``extreme_scales`` | only ``*_extreme_scales`` cases fail | eps, softplus thresholds |
| ``zero_rows`` | a ``*_zero_rows`` gradient has NaN | the zero-variance convention |
| ``ties`` | only ``*_tie_*`` cases fail | activation derivatives at 0 |
| ``float32`` | only float32 cases fail (a float64 case passes) | precision, dtype |
| ``keras_adam`` | only the keras Adam form fails | alpha's float32 rounding |
| ``scale`` | ``outputs/mean`` passes, ``outputs/sample`` and ``kl/*`` fail | the posterior scale |
| ``noise`` | ``outputs/mean`` and ``kl/*`` pass, ``outputs/sample`` fails | the sampled term |
| ``backward`` | outputs and KL pass, gradients fail in most cases | the backward |

A case's dtype is read from its name (``lrt_32_basic``: float32), the naming of
``lrtdense.reference.cases``.
"""
import dataclasses
import re

from lrtdense.reference.report import NOT_IMPLEMENTED

__all__ = ["Hint", "RULES", "hints"]


@dataclasses.dataclass(frozen=True)
class Hint:
    """A bug pattern: its ``name``, the ``text`` printed (the pattern and where to look) and
    ``applies(compared, failed)``, a test on the compared rows and the failing ones among them."""
    name: str
    text: str
    applies: object


def _quantity(prefix):
    return lambda r: r.quantity.startswith(prefix)


_mean, _sample, _kl, _grads = (_quantity("outputs/mean"), _quantity("outputs/sample"),
                               _quantity("kl/"), _quantity("grads/"))


def _float32(row):
    return re.search(r"_32(_|$)", row.case) is not None


def _only(failed, test):
    """Some rows fail, and every failing row passes ``test``."""
    return bool(failed) and all(test(r) for r in failed)


def _passes_not_fails(compared, test):
    """Some rows pass ``test`` and none of them fails."""
    hit = [r for r in compared if test(r)]
    return bool(hit) and not any(r.failed for r in hit)


def _mostly_failing_grads(compared, failed):
    """The gradients fail in at least half of the cases that have gradient rows."""
    cases = {r.case for r in compared if _grads(r)}
    return bool(cases) and 2 * len({r.case for r in failed if _grads(r)}) >= len(cases)


RULES = (
    Hint("dtype", "results in another dtype than the case's: cast every array to the case's "
                  "dtype (case.json \"dtype\"; SPEC.md section 6)",
         lambda c, f: any("(the case's dtype)" in r.note for r in f)),
    Hint("extreme_scales", "only *_extreme_scales cases fail: look at eps and the softplus "
                           "thresholds (scale = softplus(u) + eps; SPEC.md section 2)",
         lambda c, f: _only(f, lambda r: r.case.endswith("_extreme_scales"))),
    Hint("zero_rows", "NaN in the gradients of a *_zero_rows case: the zero-variance convention "
                      "(the derivative of sqrt is 0 where the variance is 0; SPEC.md section 3)",
         lambda c, f: any(r.case.endswith("_zero_rows") and _grads(r) and "NaN" in r.note
                          for r in f)),
    Hint("ties", "only *_tie_* cases fail: the activation's derivative at 0 (relu'(0) = 0, "
                 "elu'(0) = 1; SPEC.md section 3, \"Ties\")",
         lambda c, f: _only(f, lambda r: "_tie_" in r.case)),
    Hint("float32", "only float32 cases fail: dtype and precision (compute in the case's dtype, "
                    "float32 rounding as the framework does; SPEC.md section 4)",
         lambda c, f: _only(f, _float32) and any(not _float32(r) for r in c)),
    Hint("keras_adam", "only the keras Adam form fails: alpha from the float32 roundings of lr, "
                       "b1, b2, eps added to sqrt(v) (SPEC.md section 3, \"Adam cases\")",
         lambda c, f: _only(f, lambda r: r.family == "adam" and r.quantity.startswith("keras/"))),
    Hint("scale", "outputs/mean passes while outputs/sample and kl/* fail: look at the posterior "
                  "scale (softplus(u) + eps; SPEC.md section 2)",
         lambda c, f: (_passes_not_fails(c, _mean) and any(map(_sample, f))
                       and any(map(_kl, f)))),
    Hint("noise", "outputs/mean and kl/* pass while outputs/sample fails: look at the sampled "
                  "term (the variance (x*x) @ scale**2, the noise and signs; SPEC.md section 3)",
         lambda c, f: (_passes_not_fails(c, _mean) and _passes_not_fails(c, _kl)
                       and any(map(_sample, f)))),
    Hint("backward", "outputs and kl/* pass while the gradients fail: look at the backward (the "
                     "gradients of sum(g * outputs) + KL; SPEC.md section 3, \"Gradients\")",
         lambda c, f: (_passes_not_fails(c, lambda r: _mean(r) or _sample(r))
                       and _passes_not_fails(c, _kl) and _mostly_failing_grads(c, f))),
)


def hints(rows):
    """The rules of ``RULES`` that apply to ``rows`` (verify's rows), in that order."""
    compared = [r for r in rows if r.status != NOT_IMPLEMENTED]
    failed = [r for r in compared if r.failed]
    return [rule for rule in RULES if rule.applies(compared, failed)]
