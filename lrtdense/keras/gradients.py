"""Gradients of a Keras computation, on the backend Keras runs: the one backend-specific piece of
a custom training loop, written as Keras 3's "writing a training loop from scratch" guides do it
(one guide per backend).

    def objective():
        outputs = model(x)
        return loss_fn(y, outputs) + sum(model.losses)     # the layers' divergences

    loss, grads = value_and_grad(objective, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)

* JAX: ``fn`` runs inside a ``keras.StatelessScope`` that maps each variable to a traced value
  (what ``Layer.stateless_call`` does), under ``jax.value_and_grad``; the scope collects the
  layers' ``add_loss`` terms, so ``model.losses`` reads inside ``fn`` as it does eagerly. The
  scope keeps every variable unchanged: the variables of ``state`` (a ``SeedGenerator``'s, for
  layers that draw their own noise) get the values ``fn`` left them, after the call.
* PyTorch: ``fn`` runs eagerly and ``torch.autograd.grad`` differentiates it.
* TensorFlow: ``tf.GradientTape`` (certified in an environment of its own: docs/keras.md).

``per_draw_grad`` maps a gradient over random states (the statistical mode's draws, one
``SeedGenerator`` state each): ``jax.vmap`` of ``jax.grad`` on JAX; a loop on PyTorch, where
``keras.random`` seeds a ``torch.Generator`` with the state's Python value, which
``torch.func.vmap`` cannot batch.
"""
import keras

__all__ = ["value_and_grad", "per_draw_grad"]


def value_and_grad(fn, variables, *, has_aux=False, state=()):
    """``fn()``'s value and its gradients w.r.t. ``variables``, by the backend's autodiff.

    Args:
      fn: a function of no arguments reading ``variables`` (calling layers, reading their
        ``losses``); returns a scalar tensor, or (scalar, aux) with ``has_aux``.
      variables: a list of Keras variables (``model.trainable_variables``).
      has_aux: whether ``fn`` returns (scalar, aux); aux is returned as ``fn`` computed it.
      state: Keras variables that ``fn`` may update (``model.non_trainable_variables``: the
        layers' seed states); only JAX needs them named (the other backends update in place).
    Returns:
      (value, grads), or ((value, aux), grads) with ``has_aux``: grads a list of tensors, one
      per variable and of its shape (zeros where ``fn`` does not depend on it).
    Raises:
      NotImplementedError: a backend other than JAX, PyTorch and TensorFlow.
    """
    variables, state = list(variables), list(state)
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax(fn, variables, has_aux, state)
    if backend == "torch":
        return _torch(fn, variables, has_aux)
    if backend == "tensorflow":
        return _tensorflow(fn, variables, has_aux)
    raise NotImplementedError(f"value_and_grad: no gradients on the {backend!r} backend "
                              f"(JAX, PyTorch and TensorFlow have them)")


def _split(out, has_aux):
    return out if has_aux else (out, None)


def _jax(fn, variables, has_aux, state):
    import jax

    def pure(values):
        mapping = list(zip(variables, values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            value, aux = _split(fn(), has_aux)
        return value, (aux, [scope.get_current_value(v) for v in state])

    (value, (aux, updates)), grads = jax.value_and_grad(pure, has_aux=True)(
        [v.value for v in variables])
    for variable, update in zip(state, updates):
        if update is not None:
            variable.assign(update)
    return ((value, aux) if has_aux else value), list(grads)


def _torch(fn, variables, has_aux):
    import torch

    value, aux = _split(fn(), has_aux)
    tensors = [v.value for v in variables]
    grads = torch.autograd.grad(value, tensors, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]
    return ((value, aux) if has_aux else value), grads


def _tensorflow(fn, variables, has_aux):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value, aux = _split(fn(), has_aux)
    grads = tape.gradient(value, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return ((value, aux) if has_aux else value), list(grads)


def per_draw_grad(fn, params, states):
    """The gradient of ``fn(params, state)`` w.r.t. ``params`` at each state, by the backend's
    autodiff: one draw per state, each independent of the others.

    Args:
      fn: ``fn(params, state) -> (scalar, aux)``, pure in its arguments (a layer's
        ``stateless_call`` with ``state`` its ``SeedGenerator``'s value).
      params: a list of tensors.
      states: (draws, ...) tensor, one state per draw.
    Returns:
      (grads, aux): grads a list, one (draws, *p.shape) tensor per param; aux ``fn``'s aux with
      a leading draws axis on each tensor.
    Raises:
      NotImplementedError: a backend other than JAX and PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return jax.jit(jax.vmap(jax.grad(fn, has_aux=True), in_axes=(None, 0)))(
            list(params), states)
    if backend == "torch":
        return _torch_per_draw_grad(fn, list(params), states)
    raise NotImplementedError(f"per_draw_grad: no per-draw gradients on the {backend!r} backend "
                              f"(JAX and PyTorch have them)")


def _torch_per_draw_grad(fn, params, states):
    import torch

    grads, auxes = [], []
    for state in states:
        leaves = [p.detach().requires_grad_() for p in params]
        value, aux = fn(leaves, state)
        draw = torch.autograd.grad(value, leaves, allow_unused=True)
        grads.append([torch.zeros_like(t) if g is None else g for g, t in zip(draw, leaves)])
        auxes.append(keras.tree.map_structure(lambda t: t.detach(), aux))
    stack = lambda *draws: torch.stack(draws)             # noqa: E731
    return [stack(*g) for g in zip(*grads)], keras.tree.map_structure(stack, *auxes)
