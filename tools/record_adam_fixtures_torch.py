#!/usr/bin/env python3
"""Record (and replay-check) a conformance fixture from the real ``torch.optim.Adam``.

Why this data exists
--------------------
lrtdense implements Adam in NumPy.  To prove that our optimizer is the *same*
algorithm as PyTorch's -- same bias correction, same order of operations, same
placement of ``eps`` -- we need reference trajectories produced by the real
``torch.optim.Adam``.  torch is far too heavy to be a test dependency, so this
script runs torch once, in a separate virtualenv, and freezes the result into
``tests/fixtures/adam/torch_adam_f64.npz`` (+ ``.json`` metadata).  The normal
test-suite then replays the fixture with NumPy only.

What is recorded
----------------
float64 parameters ``w`` (3, 4) and ``b`` (4,), T = 300 Adam steps with
lr = 2**-7, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0,
amsgrad = False, maximize = False and ``foreach=False`` forced (i.e. the
``_single_tensor_adam`` implementation; this is also what ``foreach=None``
resolves to for CPU tensors, and the script checks that ``foreach=True``
(``_multi_tensor_adam``) gives bit-identical results -- the outcome is stored
in the JSON).  Gradients come from ``numpy.random.default_rng(20261126)``, in
this draw order: init w (3,4) ~ N(0,1); init b (4,) ~ N(0,1);
log10-scale (T,) ~ U(-3, 1); grads w (T,3,4) ~ N(0,1); grads b (T,4) ~ N(0,1);
the grads of step t are multiplied by 10**log10scale[t].  Then ``w[1, 2]``'s
gradient is forced to 0 at every step, and the whole gradient (w and b) is 0
at the 0-based steps listed in ``ZERO_GRAD_STEPS``.  Each step sets ``p.grad``
explicitly and calls ``opt.step()``.

npz keys (load with ``np.load(path, allow_pickle=False)``):
  ``init/w`` (3,4), ``init/b`` (4,)      initial parameters
  ``grads/w`` (T,3,4), ``grads/b`` (T,4)  gradient fed at step t
  ``params/w`` (T,3,4), ``params/b`` (T,4) parameters *after* step t
The JSON holds versions, implementation, hyperparameters, the verbatim
update lines of the installed ``torch/optim/adam.py`` and the op order in
plain words, plus the diagnostics below.

Numerics worth knowing (all verified when this fixture was recorded)
----------------------------------------------------------------------
* On CPUs whose ATen kernels are AVX2/AVX512 (``cpu_capability`` in the JSON),
  ``lerp_`` and ``addcmul_`` round once (fused multiply-add); with
  ``ATEN_CPU_CAPABILITY=default`` they round twice.  The two builds differ in
  the last bits.
* float64 ``Tensor.sqrt()`` on CPU is MKL ``vdSqrt`` (VML_HA) and is *not*
  always correctly rounded (about 0.8% of inputs are 1 ulp off), so no
  pure-NumPy replay can be bit-exact.  Recorded on AVX512: the FMA-modelled
  NumPy replay is within 2 ulp (max rel 2.5e-16, 181 of 4800 values differ);
  the plain two-rounding replay is within 2.2e-16 absolute but 9.6e-14
  elementwise-relative where a parameter passes near 3e-4.  Tests should
  therefore compare with an absolute+relative (or norm-wise) tolerance,
  e.g. ``atol=1e-15, rtol=1e-14`` is comfortably loose, not with equality.

How to run
----------
Record (needs torch; about 10 s on 2 cores: three in-process Adam runs, two
subprocesses re-running it with ATEN_CPU_CAPABILITY=default/avx2 for the
JSON diagnostics, and the NumPy replay whose summary goes into the JSON)::

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch==2.13.0 numpy
    .venv-torch/bin/python tools/record_adam_fixtures_torch.py [OUTDIR]

OUTDIR defaults to ``tests/fixtures/adam`` under the repository root.  The
output is deterministic: re-running gives byte-identical files.

Replay check (pure NumPy, no torch; under 1 s)::

    python3 tools/record_adam_fixtures_torch.py --check [OUTDIR]

It re-implements the update from the formula in NumPy, prints the errors
against the recorded trajectory and exits non-zero if the replay that models
the recorded kernels (FMA or not, per the JSON) is off by more than 1e-15
relative.  ``--mkl-sqrt`` (only inside the torch venv) swaps NumPy's sqrt for
MKL's ``vmdSqrt(VML_HA)`` out of libtorch_cpu and should then give 0
mismatching values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _outdir  # noqa: E402  (tools/_outdir.py: never record over files unasked)

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTDIR = REPO_ROOT / "tests" / "fixtures" / "adam"
STEM = "torch_adam_f64"

SEED = 20261126
T = 300
W_SHAPE = (3, 4)
B_SHAPE = (4,)
ZERO_ELEMENT_W = (1, 2)  # w[1, 2] always gets gradient 0
ZERO_GRAD_STEPS = (0, 41, 42, 43, 177, 299)  # 0-based steps with all-zero gradient
LOG10_SCALE_RANGE = (-3.0, 1.0)

LR = 2.0**-7
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.0
AMSGRAD = False
MAXIMIZE = False

NPZ_KEYS = ("init/w", "init/b", "grads/w", "grads/b", "params/w", "params/b")
CHECK_TOL = 1e-15


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def make_inputs():
    rng = np.random.default_rng(SEED)
    init_w = rng.standard_normal(W_SHAPE)
    init_b = rng.standard_normal(B_SHAPE)
    scale = 10.0 ** rng.uniform(*LOG10_SCALE_RANGE, size=T)
    grads_w = rng.standard_normal((T,) + W_SHAPE) * scale[:, None, None]
    grads_b = rng.standard_normal((T,) + B_SHAPE) * scale[:, None]
    grads_w[(slice(None),) + ZERO_ELEMENT_W] = 0.0
    for t in ZERO_GRAD_STEPS:
        grads_w[t] = 0.0
        grads_b[t] = 0.0
    return init_w, init_b, grads_w, grads_b


# --------------------------------------------------------------------------
# recording (torch)
# --------------------------------------------------------------------------
def _run_torch(torch, init_w, init_b, grads_w, grads_b, foreach, sqrt_probe=None):
    """Run Adam; return (params_w, params_b, implementations called)."""
    import torch.optim.adam as adam_mod

    called = []
    orig = {n: getattr(adam_mod, n) for n in ("_single_tensor_adam", "_multi_tensor_adam", "_fused_adam")}

    def wrap(name):
        def f(*a, **k):
            called.append(name)
            return orig[name](*a, **k)
        return f

    for n in orig:
        setattr(adam_mod, n, wrap(n))
    try:
        w = torch.nn.Parameter(torch.tensor(init_w, dtype=torch.float64))
        b = torch.nn.Parameter(torch.tensor(init_b, dtype=torch.float64))
        opt = torch.optim.Adam(
            [w, b], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
            amsgrad=AMSGRAD, maximize=MAXIMIZE, foreach=foreach,
        )
        pw = np.empty((T,) + W_SHAPE)
        pb = np.empty((T,) + B_SHAPE)
        for t in range(T):
            w.grad = torch.tensor(grads_w[t], dtype=torch.float64)
            b.grad = torch.tensor(grads_b[t], dtype=torch.float64)
            opt.step()
            pw[t] = w.detach().numpy()
            pb[t] = b.detach().numpy()
            if sqrt_probe is not None:
                for p in (w, b):
                    v = opt.state[p]["exp_avg_sq"]
                    sqrt_probe.append((v.sqrt().numpy().copy(), np.sqrt(v.numpy())))
        step_dtype = str(opt.state[w]["step"].dtype)
    finally:
        for n, f in orig.items():
            setattr(adam_mod, n, f)
    return pw, pb, sorted(set(called)), step_dtype


def _bits_equal(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _source_excerpt(adam_py: Path):
    """Copy the update lines of _single_tensor_adam (non-capturable,
    non-differentiable branch) verbatim from the installed adam.py."""
    lines = adam_py.read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("def _single_tensor_adam("))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("def "))
    body = list(range(start, end))

    def find(text, after):
        for i in body:
            if i > after and lines[i].strip() == text:
                return i
        raise RuntimeError(f"adam.py changed: {text!r} not found in _single_tensor_adam")

    chunks = []
    i = find("step_t += 1", start)
    chunks.append((i - 1, i))  # "# update step" + "step_t += 1"
    i = find("exp_avg.lerp_(grad, 1 - device_beta1)", start)
    chunks.append((i, i))
    # outer else-branch of "if differentiable and isinstance(beta2, Tensor):"
    k = next(x for x in body if x > i and "exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)" in lines[x])
    if lines[k - 1].strip() != "else:":
        raise RuntimeError("adam.py changed: expected 'else:' before the non-differentiable addcmul_")
    chunks.append((k - 1, k))
    j = find("step = _get_value(step_t)", k)
    j_else = j - 1
    if lines[j_else].strip() != "else:":
        raise RuntimeError("adam.py changed: expected 'else:' before 'step = _get_value(step_t)'")
    k = next(x for x in body if x > j and lines[x].strip().startswith("param.addcdiv_(exp_avg, denom, value=-step_size)"))
    chunks.append((j_else, k))

    text_parts, ranges = [], []
    for a, z in chunks:
        text_parts.append("\n".join(f"{n + 1:4d}| {lines[n]}" for n in range(a, z + 1)))
        ranges.append([a + 1, z + 1])
    excerpt = "\n     ...\n".join(text_parts)
    for needle in (
        "exp_avg.lerp_(grad, 1 - device_beta1)",
        "exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)",
        "bias_correction1 = 1 - beta1**step",
        "bias_correction2 = 1 - beta2**step",
        "step_size = lr / bias_correction1",
        "bias_correction2_sqrt = bias_correction2**0.5",
        "denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)",
        "param.addcdiv_(exp_avg, denom, value=-step_size)",
    ):
        if needle not in excerpt:
            raise RuntimeError(f"adam.py changed: {needle!r} missing; re-derive the op order")
    return excerpt, ranges


def _capability_child(cap: str, outfile: str):
    """Child process: record with ATEN_CPU_CAPABILITY=cap, save params."""
    import torch

    init_w, init_b, gw, gb = make_inputs()
    pw, pb, _, _ = _run_torch(torch, init_w, init_b, gw, gb, foreach=False)
    np.savez(outfile, w=pw, b=pb, cap=np.array(torch.backends.cpu.get_cpu_capability()))


def _compare_capabilities(pw, pb, own_cap):
    """Re-run (foreach=False) in subprocesses with lower ATEN_CPU_CAPABILITY values."""
    order = ["DEFAULT", "AVX2", "AVX512"]
    out = {}
    if own_cap not in order:
        return out
    for cap in order[: order.index(own_cap)]:
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / f"cap_{cap}.npz"
            env = dict(os.environ, ATEN_CPU_CAPABILITY=cap.lower())
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_capability-child", str(f)],
                           env=env, check=True)
            with np.load(f, allow_pickle=False) as z:
                cw, cb, got = z["w"], z["b"], str(z["cap"])
        diff = np.concatenate([(cw - pw).ravel(), (cb - pb).ravel()])
        out[cap] = {
            "cpu_capability_reported": got,
            "bit_identical": bool(_bits_equal(cw, pw) and _bits_equal(cb, pb)),
            "n_values_differing": int(np.count_nonzero(diff)),
            "max_abs_diff": float(np.max(np.abs(diff))),
        }
    return out


def record(outdir: Path):
    import torch
    import torch.optim.adam as adam_mod

    outdir.mkdir(parents=True, exist_ok=True)
    init_w, init_b, gw, gb = make_inputs()
    cap = torch.backends.cpu.get_cpu_capability()

    sqrt_probe = []
    pw, pb, impl_false, step_dtype = _run_torch(torch, init_w, init_b, gw, gb, foreach=False, sqrt_probe=sqrt_probe)
    pw_t, pb_t, impl_true, _ = _run_torch(torch, init_w, init_b, gw, gb, foreach=True)
    pw_n, pb_n, impl_none, _ = _run_torch(torch, init_w, init_b, gw, gb, foreach=None)
    if impl_false != ["_single_tensor_adam"]:
        raise RuntimeError(f"foreach=False ran {impl_false}")

    ts = np.concatenate([a.ravel() for a, _ in sqrt_probe])
    ns = np.concatenate([b.ravel() for _, b in sqrt_probe])

    arrays = {
        "init/w": init_w, "init/b": init_b,
        "grads/w": gw, "grads/b": gb,
        "params/w": pw, "params/b": pb,
    }
    assert tuple(arrays) == NPZ_KEYS
    npz_path = outdir / f"{STEM}.npz"
    np.savez(npz_path, **arrays)  # zip members get the fixed 1980 timestamp: deterministic

    adam_py = Path(adam_mod.__file__)
    excerpt, ranges = _source_excerpt(adam_py)
    site = Path(torch.__file__).resolve().parents[1]

    meta = {
        "library": "torch",
        "version": torch.__version__,
        "class": "torch.optim.Adam",
        "implementation": "_single_tensor_adam",
        "implementation_note": (
            "foreach=False forced, so torch.optim.adam._single_tensor_adam ran (observed by "
            "wrapping the module functions), non-capturable, non-differentiable branch. "
            "With the default foreach=None, CPU params resolve to foreach=False as well "
            "(_default_to_fused_or_foreach only enables foreach on cuda/xpu/mtia/privateuse1)."
        ),
        "implementation_observed": {
            "foreach=False": impl_false,
            "foreach=None (default)": impl_none,
            "foreach=True": impl_true,
        },
        "foreach_true_bit_identical_to_foreach_false": bool(_bits_equal(pw_t, pw) and _bits_equal(pb_t, pb)),
        "foreach_none_bit_identical_to_foreach_false": bool(_bits_equal(pw_n, pw) and _bits_equal(pb_n, pb)),
        "recorded_with": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_capability": cap,
            "torch_cpu_kernels_fma": cap in ("AVX2", "AVX512"),
            "adam_py": str(adam_py.relative_to(site)),
            "adam_py_sha256": hashlib.sha256(adam_py.read_bytes()).hexdigest(),
            "torch_get_default_dtype": str(torch.get_default_dtype()),
            "state_step_dtype": step_dtype,
        },
        "hyperparameters": {
            "lr": LR,
            "lr_expr": "2**-7",
            "betas": list(BETAS),
            "eps": EPS,
            "weight_decay": WEIGHT_DECAY,
            "amsgrad": AMSGRAD,
            "maximize": MAXIMIZE,
            "foreach": False,
            "capturable": False,
            "differentiable": False,
            "fused": None,
            "decoupled_weight_decay": False,
        },
        "T": T,
        "seed": SEED,
        "data": {
            "dtype": "float64",
            "shapes": {"w": list(W_SHAPE), "b": list(B_SHAPE)},
            "npz_keys": {
                "init/w": "initial w (3,4)", "init/b": "initial b (4,)",
                "grads/w": "(T,3,4) gradient set as w.grad before step t",
                "grads/b": "(T,4) gradient set as b.grad before step t",
                "params/w": "(T,3,4) w after step t", "params/b": "(T,4) b after step t",
            },
            "generator": "numpy.random.default_rng(seed) (PCG64)",
            "draw_order": [
                "init_w = standard_normal((3,4))",
                "init_b = standard_normal((4,))",
                "scale = 10.0 ** uniform(-3, 1, size=T)",
                "grads_w = standard_normal((T,3,4)) * scale[:,None,None]",
                "grads_b = standard_normal((T,4)) * scale[:,None]",
            ],
            "always_zero_grad_element_w": list(ZERO_ELEMENT_W),
            "zero_grad_steps_0based": list(ZERO_GRAD_STEPS),
            "step_loop": "for t in range(T): w.grad = grads_w[t]; b.grad = grads_b[t]; opt.step(); record params",
        },
        "source_file": "torch/optim/adam.py (installed copy), function _single_tensor_adam",
        "source_excerpt_line_ranges": ranges,
        "source_excerpt": excerpt,
        "source_excerpt_note": (
            "Verbatim lines (with their line numbers) of _single_tensor_adam in the installed adam.py. "
            "The first 'else:' is the non-differentiable branch of "
            "'if differentiable and isinstance(beta2, Tensor):'; the second 'else:' is the branch of "
            "'if capturable or differentiable:' that runs here (capturable=False, differentiable=False). "
            "weight_decay=0, maximize=False and real dtype skip the other branches of the loop body."
        ),
        "update_order": [
            "per parameter p with gradient g, state m=exp_avg, v=exp_avg_sq (both start at 0), "
            "step (0-d tensor, float32 because the default dtype is float32; starts at 0):",
            "1. step += 1; then step is read back as a Python float with .item() (exact integer).",
            "2. m.lerp_(g, 1 - beta1): the weight is the Python float 1 - 0.9 = 0.09999999999999998. "
            "ATen lerp (ATen/native/Lerp.h) uses |weight| < 0.5 ? self + weight*(end - self) "
            ": end - (end - self)*(1 - weight); here weight < 0.5, so m_new = m + w1*(g - m) with w1 = 1 - beta1. "
            "On AVX2/AVX512 kernels the multiply-add is fused (one rounding): fma(w1, g - m, m) "
            "(vectorised lerp_vec uses vec::fmadd, the scalar tail is FMA-contracted by the compiler); "
            "with ATEN_CPU_CAPABILITY=default it is rounded twice.",
            "3. v.mul_(beta2) (rounded), then .addcmul_(g, g, value=1 - beta2) computes "
            "v + ((1 - beta2)*g)*g with 1 - beta2 = 0.0010000000000000009; on AVX2/AVX512 the final add is "
            "fused: fma((1 - beta2)*g, g, v*beta2); with the default kernel it is rounded separately.",
            "4. bias_correction1 = 1 - beta1**step and bias_correction2 = 1 - beta2**step "
            "(Python float ** float, i.e. libm pow).",
            "5. step_size = lr / bias_correction1 (Python float).",
            "6. bias_correction2_sqrt = bias_correction2**0.5 (Python float ** 0.5, NOT math.sqrt).",
            "7. denom = (v.sqrt() / bias_correction2_sqrt).add_(eps): elementwise sqrt (on CPU float64 this is "
            "MKL vdSqrt in VML_HA mode, not always correctly rounded), then a true division by the Python float "
            "(not multiplication by its reciprocal), then + eps.",
            "8. p.addcdiv_(m, denom, value=-step_size) computes p + ((-step_size)*m)/denom "
            "(ATen addcdiv: self + value*t1/t2; multiply first, then divide, then add; no fusion).",
            "foreach=True (_multi_tensor_adam) uses the same per-tensor kernels on CPU "
            "(step_size = (lr/bc1)*-1, same bc**0.5) and was bit-identical here.",
        ],
        "diagnostics": {
            "torch_sqrt_vs_correctly_rounded_sqrt_on_exp_avg_sq": {
                "values_checked": int(ts.size),
                "values_differing": int(np.count_nonzero(ts != ns)),
                "max_ulp": float(np.max(np.abs(ts - ns) / np.spacing(np.maximum(ns, np.finfo(float).tiny)))),
            },
            "same_run_other_cpu_capabilities_vs_this_fixture": _compare_capabilities(pw, pb, cap),
        },
    }
    meta["numpy_replay"] = check(outdir, quiet=True, npz_override=arrays, meta_override=meta)["summary"]
    json_path = outdir / f"{STEM}.json"
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {npz_path}\nwrote {json_path}")
    print(f"torch {torch.__version__}  capability {cap}  impl {impl_false}  "
          f"foreach=None -> {impl_none}  foreach=True -> {impl_true}  "
          f"foreach=True bit-identical: {meta['foreach_true_bit_identical_to_foreach_false']}")
    print(json.dumps(meta["numpy_replay"], indent=2))


# --------------------------------------------------------------------------
# pure-NumPy replay
# --------------------------------------------------------------------------
def _fma(a, b, c):
    """Exact fused multiply-add a*b + c with a single rounding (via Fraction)."""
    a, b, c = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float), np.asarray(c, float))
    out = np.empty(a.shape)
    for i, (x, y, z) in enumerate(zip(a.ravel().tolist(), b.ravel().tolist(), c.ravel().tolist())):
        out.flat[i] = float(Fraction(x) * Fraction(y) + Fraction(z))  # int/int -> correctly rounded
    return out


def replay_adam(p0, grads, *, fma: bool, sqrt=np.sqrt):
    """Adam as torch's _single_tensor_adam computes it; returns params after each step."""
    beta1, beta2 = BETAS
    p = np.array(p0, dtype=np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = np.empty((len(grads),) + p.shape)
    w1 = 1 - beta1          # lerp weight (< 0.5 -> small-weight formula)
    c2 = 1 - beta2          # addcmul value
    for t, g in enumerate(grads):
        step = float(t + 1)
        # exp_avg.lerp_(grad, 1 - beta1)
        m = _fma(w1, g - m, m) if fma else m + w1 * (g - m)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v = v * beta2
        v = _fma(c2 * g, g, v) if fma else v + (c2 * g) * g
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = LR / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        denom = sqrt(v) / bias_correction2_sqrt + EPS
        # param.addcdiv_(exp_avg, denom, value=-step_size)
        p = p + ((-step_size) * m) / denom
        out[t] = p
    return out


def _errors(R, P):
    d = np.abs(R - P)
    absP = np.abs(P)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(d == 0, 0.0, d / absP)
    flatR = R.reshape(len(R), -1)
    flatP = P.reshape(len(P), -1)
    normwise = np.max(np.max(np.abs(flatR - flatP), axis=1) / np.max(np.abs(flatP), axis=1))
    return {
        "values_differing": int(np.count_nonzero(d)),
        "values_total": int(d.size),
        "max_abs_err": float(d.max()),
        "max_rel_err": float(rel.max()),
        "max_normwise_rel_err": float(normwise),
        "max_ulp": float(np.max(d / np.spacing(absP))),
    }


def _mkl_sqrt():
    import ctypes
    import torch  # only to locate libtorch_cpu.so
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    fn = lib.vmdSqrt
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    VML_HA = 0x2

    def sqrt(x):
        x = np.ascontiguousarray(x, dtype=np.float64)
        o = np.empty_like(x)
        fn(x.size, x.ctypes.data, o.ctypes.data, VML_HA)
        return o
    return sqrt


def check(outdir: Path, quiet=False, npz_override=None, meta_override=None, mkl_sqrt=False):
    if npz_override is None:
        with np.load(outdir / f"{STEM}.npz", allow_pickle=False) as z:
            if tuple(sorted(z.files)) != tuple(sorted(NPZ_KEYS)):
                raise SystemExit(f"unexpected npz keys {z.files}")
            data = {k: z[k] for k in NPZ_KEYS}
        meta = json.loads((outdir / f"{STEM}.json").read_text())
    else:
        data, meta = npz_override, meta_override
    fma_recorded = bool(meta["recorded_with"]["torch_cpu_kernels_fma"])
    sqrt = _mkl_sqrt() if mkl_sqrt else np.sqrt
    results = {}
    for label, use_fma in (("fma_lerp_addcmul", True), ("plain_two_roundings", False)):
        per = {}
        for name in ("w", "b"):
            R = replay_adam(data[f"init/{name}"], data[f"grads/{name}"], fma=use_fma, sqrt=sqrt)
            per[name] = _errors(R, data[f"params/{name}"])
        per["all"] = {
            "values_differing": sum(per[n]["values_differing"] for n in ("w", "b")),
            "max_abs_err": max(per[n]["max_abs_err"] for n in ("w", "b")),
            "max_rel_err": max(per[n]["max_rel_err"] for n in ("w", "b")),
            "max_normwise_rel_err": max(per[n]["max_normwise_rel_err"] for n in ("w", "b")),
            "max_ulp": max(per[n]["max_ulp"] for n in ("w", "b")),
        }
        results[label] = per
    faithful = "fma_lerp_addcmul" if fma_recorded else "plain_two_roundings"
    summary = {
        "sqrt_used": "MKL vmdSqrt VML_HA" if mkl_sqrt else "numpy.sqrt (correctly rounded)",
        "variant_matching_recorded_kernels": faithful,
        "tolerance_max_rel_err": CHECK_TOL,
        "passed": results[faithful]["all"]["max_rel_err"] <= CHECK_TOL,
    }
    for label, per in results.items():
        summary[label] = per["all"]
    if not quiet:
        for label, per in results.items():
            mark = "  <- models the recorded kernels" if label == faithful else ""
            print(f"{label}{mark}")
            for n in ("w", "b", "all"):
                e = per[n]
                print(f"  {n:3s} differing {e['values_differing']:4d}  max_rel {e['max_rel_err']:.3e}  "
                      f"max_normwise_rel {e['max_normwise_rel_err']:.3e}  max_abs {e['max_abs_err']:.3e}  "
                      f"max_ulp {e['max_ulp']:.0f}")
        print(f"sqrt: {summary['sqrt_used']}; pass (max_rel <= {CHECK_TOL:g} for {faithful}): {summary['passed']}")
    return {"summary": summary, "details": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", nargs="?", default=str(DEFAULT_OUTDIR))
    ap.add_argument("--check", action="store_true", help="pure-NumPy replay of an existing fixture")
    ap.add_argument("--replace", action="store_true", help="record over the files already in OUTDIR")
    ap.add_argument("--mkl-sqrt", action="store_true", help="with --check: use MKL vmdSqrt from libtorch_cpu")
    ap.add_argument("--_capability-child", dest="cap_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cap_child:
        _capability_child(os.environ.get("ATEN_CPU_CAPABILITY", ""), args.cap_child)
        return 0
    outdir = Path(args.outdir)  # a relative OUTDIR is taken relative to the current directory
    if args.check:
        return 0 if check(outdir, mkl_sqrt=args.mkl_sqrt)["summary"]["passed"] else 1
    record(Path(_outdir.writable_output(str(outdir), ["--replace"] if args.replace else [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
