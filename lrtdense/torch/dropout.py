"""Variational dropout layers as ``torch.nn.Module``s (the contract: ``lrtdense.torch.base``;
the math: ``lrtdense.dropout``'s docstring and SPEC section 3).

Parameters: ``kernel_theta`` (in, units); ``kernel_log_alpha`` (in, units,
DenseVariationalDropout) or ``kernel_log_sigma2`` (in, units, DenseSparseVariationalDropout);
``bias`` (units,) when ``use_bias``. Noise: "kernel" (..., units).

* sample: z = x @ theta + noise["kernel"] * sqrt((x * x) @ v), v the weights' variance;
* mean: z = x @ theta; pruned (sparse only): z = x @ (theta * [log alpha <= threshold]), the
  mask a constant for the gradients;
* then + bias and the activation; the divergence ``kernel`` is the paper's approximate KL.
"""
import torch

from lrtdense import dropout as numpy_dropout
from lrtdense.torch import functional as F
from lrtdense.torch.base import BayesianModule

__all__ = ["DropoutDense", "DenseVariationalDropout", "DenseSparseVariationalDropout"]


class DropoutDense(BayesianModule):
    """Both dropout layers: each defines ``log_alpha``, ``_variance(log_alpha)`` and ``_kl``."""

    def log_alpha(self):
        """log alpha per weight, (in, units), as the KL and pruning read it."""
        raise NotImplementedError

    def weight_variance(self):
        """The variance of each weight, (in, units)."""
        return self._variance(self.log_alpha())

    def _forward(self, x, noise, mode):
        theta, log_alpha = self.kernel_theta, self.log_alpha()
        if mode == "pruned":
            keep = (log_alpha <= self.settings.threshold).to(theta.dtype).detach()
            z = torch.matmul(x, theta * keep)
        else:
            z = torch.matmul(x, theta)
        if noise is not None:
            variance = self._variance(log_alpha)
            z = z + noise["kernel"] * F.zero_safe_sqrt(torch.matmul(x * x, variance))
        if self.settings.use_bias:
            z = z + self.bias
        return z, {"kernel": self._kl(log_alpha)}


class DenseVariationalDropout(DropoutDense):
    """Variational dropout A (Kingma, Salimans & Welling 2015, arXiv 1506.02557):
    q(w) = N(theta, alpha theta**2), log alpha = min(kernel_log_alpha, 0)."""
    settings_class = numpy_dropout.DenseVariationalDropout

    def log_alpha(self):
        return F.min0(self.kernel_log_alpha)

    def _variance(self, log_alpha):
        return torch.exp(log_alpha) * self.kernel_theta * self.kernel_theta

    def _kl(self, log_alpha):
        return F.kl_kingma(log_alpha)


class DenseSparseVariationalDropout(DropoutDense):
    """Sparse variational dropout (Molchanov, Ashukha & Vetrov 2017, arXiv 1701.05369):
    q(w) = N(theta, exp(kernel_log_sigma2)), log alpha = clip(log sigma2 - log(theta**2 + 1e-8),
    -8, 8); ``mode="pruned"`` drops the weights with log alpha > ``threshold``."""
    settings_class = numpy_dropout.DenseSparseVariationalDropout

    def log_alpha(self):
        return F.sparse_log_alpha(self.kernel_theta, self.kernel_log_sigma2)

    def _variance(self, log_alpha):
        return torch.exp(self.kernel_log_sigma2)

    def _kl(self, log_alpha):
        return F.kl_molchanov(log_alpha)

    def sparsity(self):
        """Fraction of kernel weights with log alpha > threshold (dropped in "pruned")."""
        with torch.no_grad():
            return float(torch.mean((self.log_alpha() > self.settings.threshold).float()))
