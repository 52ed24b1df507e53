"""tf-keras's Adam as a ``torch.optim.Optimizer`` (SPEC section 3, "Adam cases": the keras form).

torch.optim.Adam is Kingma & Ba's form (arXiv 1412.6980): eps added to sqrt(v_hat). tf-keras 2
adds eps to sqrt(v) and folds both bias corrections into the step size, computed from the float32
roundings of lr, b1, b2 (tf-keras keeps them in float32 variables), in float64:

    alpha = lr32 * sqrt(1 - b2_32**t) / (1 - b1_32**t)
    m = m + (g - m) (1 - b1);  v = v + (g**2 - v) (1 - b2);  p = p - m alpha / (sqrt(v) + eps)

The two forms differ most in the first steps and where v is small; a model trained in tf-keras
follows this one. The moments keep each parameter's dtype.
"""
import math

import numpy as np
import torch

__all__ = ["KerasAdam"]


class KerasAdam(torch.optim.Optimizer):
    """Adam as tf-keras computes it (eps 1e-7, its default)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7):
        if not lr > 0 or not eps >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"KerasAdam: expected lr > 0, 0 <= betas < 1, eps >= 0, got lr={lr}, "
                             f"betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr32, b1_32, b2_32 = (float(np.float32(c)) for c in (group["lr"], b1, b2))
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v, g = state["step"], state["m"], state["v"], p.grad
                alpha = lr32 * math.sqrt(1 - b2_32 ** t) / (1 - b1_32 ** t)   # float64
                m.add_((g - m) * (1 - b1))                                    # first moment
                v.add_((g * g - v) * (1 - b2))                                # second moment
                p.sub_(m * alpha / (torch.sqrt(v) + group["eps"]))            # the step
        return loss
