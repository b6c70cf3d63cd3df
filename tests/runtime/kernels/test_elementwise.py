"""Elementwise integer kernels (rescale, add/sub, mul, add_multipliers): bit-exact against
Python-int references written here, and against the float ONNX ops (Identity / Relu / Clip,
Add / Sub, Mul of ``ptqc.runtime.reference``) on the dequantized inputs, within the final
rounding (0.5 LSB) plus the stated multiplier error."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from intref import int_tensor, ref_round_shift
from ptqc.runtime.kernels.elementwise import (add_int, add_multipliers, dequantize_codes, mul_int, quantize_float,
                                              rescale)
from ptqc.runtime.kernels.requant import quantize_multiplier
from ptqc.runtime.reference import run_node

DTYPES = [np.int8, np.uint8, np.int16, np.uint16]
CASES = settings(max_examples=200, deadline=None)
TINY = 1e-6  # float64 noise of the float reference, in output LSB


# ------------------------------------------------------------------------ references

def ref_map(fn, *arrays) -> np.ndarray:
    """``fn`` on Python ints over the numpy-broadcast arrays, int64 result."""
    arrays = np.broadcast_arrays(*arrays)
    flat = [fn(*(int(v) for v in vals)) for vals in zip(*(a.ravel() for a in arrays))]
    return np.array(flat, np.int64).reshape(arrays[0].shape)


def clamp(v: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, v))


# ------------------------------------------------------------------------ strategies

@st.composite
def quant(draw, shape=None):
    """(codes, dtype, zero point): any zero point of the dtype's range."""
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)) if shape is None else shape
    return draw(int_tensor(shape, dtype, with_zero=True)), dtype, draw(st.integers(info.min, info.max))


@st.composite
def output(draw, clip: bool = True):
    """(dtype, zero point, lo, hi): full range or a random sub-range (clipping).  With
    ``clip=False`` (float checks, mostly unsaturated): the full range and a zero point in its
    middle half."""
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    if not clip:
        quarter = (int(info.max) - int(info.min)) // 4
        zp = draw(st.integers(int(info.min) + quarter, int(info.max) - quarter))
        return dtype, zp, int(info.min), int(info.max)
    zp = draw(st.integers(info.min, info.max))
    if draw(st.booleans()):
        return dtype, zp, int(info.min), int(info.max)
    lo, hi = sorted(draw(st.integers(info.min, info.max)) for _ in range(2))
    return dtype, zp, lo, hi


@st.composite
def mult_shift(draw, bits: int, min_shift: int, count: int = 1) -> tuple[list[int], int]:
    """``count`` multipliers in (-2^bits, 2^bits) sharing one shift: anything (mostly
    saturating), or ``|mult · 2^-shift| < 4`` with the shift often 1..3 (exact ties)."""
    if draw(st.booleans()):
        return [draw(st.integers(-2 ** bits + 1, 2 ** bits - 1)) for _ in range(count)], \
            draw(st.integers(min_shift, 63))
    shift = draw(st.integers(1, 3) | st.integers(1, 63))
    limit = min(4 << shift, 2 ** bits) - 1
    return [draw(st.integers(-limit, limit)) for _ in range(count)], shift


def log_uniform(lo: float, hi: float):
    return st.floats(math.log2(lo), math.log2(hi)).map(lambda e: 2.0 ** e)


def dequant(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return np.asarray(scale * (q.astype(np.float64) - zp))


# ------------------------------------------------------------------------ rescale

@CASES
@given(quant(), output(), mult_shift(31, -8), st.integers(0, 2))
def test_rescale_exact(x, out, ms, mode):
    q, _, zp_in = x
    (mult,), shift = ms
    dtype, zp_out, lo, hi = out
    got = rescale(q, zp_in, mult, shift, zp_out, lo, hi, mode, dtype)
    want = ref_map(lambda v: clamp(zp_out + ref_round_shift((v - zp_in) * mult, shift, mode), lo, hi), q)
    assert got.dtype == dtype and got.shape == q.shape
    np.testing.assert_array_equal(got.astype(np.int64), want)


@CASES
@given(quant(), output(), log_uniform(1e-4, 1.0), log_uniform(1 / 64, 64), st.integers(0, 2),
       st.sampled_from(["Identity", "Relu", "Clip"]))
def test_rescale_float_ops(x, out, s_in, ratio, mode, op):
    """Requantization, Relu (lo = zp_out) and Clip (lo/hi codes) against the float ops."""
    q, _, zp_in = x
    dtype, zp_out, lo, hi = out
    s_out = s_in / ratio
    mult, shift = (int(v) for v in quantize_multiplier(s_in / s_out))
    xf = dequant(q, s_in, zp_in)
    info = np.iinfo(dtype)
    if op == "Identity":
        y = run_node("Identity", [xf])[0]
    elif op == "Relu":
        lo = max(lo, zp_out)
        hi = max(hi, lo)
        y = run_node("Relu", [xf])[0]
    else:
        y = run_node("Clip", [xf, np.array(s_out * (lo - zp_out)), np.array(s_out * (hi - zp_out))])[0]
    got = rescale(q, zp_in, mult, shift, zp_out, lo, hi, mode, dtype).astype(np.int64)
    ideal = np.clip(y / s_out + zp_out, max(lo, info.min), min(hi, info.max))
    err = np.abs(q.astype(np.float64) - zp_in) * abs(mult * 2.0 ** -shift - s_in / s_out)
    assert np.all(np.abs(got - ideal) <= 0.5 + err + TINY)


def test_rescale_refuses_overflow_and_bad_ranges():
    q = np.array([-32768, 32767], np.int16)
    with pytest.raises(ValueError, match="overflows int64"):
        rescale(q, 100, 2 ** 31, -20, 0, -128, 127, 0, np.int8)
    with pytest.raises(ValueError, match="shift 64"):
        rescale(q, 0, 1, 64, 0, -128, 127, 0, np.int8)
    with pytest.raises(ValueError, match="outside int8"):
        rescale(q, 0, 1, 0, 0, -129, 127, 0, np.int8)
    with pytest.raises(ValueError, match="rounding mode"):
        rescale(q, 0, 1, 0, 0, -128, 127, 3, np.int8)


# ------------------------------------------------------------------------ add / sub

@st.composite
def broadcast_pair(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4)).input_shapes
    return draw(quant(shapes[0])), draw(quant(shapes[1]))


@CASES
@given(broadcast_pair(), output(), mult_shift(31, -4, 2), st.integers(0, 2))
def test_add_exact(pair, out, ms, mode):
    (a, _, za), (b, _, zb) = pair
    (ma, mb), shift = ms
    dtype, zo, lo, hi = out
    got = add_int(a, za, ma, b, zb, mb, shift, zo, lo, hi, mode, dtype)
    want = ref_map(lambda u, v: clamp(zo + ref_round_shift((u - za) * ma + (v - zb) * mb, shift, mode),
                                      lo, hi), a, b)
    assert got.dtype == dtype and got.shape == np.broadcast_shapes(a.shape, b.shape)
    np.testing.assert_array_equal(got.astype(np.int64), want)


def bits(dtype) -> int:
    return np.iinfo(dtype).bits


@CASES
@given(broadcast_pair(), output(clip=False), log_uniform(1e-3, 1.0), log_uniform(1 / 16, 16),
       log_uniform(1 / 8, 8), st.sampled_from(["Add", "Sub"]), st.integers(0, 2))
def test_add_float(pair, out, sa, ratio_b, ratio_o, op, mode):
    """Dequantized Add/Sub within 0.5 LSB (the final rounding) + the multipliers' error.
    The output scale fits the operands' range to the output's (times 1/8 .. 8)."""
    (a, ta, za), (b, tb, zb) = pair
    dtype, zo, lo, hi = out
    sb = sa * ratio_b
    so = max(sa * 2 ** bits(ta), sb * 2 ** bits(tb)) / 2 ** bits(dtype) * ratio_o
    ma, mb, shift = add_multipliers(sa, sb if op == "Add" else -sb, so)
    got = add_int(a, za, ma, b, zb, mb, shift, zo, lo, hi, mode, dtype).astype(np.int64)
    y = run_node(op, [dequant(a, sa, za), dequant(b, sb, zb)])[0]
    ideal = np.clip(y / so + zo, lo, hi)
    da, db = np.broadcast_arrays(np.abs(a.astype(np.float64) - za), np.abs(b.astype(np.float64) - zb))
    err = (da + db) * 2.0 ** -(shift + 1)
    assert np.all(np.abs(got - ideal) <= 0.5 + err + TINY)


@CASES
@given(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), log_uniform(1e-6, 1e3), st.integers(1, 52))
def test_add_multipliers(sa, sb, so, bits):
    """One shared shift, |m| < 2^bits, nearest integers, and no larger shift would fit."""
    ma, mb, shift = add_multipliers(sa, sb, so, bits)
    assert max(abs(ma), abs(mb)) < 2 ** bits and shift <= 63
    for m, s in ((ma, sa), (mb, sb)):
        exact = s / so * 2.0 ** shift
        assert abs(m - exact) <= 0.5 and (m == 0 or np.sign(m) == np.sign(s))
    top = max(abs(sa), abs(sb)) / so
    if top and shift < 63:
        assert round(top * 2.0 ** (shift + 1)) >= 2 ** bits  # shift + 1 would not fit


def test_add_multipliers_edges():
    assert add_multipliers(0.0, 0.0, 1.0) == (0, 0, 0)
    assert add_multipliers(1.0, -1.0, 1.0) == (2 ** 30, -(2 ** 30), 30)
    ma, mb, shift = add_multipliers(1e-30, 1e-31, 1.0)  # capped at round_shift's range
    assert shift == 63 and ma == round(1e-30 * 2.0 ** 63)
    with pytest.raises(ValueError):
        add_multipliers(1.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        add_multipliers(1.0, 1.0, 1.0, bits=53)


# ------------------------------------------------------------------------ mul

@CASES
@given(broadcast_pair(), output(), mult_shift(28, -2), st.integers(0, 2))
def test_mul_exact(pair, out, ms, mode):
    (a, _, za), (b, _, zb) = pair
    (mult,), shift = ms
    dtype, zo, lo, hi = out
    got = mul_int(a, za, b, zb, mult, shift, zo, lo, hi, mode, dtype)
    want = ref_map(lambda u, v: clamp(zo + ref_round_shift((u - za) * (v - zb) * mult, shift, mode), lo, hi),
                   a, b)
    assert got.dtype == dtype and got.shape == np.broadcast_shapes(a.shape, b.shape)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@CASES
@given(broadcast_pair(), output(clip=False), log_uniform(1e-3, 1.0), log_uniform(1e-3, 1.0),
       log_uniform(1 / 8, 8), st.integers(0, 2))
def test_mul_float(pair, out, sa, sb, ratio_o, mode):
    """Dequantized Mul within 0.5 LSB + the multiplier's error (31-bit multiplier).  The
    output scale fits the product's range to the output's (times 1/8 .. 8)."""
    (a, ta, za), (b, tb, zb) = pair
    dtype, zo, lo, hi = out
    so = sa * sb * 2 ** (bits(ta) + bits(tb) - 2 - bits(dtype)) * ratio_o
    mult, shift = (int(v) for v in quantize_multiplier(sa * sb / so))
    got = mul_int(a, za, b, zb, mult, shift, zo, lo, hi, mode, dtype).astype(np.int64)
    y = run_node("Mul", [dequant(a, sa, za), dequant(b, sb, zb)])[0]
    ideal = np.clip(y / so + zo, lo, hi)
    prod = np.abs((a.astype(np.float64) - za) * (b.astype(np.float64) - zb))
    err = prod * abs(mult * 2.0 ** -shift - sa * sb / so)
    assert np.all(np.abs(got - ideal) <= 0.5 + err + TINY * (1 + prod * sa * sb / so))


def test_mul_refuses_int64_overflow():
    a = np.array([-32768, 32767], np.int16)
    with pytest.raises(ValueError, match="overflows int64"):
        mul_int(a, 32767, a, 32767, 2 ** 32, 40, 0, -128, 127, 0, np.int8)
    # any 16-bit operands with a 31-bit multiplier fit: (2^16 - 1)^2 (2^31 - 1) < 2^63
    mul_int(a, 32767, a, 32767, 2 ** 31 - 1, 40, 0, -128, 127, 0, np.int8)


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e6, 1e6, width=32)),
       dtype=st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]),
       scale=st.floats(0.0009765625, 10.0, width=32), zp_frac=st.floats(0.0, 1.0))
def test_quantize_float_is_onnx_quantize_linear(x, dtype, scale, zp_frac):
    """Bit for bit onnxruntime's QuantizeLinear rule as onnx's reference executor runs it: the
    float32 division, rint half to even (ties included: ``x`` on half steps), saturation."""
    info = np.iinfo(dtype)
    zp = int(info.min + round(zp_frac * (int(info.max) - int(info.min))))
    x = np.concatenate([x, (np.arange(-40, 40) + 0.5).astype(np.float32) * np.float32(scale)])
    want = run_node("QuantizeLinear", [x, np.array(scale, np.float32), np.array(zp, dtype)], {}, opset=13)[0]
    got = quantize_float(x, scale, zp, dtype)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]), n=st.integers(1, 300),
       scale=st.floats(0.0009765625, 10.0, width=32), zp_frac=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_dequantize_codes_is_onnx_dequantize_linear(dtype, n, scale, zp_frac, seed):
    info = np.iinfo(dtype)
    zp = int(info.min + round(zp_frac * (int(info.max) - int(info.min))))
    q = np.random.default_rng(seed).integers(info.min, int(info.max) + 1, n).astype(dtype)
    want = run_node("DequantizeLinear", [q, np.array(scale, np.float32), np.array(zp, dtype)], {}, opset=13)[0]
    got = dequantize_codes(q, scale, zp)
    assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)
