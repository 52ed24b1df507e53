"""The closed-form moments of a linear single-layer case's sample-mode outputs, which every
family of the statistical mode (``statistical``, ``statistical_training``) tests against."""
import autograd.numpy as anp

from lrtdense import kernels
from lrtdense.reference.generation import model_from_meta

__all__ = ["moments"]


def moments(meta, params, x):
    """Closed-form moments of the sample-mode outputs of a linear single-layer case.

    Returns:
      (mean (N, U), variance (N, U), cov (N, N, U)) with N the flattened batch: cov[i, j, k] is
      Cov(out[i, k], out[j, k]); outputs of different units are uncorrelated for every class.
      Computed in the case's dtype (its softplus thresholds and eps), as the port computes.
      The variances are those of the posterior the layer itself samples
      (``layer.posterior_moments``); examples covary only under an estimator that shares one
      weight draw across the batch (``layer.estimator.examples_covary``).
    """
    layer = model_from_meta(meta)
    x2 = anp.reshape(x, (-1, x.shape[-1]))
    mean = anp.reshape(layer.forward(params, x, mode="mean")[0], (x2.shape[0], -1))
    posterior = layer.posterior_moments(params, x2.shape[-1])
    kvar = posterior.kernel_scale * posterior.kernel_scale
    bvar = 0.0 if posterior.bias_scale is None else posterior.bias_scale * posterior.bias_scale
    var = kernels.dense(x2 * x2, kvar) + bvar
    n = x2.shape[0]
    if layer.estimator.examples_covary:                    # one weight draw for the batch
        cross = anp.einsum("ij,kj,ju->iku", x2, x2, kvar)
    else:                                                  # independent across examples
        cross = anp.einsum("ij,iu->iju", anp.eye(n), kernels.dense(x2 * x2, kvar))
    return mean, var, cross + bvar
