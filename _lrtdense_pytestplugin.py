"""The pytest plugin of lrtdense's conformance kit: one test per (reference case, quantity).

Registered through the ``pytest11`` entry point, so installing lrtdense is enough; it does
nothing (and imports nothing of lrtdense) unless a port is named:

    pytest --lrtdense-port=my_port.conformance:Adapter          # or path/to/port.py:Adapter
    pytest --lrtdense-port=... -k "lrt_ and kl"                 # the usual selection
    pytest --lrtdense-port=... --lrtdense-cases='lrt_*' --lrtdense-xfails=xfails.txt

The port can also come from the ``LRTDENSE_PORT`` environment variable or the ``lrtdense_port``
ini option. Tests are named ``lrtdense::<case>[<quantity>]`` (for instance
``lrtdense::lrt_32_basic[grads/x]``). A quantity the adapter does not declare in its
``implements`` is skipped as "not implemented"; a failing one reports its errors and worst
elements. ``--lrtdense-skips FILE`` and ``--lrtdense-xfails FILE`` hold one glob per line on
``<case>[<quantity>]`` (or ``<case>``), ``# comments`` allowed: matching tests are skipped, or
expected to fail (strict: an xfail that passes is reported). The terminal summary ends with the
coverage line. ``--lrtdense-statistical`` runs the statistical mode (SPEC.md section 7) through
the adapter's ``sample`` instead: one test per eligible case for the sampled families
(``samples/*``) and one per deterministic quantity.
"""
import fnmatch
import os

import pytest

__all__ = ["pytest_addoption", "pytest_configure", "pytest_collection_modifyitems",
           "pytest_terminal_summary"]

_KEY = "lrtdense_conformance"


def pytest_addoption(parser):
    group = parser.getgroup("lrtdense", "lrtdense conformance kit (the reference set as tests)")
    group.addoption("--lrtdense-port", default=None, metavar="MODULE:ADAPTER",
                    help="run the reference cases against this adapter ('pkg.module:Adapter' "
                         "or 'path/to/port.py:Adapter'; default: $LRTDENSE_PORT)")
    group.addoption("--lrtdense-cases", action="append", default=None, metavar="GLOB",
                    help="only these reference cases (globs, repeated or comma-separated)")
    group.addoption("--lrtdense-reference", default=None, metavar="DIR",
                    help="another reference set (default: the shipped one)")
    group.addoption("--lrtdense-skips", default=None, metavar="FILE",
                    help="globs on '<case>[<quantity>]', one per line: skip those tests")
    group.addoption("--lrtdense-xfails", default=None, metavar="FILE",
                    help="globs on '<case>[<quantity>]', one per line: expected failures")
    group.addoption("--lrtdense-statistical", action="store_true",
                    help="the statistical mode, through the adapter's sample(case, draws, seed)")
    group.addoption("--lrtdense-draws", type=int, default=10000, metavar="S",
                    help="draws per statistical case (at least 10000)")
    parser.addini("lrtdense_port", "the adapter of --lrtdense-port", default=None)


def _port(config):
    return (config.getoption("--lrtdense-port") or os.environ.get("LRTDENSE_PORT")
            or config.getini("lrtdense_port") or None)


def _globs_file(path, option):
    """The globs of a skips/xfails file: one per line, '#' starts a comment."""
    if path is None:
        return []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise pytest.UsageError(f"{option} {path!r}: {err.strerror or err}") from None
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


class _Session:
    """What the plugin holds for one pytest run: the adapter, the open reference set, and the
    rows of the last case computed (items of one case run one after another)."""

    def __init__(self, config, spec):
        from lrtdense.conformance.harness import load_adapter
        from lrtdense.reference import default_dir, store
        from lrtdense.reference.families import Selection
        try:
            self.adapter = load_adapter(spec)
            self.selection = Selection.from_declaration(getattr(self.adapter, "implements", None))
            self.ref = store.open_reference(config.getoption("--lrtdense-reference")
                                            or default_dir(), check=True)
        except (ValueError, store.ReferenceError) as err:
            raise pytest.UsageError(f"--lrtdense-port: {err}") from None
        self.spec = spec
        self.statistical = config.getoption("--lrtdense-statistical")
        self.draws = config.getoption("--lrtdense-draws")
        self.skips = _globs_file(config.getoption("--lrtdense-skips"), "--lrtdense-skips")
        self.xfails = _globs_file(config.getoption("--lrtdense-xfails"), "--lrtdense-xfails")
        self._rows = (None, {})
        self.outcomes = []

    def rows_of(self, name):
        """{quantity: Row} of case ``name`` (computed once, kept until another case is asked)."""
        if self._rows[0] != name:
            from lrtdense.conformance.harness import results_of
            from lrtdense.reference.verify import case_rows, read_checked_case
            case = read_checked_case(self.ref, name, self.statistical)
            rows = case_rows(case, results_of(self.adapter, self.draws), self.statistical,
                             self.selection)
            by_key = {}
            for row in rows:
                key = "samples/*" if row.quantity not in case.expected and row.quantity != "*" \
                    else row.quantity
                by_key.setdefault(key, []).append(row)
            self._rows = (name, by_key)
        return self._rows[1]

    def quantities(self, name):
        """The quantities of case ``name`` (its expected keys; statistical: ``samples/*`` and the
        deterministic ones), or None if the case is not eligible for the statistical mode."""
        from lrtdense.reference import statistical, store
        meta, _, expected = store.read_case(self.ref, name)
        if not self.statistical:
            return sorted(expected)
        if not statistical.eligible(meta):
            return None
        return ["samples/*"] + sorted(statistical.deterministic_keys(meta, expected))


class ConformanceItem(pytest.Item):
    """One reference case and quantity, checked against the adapter's result."""

    def __init__(self, *, case, quantity, **kwargs):
        super().__init__(**kwargs)
        self.case, self.quantity = case, quantity

    def runtest(self):
        state = self.config.stash[_STASH]
        rows = state.rows_of(self.case)
        mine = rows.get(self.quantity, []) + rows.get("*", [])
        if not mine:  # the oracle judged nothing here: never a silent pass
            pytest.fail(f"{self.case} [{self.quantity}]: verify produced no row for this "
                        f"quantity", pytrace=False)
        failing = [r for r in mine if r.failed]
        if failing:
            from lrtdense.reference.report import Row
            state.outcomes.append("FAIL")
            lines = [f"{self.case} [{r.quantity}]: {r.note}" + (
                f" (max abs error {r.max_abs:.3g}, max rel error {r.max_rel:.3g}, worst index "
                f"{r.worst})" if isinstance(r, Row) and r.worst else "") for r in failing]
            pytest.fail("\n".join(lines), pytrace=False)
        if mine and all(r.status == "not implemented" for r in mine):
            state.outcomes.append("not implemented")
            pytest.skip(f"not implemented (the adapter's implements does not cover "
                        f"{self.quantity})")
        state.outcomes.append("pass")

    def reportinfo(self):
        return self.path, 0, self.nodeid


class ConformanceCollector(pytest.Collector):
    """The parent of the generated items (node ids ``lrtdense::<case>[<quantity>]``)."""

    def collect(self):
        return []


_STASH = pytest.StashKey[_Session]()


def pytest_configure(config):
    config.addinivalue_line("markers", "lrtdense_conformance: a test generated by the lrtdense "
                                       "conformance kit")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Appends one item per (case, quantity) when a port is named (before -k/-m deselect)."""
    spec = _port(config)
    if not spec:
        return
    from lrtdense.reference.verify import UsageError, select_cases
    state = _Session(config, spec)
    config.stash[_STASH] = state
    patterns = [p.strip() for v in (config.getoption("--lrtdense-cases") or [])
                for p in v.split(",") if p.strip()] or None
    try:
        names = select_cases(state.ref.names, patterns)
    except UsageError as err:
        raise pytest.UsageError(f"--lrtdense-cases: {err}") from None
    parent = ConformanceCollector.from_parent(session, name="lrtdense", nodeid="lrtdense")
    for name in names:
        quantities = state.quantities(name)
        for quantity in quantities or ():
            test_id = f"{name}[{quantity}]"
            item = ConformanceItem.from_parent(parent, name=test_id, case=name,
                                               quantity=quantity)
            item.add_marker(pytest.mark.lrtdense_conformance)
            if _listed(test_id, name, state.skips):
                item.add_marker(pytest.mark.skip(reason="listed in --lrtdense-skips"))
            elif _listed(test_id, name, state.xfails):
                item.add_marker(pytest.mark.xfail(reason="listed in --lrtdense-xfails",
                                                  strict=True))
            items.append(item)


def _listed(test_id, name, globs):
    """True if a glob of a skips/xfails file matches ``<case>[<quantity>]`` or ``<case>`` (the
    brackets of a test id are literal: only * and ? are wildcards)."""
    literal = [g.replace("[", "\0").replace("]", "[]]").replace("\0", "[[]") for g in globs]
    return any(fnmatch.fnmatchcase(test_id, g) or fnmatch.fnmatchcase(name, g) for g in literal)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The coverage line: how much of the reference set the port implements and passes."""
    state = config.stash.get(_STASH, None)
    if state is None or not state.outcomes:
        return
    done = state.outcomes
    implemented = len(done) - done.count("not implemented")
    terminalreporter.write_line(
        f"lrtdense conformance ({state.spec}): {done.count('pass')} passed, "
        f"{done.count('FAIL')} failed, {done.count('not implemented')} not implemented; "
        f"coverage {implemented} of {len(done)} tests run ({100 * implemented / len(done):.0f}%)")
