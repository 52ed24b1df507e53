#!/usr/bin/env python3
"""Where the time of lrtdense's training step goes: a helper for optimising it.

For one configuration (default float32, batch 100, the reference network), prints:

1. the pieces of the step, each timed alone and interleaved round-robin with the others (median
   ms): the whole step as ``fit`` runs it; its gradient part alone (``step.grads`` for the fast
   step, autograd's ``value_and_grad`` of the loss for the reference path); the noise draw; the
   Adam update (in place); the finiteness check; the GEMM floor (16 products); and, as unit
   costs, one element-wise pass over the largest weight matrix (784 x 400) and over a
   (batch, 400) activation;
2. page faults per step;
3. cProfile's top functions by own time;
4. with ``line_profiler`` installed (``--lines``): line timings of the step's functions.

Run: ``python benchmarks/profile_step.py [--dtype float32] [--batch 100] [--steps 200]
[--implementation auto|reference] [--lines]``; about 20-60 s.
"""
import argparse
import cProfile
import io
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402
import memory_stats  # noqa: E402
import reference_step as ref  # noqa: E402


def build(problem, implementation):
    """(step, state, optimizer, rng) for make_step with the given implementation."""
    from lrtdense.optimizers import adam
    from lrtdense.training import make_step

    optimizer = adam(ref.LEARNING_RATE)
    if implementation == "auto":
        step = make_step(problem.model, optimizer, num_examples=ref.NUM_EXAMPLES)
    else:
        step = make_step(problem.model, optimizer, num_examples=ref.NUM_EXAMPLES,
                         implementation=implementation)
    return step, optimizer.init(problem.params), optimizer, np.random.default_rng(1)


def pieces(problem, implementation):
    """{name: zero-argument callable} for each piece of the step (see the module docstring)."""
    from autograd import value_and_grad
    from lrtdense import training

    step, state, optimizer, rng = build(problem, implementation)
    model, x, y = problem.model, problem.x, problem.y
    box = {"state": state}

    def whole():
        box["state"], *_ = step(box["state"], x, y, rng)

    if hasattr(step, "grads"):
        def grads_only():
            return step.grads(optimizer.get_params(box["state"])["network"], x, y, rng)
    else:
        vg = value_and_grad(lambda p: model.loss(p, x, y, rng, num_examples=ref.NUM_EXAMPLES)[0])

        def grads_only():
            return vg(optimizer.get_params(box["state"]))

    grads = {"network": {k: {n: np.full_like(v, 1e-3) for n, v in layer.items()}
                         for k, layer in problem.params["network"].items()}, "likelihood": {}}
    adam_state = optimizer.init(problem.params)

    def adam_update():
        nonlocal adam_state
        adam_state = optimizer.update(adam_state, grads, inplace=True)

    floor = ref.gemm_floor_contender(problem).run
    big = np.ones((problem.sizes[0], problem.sizes[1]), problem.dtype)
    big_out = np.empty_like(big)
    act = np.ones((problem.batch, problem.sizes[1]), problem.dtype)
    act_out = np.empty_like(act)
    return {
        "whole step": whole,
        "gradient part": grads_only,
        "noise draw": lambda: model.network.sample_noise(rng, x.shape),
        "Adam update (in place)": adam_update,
        "finite check": lambda: training._check_finite(1.0, 1.0, 1.0, grads),
        "GEMM floor (16 products)": floor,
        f"1 pass over {big.shape} (multiply)": lambda: np.multiply(big, big, out=big_out),
        f"1 pass over {big.shape} (exp)": lambda: np.exp(big, out=big_out),
        f"1 pass over {act.shape} (multiply)": lambda: np.multiply(act, act, out=act_out),
    }, whole, step


def time_pieces(funcs, repeats, warmup=5):
    for _ in range(warmup):
        for f in funcs.values():
            f()
    times = {name: [] for name in funcs}
    rng = np.random.default_rng(0)
    names = list(funcs)
    for _ in range(repeats):
        for i in rng.permutation(len(names)):
            start = time.perf_counter()
            funcs[names[i]]()
            times[names[i]].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--implementation", default="auto", choices=["auto", "reference", "fast"])
    p.add_argument("--lines", action="store_true", help="line timings (needs line_profiler)")
    args = p.parse_args(argv)
    problem = ref.reference_problem(args.dtype, args.batch)
    funcs, whole, step = pieces(problem, args.implementation)
    print(f"# Profile of lrtdense's step: {args.dtype}, batch {args.batch}, "
          f"implementation {args.implementation} ({type(step).__name__}), {args.steps} steps\n")

    with machine.CpuShare() as share:
        med = time_pieces(funcs, args.steps)
    print("| piece | median ms | share of the whole step |\n|---|---:|---:|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.3f} | {100 * ms / med['whole step']:.0f}% |")
    others = "n/a" if share.others is None else f"{100 * share.others:.0f}%"
    print(f"\nCPU used by other processes meanwhile: {others} (absolute times are inflated "
          f"when it is high)")
    minflt, majflt = memory_stats.page_faults_per_step(whole, 20)
    print(f"\nPage faults per step: {minflt:.0f} minor, {majflt:.0f} major\n")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        whole()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print("## cProfile, by own time\n\n```")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))
    print("```")

    if args.lines:
        try:
            from line_profiler import LineProfiler
        except ImportError:
            print("\n(line timings skipped: line_profiler is not installed)")
            return
        lp = LineProfiler()
        targets = [getattr(type(step), n) for n in dir(type(step))
                   if callable(getattr(type(step), n, None)) and not n.startswith("__")
                   and getattr(getattr(type(step), n), "__module__", "").startswith("lrtdense")]
        targets.append(type(step).__call__ if hasattr(step, "grads") else step)
        from lrtdense import optimizers, training
        targets += [optimizers._kingma, training._check_finite]
        for t in targets:
            lp.add_function(t)
        wrapped = lp(whole)
        for _ in range(args.steps):
            wrapped()
        out = io.StringIO()
        lp.print_stats(stream=out, output_unit=1e-6, stripzeros=True)
        print("\n## Line timings (µs, totals over all steps)\n\n```")
        print(out.getvalue())
        print("```")


if __name__ == "__main__":
    main()
