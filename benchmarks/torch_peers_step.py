"""lrtdense.torch's training step against bayesian-torch's and Blitz's, same estimator, on CPU.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/torch_peers_step.py [--rounds 15]

Network 784-400-400-10 (relu), float32, batch 100 and 1000; a step is zero_grad, forward,
cross-entropy + KL / N (N = 60000), backward and torch.optim.Adam. Contenders, per estimator:

* reparam: lrtdense.torch DenseReparameterization, bayesian-torch 0.5 LinearReparameterization,
  Blitz 0.2.8 BayesianLinear (one weight draw per call; its KL is a one-sample Monte Carlo
  estimate under its scale-mixture prior, so it computes more than a closed form);
* flipout: lrtdense.torch DenseFlipout, bayesian-torch LinearFlipout;
* lrt: lrtdense.torch DenseLocalReparameterization (no peer has one: reported for scale).

Rounds are interleaved: in each round every contender of a batch size runs two steps in a new
random order, and the second (warm) step is timed. Reported: the median step time per contender
and, per peer, the median and the 10-90% range of the per-round ratios lrtdense / peer. Install
the peers with ``pip install --no-deps bayesian-torch==0.5.0 blitz-bayesian-pytorch==0.2.8``;
a missing one is left out with a note.
"""
import argparse
import random
import statistics
import time

import torch

import lrtdense.torch as LT

SIZES = (784, 400, 400, 10)
NUM_EXAMPLES = 60000


def lrtdense_net(cls):
    layers = [cls(a, b, "relu" if i < len(SIZES) - 2 else None)
              for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]))]
    model = torch.nn.Sequential(*layers)
    return model, lambda x: (model(x), LT.divergence(model))


def bayesian_torch_net(name):
    import bayesian_torch.layers as bl
    layers = torch.nn.ModuleList(getattr(bl, name)(a, b) for a, b in zip(SIZES[:-1], SIZES[1:]))

    def run(x):
        kl = 0
        for i, layer in enumerate(layers):
            x, k = layer(x)
            kl = kl + k
            x = torch.relu(x) if i < len(layers) - 1 else x
        return x, kl
    return layers, run


def blitz_net():
    from blitz.modules import BayesianLinear
    layers = torch.nn.ModuleList(BayesianLinear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:]))

    def run(x):
        kl = 0
        for i, layer in enumerate(layers):
            x = layer(x)
            kl = kl + layer.log_variational_posterior - layer.log_prior
            x = torch.relu(x) if i < len(layers) - 1 else x
        return x, kl
    return layers, run


CONTENDERS = {
    "lrt": {"lrtdense.torch": lambda: lrtdense_net(LT.DenseLocalReparameterization)},
    "reparam": {"lrtdense.torch": lambda: lrtdense_net(LT.DenseReparameterization),
                "bayesian-torch": lambda: bayesian_torch_net("LinearReparameterization"),
                "blitz": blitz_net},
    "flipout": {"lrtdense.torch": lambda: lrtdense_net(LT.DenseFlipout),
                "bayesian-torch": lambda: bayesian_torch_net("LinearFlipout")},
}


def make_step(build, batch):
    """A closure running one training step of a fresh network on a fixed batch."""
    module, run = build()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    x, y = torch.randn(batch, SIZES[0]), torch.randint(0, SIZES[-1], (batch,))

    def step():
        optimizer.zero_grad()
        logits, kl = run(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + kl / NUM_EXAMPLES
        loss.backward()
        optimizer.step()
    return step


def measure(rounds, batches, seed=0):
    """{(estimator, batch): {contender: [warm step seconds per round]}}."""
    shuffle = random.Random(seed)
    times = {}
    for estimator, contenders in CONTENDERS.items():
        for batch in batches:
            steps = {}
            for name, build in contenders.items():
                try:
                    steps[name] = make_step(build, batch)
                except ImportError as err:
                    print(f"note: {name} left out ({err})")
            runs = times[(estimator, batch)] = {name: [] for name in steps}
            for r in range(rounds + 2):
                order = list(steps)
                shuffle.shuffle(order)
                for name in order:
                    steps[name]()                                # cold
                    start = time.perf_counter()
                    steps[name]()                                # warm: timed
                    if r >= 2:
                        runs[name].append(time.perf_counter() - start)
    return times


def report(times):
    lines = ["| estimator | batch | contender | median step (ms) | lrtdense / it: median "
             "[10%, 90%] of rounds |", "|---|---|---|---|---|"]
    for (estimator, batch), runs in times.items():
        ours = runs["lrtdense.torch"]
        for name, values in runs.items():
            ratios = sorted(a / b for a, b in zip(ours, values))
            low, high = ratios[len(ratios) // 10], ratios[(9 * len(ratios)) // 10]
            ratio = ("" if name == "lrtdense.torch" else
                     f"{statistics.median(ratios):.2f} [{low:.2f}, {high:.2f}]")
            lines.append(f"| {estimator} | {batch} | {name} | "
                         f"{1e3 * statistics.median(values):.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.time()
    times = measure(args.rounds, args.batches)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, "
          f"{time.time() - start:.0f} s")
    print(report(times))


if __name__ == "__main__":
    main()
