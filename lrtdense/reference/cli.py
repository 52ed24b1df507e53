"""lrtdense reference: the golden-value oracle for ports (read SPEC.md: `lrtdense reference spec`).

  lrtdense reference verify (RESULTS | --port MODULE:ADAPTER) [--cases GLOB] [--families GLOB]
                            [--quantities GLOB] [--statistical] [--reference DIR
                            [--allow-unshipped]] [--all] [--markdown FILE] [--json FILE]
                            [--junit FILE]
                                                check a port's results; print a per-family
                                                summary, hints, the failing rows (--all: every
                                                row), the coverage and totals lines
                                                (lrtdense.reference.summary); --json and --junit
                                                for CI (lrtdense.reference.outputs)
  lrtdense reference list [GLOB ...]            the cases (dtype, kind, description)
  lrtdense reference path                       where the shipped reference set is
  lrtdense reference spec [--show]              where SPEC.md is (or print it)
  lrtdense reference generate DIR [--cases GLOB] [--pin]
                                                write the reference set into DIR (new or empty,
                                                or a set generate wrote: only its files replaced)

Exit codes: 0 every row passed; 1 a quantity failed or is missing; 2 a usage error (bad option or
value, results folder missing, a --markdown, --json or --junit file that cannot be written or
that git tracks (checked before the work), two of them naming one file, a pattern matching no
case, no case eligible for --statistical, a folder generate will not write into); 3 the
reference set is missing, corrupt, tampered with, inconsistent or larger than its bounds
(SPEC.md section 6); 4 every row passed, but against a reference set (--reference) that is not
the one shipped with this lrtdense (--allow-unshipped: 0). Every error is one line on stderr,
never a traceback. Output files are written atomically (``outputs.write_atomic``).
"""
import json
import os
import sys

from lrtdense import argtypes
from lrtdense.cli import ArgumentParser
from lrtdense.reference import default_dir, families, hints, outputs, spec_path, store, summary
from lrtdense.reference.verify import UsageError, generate, run, select_cases

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_REFERENCE, EXIT_UNSHIPPED = 0, 1, 2, 3, 4


def _patterns(values):
    """--cases values: each a glob or comma-separated globs."""
    if not values:
        return None
    out = [p.strip() for v in values for p in v.split(",")]
    if not all(out):
        raise UsageError(f"empty pattern in --cases {values}")
    return out


def add_arguments(parser):
    """Adds the ``reference`` sub-commands (generate, verify, list, path, spec) to ``parser``."""
    # lrtdense.cli.ArgumentParser: a bad flag prints the usage of its own sub-command
    sub = parser.add_subparsers(dest="reference_command", required=True,
                                parser_class=ArgumentParser)
    _add_verify(sub.add_parser(
        "verify", help="verify a port's results against the reference",
        description="Compare a port's results with the reference set and print a summary per "
                    "family, hints, the failing rows (--all: every row), the coverage and the "
                    "totals (SPEC.md section 6)."))
    ls = sub.add_parser("list", help="list the reference cases",
                        description="List the cases of the reference set.")
    ls.add_argument("patterns", nargs="*", metavar="GLOB", help="only cases matching these globs")
    ls.add_argument("--reference", default=None, metavar="DIR", help="another reference set")
    sub.add_parser("path", help="print the folder of the shipped reference set",
                   description="Print the folder of the shipped reference set.")
    sp = sub.add_parser("spec", help="print where SPEC.md is (--show: print it)",
                        description="Print the path of the shipped SPEC.md.")
    sp.add_argument("--show", action="store_true", help="print SPEC.md itself")
    g = sub.add_parser("generate", help="write the reference set into a folder",
                       description="Write every reference case and the manifest into DIR, which "
                                   "must be new, empty, or a set written by generate.")
    g.add_argument("dir", help="output folder (required: generate never picks one itself)")
    g.add_argument("--cases", action="append", default=None, metavar="GLOB",
                   help="(re)write only the cases of lrtdense.reference.cases matching these "
                        "globs; the folder's other cases are kept as they are")
    g.add_argument("--pin", action="store_true",
                   help="DIR is the package's own reference_data: also rewrite the pinned sha256")


def _add_verify(v):
    """The arguments of ``reference verify``."""
    what = v.add_mutually_exclusive_group(required=True)
    what.add_argument("results", nargs="?", default=None,
                      help="folder with <case>.npz (or <case>/<key>.npy) per case")
    what.add_argument("--port", default=None, metavar="MODULE:ADAPTER",
                      help="instead of RESULTS: run a Python port's adapter in process "
                           "('pkg.module:Adapter' or 'path/to/port.py:Adapter'; lrtdense.conformance)")
    v.add_argument("--reference", default=None, metavar="DIR",
                   help="a reference set of your own (default: the shipped set, "
                        "`lrtdense reference path`)")
    v.add_argument("--cases", action="append", default=None, metavar="GLOB",
                   help="only cases matching this case-sensitive glob, e.g. 'lrt_*' (repeat it "
                        "or separate globs by commas)")
    v.add_argument("--statistical", action="store_true",
                   help="for ports that cannot inject noise: check samples/* against the analytic "
                        "moments, joint structure and gradients (SPEC.md section 7)")
    v.add_argument("--families", action="append", default=None, metavar="GLOB",
                   help="the families the port implements (lrt, reparam, flipout, vdrop, sparsevd, "
                        "network, priors, dv, train, adam; globs, repeated or comma-separated): "
                        "the others are reported as not implemented, not as failures")
    v.add_argument("--quantities", action="append", default=None, metavar="GLOB",
                   help="the quantities the port implements, e.g. 'outputs/*,kl/*' (globs on the "
                        "expected keys; statistical rows are 'samples/*'): the others are "
                        "reported as not implemented")
    v.add_argument("--allow-unshipped", action="store_true",
                   help="with --reference: exit 0 when every row passes against a set that is not "
                        "the one shipped with lrtdense (without it, that is exit 4)")
    v.add_argument("--all", action="store_true", dest="all_rows",
                   help="print every compared row (default: the failing rows only)")
    v.add_argument("--markdown", default=None, metavar="FILE", type=argtypes.output_file(),
                   help="also write what is printed to this file (checked before the work: its "
                        "folder exists and takes files, and it is not a file git tracks)")
    v.add_argument("--json", default=None, metavar="FILE", type=argtypes.output_file(),
                   help="also write every row, the summary and a shields.io badge as JSON "
                        "(schema lrtdense-verify/1: lrtdense/reference/verify.schema.json)")
    v.add_argument("--junit", default=None, metavar="FILE", type=argtypes.output_file(),
                   help="also write JUnit XML: one testcase per row (classname family.case, name "
                        "the quantity; not implemented: skipped)")


def _emit(text):
    """Prints ``text``; a closed pipe (``| head``) ends the output quietly."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return False
    return True


def _adapter_results(spec):
    """The results of the adapter ``spec`` (``lrtdense.conformance``), limited to what it
    declares it implements."""
    from lrtdense.conformance.harness import load_adapter, results_of
    try:
        adapter = load_adapter(spec)
        declared = families.Selection.from_declaration(getattr(adapter, "implements", None))
    except ValueError as err:
        raise UsageError(f"--port: {err}") from None
    results = results_of(adapter)
    results.selection = declared
    return results


def _distinct_outputs(args):
    """--markdown, --json and --junit name different files."""
    named = [(flag, path) for flag, path in (("--markdown", args.markdown), ("--json", args.json),
                                             ("--junit", args.junit)) if path]
    for i, (flag, path) in enumerate(named):
        for other, second in named[i + 1:]:
            if os.path.realpath(path) == os.path.realpath(second):
                raise UsageError(f"{flag} and {other} name the same file {path!r}")


def _write(flag, path, text):
    """Writes ``text()`` to ``path`` (if given) atomically; checked when parsed, but the folder
    may have changed since."""
    if not path:
        return
    try:
        outputs.write_atomic(path, text())
    except OSError as err:
        raise UsageError(f"{flag} {path!r} could not be written ({err.strerror or err})") from None


def _error(message, code):
    print(f"lrtdense reference: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def main(args):
    """Runs the chosen ``reference`` sub-command; returns the exit code (SPEC.md lists them)."""
    try:
        return _main(args)
    except UsageError as err:
        return _error(err, EXIT_USAGE)
    except store.ReferenceError as err:
        return _error(err, EXIT_REFERENCE)


def _main(args):
    command = args.reference_command
    if command == "path":
        _emit(default_dir())
        return EXIT_PASS
    if command == "spec":
        if args.show:
            with open(spec_path()) as f:
                _emit(f.read().rstrip("\n"))
        else:
            _emit(spec_path())
        return EXIT_PASS
    if command == "generate":
        from lrtdense.reference import cases as _cases
        names = (None if not args.cases
                 else select_cases(sorted(_cases.CASES), _patterns(args.cases)))
        manifest = generate(args.dir, names, pin=args.pin)
        n_files = sum(len(v) for v in manifest["cases"].values())
        digest = store.sha256(os.path.join(args.dir, "manifest.json"))
        _emit(f"wrote {len(manifest['cases'])} cases ({n_files} files) to {args.dir}; manifest "
              f"sha256 {digest}" + (" (pinned)" if args.pin else ""))
        return EXIT_PASS
    reference = args.reference or default_dir()
    if command == "list":
        ref = store.open_reference(reference, check=False)
        lines = []
        for name in select_cases(ref.names, args.patterns):
            meta, _, _ = store.read_case(ref, name)
            lines.append(f"{name:40s} {meta['dtype']:8s} {meta['kind']:17s} {meta['description']}")
        _emit("\n".join(lines))
        return EXIT_PASS
    results = args.results
    if args.port is not None:
        results = _adapter_results(args.port)
    elif not os.path.isdir(args.results):
        raise UsageError(f"results folder {args.results!r} does not exist")
    try:
        selection = families.Selection(args.families, args.quantities)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.port is not None:
        selection = results.selection & selection
    _distinct_outputs(args)
    report = run(reference, results, _patterns(args.cases), args.statistical, selection)
    found = hints.hints(report.rows)
    text = summary.format_report(report.rows, report.notes, found, args.all_rows)
    _write("--markdown", args.markdown, lambda: text + "\n")
    _write("--json", args.json, lambda: json.dumps(outputs.to_json(report, found), indent=1) + "\n")
    _write("--junit", args.junit, lambda: outputs.to_junit(report.rows))
    _emit(text)
    if not report.passed:
        return EXIT_FAIL
    return EXIT_PASS if report.shipped or args.allow_unshipped else EXIT_UNSHIPPED
