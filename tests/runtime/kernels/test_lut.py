"""Lookup-table kernels: tables and lookups bit-exact against Python-int references written
here; the table functions are the float ONNX ops of ``ptqc.runtime.reference``; the 16-bit
interpolated result against the exact per-code table within a measured bound per L.

``INTERP_BOUNDS`` (max |interpolated - exact| in output LSB over all 65536 int16 codes, int16
output whose range just covers the function on the input range; L = 8, 9, 10, 11, 12):

- Sigmoid [-8, 8], Tanh [-4, 4]: 4, 2, 1, 1, 1
- Gelu [-6, 6], Silu [-8, 8], Erf [-3, 3]: 3, 1, 1, 1, 1;  Softplus [-8, 8]: 2, 1, 1, 1, 1
- HardSwish [-6, 6] (kinks at ±3 fall on samples): 2, 1, 1, 1, 1;
  HardSwish [-5, 7] (kinks between samples): 46, 23, 11, 6, 3
- Exp [-8, 2]: 13, 4, 1, 1, 1
- Reciprocal [0.25, 4]: 55, 15, 4, 2, 1;  Sqrt [0.25, 16]: 15, 5, 2, 1, 1;
  Log [0.25, 16]: 95, 26, 8, 2, 1

Each is also checked against the rigorous bound ``floor(1.5 + 4^step_log2 / 8 · max|Δ²y|)``
(``Δ²y`` the second difference of the exact output per input code, unrounded).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from intref import ref_round_shift
from ptqc.runtime.kernels.lut import apply_table, apply_table_interp, interp_step_log2, make_table
from ptqc.runtime.reference import run_node

CASES = settings(max_examples=200, deadline=None)


def onnx_op(name: str):
    return lambda x: run_node(name, [np.asarray(x, np.float64)])[0]


def silu(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return run_node("Mul", [x, run_node("Sigmoid", [x])[0]])[0]


# name -> (fn, input range for the accuracy sweep); positive-range fns are NaN/inf below 0.
FNS = {
    "Sigmoid": (onnx_op("Sigmoid"), (-8, 8)),
    "Tanh": (onnx_op("Tanh"), (-4, 4)),
    "Exp": (onnx_op("Exp"), (-8, 2)),
    "Gelu": (onnx_op("Gelu"), (-6, 6)),
    "HardSwish": (onnx_op("HardSwish"), (-6, 6)),
    "HardSwish_offgrid": (onnx_op("HardSwish"), (-5, 7)),
    "Silu": (silu, (-8, 8)),
    "Softplus": (onnx_op("Softplus"), (-8, 8)),
    "Erf": (onnx_op("Erf"), (-3, 3)),
    "Reciprocal": (onnx_op("Reciprocal"), (0.25, 4)),
    "Sqrt": (onnx_op("Sqrt"), (0.25, 16)),
    "Log": (onnx_op("Log"), (0.25, 16)),
}
POSITIVE = {"Reciprocal", "Sqrt", "Log"}
INTERP_BOUNDS = {  # L = 8 .. 12
    "Sigmoid": (4, 2, 1, 1, 1), "Tanh": (4, 2, 1, 1, 1), "Exp": (13, 4, 1, 1, 1),
    "Gelu": (3, 1, 1, 1, 1), "HardSwish": (2, 1, 1, 1, 1), "HardSwish_offgrid": (46, 23, 11, 6, 3),
    "Silu": (3, 1, 1, 1, 1), "Softplus": (2, 1, 1, 1, 1), "Erf": (3, 1, 1, 1, 1),
    "Reciprocal": (55, 15, 4, 2, 1), "Sqrt": (15, 5, 2, 1, 1), "Log": (95, 26, 8, 2, 1),
}


# ------------------------------------------------------------------------ references

def ref_table(fn, in_scale, in_zp, codes, out_scale, out_zp, out_qmin, out_qmax) -> np.ndarray:
    """Per code: clamp(round_half_even(fn(x) / out_scale) + out_zp) with Python's round."""
    ys = fn(np.array([in_scale * (k - in_zp) for k in codes], np.float64))
    big = 2.0 ** 62
    return np.array([min(out_qmax, max(out_qmin, round(min(big, max(-big, y / out_scale))) + out_zp))
                     for y in ys.tolist()], np.int64)


def ref_interp(q, table, in_qmin, step_log2, lo, hi, mode) -> np.ndarray:
    out = []
    for v in np.ravel(q).tolist():
        d = v - in_qmin
        i, f = d // 2 ** step_log2, d % 2 ** step_log2
        t0, t1 = int(table[i]), int(table[i + 1])
        out.append(min(hi, max(lo, t0 + ref_round_shift((t1 - t0) * f, step_log2, mode))))
    return np.array(out, np.int64).reshape(np.shape(q))


# ------------------------------------------------------------------------ strategies

@st.composite
def table_params(draw, dtype):
    """(fn name, in_scale, in_zp, out dtype, out_scale, out_zp, out_qmin, out_qmax): the
    output either fits the function's range on the codes (times 1 .. 2) or is random
    (scale, zero point and a clipping sub-range)."""
    name = draw(st.sampled_from(sorted(FNS)))
    info = np.iinfo(dtype)
    in_scale = 2.0 ** draw(st.floats(-2, 5)) / 2 ** info.bits  # the codes span 1/4 .. 32
    if name in POSITIVE:  # keep every sampled code at x > 0 (the code one past qmax too)
        in_zp = int(info.min) - draw(st.integers(1, 1 << info.bits))
    else:
        in_zp = draw(st.integers(int(info.min), int(info.max)))
    out_dtype = draw(st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]))
    out_info = np.iinfo(out_dtype)
    if draw(st.booleans()):
        y = FNS[name][0](in_scale * (np.arange(int(info.min), int(info.max) + 2) - in_zp))
        out_scale = max(y.max() - y.min(), 1e-6) / (2 ** out_info.bits - 1) * draw(st.floats(1, 2))
        out_zp = round(int(out_info.min) - y.min() / out_scale)
        return name, in_scale, in_zp, out_dtype, out_scale, out_zp, int(out_info.min), int(out_info.max)
    out_qmin, out_qmax = sorted(draw(st.integers(int(out_info.min), int(out_info.max))) for _ in range(2))
    out_scale = 2.0 ** draw(st.floats(-16, 2))
    out_zp = draw(st.integers(int(out_info.min), int(out_info.max)))
    return name, in_scale, in_zp, out_dtype, out_scale, out_zp, out_qmin, out_qmax


@st.composite
def codes(draw, dtype):
    info = np.iinfo(dtype)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=6))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    q = rng.integers(info.min, info.max, shape, endpoint=True)
    edge = rng.random(shape) < 0.2
    return np.where(edge, rng.choice([info.min, info.max], shape), q).astype(dtype)


# ------------------------------------------------------------------------ 8-bit: one entry per code

@CASES
@given(st.data(), st.sampled_from([np.int8, np.uint8]))
def test_table_8bit_exact(data, dtype):
    name, in_scale, in_zp, out_dtype, out_scale, out_zp, out_qmin, out_qmax = data.draw(table_params(dtype))
    fn = FNS[name][0]
    info = np.iinfo(dtype)
    qmin, qmax = int(info.min), int(info.max)
    table = make_table(fn, in_scale, in_zp, qmin, qmax, out_scale, out_zp, out_qmin, out_qmax)
    want = ref_table(fn, in_scale, in_zp, range(qmin, qmax + 1), out_scale, out_zp, out_qmin, out_qmax)
    assert table.dtype == np.int64
    np.testing.assert_array_equal(table, want)
    q = data.draw(codes(dtype))
    got = apply_table(q, table, qmin, out_dtype)
    assert got.dtype == out_dtype and got.shape == q.shape
    looked_up = np.array([want[v - qmin] for v in q.ravel().tolist()], np.int64).reshape(q.shape)
    np.testing.assert_array_equal(got.astype(np.int64), looked_up)


def test_table_matches_the_float_op():
    """Int8 Sigmoid: the table is the rounded float op on the dequantized codes."""
    q = np.arange(-128, 128, dtype=np.int8)
    table = make_table(FNS["Sigmoid"][0], 0.0625, 3, -128, 127, 1 / 256, -128, -128, 127)
    y = run_node("Sigmoid", [0.0625 * (q.astype(np.float64) - 3)])[0]
    got = apply_table(q, table, -128, np.int8).astype(np.int64)
    assert np.all(np.abs(got - np.clip(y * 256 - 128, -128, 127)) <= 0.5)


# ------------------------------------------------------------------------ 16-bit: interpolation

@CASES
@given(st.data(), st.sampled_from([np.int16, np.uint16, np.int8, np.uint8]), st.integers(0, 2))
def test_interp_exact(data, dtype, mode):
    """Sampled table and interpolated lookup, bit-exact; lo/hi may clip inside the table."""
    name, in_scale, in_zp, out_dtype, out_scale, out_zp, out_qmin, out_qmax = data.draw(table_params(dtype))
    fn = FNS[name][0]
    info = np.iinfo(dtype)
    qmin, qmax = int(info.min), int(info.max)
    log2_entries = data.draw(st.integers(8, 12) if info.bits == 16 else st.integers(1, 8))
    step_log2 = interp_step_log2(qmin, qmax, log2_entries)
    table = make_table(fn, in_scale, in_zp, qmin, qmax, out_scale, out_zp, out_qmin, out_qmax, log2_entries)
    sample_codes = [qmin + (i << step_log2) for i in range(2 ** log2_entries + 1)]
    assert sample_codes[-1] == qmax + 1
    np.testing.assert_array_equal(table, ref_table(fn, in_scale, in_zp, sample_codes, out_scale, out_zp,
                                                   out_qmin, out_qmax))
    out_info = np.iinfo(out_dtype)
    lo, hi = int(out_info.min), int(out_info.max)
    if data.draw(st.booleans()):
        lo, hi = sorted(data.draw(st.integers(lo, hi)) for _ in range(2))
    q = data.draw(codes(dtype))
    got = apply_table_interp(q, table, qmin, step_log2, lo, hi, mode, out_dtype)
    assert got.dtype == out_dtype and got.shape == q.shape
    np.testing.assert_array_equal(got.astype(np.int64), ref_interp(q, table, qmin, step_log2, lo, hi, mode))


@pytest.mark.parametrize("mode, want", [(0, [0, 1, 3, 3, -1, -5]), (1, [0, 0, 3, 3, -2, -5]),
                                         (2, [0, 1, 3, 2, -2, -6])])
def test_interp_rounding_ties(mode, want):
    """Halfway between samples (step 2 codes), the increments 1/2, 4/2, -5/2, -3/2, -5/2
    round by ``mode``: up, to even, away from zero."""
    table = np.array([0, 1, 5, 0, -3, -8])
    q = np.array([0, 1, 3, 5, 7, 9]) - 4  # d = q + 4: a sample, then midpoints
    got = apply_table_interp(q, table, -4, 1, -128, 127, mode, np.int8)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, ref_interp(q, table, -4, 1, -128, 127, mode))


def sweep_qparams(fn, x_range) -> tuple[float, int, float, int]:
    """int16 in/out quantization: input [x0, x1) over all codes, output range = the function's
    range on the sampled codes (plus 1/256 margin, so nothing clips)."""
    x0, x1 = x_range
    in_scale = (x1 - x0) / 65536
    in_zp = round(-32768 - x0 / in_scale)
    y = fn(in_scale * (np.arange(-32768, 32769) - in_zp))
    pad = (y.max() - y.min()) / 256
    out_scale = (y.max() - y.min() + 2 * pad) / 65535
    return in_scale, in_zp, out_scale, round(-32768 - (y.min() - pad) / out_scale)


@pytest.mark.parametrize("name", sorted(FNS))
def test_interp_accuracy(name):
    """Every int16 code, L = 8..12: |interp - exact per-code| <= INTERP_BOUNDS and the formula."""
    fn, x_range = FNS[name]
    in_scale, in_zp, out_scale, out_zp = sweep_qparams(fn, x_range)
    q = np.arange(-32768, 32768, dtype=np.int16)
    exact = make_table(fn, in_scale, in_zp, -32768, 32767, out_scale, out_zp, -32768, 32767)
    curvature = np.abs(np.diff(fn(in_scale * (np.arange(-32768, 32769) - in_zp)) / out_scale, 2)).max()
    measured = []
    for log2_entries in range(8, 13):
        step_log2 = interp_step_log2(-32768, 32767, log2_entries)
        table = make_table(fn, in_scale, in_zp, -32768, 32767, out_scale, out_zp, -32768, 32767, log2_entries)
        got = apply_table_interp(q, table, -32768, step_log2, -32768, 32767, 1, np.int16)
        measured.append(int(np.abs(got.astype(np.int64) - exact).max()))
        assert measured[-1] <= math.floor(1.5 + 4.0 ** step_log2 / 8 * curvature + 1e-9)
    assert all(m <= b for m, b in zip(measured, INTERP_BOUNDS[name])), measured


# ------------------------------------------------------------------------ refusals

def test_refusals_and_saturation():
    with pytest.raises(ValueError, match="NaN"), np.errstate(invalid="ignore", divide="ignore"):
        make_table(np.log, 0.1, 0, -128, 127, 0.1, 0, -128, 127)
    with pytest.raises(ValueError, match="power of two"):
        make_table(np.tanh, 0.1, 0, -100, 127, 0.1, 0, -128, 127, 4)
    with pytest.raises(ValueError, match="log2_entries"):
        make_table(np.tanh, 0.1, 0, -128, 127, 0.1, 0, -128, 127, 9)
    table = make_table(np.tanh, 0.1, 0, -8, 7, 0.1, 0, -128, 127)
    with pytest.raises(ValueError, match="outside the table"):
        apply_table(np.array([8]), table, -8, np.int8)
    with pytest.raises(ValueError, match="outside the table"):
        apply_table_interp(np.array([-9]), table, -8, 0, -128, 127, 0, np.int8)
    with np.errstate(divide="ignore"):  # 1/0 = inf saturates
        assert make_table(np.reciprocal, 0.5, 0, -2, 1, 0.25, 0, -128, 127).tolist() == [-4, -8, 127, 8]
