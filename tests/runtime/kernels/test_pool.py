"""Integer pooling kernels: bit-exact against plain-loop references written here, and
against the float ONNX ops of ``ptqc.runtime.reference`` (MaxPool exactly; AveragePool /
GlobalAveragePool run in float64 on the dequantized inputs, so that float noise stays far
below the requantization's half LSB, plus the 2^-31 relative error of the multiplier)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intref import int_tensor, ref_round_shift
from ptqc.runtime.kernels.pool import avg_pool_int, global_avg_pool_int, max_pool_int, requantize_by_count
from ptqc.runtime.kernels.requant import quantize_multiplier
from ptqc.runtime.reference import run_node

DTYPES = [np.int8, np.uint8, np.int16]
CASES = settings(max_examples=200, deadline=None)


# ------------------------------------------------------------------------ references

def ref_requant(acc, mult, shift, zp_out, lo, hi, mode) -> np.ndarray:
    """Elementwise clamp(zp_out + round(acc * mult / 2^shift), lo, hi) on Python ints."""
    flat = [min(hi, max(lo, zp_out + ref_round_shift(int(a) * int(m), int(s), mode)))
            for a, m, s in zip(np.ravel(acc), np.ravel(mult), np.ravel(shift))]
    return np.array(flat, np.int64).reshape(np.shape(acc))


def out_len(n: int, k: int, s: int, pb: int, pe: int, d: int, ceil_mode: bool) -> int:
    """ONNX pooling output length (ceil_mode: the last window must start before the end pad)."""
    span = n + pb + pe - (k - 1) * d - 1
    if not ceil_mode:
        return span // s + 1
    o = -(-span // s) + 1
    return o - 1 if (o - 1) * s >= n + pb else o


def ref_pool(x, kernel, strides, pads, dilations, out_sp, reduce):
    """Plain loops: ``reduce(inside, n_padded, n_taps)`` per window, with ``inside`` the values
    of the taps inside the input and ``n_padded`` the taps inside the padded input."""
    n_sp = x.ndim - 2
    in_sp = x.shape[2:]
    out = np.zeros(x.shape[:2] + tuple(out_sp), np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for o in itertools.product(*[range(v) for v in out_sp]):
            inside, n_padded = [], 0
            for t in itertools.product(*[range(v) for v in kernel]):
                pos = [o[j] * strides[j] - pads[j] + t[j] * dilations[j] for j in range(n_sp)]
                if all(0 <= pos[j] < in_sp[j] for j in range(n_sp)):
                    inside.append(int(x[(n, c) + tuple(pos)]))
                if all(-pads[j] <= pos[j] < in_sp[j] + pads[n_sp + j] for j in range(n_sp)):
                    n_padded += 1
            out[(n, c) + o] = reduce(inside, n_padded)
    return out


# ------------------------------------------------------------------------ strategies

@st.composite
def pool_case(draw, dilated: bool):
    n_sp = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + tuple(
        draw(st.integers(1, 8)) for _ in range(n_sp))
    kernel = [draw(st.integers(1, 4)) for _ in range(n_sp)]
    strides = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    dilations = [draw(st.integers(1, 3)) if dilated else 1 for _ in range(n_sp)]
    pads = [draw(st.integers(0, kernel[j % n_sp] - 1)) for j in range(2 * n_sp)]
    ceil_mode = draw(st.booleans())
    x = draw(int_tensor(shape, dtype))
    return x, kernel, strides, pads, dilations, ceil_mode


def out_spatial(x, kernel, strides, pads, dilations, ceil_mode) -> list[int]:
    n_sp = x.ndim - 2
    return [out_len(x.shape[2 + j], kernel[j], strides[j], pads[j], pads[n_sp + j], dilations[j], ceil_mode)
            for j in range(n_sp)]


def zero_point(draw, dtype) -> int:
    info = np.iinfo(dtype)
    return draw(st.integers(int(info.min), int(info.max)))


# --------------------------------------------------------------------------- MaxPool

@CASES
@given(pool_case(dilated=True))
def test_max_pool_matches_loops_and_float_maxpool(case):
    x, kernel, strides, pads, dilations, ceil_mode = case
    out_sp = out_spatial(*case)
    if min(out_sp) < 1:
        with pytest.raises(ValueError, match="empty"):
            max_pool_int(x, kernel, strides, pads, dilations, ceil_mode)
        return
    y = max_pool_int(x, kernel, strides, pads, dilations, ceil_mode)
    low = int(np.iinfo(x.dtype).min)
    want = ref_pool(x, kernel, strides, pads, dilations, out_sp, lambda v, _: max(v, default=low))
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, want)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=int(ceil_mode))
    ref = run_node("MaxPool", [x.astype(np.float32)], attrs)[0]
    np.testing.assert_array_equal(y, np.where(np.isneginf(ref), low, ref))


# ----------------------------------------------------------------------- AveragePool

@CASES
@given(pool_case(dilated=False), st.data())
def test_avg_pool_matches_loops_and_float_averagepool(case, data):
    x, kernel, strides, pads, _, ceil_mode = case
    include_pad = data.draw(st.booleans())
    zp = zero_point(data.draw, x.dtype)
    out_sp = out_spatial(*case)
    if min(out_sp) < 1:
        with pytest.raises(ValueError, match="empty"):
            avg_pool_int(x, zp, kernel, strides, pads, ceil_mode, include_pad)
        return
    acc, count = avg_pool_int(x, zp, kernel, strides, pads, ceil_mode, include_pad)
    ones = [1] * len(kernel)
    want_acc = ref_pool(x, kernel, strides, pads, ones, out_sp, lambda v, _: sum(v) - zp * len(v))
    n_in = ref_pool(x, kernel, strides, pads, ones, out_sp, lambda v, _: len(v))
    n_pad = ref_pool(x, kernel, strides, pads, ones, out_sp, lambda _, m: m)
    assert acc.dtype == count.dtype == np.int64
    np.testing.assert_array_equal(acc, want_acc)
    np.testing.assert_array_equal(count, n_pad if include_pad else n_in)

    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=int(ceil_mode),
                 count_include_pad=int(include_pad))
    # ONNX's divisor: the float AveragePool of ones is (elements inside the input) / divisor
    ones_avg = run_node("AveragePool", [np.ones(x.shape, np.float64)], attrs)[0]
    valid = n_in > 0
    np.testing.assert_allclose(ones_avg[valid], (n_in / count)[valid], rtol=1e-12)

    # requantized: bit-exact vs Python ints, within half an LSB of the float op (+ float noise)
    in_scale = data.draw(st.floats(1e-3, 1.0))
    out_scale = in_scale * data.draw(st.floats(0.05, 4.0))
    out_dtype = data.draw(st.sampled_from(DTYPES))
    zp_out = zero_point(data.draw, out_dtype)
    lo, hi = int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)
    mode = data.draw(st.integers(0, 2))
    real = np.concatenate([[0.0], in_scale / (out_scale * np.arange(1, count.max() + 1))])
    mult, shift = quantize_multiplier(real)
    q = requantize_by_count(acc, count, mult, shift, zp_out, lo, hi, mode, out_dtype)
    assert q.dtype == out_dtype
    np.testing.assert_array_equal(q, ref_requant(acc, mult[count], shift[count], zp_out, lo, hi, mode))
    xf = in_scale * (x.astype(np.float64) - zp)
    ref = run_node("AveragePool", [xf], attrs)[0]
    ref_q = np.clip(zp_out + ref / out_scale, lo, hi)
    err = np.abs(q - ref_q)[valid]
    assert err.size == 0 or err.max() <= 0.5 + 1e-3, err.max()


# ----------------------------------------------------------------- GlobalAveragePool

@CASES
@given(st.sampled_from(DTYPES), st.lists(st.integers(1, 5), min_size=3, max_size=5), st.data())
def test_global_avg_pool_matches_sum_and_float(dtype, shape, data):
    x = data.draw(int_tensor(tuple(shape), dtype))
    zp = zero_point(data.draw, dtype)
    acc = global_avg_pool_int(x, zp)
    size = int(np.prod(shape[2:]))
    want = np.zeros((shape[0], shape[1]) + (1,) * (len(shape) - 2), np.int64)
    for idx in np.ndindex(*shape):
        want[idx[:2]] += int(x[idx]) - zp
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, want)

    in_scale = data.draw(st.floats(1e-3, 1.0))
    out_scale = in_scale * data.draw(st.floats(0.05, 4.0))
    zp_out = zero_point(data.draw, dtype)
    lo, hi = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    mode = data.draw(st.integers(0, 2))
    mult, shift = quantize_multiplier(np.concatenate([[0.0], in_scale / (out_scale * np.arange(1, size + 1))]))
    count = np.full(acc.shape, size, np.int64)
    q = requantize_by_count(acc, count, mult, shift, zp_out, lo, hi, mode, dtype)
    np.testing.assert_array_equal(q, ref_requant(acc, mult[count], shift[count], zp_out, lo, hi, mode))
    xf = in_scale * (x.astype(np.float64) - zp)
    ref = run_node("GlobalAveragePool", [xf], {})[0]
    assert np.abs(q - np.clip(zp_out + ref / out_scale, lo, hi)).max() <= 0.5 + 1e-3


# ------------------------------------------------------------------ requantize_by_count

@CASES
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from(DTYPES), st.integers(0, 2), st.booleans(), st.data())
def test_requantize_by_count_matches_python_ints(seed, dtype, mode, small_mult, data):
    """Random tables; small multipliers and shifts make rounding ties frequent."""
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(1, 40))
    mult = rng.integers(0, 4, n) if small_mult else rng.integers(2 ** 30, 2 ** 31, n)
    shift = rng.integers(-2, 4, n) if small_mult else rng.integers(20, 45, n)
    acc = rng.integers(-2 ** 31, 2 ** 31, 50) if not small_mult else rng.integers(-1000, 1000, 50)
    count = rng.integers(0, n, 50)
    info = np.iinfo(dtype)
    zp_out = data.draw(st.integers(int(info.min), int(info.max)))
    q = requantize_by_count(acc, count, mult, shift, zp_out, int(info.min), int(info.max), mode, dtype)
    assert q.dtype == dtype
    np.testing.assert_array_equal(
        q, ref_requant(acc, mult[count], shift[count], zp_out, int(info.min), int(info.max), mode))


# ------------------------------------------------------------------------- refusals

def test_unsupported_inputs_raise():
    x5 = np.zeros((1, 1, 2, 2, 2), np.int8)
    with pytest.raises(ValueError, match="1-D and 2-D"):
        max_pool_int(x5, [1, 1, 1], [1, 1, 1], [0] * 6, [1, 1, 1], 0)
    with pytest.raises(ValueError, match="1-D and 2-D"):
        avg_pool_int(x5, 0, [1, 1, 1], [1, 1, 1], [0] * 6, 0, 0)
    x = np.zeros((1, 1, 4, 4), np.int8)
    with pytest.raises(ValueError, match="do not match"):
        max_pool_int(x, [2], [1], [0, 0], [1], 0)
    with pytest.raises(ValueError, match="pads >= 0"):
        max_pool_int(x, [2, 2], [1, 1], [-1, 0, 0, 0], [1, 1], 0)
    with pytest.raises(ValueError, match="integer"):
        max_pool_int(x.astype(np.float32), [2, 2], [1, 1], [0] * 4, [1, 1], 0)
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        global_avg_pool_int(np.zeros((2, 3), np.int8), 0)
    with pytest.raises(ValueError, match="outside the tables"):
        requantize_by_count(np.zeros(3, np.int64), np.array([0, 1, 5]), np.ones(5), np.ones(5), 0, -128, 127, 0,
                            np.int8)
