"""Random draws for the layers' noise: every draw from an explicit ``numpy.random.Generator``.

* ``standard_normal(rng, shape, dtype, *, out=None, work=None)``: N(0, 1) draws, NumPy's ziggurat
  in float64 and the Box-Muller transform of float32 uniforms in float32;
* ``rademacher(rng, shape, dtype)``: +-1 signs with probability 1/2 each (Flipout's signs).

Both can write into a buffer they are handed (``out=``), which is how the training step draws its
noise without allocating.
"""
import numpy as onp

__all__ = ["standard_normal", "rademacher"]

_TWO_PI_32 = onp.float32(2 * onp.pi)


def standard_normal(rng, shape, dtype, *, out=None, work=None):
    """Independent N(0, 1) draws of ``dtype``: the normal noise of every layer's ``sample_noise``.

    * float64: ``rng.standard_normal(shape, dtype=float64)`` (NumPy's ziggurat).
    * float32: the Box-Muller transform of float32 uniforms (Box & Muller 1958), the method of
      TensorFlow's and PyTorch's CPU samplers, and faster than NumPy's float32 ziggurat
      (``benchmarks/README.md`` has the measurement). With n = prod(shape) and h = ceil(n / 2),
      all in float32:
      ``u1 = rng.random(h)``, then ``u2 = rng.random(h)``; ``r = sqrt(-2 log(1 - u1))`` (1 - u1
      lies in ``[2**-24, 1]``, so every |draw| <= ``sqrt(48 log 2) = 5.77``: a tail of mass 8e-9 is cut,
      as in TensorFlow's sampler), ``theta = 2 pi u2``; the first h draws (C order) are
      ``r cos(theta)``, the last n - h are ``(r sin(theta))[:n - h]``.

    Args:
      rng: numpy.random.Generator.
      shape: output shape.
      dtype: float32 or float64.
      out: optional C-contiguous array of that shape and dtype, filled and returned.
      work: optional float32 scratch with at least h elements (float32 only; avoids allocating
        it on every call).
    Returns:
      array of ``shape`` and ``dtype`` (``out`` if given).
    """
    dtype = onp.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, (int, onp.integer)) else tuple(shape)
    if dtype == onp.float64:
        return rng.standard_normal(shape, dtype=dtype, out=out)
    if dtype != onp.float32:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if out is None:
        out = onp.empty(shape, dtype)
    elif not (isinstance(out, onp.ndarray) and out.dtype == dtype and out.shape == shape
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous {dtype} array of shape "
                         f"{shape}, got {getattr(out, 'dtype', type(out).__name__)} "
                         f"{getattr(out, 'shape', '')}")
    flat = out.reshape(-1)              # a view: out is C-contiguous
    n = flat.size
    h = (n + 1) // 2
    if work is None or work.size < h:
        work = onp.empty(h, dtype)
    r, theta = flat[:h], work[:h]
    rng.random(dtype=dtype, out=r)      # u1
    rng.random(dtype=dtype, out=theta)  # u2
    onp.subtract(1, r, out=r)           # 1 - u1, exact, in (0, 1]
    onp.log(r, out=r)
    r *= -2
    onp.sqrt(r, out=r)
    theta *= _TWO_PI_32
    rest = flat[h:]
    onp.sin(theta[:n - h], out=rest)
    rest *= r[:n - h]
    onp.cos(theta, out=theta)
    r *= theta
    return out


def rademacher(rng, shape, dtype, *, out=None):
    """Independent +-1 signs with probability 1/2 each: 2 * rng.integers(0, 2, shape) - 1.

    Args:
      rng: numpy.random.Generator.
      shape: output shape.
      dtype: the output dtype.
      out: optional array of that shape and dtype, filled and returned.
    """
    bits = rng.integers(0, 2, size=shape, dtype=onp.int8)
    if out is None:
        return (2 * bits - 1).astype(dtype)
    onp.multiply(bits, 2, out=out)
    out -= 1
    return out
