"""The worked-example ports (examples/ports/{torch,jax}_port.py) against the reference set.

Each port is an independent implementation of reference_data/SPEC.md (it does not import
lrtdense). For each framework, skipped when it is not installed: the port's results for every
case pass ``lrtdense.reference.verify``; the deliberately broken variants fail it, on the
quantities the bug touches; statistical mode passes for the port (the training step's rows too)
and fails for no_square and for a training loss whose KL is not divided by N; and the port's
``run_case`` passes ``lrtdense.testing.assert_case``. The JAX port's default run holds
a representative 9 of the 39 priors / DenseVariational cases (``JAX_PRIORS``; all of them in
the slow ``test_jax_priors_every_case``); torch runs every case.
"""
import fnmatch
import importlib.util
import json
import os
import sys

import pytest

from lrtdense.reference import default_dir
from lrtdense.reference.verify import format_table, statistical_cases, verify
from lrtdense.testing import assert_case, reference_cases

PORTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples", "ports")
REFERENCE = default_dir()
# The training cases of the statistical mode (its first step: statistical_training) and its rows
TRAINING = ["train_64_lrt_linear", "train_32_reparam_linear"]
TRAINING_ROWS = {(case, f"samples: {family}") for case in TRAINING
                 for family in ("loss_mean", "serial", "gradients", "gradient_spread")}
# The statistical-mode cases (SPEC section 7): one layer of any class, linear activation.
STATISTICAL = TRAINING + ["lrt_64_units1", "lrt_64_act_linear", "*_zero_rows", "*_extreme_scales",
               "reparam_64_units1", "flipout_64_units1", "*_softplus_middle", "*_normal_bias_linear",
               "vdrop_64_linear", "sparsevd_64_linear",
               "priors_flipout_64_mixture_mc", "priors_lrt_64_trainable_mc",
               "priors_lrt_64_laplace_mc_normal_bias", "priors_reparam_64_student_t_mc",
               "dv_32_mc_trainable", "dv_64_exact_fixed"]
# ... and the other 11 linear priors / DenseVariational cases: the slow runs
STATISTICAL_EVERY = STATISTICAL + [
    "priors_flipout_32_mixture_mc", "priors_flipout_32_trainable_kl", "priors_lrt_32_trainable_mc",
    "priors_lrt_64_mixture_narrow", "priors_reparam_32_mixture_narrow", "dv_32_exact_trainable",
    "dv_32_mc_fixed_klw", "dv_64_exact_trainable_klw", "dv_64_mc_fixed_klw", "dv_64_mc_trainable",
    "dv_64_mc_trainable_klw"]
RTOL = {"float64": 1e-12, "float32": 2e-5}

_modules = {}


def load_port(framework):
    """examples/ports/<framework>_port.py as a module; skips the test if the framework is missing."""
    pytest.importorskip(framework, reason=f"the {framework} port needs {framework} (pip install '.[ports]')")
    if framework not in _modules:
        name = f"{framework}_port"
        spec = importlib.util.spec_from_file_location(name, os.path.join(PORTS, name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _modules[framework] = module
    return _modules[framework]


@pytest.fixture(scope="module", params=["torch", "jax"])
def port(request):
    return load_port(request.param)


# JAX compiles each statistical case's vmap(grad) anew (~1 s a case): the default run samples one
# case per layer class; the slow run (test_statistical_mode_every_case) all of them
JAX_STATISTICAL = ["lrt_64_units1", "lrt_32_zero_rows", "reparam_64_normal_bias_linear",
                   "flipout_64_normal_bias_linear", "vdrop_64_linear", "sparsevd_64_linear",
                   "priors_reparam_64_student_t_mc", "dv_64_mc_trainable"] + TRAINING


def statistical_selection(port):
    return STATISTICAL if port.__name__ == "torch_port" else JAX_STATISTICAL


# JAX compiles every case anew (~1 s each): by default its run holds every older case and one
# case per feature of the priors / DenseVariational families (the torch port and spec_port run all
# of them); test_jax_priors_every_case (slow) runs the other 30 too
JAX_PRIORS = ["priors_reparam_32_mixture_narrow", "priors_lrt_64_laplace_mc_normal_bias",
              "priors_reparam_64_laplace_tie",
              "priors_flipout_64_student_t_mc", "priors_reparam_64_mixture_mc_extra",
              "priors_lrt_64_trainable_mc", "priors_reparam_32_det_bias_laplace",
              "dv_64_mc_trainable_klw", "dv_32_exact_fixed_nobias_tanh"]
PRIORS_FAMILIES = ("priors_*", "dv_*")


def selection(port):
    """The cases a port's default run writes: every case, but for JAX only JAX_PRIORS of the
    priors / DenseVariational families."""
    names = _all_case_names()
    if port.__name__ != "jax_port":
        return names
    return [n for n in names if not n.startswith(("priors_", "dv_")) or n in JAX_PRIORS]


@pytest.fixture(scope="module")
def results(port, tmp_path_factory):
    """The port's results for its selection, with samples/* for its statistical selection."""
    out = tmp_path_factory.mktemp(port.__name__)
    names = port.write_results(str(out), REFERENCE, selection(port))
    port.write_results(str(out), REFERENCE, statistical_selection(port), statistical=True)
    assert names
    return str(out)


def _failures(rows):
    return {(r.case, r.quantity) for r in rows if not r.passed}


def _all_case_names():
    with open(os.path.join(REFERENCE, "manifest.json")) as f:
        return sorted(json.load(f)["cases"])


def test_port_passes_every_case(port, results):
    """Every case (JAX: its selection), new families included (edge, dropout, training, priors,
    dense_variational)."""
    chosen = selection(port)
    rows = verify(REFERENCE, results, chosen)
    failed = [r for r in rows if not r.passed]
    assert rows and not failed, format_table(failed)
    # Every case was checked, quantity by quantity, at the tolerances of SPEC §4.
    assert {r.case for r in rows} == set(chosen)
    for case in reference_cases(*chosen, check=False):
        assert {r.quantity for r in rows if r.case == case.name} == set(case.expected)
        for tol in case.tolerances.values():
            assert tol["rtol"] == RTOL[case.dtype]


def test_jax_priors_selection_covers_each_feature():
    """One JAX case per feature: the narrow mixture's logsumexp, the Laplace tie (jnp.abs's
    derivative at 0 is 1), Laplace and Student-t on LRT
    and Flipout (extra draws) with a weight and a Normal bias, sample="extra", trainable priors
    with a Monte Carlo KL, a Deterministic bias under Laplace, DenseVariational (MC with
    kl_weight, exact without bias, both dtypes)."""
    names = {c.name for c in reference_cases(*PRIORS_FAMILIES, check=False)}
    assert set(JAX_PRIORS) <= names and len(names) == 39


@pytest.mark.slow
def test_jax_priors_every_case(tmp_path):
    port = load_port("jax")
    port.write_results(str(tmp_path), REFERENCE, list(PRIORS_FAMILIES))
    rows = verify(REFERENCE, str(tmp_path), list(PRIORS_FAMILIES))
    assert len({r.case for r in rows}) == 39
    assert all(r.passed for r in rows), format_table([r for r in rows if not r.passed])


def test_no_square_is_caught(port, tmp_path):
    """LRT variance (x*x) @ scale instead of (x*x) @ scale**2: outputs/sample and the gradients
    fail, the mean-mode outputs and the KL terms (which do not see the variance) still pass."""
    cases = ["lrt_64_basic", "lrt_32_basic"]
    port.write_results(str(tmp_path), REFERENCE, cases, broken="no_square")
    rows = verify(REFERENCE, str(tmp_path), cases)
    failed = _failures(rows)
    for case in cases:
        assert (case, "outputs/sample") in failed
        assert (case, "grads/kernel_posterior_untransformed_scale") in failed
        assert (case, "outputs/mean") not in failed
        assert (case, "kl/total") not in failed


def test_no_eps_is_caught(port, tmp_path):
    """scale = softplus(u) without + eps: at u = -40 the scale is off by a factor ~50, which the
    KL term and the scale gradient show (the outputs barely depend on so small a scale)."""
    port.write_results(str(tmp_path), REFERENCE, ["*_extreme_scales"], broken="no_eps")
    failed = _failures(verify(REFERENCE, str(tmp_path), ["*_extreme_scales"]))
    for estimator in ("lrt", "reparam", "flipout"):
        case = f"{estimator}_64_extreme_scales"
        assert (case, "kl/kernel") in failed
        assert (case, "grads/kernel_posterior_untransformed_scale") in failed


def test_statistical_mode_passes(port, results):
    selection = statistical_selection(port)
    rows = verify(REFERENCE, results, selection, statistical=True)
    stat_rows = [r for r in rows if r.quantity.startswith("samples: ")]
    expected = [c.name for c in reference_cases(*selection, check=False)
                if statistical_cases(c.meta)]
    assert sorted({r.case for r in stat_rows}) == expected
    assert len(expected) >= (30 if selection is STATISTICAL else 8)
    failed = [r for r in rows if not r.passed]
    assert not failed, format_table(failed)
    assert TRAINING_ROWS <= {(r.case, r.quantity) for r in rows if r.passed}


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_statistical_mode_every_case(tmp_path, framework):
    port = load_port(framework)
    port.write_results(str(tmp_path), REFERENCE, STATISTICAL_EVERY, statistical=True)
    rows = verify(REFERENCE, str(tmp_path), STATISTICAL_EVERY, statistical=True)
    assert len({r.case for r in rows}) == 43
    assert all(r.passed for r in rows), format_table([r for r in rows if not r.passed])


def test_statistical_mode_catches_no_square(port, tmp_path):
    """(x*x) @ scale for the LocalReparameterization variance: each LRT statistical case fails
    its variance test; a sparse VD case (another code path) still passes."""
    cases = ["lrt_*_zero_rows", "lrt_*_extreme_scales", "lrt_64_units1", "lrt_64_act_linear",
             "lrt_64_softplus_middle", "lrt_64_normal_bias_linear", "sparsevd_64_linear"]
    if port.__name__ == "jax_port":
        cases = ["lrt_64_zero_rows", "lrt_32_extreme_scales", "sparsevd_64_linear"]
    port.write_results(str(tmp_path), REFERENCE, cases, broken="no_square", statistical=True)
    rows = verify(REFERENCE, str(tmp_path), cases, statistical=True)
    variance = {r.case: r for r in rows if r.quantity == "samples: variance"}
    lrt = [n for n in variance if n.startswith("lrt_")]
    assert len(lrt) == (8 if port.__name__ == "torch_port" else 2)
    assert not any(variance[n].passed for n in lrt)
    assert all("outside the chi-square interval" in variance[n].note for n in lrt)
    assert all(r.passed for r in rows if r.case == "sparsevd_64_linear")


def test_statistical_mode_catches_a_kl_not_divided_by_n(port, tmp_path, monkeypatch):
    """A training loss nll + w * KL (no / num_examples): the first step's mean loss or its mean
    gradients fail, for both training cases."""
    monkeypatch.setattr(port, "training_loss", lambda nll, kl, kl_weight, n: nll + kl_weight * kl)
    port.write_results(str(tmp_path), REFERENCE, TRAINING, statistical=True)
    rows = verify(REFERENCE, str(tmp_path), TRAINING, statistical=True)
    failed = _failures(rows)
    for case in TRAINING:
        assert {(case, "samples: loss_mean"), (case, "samples: gradients")} & failed, \
            format_table(rows)


def test_cli_writes_verifiable_results(port, tmp_path, capsys):
    assert port.main([str(tmp_path), "--cases", "adam_*", "lrt_64_units1"]) == 0
    assert "wrote 2 cases" in capsys.readouterr().out
    rows = verify(REFERENCE, str(tmp_path), ["adam_*", "lrt_64_units1"])
    assert rows and all(r.passed for r in rows), format_table(rows)


@pytest.mark.parametrize(
    "case", reference_cases("*_zero_rows", "*_normal_bias_prior", "mixed_64_network3", "adam_*",
                            "train_64_kingma", "sparsevd_64_network3", "*_tie_relu",
                            "train_64_mc_s2"), ids=str)
def test_run_case_with_assert_case(port, case):
    """The pattern a port's own pytest suite would use (see examples/ports/README.md)."""
    assert_case(case, port.run_case(case.meta, case.inputs))


def test_statistical_case_list_matches_the_spec():
    expected = {c.name for c in reference_cases(check=False) if statistical_cases(c.meta)}
    selected = {n for n in _all_case_names()
                if any(fnmatch.fnmatch(n, p) for p in STATISTICAL_EVERY)}
    assert selected == expected
