"""The training loop: shuffled minibatches, autograd gradients, Adam, honest bookkeeping.

``fit(model, params, x, y, rng=..., epochs=..., batch_size=...)`` minimises the minibatch negative
ELBO of ``lrtdense.losses`` (the KL divided by ``num_examples`` once per minibatch) and returns
``(params, history)``. All randomness (shuffling and the layers' noise) comes from ``rng``.

There is one training step, ``make_step``: the model's own ``loss`` (its checks included, on
every call) differentiated by autograd through the kernels of ``lrtdense.kernels``
(``lrtdense.autodiff.value_and_grad``), then Adam in place. What makes it fast is memory, not a
second statement of the math: every array of a step lives in a ``Workspace`` kept from one step
to the next, so that after the first step a step allocates nothing.
"""
import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
import zlib

import numpy as np

from lrtdense import io as lrtdense_io
from lrtdense import tree
from lrtdense.autodiff import value_and_grad
from lrtdense.losses import check_num_examples
from lrtdense.model import check_num_samples
from lrtdense.optimizers import adam
from lrtdense.workspace import Workspace

__all__ = ["fit", "make_step", "FitState"]


def make_step(model, optimizer, num_examples, num_samples=1):
    """The training step ``step(state, xb, yb, rng, kl_weight=1.0) -> (state, loss, nll, kl)``.

    Computes the minibatch negative ELBO ``model.loss(params, xb, yb, rng, num_examples=...,
    kl_weight=...)`` and its gradients, refuses non-finite values (``FloatingPointError``, state
    untouched), then applies the optimizer update in place (fit owns the state) with Ctrl-C
    deferred until the update is complete, so an interrupt never leaves a half-applied step.
    This is the step ``fit`` runs and the one the benchmarks time; ``step.workspace`` is the
    Workspace its arrays live in.

    ``num_samples``: the loss averaged over that many draws of the noise (``Model.loss``).

    Raises:
      ValueError: num_examples or num_samples is not an integer >= 1.
    """
    num_examples = check_num_examples(num_examples)
    num_samples = check_num_samples(num_samples)
    workspace = Workspace()

    def objective(params, xb, yb, rng, kl_weight):
        loss, nll, kl = model.loss(params, xb, yb, rng, num_examples=num_examples,
                                   kl_weight=kl_weight, num_samples=num_samples,
                                   workspace=workspace)
        return loss, (nll, kl)

    def step(state, xb, yb, rng, kl_weight=1.0):
        loss, (nll, kl), grads = value_and_grad(objective, optimizer.get_params(state), xb, yb,
                                                rng, kl_weight, workspace=workspace)
        _check_finite(loss, nll, kl, grads)
        with _deferred_interrupt():
            state = optimizer.update(state, grads, inplace=True)
        return state, loss, nll, kl

    step.workspace = workspace
    return step


@dataclasses.dataclass
class FitState:
    """Where a ``fit`` stood after its last completed step.

    Attributes:
      params: the params after that step.
      optimizer_state: the optimizer's state after it (Adam: step count and moments).
      history: the history so far (completed epochs only).
      epoch, step: the 1-based epoch and step within it of the last completed step (0, 0 if none).
    """
    params: dict
    optimizer_state: object
    history: dict
    epoch: int
    step: int


def fit(model, params, x, y, *, rng, epochs, batch_size=32, optimizer=None, num_examples=None,
        kl_weight=1.0, num_samples=1, verbose=True, callback=None, file=None, checkpoint=None,
        checkpoint_every=1):
    """Trains ``model`` from ``params``.

    Args:
      model: a ``lrtdense.model.Model``.
      params: initial params (not modified; arrays of any memory order).
      x: (N, ..., in) real floating inputs; y: (N, ...) targets of the model's likelihood
        (integer labels (N, ...) for a categorical likelihood, real numbers of the outputs'
        shape for a Gaussian one).
      rng: numpy.random.Generator for shuffling and noise.
      epochs: number of passes over the data.
      batch_size: minibatch size (the last minibatch of an epoch may be smaller).
      optimizer: an (init, update, get_params) triple; default ``adam(1e-3)``.
      num_examples: N in KL / N (an integer >= 1); defaults to len(x).
      kl_weight: a number >= 0, or a function epoch -> number (KL warm-up).
      num_samples: draws of the noise per step, the loss their average (default 1).
      verbose: print one progress line per epoch.
      callback: called as callback(epoch, params, history) after each epoch; return True to stop.
      file: where progress goes (default sys.stdout).
      checkpoint: a folder (Adam only): every ``checkpoint_every`` epochs and at the end, the
        model, params, Adam's moments and step, the generator's state and the history are saved
        there atomically (``lrtdense.io.save``: a failed save leaves the previous one). If the
        folder already holds a checkpoint of this training (the same model, data, batch size,
        num_examples and num_samples), fit resumes from it: ``params`` is then ignored, ``rng``
        set to the saved state, and the run ends with the same bits as one never interrupted.
        A checkpoint of anything else is refused, not overwritten.
      checkpoint_every: epochs between checkpoints (an integer >= 1).
    Returns:
      (params, history): history has lists "loss", "nll", "kl", "kl_weight", "time" (seconds,
      cumulative) per epoch, and "interrupted" (True if stopped by KeyboardInterrupt; the params
      are then those of the last completed step).
    Raises:
      TypeError / ValueError: bad data or settings, before any training (the same checks as the
        model's loss).
      FloatingPointError: a non-finite loss or gradient, naming the epoch, step and term.
      Any exception of a step or callback propagates with ``err.fit_state``, a ``FitState``
      holding the params, optimizer state and history of the last completed step: no completed
      work is lost.
      ValueError: a checkpoint folder that holds another training's checkpoint.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise ValueError("x is empty")
    n = len(x)
    num_examples = n if num_examples is None else num_examples
    model.check_data(x, y, num_examples)
    model.check_params(params, x.shape[-1])
    x = np.ascontiguousarray(x, dtype=model.dtype)
    optimizer = optimizer or adam(1e-3)
    out = file or sys.stdout
    step = make_step(model, optimizer, num_examples, num_samples)
    state = optimizer.init(tree.map(lambda a: np.asarray(a, order="C"), params))
    history = {"loss": [], "nll": [], "kl": [], "kl_weight": [], "time": [], "interrupted": False}
    first = 0
    if checkpoint is not None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) \
                or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        fingerprint = _fingerprint(model, x, y, batch_size, num_examples, num_samples, optimizer)
        resumed = _resume(checkpoint, model, optimizer, rng, fingerprint)
        if resumed is not None:
            state, history = resumed
            first = len(history["loss"])
            if verbose:
                print(f"resuming from {checkpoint} after {first} epochs", file=out, flush=True)
    start = time.perf_counter() - (history["time"][-1] if history["time"] else 0.0)
    steps_per_epoch = math.ceil(n / batch_size)
    done = (first, 0)
    try:
        for epoch in range(first, epochs):
            weight = kl_weight(epoch) if callable(kl_weight) else kl_weight
            order = rng.permutation(n)
            sums = np.zeros(3)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                try:
                    state, loss, nll, kl = step(state, x[idx], y[idx], rng, weight)
                except FloatingPointError as err:
                    raise FloatingPointError(f"at epoch {epoch + 1}, step {i + 1}: {err}") from None
                done = (epoch + 1, i + 1)
                sums += (float(loss), float(nll), float(kl))
            means = sums / steps_per_epoch
            for key, value in zip(("loss", "nll", "kl"), means):
                history[key].append(float(value))
            history["kl_weight"].append(float(weight))
            history["time"].append(time.perf_counter() - start)
            if verbose:
                print(f"epoch {epoch + 1:>4}/{epochs}  loss {means[0]:.4f}  nll {means[1]:.4f}  "
                      f"kl {means[2]:.1f}  ({history['time'][-1]:.1f}s)", file=out, flush=True)
            if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                _save_checkpoint(checkpoint, model, state, rng, history, fingerprint)
            if callback is not None and callback(epoch, optimizer.get_params(state), history):
                break
    except KeyboardInterrupt:
        history["interrupted"] = True
        if verbose:
            print(f"interrupted after {len(history['loss'])} complete epochs of {epochs}: keeping "
                  f"the params of the last completed step", file=out, flush=True)
    except BaseException as err:
        err.fit_state = FitState(optimizer.get_params(state), state, history, *done)
        if hasattr(err, "add_note"):
            err.add_note(f"lrtdense.training.fit: the params, optimizer state and history of the "
                         f"last completed step (epoch {done[0]}, step {done[1]}) are in "
                         f"err.fit_state")
        raise
    return optimizer.get_params(state), history


def _fingerprint(model, x, y, batch_size, num_examples, num_samples, optimizer):
    """What a checkpoint must match to be resumed: the model, the data, the loop's settings."""
    hp = getattr(optimizer, "hyperparams", None) or {}
    if hp.get("name") != "adam":
        raise ValueError("checkpoints support the built-in Adam (lrtdense.optimizers.adam) only")
    return {"model": model.get_config(), "batch_size": int(batch_size),
            "num_examples": int(num_examples), "num_samples": int(num_samples),
            "x": [list(x.shape), str(x.dtype), zlib.crc32(np.ascontiguousarray(x).tobytes())],
            "y": [list(y.shape), str(y.dtype), zlib.crc32(np.ascontiguousarray(y).tobytes())],
            "adam": {k: hp[k] for k in ("b1", "b2", "eps", "form")}}


def _save_checkpoint(path, model, state, rng, history, fingerprint):
    meta = {"fit": {"fingerprint": fingerprint, "step": int(state.step), "history": history,
                    "rng": rng.bit_generator.state}}
    lrtdense_io.save(path, model, state.params, state={"m": state.m, "v": state.v}, meta=meta)


def _resume(path, model, optimizer, rng, fingerprint):
    """(Adam state, history) saved in ``path`` by this training, or None if there is no
    checkpoint there yet. Raises ValueError for another training's checkpoint."""
    if not os.path.exists(os.path.join(path, "config.json")):
        return None
    _, params, saved, meta = lrtdense_io.load(path, with_state=True)
    fit_meta = meta.get("fit") if isinstance(meta, dict) else None
    if not isinstance(fit_meta, dict) or fit_meta.get("fingerprint") != fingerprint:
        theirs = fit_meta.get("fingerprint", {}) if isinstance(fit_meta, dict) else {}
        differ = sorted(k for k in fingerprint if theirs.get(k) != fingerprint[k])
        raise ValueError(f"{path} holds a checkpoint of another training (it differs in "
                         f"{differ or 'being no fit checkpoint'}); pass another checkpoint folder "
                         f"(it is not overwritten)")
    if fit_meta["rng"].get("bit_generator") != type(rng.bit_generator).__name__:
        raise ValueError(f"{path} was saved with a {fit_meta['rng'].get('bit_generator')} "
                         f"generator, rng is a {type(rng.bit_generator).__name__}")
    rng.bit_generator.state = fit_meta["rng"]
    state = optimizer.init(params)
    state = state._replace(step=fit_meta["step"], m=saved["m"], v=saved["v"])
    tree.map(lambda a, b: np.copyto(a, b), state.params, params)
    return state, fit_meta["history"]


@contextlib.contextmanager
def _deferred_interrupt():
    """Holds back SIGINT (Ctrl-C) until the block ends, then hands it to the handler that was
    installed before (Python's default raises KeyboardInterrupt; a user's own runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def _check_finite(loss, nll, kl, grads):
    # One cheap reduction per gradient: g @ g (a BLAS dot, faster than np.sum) is NaN or inf if
    # any element is; when it only overflows, the element-wise check below clears it.
    finite_loss = math.isfinite(float(loss))
    with np.errstate(over="ignore", invalid="ignore"):
        fast_ok = finite_loss and all(math.isfinite(_sum_of_squares(g)) for g in tree.leaves(grads))
    if fast_ok:
        return
    bad_grads = [path for path, g in tree.flatten(grads).items() if not np.all(np.isfinite(g))]
    if finite_loss and not bad_grads:
        return
    bad_terms = [name for name, v in (("nll", nll), ("kl", kl)) if not math.isfinite(float(v))]
    raise FloatingPointError(
        f"non-finite value: loss={float(loss)!r}, "
        f"nll={float(nll)!r}, kl={float(kl)!r}; non-finite terms: {bad_terms or 'none'}; "
        f"non-finite gradients: {bad_grads or 'none'}. The params before this step are kept "
        f"unchanged; lower the learning rate or check the data for NaN/inf.")


def _sum_of_squares(g):
    flat = np.asarray(g).reshape(-1)
    return float(flat @ flat)
