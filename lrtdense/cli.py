"""The ``lrtdense`` command line.

  lrtdense demo                       train and plot the toy regression (the README's main job)
  lrtdense reference generate [DIR]   regenerate the golden-value reference set
  lrtdense reference verify RESULTS   check a port's results against the reference set
  lrtdense study variance             the gradient-variance study of Kingma et al. 2015
  lrtdense bench uci --data DIR       the UCI regression benchmark on its published splits

A bad value is one line on stderr and exit code 2; an unknown flag or a missing argument also
prints the usage of the (sub)command it was given to.
"""
import argparse
import importlib
import sys

__all__ = ["main", "ArgumentParser", "COMMANDS"]

# command -> module providing add_arguments(parser) and main(args) -> exit code
COMMANDS = {
    "demo": ("lrtdense.demo", "train a Bayesian network on the 1-D toy regression and plot it"),
    "reference": ("lrtdense.reference.cli", "generate or verify the golden-value reference data"),
    "study": ("lrtdense.studies.cli", "reproducible studies (e.g. gradient variance)"),
    "bench": ("lrtdense.bench", "benchmarks on public data (the UCI regression benchmark)"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors come from the (sub)command that was given the bad argument.

    argparse hands a subcommand's unknown arguments back to the top-level parser, which then
    prints its own usage; here each parser refuses them itself. Subparsers, including those that
    the commands' ``add_arguments`` create, are of this class (argparse's ``parser_class``).
    """

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, except that leftover arguments are an error of this parser (naming it)."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message):
        """One line ``prog: error: message`` and exit 2; the usage first unless the message is
        about the value of a named argument."""
        if not message.startswith("argument "):
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    """Runs ``lrtdense ARGS``; returns the exit code (argparse exits 2 itself on bad arguments)."""
    from lrtdense import __version__
    parser = ArgumentParser(prog="lrtdense", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lrtdense {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.main)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"lrtdense {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
