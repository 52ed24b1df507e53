"""Record a trajectory of tf-keras' Adam optimizer on float64 variables.

Why this exists
---------------
lrtdense's Adam is meant to reproduce tf-keras' ``tf_keras.optimizers.Adam``
(in tf-keras 2.18 that name is the "new" optimizer
``tf_keras.src.optimizers.adam.Adam``, not ``tf_keras.optimizers.legacy.Adam``)
step for step.  This script runs the real optimizer on two float64 variables
``w`` (3, 4) and ``b`` (4,) for T = 300 steps with a fixed, seeded gradient
sequence and stores the parameters after every step, so that a TensorFlow-free
pytest can replay the sequence through lrtdense's Adam and compare.

The gradient sequence (numpy ``default_rng(SEED)``): ``g_t = N(0, 1) * 10**u_t``
with one ``u_t ~ U(-3, 1)`` per step (the scale varies over time over four
decades); ``w[1, 2]`` always gets a zero gradient, and the whole gradient is
zero at the steps listed in ``ZERO_STEPS`` (including the very first step).

Output: ``tests/fixtures/adam/keras_adam_f64.npz`` (plain float64 arrays
``init/w``, ``init/b``, ``grads/w`` (T,3,4), ``grads/b`` (T,4), ``params/w``
(T,3,4), ``params/b`` (T,4) = values after each step) and
``keras_adam_f64.json`` (library, class, versions, hyperparameters, the
``update_step`` source lines of the installed tf-keras and notes on the exact
arithmetic).

How to run
----------
::

    TF_USE_LEGACY_KERAS=1 .venv-tf/bin/python tools/record_adam_fixtures_keras.py [OUTDIR]

(see tools/record_tfp_fixtures.py for creating the virtualenv).  OUTDIR
defaults to ``tests/fixtures/adam``; ``--check`` re-records into a temporary
directory and compares byte-for-byte instead of writing.  It takes about
5 seconds (mostly importing TensorFlow).
"""

import inspect
import io
import json
import os
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _outdir  # noqa: E402  (tools/_outdir.py: never record over files unasked)

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

SEED = 20240607
T = 300
ZERO_STEPS = (0, 41, 42, 43, 177, 299)  # 0-based step indices with an all-zero gradient
ZERO_W_ELEMENT = (1, 2)                  # w element whose gradient is always 0
HYPER = dict(learning_rate=2.0 ** -7, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False)


def make_data():
    rng = np.random.default_rng(SEED)
    init_w = rng.normal(0.0, 1.0, size=(3, 4))
    init_b = rng.normal(0.0, 1.0, size=(4,))
    gw = np.empty((T, 3, 4))
    gb = np.empty((T, 4))
    for t in range(T):
        scale = 10.0 ** rng.uniform(-3.0, 1.0)
        gw[t] = rng.normal(0.0, 1.0, size=(3, 4)) * scale
        gb[t] = rng.normal(0.0, 1.0, size=(4,)) * scale
    gw[:, ZERO_W_ELEMENT[0], ZERO_W_ELEMENT[1]] = 0.0
    for t in ZERO_STEPS:
        gw[t] = 0.0
        gb[t] = 0.0
    return init_w, init_b, gw, gb


def update_step_source(opt_cls):
    src = inspect.getsource(opt_cls.update_step)
    return src


def record():
    init_w, init_b, gw, gb = make_data()
    w = tf.Variable(init_w, dtype=tf.float64, name="w")
    b = tf.Variable(init_b, dtype=tf.float64, name="b")
    opt = tf_keras.optimizers.Adam(**HYPER)
    params_w = np.empty_like(gw)
    params_b = np.empty_like(gb)
    for t in range(T):
        opt.apply_gradients(zip([tf.constant(gw[t]), tf.constant(gb[t])], [w, b]))
        params_w[t] = w.numpy()
        params_b[t] = b.numpy()
    assert int(opt.iterations.numpy()) == T

    cls = type(opt)
    lr_var = opt._learning_rate
    arrays = {
        "init/w": init_w, "init/b": init_b,
        "grads/w": gw, "grads/b": gb,
        "params/w": params_w, "params/b": params_b,
    }
    meta = {
        "library": "tf_keras",
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "constructed_as": "tf_keras.optimizers.Adam(learning_rate=2**-7, beta_1=0.9, "
                          "beta_2=0.999, epsilon=1e-7, amsgrad=False)",
        "is_legacy_optimizer": bool(getattr(opt, "is_legacy_optimizer", False)),
        "jit_compile": bool(opt.jit_compile),
        "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                     "numpy": np.__version__},
        "hyperparameters": dict(HYPER, adaptive_epsilon=bool(opt.adaptive_epsilon),
                                weight_decay=opt.weight_decay, clipnorm=opt.clipnorm,
                                clipvalue=opt.clipvalue, global_clipnorm=opt.global_clipnorm,
                                use_ema=opt.use_ema),
        "learning_rate_variable_dtype": lr_var.dtype.name,
        "learning_rate_variable_value": float(lr_var.numpy()),
        "iterations_variable_dtype": opt.iterations.dtype.name,
        "T": T,
        "seed": SEED,
        "zero_gradient_steps": list(ZERO_STEPS),
        "always_zero_w_element": list(ZERO_W_ELEMENT),
        "gradient_sequence": "per step t: s_t = 10**U(-3,1); g_w = N(0,1)[3,4] * s_t, "
                             "g_b = N(0,1)[4] * s_t (numpy default_rng(seed), init_w, init_b "
                             "drawn first, then per step: s_t, g_w, g_b); then "
                             "g_w[:, 1, 2] = 0 and all gradients at zero_gradient_steps = 0.",
        "params_semantics": "params/*[t] = variable value after the (t+1)-th apply_gradients call",
        "source_file": "site-packages/" + inspect.getsourcefile(cls).split("site-packages/")[-1],
        "source_excerpt": update_step_source(cls),
        "formula": [
            "lr = tf.cast(self.learning_rate, float64)   # float32 variable holding 2**-7 "
            "-> exactly 0.0078125",
            "local_step = tf.cast(self.iterations + 1, float64)   # iterations is int64, "
            "incremented after all variables are updated; first step uses local_step = 1",
            "beta_1_power = tf.pow(tf.cast(0.9, float64), local_step)   # NOTE: tf.cast of a "
            "Python float goes through a float32 tensor: base = float64(float32(0.9)) = "
            "0.8999999761581421",
            "beta_2_power = tf.pow(tf.cast(0.999, float64), local_step)  # base = "
            "float64(float32(0.999)) = 0.9990000128746033",
            "alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)   # evaluated "
            "left to right: (lr * sqrt(1 - b2p)) / (1 - b1p)",
            "epsilon_hat = 1e-7 (adaptive_epsilon=False), a Python float -> float64 1e-7",
            "m.assign_add((g - m) * (1 - 0.9))    # Python-float (1 - beta_1) = "
            "0.09999999999999998 in float64, NOT float32-rounded",
            "v.assign_add((tf.square(g) - v) * (1 - 0.999))   # (1 - beta_2) = "
            "0.0010000000000000009 in float64",
            "var.assign_sub((m * alpha) / (tf.sqrt(v) + epsilon_hat))",
        ],
        "notes": (
            "tf_keras.optimizers.Adam in tf-keras 2.18 is the new (non-legacy) optimizer "
            "class shown in 'class'. jit_compile was requested by default but is switched off "
            "because there is no GPU, so update_step runs eagerly op by op in float64 "
            "(no XLA fusion). The learning-rate variable is float32 (backend.floatx()); "
            "with lr = 2**-7 the float32 storage is exact, so it does not matter here (with "
            "e.g. lr = 1e-3 the effective lr would be float64(float32(1e-3)) = "
            "0.0010000000474974513). What DOES matter for bit-exact replay: the bias "
            "corrections use float32-rounded betas (tf.cast(python_float, float64) converts "
            "via float32), while the moment updates use the float64 values of (1 - beta). "
            "tf.pow(float64, float64) on this CPU gave the same bits as Python's math.pow (libm "
            "pow) for every step, but NOT always the same as np.power (numpy's SIMD pow on an "
            "AVX-512 machine differed by 1 ulp for ~5% of the steps): a replay in plain "
            "Python/NumPy that computes the beta powers with math.pow(float(np.float32(beta)), "
            "t), then the formula above with numpy float64 elementwise ops in that order, "
            "reproduced params/w and params/b bit-for-bit for all 300 steps (checked when "
            "these fixtures were recorded); with float64 betas in the powers it is off by up "
            "to ~2e-6. With an all-zero gradient at the first "
            "step, m = v = 0 and the update is 0 / (0 + eps) = 0; later zero-gradient steps "
            "still move the variables (m decays but is nonzero)."
        ),
    }
    return arrays, meta


def save_npz_deterministic(path, arrays):
    """Like np.savez, but with a fixed zip timestamp and sorted keys."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def write(outdir, arrays, meta):
    os.makedirs(outdir, exist_ok=True)
    save_npz_deterministic(os.path.join(outdir, "keras_adam_f64.npz"), arrays)
    with open(os.path.join(outdir, "keras_adam_f64.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    outdir = args[0] if args else os.path.join("tests", "fixtures", "adam")
    arrays, meta = record()
    if "--check" in argv:
        import filecmp
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, arrays, meta)
            bad = [n for n in ("keras_adam_f64.npz", "keras_adam_f64.json")
                   if not filecmp.cmp(os.path.join(tmp, n), os.path.join(outdir, n),
                                      shallow=False)]
        if bad:
            print("MISMATCH:", bad)
            return 1
        print(f"OK: keras_adam_f64.npz/.json reproduced byte-for-byte in {outdir}")
        return 0
    write(_outdir.writable_output(outdir, argv), arrays, meta)
    print(f"wrote {outdir}/keras_adam_f64.npz (T={T}); class {meta['class']}; "
          f"lr variable dtype {meta['learning_rate_variable_dtype']}; "
          f"jit_compile {meta['jit_compile']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
