"""Five estimators of one network's outputs, and the variance of their minibatch gradients.

For a network of lrtdense layers each layer's kernel posterior is a mean-field Normal,
``w ~ N(loc, scale**2)`` (``layer.posterior_moments``). The same objective can be estimated by
sampling that noise in five ways, the records of ``lrtdense.estimators`` (``lrt``, ``separate``,
``single``, ``flipout``, ``none``; their table is there). The outputs here are each layer's own
forward with the estimator asked (``Layer.forward(..., estimator=...)``), so ``lrt`` on
``DenseLocalReparameterization`` layers is exactly the layers' forward, ``single`` on
``DenseReparameterization`` or ``DenseVariational`` theirs, ``flipout`` on ``DenseFlipout``
theirs, and ``lrt`` on the variational dropout layers theirs. A random bias is drawn once per
forward pass under every noisy estimator, as TensorFlow Probability's layers do.

All five have the same expected outputs, and the first four the same distribution of each
example's outputs: they differ in how the noise is shared between the examples of a minibatch,
which is what sets the variance of the minibatch gradient (Kingma, Salimans & Welling 2015,
arXiv 1506.02557, section 2.2: a noise shared by the batch makes the examples' terms covary, and
that covariance does not average out with the batch size).

``gradient_variance(model, params, x, y)`` measures it on any model: the variance over draws of
(minibatch, noise) of the gradient of the data term of the negative ELBO,
-(N / M) sum_{i in minibatch} log p(y_i | x_i, w), w.r.t. chosen parameters (by default each
layer's kernel mean). The KL term is left out, as in Kingma et al.'s Table 1: with a closed-form
KL its gradient is the same for every draw and adds no variance.
"""
import dataclasses
import time

import autograd.numpy as anp
import numpy as onp
from autograd import grad

from lrtdense import estimators as estimator_records
from lrtdense.base import positive_int
from lrtdense.checks import check_rng

__all__ = ["ESTIMATORS", "LABELS", "sample_noise", "outputs", "data_term", "default_wrt",
           "gradient_variance", "GradientVarianceTable"]

ESTIMATORS = tuple(estimator_records.ESTIMATORS)
LABELS = {name: e.label for name, e in estimator_records.ESTIMATORS.items()}


def _layers(network):
    """The network's (name, layer) pairs; a single layer is a network of one "layer_0".

    Raises:
      TypeError: a layer that is not one of lrtdense's (no ``posterior_moments``).
    """
    pairs = list(zip(network.names, network.layers)) if hasattr(network, "layers") else \
        [("layer_0", network)]
    for _, layer in pairs:
        if not hasattr(layer, "posterior_moments"):
            raise TypeError(f"expected a layer of lrtdense (with posterior_moments), got "
                            f"{type(layer).__name__}")
    return pairs


def sample_noise(estimator, network, rng, input_shape):
    """Every random array one forward pass of ``estimator`` uses, layer by layer, from ``rng``
    (each layer's ``sample_estimator_noise``).

    Args:
      estimator: one of ``ESTIMATORS``.
      network: a ``Sequential`` (or a ``Model``'s ``network``) of lrtdense layers.
      rng: numpy.random.Generator.
      input_shape: the input's shape (..., in).
    Returns:
      {layer name: {key: array}}, keys and shapes as in the module's table (plus "bias"
      (units,) for a random bias), in the layers' dtype, drawn in that order.
    Raises:
      ValueError: an unknown estimator.
    """
    estimator = estimator_records.get(estimator)
    check_rng(rng)
    shape, noise = tuple(input_shape), {}
    for name, layer in _layers(network):
        noise[name] = layer.sample_estimator_noise(estimator, rng, shape)
        shape = layer.compute_output_shape(shape)
    return noise


def outputs(estimator, network, net_params, x, noise):
    """The network's outputs (..., units) under ``estimator`` with explicit ``noise``: each
    layer's own forward with that estimator (``Layer.forward(..., estimator=...)``).

    Args:
      estimator: one of ``ESTIMATORS``.
      network: a ``Sequential`` of lrtdense layers (or one layer).
      net_params: the network's params ({layer name: {...}}; for one layer, its flat dict).
      x: inputs (..., in), in the layers' dtype.
      noise: ``sample_noise(estimator, network, rng, x.shape)``.
    Returns:
      the outputs after the last layer's activation.
    """
    estimator = estimator_records.get(estimator)
    layers = _layers(network)
    if not hasattr(network, "layers"):
        net_params = {"layer_0": net_params}
    h = x
    for name, layer in layers:
        h = layer.forward(net_params[name], h, noise=noise[name], estimator=estimator)[0]
    return h


def data_term(params, model, x, y, noise, estimator, num_examples):
    """-(N / M) sum_i log p(y_i | x_i, w): N times the minibatch's mean negative log-likelihood
    (the data term of ``num_examples`` times the negative ELBO) under ``estimator``.

    Args:
      params: the model's params {"network": ..., "likelihood": ...}.
      model: a ``lrtdense.Model``.
      x: a minibatch (M, ..., in); y: its targets.
      noise: ``sample_noise(estimator, model.network, rng, x.shape)``.
      num_examples: N, the size of the training set.
    Returns:
      a scalar.
    """
    out = outputs(estimator, model.network, params["network"], x, noise)
    nll = model.likelihood.nll(params["likelihood"], out, y)
    return num_examples * anp.mean(nll)


def default_wrt(network):
    """{label: (layer name, param name, index)}: each layer's kernel mean, labelled by the layer.

    The param is the layer's ``kernel_mean``: "kernel_posterior_loc" (TFP's layers),
    "kernel_theta" (variational dropout) or the first in * units entries of
    "posterior_constant" (``DenseVariational``: index is then "kernel", otherwise None: the
    whole array).
    """
    return {name: (name,) + layer.kernel_mean for name, layer in _layers(network)}


@dataclasses.dataclass(frozen=True, repr=False)
class GradientVarianceTable:
    """The result of ``gradient_variance``: one row per estimator, one column per parameter.

    Attributes:
      variance: {estimator: {column label: the unbiased variance (ddof=1) of each entry's
        gradient over the draws, averaged over the entries}}.
      mean: {estimator: {column label: the mean gradient over the draws, an array of the
        parameter's shape}} (the estimators are unbiased: these agree within their errors).
      entry_variance: {estimator: {column label: the per-entry variance, an array}}.
      columns: {label: (layer name, param name, index)}.
      batch_size, num_draws, num_examples: the protocol.
      seconds: {estimator: wall time of its draws}.
    """
    variance: dict
    mean: dict
    entry_variance: dict
    columns: dict
    batch_size: int
    num_draws: int
    num_examples: int
    seconds: dict

    @property
    def estimators(self):
        """The estimators measured, in the order asked."""
        return tuple(self.variance)

    def ratio(self, estimator, reference="lrt"):
        """{column: variance of ``estimator`` / variance of ``reference``}."""
        return {c: self.variance[estimator][c] / self.variance[reference][c]
                for c in self.columns}

    def to_markdown(self):
        """The table as Markdown, two significant digits, then one line on the protocol."""
        cols = list(self.columns)
        lines = ["| Estimator | " + " | ".join(str(c) for c in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        for est in self.estimators:
            lines.append(f"| {LABELS[est]} | "
                         + " | ".join(format_value(self.variance[est][c]) for c in cols) + " |")
        lines += ["", f"Mean over each parameter's entries of the variance of the gradient of "
                      f"-(N/M) sum_i log p(y_i | x_i, w), over {self.num_draws} draws of "
                      f"(minibatch of M = {self.batch_size} of the N = {self.num_examples} "
                      f"examples, weight noise); the same minibatches for every estimator."]
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()

    def __repr__(self):
        return (f"GradientVarianceTable(estimators={self.estimators}, columns={list(self.columns)}, "
                f"batch_size={self.batch_size}, num_draws={self.num_draws}, variance="
                + repr({e: {c: float(f"{v:.3g}") for c, v in d.items()}
                        for e, d in self.variance.items()}) + ")")


def format_value(value):
    """7.8e3-style: two significant digits and the exponent without padding."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def gradient_variance(model, params, x, y, estimators=ESTIMATORS, *, rng, batch_size=100,
                      num_draws=100, wrt=None, batches=None, num_examples=None, progress=None):
    """Variance of the minibatch gradient under each estimator, on any model of lrtdense layers.

    For every draw, a minibatch of ``batch_size`` examples is taken from (x, y) without
    replacement (the same minibatches for every estimator: common random numbers), the weight
    noise of each estimator is drawn, and the gradient of ``data_term`` w.r.t. the params is
    computed by autograd. The variance of each selected entry over the draws (Welford, ddof=1,
    in float64) is averaged over the entries.

    Args:
      model: a ``lrtdense.Model`` whose network is made of lrtdense's variational layers.
      params: its params, ``model.init(...)`` or trained ones (not modified).
      x: inputs (N, ..., in); y: targets (see the model's likelihood).
      estimators: a sequence of names from ``ESTIMATORS``.
      rng: numpy.random.Generator. It draws the minibatches first, then one seed from which
        every estimator gets its own noise generator (by its position in ``ESTIMATORS``), so an
        estimator's numbers do not depend on which others are measured.
      batch_size: M, an integer in [1, N] (ignored when ``batches`` is given).
      num_draws: an integer >= 2 (ignored when ``batches`` is given).
      wrt: None (each layer's kernel mean, ``default_wrt``), "all" (every array of every
        layer), or {label: (layer name, param name)}.
      batches: optional list of index arrays, one minibatch per draw (at least 2).
      num_examples: N in the data term; default len(x).
      progress: optional ``progress(estimator, {label: variance}, seconds)``, called after
        each estimator.
    Returns:
      a ``GradientVarianceTable``.
    Raises:
      ValueError / TypeError: an unknown estimator, bad sizes, a wrt entry that names no
        param, or data that do not fit the model.
    """
    check_rng(rng)
    estimators = _checked_estimators(estimators)
    x = model.network.layers[0].check_input(x)
    model.check_params(params, x.shape[-1])
    model.check_data(x, y)
    num_examples = len(x) if num_examples is None else positive_int(num_examples, "num_examples")
    batches, batch_size = _minibatches(rng, len(x), batches, batch_size, num_draws)
    columns = _columns(model, params, wrt)
    seeds = onp.random.SeedSequence(rng.integers(2 ** 63, size=4)).spawn(len(ESTIMATORS))
    kernel_size = _kernel_sizes(model.network, x.shape[-1])
    variance, mean, entry_variance, seconds = {}, {}, {}, {}
    for est in estimators:
        t0 = time.perf_counter()
        noise_rng = onp.random.default_rng(seeds[ESTIMATORS.index(est)])
        gradients = _gradients(est, model, params, x, y, batches, num_examples, noise_rng)
        mean[est], entry_variance[est] = _welford(gradients, columns, kernel_size)
        variance[est] = {c: float(onp.mean(v)) for c, v in entry_variance[est].items()}
        seconds[est] = time.perf_counter() - t0
        if progress is not None:
            progress(est, variance[est], seconds[est])
    return GradientVarianceTable(variance=variance, mean=mean, entry_variance=entry_variance,
                                 columns=columns, batch_size=batch_size, num_draws=len(batches),
                                 num_examples=num_examples, seconds=seconds)


def _checked_estimators(estimators):
    """``estimators`` as a non-empty tuple of known names; a ValueError otherwise."""
    estimators = tuple(estimators)
    if not estimators:
        raise ValueError("estimators must name at least one of " + str(ESTIMATORS))
    for est in estimators:
        estimator_records.get(est)
    return estimators


def _minibatches(rng, n, batches, batch_size, num_draws):
    """(the index arrays of the minibatches, one per draw; their size M): ``batches`` as given,
    or ``num_draws`` minibatches of ``batch_size`` of the n examples without replacement, drawn
    from ``rng``.

    Raises:
      ValueError: a size out of range, fewer than two draws.
    """
    if batches is not None:
        batches = [onp.asarray(b) for b in batches]
        if len(batches) < 2:
            raise ValueError(f"batches must hold at least 2 minibatches, got {len(batches)}")
        return batches, len(batches[0])
    batch_size = positive_int(batch_size, "batch_size", n)
    num_draws = positive_int(num_draws, "num_draws")
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2 (a variance needs two draws), got {num_draws}")
    return [rng.choice(n, batch_size, replace=False) for _ in range(num_draws)], batch_size


def _kernel_sizes(network, input_dim):
    """{layer name: in * units}, the size of the kernel part of ``DenseVariational``'s
    posterior_constant (the ``wrt`` index "kernel")."""
    kernel_size, n_in = {}, input_dim
    for name, layer in _layers(network):
        kernel_size[name] = n_in * layer.units
        n_in = layer.units
    return kernel_size


def _gradients(estimator, model, params, x, y, batches, num_examples, noise_rng):
    """Yields, draw by draw, the gradient of ``data_term`` (a params-shaped tree) on the
    minibatch ``x[idx]``, ``y[idx]`` of each index array in ``batches``, with weight noise of
    ``estimator`` drawn from ``noise_rng``."""
    g_fn = grad(data_term)
    for idx in batches:
        xb = x[idx]
        noise = sample_noise(estimator, model.network, noise_rng, xb.shape)
        yield g_fn(params, model, xb, onp.asarray(y)[idx], noise, estimator, num_examples)


def _welford(gradients, columns, kernel_size):
    """The running mean and variance (Welford, in float64) of every entry of each column over
    the ``gradients`` (at least 2).

    Args:
      gradients: an iterable of gradient trees (``_gradients``).
      columns: {label: (layer name, param name, index)} (``_columns``).
      kernel_size: ``_kernel_sizes``, for the index "kernel".
    Returns:
      ({label: the mean gradient}, {label: the per-entry unbiased variance (ddof=1)}), arrays
      of each column's shape.
    """
    count = 0
    mu = {c: 0.0 for c in columns}
    m2 = {c: 0.0 for c in columns}
    for g in gradients:
        count += 1
        for label, (layer, param, index) in columns.items():
            value = onp.asarray(g["network"][layer][param], dtype=onp.float64)
            if index == "kernel":
                value = value[:kernel_size[layer]]
            delta = value - mu[label]
            mu[label] = mu[label] + delta / count
            m2[label] = m2[label] + delta * (value - mu[label])
    return mu, {c: m2[c] / (count - 1) for c in columns}


def _columns(model, params, wrt):
    net = params["network"]
    if wrt is None:
        return default_wrt(model.network)
    if isinstance(wrt, str):
        if wrt != "all":
            raise ValueError(f"wrt must be None, 'all' or a dict label -> (layer, param), got "
                             f"{wrt!r}")
        return {f"{layer}/{param}": (layer, param, None)
                for layer in model.network.names for param in net[layer]}
    if not isinstance(wrt, dict):
        raise TypeError(f"wrt must be None, 'all' or a dict label -> (layer, param), got "
                        f"{type(wrt).__name__}")
    columns = {}
    for label, entry in wrt.items():
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise ValueError(f"wrt[{label!r}] must be a (layer name, param name) pair, got "
                             f"{entry!r}")
        layer, param = entry
        if layer not in net or param not in net[layer]:
            names = {k: sorted(v) for k, v in net.items()}
            raise ValueError(f"wrt[{label!r}] = {entry!r} names no param; the params are {names}")
        columns[label] = (layer, param, None)
    return columns
