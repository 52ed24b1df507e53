"""Prints the max errors of lrtdense against the recorded TFP fixtures (tests/fixtures/tfp).

Run: python tools/conformance_report.py     (no TensorFlow needed; ~2 s)
Errors are relative to the largest magnitude of each recorded array, as the test judges them.
"""
import collections
import os
import sys

import numpy as np
from autograd import grad

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))
from test_tfp_conformance import CASES, load_case, build_layer  # noqa: E402


def main():
    worst = collections.defaultdict(float)
    for name in CASES:
        meta, a = load_case(name)
        layer = build_layer(meta)
        params = {k: a[k] for k in meta["weights_order"]}
        noise = {k[6:]: v for k, v in a.items() if k.startswith("noise/")}
        noise.update({k[4:]: v for k, v in a.items() if k.startswith("eps/")})
        kw = {"noise": noise} if meta["mode"] == "sample" else {}
        out, _ = layer.forward(params, a["x"], mode=meta["mode"], **kw)

        def obj(p, x):
            o, k = layer.forward(p, x, mode=meta["mode"], **kw)
            return np.sum(a["g"] * o) + k

        got = {"outputs": out, **{"kl_" + k: v for k, v in layer.divergences(params).items()}}
        got.update({"grad/" + k: v for k, v in grad(obj)(params, a["x"]).items()})
        got["grad/x"] = grad(obj, 1)(params, a["x"])
        for key, value in got.items():
            ref = a[key].astype(np.float64)
            ok = np.isfinite(ref)
            scale = max(np.max(np.abs(ref[ok])) if ok.any() else 0, 1e-300)
            err = np.max(np.abs(np.asarray(value, np.float64)[ok] - ref[ok])) / scale if ok.any() else 0.0
            kind = key.split("/")[0] if "/" in key else ("kl" if key.startswith("kl") else key)
            worst[(meta["dtype"], kind)] = max(worst[(meta["dtype"], kind)], err)
    for (dtype, kind), err in sorted(worst.items()):
        print(f"{dtype:8s} {kind:8s} max error / max|TFP| = {err:.2e}")


if __name__ == "__main__":
    main()
