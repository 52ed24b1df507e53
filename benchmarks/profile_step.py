#!/usr/bin/env python3
"""Where the time of lrtdense's training step goes: a helper for optimising it.

For one estimator and configuration (default LRT, float32, batch 100, the reference network),
prints:

1. the pieces of the step, each timed alone and interleaved round-robin with the others (median
   ms): the whole step as ``fit`` runs it (``make_step``); its loss and gradients alone
   (``lrtdense.autodiff.value_and_grad`` of ``model.loss``, the step's workspace); the loss
   alone (no gradient); the noise draw (``sample_noise`` into a workspace); the Adam update in
   place; the GEMM floor (the LRT step's 16 products); and, as unit costs, one element-wise
   pass over the largest weight matrix and over a (batch, units) activation;
2. per kernel: each public kernel of ``lrtdense.kernels`` the step calls, its forward
   (``kernel.fwd``) and its VJP (``kernel.bwd``) timed alone on the step's own shapes and
   values, layer by layer, with a workspace as in the step; their sum against the whole step
   (the rest is autograd's bookkeeping, the checks, the noise and Adam);
3. page faults per step;
4. cProfile of whole steps: each kernel's forward and VJP as they run inside the step
   (cumulative ms per step), lrtdense's functions by cumulative time, and the top functions by
   own time;
5. with ``line_profiler`` installed (``--lines``): line timings of the step, its kernels'
   forwards and VJPs, ``value_and_grad`` and the optimizer's update.

Run: ``python benchmarks/profile_step.py [--estimator lrt|reparameterization|flipout|vd|svd]
[--dtype float32] [--batch 100] [--steps 200] [--lines]``; about 20-60 s.
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


def build(problem):
    """(step, state, optimizer, rng): ``make_step`` with ``adam(1e-3)``, as ``fit`` builds it."""
    from lrtdense.optimizers import adam
    from lrtdense.training import make_step

    optimizer = adam(ref.LEARNING_RATE)
    step = make_step(problem.model, optimizer, num_examples=ref.NUM_EXAMPLES)
    return step, optimizer.init(problem.params), optimizer, np.random.default_rng(1)


def pieces(problem):
    """{name: zero-argument callable} for each piece of the step (see the module docstring)."""
    from lrtdense import tree
    from lrtdense.autodiff import value_and_grad
    from lrtdense.workspace import Workspace

    step, state, optimizer, rng = build(problem)
    model, x, y = problem.model, problem.x, problem.y
    box = {"state": state}
    workspace = Workspace()

    def whole():
        box["state"], *_ = step(box["state"], x, y, rng)

    def objective(params):
        loss, nll, kl = model.loss(params, x, y, rng, num_examples=ref.NUM_EXAMPLES,
                                   workspace=workspace)
        return loss, (nll, kl)

    def loss_and_grads():
        value_and_grad(objective, optimizer.get_params(box["state"]), workspace=workspace)

    def loss_only():
        objective(optimizer.get_params(box["state"]))

    grads = tree.map(lambda a: np.full_like(a, 1e-3), problem.params)
    adam_state = optimizer.init(problem.params)

    def adam_update():
        nonlocal adam_state
        adam_state = optimizer.update(adam_state, grads, inplace=True)

    noise_ws = Workspace()
    floor = ref.gemm_floor_contender(problem).run
    big = np.ones((problem.sizes[0], problem.sizes[1]), problem.dtype)
    big_out = np.empty_like(big)
    act = np.ones((problem.batch, problem.sizes[1]), problem.dtype)
    act_out = np.empty_like(act)
    return {
        "whole step": whole,
        "loss and gradients (value_and_grad)": loss_and_grads,
        "loss alone (forward)": loss_only,
        "noise draw": lambda: model.network.sample_noise(rng, x.shape, workspace=noise_ws),
        "Adam update (in place)": adam_update,
        "GEMM floor (16 products of the LRT step)": floor,
        f"1 pass over {big.shape} (multiply)": lambda: np.multiply(big, big, out=big_out),
        f"1 pass over {big.shape} (exp)": lambda: np.exp(big, out=big_out),
        f"1 pass over {act.shape} (multiply)": lambda: np.multiply(act, act, out=act_out),
    }, whole, step, optimizer


# ---------------------------------------------------------------------------------- kernels
def kernel_calls(problem, seed=5):
    """The kernels one step calls, with the step's shapes and values, layer by layer.

    Returns:
      [(label, kernel, args, argnums, cotangent), ...]: ``kernel.with_residuals(*args,
      needs=names, workspace=...)`` is the forward, ``kernel.bwd(residuals, cotangent,
      names)`` its VJP, names those of the arguments at argnums, the ones the step
      differentiates (params, and every layer's input but the first).
    """
    from lrtdense import kernels

    model, est = problem.model, problem.estimator
    rng = np.random.default_rng(seed)
    dtype = np.dtype(problem.dtype)
    h = problem.x
    calls = []

    def cotangent(shape):
        return rng.standard_normal(shape).astype(dtype) / 100

    def call(label, kernel, args, argnums):
        packed = kernel.with_residuals(*args, needs=_names(kernel, argnums))
        out = packed[0]
        g = dtype.type(1.0 / ref.NUM_EXAMPLES) if np.ndim(out) == 0 else cotangent(np.shape(out))
        calls.append((label, kernel, args, argnums, g))
        return out

    layers = model.network.layers
    for i, (name, layer) in enumerate(zip(model.network.names, layers)):
        p = problem.params["network"][name]
        noise = layer.sample_noise(rng, h.shape)
        xs = () if i == 0 else (0,)
        tag = f"layer {i} "
        if est in ref.TFP_ESTIMATORS:
            loc, bias = p["kernel_posterior_loc"], p["bias_posterior_loc"]
            scale = call(tag + "posterior_scale", kernels.posterior_scale,
                         (p["kernel_posterior_untransformed_scale"],), (0,))
            term = {"lrt": kernels.lrt, "reparameterization": kernels.reparameterization,
                    "flipout": kernels.flipout}[est]
            extra = ((noise["kernel"],) if est != "flipout" else
                     (noise["kernel"], noise["sign_input"], noise["sign_output"]))
            z = call(tag + est, term, (h, loc, scale) + extra, xs + (1, 2))
            prior = layer.kernel_prior
            divergence = (tag + "kl_normal_normal", kernels.kl_normal_normal,
                          (loc, scale, prior.loc, prior.scale), (0, 1))
        else:
            theta, bias = p["kernel_theta"], p["bias"]
            if est == "vd":
                log_alpha = call(tag + "clip", kernels.clip,
                                 (p["kernel_log_alpha"], -np.inf, 0.0), (0,))
                scale = call(tag + "scale_from_log_alpha", kernels.scale_from_log_alpha,
                             (theta, log_alpha), (0, 1))
                divergence = (tag + "kl_kingma", kernels.kl_kingma, (log_alpha,), (0,))
            else:
                log_alpha = call(tag + "sparse_log_alpha", kernels.sparse_log_alpha,
                                 (theta, p["kernel_log_sigma2"], -8.0, 8.0), (0, 1))
                scale = call(tag + "scale_from_log_variance", kernels.scale_from_log_variance,
                             (p["kernel_log_sigma2"],), (0,))
                divergence = (tag + "kl_molchanov", kernels.kl_molchanov, (log_alpha,), (0,))
            z = call(tag + "lrt", kernels.lrt, (h, theta, scale, noise["kernel"]), xs + (1, 2))
        z = call(tag + "add_bias", kernels.add_bias, (z, bias), (0, 1))
        if layer.activation != "linear":
            z = call(tag + layer.activation, kernels.ACTIVATIONS[layer.activation], (z,), (0,))
        call(*divergence)
        h = z
    call("categorical_nll", kernels.categorical_nll, (h, problem.y), (0,))
    return calls


def _names(kernel, argnums):
    return tuple(kernel.argnames[i] for i in argnums)


def kernel_pieces(calls):
    """{label fwd / label bwd: zero-argument callable} timing each kernel's forward and VJP."""
    from lrtdense.workspace import Workspace

    funcs = {}
    for label, kernel, args, argnums, g in calls:
        needs = _names(kernel, argnums)
        ws = Workspace()
        fwd = kernel.with_residuals

        def forward(fwd=fwd, args=args, needs=needs, ws=ws):
            fwd(*args, needs=needs, workspace=ws)

        residuals = fwd(*args, needs=needs, workspace=Workspace())[1]
        bwd = kernel.bwd

        def backward(bwd=bwd, residuals=residuals, g=g, wanted=needs):
            bwd(residuals, g, wanted)

        funcs[f"{label} fwd"] = forward
        funcs[f"{label} bwd"] = backward
    return funcs


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


def kernel_code_objects(calls):
    """{code object: "kernel fwd" / "kernel bwd"} of the kernels the step calls."""
    codes = {}
    for label, kernel, *_ in calls:
        name = label.split(" ")[-1]
        codes[kernel.fwd.__code__] = f"{name} fwd"
        codes[kernel.bwd.__code__] = f"{name} bwd"
    return codes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--estimator", default="lrt", choices=list(ref.ESTIMATORS))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--sizes", default=",".join(map(str, ref.LAYERS)),
                   help="layer sizes input,hidden...,classes (default the reference network)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lines", action="store_true", help="line timings (needs line_profiler)")
    args = p.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.batch < 1 or args.steps < 1 or len(sizes) < 2 or min(sizes) < 1:
        p.error("--batch and --steps must be >= 1, --sizes at least 2 sizes >= 1")
    problem = ref.reference_problem(args.dtype, args.batch, sizes, estimator=args.estimator)
    funcs, whole, step, optimizer = pieces(problem)
    calls = kernel_calls(problem)
    kernel_funcs = kernel_pieces(calls)
    cls = ref.ESTIMATORS[args.estimator][0]
    print(f"# Profile of lrtdense's training step: {cls} ({args.estimator}), "
          f"{'-'.join(map(str, sizes))}, {args.dtype}, batch {args.batch}, {args.steps} "
          f"steps\n")

    with machine.CpuShare() as share:
        med = time_pieces({**funcs, **kernel_funcs}, args.steps)
    total = med["whole step"]
    print("| piece | median ms | share of the whole step |\n|---|---:|---:|")
    for name in funcs:
        print(f"| {name} | {med[name]:.3f} | {100 * med[name] / total:.0f}% |")
    others = "n/a" if share.others is None else f"{100 * share.others:.0f}%"
    print(f"\nCPU used by other processes meanwhile: {others} (absolute times are inflated "
          f"when it is high)")

    print("\n## Per kernel: forward and VJP, each timed alone on the step's shapes\n")
    print("| kernel | forward ms | VJP ms | sum ms | share of the whole step |\n"
          "|---|---:|---:|---:|---:|")
    kernel_sum = 0.0
    by_kernel = {}
    for label, *_ in calls:
        f, b = med[f"{label} fwd"], med[f"{label} bwd"]
        kernel_sum += f + b
        name = label.split(" ")[-1]
        by_kernel[name] = by_kernel.get(name, 0.0) + f + b
        print(f"| {label} | {f:.3f} | {b:.3f} | {f + b:.3f} | {100 * (f + b) / total:.0f}% |")
    print(f"| **all kernels** | | | {kernel_sum:.3f} | {100 * kernel_sum / total:.0f}% |")
    print(f"| the rest of the step (autograd's bookkeeping, checks, noise, Adam) | | | "
          f"{total - kernel_sum:.3f} | {100 * (total - kernel_sum) / total:.0f}% |")
    print("\nBy kernel, summed over the layers: " + ", ".join(
        f"{name} {ms:.2f} ms ({100 * ms / total:.0f}%)"
        for name, ms in sorted(by_kernel.items(), key=lambda item: -item[1])))

    minflt, majflt = memory_stats.page_faults_per_step(whole, 20)
    print(f"\nPage faults per step: {minflt:.0f} minor, {majflt:.0f} major")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        whole()
    profiler.disable()
    stats = pstats.Stats(profiler)
    codes = {(c.co_filename, c.co_firstlineno, c.co_name): name
             for c, name in kernel_code_objects(calls).items()}
    inside = {}
    for key, (_, calls_n, _, cum, _) in stats.stats.items():
        if key in codes:
            inside[codes[key]] = (calls_n / args.steps, 1e3 * cum / args.steps)
    print("\n## cProfile: each kernel inside the step (cumulative ms per step; profiling "
          "overhead included)\n")
    print("| kernel | calls / step | cumulative ms / step |\n|---|---:|---:|")
    for name, (n, ms) in sorted(inside.items(), key=lambda item: -item[1][1]):
        print(f"| {name} | {n:.0f} | {ms:.3f} |")

    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats("lrtdense", 30)
    print("\n## cProfile: lrtdense's functions by cumulative time\n\n```")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))
    print("```")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print("\n## cProfile, by own time\n\n```")
    print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))
    print("```")

    if args.lines:
        try:
            from line_profiler import LineProfiler
        except ImportError:
            print("\n(line timings skipped: line_profiler is not installed)")
            return
        from lrtdense.autodiff import value_and_grad
        lp = LineProfiler()
        seen = set()
        for _, kernel, *_ in calls:
            for f in (kernel.fwd, kernel.bwd):
                if f not in seen:
                    seen.add(f)
                    lp.add_function(f)
        for f in (step, value_and_grad, optimizer.update):
            lp.add_function(f)
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
