"""lrtdense.kernels: each kernel against finite differences and against the plain autograd
oracle, the conventions at ties, dtypes, workspaces, and the VJP contract the training step
relies on (a gradient is the cotangent itself or a fresh array)."""
import numpy as np
import pytest
from autograd import grad
from autograd.core import SparseObject
import autograd.numpy as anp

from lrtdense import kernels as K
from lrtdense.autodiff import Fresh, kernel
from lrtdense.workspace import Workspace
from helpers import directional_fd_check
import oracle


def _positive(rng, shape):
    return rng.uniform(0.2, 1.5, shape)


# name -> (kernel call on a list of differentiable args, oracle call, arg maker)
def _cases():
    x = lambda r: r.standard_normal((5, 4))
    w = lambda r: r.standard_normal((4, 3))
    o = lambda r: r.standard_normal((5, 3))
    return {
        "posterior_scale": (lambda a: K.posterior_scale(a[0]), lambda a: oracle.posterior_scale(a[0]),
                            lambda r: [r.standard_normal((4, 3)) * 3]),
        "softplus": (lambda a: K.softplus(a[0]), lambda a: oracle.softplus(a[0]),
                     lambda r: [r.standard_normal((4, 3)) * 3]),
        "normal_sample": (lambda a: K.normal_sample(*a), lambda a: a[2] * a[1] + a[0],
                          lambda r: [w(r), _positive(r, (4, 3)), w(r)]),
        "dense": (lambda a: K.dense(*a), lambda a: oracle.matmul(*a), lambda r: [x(r), w(r)]),
        "lrt": (lambda a: K.lrt(*a),
                lambda a: oracle.matmul(a[0], a[1]) + a[3] * oracle.sqrt0(oracle.matmul(a[0] ** 2, a[2] ** 2)),
                lambda r: [x(r), w(r), _positive(r, (4, 3)), o(r)]),
        "reparameterization": (lambda a: K.reparameterization(*a),
                               lambda a: oracle.matmul(a[0], a[3] * a[2] + a[1]),
                               lambda r: [x(r), w(r), _positive(r, (4, 3)), w(r)]),
        "flipout": (lambda a: K.flipout(*a),
                    lambda a: oracle.matmul(a[0], a[1]) + oracle.matmul(a[0] * a[4], a[3] * a[2]) * a[5],
                    lambda r: [x(r), w(r), _positive(r, (4, 3)), w(r),
                               np.sign(r.standard_normal((5, 4))), np.sign(r.standard_normal((5, 3)))]),
        "per_example": (lambda a: K.per_example(*a),
                        lambda a: anp.einsum("bi,bio->bo", a[0], a[1] + a[2] * a[3]),
                        lambda r: [x(r), w(r), _positive(r, (4, 3)), r.standard_normal((5, 4, 3))]),
        "add_bias": (lambda a: K.add_bias(*a), lambda a: a[0] + a[1],
                     lambda r: [o(r), r.standard_normal(3)]),
        "relu": (lambda a: K.relu(a[0]), lambda a: oracle.ACTIVATIONS["relu"](a[0]), lambda r: [o(r)]),
        "tanh": (lambda a: K.tanh(a[0]), lambda a: anp.tanh(a[0]), lambda r: [o(r)]),
        "sigmoid": (lambda a: K.sigmoid(a[0]), lambda a: oracle.ACTIVATIONS["sigmoid"](a[0]), lambda r: [o(r)]),
        "elu": (lambda a: K.elu(a[0]), lambda a: oracle.ACTIVATIONS["elu"](a[0]), lambda r: [o(r)]),
        "kl_normal_normal": (lambda a: K.kl_normal_normal(a[0], a[1], 0.3, 0.7),
                             lambda a: oracle.kl_normal(a[0], a[1], 0.3, 0.7),
                             lambda r: [w(r), _positive(r, (4, 3))]),
        "kl_normal_normal_0": (lambda a: K.kl_normal_normal(a[0], a[1], 0.0, 1.0),
                               lambda a: oracle.kl_normal(a[0], a[1], 0.0, 1.0),
                               lambda r: [w(r), _positive(r, (4, 3))]),
        "clip": (lambda a: K.clip(a[0], -0.5, 0.4), lambda a: oracle.clip(a[0], -0.5, 0.4),
                 lambda r: [r.standard_normal((4, 3))]),
        "kl_kingma": (lambda a: K.kl_kingma(a[0]), lambda a: oracle.kl_kingma(a[0]),
                      lambda r: [-np.abs(r.standard_normal((4, 3))) * 3]),
        "kl_molchanov": (lambda a: K.kl_molchanov(a[0]), lambda a: oracle.kl_molchanov(a[0]),
                         lambda r: [r.standard_normal((4, 3)) * 4]),
        "scale_from_log_alpha": (lambda a: K.scale_from_log_alpha(*a),
                                 lambda a: anp.sqrt(anp.exp(a[1])) * anp.abs(a[0]),
                                 lambda r: [w(r), -np.abs(w(r))]),
        "scale_from_log_variance": (lambda a: K.scale_from_log_variance(a[0]),
                                    lambda a: anp.sqrt(anp.exp(a[0])), lambda r: [w(r)]),
        "sparse_log_alpha": (lambda a: K.sparse_log_alpha(a[0], a[1], -8.0, 8.0),
                             lambda a: oracle.clip(a[1] - anp.log(a[0] ** 2 + 1e-8), -8.0, 8.0),
                             lambda r: [w(r), w(r) * 4]),
        "kl_normal_normal_trainable": (lambda a: K.kl_normal_normal(*a), lambda a: oracle.kl_normal(*a),
                                       lambda r: [w(r), _positive(r, (4, 3)), w(r), _positive(r, (4, 3))]),
        "normal_log_prob": (lambda a: K.normal_log_prob(*a), lambda a: oracle.normal_log_prob(*a),
                            lambda r: [w(r), w(r), _positive(r, (4, 3))]),
        "normal_log_prob_of_sample": (
            lambda a: K.normal_log_prob_of_sample(a[0], FIXED_EPS),
            lambda a: oracle.normal_log_prob(FIXED_LOC + a[0] * FIXED_EPS, FIXED_LOC, a[0]),
            lambda r: [_positive(r, (4, 3))]),
        "scale_mixture_log_prob": (lambda a: K.scale_mixture_log_prob(a[0], 0.25, 1.5, 0.1),
                                   lambda a: oracle.scale_mixture_log_prob(a[0], 0.25, 1.5, 0.1),
                                   lambda r: [w(r)]),
        "laplace_log_prob": (lambda a: K.laplace_log_prob(a[0], 0.1, 0.5),
                             lambda a: oracle.laplace_log_prob(a[0], 0.1, 0.5), lambda r: [w(r)]),
        "student_t_log_prob": (lambda a: K.student_t_log_prob(a[0], 3.0, 0.1, 0.5),
                               lambda a: oracle.student_t_log_prob(a[0], 3.0, 0.1, 0.5),
                               lambda r: [w(r)]),
        "categorical_nll": (lambda a: K.categorical_nll(a[0], np.array([0, 2, 1, 1, 0])),
                            lambda a: oracle.per_example_nll(__import__("lrtdense").CategoricalLikelihood(),
                                                             {}, a[0], np.array([0, 2, 1, 1, 0])),
                            lambda r: [o(r)]),
        "gaussian_nll": (lambda a: K.gaussian_nll(a[0], a[1], a[2]),
                         lambda a: 0.5 * ((a[0] - a[1]) / a[2]) ** 2 + anp.log(a[2]) + 0.5 * np.log(2 * np.pi),
                         lambda r: [o(r), o(r), np.array(0.8)]),
    }


FIXED_EPS = np.random.default_rng(77).standard_normal((4, 3))
FIXED_LOC = np.random.default_rng(78).standard_normal((4, 3))
CASES = _cases()
EXTRA = {"kl_normal_normal": (0.3, 0.7),
         "clip": (-0.5, 0.4), "sparse_log_alpha": (-8.0, 8.0),
         "normal_log_prob_of_sample": (FIXED_EPS,), "scale_mixture_log_prob": (0.25, 1.5, 0.1),
         "laplace_log_prob": (0.1, 0.5), "student_t_log_prob": (3.0, 0.1, 0.5),
         "categorical_nll": (np.array([0, 2, 1, 1, 0]),)}
KERNEL_OF = {"kl_normal_normal_trainable": "kl_normal_normal"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_equals_the_oracle_and_finite_differences(name):
    kernel, reference, make = CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2 ** 32)
    args = make(rng)
    np.testing.assert_allclose(kernel(args), reference(args), rtol=1e-13, atol=1e-14)
    g = rng.standard_normal(np.shape(reference(args)))
    for i in range(len(args)):
        if name == "flipout" and i >= 4:
            continue            # signs: the gradient exists but +-1 is not a point to perturb
        f = lambda a, i=i: anp.sum(g * kernel(args[:i] + [a] + args[i + 1:]))
        fo = lambda a, i=i: anp.sum(g * reference(args[:i] + [a] + args[i + 1:]))
        np.testing.assert_allclose(grad(f)(args[i]), grad(fo)(args[i]), rtol=1e-12, atol=1e-13,
                                   err_msg=f"{name}: gradient w.r.t. argument {i}")
        directional_fd_check(f, [args[i]], 0, rng, h=1e-6, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_stays_float32_and_workspace_gives_the_same_bits(name):
    kernel, _, make = CASES[name]
    args = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in make(np.random.default_rng(1))]
    out = kernel(args)
    assert np.asarray(out).dtype == np.float32, name
    grads = grad(lambda a: anp.sum(kernel([a] + args[1:]) * 1.5))(args[0])
    assert grads.dtype == np.float32, name
    if name in ("gaussian_nll", "kl_normal_normal_0", "normal_log_prob_of_sample"):
        return
    kernel = getattr(K, KERNEL_OF.get(name, name))
    extra = tuple(e.astype(np.float32) if isinstance(e, np.ndarray) and e.dtype.kind == "f" else e
                  for e in EXTRA.get(name, ()))
    with_ws = kernel(*args, *extra, workspace=Workspace())
    assert np.array_equal(with_ws, out) and np.asarray(with_ws).dtype == np.float32


@pytest.mark.parametrize("name", sorted(set(CASES) - {"kl_normal_normal_0", "reparameterization"}))
def test_a_vjp_returns_the_cotangent_itself_or_fresh_arrays(name):
    """The contract value_and_grad sums in place on: a gradient marked Fresh shares no memory
    with the cotangent, an input, a residual, or another gradient; one not marked is the
    cotangent itself (or an add_into gradient). (``reparameterization`` is no kernel of its own:
    ``dense`` of ``normal_sample``, both checked here.)"""
    kernel = getattr(K, KERNEL_OF.get(name, name))
    _, reference, make = CASES[name]
    args = make(np.random.default_rng(2))
    extra = EXTRA.get(name, ())
    wanted = kernel.argnames[:len(args)]
    ws = Workspace()
    out, res = kernel.with_residuals(*args, *extra, needs=wanted, workspace=ws)
    g = np.random.default_rng(3).standard_normal(np.shape(out))
    grads = kernel.bwd(res, g, wanted)
    assert sorted(grads) == sorted(wanted), name
    flat_res = [r for r in _arrays(tuple(res))]
    dense = {k: (d.array if type(d) is Fresh else d) for k, d in grads.items()}
    for i, d in grads.items():
        if type(d) is SparseObject:
            continue
        if type(d) is not Fresh:
            assert d is g, f"{name}: gradient {i} is neither Fresh nor the cotangent"
            continue
        others = [g] + list(args) + flat_res + [e for j, e in dense.items()
                                                if j != i and type(e) is not SparseObject]
        assert not any(np.shares_memory(d.array, a) for a in others if isinstance(a, np.ndarray)), \
            f"{name}: gradient {i} shares memory"


def _arrays(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays(v)


# ----------------------------------------------------------------------------- conventions
def test_ties_follow_tensorflow():
    z = np.array([-1.0, 0.0, 2.0])
    assert list(grad(lambda a: anp.sum(K.relu(a)))(z)) == [0.0, 0.0, 1.0]         # relu'(0) = 0
    np.testing.assert_array_equal(grad(lambda a: anp.sum(K.elu(a)))(z), [np.exp(-1.0), 1.0, 1.0])
    np.testing.assert_array_equal(grad(lambda a: anp.sum(K.clip(a, -1.0, 0.0)))(z), [1.0, 1.0, 0.0])
    # zero variance: an all-zero input row gives s = 0 and d/dscale = 0, not 0 * inf = NaN
    assert np.all(grad(lambda s: anp.sum(K.lrt(np.zeros((1, 2)), np.ones((2, 1)), s,
                                               np.ones((1, 1)))))(np.ones((2, 1))) == 0.0)
    # VD: the Kingma layer's log alpha clipped at 0 passes its gradient in full at 0
    la = np.zeros((1, 1))
    assert grad(lambda a: K.kl_kingma(K.clip(a, -np.inf, 0.0)))(la)[0, 0] == \
        grad(lambda a: K.kl_kingma(a))(la)[0, 0] != 0


def test_lrt_at_an_all_zero_row_is_the_limit():
    """Row 1 of x is zero: its s is 0 and its output cannot depend on the scales; the gradients
    are finite, and equal those with that row removed (plus its loc-path contribution, 0)."""
    rng = np.random.default_rng(4)
    x, loc, scale, eps = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), \
        _positive(rng, (4, 2)), rng.standard_normal((3, 2))
    x[1] = 0
    f = lambda s, xx, e: anp.sum(K.lrt(xx, loc, s, e) ** 2)
    g_all = grad(f)(scale, x, eps)
    g_cut = grad(f)(scale, x[[0, 2]], eps[[0, 2]])
    assert np.all(np.isfinite(g_all)) and np.allclose(g_all, g_cut, rtol=1e-14)
    assert np.all(np.isfinite(grad(f, 1)(scale, x, eps)))


def test_softplus_agrees_with_tensorflows_thresholded_formula():
    # below its threshold t = log(eps) + 2 TF returns exp(u), dropping softplus's relative term
    # -exp(u) / 2: at most exp(t) / 2 = 7.39 eps / 2 (8.2e-16 in float64, 4.4e-7 in float32)
    for dtype in (np.float64, np.float32):
        rtol = 7.39 * np.finfo(dtype).eps / 2 * 1.05 + np.finfo(dtype).eps
        t = np.log(np.finfo(dtype).eps) + 2
        u = np.concatenate([np.linspace(-60, 60, 2001), [t, -t, t - 1e-3, -t + 1e-3]]).astype(dtype)
        e = np.exp(np.minimum(u, -t))
        tf = np.where(u > -t, u, np.where(u < t, e, np.log1p(e)))
        got = K.softplus(u)
        assert got.dtype == dtype
        assert np.max(np.abs(got - tf) / tf) <= rtol
    big = np.array([-800.0, 800.0])
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(K.softplus(big), [0.0, 800.0])
        np.testing.assert_array_equal(grad(lambda u: anp.sum(K.softplus(u)))(big), [0.0, 1.0])


def test_a_kernel_is_told_what_is_differentiated_and_is_first_order():
    seen = []

    @kernel
    def mul(a, b):
        """a * b."""

    @mul.forward
    def _(a, b, *, needs):
        seen.append(needs)
        return a * b, (a, b)

    @mul.backward
    def _(res, g, wanted):
        a, b = res
        return {name: {"a": g * b, "b": g * a}[name] for name in wanted}

    assert mul(2.0, 3.0) == 6.0 and seen[-1] == ()
    assert grad(lambda a: mul(a, 3.0))(2.0) == 3.0 and seen[-1] == ("a",)
    assert mul.__name__ == "mul" and mul.__doc__ == "a * b."


def test_value_and_grad_frees_each_kernels_residuals_once_its_vjp_has_run():
    # The reverse pass keeps a kernel's residuals only until its VJP has run (the step's memory
    # peak is in the backward pass): when the inner kernel's VJP runs, the outer one's residual
    # is gone. The gradient is that of the plain expression.
    import gc
    import weakref
    from lrtdense.autodiff import value_and_grad
    alive = {}

    @kernel
    def outer(a):
        """sum(a * 2)."""

    @outer.forward
    def _(a):
        big = np.full(1000, 2.0)
        alive["outer"] = weakref.ref(big)
        return float(np.sum(a * big[: a.size])), (big[: a.size],)

    @outer.backward
    def _(res, g, wanted):
        return {"a": g * res[0]}

    @kernel
    def inner(a):
        """a**2."""

    @inner.forward
    def _(a):
        return a * a, (a,)

    @inner.backward
    def _(res, g, wanted):
        gc.collect()
        alive["outer at the inner VJP"] = alive["outer"]() is not None
        return {"a": 2 * res[0] * g}

    x = np.array([1.0, -3.0])
    value, _, grads = value_and_grad(lambda p: (outer(inner(p["x"])), None), {"x": x})
    assert value == 20.0 and np.array_equal(grads["x"], 4 * x)
    assert alive["outer at the inner VJP"] is False
