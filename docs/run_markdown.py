"""Runs the python blocks of a Markdown file, in order, in one fresh namespace, as a reader would.

    python docs/run_markdown.py FILE.md [--cwd DIR] [--dump values.json]

Every fenced block opened by a line ```python (indented or not) is run; other blocks (```bash,
plain ```) are not. The blocks share one namespace, like cells of a notebook or lines typed into
one interpreter. ``--cwd`` runs them from DIR (files they write land there): the tutorial's
figures are regenerated in docs/ by

    python docs/run_markdown.py docs/tutorial.md --cwd docs

``--dump`` writes the namespace's plain values (numbers, strings, small NumPy arrays as lists, and
lists and dicts of them) as JSON after the last block, for tests that check the numbers a document quotes. On an
error the exit code is 1 and the message names the block and its first line in FILE.
"""
import argparse
import json
import os
import re
import sys
import textwrap
import time
import traceback

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


def python_blocks(text):
    """[(line number of the block's first code line, code)] for every ```python block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        info = match["info"].strip().split()
        start, body = i + 1, []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"].strip():
                break
            body.append(lines[i])
            i += 1
        i += 1
        if info and info[0] in ("python", "py", "python3"):
            code = textwrap.dedent("\n".join(line[len(indent):] if line.startswith(indent)
                                             else line for line in body))
            blocks.append((start + 1, code))
    return blocks


def plain_values(namespace):
    """The JSON-able public values of a namespace: numbers, strings, booleans, NumPy scalars and
    arrays of at most 10000 entries (as lists), and lists, tuples and dicts of those."""
    skip = object()

    def plain(value, depth=0):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if hasattr(value, "dtype") and hasattr(value, "tolist"):
            size, kind = getattr(value, "size", 1), getattr(value.dtype, "kind", None)
            if not isinstance(size, int) or kind is None:    # not NumPy's (a torch tensor)
                return skip
            return value.tolist() if size <= 10000 and kind in "biuf" else skip
        if depth < 4 and isinstance(value, (list, tuple)):
            items = [plain(v, depth + 1) for v in value]
            return skip if any(v is skip for v in items) else items
        if depth < 4 and isinstance(value, dict):
            items = {k: plain(v, depth + 1) for k, v in value.items() if isinstance(k, str)}
            items = {k: v for k, v in items.items() if v is not skip}
            return items
        return skip

    out = {}
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        value = plain(value)
        if value is not skip:
            out[name] = value
    return out


def run(path, cwd=None, dump=None, stream=sys.stdout):
    """Runs the blocks of ``path``; returns the namespace. Raises RuntimeError naming the block
    that failed (its traceback is printed first)."""
    path = os.path.abspath(path)
    with open(path, encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    namespace = {"__name__": "__main__"}
    here = os.getcwd()
    if cwd:
        os.chdir(cwd)
    start = time.perf_counter()
    try:
        for number, (line, code) in enumerate(blocks, 1):
            try:
                exec(compile(code, f"{os.path.basename(path)}:block {number} (line {line})",
                             "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                raise RuntimeError(f"{path}: python block {number} of {len(blocks)}, starting "
                                   f"at line {line}, failed") from None
    finally:
        os.chdir(here)
    print(f"{os.path.basename(path)}: {len(blocks)} python blocks ran in "
          f"{time.perf_counter() - start:.1f}s", file=stream)
    if dump:
        with open(dump, "w") as f:
            json.dump(plain_values(namespace), f)
    return namespace


def main(argv=None):
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a Markdown file")
    parser.add_argument("--cwd", help="folder to run the blocks from (default: the current one)")
    parser.add_argument("--dump", help="write the namespace's plain values to this JSON file")
    args = parser.parse_args(argv)
    dump = os.path.abspath(args.dump) if args.dump else None
    try:
        run(args.file, args.cwd, dump)
    except RuntimeError as err:
        print(f"run_markdown: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
