"""A model is a network plus a likelihood; its loss is the minibatch negative ELBO.

params = {"network": {...the network's params...}, "likelihood": {...}} (the likelihood's dict is
empty unless it learns a noise scale).
"""
import autograd.numpy as np

from lrtdense.losses import neg_elbo, likelihood_from_config
from lrtdense.network import Sequential

__all__ = ["Model"]


class Model:
    """Settings only: ``network`` (a Sequential or a single layer) and ``likelihood``."""

    def __init__(self, network, likelihood):
        if not hasattr(network, "forward"):
            raise TypeError(f"network must have init/forward, got {network!r}")
        if not isinstance(network, Sequential):
            network = Sequential([network])
        if not hasattr(likelihood, "nll"):
            raise TypeError(f"likelihood must have nll, got {likelihood!r}")
        self.network, self.likelihood = network, likelihood
        self.dtype = network.dtype

    def init(self, rng, input_dim):
        return {"network": self.network.init(rng, input_dim),
                "likelihood": self.likelihood.init(self.dtype)}

    def forward(self, params, x, rng=None, *, noise=None, mode="sample"):
        return self.network.forward(params["network"], x, rng, noise=noise, mode=mode)

    def loss(self, params, x, y, rng=None, *, num_examples, kl_weight=1.0, noise=None):
        """Minibatch negative ELBO. Returns (loss, mean NLL, KL), scalars of the model's dtype."""
        outputs, kl = self.forward(params, x, rng, noise=noise)
        nll = self.likelihood.nll(params["likelihood"], outputs, y)
        nll_mean = np.mean(nll)
        return neg_elbo(nll_mean, kl, num_examples, kl_weight), nll_mean, kl

    def get_config(self):
        return {"network": self.network.get_config(), "likelihood": self.likelihood.get_config()}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or set(config) != {"network", "likelihood"}:
            raise ValueError(f"a model config needs exactly the keys 'network' and 'likelihood', "
                             f"got {sorted(config) if isinstance(config, dict) else config!r}")
        return cls(Sequential.from_config(config["network"]),
                   likelihood_from_config(config["likelihood"]))
