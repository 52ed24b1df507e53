"""Adam in the reference set's two forms (SPEC.md section 3, "Adam cases") as Keras 3 optimizers,
written with ``keras.ops`` (JAX, PyTorch, TensorFlow). With t the update count (1, 2, ...):

``KingmaAdam``, Kingma & Ba's form (arXiv 1412.6980), ``torch.optim.Adam``'s: eps is added to
sqrt(v) / sqrt(1 - b2^t), after the bias correction::

    m = m + (1 - b1) (g - m);  v = b2 v + (1 - b2) g^2
    p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

``TFKerasAdam``, tf-keras 2's form (``lrtdense.torch.KerasAdam`` for PyTorch): eps is added to
sqrt(v), and both bias corrections go into the step size, computed from the float32 roundings
lr32, b1_32, b2_32 of lr, b1, b2 (tf-keras holds them in float32)::

    alpha = lr32 sqrt(1 - b2_32^t) / (1 - b1_32^t)
    m = m + (g - m) (1 - b1);  v = v + (g^2 - v) (1 - b2);  p = p - m alpha / (sqrt(v) + eps)

Why not ``keras.optimizers.Adam`` for the second: it is that form but for the bias corrections,
where it raises the betas in the variable's dtype, so a float64 variable gets 0.999^t where
tf-keras has float32(0.999)^t = 0.99900001^t: sqrt(1 - b2^t) moves by 6e-6 relative at t = 1,
far beyond the float64 cases' 1e-12 (``tests/test_keras_layers.py`` measures it; docs/keras.md
has the numbers). On a float32 variable the two agree to rounding.

Precision (SPEC.md section 3, "Precision of the Adam state"): the moments are zeros of each
variable's dtype and stay in it; the scalars of the bias corrections (lr / (1 - b1^t),
sqrt(1 - b2^t), alpha) are computed in float64 (float32 on JAX without ``jax_enable_x64``) and
rounded where they meet a float32 array. The learning rate is ``keras.optimizers.Optimizer``'s
variable, of dtype ``keras.config.floatx()`` when the optimizer is made (float32 unless set):
``TFKerasAdam`` rounds it to float32 as tf-keras does, ``KingmaAdam`` uses it as it is, so
``torch.optim.Adam``'s trajectory to the last bits (the exact lr) needs floatx "float64" then.
"""
import keras
import numpy as np
from keras import ops

__all__ = ["AdamForm", "KingmaAdam", "TFKerasAdam"]


def _scalar_dtype():
    """The dtype of the bias corrections: float64, but on JAX without ``jax_enable_x64``
    (which has no float64) float32."""
    if keras.backend.backend() == "jax":
        import jax
        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


class AdamForm(keras.optimizers.Optimizer):
    """The base of the two Adam forms (``KingmaAdam``, ``TFKerasAdam``): the hyperparameters,
    the moments m and v (zeros of each variable's dtype) and the config; a subclass writes one
    update in ``_update``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 name=None, **kwargs):
        if not 0 <= beta_1 < 1 or not 0 <= beta_2 < 1 or not epsilon >= 0:
            raise ValueError(f"{type(self).__name__}: expected 0 <= beta_1, beta_2 < 1 and "
                             f"epsilon >= 0, got beta_1={beta_1}, beta_2={beta_2}, "
                             f"epsilon={epsilon}")
        super().__init__(learning_rate=learning_rate, name=name or type(self).__name__,
                         **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, var_list):
        """Creates m and v for every variable of ``var_list``."""
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])

    def update_step(self, gradient, variable, learning_rate):
        """One update of ``variable`` by ``gradient`` (Keras' per-variable hook)."""
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        scalar = _scalar_dtype()
        # the formula on tensors, not on the variables: a Keras variable times a Python float
        # goes through keras.ops, which rounds the float to floatx first (PyTorch backend)
        # (convert_to_tensor: on TensorFlow the optimizer updates the backend's tf.Variable,
        # whose ``value`` is a method)
        p, m_t, v_t = (ops.convert_to_tensor(a) for a in (variable, m, v))
        p_new, m_new, v_new = self._update(p, ops.cast(gradient, p.dtype), m_t, v_t,
                                           ops.cast(learning_rate, scalar),
                                           ops.cast(self.iterations + 1, scalar))
        self.assign(m, m_new)
        self.assign(v, v_new)
        self.assign(variable, p_new)

    def _update(self, p, g, m, v, lr, t):
        """(p, m, v) after one update with the gradient g (p, g, m, v: tensors of p's dtype) at
        update count t, lr the learning rate as held (lr, t: ``_scalar_dtype()`` scalars)."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="lrtdense")
class KingmaAdam(AdamForm):
    """Adam as Kingma & Ba write it and ``torch.optim.Adam`` computes it (eps 1e-8, its default):
    `p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.

    Args:
      learning_rate, beta_1, beta_2, epsilon: lr, b1, b2, eps; the rest are
        ``keras.optimizers.Optimizer``'s (name, clipnorm, ...).
    Raises:
      ValueError: a beta outside [0, 1) or a negative epsilon.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)

    def _update(self, p, g, m, v, lr, t):
        # convert_to_tensor with the dtype, not cast: TensorFlow's cast of a Python float
        # makes a floatx (float32) tensor first, which rounds 0.9 to 0.89999998
        b1, b2, dtype = (ops.convert_to_tensor(self.beta_1, dtype=t.dtype),
                         ops.convert_to_tensor(self.beta_2, dtype=t.dtype), p.dtype)
        step_size = ops.cast(lr / (1 - ops.power(b1, t)), dtype)        # scalars rounded where
        root_correction = ops.cast(ops.sqrt(1 - ops.power(b2, t)), dtype)   # they meet p
        m = m + (g - m) * (1 - self.beta_1)                              # first moment
        v = v * self.beta_2 + g * g * (1 - self.beta_2)                  # second moment
        return p - step_size * (m / (ops.sqrt(v) / root_correction + self.epsilon)), m, v


@keras.saving.register_keras_serializable(package="lrtdense")
class TFKerasAdam(AdamForm):
    """Adam as tf-keras 2 computes it (eps 1e-7, its default):
    `p -= m alpha / (sqrt(v) + eps)`, alpha = lr32 sqrt(1 - b2_32^t) / (1 - b1_32^t).

    Args:
      learning_rate, beta_1, beta_2, epsilon: lr, b1, b2, eps; the rest are
        ``keras.optimizers.Optimizer``'s (name, clipnorm, ...).
    Raises:
      ValueError: a beta outside [0, 1) or a negative epsilon.
    """

    def _update(self, p, g, m, v, lr, t):
        lr32 = ops.cast(ops.cast(lr, "float32"), t.dtype)
        b1_32, b2_32 = (ops.convert_to_tensor(float(np.float32(b)), dtype=t.dtype)
                        for b in (self.beta_1, self.beta_2))
        alpha = ops.cast(lr32 * ops.sqrt(1 - ops.power(b2_32, t)) / (1 - ops.power(b1_32, t)),
                         p.dtype)                                        # rounded where it meets p
        m = m + (g - m) * (1 - self.beta_1)                              # first moment
        v = v + (g * g - v) * (1 - self.beta_2)                          # second moment
        return p - m * alpha / (ops.sqrt(v) + self.epsilon), m, v        # eps outside sqrt
