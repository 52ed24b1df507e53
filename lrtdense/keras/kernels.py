"""The math of the Keras layers in ``keras.ops``: each formula once, on every backend.

These are the formulas of ``lrtdense.kernels`` (SPEC.md section 3) with TensorFlow's
conventions, which the reference cases pin and which each backend's own primitives break:

* softplus switches branches at t = log(eps) + 2 of the dtype (TensorFlow's thresholds), not at
  20 (PyTorch) nor by logaddexp (JAX);
* ``zero_safe_sqrt``: where s = sqrt(v) is exactly 0 (an all-zero input row) the cotangent
  through s is 0, the limit, where TFP's is NaN: a custom gradient (``keras.ops.custom_gradient``);
* ties: relu'(0) = 0 and elu'(0) = 1 (``where(z > 0, ...)``, not ``maximum``, which gives 1
  in PyTorch and 0.5 in JAX); ``min(a, 0)`` passes the whole gradient to a at a == 0 and the clip
  passes it at its bounds (``tf.minimum``'s and ``tf.clip_by_value``'s rules); |w - loc| has
  the derivative 0 at w == loc (TF's ``Abs``).

Keras' own ``tanh`` and ``logaddexp`` (JAX, PyTorch), ``mean`` (JAX), ``matmul`` and ``maximum``
(PyTorch) round float64 to float32 (Keras' type promotion maps float64 to float32 there); this
module writes them with ops that keep the dtype, and ``tests/test_keras_layers.py`` checks every
op's dtype in float64.

Every function takes and returns backend tensors (or Keras variables); x has shape (..., in),
kernels (in, units), biases (units,); a divergence or log density is the scalar sum over all
elements.
"""
import math

import keras
from keras import ops

__all__ = ["softplus", "posterior_scale", "zero_safe_sqrt", "activation", "ACTIVATIONS",
           "dense", "min0", "clip", "kl_normal", "normal_log_prob_of_sample", "LOG_PRIORS",
           "kl_kingma", "kl_molchanov", "gaussian_nll", "HALF_LOG_2PI", "dtype_of"]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_EPS = {"float32": 1.1920928955078125e-07, "float64": 2.220446049250313e-16}


def dtype_of(x):
    """'float32' or 'float64': the dtype of a tensor or Keras variable."""
    return keras.backend.standardize_dtype(x.dtype)


def dense(x, kernel):
    """x @ kernel: (..., in) x (in, units) -> (..., units), with the backend's own ``@``
    (``keras.ops.matmul`` computes float64 in float32 on the PyTorch backend)."""
    return x @ kernel


def softplus(u):
    """TensorFlow's softplus (SPEC.md section 2): u above -t, exp(u) below t, log1p(exp(u)) in
    between, t = log(eps) + 2 of u's dtype. u: any shape."""
    t = math.log(_EPS[dtype_of(u)]) + 2.0
    middle = ops.log1p(ops.exp(ops.clip(u, t, -t)))  # clipped: no overflow in unused lanes
    return ops.where(u > -t, u, ops.where(u < t, ops.exp(u), middle))


def posterior_scale(u):
    """scale = softplus(u) + eps (TFP's mean-field Normal; eps = finfo(dtype).eps)."""
    return softplus(u) + _EPS[dtype_of(u)]


def zero_safe_sqrt(v):
    """s = sqrt(v), v >= 0 of any shape, with the cotangent v_bar = s_bar / (2 s) where s > 0
    and 0 where s == 0 (SPEC.md section 3, "Zero-variance convention")."""
    return _zero_safe_sqrt(v)


@ops.custom_gradient
def _zero_safe_sqrt(v):
    s = ops.sqrt(v)

    def grad(*args, upstream=None):     # JAX and TF pass upstream positionally, PyTorch by name
        s_bar = args[0] if upstream is None else upstream
        positive = s > 0
        return ops.where(positive, s_bar / (2 * ops.where(positive, s, 1)), 0)

    return s, grad


def _relu(z):
    return ops.where(z > 0, z, ops.zeros_like(z))


def _tanh(z):
    """tanh(z) = -expm1(-2|z|) / (2 + expm1(-2|z|)), odd: a few ulps from libm's tanh, in z's
    dtype (``keras.ops.tanh`` computes float64 in float32 on the JAX and PyTorch backends)."""
    magnitude = ops.where(z < 0, -z, z)
    e = ops.expm1(-2 * magnitude)
    t = -e / (2 + e)
    return ops.where(z < 0, -t, t)


def _elu(z):
    return ops.where(z > 0, z, ops.expm1(ops.where(z > 0, ops.zeros_like(z), z)))


ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": _relu,
    "tanh": _tanh,
    "sigmoid": lambda z: 1 / (1 + ops.exp(-z)),
    "softplus": softplus,
    "elu": _elu,
}


def activation(name, z):
    """The activation ``name`` (a key of ``ACTIVATIONS``) of z, with TF's ties."""
    return ACTIVATIONS[name](z)


def min0(a):
    """min(a, 0) with the whole gradient to a at a == 0 (tf.minimum's rule)."""
    return ops.where(a <= 0, a, ops.zeros_like(a))


def clip(a, low, high):
    """clip(a, low, high) passing the gradient where low <= a <= high, bounds included
    (tf.clip_by_value's rule)."""
    return ops.where(a < low, ops.full_like(a, low), ops.where(a > high, ops.full_like(a, high), a))


def kl_normal(loc, scale, prior_loc, prior_scale):
    """KL(N(loc, scale) || N(mp, sp)) summed: sum(0.5 ((loc - mp)/sp)^2 + 0.5 expm1(2 d) - d),
    d = log scale - log sp (TFP's element-wise form); mp, sp numbers or arrays of loc's shape."""
    log_sp = math.log(prior_scale) if isinstance(prior_scale, float) else ops.log(prior_scale)
    d = ops.log(scale) - log_sp
    return ops.sum(0.5 * ops.square((loc - prior_loc) / prior_scale) + 0.5 * ops.expm1(2 * d) - d)


def normal_log_prob_of_sample(scale, eps):
    """log q(w) at w = loc + scale * eps, summed: sum(-0.5 eps^2 - log scale - 0.5 log 2 pi)
    (the identity (w - loc) / scale = eps; SPEC.md section 3, "The Monte Carlo term")."""
    return ops.sum(-0.5 * ops.square(eps) - ops.log(scale) - HALF_LOG_2PI)


def _normal_log_prob(w, loc, scale):
    """sum of log N(w; loc, scale^2); loc, scale numbers or arrays of w's shape."""
    log_scale = math.log(scale) if isinstance(scale, float) else ops.log(scale)
    return ops.sum(-0.5 * ops.square((w - loc) / scale) - log_scale - HALF_LOG_2PI)


def _scale_mixture_log_prob(w, prior):
    """sum of log(pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2)) as a logaddexp of the two
    components (Blundell et al. 2015, arXiv 1505.05424, eq. 7; stable where both underflow)."""
    parts = [math.log(p) - math.log(s) - HALF_LOG_2PI - 0.5 * ops.square(w / s)
             for p, s in ((prior.pi, prior.sigma1), (1 - prior.pi, prior.sigma2))]
    return ops.sum(_logaddexp(*parts))


def _logaddexp(a, b):
    """log(exp(a) + exp(b)) = m + log(exp(a - m) + exp(b - m)), m = max(a, b) held constant
    (its gradient cancels); ``keras.ops.logaddexp`` computes float64 in float32 on JAX/PyTorch."""
    m = ops.stop_gradient(ops.where(a > b, a, b))
    return m + ops.log(ops.exp(a - m) + ops.exp(b - m))


def _laplace_log_prob(w, prior):
    """sum of -|w - loc| / scale - log(2 scale); sign(d) d is |d| with derivative 0 at d == 0."""
    d = w - prior.loc
    return ops.sum(-(ops.sign(d) * d) / prior.scale - math.log(2 * prior.scale))


def _student_t_log_prob(w, prior):
    """sum of the Student-t log density: y = (w - loc) / scale,
    -0.5 (df + 1) log1p(y^2 / df) - [log scale + 0.5 log(df pi) + lgamma(df/2) - lgamma((df+1)/2)]."""
    df, scale = prior.df, prior.scale
    y = (w - prior.loc) / scale
    const = (math.log(scale) + 0.5 * math.log(df) + 0.5 * math.log(math.pi)
             + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1)))
    return ops.sum(-0.5 * (df + 1) * ops.log1p(ops.square(y) / df) - const)


# log p(w) summed, by the ``TYPE`` of an lrtdense prior record: f(w, prior, prior_loc_scale)
# where prior_loc_scale is (mp, sp) of a Normal prior (a trainable one's from its params)
LOG_PRIORS = {
    "normal": lambda w, prior, loc_scale: _normal_log_prob(w, *loc_scale),
    "trainable_normal": lambda w, prior, loc_scale: _normal_log_prob(w, *loc_scale),
    "scale_mixture": lambda w, prior, loc_scale: _scale_mixture_log_prob(w, prior),
    "laplace": lambda w, prior, loc_scale: _laplace_log_prob(w, prior),
    "student_t": lambda w, prior, loc_scale: _student_t_log_prob(w, prior),
}

KINGMA_C = (1.16145124, -1.50204118, 0.58629921)
MOLCHANOV_K = (0.63576, 1.87320, 1.48695)


def kl_kingma(log_alpha):
    """Kingma et al.'s KL approximation (arXiv 1506.02557), summed, with C = -k1:
    sum(k1 - (0.5 la + c1 a + c2 a^2 + c3 a^3)), a = exp(la), la <= 0."""
    c1, c2, c3 = KINGMA_C
    a = ops.exp(log_alpha)
    return ops.sum(MOLCHANOV_K[0] - (0.5 * log_alpha + c1 * a + c2 * a ** 2 + c3 * a ** 3))


def kl_molchanov(log_alpha):
    """Molchanov et al.'s KL approximation (arXiv 1701.05369), summed:
    sum(k1 - k1 sigmoid(k2 + k3 la) + 0.5 log1p(exp(-la)))."""
    k1, k2, k3 = MOLCHANOV_K
    return ops.sum(k1 - k1 * ops.sigmoid(k2 + k3 * log_alpha) + 0.5 * ops.log1p(ops.exp(-log_alpha)))


def gaussian_nll(y, mean, scale):
    """-log N(y; mean, scale^2) = 0.5 ((y - mean) / scale)^2 + log(scale) + 0.5 log(2 pi),
    element-wise (``lrtdense.kernels.gaussian_nll``); scale a number > 0."""
    return 0.5 * ops.square((y - mean) / scale) + (math.log(scale) + HALF_LOG_2PI)
