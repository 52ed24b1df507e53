"""The priors / dense_variational reference cases (SPEC section 3, "Priors and divergences",
"DenseVariational", "Several samples per step"): what they cover, and that each is needed.

Every planted bug of ``spec_port.PRIOR_BUGS`` is a plausible misreading of SPEC; for each, the
cases it should break fail ``verify`` on exactly the quantities the bug touches, and the correct
independent port (tests/test_reference.py) passes everything. (The ports themselves are run on every case by
tests/test_ports.py and tests/test_reference.py; real TFP by
tests/test_reference_priors_vs_tfp.py.)
"""
import fnmatch

import numpy as np
import pytest

import spec_port
from lrtdense.reference import default_dir
from lrtdense.reference.cases import CASES
from lrtdense.reference.report import compare
from lrtdense.testing import reference_cases

REF = default_dir()
PRIOR_CASES = reference_cases("priors_*", "dv_*", check=False)
LOADED = PRIOR_CASES + reference_cases("train_64_mc_s2", check=False)


def test_the_families_cover_the_issue():
    """Item 7 of issue 15: every new prior, divergence and DenseVariational setting has a case."""
    seen = set()
    for case in PRIOR_CASES:
        cls, cfg = case.model["class_name"], case.model["config"]
        assert case.meta["kind"] == ("dense_variational" if cls == "DenseVariational"
                                     else "priors")
        assert "kl_mean/total" in case.expected
        params = set(tree_keys(case.inputs, "params"))
        assert {f"grads/{p}" for p in params} | {"grads/x"} <= set(case.expected)
        if cls == "Sequential":       # priors_mixed_64_network2: the network's mean-mode rule
            continue
        if cls == "DenseVariational":
            seen.add(("dv", cfg["prior"], cfg["kl_use_exact"], cfg["kl_weight"] is not None,
                      cfg["use_bias"], case.dtype))
            continue
        est = case.name.split("_")[1]
        for term in ("kernel", "bias"):
            prior = cfg[f"{term}_prior"]
            if prior is None:
                continue
            div = cfg[f"{term}_divergence"]
            bias_kind = cfg["bias_posterior"] and cfg["bias_posterior"]["type"]
            post = "deterministic" if term == "bias" and bias_kind == "deterministic" else "normal"
            seen.add((est, term, post, prior["type"], div["type"], div.get("sample"),
                      div["weight"] != 1))
            if div["type"] == "monte_carlo" and post == "normal":
                own = term == "bias" or est == "reparam"
                if div["sample"] == "extra" or not own:
                    assert f"noise/{term}_divergence" in case.inputs, case.name
    pairs = {(s[0], s[3]) for s in seen if s[0] != "dv" and s[4] == "monte_carlo"}
    for est in ("lrt", "reparam", "flipout"):
        assert (est, "scale_mixture") in pairs
        assert (est, "trainable_normal") in pairs or est == "flipout"
    assert {("reparam", "laplace"), ("reparam", "student_t")} <= pairs
    assert {("lrt", "laplace"), ("flipout", "student_t")} <= pairs
    assert any(s[5] == "extra" for s in seen if s[0] != "dv")
    for est in ("lrt", "reparam", "flipout"):       # the scaled KL with a Normal bias prior
        assert (est, "bias", "normal", "normal", "closed_form", None, True) in seen
    assert any(s[2] == "deterministic" and s[3] not in ("normal", "trainable_normal")
               for s in seen if s[0] != "dv")
    assert any(s[3] == "trainable_normal" and s[4] == "closed_form" for s in seen if s[0] != "dv")
    assert any(s[1] == "bias" and s[3] == "trainable_normal" and s[4] == "monte_carlo"
               for s in seen if s[0] != "dv")
    dv = [s for s in seen if s[0] == "dv"]
    for i, values in ((1, {"trainable", "fixed"}), (2, {True, False}), (3, {True, False}),
                      (4, {True, False}), (5, {"float32", "float64"})):
        assert {s[i] for s in dv} == values
    assert CASES["train_64_mc_s2"].training["num_samples"] == 2


def tree_keys(flat, prefix):
    return [k[len(prefix) + 1:] for k in flat if k.startswith(prefix + "/")]


def _run(patterns, broken=None):
    """spec_port's rows for the cases matching ``patterns``: ``compare`` at each case's
    tolerances, as ``verify`` does (its checks of the reference set itself are tested
    elsewhere; here they would hash the whole set once per bug)."""
    rows = []
    for case in [c for c in LOADED if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]:
        res = spec_port.run_case(case.meta, case.inputs, broken=broken)
        rows += [compare(case.name, k, np.asarray(res[k]), ref, case.tolerances[k])
                 for k, ref in case.expected.items()]
    return rows


def _failed(rows):
    return {(r.case, r.quantity) for r in rows if not r.passed}


KL = ("kl/kernel", "kl/total")
# bug -> (cases, quantities that must fail in each; quantities that must still pass)
PLANTED = {
    # log(pi N1 + (1 - pi) N2) underflows in float32 at |w| > 0.73 for sigma1 = 0.05; at the
    # ordinary mixture it is as good as the logsumexp
    "naive_mixture": (["priors_reparam_32_mixture_narrow", "priors_lrt_64_mixture_narrow"],
                      KL + ("kl_mean/total", "grads/kernel_posterior_loc"), ("outputs/sample",)),
    "no_divergence_weight": (["priors_lrt_64_kl_scaled_normal_bias",
                              "priors_reparam_64_trainable_mc", "priors_lrt_64_laplace_mc_normal_bias"],
                             KL + ("kl/bias", "kl_mean/total"), ("outputs/sample", "grads/x")),
    "extra_as_forward": (["priors_reparam_64_mixture_mc_extra",
                          "priors_reparam_32_student_t_mc_extra"],
                         KL + ("kl/bias", "grads/kernel_posterior_loc"),
                         ("outputs/sample", "kl_mean/total")),
    "flipout_forward_noise": (["priors_flipout_64_mixture_mc", "priors_flipout_64_student_t_mc",
                               "priors_flipout_32_mixture_mc"],
                              KL + ("grads/kernel_posterior_untransformed_scale",),
                              ("outputs/sample", "outputs/mean", "kl_mean/total")),
    "mean_kl_at_sample": (["priors_lrt_64_mixture_mc", "priors_reparam_64_laplace_mc",
                           "priors_reparam_64_trainable_mc", "priors_mixed_64_network2"],
                          ("kl_mean/total",), KL + ("outputs/mean", "grads/x")),
    # float32(1/50) is 2.2e-8 relative from 0.02: every float64 kl_weight case sees it
    "kl_weight_exact": (["dv_64_mc_trainable_klw", "dv_64_exact_trainable_klw",
                         "dv_64_mc_fixed_klw"],
                        KL + ("kl_mean/total",), ("outputs/sample",)),
    "dv_column_major": (["dv_64_mc_trainable", "dv_32_exact_fixed_nobias_tanh"],
                        ("outputs/sample", "outputs/mean", "grads/x"), KL),
    # |w - loc|' with sign(0) = 1 (JAX's abs): only where w == loc exactly, so only the tie cases
    "laplace_sign_at_zero": (["priors_reparam_64_laplace_tie", "priors_lrt_64_laplace_tie_det_bias"],
                             ("grads/kernel_posterior_loc",),
                             KL + ("outputs/sample", "kl_mean/total", "grads/x")),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # the naive mixture's log(0)
@pytest.mark.parametrize("bug", spec_port.PRIOR_BUGS)
def test_a_planted_bug_fails_the_cases_it_touches(bug):
    assert set(PLANTED) == set(spec_port.PRIOR_BUGS)
    cases, must_fail, must_pass = PLANTED[bug]
    failed = _failed(_run(cases, broken=bug))
    for case in cases:
        for quantity in must_fail:
            assert (case, quantity) in failed, (bug, case, quantity)
        for quantity in must_pass:
            assert (case, quantity) not in failed, (bug, case, quantity)


def test_what_a_bug_does_not_reach():
    """The naive mixture passes the ordinary mixture cases (why the narrow one exists); exact
    0.02 passes the float32 kl_weight case (float32 cannot see 2.2e-8)."""
    assert not _failed(_run(["priors_*_mixture_mc"], broken="naive_mixture"))
    assert not _failed(_run(["dv_32_mc_fixed_klw"], broken="kl_weight_exact"))
    # no other Laplace case puts a w exactly at the prior's loc
    assert not _failed(_run(["priors_*laplace*"], broken="laplace_sign_at_zero")) - {
        (c, "grads/kernel_posterior_loc") for c in PLANTED["laplace_sign_at_zero"][0]} - {
        ("priors_lrt_64_laplace_tie_det_bias", "grads/bias_posterior_loc")}


def test_mixture_narrow_really_underflows_the_naive_density():
    case = next(c for c in PRIOR_CASES if c.name == "priors_reparam_32_mixture_narrow")
    p = case.params
    from lrtdense.kernels import posterior_scale
    w = p["kernel_posterior_loc"] + posterior_scale(
        p["kernel_posterior_untransformed_scale"]) * case.inputs["noise/kernel"]
    sigma1 = case.model["config"]["kernel_prior"]["sigma1"]
    density = np.exp(np.float32(-0.5) * (w / np.float32(sigma1)) ** 2)
    assert w.dtype == np.float32 and np.sum(density == 0) >= 3
    assert np.isfinite(case.expected["kl/kernel"])
