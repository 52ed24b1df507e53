"""The statistical mode of a training step (lrtdense.reference.statistical_training, SPEC section
7, "A training step"): its closed forms against a Monte Carlo of lrtdense's own training loss,
which cases are eligible, the rows through verify's files, and a corrupt case refused. The planted
bugs (train_kl_not_over_n, train_nll_summed, train_wrong_batch, and the sampling bugs on the
training cases) are in test_oracle_statistical.py's PLANTED list and bug table."""
import copy
import math

import numpy as np
import pytest
from autograd import grad

from lrtdense import tree
from lrtdense.model import Model
from lrtdense.reference import default_dir, generation, store
from lrtdense.reference import statistical as st
from lrtdense.reference import statistical_training as stt
from lrtdense.reference.verify import format_table, verify
from lrtdense.testing import reference_cases
import spec_port

TRAINING = {c.name: c for c in reference_cases() if c.meta["kind"] == "training"}
ELIGIBLE = ["train_32_reparam_linear", "train_64_lrt_linear"]


def test_only_the_single_linear_layer_training_cases_are_eligible():
    assert sorted(n for n, c in TRAINING.items() if st.eligible(c.meta)) == ELIGIBLE
    meta = TRAINING["train_64_lrt_linear"].meta
    for change in (lambda m: m["model"]["likelihood"].update(learn_scale=True),
                   lambda m: m["hyperparameters"].update(num_samples=2),
                   lambda m: m["model"]["network"]["layers"][0]["config"].update(
                       activation="relu"),
                   lambda m: m["model"]["network"]["layers"].append(
                       m["model"]["network"]["layers"][0]),
                   lambda m: m["model"]["likelihood"].update(type="student_t"),
                   lambda m: m["model"].pop("network")):
        other = copy.deepcopy(meta)
        change(other)
        assert not st.eligible(other)


def _lrtdense_draws(case, draws, seed):
    """(losses (S,), {param: grads (S, ...)}): the first step's loss and gradient by lrtdense's
    own Model.loss (its layers, its noise sampler, autograd), S independent draws: a second
    computation of what the closed forms state."""
    meta, inputs = case.meta, case.inputs
    h = meta["hyperparameters"]
    model = Model.from_config(meta["model"])
    _, idx = generation.minibatches(h, inputs["order"])[0]
    xb, yb = inputs["x"][idx], inputs["y"][idx]
    params = {"network": tree.unflatten(inputs, "init"), "likelihood": {}}
    rng = np.random.default_rng(seed)

    def loss(p, noise):
        return model.loss(p, xb, yb, noise=noise, num_examples=h["num_examples"],
                          kl_weight=h["kl_weights"][0])[0]

    gradient = grad(loss)
    losses, grads = [], []
    for _ in range(draws):
        noise = model.network.sample_noise(rng, xb.shape)
        losses.append(float(loss(params, noise)))
        grads.append(gradient(params, noise)["network"]["layer_0"])
    return np.array(losses), {k: np.stack([g[k] for g in grads]) for k in grads[0]}


@pytest.mark.parametrize("name", ELIGIBLE)
def test_closed_forms_match_a_monte_carlo_of_lrtdense_itself(name):
    """E[loss], Var[loss] and the expected gradient (autograd of E[loss]) against 4000 draws of
    lrtdense's own training loss: the mean within 5 standard errors, the variance within 5
    standard errors of a sample variance (from the draws' fourth moment), every gradient element's
    mean within 5 of its standard errors (Bonferroni-safe for the few elements here)."""
    case = TRAINING[name]
    params, xb, yb, sigma, w, n = stt.first_step(case.meta, case.inputs)
    losses, grads = _lrtdense_draws(case, 4000, seed=7)
    s = len(losses)
    want = float(stt.expected_loss(case.meta, params, xb, yb, sigma, w, n))
    var = stt.loss_variance(case.meta, params, xb, yb, sigma)
    assert abs(losses.mean() - want) <= 5 * math.sqrt(var / s) + 1e-5 * abs(want)
    dev2 = (losses - losses.mean()) ** 2
    assert abs(dev2.mean() - var) <= 5 * dev2.std() / math.sqrt(s)
    assert 0.8 < dev2.mean() / var < 1.25                       # and not vacuous
    analytic = grad(lambda p: stt.expected_loss(case.meta, p, xb, yb, sigma, w, n))(params)
    for key, draws in grads.items():
        se = draws.std(0, ddof=1) / math.sqrt(s)
        floor = 1e-5 * np.max(np.abs(analytic[key]))           # float32's rounding
        assert np.all(np.abs(draws.mean(0) - analytic[key]) <= 5 * se + floor), key


def test_a_flipout_step_judges_its_loss_by_the_draws_own_spread():
    """Flipout's rows share one weight perturbation up to signs: not jointly Gaussian, so no
    closed-form variance of the loss (None), and the loss row says it used the draws' own."""
    meta = copy.deepcopy(TRAINING["train_64_lrt_linear"].meta)
    layer = meta["model"]["network"]["layers"][0]
    layer["class_name"] = "DenseFlipout"
    params, xb, yb, sigma, _, _ = stt.first_step(meta, TRAINING["train_64_lrt_linear"].inputs)
    assert stt.loss_variance(meta, params, xb, yb, sigma) is None
    rows = stt._loss_rows("x", meta, params, xb, yb, sigma, 0.25, 10,
                          np.full(10000, 100.0))
    assert not rows[0].passed and "own standard error" in rows[0].note


def test_training_rows_through_verify_files(tmp_path):
    """Through verify's files: the four training families per case, all passing for spec_port's
    sampler; a missing gradient is a failing row naming it; no deterministic key is compared."""
    for name in ELIGIBLE:
        case = TRAINING[name]
        res = spec_port.sample_statistical(case.meta, case.inputs, st.MIN_SAMPLES,
                                           np.random.default_rng(3))
        if name == "train_64_lrt_linear":
            del res["samples/grads/layer_0/bias_posterior_loc"]
        np.savez(tmp_path / f"{name}.npz", **res)
    rows = verify(default_dir(), str(tmp_path), ELIGIBLE, statistical=True)
    good = [r for r in rows if r.case == "train_32_reparam_linear"]
    assert {r.quantity for r in good} == {f"samples: {f}" for f in stt.FAMILIES}
    assert all(r.passed for r in good), format_table(good)
    bad = [r for r in rows if r.case == "train_64_lrt_linear" and not r.passed]
    assert [(r.quantity, r.note) for r in bad] == [
        ("samples/grads/layer_0/bias_posterior_loc", "missing from the port's results")]


def test_draw_counts_that_disagree_fail():
    case = TRAINING["train_64_lrt_linear"]
    res = spec_port.sample_statistical(case.meta, case.inputs, st.MIN_SAMPLES,
                                       np.random.default_rng(0))
    res["samples/loss"] = np.concatenate([res["samples/loss"], res["samples/loss"][:5]])
    rows, keys = st.check(case.name, case.meta, case.inputs, case.expected, res)
    assert keys == [] and len(rows) == 1 and "different numbers of draws" in rows[0].note


def test_a_training_case_whose_layer_does_not_fit_is_corrupt():
    case = TRAINING["train_64_lrt_linear"]
    inputs = dict(case.inputs)
    inputs["y"] = inputs["y"][:, :1]                  # one output column for a 2-unit layer
    with pytest.raises(store.ReferenceError, match="do not fit its layer"):
        stt.check_case(case.name, case.meta, inputs, case.expected)
    inputs = {k: v for k, v in case.inputs.items() if k != "init/layer_0/kernel_posterior_loc"}
    with pytest.raises(store.ReferenceError, match="the reference set is corrupt"):
        stt.check_case(case.name, case.meta, inputs, case.expected)
