"""Record fixtures from the real TensorFlow Probability 0.25 for priors, divergences and
``tfp.layers.DenseVariational`` (issue 15).

Why this exists
---------------
Issue 15 extends lrtdense beyond the fixed Normal prior with its closed-form KL: scale-mixture,
Laplace and Student-t priors with Monte Carlo divergences, the closed-form KL scaled per layer
(``kl / num_examples``), trainable (empirical Bayes) Normal priors, and TFP's
``DenseVariational`` (dense_variational_v2) with the regression tutorial's
``posterior_mean_field`` / ``prior_trainable``.  These fixtures are the ground truth those
features are checked against: what real TFP computes, including every random draw it makes
(the forward's kernel/bias/sign draws *and* the draws a Monte Carlo divergence makes inside
``kernel_divergence_fn``), so that a TensorFlow-free replay can reproduce each number.
``docs/tfp_semantics.md`` is the written account of the same semantics, with source references;
``tests/test_tfp_priors_fixtures.py`` replays every fixture with an independent NumPy + autograd
oracle.

For each case the script

1. builds the TFP layer (tf-keras, ``TF_USE_LEGACY_KERAS=1``) with an explicit layer name by
   calling it once on ``x`` (Keras' implicit build, so ``layer.weights`` carry the names a user
   sees), then overwrites every weight with ``layer.set_weights`` using values drawn from
   ``numpy.random.default_rng(crc32(case name))`` in ``layer.weights`` order;
2. calls ``tf.random.set_seed(seed)`` and calls the layer again inside a ``tf.GradientTape``
   watching ``x``, capturing every draw TFP makes (``samplers.normal`` / ``samplers.uniform`` and
   friends are wrapped at module level in ``tensorflow_probability.python.internal.samplers``;
   ``tfp_random.rademacher`` as seen from ``layers/dense_variational.py`` is wrapped too);
3. computes ``L = sum(g * outputs) + sum(sum(loss) for loss in layer.losses)`` with a fixed
   random cotangent ``g`` and takes ``dL/dx`` and ``dL/dw`` for every weight of ``layer.weights``
   (prior variables included).

Output, per case, in OUTDIR (default ``tests/fixtures/tfp_priors``):

* ``<case>.npz`` - plain arrays (``np.load(..., allow_pickle=False)``), all in the layer dtype
  except ``raw/*`` (int64).  Keys:

  - ``x``, ``g``, ``outputs``;
  - every weight under its TFP name with the layer-name prefix and ``:0`` removed
    (``kernel_posterior_loc``, ``kernel_prior_untransformed_scale``, ``posterior/constant``, ...);
  - ``loss/<name>``: each entry of ``layer.losses`` separately (``divergence_kernel``,
    ``divergence_bias`` for the _DenseVariational layers; ``kl_divergence`` for DenseVariational);
  - ``grad/x`` and ``grad/<weight name>``;
  - ``eps/<role>``: every standard-normal draw exactly as ``samplers.normal`` returned it (a
    leading sample axis of size 1 removed), roles ``kernel``, ``bias``, ``kernel_divergence``,
    ``bias_divergence``, ``posterior``, ``prior``; ``raw/<role>`` the int64 uniforms behind the
    Flipout signs and ``sign/<role>`` the +-1 signs ``rademacher`` returned;
  - sampled tensors: ``kernel_tensor`` (Reparameterization's W; Flipout's Normal(0, scale) draw),
    ``affine_loc`` / ``affine_scale`` / ``affine_tensor`` (LRT), ``bias_tensor``,
    ``kernel_divergence_tensor`` / ``bias_divergence_tensor`` (a weight drawn inside the
    divergence fn), ``posterior_tensor`` / ``prior_tensor`` (DenseVariational's flat draws);
  - derived quantities for checking: ``*_scale`` (TFP's transformed scales),
    ``aux/<kernel|bias>_log_q`` and ``aux/<kernel|bias>_log_p`` (the two log densities inside a
    Monte Carlo divergence), ``aux/kernel``, ``aux/bias`` (DenseVariational's split).

* ``<case>.json`` - a plain-JSON description from which the model can be rebuilt without
  guessing (layer class, units, activation, dtype, input shape, posteriors, priors with their
  parameters, divergences with their type, sample and scaling, DenseVariational's settings),
  the weights in ``layer.weights`` order with TFP's full names, the losses in order, the draws
  in the order TFP made them, versions, notes.

The npz files are written with a fixed zip timestamp and sorted keys, so a re-run on the same
machine reproduces them byte for byte.

How to run
----------
From the repository root, with a virtualenv holding TensorFlow (never a dependency of
lrtdense)::

    python3 -m venv .venv-tf
    .venv-tf/bin/pip install tensorflow-cpu==2.18.1 tf-keras==2.18.0 \
        tensorflow-probability==0.25.0
    TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python tools/record_tfp_priors.py [OUTDIR]

``--check`` records into a temporary directory and compares with OUTDIR: JSON equal, npz keys,
dtypes and shapes equal, values within float64 1e-12 / float32 1e-5 of max|array| (float32
matmuls differ in the last bit between CPUs); it says how many files were byte-identical.
A run takes about 12 seconds on an idle 2-core CPU machine (half of it importing TensorFlow); the
fixtures total about 330 KB.
"""

import io
import json
import os
import sys
import tempfile
import zipfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _outdir  # noqa: E402  (tools/_outdir.py: never record over files unasked)

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from tensorflow_probability.python.internal import samplers as tfp_samplers  # noqa: E402
from tensorflow_probability.python.layers import dense_variational as tfp_dv_module  # noqa: E402

tfd = tfp.distributions

VERSIONS = {
    "tensorflow": tf.__version__,
    "tf_keras": tf_keras.__version__,
    "tensorflow_probability": tfp.__version__,
    "numpy": np.__version__,
}

LAYERS = {
    "lrt": "DenseLocalReparameterization",
    "reparam": "DenseReparameterization",
    "flipout": "DenseFlipout",
    "dv": "DenseVariational",
}
# Explicit layer names so that the full variable names do not depend on Keras' instance counter.
LAYER_NAMES = {
    "lrt": "dense_local_reparameterization",
    "reparam": "dense_reparameterization",
    "flipout": "dense_flipout",
    "dv": "dense_variational",
}

NUM_EXAMPLES = 50  # the N of the "/ num_examples" idiom and of kl_weight = 1 / N
TUTORIAL_C = float(np.log(np.expm1(1.0)))  # posterior_mean_field's c = softplus^-1(1)

# --------------------------------------------------------------------------
# Capturing TFP's random draws.
#
# Every TFP distribution draws through ``tensorflow_probability.python.internal.samplers``
# (``Normal._sample_n``: ``samplers.normal(shape, mean=0., stddev=1., dtype, seed)`` then
# ``sampled * scale + loc``), looking the function up on the module at call time, so replacing
# the module attributes records every draw, in order.  DenseFlipout's signs come from
# ``tfp_random.rademacher`` (imported into layers/dense_variational.py), which itself draws
# ``samplers.uniform(shape, maxval=2, dtype=int64)`` and returns ``2 * u - 1`` cast to the layer
# dtype; the proxy below keeps those +-1 values as well.
# --------------------------------------------------------------------------

_DRAWS = []       # (sampler function name, array) for every samplers.* call, in order
_SIGNS = []       # the +-1 tensors rademacher returned, in order
_SAMPLER_FNS = ("normal", "uniform", "gamma", "poisson", "categorical", "shuffle")


def _wrap_sampler(fn_name):
    orig = getattr(tfp_samplers, fn_name)

    def wrapper(*args, **kwargs):
        out = orig(*args, **kwargs)
        _DRAWS.append((fn_name, out.numpy()))
        return out

    return wrapper


for _fn in _SAMPLER_FNS:
    setattr(tfp_samplers, _fn, _wrap_sampler(_fn))


class _RademacherProxy:
    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if name != "rademacher":
            return attr

        def wrapper(*args, **kwargs):
            out = attr(*args, **kwargs)
            _SIGNS.append(out.numpy())
            return out

        return wrapper


tfp_dv_module.tfp_random = _RademacherProxy(tfp_dv_module.tfp_random)

# Values computed inside divergence fns during the recorded call (recorder-side bookkeeping).
_STASH = {}

# --------------------------------------------------------------------------
# Priors, posteriors and divergences, from their plain-JSON description.
# --------------------------------------------------------------------------


def _independent(dist, shape):
    return tfd.Independent(dist, reinterpreted_batch_ndims=len(shape))


def make_prior_fn(spec):
    """A ``kernel_prior_fn`` / ``bias_prior_fn`` ``(dtype, shape, name, trainable,
    add_variable_fn) -> tfd.Distribution`` from a JSON prior description (None: no prior)."""
    if spec is None:
        return None
    kind = spec["type"]
    if kind == "normal" and spec.get("tfp_fn") == "default_multivariate_normal_fn":
        return tfp.layers.default_multivariate_normal_fn
    if kind == "trainable_normal":
        return tfp.layers.default_mean_field_normal_fn()

    def fn(dtype, shape, name, trainable, add_variable_fn):
        del name, trainable, add_variable_fn
        shape = list(shape)
        c = lambda v: tf.constant(v, dtype=dtype)  # noqa: E731
        if kind == "normal":
            return _independent(tfd.Normal(loc=tf.fill(shape, c(spec["loc"])),
                                           scale=c(spec["scale"])), shape)
        if kind == "laplace":
            return _independent(tfd.Laplace(loc=tf.fill(shape, c(spec["loc"])),
                                            scale=c(spec["scale"])), shape)
        if kind == "student_t":
            return _independent(tfd.StudentT(df=c(spec["df"]), loc=tf.fill(shape, c(spec["loc"])),
                                             scale=c(spec["scale"])), shape)
        if kind == "scale_mixture_normal":
            # Blundell et al. 2015 (arXiv 1505.05424), eq. 7: pi N(0, s1^2) + (1 - pi) N(0, s2^2)
            # per weight; the components axis is last, as MixtureSameFamily wants it.
            mix = tfd.MixtureSameFamily(
                mixture_distribution=tfd.Categorical(
                    probs=tf.constant([spec["pi"], 1.0 - spec["pi"]], dtype=dtype)),
                components_distribution=tfd.Normal(
                    loc=tf.zeros(shape + [2], dtype=dtype),
                    scale=tf.constant([spec["sigma1"], spec["sigma2"]], dtype=dtype)))
            return _independent(mix, shape)
        raise ValueError(f"unknown prior type {kind!r}")

    return fn


def make_posterior_fn(spec):
    if spec is None:
        return None
    if spec["type"] == "normal":
        return tfp.layers.default_mean_field_normal_fn()
    if spec["type"] == "deterministic":
        return tfp.layers.default_mean_field_normal_fn(is_singular=True)
    raise ValueError(f"unknown posterior type {spec['type']!r}")


def make_divergence_fn(spec, which):
    """A ``kernel_divergence_fn`` / ``bias_divergence_fn`` ``(q, p, sample) -> Tensor``."""
    if spec is None:
        return None
    divide_by = spec.get("divide_by")

    def scaled(v):
        return v if divide_by is None else v / divide_by

    if spec["type"] == "kl_exact":
        return lambda q, p, _: scaled(tfd.kl_divergence(q, p))
    if spec["type"] == "mc":
        def fn(q, p, q_tensor):
            if spec["sample"] == "self_draw":
                q_tensor = q.sample()  # TFP passes None for LRT / Flipout kernels
                _STASH[which + "_divergence_tensor"] = q_tensor
            log_q, log_p = q.log_prob(q_tensor), p.log_prob(q_tensor)
            _STASH["aux/" + which + "_log_q"] = log_q
            _STASH["aux/" + which + "_log_p"] = log_p
            return scaled(log_q - log_p)
        return fn
    raise ValueError(f"unknown divergence type {spec['type']!r}")


def _tensor_fn(spec):
    if spec is None or spec.get("num_samples") is None:
        return lambda d: d.sample()
    s = spec["num_samples"]
    return lambda d: d.sample(s)


# The tutorial's functions (Probabilistic_Layers_Regression.ipynb, TFP 0.25), verbatim except
# for the optional number of posterior samples.
def posterior_mean_field(kernel_size, bias_size=0, dtype=None, num_samples=None):
    n = kernel_size + bias_size
    c = np.log(np.expm1(1.))
    to_tensor = (tfd.Distribution.sample if num_samples is None
                 else (lambda d: d.sample(num_samples)))
    return tf_keras.Sequential([
        tfp.layers.VariableLayer(2 * n, dtype=dtype),
        tfp.layers.DistributionLambda(lambda t: tfd.Independent(
            tfd.Normal(loc=t[..., :n],
                       scale=1e-5 + tf.nn.softplus(c + t[..., n:])),
            reinterpreted_batch_ndims=1), convert_to_tensor_fn=to_tensor),
    ])


def prior_trainable(kernel_size, bias_size=0, dtype=None):
    n = kernel_size + bias_size
    return tf_keras.Sequential([
        tfp.layers.VariableLayer(n, dtype=dtype),
        tfp.layers.DistributionLambda(lambda t: tfd.Independent(
            tfd.Normal(loc=t, scale=1),
            reinterpreted_batch_ndims=1)),
    ])


def prior_fixed(kernel_size, bias_size=0, dtype=None):
    """The fixed-prior variant: a standard Normal over the flat weight vector, no variables."""
    n = kernel_size + bias_size
    return tf_keras.Sequential([
        tfp.layers.DistributionLambda(lambda t: tfd.Independent(
            tfd.Normal(loc=tf.zeros(n, dtype=dtype), scale=1),
            reinterpreted_batch_ndims=1)),
    ])


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

STD_NORMAL = {"type": "normal", "loc": 0.0, "scale": 1.0,
              "tfp_fn": "default_multivariate_normal_fn"}
MIXTURE = {"type": "scale_mixture_normal", "pi": 0.25, "sigma1": 1.5, "sigma2": 0.1}
LAPLACE = {"type": "laplace", "loc": 0.0, "scale": 0.5}
STUDENT_T = {"type": "student_t", "df": 3.0, "loc": 0.0, "scale": 0.5}
TRAINABLE = {"type": "trainable_normal", "tfp_fn": "default_mean_field_normal_fn()"}
NORMAL_POST = {"type": "normal"}
DET_POST = {"type": "deterministic"}
KL = {"type": "kl_exact", "divide_by": None}
KL_N = {"type": "kl_exact", "divide_by": NUM_EXAMPLES}
MC = {"type": "mc", "sample": "layer", "divide_by": None}
MC_N = {"type": "mc", "sample": "layer", "divide_by": NUM_EXAMPLES}
MC_SELF = {"type": "mc", "sample": "self_draw", "divide_by": None}
MC_SELF_N = {"type": "mc", "sample": "self_draw", "divide_by": NUM_EXAMPLES}


def _case(name, est, dtype, input_shape=(5, 4), units=3, activation=None,
          kernel_prior=STD_NORMAL, kernel_divergence=KL, bias_posterior=DET_POST,
          bias_prior=None, bias_divergence=KL, num_samples=None, notes=""):
    return dict(name=name, est=est, dtype=dtype, input_shape=list(input_shape), units=units,
                activation=activation, kernel_posterior=NORMAL_POST, kernel_prior=kernel_prior,
                kernel_divergence=kernel_divergence if kernel_prior is not None else None,
                bias_posterior=bias_posterior, bias_prior=bias_prior,
                bias_divergence=(bias_divergence if bias_prior is not None
                                 and bias_posterior is not None else None),
                kernel_posterior_tensor={"num_samples": num_samples}, notes=notes)


def _dv_case(name, dtype, prior="trainable", kl_use_exact=False, kl_weight=None,
             input_shape=(5, 4), units=3, activation=None, use_bias=True, num_samples=None,
             notes=""):
    c = TUTORIAL_C
    return dict(
        name=name, est="dv", dtype=dtype, input_shape=list(input_shape), units=units,
        activation=activation, use_bias=use_bias, kl_use_exact=kl_use_exact,
        kl_weight=kl_weight,
        make_posterior_fn={
            "type": "posterior_mean_field", "c": c, "scale_offset": 1e-5,
            "num_samples": num_samples,
            "description": "VariableLayer(2n) -> t; Independent(Normal(loc=t[:n], "
                           "scale=1e-5 + softplus(c + t[n:])), 1); c = log(expm1(1)); "
                           "n = in * units + (units if use_bias else 0)"},
        make_prior_fn=({"type": "prior_trainable", "scale": 1.0,
                        "description": "VariableLayer(n) -> t; Independent(Normal(loc=t, "
                                       "scale=1), 1)"}
                       if prior == "trainable" else
                       {"type": "prior_fixed_normal", "loc": 0.0, "scale": 1.0,
                        "description": "Independent(Normal(loc=zeros(n), scale=1), 1); "
                                       "no variables"}),
        split={"kernel": "w[..., :in * units].reshape(w.shape[:-1] + (in, units)), row-major: "
                         "kernel[i, j] = w[i * units + j]",
               "bias": "w[..., in * units:] (absent when use_bias is false)",
               "outputs": "activation(x @ kernel + bias)"},
        divergence={
            "type": "kl_exact" if kl_use_exact else "mc",
            "formula": ("kl_weight * reduce_sum(kl_divergence(q, r))" if kl_use_exact else
                        "kl_weight * reduce_sum(q.log_prob(w) - r.log_prob(w)), w = the "
                        "posterior sample the forward uses (posterior_tensor); with S samples "
                        "the S terms are summed, not averaged"),
            "kl_weight_applied": "tf.cast(kl_weight, kl.dtype) * kl before the reduce_sum; "
                                 "no factor when kl_weight is null. tf.cast of a Python float "
                                 "goes through a float32 tensor, so the factor is "
                                 "float32(kl_weight) even in float64: see kl_weight_as_applied",
            "kl_weight_as_applied": (None if kl_weight is None else
                                     float(tf.cast(kl_weight, tf.float64).numpy()))},
        notes=notes)


def make_cases():
    cases = []
    for dt, tag in (("float64", "f64"), ("float32", "f32")):
        cases += [
            _case(f"reparam_{tag}_mixture_mc", "reparam", dt, activation="relu",
                  kernel_prior=MIXTURE, kernel_divergence=MC),
            _case(f"reparam_{tag}_laplace_mc", "reparam", dt, activation="tanh",
                  kernel_prior=LAPLACE, kernel_divergence=MC),
            _case(f"reparam_{tag}_student_t_mc", "reparam", dt,
                  kernel_prior=STUDENT_T, kernel_divergence=MC),
            _case(f"lrt_{tag}_mixture_mc_selfdraw", "lrt", dt, activation="relu",
                  kernel_prior=MIXTURE, kernel_divergence=MC_SELF),
            _case(f"flipout_{tag}_mixture_mc_selfdraw", "flipout", dt,
                  kernel_prior=MIXTURE, kernel_divergence=MC_SELF),
        ]
        for est in ("lrt", "reparam", "flipout"):
            cases.append(_case(f"{est}_{tag}_kl_scaled_normal_bias", est, dt,
                               activation="tanh", kernel_divergence=KL_N,
                               bias_posterior=NORMAL_POST, bias_prior=STD_NORMAL,
                               bias_divergence=KL_N))
        cases += [
            _case(f"lrt_{tag}_trainable_prior_kl_scaled", "lrt", dt, activation="relu",
                  kernel_prior=TRAINABLE, kernel_divergence=KL_N, bias_posterior=NORMAL_POST,
                  bias_prior=TRAINABLE, bias_divergence=KL_N),
        ]
        cases += [
            _dv_case(f"dv_{tag}_exact_trainable_klw", dt, kl_use_exact=True,
                     kl_weight=1.0 / NUM_EXAMPLES),
            _dv_case(f"dv_{tag}_mc_trainable_klw", dt, kl_weight=1.0 / NUM_EXAMPLES),
            _dv_case(f"dv_{tag}_mc_trainable", dt),
            _dv_case(f"dv_{tag}_exact_fixed", dt, prior="fixed", kl_use_exact=True),
            _dv_case(f"dv_{tag}_mc_fixed_klw", dt, prior="fixed",
                     kl_weight=1.0 / NUM_EXAMPLES),
        ]
    cases += [
        _case("reparam_f64_mixture_mc_scaled_normal_bias", "reparam", "float64",
              activation="sigmoid", kernel_prior=MIXTURE, kernel_divergence=MC_N,
              bias_posterior=NORMAL_POST, bias_prior=MIXTURE, bias_divergence=MC_N,
              notes="Bias divergence fn receives the layer's sampled bias (bias_tensor)."),
        _case("reparam_f64_trainable_prior_mc", "reparam", "float64", activation="tanh",
              kernel_prior=TRAINABLE, kernel_divergence=MC_N, bias_posterior=NORMAL_POST,
              bias_prior=TRAINABLE, bias_divergence=MC_N),
        _case("flipout_f64_trainable_prior_kl", "flipout", "float64",
              kernel_prior=TRAINABLE, kernel_divergence=KL, bias_posterior=NORMAL_POST,
              bias_prior=TRAINABLE, bias_divergence=KL),
        _case("lrt_f64_laplace_mc_selfdraw_scaled_normal_bias", "lrt", "float64",
              kernel_prior=LAPLACE, kernel_divergence=MC_SELF_N, bias_posterior=NORMAL_POST,
              bias_prior=LAPLACE, bias_divergence=MC_SELF_N,
              notes="Both divergence fns ignore the sample TFP passes and draw q.sample() "
                    "themselves (for the bias TFP passes the sampled bias; it is not used)."),
        _case("reparam_f64_mixture_mc_3samples", "reparam", "float64",
              kernel_prior=MIXTURE, kernel_divergence=MC, num_samples=3,
              notes="kernel_posterior_tensor_fn = lambda d: d.sample(3): W has shape "
                    "(3, in, units), outputs (3, batch, units) by matmul broadcasting; "
                    "loss/divergence_kernel is the vector of the 3 per-sample MC terms "
                    "(TFP adds it to layer.losses unreduced)."),
        _dv_case("dv_f64_mc_trainable_nobias_relu_rank3", "float64", use_bias=False,
                 activation="relu", input_shape=(2, 3, 4), kl_weight=1.0 / NUM_EXAMPLES),
        _dv_case("dv_f64_mc_trainable_3samples_nobias", "float64", num_samples=3,
                 use_bias=False, kl_weight=1.0 / NUM_EXAMPLES,
                 notes="posterior convert_to_tensor_fn = lambda d: d.sample(3): kernel "
                       "(3, in, units), outputs (3, batch, units); the MC KL is the SUM over "
                       "the 3 samples (reduce_mean over axis=() reduces nothing, then "
                       "reduce_sum), times kl_weight. use_bias=False because with a bias "
                       "TFP 0.25 fails: tf.nn.bias_add gets a (3, units) bias ('Biases must "
                       "be 1D')."),
        _dv_case("dv_f32_mc_trainable_nobias_relu_rank3", "float32", use_bias=False,
                 activation="relu", input_shape=(2, 3, 4), kl_weight=1.0 / NUM_EXAMPLES),
    ]
    return cases


def case_seed(name):
    return zlib.crc32(name.encode("utf-8"))


# --------------------------------------------------------------------------
# Building, weights, recording
# --------------------------------------------------------------------------

def build_layer(case):
    est = case["est"]
    if est == "dv":
        ns = case["make_posterior_fn"]["num_samples"]
        post = (posterior_mean_field if ns is None else
                (lambda k, b=0, dtype=None: posterior_mean_field(k, b, dtype, num_samples=ns)))
        prior = prior_trainable if case["make_prior_fn"]["type"] == "prior_trainable" \
            else prior_fixed
        return tfp.layers.DenseVariational(
            case["units"], post, prior, kl_weight=case["kl_weight"],
            kl_use_exact=case["kl_use_exact"], activation=case["activation"],
            use_bias=case["use_bias"], dtype=case["dtype"], name=LAYER_NAMES[est])
    kwargs = dict(
        units=case["units"], activation=case["activation"], dtype=case["dtype"],
        name=LAYER_NAMES[est],
        kernel_posterior_fn=make_posterior_fn(case["kernel_posterior"]),
        kernel_posterior_tensor_fn=_tensor_fn(case["kernel_posterior_tensor"]),
        kernel_prior_fn=make_prior_fn(case["kernel_prior"]),
        kernel_divergence_fn=make_divergence_fn(case["kernel_divergence"], "kernel"),
        bias_posterior_fn=make_posterior_fn(case["bias_posterior"]),
        bias_prior_fn=make_prior_fn(case["bias_prior"]),
        bias_divergence_fn=make_divergence_fn(case["bias_divergence"], "bias"))
    return getattr(tfp.layers, LAYERS[est])(**kwargs)


def strip_name(layer, name):
    prefix = layer.name + "/"
    if name.startswith(prefix):
        name = name[len(prefix):]
    if name.endswith(":0"):
        name = name[:-2]
    return name


def draw_weight(rng, name, shape, case):
    """Initial values: scales around softplus^-1 of a few tenths, priors near 1."""
    if name == "posterior/constant":
        n = shape[0] // 2
        return np.concatenate([rng.normal(0.0, 0.5, n), rng.normal(-2.0, 0.5, n)])
    if name == "prior/constant":
        return rng.normal(0.0, 0.5, shape)
    table = {
        "posterior_loc": (0.0, 0.5),
        "posterior_untransformed_scale": (-1.0, 0.5),
        "prior_loc": (0.1, 0.3),
        "prior_untransformed_scale": (0.3, 0.3),
    }
    for suffix, (m, s) in table.items():
        if name.endswith(suffix):
            return rng.normal(m, s, shape)
    raise ValueError(f"no initial-value rule for weight {name!r} in case {case['name']}")


def _np(t):
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t)


def _squeeze1(a, num_samples):
    return a[0] if num_samples is None else a


def _draw_roles(case, layer):
    """The draws TFP makes in one call, in order, as (sampler fn, role)."""
    est = case["est"]
    if est == "dv":
        return [("normal", "posterior")] + [("normal", "prior")]
    roles = [("normal", "kernel")]
    if est == "flipout":
        roles += [("uniform", "sign_input"), ("uniform", "sign_output")]
    if case["bias_posterior"] is not None and case["bias_posterior"]["type"] == "normal":
        roles.append(("normal", "bias"))
    for which in ("kernel", "bias"):
        d = case[which + "_divergence"]
        if d is not None and d["type"] == "mc" and d["sample"] == "self_draw":
            roles.append(("normal", which + "_divergence"))
    return roles


def record_case(case):
    name = case["name"]
    seed = case_seed(name)
    np_dtype = np.dtype(case["dtype"])
    rng = np.random.default_rng(seed)
    in_shape = tuple(case["input_shape"])
    x = rng.normal(0.0, 1.0, size=in_shape).astype(np_dtype)
    x_t = tf.constant(x)

    floatx = tf_keras.backend.floatx()
    if case["est"] == "dv":
        # DistributionLambda (a Keras Lambda layer) autocasts its float64 input to the floatx
        # policy, so a float64 DenseVariational with the tutorial's functions needs floatx
        # float64 (with floatx float32 the call fails in MatMul; see docs/tfp_semantics.md).
        tf_keras.backend.set_floatx(case["dtype"])
    try:
        layer = build_layer(case)
        layer(x_t)  # Keras' implicit build: the weight names a user sees
        weights_order = [strip_name(layer, w.name) for w in layer.weights]
        values = [draw_weight(rng, n, tuple(w.shape), case).astype(np_dtype)
                  for n, w in zip(weights_order, layer.weights)]
        layer.set_weights(values)
        for w, v, n in zip(layer.weights, values, weights_order):
            assert w.dtype == tf.as_dtype(np_dtype), (name, n, w.dtype)
            assert np.array_equal(w.numpy(), v)

        _DRAWS.clear()
        _SIGNS.clear()
        _STASH.clear()
        tf.random.set_seed(seed)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x_t)
            outputs = layer(x_t)
            losses = list(layer.losses)
        out_np = outputs.numpy()
        g = rng.normal(0.0, 1.0, size=out_np.shape).astype(np_dtype)
        g_t = tf.constant(g)
        with tape:
            L = tf.reduce_sum(g_t * outputs)
            for loss in losses:
                L = L + tf.reduce_sum(loss)
        sources = [x_t] + list(layer.weights)
        grads = tape.gradient(L, sources)
        del tape
        arrays, meta_extra = _collect(case, layer, x, g, out_np, losses, weights_order,
                                      grads, sources)
    finally:
        tf_keras.backend.set_floatx(floatx)

    for k, v in arrays.items():
        want = np.int64 if k.startswith("raw/") else np_dtype
        assert v.dtype == want, (name, k, v.dtype)

    meta = {"case": name, "layer": LAYERS[case["est"]], "layer_name": LAYER_NAMES[case["est"]]}
    meta.update({k: v for k, v in case.items() if k not in ("name", "est", "notes")})
    if case["est"] != "dv":
        _describe(meta)
    meta.update(meta_extra)
    meta.update({
        "objective": "L = sum(g * outputs) + sum over layer.losses of sum(loss)",
        "seed": seed,
        "keys": sorted(arrays),
        "versions": VERSIONS,
        "notes": _notes(case),
    })
    return arrays, meta


def _collect(case, layer, x, g, out_np, losses, weights_order, grads, sources):
    name = case["name"]
    est = case["est"]
    np_dtype = x.dtype
    arrays = {"x": x, "g": g, "outputs": out_np}
    weights_meta = []
    for w, n in zip(layer.weights, weights_order):
        arrays[n] = w.numpy()
        weights_meta.append({"name": n, "tfp_name": w.name, "shape": list(w.shape),
                             "trainable": any(w is t for t in layer.trainable_weights)})

    if est == "dv":
        loss_names = ["kl_divergence"]
    else:
        loss_names = []
        if layer.kernel_prior is not None and case["kernel_divergence"] is not None:
            loss_names.append("divergence_kernel")
        if layer.bias_posterior is not None and layer.bias_prior is not None:
            loss_names.append("divergence_bias")
    assert len(loss_names) == len(losses), (name, loss_names, losses)
    for ln, loss in zip(loss_names, losses):
        arrays["loss/" + ln] = loss.numpy()

    grads_none = []
    for src_name, gr, src in zip(["x"] + weights_order, grads, sources):
        if gr is None:
            grads_none.append(src_name)
            gr = np.zeros(src.shape, dtype=np_dtype)
        arrays["grad/" + src_name] = np.asarray(gr)
    grads_finite = bool(all(np.all(np.isfinite(arrays["grad/" + n]))
                            for n in ["x"] + weights_order))

    # The draws, matched to their roles.
    roles = _draw_roles(case, layer)
    got = [fn for fn, _ in _DRAWS]
    assert got == [fn for fn, _ in roles], (name, got, roles)
    draws_meta = []
    ns_kernel = case.get("kernel_posterior_tensor", {}).get("num_samples")
    ns_post = case.get("make_posterior_fn", {}).get("num_samples")
    for (fn, arr), (_, role) in zip(_DRAWS, roles):
        if fn == "normal":
            ns = ns_kernel if role == "kernel" else (ns_post if role == "posterior" else None)
            key = "eps/" + role
            arrays[key] = _squeeze1(arr, ns)
        else:
            key = "raw/" + role
            arrays[key] = arr.astype(np.int64)
        draws_meta.append({"key": key, "sampler": "samplers." + fn, "dtype": arr.dtype.name,
                           "shape_as_drawn": list(arr.shape), "role": role})
    if est == "flipout":
        assert len(_SIGNS) == 2, (name, len(_SIGNS))
        for role, s in zip(("sign_input", "sign_output"), _SIGNS):
            arrays["sign/" + role] = s
            assert np.array_equal(s, (2 * arrays["raw/" + role] - 1).astype(np_dtype))
    else:
        assert not _SIGNS

    for k, t in _STASH.items():
        arrays[k] = _np(t)

    # Sampled and derived tensors.
    if est == "dv":
        q = layer._posterior(tf.constant(x))  # a fresh call draws; only its parameters are used
        post = q.tensor_distribution.distribution
        arrays["posterior_loc"] = _np(tf.convert_to_tensor(post.loc))
        arrays["posterior_scale"] = _np(tf.convert_to_tensor(post.scale))
        n = arrays["posterior_loc"].shape[-1]
        # The flat sample TFP used, rebuilt from its own draw exactly as Normal._sample_n does;
        # the same ops on it must reproduce TFP's outputs bit for bit.
        w = tf.constant(arrays["eps/posterior"]) * post.scale + post.loc
        k = layer.input_spec.axes[-1] * layer.units
        kernel = tf.reshape(w[..., :k], tf.concat([tf.shape(w)[:-1], [-1, layer.units]], 0))
        rebuilt = tf.matmul(tf.constant(x), kernel)
        if case["use_bias"]:
            rebuilt = tf.nn.bias_add(rebuilt, w[..., k:])
            arrays["aux/bias"] = _np(w[..., k:])
        if layer.activation is not None:
            rebuilt = layer.activation(rebuilt)
        assert np.array_equal(rebuilt.numpy(), out_np), name
        arrays["posterior_tensor"] = _np(w)
        arrays["aux/kernel"] = _np(kernel)
        r = layer._prior(tf.constant(x)).tensor_distribution.distribution
        arrays["prior_loc"] = _np(tf.broadcast_to(tf.convert_to_tensor(r.loc), [n]))
        arrays["prior_scale"] = _np(tf.broadcast_to(tf.cast(r.scale, np_dtype), [n]))
        arrays["prior_tensor"] = _np(tf.constant(arrays["eps/prior"]) * r.scale + r.loc)
        _DRAWS.clear()
    else:
        kpost = layer.kernel_posterior.distribution
        arrays["kernel_posterior_scale"] = _np(tf.convert_to_tensor(kpost.scale))
        if est == "lrt":
            aff = layer.kernel_posterior_affine
            arrays["affine_loc"] = _np(tf.convert_to_tensor(aff.loc))
            arrays["affine_scale"] = _np(tf.convert_to_tensor(aff.scale))
            arrays["affine_tensor"] = _np(layer.kernel_posterior_affine_tensor)
        elif est == "reparam":
            arrays["kernel_tensor"] = _np(layer.kernel_posterior_tensor)
        else:
            arrays["kernel_tensor"] = _np(layer.kernel_posterior_affine_tensor)
        if layer.bias_posterior is not None:
            arrays["bias_tensor"] = _np(layer.bias_posterior_tensor)
            if case["bias_posterior"]["type"] == "normal":
                arrays["bias_posterior_scale"] = _np(
                    tf.convert_to_tensor(layer.bias_posterior.distribution.scale))
        for which in ("kernel", "bias"):
            spec = case[which + "_prior"]
            prior = getattr(layer, which + "_prior")
            if spec is not None and spec["type"] == "trainable_normal":
                arrays[which + "_prior_scale"] = _np(
                    tf.convert_to_tensor(prior.distribution.scale))
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}

    meta_extra = {
        "weights": weights_meta,
        "weights_order": weights_order,
        "losses": loss_names,
        "draws": draws_meta,
        "grads_finite": grads_finite,
        "grads_none": grads_none,
        "output_shape": list(out_np.shape),
    }
    return arrays, meta_extra


_PRIOR_FORMULAS = {
    "normal": "log p(w) = sum(-0.5 ((w - loc) / scale)^2 - log(scale) - 0.5 log(2 pi))",
    "trainable_normal": "as normal, with loc = <which>_prior_loc and scale = "
                        "finfo(dtype).eps + softplus(<which>_prior_untransformed_scale)",
    "laplace": "log p(w) = sum(-|w - loc| / scale - log(2) - log(scale))",
    "student_t": "log p(w) = sum(-0.5 (df + 1) log1p(y^2) - log|scale| - 0.5 log(df) "
                 "- lbeta(0.5, 0.5 df)), y = (w - loc) / (scale sqrt(df))",
    "scale_mixture_normal": "log p(w) = sum(logsumexp_k(log N(w; 0, sigma_k^2) + "
                            "log_softmax(log([pi, 1 - pi]))_k))",
}
_PRIOR_TFP = {
    "normal": "tfd.Independent(tfd.Normal(loc=tf.fill(shape, loc), scale=scale), len(shape))",
    "laplace": "tfd.Independent(tfd.Laplace(loc=tf.fill(shape, loc), scale=scale), len(shape))",
    "student_t": "tfd.Independent(tfd.StudentT(df=df, loc=tf.fill(shape, loc), scale=scale), "
                 "len(shape))",
    "scale_mixture_normal": "tfd.Independent(tfd.MixtureSameFamily(tfd.Categorical(probs=[pi, "
                            "1 - pi]), tfd.Normal(loc=tf.zeros(shape + [2]), scale=[sigma1, "
                            "sigma2])), len(shape))",
}


def _describe(meta):
    """Adds, in place, the formulas and TFP constructors a replay needs (plain JSON)."""
    for which in ("kernel", "bias"):
        post = meta[which + "_posterior"]
        if post is not None:
            post = dict(post)
            if post["type"] == "normal":
                post.update(tfp_fn="default_mean_field_normal_fn()",
                            params=[which + "_posterior_loc",
                                    which + "_posterior_untransformed_scale"],
                            scale="finfo(dtype).eps + softplus(untransformed_scale)")
            else:
                post.update(tfp_fn="default_mean_field_normal_fn(is_singular=True)",
                            params=[which + "_posterior_loc"],
                            sample="the loc itself (Deterministic)")
            meta[which + "_posterior"] = post
        prior = meta[which + "_prior"]
        if prior is not None:
            prior = dict(prior)
            kind = prior["type"]
            prior["log_prob"] = _PRIOR_FORMULAS[kind].replace("<which>", which)
            if kind == "trainable_normal":
                prior["params"] = [which + "_prior_loc", which + "_prior_untransformed_scale"]
            elif "tfp_fn" not in prior:
                prior["tfp_code"] = _PRIOR_TFP[kind]
            meta[which + "_prior"] = prior
        div = meta[which + "_divergence"]
        if div is not None:
            div = dict(div)
            tail = "" if div["divide_by"] is None else f" / {div['divide_by']}"
            if div["type"] == "kl_exact":
                div["tfp_code"] = f"lambda q, p, _: tfd.kl_divergence(q, p){tail}"
            elif div["sample"] == "layer":
                div["tfp_code"] = ("lambda q, p, q_tensor: (q.log_prob(q_tensor) - "
                                   f"p.log_prob(q_tensor)){tail}")
                div["sample_is"] = (f"the layer's own {which} sample ({which}_tensor, "
                                    f"drawn from eps/{which})")
            else:
                div["tfp_code"] = ("def fn(q, p, _): w = q.sample(); return (q.log_prob(w) - "
                                   f"p.log_prob(w)){tail}")
                div["sample_is"] = (f"a fresh draw inside the fn: {which}_divergence_tensor = "
                                    f"eps/{which}_divergence * scale + loc")
            meta[which + "_divergence"] = div
    meta["kernel_posterior_tensor"] = dict(
        meta["kernel_posterior_tensor"],
        tfp_code=("lambda d: d.sample()" if meta["kernel_posterior_tensor"]["num_samples"] is None
                  else f"lambda d: d.sample({meta['kernel_posterior_tensor']['num_samples']})"))


def _notes(case):
    parts = [
        "x ~ N(0, 1), then every weight in layer.weights order (posterior loc ~ N(0, 0.5^2), "
        "posterior untransformed scale ~ N(-1, 0.5^2), trainable prior loc ~ N(0.1, 0.3^2), "
        "prior untransformed scale ~ N(0.3, 0.3^2); DenseVariational: posterior/constant = "
        "[N(0, 0.5^2) x n, N(-2, 0.5^2) x n], prior/constant ~ N(0, 0.5^2)), then g ~ N(0, 1) "
        "of the output shape; numpy default_rng(seed), float64 then cast.",
        "TF sampling seeded with tf.random.set_seed(seed) right before the recorded call "
        "(the layer was built by a first call on x, whose draws are discarded).",
    ]
    if case["est"] == "dv":
        parts.append("The prior's DistributionLambda draws a sample of the prior on every call "
                     "(eps/prior, prior_tensor) that nothing uses; it consumes TF's RNG after the "
                     "posterior draw.")
        if case["dtype"] == "float64":
            parts.append("Recorded with tf_keras.backend.set_floatx('float64') (needed for a "
                         "float64 DenseVariational with these functions).")
    if case["notes"]:
        parts.append(case["notes"])
    return " ".join(parts)


# --------------------------------------------------------------------------
# Deterministic output and --check
# --------------------------------------------------------------------------

def save_npz_deterministic(path, arrays):
    """Like np.savez, but with a fixed zip timestamp and sorted keys."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def write_case(outdir, arrays, meta):
    save_npz_deterministic(os.path.join(outdir, meta["case"] + ".npz"), arrays)
    with open(os.path.join(outdir, meta["case"] + ".json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def record_all(outdir):
    os.makedirs(outdir, exist_ok=True)
    summary = []
    for case in make_cases():
        arrays, meta = record_case(case)
        write_case(outdir, arrays, meta)
        summary.append((meta["case"], meta["grads_finite"], meta["losses"]))
    return summary


CHECK_RTOL = {"float64": 1e-12, "float32": 1e-5}


def _compare_case(new_dir, old_dir, case):
    """Problems found comparing one re-recorded case with the stored one ([] if none)."""
    problems = []
    with open(os.path.join(new_dir, case + ".json")) as f:
        new_meta = json.load(f)
    with open(os.path.join(old_dir, case + ".json")) as f:
        old_meta = json.load(f)
    if new_meta != old_meta:
        diff = sorted(k for k in set(new_meta) | set(old_meta)
                      if new_meta.get(k) != old_meta.get(k))
        problems.append(f"{case}.json differs in {diff}")
    rtol = CHECK_RTOL[new_meta["dtype"]]
    with np.load(os.path.join(new_dir, case + ".npz"), allow_pickle=False) as a, \
            np.load(os.path.join(old_dir, case + ".npz"), allow_pickle=False) as b:
        if sorted(a.files) != sorted(b.files):
            return problems + [f"{case}.npz keys differ"]
        for k in a.files:
            u, v = a[k], b[k]
            if u.dtype != v.dtype or u.shape != v.shape:
                problems.append(f"{case}:{k} dtype/shape {u.dtype}{u.shape} != {v.dtype}{v.shape}")
                continue
            if u.dtype.kind in "iu":
                if not np.array_equal(u, v):
                    problems.append(f"{case}:{k} integers differ")
                continue
            scale = max(float(np.max(np.abs(v))), 1e-30) if v.size else 1.0
            err = float(np.max(np.abs(u.astype(np.float64) - v))) if v.size else 0.0
            if not err <= rtol * scale:
                problems.append(f"{case}:{k} max abs err {err:.3g} > {rtol} * {scale:.3g}")
    return problems


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    outdir = args[0] if args else os.path.join("tests", "fixtures", "tfp_priors")
    if "--check" in argv:
        import filecmp
        with tempfile.TemporaryDirectory() as tmp:
            record_all(tmp)
            names = sorted(os.listdir(tmp))
            existing = sorted(f for f in os.listdir(outdir) if f.endswith((".npz", ".json")))
            if names != existing:
                print("MISMATCH: file list differs:",
                      sorted(set(names) ^ set(existing)))
                return 1
            identical = sum(filecmp.cmp(os.path.join(tmp, n), os.path.join(outdir, n),
                                        shallow=False) for n in names)
            problems = []
            for case in sorted({n.rsplit(".", 1)[0] for n in names}):
                problems += _compare_case(tmp, outdir, case)
        if problems:
            print("MISMATCH:")
            for p in problems:
                print("  " + p)
            return 1
        print(f"OK: {len(names)} files reproduced in {outdir} within tolerance "
              f"(float64 {CHECK_RTOL['float64']}, float32 {CHECK_RTOL['float32']}); "
              f"{identical} of them byte for byte")
        return 0
    summary = record_all(_outdir.writable_output(outdir, argv))
    for name, finite, losses in summary:
        print(f"{name:48s} grads_finite={finite} losses={losses}")
    print(f"wrote {len(summary)} cases to {outdir}; versions: {VERSIONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
