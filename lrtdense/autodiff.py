"""Kernels (autograd primitives with residuals and hand-written gradients) and the reverse pass.

``kernel`` is JAX's ``custom_vjp`` for autograd. A kernel is three ``def``s side by side:

    @kernel
    def lrt(x, loc, scale, eps, *, workspace=None):
        '''m + s * eps with m = x @ loc, s = sqrt((x**2) @ scale**2) (arXiv 1506.02557). ...'''

    @lrt.forward
    def _(x, loc, scale, eps, *, needs, workspace=None):
        ...                                   # the formula, on plain arrays
        return out, LrtResiduals(...)         # a named record of what the backward reads

    @lrt.backward
    def _(res, g, wanted):
        return {"x": Fresh(dx), "loc": Fresh(dloc), ...}     # by argument name, only ``wanted``

The first ``def`` is the public function: its name, its signature, its docstring (first line:
the formula); its body is never run. The forward computes the output once, on plain arrays, and
keeps the intermediates the gradient needs (``x**2``, the noise ratio ``eps / s``, ...):
autograd's own
``defvjp`` hands a VJP only the inputs and the output, so the VJP would otherwise recompute
them. Positional arguments may be differentiated; keyword arguments are settings (never
differentiated). A forward that declares ``needs`` receives the names of the arguments being
differentiated (to keep only the residuals the backward will read); others are not told. The
backward receives ``wanted``, the names it must return gradients for, and returns a dict by
name. A kernel is first-order only (its VJP is not itself traced). ``f.with_residuals(*args,
needs=names)`` runs the forward alone and ``f.bwd(residuals, g, wanted)`` the backward alone
(tests and the profiler call them); ``f.fwd`` is the registered forward itself.

**Ownership.** A backward wraps in ``Fresh(...)`` the gradients it allocated itself and that
nothing else refers to; a gradient returned bare (the cotangent ``g`` itself, a view of it, a
residual) is borrowed. ``value_and_grad`` sums later gradients of the same array in place into
an owned one, and into a workspace buffer otherwise: what may be overwritten is stated where the
array is made, not guessed from object identity. In debug mode (``Workspace(debug=True)`` or
``LRTDENSE_DEBUG_BUFFERS=1``) the reverse pass checks each claim: an owned gradient shares no
memory with the cotangent or with the kernel's residuals (and the workspace poisons the buffers
it hands out with NaN, so that a read of a stale buffer shows).

``value_and_grad(fun, params, *args, workspace=None)`` differentiates ``fun(params, *args) ->
(objective, aux)`` with respect to every leaf of the params tree and returns ``(objective, aux,
grads)``. It is autograd's reverse pass (``autograd.core.backward_pass``) with one root per leaf
instead of one boxed dict: boxing a dict makes every ``params[key]`` a traced lookup whose
gradient starts as zeros for the whole dict (a fresh params-sized allocation per lookup), which
a training step cannot afford.
"""
import inspect

from autograd.core import SparseObject, VJPNode, add_outgrads
from autograd.extend import primitive, defvjp_argnums, vspace
from autograd.tracer import getval, isbox, new_box, toposort, trace_stack
import numpy as np

from lrtdense.workspace import debug_buffers, empty

__all__ = ["kernel", "Fresh", "value_and_grad", "add_into", "KernelVJP"]


class Fresh:
    """A gradient its backward allocated and nobody else refers to: the reverse pass may sum
    into it in place (see the module docstring)."""
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


def kernel(primal):
    """Declares a kernel: ``primal`` gives its name, signature and docstring (module docstring).

    Args:
      primal: ``def f(*args, **settings)`` whose docstring states the formula (body not run).
    Returns:
      ``f(*args, **settings)``, autograd-differentiable in its positional arguments once
      ``f.forward`` and ``f.backward`` have registered the forward and the backward.
    """
    argnames = tuple(p.name for p in inspect.signature(primal).parameters.values()
                     if p.kind is p.POSITIONAL_OR_KEYWORD)
    spec = _Spec(primal.__name__, argnames)

    def enter(packed, *args):
        return packed[0]

    enter.__name__ = primal.__name__
    enter = primitive(enter)
    names_of = {}                           # autograd's argnums (packed first) -> names

    def vjpmaker(argnums, ans, args, settings):
        wanted = names_of.get(argnums)
        if wanted is None:
            wanted = names_of[argnums] = tuple(argnames[i - 1] for i in argnums)
        return KernelVJP(spec.bwd, args[0][1], wanted)

    defvjp_argnums(enter, vjpmaker)

    def f(*args, **settings):
        needs = tuple([name for name, a in zip(argnames, args) if isbox(a)])
        if spec.reads_needs:
            settings["needs"] = needs
        if not needs:
            return spec.fwd(*args, **settings)[0]
        return enter(spec.fwd(*[getval(a) for a in args], **settings), *args)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(f, attr, getattr(primal, attr))
    f.__signature__ = inspect.signature(primal)
    f.__wrapped__ = primal
    f.argnames = argnames
    f.forward, f.backward = spec.set_forward, spec.set_backward
    f.with_residuals = spec.with_residuals
    f.fwd = f.bwd = None
    spec.function = f
    return f


class _Spec:
    """A kernel's forward and backward, as registered (also ``f.fwd`` and ``f.bwd``)."""

    def __init__(self, name, argnames):
        self.name, self.argnames = name, argnames
        self.fwd = self.bwd = self.function = None
        self.reads_needs = False

    def set_forward(self, fwd):
        self.fwd = self.function.fwd = _renamed(fwd, f"{self.name}.forward")
        self.reads_needs = "needs" in inspect.signature(fwd).parameters
        return self.fwd

    def set_backward(self, bwd):
        self.bwd = self.function.bwd = _renamed(bwd, f"{self.name}.backward")
        return self.bwd

    def with_residuals(self, *args, needs=None, **settings):
        """(output, residuals) of the forward on plain ``args``; ``needs``: the names being
        differentiated (default: every positional argument)."""
        if self.reads_needs:
            settings["needs"] = self.argnames if needs is None else tuple(needs)
        return self.fwd(*args, **settings)


def _renamed(fn, name):
    # tracebacks and profiles then say "lrt.forward" rather than "_"
    if fn.__name__ != "_":
        return fn
    fn.__name__ = fn.__qualname__ = name
    fn.__code__ = fn.__code__.replace(co_name=name)
    return fn


class KernelVJP:
    """The VJP of one call of a kernel: its backward with that call's residuals.

    Called as autograd calls a VJP, it returns the plain gradients in argument order; ``owned``
    returns them with what each is (``Fresh`` or borrowed) for ``value_and_grad``.
    """
    __slots__ = ("bwd", "residuals", "wanted")

    def __init__(self, bwd, residuals, wanted):
        self.bwd, self.residuals, self.wanted = bwd, residuals, wanted

    def __call__(self, g):
        grads = self.bwd(self.residuals, g, self.wanted)
        return tuple(_unwrapped(grads[name]) for name in self.wanted)

    def owned(self, g, debug=False):
        """[(gradient, owned)] in argument order; ``debug``: check each owned one."""
        grads = self.bwd(self.residuals, g, self.wanted)
        out = []
        for name in self.wanted:
            d = grads[name]
            if type(d) is Fresh:
                if debug:
                    _check_owned(self.bwd.__name__, name, d.array, g, self.residuals)
                out.append((d.array, True))
            else:
                out.append((d, False))
        return out


def _unwrapped(d):
    return d.array if type(d) is Fresh else d


def _check_owned(where, name, d, g, residuals):
    others = [("the cotangent", g)] + [(f"residual {field}", value) for field, value in
                                       _fields(residuals) if isinstance(value, np.ndarray)]
    for what, other in others:
        if isinstance(other, np.ndarray) and np.shares_memory(d, other):
            raise AssertionError(f"{where}: the gradient of {name} is marked Fresh but shares "
                                 f"memory with {what}")


def _fields(record):
    if hasattr(record, "_asdict"):
        return record._asdict().items()
    if hasattr(record, "__slots__"):
        return ((k, getattr(record, k)) for k in record.__slots__)
    if isinstance(record, (tuple, list)):
        return enumerate(record)
    return ()


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
        debug = debug_buffers(workspace)
        outgrads = {objective._node: (np.ones_like(value), False)}
        for node in toposort(objective._node):
            g = _dense(outgrads.pop(node)[0], workspace)
            if node in is_root:
                found[node] = g
                continue
            vjp, node.vjp = node.vjp, None     # its residuals are free once it has run
            if type(vjp) is KernelVJP:
                ingrads = vjp.owned(g, debug)
            else:                               # autograd's own primitives: borrowed
                ingrads = [(d, False) for d in vjp(g)]
            for parent, (ingrad, owned) in zip(node.parents, ingrads):
                outgrads[parent] = _accumulate(outgrads.get(parent), ingrad, owned, workspace)
            del vjp, g, ingrads
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
    marked as ours to sum into when its kernel returned it ``Fresh``); later ones are summed
    into it, or into a workspace buffer when it is not ours. An ``add_into`` gradient adds
    itself."""
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
