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
default when a step is given None. Worker k of n runs chunks k, k + n, k + 2n, ...; the calling
thread is worker 0 and the other n - 1 wait in a pool kept for the process (one call at a
time: a call made while another thread's holds the pool, or from inside a chunk, runs inline,
with the same bits). Arrays of fewer than
``MIN_CHUNKS`` chunks run inline: handing a chunk to another thread costs about as much as a
pass over a few thousand elements.

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

__all__ = ["ENV", "CHUNK_BYTES", "MIN_CHUNKS", "workers", "count", "from_setting", "chunk_size",
           "chunks", "for_chunks", "apply"]

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

    ``lane`` (0 <= lane < the worker count) names the worker running the chunk, for per-worker
    scratch; calls with the same lane never overlap. Inline (lane 0, in order) with one worker
    or fewer than ``MIN_CHUNKS`` chunks. Returns when every chunk is done; raises the first
    worker's exception, if any.
    """
    bounds = chunks(size, itemsize)
    n = min(count(), len(bounds))
    if n == 1 or len(bounds) < MIN_CHUNKS or not _BUSY.acquire(blocking=False):
        _run_lane(f, bounds, 0)             # (a pool busy with another thread's call: inline)
        return
    errors = []
    try:
        lanes = _pool(n - 1)
        for lane in range(1, n):
            lanes[lane - 1].submit(contextvars.copy_context().run, _run_lane, f,
                                   bounds[lane::n], lane)
        try:
            _run_lane(f, bounds[0::n], 0)
        except BaseException as err:        # noqa: BLE001 - the workers are waited for first
            errors.append(err)
        errors += [e for e in (lanes[lane - 1].wait() for lane in range(1, n)) if e is not None]
    finally:
        _BUSY.release()
    if errors:
        raise errors[0]


def apply(f, *args, out):
    """``f(*args, out=out)`` for an element-wise ``f`` (a ufunc, or a function of arrays that is
    element-wise), computed over the fixed chunks of ``out`` by the workers.

    Args:
      f: called as ``f(*chunk_args, out=chunk_out)``; it must write ``out`` and touch nothing
        else.
      args: arrays of ``out``'s shape, or Python/NumPy scalars (passed whole to every chunk).
      out: a C-contiguous array.
    Returns:
      out. Any other shape or layout runs as one call in the calling thread.
    """
    flat = _flat_views(args, out)
    if flat is None or count() == 1 or out.nbytes < MIN_CHUNKS * CHUNK_BYTES:
        f(*args, out=out)
        return out
    flat_args, flat_out = flat

    def chunk(start, stop, lane):
        f(*(a if np.ndim(a) == 0 else a[start:stop] for a in flat_args),
          out=flat_out[start:stop])

    for_chunks(chunk, flat_out.size, flat_out.itemsize)
    return out


def _flat_views(args, out):
    """(args, out) as 1-d views when every array argument has out's shape and all are
    C-contiguous; else None."""
    if not (isinstance(out, np.ndarray) and out.flags.c_contiguous):
        return None
    flat = []
    for a in args:
        if np.ndim(a) == 0:
            flat.append(a)
        elif isinstance(a, np.ndarray) and a.shape == out.shape and a.flags.c_contiguous:
            flat.append(a.reshape(-1))
        else:
            return None
    return flat, out.reshape(-1)


def _run_lane(f, bounds, lane):
    token = _WORKERS.set(1)                 # what a chunk calls in turn runs inline
    try:
        for start, stop in bounds:
            f(start, stop, lane)
    finally:
        _WORKERS.reset(token)


class _Worker:
    """A thread that runs one task at a time; ``wait`` returns the task's exception or None."""

    def __init__(self):
        self._tasks, self._done = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=self._loop, daemon=True, name="lrtdense-parallel").start()

    def submit(self, fn, *args):
        self._tasks.put((fn, args))

    def wait(self):
        return self._done.get()

    def _loop(self):
        while True:
            task = self._tasks.get()
            try:
                task[0](*task[1])
                error = None
            except BaseException as err:    # noqa: BLE001 - handed to the caller
                error = err
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
