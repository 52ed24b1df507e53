"""Bayesian regression on the toy cubic (Hernandez-Lobato & Adams 2015) with an LRT network.

Run: python examples/toy_regression.py      (writes out/toy_regression.png with matplotlib)
The same as `lrtdense demo`, with its settings here to play with.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    epochs=8000,          # full-batch Adam steps
    hidden=50,            # units of the hidden DenseLocalReparameterization layer
    learning_rate=0.003,
    num_samples=500,      # Monte Carlo samples of the predictive
    output="out/toy_regression.png",   # '' for no plot
)
# -------------------------------------------------------------------------------------------

import os

from lrtdense import demo


def main(**overrides):
    """Runs the demo with SETTINGS updated by ``overrides``; returns ``demo.run``'s dict."""
    s = {**SETTINGS, **overrides}
    if s["output"] and os.path.dirname(s["output"]):
        os.makedirs(os.path.dirname(s["output"]), exist_ok=True)
    return demo.run(**s)


if __name__ == "__main__":
    main()
