"""Integer ONNX Resize (opset 11+), modes ``nearest`` (a gather) and ``linear`` (fixed point).

The last 1 or 2 axes of ``x`` (at least (N, C, *spatial)) are resized; the caller resolves
``scales`` / ``sizes`` into the output lengths ``out_spatial`` and the per-axis ``scales``
ONNX uses in the coordinate transform: the given scale, or ``out / in`` (float64) when the model
gives sizes.  Coordinates are computed in float64 exactly as :mod:`ptqc.runtime.reference`
does (onnxruntime uses float32, which can differ on a coordinate that lands exactly on a
rounding tie).  An axis with ``scale == 1`` and unchanged length is the identity (onnxruntime
skips the transform there).  Imports numpy and numba only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

__all__ = ["source_coords", "resize_nearest_int", "resize_linear_int"]

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coords(out_size: int, in_size: int, scale: float,
                  coordinate_transformation_mode: str) -> np.ndarray:
    """Input coordinate (float64, unclamped) of each of the ``out_size`` output indices, per
    ONNX ``coordinate_transformation_mode`` (tf_crop_and_resize is not supported);
    ``scale`` is ONNX's (given, or out/in when sizes are given)."""
    mode = coordinate_transformation_mode
    if mode not in COORDINATE_MODES:
        raise ValueError(f"coordinate_transformation_mode {mode!r} is not supported "
                         f"(supported: {', '.join(COORDINATE_MODES)})")
    if out_size < 1 or in_size < 1 or not scale > 0:
        raise ValueError(f"resize needs out_size, in_size >= 1 and scale > 0 "
                         f"(got {out_size}, {in_size}, {scale})")
    x = np.arange(out_size, dtype=np.float64)
    scale = float(scale)
    if scale == 1.0 and out_size == in_size:
        return x
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / (scale * in_size))
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    return (x + 0.5) / scale  # tf_half_pixel_for_nn


def _nearest_index(coords: np.ndarray, nearest_mode: str, in_size: int) -> np.ndarray:
    """ONNX ``nearest_mode`` rounding of ``coords``, clipped to [0, in_size); int64."""
    f = np.floor(coords)
    frac = coords - f
    if nearest_mode == "round_prefer_floor":
        idx = np.where(frac > 0.5, f + 1, f)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.where(frac >= 0.5, f + 1, f)
    elif nearest_mode == "floor":
        idx = f
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    else:
        raise ValueError(f"nearest_mode {nearest_mode!r} is not supported "
                         f"(supported: {', '.join(NEAREST_MODES)})")
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def _as_3d(x: np.ndarray, out_spatial: Sequence[int], scales: Sequence[float]) -> np.ndarray:
    """``x`` as (A, H, W): A = the untouched leading axes; a 1-axis resize gets H = 1."""
    r = len(out_spatial)
    if x.dtype.kind not in "iu":
        raise ValueError(f"integer resize takes integer tensors, got {x.dtype}")
    if r not in (1, 2) or len(scales) != r or x.ndim < r + 2:
        raise ValueError(f"integer resize resizes the last 1 or 2 axes of an (N, C, *spatial) "
                         f"tensor; got shape {x.shape}, out_spatial {list(out_spatial)}, "
                         f"scales {list(scales)}")
    lead = int(np.prod(x.shape[:x.ndim - r], dtype=np.int64))
    h = x.shape[-2] if r == 2 else 1
    return np.ascontiguousarray(x).reshape(lead, h, x.shape[-1])


def _axes(x: np.ndarray, out_spatial: Sequence[int], scales: Sequence[float]) -> list[tuple]:
    """(out_len, in_len, scale) of each resized axis."""
    return [(int(o), x.shape[x.ndim - len(out_spatial) + j], float(s))
            for j, (o, s) in enumerate(zip(out_spatial, scales))]


@njit(cache=True)
def _gather(x, ih, iw, out):
    """``out[a, i, j] = x[a, ih[i], iw[j]]``."""
    for a in range(x.shape[0]):
        for i in range(ih.size):
            for j in range(iw.size):
                out[a, i, j] = x[a, ih[i], iw[j]]
    return out


@njit(cache=True)
def _lerp_w(x, i0, i1, w0, w1, out):
    """``out[a, h, j] = w0[j] * x[a, h, i0[j]] + w1[j] * x[a, h, i1[j]]`` in int64."""
    for a in range(x.shape[0]):
        for h in range(x.shape[1]):
            for j in range(i0.size):
                out[a, h, j] = w0[j] * np.int64(x[a, h, i0[j]]) + w1[j] * np.int64(x[a, h, i1[j]])
    return out


@njit(cache=True)
def _lerp_h(r, i0, i1, w0, w1, offset, out):
    """``out[a, i, j] = w0[i] * r[a, i0[i], j] + w1[i] * r[a, i1[i], j] - offset`` (int64)."""
    for a in range(r.shape[0]):
        for i in range(i0.size):
            for j in range(r.shape[2]):
                out[a, i, j] = w0[i] * r[a, i0[i], j] + w1[i] * r[a, i1[i], j] - offset
    return out


def resize_nearest_int(x: np.ndarray, out_spatial: Sequence[int], scales: Sequence[float],
                       coordinate_transformation_mode: str,
                       nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    """ONNX Resize ``mode="nearest"`` of the last ``len(out_spatial)`` (1 or 2) axes of an
    integer (N, C, *spatial) tensor: a pure gather, same dtype, those axes -> ``out_spatial``."""
    x3 = _as_3d(x, out_spatial, scales)
    idx = [_nearest_index(source_coords(o, n, s, coordinate_transformation_mode), nearest_mode, n)
           for o, n, s in _axes(x, out_spatial, scales)]
    if len(idx) == 1:  # the H = 1 axis of a 1-axis resize
        idx.insert(0, np.zeros(1, np.int64))
    out = np.empty((x3.shape[0], idx[0].size, idx[1].size), x.dtype)
    _gather(x3, idx[0], idx[1], out)
    return out.reshape(x.shape[:x.ndim - len(out_spatial)] + tuple(int(o) for o in out_spatial))


def _linear_taps(coords: np.ndarray, in_size: int, frac_bits: int) -> tuple[np.ndarray, ...]:
    """Neighbours and integer weights of each coordinate clamped to [0, in_size - 1]:
    (i0, i1, w0, w1) int64 with ``w1 = rint(frac * 2^frac_bits)``, ``w0 = 2^frac_bits - w1``."""
    c = np.clip(coords, 0.0, in_size - 1)
    f = np.floor(c)
    i0 = f.astype(np.int64)
    w1 = np.rint((c - f) * float(1 << frac_bits)).astype(np.int64)
    return i0, np.minimum(i0 + 1, in_size - 1), (np.int64(1) << frac_bits) - w1, w1


def resize_linear_int(x: np.ndarray, zp: int, out_spatial: Sequence[int], scales: Sequence[float],
                      coordinate_transformation_mode: str, frac_bits: int = 10) -> np.ndarray:
    """ONNX Resize ``mode="linear"`` (exclude_outside=0) of the last k = ``len(out_spatial)``
    (1 or 2) axes in fixed point; int64, those axes -> ``out_spatial``.

    Per axis the coordinate is clamped to [0, in - 1] and its two neighbours get integer weights
    ``w1 = rint(frac * 2^frac_bits)``, ``w0 = 2^frac_bits - w1``; the result is
    ``acc = sum over the 2^k corners of prod(weights) * (x - zp)``, the real value being
    ``in_scale * acc / 2^(frac_bits * k)``.  Error bound: ``acc / 2^(frac_bits * k)`` differs
    from the exact interpolation of ``x - zp`` by at most ``k * 2^-(frac_bits + 1) * (max - min
    of the 2^k corner values)``."""
    x3 = _as_3d(x, out_spatial, scales)
    k = len(out_spatial)
    info = np.iinfo(x.dtype)
    # |weighted sums of x|, |zp| and |acc| are each at most this times 2^(frac_bits * k)
    bound = max(abs(int(info.min)), int(info.max), abs(int(zp)), int(info.max) - int(zp), int(zp) - int(info.min))
    if frac_bits < 0 or bound << (frac_bits * k) >= 1 << 63:
        raise ValueError(f"frac_bits={frac_bits} overflows int64 for {x.dtype} with zero point {zp}")
    taps = [_linear_taps(source_coords(o, n, s, coordinate_transformation_mode), n, frac_bits)
            for o, n, s in _axes(x, out_spatial, scales)]
    if k == 1:  # the H = 1 axis of a 1-axis resize: row 0 with weight 1 (no fraction bits)
        zero = np.zeros(1, np.int64)
        taps.insert(0, (zero, zero, zero + 1, zero))
    rows = np.empty((x3.shape[0], x3.shape[1], taps[1][0].size), np.int64)
    _lerp_w(x3, *taps[1], rows)
    out = np.empty((x3.shape[0], taps[0][0].size, taps[1][0].size), np.int64)
    _lerp_h(rows, *taps[0], np.int64(zp) << (frac_bits * k), out)  # weights sum to 2^(f k)
    return out.reshape(x.shape[:x.ndim - k] + tuple(int(o) for o in out_spatial))
