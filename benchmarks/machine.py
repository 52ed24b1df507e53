"""The machine a benchmark ran on, and how busy other processes kept it.

* ``machine_info()``: CPU model, logical and usable CPUs, NumPy and its BLAS (with the OpenBLAS
  core type that runs, via threadpoolctl when installed), the OpenBLAS / OpenMP environment,
  versions and the date.
* ``CpuShare``: the share of the CPUs other processes used while a block ran. On a shared
  machine it says how far the absolute times can be trusted; the ratios of contenders timed
  round-robin in one process are far less affected.
* ``wait_for_idle(timeout)``: waits until other processes leave the CPUs mostly idle.
"""
import datetime
import os
import platform
import sys
import time

import numpy as np

__all__ = ["machine_info", "blas_info", "CpuShare", "wait_for_idle"]

ENV_KEYS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def machine_info():
    """A dict describing the machine and the software (plain strings and numbers)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import autograd
    try:
        from importlib.metadata import version
        autograd_version = version("autograd")
    except Exception:  # noqa: BLE001 - only for the report
        autograd_version = getattr(autograd, "__version__", "?")
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "autograd": autograd_version, "blas": blas_info(),
            "env": {k: os.environ.get(k) for k in ENV_KEYS},
            "loadavg": _loadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python"] + sys.argv)}


def blas_info():
    """NumPy's BLAS in one line: threadpoolctl's view (with the OpenBLAS core type that runs) or,
    without threadpoolctl, numpy.show_config's build information and a note."""
    try:
        from threadpoolctl import threadpool_info
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        mine = [p for p in pools if "numpy" in p.get("filepath", "")] or pools
        if mine:
            p = mine[0]
            return (f"{p.get('internal_api')} {p.get('version')}, core type "
                    f"{p.get('architecture')}, {_threads(p.get('num_threads'))} (threadpoolctl)")
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return (f"{blas.get('name')} {blas.get('version')} (core type not known: install "
                f"threadpoolctl to see it)")
    except Exception:  # noqa: BLE001 - NumPy < 1.26 has no mode="dicts"; only for the report
        return "not known (install threadpoolctl to see the BLAS and its core type)"


def _threads(n):
    return f"{n} thread" if n == 1 else f"{n} threads"


def _loadavg():
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


class CpuShare:
    """Busy CPU time of other processes while it runs, as a fraction of all CPUs (Linux).

    ``with CpuShare() as share: ...``; then ``share.others`` (0 = the machine was ours alone,
    1 = every CPU was busy with other work) or None where /proc/stat is unavailable. Computed
    as (busy jiffies of the whole machine - this process's CPU time) / (elapsed * CPUs).
    """

    def __enter__(self):
        self.others = None
        self._start = _machine_busy(), os.times(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy, times, clock = _machine_busy(), os.times(), time.perf_counter()
        if busy is None or self._start[0] is None:
            return False
        (busy0, ncpu), times0, clock0 = self._start
        own = (times.user + times.system) - (times0.user + times0.system)
        elapsed = clock - clock0
        if elapsed > 0:
            self.others = min(max((busy[0] - busy0 - own) / (elapsed * ncpu), 0.0), 1.0)
        return False


def _machine_busy():
    """(busy seconds of all CPUs since boot, number of CPUs) from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    fields = [int(v) for v in lines[0].split()[1:]]
    ncpu = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    busy = sum(fields[:8]) - idle                               # user .. steal, without guests
    return busy / os.sysconf("SC_CLK_TCK"), ncpu


def wait_for_idle(timeout, threshold=0.25, window=1.0):
    """Waits up to ``timeout`` seconds for a ``window`` in which other processes use less than
    ``threshold`` of the CPUs. Returns the share measured last (None without /proc/stat)."""
    deadline = time.perf_counter() + timeout
    while True:
        with CpuShare() as share:
            time.sleep(window)
        if share.others is None or share.others < threshold or time.perf_counter() >= deadline:
            return share.others
