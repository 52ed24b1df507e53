"""lrtdense: a NumPy + autograd numerical reference for Bayesian dense layers.

Where to start: to learn the trick, the tutorial (``docs/tutorial.md``) and the notebooks
(``notebooks/``); to train on a CPU, ``fit`` and ``predict`` below, then ``lrtdense bench uci``
(``lrtdense.bench``); to port the layers, the reference set's ``SPEC.md``
(``lrtdense reference spec``) and ``lrtdense reference verify RESULTS_DIR``, or
``lrtdense.testing`` from your own pytest suite.

Layers (TFP-faithful, pure functions of a flat params dict with TFP's variable names):
``DenseLocalReparameterization``, ``DenseReparameterization``, ``DenseFlipout``; variational
dropout: ``DenseVariationalDropout``, ``DenseSparseVariationalDropout``. ``lrtdense.base`` states
the contract every layer follows; ``lrtdense.kernels`` holds the math, each formula once.

Training and prediction, all importable from ``lrtdense``::

    import lrtdense as L
    model = L.Model(L.Sequential([L.DenseLocalReparameterization(50, "relu"),
                                  L.DenseLocalReparameterization(1)]), L.GaussianLikelihood(0.1))
    params = model.init(rng, x.shape[1])
    params, history = L.fit(model, params, x, y, rng=rng, epochs=100, batch_size=32,
                            optimizer=L.adam(1e-2))
    out = L.predict(model, params, x_new, rng=rng)        # {"mean", "std", ...}

``lrtdense.predict`` and ``predict_mean`` are functions (module ``lrtdense.predictive``); the
metrics ``rmse``, ``gaussian_nll``, ``interval_coverage``, ``accuracy`` and
``expected_calibration_error`` are in ``lrtdense.metrics`` (``L.metrics.rmse``).
"""

from lrtdense.layers import (DenseLocalReparameterization, DenseReparameterization, DenseFlipout,
                             forward)
from lrtdense.dropout import DenseVariationalDropout, DenseSparseVariationalDropout
from lrtdense.dense_variational import DenseVariational
from lrtdense.registry import serialize, deserialize
from lrtdense.distributions import (RandomNormal, Constant, NormalPosterior,
                                    DeterministicPosterior, NormalPrior, TrainableNormalPrior,
                                    ScaleMixturePrior, LaplacePrior, StudentTPrior, ClosedFormKL,
                                    MonteCarloKL)
from lrtdense.losses import CategoricalLikelihood, GaussianLikelihood
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam, kl_warmup, polynomial_decay
from lrtdense.training import fit
from lrtdense.predictive import predict, predict_mean
from lrtdense import estimators, io, metrics, studies

__version__ = "0.1.0"

__all__ = ["DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout", "forward",
           "serialize", "deserialize", "RandomNormal", "Constant", "NormalPosterior",
           "DeterministicPosterior", "NormalPrior", "DenseVariationalDropout",
           "DenseSparseVariationalDropout", "DenseVariational", "TrainableNormalPrior",
           "ScaleMixturePrior", "LaplacePrior", "StudentTPrior", "ClosedFormKL", "MonteCarloKL",
           "CategoricalLikelihood", "GaussianLikelihood",
           "Model", "Sequential", "adam", "polynomial_decay", "kl_warmup", "fit", "predict", "predict_mean",
           "estimators", "io", "metrics", "studies", "__version__"]
