"""The training loop: shuffled minibatches, autograd gradients, Adam, honest bookkeeping.

``fit(model, params, x, y, rng=..., epochs=..., batch_size=...)`` minimises the minibatch negative
ELBO of ``lrtdense.losses`` (the KL divided by ``num_examples`` once per minibatch) and returns
``(params, history)``. All randomness (shuffling and the layers' noise) comes from ``rng``.
"""
import contextlib
import math
import signal
import sys
import threading
import time

import numpy as np
from autograd import value_and_grad
from autograd.tracer import getval

from lrtdense import tree
from lrtdense.optimizers import adam

__all__ = ["fit", "make_step"]


def make_step(model, optimizer, num_examples, implementation="auto"):
    """One training step as a function ``step(state, xb, yb, rng, kl_weight)``.

    ``implementation``: "reference" is the plain autograd expression of the math; "fast" the
    hand-written step of ``lrtdense.fast`` (networks of DenseLocalReparameterization layers with
    Adam; tested equal to the reference); "auto" picks "fast" when the model qualifies.

    Computes the minibatch negative ELBO and its gradients, refuses non-finite values
    (``FloatingPointError``, state untouched), then applies the optimizer update in place (fit owns
    the state) with Ctrl-C deferred until the update is complete, so an interrupt never leaves a
    half-applied step. Returns (state, loss, nll, kl). This is the step ``fit`` runs and the one
    the benchmarks time.
    """
    if implementation not in ("auto", "fast", "reference"):
        raise ValueError(f"implementation must be 'auto', 'fast' or 'reference', got {implementation!r}")
    if implementation != "reference":
        from lrtdense import fast
        if fast.supports(model, optimizer):
            return fast.FastStep(model, optimizer, num_examples)
        if implementation == "fast":
            raise ValueError("the fast step supports networks of DenseLocalReparameterization "
                             "layers (linear/relu/tanh, Deterministic or no bias, no bias prior) "
                             "with a categorical or fixed-scale Gaussian likelihood and the "
                             "built-in Adam; use implementation='reference'")
    aux = {}

    def objective(params, xb, yb, rng, weight):
        loss, nll, kl = model.loss(params, xb, yb, rng, num_examples=num_examples, kl_weight=weight)
        aux["nll"], aux["kl"] = getval(nll), getval(kl)
        return loss

    loss_and_grad = value_and_grad(objective)

    def step(state, xb, yb, rng, kl_weight=1.0):
        loss, grads = loss_and_grad(optimizer.get_params(state), xb, yb, rng, kl_weight)
        _check_finite(loss, aux["nll"], aux["kl"], grads)
        with _deferred_interrupt():
            state = optimizer.update(state, grads, inplace=True)
        return state, loss, aux["nll"], aux["kl"]

    return step


def fit(model, params, x, y, *, rng, epochs, batch_size=32, optimizer=None, num_examples=None,
        kl_weight=1.0, verbose=True, callback=None, file=None, implementation="auto"):
    """Trains ``model`` from ``params``.

    Args:
      model: a ``lrtdense.model.Model``.
      params: initial params (not modified).
      x: (N, ...) inputs; y: (N, ...) targets.
      rng: numpy.random.Generator for shuffling and noise.
      epochs: number of passes over the data.
      batch_size: minibatch size (the last minibatch of an epoch may be smaller).
      optimizer: an (init, update, get_params) triple; default ``adam(1e-3)``.
      num_examples: N in KL / N; defaults to len(x).
      kl_weight: a float, or a function epoch -> float (KL warm-up).
      verbose: print one progress line per epoch.
      callback: called as callback(epoch, params, history) after each epoch; return True to stop.
      file: where progress goes (default sys.stdout).
      implementation: "auto", "fast" or "reference" (see ``make_step``).
    Returns:
      (params, history): history has lists "loss", "nll", "kl", "kl_weight", "time" (seconds,
      cumulative) per epoch, and "interrupted" (True if stopped by KeyboardInterrupt; the params
      are then those of the last completed step).
    Raises:
      FloatingPointError: a non-finite loss or gradient, naming the epoch, step and term.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("x is empty")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    optimizer = optimizer or adam(1e-3)
    n = len(x)
    num_examples = n if num_examples is None else num_examples
    if x.dtype.kind == "f" and x.dtype != model.dtype:
        x = x.astype(model.dtype)
    out = file or sys.stdout
    step = make_step(model, optimizer, num_examples, implementation)
    state = optimizer.init(params)
    history = {"loss": [], "nll": [], "kl": [], "kl_weight": [], "time": [], "interrupted": False}
    start = time.perf_counter()
    steps_per_epoch = math.ceil(n / batch_size)
    try:
        for epoch in range(epochs):
            weight = float(kl_weight(epoch) if callable(kl_weight) else kl_weight)
            order = rng.permutation(n)
            sums = np.zeros(3)
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                try:
                    state, loss, nll, kl = step(state, x[idx], y[idx], rng, weight)
                except FloatingPointError as err:
                    raise FloatingPointError(f"at epoch {epoch + 1}, step {i + 1}: {err}") from None
                sums += (float(loss), float(nll), float(kl))
            means = sums / steps_per_epoch
            for key, value in zip(("loss", "nll", "kl"), means):
                history[key].append(float(value))
            history["kl_weight"].append(weight)
            history["time"].append(time.perf_counter() - start)
            if verbose:
                print(f"epoch {epoch + 1:>4}/{epochs}  loss {means[0]:.4f}  nll {means[1]:.4f}  "
                      f"kl {means[2]:.1f}  ({history['time'][-1]:.1f}s)", file=out, flush=True)
            if callback is not None and callback(epoch, optimizer.get_params(state), history):
                break
    except KeyboardInterrupt:
        history["interrupted"] = True
        if verbose:
            print(f"interrupted after {len(history['loss'])} complete epochs of {epochs}: keeping "
                  f"the params of the last completed step", file=out, flush=True)
    return optimizer.get_params(state), history


@contextlib.contextmanager
def _deferred_interrupt():
    """Holds back SIGINT (Ctrl-C) until the block ends, then raises KeyboardInterrupt."""
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
        raise KeyboardInterrupt


def _check_finite(loss, nll, kl, grads):
    # One cheap reduction per gradient: g @ g (a BLAS dot, faster than np.sum) is NaN or inf if
    # any element is; when it only overflows, the element-wise check below clears it.
    finite_loss = math.isfinite(float(loss))
    with np.errstate(over="ignore", invalid="ignore"):
        fast_ok = finite_loss and all(math.isfinite(_sum_of_squares(g)) for g in tree.leaves(grads))
    if fast_ok:
        return
    bad_grads = _bad_grad_paths(grads)
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


def _bad_grad_paths(tree, prefix=""):
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _bad_grad_paths(v, f"{prefix}{k}/")]
    return [] if np.all(np.isfinite(tree)) else [prefix.rstrip("/")]
