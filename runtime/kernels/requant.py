"""Fixed-point requantization: the one arithmetic every integer kernel ends with.

``q_out = clamp(zp_out + round_shift(acc * M, s), lo, hi)`` where ``real_multiplier ≈ M · 2^-s``
and ``M`` is an integer of ``bits`` bits (normalized to ``[2^(bits-1), 2^bits)``).  The
rounding of the right shift is the target's choice:

- ``HALF_UP``   (0): add ``2^(s-1)``, arithmetic shift right — ties go towards +inf;
- ``HALF_EVEN`` (1): ties go to the even result (onnxruntime's float rounding);
- ``HALF_AWAY`` (2): ties go away from zero (TFLite's ``RoundingDivideByPOT``).

A shift ``s <= 0`` is an exact left shift.  All arithmetic is int64; callers keep
``|acc| · M < 2^63`` (the target's accumulator and multiplier widths guarantee it).
Imports numpy and numba only.
"""
from __future__ import annotations

import numpy as np
from numba import njit

HALF_UP, HALF_EVEN, HALF_AWAY = 0, 1, 2
ROUNDING = {"half_up": HALF_UP, "half_even": HALF_EVEN, "half_away": HALF_AWAY}


def quantize_multiplier(real, bits: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """(M, s) int64 arrays with ``real ≈ M · 2^-s``, ``2^(bits-1) <= M < 2^bits`` (M = 0 for
    real = 0).  ``real`` must be finite and >= 0; the shape is kept."""
    r = np.asarray(real, np.float64)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("requantization multipliers must be finite and >= 0")
    mant, exp = np.frexp(r)  # r = mant * 2^exp, mant in [0.5, 1)
    m = np.rint(mant * float(1 << bits)).astype(np.int64)
    s = (bits - exp).astype(np.int64)
    full = m == (1 << bits)  # mantissa rounded up to 1.0
    m = np.where(full, m >> 1, m)
    s = np.where(full, s - 1, s)
    zero = m == 0
    return np.where(zero, 0, m), np.where(zero, 0, s)


@njit(cache=True, inline="always")
def round_shift(x, s, mode):
    """Round ``x / 2^s`` to an integer (int64 scalars), branch-free in ``x``:
    half up ``(x + h) >> s``; half even ``(x + h - 1 + lsb) >> s`` with ``lsb`` the low bit
    of ``floor(x / 2^s)``; half away: half up on ``|x|`` with the sign restored
    (``h = 2^(s-1)``, ``>>`` is floor division)."""
    if s <= 0:
        return x << (-s)
    if s > 63:  # |x| < 2^63: |x / 2^s| < 1/2 (and x86 would mask the shift count)
        return np.int64(0)
    h = np.int64(1) << (s - 1)
    if mode == 0:
        return (x + h) >> s
    if mode == 1:
        return (x + h - 1 + ((x >> s) & 1)) >> s
    return (x + h - (x < 0)) >> s


@njit(cache=True)
def requantize(acc, mult, shift, zp_out, lo, hi, mode, out):
    """``out[o, c, i] = clamp(zp_out + round_shift(acc[o, c, i] * mult[c], shift[c]), lo, hi)``.

    ``acc``: int64 (outer, channels, inner); ``mult``/``shift``: int64 (channels,) — pass
    length-1 arrays broadcast by the caller for per-tensor; ``out``: any integer array of the
    same shape (the target dtype)."""
    n0, n1, n2 = acc.shape
    for o in range(n0):
        for c in range(n1):
            m = mult[c]
            s = shift[c]
            for i in range(n2):
                v = zp_out + round_shift(acc[o, c, i] * m, s, mode)
                if v < lo:
                    v = lo
                elif v > hi:
                    v = hi
                out[o, c, i] = v
    return out


def requantize_channels(acc: np.ndarray, mult, shift, zp_out: int, lo: int, hi: int, mode: int,
                        dtype, axis: int | None = 1) -> np.ndarray:
    """Requantize an int64 accumulator; ``mult``/``shift`` per channel along ``axis`` (or
    per tensor when they have one element / ``axis`` is None).  Returns ``dtype``."""
    acc = np.ascontiguousarray(acc, np.int64)
    mult = np.atleast_1d(np.asarray(mult, np.int64))
    shift = np.atleast_1d(np.asarray(shift, np.int64))
    if mult.size == 1 or axis is None or acc.ndim == 0:
        view = acc.reshape(1, 1, -1)
        mult, shift = mult[:1], shift[:1]
    else:
        ax = axis % acc.ndim
        view = acc.reshape(int(np.prod(acc.shape[:ax], dtype=np.int64)), acc.shape[ax], -1)
    out = np.empty(view.shape, dtype)
    requantize(view, mult, shift, np.int64(zp_out), np.int64(lo), np.int64(hi), mode, out)
    return out.reshape(acc.shape)


@njit(cache=True)
def requantize_row(src, dst, b, m, s, acc_lo, acc_hi, zp_out, lo, hi, mode):
    """One channel's run of ``requantize_accumulator`` (``src`` any numeric 1-D array of exact
    integers, ``dst`` the codes); returns the count of saturated accumulators."""
    sat = 0
    for i in range(src.shape[0]):
        a0 = np.int64(src[i]) + b
        a = min(max(a0, acc_lo), acc_hi)
        sat += a != a0
        dst[i] = min(max(zp_out + round_shift(a * m, s, mode), lo), hi)
    return sat


@njit(cache=True)
def _requantize_acc(acc, bias, acc_lo, acc_hi, mult, shift, zp_out, lo, hi, mode, table, in_qmin, out):
    """``acc`` (outer, channels, inner) to ``out``, a channel's row at a time; a non-empty
    ``table`` maps each code ``q`` to ``table[q - in_qmin]`` (a Lut run fused after the op)."""
    n0, n1, n2 = acc.shape
    codes = np.empty(n2 if table.size else 0, np.int64)
    saturated = 0
    for r in range(n0 * n1):
        o, c = r // n1, r % n1
        if table.size == 0:
            saturated += requantize_row(acc[o, c], out[o, c], bias[c], mult[c], shift[c], acc_lo, acc_hi, zp_out, lo,
                                         hi, mode)
            continue
        saturated += requantize_row(acc[o, c], codes, bias[c], mult[c], shift[c], acc_lo, acc_hi, zp_out, lo, hi,
                                     mode)
        dst = out[o, c]
        for t in range(n2):
            dst[t] = table[codes[t] - in_qmin]
    return saturated


@njit(cache=True)
def _requantize_last(acc, bias, acc_lo, acc_hi, mult, shift, zp_out, lo, hi, mode, out):
    """``_requantize_acc`` with the channels as the last axis of ``acc`` (rows, channels): a
    MatMul's accumulator."""
    saturated = 0
    for r in range(acc.shape[0]):
        src, dst = acc[r], out[r]
        for c in range(acc.shape[1]):
            a0 = np.int64(src[c]) + bias[c]
            a = min(max(a0, acc_lo), acc_hi)
            saturated += a != a0
            dst[c] = min(max(zp_out + round_shift(a * mult[c], shift[c], mode), lo), hi)
    return saturated


_NO_TABLE = np.zeros(0, np.int64)


def table_arg(table: np.ndarray | None, in_qmin: int, lo: int, hi: int) -> np.ndarray:
    """``table`` as the kernels take it (empty: none), after checking that every code of
    ``[lo, hi]`` indexes it from ``in_qmin`` (ValueError): no read outside it.  That its
    entries fit the output type is the caller's to check, once (the simulator does, when it
    fuses a table op), not per call."""
    if table is None:
        return _NO_TABLE
    table = np.ascontiguousarray(table, np.int64)
    if not (0 <= lo - in_qmin and hi - in_qmin < table.size):
        raise ValueError(f"table of {table.size} entries from code {in_qmin} does not cover [{lo}, {hi}]")
    return table


def channel_params(bias, mult, shift, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bias, mult, shift) as contiguous int64 arrays of ``n`` channels (a bias of None: zeros;
    one element: broadcast) — what :func:`requantize_accumulator` takes without copying."""
    def per_channel(v):
        v = np.asarray(v)
        if v.dtype == np.int64 and v.shape == (n,) and v.flags.c_contiguous:
            return v
        return np.ascontiguousarray(np.broadcast_to(v.astype(np.int64).reshape(-1), (n,)))
    return np.zeros(n, np.int64) if bias is None else per_channel(bias), per_channel(mult), per_channel(shift)


def requantize_accumulator(acc: np.ndarray, bias, acc_bits: int, mult, shift, zp_out: int, lo: int, hi: int,
                           mode: int, dtype, axis: int, table: np.ndarray | None = None,
                           in_qmin: int = 0) -> tuple[np.ndarray, int]:
    """One pass from a linear op's accumulator (exact integers, int64 or float) to codes:
    add the per-channel ``bias`` (int64 (C,), or None), saturate to a signed ``acc_bits``
    accumulator, requantize per channel along ``axis``.  With ``table`` (int64, entries within
    ``dtype``: not checked here), each code ``q`` then becomes ``table[q - in_qmin]`` (a lookup-table op fused
    after this one).  Returns (codes of ``dtype``, saturations)."""
    acc = np.ascontiguousarray(acc)
    ax = axis % acc.ndim
    view = acc.reshape(int(np.prod(acc.shape[:ax], dtype=np.int64)), acc.shape[ax], -1)
    bias, mult, shift = channel_params(bias, mult, shift, view.shape[1])
    bound = np.int64(1) << np.int64(acc_bits - 1)
    out = np.empty(view.shape, dtype)
    args = (-bound, bound - 1, mult, shift, np.int64(zp_out), np.int64(lo), np.int64(hi), mode)
    if view.shape[2] == 1 and table is None:  # channels last: along them
        sat = _requantize_last(view.reshape(view.shape[:2]), bias, *args, out.reshape(view.shape[:2]))
    else:
        sat = _requantize_acc(view, bias, *args, table_arg(table, in_qmin, lo, hi), np.int64(in_qmin), out)
    return out.reshape(acc.shape), int(sat)
