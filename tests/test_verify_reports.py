"""verify's reports: the per-family summary, the hints (each rule met by a real planted bug, none
for a correct port), the coverage line, --all, --json (validated against its schema), --junit,
and the output files (checked first, written atomically, never over a file git tracks)."""
import json
import math
import os
import subprocess
import xml.etree.ElementTree as ET

import autograd.numpy as anp
import numpy as np
import pytest

from lrtdense.reference import default_dir, hints, outputs, summary
from lrtdense.reference.families import FAMILIES
from lrtdense.reference.report import FAIL, NOT_IMPLEMENTED, PASS, Row, compare
from lrtdense.reference.verify import run
from lrtdense.testing import reference_cases
import spec_port
from helpers import run_lrtdense

REF = default_dir()
LAYERS = ("lrt_*", "reparam_*", "flipout_*")  # 62 cases: 3 families and network (2 cases)
HERE = os.path.dirname(os.path.abspath(__file__))
PARTIAL = os.path.join(HERE, "..", "examples", "ports", "partial_port.py") + ":Adapter"


def validate(doc):
    """Checks ``doc`` against the published schema (jsonschema: the ``test`` extra)."""
    jsonschema = pytest.importorskip("jsonschema")
    with open(outputs.SCHEMA_PATH) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def report_of(port, patterns=LAYERS):
    """verify's Report of ``port(case) -> results`` (in process, no files)."""
    return run(REF, lambda case, statistical: {k: np.asarray(v) for k, v in port(case).items()},
               patterns)


def spec(broken=None):
    return lambda case: spec_port.run_case(case.meta, case.inputs, broken=broken)


def names(report):
    return [h.name for h in hints.hints(report.rows)]


def failed_cases(report):
    return {r.case for r in report.rows if r.failed}


# ------------------------------------------------------------------------------ planted bugs

def test_a_correct_port_gets_no_hint():
    report = report_of(spec())
    assert names(report) == [] and report.passed and len(report.rows) == 521


def test_no_eps_only_extreme_scales():
    report = report_of(spec("no_eps"))
    assert names(report) == ["extreme_scales"]
    assert failed_cases(report) == {f"{e}_{b}_extreme_scales" for e in ("lrt", "reparam", "flipout")
                                    for b in (32, 64)}


def test_no_square_the_sampled_term():
    """LRT's variance (x*x) @ scale: outputs/sample and the gradients fail, mean and KL pass."""
    assert names(report_of(spec("no_square"), ["lrt_*"])) == ["noise"]


def test_a_wrong_scale(monkeypatch):
    """scale = exp(u) (a log-scale parametrization) instead of softplus(u) + eps."""
    monkeypatch.setattr(spec_port, "_scale", lambda u, broken: anp.exp(u))
    assert names(report_of(spec())) == ["scale"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the planted sqrt's NaN
def test_a_plain_sqrt_gives_nan_in_zero_rows(monkeypatch):
    monkeypatch.setattr(spec_port, "_sqrt", anp.sqrt)
    report = report_of(spec(), ["lrt_*"])
    assert names(report) == ["zero_rows"]
    assert failed_cases(report) == {"lrt_32_zero_rows", "lrt_64_zero_rows", "lrt_64_tie_relu",
                                    "lrt_64_tie_elu"}


def test_relu_as_maximum_fails_the_ties(monkeypatch):
    """autograd's maximum gives half the gradient to each side at a tie: relu'(0) = 1/2."""
    monkeypatch.setitem(spec_port.ACT, "relu", lambda z: anp.maximum(z, 0 * z))
    report = report_of(spec())
    assert names(report) == ["ties"]
    assert failed_cases(report) == {"lrt_64_tie_relu", "reparam_64_tie_relu", "flipout_64_tie_relu"}


def test_half_precision_fails_only_float32():
    """A port that computes the float32 cases in float16 (rounding its results to it)."""
    def port(case):
        res = spec_port.run_case(case.meta, case.inputs)
        if case.meta["dtype"] == "float32":
            res = {k: np.asarray(v).astype(np.float16).astype(np.float32) for k, v in res.items()}
        return res
    report = report_of(port)
    assert names(report) == ["float32"] and failed_cases(report)


def test_float32_results_in_float64_cases_ask_for_a_cast():
    def port(case):
        return {k: np.asarray(v, np.float32) for k, v in spec_port.run_case(case.meta,
                                                                             case.inputs).items()}
    report = report_of(port, ["lrt_64_basic", "lrt_32_basic"])
    assert names(report) == ["dtype"] and failed_cases(report) == {"lrt_64_basic"}
    assert sum(r.failed for r in report.rows) == 8
    assert all("dtype float32, expected float64" in r.note for r in report.rows if r.failed)


def test_a_backward_seeded_with_ones():
    """The backward of sum(out) + KL instead of sum(g * out) + KL: every output right."""
    def port(case):
        return spec_port.run_case(case.meta, {**case.inputs, "g": np.ones_like(case.inputs["g"])})
    report = report_of(port)
    assert names(report) == ["backward"]
    assert all(r.quantity.startswith("grads/") for r in report.rows if r.failed)


def keras_adam(meta, inputs, rounded=True):
    """SPEC section 3's keras Adam; ``rounded=False`` plants the bug: alpha from the float64 lr,
    b1, b2 instead of their float32 roundings."""
    h = meta["hyperparameters"]
    lr, b1, b2 = (float(np.float32(v)) if rounded else v
                  for v in (h["step_size"], h["b1"], h["b2"]))
    out = {}
    for k in ("w", "b"):
        p, m, v, traj = inputs[f"init/{k}"], 0.0, 0.0, []
        for t in range(1, h["steps"] + 1):
            g = inputs[f"grads/{k}"][t - 1]
            m, v = m + (g - m) * (1 - h["b1"]), v + (g * g - v) * (1 - h["b2"])
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            p = p - m * alpha / (np.sqrt(v) + h["eps"]["keras"])
            traj.append(p)
        out[f"keras/params/{k}"] = np.stack(traj)
    return out


@pytest.mark.parametrize("rounded", [True, False])
def test_keras_adam_alpha_precision(rounded):
    def port(case):  # the kingma form as the reference has it: only the keras form is planted
        kingma = {k: v for k, v in case.expected.items() if k.startswith("kingma/")}
        return {**kingma, **keras_adam(case.meta, case.inputs, rounded)}
    report = report_of(port, ["adam_*"])
    assert names(report) == ([] if rounded else ["keras_adam"])
    assert sum(r.failed for r in report.rows) == (0 if rounded else 2)


# -------------------------------------------------------------------------- summary, coverage

def test_family_summary_and_coverage_count_every_row():
    rows = [Row(c, q, family=f, status=s) for c, f, q, s in (
        ("lrt_64_a", "lrt", "outputs/sample", PASS), ("lrt_64_a", "lrt", "kl/total", FAIL),
        ("lrt_64_b", "lrt", "grads/x", NOT_IMPLEMENTED),
        ("adam_64_t", "adam", "keras/params/w", NOT_IMPLEMENTED))]
    assert summary.family_summary(rows) == {
        "lrt": {"cases": 2, "passed": 1, "failed": 1, "not_implemented": 1},
        "adam": {"cases": 1, "passed": 0, "failed": 0, "not_implemented": 1}}
    assert summary.coverage_line(rows) == "coverage: 1 of 2 families, 2 of 4 rows (50%)"
    assert [summary.percent(*p) for p in ((991, 992), (1, 992), (0, 992), (99, 992), (0, 0))] == [
        99, 1, 0, 10, 0]


def test_default_output_no_eps_summary_hint_failing_rows_then_totals():
    report = report_of(spec("no_eps"))
    text = summary.format_report(report.rows, report.notes, hints.hints(report.rows))
    lines = text.splitlines()
    assert lines[:3] == ["| family | cases | rows passed | failed | not implemented |",
                         "|---|---:|---:|---:|---:|", "| lrt | 24 | 189 | 6 | 0 |"]
    assert "| network | 2 | 32 | 0 | 0 |" in lines
    assert sum(line.startswith("hint: only *_extreme_scales") for line in lines) == 1
    assert sum("FAIL" in line for line in lines) == 18 and "| pass |" not in text
    assert lines[-2:] == ["coverage: 4 of 4 families, 521 of 521 rows (100%)",
                          "503 passed, 18 failed"]
    every = summary.format_report(report.rows, all_rows=True)
    assert sum(line.endswith("| pass |") for line in every.splitlines()) == 503


# ------------------------------------------------------------------------------- CLI and files

def test_cli_partial_port_default_json_junit(capsys, tmp_path):
    j, x, md = tmp_path / "v.json", tmp_path / "v.xml", tmp_path / "v.md"
    code, out, err = run_lrtdense(capsys, "reference", "verify", "--port", PARTIAL, "--json",
                                  str(j), "--junit", str(x), "--markdown", str(md))
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert "| lrt | 24 | 99 | 0 | 96 |" in lines and "| reparam | 18 | 0 | 0 | 147 |" in lines
    total = sum(len(c.expected) for c in reference_cases())
    assert lines[-2:] == [f"coverage: 1 of 10 families, 99 of {total} rows "
                          f"({round(100 * 99 / total)}%)",
                          f"99 passed, 0 failed, {total - 99} not implemented"]
    assert "FAIL" not in out and "hint:" not in out and md.read_text() == out
    doc = json.loads(j.read_text())
    assert doc["schema"] == "lrtdense-verify/1" and len(doc["rows"]) == total
    assert doc["summary"]["counts"] == {"rows": total, "passed": 99, "failed": 0,
                                        "not_implemented": total - 99}
    assert doc["summary"]["coverage"] == {"families": 1, "families_total": 10, "rows": 99,
                                          "rows_total": total}
    assert doc["summary"]["reference"]["shipped"] is True
    assert doc["badge"] == {"schemaVersion": 1, "label": "lrtdense conformance",
                            "message": f"99/{total}", "color": "yellow"}
    suite = ET.parse(x).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        str(total), "0", str(total - 99))
    assert len(cases) == total and sum(c.find("skipped") is not None for c in cases) == total - 99
    assert {c.get("classname").split(".")[0] for c in cases} == set(FAMILIES)
    assert sorted(os.listdir(tmp_path)) == ["v.json", "v.md", "v.xml"]  # no temporary left
    validate(doc)  # last: it skips without jsonschema


def test_json_non_finite_numbers_and_junit_failures():
    ref = np.array([1.0, 2.0])
    rows = [compare("lrt_64_a", "outputs/sample", np.array([np.nan, 2.0]), ref,
                    {"rtol": 1e-12, "atol": 0.0}),
            Row("lrt_64_a", "kl/total", note="missing from the port's results"),
            Row("lrt_64_b", "grads/x", status=NOT_IMPLEMENTED)]
    for r in rows:
        r.family = "lrt"
    report = type("R", (), {"rows": rows, "notes": [], "shipped": False,
                            "manifest_sha256": "0" * 64})()
    doc = json.loads(json.dumps(outputs.to_json(report, hints.hints(rows)), allow_nan=False))
    first, missing = doc["rows"][0], doc["rows"][1]
    assert (first["max_abs"], first["ulps"], first["worst"]) == ("Infinity", 0.0, "(0,)")
    assert (missing["max_abs"], missing["tolerance"]) == (None, None)
    assert doc["badge"]["color"] == "red" and doc["badge"]["message"] == "0/3"
    suite = ET.fromstring(outputs.to_junit(rows)).find("testsuite")
    failures = [c.find("failure") for c in suite if c.find("failure") is not None]
    assert [f.get("message") for f in failures] == [rows[0].note, rows[1].note]
    assert suite.findall("testcase")[0].get("classname") == "lrt.lrt_64_a"
    validate(doc)  # last: it skips without jsonschema


@pytest.fixture
def tracked(tmp_path):
    """A file git tracks, in a repository of its own under tmp_path."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "kept.txt").write_text("kept\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    subprocess.run(["git", "-C", str(repo), "add", "kept.txt"], check=True, timeout=60)
    return repo / "kept.txt"


@pytest.mark.parametrize("flag", ["--json", "--junit", "--markdown"])
def test_output_files_checked_before_the_work(capsys, flag, tmp_path, tracked):
    code, out, err = run_lrtdense(capsys, "reference", "verify", str(tmp_path), flag, str(tracked))
    assert code == 2 and out == "" and "committed to git" in err
    assert tracked.read_text() == "kept\n"
    code, out, err = run_lrtdense(capsys, "reference", "verify", str(tmp_path), flag,
                                  str(tmp_path / "nowhere" / "f"))
    assert code == 2 and "does not exist" in err


def test_two_outputs_on_one_file_is_a_usage_error(capsys, tmp_path):
    same = str(tmp_path / "out")
    code, out, err = run_lrtdense(capsys, "reference", "verify", str(tmp_path), "--json", same,
                                  "--junit", same)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.strip().endswith(f"--json and --junit name the same file {same!r}")
    assert not os.path.exists(same)


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    outputs.write_atomic(str(path), "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
