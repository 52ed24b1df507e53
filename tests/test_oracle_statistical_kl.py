"""The statistical mode's random KL (lrtdense.reference.statistical_kl, SPEC section 7): the
expected log prior against adaptive quadrature, the expected KL and its covariance with the
outputs against lrtdense's own sampler, and a Monte Carlo KL through verify. The planted bugs
(kl_other_draw, kl_mean_over_elements, dv_draw_per_example) are in test_oracle_statistical.py's
PLANTED list and bug table."""
import math

import numpy as np
import pytest

from lrtdense.reference import default_dir
from lrtdense.reference import statistical as st
from lrtdense.reference import statistical_kl as sk
from lrtdense.reference.verify import verify, format_table
from lrtdense.testing import reference_cases
import spec_port

CASES = [c for c in reference_cases() if st.eligible(c.meta)]
BY_NAME = {c.name: c for c in CASES}
S = st.MIN_SAMPLES


RANDOM_KL = [c.name for c in CASES if c.meta["kind"] in ("priors", "dense_variational")
             and sk.random_kl(c.meta)]


def test_which_cases_have_a_random_kl():
    """The linear priors and DenseVariational cases are eligible (17 of them); 13 have a Monte
    Carlo KL; with the two training-step cases, 43 cases in all stay within MAX_CASES."""
    kinds = [c.meta["kind"] for c in CASES]
    assert (kinds.count("priors"), kinds.count("dense_variational"), kinds.count("training"),
            len(CASES)) == (9, 8, 2, 43)
    assert len(RANDOM_KL) == 13 and len(CASES) <= st.MAX_CASES


def _quad_expectation(f, mu, s):
    from scipy import integrate
    density = lambda z: f(mu + s * z) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return integrate.quad(density, -40, 40, points=[-mu / s], limit=500, epsabs=1e-12,
                          epsrel=1e-12)[0]


@pytest.mark.parametrize("name", ["priors_reparam_32_mixture_narrow", "priors_lrt_64_mixture_narrow",
                                  "priors_reparam_64_student_t_mc",
                                  "priors_lrt_64_laplace_mc_normal_bias"])
def test_expected_log_prior_against_adaptive_quadrature(name):
    """Each kernel element's E[log p(w)] and its derivative in the posterior mean, by the prior's
    expected_log_prob (the equal-weight normal rule; Laplace's closed form), against
    scipy.integrate.quad split at the prior's centre (the narrow mixture's feature, the Laplace
    kink): within 2e-5 relative for the values and the derivatives (the Student-t's, whose log
    density grows like log w**2 in the tails the rule resolves last, are off by about 1e-5)"""
    from autograd import grad
    from lrtdense.reference.generation import model_from_meta
    case = BY_NAME[name]
    layer = model_from_meta(case.meta)
    prior, m = layer.kernel_prior, layer.posterior_moments(case.params)
    loc = np.asarray(m.kernel_loc, np.float64)
    scale = np.asarray(m.kernel_scale, np.float64)
    log_p = lambda w: float(prior.log_prob(np.array([w]), case.params, "kernel"))
    h = 1e-6
    d_log_p = lambda w: (log_p(w + h) - log_p(w - h)) / (2 * h)
    for idx in list(np.ndindex(loc.shape))[:6]:
        mu, s = np.array([loc[idx]]), np.array([scale[idx]])
        got = float(prior.expected_log_prob(mu, s, case.params, "kernel"))
        got_d = grad(lambda l: prior.expected_log_prob(l, s, case.params, "kernel"))(mu)[0]
        want = _quad_expectation(log_p, mu[0], s[0])
        want_d = _quad_expectation(d_log_p, mu[0], s[0])
        assert abs(got - want) <= 2e-5 * (1 + abs(want)), (idx, got, want)
        assert abs(got_d - want_d) <= 2e-5 * (1 + abs(want_d)), (idx, got_d, want_d)


def test_the_normal_rule_is_exact_for_a_normal_prior():
    """For a Normal prior E[log p(w)] is a quadratic's mean, which the rule integrates exactly:
    the expected Monte Carlo KL equals the closed-form one to rounding."""
    from lrtdense import kernels
    from lrtdense.distributions import NormalPrior
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(4, 3)), rng.uniform(0.1, 2, (4, 3))
    prior = NormalPrior(0.3, 1.7)
    entropy = float(np.sum(-0.5 - np.log(scale) - 0.5 * math.log(2 * math.pi)))
    mc = entropy - float(prior.expected_log_prob(loc, scale, {}, "kernel"))
    assert math.isclose(mc, float(kernels.kl_normal_normal(loc, scale, 0.3, 1.7)), rel_tol=1e-12)


@pytest.mark.parametrize("name", ["priors_reparam_64_student_t_mc", "priors_lrt_64_mixture_narrow",
                                  "dv_64_mc_trainable"])
def test_expected_kl_and_its_covariance_against_lrtdense_itself(name):
    """statistical_kl's E[kl] and Cov(out, kl) against 6000 draws of lrtdense's own sampler
    (forward with rng): within 6 standard errors."""
    from lrtdense.reference.generation import model_from_meta
    case = BY_NAME[name]
    layer = model_from_meta(case.meta)
    rng = np.random.default_rng(3)
    draws = [layer.forward(case.params, case.x, rng) for _ in range(6000)]
    out = np.array([o for o, _ in draws], np.float64).reshape(6000, -1, case.inputs["g"].shape[-1])
    kl = np.array([k for _, k in draws], np.float64)
    want = float(sk.expected_kl(case.meta, case.params))
    assert abs(kl.mean() - want) <= 6 * kl.std() / math.sqrt(6000)
    cov = sk.kl_output_covariance(case.meta, case.params, case.x)
    assert np.any(cov != 0)
    prod = (out - out.mean(0)) * (kl - kl.mean())[:, None, None]
    assert np.all(np.abs(prod.mean(0) - cov) <= 6 * prod.std(0) / math.sqrt(6000))


def test_verify_statistical_with_a_random_kl(tmp_path):
    """A Monte Carlo KL through verify's files: kl/* (the case's own draw) is not compared,
    kl_mean/total is; the KL rows pass (the gradient spread of a non-Normal prior's Monte Carlo
    term tested too); without samples/kl the case fails by name."""
    name = "priors_reparam_64_student_t_mc"
    case = BY_NAME[name]
    res = {k: v for k, v in case.expected.items() if k.startswith(("outputs/mean", "kl_mean/"))}
    res.update(spec_port.sample_statistical(case.meta, case.inputs, S, np.random.default_rng(2)))
    np.savez(tmp_path / f"{name}.npz", **res)
    rows = verify(default_dir(), str(tmp_path), [name], statistical=True)
    assert {r.quantity for r in rows} == ({f"samples: {f}" for f in st.FAMILIES}
                                          | {"outputs/mean", "kl_mean/total"})
    assert all(r.passed for r in rows), format_table(rows)
    spread = next(r for r in rows if r.quantity == "samples: gradient_spread")
    assert spread.note.startswith("47 gradient variances: ratios to the analytic in")
    del res["samples/kl"]
    np.savez(tmp_path / f"{name}.npz", **res)
    bad = [r for r in verify(default_dir(), str(tmp_path), [name], statistical=True)
           if not r.passed]
    assert [(r.quantity, r.note) for r in bad] == [("samples/kl", "missing from the port's "
                                                                  "results")]


def test_a_non_polynomial_kl_adds_to_the_gradient_variance():
    """A Student-t prior's Monte Carlo term at Reparameterization's own kernel draw: its gradient
    is no polynomial in the noise, and what it adds to the variances (its own variance and its
    covariance with the outputs' part, statistical_grads._kl_part) matters: the kernel gradients'
    variances move by over 10% (the 40000-draw check of these variances against spec_port is
    test_oracle_statistical.py's test_gradient_variance_matches_the_independent_sampler)."""
    from lrtdense.reference import statistical_grads as sg
    case = BY_NAME["priors_reparam_64_student_t_mc"]
    g = case.inputs["g"]
    var = sg.gradient_variance(case.meta, case.params, case.x, g)
    _, b, c, _ = sg.gradient_polynomial(case.meta, case.params, case.x, g)
    outputs_only = np.sum(b * b, 1) + 2 * np.sum(c * c, (1, 2))
    keys = sorted(case.params) + ["x"]
    flat = np.concatenate([np.ravel(var[f"samples/grads/{k}"]) for k in keys])
    ends = np.cumsum([np.size(case.params[k]) if k != "x" else case.x.size for k in keys])
    kernel = slice(ends[0], ends[2])        # after bias_posterior_loc: the two kernel params
    assert np.max(np.abs(flat[kernel] / outputs_only[kernel] - 1)) > 0.1
    assert np.allclose(flat[ends[2]:], outputs_only[ends[2]:])   # x: no KL
