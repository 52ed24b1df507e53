"""How noisy is each gradient estimator? Kingma et al. 2015's Table 1, redone on digits.

Run: python examples/gradient_variance.py   (needs scikit-learn: pip install 'lrtdense[examples]')

Trains an MLP with Gaussian multiplicative weight noise (variational dropout) on scikit-learn's
bundled digits with the local reparameterization trick, then measures, after an early and a late
number of epochs, the variance of the minibatch gradient w.r.t. the top- and bottom-layer weights
under five estimators of the same objective: local reparameterization (LRT), a separate weight
sample per example, one weight sample shared by the minibatch, Flipout, and no noise (the floor
set by minibatch sampling alone). The protocol is in ``lrtdense.studies.variance``; this script
is ``lrtdense study variance`` with its settings spelled out, plus a comparison with the paper:
each estimator's variance divided by LRT's, here and in the paper (MNIST, their network).

Takes about two minutes on two cores; writes the Markdown table and a PNG to ``out``
(out/gradient_variance under the current folder, which git ignores).
"""
# ---- settings ---------------------------------------------------------------------------
SETTINGS = dict(
    seed=0,
    hidden=(100, 100),      # hidden layer sizes of the MLP 64 -> ... -> 10
    alpha=0.5,              # fixed variance ratio of the multiplicative noise, every weight
    learning_rate=1e-3,
    train_batch_size=100,
    early_epochs=10,        # the paper's two checkpoints
    late_epochs=100,
    batch_size=100,         # minibatch of each gradient estimate
    num_draws=1000,         # (minibatch, noise) draws per estimator and checkpoint
    test_fraction=0.25,
    out="out/gradient_variance",  # folder for variance_table.md and variance.png ("" for none)
)
# -------------------------------------------------------------------------------------------

import sys

from lrtdense.studies import variance as study


def main(verbose=True, **overrides):
    """Runs the study with SETTINGS updated by ``overrides``; returns ``study.run``'s dict plus
    "ratios_to_lrt" {estimator: {column: (ours, paper or None)}}."""
    s = {**SETTINGS, **overrides}
    out = s.pop("out")
    try:
        result = study.run(out=out or None, verbose=verbose, **s)
    except ImportError as err:
        sys.exit(f"gradient_variance.py: {err}")
    ratios = {}
    for est in study.ESTIMATORS:
        ratios[est] = {}
        for i, col in enumerate(study.COLUMNS):
            ours = result["variance"][est][col] / result["variance"]["lrt"][col]
            paper = (study.PAPER[est][i] / study.PAPER["lrt"][i]) if est in study.PAPER else None
            ratios[est][col] = (ours, paper)
    result["ratios_to_lrt"] = ratios
    if verbose:
        print("\nvariance / LRT's variance, here (digits) and in the paper (MNIST):")
        print(f"{'':>26}" + "".join(f"{layer + ' ' + ckpt:>20}" for layer, ckpt in study.COLUMNS))
        for est in study.ESTIMATORS:
            cells = "".join(f"{ours:>10.2f} / " + (f"{paper:<6.2f}" if paper else f"{'-':<6}")
                            for ours, paper in ratios[est].values())
            print(f"{study.LABELS[est]:>26}" + cells)
    return result


if __name__ == "__main__":
    main()
