"""Builds lrtdense's documentation, offline: the API reference generated from the docstrings by
pdoc, and the Markdown pages (README, the tutorial, the studies) rendered beside it.

    python docs/build_docs.py [OUTPUT_DIR]      (default build/docs; `bash .ci/docs` runs this)

Needs ``pip install -e ".[docs]"`` (pdoc). Nothing is fetched: pdoc's pages carry their own CSS
and search index, the Markdown pages reuse pdoc's CSS, and the figures are copied from docs/.
Output: index.html (the README), tutorial.html and the other docs/*.md pages, the Markdown pages
outside docs/ that they link to (``OTHER_PAGES``: SPEC.html, notebooks.html, ...), lrtdense.html
and lrtdense/**.html (the API), the PNGs and the LICENSE. Every relative link of a built page
points to a built file (tests/test_docs.py crawls them).
"""
import html
import os
import pathlib
import pkgutil
import re
import shutil
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<style>
main.page {{ max-width: 56rem; margin: 0 auto; padding: 1rem 2rem 4rem; }}
main.page img {{ max-width: 100%; }}
main.page pre {{ overflow-x: auto; }}
nav.top {{ max-width: 56rem; margin: 0 auto; padding: 1rem 2rem 0; font-size: 0.95rem; }}
nav.top a {{ margin-right: 1.2rem; }}
</style>
</head>
<body>
<nav class="top">{nav}</nav>
<main class="page pdoc">
{body}
</main>
</body>
</html>
"""

NAV = [("index.html", "README"), ("tutorial.html", "Tutorial"), ("notebooks.html", "Notebooks"),
       ("lrtdense.html", "API reference"), ("SPEC.html", "Reference set (ports)"),
       ("variance_study.html", "Variance study"), ("tfp_semantics.html", "TFP semantics"),
       ("torch.html", "PyTorch"), ("keras.html", "Keras 3")]

# Markdown files outside docs/ that the README and the docs link to: {page stem: path from the
# checkout's root}. Links to any other file of the checkout become its path in plain text.
OTHER_PAGES = {"SPEC": "reference_data/SPEC.md", "notebooks": "notebooks/README.md",
               "ports": "examples/ports/README.md",
               "peers_deviations": "examples/peers/DEVIATIONS.md",
               "benchmarks_results": "benchmarks/RESULTS.md"}
COPIED = ["LICENSE"]          # linked from the README, copied as they are

# subpackages that need an optional framework: documented when it is installed (Keras on the
# JAX backend unless KERAS_BACKEND says otherwise: Keras' own default, TensorFlow, may be absent)
OPTIONAL_FRAMEWORKS = {"lrtdense.keras": "keras", "lrtdense.torch": "torch"}


def api_modules():
    """lrtdense and every submodule (but ``__main__``, and a subpackage of
    ``OPTIONAL_FRAMEWORKS`` whose framework is not installed), named explicitly: the package's
    ``__all__`` lists only some submodules, and pdoc would document only those."""
    import importlib.util
    import lrtdense
    os.environ.setdefault("KERAS_BACKEND", "jax")
    missing = [package for package, framework in OPTIONAL_FRAMEWORKS.items()
               if importlib.util.find_spec(framework) is None]
    names = ["lrtdense"] + [m.name for m in pkgutil.walk_packages(lrtdense.__path__, "lrtdense.")
                            if not m.name.endswith("__main__")
                            and not any(m.name == p or m.name.startswith(p + ".")
                                        for p in missing)]
    return names


def pdoc_css():
    """pdoc's own theme, content and syntax-highlighting CSS, for the Markdown pages."""
    import pdoc
    folder = os.path.join(os.path.dirname(pdoc.__file__), "templates")
    parts = []
    for name in ("theme.css", "syntax-highlighting.css", "content.css"):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


def relink(body, source, pages, out_names):
    """Relative links of the page built from ``source``, made to work in the built site: a link
    to a Markdown file that is built points to its HTML page; a link to a file that is copied
    (``out_names``: names in the output folder) is kept; a link to any other file of the checkout
    becomes that file's path from the checkout's root, as code, since the site does not hold it.

    ``pages``: {absolute path of a Markdown source: its HTML file name}.
    """
    def fix(match):
        href, text = match.group(1), match.group(2)
        path, hash_, fragment = href.partition("#")
        if not path or re.match(r"[a-z][a-z0-9+.-]*:", path):
            return match.group(0)                       # a fragment, or an absolute URL
        target = os.path.normpath(os.path.join(os.path.dirname(source), path))
        if target in pages:
            return f'<a href="{pages[target]}{hash_}{fragment}">{text}</a>'
        if os.path.relpath(target, ROOT) in out_names:
            return f'<a href="{os.path.relpath(target, ROOT)}{hash_}{fragment}">{text}</a>'
        where = os.path.relpath(target, ROOT)
        return text if where in text else f"{text} (<code>{html.escape(where)}</code>)"
    return re.sub(r'<a href="([^"]*)">(.*?)</a>', fix, body, flags=re.S)


def render_page(source, title, pages, css, out_names):
    """One Markdown file as an HTML page with the top navigation."""
    from pdoc.render_helpers import to_html
    with open(source, encoding="utf-8") as f:
        text = f.read()
    body = relink(to_html(text), source, pages, out_names)
    nav = "".join(f'<a href="{href}">{html.escape(label)}</a>' for href, label in NAV)
    return PAGE.format(title=html.escape(title), css=css, nav=nav, body=body)


def build(out):
    """Writes the whole site to ``out`` (emptied first). Returns the list of pages written."""
    try:
        import pdoc
        import pdoc.render
    except ImportError:
        sys.exit("build_docs: pdoc is not installed: pip install -e '.[docs]'")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    sys.path.insert(0, ROOT)
    pdoc.render.configure(docformat="google", show_source=True, search=True,
                          template_directory=os.path.join(HERE, "pdoc_templates"),
                          footer_text="lrtdense: a NumPy + autograd reference for Bayesian dense "
                                      "layers trained with the local reparameterization trick")
    with warnings.catch_warnings():        # pdoc also reaches some of them through their package
        warnings.filterwarnings("ignore", message="The module specification")
        pdoc.pdoc(*api_modules(), output_directory=pathlib.Path(out))
    css = pdoc_css()
    sources = {"index": os.path.join(ROOT, "README.md")}
    for name in sorted(os.listdir(HERE)):
        if name.endswith(".md"):
            sources[name[:-3]] = os.path.join(HERE, name)
        elif name.endswith(".png"):
            shutil.copy(os.path.join(HERE, name), os.path.join(out, name))
    for stem, path in OTHER_PAGES.items():
        sources[stem] = os.path.join(ROOT, path)
    for name in COPIED:
        shutil.copy(os.path.join(ROOT, name), os.path.join(out, name))
    out_names = set(COPIED) | {n for n in os.listdir(out) if n.endswith(".png")}
    pages = {os.path.normpath(path): f"{stem}.html" for stem, path in sources.items()}
    written = []
    for stem, source in sources.items():
        title = "lrtdense" if stem == "index" else f"lrtdense: {stem.replace('_', ' ')}"
        path = os.path.join(out, f"{stem}.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(render_page(source, title, pages, css, out_names))
        written.append(path)
    return written


def main(argv=None):
    """The command line: ``build_docs.py [OUTPUT_DIR]``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    out = os.path.abspath(argv[0] if argv else os.path.join(ROOT, "build", "docs"))
    pages = build(out)
    print(f"wrote the API reference and {len(pages)} pages to {out} (open {out}/index.html)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
