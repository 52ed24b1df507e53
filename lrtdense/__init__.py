"""lrtdense: a NumPy + autograd numerical reference for Bayesian dense layers.

Layers (TFP-faithful, pure functions of a flat params dict with TFP's variable names):
``DenseLocalReparameterization``, ``DenseReparameterization``, ``DenseFlipout``; variational
dropout: ``DenseVariationalDropout``, ``DenseSparseVariationalDropout``. ``lrtdense.base`` states
the contract every layer follows; ``lrtdense.kernels`` holds the math, each formula once.

Training: ``Model(Sequential([...]), CategoricalLikelihood())``, ``fit``, ``adam``.
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
from lrtdense.optimizers import adam, polynomial_decay
from lrtdense.training import fit

__version__ = "0.1.0"

__all__ = ["DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout", "forward",
           "serialize", "deserialize", "RandomNormal", "Constant", "NormalPosterior",
           "DeterministicPosterior", "NormalPrior", "DenseVariationalDropout",
           "DenseSparseVariationalDropout", "DenseVariational", "TrainableNormalPrior",
           "ScaleMixturePrior", "LaplacePrior", "StudentTPrior", "ClosedFormKL", "MonteCarloKL",
           "CategoricalLikelihood", "GaussianLikelihood",
           "Model", "Sequential", "adam", "polynomial_decay", "fit", "__version__"]
