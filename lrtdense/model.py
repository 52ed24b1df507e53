"""A model is a network plus a likelihood; its loss is the minibatch negative ELBO.

params = {"network": {...the network's params...}, "likelihood": {...}} (the likelihood's dict is
empty unless it learns a noise scale).
"""
import dataclasses

import autograd.numpy as anp
import numpy as np

from lrtdense import tree
from lrtdense.checks import check_int
from lrtdense.losses import check_num_examples, likelihood_from_config, neg_elbo
from lrtdense.network import Sequential
from lrtdense.records import Record, record_field

__all__ = ["Model", "check_num_samples"]


def check_num_samples(num_samples):
    """``num_samples`` as an int >= 1; a ValueError otherwise."""
    return check_int(num_samples, "num_samples", low=1)


def _sample(noise, s, num_samples):
    """Draw s of a noise tree whose arrays have a leading axis of num_samples."""
    def pick(a):
        if np.shape(a)[:1] != (num_samples,):
            raise ValueError(f"with num_samples={num_samples} every noise array needs a leading "
                             f"axis of {num_samples}, got shape {np.shape(a)}")
        return a[s]
    return tree.map(pick, noise)


@dataclasses.dataclass(frozen=True)
class Model(Record):
    """Settings only: ``network`` (a Sequential; a single layer is wrapped in one) and
    ``likelihood``. Config: {"network": its config, "likelihood": its config}."""

    network: object = record_field(from_json=Sequential.from_config)
    likelihood: object = record_field(from_json=likelihood_from_config)

    def __post_init__(self):
        if not hasattr(self.network, "forward"):
            raise TypeError(f"network must have init/forward, got {self.network!r}")
        if not isinstance(self.network, Sequential):
            object.__setattr__(self, "network", Sequential([self.network]))
        if not (hasattr(self.likelihood, "nll") and hasattr(self.likelihood, "check_targets")):
            raise TypeError(f"likelihood must be a GaussianLikelihood or CategoricalLikelihood, "
                            f"got {self.likelihood!r}")

    @property
    def dtype(self):
        """The network's dtype, "float32" or "float64"."""
        return self.network.dtype

    def init(self, rng, input_dim):
        """Fresh params {"network": ..., "likelihood": ...}, drawn from ``rng``."""
        return {"network": self.network.init(rng, input_dim),
                "likelihood": self.likelihood.init(self.dtype)}

    def param_shapes(self, input_dim):
        """The params' shapes, {"network": ..., "likelihood": ...}, without drawing anything."""
        return {"network": self.network.param_shapes(input_dim),
                "likelihood": {k: np.shape(v) for k, v in self.likelihood.init(self.dtype).items()}}

    def forward(self, params, x, rng=None, *, noise=None, mode="sample", workspace=None):
        """The network's (outputs, kl); see ``Sequential.forward``."""
        return self.network.forward(params["network"], x, rng, noise=noise, mode=mode,
                                    workspace=workspace)

    def check_params(self, params, input_dim=None):
        """Raises a clear error unless ``params`` are this model's (keys, shapes, dtypes)."""
        if not isinstance(params, dict) or set(params) != {"network", "likelihood"}:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"params must be a dict with keys 'network' and 'likelihood' (as "
                             f"Model.init makes), got {got}")
        self.network.check_params(params["network"], input_dim)
        want = self.likelihood.init(self.dtype)
        got = params["likelihood"]
        if not isinstance(got, dict) or set(got) != set(want) or any(
                np.shape(got[k]) != np.shape(v) or np.result_type(got[k]) != v.dtype
                for k, v in want.items()):
            raise ValueError(f"params['likelihood'] must hold {sorted(want)} of shapes "
                             f"{[np.shape(v) for v in want.values()]} and dtype {self.dtype}")

    def check_data(self, x, y, num_examples=None):
        """Checks a data set (or minibatch) against the model, as ``loss`` does on every call.

        x: real floating numbers of rank >= 2, (N, ..., in); y: the likelihood's targets for the
        outputs' shape; num_examples: None or an integer >= 1.
        Raises:
          TypeError / ValueError naming what is wrong and what was expected.
        """
        x = self.network.layers[0].check_input(x)
        if len(x) != len(np.asarray(y)):
            raise ValueError(f"x and y must have the same length, got {len(x)} and "
                             f"{len(np.asarray(y))}")
        self.likelihood.check_targets(y, self.network.compute_output_shape(x.shape))
        if num_examples is not None:
            check_num_examples(num_examples)

    def loss(self, params, x, y, rng=None, *, num_examples, kl_weight=1.0, noise=None,
             num_samples=1, workspace=None):
        """Minibatch negative ELBO: mean NLL over the examples + kl_weight * KL / num_examples,
        averaged over ``num_samples`` draws of the noise.

        Args:
          params: {"network": ..., "likelihood": ...}.
          x: (batch, ..., in); y: targets (see the likelihood).
          rng / noise: the network's randomness (one of the two); with num_samples S > 1 every
            noise array has a leading axis of S (``sample_noise(..., num_samples=S)``), and rng
            draws sample after sample, each as forward(rng=...) does.
          num_examples: N, the size of the training set.
          kl_weight: a number >= 0 (1 for the ELBO).
          num_samples: S >= 1: the mean NLL and the KL are averaged over S draws (a closed-form
            KL is the same in each; a Monte Carlo one gets S estimates).
          workspace: optional Workspace.
        Returns:
          (loss, mean NLL, KL), scalars of the model's dtype.
        Raises:
          TypeError / ValueError: bad targets, num_examples, kl_weight or num_samples (and the
            layers' errors).
        """
        num_samples = check_num_samples(num_samples)
        nll_mean = kl = None
        for s in range(num_samples):
            noise_s = noise if noise is None or num_samples == 1 else _sample(noise, s, num_samples)
            outputs, kl_s = self.forward(params, x, rng, noise=noise_s, workspace=workspace)
            nll = anp.mean(self.likelihood.nll(params["likelihood"], outputs, y,
                                               workspace=workspace))
            nll_mean = nll if nll_mean is None else nll_mean + nll
            kl = kl_s if kl is None else kl + kl_s
        if num_samples > 1:
            nll_mean, kl = nll_mean / num_samples, kl / num_samples
        return neg_elbo(nll_mean, kl, num_examples, kl_weight), nll_mean, kl

    def sample_noise(self, rng, input_shape, num_samples=1, workspace=None):
        """The network's noise for one loss call: ``num_samples`` draws, each the network's
        ``sample_noise``, stacked on a leading axis when num_samples > 1."""
        num_samples = check_num_samples(num_samples)
        draws = [self.network.sample_noise(rng, input_shape, workspace=workspace)
                 for _ in range(num_samples)]
        if num_samples == 1:
            return draws[0]
        return tree.map(lambda *leaves: np.stack(leaves), *draws)
