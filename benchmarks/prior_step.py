#!/usr/bin/env python3
"""The scale-mixture prior's training step against the Normal prior's (issue 15's bar: <= 1.3x).

For each estimator with a prior (DenseLocalReparameterization, DenseReparameterization,
DenseFlipout), two networks of one class, every layer alike: the Normal prior with the
closed-form KL (the default), and Blundell et al.'s scale mixture (pi 0.5, sigma1 1, sigma2
exp(-6)) with the Monte Carlo KL, which TFP's semantics evaluate at the forward's own kernel
sample (Reparameterization) or at an extra weight-sized draw (LRT, Flipout: TFP passes None).
Both steps are ``make_step(model, adam(1e-3), num_examples=60000)`` as ``fit`` runs them, timed
interleaved in one process (one untimed step, then one timed, alternating the order each round);
prints the median ms of each and their ratio.

Run: ``python benchmarks/prior_step.py [--dtype float32] [--batch 100] [--rounds 15]
[--sizes 784,400,400,10]``; about 20 s at the defaults. Benchmark with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset in that command alone (``env -u ... python benchmarks/prior_step.py``).
"""
import argparse
import math
import time

import numpy as np

import lrtdense as L
from lrtdense.training import make_step

CLASSES = (L.DenseLocalReparameterization, L.DenseReparameterization, L.DenseFlipout)


def model_of(cls, sizes, prior, divergence, dtype):
    layers = [cls(units, "relu" if i < len(sizes) - 2 else "linear", kernel_prior=prior,
                  kernel_divergence=divergence, dtype=dtype)
              for i, units in enumerate(sizes[1:])]
    return L.Model(L.Sequential(layers), L.CategoricalLikelihood())


def compare(cls, sizes, dtype, batch, rounds):
    """(Normal prior median ms, mixture prior median ms) of one class's step."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch)
    runs = {}
    for name, prior, divergence in (
            ("normal", L.NormalPrior(), "closed_form"),
            ("mixture", L.ScaleMixturePrior(0.5, 1.0, math.exp(-6)), "monte_carlo")):
        model = model_of(cls, sizes, prior, divergence, dtype)
        optimizer = L.adam(1e-3)
        state = optimizer.init(model.init(np.random.default_rng(1), sizes[0]))
        runs[name] = [make_step(model, optimizer, 60000), state, np.random.default_rng(2)]
    times = {name: [] for name in runs}
    for r in range(rounds):
        for name in (("normal", "mixture") if r % 2 else ("mixture", "normal")):
            run = runs[name]
            run[1] = run[0](run[1], x, y, run[2])[0]                   # untimed
            start = time.perf_counter()
            run[1] = run[0](run[1], x, y, run[2])[0]
            times[name].append(time.perf_counter() - start)
    return 1e3 * float(np.median(times["normal"])), 1e3 * float(np.median(times["mixture"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", default="784,400,400,10")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(v) for v in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if len(sizes) < 2 or min(sizes) < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--sizes needs at least 2 sizes >= 1; --batch and --rounds must be >= 1")
    results = []
    for cls in CLASSES:
        normal, mixture = compare(cls, sizes, args.dtype, args.batch, args.rounds)
        results.append((cls.__name__, normal, mixture))
        print(f"{cls.__name__:<30} {args.dtype} batch {args.batch:>5}: Normal {normal:7.2f} ms  "
              f"mixture (MC) {mixture:7.2f} ms  ratio {mixture / normal:.2f} (bar <= 1.3)",
              flush=True)
    return results


if __name__ == "__main__":
    main()
