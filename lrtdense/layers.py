"""Dense variational layers: TFP's DenseLocalReparameterization, DenseReparameterization and
DenseFlipout, as pure functions of a flat params dict.

The contract, shared by every layer in lrtdense:

* A layer object holds settings only (units, activation, posteriors, priors, dtype).
* ``init(rng, input_dim) -> params``: a dict of named arrays, TFP's variable names:

  ==========================================  ===============  ==============================
  key                                         shape            when
  ==========================================  ===============  ==============================
  ``kernel_posterior_loc``                    (in, units)      always
  ``kernel_posterior_untransformed_scale``    (in, units)      always
  ``bias_posterior_loc``                      (units,)         bias posterior not None
  ``bias_posterior_untransformed_scale``      (units,)         bias posterior Normal
  ==========================================  ===============  ==============================

  Draw order in ``init``: the rows of the table, top to bottom.
* ``forward``, ``sample_noise``, modes and workspaces as ``lrtdense.base`` states for every
  layer; ``mode="mean"`` uses the posterior means (TFP's ``tensor_fn=lambda d: d.mean()``).
  Noise keys, in draw order: LRT "kernel" (..., units); Reparameterization "kernel"
  (in, units); Flipout "kernel" (in, units), "sign_input" (x's shape), "sign_output"
  (..., units); then "bias" (units,) when the bias posterior is Normal.

The math (x contracted on its last axis; scale = softplus(untransformed_scale) + eps, the kernel
``lrtdense.kernels.posterior_scale``), each estimator one kernel of ``lrtdense.kernels``:

* LocalReparameterization (Kingma et al. 2015, arXiv 1506.02557): ``kernels.lrt``,
  ``m = x @ loc``, ``s = sqrt((x**2) @ (scale**2))``, kernel term ``noise["kernel"] * s + m``.
* Reparameterization: ``kernels.reparameterization``, W = noise["kernel"] * scale + loc,
  kernel term = x @ W.
* Flipout (Wen et al. 2018, arXiv 1803.04386): ``kernels.flipout``, kernel term = x @ loc +
  ((x * noise["sign_input"]) @ (noise["kernel"] * scale)) * noise["sign_output"].

Then the bias (Deterministic: + loc; Normal: + noise["bias"] * scale + loc, one draw shared by the
batch) and the activation. The divergences are TFP's closed forms summed over the elements
(``kernels.kl_normal_normal``; for a point mass, -log p(loc)). Gradients at s == 0
(all-zero input rows) follow the zero-variance convention of ``lrtdense.kernels.dense``: finite,
where TFP's are NaN.
"""
import dataclasses

import numpy as np
from autograd.tracer import getval

from lrtdense import estimators, kernels
from lrtdense.base import Layer, Moments, activation_field, sum_terms
from lrtdense.distributions import (ClosedFormKL, DeterministicPosterior, MonteCarloKL,
                                    NormalPosterior, divergence_from_config,
                                    posterior_from_config, prior_from_config)
from lrtdense.samplers import standard_normal, rademacher

__all__ = ["MeanFieldDense", "DenseLocalReparameterization", "DenseReparameterization",
           "DenseFlipout", "forward", "standard_normal", "rademacher"]


@dataclasses.dataclass(frozen=True)
class MeanFieldDense(Layer):
    """Settings and machinery of TFP's three estimators: a dense layer whose kernel has a
    mean-field Normal posterior and, optionally, a prior; each subclass sets one attribute,
    ``estimator``, a record of ``lrtdense.estimators`` (as TFP's ``_DenseVariational``
    subclasses override one method, ``_apply_variational_kernel``).

    Args:
      units: output size.
      activation: a name of ``lrtdense.activations``, None (linear) or a callable.
      kernel_posterior: "normal" or a NormalPosterior (its initializers).
      kernel_prior: "normal" (N(0, 1), TFP's default), a prior of ``lrtdense.distributions``
        (NormalPrior, TrainableNormalPrior, ScaleMixturePrior, LaplacePrior, StudentTPrior),
        its config, or None.
      bias_posterior: "deterministic" (TFP's default), "normal", their records, or None.
      bias_prior: None (TFP's default) or a prior.
      kernel_divergence, bias_divergence: "closed_form" (TFP's default kl_divergence; Normal
        priors only), "monte_carlo", or a ClosedFormKL / MonteCarloKL record with its weight.
      dtype: "float32" (the default; also for None) or "float64".
    """
    units: int
    activation: object = activation_field()
    _: dataclasses.KW_ONLY
    kernel_posterior: object = "normal"
    kernel_prior: object = "normal"
    bias_posterior: object = "deterministic"
    bias_prior: object = None
    kernel_divergence: object = "closed_form"
    bias_divergence: object = "closed_form"
    dtype: object = "float32"

    def _validate(self):
        posterior = posterior_from_config(self.kernel_posterior)
        if not isinstance(posterior, NormalPosterior):
            raise ValueError(f"{type(self).__name__} needs a Normal kernel posterior, got "
                             f"{self.kernel_posterior!r}")
        self._set("kernel_posterior", posterior)
        self._set("kernel_prior", prior_from_config(self.kernel_prior))
        self._set("bias_posterior", posterior_from_config(self.bias_posterior))
        self._set("bias_prior", prior_from_config(self.bias_prior))
        if self.bias_prior is not None and self.bias_posterior is None:
            raise ValueError("bias_prior was given but bias_posterior is None: there is no bias to "
                             "put a prior on (TFP silently drops this divergence)")
        for name in ("kernel", "bias"):
            divergence = divergence_from_config(getattr(self, f"{name}_divergence"))
            self._set(f"{name}_divergence", divergence)
            prior = getattr(self, f"{name}_prior")
            posterior = getattr(self, f"{name}_posterior")
            if (prior is not None and isinstance(divergence, ClosedFormKL) and not prior.closed_form
                    and posterior is not None and posterior.is_normal):
                raise ValueError(f"{name}_prior {prior!r} has no closed-form KL from a Normal "
                                 f"posterior: pass {name}_divergence='monte_carlo'")

    kernel_mean = ("kernel_posterior_loc", None)

    # --------------------------------------------------------------------------- parameters
    def weight_names(self):
        """Param names in TFP's ``layer.weights`` order: kernel posterior, kernel prior (if
        trainable), bias posterior, bias prior (if trainable)."""
        return list(self.param_shapes(1))

    def _weight_settings(self):
        kind = None if self.bias_posterior is None else self.bias_posterior.to_config()["type"]
        return f"bias_posterior={kind}"

    def param_shapes(self, input_dim):
        kernel, bias = (int(input_dim), self.units), (self.units,)
        shapes = {"kernel_posterior_loc": kernel, "kernel_posterior_untransformed_scale": kernel}
        if self.kernel_prior is not None:
            shapes.update(self.kernel_prior.param_shapes("kernel", kernel))
        if self.bias_posterior is not None:
            shapes["bias_posterior_loc"] = bias
            if self.bias_posterior.is_normal:
                shapes["bias_posterior_untransformed_scale"] = bias
            if self.bias_prior is not None:
                shapes.update(self.bias_prior.param_shapes("bias", bias))
        return shapes

    def initializers(self):
        inits = {"kernel_posterior_loc": self.kernel_posterior.loc_initializer,
                 "kernel_posterior_untransformed_scale":
                     self.kernel_posterior.untransformed_scale_initializer}
        if self.kernel_prior is not None:
            inits.update(self.kernel_prior.initializers("kernel"))
        if self.bias_posterior is not None:
            inits["bias_posterior_loc"] = self.bias_posterior.loc_initializer
            if self.bias_posterior.is_normal:
                inits["bias_posterior_untransformed_scale"] = (
                    self.bias_posterior.untransformed_scale_initializer)
            if self.bias_prior is not None:
                inits.update(self.bias_prior.initializers("bias"))
        return inits

    # -------------------------------------------------------------------------------- noise
    def noise_shapes(self, input_shape):
        input_shape = tuple(input_shape)
        self.compute_output_shape(input_shape)
        shapes = self.estimator.noise_shapes(input_shape, self.units)
        if self._normal_bias():
            shapes["bias"] = (self.units,)
        if self._extra_draw("kernel"):
            shapes["kernel_divergence"] = (input_shape[-1], self.units)
        if self._extra_draw("bias"):
            shapes["bias_divergence"] = (self.units,)
        return shapes

    def noise_kinds(self):
        return dict.fromkeys(self.estimator.signs, "sign")

    def _normal_bias(self):
        return self.bias_posterior is not None and self.bias_posterior.is_normal

    @property
    def random_bias(self):
        return self._normal_bias()

    def _monte_carlo(self, name):
        return (getattr(self, f"{name}_prior") is not None
                and isinstance(getattr(self, f"{name}_divergence"), MonteCarloKL)
                and (name == "kernel" or self._normal_bias()))

    def _extra_draw(self, name):
        """Whether the Monte Carlo divergence of "kernel" / "bias" needs a draw of its own."""
        if not self._monte_carlo(name):
            return False
        forward = self.estimator.draws_kernel if name == "kernel" else True
        return getattr(self, f"{name}_divergence").sample == "extra" or not forward

    # ------------------------------------------------------------------------------ compute
    def weight_moments(self, params, workspace=None):
        """(loc, scale) of the kernel's posterior, both (in, units)."""
        return (params["kernel_posterior_loc"],
                kernels.posterior_scale(params["kernel_posterior_untransformed_scale"],
                                        workspace=workspace))

    def posterior_moments(self, params, input_dim=None, workspace=None):
        loc, scale = self.weight_moments(params, workspace)
        if self.bias_posterior is None:
            return Moments(loc, scale)
        bias_scale = None
        if self.bias_posterior.is_normal:
            bias_scale = kernels.posterior_scale(params["bias_posterior_untransformed_scale"])
        return Moments(loc, scale, params["bias_posterior_loc"], bias_scale)

    def _forward(self, params, x, noise, mode, workspace):
        moments = self.posterior_moments(params, x.shape[-1], workspace)
        loc, scale = moments.kernel_loc, moments.kernel_scale
        kernel_sample = None
        if mode == "mean":
            outputs, bias_sample = self._pre_activations(moments, x, estimators.NONE, None,
                                                         workspace)
        elif self.estimator.draws_kernel and self._monte_carlo("kernel") and \
                not self._extra_draw("kernel"):
            # the divergence needs the forward's own kernel W: the same kernel term, unfused
            kernel_sample = kernels.normal_sample(loc, scale, noise["kernel"], workspace=workspace)
            outputs, bias_sample = self._add_bias(kernels.dense(x, kernel_sample,
                                                                workspace=workspace),
                                                  moments, noise, workspace)
        else:
            outputs, bias_sample = self._pre_activations(moments, x, self.estimator, noise,
                                                         workspace)
        samples = {"kernel": (kernel_sample, None if noise is None else noise.get("kernel")),
                   "bias": (bias_sample, None if noise is None else noise.get("bias"))}
        terms = self._divergence_terms(params, scale, moments.bias_scale, noise, samples,
                                       workspace)
        return outputs, sum_terms(terms, self.dtype)

    def divergences(self, params, noise=None):
        """dict "kernel" / "bias" -> the weighted divergence of each term with a prior (TFP's
        ``layer.losses``). Monte Carlo terms use ``noise`` (the layer's noise dict, as
        ``sample_noise`` draws it for some input shape), or the posterior mean without it."""
        self.check_params(params)
        if noise is not None and not isinstance(noise, dict):
            raise TypeError(f"noise must be a dict of arrays, got {type(noise).__name__}")
        return self._divergences(params, None, noise)

    def _divergences(self, params, workspace, noise=None):
        loc, scale = self.weight_moments(params, workspace)
        bias_scale = bias_sample = kernel_sample = None
        if self._normal_bias():
            bias_scale = kernels.posterior_scale(params["bias_posterior_untransformed_scale"])
            if noise is not None:
                bias_sample = kernels.normal_sample(params["bias_posterior_loc"], bias_scale,
                                                    noise["bias"])
        if noise is not None and self.estimator.draws_kernel and self._monte_carlo("kernel"):
            kernel_sample = kernels.normal_sample(loc, scale, noise["kernel"])
        samples = {"kernel": (kernel_sample, None if noise is None else noise.get("kernel")),
                   "bias": (bias_sample, None if noise is None else noise.get("bias"))}
        return self._divergence_terms(params, scale, bias_scale, noise, samples, workspace)

    @property
    def random_divergence(self):
        """Whether a sample-mode call's divergence is random (a Monte Carlo term)."""
        return self._monte_carlo("kernel") or self._monte_carlo("bias")

    def shares_draw(self, name):
        """Whether the Monte Carlo term of "kernel" / "bias" is evaluated at the forward's own
        weight draw (so it covaries with the outputs), not at an extra one."""
        return self._monte_carlo(name) and not self._extra_draw(name)

    def expected_divergences(self, params):
        """dict "kernel" / "bias" -> the expectation over the noise of the sample-mode term.

        A Monte Carlo term's is `weight * (E[log q(w)] - E[log p(w)])` for
        `w ~ q = N(loc, scale**2)`, with `E[log q(w)] = sum(-0.5 - log scale - 0.5 log 2 pi)`
        (as `E eps**2 = 1`) and the prior's ``expected_log_prob``; the other terms are not
        random (``divergences``). Differentiable in params (autograd)."""
        out = self.divergences(params)
        moments = self.posterior_moments(params)
        for name, loc, scale in (("kernel", moments.kernel_loc, moments.kernel_scale),
                                 ("bias", moments.bias_loc, moments.bias_scale)):
            if not self._monte_carlo(name):
                continue
            log_q = (kernels.normal_log_prob_of_sample(scale, np.zeros(np.shape(scale), self.dtype))
                     - 0.5 * np.size(scale))
            value = log_q - getattr(self, f"{name}_prior").expected_log_prob(loc, scale, params,
                                                                             name)
            weight = getattr(self, f"{name}_divergence").weight
            out[name] = value if weight == 1 else weight * value
        return out

    def _divergence_terms(self, params, scale, bias_scale, noise, samples, workspace):
        """dict "kernel" / "bias" -> weight * divergence, for the terms with a prior."""
        out = {}
        for name, posterior_scale in (("kernel", scale), ("bias", bias_scale)):
            prior = getattr(self, f"{name}_prior")
            if prior is None:
                continue
            loc = params[f"{name}_posterior_loc"]
            divergence = getattr(self, f"{name}_divergence")
            if posterior_scale is None:             # a point mass: KL = -log p(loc)
                value = -prior.log_prob(loc, params, name, workspace)
            elif isinstance(divergence, ClosedFormKL):
                value = kernels.kl_normal_normal(loc, posterior_scale,
                                                 *prior.loc_scale(params, name),
                                                 workspace=workspace)
            else:
                w, eps = samples[name]
                if noise is None:                   # mean mode: at the posterior mean
                    w, eps = loc, np.zeros(np.shape(loc), self.dtype)
                elif self._extra_draw(name):
                    eps = noise[f"{name}_divergence"]
                    w = kernels.normal_sample(loc, posterior_scale, eps, workspace=workspace)
                value = (kernels.normal_log_prob_of_sample(posterior_scale, eps,
                                                           workspace=workspace)
                         - prior.log_prob(w, params, name, workspace))
            out[name] = value if divergence.weight == 1 else divergence.weight * value
        return out


class DenseLocalReparameterization(MeanFieldDense):
    """Dense layer with the local reparameterization estimator (TFP's
    ``tfp.layers.DenseLocalReparameterization``; Kingma et al. 2015, arXiv 1506.02557).

    Samples the pre-activations instead of the weights: with m = x @ loc and
    ``s = sqrt((x**2) @ (scale**2))``, the kernel term is ``m + s * eps``, eps ~ N(0, 1) of shape
    (..., units).

    Params: kernel_posterior_loc, kernel_posterior_untransformed_scale (in, units);
    bias_posterior_loc (units,); bias_posterior_untransformed_scale (units,) if the bias is Normal.
    Noise keys: "kernel" (..., units); "bias" (units,) when the bias posterior is Normal.
    """

    estimator = estimators.LRT


class DenseReparameterization(MeanFieldDense):
    """Dense layer with one kernel sample per call (TFP's ``tfp.layers.DenseReparameterization``).

    W = eps * scale + loc with eps ~ N(0, 1) of shape (in, units), shared by the whole batch.

    Params as DenseLocalReparameterization. Noise keys: "kernel" (in, units); "bias" (units,) when
    the bias posterior is Normal.
    """

    estimator = estimators.SINGLE


class DenseFlipout(MeanFieldDense):
    """Dense layer with the Flipout estimator (TFP's ``tfp.layers.DenseFlipout``; Wen et al. 2018,
    arXiv 1803.04386).

    One perturbation dW = eps * scale per call, decorrelated across examples by random signs:
    x @ loc + ((x * sign_input) @ dW) * sign_output.

    Params as DenseLocalReparameterization. Noise keys, in draw order: "kernel" (in, units),
    "sign_input" (x's shape), "sign_output" (..., units), then "bias" (units,) when the bias
    posterior is Normal.
    """

    estimator = estimators.FLIPOUT


def forward(params, x, rng=None, *, noise=None, mode="sample"):
    """Pure forward of the default DenseLocalReparameterization implied by ``params``.

    Units and dtype are read from ``kernel_posterior_loc``; the bias posterior is Normal when
    ``bias_posterior_untransformed_scale`` is present, Deterministic when only
    ``bias_posterior_loc`` is, and None otherwise. Prior: N(0, 1) on the kernel, none on the bias.
    Returns (outputs, kl).
    """
    if not isinstance(getval(params), dict) or "kernel_posterior_loc" not in params:
        raise ValueError("params must be a dict with at least 'kernel_posterior_loc'")
    loc = params["kernel_posterior_loc"]
    if len(loc.shape) != 2:
        raise ValueError(f"expected kernel_posterior_loc of shape (in, units), got {loc.shape}")
    if "bias_posterior_untransformed_scale" in params:
        bias = NormalPosterior()
    elif "bias_posterior_loc" in params:
        bias = DeterministicPosterior()
    else:
        bias = None
    layer = DenseLocalReparameterization(loc.shape[1], bias_posterior=bias,
                                         dtype=getval(loc).dtype)
    return layer.forward(params, x, rng, noise=noise, mode=mode)
