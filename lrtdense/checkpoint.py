"""Checkpoints of a ``fit``: one training's resumable state in one model folder.

A checkpoint is a model folder (``lrtdense.io.save``: atomic, its files bound together by the
digests in its config) holding the params, Adam's moments as the state, and in ``meta["fit"]``:

* ``fingerprint``: what the training is (model config, data checksums, batch size,
  num_examples, num_samples, Adam's settings); a checkpoint of another training is refused;
* ``run``: a random id of the run that wrote it. A training owns its folder: before every write
  it checks that the checkpoint there is its own (or that there is none), so two trainings given
  one folder never overwrite each other's work; a resumed training takes over the id it resumes;
* ``step``: Adam's step count; ``history``: the completed epochs (checkpoints written before
  fit recorded "threads" have none: read back, their epochs' threads are 0, not recorded);
  ``rng``: the generator's state after the last completed step;
* ``position``: ``None`` at the end of an epoch, or, for a checkpoint written when a training was
  stopped in the middle of one (Ctrl-C, SIGTERM), ``{"epoch", "step", "order_rng", "sums"}``: the
  0-based epoch, the steps of it done, the generator's state before the epoch's shuffle (the
  order is drawn again from it) and the running sums of loss, nll and kl.

Everything read back is checked like a config (``load_fit_meta``): types, ranges, and that the
step count is the one the position implies, so a malformed or mixed checkpoint is a ValueError
naming the folder, never a silent wrong resume.
"""
import dataclasses
import math
import secrets
import zlib

import numpy as np

from lrtdense import io as lrtdense_io
from lrtdense import tree

__all__ = ["fingerprint", "Position", "Resumed", "save", "resume", "check_owner", "new_run_id",
           "order"]

_HISTORY_LISTS = ("loss", "nll", "kl", "kl_weight", "time", "threads")


@dataclasses.dataclass(frozen=True)
class Position:
    """Where in an epoch a training stopped: 0-based ``epoch``, ``step`` steps of it done, the
    generator's state before its shuffle (``order_rng``) and the running (loss, nll, kl) sums."""
    epoch: int
    step: int
    order_rng: dict
    sums: tuple


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What ``resume`` hands back to ``fit``."""
    state: object
    history: dict
    position: object          # a Position, or None at an epoch's end
    run: str


def new_run_id():
    """A fresh random id (16 hex digits) for a training that starts without a checkpoint."""
    return secrets.token_hex(8)


def fingerprint(model, x, y, batch_size, num_examples, num_samples, optimizer):
    """What a checkpoint must match to be resumed: the model, the data, the loop's settings."""
    hp = getattr(optimizer, "hyperparams", None) or {}
    if hp.get("name") != "adam":
        raise ValueError("checkpoints support the built-in Adam (lrtdense.optimizers.adam) only")
    return {"model": model.get_config(), "batch_size": int(batch_size),
            "num_examples": int(num_examples), "num_samples": int(num_samples),
            "x": [list(x.shape), str(x.dtype), zlib.crc32(np.ascontiguousarray(x).tobytes())],
            "y": [list(y.shape), str(y.dtype), zlib.crc32(np.ascontiguousarray(y).tobytes())],
            "adam": {k: hp[k] for k in ("b1", "b2", "eps", "form")}}


def save(path, model, state, rng_state, history, fp, run, position=None):
    """Writes the checkpoint (after ``check_owner``); ``rng_state`` is the generator's state
    after the last completed step."""
    check_owner(path, run)
    meta = {"fit": {"fingerprint": fp, "run": run, "step": int(state.step), "history": history,
                    "rng": rng_state, "position": None if position is None else {
                        "epoch": position.epoch, "step": position.step,
                        "order_rng": position.order_rng,
                        "sums": [float(s) for s in position.sums]}}}
    lrtdense_io.save(path, model, state.params, state={"m": state.m, "v": state.v}, meta=meta)


def check_owner(path, run):
    """Raises ValueError unless the folder ``path`` holds no checkpoint or one of run ``run``."""
    meta = lrtdense_io.read_meta(path)
    if meta is None:
        return
    fit_meta = meta.get("fit")
    theirs = fit_meta.get("run") if isinstance(fit_meta, dict) else None
    if theirs != run:
        raise ValueError(f"{path} now holds a checkpoint of another training (run "
                         f"{str(theirs)[:40]}, this is run {run}); refusing to overwrite it: give "
                         f"each training its own checkpoint folder")


def resume(path, model, optimizer, rng, fp, steps_per_epoch):
    """The ``Resumed`` training saved in ``path``, or None if there is no checkpoint there yet;
    ``rng`` is set to the saved state.

    Raises:
      ValueError: a checkpoint of another training, or a malformed or mixed one (naming what).
    """
    if lrtdense_io.read_meta(path) is None:
        return None
    _, params, saved, meta = lrtdense_io.load(path, with_state=True)
    fit_meta = meta.get("fit") if isinstance(meta, dict) else None
    if not isinstance(fit_meta, dict) or fit_meta.get("fingerprint") != fp:
        theirs = fit_meta.get("fingerprint") if isinstance(fit_meta, dict) else None
        theirs = theirs if isinstance(theirs, dict) else {}
        differ = sorted(k for k in fp if theirs.get(k) != fp[k])
        raise ValueError(f"{path} holds a checkpoint of another training (it differs in "
                         f"{differ or 'being no fit checkpoint'}); pass another checkpoint folder "
                         f"(it is not overwritten)")
    try:
        history, position = _checked(fit_meta, rng, steps_per_epoch)
        state = optimizer.init(params)
        _check_moments(saved, params)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: the checkpoint's metadata is malformed: {err}") from None
    rng.bit_generator.state = fit_meta["rng"]
    state = state._replace(step=fit_meta["step"], m=saved["m"], v=saved["v"])
    return Resumed(state, history, position, fit_meta["run"])


def _checked(fit_meta, rng, steps_per_epoch):
    """(history, position) after checking every field of ``meta["fit"]``."""
    want = {"fingerprint", "run", "step", "history", "rng", "position"}
    older = want - {"run", "position"}          # what checkpoints of lrtdense <= 0.1.0 hold
    if set(fit_meta) not in (want, older):
        raise ValueError(f"expected the keys {sorted(want)}, got {_short(sorted(fit_meta))}")
    fit_meta.setdefault("run", new_run_id())
    fit_meta.setdefault("position", None)
    if not isinstance(fit_meta["run"], str) or not 1 <= len(fit_meta["run"]) <= 64:
        raise ValueError(f"run must be an id string, got {_short(fit_meta['run'])}")
    history = fit_meta["history"]
    if isinstance(history, dict) and "threads" not in history and isinstance(
            history.get("loss"), list):              # written before "threads" was recorded
        history = {**history, "threads": [0] * len(history["loss"])}
    if not isinstance(history, dict) or set(history) != {*_HISTORY_LISTS, "interrupted"}:
        raise ValueError(f"history must hold {sorted(_HISTORY_LISTS)} and 'interrupted'")
    epochs = len(history["loss"]) if isinstance(history["loss"], list) else -1
    for key in _HISTORY_LISTS:
        values = history[key]
        if not isinstance(values, list) or len(values) != epochs or not all(
                type(v) in (int, float) for v in values):
            raise ValueError(f"history[{key!r}] must be a list of {max(epochs, 0)} numbers "
                             f"(one per completed epoch)")
    if not isinstance(history["interrupted"], bool):
        raise ValueError("history['interrupted'] must be true or false")
    position = _position(fit_meta["position"], epochs, steps_per_epoch, rng)
    expected_step = epochs * steps_per_epoch + (position.step if position else 0)
    if type(fit_meta["step"]) is not int or fit_meta["step"] != expected_step:
        raise ValueError(f"step is {_short(fit_meta['step'])}; {epochs} completed epochs of "
                         f"{steps_per_epoch} steps{' and ' + str(position.step) + ' more' if position else ''} "
                         f"make {expected_step}")
    _check_rng_state(fit_meta["rng"], rng, "rng")
    return {**history, "interrupted": False}, position


def _position(entry, epochs, steps_per_epoch, rng):
    if entry is None:
        return None
    if not isinstance(entry, dict) or set(entry) != {"epoch", "step", "order_rng", "sums"}:
        raise ValueError("position must be null or hold 'epoch', 'step', 'order_rng', 'sums'")
    if type(entry["epoch"]) is not int or entry["epoch"] != epochs:
        raise ValueError(f"position's epoch is {_short(entry['epoch'])}; after {epochs} completed "
                         f"epochs it must be {epochs}")
    if type(entry["step"]) is not int or not 1 <= entry["step"] < steps_per_epoch:
        raise ValueError(f"position's step is {_short(entry['step'])}; expected 1 to "
                         f"{steps_per_epoch - 1}")
    sums = entry["sums"]
    if not isinstance(sums, list) or len(sums) != 3 or not all(
            type(s) in (int, float) and math.isfinite(s) for s in sums):
        raise ValueError("position's sums must be 3 finite numbers")
    _check_rng_state(entry["order_rng"], rng, "position's order_rng")
    return Position(entry["epoch"], entry["step"], entry["order_rng"], tuple(sums))


def _check_rng_state(value, rng, what):
    kind = type(rng.bit_generator)
    if not isinstance(value, dict) or value.get("bit_generator") != kind.__name__:
        got = value.get("bit_generator") if isinstance(value, dict) else value
        raise ValueError(f"{what} is the state of a {_short(got)} generator; rng is a "
                         f"{kind.__name__}")
    try:
        kind().state = value
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as err:
        raise ValueError(f"{what} is not a valid {kind.__name__} state ({_short(err)})") from None


def _check_moments(saved, params):
    if not isinstance(saved, dict) or set(saved) != {"m", "v"}:
        raise ValueError("the state must hold Adam's moments 'm' and 'v'")
    for name in ("m", "v"):
        if tree.structure(saved[name]) != tree.structure(params):
            raise ValueError(f"Adam's {name} has another structure than the params")
        moments = tree.flatten(saved[name])
        for key, p in tree.flatten(params).items():
            moment = moments[key]
            if moment.shape != p.shape or moment.dtype != p.dtype:
                raise ValueError(f"Adam's {name}[{key!r}] has shape {moment.shape} and dtype "
                                 f"{moment.dtype}; the param has {p.shape} {p.dtype}")


def order(order_rng, rng, n):
    """The shuffle ``rng.permutation(n)`` of an epoch a checkpoint stopped in, drawn again from
    the generator state ``order_rng`` saved before it (``rng`` itself is not touched)."""
    g = np.random.Generator(type(rng.bit_generator)())
    g.bit_generator.state = order_rng
    return g.permutation(n)


def _short(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

