"""lrtdense: a NumPy + autograd numerical reference for Bayesian dense layers.

Layers (TFP-faithful, pure functions of a flat params dict with TFP's variable names):
``DenseLocalReparameterization``, ``DenseReparameterization``, ``DenseFlipout``.
See ``lrtdense.layers`` for the contract every layer follows.
"""
from lrtdense.layers import (DenseLocalReparameterization, DenseReparameterization, DenseFlipout,
                             forward, serialize, deserialize)
from lrtdense.dropout import DenseVariationalDropout, DenseSparseVariationalDropout
from lrtdense.distributions import (RandomNormal, Constant, NormalPosterior,
                                    DeterministicPosterior, NormalPrior)

__version__ = "0.1.0"

__all__ = ["DenseLocalReparameterization", "DenseReparameterization", "DenseFlipout", "forward",
           "serialize", "deserialize", "RandomNormal", "Constant", "NormalPosterior",
           "DeterministicPosterior", "NormalPrior", "DenseVariationalDropout",
           "DenseSparseVariationalDropout", "__version__"]
