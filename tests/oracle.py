"""The plain autograd expression of lrtdense's math: the oracle the kernels are tested against.

Written with autograd.numpy operations only (no lrtdense kernels, no hand-written gradients), in
the order a reader would write the formulas; autograd supplies the gradients. The conventions
lrtdense states are expressed with double ``where``s, so that autograd's own derivative is the
convention: sqrt0'(0) = 0, relu'(0) = 0, elu'(0) = 1, a clip passing the gradient at its bounds.
Settings (units, priors, bias kind, activation) are read from the lrtdense layer objects; the
arithmetic is all here.
"""
import math

import autograd.numpy as np
from autograd.scipy.special import expit, logsumexp

import lrtdense as L

KINGMA_C = (1.16145124, -1.50204118, 0.58629921)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)


def softplus(u):
    return np.logaddexp(0.0, u)


def posterior_scale(u):
    return softplus(u) + np.finfo(u.dtype).eps


def sqrt0(u):
    safe = np.where(u > 0, u, 1.0)
    return np.where(u > 0, np.sqrt(safe), 0.0)


def clip(x, lo, hi):
    return np.where(x > hi, hi, np.where(x < lo, lo, x))


ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.where(z > 0, z, 0.0),
    "tanh": np.tanh,
    "sigmoid": expit,
    "softplus": softplus,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.where(z > 0, 0.0, z))),
}


def matmul(x, w):
    return np.reshape(np.dot(np.reshape(x, (-1, x.shape[-1])), w), x.shape[:-1] + (w.shape[-1],))


def kl_normal(loc, scale, mp, sp):
    """TFP's _kl_normal_normal per element, summed."""
    d = np.log(scale) - np.log(sp)
    return np.sum(0.5 * ((loc - mp) / sp) ** 2 + 0.5 * np.expm1(2.0 * d) - d)


def kl_deterministic(loc, mp, sp):
    return np.sum(0.5 * ((loc - mp) / sp) ** 2 + math.log(sp) + 0.5 * math.log(2 * math.pi))


def kl_kingma(log_alpha):
    c1, c2, c3 = KINGMA_C
    a = np.exp(log_alpha)
    return np.sum(MOLCHANOV_K[0] - (0.5 * log_alpha + c1 * a + c2 * a ** 2 + c3 * a ** 3))


def kl_molchanov(log_alpha):
    k1, k2, k3 = MOLCHANOV_K
    return np.sum(k1 - k1 * expit(k2 + k3 * log_alpha) + 0.5 * np.log1p(np.exp(-log_alpha)))


def layer_forward(layer, p, x, noise, mode="sample"):
    """(outputs, kl) of one lrtdense layer, computed here."""
    name = type(layer).__name__
    if isinstance(layer, L.DenseVariationalDropout) or isinstance(layer, L.DenseSparseVariationalDropout):
        theta = p["kernel_theta"]
        if name == "DenseVariationalDropout":
            log_alpha = clip(p["kernel_log_alpha"], -np.inf, 0.0)
            var = np.exp(log_alpha) * theta * theta
            kl = kl_kingma(log_alpha)
        else:
            log_alpha = clip(p["kernel_log_sigma2"] - np.log(theta * theta + 1e-8), -8.0, 8.0)
            var = np.exp(p["kernel_log_sigma2"])
            kl = kl_molchanov(log_alpha)
        if mode == "sample":
            z = matmul(x, theta) + noise["kernel"] * sqrt0(matmul(x * x, var))
        elif mode == "pruned":
            z = matmul(x, theta * (log_alpha <= layer.threshold))
        else:
            z = matmul(x, theta)
        if layer.use_bias:
            z = z + p["bias"]
        return ACTIVATIONS[layer.activation](z), kl
    if name == "DenseVariational":
        return dense_variational_forward(layer, p, x, noise, mode)
    loc = p["kernel_posterior_loc"]
    scale = posterior_scale(p["kernel_posterior_untransformed_scale"])
    w_kernel = None
    if mode == "mean":
        z = matmul(x, loc)
    elif name == "DenseLocalReparameterization":
        z = matmul(x, loc) + noise["kernel"] * sqrt0(matmul(x * x, scale * scale))
    elif name == "DenseReparameterization":
        w_kernel = noise["kernel"] * scale + loc
        z = matmul(x, w_kernel)
    else:
        z = matmul(x, loc) + matmul(x * noise["sign_input"], noise["kernel"] * scale) * noise["sign_output"]
    kl = 0.0
    kl = kl + divergence(layer, "kernel", p, loc, scale, noise, w_kernel, mode)
    if layer.bias_posterior is not None:
        b = p["bias_posterior_loc"]
        b_scale = w_bias = None
        if layer.bias_posterior.is_normal:
            b_scale = posterior_scale(p["bias_posterior_untransformed_scale"])
            if mode == "sample":
                w_bias = noise["bias"] * b_scale + b
        kl = kl + divergence(layer, "bias", p, b, b_scale, noise, w_bias, mode)
        z = z + (w_bias if w_bias is not None else b)
    return ACTIVATIONS[layer.activation](z), kl


def prior_log_prob(prior, w, p, name):
    kind = type(prior).__name__
    if kind == "NormalPrior":
        return normal_log_prob(w, prior.loc, prior.scale)
    if kind == "TrainableNormalPrior":
        return normal_log_prob(w, p[name + "_prior_loc"],
                               posterior_scale(p[name + "_prior_untransformed_scale"]))
    if kind == "ScaleMixturePrior":
        return scale_mixture_log_prob(w, prior.pi, prior.sigma1, prior.sigma2)
    if kind == "LaplacePrior":
        return laplace_log_prob(w, prior.loc, prior.scale)
    return student_t_log_prob(w, prior.df, prior.loc, prior.scale)


def divergence(layer, name, p, loc, scale, noise, forward_sample, mode):
    """weight * divergence of one term, written out from the layer's settings."""
    prior = getattr(layer, f"{name}_prior")
    if prior is None:
        return 0.0
    spec = getattr(layer, f"{name}_divergence")
    if scale is None:
        value = -prior_log_prob(prior, loc, p, name)
    elif type(spec).__name__ == "ClosedFormKL":
        if type(prior).__name__ == "NormalPrior":
            value = kl_normal(loc, scale, prior.loc, prior.scale)
        else:
            value = kl_normal(loc, scale, p[name + "_prior_loc"],
                              posterior_scale(p[name + "_prior_untransformed_scale"]))
    else:
        key = f"{name}_divergence"
        if mode != "sample":
            w = loc
        elif noise is not None and key in noise:
            w = noise[key] * scale + loc
        else:
            w = forward_sample
        value = normal_log_prob(w, loc, scale) - prior_log_prob(prior, w, p, name)
    return spec.weight * value


def dense_variational_forward(layer, p, x, noise, mode):
    t = p["posterior_constant"]
    n = t.shape[0] // 2
    loc, scale = t[:n], softplus(t[n:] + math.log(math.expm1(1.0))) + 1e-5
    w = noise["posterior"] * scale + loc if mode == "sample" else loc
    k = x.shape[-1] * layer.units
    z = matmul(x, np.reshape(w[:k], (x.shape[-1], layer.units)))
    if layer.use_bias:
        z = z + w[k:]
    prior_loc = p["prior_constant"] if layer.prior == "trainable" else 0.0
    if layer.kl_use_exact:
        kl = kl_normal(loc, scale, prior_loc, 1.0)
    else:
        kl = normal_log_prob(w, loc, scale) - normal_log_prob(w, prior_loc, 1.0)
    if layer.kl_weight is not None:
        kl = float(np.float32(layer.kl_weight)) * kl
    return ACTIVATIONS[layer.activation](z), kl


def network_forward(network, params, x, noise, mode="sample"):
    kl = 0.0
    for name, layer in zip(network.names, network.layers):
        x, k = layer_forward(layer, params[name], x, None if noise is None else noise[name], mode)
        kl = kl + k
    return x, kl


def per_example_nll(likelihood, lik_params, outputs, y):
    """(batch,) NLL per example, summed over every other axis."""
    if isinstance(likelihood, L.CategoricalLikelihood):
        k = outputs.shape[-1]
        flat = np.reshape(outputs, (-1, k))
        picked = flat[np.arange(flat.shape[0]), np.reshape(y, -1)]
        nll = logsumexp(flat, axis=1) - picked
    else:
        scale = (posterior_scale(lik_params["untransformed_noise_scale"]) if likelihood.learn_scale
                 else likelihood.scale)
        y = np.reshape(y, outputs.shape)
        z = (y - outputs) / scale
        nll = np.reshape(0.5 * z * z + np.log(scale) + 0.5 * math.log(2 * math.pi), -1)
    return np.sum(np.reshape(nll, (outputs.shape[0], -1)), axis=1)


def loss(model, params, x, y, noise, num_examples, kl_weight=1.0):
    """Minibatch negative ELBO: mean NLL + kl_weight * KL / num_examples, and its two terms."""
    outputs, kl = network_forward(model.network, params["network"], x, noise)
    nll = np.mean(per_example_nll(model.likelihood, params["likelihood"], outputs, y))
    return nll + kl_weight * kl / num_examples, nll, kl


def normal_log_prob(w, loc, scale):
    return np.sum(-0.5 * ((w - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi))


def scale_mixture_log_prob(w, pi, s1, s2):
    def pdf(s):
        return np.exp(-0.5 * (w / s) ** 2) / (s * math.sqrt(2 * math.pi))
    return np.sum(np.log(pi * pdf(s1) + (1 - pi) * pdf(s2)))


def laplace_log_prob(w, loc, scale):
    return np.sum(-np.abs(w - loc) / scale - math.log(2 * scale))


def student_t_log_prob(w, df, loc, scale):
    from scipy.special import gammaln
    y = (w - loc) / scale
    return np.sum(gammaln(0.5 * (df + 1)) - gammaln(0.5 * df) - 0.5 * math.log(df * math.pi)
                  - math.log(scale) - 0.5 * (df + 1) * np.log(1 + y * y / df))
