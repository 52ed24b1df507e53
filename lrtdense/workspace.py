"""Buffers kept from one training step to the next, reused only when nothing refers to them.

A training step allocates the same arrays every time: the layers' noise, their outputs, the
intermediates their gradients need, the gradients themselves. Allocated afresh, weight-sized
arrays page-fault on every step under glibc's allocator (it returns large blocks to the system
and takes them back), which on a CPU costs as much as a small matrix product. A ``Workspace``
keeps every buffer it has handed out and hands it out again once it is free.

The rule, and the only one: a buffer is free when no array refers to it. ``empty`` hands out
one of the workspace's buffers itself, and every view of it (a view of a view, a transpose, a
reshape) holds a reference to it, so the buffer's reference count says whether anything still
uses it: the workspace's own reference alone means free. Nothing is ever released by hand, and nothing that is still referred to is ever handed out
again, so reuse cannot change a result: a computation gives the same bits with a workspace and
without one (``empty`` then just calls ``numpy.empty``). The count that means "free" is measured
when the module is imported and then checked on a probe workspace (``calibrate_free_refcount``):
CPython documents reference counts as an implementation detail that changes between versions.
On a Python without reference counts, or where the check fails, every request allocates.

Debug mode (``Workspace(debug=True)``, or ``LRTDENSE_DEBUG_BUFFERS=1`` in the environment for
every workspace and for ``empty(None, ...)``): every buffer is filled with NaN (True for bools,
the largest value for integers) before it is handed out, new or reused, so that code reading a
buffer it did not write gives NaN instead of a plausible stale value; ``value_and_grad`` then
also checks that each gradient a kernel claims as fresh shares no memory with its cotangent or
residuals (``lrtdense.autodiff``).

Shapes: a request is served by a free buffer of exactly its shape and dtype, else by a new
buffer, which the workspace then keeps (a short last minibatch of an epoch gets buffers of its
own on its first pass). It never shrinks; ``nbytes`` says what it holds. (Serving a request from
a larger free buffer was tried: it lets a smaller array take a buffer a later, larger request of
the same step then has to allocate anew, and the workspace grew by a third.)
"""
import os
import sys

import numpy as np

__all__ = ["Workspace", "empty", "calibrate_free_refcount", "debug_buffers", "DEBUG_ENV"]

DEBUG_ENV = "LRTDENSE_DEBUG_BUFFERS"
_DEBUG_FROM_ENV = os.environ.get(DEBUG_ENV, "") not in ("", "0")
_getrefcount = getattr(sys, "getrefcount", None)


def _refs(buf):
    return _getrefcount(buf)


class Workspace:
    """A pool of reusable NumPy buffers; see the module docstring for the reuse rule.

    Args:
      debug: poison every buffer with NaN before handing it out (module docstring); None: as
        the environment variable ``LRTDENSE_DEBUG_BUFFERS`` says.
    """

    def __init__(self, debug=None):
        self.debug = _DEBUG_FROM_ENV if debug is None else bool(debug)
        self._free = _FREE
        self._buffers = {}      # (shape, dtype) -> [buffers]
        self._next = {}         # (shape, dtype) -> where the next search starts

    def empty(self, shape, dtype):
        """An uninitialized array of ``shape`` and ``dtype`` whose memory nothing else uses.

        Args:
          shape: int or tuple of ints.
          dtype: a NumPy dtype.
        Returns:
          One of the workspace's C-contiguous buffers of that shape and dtype (NaN-filled in
          debug mode).
        """
        if type(shape) is not tuple:
            shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        free = self._free
        if free is None:
            return _poisoned(np.empty(shape, dtype)) if self.debug else np.empty(shape, dtype)
        if type(dtype) is not np.dtype:
            dtype = np.dtype(dtype)
        key = (shape, dtype)
        buffers = self._buffers.get(key)
        if buffers is None:
            buffers = self._buffers[key] = []
        # A step asks for its buffers in the same order every time: searching from just after
        # the last one handed out finds a free one first.
        start = self._next.get(key, 0)
        n = len(buffers)
        for i in range(n):
            j = (start + i) % n
            buf = buffers[j]
            if _refs(buf) == free:
                self._next[key] = j + 1
                return _poisoned(buf) if self.debug else buf
        buf = np.empty(shape, dtype)
        buffers.append(buf)
        self._next[key] = 0
        return _poisoned(buf) if self.debug else buf

    @property
    def nbytes(self):
        """Bytes of all buffers held (free or in use)."""
        return sum(buf.nbytes for buffers in self._buffers.values() for buf in buffers)

    def __repr__(self):
        count = sum(len(b) for b in self._buffers.values())
        return f"Workspace({count} buffers, {self.nbytes} bytes)"


def _poisoned(buf):
    kind = buf.dtype.kind
    if kind in "fc":
        buf.fill(np.nan)
    elif kind == "b":
        buf.fill(True)
    elif kind in "iu":
        buf.fill(np.iinfo(buf.dtype).max)
    return buf


def empty(workspace, shape, dtype):
    """``workspace.empty(shape, dtype)``, or ``numpy.empty`` when ``workspace`` is None."""
    if workspace is None:
        return _poisoned(np.empty(shape, dtype)) if _DEBUG_FROM_ENV else np.empty(shape, dtype)
    return workspace.empty(shape, dtype)


def debug_buffers(workspace):
    """Whether buffer ownership is checked: ``workspace.debug``, else the environment variable."""
    return _DEBUG_FROM_ENV if workspace is None else workspace.debug


def calibrate_free_refcount():
    """The reference count ``Workspace.empty`` sees for a buffer only the workspace holds.

    Measured the way ``Workspace.empty`` counts (the buffer in a list, in a local variable,
    passed to a function), then checked on a probe workspace: a buffer the caller still holds
    through a view must not be handed out again, and one it has dropped must be.

    Returns:
      The count, or None when Python has no reference counts or the check fails (then every
      request allocates: correct, only without reuse).
    """
    if _getrefcount is None:
        return None
    buffers = [np.empty(1)]
    buf = buffers[0]
    free = _refs(buf)
    del buf, buffers
    probe = Workspace(debug=False)
    probe._free = free
    a = probe.empty(4, np.float64)
    view = a[1:]
    del a
    b = probe.empty(4, np.float64)              # a's buffer is held through the view
    held_is_kept = not np.shares_memory(b, view)
    del view
    c = probe.empty(4, np.float64)              # now a's buffer is free again
    freed_is_reused = not np.shares_memory(c, b) and probe.nbytes == 2 * 4 * 8
    return free if held_is_kept and freed_is_reused else None


_FREE = None
_FREE = calibrate_free_refcount()
