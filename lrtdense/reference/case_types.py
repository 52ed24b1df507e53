"""What a reference case is (``Case``) and the layer-maker the case tables share; the tables are
``lrtdense.reference.cases`` (layers, networks, edges, dropout, training, Adam) and
``lrtdense.reference.prior_cases`` (priors, divergences, DenseVariational)."""
import dataclasses

from lrtdense import layers as _layers

__all__ = ["Case", "ESTIMATORS", "tfp_layer"]

ESTIMATORS = {"lrt": _layers.DenseLocalReparameterization,
              "reparam": _layers.DenseReparameterization,
              "flipout": _layers.DenseFlipout}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    kind: str            # "layer", "network", "edge", "dropout", "training", "adam",
    #                      "priors" or "dense_variational"
    dtype: str = "float64"
    make: object = None  # () -> layer / network / Model
    input_shape: tuple = (5, 4)
    zero_rows: tuple = ()
    untransformed_scale: tuple = ()  # values cycled into every untransformed scale
    log_alpha: tuple = ()            # values cycled into kernel_log_alpha (DenseVariationalDropout)
    training: dict = None            # training cases: form, batch_size, kl_weights, step_size
    # (input key, flat indices, value): set after every draw, before the expected values are
    # computed (exact ties such as w == a Laplace prior's loc)
    pinned: tuple = ()


def tfp_layer(est, units=3, activation="relu", dtype="float64", **kwargs):
    """() -> one TFP estimator layer (``ESTIMATORS[est]``) with these settings."""
    return lambda: ESTIMATORS[est](units, activation, dtype=dtype, **kwargs)
