"""Bit-exactness of the integer MatMul / Conv / ConvTranspose kernels against plain int64
numpy references (loops over kernel offsets), and their ONNX semantics against the float
reference executor."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ptqc.runtime.kernels import linear
from ptqc.runtime.kernels.linear import conv_int, conv_transpose_int, int_matmul
from ptqc.runtime.reference import run_node

SETTINGS = settings(max_examples=200, deadline=None)

# (dtype, zero point range) of the quantized activations and weights
_KINDS = {"u8": (np.uint8, 0, 255), "i8": (np.int8, -128, 127), "i16": (np.int16, -32768, 32767)}


# ------------------------------------------------------------------------ references

def ref_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 ``a @ b`` as a broadcast multiply and a sum over K."""
    return (a.astype(np.int64)[..., :, :, None] * b.astype(np.int64)[..., None, :, :]).sum(axis=-2)


def ref_conv(xq: np.ndarray, wq: np.ndarray, strides, pads, dilations, group: int) -> np.ndarray:
    """int64 ONNX Conv of centered ``xq`` (N, C, *sp) and ``wq`` (O, C/g, *k), zero padding."""
    n_sp = xq.ndim - 2
    xp = np.pad(xq.astype(np.int64), [(0, 0), (0, 0)] + [(pads[j], pads[n_sp + j]) for j in range(n_sp)])
    k = wq.shape[2:]
    out_sp = [(xp.shape[2 + j] - (k[j] - 1) * dilations[j] - 1) // strides[j] + 1 for j in range(n_sp)]
    n, o = xq.shape[0], wq.shape[0]
    cg, mg = wq.shape[1], o // group
    out = np.zeros((n, o, *out_sp), np.int64)
    for g in range(group):
        for off in np.ndindex(*k):
            win = tuple(slice(off[j] * dilations[j], off[j] * dilations[j] + (out_sp[j] - 1) * strides[j] + 1,
                              strides[j]) for j in range(n_sp))
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + win]
            tap = wq[(slice(g * mg, (g + 1) * mg), slice(None)) + off].astype(np.int64)
            out[:, g * mg:(g + 1) * mg] += np.tensordot(patch, tap, axes=([1], [1])).transpose(
                0, n_sp + 1, *range(1, n_sp + 1))
    return out


def ref_conv_transpose(xq: np.ndarray, wq: np.ndarray, strides, pads, dilations, group: int,
                       output_padding) -> np.ndarray:
    """int64 ONNX ConvTranspose: every input position scatters ``x * w`` to
    ``in * stride + k * dilation - pad_begin`` (targets outside the output dropped)."""
    n_sp = xq.ndim - 2
    n, c = xq.shape[:2]
    mg, k = wq.shape[1], wq.shape[2:]
    in_sp = xq.shape[2:]
    out_sp = [strides[j] * (in_sp[j] - 1) + output_padding[j] + (k[j] - 1) * dilations[j] + 1
              - pads[j] - pads[n_sp + j] for j in range(n_sp)]
    out = np.zeros((n, mg * group, *out_sp), np.int64)
    cg = c // group
    for ci in range(c):
        g = ci // cg
        for pos in np.ndindex(*in_sp):
            for off in np.ndindex(*k):
                tgt = [pos[j] * strides[j] + off[j] * dilations[j] - pads[j] for j in range(n_sp)]
                if all(0 <= tgt[j] < out_sp[j] for j in range(n_sp)):
                    idx = (slice(None), slice(g * mg, (g + 1) * mg)) + tuple(tgt)
                    out[idx] += xq[(slice(None), ci) + pos].astype(np.int64)[:, None] \
                        * wq[(ci, slice(None)) + off].astype(np.int64)[None, :]
    return out


# ------------------------------------------------------------------------- test data

def _values(rng: np.random.Generator, shape, kind: str, edge: bool) -> np.ndarray:
    """Random ``kind`` integers; ``edge`` draws half of them from the dtype's extremes."""
    dtype, lo, hi = _KINDS[kind]
    v = rng.integers(lo, hi + 1, shape)
    if edge:
        ends = np.where(rng.random(shape) < 0.5, rng.integers(lo, lo + 4, shape), rng.integers(hi - 3, hi + 1, shape))
        v = np.where(rng.random(shape) < 0.5, ends, v)
    return v.astype(dtype)


def _zero_point(rng: np.random.Generator, kind: str, mode: str, channels: int):
    """0, a random scalar or a per-channel (channels,) array in the dtype's range."""
    _, lo, hi = _KINDS[kind]
    if mode == "zero":
        return 0
    if mode == "scalar":
        return int(rng.integers(lo, hi + 1))
    return rng.integers(lo, hi + 1, channels)


@st.composite
def conv_cases(draw, transpose: bool = False):
    n_sp = draw(st.sampled_from([1, 2]))
    layout = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    group = 1 if layout == "dense" else draw(st.integers(2, 3))
    cg = 1 if layout == "depthwise" else draw(st.integers(1, 3))
    mg = draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    s = [draw(st.integers(1, 3)) for _ in range(n_sp)]
    d = [draw(st.integers(1, 2)) for _ in range(n_sp)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * n_sp)]
    if transpose:
        op = [draw(st.integers(0, max(s[j], d[j]) - 1)) for j in range(n_sp)]
        need = [pads[j] + pads[n_sp + j] - op[j] - (k[j] - 1) * d[j] for j in range(n_sp)]
        sp = [max(draw(st.integers(1, 5)), 1 + -(-need[j] // s[j])) for j in range(n_sp)]
    else:
        op = None
        sp = [max(draw(st.integers(1, 9)), (k[j] - 1) * d[j] + 1 - pads[j] - pads[n_sp + j])
              for j in range(n_sp)]
    x_kind, w_kind = draw(st.sampled_from([("u8", "i8"), ("i8", "i8"), ("u8", "u8"), ("i16", "i16"),
                                           ("i16", "i8")]))
    x_zp_mode = draw(st.sampled_from(["zero", "scalar"]))
    w_zp_mode = draw(st.sampled_from(["zero", "scalar", "channel"]))
    edge = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 2))
    c, o = cg * group, mg * group
    x = _values(rng, (n, c, *sp), x_kind, edge)
    w = _values(rng, (c, mg, *k) if transpose else (o, cg, *k), w_kind, edge)
    return dict(x=x, w=w, x_zp=_zero_point(rng, x_kind, x_zp_mode, 1),
                w_zp=_zero_point(rng, w_kind, w_zp_mode, o), strides=s, pads=pads, dilations=d,
                group=group, output_padding=op)


def _centered(case: dict, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(x - x_zp, w - w_zp) in int64; a per-channel w_zp runs along weight ``axis``."""
    w = case["w"].astype(np.int64)
    zp = np.asarray(case["w_zp"], np.int64)
    if zp.ndim:
        if axis == 1:  # ConvTranspose: output channel o = g * mg + m for input channels of group g
            c, mg = w.shape[:2]
            zp = np.repeat(zp.reshape(case["group"], mg), c // case["group"], axis=0)
            w = w - zp.reshape(c, mg, *[1] * (w.ndim - 2))
        else:
            w = w - zp.reshape(-1, *[1] * (w.ndim - 1))
    else:
        w = w - zp
    return case["x"].astype(np.int64) - case["x_zp"], w


def _conv_args(case: dict) -> tuple:
    return (case["x"], case["w"], case["x_zp"], case["w_zp"], case["strides"], case["pads"],
            case["dilations"], case["group"])


# ------------------------------------------------------------------------- int_matmul

_MAGNITUDES = [1, 127, 255, 1000, 4000, 32767, 65535]


@SETTINGS
@given(batch=st.sampled_from([((), ()), ((2,), ()), ((2,), (2,)), ((3, 1), (2,)), ((), (2,))]),
       m=st.integers(1, 6), k=st.sampled_from([0, 1, 2, 7, 33, 100, 257, 700, 2000]), n=st.integers(1, 6),
       amag=st.sampled_from(_MAGNITUDES), bmag=st.sampled_from(_MAGNITUDES),
       positive=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_int_matmul_matches_reference(batch, m, k, n, amag, bmag, positive, seed):
    rng = np.random.default_rng(seed)
    lo = 0 if positive else -1
    a = rng.integers(lo * amag, amag + 1, (*batch[0], m, k)).astype(np.int32)
    b = rng.integers(lo * bmag, bmag + 1, (*batch[1], k, n)).astype(np.int32 if bmag > 32767 else np.int16)
    got = int_matmul(a, b)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref_matmul(a, b))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_int_matmul_small_dtypes(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, (3, 5, 40)).astype(dtype)
    b = rng.integers(info.min, info.max + 1, (40, 7)).astype(dtype)
    np.testing.assert_array_equal(int_matmul(a, b), ref_matmul(a, b))


def test_int_matmul_float32_chunked_exact():
    """255 * sum(b) over K = 4096 is far above 2^24: one float32 GEMM rounds, the chunks
    (~65 long) do not."""
    rng = np.random.default_rng(2)
    a = np.full((8, 4096), 255, np.int32)
    b = rng.integers(1, 1001, (4096, 16)).astype(np.int16)
    dtype, bounds = linear._plan(np.ascontiguousarray(np.abs(a.astype(np.int64)).T), 1000)
    assert dtype == np.float32 and len(bounds) > 30
    ref = ref_matmul(a, b)
    assert np.any((a.astype(np.float32) @ b.astype(np.float32)).astype(np.int64) != ref)
    np.testing.assert_array_equal(int_matmul(a, b), ref)
    np.testing.assert_array_equal(int_matmul(b.T, a.T), ref.T)  # the other operand planned


def test_int_matmul_float64_exact():
    """int16 near +-32767 over K = 512: products of 2^30 exceed float32, float64 is exact."""
    rng = np.random.default_rng(3)
    a = rng.choice(np.array([-32768, -32767, 32766, 32767], np.int16), (6, 512))
    b = rng.choice(np.array([-32768, -32767, 32766, 32767], np.int16), (512, 9))
    dtype, _ = linear._plan(np.ascontiguousarray(np.abs(a.astype(np.int64)).T), 32768)
    assert dtype == np.float64
    np.testing.assert_array_equal(int_matmul(a, b), ref_matmul(a, b))
    a32 = a.astype(np.int32) - 32767  # zero points subtracted: |values| up to 65535
    np.testing.assert_array_equal(int_matmul(a32, b), ref_matmul(a32, b))


def test_int_matmul_int64_fallback():
    rng = np.random.default_rng(4)
    a = rng.integers(-2**27, 2**27, (4, 64))
    b = rng.integers(-2**27, 2**27, (64, 5))
    dtype, _ = linear._plan(np.ascontiguousarray(np.abs(a).T), int(np.abs(b).max()))
    assert dtype == np.int64
    np.testing.assert_array_equal(int_matmul(a, b), ref_matmul(a, b))


def test_int_matmul_rejects():
    with pytest.raises(ValueError):
        int_matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.int8))
    with pytest.raises(ValueError):
        int_matmul(np.ones((2, 3), np.int8), np.ones((4, 2), np.int8))
    with pytest.raises(ValueError):
        int_matmul(np.ones(3, np.int8), np.ones((3, 2), np.int8))


# ---------------------------------------------------------------------------- conv_int

@SETTINGS
@given(case=conv_cases())
def test_conv_int_matches_reference(case):
    got = conv_int(*_conv_args(case))
    xq, wq = _centered(case, axis=0)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref_conv(xq, wq, case["strides"], case["pads"], case["dilations"],
                                                case["group"]))


def test_conv_int_float32_chunked_exact():
    """K = 256 * 9 with x = 255, w = 127: partial sums reach 7.5e7 > 2^24 -> several chunks."""
    x = np.full((1, 256, 4, 5), 255, np.uint8)
    w = np.full((3, 256, 3, 3), 127, np.int8)
    w[1] = -128
    mags = np.ascontiguousarray(np.abs(w.astype(np.int64).reshape(3, -1)).T)
    dtype, bounds = linear._plan(mags, 255)
    assert dtype == np.float32 and len(bounds) > 2
    got = conv_int(x, w, 0, 0, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_array_equal(got, ref_conv(x.astype(np.int64), w.astype(np.int64), (1, 1),
                                                (1, 1, 1, 1), (1, 1), 1))


@pytest.mark.parametrize("group", [1, 4])
def test_conv_int_int16_float64_exact(group):
    """int16 values near +-32767 and per-channel weight zero points: float64 accumulation."""
    rng = np.random.default_rng(5)
    ends = np.array([-32768, -32767, 32766, 32767], np.int16)
    x = rng.choice(ends, (1, 8, 6, 7))
    w = rng.choice(ends, (8, 8 // group, 3, 3))
    w_zp = rng.integers(-5, 6, 8)
    got = conv_int(x, w, -3, w_zp, (1, 2), (1, 0, 2, 1), (2, 1), group)
    wq = w.astype(np.int64) - w_zp.reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(got, ref_conv(x.astype(np.int64) + 3, wq, (1, 2), (1, 0, 2, 1), (2, 1), group))


def test_conv_int_wide_input_dtype():
    """int32 inputs far from 0 with a matching zero point are centered exactly first."""
    rng = np.random.default_rng(6)
    x = rng.integers(2**30, 2**30 + 256, (1, 4, 5, 5)).astype(np.int32)
    w = rng.integers(-128, 128, (4, 2, 3, 3)).astype(np.int8)
    got = conv_int(x, w, 2**30 + 100, 0, (1, 1), (1, 1, 1, 1), (1, 1), 2)
    np.testing.assert_array_equal(got, ref_conv(x.astype(np.int64) - (2**30 + 100), w, (1, 1), (1, 1, 1, 1),
                                                (1, 1), 2))
    wd = rng.integers(-128, 128, (4, 1, 3, 3)).astype(np.int8)
    got = conv_int(x, wd, 2**30 + 100, 0, (1, 1), (1, 1, 1, 1), (1, 1), 4)
    np.testing.assert_array_equal(got, ref_conv(x.astype(np.int64) - (2**30 + 100), wd, (1, 1), (1, 1, 1, 1),
                                                (1, 1), 4))


@pytest.mark.parametrize("group", [1, 3])
def test_conv_int_int64_fallback(group):
    """|x| ~ 2^40 times int16 weights: beyond float64's 2^53, int64 accumulation."""
    rng = np.random.default_rng(12)
    x = rng.integers(-2**40, 2**40, (1, 3, 5, 4))
    w = rng.integers(-32768, 32768, (3, 3 // group, 3, 3)).astype(np.int16)
    assert linear._exact_dtype(2**39 * int(np.abs(w[0].astype(np.int64)).sum())) == np.int64
    got = conv_int(x, w, 0, 0, (2, 1), (1, 1, 0, 2), (1, 1), group)
    np.testing.assert_array_equal(got, ref_conv(x, w, (2, 1), (1, 1, 0, 2), (1, 1), group))


@pytest.mark.parametrize("bad", [
    dict(x=np.zeros((1, 2, 3, 3, 3), np.int8), w=np.zeros((2, 2, 1, 1, 1), np.int8), s=(1, 1, 1),
         p=(0,) * 6, d=(1, 1, 1), g=1),  # 3-D spatial
    dict(x=np.zeros((1, 4, 5, 5), np.int8), w=np.zeros((3, 2, 3, 3), np.int8), s=(1, 1),
         p=(0,) * 4, d=(1, 1), g=2),  # 3 outputs for 2 groups
    dict(x=np.zeros((1, 4, 5, 5), np.int8), w=np.zeros((4, 3, 3, 3), np.int8), s=(1, 1),
         p=(0,) * 4, d=(1, 1), g=1),  # channel mismatch
    dict(x=np.zeros((1, 4, 2, 2), np.int8), w=np.zeros((4, 4, 3, 3), np.int8), s=(1, 1),
         p=(0,) * 4, d=(1, 1), g=1),  # empty output
    dict(x=np.zeros((1, 4, 5, 5), np.int8), w=np.zeros((4, 4, 3, 3), np.int8), s=(1, 1),
         p=(0, -1, 0, 0), d=(1, 1), g=1),  # negative pad
    dict(x=np.zeros((1, 4, 5, 5), np.int8), w=np.zeros((4, 4, 3, 3), np.int8), s=(0, 1),
         p=(0,) * 4, d=(1, 1), g=1),  # zero stride
])
def test_conv_int_rejects(bad):
    with pytest.raises(ValueError):
        conv_int(bad["x"], bad["w"], 0, 0, bad["s"], bad["p"], bad["d"], bad["g"])


# ------------------------------------------------------------------ conv_transpose_int

@SETTINGS
@given(case=conv_cases(transpose=True))
def test_conv_transpose_int_matches_reference(case):
    got = conv_transpose_int(*_conv_args(case), case["output_padding"])
    xq, wq = _centered(case, axis=1)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, ref_conv_transpose(xq, wq, case["strides"], case["pads"],
                                                          case["dilations"], case["group"],
                                                          case["output_padding"]))


def test_conv_transpose_int_weight_axis1_zero_point():
    """A (O/group,) zero point (DequantizeLinear axis=1 of the weight) is shared by the groups."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (1, 4, 3, 3)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 3, 2, 2)).astype(np.int8)
    zp = np.array([1, -2, 3])
    got = conv_transpose_int(x, w, 7, zp, (2, 2), (0, 0, 0, 0), (1, 1), 2, (0, 0))
    np.testing.assert_array_equal(got, conv_transpose_int(x, w, 7, np.tile(zp, 2), (2, 2), (0, 0, 0, 0),
                                                          (1, 1), 2, (0, 0)))
    ref = ref_conv_transpose(x.astype(np.int64) - 7, w.astype(np.int64) - zp.reshape(1, 3, 1, 1), (2, 2),
                             (0, 0, 0, 0), (1, 1), 2, (0, 0))
    np.testing.assert_array_equal(got, ref)


def test_conv_transpose_int_int16_float64_exact():
    rng = np.random.default_rng(8)
    ends = np.array([-32768, -32767, 32766, 32767], np.int16)
    x = rng.choice(ends, (1, 64, 3, 2))
    w = rng.choice(ends, (64, 2, 3, 3))
    got = conv_transpose_int(x, w, 0, 0, (2, 1), (1, 0, 0, 1), (1, 2), 1, (1, 0))
    ref = ref_conv_transpose(x.astype(np.int64), w.astype(np.int64), (2, 1), (1, 0, 0, 1), (1, 2), 1, (1, 0))
    np.testing.assert_array_equal(got, ref)


def test_conv_transpose_int_rejects():
    x, w = np.zeros((1, 4, 3, 3), np.int8), np.zeros((4, 2, 3, 3), np.int8)
    with pytest.raises(ValueError):
        conv_transpose_int(x, w, 0, 0, (1, 1), (0, 0, 0, 0), (1, 1), 3, (0, 0))  # group
    with pytest.raises(ValueError):
        conv_transpose_int(x, w, 0, np.zeros(5), (1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0))  # zp
    with pytest.raises(ValueError):
        conv_transpose_int(x, w, 0, 0, (1, 1), (3, 3, 3, 3), (1, 1), 1, (0, 0))  # empty
    with pytest.raises(ValueError):
        conv_transpose_int(x[:, :, None], w[:, :, None], 0, 0, (1,) * 3, (0,) * 6, (1,) * 3, 1, (0,) * 3)


# ------------------------------------------------------------- float ONNX semantics

_FLOAT_CASES = [
    dict(c=6, o=4, k=(3, 3), strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
    dict(c=6, o=4, k=(3, 2), strides=[2, 1], pads=[0, 2, 1, 0], dilations=[1, 2], group=2),
    dict(c=6, o=12, k=(3, 3), strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], group=6),
    dict(c=6, o=6, k=(1, 1), strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1),
    dict(c=4, o=6, k=(3,), strides=[3], pads=[2, 1], dilations=[2], group=2),
]


@pytest.mark.parametrize("cfg", _FLOAT_CASES)
def test_conv_int_matches_float_conv(cfg):
    """On centered small integers the float Conv is exact, so the results agree exactly."""
    rng = np.random.default_rng(9)
    n_sp = len(cfg["k"])
    x = rng.integers(0, 256, (2, cfg["c"], *[9] * n_sp)).astype(np.uint8)
    w = rng.integers(-128, 128, (cfg["o"], cfg["c"] // cfg["group"], *cfg["k"])).astype(np.int8)
    w_zp = rng.integers(-3, 4, cfg["o"])
    wq = w.astype(np.float64) - w_zp.reshape(-1, *[1] * (n_sp + 1))
    attrs = {key: cfg[key] for key in ("strides", "pads", "dilations", "group")}
    (ref,) = run_node("Conv", [x.astype(np.float64) - 128, wq], attrs)
    got = conv_int(x, w, 128, w_zp, cfg["strides"], cfg["pads"], cfg["dilations"], cfg["group"])
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("cfg", _FLOAT_CASES)
def test_conv_transpose_int_matches_float_conv_transpose(cfg):
    rng = np.random.default_rng(10)
    n_sp = len(cfg["k"])
    op = [s - 1 for s in cfg["strides"]]
    x = rng.integers(-128, 128, (2, cfg["c"], *[5] * n_sp)).astype(np.int8)
    w = rng.integers(-128, 128, (cfg["c"], cfg["o"] // cfg["group"], *cfg["k"])).astype(np.int8)
    attrs = {key: cfg[key] for key in ("strides", "pads", "dilations", "group")}
    (ref,) = run_node("ConvTranspose", [x.astype(np.float64) + 5, w.astype(np.float64) - 2],
                      dict(attrs, output_padding=op))
    got = conv_transpose_int(x, w, -5, 2, cfg["strides"], cfg["pads"], cfg["dilations"], cfg["group"], op)
    np.testing.assert_array_equal(got, ref)


def test_int_matmul_matches_float_matmul():
    rng = np.random.default_rng(11)
    a = rng.integers(-255, 256, (2, 5, 30)).astype(np.int16)
    b = rng.integers(-128, 128, (30, 4)).astype(np.int8)
    (ref,) = run_node("MatMul", [a.astype(np.float64), b.astype(np.float64)])
    np.testing.assert_array_equal(int_matmul(a, b), ref)


# ------------------------------------------------------------ prepared weights (simulator)

@SETTINGS
@given(case=conv_cases(), spread=st.booleans())
def test_conv_planned_matches_reference(case, spread):
    """The simulator's path: weights prepared once for any input of the dtype; the result is
    exact integers (float or int64).  ``spread`` lowers the per-tap GEMM threshold so the
    stride-1 shifted path runs on these small shapes too."""
    old = linear.SHIFTED_MIN_PIXELS, linear.SHIFTED_MIN_K
    if spread:
        linear.SHIFTED_MIN_PIXELS, linear.SHIFTED_MIN_K = 1, 1
    try:
        plan = linear.ConvPlan(case["w"], case["w_zp"], case["x"].dtype, case["x_zp"], case["group"])
        got = linear.conv_planned(plan, case["x"], case["strides"], case["pads"], case["dilations"])
    finally:
        linear.SHIFTED_MIN_PIXELS, linear.SHIFTED_MIN_K = old
    xq, wq = _centered(case, axis=0)
    want = ref_conv(xq, wq, case["strides"], case["pads"], case["dilations"], case["group"])
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert np.array_equal(got, np.rint(got))  # float results hold integers exactly


@SETTINGS
@given(m=st.integers(1, 6), k=st.integers(1, 300), n=st.integers(1, 6),
       kind=st.sampled_from(["u8", "i8", "i16"]), seed=st.integers(0, 2**32 - 1))
def test_matmul_planned_matches_reference(m, k, n, kind, seed):
    rng = np.random.default_rng(seed)
    dtype, lo, hi = _KINDS[kind]
    a = rng.integers(lo, hi + 1, (2, m, k)).astype(dtype)
    b = rng.integers(-127, 128, (k, n)).astype(np.int8)
    a_zp, b_zp = int(rng.integers(lo, hi + 1)), rng.integers(-3, 4, n)
    plan = linear.MatMulPlan(b, b_zp, dtype, a_zp)
    got = linear.matmul_planned(plan, a)
    want = ref_matmul(a.astype(np.int64) - a_zp, b.astype(np.int64) - b_zp)
    np.testing.assert_array_equal(got.astype(np.int64), want)


@SETTINGS
@given(case=conv_cases(transpose=True))
def test_conv_transpose_planned_matches_reference(case):
    plan = linear.ConvTransposePlan(case["w"], case["w_zp"], case["x"].dtype, case["x_zp"], case["group"])
    got = linear.conv_transpose_planned(plan, case["x"], case["strides"], case["pads"], case["dilations"],
                                        case["output_padding"])
    xq, wq = _centered(case, axis=1)
    want = ref_conv_transpose(xq, wq, case["strides"], case["pads"], case["dilations"], case["group"],
                              case["output_padding"])
    np.testing.assert_array_equal(got.astype(np.int64), want)
