"""lrtdense.layers.standard_normal: the layers' normal noise (ziggurat in float64, Box-Muller in
float32), against its documented formula, against N(0, 1), and its buffers and errors."""
import math

import numpy as np
import pytest
from scipy import stats

import lrtdense as L
from lrtdense.layers import standard_normal


def test_float64_is_numpys_ziggurat_on_the_same_stream():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(standard_normal(a, (4, 7), "float64"), b.standard_normal((4, 7)))
    assert a.bit_generator.state == b.bit_generator.state


@pytest.mark.parametrize("shape", [(0,), (1,), (2,), (7,), (3, 5), (2, 3, 4)])
def test_float32_is_box_muller_of_the_documented_uniforms(shape):
    """Recomputed independently in float64 from the same uniforms: first h = ceil(n / 2) draws are
    r cos(theta), the rest r sin(theta), r = sqrt(-2 log(1 - u1)), theta = 2 pi u2."""
    n = math.prod(shape)
    h = (n + 1) // 2
    got = standard_normal(np.random.default_rng(11), shape, "float32")
    assert got.dtype == np.float32 and got.shape == shape
    ref_rng = np.random.default_rng(11)
    u1 = ref_rng.random(h, dtype=np.float32).astype(np.float64)
    u2 = ref_rng.random(h, dtype=np.float32).astype(np.float64)
    r = np.sqrt(-2 * np.log(1 - u1))
    want = np.concatenate([r * np.cos(2 * np.pi * u2), (r * np.sin(2 * np.pi * u2))[:n - h]])
    # float32 rounding of log, 2 pi u2, cos and sin: a few float32 ulps of r
    np.testing.assert_allclose(got.reshape(-1), want, rtol=0, atol=4e-6 * max(1.0, r.max(initial=1)))


def test_float32_draws_are_standard_normal():
    """2**21 draws: KS distance, moments, a tail frequency, and no dependence between the pair
    (cos, sin) made from one (u1, u2), for a fixed seed (deterministic)."""
    n = 2 ** 21
    z = standard_normal(np.random.default_rng(2026), (n,), "float32").astype(np.float64)
    d = stats.kstest(z, "norm").statistic
    assert d < 1.36 / math.sqrt(n), d                       # the 5 % critical value
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    tail = np.mean(np.abs(z) > 3)
    p3 = 2 * stats.norm.sf(3)
    assert abs(tail - p3) < 5 * math.sqrt(p3 / n)
    assert np.abs(z).max() <= math.sqrt(48 * math.log(2)) + 1e-6   # the documented cut at 5.77
    c, s = z[: n // 2], z[n // 2:]
    assert abs(np.corrcoef(c, s)[0, 1]) < 5 / math.sqrt(n / 2)
    assert abs(np.corrcoef(c * c, s * s)[0, 1]) < 5 / math.sqrt(n / 2)


def test_out_and_work_give_the_same_draws_and_consume_the_same_stream():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    want = standard_normal(a, (9, 3), "float32")
    out, work = np.full((9, 3), np.nan, np.float32), np.full(100, np.nan, np.float32)
    got = standard_normal(b, (9, 3), "float32", out=out, work=work)
    assert got is out and np.array_equal(got, want)
    assert a.bit_generator.state == b.bit_generator.state
    small_work = np.empty(3, np.float32)    # too small: ignored, a fresh one is used
    assert np.array_equal(standard_normal(np.random.default_rng(5), (9, 3), "float32", work=small_work), want)


def test_bad_out_or_dtype_is_refused():
    rng = np.random.default_rng(0)
    for bad in [np.empty((3, 9), np.float32).T, np.empty((9, 3), np.float64), np.empty((9, 2), np.float32)]:
        with pytest.raises(ValueError, match=r"out must be a writeable C-contiguous float32 array of shape \(9, 3\)"):
            standard_normal(rng, (9, 3), "float32", out=bad)
    assert standard_normal(np.random.default_rng(1), 5, "float32").shape == (5,)   # an int shape
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got float16"):
        standard_normal(rng, (2,), "float16")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers_draw_their_normal_noise_with_it(dtype):
    layer = L.DenseFlipout(4, dtype=dtype, bias_posterior="normal")
    noise = layer.sample_noise(np.random.default_rng(8), (5, 3))
    rng = np.random.default_rng(8)
    for key, shape in layer.noise_shapes((5, 3)).items():   # signs and normals, in this order
        want = (L.layers.rademacher(rng, shape, dtype) if key.startswith("sign")
                else standard_normal(rng, shape, dtype))
        assert np.array_equal(noise[key], want) and noise[key].dtype == dtype, key
