"""A small Adam over nested dicts of arrays, as an (init, update, get_params) triple.

Modelled on ``jax.example_libraries.optimizers``: ``opt = adam(1e-3)``;
``state = opt.init(params)``; ``state = opt.update(state, grads)``; ``opt.get_params(state)``.
Invariant: ``get_params(init(p)) == p`` (equal values, fresh buffers).

Two formulas (Kingma & Ba 2015, arXiv 1412.6980), both with step count t starting at 1:

* ``form="kingma"`` (default; Algorithm 1, what ``torch.optim.Adam`` computes, eps 1e-8):

  ```
  m = m + (1 - b1) * (g - m)              # torch's lerp
  v = b2 * v + (1 - b2) * g * g
  p = p - (lr / (1 - b1**t)) * (m / (sqrt(v) / sqrt(1 - b2**t) + eps))
  ```

* ``form="keras"`` ("epsilon hat": eps added to sqrt(v), the bias correction folded into the
  learning rate; what tf-keras' Adam computes, eps 1e-7):

  ```
  alpha = lr32 * sqrt(1 - b2_32**t) / (1 - b1_32**t)
  m = m + (g - m) * (1 - b1)
  v = v + (g * g - v) * (1 - b2)
  p = p - (m * alpha) / (sqrt(v) + eps)
  ```

  where lr32, b1_32, b2_32 are lr, b1, b2 rounded to float32, as tf-keras 2.18 does (its learning
  rate is a float32 variable, and ``tf.cast(0.9, tf.float64)`` goes through a float32 tensor); the
  moment updates use the float64 values of (1 - b1) and (1 - b2).

Each line is evaluated in the operation order of the library it reproduces, so float64
trajectories agree with recorded torch / tf-keras fixtures to ~1e-15 relative.

``step_size`` is a float or, as in ``jax.example_libraries.optimizers``, a schedule: a function
of the number of updates already made (0 for the first) returning that update's learning rate;
``polynomial_decay`` builds the usual decays (linear with ``power=1``).

``update(state, grads, inplace=True)`` overwrites the state's buffers instead of allocating new
ones (what ``fit`` does with a state it owns); the default is pure.
"""
import collections
import math

import numpy as np

from lrtdense import parallel, tree
from lrtdense.checks import check_float, check_int, is_finite_number

__all__ = ["adam", "polynomial_decay", "kl_warmup", "Optimizer", "AdamState"]

Optimizer = collections.namedtuple("Optimizer", ["init", "update", "get_params", "hyperparams"],
                                   defaults=(None,))
# scratch: two small work buffers per dtype and worker, allocated by the first in-place update
# and reused.
AdamState = collections.namedtuple("AdamState", ["step", "params", "m", "v", "scratch"],
                                   defaults=(None,))

_DEFAULT_EPS = {"kingma": 1e-8, "keras": 1e-7}


def adam(step_size=1e-3, b1=0.9, b2=0.999, eps=None, form="kingma"):
    """Adam as an (init, update, get_params) triple.

    Args:
      step_size: learning rate lr: a finite number > 0, or a schedule ``i -> lr`` called with
        the number of updates already made (0, 1, 2, ...) that returns a finite lr >= 0 (e.g.
        ``polynomial_decay``).
      b1, b2: moment decay rates, finite numbers in [0, 1) (not bools).
      eps: added to the denominator, a finite number > 0; None: 1e-8 (kingma) / 1e-7 (keras).
      form: "kingma" or "keras" (see the module docstring).
      Numbers may be Python or NumPy scalars; they are used as Python floats.
    Returns:
      Optimizer(init, update, get_params, hyperparams).
    Raises:
      ValueError: a bad setting (the message names it and the range expected); or, from
        ``update``, a schedule value that is not a finite number >= 0 (the state is then left
        unchanged).
    """
    step_size, b1, b2, eps = _adam_settings(step_size, b1, b2, eps, form)

    def init(params):
        """Fresh state: step 0, a copy of params, zero moments (see ``_adam_init``)."""
        return _adam_init(params, eps)

    def update(state, grads, inplace=False):
        """One Adam step. grads must have the structure of the params (TypeError otherwise)."""
        t = state.step + 1
        try:
            tree.map(_check_leaf, state.params, grads)
        except TypeError as err:
            raise TypeError(f"grads do not match params: {err}") from None
        leaf = _adam_leaf(form, _learning_rate(step_size, state.step), t, b1, b2, eps)
        if not inplace:
            triples = tree.map(lambda p, m, v, g: leaf(p, m, v, g, None),
                               state.params, state.m, state.v, grads)
            return AdamState(t, *(tree.map(lambda triple, i=i: triple[i], triples)
                                  for i in range(3)))
        scratch = {} if state.scratch is None else state.scratch
        tree.map(lambda p, m, v, g: _chunked(leaf, p, m, v, g, scratch),
                 state.params, state.m, state.v, grads)
        return AdamState(t, state.params, state.m, state.v, scratch)

    def get_params(state):
        return state.params

    hyperparams = {"name": "adam", "step_size": step_size, "b1": b1, "b2": b2, "eps": eps,
                   "form": form}
    return Optimizer(init, update, get_params, hyperparams)


def _adam_settings(step_size, b1, b2, eps, form):
    """(step_size, b1, b2, eps) of ``adam`` checked; b1, b2, eps as Python floats."""
    if not isinstance(form, str) or form not in _DEFAULT_EPS:
        raise ValueError(f"form must be 'kingma' or 'keras', got {form!r}")
    for name, b in (("b1", b1), ("b2", b2)):
        check_float(b, name, low=0, high=1, open_high=True)
        if form == "keras" and not np.float32(b) < 1:     # its bias corrections would be 1 - 1
            raise ValueError(f"{name}={b!r} rounds to 1 in float32, which the keras form uses; "
                             f"expected {name} <= {float(np.nextafter(np.float32(1), 0))}")
    # Python floats, so that a NumPy scalar setting cannot change the precision of the update.
    b1, b2 = float(b1), float(b2)
    if not callable(step_size):
        step_size = check_float(step_size, "step_size", low=0, open_low=True, expected=(
            "a finite number > 0 or a schedule (a function of the update count)"))
    eps = _DEFAULT_EPS[form] if eps is None else check_float(
        eps, "eps", low=0, open_low=True, expected="a finite number > 0 (or None for the form's "
                                                   "default)")
    return step_size, b1, b2, eps


def _adam_init(params, eps):
    """Adam's fresh state: step 0, a copy of params, zero moments.

    Raises ValueError if eps is 0 or infinite in a parameter's dtype (1e-300 or 1e300 in
    float32): the update would divide 0 by 0 where the second moment is 0, or never move.
    """
    for path, leaf in tree.flatten(params).items():
        dtype = np.asarray(leaf).dtype
        if dtype.kind != "f":
            continue
        with np.errstate(over="ignore"):
            rounded = np.array(eps, dtype)
        if not 0 < rounded < np.inf:
            info = np.finfo(dtype)
            raise ValueError(f"eps={eps!r} is {float(rounded)} in {dtype}, the dtype of "
                             f"params[{path!r}]; expected eps in "
                             f"[{float(info.smallest_subnormal):.3g}, {float(info.max):.3g}]")
    return AdamState(0, tree.map(np.array, params), tree.map(np.zeros_like, params),
                     tree.map(np.zeros_like, params))


def _adam_leaf(form, lr, t, b1, b2, eps):
    """The update of one leaf at step ``t`` with learning rate ``lr``, in the form's own
    precision: ``leaf(p, m, v, g, work)``, ``_kingma`` or ``_keras`` with the step's constants."""
    if form == "kingma":
        step_size_t = lr / (1 - math.pow(b1, t))
        bc2_sqrt = math.sqrt(1 - math.pow(b2, t))
        return lambda p, m, v, g, w: _kingma(p, m, v, g, w, b1, b2, eps, step_size_t, bc2_sqrt)
    b1_32, b2_32 = float(np.float32(b1)), float(np.float32(b2))
    lr32 = float(np.float32(lr))
    alpha = lr32 * math.sqrt(1 - math.pow(b2_32, t)) / (1 - math.pow(b1_32, t))
    return lambda p, m, v, g, w: _keras(p, m, v, g, w, b1, b2, eps, alpha)


def polynomial_decay(step_size, decay_steps, final_step_size=0.0, power=1.0):
    """A learning-rate schedule decaying from ``step_size`` to ``final_step_size``.

    ``lr(i) = (step_size - final_step_size) * (1 - min(i, decay_steps) / decay_steps) ** power
    + final_step_size``, as ``jax.example_libraries.optimizers.polynomial_decay``: ``power=1`` is
    a linear decay; after ``decay_steps`` updates the rate stays at ``final_step_size``.

    Args:
      step_size: the first update's learning rate (> 0).
      decay_steps: updates over which it decays (an int >= 1; with ``fit``, epochs times
        ``ceil(N / batch_size)`` updates end the decay with the training).
      final_step_size: the rate reached (>= 0, at most step_size).
      power: the polynomial's degree (> 0).
    Returns:
      A function ``i -> lr`` of the number of updates already made, for ``adam(step_size=...)``.
    """
    for name, value in (("step_size", step_size), ("final_step_size", final_step_size),
                        ("power", power)):
        check_float(value, name)
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if not 0 <= final_step_size <= step_size:
        raise ValueError(f"final_step_size must lie in [0, step_size={step_size!r}], "
                         f"got {final_step_size!r}")
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    decay_steps = check_int(decay_steps, "decay_steps", low=1)
    step_size, final_step_size, power = float(step_size), float(final_step_size), float(power)

    def schedule(i):
        frac = 1.0 - min(i, decay_steps) / decay_steps
        return (step_size - final_step_size) * frac ** power + final_step_size

    return schedule


def kl_warmup(fraction, epochs, scale=1.0):
    """``fit``'s ``kl_weight`` for a linear KL warm-up: epoch e (0-based) weighs the KL by
    ``scale * min(1, (e + 1) / w)``, w = round(fraction * epochs) (Sønderby et al. 2016,
    arXiv 1602.02282); ``scale`` alone when w is 0 (the ELBO from the first step when 1).

    Args:
      fraction: the share of the epochs the warm-up lasts, in [0, 1] (0.2 won on the UCI
        validation splits: docs/uci_benchmark.md).
      epochs: the epochs of the training (an int >= 1).
      scale: the weight after the warm-up (>= 0; 1 is the ELBO, < 1 tempers the posterior).
    Returns:
      a function epoch -> weight, or ``scale`` itself when there is no warm-up.
    """
    fraction = check_float(fraction, "fraction", 0, 1)
    epochs = check_int(epochs, "epochs", low=1)
    scale = check_float(scale, "scale", 0)
    warm = round(fraction * epochs)
    if warm == 0:
        return scale
    return lambda epoch: scale * min(1.0, (epoch + 1) / warm)


def _learning_rate(step_size, i):
    """The learning rate of update i (0-based): step_size itself, or the schedule's value."""
    if not callable(step_size):
        return step_size
    lr = step_size(i)
    if not (is_finite_number(lr) and lr >= 0):
        raise ValueError(f"the step_size schedule returned {lr!r} for update {i}; expected a "
                         f"finite number >= 0")
    return float(lr)


def _check_leaf(p, g):
    if np.shape(g) != np.shape(p):
        raise TypeError(f"gradient of shape {np.shape(g)} for a parameter of shape {np.shape(p)}")


def _chunked(leaf, p, m, v, g, scratch):
    """Updates p, m, v in place over ``lrtdense.parallel``'s fixed chunks (on its workers, when
    the step has more than one), with work buffers from ``scratch``: the dozen element-wise
    passes of one update run on the five arrays involved (p, m, v, g, work) while a chunk of
    each sits in the L2 cache. Same results, bit for bit, with any chunking and any workers."""
    for a in (p, m, v):
        if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable):
            raise TypeError("in-place Adam needs C-contiguous writeable numpy arrays")
    pf, mf, vf = p.reshape(-1), m.reshape(-1), v.reshape(-1)
    gf = np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)
    work = _work_buffers(scratch, p.dtype, parallel.count())

    def chunk(start, stop, lane):
        n = stop - start
        leaf(pf[start:stop], mf[start:stop], vf[start:stop], gf[start:stop],
             (work[lane][0][:n], work[lane][1][:n]))

    parallel.for_chunks(chunk, pf.size, pf.itemsize)


def _work_buffers(scratch, dtype, lanes):
    """Two chunk-sized work buffers of ``dtype`` for each of ``lanes`` workers, made on first
    use and kept in ``scratch``."""
    size = parallel.chunk_size(dtype.itemsize)
    buffers = scratch.setdefault(dtype.str, [])
    if buffers and buffers[0][0].size != size:          # made under another chunk size
        buffers.clear()
    while len(buffers) < lanes:
        buffers.append((np.empty(size, dtype), np.empty(size, dtype)))
    return buffers


def _kingma(p, m, v, g, work, b1, b2, eps, step_size_t, bc2_sqrt):
    """One leaf; in place when work buffers are given, else on copies."""
    if work is None:
        p, m, v = p.copy(), m.copy(), v.copy()
        work = (np.empty_like(p),)
    t = work[0]
    np.subtract(g, m, out=t)                     # first moment:
    t *= 1 - b1                                  #   m + (1 - b1)(g - m)
    m += t
    v *= b2                                      # second moment:
    np.multiply(g, g, out=t)                     #   b2 v + (1 - b2) g^2
    t *= 1 - b2
    v += t
    np.sqrt(v, out=t)                            # bias-corrected
    t /= bc2_sqrt                                #   denominator
    t += eps
    np.divide(m, t, out=t)                       # step
    t *= step_size_t
    p -= t
    return p, m, v


def _keras(p, m, v, g, work, b1, b2, eps, alpha):
    if work is None:
        p, m, v = p.copy(), m.copy(), v.copy()
        work = (np.empty_like(p), np.empty_like(p))
    t, denom = work
    np.subtract(g, m, out=t)                     # first moment
    t *= 1 - b1
    m += t
    np.multiply(g, g, out=t)                     # second moment
    t -= v
    t *= 1 - b2
    v += t
    np.sqrt(v, out=denom)                        # epsilon-hat step:
    denom += eps                                 #   (m alpha) / (sqrt(v) + eps)
    np.multiply(m, alpha, out=t)
    t /= denom
    p -= t
    return p, m, v
