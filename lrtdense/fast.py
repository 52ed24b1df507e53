"""The fast training step: a hand-written forward and backward pass for networks of
DenseLocalReparameterization layers, with every buffer kept from one step to the next.

``lrtdense.training.make_step`` uses it when the model qualifies (``supports``), and the plain
autograd expression of the same math otherwise; tests check that both give the same params,
loss and gradients (float64, <= 1e-12 relative). It computes exactly what the reference path
computes, per layer with input a (B, in), loc, u = untransformed scale, eps (B, units):

    scale = softplus(u) + eps_machine,  s2 = scale**2
    m = a @ loc,  s = sqrt((a*a) @ s2),  z = eps * s + m + bias,  h = act(z)
    KL = sum 0.5 ((loc - mp)/sp)**2 + 0.5 (s2/sp**2 - 1) - log(scale) + log(sp)

and, for the minibatch loss mean NLL + w * KL (w = kl_weight / num_examples), with dz the
cotangent of z:

    r      = dz * eps / (2 s)   where s > 0, else 0 (zero-variance convention)
    d loc  = a.T @ dz + w (loc - mp) / sp**2
    d s2   = (a*a).T @ r
    d u    = (2 scale d s2 + w (scale / sp**2 - 1 / scale)) * sigmoid(u)
    d a    = dz @ loc.T + 2 a (r @ s2.T)          (not formed for the first layer)

Where the time goes and why it is written this way: the step is 16 GEMMs plus element-wise
passes over the weights (softplus, s2, KL, their gradients, Adam), and on a CPU each NumPy pass
over a weight-sized array costs as much as a small GEMM. So passes are few (KL by reductions:
``loc @ loc`` and sums instead of per-element terms), every array lives in a workspace allocated
once (fresh weight-sized temporaries page-fault on every step under glibc's allocator), and
nothing is promoted to float64 in a float32 step. On the batch side each layer keeps only what
its backward pass reads (a, a*a, h and q = eps / s); s and the other temporaries share one
buffer per role across layers, so the step's memory is about 1.4x what the math needs
(benchmarks/RESULTS.md).
"""
import math

import numpy as np
from scipy.special import expit, log_expit

from lrtdense.layers import DenseLocalReparameterization
from lrtdense.samplers import standard_normal
from lrtdense.losses import CategoricalLikelihood, GaussianLikelihood
from lrtdense.training import _check_finite, _deferred_interrupt

__all__ = ["supports", "FastStep"]

_ACTIVATIONS = ("linear", "relu", "tanh")


def supports(model, optimizer):
    """True if ``FastStep`` computes this model's step (else the autograd path is used)."""
    hp = getattr(optimizer, "hyperparams", None)
    if not hp or hp.get("name") != "adam":
        return False
    lik = model.likelihood
    if not (isinstance(lik, CategoricalLikelihood) or
            (isinstance(lik, GaussianLikelihood) and not lik.learn_scale)):
        return False
    for layer in model.network.layers:
        if type(layer) is not DenseLocalReparameterization:
            return False
        if not isinstance(layer.activation, (str, type(None))) or \
                (layer.activation or "linear") not in _ACTIVATIONS:
            return False
        if layer.bias_posterior is not None and layer.bias_posterior.is_normal:
            return False
        if layer.bias_prior is not None:
            return False
    return True


class FastStep:
    """step(state, xb, yb, rng, kl_weight) -> (state, loss, nll, kl); see the module docstring.

    Draws the noise from ``rng`` exactly as the layers' ``sample_noise`` does (layer by layer,
    ``standard_normal(rng, (B, units), dtype)``), so it consumes the same random stream as the
    reference path. Updates the optimizer state in place.
    """

    def __init__(self, model, optimizer, num_examples):
        self.model, self.optimizer, self.num_examples = model, optimizer, num_examples
        self.layers = model.network.layers
        self.names = model.network.names
        self.dtype = np.dtype(model.dtype)
        self._ws = {}
        self._grads = None
        self._eps_machine = float(np.finfo(self.dtype).eps)

    def _buf(self, key, shape):
        """The workspace buffer ``key``, viewed with ``shape``; it only grows, so a short last
        minibatch reuses the full-size buffer instead of reallocating it."""
        size = math.prod(shape)
        buf = self._ws.get(key)
        if buf is None or buf.size < size:
            buf = self._ws[key] = np.empty(size, self.dtype)
        return buf[:size].reshape(shape)

    def _shared(self, role, shape):
        """A scratch buffer shared by all layers (one per role), viewed with the shape needed."""
        return self._buf(("shared", role), shape)

    def _tmp(self, shape):
        return self._shared("weights", shape)

    def _posterior(self, i, u):
        """scale = softplus(u) + eps and sigmoid(u) (kept for the backward pass).

        With e = exp(u): softplus = log1p(e), sigmoid = e / (1 + e): three transcendental-free
        passes after one exp, instead of scipy's log_expit / expit (several times slower). Both
        formulas are exact to rounding for every u whose exp is finite; only if exp overflows
        (u > 709 in float64, > 88 in float32; NumPy's overflow flag tells, at no extra pass)
        are the stable scipy forms used instead.
        """
        scale = self._buf((i, "scale"), u.shape)
        sig = self._buf((i, "sig"), u.shape)
        try:
            with np.errstate(over="raise"):
                np.exp(u, out=sig)
            np.log1p(sig, out=scale)
            tmp = self._tmp(u.shape)
            np.add(sig, 1, out=tmp)
            sig /= tmp
        except FloatingPointError:
            np.negative(u, out=scale)
            log_expit(scale, out=scale)
            np.negative(scale, out=scale)
            expit(u, out=sig)
        scale += self._eps_machine
        return scale, sig

    def grads(self, params, xb, yb, rng, kl_weight=1.0):
        """(loss, nll, kl, grads) at ``params``; grads live in reused buffers.

        Per layer, the forward pass keeps its input a, a*a, the output h, and q = eps / s
        (0 where s = 0), all that the backward pass needs on the batch side; s itself and every
        other batch-sized temporary live in buffers shared by the layers.
        """
        dt = self.dtype
        w = kl_weight / self.num_examples
        a = np.asarray(xb)
        if a.dtype != dt:
            a = a.astype(dt)
        batch = a.shape[0]
        if self._grads is None:
            self._grads = {n: {k: np.empty_like(v) for k, v in params[n].items()} for n in self.names}
        grads = self._grads
        cache = []
        kl_total = 0.0
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            p = params[name]
            loc, u = p["kernel_posterior_loc"], p["kernel_posterior_untransformed_scale"]
            units = loc.shape[1]
            scale, sig = self._posterior(i, u)
            # s2 is kept for the backward pass (r @ s2.T) except in the first layer
            s2 = self._buf((i, "s2"), loc.shape) if i > 0 else self._tmp(loc.shape)
            np.multiply(scale, scale, out=s2)
            a2 = self._buf((i, "a2"), a.shape)
            np.multiply(a, a, out=a2)
            z = self._buf((i, "z"), (batch, units))
            std = self._shared("std", (batch, units))
            np.matmul(a, loc, out=z)
            np.matmul(a2, s2, out=std)
            np.sqrt(std, out=std)
            prior = layer.kernel_prior
            if prior is not None:
                kl_total += self._kl(loc, scale, prior)
            q = self._buf((i, "eps"), (batch, units))
            work = self._shared("dz", ((batch * units + 1) // 2,))    # free until q * std below
            standard_normal(rng, (batch, units), dt, out=q, work=work)   # eps
            tmp = self._shared("dz", (batch, units))
            np.multiply(q, std, out=tmp)
            z += tmp
            try:    # the flags say at no extra pass whether some s == 0 (x / 0 or 0 / 0)
                with np.errstate(divide="raise", invalid="raise"):
                    np.divide(q, std, out=q)                       # q = eps / s,
            except FloatingPointError:      # raised after the whole division is written
                q[std == 0] = 0                                    # 0 at s = 0
            if layer.bias_posterior is not None:
                z += p["bias_posterior_loc"]
            h = self._activate(i, layer, z)
            cache.append((a, a2, scale, sig, s2, q, h))
            a = h
        nll, dout = self._likelihood(a, yb, batch)
        loss = nll + w * kl_total
        g, g_role = dout, None
        for i in reversed(range(len(self.layers))):
            layer, name = self.layers[i], self.names[i]
            p, gp = params[name], grads[name]
            a_in, a2, scale, sig, s2, q, h = cache[i]
            loc = p["kernel_posterior_loc"]
            dz = self._activation_grad(layer, h, g)
            if layer.bias_posterior is not None:
                np.sum(dz, axis=0, out=gp["bias_posterior_loc"])
            gloc, gu = gp["kernel_posterior_loc"], gp["kernel_posterior_untransformed_scale"]
            np.matmul(a_in.T, dz, out=gloc)
            if i > 0:  # da may overwrite g once dz no longer is g (a nonlinear activation)
                da_role = ("da", 1) if (dz is g and g_role == ("da", 0)) else ("da", 0)
                da = self._shared(da_role, a_in.shape)
                np.matmul(dz, loc.T, out=da)
            r = dz                                            # dz (or g) is not needed any more:
            r *= q                                            # r = dz * eps / s
            np.matmul(a2.T, r, out=gu)                        # = 2 d s2
            if i > 0:
                tmp = self._shared("std", a_in.shape)
                np.matmul(r, s2.T, out=tmp)
                tmp *= a_in                                   # 2 a (0.5 r @ s2.T)
                da += tmp
                g, g_role = da, da_role
            # d scale = 2 scale d s2 + w (scale / sp^2 - 1 / scale); d u = d scale * sigmoid(u)
            prior = layer.kernel_prior
            if prior is not None:
                c = w / prior.scale ** 2
                gu += c
            gu *= scale
            if prior is not None:
                t = self._tmp(loc.shape)
                np.divide(w, scale, out=t)
                gu -= t
                if prior.loc == 0:
                    np.multiply(loc, c, out=t)
                else:
                    np.subtract(loc, prior.loc, out=t)
                    t *= c
                gloc += t
            gu *= sig
        return loss, nll, kl_total, grads

    def __call__(self, state, xb, yb, rng, kl_weight=1.0):
        params = self.optimizer.get_params(state)
        loss, nll, kl, grads = self.grads(params["network"], xb, yb, rng, kl_weight)
        full = {"network": grads, "likelihood": {}}
        _check_finite(loss, nll, kl, full)
        with _deferred_interrupt():
            state = self.optimizer.update(state, full, inplace=True)
        return state, self.dtype.type(loss), self.dtype.type(nll), self.dtype.type(kl)

    def _kl(self, loc, scale, prior):
        """sum KL(N(loc, scale) || N(mp, sp)) by reductions (few passes instead of ~8)."""
        n = loc.size
        sp = prior.scale
        flat = loc.reshape(-1)
        if prior.loc == 0:
            sq = float(flat @ flat)
        else:
            d = flat - prior.loc
            sq = float(d @ d)
        flat_scale = scale.reshape(-1)
        sum_s2 = float(flat_scale @ flat_scale)   # a BLAS dot: faster than np.sum(s2)
        logs = np.log(scale, out=self._tmp(scale.shape))
        return (0.5 * sq / sp ** 2 + 0.5 * sum_s2 / sp ** 2 - 0.5 * n
                - float(np.sum(logs)) + n * math.log(sp))

    def _activate(self, i, layer, z):
        """The activation, in place on z (z itself is not needed by the backward pass)."""
        name = layer.activation or "linear"
        if name == "relu":
            np.maximum(z, 0, out=z)
        elif name == "tanh":
            np.tanh(z, out=z)
        return z

    def _activation_grad(self, layer, h, g):
        """dL/dz from g = dL/dh, using the output h: relu' = (h > 0), tanh' = 1 - h**2."""
        name = layer.activation or "linear"
        if name == "linear":
            return g
        dz = self._shared("dz", h.shape)
        if name == "relu":
            np.multiply(g, h > 0, out=dz)
        else:
            np.multiply(h, h, out=dz)
            np.subtract(1, dz, out=dz)
            dz *= g
        return dz

    def _likelihood(self, out, yb, batch):
        """Mean NLL over the batch and its cotangent w.r.t. the network output."""
        lik = self.model.likelihood
        d = self._buf(("lik", "d"), out.shape)
        if isinstance(lik, CategoricalLikelihood):
            y = np.asarray(yb)
            top = out.max(axis=1, keepdims=True)
            np.subtract(out, top, out=d)
            np.exp(d, out=d)
            tot = d.sum(axis=1, keepdims=True)
            lse = np.log(tot) + top
            nll = float(np.mean(lse[:, 0] - out[np.arange(batch), y]))
            d /= tot                                          # softmax
            d[np.arange(batch), y] -= 1
            d /= batch
            return nll, d
        y = np.asarray(yb, dtype=self.dtype).reshape(out.shape)
        sigma = lik.scale
        np.subtract(out, y, out=d)
        nll = float(0.5 * np.sum(d * d) / sigma ** 2 / batch
                    + out.shape[1] * (math.log(sigma) + 0.5 * math.log(2 * math.pi)))
        d /= sigma ** 2 * batch
        return nll, d
