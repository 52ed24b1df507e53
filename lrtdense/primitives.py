"""Element-wise primitives with hand-written derivatives.

Two functions whose plain NumPy expression is either not what TensorFlow computes or not
differentiable everywhere:

* ``softplus(u)``: TensorFlow's ``tf.nn.softplus`` formula (thresholds at log(eps) + 2), so the
  posterior scale softplus(u) + eps matches TFP's bits, with derivative sigmoid(u) evaluated as
  ``1 / (1 + exp(-u))`` (TF's ``SoftplusGrad``), which never forms inf * 0.
* ``sqrt0(u)``: sqrt with the *zero-variance convention*. At u = 0 the derivative of sqrt is
  infinite; in the local reparameterization trick u = (x**2) @ (scale**2) is 0 exactly when an
  input row is all zeros, and TFP's gradient there is 0 * inf = NaN for every parameter. lrtdense
  uses the limit instead: the cotangent that flows back through sqrt0 at u == 0 is 0. Outputs
  are unchanged (sqrt(0) = 0). This is a deliberate, documented difference from TFP.

All functions keep the dtype of their input (float32 stays float32).
"""
import numpy as onp
from autograd.extend import primitive, defvjp

__all__ = ["softplus", "sqrt0", "softplus_threshold"]


def softplus_threshold(dtype):
    """TF's softplus threshold log(eps) + 2 for ``dtype`` (negative: -34.04 f64, -13.94 f32)."""
    return float(onp.log(onp.finfo(dtype).eps) + 2.0)


@primitive
def softplus(u):
    """log(1 + exp(u)) as TensorFlow computes it.

    u > -t gives u, u < t gives exp(u), else log1p(exp(u)), with t = log(eps) + 2 < 0.

    Args:
      u: float array, any shape.
    Returns:
      Array of u's shape and dtype.
    """
    u = onp.asarray(u)
    t = softplus_threshold(u.dtype)
    e = onp.exp(onp.minimum(u, -t))  # clipped so exp never overflows
    return onp.where(u > -t, u, onp.where(u < t, e, onp.log1p(e)))


def _softplus_vjp(ans, u):
    def vjp(g):
        with onp.errstate(over="ignore"):  # exp(-u) = inf for very negative u gives g / inf = 0
            return g / (1 + onp.exp(-u))
    return vjp


defvjp(softplus, _softplus_vjp)


@primitive
def sqrt0(u):
    """sqrt(u) whose derivative at u == 0 is taken as 0 (the zero-variance convention).

    Args:
      u: non-negative float array, any shape.
    Returns:
      sqrt(u), same shape and dtype.
    """
    return onp.sqrt(u)


def _sqrt0_vjp(ans, u):
    def vjp(g):
        out = onp.zeros_like(ans)
        onp.divide(g, 2 * ans, out=out, where=ans > 0)
        return out
    return vjp


defvjp(sqrt0, _sqrt0_vjp)
