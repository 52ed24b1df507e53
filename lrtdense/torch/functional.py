"""The math of ``lrtdense.torch``, each formula once, on torch tensors of any dtype and device.

Every function is pure and follows TensorFlow's conventions where the reference set pins them
(``reference_data/SPEC.md`` sections 2-3):

* ``softplus`` switches branches at t = log(eps) + 2 of the tensor's dtype, as TensorFlow does
  (torch's softplus switches at 20 by default: off by up to 1e-10 relative in float64);
* ``zero_safe_sqrt``'s backward is 0 where the output is exactly 0 (an all-zero input row of the
  local reparameterization trick), the limit, where TFP's gradient is NaN;
* the activations' ties follow TensorFlow: relu'(0) = 0 (``torch.relu``, not ``clamp``),
  elu'(0) = 1;
* ``min0`` (min(a, 0)) passes the whole gradient to ``a`` at a == 0, as ``tf.minimum`` does.

Shapes: ``x`` (..., in), a kernel (in, units), outputs and their noise (..., units).
"""
import math

import torch

__all__ = ["softplus", "posterior_scale", "zero_safe_sqrt", "activation", "min0",
           "kl_normal_normal", "normal_log_prob", "normal_log_prob_of_sample",
           "scale_mixture_log_prob", "laplace_log_prob", "student_t_log_prob",
           "kl_kingma", "kl_molchanov", "sparse_log_alpha", "gaussian_nll",
           "KINGMA_C", "MOLCHANOV_K", "HALF_LOG_2PI", "THETA2_EPS", "LOG_ALPHA_CLIP"]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
KINGMA_C = (1.16145124, -1.50204118, 0.58629921)   # arXiv 1506.02557, eq. for KL(alpha)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)          # arXiv 1701.05369, eq. 14
THETA2_EPS = 1e-8                                  # log alpha = log sigma2 - log(theta**2 + 1e-8)
LOG_ALPHA_CLIP = 8.0


def softplus(u):
    """log(1 + exp(u)) as TensorFlow computes it (u any shape): u above -t, exp(u) below t,
    log1p(exp(u)) between, with t = log(eps) + 2 of u's dtype. torch's softplus with its
    threshold at -t is that, in one kernel: below t its log1p(exp(u)) equals exp(u) to within an
    ulp, and its derivative sigmoid(u) equals TF's exp(u) to within exp(u) relative."""
    t = math.log(torch.finfo(u.dtype).eps) + 2.0
    return torch.nn.functional.softplus(u, threshold=-t)


def posterior_scale(u):
    """scale = softplus(u) + eps (TFP's ``default_mean_field_normal_fn``), u any shape."""
    return softplus(u) + torch.finfo(u.dtype).eps


class _ZeroSafeSqrt(torch.autograd.Function):
    """s = sqrt(v); s_bar -> v_bar = s_bar / (2 s) where s > 0, else 0."""
    generate_vmap_rule = True

    @staticmethod
    def forward(v):
        return torch.sqrt(v)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, s_bar):
        (s,) = ctx.saved_tensors
        positive = s > 0
        safe = torch.where(positive, s, torch.ones_like(s))
        return torch.where(positive, s_bar / (2 * safe), torch.zeros_like(s))


def zero_safe_sqrt(v):
    """sqrt(v) (v >= 0, any shape) with the zero-variance convention: the gradient is 0 where
    sqrt(v) == 0 (SPEC section 3), not NaN."""
    return _ZeroSafeSqrt.apply(v)


def _relu(z):
    # torch.relu's gradient passes where the output is > 0: relu'(0) = 0, TF's (clamp's is 1)
    return torch.relu(z)


def _elu(z):
    # at z == 0 the gradient flows through expm1, whose slope there is 1 = TF's elu'(0)
    return torch.where(z > 0, z, torch.expm1(torch.clamp(z, max=0)))


ACTIVATIONS = {"linear": lambda z: z, "relu": _relu, "tanh": torch.tanh,
               "sigmoid": lambda z: 1 / (1 + torch.exp(-z)), "softplus": softplus, "elu": _elu}


def activation(name, z):
    """The activation ``name`` (a key of ``ACTIVATIONS``) or a callable, applied to z."""
    return ACTIVATIONS[name](z) if isinstance(name, str) else name(z)


def min0(a):
    """min(a, 0) with TensorFlow's tie rule: at a == 0 the whole gradient goes to a."""
    return torch.where(a <= 0, a, torch.zeros_like(a))


def _log(value):
    return torch.log(value) if torch.is_tensor(value) else math.log(value)


def kl_normal_normal(loc, scale, prior_loc, prior_scale):
    """KL(N(loc, scale) || N(prior_loc, prior_scale)) summed over the elements, TFP's form:
    d = log scale - log sp, sum(0.5 ((loc - mp) / sp)**2 + 0.5 expm1(2 d) - d). Priors: numbers or
    tensors broadcasting with loc."""
    d = torch.log(scale) - _log(prior_scale)
    return torch.sum(0.5 * ((loc - prior_loc) / prior_scale) ** 2 + 0.5 * torch.expm1(2 * d) - d)


def normal_log_prob(w, loc, scale):
    """sum over elements of log N(w; loc, scale**2)."""
    return torch.sum(-0.5 * ((w - loc) / scale) ** 2 - _log(scale) - HALF_LOG_2PI)


def normal_log_prob_of_sample(scale, eps):
    """log q(w) of w = loc + scale * eps, summed: sum(-eps**2 / 2 - log scale - log(2 pi) / 2)
    (SPEC section 3: the identity (w - loc) / scale = eps, differentiated as such)."""
    return torch.sum(-0.5 * eps * eps - torch.log(scale) - HALF_LOG_2PI)


def scale_mixture_log_prob(w, pi, sigma1, sigma2):
    """`sum of log(pi N(w; 0, sigma1**2) + (1 - pi) N(w; 0, sigma2**2))` as a logsumexp of the two
    components (Blundell et al. 2015, arXiv 1505.05424, eq. 7; stable where both underflow)."""
    parts = [math.log(p) - math.log(sigma) - HALF_LOG_2PI - 0.5 * (w / sigma) ** 2
             for p, sigma in ((pi, sigma1), (1 - pi, sigma2))]
    return torch.sum(torch.logsumexp(torch.stack(parts), dim=0))


def laplace_log_prob(w, loc, scale):
    """sum of -|w - loc| / scale - log(2 scale) (torch's abs has TF's derivative 0 at the tie)."""
    return torch.sum(-torch.abs(w - loc) / scale - math.log(2 * scale))


def student_t_log_prob(w, df, loc, scale):
    """sum of TFP's StudentT log density: y = (w - loc) / scale,
    -0.5 (df + 1) log1p(y**2 / df) - [log scale + 0.5 log df + 0.5 log pi + lgamma(df / 2)
    - lgamma((df + 1) / 2)]."""
    y = (w - loc) / scale
    const = (math.log(scale) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
             + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1)))
    return torch.sum(-0.5 * (df + 1) * torch.log1p(y * y / df) - const)


def kl_kingma(log_alpha):
    """Kingma et al.'s approximate KL (arXiv 1506.02557), log alpha <= 0, summed, constant -k1:
    `sum(k1 - (0.5 la + c1 a + c2 a**2 + c3 a**3)), a = exp(la)`."""
    c1, c2, c3 = KINGMA_C
    a = torch.exp(log_alpha)
    return torch.sum(MOLCHANOV_K[0] - (0.5 * log_alpha + c1 * a + c2 * a ** 2 + c3 * a ** 3))


def kl_molchanov(log_alpha):
    """Molchanov et al.'s approximate KL (arXiv 1701.05369), summed:
    sum(k1 - k1 sigmoid(k2 + k3 la) + 0.5 log1p(exp(-la)))."""
    k1, k2, k3 = MOLCHANOV_K
    return torch.sum(k1 - k1 * torch.sigmoid(k2 + k3 * log_alpha)
                     + 0.5 * torch.log1p(torch.exp(-log_alpha)))


def sparse_log_alpha(theta, log_sigma2):
    """clip(log sigma2 - log(theta**2 + 1e-8), -8, 8) (clamp passes the gradient at the bounds,
    as tf.clip_by_value does)."""
    return torch.clamp(log_sigma2 - torch.log(theta * theta + THETA2_EPS),
                       -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)


def gaussian_nll(y, f, sigma):
    """Mean over the batch of sum over outputs of 0.5 ((y - f) / sigma)**2 + log sigma
    + 0.5 log(2 pi); y, f (batch, out), sigma a number."""
    z = (y - f) / sigma
    return torch.mean(torch.sum(0.5 * z * z + math.log(sigma) + HALF_LOG_2PI, dim=-1))
