"""The ``lrtdense`` command line.

  lrtdense demo                       train and plot the toy regression (the README's main job)
  lrtdense reference generate [DIR]   regenerate the golden-value reference set
  lrtdense reference verify RESULTS   check a port's results against the reference set
  lrtdense study variance             the gradient-variance study of Kingma et al. 2015
"""
import argparse
import importlib
import sys

__all__ = ["main"]

# command -> module providing add_arguments(parser) and main(args) -> exit code
COMMANDS = {
    "demo": ("lrtdense.demo", "train a Bayesian network on the 1-D toy regression and plot it"),
    "reference": ("lrtdense.reference.cli", "generate or verify the golden-value reference data"),
    "study": ("lrtdense.studies.cli", "reproducible studies (e.g. gradient variance)"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lrtdense", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.main)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
