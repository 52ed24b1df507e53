"""Element-wise work over fixed chunks of large arrays, on a small pool of threads: the same bits
with any number of workers.

NumPy's ufuncs release the GIL while they loop, so two Python threads running ufuncs on two
halves of an array use two cores. The one rule that keeps results independent of the worker
count: **an array is cut into chunks whose boundaries depend on its size and dtype only**
(``CHUNK_BYTES`` each, the last shorter), never on how many workers there are; each chunk is
computed by the same calls whichever thread runs it, and nothing is summed across chunks. An
element-wise operation has no dependence between elements, so the chunks together hold exactly
the bits of the whole operation, with 1, 2 or N workers (``tests/test_parallel.py``).

Workers: 1 (the default) runs everything inline in the calling thread, exactly as without this
module. ``workers(n)`` sets the count for a block (a context variable: per thread and per task);
``make_step(workers=...)`` sets it around each training step; ``$LRTDENSE_WORKERS`` is the
default when a step is given None. The calling thread and n - 1 threads of a pool kept for the
process each take the next chunk not yet taken until none is left, so a worker that another
process keeps off the CPU takes fewer chunks instead of holding the others up; one it has not
started is taken back. The pool serves one call at a time: a call made while another
thread's holds it, or from inside a chunk, runs inline, with the same bits. Arrays of fewer than
``MIN_CHUNKS`` chunks run inline: waking another thread has a fixed cost that a small array
does not repay.

A kernel would map a pass ``np.op(a, b, out=out)`` over the chunks of the flattened arrays with
one ``for_chunks`` call; the training step's Adam update is the one user so far (its dozen passes
per chunk amortize the hand-over; single passes of the kernels were not measured to pay).

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


from lrtdense.checks import check_int

__all__ = ["ENV", "CHUNK_BYTES", "MIN_CHUNKS", "workers", "count", "from_setting", "chunk_size",
           "chunks", "for_chunks"]

ENV = "LRTDENSE_WORKERS"
CHUNK_BYTES = 262144        # 65536 float32 or 32768 float64 elements: a few chunks sit in L2
MIN_CHUNKS = 2              # fewer chunks than this run inline

_WORKERS = contextvars.ContextVar("lrtdense_parallel_workers", default=1)


def from_setting(setting):
    """The worker count of ``make_step``'s ``workers``: an int >= 1, or None for
    ``$LRTDENSE_WORKERS`` (1 when unset).

    Raises:
      ValueError: the setting, or the variable, is not an integer >= 1.
    """
    if setting is None:
        text = os.environ.get(ENV, "").strip()
        if text and (not text.isdigit() or int(text) < 1):
            raise ValueError(f"${ENV} must be an integer >= 1, got {text!r}")
        return int(text) if text else 1
    return check_int(setting, "workers", low=1,
                     expected=f"None (${ENV}, else 1) or an integer >= 1")


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
    bounds = chunks(size, itemsize)
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
