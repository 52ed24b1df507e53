"""The README: its python blocks run as written, in order, in a fresh interpreter from a temporary
folder, and the numbers its prose quotes about them hold; its set-up commands and the sections a
newcomer needs; it speaks to users, not to the project's tracker."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RUNNER = os.path.join(ROOT, "docs", "run_markdown.py")
NEEDS_SKLEARN = "the README's classifier trains on scikit-learn's bundled digits: " \
                "pip install 'lrtdense[examples]'"


def _text():
    return open(README, encoding="utf-8").read()


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    """The README's blocks run once (about 10 s), in a fresh interpreter from an empty folder;
    their final values."""
    pytest.importorskip("sklearn", reason=NEEDS_SKLEARN)
    folder = tmp_path_factory.mktemp("readme")
    dump = folder / "values.json"
    proc = subprocess.run([sys.executable, RUNNER, README, "--dump", str(dump)], cwd=folder,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert sorted(os.listdir(folder)) == ["values.json"]          # the blocks write no file
    return json.loads(dump.read_text())


def test_the_regression_and_its_uncertainty_as_the_text_says(values):
    """"about 95% of held-out targets fall in the 95% interval"; "at x = 4 ... the epistemic
    standard deviation is more than five times larger than inside, and yet the mean is far from
    the truth"; the RMSE near the noise, 0.1."""
    assert 0.92 <= values["coverage"] <= 0.98
    assert values["rmse"] < 0.13
    assert values["outside_epistemic"] > 5 * values["inside_epistemic"]
    mean, std = np.array(values["pred"]["mean"])[:, 0], np.array(values["pred"]["std"])[:, 0]
    truth = np.sin(2 * np.array([0.0, 1.0, 4.0]))
    assert np.all(np.abs(mean[:2] - truth[:2]) < 2 * std[:2])      # inside: within the band
    assert abs(mean[2] - truth[2]) > 2 * std[2]                    # outside: far off
    assert list(values["params"]["network"]["layer_0"]) == [
        "kernel_posterior_loc", "kernel_posterior_untransformed_scale", "bias_posterior_loc"]


def test_the_recipe_as_the_text_says(values):
    """The learned-noise block: "the KL weight warmed up linearly from 1/80 to 1 over the first
    20% of the epochs" (`noisy_history["kl_weight"]` starts 0.0125, 0.025); "a noise scale of
    0.127"; "the best validation reading comes late, at epoch 400"; the stopping rule (three
    readings without a new best) held wherever fit stopped."""
    history, best = values["noisy_history"], values["best"]
    weights = np.array(history["kl_weight"])
    np.testing.assert_allclose(weights[:80], np.arange(1, 81) / 80, rtol=1e-12)
    assert np.all(weights[80:] == 1.0)
    n = len(values["x_fit"])
    np.testing.assert_allclose(history["loss"], np.array(history["nll"])
                               + weights * np.array(history["kl"]) / n, rtol=1e-6)
    trained = len(history["loss"])
    assert best["epochs"] % 40 == 0 and best["epochs"] <= trained <= 400
    assert trained == 400 or trained - best["epochs"] >= 120
    # "late, at epoch 400": a validation-picked epoch of a float32 training, which another
    # BLAS can move to a neighbouring reading; late in the training wherever it runs
    assert 240 <= best["epochs"] <= 400
    assert abs(values["learned"] - 0.127) < 0.0015, values["learned"]
    assert np.isfinite(best["ll"]) and best["ll"] > 0


def test_the_classifier_as_the_text_says(values):
    """"both reach 96 to 97% test accuracy"; "mean confidence near 0.5 when wrong, above 0.8 when
    right"; the Monte Carlo predictive's calibration error "several times the mean network's"."""
    (mc_acc, mc_ece), (mean_acc, mean_ece) = (values["scores"]["Monte Carlo predictive"],
                                              values["scores"]["mean network"])
    assert 0.955 <= mc_acc <= 0.975 and 0.955 <= mean_acc <= 0.975
    assert mc_ece > 3 * mean_ece
    conf, right = np.array(values["confidence"]), np.array(values["right"])
    assert conf[right].mean() > 0.8 and 0.4 < conf[~right].mean() < 0.6


def test_the_layer_replays_its_noise(values):
    assert values["first"] == values["replayed"]
    assert np.array(values["outputs"]).shape == (5, 3)


def test_the_setup_is_two_commands_with_the_virtualenv_and_the_python_version():
    text = _text()
    setup = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    bash = re.findall(r"```bash\n(.*?)```", setup, re.S)
    assert len(bash) == 1
    commands = [line.split("#")[0].strip() for line in bash[0].splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e")
    assert "Python 3.10 or newer" in setup
    cfg = open(os.path.join(ROOT, "setup.cfg")).read()
    assert "python_requires = >=3.10" in cfg
    for extra in re.findall(r'"\.\[([\w,]+)\]"', commands[0])[0].split(","):
        assert re.search(rf"^{extra} =$", cfg, re.M), extra


def test_the_first_screen_says_what_it_is_and_for_whom():
    first = "\n".join(_text().splitlines()[:25])
    assert "local reparameterization trick" in first
    for reader in ("learning or teaching", "training small Bayesian networks", "porting"):
        assert reader in first


def test_every_extra_is_explained():
    cfg = open(os.path.join(ROOT, "setup.cfg")).read()
    section = cfg.split("[options.extras_require]", 1)[1].split("\n[", 1)[0]
    extras = re.findall(r"^(\w+) =$", section, re.M)
    assert {"test", "examples", "docs", "notebooks", "ports", "all"} <= set(extras)
    table = _text().split("## What the extras are for", 1)[1].split("\n## ", 1)[0]
    for extra in extras:
        assert f"| `{extra}` |" in table, extra
    def requirements(extra):
        return set(re.search(rf"^{extra} =\n((?:[ \t]+\S.*\n?)+)", section, re.M).group(1).split())

    every = requirements("all")
    for extra in ("test", "examples", "docs", "notebooks", "ports"):
        assert requirements(extra) <= every, extra
    assert "mpmath>=1.2" in every and "mpmath>=1.2" in requirements("test")


def test_the_sections_a_newcomer_needs_link_to_their_docs():
    text = _text()
    for heading, link in (("## Learn the trick", "docs/tutorial.md"),
                          ("## The gradient-variance study", "docs/variance_study.md"),
                          ("## Conformance with TensorFlow Probability", "docs/tfp_semantics.md"),
                          ("## Golden values for ports", "reference_data/SPEC.md"),
                          ("## Speed", "benchmarks/RESULTS.md")):
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert link in section, heading
        assert len(section.split()) < 220, f"{heading}: keep it short, link to the details"


def test_the_links_of_the_readme_point_to_files():
    for target in re.findall(r"\]\(([^)#]+)\)", _text()):
        if not target.startswith("http"):
            assert os.path.exists(os.path.join(ROOT, target)), target


def test_the_readme_speaks_to_users_not_to_the_tracker():
    assert not re.search(r"\bissues?\b", _text(), re.I)


def test_the_variance_table_is_the_one_the_study_documents():
    readme = _text()
    study = open(os.path.join(ROOT, "docs", "variance_study.md"), encoding="utf-8").read()
    rows = re.findall(r"^\| (?:Local|Separate|Single|Flipout|No noise).*\|$", readme, re.M)
    assert len(rows) == 5
    for row in rows:
        assert row in study, row


def _inline_calls():
    """The calls the README's prose shows in code spans (outside its code blocks)."""
    import ast
    prose = re.sub(r"```.*?```", "", _text(), flags=re.S)
    spans = [s for s in re.findall(r"`([^`\n]+)`", prose) if "(" in s]
    return [(span, ast.parse(span.replace("(...", "(__rest__"), mode="eval").body)
            for span in spans]


def _callee(node):
    """The public function or class a call names (``L.x.y``, ``lrtdense.x.y``, a bare name
    of the package, ``layer.method``), or None for a call on a placeholder object."""
    import ast
    import inspect
    import lrtdense
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    if node.id in ("L", "lrtdense"):
        obj = lrtdense
    elif node.id == "layer":
        obj = lrtdense.DenseLocalReparameterization
    elif hasattr(lrtdense, node.id) and node.id in lrtdense.__all__:
        obj = getattr(lrtdense, node.id)
    else:
        return None
    for part in parts:
        obj = getattr(obj, part)          # an AttributeError: the README names no such thing
    return obj if callable(obj) and not inspect.ismodule(obj) else None


def test_every_call_in_the_prose_names_the_public_api_with_arguments_it_accepts():
    """An inline call like `L.studies.gradient_variance(model, params, x, y, rng=rng)` binds to
    the signature of what it names: no missing required argument, no unknown keyword."""
    import ast
    import inspect
    checked = []
    for span, tree in _inline_calls():
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            func = _callee(call.func)
            if func is None:
                continue
            sig = inspect.signature(func)
            if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) \
                    and call.func.value.id == "layer":
                sig = sig.replace(parameters=list(sig.parameters.values())[1:])   # self
            rest = any(isinstance(a, ast.Name) and a.id == "__rest__" for a in call.args)
            args = [None] * len(call.args)
            kwargs = {k.arg: None for k in call.keywords}
            try:
                (sig.bind_partial if rest else sig.bind)(*([] if rest else args), **kwargs)
            except TypeError as err:
                raise AssertionError(f"README's `{span}` does not fit {func.__qualname__}"
                                     f"{sig}: {err}") from None
            checked.append(span)
    assert "L.studies.gradient_variance(model, params, x, y, rng=rng)" in checked
    assert len(set(checked)) >= 8, checked
