"""Exact integer MatMul, Conv and ConvTranspose: int64 accumulators computed with float BLAS.

A float GEMM is exact on integers while every partial sum stays an integer the float type
represents: ``|s| <= 2^24`` (float32) or ``2^53`` (float64), whatever order the BLAS sums
in.  With ``mags`` the ``|values|`` of one operand and ``m`` the largest ``|value|`` of the
other, every partial sum of a K-chunk is bounded by ``m * max_row sum_{k in chunk} mags``.
K is split greedily into chunks within that bound; each chunk runs as one float GEMM, is
converted to int64 and added.  float32 is used when its chunks average >= 64 (or K fits
in one), else float64; int64 numpy matmul is the last resort.

Conv: 1x1 unpadded as a direct GEMM, depthwise (one input channel per group) as numba
loops, everything else as im2col + the chunked GEMM per group.  ConvTranspose: the GEMM
to columns, then a numba col2im scatter-add in int64.  Imports numpy and numba only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit

from .requant import channel_params, requantize_row, table_arg

_FLOAT_LIMITS = ((np.dtype(np.float32), 1 << 24), (np.dtype(np.float64), 1 << 53))
_MIN_CHUNK = 64


# ------------------------------------------------------------------ exact chunked GEMM

@njit(cache=True)
def _split_k(mags, cap):
    """Greedy chunk boundaries ``[0, k1, ..., K]`` of the rows of ``mags`` (int64 (K, R),
    ``|values|``) such that every column's sum over a chunk is ``<= cap``; an empty array
    when one entry alone exceeds ``cap``."""
    n_k, n_r = mags.shape
    run = np.zeros(n_r, np.int64)
    bounds = np.zeros(n_k + 2, np.int64)
    n_b = 1
    for k in range(n_k):
        fits = True
        for r in range(n_r):
            if run[r] + mags[k, r] > cap:
                fits = False
                break
        if not fits:
            bounds[n_b] = k
            n_b += 1
            run[:] = 0
        for r in range(n_r):
            if mags[k, r] > cap:
                return bounds[:0]
            run[r] += mags[k, r]
    bounds[n_b] = n_k
    return bounds[:n_b + 1]


def _plan(mags: np.ndarray, other_max: int) -> tuple[np.dtype, np.ndarray]:
    """(accumulation dtype, K boundaries) for an exact product of an operand whose
    ``|values|`` are ``mags`` (int64 (K, R)) with one whose largest ``|value|`` is
    ``other_max``."""
    n_k = mags.shape[0]
    for dtype, limit in _FLOAT_LIMITS:
        cap = limit // max(other_max, 1)
        if int(mags.sum(axis=0).max(initial=0)) <= cap:
            return dtype, np.array([0, n_k], np.int64)
        bounds = _split_k(mags, np.int64(cap))
        chunks = len(bounds) - 1
        if chunks == 1 or (chunks > 1 and (n_k >= _MIN_CHUNK * chunks or dtype == np.float64)):
            return dtype, bounds
    return np.dtype(np.int64), np.array([0, n_k], np.int64)


def _chunked_matmul(a: np.ndarray, b: np.ndarray, dtype: np.dtype, bounds: np.ndarray) -> np.ndarray:
    """``sum over chunks of matmul(a[..., k0:k1], b[..., k0:k1, :])`` in ``dtype``, each
    chunk converted to int64 before the sum."""
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    out = None
    for k0, k1 in zip(bounds[:-1], bounds[1:]):
        part = np.matmul(a[..., k0:k1], b[..., k0:k1, :]).astype(np.int64, copy=False)
        out = part if out is None else out + part
    return out


def _abs_max(x: np.ndarray, zp: int = 0) -> int:
    """``max |x - zp|`` as a Python int (0 for an empty array)."""
    if x.size == 0:
        return 0
    return max(abs(int(x.max()) - zp), abs(int(x.min()) - zp))


def _check_int(*arrays: np.ndarray) -> None:
    for x in arrays:
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"integer arrays expected, got {x.dtype}")


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact ``a @ b`` as int64 with numpy matmul broadcasting: ``a`` (..., M, K), ``b``
    (..., K, N); integer inputs of any dtype (the int64 fallback for values beyond the
    float bounds is exact while the sums stay below 2^63)."""
    a, b = np.asarray(a), np.asarray(b)
    _check_int(a, b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"int_matmul needs operands of rank >= 2, got {a.shape} @ {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"int_matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    n_k = a.shape[-1]
    if n_k == 0:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    if a.size <= b.size:
        mags = np.abs(a.reshape(-1, n_k).astype(np.int64)).T
        dtype, bounds = _plan(np.ascontiguousarray(mags), _abs_max(b))
    else:
        mags = np.abs(np.moveaxis(b, -2, 0).reshape(n_k, -1).astype(np.int64))
        dtype, bounds = _plan(mags, _abs_max(a))
    return _chunked_matmul(a, b, dtype, bounds)


# ------------------------------------------------------------------------- Conv helpers

def _weight_zero_point(w_zp, n: int) -> np.ndarray:
    """``w_zp`` as int64 of shape (1,) or (n,)."""
    zp = np.asarray(w_zp, np.int64).reshape(-1)
    if zp.size not in (1, n):
        raise ValueError(f"weight zero point of shape {np.shape(w_zp)} for {n} channels")
    return zp


def _attrs_2d(n_sp: int, strides: Sequence[int], pads: Sequence[int],
              dilations: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(strides, pads_begin, pads_end, dilations) lifted to 2 spatial axes (1-D conv is a
    2-D conv over a height of 1)."""
    strides, pads, dilations = list(strides), list(pads), list(dilations)
    if n_sp not in (1, 2):
        raise ValueError(f"only 1-D and 2-D convolutions are supported, got {n_sp} spatial axes")
    if len(strides) != n_sp or len(dilations) != n_sp or len(pads) != 2 * n_sp:
        raise ValueError(f"strides {strides}, pads {pads}, dilations {dilations} do not match "
                         f"{n_sp} spatial axes")
    if min(strides) < 1 or min(dilations) < 1:
        raise ValueError(f"strides {strides} and dilations {dilations} must be >= 1")
    if n_sp == 1:
        return [1] + strides, [0, pads[0]], [0, pads[1]], [1] + dilations
    return strides, pads[:2], pads[2:], dilations


def _out_len(size: int, k: int, s: int, d: int, p_begin: int, p_end: int) -> int:
    out = (size + p_begin + p_end - (k - 1) * d - 1) // s + 1
    if out < 1:
        raise ValueError(f"empty convolution output (input {size}, kernel {k}, dilation {d}, "
                         f"pads {p_begin}+{p_end})")
    return out


def _check_groups(c: int, o: int, group: int) -> None:
    if group < 1 or c % group or o % group:
        raise ValueError(f"group {group} does not divide {c} input and {o} output channels")


def _center_wide(x: np.ndarray, zp: int) -> tuple[np.ndarray, int]:
    """(x, zp), with wide dtypes (> 16 bits) centered exactly in int64 to (x - zp, 0) so the
    later float conversion of ``x - zp`` is exact whenever the difference is."""
    if x.dtype.itemsize <= 2:
        return x, zp
    return x.astype(np.int64) - zp, 0


def _padded(x: np.ndarray, x_zp: int, pb: Sequence[int], pe: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """``x - x_zp`` in ``dtype`` (N, C, H, W), zero-padded by ``pb``/``pe`` on (H, W)."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + pb[0] + pe[0], w + pb[1] + pe[1]), dtype)
    np.subtract(x, dtype.type(x_zp), out=xp[:, :, pb[0]:pb[0] + h, pb[1]:pb[1] + w], dtype=dtype)
    return xp


def _exact_dtype(bound: int) -> np.dtype:
    """The first of float32, float64 exact on every partial sum ``<= bound``, else int64."""
    for dtype, limit in _FLOAT_LIMITS:
        if bound <= limit:
            return dtype
    return np.dtype(np.int64)


@njit(cache=True)
def _fill_phases(src, z, top, left, sh, sw, wq, planes):
    """Scatter ``src - z`` (H, W), placed at (top, left) of the padded input, into its
    stride phases: padded (yy, xx) goes to ``planes[(yy % sh) * sw + xx % sw]`` at flat
    position ``(yy // sh) * wq + xx // sw``."""
    h, w = src.shape
    for y in range(h):
        yy = y + top
        for px in range(sw):
            x0 = (px - left % sw + sw) % sw  # first column landing in phase px
            if x0 >= w:
                continue
            dst = planes[(yy % sh) * sw + px, (yy // sh) * wq + (x0 + left) // sw:]
            row = src[y, x0:]
            if sw == 1:
                for t in range(w - x0):
                    dst[t] = row[t] - z
            elif sw == 2:  # a constant stride vectorizes
                for t in range((w - x0 + 1) // 2):
                    dst[t] = row[2 * t] - z
            else:
                for t in range((w - x0 + sw - 1) // sw):
                    dst[t] = row[t * sw] - z


@njit(cache=True, inline="always")
def _tap(planes, wq, sh, sw, dh, dw, k_w, k):
    """The phase plane of tap ``k`` (row-major over the kernel), offset to its origin."""
    oy, ox = (k // k_w) * dh, (k % k_w) * dw
    return planes[(oy % sh) * sw + ox % sw, (oy // sh) * wq + ox // sw:]


@njit(cache=True)
def _taps(planes, w, wq, sh, sw, dh, dw, length, acc):
    """``acc[t] += sum_k w[k] * tap_k[t]`` for ``t < length`` (taps in pairs)."""
    k_w = w.shape[1]
    n_taps = w.shape[0] * k_w
    for k in range(0, n_taps - 1, 2):
        w0, w1 = w[k // k_w, k % k_w], w[(k + 1) // k_w, (k + 1) % k_w]
        s0 = _tap(planes, wq, sh, sw, dh, dw, k_w, k)
        s1 = _tap(planes, wq, sh, sw, dh, dw, k_w, k + 1)
        for t in range(length):
            acc[t] += w0 * s0[t] + w1 * s1[t]
    if n_taps % 2:
        w0 = w[w.shape[0] - 1, k_w - 1]
        s0 = _tap(planes, wq, sh, sw, dh, dw, k_w, n_taps - 1)
        for t in range(length):
            acc[t] += w0 * s0[t]


@njit(cache=True)
def _depthwise(x, z, w, top, left, hp, wp, sh, sw, dh, dw, out):
    """``out[n, o, y, x] = sum_ij w[o, i, j] * xpad[n, o // (O/C), y*sh + i*dh, x*sw + j*dw]``,
    ``xpad`` = ``x - z`` zero-padded to (hp, wp) with the input at (top, left); arithmetic in
    ``w``'s dtype (exact by the caller's bound); ``out`` int64 (N, O, OH, OW).  The padded
    plane is split into its sh*sw stride phases so that every tap is a contiguous run
    (flat over rows of width ``wq``; the columns past OW are computed and dropped)."""
    n_n, n_o, n_y, n_x = out.shape
    n_c = x.shape[1]
    mult = n_o // n_c
    wq = (wp + sw - 1) // sw
    for nc in range(n_n * n_c):  # one input channel and its outputs
        n, c = nc // n_c, nc % n_c
        planes = np.zeros((sh * sw, ((hp + sh - 1) // sh) * wq), w.dtype)
        acc = np.empty(n_y * wq, w.dtype)
        _fill_phases(x[n, c], z, top, left, sh, sw, wq, planes)
        for o in range(c * mult, (c + 1) * mult):
            acc[:] = 0
            _taps(planes, w[o], wq, sh, sw, dh, dw, (n_y - 1) * wq + n_x, acc)
            for y in range(n_y):
                row = acc[y * wq:]
                dst = out[n, o, y]
                for t in range(n_x):
                    dst[t] = np.int64(row[t])
    return out


@njit(cache=True)
def _depthwise_requant(x, z, w, top, left, hp, wp, sh, sw, dh, dw, bias, mult, shift, acc_lo, acc_hi, zp_out, lo,
                       hi, mode, table, in_qmin, n_out, out):
    """``_depthwise`` with each output channel requantized as soon as it is computed
    (``requant``'s ``requantize_row``: bias, accumulator saturation, per-channel multiplier,
    clamp) into the codes ``out`` (N, O, OH·OW; ``n_out`` = (N, O, OH, OW)): no int64
    accumulator tensor; with a non-empty ``table`` each code ``q`` then becomes
    ``table[q - in_qmin]``.  Returns the saturations."""
    n_n, n_o, n_y, n_x = n_out[0], n_out[1], n_out[2], n_out[3]
    n_c = x.shape[1]
    per_c = n_o // n_c
    wq = (wp + sw - 1) // sw
    saturated = 0
    dense = np.empty(n_y * n_x, w.dtype)  # one channel's accumulator without the padded columns
    codes = np.empty(n_y * n_x, np.int64)
    for nc in range(n_n * n_c):
        n, c = nc // n_c, nc % n_c
        planes = np.zeros((sh * sw, ((hp + sh - 1) // sh) * wq), w.dtype)
        acc = np.empty(n_y * wq, w.dtype)
        _fill_phases(x[n, c], z, top, left, sh, sw, wq, planes)
        for o in range(c * per_c, (c + 1) * per_c):
            acc[:] = 0
            _taps(planes, w[o], wq, sh, sw, dh, dw, (n_y - 1) * wq + n_x, acc)
            for y in range(n_y):  # element by element: a slice assignment would compile numba's shape checks
                for t in range(n_x):
                    dense[y * n_x + t] = acc[y * wq + t]
            dst = out[n, o]
            if table.size == 0:
                saturated += requantize_row(dense, dst, bias[o], mult[o], shift[o], acc_lo, acc_hi, zp_out, lo, hi,
                                             mode)
                continue
            saturated += requantize_row(dense, codes, bias[o], mult[o], shift[o], acc_lo, acc_hi, zp_out, lo, hi,
                                         mode)
            for t in range(n_y * n_x):
                dst[t] = table[codes[t] - in_qmin]
    return saturated


def _conv_depthwise(x, wq, x_zp, xmax, s, pb, pe, d, out_sp) -> np.ndarray:
    """Grouped conv with one input channel per group: direct loops (no im2col), in the
    narrowest exact dtype for ``xmax * max_o sum |w_o|``."""
    bound = xmax * int(np.abs(wq).reshape(wq.shape[0], -1).sum(axis=1).max(initial=0))
    dtype = _exact_dtype(bound)
    hp, wp = x.shape[2] + pb[0] + pe[0], x.shape[3] + pb[1] + pe[1]
    out = np.empty((x.shape[0], wq.shape[0], *out_sp), np.int64)
    return _depthwise(np.ascontiguousarray(x), dtype.type(x_zp), wq[:, 0].astype(dtype), pb[0], pb[1], hp, wp,
                      s[0], s[1], d[0], d[1], out)


def _im2col(xp: np.ndarray, k: Sequence[int], s: Sequence[int], d: Sequence[int],
            out_sp: Sequence[int], group: int) -> np.ndarray:
    """Columns (N, group, C/group * kh * kw, OH * OW) of the padded input ``xp``."""
    n, c = xp.shape[:2]
    sn, sc, sy, sx = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, c, k[0], k[1], out_sp[0], out_sp[1]),
        (sn, sc, sy * d[0], sx * d[1], sy * s[0], sx * s[1]), writeable=False)
    return np.ascontiguousarray(view).reshape(n, group, -1, out_sp[0] * out_sp[1])


def _conv_gemm(x, wq, x_zp, xmax, s, pb, pe, d, out_sp, group) -> np.ndarray:
    """Grouped conv as (im2col or strided 1x1 view) + exact chunked GEMM per group."""
    o, cg, kh, kw = wq.shape
    wg = wq.reshape(group, o // group, cg * kh * kw)
    mags = np.ascontiguousarray(np.abs(wg).reshape(o, -1).T)
    dtype, bounds = _plan(mags, xmax)
    if kh == kw == 1 and not any(pb) and not any(pe):
        xs = x[:, :, ::s[0], ::s[1]]
        cols = np.subtract(xs, dtype.type(x_zp), dtype=dtype).reshape(x.shape[0], group, cg, -1)
    else:
        cols = _im2col(_padded(x, x_zp, pb, pe, dtype), (kh, kw), s, d, out_sp, group)
    acc = _chunked_matmul(wg, cols, dtype, bounds)
    return acc.reshape(x.shape[0], o, *out_sp)


def conv_int(x: np.ndarray, w: np.ndarray, x_zp: int, w_zp, strides: Sequence[int],
             pads: Sequence[int], dilations: Sequence[int], group: int) -> np.ndarray:
    """ONNX Conv on integers without bias: int64 ``sum((x - x_zp) * (w - w_zp))`` of shape
    (N, O, *out_spatial); padding contributes 0.  ``x`` (N, C, *spatial) and ``w``
    (O, C/group, *kernel) integer arrays, 1-D or 2-D spatial; ``w_zp`` an int or (O,)
    per-channel; ``pads`` explicit ONNX (begins..., ends...)."""
    x, w = np.asarray(x), np.asarray(w)
    _check_int(x, w)
    n_sp = x.ndim - 2
    s, pb, pe, d = _attrs_2d(n_sp, strides, pads, dilations)
    if min(pb + pe) < 0:
        raise ValueError(f"negative Conv pads {list(pads)}")
    if w.ndim != x.ndim:
        raise ValueError(f"Conv weight {w.shape} does not match input {x.shape}")
    if n_sp == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
    o, cg = w.shape[:2]
    _check_groups(x.shape[1], o, group)
    if cg * group != x.shape[1]:
        raise ValueError(f"Conv weight {w.shape} with group {group} for {x.shape[1]} input channels")
    x_zp = int(x_zp)
    zp = _weight_zero_point(w_zp, o)
    wq = w.astype(np.int64) - zp.reshape(-1, 1, 1, 1)
    out_sp = [_out_len(x.shape[2 + j], w.shape[2 + j], s[j], d[j], pb[j], pe[j]) for j in range(2)]
    xmax = _abs_max(x, x_zp)
    x, x_zp = _center_wide(x, x_zp)
    if cg == 1 and group > 1:
        acc = _conv_depthwise(x, wq, x_zp, xmax, s, pb, pe, d, out_sp)
    else:
        acc = _conv_gemm(x, wq, x_zp, xmax, s, pb, pe, d, out_sp, group)
    return acc.reshape(acc.shape[0], o, *out_sp[2 - n_sp:])


# -------------------------------------------------------------------- ConvTranspose

@njit(cache=True)
def _col2im(cols, sh, sw, dh, dw, ph, pw, out):
    """``out[n, o, y*sh + i*dh - ph, x*sw + j*dw - pw] += cols[n, o, i, j, y, x]`` for the
    targets inside ``out`` (int64, zeroed)."""
    n_n, n_o, k_h, k_w, n_y, n_x = cols.shape
    o_h, o_w = out.shape[2], out.shape[3]
    for n in range(n_n):
        for o in range(n_o):
            for i in range(k_h):
                for y in range(n_y):
                    oy = y * sh + i * dh - ph
                    if oy < 0 or oy >= o_h:
                        continue
                    for j in range(k_w):
                        for x in range(n_x):
                            ox = x * sw + j * dw - pw
                            if 0 <= ox < o_w:
                                out[n, o, oy, ox] += cols[n, o, i, j, y, x]
    return out


def _transpose_weight_zero_point(w_zp, c: int, mg: int, group: int) -> np.ndarray:
    """``w_zp`` (int, (O,) per output channel or (O/group,) per weight axis 1) as an int64
    array broadcasting against the weight's (C, O/group) axes."""
    zp = np.asarray(w_zp, np.int64).reshape(-1)
    if zp.size == 1:
        return zp.reshape(1, 1)
    if zp.size == mg:
        return zp.reshape(1, mg)
    if zp.size == mg * group:
        return np.repeat(zp.reshape(group, mg), c // group, axis=0)
    raise ValueError(f"weight zero point of shape {np.shape(w_zp)} for {mg * group} output channels")


def conv_transpose_int(x: np.ndarray, w: np.ndarray, x_zp: int, w_zp, strides: Sequence[int],
                       pads: Sequence[int], dilations: Sequence[int], group: int,
                       output_padding: Sequence[int]) -> np.ndarray:
    """ONNX ConvTranspose on integers without bias: int64 accumulator (N, O, *out) of
    ``x - x_zp`` (N, C, *spatial) with ``w - w_zp`` (C, O/group, *kernel), 1-D or 2-D
    spatial.  ``w_zp`` an int, per output channel (O,) or per weight axis 1 (O/group,);
    ``pads`` explicit ONNX; ``out = s*(in-1) + output_padding + (k-1)*d + 1 - pb - pe``."""
    x, w = np.asarray(x), np.asarray(w)
    _check_int(x, w)
    n_sp = x.ndim - 2
    s, pb, pe, d = _attrs_2d(n_sp, strides, pads, dilations)
    op = [0] * (2 - n_sp) + list(output_padding)
    if len(op) != 2:
        raise ValueError(f"output_padding {list(output_padding)} does not match {n_sp} spatial axes")
    if w.ndim != x.ndim:
        raise ValueError(f"ConvTranspose weight {w.shape} does not match input {x.shape}")
    if n_sp == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
    n, c, h, wd = x.shape
    mg, kh, kw = w.shape[1:]
    _check_groups(c, mg * group, group)
    if w.shape[0] != c:
        raise ValueError(f"ConvTranspose weight {w.shape} for {c} input channels")
    out_sp = [s[j] * (x.shape[2 + j] - 1) + op[j] + (w.shape[2 + j] - 1) * d[j] + 1 - pb[j] - pe[j]
              for j in range(2)]
    if min(out_sp) < 1:
        raise ValueError(f"empty ConvTranspose output {out_sp}")
    zp = _transpose_weight_zero_point(w_zp, c, mg, group)
    wq = w.astype(np.int64) - zp[:, :, None, None]
    wt = wq.reshape(group, c // group, mg * kh * kw).transpose(0, 2, 1)  # (g, mg*kh*kw, cg)
    xmax = _abs_max(x, int(x_zp))
    x, x_zp = _center_wide(x, int(x_zp))
    dtype, bounds = _plan(np.ascontiguousarray(np.abs(wt).reshape(-1, c // group).T), xmax)
    xs = np.subtract(x, dtype.type(x_zp), dtype=dtype).reshape(n, group, c // group, h * wd)
    cols = _chunked_matmul(wt, xs, dtype, bounds).reshape(n, mg * group, kh, kw, h, wd)
    if [kh, kw] == s and d == [1, 1] and not any(pb + pe + op):  # taps tile the output: no overlap
        out = cols.transpose(0, 1, 4, 2, 5, 3).reshape(n, mg * group, *out_sp)
        return out.reshape(n, mg * group, *out_sp[2 - n_sp:])
    out = np.zeros((n, mg * group, *out_sp), np.int64)
    _col2im(cols, s[0], s[1], d[0], d[1], pb[0], pb[1], out)
    return out.reshape(n, mg * group, *out_sp[2 - n_sp:])


# ------------------------------------------------------------ prepared weights (simulator)

class ConvPlan:
    """A Conv's weights prepared once: zero point subtracted, converted to the float type
    (and K chunks) that keep every partial sum exact for *any* input of ``x_dtype`` with
    zero point ``x_zp`` (the bound uses the dtype's range, not the data: the plan is fixed).
    ``conv_planned`` then runs without re-reading the weights' magnitudes."""

    def __init__(self, w: np.ndarray, w_zp, x_dtype, x_zp: int, group: int):
        w = np.asarray(w)
        _check_int(w)
        if w.ndim == 3:
            w = w[:, :, None, :]
        if w.ndim != 4:
            raise ValueError(f"only 1-D and 2-D convolutions are supported, got weight {w.shape}")
        o, cg, kh, kw = w.shape
        info = np.iinfo(np.dtype(x_dtype))
        self.xmax = max(abs(int(info.min) - int(x_zp)), abs(int(info.max) - int(x_zp)))
        self.x_zp, self.group, self.o, self.kernel = int(x_zp), int(group), o, (kh, kw)
        wq = w.astype(np.int64) - _weight_zero_point(w_zp, o).reshape(-1, 1, 1, 1)
        self.depthwise = cg == 1 and group > 1
        if self.depthwise:
            self.dtype = _exact_dtype(self.xmax * int(np.abs(wq).reshape(o, -1).sum(axis=1).max(initial=0)))
            self.w = np.ascontiguousarray(wq[:, 0].astype(self.dtype))
            self.bounds = None
        else:
            wg = wq.reshape(group, o // group, cg * kh * kw)
            self.dtype, self.bounds = _plan(np.ascontiguousarray(np.abs(wg).reshape(o, -1).T), self.xmax)
            self.w = np.ascontiguousarray(wg.astype(self.dtype))


def conv_planned(plan: ConvPlan, x: np.ndarray, strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int]) -> np.ndarray:
    """``conv_int`` with prepared weights: the accumulator (N, O, *out) as exact integers,
    in the plan's float type when one GEMM sufficed (no int64 pass), else int64."""
    x = np.asarray(x)
    n_sp = x.ndim - 2
    s, pb, pe, d = _attrs_2d(n_sp, strides, pads, dilations)
    if n_sp == 1:
        x = x[:, :, None, :]
    (kh, kw), dtype = plan.kernel, plan.dtype
    out_sp = [_out_len(x.shape[2 + j], (kh, kw)[j], s[j], d[j], pb[j], pe[j]) for j in range(2)]
    if plan.depthwise:
        hp, wp = x.shape[2] + pb[0] + pe[0], x.shape[3] + pb[1] + pe[1]
        acc = np.empty((x.shape[0], plan.o, *out_sp), np.int64)
        _depthwise(np.ascontiguousarray(x), dtype.type(plan.x_zp), plan.w, pb[0], pb[1], hp, wp, s[0], s[1],
                   d[0], d[1], acc)
    else:
        group = plan.group
        if (kh > 1 or kw > 1) and s == [1, 1] and group == 1 and len(plan.bounds) == 2 \
                and out_sp[0] * out_sp[1] >= SHIFTED_MIN_PIXELS and plan.w.shape[2] >= SHIFTED_MIN_K * kh * kw:
            return _conv_shifted(plan, x, pb, pe, d, out_sp).reshape(x.shape[0], plan.o, *out_sp[2 - n_sp:])
        if kh == kw == 1 and not any(pb) and not any(pe):
            xs = x[:, :, ::s[0], ::s[1]]
            cols = np.subtract(xs, dtype.type(plan.x_zp), dtype=dtype).reshape(x.shape[0], group, -1, out_sp[0] * out_sp[1])
        else:
            cols = _im2col(_padded(x, plan.x_zp, pb, pe, dtype), (kh, kw), s, d, out_sp, group)
        if len(plan.bounds) == 2:  # one exact GEMM: keep its float result
            acc = np.matmul(plan.w, cols)
        else:
            acc = _chunked_matmul(plan.w, cols, dtype, plan.bounds)
    return acc.reshape(x.shape[0], plan.o, *out_sp[2 - n_sp:])


def depthwise_requantized(plan: ConvPlan, x: np.ndarray, strides: Sequence[int], pads: Sequence[int],
                          dilations: Sequence[int], bias, acc_bits: int, mult, shift, zp_out: int, lo: int, hi: int,
                          mode: int, dtype, table: np.ndarray | None = None,
                          in_qmin: int = 0) -> tuple[np.ndarray, int]:
    """A depthwise ``plan`` run straight to codes: ``requant.requantize_accumulator`` of
    ``conv_planned``'s accumulator (per output channel; ``table``/``in_qmin`` as there), fused
    into the conv's loops.  Returns (codes of ``dtype``, accumulator saturations)."""
    if not plan.depthwise:
        raise ValueError("depthwise_requantized needs a depthwise plan")
    x = np.asarray(x)
    n_sp = x.ndim - 2
    s, pb, pe, d = _attrs_2d(n_sp, strides, pads, dilations)
    if n_sp == 1:
        x = x[:, :, None, :]
    kh, kw = plan.kernel
    out_sp = [_out_len(x.shape[2 + j], (kh, kw)[j], s[j], d[j], pb[j], pe[j]) for j in range(2)]
    hp, wp = x.shape[2] + pb[0] + pe[0], x.shape[3] + pb[1] + pe[1]
    out = np.empty((x.shape[0], plan.o, out_sp[0] * out_sp[1]), dtype)
    bias, mult, shift = channel_params(bias, mult, shift, plan.o)
    bound = np.int64(1) << np.int64(acc_bits - 1)
    sat = _depthwise_requant(np.ascontiguousarray(x), plan.dtype.type(plan.x_zp), plan.w, pb[0], pb[1], hp, wp, s[0],
                             s[1], d[0], d[1], bias, mult, shift, -bound, bound - 1, np.int64(zp_out), np.int64(lo),
                             np.int64(hi), mode, table_arg(table, in_qmin, lo, hi), np.int64(in_qmin),
                             np.array([x.shape[0], plan.o, *out_sp], np.int64), out)
    return out.reshape(x.shape[0], plan.o, *out_sp[2 - n_sp:]), int(sat)


SHIFTED_MIN_PIXELS = 6400  # from here on one GEMM per tap beats im2col's k·k-fold copy ...
SHIFTED_MIN_K = 16  # ... unless the per-tap GEMMs are too thin (few input channels)


def _conv_shifted(plan: ConvPlan, x: np.ndarray, pb, pe, d, out_sp) -> np.ndarray:
    """Stride-1 conv without im2col: per kernel tap (i, j) one GEMM of W[:, :, i, j] with the
    padded input shifted by (i·dh, j·dw), computed over the padded width (the columns past
    OW are dropped).  Every partial sum is a partial sum of the plan's exact single chunk, so
    accumulating the taps in the float type stays exact."""
    dtype, (kh, kw), o = plan.dtype, plan.kernel, plan.o
    xp = _padded(x, plan.x_zp, pb, pe, dtype)
    n, c, hp, wp = xp.shape
    length = (out_sp[0] - 1) * wp + out_sp[1]
    w = plan.w.reshape(o, c, kh, kw)
    out = np.empty((n, o, out_sp[0] * wp), dtype)
    tmp = np.empty((o, length), dtype)
    for b in range(n):
        flat = xp[b].reshape(c, hp * wp)
        acc = out[b, :, :length]
        for i in range(kh):
            for j in range(kw):
                off = i * d[0] * wp + j * d[1]
                if i == 0 and j == 0:
                    np.matmul(np.ascontiguousarray(w[:, :, i, j]), flat[:, off:off + length], out=acc)
                else:
                    np.matmul(np.ascontiguousarray(w[:, :, i, j]), flat[:, off:off + length], out=tmp)
                    acc += tmp
    return out.reshape(n, o, out_sp[0], wp)[:, :, :, :out_sp[1]]


class MatMulPlan:
    """A constant right operand B (K, N) prepared once, for any left operand of ``a_dtype``
    with zero point ``a_zp`` (exactness bound from the dtype's range, as :class:`ConvPlan`)."""

    def __init__(self, b: np.ndarray, b_zp, a_dtype, a_zp: int):
        b = np.asarray(b)
        _check_int(b)
        info = np.iinfo(np.dtype(a_dtype))
        amax = max(abs(int(info.min) - int(a_zp)), abs(int(info.max) - int(a_zp)))
        bq = b.astype(np.int64) - np.asarray(b_zp, np.int64).reshape(1, -1)
        self.a_zp = int(a_zp)
        self.dtype, self.bounds = _plan(np.ascontiguousarray(np.abs(bq)), amax)
        self.b = np.ascontiguousarray(bq.astype(self.dtype))


def matmul_planned(plan: MatMulPlan, a: np.ndarray) -> np.ndarray:
    """``(a - a_zp) @ (B - b_zp)`` as exact integers (the plan's float type, or int64)."""
    x = np.subtract(a, plan.dtype.type(plan.a_zp), dtype=plan.dtype)
    if len(plan.bounds) == 2:
        return np.matmul(x, plan.b)
    return _chunked_matmul(x, plan.b, plan.dtype, plan.bounds)


class ConvTransposePlan:
    """A ConvTranspose's weights prepared once, like :class:`ConvPlan` (exactness bound from
    the input dtype's range)."""

    def __init__(self, w: np.ndarray, w_zp, x_dtype, x_zp: int, group: int):
        w = np.asarray(w)
        _check_int(w)
        if w.ndim == 3:
            w = w[:, :, None, :]
        c, mg, kh, kw = w.shape
        _check_groups(c, mg * group, group)
        info = np.iinfo(np.dtype(x_dtype))
        xmax = max(abs(int(info.min) - int(x_zp)), abs(int(info.max) - int(x_zp)))
        wq = w.astype(np.int64) - _transpose_weight_zero_point(w_zp, c, mg, group)[:, :, None, None]
        wt = wq.reshape(group, c // group, mg * kh * kw).transpose(0, 2, 1)  # (g, mg*kh*kw, cg)
        self.dtype, self.bounds = _plan(np.ascontiguousarray(np.abs(wt).reshape(-1, c // group).T), xmax)
        self.w = np.ascontiguousarray(wt.astype(self.dtype))
        self.x_zp, self.group, self.shape = int(x_zp), int(group), (c, mg, kh, kw)


def conv_transpose_planned(plan: ConvTransposePlan, x: np.ndarray, strides: Sequence[int], pads: Sequence[int],
                           dilations: Sequence[int], output_padding: Sequence[int]) -> np.ndarray:
    """``conv_transpose_int`` with prepared weights: exact integers, in the plan's float type
    when one GEMM sufficed and the kernel taps tile the output (stride = kernel), else int64."""
    x = np.asarray(x)
    n_sp = x.ndim - 2
    s, pb, pe, d = _attrs_2d(n_sp, strides, pads, dilations)
    op = [0] * (2 - n_sp) + list(output_padding)
    if n_sp == 1:
        x = x[:, :, None, :]
    n, c, h, wd = x.shape
    _, mg, kh, kw = plan.shape
    group = plan.group
    out_sp = [s[j] * (x.shape[2 + j] - 1) + op[j] + ((kh, kw)[j] - 1) * d[j] + 1 - pb[j] - pe[j] for j in range(2)]
    if min(out_sp) < 1:
        raise ValueError(f"empty ConvTranspose output {out_sp}")
    xs = np.subtract(x, plan.dtype.type(plan.x_zp), dtype=plan.dtype).reshape(n, group, c // group, h * wd)
    if len(plan.bounds) == 2:
        cols = np.matmul(plan.w, xs)
    else:
        cols = _chunked_matmul(plan.w, xs, plan.dtype, plan.bounds)
    cols = cols.reshape(n, mg * group, kh, kw, h, wd)
    if [kh, kw] == s and d == [1, 1] and not any(pb + pe + op):  # taps tile the output: no overlap
        out = cols.transpose(0, 1, 4, 2, 5, 3).reshape(n, mg * group, *out_sp)
    else:
        out = np.zeros((n, mg * group, *out_sp), np.int64)
        _col2im(cols.astype(np.int64), s[0], s[1], d[0], d[1], pb[0], pb[1], out)
    return out.reshape(n, mg * group, *out_sp[2 - n_sp:])
