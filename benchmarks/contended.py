"""The contended run of ``bench_step.py --contended``: lrtdense's step while another process keeps
one core busy.

Issue 26's bar: with one core busy, lrtdense's step (as ``fit`` runs it: one BLAS thread and
one worker per usable CPU by default, or ``threads="auto"``) takes at most 1.5x its own idle
one-core time (one BLAS thread, one worker), in every configuration.

For each configuration and estimator, in one process, timed round-robin like the main run:

1. idle: the step on one core (``threads=1, workers=1``), with ``threads=1`` (``fit``'s
   default), with the BLAS's default count fixed, and with ``threads="auto"`` (its trials run
   idle, before the timing);
2. contended: a busy process is started (one Python thread spinning ``np.sin`` over a small
   array, one BLAS thread, pinned to the last usable CPU where the OS allows), and the same
   four steps are timed again, with a fifth: a new automatic step whose trials run under the
   contention (a training started next to the busy process). The first automatic step shows
   the re-check (chosen idle, then the load arrives). The busy process is stopped after.

Reported: each median in ms, each contended median over the idle one-core median, the count
each automatic step kept, the load average before and after, and the share of the CPUs other
processes used during each phase (the busy process included).
"""
import contextlib
import os
import subprocess
import sys
import time

import machine
import reference_step as ref

BAR = 1.5
BUSY = "import numpy as np\na = np.ones(4096)\nwhile True:\n    np.sin(a, out=a)\n"


@contextlib.contextmanager
def busy_core():
    """A process spinning on one core for the duration of the block."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
    try:
        if hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {max(os.sched_getaffinity(0))})
        time.sleep(0.5)                       # imported NumPy and spinning
        yield proc
    finally:
        proc.terminate()
        proc.wait()


def _default_count():
    from threadpoolctl import threadpool_info
    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"),
               default=1)


def measure(problem, timer):
    """The idle and contended timings of one estimator's step (see the module docstring).

    ``timer(contenders) -> {name: summary}`` times them round-robin. Returns a dict."""
    default = _default_count()
    est = problem.estimator
    names = {"one_core": f"lrtdense:{est}:one core", "one": f"lrtdense:{est}:threads=1",
             "default": f"lrtdense:{est}:default={default}", "auto": f"lrtdense:{est}:auto",
             "auto_contended": f"lrtdense:{est}:auto (new)"}
    steps = [ref.lrtdense_contender(problem, 1, names["one_core"], workers=1),
             ref.lrtdense_contender(problem, 1, names["one"]),
             ref.lrtdense_contender(problem, default, names["default"]),
             ref.lrtdense_contender(problem, "auto", names["auto"])]
    auto = steps[3].run.step.threads
    idle_choice = auto.count
    with machine.CpuShare() as idle_share:
        idle = timer(steps)
    with busy_core():
        fresh = ref.lrtdense_contender(problem, "auto", names["auto_contended"])
        with machine.CpuShare() as busy_share:
            busy = timer(steps + [fresh])
    one = idle[names["one_core"]]["median_ms"]
    return {"estimator": est, "default_threads": default, "names": names,
            "workers": steps[1].run.step.workers.count,
            "idle": idle, "contended": busy,
            "over_idle_one": {k: busy[n]["median_ms"] / one for k, n in names.items()},
            "auto_choice": {"idle": idle_choice, "after_contention": auto.count,
                            "decisions": [d[0] for d in auto.decisions],
                            "new": fresh.run.step.threads.count},
            "others_cpu": {"idle": idle_share.others, "contended": busy_share.others}}


def format_section(runs, load_before, load_after):
    """The report's Markdown section for ``[(dtype, batch, measure(...)), ...]``."""
    def ms(summary):
        return f"{summary['median_ms']:.2f}"

    lines = ["", "## Contended: one core busy with another process (issue 26)", "",
             f"Load average (1, 5, 15 min) before: {_load(load_before)}; after: "
             f"{_load(load_after)}. Bar: the step as `fit` runs it (1 thread, its default "
             f"workers) and the automatic one, under contention, <= {BAR}x the idle one-core "
             f"time (1 thread, 1 worker).", ""]
    header = ["dtype", "batch", "estimator", "idle one core ms", "idle 1 thread ms (workers)",
              "idle default ms",
              "idle auto ms (count)", "busy 1 thread", "busy default", "busy auto (counts)",
              "busy new auto (count)", "others' CPU idle / busy", "bar"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dtype, batch, r in runs:
        n, idle, busy, over = r["names"], r["idle"], r["contended"], r["over_idle_one"]
        choice = r["auto_choice"]
        worst = max(over["one"], over["auto"], over["auto_contended"])
        cells = [dtype, str(batch), ref.ESTIMATORS[r["estimator"]][1], ms(idle[n["one_core"]]),
                 f"{ms(idle[n['one']])} ({r['workers']})",
                 f"{ms(idle[n['default']])} ({r['default_threads']})",
                 f"{ms(idle[n['auto']])} ({choice['idle']})",
                 f"{ms(busy[n['one']])} ms, {over['one']:.2f}x",
                 f"{ms(busy[n['default']])} ms, {over['default']:.2f}x",
                 f"{ms(busy[n['auto']])} ms, {over['auto']:.2f}x ({choice['idle']} then "
                 f"{choice['after_contention']}; decisions {choice['decisions']})",
                 f"{ms(busy[n['auto_contended']])} ms, {over['auto_contended']:.2f}x "
                 f"({choice['new']})",
                 f"{_pct(r['others_cpu']['idle'])} / {_pct(r['others_cpu']['contended'])}",
                 "met" if worst <= BAR else f"NOT met ({worst:.2f}x)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Busy: each contended median over the idle one-core median. The busy "
              "process is one Python loop over `np.sin`, pinned to the last CPU where "
              "allowed. 'auto' chose its count idle and kept running when the load arrived "
              "(a kept default is measured again when its steps slow down); 'new auto' "
              "made its choice under the load.", ""]
    return "\n".join(lines)


def _load(values):
    return "n/a" if values is None else ", ".join(f"{v:.2f}" for v in values)


def _pct(share):
    return "n/a" if share is None else f"{100 * share:.0f}%"
