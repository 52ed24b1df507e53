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
    b = ws.empty((2, 5), np.float32)              # free again: the same buffer
    assert _address(b) == where and b.shape == (2, 5) and b.flags.c_contiguous
    c = ws.empty((2, 5), np.float64)              # other dtype: a new buffer
    d = ws.empty((5, 2), np.float32)              # other shape: a new buffer
    e = ws.empty((2, 5), np.float32)              # b still holds the first: a new buffer
    assert len({_address(v) for v in (b, c, d, e)}) == 4
    assert ws.nbytes == 10 * 4 + 10 * 8 + 10 * 4 + 10 * 4


def test_without_a_workspace_empty_allocates():
    a, b = empty(None, (2, 2), np.float32), empty(None, (2, 2), np.float32)
    assert a.dtype == np.float32 and not np.shares_memory(a, b)


# ------------------------------------------------------- debug mode and the refcount check
def test_debug_mode_poisons_every_buffer_before_handing_it_out():
    ws = Workspace(debug=True)
    a = ws.empty((2, 3), np.float64)
    assert np.all(np.isnan(a))
    a[:] = 1.0
    where = _address(a)
    del a
    b = ws.empty((2, 3), np.float64)            # the same buffer, poisoned again
    assert _address(b) == where and np.all(np.isnan(b))
    assert np.all(ws.empty(4, bool)) and Workspace(debug=False).debug is False


def test_the_free_refcount_is_measured_and_checked_and_a_failed_check_means_no_reuse(monkeypatch):
    from lrtdense import workspace
    assert workspace.calibrate_free_refcount() == workspace._FREE is not None
    monkeypatch.setattr(workspace, "_refs", lambda buf: 1)      # counts that say nothing
    assert workspace.calibrate_free_refcount() is None
    monkeypatch.setattr(workspace, "_FREE", None)
    ws = Workspace()
    a = ws.empty(3, np.float64)
    del a
    assert ws.nbytes == 0                       # plain allocation: nothing kept, nothing reused


def test_debug_mode_catches_a_gradient_wrongly_claimed_fresh():
    import pytest
    from lrtdense.autodiff import Fresh, kernel, value_and_grad

    @kernel
    def double(a, *, workspace=None):
        """2 a."""

    @double.forward
    def _(a, *, workspace=None):
        return 2 * a, ()

    @double.backward
    def _(res, g, wanted):
        return {"a": Fresh(g)}                  # a lie: g is the cotangent, not ours

    fun = lambda p: (np.sum(double(p["a"])), None)
    params = {"a": np.ones(3)}
    value_and_grad(fun, params, workspace=Workspace(debug=False))
    with pytest.raises(AssertionError, match="marked Fresh but shares memory with the cotangent"):
        value_and_grad(fun, params, workspace=Workspace(debug=True))


def test_the_bit_equality_and_one_path_tests_pass_with_poisoned_buffers():
    """tests/test_one_path.py, test_workspace.py, test_kernels.py and test_gradients.py again
    with LRTDENSE_DEBUG_BUFFERS=1: every buffer NaN-filled before use, every Fresh checked."""
    import os
    import subprocess
    import sys
    import pytest
    from lrtdense.workspace import DEBUG_ENV
    if os.environ.get(DEBUG_ENV):
        pytest.skip("already in debug mode")
    here = os.path.dirname(os.path.abspath(__file__))
    files = [os.path.join(here, f) for f in ("test_one_path.py", "test_workspace.py",
                                             "test_kernels.py", "test_gradients.py")]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           *files], env={**os.environ, DEBUG_ENV: "1"}, capture_output=True,
                          text=True, timeout=600, cwd=os.path.dirname(here))
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
