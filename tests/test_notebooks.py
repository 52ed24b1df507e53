"""The notebooks (notebooks/*.py, jupytext percent-format sources): each executes from a clean
kernel in an empty folder (nbclient), opens by saying what it teaches and how long it takes, and
says what its cells print; the exercises' checks report the unwritten functions, the solutions
pass them, and a planted wrong answer is named by the quantity it gets wrong."""
import glob
import json
import os
import re
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(FOLDER, "*.py")))
NEEDS = "the notebooks need jupytext, nbclient and ipykernel: pip install -e '.[notebooks]'"
NEEDS_EXAMPLES = "the notebooks draw with matplotlib and train on scikit-learn's digits: " \
                 "pip install -e '.[examples]'"
LIMIT_S = 120        # a hang, not a speed check: each takes well under a minute on two cores


def _read(name):
    jupytext = pytest.importorskip("jupytext", reason=NEEDS)
    return jupytext.read(os.path.join(FOLDER, name))


def kernel_spec(folder):
    """A kernel spec in ``folder`` that runs this interpreter with this checkout first on its
    path, whatever "python3" kernel the machine has; its name."""
    spec = folder / "kernels" / "lrtdense-tests"
    spec.mkdir(parents=True)
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lrtdense tests", "language": "python",
        "env": {"PYTHONPATH": path, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}}))
    return spec.name


def execute(name, tmp_path):
    """Runs notebook ``name`` in a fresh kernel from ``tmp_path``; (notebook, seconds, text of
    every output)."""
    nbclient = pytest.importorskip("nbclient", reason=NEEDS)
    pytest.importorskip("ipykernel", reason=NEEDS)
    for module in ("matplotlib", "sklearn"):
        pytest.importorskip(module, reason=NEEDS_EXAMPLES)
    nb = _read(name)
    kernel = kernel_spec(tmp_path / "jupyter")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(tmp_path / "jupyter")      # found before the user's kernels
    try:
        start = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=LIMIT_S, kernel_name=kernel,
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        if old is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = old
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return nb, seconds, "\n".join(texts)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every notebook executed once: {name: (notebook, seconds, outputs)}."""
    return {name: execute(name, tmp_path_factory.mktemp(name[:-3])) for name in NOTEBOOKS}


def test_the_notebooks_are_there_and_paired_with_nothing_committed():
    assert NOTEBOOKS == ["01_the_trick.py", "02_exercises.py", "02_exercises_solutions.py",
                         "03_uncertainty_in_practice.py"]
    assert not glob.glob(os.path.join(FOLDER, "*.ipynb")) or \
        "notebooks/*.ipynb" in open(os.path.join(ROOT, ".gitignore")).read()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_opens_with_what_it_teaches_and_how_long_it_takes(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown"
    assert "**What you will learn:**" in first.source and "**How long:**" in first.source
    assert re.search(r"about \d+ (seconds|minutes)", first.source)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_executes_from_a_clean_kernel_and_writes_no_file(name, runs, tmp_path_factory):
    nb, seconds, _ = runs[name]
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    print(f"{name}: {seconds:.1f} s")


def test_the_trick_measures_what_it_says(runs):
    out = runs["01_the_trick.py"][2]
    assert "Flipout by hand agrees with lrtdense.DenseFlipout" in out
    times = float(re.search(r"a shared sample is ([\d.]+) times noisier than LRT", out).group(1))
    assert times > 2


def test_the_exercises_report_each_unwritten_function(runs):
    out = runs["02_exercises.py"][2]
    for name in ("lrt_moments", "kl_normal", "kl_molchanov", "adam_step"):
        assert re.search(rf"^{name}: \d+ of \d+ cases fail$", out, re.M), name
    assert out.count("your function raised NotImplementedError") >= 4


def test_the_solutions_pass_and_a_planted_mistake_is_named(runs):
    out = runs["02_exercises_solutions.py"][2]
    for name in ("lrt_moments", "kl_normal", "kl_molchanov", "adam_step"):
        assert re.search(rf"^{name}: every case passes$", out, re.M), name
    # the planted answer: the standard deviation without its square root
    assert re.search(r"^FAIL lrt_\w+ \(.*\): std is wrong", out, re.M)
    assert "hint: each pre-activation is a sum of independent" in out


def test_the_exercises_and_the_solutions_check_the_same_things():
    def checks(name):
        return [line for cell in _read(name).cells for line in cell.source.splitlines()
                if line.startswith("check_exercise(")]
    assert checks("02_exercises.py") == checks("02_exercises_solutions.py")[:4]
    assert len(checks("02_exercises.py")) == 4


def test_uncertainty_in_practice_finds_what_it_says(runs):
    out = runs["03_uncertainty_in_practice.py"][2]
    auroc = float(re.search(r"AUROC of the mutual information: ([\d.]+)", out).group(1))
    assert auroc > 0.6
    coverage = float(re.search(r"95% interval coverage on fresh data: ([\d.]+)", out).group(1))
    assert 0.85 <= coverage <= 1.0
