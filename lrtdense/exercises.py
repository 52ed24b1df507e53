"""Exercises graded by the reference set: a learner's function, run on golden cases.

    from lrtdense.exercises import check_exercise

    def lrt_moments(x, loc, scale):          # the learner's answer
        return x @ loc, np.sqrt((x ** 2) @ (scale ** 2))

    check_exercise("lrt_moments", lrt_moments)   # prints a line per case, or what is wrong

Each exercise feeds the learner's function the inputs of a few reference cases (recorded
against TensorFlow Probability, ``lrtdense.testing.reference_cases``), turns its answer into the
quantities the case stores, and compares them with ``lrtdense.testing.assert_case`` under the
tolerances stored beside them. A failure names the quantity (``mean``, ``std``, ``kl``,
``params``), the case, the worst elements with the reference value and the learner's, and a
hint. The exercises (``EXERCISES``), with the signature the learner writes:

| name | the learner writes | graded by |
|---|---|---|
| ``lrt_moments`` | ``f(x, loc, scale) -> (mean, std)`` of ``x @ W``, ``W ~ N(loc, scale**2)`` | the outputs of LRT layers, zero rows included |
| ``kl_normal`` | ``f(loc, scale, prior_loc, prior_scale) -> KL`` summed over the elements | the kernel KL of LRT layers |
| ``kl_molchanov`` | ``f(log_alpha) -> KL`` summed, Molchanov et al.'s approximation (arXiv 1701.05369) | the KL of sparse variational dropout layers |
| ``adam_step`` | ``f(p, g, m, v, t, step_size, b1, b2, eps) -> (p, m, v)``, t from 1 | 50 steps of Adam's trajectory |
"""
import dataclasses
import re
from typing import Callable

import numpy as np

from lrtdense import activations, kernels
from lrtdense.dropout import DenseSparseVariationalDropout
from lrtdense.testing import ReferenceCase, assert_case, reference_cases

__all__ = ["check_exercise", "EXERCISES", "ExerciseResult"]


@dataclasses.dataclass(frozen=True)
class Exercise:
    """How one exercise is graded: its reference cases, how the learner's function's answer
    becomes {quantity: array}, which stored key each quantity is compared with, and a hint per
    quantity."""
    cases: tuple
    answer: Callable            # answer(func, case) -> {quantity: array}
    stored: dict                # {quantity: the case's expected key}
    shown: dict                 # {quantity: what the values in a failure report are}
    hints: dict                 # {quantity: hint}


@dataclasses.dataclass(frozen=True, repr=False)
class ExerciseResult:
    """What ``check_exercise`` found: ``passed`` (every case), ``wrong`` ([(case, quantity)]
    that failed) and ``report``, the text it printed."""
    passed: bool
    wrong: list
    report: str

    def __bool__(self):
        return self.passed

    def __repr__(self):           # short: a notebook shows it under the report it printed
        return f"ExerciseResult(passed={self.passed}, wrong={len(self.wrong)} (case, quantity))"


def _scale(u):
    return np.asarray(kernels.posterior_scale(u))


def _lrt_answer(func, case):
    """act(mean + bias) and act(mean + std * eps + bias): the case's outputs/mean and /sample."""
    p, config = case.params, case.model["config"]
    mean, std = (np.asarray(a, dtype=case.dtype) for a in func(
        case.x, p["kernel_posterior_loc"], _scale(p["kernel_posterior_untransformed_scale"])))
    act = activations.get(config["activation"])
    bias = p.get("bias_posterior_loc", 0)
    return {"mean": np.asarray(act(mean + bias)),
            "std": np.asarray(act(mean + std * case.noise["kernel"] + bias))}


def _kl_normal_answer(func, case):
    p, prior = case.params, case.model["config"]["kernel_prior"]
    return {"kl": np.asarray(func(p["kernel_posterior_loc"],
                                  _scale(p["kernel_posterior_untransformed_scale"]),
                                  prior["loc"], prior["scale"]))}


def _kl_molchanov_answer(func, case):
    layer = DenseSparseVariationalDropout.from_config(case.model["config"])
    return {"kl": np.asarray(func(np.asarray(layer.log_alpha(case.params))))}


def _adam_answer(func, case):
    """The kingma-form trajectory of w and b from the case's gradients, one step at a time."""
    h = case.meta["hyperparameters"]
    out = {}
    for name in ("w", "b"):
        p = case.inputs[f"init/{name}"].copy()
        m, v, path = np.zeros_like(p), np.zeros_like(p), []
        for t, g in enumerate(case.inputs[f"grads/{name}"], start=1):
            p, m, v = (np.asarray(a, dtype=np.float64) for a in func(
                p, g, m, v, t, h["step_size"], h["b1"], h["b2"], h["eps"]["kingma"]))
            path.append(p)
        out[f"params {name}"] = np.stack(path)
    return out


EXERCISES = {
    "lrt_moments": Exercise(
        ("lrt_64_act_linear", "lrt_64_basic", "lrt_64_rank3", "lrt_64_zero_rows", "lrt_32_basic"),
        _lrt_answer, {"mean": "outputs/mean", "std": "outputs/sample"},
        {"mean": "the layer's outputs act(mean + bias)",
         "std": "the layer's sampled outputs act(mean + std * eps + bias), with the case's eps"},
        {"mean": "the mean of x @ W is x @ loc: the weights' means, contracted with x.",
         "std": "each pre-activation is a sum of independent x_i W_ij, so its variance is "
                "(x**2) @ (scale**2) and its std the square root of that; at an all-zero input "
                "row it is exactly 0 (no epsilon under the square root)."}),
    "kl_normal": Exercise(
        ("lrt_64_basic", "lrt_64_extreme_scales", "lrt_32_basic"),
        _kl_normal_answer, {"kl": "kl/kernel"}, {"kl": "the KL of the layer's kernel"},
        {"kl": "per element log(sp / scale) + (scale**2 + (loc - mp)**2) / (2 sp**2) - 1/2, "
               "summed over every element (not averaged)."}),
    "kl_molchanov": Exercise(
        ("sparsevd_64_basic", "sparsevd_64_linear", "sparsevd_32_basic"),
        _kl_molchanov_answer, {"kl": "kl/kernel"}, {"kl": "the KL of the layer's kernel"},
        {"kl": "per weight k1 - k1 sigmoid(k2 + k3 log_alpha) + 0.5 log1p(exp(-log_alpha)) with "
               "k1, k2, k3 = 0.63576, 1.87320, 1.48695 (the negative of eq. 14's -KL), summed."}),
    "adam_step": Exercise(
        ("adam_64_trajectory",), _adam_answer,
        {"params w": "kingma/params/w", "params b": "kingma/params/b"},
        {"params w": "w after each step, at (step - 1, i, j)", "params b": "b after each step"},
        {"params w": "m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g**2, then "
                     "p - step_size m_hat / (sqrt(v_hat) + eps) with m_hat = m / (1 - b1**t), "
                     "v_hat = v / (1 - b2**t) and t counting from 1; return the new m and v too.",
         "params b": "the same update as for w, element-wise."}),
}


def check_exercise(name, func, *, verbose=True):
    """Grades ``func`` on the reference cases of exercise ``name`` (a key of ``EXERCISES``).

    Prints (unless ``verbose=False``) one line per case that passes and, for a case that fails,
    which quantity is wrong, where (the worst elements, reference value and yours) and a hint.
    An exception raised by ``func`` is reported as such and counts as a failure.

    Returns:
      an ``ExerciseResult`` (true when every case passes).
    Raises:
      KeyError: ``name`` is not an exercise.
    """
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; expected one of {sorted(EXERCISES)}")
    ex = EXERCISES[name]
    lines, wrong = [], []
    for case in reference_cases(*ex.cases):
        try:
            answer = ex.answer(func, case)
        except Exception as err:  # noqa: BLE001 - the learner's error, reported in one line
            lines.append(f"FAIL {case.name}: your function raised {type(err).__name__}: {err}")
            wrong.append((case.name, None))
            continue
        failed = _failing(ex, case, answer)
        if not failed:
            verb = "agrees" if len(ex.stored) == 1 else "agree"
            lines.append(f"ok   {case.name}: {' and '.join(ex.stored)} {verb} with the reference")
            continue
        wrong += [(case.name, q) for q in failed]
        first = failed[0]                 # e.g. a wrong mean makes every sample wrong too
        lines.append(f"FAIL {case.name} ({case.meta.get('description', '')}): "
                     f"{first} is wrong; the values below are {ex.shown[first]}")
        lines.append(_details(ex, case, answer, first))
        lines.append(f"  hint: {ex.hints[first]}")
    passed = not wrong
    lines.append(f"{name}: " + ("every case passes" if passed else
                                f"{len({c for c, _ in wrong})} of {len(ex.cases)} cases fail"))
    report = "\n".join(lines)
    if verbose:
        print(report)
    return ExerciseResult(passed, wrong, report)


def _graded_case(ex, case, quantities):
    """``case`` with its expected arrays and tolerances renamed to the exercise's quantities."""
    meta = dict(case.meta, tolerances={q: case.tolerances[ex.stored[q]] for q in quantities})
    return ReferenceCase(case.name, meta, case.inputs,
                         {q: case.expected[ex.stored[q]] for q in quantities})


def _failing(ex, case, answer):
    failed = []
    for q in ex.stored:
        try:
            assert_case(_graded_case(ex, case, [q]), answer)
        except AssertionError:
            failed.append(q)
    return failed


def _details(ex, case, answer, quantity):
    try:
        assert_case(_graded_case(ex, case, [quantity]), answer)
    except AssertionError as err:
        detail = str(err).split("\n", 1)[1].replace(", port ", ", yours ")
        return re.sub(r"np\.float\d+\(([^)]*)\)", r"\1", detail)
    return ""
