"""``lrtdense.torch`` as an adapter of the conformance kit (``lrtdense.conformance``, SPEC.md
section 9): every reference case is built with the package's own modules from the case's JSON
config (``from_config``), loaded through ``load_state_dict``, called with the case's noise, and
differentiated with ``backward``; training cases run ``torch.optim.Adam`` (kingma) or
``KerasAdam`` (keras); the statistical mode draws from a ``torch.Generator`` (for a training case,
the first step's loss and gradients).

    pytest --lrtdense-port=lrtdense.torch.conformance:Adapter
    lrtdense reference verify --port lrtdense.torch.conformance:Adapter [--statistical]
"""
import zlib

import torch

from lrtdense import tree
from lrtdense.reference.statistical import eligible
from lrtdense.torch import KerasAdam, divergence, from_config
from lrtdense.torch.base import torch_dtype
from lrtdense.torch.functional import gaussian_nll

__all__ = ["Adapter", "case_seed", "training_loss"]


def case_seed(seed, name):
    """The statistical seed of one case: ``seed`` mixed with the crc32 of its name, so a case
    draws the same samples whichever cases run."""
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2 ** 32


def training_loss(nll, kl, kl_weight, num_examples):
    """A training step's loss (SPEC section 3, "Training cases"): `nll + kl_weight * kl / N`,
    nll the batch's mean Gaussian NLL (``gaussian_nll``), kl the step's divergence."""
    return nll + kl_weight * kl / num_examples


class Adapter:
    """Computes every quantity of every family (``implements = None``) on ``device`` (None:
    torch's default device)."""
    name = "lrtdense.torch"
    implements = None

    def __init__(self, device=None):
        self.device = torch.get_default_device() if device is None else torch.device(device)

    def _tensor(self, array, dtype):
        """A copy of a case's array (never a view: the optimizers update in place)."""
        return torch.tensor(array, dtype=dtype, device=self.device)

    # ----------------------------------------------------------------------------- building
    def build(self, model, params, in_features, dtype):
        """(network, its layers, their key prefixes): ``model`` a layer or Sequential config,
        ``params`` the case's (nested for a network) params loaded with ``load_state_dict``."""
        net = from_config(model, in_features, device=self.device)
        if isinstance(net, torch.nn.Sequential):
            layers, prefixes = list(net), [f"layer_{i}/" for i in range(len(net))]
            state = {f"{i}.{k}": v
                     for i in range(len(net)) for k, v in params[f"layer_{i}"].items()}
        else:
            layers, prefixes, state = [net], [""], params
        net.load_state_dict({k: self._tensor(v, dtype) for k, v in state.items()})
        return net, layers, prefixes

    @staticmethod
    def _layer_noise(noise, prefixes):
        return [noise[p[:-1]] if p else noise for p in prefixes]

    @staticmethod
    def _run(layers, x, noises=None, mode="sample"):
        for i, layer in enumerate(layers):
            x = layer(x, noise=None if noises is None else noises[i], mode=mode)
        return x

    # ------------------------------------------------------------------------------ compute
    def compute(self, case):
        """Every expected quantity of ``case`` (a ``lrtdense.conformance.ReferenceCase``)."""
        if case.kind == "adam":
            return self._adam(case)
        if case.kind == "training":
            return self._training(case)
        return self._layers(case)

    def _layers(self, case):
        dtype = torch_dtype(case.dtype)
        x = self._tensor(case.x, dtype).requires_grad_()
        net, layers, prefixes = self.build(case.model, case.params, x.shape[-1], dtype)
        out = self._run(layers, x, self._layer_noise(case.noise, prefixes))
        results = {"outputs/sample": out}
        for layer, prefix in zip(layers, prefixes):
            for term, value in layer.divergence_terms.items():
                results[f"kl/{prefix}{term}"] = value
        results["kl/total"] = kl = divergence(net)
        (torch.sum(self._tensor(case.g, dtype) * out) + kl).backward()
        for name, p in net.named_parameters():
            i, _, key = name.rpartition(".")
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            results[f"grads/{'layer_' + i + '/' if i else ''}{key}"] = grad
        results["grads/x"] = x.grad
        with torch.no_grad():
            results["outputs/mean"] = self._run(layers, x, mode="mean")
            results["kl_mean/total"] = divergence(net)
            if all("pruned" in layer.settings.MODES for layer in layers):
                results["outputs/pruned"] = self._run(layers, x, mode="pruned")
        return {k: v for k, v in results.items() if k in case.expected}

    def _adam(self, case):
        """Both Adam forms on the case's gradients: torch.optim.Adam and KerasAdam."""
        hp, dtype = case.meta["hyperparameters"], torch_dtype(case.dtype)
        names = sorted(k[len("init/"):] for k in case.inputs if k.startswith("init/"))
        results = {}
        for form, optimizer in (("kingma", torch.optim.Adam), ("keras", KerasAdam)):
            ps = {n: torch.nn.Parameter(self._tensor(case.inputs[f"init/{n}"], dtype))
                  for n in names}
            opt = optimizer(list(ps.values()), lr=hp["step_size"], betas=(hp["b1"], hp["b2"]),
                            eps=hp["eps"][form])
            trajectory = {n: [] for n in names}
            for t in range(hp["steps"]):
                for n in names:
                    ps[n].grad = self._tensor(case.inputs[f"grads/{n}"][t], dtype)
                opt.step()
                for n in names:
                    trajectory[n].append(ps[n].detach().clone())
            results.update({f"{form}/params/{n}": torch.stack(v) for n, v in trajectory.items()})
        return results

    def _training(self, case):
        """SPEC section 3, "Training cases": minibatches in the case's order, the step's noise,
        loss = mean Gaussian NLL + kl_weights[epoch] * KL / N (averaged over several draws),
        one optimizer step each."""
        h, dtype = case.meta["hyperparameters"], torch_dtype(case.dtype)
        x, y = self._tensor(case.inputs["x"], dtype), self._tensor(case.inputs["y"], dtype)
        init = tree.unflatten(case.inputs, "init")
        model = {"class_name": "Sequential", "config": case.model["network"]}
        net, layers, prefixes = self.build(model, init, x.shape[-1], dtype)
        kind = torch.optim.Adam if h["form"] == "kingma" else KerasAdam
        opt = kind(net.parameters(), lr=h["step_size"], betas=(h["b1"], h["b2"]), eps=h["eps"])
        sigma, n, size = case.model["likelihood"]["scale"], h["num_examples"], h["batch_size"]
        draws = h.get("num_samples", 1)
        noise = case.noise
        records = {"loss": [], "nll": [], "kl": []}
        trajectory = {name: [] for name, _ in net.named_parameters()}
        t = 0
        for epoch in range(h["epochs"]):
            order = torch.as_tensor(case.inputs["order"][epoch], device=self.device)
            for start in range(0, n, size):
                index = order[start:start + size]
                step_noise = self._layer_noise(noise[f"step_{t}"], prefixes)
                nll = kl = 0
                for s in range(draws):
                    noises = step_noise if draws == 1 else [
                        {k: v[s] for k, v in layer_noise.items()} for layer_noise in step_noise]
                    nll = nll + gaussian_nll(y[index], self._run(layers, x[index], noises), sigma)
                    kl = kl + divergence(net)
                nll, kl = (nll, kl) if draws == 1 else (nll / draws, kl / draws)
                loss = training_loss(nll, kl, h["kl_weights"][epoch], n)
                for key, value in (("loss", loss), ("nll", nll), ("kl", kl)):
                    records[key].append(value.detach().clone())
                opt.zero_grad()
                loss.backward()
                opt.step()
                for name, p in net.named_parameters():
                    trajectory[name].append(p.detach().clone())
                t += 1
        results = {k: torch.stack(v) for k, v in records.items()}
        for name, values in trajectory.items():
            i, _, key = name.partition(".")
            results[f"params/layer_{i}/{key}"] = torch.stack(values)
        return results

    # -------------------------------------------------------------------------- statistical
    def sample(self, case, draws, seed):
        """SPEC section 7: ``compute``'s quantities, and ``draws`` sample-mode calls with noise
        from a ``torch.Generator`` seeded by ``case_seed(seed, case.name)``: the outputs and the
        per-draw gradients of `L_s = sum(g * out_s) + 0.5 * sum(out_s**2) + kl_s` (torch.func:
        vmap of grad over the draws' noise), and each draw's KL `kl_s` (``samples/kl``); for a
        training case ``_sample_training``'s draws of its first step instead."""
        if case.kind == "training" and eligible(case.meta):
            return self._sample_training(case, draws, seed)
        results = self.compute(case)
        if not eligible(case.meta):
            return results
        dtype = torch_dtype(case.dtype)
        x, g = self._tensor(case.x, dtype), self._tensor(case.g, dtype)
        layer = self.build(case.model, case.params, x.shape[-1], dtype)[0]
        generator = torch.Generator(self.device).manual_seed(case_seed(seed, case.name))
        noise = layer.sample_noise(x.shape, generator, sample_shape=(draws,))
        params = {k: v.detach() for k, v in layer.named_parameters()}

        def objective(params, x, noise):
            out = torch.func.functional_call(layer, params, (x,), {"noise": noise})
            kl = layer.divergence
            return torch.sum(g * out) + 0.5 * torch.sum(out * out) + kl, (out, kl.detach())

        per_draw = torch.func.vmap(torch.func.grad(objective, argnums=(0, 1), has_aux=True),
                                   in_dims=(None, None, 0))
        (grads, grad_x), (outputs, kl) = per_draw(params, x, noise)
        layer.divergence, layer.divergence_terms = None, {}   # the transforms' wrapped values
        results["samples/outputs"] = outputs
        results["samples/kl"] = kl            # each draw's kl/total (random under a Monte Carlo KL)
        results.update({f"samples/grads/{k}": v for k, v in grads.items()})
        results["samples/grads/x"] = grad_x
        return results

    def _sample_training(self, case, draws, seed):
        """SPEC section 7, "A training step": ``draws`` independent draws of the first step (the
        examples order[0][:batch_size], kl_weights[0], the ``init/layer_0`` parameters) of the
        case's one layer, its noise from the same generator as a layer case's: each draw's loss
        (``training_loss``, as ``_training`` computes it) and its gradient w.r.t. the layer's
        parameters (vmap of grad over the draws' noise)."""
        h, dtype = case.meta["hyperparameters"], torch_dtype(case.dtype)
        index = torch.as_tensor(case.inputs["order"][0][:h["batch_size"]], device=self.device)
        x = self._tensor(case.inputs["x"], dtype)[index]
        y = self._tensor(case.inputs["y"], dtype)[index]
        init = tree.unflatten(case.inputs, "init")["layer_0"]
        layer = self.build(case.model["network"]["layers"][0], init, x.shape[-1], dtype)[0]
        generator = torch.Generator(self.device).manual_seed(case_seed(seed, case.name))
        noise = layer.sample_noise(x.shape, generator, sample_shape=(draws,))
        params = {k: v.detach() for k, v in layer.named_parameters()}
        sigma, weight = case.model["likelihood"]["scale"], h["kl_weights"][0]

        def loss(params, noise):
            out = torch.func.functional_call(layer, params, (x,), {"noise": noise})
            value = training_loss(gaussian_nll(y, out, sigma), divergence(layer), weight,
                                  h["num_examples"])
            return value, value.detach()

        per_draw = torch.func.vmap(torch.func.grad(loss, has_aux=True), in_dims=(None, 0))
        grads, losses = per_draw(params, noise)
        layer.divergence, layer.divergence_terms = None, {}   # the transforms' wrapped values
        results = {"samples/loss": losses}
        results.update({f"samples/grads/layer_0/{k}": v for k, v in grads.items()})
        return results
