"""Real peer libraries through the oracle: bayesian-torch and Blitz on the reference cases.

Each adapter runs the pip-installed layer itself on a case, with the case's noise injected and
its parameters converted to the peer's layout, and writes the quantities the case expects, so
that ``lrtdense reference verify`` shows where the peer's semantics differ from TFP's:

* bayesian-torch 0.5 ``LinearReparameterization`` on the ``reparam_*`` cases and ``LinearFlipout``
  on the ``flipout_*`` cases;
* Blitz 0.2.8 ``BayesianLinear`` (Bayes by Backprop: one weight draw per call) on ``reparam_*``.

How the adapter drives a peer (nothing in the peer is re-implemented):

* **parameters**: weights are (out, in) in both peers, the transpose of TFP's kernel; their
  ``rho`` is TFP's untransformed scale (both map it by log1p(exp(rho)), TFP by softplus + eps);
* **noise**: both draw with in-place ``Tensor.normal_()`` (bayesian-torch's ``eps_weight``, then
  ``eps_bias``; Blitz's ``eps_w`` of the weight sampler, then of the bias sampler) and
  bayesian-torch's Flipout its signs with ``x.clone().uniform_(-1, 1).sign()`` (sign_input, then
  sign_output). During the call ``torch.Tensor.normal_`` and ``uniform_`` are patched to copy the
  case's noise, in that order, checking every shape (a draw the adapter did not expect is an
  error, not a silent mismatch);
* **bias**: neither peer has a Deterministic bias posterior (their bias, when on, is always a
  Normal with a KL term). A case with a Deterministic bias runs the peer with ``bias=False`` and
  adds the case's bias after it, so that the kernel's semantics show on every case; such a case's
  ``kl/bias`` (the Deterministic bias's prior term) has no counterpart in the peer and is
  reported missing;
* **priors**: bayesian-torch's ``prior_mean`` and ``prior_variance`` (which its ``kl_div`` uses as
  the prior's standard deviation, despite the name: the adapter passes TFP's scale), its bias
  prior buffers set to the case's bias prior; Blitz's ``prior_dist`` a ``torch.distributions.Normal``
  of the case's kernel prior (and its ``bias_prior_dist`` the bias prior's);
* **mean mode**: Blitz's own ``freeze=True`` path; bayesian-torch has none, so the adapter injects
  zero noise;
* **dtype**: Blitz's ``bias=False`` makes its zero bias in torch's default dtype (float32), which
  fails beside float64 weights; the adapter sets the default dtype to the case's for the call;
* **gradients**: of L = sum(g * outputs_sample) + the peer's own KL (as a user of the peer
  would train), with respect to the peer's parameters, transposed back.

``python examples/peers/peer_adapters.py [--out DIR]`` runs every installed peer, verifies the
results and writes ``DEVIATIONS.md`` (the table below it is generated, not typed).
``deviation_table(peer)`` returns the same rows for tests.
"""
import argparse
import contextlib
import dataclasses
import fnmatch
import json
import math
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str           # the row label
    package: str        # the distribution to import
    cases: tuple        # globs of the reference cases it runs on
    run: str            # the adapter function's name in this module


PEERS = (
    Peer("bayesian-torch LinearReparameterization", "bayesian_torch", ("reparam_*",),
         "run_bayesian_torch"),
    Peer("bayesian-torch LinearFlipout", "bayesian_torch", ("flipout_*",), "run_bayesian_torch"),
    Peer("Blitz BayesianLinear", "blitz", ("reparam_*",), "run_blitz"),
)


@dataclasses.dataclass(frozen=True)
class Deviation:
    """A difference from TFP's semantics: which quantities of which cases it makes fail, and why
    (from the peer's source, cited by file and function)."""
    what: str
    quantities: tuple   # globs of quantity keys
    cases: tuple        # globs of case names
    why: str


_KL_GRADS = ("grads/kernel_posterior_loc", "grads/kernel_posterior_untransformed_scale",
             "grads/bias_posterior_loc", "grads/bias_posterior_untransformed_scale")

# Specific deviations first: a failing row is attributed to the first one that covers it.
_BT_COMMON = (
    Deviation("KL without a prior-free option", ("kl/total",) + _KL_GRADS, ("*_no_prior",),
              "kl_loss / forward always compute a KL against N(prior_mean, prior_variance); TFP "
              "with kernel_prior_fn=None has no term (KL = 0)"),
    Deviation("no Deterministic bias posterior", ("kl/bias", "kl/total") + _KL_GRADS,
              ("*_det_bias_prior",),
              "the bias, when on, is always Normal (mu_bias, rho_bias) with a KL term; TFP's "
              "Deterministic bias with a Normal prior has kl/bias = -log N(loc; prior), which "
              "the peer has no counterpart for (reported missing)"),
    Deviation("scale without + eps", ("kl/kernel", "kl/total",
                                      "grads/kernel_posterior_untransformed_scale"),
              ("*_extreme_scales",),
              "sigma = log1p(exp(rho)) without TFP's + finfo.eps: at rho = -40 (float64) or -20 "
              "(float32) sigma is far below eps, so log(sigma) in the KL differs by orders of "
              "magnitude (on top of the mean reduction)"),
    Deviation("KL reduced by the mean", ("kl/kernel", "kl/bias", "kl/total") + _KL_GRADS,
              ("*",),
              "BaseVariationalLayer_.kl_div returns kl.mean(): the average KL per weight (plus "
              "the average per bias), not TFP's sum over the elements; the KL's gradients are "
              "scaled alike. Confirmed: kl/kernel times the number of weights is TFP's kl/kernel"),
)

KNOWN = {
    "bayesian-torch LinearReparameterization": _BT_COMMON,
    "bayesian-torch LinearFlipout": (
        Deviation("Normal bias noise flipped per example", ("outputs/sample", "grads/*"),
                  ("*_normal_bias_*",),
                  "LinearFlipout.forward passes the bias *noise* sigma_bias * eps_bias as the bias "
                  "of the perturbed F.linear, which is then multiplied by sign_output: each "
                  "example gets +- the bias noise, not TFP's one bias draw shared by the batch"),
    ) + _BT_COMMON,
    "Blitz BayesianLinear": (
        Deviation("KL as a one-sample Monte-Carlo estimate", ("kl/kernel", "kl/bias", "kl/total")
                  + _KL_GRADS, ("*",),
                  "forward sets log_variational_posterior - log_prior from the sampled weights "
                  "(TrainableRandomDistribution.log_posterior, PriorWeightDistribution.log_prior):"
                  " log q(w) - log p(w) at one draw, with 1e-6 added to the prior density, not "
                  "the closed-form KL; it depends on the noise and differs from TFP on every case. "
                  "Confirmed: it changes with the noise while TFP's KL does not"),
    ),
}


def confirm(peer, reference, names, results_dir):
    """Checks the explanations numerically where one can. Returns {deviation: (held, tried)}.

    * "KL reduced by the mean" (bayesian-torch): kl/kernel * kernel.size == TFP's kl/kernel
      (cases with a kernel prior and no extreme scales);
    * "KL as a one-sample Monte-Carlo estimate" (Blitz): rerun with the kernel noise negated: the
      peer's kl/kernel changes, TFP's cannot (it does not depend on the noise).
    """
    out = {}
    for name in names:
        case_dir = os.path.join(reference, "cases", name)
        with open(os.path.join(case_dir, "case.json")) as f:
            meta = json.load(f)
        load = lambda group, k: np.load(os.path.join(case_dir, group, *k.split("/")) + ".npy",
                                        allow_pickle=False)
        cfg = meta["model"]["config"]
        if "kl/kernel" not in meta["expected"]:
            continue
        with np.load(os.path.join(results_dir, name + ".npz")) as data:
            peer_kl = float(data["kl/kernel"])
        tfp_kl = float(load("expected", "kl/kernel"))
        rtol = 1e-10 if meta["dtype"] == "float64" else 1e-4
        if peer.run == "run_bayesian_torch" and "extreme_scales" not in name and cfg["kernel_prior"]:
            size = load("inputs", "params/kernel_posterior_loc").size
            held, tried = out.get("KL reduced by the mean", (0, 0))
            ok = math.isclose(peer_kl * size, tfp_kl, rel_tol=rtol)
            if not ok:
                # bayesian-torch fills its prior buffers in __init__, in float32, before the
                # user's .to(float64): TFP's sum with the prior rounded to float32
                from lrtdense import kernels
                rounded = float(kernels.kl_normal_normal(
                    load("inputs", "params/kernel_posterior_loc"),
                    kernels.posterior_scale(load("inputs",
                                                 "params/kernel_posterior_untransformed_scale")),
                    float(np.float32(cfg["kernel_prior"]["loc"])),
                    float(np.float32(cfg["kernel_prior"]["scale"]))))
                ok = math.isclose(peer_kl * size, rounded, rel_tol=rtol)
                key = "float32 prior in a float64 layer"
                h2, t2 = out.get(key, (0, 0))
                out[key] = (h2 + ok, t2 + 1)
            out["KL reduced by the mean"] = (held + ok, tried + 1)
        if peer.run == "run_blitz":
            inputs = {k: load("inputs", k) for k in meta["inputs"]}
            inputs["noise/kernel"] = -inputs["noise/kernel"] * 0.5
            other = float(run_blitz(meta, inputs)["kl/kernel"])
            key = "KL as a one-sample Monte-Carlo estimate"
            held, tried = out.get(key, (0, 0))
            out[key] = (held + (not math.isclose(other, peer_kl, rel_tol=1e-6)), tried + 1)
    return out


# ------------------------------------------------------------------------------ noise injection

@contextlib.contextmanager
def injected(draws):
    """Patches torch.Tensor.normal_ and uniform_ so that the peer's in-place draws copy
    ``draws``: a list of ("normal" | "uniform", array), consumed in order. Raises if the peer
    draws something else, of another shape, or fewer draws than given."""
    import torch

    queue = list(draws)
    originals = torch.Tensor.normal_, torch.Tensor.uniform_

    def take(kind):
        def fill(self, *args, **kwargs):
            if not queue:
                raise RuntimeError(f"the peer made an unexpected {kind} draw of shape "
                                   f"{tuple(self.shape)}")
            want, value = queue.pop(0)
            if want != kind or tuple(value.shape) != tuple(self.shape):
                raise RuntimeError(f"the peer drew {kind} {tuple(self.shape)}, the adapter "
                                   f"expected {want} {tuple(value.shape)}")
            with torch.no_grad():
                self.copy_(torch.as_tensor(value, dtype=self.dtype))
            return self
        return fill

    torch.Tensor.normal_, torch.Tensor.uniform_ = take("normal"), take("uniform")
    try:
        yield
    finally:
        torch.Tensor.normal_, torch.Tensor.uniform_ = originals
    if queue:
        raise RuntimeError(f"the peer made {len(queue)} fewer draws than the case holds")


# -------------------------------------------------------------------------------------- shared

def _activation(name, z):
    import torch
    if name in (None, "linear"):
        return z
    if name == "relu":
        return torch.where(z > 0, z, torch.zeros_like(z))
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "elu":
        return torch.where(z > 0, z, torch.expm1(torch.clamp(z, max=0)))
    if name == "softplus":
        return torch.nn.functional.softplus(z, threshold=1e9)
    raise ValueError(f"unknown activation {name!r}")


def _case(meta, inputs):
    import torch
    dtype = {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
    p = {k[len("params/"):]: v for k, v in inputs.items() if k.startswith("params/")}
    noise = {k[len("noise/"):]: v for k, v in inputs.items() if k.startswith("noise/")}
    return dtype, meta["model"]["config"], p, noise


def _finish(meta, inputs, out_sample, out_mean, kl_terms, leaves, x, dtype):
    """Results dict: outputs, KL terms as TFP names them, gradients of sum(g * out) + KL."""
    import torch
    g = torch.as_tensor(inputs["g"], dtype=dtype)
    total = sum(kl_terms.values(), torch.zeros((), dtype=dtype))
    loss = torch.sum(g * out_sample) + total
    names = sorted(leaves)
    grads = torch.autograd.grad(loss, [leaves[n][0] for n in names] + [x], allow_unused=True)
    res = {"outputs/sample": out_sample, "outputs/mean": out_mean, "kl/total": total}
    res.update({f"kl/{k}": v for k, v in kl_terms.items()})
    for n, gr in zip(names, grads):
        if gr is None:
            gr = torch.zeros_like(leaves[n][0])
        res[f"grads/{n}"] = leaves[n][1](gr)
    res["grads/x"] = grads[-1]
    return {k: v.detach().numpy().copy() for k, v in res.items()}


def _adapter_bias(cfg, p, dtype):
    """The Deterministic bias the adapter adds after a peer layer run with bias=False."""
    import torch
    bias = cfg.get("bias_posterior")
    if bias is not None and bias["type"] == "deterministic":
        return torch.tensor(p["bias_posterior_loc"], dtype=dtype, requires_grad=True)
    return None


def _deterministic_bias_kl(cfg, b):
    """Not the peer's: there is none. The KL of a Deterministic bias is left out (reported
    missing); this returns {}."""
    return {}


# ---------------------------------------------------------------------------- bayesian-torch

def run_bayesian_torch(meta, inputs):
    """One reparam_* or flipout_* case through bayesian-torch's LinearReparameterization or
    LinearFlipout."""
    import torch
    from bayesian_torch.layers import LinearFlipout, LinearReparameterization

    dtype, cfg, p, noise = _case(meta, inputs)
    flipout = meta["model"]["class_name"] == "DenseFlipout"
    prior = cfg.get("kernel_prior") or {"loc": 0.0, "scale": 1.0}  # the peer always has one
    normal_bias = (cfg.get("bias_posterior") or {}).get("type") == "normal"
    loc = p["kernel_posterior_loc"]
    cls = LinearFlipout if flipout else LinearReparameterization
    layer = cls(loc.shape[0], loc.shape[1], prior_mean=prior["loc"],
                prior_variance=prior["scale"], bias=normal_bias).to(dtype)
    with torch.no_grad():
        layer.mu_weight.copy_(torch.as_tensor(loc.T))
        layer.rho_weight.copy_(torch.as_tensor(p["kernel_posterior_untransformed_scale"].T))
        if normal_bias:
            layer.mu_bias.copy_(torch.as_tensor(p["bias_posterior_loc"]))
            layer.rho_bias.copy_(torch.as_tensor(p["bias_posterior_untransformed_scale"]))
            bprior = cfg.get("bias_prior") or prior
            layer.prior_bias_mu.fill_(bprior["loc"])
            layer.prior_bias_sigma.fill_(bprior["scale"])
    det_bias = _adapter_bias(cfg, p, dtype)
    x = torch.tensor(inputs["x"], dtype=dtype, requires_grad=True)

    def draws(zero):
        z = (lambda a: np.zeros_like(a)) if zero else (lambda a: a)
        out = [("normal", z(noise["kernel"].T))]
        if normal_bias:
            out.append(("normal", z(noise["bias"])))
        if flipout:
            out += [("uniform", noise["sign_input"]), ("uniform", noise["sign_output"])]
        return out

    def call(zero):
        with injected(draws(zero)):
            out, _ = layer(x)
        if det_bias is not None:
            out = out + det_bias
        return _activation(cfg.get("activation"), out)

    out_sample = call(False)
    with torch.no_grad():
        out_mean = call(True)
    sigma_w = torch.log1p(torch.exp(layer.rho_weight))
    kl = {"kernel": layer.kl_div(layer.mu_weight, sigma_w, layer.prior_weight_mu,
                                 layer.prior_weight_sigma)}
    if normal_bias:
        kl["bias"] = layer.kl_div(layer.mu_bias, torch.log1p(torch.exp(layer.rho_bias)),
                                  layer.prior_bias_mu, layer.prior_bias_sigma)
    t = lambda gr: gr.T
    same = lambda gr: gr
    leaves = {"kernel_posterior_loc": (layer.mu_weight, t),
              "kernel_posterior_untransformed_scale": (layer.rho_weight, t)}
    if normal_bias:
        leaves["bias_posterior_loc"] = (layer.mu_bias, same)
        leaves["bias_posterior_untransformed_scale"] = (layer.rho_bias, same)
    elif det_bias is not None:
        leaves["bias_posterior_loc"] = (det_bias, same)
    return _finish(meta, inputs, out_sample, out_mean, kl, leaves, x, dtype)


# -------------------------------------------------------------------------------------- Blitz

def run_blitz(meta, inputs):
    """One reparam_* case through Blitz's BayesianLinear (one weight draw per call)."""
    import torch
    from blitz.modules import BayesianLinear
    from blitz.modules.weight_sampler import PriorWeightDistribution

    dtype, cfg, p, noise = _case(meta, inputs)
    prior = cfg.get("kernel_prior") or {"loc": 0.0, "scale": 1.0}
    normal_bias = (cfg.get("bias_posterior") or {}).get("type") == "normal"
    loc = p["kernel_posterior_loc"]
    layer = BayesianLinear(loc.shape[0], loc.shape[1], bias=normal_bias,
                           prior_dist=torch.distributions.Normal(
                               torch.tensor(prior["loc"], dtype=dtype),
                               torch.tensor(prior["scale"], dtype=dtype))).to(dtype)
    if normal_bias:
        bprior = cfg.get("bias_prior") or prior
        layer.bias_prior_dist = PriorWeightDistribution(dist=torch.distributions.Normal(
            torch.tensor(bprior["loc"], dtype=dtype), torch.tensor(bprior["scale"], dtype=dtype)))
    ws, bs = layer.weight_sampler, layer.bias_sampler  # the parameters forward uses
    with torch.no_grad():
        ws.mu.copy_(torch.as_tensor(loc.T))
        ws.rho.copy_(torch.as_tensor(p["kernel_posterior_untransformed_scale"].T))
        if normal_bias:
            bs.mu.copy_(torch.as_tensor(p["bias_posterior_loc"]))
            bs.rho.copy_(torch.as_tensor(p["bias_posterior_untransformed_scale"]))
            layer.bias_mu.data = bs.mu.data
        layer.weight_mu.data = ws.mu.data
    det_bias = _adapter_bias(cfg, p, dtype)
    x = torch.tensor(inputs["x"], dtype=dtype, requires_grad=True)
    draws = [("normal", noise["kernel"].T)] + ([("normal", noise["bias"])] if normal_bias else [])
    # with bias=False, BayesianLinear.forward makes its zero bias with torch.zeros in torch's
    # default dtype (float32), which F.linear refuses beside float64 weights: the default dtype
    # is set to the case's for the call
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with injected(draws):
            out = layer(x)
    finally:
        torch.set_default_dtype(previous)
    # the complexity cost Blitz trains with, per term
    kl = {"kernel": ws.log_posterior() - layer.weight_prior_dist.log_prior(ws.w)}
    if normal_bias:
        kl["bias"] = bs.log_posterior() - layer.bias_prior_dist.log_prior(bs.w)
    layer.freeze = True
    torch.set_default_dtype(dtype)
    try:
        with torch.no_grad():
            out_mean = layer(x)
    finally:
        torch.set_default_dtype(previous)
        layer.freeze = False
    if det_bias is not None:
        out, out_mean = out + det_bias, out_mean + det_bias.detach()
    act = cfg.get("activation")
    t = lambda gr: gr.T
    same = lambda gr: gr
    leaves = {"kernel_posterior_loc": (ws.mu, t), "kernel_posterior_untransformed_scale": (ws.rho, t)}
    if normal_bias:
        leaves["bias_posterior_loc"] = (bs.mu, same)
        leaves["bias_posterior_untransformed_scale"] = (bs.rho, same)
    elif det_bias is not None:
        leaves["bias_posterior_loc"] = (det_bias, same)
    return _finish(meta, inputs, _activation(act, out), _activation(act, out_mean), kl, leaves, x,
                   dtype)


# --------------------------------------------------------------------------- running and tables

def installed(peer):
    """None if the peer's package imports, else the reason it does not."""
    try:
        __import__(peer.package)
        import torch  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "not available here"
        return f"{peer.package} is not importable here ({type(err).__name__}: {err})"
    return None


def case_names(reference, peer):
    with open(os.path.join(reference, "manifest.json")) as f:
        names = sorted(json.load(f)["cases"])
    out = []
    for n in names:
        if not any(fnmatch.fnmatchcase(n, g) for g in peer.cases):
            continue
        with open(os.path.join(reference, "cases", n, "case.json")) as f:
            if json.load(f)["kind"] in ("layer", "edge"):
                out.append(n)
    return out


def write_results(peer, outdir, reference):
    """Runs ``peer`` on its cases, writing OUTDIR/<case>.npz. Returns the case names."""
    os.makedirs(outdir, exist_ok=True)
    run = globals()[peer.run]
    names = case_names(reference, peer)
    for name in names:
        case_dir = os.path.join(reference, "cases", name)
        with open(os.path.join(case_dir, "case.json")) as f:
            meta = json.load(f)
        inputs = {k: np.load(os.path.join(case_dir, "inputs", *k.split("/")) + ".npy",
                             allow_pickle=False) for k in meta["inputs"]}
        np.savez(os.path.join(outdir, name + ".npz"), **run(meta, inputs))
    return names


def classify(peer, rows):
    """Each failing row matched to the first known deviation that covers it.

    Returns (table, unexplained): table rows (deviation, failing rows) in KNOWN's order, and the
    failing rows no known deviation covers."""
    known = KNOWN[peer.name]
    table = {d.what: [] for d in known}
    unexplained = []
    for r in rows:
        if r.passed:
            continue
        for d in known:
            if (any(fnmatch.fnmatchcase(r.quantity, q) for q in d.quantities)
                    and any(fnmatch.fnmatchcase(r.case, c) for c in d.cases)):
                table[d.what].append(r)
                break
        else:
            unexplained.append(r)
    return [(d, table[d.what]) for d in known], unexplained


def deviation_table(peer, reference=None, workdir=None):
    """Runs the peer and verify. Returns (rows of verify, classified table, unexplained rows,
    confirmations {deviation: (held, tried)})."""
    from lrtdense.reference import default_dir
    from lrtdense.reference.verify import verify

    reference = reference or default_dir()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        names = write_results(peer, tmp, reference)
        rows = verify(reference, tmp, names)
        confirmed = confirm(peer, reference, names, tmp)
    table, unexplained = classify(peer, rows)
    return rows, table, unexplained, confirmed


def markdown(results):
    """The generated DEVIATIONS.md text from {peer: (rows, table, unexplained) or reason}."""
    lines = ["# Peer libraries through the oracle (generated by examples/peers/peer_adapters.py)",
             "", "Each peer's real, pip-installed layer run on the reference cases with the "
             "cases' noise injected; a row per deviation from TFP's semantics, with the "
             "quantities it fails and why (from the peer's source).", ""]
    for peer in PEERS:
        res = results[peer.name]
        lines.append(f"## {peer.name}")
        lines.append("")
        if isinstance(res, str):
            lines += [f"Not run: {res}", ""]
            continue
        rows, table, unexplained, confirmed = res
        cases = sorted({r.case for r in rows})
        passed = sum(r.passed for r in rows)
        clean = sorted(c for c in cases if all(r.passed for r in rows if r.case == c))
        lines.append(f"{len(cases)} cases, {len(rows)} rows: {passed} passed, "
                     f"{len(rows) - passed} failed. Every quantity of every case passes except "
                     f"the deviations below ({len(clean)} cases pass entirely).")
        lines.append("")
        lines.append("| deviation | failing rows | cases | worst rel. error | confirmed | why |")
        lines.append("|---|---:|---|---:|---|---|")
        for d, failing in table:
            worst = max((r.max_rel for r in failing if not math.isnan(r.max_rel)), default=float("nan"))
            fc = sorted({r.case for r in failing})
            shown = ", ".join(fc[:3]) + (f", ... ({len(fc)} cases)" if len(fc) > 3 else "")
            held = confirmed.get(d.what)
            check = f"{held[0]} of {held[1]} cases" if held else ""
            lines.append(f"| {d.what} | {len(failing)} | {shown or 'none'} | {worst:.3g} | "
                         f"{check} | {d.why} |")
        extra = {k: v for k, v in confirmed.items() if k not in {d.what for d, _ in table}}
        if "float32 prior in a float64 layer" in extra:
            held, tried = extra["float32 prior in a float64 layer"]
            lines.append("")
            lines.append(f"Also found: in a float64 layer the kernel prior is the float32 "
                         f"rounding of the value given (bayesian-torch fills its prior buffers in "
                         f"`__init__`, in float32, before `.to(float64)`): the mean-KL check holds "
                         f"with the prior rounded to float32 on {held} of {tried} such cases "
                         f"(prior loc 0.3 = 0.30000001192...).")
        if unexplained:
            lines.append("")
            lines.append("Unexplained failures: " + "; ".join(f"{r.case} {r.quantity}: {r.note}"
                                                              for r in unexplained))
        lines.append("")
    lines += ["Not run here: Edward2, which needs a TensorFlow this project does not install. By "
              "reading its code (edward2/tensorflow/layers/dense.py, DenseFlipout.call, at commit "
              "03f8ea64): sign_input is 2 * uniform(int32 in {0, 1}) - 1, +-1 as in TFP, but "
              "sign_output is 2 * tf.random.uniform(minval=0, maxval=2, dtype=inputs.dtype) - 1, "
              "a float uniform on [-1, 3): mean 1, E[s**2] = 7/3, so the perturbation is neither "
              "zero-mean nor of TFP's variance; the statistical mode's mean, variance and "
              "normality families would reject it.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "DEVIATIONS.md"),
                        help="where to write the generated table")
    args = parser.parse_args(argv)
    results = {}
    for peer in PEERS:
        reason = installed(peer)
        results[peer.name] = reason if reason else deviation_table(peer)
    text = markdown(results)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
