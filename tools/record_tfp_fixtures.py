"""Record conformance fixtures from the real TensorFlow Probability layers.

Why this exists
---------------
``lrtdense`` reimplements ``tfp.layers.DenseLocalReparameterization``,
``tfp.layers.DenseReparameterization`` and ``tfp.layers.DenseFlipout`` in
NumPy + autograd.  The test suite must not depend on TensorFlow, so this script
runs the *real* TFP layers once (in a separate virtualenv) and stores what they
did: inputs, weights, the random noise TFP drew, outputs, KL losses and the
gradients of a fixed scalar objective.  The pytest suite then replays each case
with lrtdense's own noise injection and compares.

For each case the script

1. builds the TFP layer (``dtype`` passed to the layer) on the input shape and
   overwrites its weights with ``layer.set_weights`` using values drawn from a
   ``numpy.random.default_rng(seed)`` (seed derived from the case name, so the
   order in which cases run does not matter);
2. calls ``tf.random.set_seed(seed)`` and calls the layer once inside a
   ``tf.GradientTape`` that watches ``x``;
3. computes ``L = sum(g * outputs) + sum(layer.losses)`` with a fixed random
   cotangent ``g`` and takes ``dL/dx`` and ``dL/dw`` for every layer weight;
4. recovers the noise TFP drew in lrtdense's convention (standard-normal
   epsilon, +-1 signs), in float64.

Output, per case, in OUTDIR:

* ``<case>.npz`` - plain numeric arrays only (``np.load(..., allow_pickle=False)``).
  Inputs, weights, outputs, losses and gradients are in the layer dtype; all
  ``noise/*`` arrays are float64.  Keys:

  - ``x``, ``g``, ``outputs``
  - weights, named as TFP names them (layer prefix and ``:0`` stripped):
    ``kernel_posterior_loc``, ``kernel_posterior_untransformed_scale``,
    ``bias_posterior_loc``, ``bias_posterior_untransformed_scale``
  - ``kernel_posterior_scale`` / ``bias_posterior_scale``: TFP's own
    ``eps + softplus(untransformed_scale)`` (extra, for checking the transform)
  - ``kl_kernel``, ``kl_bias`` (scalars, the entries of ``layer.losses``)
  - ``grad/x`` and ``grad/<weight name>`` for every weight (NaNs kept)
  - LRT: ``affine_loc``, ``affine_scale``, ``affine_tensor``
  - Reparameterization: ``kernel_tensor`` (the sampled kernel W)
  - Flipout: ``kernel_tensor`` (the sample of Normal(0, scale))
  - ``bias_tensor`` when there is a bias posterior
  - sample mode only: ``noise/kernel``, ``noise/bias`` (Normal bias posterior),
    ``noise/sign_input`` and ``noise/sign_output`` (Flipout), and
    ``eps/kernel`` / ``eps/bias``: the raw standard-normal draws TFP's
    ``Normal._sample_n`` made (captured by wrapping ``samplers.normal`` as
    seen from ``tensorflow_probability/python/distributions/normal.py``), in
    the layer dtype, leading sample dimension of size 1 removed.  ``noise/*``
    is recovered from the sampled tensors as the brief specifies (e.g.
    ``(W - loc) / scale`` computed in float64); ``eps/*`` is exactly what was
    drawn (in float32 cases the two differ by float32 rounding; in LRT rows
    whose affine scale is 0, ``noise/kernel`` is 0 while ``eps/kernel`` is not).

* ``<case>.json`` - metadata (layer class, units, activation, dtype, mode,
  priors, weights order, losses order, whether all TFP gradients are finite,
  library versions, notes).

The npz files are written with a fixed zip timestamp so that re-running the
script on the same machine reproduces them byte-for-byte.

How to run
----------
From the repository root, with a virtualenv holding TensorFlow (not a
dependency of lrtdense itself)::

    python3 -m venv .venv-tf
    .venv-tf/bin/pip install 'tensorflow-cpu==2.18.*' 'tf-keras==2.18.*' \
        'tensorflow-probability==0.25.*'
    TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python tools/record_tfp_fixtures.py [OUTDIR]

OUTDIR defaults to ``tests/fixtures/tfp``.  ``--check`` records into a
temporary directory and compares byte-for-byte with OUTDIR instead of writing.
It takes about 10 seconds on a 2-core CPU machine (mostly importing
TensorFlow); the fixtures total well under 1 MB.
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
}

# --------------------------------------------------------------------------
# Capturing TFP's random draws.
#
# DenseFlipout._apply_variational_kernel (dense_variational.py) draws its two
# sign tensors with ``tfp_random.rademacher(...)`` where ``tfp_random`` is the
# module ``tensorflow_probability.python.random`` imported into
# dense_variational.py.  We replace that module-level name with a proxy whose
# ``rademacher`` records what the real function returned.
#
# Normal._sample_n (distributions/normal.py) draws
# ``samplers.normal(shape, mean=0., stddev=1., dtype, seed)`` and returns
# ``sampled * scale + loc``; we wrap ``samplers`` the same way to keep the raw
# epsilon.
# --------------------------------------------------------------------------

_DRAWS = {"rademacher": [], "normal": []}


class _RecordingProxy:
    def __init__(self, module, fn_name, key):
        self._module = module
        self._fn_name = fn_name
        self._key = key

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if name != self._fn_name:
            return attr

        def wrapper(*args, **kwargs):
            out = attr(*args, **kwargs)
            _DRAWS[self._key].append(out.numpy())
            return out

        return wrapper


tfp_dv_module.tfp_random = _RecordingProxy(tfp_dv_module.tfp_random, "rademacher", "rademacher")
tfp_normal_module.samplers = _RecordingProxy(tfp_normal_module.samplers, "normal", "normal")


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

def _case(name, est, dtype="float64", input_shape=(5, 4), units=3, activation=None,
          mode="sample", bias_posterior="deterministic", kernel_prior="default",
          bias_prior=None, zero_rows=(), scale_overrides=None, notes=""):
    return dict(name=name, est=est, dtype=dtype, input_shape=tuple(input_shape), units=units,
                activation=activation, mode=mode, bias_posterior=bias_posterior,
                kernel_prior=kernel_prior, bias_prior=bias_prior, zero_rows=tuple(zero_rows),
                scale_overrides=scale_overrides, notes=notes)


# Extreme untransformed scales mixed into the N(-1, 0.5^2) draws:
# (flat index -> value) for the kernel (4x3) and the bias (3,).
_EXTREME_KERNEL = {0: 40.0, 2: 20.0, 4: -20.0, 7: -40.0, 9: 40.0, 11: -40.0}
_EXTREME_BIAS = {0: 40.0, 2: -40.0}


def make_cases():
    cases = []
    for est in ("lrt", "reparam", "flipout"):
        cases += [
            _case(f"{est}_f64_default", est),
            _case(f"{est}_f32_default", est, dtype="float32"),
            _case(f"{est}_f64_rank3_relu", est, input_shape=(2, 3, 4), activation="relu"),
            _case(f"{est}_f64_normal_bias_priors_tanh", est, activation="tanh",
                  bias_posterior="normal", kernel_prior={"loc": 0.1, "scale": 0.5},
                  bias_prior={"loc": 0.5, "scale": 2.0}),
            _case(f"{est}_f64_mean", est, mode="mean", bias_posterior="normal",
                  activation="sigmoid"),
            _case(f"{est}_f32_mean_rank3", est, dtype="float32", mode="mean",
                  input_shape=(2, 3, 4)),
            _case(f"{est}_f64_zero_rows", est, zero_rows=(1, 3),
                  notes="x rows 1 and 3 are all zero."),
        ]
    cases += [
        _case("lrt_f32_zero_rows", "lrt", dtype="float32", zero_rows=(1, 3),
              notes="x rows 1 and 3 are all zero."),
        _case("lrt_f64_no_prior", "lrt", kernel_prior=None, activation="softplus",
              notes="kernel_prior_fn=None: layer.losses is empty."),
        _case("lrt_f64_extreme_scales", "lrt", activation="elu", bias_posterior="normal",
              scale_overrides={"kernel_posterior_untransformed_scale": _EXTREME_KERNEL,
                               "bias_posterior_untransformed_scale": _EXTREME_BIAS},
              notes="Untransformed scales overwritten at flat indices "
                    + json.dumps({"kernel": {str(k): v for k, v in _EXTREME_KERNEL.items()},
                                  "bias": {str(k): v for k, v in _EXTREME_BIAS.items()}})
                    + " (softplus saturates both ways: scale ~ x for x=40, "
                    "scale = eps + ~4e-18 for x=-40). Normal bias posterior. Where the bias "
                    "scale is ~2.2e-16 the sampled bias equals loc up to rounding, so "
                    "noise/bias recovered from it is mostly rounding error there (see "
                    "noise_recovery_max_abs_err); eps/bias holds the exact draw."),
        _case("lrt_f64_det_bias_normal_prior", "lrt", bias_prior={"loc": 0.0, "scale": 1.5},
              notes="Deterministic bias posterior with a Normal bias prior: TFP's "
                    "KL(Deterministic || Normal) = -log p(bias loc) "
                    "(deterministic.py _kl_deterministic_distribution), summed by Independent."),
        _case("lrt_f64_units1_batch1", "lrt", input_shape=(1, 4), units=1),
    ]
    return cases


def case_seed(name):
    return zlib.crc32(name.encode("utf-8"))


def normal_prior_fn(loc, scale):
    """A kernel/bias prior_fn returning Independent(Normal(loc, scale))."""

    def fn(dtype, shape, name, trainable, add_variable_fn):
        del name, trainable, add_variable_fn
        return tfd.Independent(
            tfd.Normal(loc=tf.fill(shape, tf.constant(loc, dtype=dtype)),
                       scale=tf.constant(scale, dtype=dtype)),
            reinterpreted_batch_ndims=len(shape))

    return fn


def build_layer(case):
    kwargs = dict(units=case["units"], activation=case["activation"], dtype=case["dtype"])
    if case["kernel_prior"] is None:
        kwargs["kernel_prior_fn"] = None
    elif case["kernel_prior"] != "default":
        kwargs["kernel_prior_fn"] = normal_prior_fn(case["kernel_prior"]["loc"],
                                                    case["kernel_prior"]["scale"])
    if case["bias_posterior"] == "none":
        kwargs["bias_posterior_fn"] = None
    elif case["bias_posterior"] == "normal":
        kwargs["bias_posterior_fn"] = tfp.layers.default_mean_field_normal_fn()
    if case["bias_prior"] is not None:
        kwargs["bias_prior_fn"] = normal_prior_fn(case["bias_prior"]["loc"],
                                                  case["bias_prior"]["scale"])
    if case["mode"] == "mean":
        kwargs["kernel_posterior_tensor_fn"] = lambda d: d.mean()
        kwargs["bias_posterior_tensor_fn"] = lambda d: d.mean()
    cls = getattr(tfp.layers, LAYERS[case["est"]])
    return cls(**kwargs)


def strip_name(name):
    name = name.split("/")[-1]
    if name.endswith(":0"):
        name = name[:-2]
    return name


def _f64(t):
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.float64)


def _recover(sample, loc, scale):
    """(sample - loc) / scale in float64; 0 where scale == 0."""
    sample, loc, scale = _f64(sample), _f64(loc), _f64(scale)
    out = np.zeros(np.broadcast_shapes(sample.shape, scale.shape), dtype=np.float64)
    pos = np.broadcast_to(scale > 0, out.shape)
    diff = np.broadcast_to(sample - loc, out.shape)
    sc = np.broadcast_to(scale, out.shape)
    out[pos] = diff[pos] / sc[pos]
    return out


def record_case(case):
    name = case["name"]
    seed = case_seed(name)
    np_dtype = np.dtype(case["dtype"])
    rng = np.random.default_rng(seed)
    in_shape = case["input_shape"]
    in_size, units = in_shape[-1], case["units"]
    out_shape = in_shape[:-1] + (units,)

    # Draw everything in a fixed order, whether used or not.
    x = rng.normal(0.0, 1.0, size=in_shape)
    for r in case["zero_rows"]:
        x[r] = 0.0
    draws = {
        "kernel_posterior_loc": rng.normal(0.0, 0.5, size=(in_size, units)),
        "kernel_posterior_untransformed_scale": rng.normal(-1.0, 0.5, size=(in_size, units)),
        "bias_posterior_loc": rng.normal(0.0, 0.5, size=(units,)),
        "bias_posterior_untransformed_scale": rng.normal(-1.0, 0.5, size=(units,)),
    }
    g = rng.normal(0.0, 1.0, size=out_shape)
    for wname, overrides in (case["scale_overrides"] or {}).items():
        flat = draws[wname].reshape(-1)
        for idx, val in overrides.items():
            flat[idx] = val
    x = x.astype(np_dtype)
    g = g.astype(np_dtype)

    layer = build_layer(case)
    layer.build(in_shape)
    weights_order = [strip_name(w.name) for w in layer.weights]
    layer.set_weights([draws[n].astype(np_dtype) for n in weights_order])
    for w, n in zip(layer.weights, weights_order):
        assert w.dtype == tf.as_dtype(np_dtype), (name, n, w.dtype)
        assert np.array_equal(w.numpy(), draws[n].astype(np_dtype))

    _DRAWS["rademacher"].clear()
    _DRAWS["normal"].clear()
    tf.random.set_seed(seed)
    x_t = tf.constant(x)
    g_t = tf.constant(g)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        outputs = layer(x_t)
        losses = list(layer.losses)
        L = tf.reduce_sum(g_t * outputs)
        for loss in losses:
            L = L + loss
    sources = [x_t] + list(layer.weights)
    grads = tape.gradient(L, sources)
    rademacher = [a.copy() for a in _DRAWS["rademacher"]]
    normals = [a.copy() for a in _DRAWS["normal"]]

    arrays = {"x": x, "g": g, "outputs": outputs.numpy()}
    for w, n in zip(layer.weights, weights_order):
        arrays[n] = w.numpy()

    # Loss naming: _DenseVariational.call applies the kernel divergence first,
    # then the bias divergence; each is skipped when its prior is None.
    loss_names = []
    if layer.kernel_prior is not None:
        loss_names.append("kl_kernel")
    if layer.bias_posterior is not None and layer.bias_prior is not None:
        loss_names.append("kl_bias")
    assert len(loss_names) == len(losses), (name, loss_names, losses)
    for ln, loss in zip(loss_names, losses):
        arrays[ln] = loss.numpy()

    grad_none = []
    for src_name, gr, src in zip(["x"] + weights_order, grads, sources):
        if gr is None:
            grad_none.append(src_name)
            gr = np.zeros(src.shape, dtype=np_dtype)
        arrays["grad/" + src_name] = np.asarray(gr)
    grads_finite = bool(all(np.all(np.isfinite(arrays["grad/" + n]))
                            for n in ["x"] + weights_order))

    kpost = layer.kernel_posterior.distribution
    kscale = tf.convert_to_tensor(kpost.scale)
    kloc = tf.convert_to_tensor(kpost.loc)
    arrays["kernel_posterior_scale"] = kscale.numpy()
    bias_normal = case["bias_posterior"] == "normal"
    if bias_normal:
        bpost = layer.bias_posterior.distribution
        bscale = tf.convert_to_tensor(bpost.scale)
        arrays["bias_posterior_scale"] = bscale.numpy()
    if layer.bias_posterior is not None:
        arrays["bias_tensor"] = layer.bias_posterior_tensor.numpy()

    sample = case["mode"] == "sample"
    est = case["est"]
    n_kernel_normal_draws = 0
    if est == "lrt":
        aff = layer.kernel_posterior_affine
        arrays["affine_loc"] = tf.convert_to_tensor(aff.loc).numpy()
        arrays["affine_scale"] = tf.convert_to_tensor(aff.scale).numpy()
        arrays["affine_tensor"] = layer.kernel_posterior_affine_tensor.numpy()
        if sample:
            arrays["noise/kernel"] = _recover(arrays["affine_tensor"], arrays["affine_loc"],
                                              arrays["affine_scale"])
            n_kernel_normal_draws = 1
    elif est == "reparam":
        arrays["kernel_tensor"] = layer.kernel_posterior_tensor.numpy()
        if sample:
            arrays["noise/kernel"] = _recover(arrays["kernel_tensor"], kloc, kscale)
            n_kernel_normal_draws = 1
    elif est == "flipout":
        arrays["kernel_tensor"] = layer.kernel_posterior_affine_tensor.numpy()
        assert len(rademacher) == 2, (name, len(rademacher))
        if sample:
            arrays["noise/kernel"] = _recover(arrays["kernel_tensor"], 0.0, kscale)
            arrays["noise/sign_input"] = _f64(rademacher[0])
            arrays["noise/sign_output"] = _f64(rademacher[1])
            assert arrays["noise/sign_input"].shape == in_shape
            assert arrays["noise/sign_output"].shape == out_shape
            n_kernel_normal_draws = 1
    if sample and bias_normal:
        arrays["noise/bias"] = _recover(arrays["bias_tensor"], bpost.loc, bscale)

    # Raw standard-normal draws, in order: kernel (if sampled) then bias.
    expected_normals = n_kernel_normal_draws + (1 if (sample and bias_normal) else 0)
    assert len(normals) == expected_normals, (name, len(normals), expected_normals)
    if sample:
        i = 0
        if n_kernel_normal_draws:
            eps = normals[i][0]
            i += 1
            arrays["eps/kernel"] = eps
        if bias_normal:
            arrays["eps/bias"] = normals[i][0]
    if est != "flipout" or not sample:
        assert est == "flipout" or not rademacher

    # How well the recovered noise matches the raw draws (where the scale is > 0).
    noise_err = {}
    for k in ("kernel", "bias"):
        if "eps/" + k in arrays:
            nz = arrays["noise/" + k] != 0
            diff = np.abs(arrays["noise/" + k] - _f64(arrays["eps/" + k]))[nz]
            noise_err[k] = float(diff.max()) if diff.size else 0.0

    # dtype discipline: noise in float64, everything else in the layer dtype.
    for k, v in list(arrays.items()):
        v = np.asarray(v)
        if k.startswith("noise/"):
            assert v.dtype == np.float64, (name, k, v.dtype)
        else:
            assert v.dtype == np_dtype, (name, k, v.dtype)
        arrays[k] = v

    meta = {
        "case": name,
        "layer": LAYERS[est],
        "units": units,
        "activation": case["activation"],
        "dtype": case["dtype"],
        "mode": case["mode"],
        "bias_posterior": case["bias_posterior"],
        "kernel_prior": ({"loc": 0.0, "scale": 1.0} if case["kernel_prior"] == "default"
                         else case["kernel_prior"]),
        "kernel_prior_is_default": case["kernel_prior"] == "default",
        "bias_prior": case["bias_prior"],
        "input_shape": list(in_shape),
        "weights_order": weights_order,
        "losses": loss_names,
        "grads_finite": grads_finite,
        "grads_none": grad_none,
        "noise_recovery_max_abs_err": noise_err,
        "seed": seed,
        "keys": sorted(arrays),
        "versions": VERSIONS,
        "notes": _notes(case, grad_none),
    }
    return arrays, meta


def _notes(case, grad_none):
    parts = []
    if case["kernel_prior"] == "default":
        parts.append("Kernel prior: TFP default (tfp.layers.default_multivariate_normal_fn, "
                     "standard Normal per element), recorded as {loc: 0, scale: 1} with "
                     "kernel_prior_is_default true.")
    elif case["kernel_prior"] is None:
        parts.append("No kernel prior (kernel_prior_fn=None).")
    if case["mode"] == "mean":
        parts.append("Mean mode: kernel_posterior_tensor_fn = bias_posterior_tensor_fn = "
                     "lambda d: d.mean(); no noise/eps keys.")
        if case["est"] == "flipout":
            parts.append("DenseFlipout still draws its two Rademacher sign tensors in mean "
                         "mode, but they multiply a zero perturbation (mean of Normal(0, scale)).")
    if grad_none:
        parts.append("tape.gradient returned None (no dependence) for " + ", ".join(grad_none)
                     + "; stored as zeros.")
    parts.append("Weights: loc ~ N(0, 0.5^2), untransformed_scale ~ N(-1, 0.5^2), "
                 "x ~ N(0,1), g ~ N(0,1), drawn with numpy default_rng(seed) in the order "
                 "x, kernel loc, kernel untransformed_scale, bias loc, bias "
                 "untransformed_scale, g (always all drawn, at float64, then cast).")
    parts.append("TF sampling seeded with tf.random.set_seed(seed) right before the call.")
    parts.append("Objective L = sum(g * outputs) + sum(layer.losses).")
    if case["notes"]:
        parts.append(case["notes"])
    return " ".join(parts)


# --------------------------------------------------------------------------
# Deterministic output
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
        summary.append((meta["case"], meta["grads_finite"]))
    return summary


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    outdir = args[0] if args else os.path.join("tests", "fixtures", "tfp")
    if "--check" in argv:
        import filecmp
        with tempfile.TemporaryDirectory() as tmp:
            record_all(tmp)
            names = sorted(os.listdir(tmp))
            existing = sorted(f for f in os.listdir(outdir) if f.endswith((".npz", ".json")))
            bad = [n for n in names
                   if not filecmp.cmp(os.path.join(tmp, n), os.path.join(outdir, n), shallow=False)
                   ] if names == existing else ["file list differs"]
        if bad:
            print("MISMATCH:", bad)
            return 1
        print(f"OK: {len(names)} files reproduced byte-for-byte in {outdir}")
        return 0
    summary = record_all(_outdir.writable_output(outdir, argv))
    for name, finite in summary:
        print(f"{name:40s} grads_finite={finite}")
    print(f"wrote {len(summary)} cases to {outdir}; versions: {VERSIONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
