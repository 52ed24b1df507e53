"""Bayesian regression on the toy cubic (Hernandez-Lobato & Adams 2015) with an LRT network.

Run: python examples/toy_regression.py      (writes toy_regression.png with matplotlib)
The same as `lrtdense demo`, with its settings here to play with.
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    epochs=8000,          # full-batch Adam steps
    hidden=50,            # units of the hidden DenseLocalReparameterization layer
    learning_rate=0.003,
    num_samples=500,      # Monte Carlo samples of the predictive
    output="toy_regression.png",
)
# -------------------------------------------------------------------------------------------

from lrtdense import demo


def main(**overrides):
    return demo.run(**{**SETTINGS, **overrides})


if __name__ == "__main__":
    main()
