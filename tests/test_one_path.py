"""The one training path against the plain autograd oracle (tests/oracle.py), for every layer class.

``fit`` and ``make_step`` compute the model's own loss through the kernels; the oracle writes the
same math with autograd.numpy alone. They must agree to 1e-12 relative in float64 for the
outputs, the KL, the loss and every gradient, and over a 3-epoch trajectory; and every bad input
must be refused by ``fit`` with the same error whatever the layer class.
"""
import numpy as np
import pytest
from autograd import grad

import lrtdense as L
from lrtdense import tree
from lrtdense.autodiff import value_and_grad
from lrtdense.optimizers import adam
from lrtdense.training import make_step
from lrtdense.workspace import Workspace
import oracle

CLASSES = [L.DenseLocalReparameterization, L.DenseReparameterization, L.DenseFlipout,
           L.DenseVariationalDropout, L.DenseSparseVariationalDropout, L.DenseVariational]
TFP = CLASSES[:3]
PRIOR_VARIANTS = {  # priors and divergences of the TFP estimators (kernel and a Normal bias)
    "mixture_mc": dict(kernel_prior=L.ScaleMixturePrior(0.25, 1.5, 0.1), kernel_divergence="monte_carlo",
                       bias_posterior="normal", bias_prior=L.LaplacePrior(0.1, 0.5),
                       bias_divergence=L.MonteCarloKL(0.5)),
    "trainable_kl": dict(kernel_prior=L.TrainableNormalPrior(), bias_posterior="normal",
                         bias_prior=L.TrainableNormalPrior(), kernel_divergence=L.ClosedFormKL(0.02)),
    "student_extra": dict(kernel_prior=L.StudentTPrior(3, 0.1, 0.5),
                          kernel_divergence=L.MonteCarloKL(sample="extra"),
                          bias_prior=L.ScaleMixturePrior()),
}


def _layers(cls, dtype="float64", variant=0):
    """Three layers of ``cls``; the TFP variants cover the bias and prior settings."""
    if isinstance(variant, str):
        return [cls(7, "relu", dtype=dtype, **PRIOR_VARIANTS[variant]), cls(5, "tanh", dtype=dtype),
                cls(3, dtype=dtype, **PRIOR_VARIANTS[variant])]
    acts = [("relu", "tanh", None), ("elu", "sigmoid", "softplus")][variant % 2]
    if cls is L.DenseVariational:
        extra = [{}, {"prior": "fixed", "kl_weight": 0.1}, {"kl_use_exact": True, "use_bias": False},
                 {"kl_use_exact": True, "prior": "fixed"}][variant]
        return [cls(7, acts[0], dtype=dtype, **extra), cls(5, acts[1], dtype=dtype),
                cls(3, acts[2], dtype=dtype, **extra)]
    if cls in TFP:
        extra = [{}, {"bias_posterior": "normal", "bias_prior": L.NormalPrior(0.5, 2.0),
                      "kernel_prior": L.NormalPrior(0.3, 0.7)},
                 {"kernel_prior": None, "bias_posterior": None},
                 {"bias_prior": L.NormalPrior(0.0, 1.5)}][variant]
        return [cls(7, acts[0], dtype=dtype, **extra), cls(5, acts[1], dtype=dtype),
                cls(3, acts[2], dtype=dtype, **extra)]
    return [cls(7, acts[0], dtype=dtype), cls(5, acts[1], dtype=dtype, use_bias=variant < 2),
            cls(3, acts[2], dtype=dtype)]


def _likelihood(kind):
    return {"categorical": L.CategoricalLikelihood(), "gaussian": L.GaussianLikelihood(0.7),
            "learned": L.GaussianLikelihood(0.7, learn_scale=True)}[kind]


def _data(kind, rng, n, shape=(6,)):
    x = rng.standard_normal((n,) + shape)
    x[2] = 0.0          # an all-zero row: s == 0 in the first layer
    y = rng.integers(0, 3, (n,) + shape[:-1]) if kind == "categorical" else \
        rng.standard_normal((n,) + shape[:-1] + (3,))
    return x, y


def _spread(params, rng):
    """Larger, non-default params so that every term of the math shows."""
    return tree.map(lambda p: (rng.normal(0, 0.5, p.shape) + (1.0 if p.ndim == 0 else 0.0)).astype(p.dtype),
                    params)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _check_against_oracle(model, params, x, y, seed, kl_weight=0.7, num_examples=50):
    noise = model.network.sample_noise(np.random.default_rng(seed), x.shape)
    out, kl = model.forward(params, x, noise=noise)
    ref_out, ref_kl = oracle.network_forward(model.network, params["network"], x, noise)
    assert _rel(out, ref_out) <= 1e-12 and _rel(kl, ref_kl) <= 1e-12
    for mode in model.network.layers[0].MODES[1:]:
        assert _rel(model.forward(params, x, mode=mode)[0],
                    oracle.network_forward(model.network, params["network"], x, None, mode)[0]) <= 1e-12

    def objective(p, xb, yb):
        loss, nll, k = model.loss(p, xb, yb, noise=noise, num_examples=num_examples,
                                  kl_weight=kl_weight, workspace=workspace)
        return loss, (nll, k)

    workspace = Workspace()
    loss, (nll, k), grads = value_and_grad(objective, params, x, y, workspace=workspace)
    ref_loss, ref_nll, ref_k = oracle.loss(model, params, x, y, noise, num_examples, kl_weight)
    ref_grads = grad(lambda p: oracle.loss(model, p, x, y, noise, num_examples, kl_weight)[0])(params)
    assert _rel(loss, ref_loss) <= 1e-12 and _rel(nll, ref_nll) <= 1e-12 and _rel(k, ref_k) <= 1e-12
    for path, ref in tree.flatten(ref_grads).items():
        got = tree.flatten(grads)[path]
        assert got.shape == ref.shape and got.dtype == ref.dtype, path
        assert _rel(got, ref) <= 1e-12, (path, _rel(got, ref))
    # the same bits without a workspace; plain autograd.grad through the kernels agrees
    def bare(p, xb, yb):
        return model.loss(p, xb, yb, noise=noise, num_examples=num_examples,
                          kl_weight=kl_weight)[0], ()

    again = value_and_grad(bare, params, x, y)[2]
    plain = grad(lambda p: bare(p, x, y)[0])(params)
    for path, got in tree.flatten(grads).items():
        assert np.array_equal(got, tree.flatten(again)[path]), path
        assert _rel(tree.flatten(plain)[path], got) <= 1e-14, path


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_loss_and_every_gradient_equal_the_oracle(cls, variant):
    kind = ["categorical", "gaussian", "learned", "categorical"][variant]
    model = L.Model(L.Sequential(_layers(cls, variant=variant)), _likelihood(kind))
    rng = np.random.default_rng(10 + variant)
    params = _spread(model.init(rng, 6), rng)
    x, y = _data(kind, rng, 9)
    _check_against_oracle(model, params, x, y, seed=variant)


@pytest.mark.parametrize("cls", TFP)
@pytest.mark.parametrize("variant", sorted(PRIOR_VARIANTS))
def test_priors_and_divergences_equal_the_oracle(cls, variant):
    model = L.Model(L.Sequential(_layers(cls, variant=variant)), _likelihood("categorical"))
    rng = np.random.default_rng(20)
    params = _spread(model.init(rng, 6), rng)
    x, y = _data("categorical", rng, 9)
    _check_against_oracle(model, params, x, y, seed=5)


@pytest.mark.parametrize("cls", CLASSES)
def test_rank3_inputs_equal_the_oracle_and_train_through_fit(cls):
    model = L.Model(L.Sequential(_layers(cls)), L.CategoricalLikelihood())
    rng = np.random.default_rng(3)
    params = _spread(model.init(rng, 6), rng)
    x, y = _data("categorical", rng, 5, shape=(4, 6))
    _check_against_oracle(model, params, x, y, seed=4)
    out, history = L.fit(model, params, x, y, rng=rng, epochs=2, batch_size=2, verbose=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


def _oracle_fit(model, params, x, y, seed, epochs, batch_size, step_size):
    """fit's loop written out with the oracle's gradients: the same shuffles, the same noise
    (drawn layer by layer from the same generator), Adam from lrtdense (tested on its own)."""
    rng = np.random.default_rng(seed)
    opt = adam(step_size)
    state = opt.init(params)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            p = opt.get_params(state)
            noise = model.network.sample_noise(rng, x[idx].shape)
            f = lambda q: oracle.loss(model, q, x[idx], y[idx], noise, len(x))[0]
            total += float(f(p))
            state = opt.update(state, grad(f)(p))
        losses.append(total / -(-len(x) // batch_size))
    return opt.get_params(state), losses


@pytest.mark.parametrize("cls", CLASSES)
def test_three_epochs_of_fit_equal_the_oracle(cls):
    """43 examples in batches of 10: the short last batch changes every buffer's shape."""
    model = L.Model(L.Sequential(_layers(cls, variant=1 if cls in TFP else 0)),
                    L.CategoricalLikelihood())
    rng = np.random.default_rng(1)
    params = model.init(rng, 6)
    x, y = _data("categorical", rng, 43)
    got, history = L.fit(model, params, x, y, rng=np.random.default_rng(2), epochs=3, batch_size=10,
                         optimizer=adam(0.01), verbose=False)
    ref, ref_losses = _oracle_fit(model, params, x, y, 2, 3, 10, 0.01)
    np.testing.assert_allclose(history["loss"], ref_losses, rtol=1e-12)
    for path, value in tree.flatten(ref).items():
        assert _rel(tree.flatten(got)[path], value) <= 1e-12, path


@pytest.mark.parametrize("cls", CLASSES)
def test_same_seed_same_bits_float32(cls):
    model = L.Model(L.Sequential(_layers(cls, dtype="float32")), L.CategoricalLikelihood())
    rng = np.random.default_rng(0)
    params = model.init(rng, 6)
    x, y = _data("categorical", rng, 30)
    runs = [L.fit(model, params, x, y, rng=np.random.default_rng(5), epochs=2, batch_size=8,
                  verbose=False)[0] for _ in range(2)]
    for path, value in tree.flatten(runs[0]).items():
        assert value.dtype == np.float32 and np.array_equal(value, tree.flatten(runs[1])[path])


def test_a_steady_step_allocates_nothing_new():
    model = L.Model(L.Sequential(_layers(L.DenseFlipout, dtype="float32")), L.CategoricalLikelihood())
    rng = np.random.default_rng(0)
    opt = adam()
    state = opt.init(model.init(rng, 6))
    step = make_step(model, opt, 100)
    x, y = _data("categorical", rng, 16)
    x = x.astype(np.float32)
    state = step(state, x, y, rng)[0]
    held = step.workspace.nbytes
    for _ in range(3):
        state = step(state, x, y, rng)[0]
    assert step.workspace.nbytes == held > 0


# ------------------------------------------------------------------------------ bad input
BAD = [
    ("labels -1", lambda x, y: (x, np.where(np.arange(len(y)) == 0, -1, y)), {}, ValueError,
     r"labels must lie in \[0, 3\)"),
    ("labels >= k", lambda x, y: (x, y + 3), {}, ValueError, r"labels must lie in \[0, 3\)"),
    ("labels (N, 1)", lambda x, y: (x, y[:, None]), {}, ValueError, r"expected labels of shape \(20,\)"),
    ("one-hot labels", lambda x, y: (x, np.eye(3, dtype=int)[y]), {}, ValueError, "one-hot"),
    ("float labels", lambda x, y: (x, y.astype(float)), {}, TypeError, "integer class indices"),
    ("float one-hot labels", lambda x, y: (x, np.eye(3)[y]), {}, TypeError,
     r"^one-hot labels are refused: pass integer class indices of shape \(20,\)"),
    ("complex x", lambda x, y: (x + 1j, y), {}, TypeError, "real floating"),
    ("integer x", lambda x, y: (np.ones(x.shape, int), y), {}, TypeError, "real floating"),
    ("rank-1 x", lambda x, y: (x[:, 0], y), {}, ValueError, "rank >= 2"),
    ("wrong last axis", lambda x, y: (x[:, :5], y), {}, ValueError,
     r"expected x.shape\[-1\] == 6 to match"),
    ("length mismatch", lambda x, y: (x, y[:-1]), {}, ValueError, "same length"),
    ("num_examples -40", lambda x, y: (x, y), {"num_examples": -40}, ValueError,
     "num_examples .* integer >= 1"),
    ("num_examples 0", lambda x, y: (x, y), {"num_examples": 0}, ValueError, "integer >= 1"),
    ("num_examples 2.5", lambda x, y: (x, y), {"num_examples": 2.5}, ValueError, "integer >= 1"),
    ("kl_weight nan", lambda x, y: (x, y), {"kl_weight": float("nan")}, ValueError,
     "kl_weight must be a finite number"),
    ("kl_weight -1", lambda x, y: (x, y), {"kl_weight": -1.0}, ValueError, "kl_weight"),
]


@pytest.mark.parametrize("name,change,kwargs,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_alike_for_every_layer_class(name, change, kwargs, error, match):
    messages = set()
    for cls in CLASSES:
        model = L.Model(L.Sequential(_layers(cls)), L.CategoricalLikelihood())
        rng = np.random.default_rng(0)
        params = model.init(rng, 6)
        x, y = change(*_data("categorical", rng, 20))
        with pytest.raises(error, match=match) as info:
            L.fit(model, params, x, y, rng=rng, epochs=1, batch_size=8, verbose=False, **kwargs)
        messages.add(str(info.value).replace("kernel_posterior_loc", "KERNEL")
                     .replace("kernel_theta", "KERNEL").replace("posterior_constant", "KERNEL"))
    assert len(messages) == 1, messages


def test_params_of_any_memory_order_train_alike():
    model = L.Model(L.Sequential(_layers(L.DenseLocalReparameterization)), L.CategoricalLikelihood())
    rng = np.random.default_rng(0)
    params = model.init(rng, 6)
    fortran = tree.map(np.asfortranarray, params)
    x, y = _data("categorical", rng, 20)
    a = L.fit(model, params, x, y, rng=np.random.default_rng(1), epochs=2, verbose=False)[0]
    b = L.fit(model, fortran, x, y, rng=np.random.default_rng(1), epochs=2, verbose=False)[0]
    for path, value in tree.flatten(a).items():
        assert np.array_equal(value, tree.flatten(b)[path]), path


@pytest.mark.parametrize("cls", [L.DenseLocalReparameterization, L.DenseReparameterization])
def test_several_samples_average_the_loss_and_its_gradient(cls):
    """num_samples=S: the loss and every gradient are the mean of S one-sample ones, the noise
    has a leading axis of S, drawn sample after sample; fit trains with it."""
    model = L.Model(L.Sequential(_layers(cls, variant="mixture_mc" if cls in TFP else 0)),
                    L.CategoricalLikelihood())
    rng = np.random.default_rng(30)
    params = _spread(model.init(rng, 6), rng)
    x, y = _data("categorical", rng, 9)
    noise = model.sample_noise(np.random.default_rng(1), x.shape, num_samples=3)
    assert all(a.shape[0] == 3 for a in tree.leaves(noise))
    f = lambda p, nz, s: model.loss(p, x, y, noise=nz, num_examples=40, num_samples=s)[0]
    singles = [tree.map(lambda a: a[s], noise) for s in range(3)]
    np.testing.assert_allclose(f(params, noise, 3), np.mean([f(params, n, 1) for n in singles]),
                               rtol=1e-13)
    g3 = grad(f)(params, noise, 3)
    g1 = [grad(f)(params, n, 1) for n in singles]
    for path, value in tree.flatten(g3).items():
        mean = np.mean([tree.flatten(g)[path] for g in g1], axis=0)
        assert _rel(value, mean) <= 1e-13, path
    # rng draws sample after sample: the same as the stacked noise
    a = model.loss(params, x, y, np.random.default_rng(1), num_examples=40, num_samples=3)[0]
    assert a == f(params, noise, 3)
    with pytest.raises(ValueError, match="leading axis of 3"):
        f(params, singles[0], 3)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        L.fit(model, params, x, y, rng=rng, epochs=1, num_samples=0, verbose=False)
    out, history = L.fit(model, params, x, y, rng=rng, epochs=2, batch_size=4, num_samples=3,
                         verbose=False)
    assert np.isfinite(history["loss"]).all()
