"""The random arrays of one layer call: their shapes and kinds, drawing them, checking them.

Every random array of a forward call is drawn by ``sample_noise`` in the order of
``noise_shapes(input_shape)``: standard normals in the layer's dtype
(``lrtdense.samplers.standard_normal``), signs where ``noise_kinds`` says "sign"
(``lrtdense.samplers.rademacher``). An estimator other than the layer's own
(``Layer.forward(..., estimator=...)``, ``lrtdense.estimators``) has a layout of its own,
``estimator_noise_shapes``: its kernel noise, then "bias" when the layer's bias is random.
"""
import numpy as np

from lrtdense import estimators
from lrtdense.checks import check_rng
from lrtdense.samplers import rademacher, standard_normal

__all__ = ["LayerNoise", "DTYPES"]

DTYPES = {"float32": np.float32, "float64": np.float64}


class LayerNoise:
    """The noise half of ``lrtdense.base.Layer``, a mixin: it reads the layer's ``units``,
    ``dtype``, ``MODES``, ``estimator`` and ``compute_output_shape``."""

    def noise_shapes(self, input_shape):
        """dict key -> shape of every random array ``forward`` uses, in draw order."""
        raise NotImplementedError

    def noise_kinds(self):
        """dict key -> "sign" for the noise arrays of +-1 signs (the others are normals)."""
        return {}

    def sample_noise(self, rng, input_shape, normal=None, workspace=None):
        """Draws every random array of one ``forward`` call, in ``noise_shapes`` order.

        Args:
          rng: numpy.random.Generator.
          input_shape: shape of x, (..., in).
          normal: ``(rng, shape, dtype) -> array`` for the normal noise; default
            ``standard_normal`` (what ``forward(..., rng=...)`` uses).
          workspace: optional Workspace to draw into (the same draws).
        Returns:
          dict key -> array of the layer's dtype.
        """
        check_rng(rng)
        return self._draw(rng, self.noise_shapes(tuple(input_shape)), self.noise_kinds(), normal,
                          workspace)

    def _draw(self, rng, shapes, kinds, normal=None, workspace=None):
        """The arrays of ``shapes`` drawn in order: signs where ``kinds`` says "sign", else
        standard normals (by ``normal`` if given)."""
        dtype = DTYPES[self.dtype]
        noise = {}
        for key, shape in shapes.items():
            if kinds.get(key) == "sign":
                out = None if workspace is None else workspace.empty(shape, dtype)
                noise[key] = rademacher(rng, shape, dtype, out=out)
            elif normal is not None:
                noise[key] = normal(rng, shape, dtype)
            elif workspace is None:
                noise[key] = standard_normal(rng, shape, dtype)
            else:
                out = workspace.empty(shape, dtype)
                work = workspace.empty(((out.size + 1) // 2,), dtype) if dtype == np.float32 else None
                noise[key] = standard_normal(rng, shape, dtype, out=out, work=work)
        return noise

    def check_noise(self, noise, input_shape, estimator=None):
        """Validates a noise dict against ``noise_shapes(input_shape)`` (or ``estimator``'s
        layout, ``estimator_noise_shapes``) and casts it to the dtype."""
        if not isinstance(noise, dict):
            raise TypeError(f"noise must be a dict of arrays, got {type(noise).__name__}")
        if estimator is None:
            shapes, kinds = self.noise_shapes(tuple(input_shape)), self.noise_kinds()
        else:
            shapes = self.estimator_noise_shapes(estimator, input_shape)
            kinds = dict.fromkeys(estimators.get(estimator).signs, "sign")
        missing = [k for k in shapes if k not in noise]
        extra = sorted(set(noise) - set(shapes), key=str)
        if missing or extra:
            raise ValueError(f"noise keys do not match {type(self).__name__}: missing {missing}, "
                             f"unexpected {extra}; expected exactly {list(shapes)}")
        out = {}
        for key, shape in shapes.items():
            value = np.asarray(noise[key])
            if value.shape != shape:
                raise ValueError(f"expected noise[{key!r}].shape == {shape} for an input of shape "
                                 f"{tuple(input_shape)}, got {value.shape}")
            if value.dtype.kind not in "fi":
                raise TypeError(f"noise[{key!r}] must be real numbers, got dtype {value.dtype}")
            value = value.astype(self.dtype, copy=False)
            if kinds.get(key) == "sign" and not np.all(np.abs(value) == 1):
                raise ValueError(f"noise[{key!r}] must hold only +1 and -1")
            out[key] = value
        return out

    def estimator_noise_shapes(self, estimator, input_shape):
        """{key: shape} of the noise of one call under ``estimator`` (a name or record of
        ``lrtdense.estimators``): its kernel noise, then "bias" (units,) when the bias is random
        and the estimator noisy."""
        estimator = estimators.get(estimator)
        input_shape = tuple(input_shape)
        self.compute_output_shape(input_shape)
        shapes = estimator.noise_shapes(input_shape, self.units)
        if estimator.noisy and self.random_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def sample_estimator_noise(self, estimator, rng, input_shape):
        """Draws the noise of ``estimator_noise_shapes`` from ``rng``, in that order."""
        check_rng(rng)
        estimator = estimators.get(estimator)
        return self._draw(rng, self.estimator_noise_shapes(estimator, input_shape),
                          dict.fromkeys(estimator.signs, "sign"))

    @property
    def random_bias(self):
        """Whether the layer's bias is random (drawn once per call)."""
        return False

    def _resolve_noise(self, x, rng, noise, mode, workspace):
        """The noise dict of one forward call: checked ``noise``, or drawn from ``rng`` (sample
        mode); None in the other modes. Raises ValueError for an unknown mode or a missing or
        doubled source of randomness."""
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if mode != "sample":
            return None
        if noise is not None:
            if rng is not None:
                raise ValueError("pass either rng or noise to forward, not both")
            return self.check_noise(noise, x.shape)
        if rng is None:
            raise ValueError("mode='sample' needs rng=numpy.random.Generator(...) or an "
                             "explicit noise dict; use mode='mean' for the posterior mean")
        return self.sample_noise(rng, x.shape, workspace=workspace)
