"""Reproducible studies, and the measurement behind them as an API.

* ``gradient_variance(model, params, x, y, estimators=ESTIMATORS, *, rng, batch_size=100,
  num_draws=100)``: the variance of the minibatch gradient of any network of lrtdense layers
  under five estimators of its weight noise (local reparameterization, separate weight samples,
  a single weight sample shared by the minibatch, Flipout, no noise), as a
  ``GradientVarianceTable`` (``lrtdense.studies.estimators``).
* ``lrtdense study variance``: the gradient-variance study of Kingma et al. 2015 (arXiv
  1506.02557, Table 1) on scikit-learn's bundled digits, which calls it
  (``lrtdense.studies.variance``).
"""
from lrtdense.studies.estimators import (ESTIMATORS, LABELS, GradientVarianceTable,
                                         gradient_variance)

__all__ = ["ESTIMATORS", "LABELS", "GradientVarianceTable", "gradient_variance"]
