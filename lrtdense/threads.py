"""How many BLAS threads a training step runs with: one by default, as many as asked, or the
faster of one and the default, measured on the first steps.

About half of a step's time goes to matrix products (NumPy's BLAS, OpenBLAS in NumPy's wheels).
On an idle machine the BLAS's default, one thread per core, makes the larger products faster.
When another process keeps a core busy, the BLAS's threads wait for one another and a step can
take many times as long as with one thread.

* ``threads=None`` (the default) without ``LRTDENSE_THREADS`` in the environment: every step
  runs with **one** BLAS thread (``Fixed(1)``). One thread cannot collapse under another
  process's load, and it makes a run's bits independent of the machine: OpenBLAS blocks long
  sums differently with one thread and with several (below), so a count that followed the
  machine would make the same seed give other last bits on another day.
* ``threads=N`` (an int >= 1), or ``LRTDENSE_THREADS=N`` when ``threads`` is None: every step
  with N BLAS threads (``Fixed``); faster for large products on an idle machine.
* ``threads="auto"``, or ``LRTDENSE_THREADS=auto``: ``AutoThreads``.
  The first step runs untimed (it allocates the step's workspace); the next ``2 * trials``
  steps alternate one thread and the default count (the BLAS's count when the step was made),
  each timed, and the count with the smaller median is kept. The default must be faster by
  ``margin``: one thread leaves the other cores to other work and cannot collapse when load
  arrives later, so the extra threads have to earn their place.

  The choice is re-checked rarely, and only where it can collapse: while the default count is
  kept, a run of ``trials`` steps each slower than ``slowdown`` times its measured median
  (another process has started) runs the trials again. One thread is never re-checked: it
  cannot collapse, the most it can lose on a machine that became idle is the default count's
  speed-up, and re-measuring would run slow steps on purpose.

  Only steps of the shape (the minibatch's) first timed are compared, so that an epoch's
  shorter last minibatch never favours the count it happens to fall on. The clock is an
  argument (``clock=``), so that tests decide the timings.

What the count does to results: a given count gives the same bits every run. Different counts
give the same bits where every matrix product sums over few enough terms (``tests/
test_threads.py``: a 128-256-10 network, float32 and float64, LRT and Flipout, one, two and the
automatic count), but not in general: at the reference network's 784 inputs the last bits of a
product differ with the count (the test says where), and training carries them on. So the
automatic choice, which follows the machine's load, can change the last bits of a run, and a
run resumed from a checkpoint repeats bit for bit only with the count it was trained with (the
default's one, or the same fixed N).

The limits are set through threadpoolctl around each step and restored after it; they are
process-wide, so two steps running at once in two Python threads would set each other's.
"""
import contextlib
import os
import statistics
import time

from threadpoolctl import ThreadpoolController

from lrtdense.checks import check_int

__all__ = ["ENV", "Fixed", "AutoCount", "AutoThreads", "policy"]

ENV = "LRTDENSE_THREADS"


def policy(threads):
    """The thread policy of one step from ``make_step``'s ``threads``.

    Args:
      threads: None (``$LRTDENSE_THREADS`` if set, else ``Fixed(1)``), an int >= 1
        (``Fixed(threads)``), "auto" (``AutoThreads()``) or an ``AutoThreads`` (its own trials
        or clock; one per step).
    Raises:
      ValueError: threads, or ``$LRTDENSE_THREADS``, is neither an integer >= 1 nor automatic.
    """
    if isinstance(threads, AutoThreads):
        return threads
    if isinstance(threads, str) and threads == "auto":
        return AutoThreads()
    if threads is None:
        setting = os.environ.get(ENV, "").strip()
        if setting == "auto":
            return AutoThreads()
        if setting and (not setting.isdigit() or int(setting) < 1):
            raise ValueError(f"${ENV} must be an integer >= 1 or 'auto', got {setting!r}")
        threads = int(setting) if setting else 1
    return Fixed(check_int(threads, "threads", low=1,
                           expected="None (one thread, or $LRTDENSE_THREADS), 'auto', an "
                                    "integer >= 1 or an AutoThreads"))


def _blas():
    """threadpoolctl's handle on every BLAS loaded in the process (made once per step: finding
    the libraries takes far longer than setting their limits)."""
    return ThreadpoolController().select(user_api="blas")


def _default_count(blas):
    return max((lib.num_threads for lib in blas.lib_controllers), default=1)


class Fixed:
    """Every step with ``count`` BLAS threads."""

    def __init__(self, count):
        self.count = count
        self._blas = _blas()

    def step(self, key=None):
        """A context manager: the block runs with ``count`` BLAS threads (``key`` is unused)."""
        return self._blas.limit(limits=self.count)


class AutoCount:
    """The faster of a count of 1 and ``default``, measured on the first steps and re-checked
    when the kept default slows down (the module docstring says how); ``apply(count)`` is a
    context manager that runs a block with that count (BLAS threads: ``AutoThreads``;
    lrtdense's own workers: ``lrtdense.parallel.policy``).

    Args:
      apply: ``count -> context manager``; default: the count compared with 1.
      trials: timed steps per count; margin: how much faster (a fraction) the default count
        must be to be kept; slowdown: how many times its measured median a step with the
        default count may take before ``trials`` such steps in a row start a re-check.
      clock: seconds, as ``time.perf_counter``.

    Attributes:
      count: the count the last step ran with (while measuring, the one being tried).
      default: the count compared with 1.
      deciding: True until the trials are done (and again while a re-check runs).
      decisions: one ``(count, median_one, median_default)`` per completed trial (seconds).
    """

    def __init__(self, apply, default, trials=3, margin=0.1, slowdown=2.0,
                 clock=time.perf_counter):
        self.trials, self.margin, self.slowdown, self.clock = trials, margin, slowdown, clock
        self._apply = apply
        self.default = default
        self.count = self.default
        self.decisions = []
        self._key = None          # the minibatch shape the trials compare
        self._warm = False        # the untimed first step has run
        self._slow = 0            # consecutive slow steps with the default count kept
        self._times = {1: [], self.default: []} if self.default > 1 else None

    @property
    def deciding(self):
        """True while the next steps of the first timed shape are trials."""
        return self._times is not None

    @contextlib.contextmanager
    def step(self, key=None):
        """A context manager: the block runs with this step's count and is timed.

        ``key``: what makes two steps comparable (``make_step`` passes the minibatch's shape)."""
        trial = self._warm and self.deciding and (self._key is None or key == self._key)
        if trial:
            self._key = key
            ones, defaults = self._times[1], self._times[self.default]
            self.count = 1 if len(ones) <= len(defaults) else self.default
        start = self.clock()
        with self._apply(self.count):
            yield
        seconds = self.clock() - start
        self._warm = True
        if trial:
            self._times[self.count].append(seconds)
            if all(len(t) == self.trials for t in self._times.values()):
                self._decide()
        elif not self.deciding and self.count > 1 and key == self._key:
            self._watch(seconds)

    def _decide(self):
        one = statistics.median(self._times[1])
        default = statistics.median(self._times[self.default])
        self.count = self.default if default < (1 - self.margin) * one else 1
        self.decisions.append((self.count, one, default))
        self._times, self._slow = None, 0

    def _watch(self, seconds):
        kept = self.decisions[-1][2]
        self._slow = self._slow + 1 if seconds > self.slowdown * kept else 0
        if self._slow >= self.trials:
            self._times = {1: [], self.default: []}


class AutoThreads(AutoCount):
    """The faster of one BLAS thread and the BLAS's default count (``AutoCount``; ``default``:
    the count compared with one thread, None for the BLAS's count now)."""

    def __init__(self, trials=3, margin=0.1, slowdown=2.0, clock=time.perf_counter,
                 default=None):
        blas = _blas()
        super().__init__(lambda count: blas.limit(limits=count),
                         _default_count(blas) if default is None else default, trials, margin,
                         slowdown, clock)
