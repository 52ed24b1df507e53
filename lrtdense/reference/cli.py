"""lrtdense reference: the golden-value oracle for ports (see reference_data/SPEC.md).

  lrtdense reference generate [DIR]             regenerate the reference set (default: reference_data/)
  lrtdense reference verify RESULTS [options]   compare a port's results, print a table, exit 1 on failure
  lrtdense reference list                       list the cases
"""
import os
import sys

from lrtdense.reference import default_dir, cases as _cases, store
from lrtdense.reference.verify import generate, verify, format_table


def add_arguments(parser):
    """Adds the ``reference`` sub-subcommands (generate, list, verify) to ``parser``."""
    sub = parser.add_subparsers(dest="reference_command", required=True)
    g = sub.add_parser("generate", help="regenerate the reference set")
    g.add_argument("dir", nargs="?", default=None, help="output directory (default: reference_data/)")
    v = sub.add_parser("verify", help="verify a port's results against the reference")
    v.add_argument("results", help="directory with <case>.npz (or <case>/<key>.npy) per case")
    v.add_argument("--reference", default=None, help="reference set (default: reference_data/)")
    v.add_argument("--cases", nargs="*", default=None, metavar="GLOB",
                   help="only cases matching these patterns, e.g. 'lrt_*'")
    v.add_argument("--statistical", action="store_true",
                   help="for ports that cannot inject noise: check samples/outputs against the "
                        "analytic LRT moments")
    v.add_argument("--markdown", default=None, help="also write the table to this file")
    sub.add_parser("list", help="list the reference cases")


def main(args):
    """Runs the chosen ``reference`` command; returns the exit code."""
    if args.reference_command == "generate":
        root = args.dir or default_dir()
        manifest = generate(root)
        n_files = sum(len(v) for v in manifest["cases"].values())
        print(f"wrote {len(manifest['cases'])} cases ({n_files} files) to {root}")
        return 0
    if args.reference_command == "list":
        for name, case in sorted(_cases.CASES.items()):
            print(f"{name:32s} {case.dtype:8s} {case.description}")
        return 0
    reference = args.reference or default_dir()
    if not os.path.isdir(args.results):
        print(f"error: results directory {args.results!r} does not exist", file=sys.stderr)
        return 2
    try:
        rows = verify(reference, args.results, args.cases, args.statistical)
    except store.ReferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = format_table(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0 if rows and all(r.passed for r in rows) else 1
