"""The recipe of ``lrtdense bench uci``: one split trained and scored, and hyper-parameters chosen
per split on a validation split carved from its training split (never from its test split).

A recipe is a dict of plain values (it goes into the results JSON as it is):

  ==================  ===========================================================================
  hidden              hidden units (the protocol: 50), one relu layer, DenseLocalReparameterization
  epochs              at most this many passes over the training data
  max_steps           and at most this many minibatch steps in all (None: no cap), so that the
                      large sets (8,000-12,000 rows) do not take 300 epochs of 300 steps
  batch_size          minibatch size; learning_rate: Adam's
  num_samples         Monte Carlo forward passes at test time
  prior_scale         the kernels' prior N(0, prior_scale**2) (TFP's default: 1)
  posterior_init      the mean of the kernels' untransformed posterior scale at init (TFP's -3:
                      softplus(-3) = 0.049)
  kl_warmup           the KL weight rises linearly from 1/w to 1 over the first w epochs,
                      w = round(kl_warmup * epochs) (0: the ELBO from the first step)
  kl_scale            the KL weight after warm-up (1: the ELBO; < 1 tempers the posterior)
  learn_noise         the Gaussian noise scale is learned (True) or fixed at initial_noise
  initial_noise       the noise scale (standardised units) at init, or fixed
  average             the params scored are a running average of the params at the ends of the
                      epochs, avg <- average * avg + (1 - average) * params (0: the last params,
                      as trained; Polyak-Ruppert averaging, which takes out the jitter that
                      Adam's constant step leaves in the last iterate)
  ==================  ===========================================================================

Selection (``select``): the training split is shuffled by the split's own generator and its last
``validation_fraction`` held out. Every point of the grid (the product of its lists, each point
overriding the recipe) is trained on the rest, and the validation split's MC-mixture
log-likelihood is measured every ``epochs // 10`` epochs (training stops after three measurements
without a new best); the point and the epoch count with the best value win. The final model is trained afresh on the whole training split with them, as Gal &
Ghahramani's grid search does (``yaringal/DropoutUncertaintyExps``). Inputs and target are
standardised with the statistics of the data each model is trained on.
"""
import itertools
import math
import time

import numpy as np

from lrtdense import tree
from lrtdense.checks import check_bool, check_float, check_int
from lrtdense.distributions import NormalPosterior, NormalPrior, RandomNormal
from lrtdense.layers import DenseLocalReparameterization
from lrtdense.losses import GaussianLikelihood
from lrtdense.metrics import gaussian_nll, mixture_nll, rmse
from lrtdense.model import Model
from lrtdense.network import Sequential
from lrtdense.optimizers import adam, kl_warmup
from lrtdense.predictive import predict
from lrtdense.training import fit

__all__ = ["RECIPE", "GRID", "build_model", "run_split", "select", "run_split_tuned",
           "grid_points", "check_recipe"]

# TFP's defaults but for the KL warm-up, the epochs and the averaging; the recipe study
# (docs/uci_benchmark.md, measured on validation splits only) chose those, the step cap and the
# grid.
RECIPE = dict(hidden=50, epochs=1000, max_steps=80000, batch_size=32, learning_rate=1e-2,
              num_samples=100, prior_scale=1.0, posterior_init=-3.0, kl_warmup=0.2,
              kl_scale=1.0, learn_noise=True, initial_noise=0.5, average=0.9)
GRID = {"kl_scale": [1.0, 0.3]}
VALIDATION_SAMPLES = 20
PATIENCE = 3


def build_model(recipe):
    """The recipe's Model: ``hidden`` relu units, then one linear unit, float64."""
    posterior = NormalPosterior(untransformed_scale_initializer=RandomNormal(
        recipe["posterior_init"], 0.1))
    prior = NormalPrior(0.0, recipe["prior_scale"])
    layers = [DenseLocalReparameterization(units, activation, dtype="float64",
                                           kernel_posterior=posterior, kernel_prior=prior)
              for units, activation in ((recipe["hidden"], "relu"), (1, None))]
    return Model(Sequential(layers), GaussianLikelihood(recipe["initial_noise"],
                                                       learn_scale=recipe["learn_noise"]))


def grid_points(grid):
    """The grid's points, as dicts, in a fixed order (keys sorted, values as listed)."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _epochs(recipe, n):
    steps_per_epoch = math.ceil(n / recipe["batch_size"])
    if recipe["max_steps"] is None:
        return recipe["epochs"]
    return max(1, min(recipe["epochs"], recipe["max_steps"] // steps_per_epoch))


def _kl_weight(recipe, epochs):
    return kl_warmup(recipe["kl_warmup"], epochs, recipe["kl_scale"])


class _Standardised:
    """Inputs and target standardised with one training set's statistics."""

    def __init__(self, x, y):
        self.x_mean, self.x_std = x.mean(0), _nonzero(x.std(0))
        self.y_mean, self.y_std = float(y.mean()), float(_nonzero(y.std()))

    def x(self, x):
        return (x - self.x_mean) / self.x_std

    def y(self, y):
        return (y - self.y_mean) / self.y_std


def _train(recipe, x, y, rng, epochs, make_callback=None):
    """(model, params, standardisation) of a model trained on (x, y) in original units, the
    params averaged as ``recipe["average"]`` says; ``make_callback(model, standardisation)``
    gives ``callback(epoch, averaged params)``, called after each epoch (True stops)."""
    data = _Standardised(x, y)
    model = build_model(recipe)
    average = _Average(recipe["average"])
    read = make_callback and make_callback(model, data)

    def callback(epoch, params, history):
        average.update(params)
        return bool(read and read(epoch, average.params))

    fit(model, model.init(rng, x.shape[1]), data.x(x), data.y(y), rng=rng, epochs=epochs,
        batch_size=recipe["batch_size"], optimizer=adam(recipe["learning_rate"]),
        kl_weight=_kl_weight(recipe, epochs), verbose=False, callback=callback)
    return model, average.params, data


class _Average:
    """The running average of the params at the ends of the epochs:
    avg <- decay * avg + (1 - decay) * params, from the first epoch's params on (decay 0: the
    last params)."""

    def __init__(self, decay):
        self.decay, self.params = decay, None

    def update(self, params):
        if self.params is None or self.decay == 0:
            self.params = params
        else:
            self.params = tree.map(         # arrays stay arrays (0-d ones included)
                lambda avg, p: np.asarray(self.decay * avg + (1 - self.decay) * p),
                self.params, params)


def _score(model, params, data, x, y, rng, num_samples):
    """RMSE, the MC mixture's and the moment-matched Gaussian's log-likelihood, original units."""
    pred = predict(model, params, data.x(x), rng=rng, num_samples=num_samples)
    samples = pred["samples"] * data.y_std + data.y_mean
    noise = pred["noise_scale"] * data.y_std
    mean, std = pred["mean"] * data.y_std + data.y_mean, pred["std"] * data.y_std
    return {"rmse": rmse(y, mean), "test_ll": -mixture_nll(y, samples, noise),
            "test_ll_gaussian": -gaussian_nll(y, mean, std), "noise_scale": noise}


def run_split(x_train, y_train, x_test, y_test, *, rng, **recipe):
    """Trains the recipe (``RECIPE`` updated by the keywords) on the training split and scores
    the test split in original units.

    Returns:
      A dict of floats: "rmse", "test_ll" (the MC mixture's), "test_ll_gaussian" (the
      moment-matched Gaussian's), "noise_scale" (original units), "train_seconds", and "epochs"
      (an int: the epochs trained).
    """
    recipe = _complete(recipe)
    epochs = _epochs(recipe, len(x_train))
    start = time.perf_counter()
    model, params, data = _train(recipe, x_train, y_train, rng, epochs)
    seconds = time.perf_counter() - start
    row = _score(model, params, data, x_test, y_test, rng, recipe["num_samples"])
    return dict(row, train_seconds=seconds, epochs=epochs)


def select(x_train, y_train, *, rng, grid, validation_fraction=0.2, **recipe):
    """The grid point and epoch count with the best validation log-likelihood.

    Args:
      x_train (n, p), y_train (n, 1): the training split only.
      rng: the split's generator (it shuffles the training split, then trains every point).
      grid: {setting: [values]} (``grid_points``); recipe: ``RECIPE``'s keys to override.
    Returns:
      (chosen: {setting: value, ..., "epochs": int}, table: one dict per grid point with its
      settings, "epochs" (the best count), "validation_ll" (the best value) and "validation_rmse"
      (at that count)).
    """
    recipe = _complete(recipe)
    order = rng.permutation(len(x_train))
    n_val = max(1, round(validation_fraction * len(x_train)))
    fit_rows, val_rows = order[:-n_val], order[-n_val:]
    x_fit, y_fit, x_val, y_val = (x_train[fit_rows], y_train[fit_rows], x_train[val_rows],
                                  y_train[val_rows])
    table = []
    for point in grid_points(grid):
        trial = dict(recipe, **point)
        epochs = _epochs(trial, len(x_fit))
        stopping = _EarlyStopping(x_val, y_val, rng, epochs)
        _train(trial, x_fit, y_fit, rng, epochs, stopping.callback)
        table.append(dict(point, **stopping.best()))
    best = max(table, key=lambda row: row["validation_ll"])
    chosen = {k: v for k, v in best.items() if not k.startswith("validation_")}
    return chosen, table


class _EarlyStopping:
    """Reads the validation log-likelihood every tenth of the epochs (and at the last); stops
    the fit once ``PATIENCE`` readings in a row have not beaten the best."""

    def __init__(self, x_val, y_val, rng, epochs):
        self.x_val, self.y_val, self.rng, self.epochs = x_val, y_val, rng, epochs
        self.every = max(1, epochs // 10)
        self.readings = []          # (ll, -epochs, rmse): max() prefers the earlier of ties

    def callback(self, model, data):
        """fit's callback for ``model`` trained on data standardised by ``data``."""
        def read(epoch, params):
            if (epoch + 1) % self.every and epoch + 1 != self.epochs:
                return False
            score = _score(model, params, data, self.x_val, self.y_val, self.rng,
                           VALIDATION_SAMPLES)
            self.readings.append((score["test_ll"], -(epoch + 1), score["rmse"]))
            return len(self.readings) - 1 - self.readings.index(max(self.readings)) >= PATIENCE
        return read

    def best(self):
        """{"epochs", "validation_ll", "validation_rmse"} of the best reading."""
        ll, minus_epochs, rmse = max(self.readings)
        return {"epochs": -minus_epochs, "validation_ll": ll, "validation_rmse": rmse}


def run_split_tuned(x_train, y_train, x_test, y_test, *, rng, grid, **recipe):
    """``select`` on the training split, then ``run_split`` with the chosen settings and epochs.

    Returns:
      ``run_split``'s dict plus "chosen" (the chosen settings and epochs) and "validation" (the
      table of every grid point), or ``run_split``'s alone when the grid is empty.
    """
    if not grid:
        return run_split(x_train, y_train, x_test, y_test, rng=rng, **recipe)
    start = time.perf_counter()
    chosen, table = select(x_train, y_train, rng=rng, grid=grid, **recipe)
    seconds = time.perf_counter() - start
    final = dict(_complete(recipe), **chosen, max_steps=None)
    row = run_split(x_train, y_train, x_test, y_test, rng=rng, **final)
    return dict(row, chosen=chosen, validation=table, select_seconds=seconds)


def _complete(recipe):
    unknown = sorted(set(recipe) - set(RECIPE))
    if unknown:
        raise ValueError(f"unknown recipe settings {unknown}; expected some of {sorted(RECIPE)}")
    return dict(RECIPE, **recipe)


def check_recipe(recipe):
    """``RECIPE`` updated by ``recipe``, each value checked (so that a bad one fails before any
    training). Raises ValueError / TypeError naming the setting."""
    r = _complete(recipe)
    for name in ("hidden", "epochs", "batch_size", "num_samples"):
        r[name] = check_int(r[name], name, 1)
    if r["max_steps"] is not None:
        r["max_steps"] = check_int(r["max_steps"], "max_steps", 1)
    for name in ("learning_rate", "prior_scale", "initial_noise"):
        r[name] = check_float(r[name], name, 0, open_low=True)
    r["posterior_init"] = check_float(r["posterior_init"], "posterior_init")
    r["kl_warmup"] = check_float(r["kl_warmup"], "kl_warmup", 0, 1)
    r["kl_scale"] = check_float(r["kl_scale"], "kl_scale", 0)
    r["average"] = check_float(r["average"], "average", 0, 1, open_high=True)
    r["learn_noise"] = bool(check_bool(r["learn_noise"], "learn_noise"))
    return r


def _nonzero(std):
    """A standard deviation to divide by: 1 where a column is constant."""
    return np.where(std > 0, std, 1.0)
