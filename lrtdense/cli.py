"""The ``lrtdense`` command line: ``lrtdense demo``, ``lrtdense reference ...``, ``lrtdense study ...``."""
import argparse
import sys

__all__ = ["main"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lrtdense", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from lrtdense import demo
    p = sub.add_parser("demo", help="train a Bayesian network on the 1-D toy regression")
    demo.add_arguments(p)
    p.set_defaults(run=demo.main)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
