"""The Keras toy regression trained with ``keras.distribution.DataParallel`` over two devices.

Run: python examples/keras_data_parallel.py

JAX backend, two host (CPU) devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``,
set here before JAX starts; on a machine with two accelerators the same code uses them). Each
full batch of 20 examples is split 10 + 10 over the devices, the weights are replicated, and
Keras' compiled step sums the gradients across them: the loss is still the mean NLL of the whole
batch plus the divergences once (weighted 1/N, N the number of examples, not per device). The
noise is drawn for the whole batch from each layer's SeedGenerator, so the distributed run
follows the single-device one step for step, up to the order of floating-point sums: the
script trains both and prints the largest difference of the final weights.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    epochs=2000,          # full-batch Adam steps
    hidden=50,
    learning_rate=0.003,
    num_samples=200,
)
# -------------------------------------------------------------------------------------------

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2").strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_toy_regression  # noqa: E402


def train(distributed, **settings):
    """Trains the toy regression (on two devices if ``distributed``); returns its metrics (with
    "devices": how many devices hold the weights) and the final weights of every layer (a list
    of NumPy arrays)."""
    if distributed:
        devices = keras.distribution.list_devices("cpu")
        if len(devices) < 2:
            raise RuntimeError(f"expected two devices, got {devices}")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices[:2]))
    try:
        metrics, model = keras_toy_regression.run(**settings, verbose=False, return_model=True)
    finally:
        keras.distribution.set_distribution(None)
    metrics["devices"] = max(len(w.value.sharding.device_set) for w in model.weights)
    return metrics, [w for layer in model.layers for w in layer.get_weights()]


def main(**overrides):
    """Both runs in this process; prints and returns {"single", "data_parallel", "max_diff"}."""
    s = {**SETTINGS, **overrides}
    single, w_single = train(False, **s)
    parallel, w_parallel = train(True, **s)
    diff = max(float(np.max(np.abs(a - b) / (np.max(np.abs(a)) + 1e-300)))
               for a, b in zip(w_single, w_parallel))
    for name, m in (("one device", single), ("DataParallel, 2 devices", parallel)):
        print(f"{name:>24}: RMSE {m['rmse']:.3f}  NLL {m['nll']:.3f}  95% coverage "
              f"{m['coverage95']:.3f}  final loss {m['loss']:.6f}  (weights on {m['devices']} "
              f"device{'s' if m['devices'] > 1 else ''})")
    print(f"largest difference of the final weights, relative to each array's largest: {diff:.2e}")
    return {"single": single, "data_parallel": parallel, "max_diff": diff}


if __name__ == "__main__":
    main()
