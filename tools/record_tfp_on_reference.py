"""Run the REAL TensorFlow Probability layers on the reference cases' own inputs and record them.

Why this exists
---------------
``reference_data/`` holds golden values computed by lrtdense's NumPy oracle
(``lrtdense/reference/cases.py``, ``generation.py``). Its acceptance bar is that the oracle's data agree with
TFP wherever they overlap. This script feeds every ``layer`` and ``network`` case of the
reference set (``lrt_*``, ``reparam_*``, ``flipout_*``, ``mixed_*``; the ``adam_*`` cases are
not TFP layers and are skipped) to the real ``tfp.layers`` classes, with the case's own
inputs, parameters and noise, and records what TFP computes under the reference's key names.
``tests/test_reference_vs_tfp.py`` then compares the reference against these recordings
without TensorFlow.

What is recorded, per case
--------------------------
``tests/fixtures/tfp_reference/<case>.npz`` (plain arrays; loads with ``allow_pickle=False``)
holds exactly the reference case's ``expected`` keys, in the case dtype:

* ``outputs/sample``: the layer/network output with the recorded noise injected;
* ``outputs/mean``: a second call with ``kernel_posterior_tensor_fn = bias_posterior_tensor_fn
  = lambda d: d.mean()``;
* ``kl/kernel``, ``kl/bias`` (network: ``kl/layer_<i>/kernel``, ...): the entries of
  ``layer.losses`` / ``model.losses``, named by the layer and term they come from;
  ``kl/total`` = their sum in ``model.losses`` order (0 in the case dtype when there is none);
* ``grads/<param>`` (network: ``grads/layer_<i>/<param>``) and ``grads/x``: the gradients of
  ``L = sum(g * outputs/sample) + sum(losses)`` from one ``tf.GradientTape`` watching ``x``.
  NaNs are kept as TFP produced them (the ``lrt_*_zero_rows`` cases, see below).

``tests/fixtures/tfp_reference/versions.json`` holds the library versions, the date, the
command, and per case the sha256 of every reference input file the recording was made from and
of the case's defining ``case.json`` fields (kind, dtype, model, input_shape, key lists; not the
description or tolerances), so the test can tell when the reference inputs changed after the
recording.

Building the layers from ``case.json``
--------------------------------------
``units``; ``activation`` by name (``"linear"`` -> ``None``, TFP then applies tf_keras'
``linear``; other names go through ``tf_keras.activations.get`` exactly as TFP does with a
string); ``dtype``. Kernel posterior: TFP's default ``default_mean_field_normal_fn()``.
Kernel prior ``N(loc, scale)`` per element: ``None`` -> ``kernel_prior_fn=None``; ``N(0, 1)``
-> TFP's own default ``default_multivariate_normal_fn`` (what the reference calls "TFP
defaults"; the script asserts that it gives bit-for-bit the same KL as the explicit
``Independent(Normal(tf.fill(shape, loc), scale))`` prior used for any other loc/scale).
Bias posterior ``deterministic`` -> ``default_mean_field_normal_fn(is_singular=True)`` (TFP's
default), ``normal`` -> ``default_mean_field_normal_fn()``, ``null`` -> ``None``; bias prior
``null`` -> ``None``, ``N(loc, scale)`` -> the explicit Independent(Normal) prior. Network
cases are ``tf_keras.Sequential([tf_keras.Input(batch_shape=input_shape, dtype=case dtype),
*layers])``: the explicit Input keeps x in the case dtype (``Sequential.build(shape)`` would
create a float32 Input and round a float64 x to float32 on the way in, ~1e-7 relative error in
every network quantity, a Keras artefact unrelated to TFP). Sequential traces its layers once on
the symbolic Input when it is built; the real forward pass is the later eager call.
Weights are set with ``set_weights`` in
``layer.weights`` order, which the script checks is the reference's (SPEC section 2) order:
``kernel_posterior_loc``, ``kernel_posterior_untransformed_scale``, ``bias_posterior_loc``,
``bias_posterior_untransformed_scale``.

Noise injection (no random draw by TF) and why it reproduces TFP's sampling path
-------------------------------------------------------------------------------
Read from the installed TFP 0.25.0 source:

* ``Normal._sample_n`` (distributions/normal.py) is ``loc = tf.convert_to_tensor(self.loc);
  scale = tf.convert_to_tensor(self.scale); sampled = samplers.normal(shape, 0., 1., dtype,
  seed); return sampled * scale + loc``. ``d.sample()`` calls it with n = 1 and reshapes the
  leading sample dimension away (no arithmetic). ``Independent.sample`` delegates to the
  wrapped Normal. So ``eps * tf.convert_to_tensor(scale) + tf.convert_to_tensor(loc)`` with
  ``eps`` the recorded standard normal performs the same two floating-point ops in the same
  order, on the same operands, and has the same gradient graph (mul, add) w.r.t. loc and
  scale.
* The posterior scale is ``DeferredTensor(untransformed_scale, lambda u: eps_dtype +
  tf.nn.softplus(u))`` (layers/util.py ``default_loc_scale_fn``); converting it to a tensor
  evaluates that lambda, as ``_sample_n`` does.
* DenseLocalReparameterization._apply_variational_kernel builds ``kernel_posterior_affine =
  Normal(loc=tf.matmul(x, loc), scale=tf.sqrt(tf.matmul(tf.square(x), tf.square(scale))))``
  and returns ``kernel_posterior_tensor_fn(kernel_posterior_affine)``. Injection:
  ``kernel_posterior_tensor_fn = lambda d: eps * convert(d.scale) + convert(d.loc)`` with
  ``eps = noise/kernel`` of shape (..., units).
* DenseReparameterization._apply_variational_kernel is ``tf.matmul(x,
  kernel_posterior_tensor_fn(kernel_posterior))`` with ``kernel_posterior = Independent(
  Normal)``. Injection: ``lambda d: eps * convert(d.distribution.scale) +
  convert(d.distribution.loc)``, ``eps = noise/kernel`` of shape (in, units).
* DenseFlipout._apply_variational_kernel builds ``kernel_posterior_affine = Normal(
  loc=tf.zeros_like(loc), scale=scale)``, applies ``kernel_posterior_tensor_fn`` to it, then
  draws ``sign_input = tfp_random.rademacher(tf.shape(x), dtype=x.dtype, ...)`` FIRST and
  ``sign_output = tfp_random.rademacher(concat([batch_shape, [units]]), ...)`` SECOND, and
  computes ``tf.matmul(x, loc) + tf.matmul(x * sign_input, affine_tensor) * sign_output``.
  Injection: ``lambda d: eps * convert(d.scale) + convert(d.loc)`` (loc = zeros, as in
  ``_sample_n``), and the module-level name ``tfp_random`` of
  ``tensorflow_probability.python.layers.dense_variational`` is replaced by a proxy whose
  ``rademacher`` returns ``noise/sign_input`` then ``noise/sign_output`` (checking the
  requested shape and dtype of each call). In mean mode the two sign draws still happen (they
  multiply a zero perturbation); the proxy serves the same arrays.
* Normal bias posterior: ``_apply_variational_bias`` is ``tf.nn.bias_add(outputs,
  bias_posterior_tensor_fn(bias_posterior))`` with ``bias_posterior = Independent(Normal)``.
  Injection: ``lambda d: eps_b * convert(d.distribution.scale) + convert(d.distribution.loc)``.
  A Deterministic bias keeps TFP's default ``lambda d: d.sample()`` (``Deterministic._sample_n``
  broadcasts ``loc`` and draws nothing).
* Mean mode: ``lambda d: d.mean()`` for kernel and bias, as TFP documents for deterministic
  evaluation.

Empirical confirmation (run first, every time): ``self_check_injection`` runs the six
``{lrt,reparam,flipout}_{64,32}_normal_bias_prior`` layers once with TFP's default
``d.sample()`` and TF's own seeded random draws (recording the standard normals that
``samplers.normal`` returned inside ``Normal._sample_n`` and the two Rademacher tensors), then
again with those draws injected as above, and asserts that the outputs, both KL terms and all
gradients (x and every weight) are identical bit for bit. The script aborts otherwise.

As a guard, ``samplers`` in distributions/normal.py is replaced by a proxy that raises if
``samplers.normal`` is ever called, and the Rademacher proxy raises on any draw beyond the
two expected ones, so a recording cannot silently contain a TF random draw.

KL terms: ``_DenseVariational.call`` adds ``kernel_divergence_fn(kernel_posterior,
kernel_prior, ...)`` then ``bias_divergence_fn(...)`` via ``add_loss``, each skipped when the
prior (or the bias posterior) is None; the defaults are ``kl_lib.kl_divergence(q, p)``:
Independent/Independent -> ``reduce_sum`` of ``_kl_normal_normal`` (normal.py) or of
``_kl_deterministic_distribution`` = ``-p.log_prob(q.loc)`` (deterministic.py). The names of
the entries of ``model.losses`` are derived per layer in that order, and the script checks that
``model.losses`` is the concatenation of the layers' ``losses`` in layer order.

Zero-variance rows (``lrt_*_zero_rows``): where a row of ``x`` is all zero the LRT affine scale
is ``sqrt(0)``; TF's gradient of sqrt there is ``inf`` and, multiplied by the zero ``d(s^2)``,
gives NaN in ``grads/x`` (those rows) and ``grads/kernel_posterior_untransformed_scale``.
They are recorded as NaN; the reference uses the limit instead (SPEC section 3), and the test
handles that difference explicitly.

The ``priors`` and ``dense_variational`` cases (``--priors``)
-------------------------------------------------------------
``--priors`` records the reference's ``priors_*`` and ``dv_*`` cases instead, into
``tests/fixtures/tfp_reference_priors/`` (same npz layout plus ``kl_mean/total``; replayed by
``tests/test_reference_priors_vs_tfp.py``). How each setting of ``case.json`` is expressed in
TFP 0.25, as a user would write it (docs/tfp_semantics.md):

* priors: ``normal`` -> ``default_multivariate_normal_fn`` for N(0, 1) on the kernel, else
  ``Independent(Normal(fill(shape, loc), scale))``; ``trainable_normal`` ->
  ``tfp.layers.default_mean_field_normal_fn()`` as the prior fn (its variables
  ``<name>_prior_loc``, ``<name>_prior_untransformed_scale`` at the prior's place in
  ``layer.weights``, checked against the case's params); ``scale_mixture`` ->
  ``Independent(MixtureSameFamily(Categorical(probs=[pi, 1 - pi]), Normal(zeros(shape + [2]),
  [sigma1, sigma2])))``; ``laplace`` / ``student_t`` -> ``Independent(Laplace | StudentT)``.
* ``closed_form`` with weight c -> ``lambda q, p, _: kl_divergence(q, p) / N`` when c = 1 / N
  (TFP's idiom), ``kl_divergence(q, p) * c`` otherwise; for a Deterministic bias this is TFP's
  registered ``-p.log_prob(q.loc)`` whatever the prior.
* ``monte_carlo`` -> ``lambda q, p, w: q.log_prob(w) - p.log_prob(w)`` (then / N or * c) with
  ``w`` the sample TFP passes (DenseReparameterization's kernel, the sampled bias) when
  ``sample`` is ``"forward"`` and TFP has one; otherwise (LRT/Flipout kernels, ``"extra"``) the
  fn draws its own ``w = eps * q.distribution.scale + q.distribution.loc`` with
  ``eps = noise/kernel_divergence`` (``bias_divergence``): what ``q.sample()`` computes
  (``Normal._sample_n``), injected. ``log q`` is TFP's own ``Normal.log_prob`` of that w, not
  the oracle's identity.
* mean mode (``outputs/mean``, ``kl_mean/total``): ``d.mean()`` tensor fns, and the Monte Carlo
  fns evaluated at eps = 0 (lrtdense's rule; TFP has no mean-mode divergence of its own).
* ``DenseVariational``: ``tfp.layers.DenseVariational(units, posterior_mean_field,
  prior_trainable | prior_fixed, kl_weight=<the case's Python float>, kl_use_exact, activation,
  use_bias, dtype)`` with the tutorial's functions, under ``set_floatx(case dtype)`` (a float64
  DistributionLambda needs it). The posterior's ``convert_to_tensor_fn`` is the injected
  ``eps * scale + loc`` with ``eps = noise/posterior`` (``d.mean()`` in mean mode); the prior's
  is ``d.mean()``, so that the unused prior sample TFP draws on every call draws nothing (its
  value enters no output and no loss).

How to run
----------
From the repository root, with the TensorFlow virtualenv (not a dependency of lrtdense)::

    TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python tools/record_tfp_on_reference.py [OUTDIR]
    TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python tools/record_tfp_on_reference.py --priors [OUTDIR]

OUTDIR defaults to ``tests/fixtures/tfp_reference`` (``tests/fixtures/tfp_reference_priors`` with
``--priors``); a folder that already holds files is written only with ``--replace``. The
reference set is read from ``reference_data/`` with plain ``json``/``numpy`` (lrtdense need not be installed in the TF
venv). The npz files are written with a fixed zip timestamp and sorted keys, so re-running on
the same machine reproduces them byte for byte. About 20 s on a 2-core CPU (mostly importing
TensorFlow).
"""

import datetime
import hashlib
import io
import json
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _outdir  # noqa: E402  (tools/_outdir.py: never record over files unasked)

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from tensorflow_probability.python.distributions import normal as tfp_normal_module  # noqa: E402
from tensorflow_probability.python.layers import dense_variational as tfp_dv_module  # noqa: E402

tfd = tfp.distributions

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
REFERENCE = os.path.join(REPO, "reference_data")
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "tfp_reference")
LAYER_PREFIXES = ("lrt_", "reparam_", "flipout_", "mixed_")

VERSIONS = {
    "tensorflow": tf.__version__,
    "tf_keras": tf_keras.__version__,
    "tensorflow_probability": tfp.__version__,
    "numpy": np.__version__,
    "python": sys.version.split()[0],
}

# --------------------------------------------------------------------------
# No random draws by TF: the Rademacher signs are served from the case, and any
# Normal draw raises.
# --------------------------------------------------------------------------


class _SignServer:
    """Stands in for the module ``tfp_random`` inside dense_variational.py.

    ``arrays`` are the recorded signs in call order. Eager calls (the real forward pass)
    consume them one by one; symbolic calls (tf_keras.Sequential traces its layers once on a
    symbolic input to build its graph network, before the eager call) are served from their
    own cursor, so they do not disturb the eager order.
    """

    def __init__(self, module):
        self._module = module
        self.arrays = []
        self.cursor = {"eager": 0, "graph": 0}

    def load(self, arrays):
        self.arrays = list(arrays)
        self.cursor = {"eager": 0, "graph": 0}

    def unused(self):
        return len(self.arrays) - self.cursor["eager"]

    def __getattr__(self, name):
        if name != "rademacher":
            return getattr(self._module, name)

        def rademacher(shape, dtype=tf.float32, seed=None, name=None):
            del seed, name
            mode = "eager" if tf.executing_eagerly() else "graph"
            i = self.cursor[mode]
            if mode == "eager" and i >= len(self.arrays):
                raise AssertionError("unexpected tfp_random.rademacher call")
            value = self.arrays[i % len(self.arrays)]
            self.cursor[mode] = i + 1
            if mode == "eager":
                want = tuple(int(s) for s in np.asarray(shape))
                if want != tuple(value.shape):
                    raise AssertionError(f"rademacher shape {want}, recorded {value.shape}")
            if tf.as_dtype(dtype) != tf.as_dtype(value.dtype):
                raise AssertionError(f"rademacher dtype {dtype}, recorded {value.dtype}")
            return tf.constant(value)

        return rademacher


class _NoNormalDraws:
    """Stands in for ``samplers`` inside distributions/normal.py: forbids ``normal``."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name == "normal":
            def forbidden(*args, **kwargs):
                raise AssertionError("TF tried to draw a Normal sample; noise must be injected")
            return forbidden
        return getattr(self._module, name)


_REAL_TFP_RANDOM = tfp_dv_module.tfp_random
_REAL_SAMPLERS = tfp_normal_module.samplers
SIGNS = _SignServer(_REAL_TFP_RANDOM)
_GUARD = _NoNormalDraws(_REAL_SAMPLERS)
tfp_dv_module.tfp_random = SIGNS
tfp_normal_module.samplers = _GUARD

# --------------------------------------------------------------------------
# Reading the reference set (plain json + numpy, no lrtdense import)
# --------------------------------------------------------------------------


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _npy(case_dir, group, key):
    return np.load(os.path.join(case_dir, group, *key.split("/")) + ".npy", allow_pickle=False)


def read_case(name):
    case_dir = os.path.join(REFERENCE, "cases", name)
    with open(os.path.join(case_dir, "case.json")) as f:
        meta = json.load(f)
    inputs = {k: _npy(case_dir, "inputs", k) for k in meta["inputs"]}
    return meta, inputs


CONFIG_FIELDS = ("kind", "dtype", "model", "input_shape", "inputs", "expected")


def config_sha256(meta):
    """sha256 of the case.json fields that define the computation (not description/tolerances)."""
    blob = json.dumps({k: meta[k] for k in CONFIG_FIELDS}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def reference_files(name):
    """sha256 of every input file (checked against the manifest) and of the case's config."""
    with open(os.path.join(REFERENCE, "manifest.json")) as f:
        manifest = json.load(f)["cases"][name]
    inputs = {}
    for rel, digest in sorted(manifest.items()):
        if "/inputs/" in rel:
            actual = _sha256(os.path.join(REFERENCE, *rel.split("/")))
            assert actual == digest, f"{rel} does not match the manifest"
            inputs[rel.split("/inputs/", 1)[1][:-len(".npy")]] = digest
    meta, _ = read_case(name)
    assert sorted(inputs) == sorted(meta["inputs"]), name
    return {"inputs_sha256": inputs, "config_sha256": config_sha256(meta)}


# --------------------------------------------------------------------------
# Building TFP layers from case.json
# --------------------------------------------------------------------------

TFP_CLASSES = {
    "DenseLocalReparameterization": tfp.layers.DenseLocalReparameterization,
    "DenseReparameterization": tfp.layers.DenseReparameterization,
    "DenseFlipout": tfp.layers.DenseFlipout,
}
SUPPORTED_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softplus", "elu")


def normal_prior_fn(loc, scale):
    """A prior_fn returning Independent(Normal(loc, scale)) over the parameter's shape."""

    def fn(dtype, shape, name, trainable, add_variable_fn):
        del name, trainable, add_variable_fn
        return tfd.Independent(
            tfd.Normal(loc=tf.fill(shape, tf.constant(loc, dtype=dtype)),
                       scale=tf.constant(scale, dtype=dtype)),
            reinterpreted_batch_ndims=len(shape))

    return fn


def _is_standard_normal(prior):
    return prior is not None and prior["loc"] == 0.0 and prior["scale"] == 1.0


def _sample_like_normal(eps, normal):
    """Normal._sample_n's arithmetic with ``eps`` in place of samplers.normal."""
    scale = tf.convert_to_tensor(normal.scale)
    loc = tf.convert_to_tensor(normal.loc)
    return eps * scale + loc


def build_layer(spec, noise, mode):
    """A tfp.layers instance for one layer spec. noise: dict of that layer's noise arrays."""
    cfg = spec["config"]
    cls_name = spec["class_name"]
    dtype = cfg["dtype"]
    assert cfg["kernel_posterior"]["type"] == "normal", cfg["kernel_posterior"]
    act = cfg["activation"]
    assert act in SUPPORTED_ACTIVATIONS, act
    kwargs = dict(units=cfg["units"], activation=None if act == "linear" else act, dtype=dtype,
                  kernel_posterior_fn=tfp.layers.default_mean_field_normal_fn())
    kp = cfg["kernel_prior"]
    if kp is None:
        kwargs["kernel_prior_fn"] = None
    elif _is_standard_normal(kp):
        kwargs["kernel_prior_fn"] = tfp.layers.default_multivariate_normal_fn
    else:
        kwargs["kernel_prior_fn"] = normal_prior_fn(kp["loc"], kp["scale"])
    bp = cfg["bias_posterior"]
    if bp is None:
        kwargs["bias_posterior_fn"] = None
    elif bp["type"] == "deterministic":
        kwargs["bias_posterior_fn"] = tfp.layers.default_mean_field_normal_fn(is_singular=True)
    elif bp["type"] == "normal":
        kwargs["bias_posterior_fn"] = tfp.layers.default_mean_field_normal_fn()
    else:
        raise ValueError(f"bias posterior {bp}")
    bpr = cfg["bias_prior"]
    kwargs["bias_prior_fn"] = None if bpr is None else normal_prior_fn(bpr["loc"], bpr["scale"])

    if mode == "tfp":  # TFP's defaults: d.sample() with TF's own random draws (self-check only)
        pass
    elif mode == "mean":
        kwargs["kernel_posterior_tensor_fn"] = lambda d: d.mean()
        kwargs["bias_posterior_tensor_fn"] = lambda d: d.mean()
    else:
        eps = tf.constant(noise["kernel"])
        if cls_name == "DenseReparameterization":
            kwargs["kernel_posterior_tensor_fn"] = (
                lambda d: _sample_like_normal(eps, d.distribution))
        else:  # LRT: d is the induced Normal; Flipout: d is Normal(0, scale)
            kwargs["kernel_posterior_tensor_fn"] = lambda d: _sample_like_normal(eps, d)
        if bp is not None and bp["type"] == "normal":
            eps_b = tf.constant(noise["bias"])
            kwargs["bias_posterior_tensor_fn"] = (
                lambda d: _sample_like_normal(eps_b, d.distribution))
    return TFP_CLASSES[cls_name](**kwargs)


def strip_name(name):
    name = name.split("/")[-1]
    return name[:-2] if name.endswith(":0") else name


def _tree(prefix, arrays):
    """{"layer_0": {"kernel": ...}} or {"kernel": ...} from "prefix/..." keys."""
    out = {}
    for k, v in arrays.items():
        if k.startswith(prefix + "/"):
            parts = k[len(prefix) + 1:].split("/")
            node = out
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = v
    return out


def _layer_specs(meta):
    if meta["kind"] in ("layer", "priors", "dense_variational"):
        return [meta["model"]]
    assert meta["model"]["class_name"] == "Sequential"
    return meta["model"]["config"]["layers"]


def _loss_names(layer):
    names = []
    if layer.kernel_prior is not None:
        names.append("kernel")
    if layer.bias_posterior is not None and layer.bias_prior is not None:
        names.append("bias")
    return names


def build_model(meta, inputs, mode, noise=None):
    """Returns (model_callable, layers, param prefixes); weights set from the case's params."""
    specs = _layer_specs(meta)
    network = meta["kind"] == "network"
    params = _tree("params", inputs)
    noise = _tree("noise", inputs) if noise is None else noise
    prefixes = [f"layer_{i}/" for i in range(len(specs))] if network else [""]
    layers = []
    for i, spec in enumerate(specs):
        layer_noise = noise.get(f"layer_{i}", {}) if network else noise
        layers.append(build_layer(spec, layer_noise, mode))
    in_shape = tuple(meta["input_shape"])
    dtype = tf.as_dtype(meta["dtype"])
    if network:
        # The Input must carry the case dtype: Sequential.build(shape) would make a float32
        # Input, and the functional call would then round a float64 x to float32 before the
        # first layer casts it back (a Keras artefact worth ~1e-7 relative error, not TFP's).
        model = tf_keras.Sequential([tf_keras.Input(batch_shape=in_shape, dtype=dtype)] + layers)
        assert model.inputs[0].dtype == dtype, (meta["name"], model.inputs[0].dtype)
    else:
        model = layers[0]
        model.build(in_shape)
    for i, layer in enumerate(layers):
        lp = params[f"layer_{i}"] if network else params
        order = [strip_name(w.name) for w in layer.weights]
        expected_order = [n for n in ("kernel_posterior_loc",
                                      "kernel_posterior_untransformed_scale",
                                      "bias_posterior_loc", "bias_posterior_untransformed_scale")
                          if n in lp]
        assert order == expected_order, (meta["name"], i, order, expected_order)
        layer.set_weights([lp[n] for n in order])
        for w, n in zip(layer.weights, order):
            assert w.dtype == dtype and np.array_equal(w.numpy(), lp[n]), (meta["name"], n)
    return model, layers, prefixes


def _load_signs(meta, inputs):
    """Queues the Flipout signs in call order: per Flipout layer, sign_input then sign_output."""
    network = meta["kind"] == "network"
    arrays = []
    for i, spec in enumerate(_layer_specs(meta)):
        if spec["class_name"] == "DenseFlipout":
            pre = f"noise/layer_{i}/" if network else "noise/"
            arrays += [inputs[pre + "sign_input"], inputs[pre + "sign_output"]]
    SIGNS.load(arrays)


def check_default_prior_equivalence(meta, layers):
    """TFP's default kernel prior == the explicit Independent(Normal(fill(0), 1)) prior, bitwise."""
    for layer in layers:
        if layer.kernel_prior is None or layer.kernel_prior_fn is not (
                tfp.layers.default_multivariate_normal_fn):
            continue
        shape = layer.kernel_posterior.distribution.loc.shape.as_list()
        explicit = normal_prior_fn(0.0, 1.0)(layer.dtype, shape, "p", False, None)
        a = tfd.kl_divergence(layer.kernel_posterior, layer.kernel_prior).numpy()
        b = tfd.kl_divergence(layer.kernel_posterior, explicit).numpy()
        assert a.tobytes() == b.tobytes(), (meta["name"], a, b)


def record_case(name):
    meta, inputs = read_case(name)
    dtype = np.dtype(meta["dtype"])
    network = meta["kind"] == "network"
    x = tf.constant(inputs["x"])
    g = tf.constant(inputs["g"])

    # Sample mode, with the gradient.
    _load_signs(meta, inputs)
    model, layers, prefixes = build_model(meta, inputs, "sample")
    assert SIGNS.cursor["eager"] == 0, name
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x)
        losses = list(model.losses)
        L = tf.reduce_sum(g * out)
        for loss in losses:
            L = L + loss
    assert SIGNS.unused() == 0, f"{name}: {SIGNS.unused()} sign arrays left unused"
    weights = [w for layer in layers for w in layer.weights]
    grads = tape.gradient(L, [x] + weights)
    check_default_prior_equivalence(meta, layers)

    rec = {"outputs/sample": out.numpy()}
    # Name the losses: per layer, kernel then bias (_DenseVariational.call order), and check
    # model.losses is the layers' losses concatenated in layer order.
    names, per_layer = [], []
    for layer, pre in zip(layers, prefixes):
        ln = _loss_names(layer)
        assert len(ln) == len(layer.losses), (name, ln, layer.losses)
        names += [f"kl/{pre}{t}" for t in ln]
        per_layer += list(layer.losses)
    assert len(per_layer) == len(losses) and all(
        a is b or a.numpy().tobytes() == b.numpy().tobytes()
        for a, b in zip(per_layer, losses)), name
    total = tf.constant(0, dtype=meta["dtype"])
    for n, loss in zip(names, losses):
        rec[n] = loss.numpy()
        total = total + loss
    rec["kl/total"] = total.numpy()
    rec["grads/x"] = grads[0].numpy()
    i = 1
    for layer, pre in zip(layers, prefixes):
        for w in layer.weights:
            assert grads[i] is not None, (name, w.name)
            rec[f"grads/{pre}{strip_name(w.name)}"] = grads[i].numpy()
            i += 1

    # Mean mode: a fresh model, same weights, d.mean() for kernel and bias.
    _load_signs(meta, inputs)
    model_m, _, _ = build_model(meta, inputs, "mean")
    rec["outputs/mean"] = model_m(x).numpy()
    assert SIGNS.unused() == 0, name
    SIGNS.load([])

    rec = {k: np.asarray(v) for k, v in rec.items()}
    assert sorted(rec) == sorted(meta["expected"]), (name, sorted(rec), meta["expected"])
    for k, v in rec.items():
        assert v.dtype == dtype, (name, k, v.dtype)
    nan_keys = sorted(k for k, v in rec.items() if np.isnan(v).any())
    return rec, {**reference_files(name), "nan_keys": nan_keys, "network": network}


class _Recorder:
    """Wraps a module so that calls of ``fn_name`` are recorded (self-check only)."""

    def __init__(self, module, fn_name):
        self._module, self._fn_name, self.draws = module, fn_name, []

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if name != self._fn_name:
            return attr

        def wrapper(*args, **kwargs):
            out = attr(*args, **kwargs)
            self.draws.append(out.numpy())
            return out

        return wrapper


SELF_CHECK_CASES = ("lrt_64_normal_bias_prior", "reparam_64_normal_bias_prior",
                    "flipout_64_normal_bias_prior", "lrt_32_normal_bias_prior",
                    "reparam_32_normal_bias_prior", "flipout_32_normal_bias_prior")


def self_check_injection(name):
    """Empirical check of the injection: the real sampling path == the injected path, bitwise.

    Runs the layer with TFP's default tensor fns (``d.sample()``) and TF's own random draws
    (recording the standard normals ``samplers.normal`` returned inside ``Normal._sample_n``
    and the two Rademacher sign tensors), then runs it again with those draws injected the way
    the recordings are made. Outputs, losses and every gradient must be identical bit for bit.
    """
    meta, inputs = read_case(name)
    assert meta["kind"] == "layer"
    x, g = tf.constant(inputs["x"]), tf.constant(inputs["g"])

    def run(mode, noise):
        model, layers, _ = build_model(meta, inputs, mode, noise=noise)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x)
            L = tf.reduce_sum(g * out) + tf.add_n(list(model.losses))
        grads = tape.gradient(L, [x] + list(model.weights))
        return [out.numpy()] + [l.numpy() for l in model.losses] + [gr.numpy() for gr in grads]

    normals = _Recorder(_REAL_SAMPLERS, "normal")
    signs = _Recorder(_REAL_TFP_RANDOM, "rademacher")
    tfp_normal_module.samplers, tfp_dv_module.tfp_random = normals, signs
    try:
        tf.random.set_seed(meta["seed"] % (2 ** 31))
        real = run("tfp", None)
    finally:
        tfp_normal_module.samplers, tfp_dv_module.tfp_random = _GUARD, SIGNS
    # Draw order: the kernel's (inside _apply_variational_kernel), then the bias's.
    assert len(normals.draws) == 2, (name, len(normals.draws))
    noise = {"kernel": normals.draws[0][0], "bias": normals.draws[1][0]}
    SIGNS.load(signs.draws)
    injected = run("sample", noise)
    assert SIGNS.unused() == 0, name
    SIGNS.load([])
    assert len(real) == len(injected)
    for a, b in zip(real, injected):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (
            name, "injected path differs from TFP's sampling path", np.max(np.abs(a - b)))
    return len(real)


def save_npz_deterministic(path, arrays):
    """Like np.savez_compressed, but with a fixed zip timestamp and sorted keys."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def layer_case_names():
    names = sorted(os.listdir(os.path.join(REFERENCE, "cases")))
    out = []
    for n in names:
        with open(os.path.join(REFERENCE, "cases", n, "case.json")) as f:
            kind = json.load(f)["kind"]
        if kind in ("layer", "network"):
            assert n.startswith(LAYER_PREFIXES), n
            out.append(n)
    return out


# --------------------------------------------------------------------------
# The priors and dense_variational cases (--priors)
# --------------------------------------------------------------------------

PRIOR_KINDS = ("priors", "dense_variational")
DEFAULT_OUT_PRIORS = os.path.join(REPO, "tests", "fixtures", "tfp_reference_priors")


def prior_fn(spec, name):
    """A kernel_prior_fn / bias_prior_fn for one case.json prior (None: no prior)."""
    if spec is None:
        return None
    kind = spec["type"]
    if kind == "normal":
        if name == "kernel" and _is_standard_normal(spec):
            return tfp.layers.default_multivariate_normal_fn
        return normal_prior_fn(spec["loc"], spec["scale"])
    if kind == "trainable_normal":
        return tfp.layers.default_mean_field_normal_fn()

    def fn(dtype, shape, _name, trainable, add_variable_fn):
        del trainable, add_variable_fn
        shape = list(shape)
        c = lambda v: tf.constant(v, dtype=dtype)  # noqa: E731
        if kind == "scale_mixture":
            dist = tfd.MixtureSameFamily(
                mixture_distribution=tfd.Categorical(
                    probs=tf.constant([spec["pi"], 1.0 - spec["pi"]], dtype=dtype)),
                components_distribution=tfd.Normal(
                    loc=tf.zeros(shape + [2], dtype=dtype),
                    scale=tf.constant([spec["sigma1"], spec["sigma2"]], dtype=dtype)))
        elif kind == "laplace":
            dist = tfd.Laplace(loc=tf.fill(shape, c(spec["loc"])), scale=c(spec["scale"]))
        elif kind == "student_t":
            dist = tfd.StudentT(df=c(spec["df"]), loc=tf.fill(shape, c(spec["loc"])),
                                scale=c(spec["scale"]))
        else:
            raise ValueError(f"unknown prior type {kind!r}")
        return tfd.Independent(dist, reinterpreted_batch_ndims=len(shape))

    return fn


def _weighted(value, weight):
    """TFP's idiom: / N for a weight 1 / N (N an integer), else * weight."""
    if weight == 1:
        return value
    n = round(1 / weight)
    return value / n if abs(1 / n - weight) <= 1e-15 * weight else value * weight


def divergence_fn(cfg, name, class_name, noise, mode):
    """A kernel_divergence_fn / bias_divergence_fn for one term of a case.json config."""
    spec = cfg.get(f"{name}_divergence") or {"type": "closed_form", "weight": 1.0}
    weight = spec["weight"]
    if spec["type"] == "closed_form":
        return lambda q, p, _: _weighted(tfd.kl_divergence(q, p), weight)
    own = name == "bias" or class_name == "DenseReparameterization"
    extra = spec["sample"] == "extra" or not own

    def fn(q, p, w):
        if extra and mode == "tfp":     # self-check only: TFP's own draw
            w = q.sample()
        elif extra:   # the fn's own draw, q.sample() with the case's eps injected
            normal = q.distribution
            if mode == "mean":
                eps = tf.zeros_like(tf.convert_to_tensor(normal.loc))
            else:
                eps = tf.constant(noise[f"{name}_divergence"])
            w = _sample_like_normal(eps, normal)
        elif mode == "mean" and name == "bias":
            w = tf.convert_to_tensor(q.distribution.loc)
        return _weighted(q.log_prob(w) - p.log_prob(w), weight)

    return fn


def build_prior_layer(meta, noise, mode):
    """A tfp.layers estimator for a ``priors`` case (mode "sample" or "mean")."""
    spec = meta["model"]
    cfg = spec["config"]
    cls_name = spec["class_name"]
    layer_spec = {"class_name": cls_name,
                  "config": {**cfg, "kernel_prior": None, "bias_prior": None}}
    base = build_layer(layer_spec, noise, mode)  # posteriors and tensor fns as for the layer cases
    kwargs = dict(units=cfg["units"], activation=base.activation, dtype=cfg["dtype"],
                  kernel_posterior_fn=base.kernel_posterior_fn,
                  kernel_posterior_tensor_fn=base.kernel_posterior_tensor_fn,
                  bias_posterior_fn=base.bias_posterior_fn,
                  bias_posterior_tensor_fn=base.bias_posterior_tensor_fn,
                  kernel_prior_fn=prior_fn(cfg["kernel_prior"], "kernel"),
                  bias_prior_fn=prior_fn(cfg["bias_prior"], "bias"),
                  kernel_divergence_fn=divergence_fn(cfg, "kernel", cls_name, noise, mode),
                  bias_divergence_fn=divergence_fn(cfg, "bias", cls_name, noise, mode))
    if cfg["activation"] == "linear":
        kwargs["activation"] = None
    return TFP_CLASSES[cls_name](**kwargs)


TUTORIAL_C = float(np.log(np.expm1(1.0)))


def build_dense_variational(meta, noise, mode):
    """tfp.layers.DenseVariational with the tutorial's posterior_mean_field and prior_trainable
    (or the fixed N(0, 1) prior), the posterior's sample injected."""
    cfg = meta["model"]["config"]

    def to_tensor(d):
        if mode == "tfp":       # self-check only: TFP's own draw
            return d.sample()
        if mode == "mean":
            return d.mean()
        return _sample_like_normal(tf.constant(noise["posterior"]), d.distribution)

    # the prior's sample, which nothing uses: its mean (no draw), TFP's sample in the self-check
    prior_tensor = tfd.Distribution.sample if mode == "tfp" else tfd.Distribution.mean

    def posterior_mean_field(kernel_size, bias_size=0, dtype=None):
        n = kernel_size + bias_size
        c = np.log(np.expm1(1.))
        return tf_keras.Sequential([
            tfp.layers.VariableLayer(2 * n, dtype=dtype),
            tfp.layers.DistributionLambda(lambda t: tfd.Independent(
                tfd.Normal(loc=t[..., :n], scale=1e-5 + tf.nn.softplus(c + t[..., n:])),
                reinterpreted_batch_ndims=1), convert_to_tensor_fn=to_tensor)])

    def prior_trainable(kernel_size, bias_size=0, dtype=None):
        n = kernel_size + bias_size
        return tf_keras.Sequential([
            tfp.layers.VariableLayer(n, dtype=dtype),
            tfp.layers.DistributionLambda(lambda t: tfd.Independent(
                tfd.Normal(loc=t, scale=1), reinterpreted_batch_ndims=1),
                convert_to_tensor_fn=prior_tensor)])

    def prior_fixed(kernel_size, bias_size=0, dtype=None):
        n = kernel_size + bias_size
        return tf_keras.Sequential([
            tfp.layers.DistributionLambda(lambda t: tfd.Independent(
                tfd.Normal(loc=tf.zeros(n, dtype=dtype), scale=1), reinterpreted_batch_ndims=1),
                convert_to_tensor_fn=prior_tensor)])

    act = cfg["activation"]
    return tfp.layers.DenseVariational(
        cfg["units"], posterior_mean_field,
        prior_trainable if cfg["prior"] == "trainable" else prior_fixed,
        kl_weight=cfg["kl_weight"], kl_use_exact=cfg["kl_use_exact"],
        activation=None if act == "linear" else act, use_bias=cfg["use_bias"],
        dtype=cfg["dtype"])


def _weight_key(name):
    """A TFP weight name as the reference's param key (DenseVariational's "posterior/constant:0"
    -> "posterior_constant")."""
    name = name[:-2] if name.endswith(":0") else name
    for scope in ("posterior", "prior"):
        if name.endswith(f"{scope}/constant"):
            return f"{scope}_constant"
    return name.split("/")[-1]


def _prior_layer_call(meta, inputs, mode):
    """Builds, sets the weights of and calls the TFP layer of a priors / dense_variational case.
    Returns (layer, outputs, losses, tape, x)."""
    params = _tree("params", inputs)
    noise = _tree("noise", inputs)
    dtype = tf.as_dtype(meta["dtype"])
    x = tf.constant(inputs["x"])
    if meta["kind"] == "dense_variational":
        layer = build_dense_variational(meta, noise, mode)
    else:
        layer = build_prior_layer(meta, noise, mode)
    _load_signs(meta, inputs)
    layer(x)   # Keras' implicit build (DenseVariational builds its posterior/prior models here)
    _load_signs(meta, inputs)
    order = [_weight_key(w.name) for w in layer.weights]
    assert sorted(order) == sorted(params), (meta["name"], order, sorted(params))
    layer.set_weights([params[n] for n in order])
    for w, n in zip(layer.weights, order):
        assert w.dtype == dtype and np.array_equal(w.numpy(), params[n]), (meta["name"], n)
    tape = tf.GradientTape()
    with tape:
        tape.watch(x)
        out = layer(x)
        losses = list(layer.losses)
    assert SIGNS.unused() == 0, meta["name"]
    SIGNS.load([])
    return layer, out, losses, tape, x, order


PRIOR_SELF_CHECK_CASES = ("priors_lrt_64_mixture_mc", "priors_flipout_32_mixture_mc",
                          "priors_reparam_64_mixture_mc_extra", "dv_64_mc_trainable_klw",
                          "dv_32_mc_trainable")


def self_check_prior_injection(name):
    """The injected draws of the Monte Carlo divergences and of DenseVariational's posterior ==
    TFP's own sampling path, bitwise: the case's layer run with TFP's draws (``q.sample()`` in the
    divergence fn, the tutorial's ``d.sample()``), recorded, then injected as the recordings do;
    outputs, losses and every gradient must be identical bit for bit."""
    meta, inputs = read_case(name)
    params = _tree("params", inputs)
    x, g = tf.constant(inputs["x"]), tf.constant(inputs["g"])
    floatx = tf_keras.backend.floatx()
    if meta["kind"] == "dense_variational":
        tf_keras.backend.set_floatx(meta["dtype"])

    def run(mode, noise, signs):
        build = build_dense_variational if meta["kind"] == "dense_variational" else \
            build_prior_layer
        layer = build(meta, noise, mode)
        SIGNS.load(signs)
        layer(x)
        order = [_weight_key(w.name) for w in layer.weights]
        layer.set_weights([params[n] for n in order])
        normals.draws.clear()
        signs_rec.draws.clear()
        SIGNS.load(signs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            L = tf.reduce_sum(g * out) + tf.add_n(list(layer.losses))
        grads = tape.gradient(L, [x] + list(layer.weights))
        return [out.numpy()] + [v.numpy() for v in layer.losses] + [gr.numpy() for gr in grads]

    normals = _Recorder(_REAL_SAMPLERS, "normal")
    signs_rec = _Recorder(_REAL_TFP_RANDOM, "rademacher")
    try:
        tfp_normal_module.samplers, tfp_dv_module.tfp_random = normals, signs_rec
        try:
            tf.random.set_seed(meta["seed"] % (2 ** 31))
            real = run("tfp", None, [])
        finally:
            tfp_normal_module.samplers, tfp_dv_module.tfp_random = _GUARD, SIGNS
        draws, signs = list(normals.draws), list(signs_rec.draws)
        noise_keys = [k for k in meta["inputs"] if k.startswith("noise/")]
        if meta["kind"] == "dense_variational":
            roles = ["posterior", "prior"]       # the prior's draw is the unused one
        else:
            roles = ["kernel"] + (["bias"] if "noise/bias" in noise_keys else [])
            roles += [k for k in ("kernel_divergence", "bias_divergence")
                      if f"noise/{k}" in noise_keys]
        assert len(draws) == len(roles), (name, len(draws), roles)
        noise = {r: d[0] for r, d in zip(roles, draws)}
        injected = run("sample", noise, signs)
        SIGNS.load([])
    finally:
        tf_keras.backend.set_floatx(floatx)
    assert len(real) == len(injected)
    for a, b in zip(real, injected):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (
            name, "injected path differs from TFP's sampling path", np.max(np.abs(a - b)))
    return len(real)


def _term_names(meta, layer):
    if meta["kind"] == "dense_variational":
        return ["kernel"]
    return _loss_names(layer)


def record_prior_case(name):
    meta, inputs = read_case(name)
    assert meta["kind"] in PRIOR_KINDS, name
    dtype = np.dtype(meta["dtype"])
    floatx = tf_keras.backend.floatx()
    if meta["kind"] == "dense_variational":
        tf_keras.backend.set_floatx(meta["dtype"])   # DistributionLambda follows floatx
    try:
        layer, out, losses, tape, x, order = _prior_layer_call(meta, inputs, "sample")
        g = tf.constant(inputs["g"])
        with tape:
            L = tf.reduce_sum(g * out)
            for loss in losses:
                L = L + tf.reduce_sum(loss)
        grads = tape.gradient(L, [x] + list(layer.weights))
        rec = {"outputs/sample": out.numpy(), "grads/x": grads[0].numpy()}
        names = _term_names(meta, layer)
        assert len(names) == len(losses), (name, names, losses)
        total = tf.constant(0, dtype=meta["dtype"])
        for n, loss in zip(names, losses):
            assert loss.shape == (), (name, n, loss.shape)
            rec[f"kl/{n}"] = loss.numpy()
            total = total + loss
        rec["kl/total"] = total.numpy()
        for n, gr in zip(order, grads[1:]):
            assert gr is not None, (name, n)
            rec[f"grads/{n}"] = gr.numpy()
        layer_m, out_m, losses_m, _, _, _ = _prior_layer_call(meta, inputs, "mean")
        rec["outputs/mean"] = out_m.numpy()
        total = tf.constant(0, dtype=meta["dtype"])
        for loss in losses_m:
            total = total + loss
        rec["kl_mean/total"] = total.numpy()
    finally:
        tf_keras.backend.set_floatx(floatx)
    rec = {k: np.asarray(v) for k, v in rec.items()}
    assert sorted(rec) == sorted(meta["expected"]), (name, sorted(rec), meta["expected"])
    for k, v in rec.items():
        assert v.dtype == dtype, (name, k, v.dtype)
    nan_keys = sorted(k for k, v in rec.items() if np.isnan(v).any())
    return rec, {**reference_files(name), "nan_keys": nan_keys, "weights": order}


def prior_case_names():
    out = []
    for n in sorted(os.listdir(os.path.join(REFERENCE, "cases"))):
        with open(os.path.join(REFERENCE, "cases", n, "case.json")) as f:
            if json.load(f)["kind"] in PRIOR_KINDS:
                out.append(n)
    return out


def main(argv):
    priors = argv[:1] == ["--priors"]
    args = [a for a in argv[1 if priors else 0:] if a != "--replace"]
    default = DEFAULT_OUT_PRIORS if priors else DEFAULT_OUT
    outdir = _outdir.writable_output(args[0] if args else default, argv)
    os.makedirs(outdir, exist_ok=True)
    self_checks = PRIOR_SELF_CHECK_CASES if priors else SELF_CHECK_CASES
    for name in self_checks:
        n = (self_check_prior_injection if priors else self_check_injection)(name)
        print(f"self-check {name}: injected path == TFP sampling path, bitwise ({n} arrays)")
    record, width = (record_prior_case, 44) if priors else (record_case, 32)
    cases = {}
    for name in (prior_case_names() if priors else layer_case_names()):
        rec, info = record(name)
        save_npz_deterministic(os.path.join(outdir, name + ".npz"), rec)
        cases[name] = info
        print(f"{name:{width}s} {len(rec):2d} keys" + (f"  NaN in {info['nan_keys']}"
                                                       if info["nan_keys"] else ""))
    versions = {
        "versions": VERSIONS,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python "
                   "tools/record_tfp_on_reference.py" + (" --priors" if priors else ""),
        "env": {"TF_USE_LEGACY_KERAS": os.environ.get("TF_USE_LEGACY_KERAS")},
        "reference_manifest_sha256": _sha256(os.path.join(REFERENCE, "manifest.json")),
        "injection_self_check_cases": list(self_checks),
        "cases": cases,
    }
    with open(os.path.join(outdir, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {outdir}; versions: {VERSIONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
