"""Element-wise work on a pool of threads (lrtdense.parallel): the chunks are fixed whatever the
worker count, small arrays and one worker run inline, and ``fit`` gives the same bits with the
pool off, with one worker and with several."""
import sys
import threading

import numpy as np
import pytest

import lrtdense as L
from helpers import directional_fd_check
from lrtdense import parallel
from lrtdense.losses import CategoricalLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.threads import AutoCount
from lrtdense.training import fit, make_step
from lrtdense.tree import flatten

SIZES = (784, 400, 400, 10)          # the reference network's layers


def calls(size, itemsize, n):
    """[(start, stop, lane, thread id)] of ``for_chunks`` with n workers."""
    seen, lock = [], threading.Lock()

    def f(start, stop, lane):
        with lock:
            seen.append((start, stop, lane, threading.get_ident()))

    with parallel.workers(n):
        parallel.for_chunks(f, size, itemsize)
    return seen


@pytest.mark.parametrize("itemsize", [4, 8])
def test_chunk_boundaries_do_not_depend_on_the_worker_count(itemsize):
    size = 784 * 400 + 3
    expected = parallel.chunks(size, itemsize)
    assert expected[0] == (0, parallel.CHUNK_BYTES // itemsize) and expected[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(expected, expected[1:]))
    for n in (1, 2, 3, 8):
        seen = calls(size, itemsize, n)
        assert sorted((start, stop) for start, stop, _, _ in seen) == expected
        assert {lane for _, _, lane, _ in seen} <= set(range(n))


def run_with_a_helper(g, chunk_count=10):
    """for_chunks with 2 workers over chunk_count chunks, calling g(lane) in each chunk; lane 0
    waits until the other worker has run a chunk, so both surely do. [(lane, thread)]."""
    seen, helped = [], threading.Event()

    def f(start, stop, lane):
        seen.append((lane, threading.get_ident()))
        if lane == 0:
            assert helped.wait(timeout=30), "no worker took a chunk"
        else:
            helped.set()
        g(lane)

    with parallel.workers(2):
        parallel.for_chunks(f, chunk_count * parallel.chunk_size(4), 4)
    return seen


def test_several_workers_share_the_chunks_and_the_caller_is_lane_0():
    seen = run_with_a_helper(lambda lane: None)
    assert len(seen) == 10 and len({thread for _, thread in seen}) == 2
    assert {thread for lane, thread in seen if lane == 0} == {threading.get_ident()}


def test_workers_see_the_callers_errstate_and_their_errors_reach_it():
    modes = []
    with np.errstate(invalid="raise"):
        run_with_a_helper(lambda lane: modes.append(np.geterr()["invalid"]))
    assert modes == ["raise"] * 10

    def fail_off_lane_0(lane):
        if lane != 0:
            raise FloatingPointError(f"in lane {lane}")

    with pytest.raises(FloatingPointError, match="in lane 1"):
        run_with_a_helper(fail_off_lane_0)


@pytest.mark.parametrize("n", [1, 2])
def test_small_arrays_and_one_worker_run_inline_in_order(n):
    small = (parallel.MIN_CHUNKS - 1) * parallel.chunk_size(4)
    large = 10 * parallel.chunk_size(4)
    for size in (small, large) if n == 1 else (small,):
        seen = calls(size, 4, n)
        assert [(a, b) for a, b, _, _ in seen] == parallel.chunks(size, 4)
        assert {(lane, thread) for *_, lane, thread in seen} == {(0, threading.get_ident())}


def sqrt_by_chunks(x, out, n):
    """sqrt(x) into out over the fixed chunks, with n workers."""
    def f(start, stop, lane):
        np.sqrt(x[start:stop], out=out[start:stop])

    with parallel.workers(n):
        parallel.for_chunks(f, x.size, x.itemsize)


def test_the_chunks_hold_the_whole_operation_and_let_go_of_its_arrays():
    x = np.random.default_rng(0).random(3 * parallel.chunk_size(8) + 5)
    for n in (1, 2, 3):
        out = np.empty_like(x)
        refs = sys.getrefcount(out), sys.getrefcount(x)
        sqrt_by_chunks(x, out, n)
        assert np.array_equal(out, np.sqrt(x))
        assert (sys.getrefcount(out), sys.getrefcount(x)) == refs


def test_the_setting_and_its_environment_variable(monkeypatch):
    monkeypatch.delenv(parallel.ENV, raising=False)
    assert parallel.usable_cpus() >= 1 and parallel.count() == 1
    assert parallel.from_setting(None) == "auto" == parallel.from_setting("auto")
    assert parallel.from_setting(3) == 3
    monkeypatch.setenv(parallel.ENV, "2")
    assert parallel.from_setting(None) == 2 and parallel.from_setting(1) == 1
    monkeypatch.setenv(parallel.ENV, "auto")
    assert parallel.from_setting(None) == "auto"
    monkeypatch.setenv(parallel.ENV, "two")
    with pytest.raises(ValueError, match=parallel.ENV):
        parallel.from_setting(None)
    for bad in (0, 1.5, True, "all"):
        with pytest.raises(ValueError, match="workers"):
            parallel.from_setting(bad)


def _model(cls, dtype):
    layers = [cls(units, activation="relu", dtype=dtype) for units in SIZES[1:-1]]
    return Model(Sequential(layers + [cls(SIZES[-1], dtype=dtype)]), CategoricalLikelihood())


def _fit(cls, dtype, workers):
    model = _model(cls, dtype)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((12, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], 12)
    params = model.init(np.random.default_rng(0), SIZES[0])
    out, _ = fit(model, params, x, y, rng=np.random.default_rng(1), epochs=3, batch_size=4,
                 num_examples=60000, verbose=False, workers=workers)
    return flatten(out)


@pytest.mark.filterwarnings("ignore::lrtdense.diagnostics.FitWarning")   # 12 examples, N 60000
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls", [L.DenseLocalReparameterization, L.DenseFlipout,
                                 L.DenseReparameterization])
@pytest.mark.parametrize("fine", [False, True])
def test_fit_gives_the_same_bits_with_the_pool_off_and_any_workers(cls, dtype, fine, monkeypatch):
    """fine: many more chunks and blocks, every array and every product through the pool (the
    blocks differ from the default ones, so the one-worker run is made with them too)."""
    if fine:
        monkeypatch.setattr(parallel, "CHUNK_BYTES", 4096)
        monkeypatch.setattr(parallel, "MIN_CHUNKS", 1)
        monkeypatch.setattr(parallel, "MIN_BLOCK_WORK", 1024)
        monkeypatch.setattr(parallel, "MAX_BLOCKS", 5)
    off = _fit(cls, dtype, workers=1)
    for workers in (2, 3):
        run = _fit(cls, dtype, workers)
        assert off.keys() == run.keys()
        for name in off:
            assert np.array_equal(off[name], run[name]), name


def test_the_automatic_policy_tries_one_worker_and_one_per_cpu(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 3)
    policy = parallel.policy("auto")
    assert isinstance(policy, AutoCount) and policy.default == 3 and policy.deciding
    seen = []
    for _ in range(7):                      # one untimed step, then 3 trials of each count
        with policy.step(key=(4, 784)):
            seen.append(parallel.count())
    assert seen[0] == 3 and sorted(seen[1:]) == [1, 1, 1, 3, 3, 3]
    assert not policy.deciding and policy.count in (1, 3) and parallel.count() == 1
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    assert isinstance(parallel.policy("auto"), parallel.Fixed)
    assert parallel.policy("auto").count == 1 and parallel.policy(4).count == 4


def test_make_step_sets_the_workers_of_its_steps(monkeypatch):
    monkeypatch.delenv(parallel.ENV, raising=False)
    model = _model(L.DenseLocalReparameterization, "float64")
    default = make_step(model, L.adam(1e-3), 10).workers
    assert isinstance(default, AutoCount if parallel.usable_cpus() > 1 else parallel.Fixed)
    assert make_step(model, L.adam(1e-3), 10, workers=2).workers.count == 2
    monkeypatch.setenv(parallel.ENV, "3")
    assert make_step(model, L.adam(1e-3), 10).workers.count == 3
    with pytest.raises(ValueError, match="workers"):
        make_step(model, L.adam(1e-3), 10, workers=0)


def test_gradients_match_finite_differences_with_the_pool_on(monkeypatch):
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 64)
    monkeypatch.setattr(parallel, "MIN_CHUNKS", 1)
    rng = np.random.default_rng(3)
    layer = L.DenseLocalReparameterization(7, "tanh", bias_posterior="normal",
                                           bias_prior="normal", dtype="float64")
    params = {k: v + rng.normal(0, 0.5, v.shape) for k, v in layer.init(rng, 9).items()}
    x, g = rng.standard_normal((6, 9)), rng.standard_normal((6, 7))
    noise = layer.sample_noise(rng, x.shape)

    def loss(p, x):
        out, kl = layer.forward(p, x, noise=noise)
        return np.sum(g * out) + kl

    with parallel.workers(2):
        directional_fd_check(loss, (params, x), 0, rng)
        directional_fd_check(loss, (params, x), 1, rng)


# ----------------------------------------------------------------------------- matrix products
@pytest.mark.parametrize("m,k,n", [(100, 784, 400), (784, 100, 400), (100, 400, 784),
                                   (1000, 400, 10), (10, 784, 400), (3, 4, 5)])
def test_product_blocks_are_fixed_by_the_shape_and_cover_the_output(m, k, n):
    axis, bounds = parallel.product_blocks(m, k, n)
    length = (m, n)[axis]
    assert length == max(m, n) and bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert 1 <= len(bounds) <= parallel.MAX_BLOCKS
    if m * k * n < 2 * parallel.MIN_BLOCK_WORK:
        assert len(bounds) == 1
    else:
        assert min((stop - start) * k * (n, m)[axis] for start, stop in bounds) \
            >= parallel.MIN_BLOCK_WORK // 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n,transposed", [(100, 784, 400, False), (784, 100, 400, True),
                                              (100, 400, 784, False), (1000, 400, 10, False),
                                              (400, 1000, 400, True), (3, 4, 5, False)])
def test_matmul_gives_the_same_bits_with_any_worker_count(dtype, m, k, n, transposed):
    """Row blocks, column blocks, a transposed view as the left factor (x^T g): the products of
    1, 2 and 3 workers are identical and equal a @ b to rounding."""
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if transposed else (m, k)).astype(dtype)
    a = a.T if transposed else a
    b = rng.standard_normal((k, n)).astype(dtype)
    outs = []
    for n_workers in (1, 2, 3):
        out = np.full((m, n), np.nan, dtype)
        with parallel.workers(n_workers):
            assert parallel.matmul(a, b, out) is out
        outs.append(out)
    assert all(np.array_equal(outs[0], out) for out in outs[1:])
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(outs[0] - exact) <= 2 * k * np.finfo(dtype).eps * bound)
