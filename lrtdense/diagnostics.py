"""Warnings for the three ways a variational fit goes wrong without an error (issue trackers of
every peer: "it trains but the uncertainty is wrong"), each one line, category ``FitWarning``:

* **the posterior scales have not moved**: after training, every layer's posterior standard
  deviations are on average within 1 % of their initial values (checked after 100 steps or
  more): the posterior is still its initialisation (too few steps, a learning rate too low, a KL
  weight near 0 with an NLL that does not care);
* **the KL term dominates the loss**: in the last epoch ``kl_weight * KL / num_examples`` is more
  than ten times ``|mean NLL|`` (at least 0.1): the prior wins and the fit underfits;
* **the KL weight looks accidental**: the KL per example is weighted by
  ``kl_weight / num_examples``, and the ELBO wants ``1 / N`` (N = len(x)). Four ways of getting it
  wrong by convention are recognised (``docs/kl_weight.md`` maps the peers' conventions):
  ``num_examples == batch_size`` (bayesian-torch's examples divide by the batch size),
  ``num_examples`` equal to the number of minibatches (Blundell et al.'s per-minibatch 1/M with a
  summed NLL, here with a mean NLL), ``kl_weight == 1/N`` on top of the 1/N that ``fit`` already
  applies (TFP's ``kl_weight=1/N`` carried over), and ``num_examples == 1`` with ``kl_weight ==
  1`` (Blitz's default ``complexity_cost_weight=1``). Any other weight (tempering, warm-up) is
  taken as meant.
"""
import math
import warnings

import numpy as np

from lrtdense import tree

__all__ = ["FitWarning", "check_kl_weight", "check_fit"]

SCALE_KEY = "posterior_untransformed_scale"


class FitWarning(UserWarning):
    """A fit that ran but probably did not do what was meant (see ``lrtdense.diagnostics``)."""


def _warn(message):
    warnings.warn(message, FitWarning, stacklevel=4)     # the caller of fit


def check_kl_weight(kl_weight, num_examples, n, batch_size):
    """Warns when ``kl_weight / num_examples`` matches a known slip instead of ``1 / n``.

    Args:
      kl_weight: fit's kl_weight (a function, a warm-up, is not checked); num_examples: its
        num_examples; n: len(x); batch_size: fit's batch size.
    """
    if callable(kl_weight):
        return
    steps = math.ceil(n / batch_size)
    slips = [(num_examples == batch_size != n,
              f"the KL is divided by the batch size ({batch_size}), not by N = {n}"),
             (num_examples == steps != n and steps != batch_size,
              f"the KL is divided by the number of minibatches ({steps}), not by N = {n}"),
             (num_examples == n > 1 and math.isclose(kl_weight, 1 / n, rel_tol=1e-6),
              f"kl_weight = 1/N on top of fit's own division by num_examples = N = {n}: the KL "
              f"is divided by N twice"),
             (num_examples == 1 < n and kl_weight == 1,
              f"the KL is not divided at all (num_examples=1, kl_weight=1), not by N = {n}")]
    for slip, what in slips:
        if slip:
            _warn(f"{what}; the ELBO weighs the KL by 1/N per example "
                  f"(kl_weight * KL / num_examples with kl_weight=1, num_examples=len(x)), "
                  f"this is {n * kl_weight / num_examples:.3g} times that")
            return


def check_fit(params_before, params_after, history, num_examples, steps):
    """Warns when no posterior scale has moved, or when the KL term dominates the last epoch.

    Args:
      params_before, params_after: the model's params at the start and end of the fit.
      history: fit's history (its "nll", "kl", "kl_weight" per epoch); steps: steps trained.
    """
    if not history["kl"]:
        return
    moved = _relative_scale_change(params_before, params_after)
    if steps >= 100 and moved and max(moved.values()) < 0.01:
        _warn(f"the posterior scales moved by {max(moved.values()):.2%} at most (the mean "
              f"relative change of each scale array) in {steps} steps: the posterior is still its initialisation; "
              f"train longer or with a larger learning rate")
    term = history["kl_weight"][-1] * history["kl"][-1] / num_examples
    nll = history["nll"][-1]
    if term > 10 * max(abs(nll), 0.1):
        _warn(f"the KL term ({term:.3g} per example) is more than ten times the NLL "
              f"({nll:.3g}) in the last epoch: the prior dominates the fit; check the KL weight "
              f"(1/N per example is the ELBO) and the prior scale")


def _relative_scale_change(before, after):
    """{posterior scale path: mean |s_after - s_before| / s_before}, s = softplus(u)."""
    flat_before, flat_after = tree.flatten(before), tree.flatten(after)
    out = {}
    for path, u in flat_before.items():
        if path.endswith(SCALE_KEY):
            s0 = np.logaddexp(0.0, np.asarray(u, dtype=float))     # softplus
            s1 = np.logaddexp(0.0, np.asarray(flat_after[path], dtype=float))
            out[path] = float(np.mean(np.abs(s1 - s0) / s0))
    return out
