"""Integer pooling: MaxPool, AveragePool (sum + divisor), GlobalAveragePool, requantization.

Inputs are ``(N, C, L)`` or ``(N, C, H, W)`` integer tensors; attributes are ONNX's with
``auto_pad`` already resolved to explicit ``pads = [x1_begin, x2_begin, ..., x1_end, x2_end]``.
A window is a Cartesian product of per-axis index sets, so both reductions run separably
(one pass along W, one along H).  Output size per axis (ONNX, as onnxruntime):
``floor_or_ceil((L + pb + pe - ((k - 1) * d + 1)) / s) + 1``; with ``ceil_mode`` the last
window is dropped when it would start in the end padding.
Imports numpy, numba and :mod:`ptqc.runtime.kernels.requant` only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from .requant import round_shift

__all__ = ["max_pool_int", "avg_pool_int", "global_avg_pool_int", "requantize_by_count"]


# ------------------------------------------------------------------------- geometry

def _as_2d(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
           dilations: Sequence[int]) -> tuple[np.ndarray, list, list, list, list]:
    """``x`` as (N, C, H, W) and the attributes as 2-D lists (a 1-D pool gets H = 1)."""
    if x.ndim not in (3, 4):
        raise ValueError(f"pooling supports 1-D and 2-D spatial inputs (N, C, L) / (N, C, H, W), "
                         f"got shape {x.shape}")
    n_sp = x.ndim - 2
    kernel, strides, dilations = list(kernel), list(strides), list(dilations)
    pads = list(pads)
    if len(kernel) != n_sp or len(strides) != n_sp or len(dilations) != n_sp or len(pads) != 2 * n_sp:
        raise ValueError(f"kernel {kernel}, strides {strides}, dilations {dilations}, pads {pads} "
                         f"do not match {n_sp} spatial axes")
    if min(kernel) < 1 or min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise ValueError(f"kernel, strides and dilations must be >= 1 and pads >= 0 "
                         f"(kernel {kernel}, strides {strides}, dilations {dilations}, pads {pads})")
    if n_sp == 1:
        return (x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]), [1] + kernel, [1] + strides,
                [0, pads[0], 0, pads[1]], [1] + dilations)
    return x, kernel, strides, pads, dilations


def _out_len(in_len: int, k: int, s: int, pb: int, pe: int, d: int, ceil_mode: bool) -> int:
    span = in_len + pb + pe - ((k - 1) * d + 1)
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= in_len + pb:  # the last window would start in the end padding
            out -= 1
    else:
        out = span // s + 1
    if out < 1:
        raise ValueError(f"pooling output would be empty (length {in_len}, kernel {k}, stride {s}, "
                         f"pads {pb}/{pe}, dilation {d})")
    return out


def _axis_windows(in_len: int, k: int, s: int, pb: int, pe: int, d: int,
                  ceil_mode: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:
    """``(start, klo, khi, d)``: per output index the first tap's input position ``o*s - pb``
    and the range [klo, khi) of taps ``start + t*d`` inside the input (int64 arrays)."""
    out = _out_len(in_len, k, s, pb, pe, d, ceil_mode)
    start = np.arange(out, dtype=np.int64) * s - pb
    klo = np.minimum(np.maximum(0, -(start // d)), k)  # ceil(-start / d), clipped
    khi = np.minimum(k, -((start - in_len) // d))  # ceil((in_len - start) / d)
    return start, klo, np.maximum(khi, klo), np.int64(d)


# --------------------------------------------------------------------------- loops

@njit(cache=True)
def _max_axis(x, out, start, klo, khi, d, low):
    """``out[a, o, b] = max(low, x[a, start[o] + t*d, b] for t in [klo[o], khi[o]))``."""
    na, _, nb = x.shape
    for a in range(na):
        for o in range(out.shape[1]):
            for b in range(nb):
                m = low
                for t in range(klo[o], khi[o]):
                    v = x[a, start[o] + t * d, b]
                    if v > m:
                        m = v
                out[a, o, b] = m
    return out


@njit(cache=True)
def _sum_axis(x, out, start, klo, khi, d):
    """``out[a, o, b] = sum(int64(x[a, start[o] + t*d, b]) for t in [klo[o], khi[o]))``."""
    na, _, nb = x.shape
    for a in range(na):
        for o in range(out.shape[1]):
            for b in range(nb):
                acc = np.int64(0)
                for t in range(klo[o], khi[o]):
                    acc += np.int64(x[a, start[o] + t * d, b])
                out[a, o, b] = acc
    return out


@njit(cache=True)
def _requant_by_count(acc, count, mult_table, shift_table, zp_out, lo, hi, mode, out):
    """Flat arrays: ``out[i] = clamp(zp_out + round_shift(acc[i] * mult_table[count[i]], ...))``."""
    for i in range(acc.size):
        n = count[i]
        v = zp_out + round_shift(acc[i] * mult_table[n], shift_table[n], mode)
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
        out[i] = v
    return out


def _separable(x4: np.ndarray, geo_h, geo_w, reduce_axis, out_dtype, *extra) -> np.ndarray:
    """Apply a window reduction (``_max_axis`` / ``_sum_axis`` with the windows of
    :func:`_axis_windows`) along W then H of (N, C, H, W) ``x4``; (N, C, OH, OW) ``out_dtype``."""
    n, c, h, w = x4.shape
    ow, oh = len(geo_w[0]), len(geo_h[0])
    rows = np.empty((n * c * h, ow, 1), out_dtype)
    reduce_axis(np.ascontiguousarray(x4).reshape(n * c * h, w, 1), rows, *geo_w, *extra)
    out = np.empty((n * c, oh, ow), out_dtype)
    reduce_axis(rows.reshape(n * c, h, ow), out, *geo_h, *extra)
    return out.reshape(n, c, oh, ow)


# ------------------------------------------------------------------------ public API

def max_pool_int(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], ceil_mode: int | bool) -> np.ndarray:
    """ONNX MaxPool of an integer (N, C, L) / (N, C, H, W) tensor; same dtype as ``x``.

    Padding never wins (it acts as -inf); a window holding no input element (possible only
    with dilations) gives the dtype's minimum, as the float -inf clipped to the dtype."""
    if x.dtype.kind not in "iu":
        raise ValueError(f"max_pool_int takes integer tensors, got {x.dtype}")
    x4, k, s, p, d = _as_2d(x, kernel, strides, pads, dilations)
    geo = [_axis_windows(x4.shape[2 + j], k[j], s[j], p[j], p[2 + j], d[j], bool(ceil_mode))
           for j in range(2)]
    low = x.dtype.type(np.iinfo(x.dtype).min)
    out = _separable(x4, geo[0], geo[1], _max_axis, x.dtype, low)
    return out.reshape(x.shape[:2] + out.shape[-(x.ndim - 2):])


def avg_pool_int(x: np.ndarray, zp: int, kernel: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int], ceil_mode: int | bool,
                 count_include_pad: int | bool) -> tuple[np.ndarray, np.ndarray]:
    """ONNX AveragePool (no dilations) as integers: ``(acc, count)``, both int64 of the output shape.

    ``acc`` = sum of ``x - zp`` over the window's elements inside the input;
    ``count`` = ONNX's divisor there: the number of those elements (``count_include_pad=0``),
    or of the window's elements inside the padded input, i.e. within
    ``[-pads_begin, L + pads_end)`` per axis (``count_include_pad=1``; a ceil_mode window
    running past the end padding does not count the overhang).  The average is acc / count."""
    if x.dtype.kind not in "iu":
        raise ValueError(f"avg_pool_int takes integer tensors, got {x.dtype}")
    x4, k, s, p, _ = _as_2d(x, kernel, strides, pads, [1] * len(kernel))
    geo = [_axis_windows(x4.shape[2 + j], k[j], s[j], p[j], p[2 + j], 1, bool(ceil_mode))
           for j in range(2)]
    sums = _separable(x4, geo[0], geo[1], _sum_axis, np.int64)
    inside = [g[2] - g[1] for g in geo]  # input elements per axis
    n_in = inside[0][:, None] * inside[1][None, :]
    acc = sums - np.int64(zp) * n_in
    if count_include_pad:
        # taps inside [-pb, L + pe): start >= -pb always; cap the end at L + pe
        per_axis = [np.minimum(k[j], x4.shape[2 + j] + p[2 + j] - geo[j][0]) for j in range(2)]
        n_div = per_axis[0][:, None] * per_axis[1][None, :]
    else:
        n_div = n_in
    count = np.empty(acc.shape, np.int64)
    count[...] = n_div
    shape = x.shape[:2] + acc.shape[-(x.ndim - 2):]
    return acc.reshape(shape), count.reshape(shape)


def global_avg_pool_int(x: np.ndarray, zp: int) -> np.ndarray:
    """GlobalAveragePool sums: int64 (N, C, 1, ...) of ``sum(x - zp)`` over all spatial axes
    (any number >= 1 of them); the divisor is the product of the spatial dims."""
    if x.dtype.kind not in "iu":
        raise ValueError(f"global_avg_pool_int takes integer tensors, got {x.dtype}")
    if x.ndim < 3:
        raise ValueError(f"global_avg_pool_int needs (N, C, *spatial), got shape {x.shape}")
    n, c = x.shape[:2]
    size = int(np.prod(x.shape[2:], dtype=np.int64))
    sums = np.empty((n * c, 1, 1), np.int64)
    zero, full = np.zeros(1, np.int64), np.full(1, size, np.int64)
    _sum_axis(np.ascontiguousarray(x).reshape(n * c, size, 1), sums, zero, zero, full, np.int64(1))
    return (sums - np.int64(zp) * size).reshape((n, c) + (1,) * (x.ndim - 2))


def requantize_by_count(acc: np.ndarray, count: np.ndarray, mult_table: np.ndarray,
                        shift_table: np.ndarray, zp_out: int, lo: int, hi: int, mode: int,
                        dtype) -> np.ndarray:
    """``clamp(zp_out + round_shift(acc * mult_table[count], shift_table[count], mode), lo, hi)``
    as ``dtype``, elementwise (``acc``, ``count``: int64, same shape).  The tables are indexed by
    the divisor: entry n encodes ``in_scale / (out_scale * n)`` (entry 0 is used only where the
    window is empty, acc = 0, giving zp_out)."""
    acc = np.ascontiguousarray(acc, np.int64)
    count = np.ascontiguousarray(count, np.int64)
    mult_table = np.ascontiguousarray(mult_table, np.int64)
    shift_table = np.ascontiguousarray(shift_table, np.int64)
    if acc.shape != count.shape:
        raise ValueError(f"acc {acc.shape} and count {count.shape} shapes differ")
    if mult_table.shape != shift_table.shape or mult_table.ndim != 1:
        raise ValueError("mult_table and shift_table must be 1-D of the same length")
    if count.size and (count.min() < 0 or count.max() >= mult_table.size):
        raise ValueError(f"counts in [{count.min()}, {count.max()}] outside the tables "
                         f"(length {mult_table.size})")
    out = np.empty(acc.shape, dtype)
    _requant_by_count(acc.reshape(-1), count.reshape(-1), mult_table, shift_table, np.int64(zp_out),
                      np.int64(lo), np.int64(hi), mode, out.reshape(-1))
    return out
