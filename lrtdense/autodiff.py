"""Two small extensions of autograd: kernels with residuals, and gradients of a params tree.

* ``custom_vjp(fwd, bwd)`` makes an autograd primitive from a forward function that also returns
  the intermediates its gradient needs (the *residuals*: x**2, the noise ratio eps / s, ...) and
  a vector-Jacobian product that reads them, as JAX's ``jax.custom_vjp`` does. autograd's own
  ``defvjp`` hands a VJP only the primitive's inputs and output, so a VJP would otherwise have to
  recompute what the forward pass already had. The forward runs once, on plain arrays; its
  output enters the trace through a primitive whose VJP closes over the residuals.

      f = custom_vjp(fwd, bwd)
      fwd(*args, needs=needs, **settings) -> (output, residuals)
      bwd(residuals, g, argnums) -> tuple of the gradients w.r.t. args[i] for i in argnums

  ``needs[i]`` tells the forward whether argument i is being differentiated, so that it keeps
  only the residuals the backward pass will read. Keyword arguments are settings (never
  differentiated). ``f`` is first-order only (its VJP is not itself traced).

* ``value_and_grad(fun, params, *args, workspace=None)`` differentiates
  ``fun(params, *args) -> (objective, aux)`` with respect to every leaf of the params tree and
  returns ``(objective, aux, grads)``. It is autograd's reverse pass (``autograd.core
  .backward_pass``) with one root per leaf instead of one boxed dict: boxing a dict makes every
  ``params[key]`` a traced lookup whose gradient starts as zeros for the whole dict (a fresh
  params-sized allocation per lookup), which a training step cannot afford. Where several
  gradients meet at one node they are summed in place into one that a kernel made fresh
  (``KernelVJP``), else into a buffer of ``workspace``.
"""
from autograd.core import SparseObject, VJPNode, add_outgrads
from autograd.extend import primitive, defvjp_argnums, vspace
from autograd.tracer import getval, isbox, new_box, toposort, trace_stack
import numpy as np

from lrtdense import tree
from lrtdense.workspace import empty

__all__ = ["custom_vjp", "value_and_grad", "add_into", "KernelVJP"]


def custom_vjp(fwd, bwd, name=None):
    """A differentiable function from a forward with residuals and its VJP (module docstring).

    Args:
      fwd: ``fwd(*args, needs, **settings) -> (output, residuals)`` on plain arrays.
      bwd: ``bwd(residuals, g, argnums) -> tuple`` of one gradient per entry of ``argnums``.
      name: the function's name (default: fwd's name without a leading "_" and "_fwd").
    Returns:
      ``f(*args, **settings)``, an autograd-differentiable function returning fwd's output.
    """
    name = name or fwd.__name__.strip("_").removesuffix("_fwd")

    def enter(packed, *args, **settings):
        return packed[0]

    enter.__name__ = name
    enter = primitive(enter)

    def vjpmaker(argnums, ans, args, settings):
        return KernelVJP(bwd, args[0][1], tuple(i - 1 for i in argnums))

    defvjp_argnums(enter, vjpmaker)

    def f(*args, **settings):
        needs = tuple(isbox(a) for a in args)
        packed = fwd(*(getval(a) for a in args), needs=needs, **settings)
        if not any(needs):
            return packed[0]
        return enter(packed, *args)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = fwd.__doc__
    f.fwd, f.bwd = fwd, bwd
    return f


class KernelVJP:
    """The VJP of one call of a ``custom_vjp`` function: ``bwd`` with that call's residuals.

    The contract of a kernel's ``bwd``: the gradient of each argument is either the cotangent
    ``g`` itself or a fresh array that nothing else refers to (tests check every kernel), so
    the reverse pass of ``value_and_grad`` may sum into the fresh ones in place.
    """
    __slots__ = ("bwd", "residuals", "argnums")

    def __init__(self, bwd, residuals, argnums):
        self.bwd, self.residuals, self.argnums = bwd, residuals, argnums

    def __call__(self, g):
        return self.bwd(self.residuals, g, self.argnums)


def add_into(like, add):
    """A gradient that adds itself into another one: ``add(out)`` adds it to ``out`` in place.

    For a term whose gradient is a cheap element-wise expression (a divergence's, beside the data
    term's matrix products): summed into the other gradient of the same array, it costs no array
    of its own. It is autograd's ``SparseObject``, so ``autograd.grad`` accepts it as well.
    """
    def mut_add(out):
        add(out)
        return out
    return SparseObject(vspace(like), mut_add)


def value_and_grad(fun, params, *args, workspace=None):
    """The objective, aux values and gradients w.r.t. every leaf of ``params``.

    Args:
      fun: ``fun(params, *args) -> (objective, aux)``; objective a scalar, aux anything built
        from traced values (returned as plain values).
      params: a tree (nested dict) of arrays.
      *args: passed on to ``fun`` (not differentiated).
      workspace: a ``lrtdense.workspace.Workspace`` for the sums of gradients, or None.
    Returns:
      (objective value, aux with plain values, grads: a tree of params' structure).
    Raises:
      TypeError: ``fun`` did not return an (objective, aux) pair.
    """
    roots = []
    with trace_stack.new_trace() as trace:
        boxed = _boxed(params, trace, roots)
        result = fun(boxed, *args)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"fun must return a pair (objective, aux), got {type(result).__name__}")
    objective, aux = result
    aux = _plain(aux)
    found = {}
    if isbox(objective) and objective._trace == trace:
        value = objective._value
        is_root = set(roots)
        outgrads = {objective._node: (np.ones_like(value), False)}
        for node in toposort(objective._node):
            g = _dense(outgrads.pop(node)[0], workspace)
            if node in is_root:
                found[node] = g
                continue
            vjp, node.vjp = node.vjp, None     # its residuals are free once it has run
            fresh = type(vjp) is KernelVJP
            for parent, ingrad in zip(node.parents, vjp(g)):
                outgrads[parent] = _accumulate(outgrads.get(parent), ingrad,
                                               fresh and ingrad is not g, workspace)
            del vjp, g
    else:
        value = objective
    grads = _grads(params, iter(roots), found)
    return value, aux, grads


def _boxed(params, trace, roots):
    """The params tree with each leaf boxed on a root node of its own (appended to roots)."""
    if isinstance(params, dict):
        return {k: _boxed(v, trace, roots) for k, v in params.items()}
    root = VJPNode.new_root()
    roots.append(root)
    return new_box(params, trace, root)


def _grads(params, roots, found):
    """The gradient tree, in the order _boxed met the leaves; zeros for a leaf the objective
    does not depend on."""
    if isinstance(params, dict):
        return {k: _grads(v, roots, found) for k, v in params.items()}
    root = next(roots)
    return found[root] if root in found else np.zeros_like(params)


def _accumulate(previous, g, fresh, workspace):
    """autograd's ``add_outgrads``: the first gradient reaching a node is kept as it is (and
    marked as ours to sum into when a kernel made it fresh); later ones are summed into it, or
    into a workspace buffer when it is not ours. An ``add_into`` gradient adds itself."""
    if previous is None:
        return g, fresh
    acc, owned = previous
    if type(g) is SparseObject or type(acc) is SparseObject:
        if type(acc) is SparseObject:
            acc, g, owned = g, acc, fresh
        if type(acc) is SparseObject or not owned:
            acc = _copy(acc, workspace)
        return g.mut_add(acc), True
    if not (type(acc) is np.ndarray and type(g) is np.ndarray and acc.ndim
            and acc.shape == g.shape and acc.dtype == g.dtype):
        return add_outgrads(previous, g)
    if owned:                       # fresh from a kernel, or a sum made below: only ours
        np.add(acc, g, out=acc)
        return acc, True
    out = empty(workspace, acc.shape, acc.dtype)
    np.add(acc, g, out=out)
    return out, True


def _copy(g, workspace):
    """A copy of ``g`` in a workspace buffer (zeros plus itself for an ``add_into`` gradient)."""
    if type(g) is SparseObject:
        out = empty(workspace, g.vs.shape, g.vs.dtype)
        out.fill(0)
        return g.mut_add(out)
    out = empty(workspace, np.shape(g), np.result_type(g))
    np.copyto(out, g)
    return out


def _dense(g, workspace):
    return _copy(g, workspace) if type(g) is SparseObject else g


def _plain(value):
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return getval(value)
