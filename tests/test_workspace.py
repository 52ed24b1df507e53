"""lrtdense.workspace: a buffer is handed out again only when nothing refers to it."""
import numpy as np

from lrtdense.workspace import Workspace, empty


def _address(a):
    return a.__array_interface__["data"][0]


def test_a_buffer_in_use_through_any_view_is_never_handed_out_again():
    ws = Workspace()
    for make_view in (lambda a: a.T, lambda a: a[1:], lambda a: a.reshape(-1)[::2], lambda a: a):
        a = ws.empty((3, 4), np.float64)
        a[:] = 1.0
        view, where = make_view(a), _address(a)
        del a                                       # only the view refers to the buffer now
        b = ws.empty((3, 4), np.float64)
        assert _address(b) != where and not np.shares_memory(b, view)
        b[:] = 7.0
        assert np.all(view == 1.0)
        del view, b
    assert ws.nbytes == 2 * 12 * 8                  # the two buffers, reused by every round


def test_a_free_buffer_is_reused_and_sizes_and_dtypes_are_kept_apart():
    ws = Workspace()
    a = ws.empty((2, 5), np.float32)
    where = _address(a)
    del a
    b = ws.empty((5, 2), np.float32)              # same size, other shape: the same buffer
    assert _address(b) == where and b.shape == (5, 2) and b.flags.c_contiguous
    c = ws.empty((10,), np.float64)               # same size, other dtype: a new buffer
    d = ws.empty((9,), np.float32)                # other size: a new buffer
    e = ws.empty((2, 5), np.float32)              # b still holds the first: a new buffer
    assert len({_address(v) for v in (b, c, d, e)}) == 4
    assert ws.nbytes == 10 * 4 + 10 * 8 + 9 * 4 + 10 * 4


def test_without_a_workspace_empty_allocates():
    a, b = empty(None, (2, 2), np.float32), empty(None, (2, 2), np.float32)
    assert a.dtype == np.float32 and not np.shares_memory(a, b)
