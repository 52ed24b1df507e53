"""The training loop: shuffled minibatches, autograd gradients, Adam, honest bookkeeping.

``fit(model, params, x, y, rng=..., epochs=..., batch_size=...)`` minimises the minibatch negative
ELBO of ``lrtdense.losses`` (the KL divided by ``num_examples`` once per minibatch) and returns
``(params, history)``. All randomness (shuffling and the layers' noise) comes from ``rng``.

There is one training step, ``make_step``: the model's own ``loss`` (its checks included, on
every call) differentiated by autograd through the kernels of ``lrtdense.kernels``
(``lrtdense.autodiff.value_and_grad``), then Adam in place. What makes it fast is memory, not a
second statement of the math: every array of a step lives in a ``Workspace`` kept from one step
to the next, so that after the first step a step allocates nothing. How many BLAS threads a
step runs with is ``lrtdense.threads``' concern (``threads=``): one by default.
"""
import dataclasses
import math
import signal
import sys
import time

import numpy as np

from lrtdense import checkpoint as checkpoint_lib
from lrtdense import diagnostics, interrupts, parallel
from lrtdense import io as lrtdense_io
from lrtdense import threads as threads_lib
from lrtdense import tree
from lrtdense.autodiff import value_and_grad
from lrtdense.checks import check_int, check_rng
from lrtdense.losses import check_num_examples
from lrtdense.model import check_num_samples
from lrtdense.optimizers import adam
from lrtdense.workspace import Workspace

__all__ = ["fit", "make_step", "FitState", "Terminated"]


def make_step(model, optimizer, num_examples, num_samples=1, *, return_grads=False,
              threads=None, workers=None):
    """The training step ``step(state, xb, yb, rng, kl_weight=1.0) -> (state, loss, nll, kl)``.

    Computes the minibatch negative ELBO ``model.loss(params, xb, yb, rng, num_examples=...,
    kl_weight=...)`` and its gradients, refuses non-finite values (``FloatingPointError``, state
    untouched), then applies the optimizer update in place (fit owns the state) with Ctrl-C
    deferred until the update is complete, so an interrupt never leaves a half-applied step.
    This is the step ``fit`` runs and the one the benchmarks time; ``step.workspace`` is the
    Workspace its arrays live in; ``step.threads`` its thread policy (its ``count``: the BLAS
    threads of the last step).

    ``num_samples``: the loss averaged over that many draws of the noise (``Model.loss``).
    ``return_grads``: the step also returns the gradients it applied, ``(state, loss, nll, kl,
    grads)``, as a fresh copy (the step's own live in its workspace and are overwritten by the
    next step).
    ``threads``: BLAS threads: None is one (or ``$LRTDENSE_THREADS``), an int >= 1 that many,
    "auto" the faster of one and the default count, measured on the first steps
    (``lrtdense.threads``, which says when the count can move the last bits of a result).
    ``workers``: threads for the matrix products and the Adam update of large arrays, in fixed
    blocks (``lrtdense.parallel``): None is ``$LRTDENSE_WORKERS``, else "auto" (the faster of
    one and one per usable CPU, measured on the first steps and again if they slow down); an
    int >= 1 that many. Unlike BLAS threads they never change a bit of the
    results, so they are a setting of their own.

    Raises:
      ValueError: num_examples or num_samples is not an integer >= 1, threads is not None,
        "auto" or an integer >= 1, or workers is not None, "auto" or an integer >= 1.
    """
    num_examples = check_num_examples(num_examples)
    num_samples = check_num_samples(num_samples)
    blas_threads = threads_lib.policy(threads)
    workers = parallel.policy(workers)
    workspace = Workspace()

    def objective(params, xb, yb, rng, kl_weight):
        loss, nll, kl = model.loss(params, xb, yb, rng, num_examples=num_examples,
                                   kl_weight=kl_weight, num_samples=num_samples,
                                   workspace=workspace)
        return loss, (nll, kl)

    def step(state, xb, yb, rng, kl_weight=1.0):
        with blas_threads.step(key=np.shape(xb)), workers.step(key=np.shape(xb)):
            loss, (nll, kl), grads = value_and_grad(objective, optimizer.get_params(state), xb,
                                                    yb, rng, kl_weight, workspace=workspace)
            _check_finite(loss, nll, kl, grads)
            copied = tree.map(np.copy, grads) if return_grads else None
            with interrupts.deferred_interrupt():
                state = optimizer.update(state, grads, inplace=True)
        return (state, loss, nll, kl) + ((copied,) if return_grads else ())

    step.workspace, step.threads, step.workers = workspace, blas_threads, workers
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


class Terminated(SystemExit):
    """``fit`` stopped on SIGTERM (what a job scheduler or ``docker stop`` sends), after the step
    in progress and the final checkpoint. Uncaught, it ends the process with status 143 (128 +
    SIGTERM), as the signal would have; ``err.fit_state`` holds the work done."""

    def __init__(self, message):
        super().__init__(128 + signal.SIGTERM)
        self.message = message

    def __str__(self):
        return self.message


@dataclasses.dataclass
class _Progress:
    """A fit's bookkeeping, updated only between steps (so a stop never sees half of it)."""
    state: object
    history: dict
    epoch: int = 0             # epochs completed
    step: int = 0              # steps done in the epoch in progress (0 between epochs)
    order_rng: dict = None     # the generator's state before that epoch's shuffle
    sums: object = None        # running (loss, nll, kl) sums of that epoch
    rng_state: dict = None     # the generator's state after the last completed step
    last: tuple = (0, 0)       # 1-based (epoch, step) of the last completed step

    def position(self):
        if self.step == 0:
            return None
        return checkpoint_lib.Position(self.epoch, self.step, self.order_rng, tuple(self.sums))


def fit(model, params, x, y, *, rng, epochs, batch_size=32, optimizer=None, num_examples=None,
        kl_weight=1.0, num_samples=1, verbose=True, callback=None, file=None, checkpoint=None,
        checkpoint_every=1, threads=None, workers=None):
    """Trains ``model`` from ``params`` (not modified; any memory order; 0-d arrays stay 0-d).

    Args:
      x: (N, ..., in) real inputs; y: (N, ...) targets of the model's likelihood.
      rng: numpy.random.Generator for shuffling and noise; epochs: passes over the data;
        batch_size: minibatch size (an epoch's last may be smaller).
      optimizer: an (init, update, get_params) triple; default ``adam(1e-3)``.
      num_examples: N in KL / N; defaults to len(x). num_samples: noise draws per step.
      kl_weight: a number >= 0, or a function epoch -> number (KL warm-up).
      verbose, file: one progress line per epoch, to ``file`` (default sys.stdout), with the
        steps per second and BLAS threads.
      threads, workers: BLAS threads (one) and lrtdense's own workers ("auto": one per usable
        CPU) of the steps (``make_step``).
      callback: ``callback(epoch, params, history)`` after each epoch (a copy); True stops.
      checkpoint, checkpoint_every: a folder (Adam only) checked before training and written
        every ``checkpoint_every`` epochs, at the end and when stopped; a checkpoint of this
        training there is resumed bit for bit, anything else refused (``lrtdense.checkpoint``).
    Returns:
      (params, history): per epoch "loss", "nll" (mean per example), "kl" (unweighted),
      "kl_weight", "time" (cumulative s), "threads" (BLAS threads of the epoch's last step),
      "interrupted" (Ctrl-C). Warns: ``diagnostics``.
    Raises:
      TypeError / ValueError: bad data, settings or checkpoint folder, before any training.
      FloatingPointError: a non-finite loss or gradient, naming the epoch, step and term.
      Terminated: SIGTERM arrived (a SystemExit, status 143). Ctrl-C and SIGTERM let the step
        in progress complete. Any exception of a step or callback carries ``err.fit_state``,
        a ``FitState`` of the last completed step: no completed work is lost.
    """
    _check_loop_settings(rng, epochs, batch_size, checkpoint_every)
    x, y = _as_data(x, y)
    num_examples = len(x) if num_examples is None else num_examples
    model.check_data(x, y, num_examples)
    model.check_params(params, x.shape[-1])
    x = np.ascontiguousarray(x, dtype=model.dtype)
    optimizer, out, steps_per_epoch = optimizer or adam(1e-3), file or sys.stdout, math.ceil(
        len(x) / batch_size)
    diagnostics.check_kl_weight(kl_weight, num_examples, len(x), batch_size)
    history = {k: [] for k in ("loss", "nll", "kl", "kl_weight", "time", "threads")}
    progress = _Progress(optimizer.init(tree.map(lambda a: np.asarray(a, order="C"), params)),
                         {**history, "interrupted": False}, rng_state=rng.bit_generator.state)
    step = make_step(model, optimizer, num_examples, num_samples, threads=threads, workers=workers)
    saver = None if checkpoint is None else _Saver(checkpoint, model, checkpoint_lib.fingerprint(
        model, x, y, batch_size, num_examples, num_samples, optimizer))
    if saver is not None:
        progress = saver.resume(optimizer, rng, steps_per_epoch, verbose and out) or progress
    loop = _Loop(model, optimizer, step, x, y, rng, epochs, batch_size, kl_weight, verbose,
                 callback, out, saver, checkpoint_every)
    with interrupts.sigterm_flag() as terminated:
        try:
            loop.run(progress, terminated)
        except KeyboardInterrupt:
            loop.stopped(progress, "interrupted")
        except BaseException as err:
            loop.failed(progress, err)
            raise
    diagnostics.check_fit(params, optimizer.get_params(progress.state), progress.history,
                          num_examples, len(progress.history["loss"]) * steps_per_epoch)
    return optimizer.get_params(progress.state), progress.history


def _as_data(x, y):
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0:
        raise ValueError("x is empty")
    return x, y


def _check_loop_settings(rng, epochs, batch_size, checkpoint_every):
    check_rng(rng)
    check_int(epochs, "epochs", low=0)
    check_int(batch_size, "batch_size", low=1)
    check_int(checkpoint_every, "checkpoint_every", low=1)


def _resumed_progress(resumed, rng, steps_per_epoch):
    progress = _Progress(resumed.state, resumed.history, epoch=len(resumed.history["loss"]),
                         rng_state=rng.bit_generator.state)
    position = resumed.position
    if position is not None:
        progress.step, progress.order_rng = position.step, position.order_rng
        progress.sums = np.array(position.sums, dtype=float)
        progress.last = (position.epoch + 1, position.step)
    elif progress.epoch:
        progress.last = (progress.epoch, steps_per_epoch)
    return progress


class _Saver:
    """The checkpoint folder of one run of ``fit`` (see ``lrtdense.checkpoint``)."""

    def __init__(self, path, model, fingerprint):
        lrtdense_io.check_save_target(path)
        self.path, self.model, self.fingerprint = path, model, fingerprint
        self.run = checkpoint_lib.new_run_id()

    def resume(self, optimizer, rng, steps_per_epoch, out=None):
        """The ``_Progress`` of the checkpoint there (saying so to ``out``), or None."""
        resumed = checkpoint_lib.resume(self.path, self.model, optimizer, rng, self.fingerprint,
                                        steps_per_epoch)
        if resumed is None:
            return None
        self.run = resumed.run
        progress = _resumed_progress(resumed, rng, steps_per_epoch)
        if out:
            where = f" and {progress.step} steps" if progress.step else ""
            print(f"resuming from {self.path} after {progress.epoch} epochs{where}", file=out,
                  flush=True)
        return progress

    def save(self, progress):
        checkpoint_lib.save(self.path, self.model, progress.state, progress.rng_state,
                            progress.history, self.fingerprint, self.run, progress.position())


@dataclasses.dataclass
class _Loop:
    """The epochs of one ``fit`` call, its settings fixed."""
    model: object
    optimizer: object
    step: object
    x: object
    y: object
    rng: object
    epochs: int
    batch_size: int
    kl_weight: object
    verbose: bool
    callback: object
    out: object
    saver: object
    checkpoint_every: int

    def run(self, progress, terminated):
        n, start = len(self.x), time.perf_counter() - sum(progress.history["time"][-1:])
        steps_per_epoch = math.ceil(n / self.batch_size)
        for epoch in range(progress.epoch, self.epochs):
            epoch_start, first_step = time.perf_counter(), progress.step
            weight = self.kl_weight(epoch) if callable(self.kl_weight) else self.kl_weight
            with interrupts.deferred_interrupt():
                if progress.step == 0:
                    progress.order_rng = self.rng.bit_generator.state
                    progress.sums = np.zeros(3)
                    order = self.rng.permutation(n)
                else:                           # resumed in the middle of this epoch
                    order = checkpoint_lib.order(progress.order_rng, self.rng, n)
            for i in range(progress.step, steps_per_epoch):
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                with interrupts.deferred_interrupt():
                    try:
                        state, *values = self.step(progress.state, self.x[idx], self.y[idx],
                                                   self.rng, weight)
                    except FloatingPointError as err:
                        raise FloatingPointError(f"at epoch {epoch + 1}, step {i + 1}: {err}") \
                            from None
                    progress.state, progress.step, progress.last = state, i + 1, (epoch + 1, i + 1)
                    progress.sums += [float(v) for v in values]
                    progress.rng_state = self.rng.bit_generator.state
                _check_terminated(terminated)
            with interrupts.deferred_interrupt():
                means = progress.sums / steps_per_epoch
                for key, value in zip(("loss", "nll", "kl"), means):
                    progress.history[key].append(float(value))
                progress.history["kl_weight"].append(float(weight))
                progress.history["time"].append(time.perf_counter() - start)
                progress.history["threads"].append(self.step.threads.count)
                progress.epoch, progress.step = epoch + 1, 0
            if self.verbose:
                rate = (steps_per_epoch - first_step) / (time.perf_counter() - epoch_start)
                count = self.step.threads.count
                print(f"epoch {epoch + 1:>4}/{self.epochs}  loss {means[0]:.4f}  nll "
                      f"{means[1]:.4f}  kl {means[2]:.1f}  ({progress.history['time'][-1]:.1f}s, "
                      f"{rate:.0f} steps/s, {count} thread{'s' if count > 1 else ''})",
                      file=self.out, flush=True)
            if self.saver is not None and ((epoch + 1) % self.checkpoint_every == 0
                                           or epoch + 1 == self.epochs):
                self.saver.save(progress)
            if self.callback is not None and self.callback(
                    epoch, tree.map(np.copy, self.optimizer.get_params(progress.state)),
                    progress.history):
                break
            _check_terminated(terminated)

    def failed(self, progress, err):
        """Attaches the last completed step's ``FitState`` to ``err`` (after the final
        checkpoint, for SIGTERM)."""
        if isinstance(err, Terminated):
            self.stopped(progress, "terminated (SIGTERM)")
        err.fit_state = FitState(self.optimizer.get_params(progress.state), progress.state,
                                 progress.history, *progress.last)
        if hasattr(err, "add_note"):
            err.add_note(f"lrtdense.training.fit: the params, optimizer state and history of "
                         f"the last completed step (epoch {progress.last[0]}, step "
                         f"{progress.last[1]}) are in err.fit_state")

    def stopped(self, progress, how):
        """After Ctrl-C or SIGTERM: the final checkpoint (when asked for) and a progress line."""
        saved = ""
        if self.saver is not None:
            with interrupts.deferred_interrupt():
                self.saver.save(progress)
            saved = f"; checkpoint written to {self.saver.path}"
        progress.history["interrupted"] = how == "interrupted"
        if self.verbose:
            print(f"{how} after {progress.epoch} complete epochs of {self.epochs} and "
                  f"{progress.step} steps: keeping the params of the last completed step{saved}",
                  file=self.out, flush=True)


def _check_terminated(flag):
    if flag:
        raise Terminated("fit stopped on SIGTERM after the step in progress completed")


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
