"""``lrtdense.bench.uci``: the UCI regression benchmark run over data sets and splits, resumable,
on a pool of worker processes.

Each split's generator is seeded by (seed, crc32 of the data set's name, K) alone, so a split's
numbers do not depend on the order the splits run in nor on how many workers run them. Each
finished split is written to OUT/<data set>/split_K.json (by an atomic rename) and kept when the
command runs again with the same settings, so a killed run continues where it stopped (the
worker processes end with the command, on SIGTERM and Ctrl-C too); OUT/results.json,
OUT/results.md and OUT/results.png hold the table and the figure.
"""
import json
import math
import multiprocessing
import os
import sys
import tempfile
import zlib

import numpy as np

from lrtdense import interrupts
from lrtdense.argtypes import check_output_folder
from lrtdense.bench import data as data_lib
from lrtdense.bench.recipe import GRID, RECIPE, check_recipe, grid_points, run_split_tuned
from lrtdense.bench.report import figure, markdown
from lrtdense.checks import check_int
from lrtdense.training import Terminated

__all__ = ["uci", "check_settings", "RESULT_FILES"]

RESULT_FILES = ("results.json", "results.md", "results.png")
METRICS = ("rmse", "test_ll", "test_ll_gaussian")


def check_settings(recipe, grid, seed):
    """The settings written into every split file: {"recipe", "grid", "seed"}, as JSON values.

    Raises:
      ValueError / TypeError: a bad recipe setting, or a grid that is not {known setting:
        non-empty list} or offers a bad value.
    """
    recipe = check_recipe(recipe)
    if not isinstance(grid, dict) or any(k not in RECIPE or not isinstance(v, (list, tuple))
                                         or not v for k, v in grid.items()):
        raise ValueError(f"the grid must map recipe settings to non-empty lists of values, "
                         f"got {grid!r}")
    for point in grid_points(grid):
        check_recipe(dict(recipe, **point))
    settings = {"recipe": recipe,
                "grid": {k: list(v) for k, v in sorted(grid.items())},
                "seed": check_int(seed, "seed", 0)}
    return json.loads(json.dumps(settings))


def uci(data, datasets=None, splits=None, out=None, *, recipe=None, grid=None, seed=0,
        workers=1, verbose=True, file=None):
    """Runs the benchmark; returns {data set: {"splits": [per-split dicts], "summary": {metric:
    {"mean", "se"}}, "settings": {...}}}.

    Args:
      data: the folder holding one sub-folder per data set (``lrtdense.bench.data``).
      datasets: names of sub-folders (default: every sub-folder with a data.txt, sorted).
      splits: how many splits, the first ones (default: all that a data set has).
      out: the results folder (None: nothing written, nothing resumed).
      recipe: settings of ``lrtdense.bench.recipe.RECIPE`` to change.
      grid: {setting: [values]} chosen per split on validation (default ``recipe.GRID``; {}:
        no selection, the recipe as it is).
      seed: the base seed of every split's generator.
      workers: processes training splits at once (1: in this process).
      verbose: print one line per split (to ``file``, default stdout).
    Raises:
      ValueError: a bad setting, a data set that is not there, or an ``out`` that cannot be
        written (all checked before any training).
      Terminated: SIGTERM arrived while ``workers`` > 1 processes trained (a SystemExit, status
        143); the workers are ended with the run, the splits finished so far stay in ``out``.
    """
    settings = check_settings(recipe or {}, GRID if grid is None else grid, seed)
    workers = check_int(workers, "workers", 1)
    datasets, counts = data_lib.split_counts(data, datasets, splits)
    kept = {}
    if out is not None:
        check_output_folder(out, RESULT_FILES)
        kept = _finished_splits(out, counts, settings)
    stream = (file or sys.stdout) if verbose else None
    jobs = [(data, out, name, k, settings) for name in datasets for k in range(counts[name])
            if (name, k) not in kept]
    for (name, k), row in kept.items():
        _report(stream, name, k, counts[name], row, "kept")
    rows = dict(kept)
    for (name, k), row in _run(jobs, workers):
        rows[name, k] = row
        _report(stream, name, k, counts[name], row, f"{row['train_seconds']:.1f}s")
    results = {}
    for name in datasets:
        split_rows = [rows[name, k] for k in range(counts[name])]
        results[name] = {"splits": split_rows, "settings": settings,
                         "summary": {m: _mean_se([r[m] for r in split_rows]) for m in METRICS}}
    if out is not None:
        _write_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=1))
        _write_atomic(os.path.join(out, "results.md"), markdown(results))
        _figure_atomic(results, os.path.join(out, "results.png"))
    return results


def _run(jobs, workers):
    """Yields ((name, k), row) for each job, as they finish. Several workers are processes of a
    pool that ends with the run, whichever way it ends (an error, Ctrl-C, SIGTERM raised as
    ``Terminated``): none is left training, orphaned, after the command has stopped."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_split_job, jobs)
        return
    with multiprocessing.Pool(min(workers, len(jobs))) as pool, \
            interrupts.sigterm_raises(_terminated):
        yield from pool.imap_unordered(_split_job, jobs)


def _terminated():
    return Terminated("stopped on SIGTERM; the worker processes were ended, and the splits "
                      "finished so far are kept in their files")


def _split_job(job):
    return job[2:4], _split(*job)


def _split(data, out, name, k, settings):
    """Split ``k`` of ``name`` trained, scored, and written (atomically) to its file."""
    rng = np.random.default_rng([settings["seed"], zlib.crc32(name.encode()), k])
    row = run_split_tuned(*data_lib.load_split(os.path.join(data, name), k), rng=rng,
                          grid=settings["grid"], **settings["recipe"])
    row["settings"] = settings
    if out is not None:
        _write_atomic(os.path.join(out, name, f"split_{k}.json"), json.dumps(row, indent=1))
    return row


def _report(stream, name, k, count, row, state):
    if stream is None:
        return
    chosen = row.get("chosen")
    picked = "" if not chosen else "  chose " + ", ".join(f"{a}={b}" for a, b in chosen.items())
    print(f"{name} split {k + 1}/{count}: rmse {row['rmse']:.3f}  test ll {row['test_ll']:.3f}"
          f"{picked}  ({state})", file=stream, flush=True)


def _finished_splits(out, counts, settings):
    """{(data set, K): result} of the split files already in ``out``; ValueError if one was made
    with other settings (its numbers would be mixed into the table)."""
    kept = {}
    for name, count in counts.items():
        for k in range(count):
            path = os.path.join(out, name, f"split_{k}.json")
            if os.path.isfile(path):
                with open(path) as f:
                    row = json.load(f)
                if row.get("settings") != settings:
                    raise ValueError(f"{path!r} was made with the settings {row.get('settings')}, "
                                     f"not {settings}; name another output folder or remove it")
                kept[name, k] = row
    return kept


def _mean_se(values):
    values = np.asarray(values, dtype=float)
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "se": se}


def _write_atomic(path, text):
    """Writes ``text`` to a temporary file beside ``path``, then renames it onto ``path``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _figure_atomic(results, path):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp.png")
    os.close(fd)
    try:
        if figure(results, tmp):
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
