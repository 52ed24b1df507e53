#!/usr/bin/env python3
"""A/B timing of lrtdense's training step: the working tree against a git revision, in one process.

On a shared, noisy machine, two benchmark runs minutes apart differ by more than most single
optimisations buy (5-10 % between runs is common here). Timing both versions interleaved, step
for step, in one process, and reporting the ratio of medians, resolves 1-2 % changes. This is
how the changes of `RESULTS.md` and the "tried and not kept" list of `README.md` were judged.

The revision's ``lrtdense/`` is extracted with ``git archive`` into a temporary directory as the
package ``lrtdense_base`` (its imports rewritten), so both versions live in one interpreter. Both
build the reference network of ``reference_step`` (every layer of one estimator's class) from the
same params and minibatch, and run ``make_step(model, adam(1e-3), num_examples=60000)`` exactly
as ``fit`` does; each round runs a step of each (in alternating order) after one untimed step, as
in a training loop. Only public names both versions share are used (``make_step``'s three
arguments, ``adam``, ``Model``, ``Sequential``, ``CategoricalLikelihood``, the layer classes), so
the base may be any revision: one with the one training path, or an older one with
``lrtdense/fast.py`` and ``make_step(..., implementation="auto")`` (e.g. 962510c), whose default
``make_step`` is what its ``fit`` ran (FastStep for LRT networks, the autograd path otherwise).

Run: ``python benchmarks/ab_step.py [--base HEAD] [--configs float32:100,float64:100]
[--estimators lrt,flipout] [--rounds 25]`` from the repository; about 10 s per configuration
and estimator. Prints one line per estimator and configuration: the median ms of base and
working tree, their ratio (< 1: the working tree is faster), and the spread: the interquartile
range of the per-round ratios. ``OPENBLAS_NUM_THREADS=1`` in the environment makes the ratio of the element-wise work
less sensitive to other processes (it slows the GEMMs of both alike).
"""
import argparse
import importlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_step as ref  # noqa: E402

_IMPORT = re.compile(r"\b(from|import)\s+lrtdense\b")


def load_base(revision, workdir):
    """Imports ``lrtdense/`` at ``revision`` as the package ``lrtdense_base``."""
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    archive = os.path.join(workdir, "base.tar")
    subprocess.run(["git", "archive", "--format=tar", "-o", archive, revision, "lrtdense"],
                   check=True, cwd=repo)
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(workdir, filter="data")
        except TypeError:  # Python without extraction filters (our own archive: trusted)
            tar.extractall(workdir)
    os.rename(os.path.join(workdir, "lrtdense"), os.path.join(workdir, "lrtdense_base"))
    for root, _, files in os.walk(os.path.join(workdir, "lrtdense_base")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path) as f:
                    text = f.read()
                text = _IMPORT.sub(lambda m: f"{m.group(1)} lrtdense_base", text)
                text = text.replace("lrtdense.", "lrtdense_base.")
                with open(path, "w") as f:
                    f.write(text)
    sys.path.insert(0, workdir)
    return importlib.import_module("lrtdense_base")


def step_of(package, dtype, sizes, params, estimator="lrt"):
    """(step, state) of ``package`` (lrtdense or lrtdense_base) for the reference network."""
    optimizers = importlib.import_module(package.__name__ + ".optimizers")
    training = importlib.import_module(package.__name__ + ".training")
    model = ref.build_model(dtype, sizes, package=package.__name__, estimator=estimator)
    optimizer = optimizers.adam(ref.LEARNING_RATE)
    step = training.make_step(model, optimizer, num_examples=ref.NUM_EXAMPLES)
    copy = {k: {n: {p: np.array(a) for p, a in d.items()} for n, d in v.items()} for k, v in params.items()}
    return step, optimizer.init(copy)


def compare(base, dtype, batch, rounds, estimator="lrt", sizes=ref.LAYERS):
    """(base median ms, working-tree median ms, (25th, 75th) percentiles of the per-round
    ratio new/base) of the step, interleaved."""
    import lrtdense

    problem = ref.reference_problem(dtype, batch, sizes, estimator=estimator)
    runs = {}
    for name, package in (("base", base), ("new", lrtdense)):
        step, state = step_of(package, dtype, sizes, problem.params, estimator)
        runs[name] = [step, state, np.random.default_rng(1)]
    times = {"base": [], "new": []}
    for r in range(rounds):
        for name in (("base", "new") if r % 2 else ("new", "base")):
            run = runs[name]
            run[1], *_ = run[0](run[1], problem.x, problem.y, run[2])       # untimed
            start = time.perf_counter()
            run[1], *_ = run[0](run[1], problem.x, problem.y, run[2])
            times[name].append(time.perf_counter() - start)
    ratios = np.divide(times["new"], times["base"])
    return (1e3 * float(np.median(times["base"])), 1e3 * float(np.median(times["new"])),
            tuple(float(q) for q in np.percentile(ratios, [25, 75])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--configs", default="float32:100,float32:1000,float64:100,float64:1000",
                        help="comma-separated dtype:batch pairs")
    parser.add_argument("--estimators", default="lrt",
                        help=f"comma-separated, some of {', '.join(ref.ESTIMATORS)} (default lrt)")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--sizes", default=",".join(map(str, ref.LAYERS)),
                        help="layer sizes input,hidden...,classes (default the reference "
                             "network; smaller sizes are for smoke tests)")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(v) for v in args.sizes.split(",") if v)
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if len(sizes) < 2 or min(sizes) < 1:
        parser.error("--sizes needs at least 2 sizes >= 1")
    estimators = [e for e in args.estimators.split(",") if e]
    for est in estimators:
        if est not in ref.ESTIMATORS:
            parser.error(f"--estimators: unknown estimator {est!r}; expected some of "
                         f"{', '.join(ref.ESTIMATORS)}")
    if not estimators or args.rounds < 1:
        parser.error("--estimators needs at least one entry and --rounds must be >= 1")
    configs = []
    for item in args.configs.split(","):
        dtype, _, batch = item.partition(":")
        if dtype not in ("float32", "float64") or not batch.isdigit():
            parser.error(f"--configs: expected dtype:batch like float32:100, got {item!r}")
        configs.append((dtype, int(batch)))
    with tempfile.TemporaryDirectory() as workdir:
        base = load_base(args.base, workdir)
        print(f"base = {args.base}, new = the working tree; median ms per step over {args.rounds} "
              f"interleaved rounds; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
        results = []
        for est in estimators:
            for dtype, batch in configs:
                old, new, (q25, q75) = compare(base, dtype, batch, args.rounds, est, sizes)
                results.append((est, dtype, batch, old, new))
                print(f"{est:<18} {dtype} batch {batch:>5}: base {old:8.2f}  new {new:8.2f}  "
                      f"new/base {new / old:.3f}  (per-round IQR {q25:.3f}-{q75:.3f})",
                      flush=True)
    return results


if __name__ == "__main__":
    main()
