"""Integer softmax: the exp table and the kernel bit-exact against Python-int references
written here, and against the float ONNX Softmax of ``ptqc.runtime.reference`` on the
dequantized input within ``0.5 + 0.5 · max(1, n - 1) / (2^frac_bits · out_scale) + 2^-17`` LSB
(the module's documented bound; 1 LSB for 8-bit outputs, frac_bits = 15, n <= 128)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ptqc.runtime.kernels.softmax import K_BITS, make_exp_table, softmax_int
from ptqc.runtime.reference import run_node

DTYPES = [np.int8, np.uint8, np.int16, np.uint16]
CASES = settings(max_examples=200, deadline=None)


# ------------------------------------------------------------------------ references

def ref_exp_table(in_scale: float, frac_bits: int, max_len: int) -> np.ndarray:
    """Entries round_half_even(exp(-in_scale · d) · 2^frac_bits) until one is 0 or max_len."""
    ys = np.exp(-in_scale * np.arange(max_len, dtype=np.float64)).tolist()
    table = []
    for y in ys:
        v = round(y * 2 ** frac_bits)
        if v == 0:
            break
        table.append(v)
    return np.array(table, np.int64)


def ref_softmax(q, axis, table, out_scale, out_zp, lo, hi) -> np.ndarray:
    """Per 1-D slice on Python ints: e = E[max - q] (0 past the table), round half up of
    e · K / (S · 2^G) as floor((2 e K + S 2^G) / (2 S 2^G))."""
    k = round(2 ** K_BITS / out_scale)
    rows = np.moveaxis(q.astype(np.int64), axis, -1)
    out = np.empty(rows.shape, np.int64)
    for idx in np.ndindex(rows.shape[:-1]):
        row = [int(v) for v in rows[idx]]
        e = [int(table[max(row) - v]) if max(row) - v < len(table) else 0 for v in row]
        den = sum(e) * 2 ** K_BITS
        out[idx] = [min(hi, max(lo, out_zp + (2 * ei * k + den) // (2 * den))) for ei in e]
    return np.moveaxis(out, -1, axis)


# ------------------------------------------------------------------------ strategies

@st.composite
def logits(draw):
    """(codes, dtype, axis): uniform codes, or codes piled near the top (long tails of ties)."""
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=6))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if draw(st.booleans()):
        q = rng.integers(info.min, info.max, shape, endpoint=True)
    else:
        q = info.max - rng.integers(0, 40, shape)
    return q.astype(dtype), dtype, draw(st.integers(-len(shape), len(shape) - 1))


@st.composite
def output(draw):
    """(dtype, out_scale, zp, lo, hi): the usual 1/2^bits, 1/(2^bits - 1) or a random scale."""
    dtype = draw(st.sampled_from(DTYPES))
    info = np.iinfo(dtype)
    span = 2.0 ** info.bits
    out_scale = draw(st.sampled_from([1 / span, 1 / (span - 1)]) | st.floats(1 / 65535, 1.0))
    zp = draw(st.sampled_from([int(info.min)]) | st.integers(int(info.min), int(info.max)))
    if draw(st.booleans()):
        return dtype, out_scale, zp, int(info.min), int(info.max)
    lo, hi = sorted(draw(st.integers(int(info.min), int(info.max))) for _ in range(2))
    return dtype, out_scale, zp, lo, hi


def log_uniform(lo: float, hi: float):
    return st.floats(math.log2(lo), math.log2(hi)).map(lambda e: 2.0 ** e)


# ------------------------------------------------------------------------ tests

@CASES
@given(log_uniform(2 ** -10, 4.0), st.integers(0, 30), st.sampled_from([65536]) | st.integers(1, 4096))
def test_exp_table_exact(in_scale, frac_bits, max_len):
    table = make_exp_table(in_scale, frac_bits, max_len)
    assert table.dtype == np.int64 and table[0] == 2 ** frac_bits
    np.testing.assert_array_equal(table, ref_exp_table(in_scale, frac_bits, max_len))


@CASES
@given(logits(), output(), log_uniform(1e-4, 1.0), st.integers(0, 30), st.integers(1, 300))
def test_softmax_exact(x, out, in_scale, frac_bits, max_len):
    """Any table (also cut short by max_len: codes past it count 0), clipping lo/hi."""
    q, _, axis = x
    dtype, out_scale, out_zp, lo, hi = out
    table = make_exp_table(in_scale, frac_bits, max_len)
    got = softmax_int(q, axis, table, out_scale, out_zp, lo, hi, dtype)
    assert got.dtype == dtype and got.shape == q.shape
    want = ref_softmax(q, axis, table, out_scale, out_zp, lo, hi)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@CASES
@given(logits(), output(), log_uniform(1e-3, 1.0), st.integers(-300, 300), st.integers(8, 30))
def test_softmax_float(x, out, in_scale, in_zp, frac_bits):
    """Against the float Softmax (opset 13, one axis) within the documented bound."""
    q, _, axis = x
    dtype, out_scale, out_zp, lo, hi = out
    got = softmax_int(q, axis, make_exp_table(in_scale, frac_bits), out_scale, out_zp, lo, hi, dtype)
    y = run_node("Softmax", [in_scale * (q.astype(np.float64) - in_zp)], {"axis": axis})[0]
    ideal = np.clip(y / out_scale + out_zp, lo, hi)
    n = q.shape[axis]
    bound = 0.5 + 0.5 * max(1, n - 1) / (2 ** frac_bits * out_scale) + 2.0 ** -17 + 1e-9
    assert np.abs(got.astype(np.int64) - ideal).max() <= bound


def test_softmax_8bit_within_one_lsb():
    """int8 logits, uint8 probabilities (scale 1/256), frac_bits 15, n = 128: <= 1 LSB."""
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (64, 128)).astype(np.int8)
    got = softmax_int(q, -1, make_exp_table(0.08), 1 / 256, 0, 0, 255, np.uint8).astype(np.int64)
    y = run_node("Softmax", [0.08 * q.astype(np.float64)], {"axis": -1})[0]
    assert np.abs(got - np.clip(y * 256, 0, 255)).max() <= 1


def test_softmax_k_is_rounded():
    """n = 1 gives K / 2^16 rounded half up: K = rint(2^16 / out_scale) = 100.5 · 2^16 here
    (floor would give 100.49998 and 100)."""
    out_scale = 2 ** 16 / (100.5 * 2 ** 16 - 0.4)
    q = np.array([[7], [-3]], np.int8)
    got = softmax_int(q, 1, make_exp_table(0.1), out_scale, -5, -128, 127, np.int8)
    np.testing.assert_array_equal(got, [[96], [96]])


def test_softmax_refusals():
    table = make_exp_table(0.1, 30)
    with pytest.raises(ValueError, match="overflows int64"):
        softmax_int(np.zeros(2 ** 18, np.int16), 0, table, 1 / 65535, 0, -32768, 32767, np.int16)
    softmax_int(np.zeros(2 ** 16, np.int16), 0, table, 1 / 65535, 0, -32768, 32767, np.int16)
    with pytest.raises(ValueError, match="axis"):
        softmax_int(np.zeros((2, 3), np.int8), 2, table, 1 / 256, 0, -128, 127, np.int8)
    with pytest.raises(ValueError, match="exp_table"):
        softmax_int(np.zeros(3, np.int8), 0, np.array([0, 1]), 1 / 256, 0, -128, 127, np.int8)
    with pytest.raises(ValueError, match="frac_bits"):
        make_exp_table(0.1, 31)
    assert softmax_int(np.zeros((0, 3), np.int8), 1, table, 1 / 256, 0, -128, 127, np.int8).shape == (0, 3)
