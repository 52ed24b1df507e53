"""Matrix products and element-wise work in fixed blocks on a small pool of threads: the same
bits with any number of workers.

NumPy's ufuncs release the GIL while they loop, so two Python threads running ufuncs on two
halves of an array use two cores. The one rule that keeps results independent of the worker
count: **an array is cut into chunks whose boundaries depend on its size and dtype only**
(``CHUNK_BYTES`` each, the last shorter), never on how many workers there are; each chunk is
computed by the same calls whichever thread runs it, and nothing is summed across chunks. An
element-wise operation has no dependence between elements, so the chunks together hold exactly
the bits of the whole operation, with 1, 2 or N workers (``tests/test_parallel.py``).

Workers: ``workers(n)`` sets the count for a block of code (a context variable: per thread and
per task; 1, the count outside any block, runs everything inline in the calling thread).
``make_step(workers=...)`` sets it around each training step (``policy``): None is
``$LRTDENSE_WORKERS`` (an integer, or "auto"), else "auto": the faster of one worker and one per
CPU this process may run on, measured on the first steps and again when another process
slows them down. Since the worker count never changes a bit, the count can follow the machine. The calling thread and n - 1 threads of a pool kept for the
process each take the next chunk not yet taken until none is left, so a worker that another
process keeps off the CPU takes fewer chunks instead of holding the others up; one it has not
started is taken back. The pool serves one call at a time: a call made while another
thread's holds it, or from inside a chunk, runs inline, with the same bits. Arrays of fewer than
``MIN_CHUNKS`` chunks run inline: waking another thread has a fixed cost that a small array
does not repay.

A kernel would map a pass ``np.op(a, b, out=out)`` over the chunks of the flattened arrays with
one ``for_chunks`` call; the training step's Adam update is the one user so far (its dozen passes
per chunk amortize the hand-over; single passes of the kernels were not measured to pay).

Matrix products follow the same rule (``matmul``): ``a @ b`` is cut into blocks of the output's
rows or columns (whichever the output has more of) whose boundaries depend on the shapes alone
(``product_blocks``), each block is one single-threaded BLAS call, and no block sums into
another, so the product has the same bits with any number of workers. The blocks are there with
one worker too; they can differ from one unsplit product in the last bits, never between worker
counts. A product of less than ``MIN_BLOCK_WORK`` multiply-adds is one block.

Each worker runs its chunks in a copy of the caller's context, so ``numpy.errstate`` set by the
caller applies in the workers too and a ``FloatingPointError`` reaches the caller. A worker
drops its references to the arrays before it reports back, so a ``Workspace`` sees a buffer as
free again as soon as the call returns.
"""
import contextlib
import contextvars
import os
import queue
import threading

import numpy as np

from lrtdense.checks import check_int
from lrtdense.threads import AutoCount

__all__ = ["ENV", "CHUNK_BYTES", "MIN_CHUNKS", "MIN_BLOCK_WORK", "MAX_BLOCKS", "workers", "count",
           "from_setting", "policy", "Fixed", "usable_cpus", "chunk_size", "chunks", "for_chunks", "product_blocks", "matmul",
           "for_bounds"]

ENV = "LRTDENSE_WORKERS"
CHUNK_BYTES = 262144        # 65536 float32 or 32768 float64 elements: a few chunks sit in L2
MIN_CHUNKS = 2              # fewer chunks than this run inline
MIN_BLOCK_WORK = 1 << 23    # multiply-adds per block of a matrix product, at least
MAX_BLOCKS = 2              # blocks per matrix product, at most (each block repacks the other
                            # factor: 8 blocks cost one worker 6-25 %, 2 cost 1-7 %)

_WORKERS = contextvars.ContextVar("lrtdense_parallel_workers", default=1)


def from_setting(setting):
    """``make_step``'s ``workers`` read: an int >= 1, or "auto"; None is ``$LRTDENSE_WORKERS``
    (an integer >= 1 or "auto"), "auto" when unset.

    Raises:
      ValueError: the setting, or the variable, is neither an integer >= 1 nor "auto".
    """
    if setting is None:
        text = os.environ.get(ENV, "").strip()
        if text and text != "auto" and (not text.isdigit() or int(text) < 1):
            raise ValueError(f"${ENV} must be an integer >= 1 or 'auto', got {text!r}")
        return int(text) if text.isdigit() else "auto"
    if isinstance(setting, str) and setting == "auto":
        return "auto"
    return check_int(setting, "workers", low=1,
                     expected=f"None (${ENV}, else 'auto'), 'auto' or an integer >= 1")


class Fixed:
    """Every step with ``count`` workers."""

    def __init__(self, count):
        self.count = count

    def step(self, key=None):
        """A context manager: the block runs with ``count`` workers (``key`` is unused)."""
        return workers(self.count)


def policy(setting):
    """The worker policy of one training step (``make_step``), from ``from_setting(setting)``:
    an int n gives n workers every step (``Fixed``); "auto" gives the faster of one worker and
    ``usable_cpus()``, measured on the first steps and measured again when the steps with
    several slow down (``lrtdense.threads.AutoCount``: another process took a core), or one
    worker where one CPU is usable. The choice follows the machine's load, which is safe here
    because the worker count never changes a bit. Policies have ``.step(key)`` and ``.count``.
    """
    setting = from_setting(setting)
    if setting != "auto":
        return Fixed(setting)
    cpus = usable_cpus()
    return AutoCount(workers, cpus) if cpus > 1 else Fixed(1)


def usable_cpus():
    """The number of CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def workers(n):
    """A context manager: element-wise work in the block runs on ``n`` workers (1: inline)."""
    token = _WORKERS.set(check_int(n, "workers", low=1))
    try:
        yield
    finally:
        _WORKERS.reset(token)


def count():
    """The worker count in effect here."""
    return _WORKERS.get()


def chunk_size(itemsize):
    """Elements per chunk for elements of ``itemsize`` bytes."""
    return max(1, CHUNK_BYTES // itemsize)


def chunks(size, itemsize):
    """The fixed chunks ``[(start, stop), ...]`` of ``range(size)`` for elements of ``itemsize``
    bytes: ``chunk_size(itemsize)`` elements each, the last shorter."""
    step = chunk_size(itemsize)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def for_chunks(f, size, itemsize):
    """Calls ``f(start, stop, lane)`` once for each of ``chunks(size, itemsize)``.

    ``lane`` (0 <= lane < the worker count) names the thread running the chunk, for per-worker
    scratch; calls with the same lane never overlap. Inline (lane 0, in order) with one worker
    or fewer than ``MIN_CHUNKS`` chunks. Returns when every chunk is done; raises the first
    exception of a chunk, if any.
    """
    for_bounds(f, chunks(size, itemsize))


def product_blocks(m, k, n):
    """The fixed blocks of an (m, k) @ (k, n) product: ``(axis, [(start, stop), ...])``, the
    output's rows (axis 0) or columns (axis 1), whichever it has more of, cut into equal runs;
    as many as give each at least ``MIN_BLOCK_WORK`` multiply-adds, at most ``MAX_BLOCKS``."""
    axis, length = (0, m) if m >= n else (1, n)
    number = max(1, min(MAX_BLOCKS, length, m * k * n // MIN_BLOCK_WORK))
    step = -(-length // number)
    return axis, [(start, min(start + step, length)) for start in range(0, length, step)]


def matmul(a, b, out):
    """``a @ b`` into ``out`` for 2-d arrays, block by block (``product_blocks``) on the workers:
    the same bits whatever their number. Returns out."""
    axis, bounds = product_blocks(a.shape[0], a.shape[1], b.shape[1])
    if len(bounds) == 1:
        return np.matmul(a, b, out=out)

    def rows(start, stop, lane):
        np.matmul(a[start:stop], b, out=out[start:stop])

    def columns(start, stop, lane):
        np.matmul(a, b[:, start:stop], out=out[:, start:stop])

    for_bounds(rows if axis == 0 else columns, bounds)
    return out


def for_bounds(f, bounds):
    """Calls ``f(start, stop, lane)`` once for each ``(start, stop)`` of ``bounds`` (as
    ``for_chunks`` does for its chunks)."""
    n = min(count(), len(bounds))
    if n == 1 or len(bounds) < MIN_CHUNKS or not _BUSY.acquire(blocking=False):
        _run_lane(f, _claims(bounds), 0)    # (a pool busy with another thread's call: inline)
        return
    try:
        claim, helpers = _claims(bounds), _pool(n - 1)
        for lane, helper in enumerate(helpers, start=1):
            helper.submit(contextvars.copy_context().run, _run_lane, f, claim, lane)
        errors = [_error_of(_run_lane, f, claim, 0)]
        errors += [None if helper.cancel() else helper.wait() for helper in helpers]
    finally:
        _BUSY.release()
    for error in errors:
        if error is not None:
            raise error


def _claims(bounds):
    """A thread-safe ``claim()``: the next chunk not yet claimed, None when none is left."""
    lock, remaining = threading.Lock(), iter(bounds)

    def claim():
        with lock:
            return next(remaining, None)

    return claim


def _run_lane(f, claim, lane):
    token = _WORKERS.set(1)                 # what a chunk calls in turn runs inline
    try:
        for start, stop in iter(claim, None):
            f(start, stop, lane)
    finally:
        _WORKERS.reset(token)


def _error_of(fn, *args):
    try:
        fn(*args)
    except BaseException as err:            # noqa: BLE001 - handed to the caller
        return err
    return None


class _Worker:
    """A thread that runs one task at a time: ``submit`` it, then ``cancel`` it if the thread has
    not taken it yet (True), else ``wait`` for it (its exception, or None)."""

    def __init__(self):
        self._tasks, self._done = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="lrtdense-parallel").start()

    def submit(self, fn, *args):
        self._tasks.put((fn, args))

    def cancel(self):
        try:
            self._tasks.get_nowait()
        except queue.Empty:
            return False
        return True

    def wait(self):
        return self._done.get()

    def _loop(self):
        while True:
            task = self._tasks.get()
            error = _error_of(task[0], *task[1])
            del task                        # the arrays' references go before the report
            self._done.put(error)


_LANES = []
_LANES_LOCK = threading.Lock()
_BUSY = threading.Lock()        # held by the one call the pool serves at a time


def _pool(n):
    """At least ``n`` worker threads, started on first use and kept for the process."""
    with _LANES_LOCK:
        while len(_LANES) < n:
            _LANES.append(_Worker())
        return _LANES[:n]
