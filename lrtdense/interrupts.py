"""The signals ``fit`` handles: SIGTERM turned into a flag it checks between steps, and SIGINT
(Ctrl-C) held back while an update or a checkpoint is written, so that neither is left half
done; and SIGTERM raised as an exception where cleanup must run (``bench uci``'s worker
processes)."""
import contextlib
import signal
import threading

__all__ = ["sigterm_flag", "sigterm_raises", "deferred_interrupt"]


@contextlib.contextmanager
def sigterm_flag():
    """Within the block, SIGTERM appends to the yielded list instead of ending the process
    (main thread only, and only where SIGTERM has its default action: a handler the user
    installed is left alone)."""
    flag = []
    if not _sigterm_is_ours():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda *args: flag.append(args))
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_raises(make_exception):
    """Within the block, SIGTERM raises ``make_exception()`` where the main thread is, so that the
    ``finally`` blocks and context managers it is in run before the process ends (main thread
    only, and only where SIGTERM has its default action, as ``sigterm_flag``)."""
    if not _sigterm_is_ours():
        yield
        return

    def handler(*args):
        raise make_exception()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_is_ours():
    """Whether a handler may be installed here: in the main thread (the only one Python lets set
    one), over SIGTERM's default action (a handler the user installed is left alone)."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)


@contextlib.contextmanager
def deferred_interrupt():
    """Holds back SIGINT (Ctrl-C) until the block ends, then hands it to the handler that was
    installed before (Python's default raises KeyboardInterrupt; a user's own runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt
