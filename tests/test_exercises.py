"""lrtdense.exercises: the notebooks' graders pass right answers on every reference case and
name the wrong quantity, with a hint, for the mistakes learners make."""
import numpy as np
import pytest

from lrtdense.exercises import EXERCISES, check_exercise

K1, K2, K3 = 0.63576, 1.87320, 1.48695


def lrt_moments(x, loc, scale):
    return x @ loc, np.sqrt((x ** 2) @ (scale ** 2))


def kl_normal(loc, scale, prior_loc, prior_scale):
    return np.sum(np.log(prior_scale / scale)
                  + (scale ** 2 + (loc - prior_loc) ** 2) / (2 * prior_scale ** 2) - 0.5)


def kl_molchanov(log_alpha):
    return np.sum(K1 - K1 / (1 + np.exp(-(K2 + K3 * log_alpha))) + 0.5 * np.log1p(np.exp(-log_alpha)))


def adam_step(p, g, m, v, t, step_size, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return p - step_size * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps), m, v


RIGHT = {"lrt_moments": lrt_moments, "kl_normal": kl_normal, "kl_molchanov": kl_molchanov,
         "adam_step": adam_step}


def test_every_exercise_has_a_right_answer_here():
    assert sorted(RIGHT) == sorted(EXERCISES)


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_right_answers_pass_every_case(name, capsys):
    result = check_exercise(name, RIGHT[name])
    assert result and result.wrong == []
    out = capsys.readouterr().out
    assert out.count("\nok   ") + out.startswith("ok   ") == len(EXERCISES[name].cases)
    assert out.rstrip().endswith(f"{name}: every case passes")


WRONG = [  # (exercise, a learner's mistake, the quantity that must be named, words of the hint)
    ("lrt_moments", lambda x, loc, s: (x @ loc, (x ** 2) @ (s ** 2)), "std", "square root"),
    ("lrt_moments", lambda x, loc, s: (x @ loc, x @ s), "std", "(x**2) @ (scale**2)"),
    ("lrt_moments", lambda x, loc, s: (x @ loc, np.sqrt((x ** 2) @ (s ** 2) + 1e-8)), "std",
     "no epsilon"),
    ("lrt_moments", lambda x, loc, s: (x @ (loc + s), np.sqrt((x ** 2) @ (s ** 2))), "mean",
     "x @ loc"),
    ("kl_normal", lambda *a: kl_normal(*a) / a[0].size, "kl", "summed"),
    ("kl_molchanov", lambda la: np.sum(K1 * (1 / (1 + np.exp(-(K2 + K3 * la)))) - 0.5 * np.log1p(np.exp(-la)) - K1),
     "kl", "negative of eq. 14"),
    ("adam_step", lambda p, g, m, v, t, lr, b1, b2, eps: adam_step(p, g, m, v, t + 1, lr, b1, b2, eps),
     "params w", "t counting from 1"),
]


@pytest.mark.parametrize("name,func,quantity,hint", WRONG, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
def test_a_wrong_answer_is_reported_by_the_quantity_it_gets_wrong(name, func, quantity, hint):
    result = check_exercise(name, func, verbose=False)
    assert not result
    assert {q for _, q in result.wrong} >= {quantity}
    first = next(line for line in result.report.splitlines() if line.startswith("FAIL"))
    assert f": {quantity} is wrong" in first
    assert "reference " in result.report and "yours " in result.report      # where, and by how much
    assert hint in result.report


def test_the_std_without_sqrt_names_std_not_mean():
    result = check_exercise("lrt_moments", WRONG[0][1], verbose=False)
    assert {q for _, q in result.wrong} == {"std"}
    assert result.report.splitlines()[-1] == "lrt_moments: 5 of 5 cases fail"
    assert "FAIL lrt_64_act_linear (lrt: activation linear): std is wrong" in result.report


def test_an_exception_in_the_learners_function_is_reported_in_one_line():
    def broken(x, loc, scale):
        raise NotImplementedError("write me")
    result = check_exercise("lrt_moments", broken, verbose=False)
    assert not result
    assert "your function raised NotImplementedError: write me" in result.report


def test_an_unknown_exercise_is_refused():
    with pytest.raises(KeyError, match="no exercise 'lrt'; expected one of"):
        check_exercise("lrt", lrt_moments)
