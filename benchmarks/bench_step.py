#!/usr/bin/env python3
"""Benchmark of lrtdense's training steps, every estimator, against PyTorch eager and JAX jit.

What it measures (issues 6 and 12): the reference step (an MLP 784 -> 400 -> 400 -> 10, ReLU
hidden layers, softmax cross-entropy + KL / 60000 on one minibatch: forward, all gradients, one
Adam update with lr 1e-3; see ``reference_step.py``) with every layer of one class, for each of
the five estimators (DenseLocalReparameterization "LRT", DenseReparameterization, DenseFlipout,
DenseVariationalDropout, DenseSparseVariationalDropout), in float32 and float64, batch 10, 100
and 1000, on random data (x ~ U[0, 1), labels 0..9; nothing is downloaded):

* step time, median ms, of: lrtdense's step exactly as ``fit`` runs it (``make_step``), for each
  estimator; the GEMM floor (the 16 matrix products the LRT step needs, on preallocated arrays);
  when installed, the same steps in PyTorch eager and in JAX with ``jax.jit``, and in
  lrtdense.torch's modules (``ltorch``: the certified layers a user takes to PyTorch); with
  ``--oracle``, the plain autograd expression of the loss (``tests/oracle.py``) with
  ``autograd.grad`` and lrtdense's Adam, a diagnostic. All contenders of a configuration run in
  the same process, interleaved round-robin in a shuffled order each round, so that machine noise
  hits them alike. Ratios of medians from one run: each estimator's step / the LRT step (issue
  12's bars: f32, DenseReparameterization and both dropout layers <= 1.25x, DenseFlipout <=
  1.6x), each lrtdense step / PyTorch and / JAX (goal <= 1.0x), the LRT step / the GEMM floor
  (issue 6's bars). The share of the CPUs other processes used meanwhile is reported;
* memory of each lrtdense step, after warm-up and before any peer is imported: the peak of the
  footprint (tracemalloc) against the arrays the math needs (the LRT step's bar: 1.5x), NumPy
  buffers allocated per step, page faults per step, the process's peak RSS, and what explicit
  per-example weight sampling would need at the same sizes;
* a sanity check of each peer (and the oracle): its loss and gradients equal those of lrtdense's
  step on the same params, minibatch and noise: in the timed dtype, and for float32 also the
  same contender's math in float64 on the same (cast) values, where rounding cannot hide a
  difference (float64 ~1e-15 relative). A mismatch is marked in the report and makes the
  command exit with status 1;
* with ``--contended``, lrtdense's step while another process keeps one core busy: as ``fit``
  runs it (one BLAS thread, one worker per usable CPU), with the BLAS's default count and with
  the automatic count, each against the same step's idle one-core time (one thread, one worker;
  issue 26's bar: <= 1.5x), with the load average (``contended.py``).

Run (from the repository root; the peers need torch and jax installed, else they are skipped
with a note):

    python benchmarks/bench_step.py                      # full run: prints the report
    python benchmarks/bench_step.py --write-results      # ... and writes benchmarks/RESULTS.md
    python benchmarks/bench_step.py --quick              # 5 rounds
    python benchmarks/bench_step.py --dtypes float32 --batches 100 --estimators lrt,flipout
    python benchmarks/bench_step.py --no-peers --oracle  # lrtdense and the autograd oracle
    python benchmarks/bench_step.py --contended --no-peers --batches 100 --estimators lrt

It prints a Markdown report to stdout; ``--out FILE`` also writes it to FILE, ``--write-results``
to ``benchmarks/RESULTS.md`` (nothing committed is written otherwise); ``--json FILE`` adds the
raw numbers. Where the environment sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they slow a
current NumPy on some processors), benchmark with both unset in that command alone,
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py``, and check the
core type the report names (threadpoolctl). Never change them in tests or CI.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contended  # noqa: E402
import machine  # noqa: E402
import memory_stats  # noqa: E402
import reference_step as ref  # noqa: E402
import report  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a short run: 5 rounds, 1 warm-up round, fewer memory steps")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--batches", default="10,100,1000")
    p.add_argument("--estimators", default=",".join(ref.ESTIMATORS),
                   help=f"comma-separated, some of {', '.join(ref.ESTIMATORS)} (default all; "
                        f"the ratios to the LRT step need lrt)")
    p.add_argument("--repeats", type=int, default=None,
                   help="rounds: timed turns (--turn steps) per contender and configuration "
                        "(default 21, --quick 5)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed round-robin rounds first (default 2, --quick 1)")
    p.add_argument("--out", default="", metavar="FILE", help="also write the report to FILE")
    p.add_argument("--write-results", action="store_true",
                   help=f"also write the report to {os.path.relpath(RESULTS)} (committed)")
    p.add_argument("--json", default="", metavar="FILE", help="also write the raw numbers here")
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    p.add_argument("--peers", default="torch,jax,ltorch", help="which peers to try (if installed)")
    p.add_argument("--oracle", action="store_true",
                   help="also time tests/oracle.py's plain autograd loss + autograd.grad + "
                        "lrtdense's Adam (a diagnostic: what the kernels buy)")
    p.add_argument("--settle", type=float, default=0.2, metavar="SECONDS",
                   help="pause before each contender's turn of steps (default 0.2), so that the "
                        "thread pools of the one before (OpenBLAS, PyTorch, XLA), which spin on "
                        "the cores for a while after their work, do not take the cores it runs "
                        "on; 0 for none")
    p.add_argument("--turn", type=int, default=2, metavar="STEPS",
                   help="steps each contender runs in its turn of a round (default 2): the "
                        "first is reported as cold, the others as warm")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each configuration, wait up to SECONDS for other processes to "
                        "leave the CPUs mostly idle (shared machines)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="limit NumPy's BLAS (threadpoolctl) and torch to N threads, and JAX to "
                        "one when N is 1 (default: each library's own default). A diagnostic "
                        "for busy machines; the issues' bars are for the defaults")
    p.add_argument("--contended", action="store_true",
                   help="also time lrtdense's step (1 thread, the default count, automatic) "
                        "while another process keeps one core busy, against its idle "
                        "one-thread time (contended.py)")
    p.add_argument("--sizes", default=",".join(map(str, ref.LAYERS)),
                   help="layer sizes input,hidden...,classes (the bars apply to 784,400,400,10 "
                        "only; smaller sizes are for smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtypes:
        if d not in ("float32", "float64"):
            p.error(f"--dtypes: expected float32 and/or float64, got {d!r}")
    args.estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    for e in args.estimators:
        if e not in ref.ESTIMATORS:
            p.error(f"--estimators: unknown estimator {e!r}; expected some of "
                    f"{', '.join(ref.ESTIMATORS)}")
    if not args.estimators or not args.dtypes:
        p.error("--estimators and --dtypes need at least one entry each")
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
        args.sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    except ValueError as err:
        p.error(f"--batches / --sizes: expected comma-separated integers ({err})")
    args.peers = [] if args.no_peers else [n for n in args.peers.split(",") if n]
    for name in args.peers:
        if name not in ref.PEERS:
            p.error(f"--peers: unknown peer {name!r}; expected some of {sorted(ref.PEERS)}")
    if args.repeats is None:
        args.repeats = 5 if args.quick else 21
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if len(args.sizes) < 2 or min(args.sizes) < 1 or not args.batches or min(args.batches) < 1:
        p.error("--sizes needs at least 2 sizes >= 1 and --batches sizes >= 1")
    if args.repeats < 1 or args.warmup < 0 or args.settle < 0 or args.turn < 2:
        p.error("--repeats must be >= 1, --warmup >= 0, --settle >= 0 and --turn >= 2")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    args.memory_steps = 2 if args.quick else 3
    args.fault_steps = 3 if args.quick else 10
    return args


# ------------------------------------------------------------------------------------- peers
def limit_threads(threads):
    """Limits NumPy's BLAS to ``threads`` threads for the rest of the process (threadpoolctl).
    Returns a note for the report. Raises SystemExit without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise SystemExit("--threads needs threadpoolctl (pip install threadpoolctl)") from None
    threadpool_limits(threads, user_api="blas")
    if threads == 1:   # must precede the import of jax
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    return (f"threads limited to {threads} (--threads): NumPy's BLAS via threadpoolctl, "
            f"torch.set_num_threads" + (", JAX via XLA_FLAGS" if threads == 1 else
                                        "; JAX keeps its default"))


def load_peers(names, dtypes, threads=None):
    """Imports each requested peer. Returns ({name: factory}, {name: version}, [skip notes])."""
    factories, versions, notes = {}, {}, []
    for name in names:
        try:
            if name == "jax":   # x64 for float64 and for the float64 checks of float32
                jax = ref.setup_jax(enable_x64=True)
                versions[name] = (f"jax {jax.__version__} ({jax.default_backend()}, "
                                  f"jax_enable_x64 on)")
            else:
                import torch
                if threads is not None:
                    torch.set_num_threads(threads)
                versions[name] = (f"torch {torch.__version__} ({torch.get_num_threads()} "
                                  f"thread{'s' if torch.get_num_threads() != 1 else ''})")
            factories[name] = ref.PEERS[name]
        except ImportError as err:
            notes.append(f"{ref.LIBRARIES[name]}: skipped, {name} is not installed ({err})")
    return factories, versions, notes


# ------------------------------------------------------------------------------------- timing
def time_round_robin(contenders, repeats, warmup, rng, settle=0.0, turn=2):
    """Step times in seconds, measured in ``repeats`` interleaved rounds (a new random order each
    round) after ``warmup`` untimed rounds.

    In each round every contender, in turn, runs ``turn`` steps back to back, each timed: the
    first starts with the caches (and the cores) the other contenders left behind ("cold"), the
    others with its own, as steps do in a training loop ("warm"). ``settle`` seconds of sleep
    come before each turn: a library's worker threads spin on the cores for a while after their
    work (OpenBLAS's after a multi-threaded product, PyTorch's and XLA's pools), and would take
    the cores of whichever contender runs next; a longer turn lets a library whose pool went to
    sleep during the pause wake it up before its steps count. Returns ({name: warm times},
    {name: cold times}).
    """
    for _ in range(warmup):
        for c in contenders:
            c.run()
    warm, cold = {c.name: [] for c in contenders}, {c.name: [] for c in contenders}
    clock = time.perf_counter
    for _ in range(repeats):
        for i in rng.permutation(len(contenders)):
            c = contenders[i]
            if settle:
                time.sleep(settle)
            times = [clock()]
            for _ in range(turn):
                c.run()
                times.append(clock())
            steps = np.diff(times)
            cold[c.name].append(steps[0])
            warm[c.name].extend(steps[1:])
    return warm, cold


def summarize(samples):
    q25, q50, q75 = np.percentile(samples, [25, 50, 75])
    return {"median_ms": 1e3 * q50, "q25_ms": 1e3 * q25, "q75_ms": 1e3 * q75,
            "min_ms": 1e3 * min(samples), "n": len(samples)}


# ---------------------------------------------------------------------------------- the run
def measure_memory(problem, args):
    """lrtdense's step alone: tracemalloc footprint, NumPy allocations, page faults."""
    build = lambda: ref.lrtdense_contender(problem).run  # noqa: E731
    run, traced = memory_stats.traced_training(build, max(args.warmup, 2), args.memory_steps)
    counted = memory_stats.count_numpy_allocations(run, args.memory_steps)
    minflt, majflt = memory_stats.page_faults_per_step(run, args.fault_steps)
    needs = memory_stats.math_needs(problem.sizes, problem.batch, problem.dtype,
                                    problem.estimator)
    noise, explicit = memory_stats.explicit_sampling_bytes(problem.sizes, problem.batch,
                                                           problem.dtype)
    return {"needs": needs, **traced, "footprint_over_needs": traced["footprint_peak"] /
            needs["total"],
            "numpy_allocs_per_step": None if counted is None else counted[0],
            "numpy_bytes_per_step": None if counted is None else counted[1],
            "minflt_per_step": minflt, "majflt_per_step": majflt,
            "explicit_noise": noise, "explicit_total": explicit}


def build_contenders(problems, factories, args):
    """Every contender of one configuration and the sanity checks of the peers and the oracle.

    Returns (contenders, {name: check}, [notes])."""
    contenders, checks, notes = [ref.gemm_floor_contender(problems["lrt"] if "lrt" in problems
                                                          else next(iter(problems.values())))], {}, []
    for est, problem in problems.items():
        lrt = ref.lrtdense_contender(problem)
        contenders.append(lrt)
        extra = dict(factories)
        if args.oracle:
            extra["oracle"] = ref.oracle_contender
        for name, factory in extra.items():
            try:
                other = factory(problem)
            except (ImportError, RuntimeError) as err:
                notes.append(f"{ref.LIBRARIES[name]} {problem.dtype} B{problem.batch} "
                             f"{est}: skipped ({err})")
                continue
            check = ref.check_peer(lrt, other)
            if problem.dtype == "float32":     # and the same math in float64: no rounding
                twin = ref.float64_twin(problem)
                check["float64"] = ref.check_peer(ref.lrtdense_contender(twin), factory(twin))
            checks[other.name] = check
            if not report.check_ok(check, problem.dtype):
                print(f"MISMATCH: {other.label} {ref.ESTIMATORS[est][0]} {problem.dtype} "
                      f"B{problem.batch}: {report.describe_check(check)}", file=sys.stderr,
                      flush=True)
            contenders.append(other)
    return contenders, checks, notes


def run_config(problems, factories, args, rng):
    """Builds the contenders, checks the peers, times all round-robin; page faults after."""
    contenders, checks, notes = build_contenders(problems, factories, args)
    background = machine.wait_for_idle(args.wait_idle) if args.wait_idle > 0 else None
    with machine.CpuShare() as share:
        times, cold = time_round_robin(contenders, args.repeats, args.warmup, rng, args.settle,
                                       args.turn)
    faults = {c.name: memory_stats.page_faults_per_step(c.run, args.fault_steps)[0]
              for c in contenders}
    return {"time": {name: summarize(t) for name, t in times.items()},
            "time_cold": {name: summarize(t) for name, t in cold.items()}, "faults": faults,
            "checks": checks, "notes": notes, "others_cpu": share.others,
            "others_cpu_before": background,
            "contenders": {c.name: {"label": c.label, "library": c.library,
                                    "estimator": c.estimator, "notes": c.notes}
                           for c in contenders}}


def run_contended(configs, problems_of, args, rng):
    """``contended.measure`` for every configuration and estimator, with the load around it."""
    def timer(contenders):
        times, _ = time_round_robin(contenders, args.repeats, args.warmup, rng, args.settle,
                                    args.turn)
        return {name: summarize(t) for name, t in times.items()}

    load_before, runs = os.getloadavg(), []
    for dtype, batch in configs:
        for est, problem in problems_of(dtype, batch).items():
            run = contended.measure(problem, timer)
            runs.append((dtype, batch, run))
            print(f"  contended {dtype} B{batch} {est}: " + ", ".join(
                f"{key} {value:.2f}x" for key, value in run["over_idle_one"].items())
                + " of the idle one-core time", file=sys.stderr, flush=True)
    return {"runs": runs, "load_before": load_before,
            "load_after": os.getloadavg()}


def main(argv=None):
    """Runs the benchmark; prints (and, if asked, writes) the report. Returns the results.

    Raises SystemExit(1) after the report when a peer's sanity check failed."""
    args = parse_args(argv)
    configs = [(d, b) for d in args.dtypes for b in args.batches]
    started = time.perf_counter()
    results = {"configs": [], "reference_sizes": tuple(args.sizes) == ref.LAYERS,
               "estimators": list(args.estimators), "settings": {
                   "repeats": args.repeats, "warmup": args.warmup, "sizes": list(args.sizes),
                   "turn": args.turn, "settle": args.settle,
                   "memory_steps": args.memory_steps, "fault_steps": args.fault_steps,
                   "seed": args.seed}}

    thread_note = [] if args.threads is None else [limit_threads(args.threads)]

    def problems_of(dtype, batch):
        return {est: ref.reference_problem(dtype, batch, args.sizes, args.seed, est)
                for est in args.estimators}

    # Phase 1: lrtdense alone (no peer imported yet): memory, faults, RSS.
    memory = {}
    for dtype, batch in configs:
        memory[dtype, batch] = {ref.contender_name("lrtdense", est): measure_memory(problem, args)
                                for est, problem in problems_of(dtype, batch).items()}
    results["rss_lrtdense_only"] = memory_stats.peak_rss_bytes()

    # Phase 2: every contender of a configuration in one process, round-robin.
    factories, versions, notes = load_peers(args.peers, args.dtypes, args.threads)
    results["machine"] = machine.machine_info()
    results["machine"]["peers"] = versions
    results["notes"] = thread_note + notes + ([] if args.peers else
                                              ["peers: disabled (--no-peers)"])
    rng = np.random.default_rng(args.seed + 10)
    for dtype, batch in configs:
        run = run_config(problems_of(dtype, batch), factories, args, rng)
        results["notes"] += run.pop("notes")
        results["configs"].append({"dtype": dtype, "batch": batch, **run,
                                   "memory": memory[dtype, batch]})
        print(f"  {dtype} B{batch}: " + ", ".join(
            f"{name} {t['median_ms']:.2f} ms" for name, t in run["time"].items())
            + f"; other processes {report.pct(run['others_cpu'])} of the CPUs",
            file=sys.stderr, flush=True)
    results["rss_end"] = memory_stats.peak_rss_bytes()
    if args.contended:
        results["contended"] = run_contended(configs, problems_of, args, rng)
    results["seconds"] = time.perf_counter() - started
    report.add_ratios(results)

    text = report.format_report(results)
    if args.contended:
        c = results["contended"]
        text += contended.format_section(c["runs"], c["load_before"], c["load_after"])
    print(text, end="")
    for path in [args.out] + ([RESULTS] if args.write_results else []):
        if path:
            with open(path, "w") as f:
                f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=_jsonable)
    bad = report.failed_checks(results)
    if bad:
        print("sanity check failed (loss or gradients differ from lrtdense's step): "
              + "; ".join(bad), file=sys.stderr)
        raise SystemExit(1)
    return results


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    main()
