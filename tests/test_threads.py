"""BLAS threads of the training step (lrtdense.threads): the automatic choice on a scripted clock
(no test depends on the machine's speed), the settings, and what the thread count does to the
bits of ``fit``'s results."""
import io
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import lrtdense as L
from lrtdense import threads
from lrtdense.diagnostics import FitWarning
from lrtdense.losses import CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam
from lrtdense.training import fit, make_step
from lrtdense.tree import flatten


class StepClock:
    """A clock on which every step with n threads takes ``seconds(n, i)`` (i: the 0-based index
    of the step): the policy reads it twice per step, at the start and at the end."""

    def __init__(self, seconds):
        self.seconds, self.now, self.reads, self.policy = seconds, 0.0, 0, None

    def __call__(self):
        if self.reads % 2:
            self.now += self.seconds(self.policy.count, self.reads // 2)
        self.reads += 1
        return self.now


def auto(seconds, **settings):
    clock = StepClock(seconds)
    clock.policy = threads.AutoThreads(clock=clock, default=2, **settings)
    return clock.policy


def run_steps(policy, n, key=(8, 4)):
    """The count each of n steps ran with (the key of each: ``key``, or ``key(i)``)."""
    counts = []
    for i in range(n):
        with policy.step(key(i) if callable(key) else key):
            counts.append(policy.count)
    return counts


def blas_threads():
    return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


def test_the_first_steps_alternate_one_and_the_default_and_the_faster_is_kept():
    policy = auto(lambda n, i: {1: 1.0, 2: 3.0}[n])
    assert run_steps(policy, 10) == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1]   # untimed, 3 + 3 trials
    assert policy.decisions == [(1, 1.0, 3.0)] and not policy.deciding
    policy = auto(lambda n, i: {1: 3.0, 2: 1.0}[n])
    assert run_steps(policy, 10)[-3:] == [2, 2, 2] and policy.decisions == [(2, 3.0, 1.0)]


def test_the_default_count_must_be_faster_by_the_margin_and_medians_ignore_one_outlier():
    policy = auto(lambda n, i: {1: 1.0, 2: 0.95}[n], margin=0.1)
    run_steps(policy, 7)
    assert policy.count == 1 and policy.decisions == [(1, 1.0, 0.95)]
    policy = auto(lambda n, i: 100.0 if i == 2 else {1: 1.0, 2: 0.5}[n])   # one slow default step
    run_steps(policy, 7)
    assert policy.count == 2 and policy.decisions == [(2, 1.0, 0.5)]


def test_only_steps_of_the_first_timed_shape_are_compared():
    # every other minibatch is short and fast: counted, it would fall on one count only
    shape = lambda i: (8, 4) if i % 2 else (3, 4)              # noqa: E731
    policy = auto(lambda n, i: 0.01 if i % 2 == 0 else {1: 1.0, 2: 3.0}[n])
    counts = run_steps(policy, 14, key=shape)
    assert policy.decisions == [(1, 1.0, 3.0)]
    assert [c for i, c in enumerate(counts[:13]) if i % 2] == [1, 2, 1, 2, 1, 2]


def test_a_kept_default_is_measured_again_when_it_slows_down_and_one_thread_never_is():
    slow_from = 20
    policy = auto(lambda n, i: {1: 1.0, 2: 0.5 if i < slow_from else 5.0}[n])
    counts = run_steps(policy, 40)
    assert counts[7:slow_from] == [2] * (slow_from - 7)
    assert counts[slow_from:slow_from + 3] == [2, 2, 2]              # three slow steps in a row
    assert counts[slow_from + 3:slow_from + 9] == [1, 2, 1, 2, 1, 2]  # then the trials again
    assert policy.decisions == [(2, 1.0, 0.5), (1, 1.0, 5.0)] and counts[-1] == 1
    policy = auto(lambda n, i: {1: 1.0 if i < slow_from else 50.0, 2: 3.0}[n])
    assert run_steps(policy, 40)[7:] == [1] * 33 and len(policy.decisions) == 1


def test_nothing_is_measured_when_the_default_is_one_thread():
    clock = StepClock(lambda n, i: 1.0)
    clock.policy = policy = threads.AutoThreads(clock=clock, default=1)
    assert not policy.deciding and run_steps(policy, 5) == [1] * 5 and policy.decisions == []


def test_settings_and_the_environment_variable(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert isinstance(threads.policy(None), threads.Fixed) and threads.policy(None).count == 1
    assert isinstance(threads.policy("auto"), threads.AutoThreads)
    assert threads.policy(3).count == 3 and threads.policy(np.int64(1)).count == 1
    given = threads.AutoThreads(trials=1)
    assert threads.policy(given) is given
    for bad in (0, -1, 1.5, True, "2", "Auto"):
        with pytest.raises(ValueError, match="threads must be None"):
            threads.policy(bad)
    monkeypatch.setenv(threads.ENV, "1")
    assert isinstance(threads.policy(None), threads.Fixed) and threads.policy(None).count == 1
    assert threads.policy(2).count == 2                       # an explicit count wins
    monkeypatch.setenv(threads.ENV, "auto")
    assert isinstance(threads.policy(None), threads.AutoThreads)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ValueError, match=f"LRTDENSE_THREADS must be .* got '{bad}'"):
            threads.policy(None)


def test_a_step_runs_with_its_count_and_restores_the_previous_one():
    before = blas_threads()
    for count in (1, 2):
        with threads.Fixed(count).step():
            assert blas_threads() == count
        assert blas_threads() == before


# ---------------------------------------------------------------------------- bits of results
def classifier(estimator, dtype, sizes):
    layer = {"lrt": L.DenseLocalReparameterization, "flipout": L.DenseFlipout}[estimator]
    *hidden, classes = sizes[1:]
    return Model(Sequential([layer(h, "relu", dtype=dtype) for h in hidden]
                            + [layer(classes, dtype=dtype)]), CategoricalLikelihood())


def train(estimator, dtype, sizes, threads_setting, n=256, batch=64, epochs=3):
    """fit for a few epochs (too few for the KL to settle: its FitWarning is expected)."""
    data = np.random.default_rng(0)
    x = data.standard_normal((n, sizes[0])).astype(dtype)
    y = data.integers(0, sizes[-1], n)
    model = classifier(estimator, dtype, sizes)
    params = model.init(np.random.default_rng(1), sizes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return fit(model, params, x, y, rng=np.random.default_rng(2), epochs=epochs,
                   batch_size=batch, optimizer=adam(0.01), verbose=False,
                   threads=threads_setting)


def same_bits(a, b):
    (pa, ha), (pb, hb) = a, b
    flat_a, flat_b = flatten(pa), flatten(pb)
    return (all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)
            and all(ha[k] == hb[k] for k in ("loss", "nll", "kl", "kl_weight")))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("estimator", ["lrt", "flipout"])
def test_fit_gives_the_same_bits_with_one_two_and_the_automatic_count(estimator, dtype):
    """128 -> 256 -> 10, minibatches of 128: OpenBLAS splits the products between two threads
    (its worker thread's CPU time showed it when this was written; at 64 -> 128 -> 10 it did
    not), and every product sums over 256 or fewer terms. The automatic count runs with the
    real clock and with scripted clocks that make each count win."""
    sizes, settings = (128, 256, 10), dict(n=384, batch=128, epochs=3)
    one = train(estimator, dtype, sizes, 1, **settings)
    assert one[1]["threads"] == [1, 1, 1]
    assert same_bits(one, train(estimator, dtype, sizes, 2, **settings))
    assert same_bits(one, train(estimator, dtype, sizes, None, **settings))
    for faster in (1, 2):
        policy = auto(lambda n, i: 1.0 if n == faster else 2.0)
        run = train(estimator, dtype, sizes, policy, **settings)
        assert same_bits(one, run) and run[1]["threads"] == [2, 1, faster]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_where_openblas_sums_long_products_by_thread_count_each_count_still_repeats(dtype):
    """What holds with 784 inputs (the reference network's first layer): OpenBLAS 0.3.31
    (SkylakeX kernels) blocks a product's 784-term sums differently with one thread and with
    two, so the last bits of ``x @ kernel`` differ (about 4e-7 relative in float32, 4e-16 in
    float64) and training carries them on; with float64 the same happens from about 200 terms.
    Each count gives the same bits every run, and the two counts agree to rounding."""
    sizes, settings = (784, 32, 10), dict(n=128, batch=64, epochs=2)
    one, again = (train("lrt", dtype, sizes, 1, **settings) for _ in range(2))
    two, again2 = (train("lrt", dtype, sizes, 2, **settings) for _ in range(2))
    assert same_bits(one, again) and same_bits(two, again2)
    rtol = 1e-3 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(one[1]["loss"], two[1]["loss"], rtol=rtol)


def test_fit_records_the_count_and_prints_steps_per_second():
    buf = io.StringIO()
    data = np.random.default_rng(0)
    x, y = data.standard_normal((40, 3)), data.integers(0, 2, 40)
    model = Model(L.DenseLocalReparameterization(2, dtype="float64"), CategoricalLikelihood())
    policy = auto(lambda n, i: {1: 0.25, 2: 1.0}[n])
    _, history = fit(model, model.init(data, 3), x, y, rng=data, epochs=3, batch_size=10,
                     file=buf, threads=policy)
    assert history["threads"] == [1, 1, 1] and policy.decisions == [(1, 0.25, 1.0)]
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and all(" steps/s, 1 thread)" in line for line in lines)
    with pytest.raises(ValueError, match="threads must be None"):
        fit(model, model.init(data, 3), x, y, rng=data, epochs=1, threads=0)
    assert make_step(model, adam(), 40, threads=2).threads.count == 2
