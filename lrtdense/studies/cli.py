"""``lrtdense study``: reproducible studies.

  lrtdense study variance [--short] [--out DIR] [--seed N]
      the gradient-variance study of Kingma et al. 2015 (Table 1) on scikit-learn's digits:
      prints the table and writes DIR/variance_table.md and DIR/variance.png (never over files
      committed to git)
"""
import argparse
import functools
import sys

from lrtdense.argtypes import integer, output_folder

__all__ = ["add_arguments", "main"]


def add_arguments(parser):
    """Adds the study sub-subcommands to ``parser`` (the ``study`` subparser of the main CLI)."""
    from lrtdense.studies.variance import OUTPUT_FILES
    sub = parser.add_subparsers(dest="study", required=True, metavar="STUDY")
    variance = sub.add_parser(
        "variance", help="gradient variance of LRT, separate/single weight samples, Flipout and "
                         "no noise (Kingma et al. 2015, Table 1)",
        description=_variance_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    variance.add_argument("--short", action="store_true",
                          help="a few-second configuration (small network, 100 draws)")
    variance.add_argument("--out", type=functools.partial(output_folder, names=OUTPUT_FILES),
                          default="out/variance_study", metavar="DIR",
                          help="folder for variance_table.md and variance.png, created if needed; "
                               "neither may be a file committed to git (default: %(default)s)")
    variance.add_argument("--seed", type=integer(0), default=0, metavar="N",
                          help="seed of everything (default: %(default)s)")


def main(args):
    """Runs the chosen study. Returns the exit code (0 on success, 2 when a dependency is missing)."""
    if args.study == "variance":
        from lrtdense.studies import variance
        try:
            variance.run(short=args.short, out=args.out, seed=args.seed)
        except ImportError as err:
            print(f"lrtdense study variance: error: {err}", file=sys.stderr)
            return 2
        return 0
    raise ValueError(f"unknown study {args.study!r}")


def _variance_doc():
    from lrtdense.studies import variance
    return variance.__doc__
