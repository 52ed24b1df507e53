"""Buffers kept from one training step to the next, reused only when nothing refers to them.

A training step allocates the same arrays every time: the layers' noise, their outputs, the
intermediates their gradients need, the gradients themselves. Allocated afresh, weight-sized
arrays page-fault on every step under glibc's allocator (it returns large blocks to the system
and takes them back), which on a CPU costs as much as a small matrix product. A ``Workspace``
keeps every buffer it has handed out and hands it out again once it is free.

The rule, and the only one: a buffer is free when no array refers to it. Every array a kernel
receives from ``empty`` is a view of one of the workspace's buffers, and every view (including a
view of a view, a transpose, a reshape) holds a reference to that buffer, so the buffer's
reference count says whether anything still uses it: the workspace's own reference alone means
free. Nothing is ever released by hand, and nothing that is still referred to is ever handed out
again, so reuse cannot change a result: a computation gives the same bits with a workspace and
without one (``empty`` then just calls ``numpy.empty``). On Pythons without reference counts
(``sys.getrefcount`` missing) every request allocates.

Sizes: a request is served by a free buffer of exactly its size, else by a new buffer, which the
workspace then keeps (a short last minibatch of an epoch gets buffers of its own on its first
pass). It never shrinks; ``nbytes`` says what it holds. (Serving a request from a larger free
buffer was tried: it lets a smaller array take a buffer a later, larger request of the same
step then has to allocate anew, and the workspace grew by a third.)
"""
import math
import sys

import numpy as np

__all__ = ["Workspace", "empty"]

_getrefcount = getattr(sys, "getrefcount", None)


def _refs(buf):
    return _getrefcount(buf)


def _refs_of_a_free_buffer():
    # The count Workspace.empty sees for a buffer that only the workspace holds (its list, the
    # local variable, the call): measured, not assumed, since it differs between Pythons.
    buffers = [np.empty(1)]
    buf = buffers[0]
    return _refs(buf)


_FREE = _refs_of_a_free_buffer() if _getrefcount is not None else None


class Workspace:
    """A pool of reusable NumPy buffers; see the module docstring for the reuse rule."""

    def __init__(self):
        self._by_dtype = {}     # dtype -> {size: [1-D buffers]}
        self._next = {}         # (dtype, size) -> where the next search starts

    def empty(self, shape, dtype):
        """An uninitialized array of ``shape`` and ``dtype`` whose memory nothing else uses.

        Args:
          shape: int or tuple of ints.
          dtype: a NumPy dtype.
        Returns:
          A C-contiguous view of one of the workspace's buffers.
        """
        if type(shape) is not tuple:
            shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if _FREE is None:
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        by_size = self._by_dtype.get(dtype)
        if by_size is None:
            by_size = self._by_dtype[dtype] = {}
        buffers = by_size.get(size)
        if buffers is None:
            buffers = by_size[size] = []
        # A step asks for its buffers in the same order every time: searching from just after
        # the last one handed out finds a free one first.
        key = (dtype, size)
        start = self._next.get(key, 0)
        n = len(buffers)
        for i in range(n):
            j = (start + i) % n
            buf = buffers[j]
            if _refs(buf) == _FREE:
                self._next[key] = j + 1
                return buf.reshape(shape)
        buf = np.empty(size, dtype)
        buffers.append(buf)
        self._next[key] = 0
        return buf.reshape(shape)

    @property
    def nbytes(self):
        """Bytes of all buffers held (free or in use)."""
        return sum(buf.nbytes for by_size in self._by_dtype.values()
                   for buffers in by_size.values() for buf in buffers)

    def __repr__(self):
        count = sum(len(b) for by_size in self._by_dtype.values() for b in by_size.values())
        return f"Workspace({count} buffers, {self.nbytes} bytes)"


def empty(workspace, shape, dtype):
    """``workspace.empty(shape, dtype)``, or ``numpy.empty`` when ``workspace`` is None."""
    if workspace is None:
        return np.empty(shape, dtype)
    return workspace.empty(shape, dtype)
