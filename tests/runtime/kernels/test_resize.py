"""Integer Resize kernels: bit-exact against plain-loop references written here, and against
the float ONNX Resize of ``ptqc.runtime.reference`` (nearest exactly; linear within the
documented fixed-point bound plus the requantization's half LSB)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from intref import int_tensor
from ptqc.runtime.kernels.requant import quantize_multiplier, requantize_channels
from ptqc.runtime.kernels.resize import resize_linear_int, resize_nearest_int, source_coords
from ptqc.runtime.reference import run_node

DTYPES = [np.int8, np.uint8, np.int16]
CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_half_pixel_for_nn"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
CASES = settings(max_examples=200, deadline=None)


# ------------------------------------------------------------------------ references

def ref_coord(i: int, out: int, n: int, scale: float, ctm: str) -> float:
    """ONNX Resize coordinate transform of output index ``i`` (the spec's formulas); an axis
    with scale 1 and the same length is not transformed (as onnxruntime)."""
    if scale == 1.0 and out == n:
        return float(i)
    if ctm == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        adjustment = out / (scale * n)
        center = n / 2
        return center * (1 - adjustment) + (i + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out > 1 else 0.0
    if ctm == "align_corners":
        return i * (n - 1) / (out - 1) if out > 1 else 0.0
    if ctm == "asymmetric":
        return i / scale
    assert ctm == "tf_half_pixel_for_nn"
    return (i + 0.5) / scale


def ref_nearest(c: float, mode: str, n: int) -> int:
    lo = math.floor(c)
    frac = c - lo
    if mode == "floor":
        i = lo
    elif mode == "ceil":
        i = math.ceil(c)
    elif frac == 0.5:
        i = lo if mode == "round_prefer_floor" else lo + 1
    else:
        i = lo + (frac > 0.5)
    return min(max(i, 0), n - 1)


def ref_linear_taps(c: float, n: int, frac_bits: int) -> list[tuple[int, int]]:
    """[(index, weight), (index, weight)] of a coordinate clamped to [0, n - 1]."""
    c = min(max(c, 0.0), n - 1.0)
    i0 = math.floor(c)
    w1 = round((c - i0) * 2 ** frac_bits)  # Python's round: half to even
    return [(i0, 2 ** frac_bits - w1), (min(i0 + 1, n - 1), w1)]


def resized_view(x: np.ndarray, r: int) -> np.ndarray:
    """x as (A, *last r axes)."""
    return x.reshape((-1,) + x.shape[x.ndim - r:])


def ref_resize_nearest(x, out_sp, scales, ctm, mode) -> np.ndarray:
    r = len(out_sp)
    in_sp = x.shape[x.ndim - r:]
    xv = resized_view(x, r)
    idx = [[ref_nearest(ref_coord(i, out_sp[j], in_sp[j], scales[j], ctm), mode, in_sp[j])
            for i in range(out_sp[j])] for j in range(r)]
    out = np.zeros((xv.shape[0],) + tuple(out_sp), x.dtype)
    for a in range(xv.shape[0]):
        for o in itertools.product(*[range(v) for v in out_sp]):
            out[(a,) + o] = xv[(a,) + tuple(idx[j][o[j]] for j in range(r))]
    return out.reshape(x.shape[:x.ndim - r] + tuple(out_sp))


def ref_resize_linear(x, zp, out_sp, scales, ctm, frac_bits) -> tuple[np.ndarray, np.ndarray]:
    """(acc, corner spread): acc = sum over corners of prod(weights) * (x - zp) (Python ints),
    spread = max - min of the corner values at each output position."""
    r = len(out_sp)
    in_sp = x.shape[x.ndim - r:]
    xv = resized_view(x, r)
    taps = [[ref_linear_taps(ref_coord(i, out_sp[j], in_sp[j], scales[j], ctm), in_sp[j], frac_bits)
             for i in range(out_sp[j])] for j in range(r)]
    acc = np.zeros((xv.shape[0],) + tuple(out_sp), np.int64)
    spread = np.zeros_like(acc)
    for a in range(xv.shape[0]):
        for o in itertools.product(*[range(v) for v in out_sp]):
            total, vals = 0, []
            for corner in itertools.product(*[taps[j][o[j]] for j in range(r)]):
                v = int(xv[(a,) + tuple(i for i, _ in corner)])
                total += math.prod(w for _, w in corner) * (v - zp)
                vals.append(v)
            acc[(a,) + o] = total
            spread[(a,) + o] = max(vals) - min(vals)
    shape = x.shape[:x.ndim - r] + tuple(out_sp)
    return acc.reshape(shape), spread.reshape(shape)


# ------------------------------------------------------------------------ strategies

NICE_SCALES = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 1 / 3, 2 / 3, 0.6, 1.25]


@st.composite
def resize_case(draw):
    """(x, out_spatial, scales, resize inputs for run_node, ctm): the last r in {1, 2} axes of a
    rank r+2 or r+3 tensor resized, by float32 scales or by sizes."""
    r = draw(st.integers(1, 2))
    lead = [draw(st.integers(1, 2)), draw(st.integers(1, 3))] + [draw(st.integers(1, 2))] * draw(st.integers(0, 1))
    in_sp = [draw(st.integers(1, 7)) for _ in range(r)]
    x = draw(int_tensor(tuple(lead + in_sp), draw(st.sampled_from(DTYPES))))
    if draw(st.booleans()):  # scales input: out = floor(in * scale)
        scales = [float(np.float32(draw(st.sampled_from(NICE_SCALES) | st.floats(0.2, 3.5)))) for _ in range(r)]
        out_sp = [math.floor(n * s) for n, s in zip(in_sp, scales)]
        assume(min(out_sp) >= 1)
        inputs = [None, np.array([1.0] * len(lead) + scales, np.float32), None]
    else:  # sizes input: scale = out / in
        out_sp = [draw(st.integers(1, 12)) for _ in range(r)]
        scales = [o / n for o, n in zip(out_sp, in_sp)]
        inputs = [None, None, np.array(lead + out_sp, np.int64)]
    return x, out_sp, scales, inputs, draw(st.sampled_from(CTMS))


# ---------------------------------------------------------------------------- tests

@CASES
@given(st.integers(1, 20), st.integers(1, 20), st.sampled_from(CTMS), st.booleans(), st.floats(0.1, 5.0))
def test_source_coords_follow_the_spec(out, n, ctm, from_sizes, scale):
    scale = out / n if from_sizes else scale
    c = source_coords(out, n, scale, ctm)
    assert c.dtype == np.float64 and c.shape == (out,)
    np.testing.assert_allclose(c, [ref_coord(i, out, n, scale, ctm) for i in range(out)], rtol=1e-12, atol=1e-12)


@CASES
@given(resize_case(), st.sampled_from(NEAREST))
def test_resize_nearest_matches_loops_and_float_resize(case, nearest_mode):
    x, out_sp, scales, inputs, ctm = case
    y = resize_nearest_int(x, out_sp, scales, ctm, nearest_mode)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, ref_resize_nearest(x, out_sp, scales, ctm, nearest_mode))
    attrs = dict(mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest_mode)
    ref = run_node("Resize", [x.astype(np.float32)] + inputs, attrs, opset=19)[0]
    assert ref.shape == y.shape
    np.testing.assert_array_equal(y, ref)


@CASES
@given(resize_case(), st.integers(0, 14), st.data())
def test_resize_linear_matches_loops_and_float_resize(case, frac_bits, data):
    x, out_sp, scales, inputs, ctm = case
    info = np.iinfo(x.dtype)
    zp = data.draw(st.integers(int(info.min), int(info.max)))
    acc = resize_linear_int(x, zp, out_sp, scales, ctm, frac_bits)
    want, spread = ref_resize_linear(x, zp, out_sp, scales, ctm, frac_bits)
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, want)

    # requantize acc * in_scale / (out_scale * 2^(f k)); M narrow enough that |acc| * M < 2^63
    k = len(out_sp)
    in_scale = data.draw(st.floats(1e-3, 1.0))
    out_scale = in_scale * data.draw(st.floats(0.05, 4.0))
    out_dtype = data.draw(st.sampled_from(DTYPES))
    zp_out = data.draw(st.integers(int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)))
    lo, hi = int(np.iinfo(out_dtype).min), int(np.iinfo(out_dtype).max)
    mode = data.draw(st.integers(0, 2))
    acc_bits = (max(abs(int(info.max) - zp), abs(int(info.min) - zp)) << (frac_bits * k)).bit_length()
    bits = min(31, 62 - acc_bits)
    mult, shift = quantize_multiplier(in_scale / out_scale / 2.0 ** (frac_bits * k), bits)
    q = requantize_channels(acc, mult, shift, zp_out, lo, hi, mode, out_dtype, axis=None)

    xf = in_scale * (x.astype(np.float64) - zp)  # float64: float noise far below the bound
    ref = run_node("Resize", [xf] + inputs, dict(mode="linear", coordinate_transformation_mode=ctm), opset=19)[0]
    assert ref.shape == q.shape
    ref_q = zp_out + ref / out_scale
    ratio = in_scale / out_scale
    bound = (0.5 + ratio * k * 2.0 ** -(frac_bits + 1) * spread  # fixed-point weights + rounding
             + np.abs(ref_q - zp_out) * 2.0 ** -(bits - 1) + 1e-6)  # multiplier precision
    assert np.all(np.abs(q - np.clip(ref_q, lo, hi)) <= bound)


def test_unsupported_inputs_raise():
    x = np.zeros((1, 2, 3, 4), np.int8)
    with pytest.raises(ValueError, match="coordinate_transformation_mode"):
        resize_nearest_int(x, [6, 8], [2.0, 2.0], "tf_crop_and_resize", "floor")
    with pytest.raises(ValueError, match="nearest_mode"):
        resize_nearest_int(x, [6, 8], [2.0, 2.0], "asymmetric", "round")
    with pytest.raises(ValueError, match="last 1 or 2 axes"):
        resize_nearest_int(x, [4, 6, 8], [2.0, 2.0, 2.0], "asymmetric", "floor")
    with pytest.raises(ValueError, match="last 1 or 2 axes"):
        resize_linear_int(np.zeros((2, 3), np.int8), 0, [6], [2.0], "half_pixel")
    with pytest.raises(ValueError, match="last 1 or 2 axes"):
        resize_linear_int(x, 0, [6, 8], [2.0], "half_pixel")
    with pytest.raises(ValueError, match="integer"):
        resize_linear_int(x.astype(np.float32), 0, [6, 8], [2.0, 2.0], "half_pixel")
    with pytest.raises(ValueError, match="overflows"):
        resize_linear_int(x.astype(np.int16), -32768, [6, 8], [2.0, 2.0], "half_pixel", frac_bits=24)
    with pytest.raises(ValueError, match="scale > 0"):
        source_coords(4, 2, 0.0, "half_pixel")
