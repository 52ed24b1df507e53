"""The statistical mode (lrtdense.reference.statistical, SPEC section 7): its false-alarm budget,
no false alarm for a correct sampler, and a catch for every planted bug that changes sampling or
gradients. The sampler is spec_port.sample_statistical (its own draws, autograd per-draw
gradients, no lrtdense layer code); each bug is one of spec_port.STAT_BUGS."""
import math

import numpy as np
import pytest

from lrtdense.reference import default_dir
from lrtdense.reference import statistical as st
from lrtdense.reference import statistical_grads as sg
from lrtdense.reference.statistical_rows import z_quantile
from lrtdense.reference.verify import verify, format_table
from lrtdense.testing import reference_cases
import spec_port

CASES = [c for c in reference_cases() if st.eligible(c.meta)]
BY_NAME = {c.name: c for c in CASES}
S = st.MIN_SAMPLES


def check(case, bug=None, seed=0, samples=S):
    """The statistical rows of ``case`` for spec_port's sampler (with ``bug``)."""
    res = spec_port.sample_statistical(case.meta, case.inputs, samples,
                                       np.random.default_rng(seed), bug)
    rows, _ = st.check(case.name, case.meta, case.inputs, case.expected, res)
    return rows


def test_the_budget_adds_up_to_one_in_a_million_per_run():
    """Per case: the families' shares sum to ALPHA_PER_CASE; per run: at most MAX_CASES
    statistical cases, so a correct port fails a run with probability <= 1e-6 (union bound)."""
    shares = sum(st.family_alpha(f) * (st.CLT_MARGIN if f in st.CLT_FAMILIES else 1)
                 for f in st.FAMILIES)
    assert math.isclose(shares, st.ALPHA_PER_CASE, rel_tol=1e-12)
    assert st.ALPHA_PER_CASE * st.MAX_CASES <= st.ALPHA_PER_RUN == 1e-6
    assert len(CASES) <= st.MAX_CASES
    classes = {c.meta["model"]["class_name"] for c in CASES if c.meta["kind"] != "training"}
    assert classes == set(st.CLASSES)
    # a training case runs four families at a layer case's shares: it spends less
    from lrtdense.reference import statistical_training
    spent = sum(st.family_alpha(f) * (st.CLT_MARGIN if f in st.CLT_FAMILIES else 1)
                for f in statistical_training.FAMILIES)
    assert spent < st.ALPHA_PER_CASE


def test_moments_match_a_monte_carlo_of_lrtdense_itself():
    """The closed-form moments against lrtdense's own sampler (forward with rng), for one case of
    each class: the formulas in statistical.moments describe what the layers draw."""
    for name in ("lrt_64_normal_bias_linear", "reparam_64_normal_bias_linear",
                 "flipout_64_normal_bias_linear", "vdrop_64_linear", "sparsevd_64_linear"):
        case = BY_NAME[name]
        from lrtdense.reference.generation import model_from_meta
        layer = model_from_meta(case.meta)
        rng = np.random.default_rng(3)
        draws = np.stack([layer.forward(case.params, case.x, rng)[0] for _ in range(4000)])
        mean, var, cov = st.moments(case.meta, case.params, case.x)
        se = np.sqrt(var / len(draws))
        assert np.all(np.abs(draws.mean(0) - mean) <= 6 * se + 1e-12), name
        # covariance between rows 0 and 2, unit 0: within 6 standard errors
        prod = (draws[:, 0, 0] - mean[0, 0]) * (draws[:, 2, 0] - mean[2, 0])
        assert abs(prod.mean() - cov[0, 2, 0]) <= 6 * prod.std() / math.sqrt(len(draws)), name


@pytest.mark.parametrize("seed", [0, 1])
def test_a_correct_sampler_passes_every_statistical_case(seed):
    """No false alarm over all eligible cases (P <= 1e-6 per seed by the budget above, so a
    failure here is a defect, not bad luck)."""
    failed = []
    for case in CASES:
        failed += [r for r in check(case, seed=seed) if not r.passed]
    assert not failed, format_table(failed)


# (bug, case, the family that must catch it): one case per class the bug applies to
PLANTED = [
    ("no_square", "lrt_64_units1", "variance"),
    ("no_square", "reparam_64_zero_rows", "variance"),
    ("no_square", "flipout_64_softplus_middle", "variance"),
    ("shared_rows", "lrt_64_act_linear", "covariance"),
    ("shared_rows", "sparsevd_64_linear", "covariance"),
    ("batch_weight", "lrt_64_zero_rows", "covariance"),
    ("batch_weight", "vdrop_64_linear", "covariance"),
    ("per_example_weight", "reparam_64_units1", "covariance"),
    ("uniform_noise", "lrt_64_units1", "kurtosis"),
    ("uniform_noise", "flipout_64_normal_bias_linear", "kurtosis"),
    ("uniform_noise", "reparam_64_zero_rows", "normality"),
    ("rademacher_noise", "sparsevd_64_linear", "normality"),
    ("bias_per_example", "reparam_64_normal_bias_linear", "covariance"),
    ("bias_per_example", "flipout_64_normal_bias_linear", "covariance"),
    ("flipout_no_sign_output", "flipout_64_zero_rows", "quartic"),
    ("no_alpha_cap", "vdrop_64_linear", "variance"),
    ("sparse_alpha_variance", "sparsevd_64_linear", "variance"),
    ("grad_no_sigmoid", "lrt_64_normal_bias_linear", "gradients"),
    ("grad_no_sigmoid", "reparam_64_units1", "gradients"),
    ("grad_detached_noise", "flipout_64_units1", "gradients"),
    ("grad_detached_noise", "sparsevd_64_linear", "gradients"),
    ("grad_x_mean_only", "lrt_64_act_linear", "gradients"),
    ("grad_no_kl", "reparam_64_softplus_middle", "gradients"),
    ("nan_half", "lrt_64_units1", "samples/outputs"),
    ("edward2_sign_output", "flipout_64_units1", "variance"),
    ("repeat_draws_4", "lrt_64_units1", "duplicates"),
    ("repeat_draws_4", "flipout_32_zero_rows", "serial"),
    ("repeat_draws_4", "reparam_64_normal_bias_linear", "serial"),
    ("tiled_4", "reparam_32_extreme_scales", "duplicates"),
    ("tiled_4", "vdrop_64_linear", "duplicates"),
    ("grad_noisy_biased", "lrt_64_act_linear", "gradients"),
    ("grad_noisy_biased", "flipout_64_normal_bias_linear", "gradient_spread"),
    ("grad_noisy_biased", "sparsevd_64_linear", "gradient_spread"),
    ("grad_noisy_biased", "priors_reparam_64_student_t_mc", "gradient_spread"),
    ("kl_other_draw", "priors_reparam_64_student_t_mc", "kl_covariance"),
    ("kl_other_draw", "priors_lrt_64_laplace_mc_normal_bias", "kl_covariance"),
    ("kl_other_draw", "dv_64_mc_trainable", "kl_covariance"),
    ("kl_mean_over_elements", "priors_lrt_64_trainable_mc", "kl_mean"),
    ("kl_mean_over_elements", "priors_flipout_64_mixture_mc", "kl_mean"),
    ("kl_mean_over_elements", "dv_32_mc_trainable", "kl_mean"),
    ("dv_draw_per_example", "dv_64_exact_fixed", "covariance"),
    ("dv_draw_per_example", "dv_32_mc_fixed_klw", "covariance"),
    # the training step (statistical_training): the first step's loss and its gradients
    ("train_kl_not_over_n", "train_64_lrt_linear", "gradients"),
    ("train_kl_not_over_n", "train_32_reparam_linear", "loss_mean"),
    ("train_nll_summed", "train_64_lrt_linear", "loss_mean"),
    ("train_wrong_batch", "train_32_reparam_linear", "gradients"),
    ("grad_no_sigmoid", "train_64_lrt_linear", "gradients"),
    ("repeat_draws_4", "train_32_reparam_linear", "serial"),
    ("grad_noisy_biased", "train_64_lrt_linear", "gradient_spread"),
    ("nan_half", "train_64_lrt_linear", "samples/loss"),
]


def test_inflated_noise_hides_a_gradient_bias_from_the_draws_own_spread():
    """grad_noisy_biased moves every gradient mean by 8 true standard errors under 10x noise:
    judged by the draws' own spread (the old test) the bias is 0.8 standard errors; judged by the
    analytic ones, and by the spread itself, it is caught."""
    case = BY_NAME["lrt_64_act_linear"]
    res = spec_port.sample_statistical(case.meta, case.inputs, S, np.random.default_rng(11),
                                       "grad_noisy_biased")
    var = sg.gradient_variance(case.meta, case.params, case.x, case.inputs["g"])
    key = "samples/grads/kernel_posterior_loc"
    draws = res[key].astype(np.float64)
    ratio = draws.var(0) / var[key]
    assert np.all((ratio > 90) & (ratio < 112))          # 1 + 10**2 = 101 times the variance
    from autograd import grad
    want = grad(lambda p: st.expected_objective(case.meta, p, case.x, case.inputs["g"]))(
        case.params)["kernel_posterior_loc"]
    own = np.abs(draws.mean(0) - want) / (draws.std(0, ddof=1) / math.sqrt(S))
    assert own.max() < z_quantile(st.family_alpha("gradients"), 1)
    rows = {r.quantity: r for r in check(case, "grad_noisy_biased", seed=11)}
    assert rows["samples: gradient_spread"].max_rel > 5   # |z| over 5 times its limit
    assert not rows["samples: gradients"].passed


def test_every_bug_is_planted_somewhere():
    assert {b for b, _, _ in PLANTED} == set(spec_port.STAT_BUGS)


@pytest.mark.parametrize("bug,name,family", PLANTED)
def test_planted_bug_is_caught(bug, name, family):
    rows = check(BY_NAME[name], bug, seed=11)
    failed = {r.quantity.replace("samples: ", "") for r in rows if not r.passed}
    assert family in failed, format_table(rows)


def bug_table(seeds=(5,), escalate=100000):
    """For every bug and eligible case: 'caught' if the S = 10000 check fails; else whether the
    bug changes anything the check could see at ``escalate`` draws ('missed') or not
    ('invisible': e.g. a missing sigmoid factor where sigmoid(u) = 1 - 2e-9 at u = 20).
    Returns {bug: {"caught": [...], "missed": [...], "invisible": [...]}}."""
    table = {}
    for bug in spec_port.STAT_BUGS:
        entry = table.setdefault(bug, {"caught": [], "missed": [], "invisible": []})
        for case in CASES:
            good = spec_port.sample_statistical(case.meta, case.inputs, 50, np.random.default_rng(1))
            bad = spec_port.sample_statistical(case.meta, case.inputs, 50, np.random.default_rng(1), bug)
            if all(np.array_equal(good[k], bad[k], equal_nan=True) for k in good):
                continue  # the bug does not touch this case's code path
            if any(not r.passed for s in seeds for r in check(case, bug, seed=s)):
                entry["caught"].append(case.name)
            elif any(not r.passed for r in check(case, bug, seed=99, samples=escalate)):
                entry["missed"].append(case.name)
            else:
                entry["invisible"].append(case.name)
    return table


@pytest.mark.slow
def test_bug_table():
    """Every planted bug is caught on at least one case, and on every case where it changes what
    S = 10000 draws can show, with at most 2 (bug, case) exceptions per bug class. Measured
    (seed 5): SPEC section 7, "Measured"."""
    table = bug_table()
    lines = [f"{bug:24s} caught {len(e['caught']):2d}  missed {len(e['missed']):2d} "
             f"{e['missed']}  invisible at 1e5 draws {len(e['invisible']):2d}"
             for bug, e in table.items()]
    print("\n".join(lines))
    for bug, e in table.items():
        assert e["caught"], f"{bug} is never caught"
    assert sum(len(e["missed"]) for e in table.values()) <= 2


@pytest.mark.slow
def test_calibration_at_a_measurable_rate(monkeypatch):
    """The tests are conservative at a rate one can observe: with ALPHA_PER_CASE raised to 0.02,
    a correct sampler's failure rate per case over 40 seeds x every case stays below 0.02 (the
    union bound), so nothing about the approximations makes the budget optimistic there."""
    from lrtdense.reference import statistical_rows
    monkeypatch.setattr(statistical_rows, "ALPHA_PER_CASE", 0.02)  # where family_alpha reads it
    assert st.family_alpha("mean") == 0.02 / len(st.FAMILIES)
    trials = fails = 0
    for seed in range(40):
        for case in CASES:
            trials += 1
            fails += any(not r.passed for r in check(case, seed=1000 + seed))
    bound = 0.02 * trials + 3 * math.sqrt(0.02 * trials)
    print(f"calibration: {fails} failing cases of {trials} at a per-case budget of 0.02")
    assert fails <= bound, (fails, trials)


def test_verify_statistical_end_to_end(tmp_path):
    """Through verify's files: one row per family per case, the deterministic quantities (mean
    and pruned outputs, KL) compared exactly, and a missing gradient reported by name."""
    names = ["lrt_64_units1", "sparsevd_64_linear"]
    for name in names:
        case = BY_NAME[name]
        res = {k: v for k, v in case.expected.items()
               if k.startswith(("outputs/mean", "outputs/pruned", "kl/"))}
        res.update(spec_port.sample_statistical(case.meta, case.inputs, S,
                                                np.random.default_rng(2)))
        if name == "lrt_64_units1":
            del res["samples/grads/x"]
        np.savez(tmp_path / f"{name}.npz", **res)
    rows = verify(default_dir(), str(tmp_path), names, statistical=True)
    by_case = {n: [r for r in rows if r.case == n] for n in names}
    assert {r.quantity for r in by_case["sparsevd_64_linear"]} == (
        {f"samples: {f}" for f in st.FAMILIES}
        | {"outputs/mean", "outputs/pruned", "kl/kernel", "kl/total"})
    assert all(r.passed for r in by_case["sparsevd_64_linear"])
    bad = [r for r in by_case["lrt_64_units1"] if not r.passed]
    assert [(r.quantity, r.note) for r in bad] == [("samples/grads/x",
                                                     "missing from the port's results")]


def test_too_few_draws_is_refused():
    case = BY_NAME["lrt_64_units1"]
    res = spec_port.sample_statistical(case.meta, case.inputs, 500, np.random.default_rng(0))
    rows, _ = st.check(case.name, case.meta, case.inputs, case.expected, res)
    assert rows[0].quantity == "samples/outputs" and "S >= 10000" in rows[0].note


def test_gradient_polynomial_mean_is_the_expected_objectives_gradient():
    """E[a + B eta + eta' C eta] = a + tr C for eta ~ N(0, I): the gradient of
    statistical.expected_objective, one case per class (two derivations of one number)."""
    from autograd import grad
    for name in ("lrt_64_normal_bias_linear", "reparam_64_normal_bias_linear",
                 "flipout_64_units1", "vdrop_64_linear", "sparsevd_64_linear",
                 "priors_lrt_64_trainable_mc", "dv_64_mc_trainable_klw"):
        case = BY_NAME[name]
        g = case.inputs["g"]
        a, _, c, _ = sg.gradient_polynomial(case.meta, case.params, case.x, g)
        want = grad(lambda p: st.expected_objective(case.meta, p, case.x, g))(case.params)
        want_x = grad(lambda xx: st.expected_objective(case.meta, case.params, xx, g))(case.x)
        flat = np.concatenate([np.ravel(want[k]) for k in sorted(want)] + [np.ravel(want_x)])
        got = a + np.trace(c, axis1=1, axis2=2)
        assert np.allclose(got, flat, rtol=1e-9, atol=1e-9), name


@pytest.mark.parametrize("name", ["lrt_64_normal_bias_linear", "reparam_64_normal_bias_linear",
                                  "flipout_64_normal_bias_linear", "vdrop_64_linear",
                                  "sparsevd_64_linear", "priors_lrt_64_trainable_mc",
                                  "dv_64_mc_trainable", "priors_reparam_64_student_t_mc",
                                  "priors_flipout_64_mixture_mc"])
def test_gradient_variance_matches_the_independent_sampler(name):
    """The analytic per-element gradient variances (statistical_grads) against spec_port's
    per-draw gradients, 40000 draws: each element's mean squared deviation within 6 of its
    standard errors (from its fourth moments) and within 6% of the analytic variance. For
    Flipout the sign fourth-moment term matters: it raises some variances by over 30% (45%
    here), so the Gaussian formula alone would fail this test."""
    case = BY_NAME[name]
    res = spec_port.sample_statistical(case.meta, case.inputs, 40000, np.random.default_rng(4))
    var = sg.gradient_variance(case.meta, case.params, case.x, case.inputs["g"])
    from autograd import grad
    g = case.inputs["g"]
    want = grad(lambda p: st.expected_objective(case.meta, p, case.x, g))(case.params)
    want["x"] = grad(lambda xx: st.expected_objective(case.meta, case.params, xx, g))(case.x)
    for key, v in var.items():
        sq = (res[key] - want[key[len("samples/grads/"):]]) ** 2
        live = v > 0
        se = np.sqrt(np.mean((sq - v) ** 2, 0) / len(sq))
        assert np.all(np.abs(sq.mean(0) - v)[live] <= 6 * se[live]), (name, key)
        assert np.all(np.abs(sq.mean(0) / np.where(live, v, 1) - 1)[live] < 0.06), (name, key)
    if name.startswith("flipout"):
        _, b, c, _ = sg.gradient_polynomial(case.meta, case.params, case.x, g)
        gaussian = np.sum(b * b, 1) + 2 * np.sum(c * c, (1, 2))
        flat = np.concatenate([np.ravel(v) for v in var.values()])
        assert np.max(flat / np.maximum(gaussian, 1e-300)) > 1.3


def test_samples_in_the_wrong_dtype_fail_with_compares_wording():
    """samples/* must have the case's dtype: float32 draws in a float64 case (and float64 in a
    float32 one) fail, worded as report.compare words it."""
    for name, other in (("lrt_64_units1", np.float32), ("lrt_32_zero_rows", np.float64)):
        case = BY_NAME[name]
        res = spec_port.sample_statistical(case.meta, case.inputs, S, np.random.default_rng(0))
        res["samples/grads/x"] = res["samples/grads/x"].astype(other)
        res["samples/outputs"] = res["samples/outputs"].astype(other)
        rows, _ = st.check(case.name, case.meta, case.inputs, case.expected, res)
        bad = {r.quantity: r.note for r in rows if not r.passed}
        want = f"dtype {np.dtype(other)}, expected {case.meta['dtype']} (the case's dtype)"
        assert bad == {"samples/outputs": want, "samples/grads/x": want}


def test_chance_coincidences_allowed_where_the_dtype_is_coarse():
    """The duplicates family tolerates ties a correct sampler makes: one float32 unit of sigma
    1e-9 around 1 (all draws round to a few values) allows any number of coincident pairs;
    three float64 units of sigma 1 allow none."""
    from lrtdense.reference.statistical_rows import chance_coincidence, duplicates_row
    coarse = chance_coincidence(np.ones((1, 1)), np.full((1, 1), 1e-18), "float32")
    assert coarse == 1.0
    fine = chance_coincidence(np.zeros((2, 3)), np.ones((2, 3)), "float64")
    assert math.isclose(fine, (np.spacing(30.0) / math.sqrt(2 * math.pi)) ** 3)  # 2.8e-45
    rng = np.random.default_rng(0)
    draws = (1 + 1e-9 * rng.standard_normal((S, 1, 1))).astype(np.float32).astype(np.float64)
    r = duplicates_row("c", draws, np.ones((1, 1)), np.full((1, 1), 1e-18), "float32")
    assert r.passed and r.max_abs > S
    draws = rng.standard_normal((S, 2, 3))
    draws[7] = draws[3]
    r = duplicates_row("c", draws, np.zeros((2, 3)), np.ones((2, 3)), "float64")
    assert not r.passed and r.max_abs == 1 and "1 of 10000 draws repeat" in r.note


def test_serial_standard_error_is_the_analytic_one():
    """For independent draws the lag-1 statistic's spread is |R|_F / (L sqrt(S - 1)): over 400
    simulated runs of S = 2000 draws of 6 elements correlated 0.5 in pairs, the observed spread
    of t is within 10% of it."""
    from lrtdense.reference.statistical_rows import serial_row
    rng = np.random.default_rng(1)
    corr = np.kron(np.eye(3), np.array([[1, 0.5], [0.5, 1]]))
    chol = np.linalg.cholesky(corr)
    stats = [serial_row("c", rng.standard_normal((2000, 6)) @ chol.T, corr).max_abs
             for _ in range(400)]
    assert 0.9 < math.sqrt(np.mean(np.square(stats))) < 1.1


@pytest.mark.slow
def test_the_spread_statistic_has_a_light_upper_tail():
    """Why gradient_spread is one-sided: for the most skewed gradient element of the shipped
    cases (sparsevd_64_linear, an x gradient of kurtosis 15), 2000 runs of S = 10000 draws
    straight from its polynomial a + B eta + eta' C eta. The self-normalized z of the mean
    squared deviation falls below -3 more often than N(0, 1) would (heavy lower tail), and
    above +3 at most as often (light upper tail, the side the family tests)."""
    case = BY_NAME["sparsevd_64_linear"]
    _, b, c, _ = sg.gradient_polynomial(case.meta, case.params, case.x, case.inputs["g"])
    var = np.sum(b * b, 1) + 2 * np.sum(c * c, (1, 2))
    fourth = np.einsum("pef,pfg,pgh,phe->p", c, c, c, c) * 48 + 48 * np.einsum(
        "pe,pef,pfg,pg->p", b, c, c, b) + 3 * var ** 2
    live = var > 1e-12 * var.max()
    kurt = np.divide(fourth, var ** 2, out=np.zeros_like(var), where=live)
    i = int(np.argmax(kurt))
    assert 14 < kurt[i] < 16
    rng = np.random.default_rng(0)
    z = []
    for _ in range(2000):
        eta = rng.standard_normal((S, b.shape[1]))
        d = (eta @ b[i] + np.einsum("se,ef,sf->s", eta, c[i], eta) - np.trace(c[i])) ** 2
        z.append((d.mean() - var[i]) / math.sqrt(np.mean((d - var[i]) ** 2) / S))
    z = np.array(z)
    normal = 2000 * 0.00135                                  # expected beyond 3 on one side
    print(f"below -3: {(z < -3).sum()}, above +3: {(z > 3).sum()}, N(0, 1): {normal:.1f}")
    assert (z > 3).sum() <= normal < (z < -3).sum()


def test_a_case_too_large_for_the_exact_variance(monkeypatch):
    """Beyond MAX_NOISE noise elements a draw's polynomial is not computed: the mean is judged
    in the draws' own standard errors and the spread row passes as not tested, both saying so."""
    monkeypatch.setattr(sg, "MAX_NOISE", 4)    # the case has 5
    rows = {r.quantity: r for r in check(BY_NAME["lrt_64_units1"])}
    assert rows["samples: gradients"].passed and "own standard errors" in \
        rows["samples: gradients"].note
    assert rows["samples: gradient_spread"].passed
    assert rows["samples: gradient_spread"].note == "not tested: a draw has more than 4 noise " \
                                                    "elements"

