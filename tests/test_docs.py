"""The documentation: every python block of docs/*.md runs as written, in order, in a fresh
interpreter from a temporary folder (the tutorial's own asserts check the numbers it quotes);
every number the tutorial's prose quotes appears in its code; the figures it references exist
and are the ones its code draws; the API reference builds offline; every public function,
class and method of lrtdense has a docstring; the top-level exports; the LICENSE."""
import html
import importlib
import inspect
import json
import os
import re
import subprocess
import sys

import pytest

import lrtdense

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
RUNNER = os.path.join(DOCS, "run_markdown.py")
NEEDS_EXAMPLES = "the tutorial draws with matplotlib and trains on scikit-learn's digits: " \
                 "pip install 'lrtdense[examples]'"
NEEDS_PDOC = "the API reference is built by pdoc: pip install 'lrtdense[docs]'"


def _runner():
    spec = importlib.util.spec_from_file_location("run_markdown", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown_files():
    return sorted(name for name in os.listdir(DOCS) if name.endswith(".md"))


def _run(path, tmp_path, timeout=600):
    """Runs the blocks of ``path`` in a fresh interpreter from ``tmp_path``; returns the values."""
    dump = tmp_path / "values.json"
    proc = subprocess.run([sys.executable, RUNNER, path, "--dump", str(dump)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{path}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(dump.read_text()), proc.stdout


# ----------------------------------------------------------------------- the blocks run
# documents whose blocks need an optional framework: skipped, saying which, when it is absent
NEEDS_FRAMEWORK = {"keras.md": ("keras", "docs/keras.md needs Keras 3: pip install "
                                         "'lrtdense[keras]'"),
                   "torch.md": ("torch", "docs/torch.md runs lrtdense.torch, which needs torch")}


@pytest.mark.parametrize("name", [n for n in _markdown_files() if n != "tutorial.md"])
def test_every_python_block_of_the_docs_runs(name, tmp_path):
    if name in NEEDS_FRAMEWORK:
        pytest.importorskip(*NEEDS_FRAMEWORK[name][:1], reason=NEEDS_FRAMEWORK[name][1])
    _run(os.path.join(DOCS, name), tmp_path)


def test_the_tutorial_runs_as_written_and_draws_its_figures(tmp_path):
    """The whole tutorial, in a fresh interpreter from an empty folder (about 30 s): its asserts
    check every number it quotes; it writes the figures its text shows, and no other file."""
    for module in ("matplotlib", "sklearn"):
        pytest.importorskip(module, reason=NEEDS_EXAMPLES)
    values, out = _run(os.path.join(DOCS, "tutorial.md"), tmp_path)
    text = open(os.path.join(DOCS, "tutorial.md"), encoding="utf-8").read()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(shown) == 5
    assert sorted(os.listdir(tmp_path)) == sorted(shown + ["values.json"])
    for png in shown:
        assert (tmp_path / png).stat().st_size > 20000, png
        assert os.path.isfile(os.path.join(DOCS, png)), f"docs/{png} is not committed"
    # the claims about the gradient variance, again from the values the run left behind
    var = values["variance"]
    for layer in ("layer_0", "layer_1"):
        lrt, single = var["lrt"][layer], var["single"][layer]
        assert single[-1] / lrt[-1] > 20 and single[-1] / single[3] > 0.5 and lrt[-1] / lrt[2] < 1 / 30
    assert values["batch_sizes"] == [1, 4, 16, 64, 256, 1024]


def test_every_number_the_tutorial_quotes_is_in_its_code():
    """A number in the prose (outside code blocks; years, arXiv ids and section numbers aside)
    must appear in the code, where an assert checks it: numbers are not typed in by hand."""
    runner = _runner()
    text = open(os.path.join(DOCS, "tutorial.md"), encoding="utf-8").read()
    code = "\n".join(c for _, c in runner.python_blocks(text))
    prose, inside = [], False
    for line in text.splitlines():
        if runner.FENCE.match(line):
            inside = not inside
        elif not inside:
            prose.append(line)
    prose = re.sub(r"arXiv \d+\.\d+|section \d+\.\d+|\b(?:19|20)\d\d\b", "", "\n".join(prose))
    quoted = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", prose))
    in_code = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])", code))
    assert quoted, "no numbers found: the extraction is broken"
    assert sorted(quoted - in_code) == []


def test_images_referenced_by_the_docs_exist():
    for path in [os.path.join(ROOT, "README.md")] + [os.path.join(DOCS, n) for n in _markdown_files()]:
        text = open(path, encoding="utf-8").read()
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
            assert os.path.isfile(os.path.join(os.path.dirname(path), target)), (path, target)


def test_the_docs_hold_no_python_block_that_is_not_lrtdense():
    """TensorFlow Probability's source is quoted in plain fences, not ```python ones: a reader
    (or a checker) runs every python block."""
    text = open(os.path.join(DOCS, "tfp_semantics.md"), encoding="utf-8").read()
    assert _runner().python_blocks(text) == [] and "tf.matmul" in text


# ------------------------------------------------------------------------ the runner
def test_python_blocks_are_found_indented_or_not_and_others_are_skipped():
    text = ("# t\n```python\na = 1\n```\n\n```bash\necho no\n```\n- item\n\n  ```python\n"
            "  b = a + 1\n  ```\n````python\nc = '```'\n````\n```\nplain\n```\n")
    blocks = _runner().python_blocks(text)
    assert [code for _, code in blocks] == ["a = 1", "b = a + 1", "c = '```'"]
    assert [line for line, _ in blocks] == [3, 12, 15]


def test_the_runner_names_the_failing_block_and_dumps_values(tmp_path):
    md = tmp_path / "doc.md"
    md.write_text("```python\nimport numpy as np\nx = np.arange(3.0)\ny = {'a': 1.5}\n```\n"
                  "text\n```python\nz = x.sum()\n```\n")
    values, out = _run(str(md), tmp_path)
    assert values["x"] == [0.0, 1.0, 2.0] and values["y"] == {"a": 1.5} and values["z"] == 3.0
    assert "np" not in values and "2 python blocks ran" in out
    md.write_text("```python\nx = 1\n```\n\n```python\nraise ValueError('boom')\n```\n")
    proc = subprocess.run([sys.executable, RUNNER, str(md)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "python block 2 of 2, starting at line 6, failed" in proc.stderr
    assert "ValueError: boom" in proc.stderr


# --------------------------------------------------------------------- the API reference
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``bash .ci/docs OUT`` run once (about 6 s) from an empty folder; OUT."""
    pytest.importorskip("pdoc", reason=NEEDS_PDOC)
    folder = tmp_path_factory.mktemp("docs")
    out = folder / "site"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(["bash", os.path.join(ROOT, ".ci", "docs"), str(out)], cwd=folder,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_api_reference_builds_offline(site):
    """``bash .ci/docs OUT``: pdoc's pages for every module, the README as the index, the
    tutorial with its figures, all linked to each other, and nothing loaded from the network."""
    out = site
    for page in ("index.html", "tutorial.html", "variance_study.html", "lrtdense.html",
                 "lrtdense/kernels.html", "lrtdense/studies/estimators.html",
                 "lrtdense/training.html", "tutorial_gradient_variance.png"):
        assert (out / page).is_file(), page
    tutorial = (out / "tutorial.html").read_text()
    assert "<h1" in tutorial and "local reparameterization trick" in tutorial
    assert 'src="tutorial_gradient_variance.png"' in tutorial
    assert 'href="variance_study.html"' in tutorial            # .md links became .html
    index = (out / "index.html").read_text()
    assert 'href="docs/tutorial.md"' not in index and 'href="tutorial.html"' in index
    kernels = (out / "lrtdense" / "kernels.html").read_text()
    assert "per_example" in kernels and 'href="../tutorial.html"' in kernels
    estimators = (out / "lrtdense" / "studies" / "estimators.html").read_text()
    assert "gradient_variance" in estimators and 'href="../../tutorial.html"' in estimators
    for path in out.rglob("*.html"):
        external = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]+)"',
                              path.read_text())
        assert external == [], (path, external)


def _pages(out):
    """{page path relative to ``out``: its HTML without its scripts} for every built page."""
    return {str(p.relative_to(out)): re.sub(r"<script.*?</script>", "", p.read_text(), flags=re.S)
            for p in sorted(out.rglob("*.html"))}


def broken_links(out):
    """[(page, href)] for every relative href or src of a built page whose file is not built, or
    whose #fragment names no id of the built HTML page it points to."""
    pages = _pages(out)
    ids = {page: set(re.findall(r'\sid="([^"]+)"', text)) for page, text in pages.items()}
    broken = []
    for page, text in pages.items():
        folder = os.path.dirname(os.path.join(out, page))
        for href in re.findall(r'(?:href|src)="([^"]*)"', text):
            path, _, fragment = html.unescape(href).partition("#")
            if re.match(r"[a-z][a-z0-9+.-]*:", path):
                continue                                        # an absolute URL
            target = os.path.normpath(os.path.join(folder, path))
            name = os.path.relpath(target, out) if path else page
            if path and not os.path.exists(target) or \
                    fragment and name in ids and fragment not in ids[name]:
                broken.append((page, href))
    return broken


def bold_formulas(out):
    """[(page, excerpt)] where Markdown turned the ``**`` of a formula into bold: a <strong>
    opened right after a letter, digit or bracket (``x**2`` -> x<strong>2) or closed right before
    one."""
    return [(page, text[max(0, m.start() - 30):m.end() + 20])
            for page, text in _pages(out).items()
            for m in re.finditer(r"[\w)\]]<strong>|</strong>[\w(]", text)]


def test_every_relative_link_of_the_built_docs_works(site):
    """Every file a built page links to is built, and every #fragment names an id there."""
    assert len(_pages(site)) > 60
    assert broken_links(site) == []


def test_no_formula_of_the_built_docs_renders_as_bold(site):
    assert bold_formulas(site) == []
    kernels = (site / "lrtdense" / "kernels" / "dense.html").read_text()
    assert "<code>s = sqrt((x**2) @ scale**2)</code>" in kernels


def test_the_link_and_bold_checks_find_what_they_look_for(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.html").write_text('<h1 id="top"></h1><a href="sub/b.html#x">b</a> '
                                     '<a href="c.html">c</a> <a href="sub/b.html#y">y</a> '
                                     '<a href="https://example.org/#z">e</a> <a href="#top">t</a>'
                                     '<a href="#nowhere">n</a>'
                                     '<script>x = `<a href="${url}">`</script>')
    (tmp_path / "sub" / "b.html").write_text('<img src="../d.png"> s = sqrt((x<strong>2) @ '
                                             '(scale</strong>2)) <p id="x"><strong>Note:</strong> ok')
    assert broken_links(tmp_path) == [("a.html", "c.html"), ("a.html", "sub/b.html#y"),
                                      ("a.html", "#nowhere"), ("sub/b.html", "../d.png")]
    assert [page for page, _ in bold_formulas(tmp_path)] == ["sub/b.html", "sub/b.html"]


def test_every_module_has_a_page_listed_by_its_package(site):
    """pdoc lists only the submodules a package's ``__all__`` names; the template lists all."""
    for module in _modules():
        name = module.__name__
        assert (site / (name.replace(".", "/") + ".html")).is_file(), name
        if "." in name:
            parent, child = name.rsplit(".", 1)
            page = (site / (parent.replace(".", "/") + ".html")).read_text()
            listing = page.split("<h2>Submodules</h2>", 1)[1].split("</ul>", 1)[0]
            assert f'.html">{child}</a>' in listing, name


def test_the_landing_page_says_where_to_start_for_each_reader(site):
    index = (site / "index.html").read_text()
    first = index.split("<h2", 1)[0]
    for start in ('href="tutorial.html"', 'href="notebooks.html"', "<code>fit</code>",
                  "<code>lrtdense bench uci</code>", 'href="SPEC.html"',
                  "<code>lrtdense reference verify RESULTS_DIR</code>"):
        assert start in first, start
    api = (site / "lrtdense.html").read_text()
    assert "Where to start" in api and "lrtdense reference verify RESULTS_DIR" in api


# -------------------------------------------------------------------------- docstrings
def _modules():
    """lrtdense's modules, as the API reference documents them (docs/build_docs.py)."""
    spec = importlib.util.spec_from_file_location("build_docs", os.path.join(DOCS, "build_docs.py"))
    build_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_docs)
    return [importlib.import_module(name) for name in build_docs.api_modules()]


def _inherited_doc(cls, name):
    for klass in cls.__mro__:
        member = vars(klass).get(name)
        if member is not None:
            member = getattr(member, "__func__", member)
            doc = getattr(member, "fget", member).__doc__ if isinstance(member, property) \
                else getattr(member, "__doc__", None)
            if doc and doc.strip():
                return doc
    return None


def _public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__
                 and (inspect.isfunction(v) or inspect.isclass(v))]
    for name in names:
        value = getattr(module, name)
        if inspect.ismodule(value) or not callable(value):
            continue
        yield name, value


def test_every_public_function_class_and_method_has_a_docstring():
    """Public: a module's ``__all__`` (or, without one, the functions and classes it defines);
    for a class, every method and property not starting with "_" (a docstring inherited from a
    base counts). Kernels (autograd primitives) carry their docstring on the object."""
    missing, seen = [], set()
    for module in _modules():
        if not (module.__doc__ or "").strip():
            missing.append(module.__name__)
        for name, value in _public(module):
            if id(value) in seen:
                continue
            seen.add(id(value))
            where = f"{module.__name__}.{name}"
            if not (getattr(value, "__doc__", None) or "").strip():
                missing.append(where)
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    member = getattr(member, "__func__", member)
                    if attr.startswith("_") or not (inspect.isfunction(member)
                                                    or isinstance(member, property)):
                        continue
                    if not _inherited_doc(value, attr):
                        missing.append(f"{where}.{attr}")
    assert len(seen) > 100, "the walk found too few public objects"
    assert missing == []


def test_the_check_finds_a_missing_docstring():
    class Undocumented:
        def method(self):
            pass
    assert _inherited_doc(Undocumented, "method") is None
    assert _inherited_doc(lrtdense.Model, "init")


# ------------------------------------------------------------------ exports and license
def test_the_training_api_is_importable_from_lrtdense():
    import numpy as np
    from lrtdense import (Model, Sequential, fit, adam, predict, predict_mean,
                          DenseLocalReparameterization, GaussianLikelihood)
    from lrtdense.metrics import rmse
    import lrtdense.predictive as P
    import lrtdense.metrics as M
    assert P.predict is predict and rmse is M.rmse and lrtdense.metrics is M
    assert predict_mean is P.predict_mean and lrtdense.predict is predict
    rng = np.random.default_rng(0)
    model = Model(Sequential([DenseLocalReparameterization(2, dtype="float64")]),
                  GaussianLikelihood(0.5))
    params = model.init(rng, 3)
    x = rng.standard_normal((4, 3))
    called = predict(model, params, x, rng=np.random.default_rng(1), num_samples=3)
    direct = P.predict(model, params, x, rng=np.random.default_rng(1), num_samples=3)
    assert called.keys() == direct.keys()
    np.testing.assert_array_equal(called["samples"], direct["samples"])
    params, _ = fit(model, params, x, rng.standard_normal((4, 2)), rng=rng, epochs=1,
                    optimizer=adam(1e-2), verbose=False)
    assert {"Model", "Sequential", "fit", "adam", "predict", "predict_mean"} <= set(lrtdense.__all__)
    assert lrtdense.studies.gradient_variance and lrtdense.io.save


def test_license_is_apache_2():
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "license = Apache-2.0" in open(os.path.join(ROOT, "setup.cfg")).read()
