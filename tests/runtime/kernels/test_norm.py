"""LayerNormalization "mixed" (integer statistics, float64 math): bit-exact against a
Python-int / Python-float reference of the same formula written here, and against the float
ONNX LayerNormalization of ``ptqc.runtime.reference`` (float64, ``stash_type`` 0) on the
dequantized input within 0.5 LSB (the final rint) + float noise."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ptqc.runtime.kernels.norm import layernorm_mixed
from ptqc.runtime.reference import run_node

DTYPES = [np.int8, np.uint8, np.int16, np.uint16]
CASES = settings(max_examples=200, deadline=None)


# ------------------------------------------------------------------------ reference

def ref_layernorm(q, zp, in_scale, axis, gamma, beta, eps, out_scale, out_zp, lo, hi) -> np.ndarray:
    """Per row of the normalized axes, Python ints for S1, S2 and S2·n - S1², Python floats
    (IEEE double, correctly rounded sqrt) for the rest, round() half even."""
    norm_shape = q.shape[axis % q.ndim:]
    n = math.prod(norm_shape)
    g = np.broadcast_to(gamma, norm_shape).reshape(-1).tolist()
    b = [0.0] * n if beta is None else np.broadcast_to(beta, norm_shape).reshape(-1).tolist()
    out = []
    for row in q.astype(np.int64).reshape(-1, n).tolist():
        x = [v - zp for v in row]
        s1, s2 = sum(x), sum(v * v for v in x)
        mean = float(s1) / float(n)
        var = float(s2 * n - s1 * s1) / float(n * n)
        den = math.sqrt(var * (in_scale * in_scale) + eps)
        for j, v in enumerate(x):
            y = (float(v) - mean) * in_scale / den * g[j] + b[j]
            out.append(min(hi, max(lo, round(y / out_scale) + out_zp)))
    return np.array(out, np.int64).reshape(q.shape)


# ------------------------------------------------------------------------ strategies

def log_uniform(lo: float, hi: float):
    return st.floats(math.log2(lo), math.log2(hi)).map(lambda e: 2.0 ** e)


@st.composite
def case(draw):
    """Codes (uniform, piled on the edges, or constant rows), zero point, axis, gamma/beta of
    the normalized shape or a broadcastable suffix / scalar."""
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(["uniform", "edges", "constant"]))
    if kind == "uniform":
        q = rng.integers(info.min, info.max, shape, endpoint=True)
    elif kind == "edges":
        q = rng.choice([info.min, info.min + 1, info.max - 1, info.max], shape)
    else:  # one value per row of the normalized axes (variance 0: y = beta)
        ax = axis % len(shape)
        rows = rng.integers(info.min, info.max, shape[:ax] + (1,) * (len(shape) - ax), endpoint=True)
        q = np.broadcast_to(rows, shape)
    norm_shape = shape[axis % len(shape):]
    g_shape = norm_shape[draw(st.integers(0, len(norm_shape))):]
    gamma = rng.normal(1.0, 0.5, g_shape)
    b_shape = norm_shape[draw(st.integers(0, len(norm_shape))):]
    beta = None if draw(st.booleans()) else rng.normal(0.0, 0.5, b_shape)
    return q.astype(dtype), draw(st.integers(int(info.min), int(info.max))), axis, gamma, beta


@st.composite
def output(draw, wide: bool = True):
    """(dtype, out_scale, zp, lo, hi): full range or a random sub-range; the scale maps
    about ±4 (times 1/8 .. 8) onto the dtype's range.  ``wide``: also an int64 output of
    2^-44-ish scale, where every last-bit difference of the float math shows."""
    if wide and draw(st.integers(0, 4)) == 0:
        return np.int64, 2.0 ** -draw(st.integers(40, 48)), 0, -2 ** 53, 2 ** 53
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    zp = draw(st.integers(int(info.min), int(info.max)))
    out_scale = 8 / 2 ** info.bits * draw(log_uniform(1 / 8, 8))
    if draw(st.booleans()):
        return dtype, out_scale, zp, int(info.min), int(info.max)
    lo, hi = sorted(draw(st.integers(int(info.min), int(info.max))) for _ in range(2))
    return dtype, out_scale, zp, lo, hi


# ------------------------------------------------------------------------ tests

@CASES
@given(case(), output(), log_uniform(1e-4, 1.0), log_uniform(1e-12, 0.1))
def test_layernorm_exact(c, out, in_scale, eps):
    q, zp, axis, gamma, beta = c
    dtype, out_scale, out_zp, lo, hi = out
    got = layernorm_mixed(q, zp, in_scale, axis, gamma, beta, eps, out_scale, out_zp, lo, hi, dtype)
    assert got.dtype == dtype and got.shape == q.shape
    want = ref_layernorm(q, zp, in_scale, axis, gamma, beta, eps, out_scale, out_zp, lo, hi)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@CASES
@given(case(), output(wide=False), log_uniform(1e-4, 1.0), log_uniform(1e-12, 0.1))
def test_layernorm_float(c, out, in_scale, eps):
    """Against the float64 ONNX op on the dequantized input: within 0.5 LSB + noise."""
    q, zp, axis, gamma, beta = c
    dtype, out_scale, out_zp, lo, hi = out
    got = layernorm_mixed(q, zp, in_scale, axis, gamma, beta, eps, out_scale, out_zp, lo, hi, dtype)
    norm_shape = q.shape[axis % q.ndim:]
    g = np.broadcast_to(gamma, norm_shape).astype(np.float64)
    b = None if beta is None else np.broadcast_to(beta, norm_shape).astype(np.float64)
    x = in_scale * (q.astype(np.float64) - zp)
    y = run_node("LayerNormalization", [x, g, b], {"axis": axis, "epsilon": eps, "stash_type": 0})[0]
    ideal = y / out_scale + out_zp
    # the float64 reference's own error: x - mean rounds at ~|x| 2^-52, and 1/sqrt(var + eps)
    # amplifies it (a constant row with eps 2^-38: 2^19); the integer statistics are exact
    ref_err = 8 * np.finfo(np.float64).eps * np.abs(x).max(initial=0) / np.sqrt(eps) * np.abs(g).max() / out_scale
    noise = 1e-6 * (1 + np.abs(ideal)) + ref_err
    assert np.all(np.abs(got.astype(np.int64) - np.clip(ideal, lo, hi)) <= 0.5 + noise)


def test_layernorm_exact_beyond_int64_numerator():
    """n · S2 > 2^63 (int16 extremes, n = 2^16): the numerator S2 · n - S1² stays exact."""
    rng = np.random.default_rng(1)
    q = rng.choice(np.array([-32768, 32767, 32766], np.int16), (2, 2 ** 16))
    args = (q, -32768, 1e-3, -1, np.array(1.5), np.array(-0.25), 1e-5, 1 / 4096, 3, -32768, 32767)
    got = layernorm_mixed(*args, np.int16)
    np.testing.assert_array_equal(got.astype(np.int64), ref_layernorm(*args))


def test_layernorm_exact_numerator_matters():
    """A row of large, nearly equal codes (n = 4096: S2 · n ~ 2^56 > 2^53): a float64
    numerator would lose the variance; the wide output shows any difference."""
    rng = np.random.default_rng(2)
    q = rng.choice(np.array([32765, 32766, 32767], np.int16), (3, 4096))
    args = (q, -32768, 1.0, -1, np.array(1.0), None, 1e-5, 2.0 ** -44, 0, -2 ** 53, 2 ** 53)
    got = layernorm_mixed(*args, np.int64)
    np.testing.assert_array_equal(got, ref_layernorm(*args))


def test_layernorm_refusals():
    q = np.zeros((2, 3), np.int8)
    with pytest.raises(ValueError, match="epsilon"):
        layernorm_mixed(q, 0, 0.1, -1, np.ones(3), None, 0.0, 0.1, 0, -128, 127, np.int8)
    with pytest.raises(ValueError, match="axis"):
        layernorm_mixed(q, 0, 0.1, 2, np.ones(3), None, 1e-5, 0.1, 0, -128, 127, np.int8)
    with pytest.raises(ValueError, match="finite"):
        layernorm_mixed(q, 0, 0.1, -1, np.array([1, np.nan, 1]), None, 1e-5, 0.1, 0, -128, 127, np.int8)
    with pytest.raises(ValueError, match="2\\^53"):
        layernorm_mixed(q, 0, 0.1, -1, np.ones(3), None, 1e-5, 0.1, 0, 0, 2 ** 60, np.int64)
    with pytest.raises(ValueError, match="overflow int64"):
        layernorm_mixed(q, -2 ** 40, 0.1, -1, np.ones(3), None, 1e-5, 0.1, 0, -128, 127, np.int8)
