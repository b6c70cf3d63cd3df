"""Nonlinear ops as lookup tables over the input codes.

8-bit inputs: one entry per code, ``out = table[q - in_qmin]`` (exact per-code rounding).
16-bit inputs: ``2^L + 1`` samples every ``2^(in_bits - L)`` codes, linearly interpolated with
a rounding right shift.  Interpolation error against the exact per-code table: each sample is
within 0.5 LSB of the function, the chord adds at most ``h²/8 · max|f''| / out_scale`` LSB
(``h = 2^(in_bits-L) · in_scale``, the sample spacing in real units) and the final shift 0.5,
so ``|interp - exact| <= floor(1.5 + h²/8 · max|f''| / out_scale)`` where the function is
smooth and does not cross the output clamp inside a sample interval.  Kinks (HardSwish at
±3, a saturating clamp) cost up to ``h · |jump of f'| / 4 / out_scale`` LSB instead.  Measured
maxima for common activations are in tests/runtime/kernels/test_lut.py (``INTERP_BOUNDS``).
Imports numpy, numba and ``ptqc.runtime.kernels`` only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit

from .elementwise import check_headroom, check_mode, out_bounds
from .requant import round_shift


def interp_step_log2(in_qmin: int, in_qmax: int, log2_entries: int) -> int:
    """``in_bits - log2_entries`` (the sample spacing is ``2^step_log2`` codes) where
    ``2^in_bits = in_qmax - in_qmin + 1``; ValueError unless that count is a power of two and
    ``1 <= log2_entries <= in_bits``."""
    count = int(in_qmax) - int(in_qmin) + 1
    if count < 2 or count & (count - 1):
        raise ValueError(f"input range [{in_qmin}, {in_qmax}] does not hold a power of two of codes")
    in_bits = count.bit_length() - 1
    if not 1 <= log2_entries <= in_bits:
        raise ValueError(f"log2_entries must be in [1, {in_bits}], got {log2_entries}")
    return in_bits - int(log2_entries)


def table_codes(in_qmin: int, in_qmax: int, log2_entries: int | None = None) -> np.ndarray:
    """The int64 input codes a table samples: every code of ``[in_qmin, in_qmax]``, or
    ``in_qmin + i · 2^step_log2`` for ``i = 0 .. 2^log2_entries`` (the last is ``in_qmax + 1``)."""
    if log2_entries is None:
        if in_qmax < in_qmin:
            raise ValueError(f"empty input range [{in_qmin}, {in_qmax}]")
        return np.arange(int(in_qmin), int(in_qmax) + 1, dtype=np.int64)
    step_log2 = interp_step_log2(in_qmin, in_qmax, log2_entries)
    return int(in_qmin) + (np.arange((1 << log2_entries) + 1, dtype=np.int64) << step_log2)


def make_table(fn: Callable[[np.ndarray], np.ndarray], in_scale: float, in_zp: int, in_qmin: int,
               in_qmax: int, out_scale: float, out_zp: int, out_qmin: int, out_qmax: int,
               log2_entries: int | None = None) -> np.ndarray:
    """int64 table ``t[i] = clamp(rint(fn(in_scale · (k_i - in_zp)) / out_scale) + out_zp,
    out_qmin, out_qmax)`` (rint half even) over ``k_i = table_codes(in_qmin, in_qmax,
    log2_entries)``.  ``fn`` is a vectorized float64 function; ±inf saturates, NaN raises
    ValueError."""
    codes = table_codes(in_qmin, in_qmax, log2_entries)
    y = np.asarray(fn(float(in_scale) * (codes - np.int64(in_zp))), np.float64)
    if y.shape != codes.shape:
        raise ValueError(f"fn returned shape {y.shape} for input shape {codes.shape}")
    if np.isnan(y).any():
        raise ValueError(f"fn is NaN at input codes {codes[np.isnan(y)][:8].tolist()}")
    return np.clip(np.rint(y / float(out_scale)) + out_zp, out_qmin, out_qmax).astype(np.int64)


def _code_range(q: np.ndarray, in_qmin: int, limit: int) -> None:
    """ValueError unless every ``q - in_qmin`` is in ``[0, limit)``."""
    if q.size and not (int(q.min()) >= in_qmin and int(q.max()) - in_qmin < limit):
        raise ValueError(f"input codes [{q.min()}, {q.max()}] outside the table's "
                         f"[{in_qmin}, {in_qmin + limit - 1}]")


def _covers_dtype(q: np.ndarray, in_qmin: int, limit: int) -> bool:
    """Whether every value of ``q``'s dtype indexes the table (no data pass needed)."""
    info = np.iinfo(q.dtype)
    return int(info.min) >= in_qmin and int(info.max) - in_qmin < limit


@njit(cache=True)
def _gather(q, table, in_qmin, out):
    for i in range(q.shape[0]):
        out[i] = table[np.int64(q[i]) - in_qmin]
    return out


@njit(cache=True, inline="always")
def interp_one(q, table, in_qmin, step_log2, lo, hi, mode):
    """One code through an interpolated table (the arithmetic of :func:`apply_table_interp`)."""
    d = np.int64(q) - in_qmin
    i = d >> step_log2
    t0 = table[i]
    v = t0 + round_shift((table[i + 1] - t0) * (d & ((np.int64(1) << step_log2) - 1)), step_log2, mode)
    return min(max(v, lo), hi)


@njit(cache=True)
def _interp(q, table, in_qmin, step_log2, lo, hi, mode, out):
    for n in range(q.shape[0]):
        out[n] = interp_one(q[n], table, in_qmin, step_log2, lo, hi, mode)
    return out


def apply_table(q: np.ndarray, table: np.ndarray, in_qmin: int, dtype) -> np.ndarray:
    """``table[q - in_qmin]``, same shape as ``q``, as ``dtype`` (ValueError if a code falls
    outside the table or an entry outside ``dtype``)."""
    q = np.asarray(q)
    table = np.ascontiguousarray(table, np.int64)
    if not _covers_dtype(q, int(in_qmin), table.shape[0]):
        _code_range(q, int(in_qmin), table.shape[0])
    info = np.iinfo(dtype)
    if table.size and not info.min <= table.min() <= table.max() <= info.max:
        raise ValueError(f"table entries [{table.min()}, {table.max()}] do not fit {np.dtype(dtype).name}")
    out = _gather(np.ascontiguousarray(q).reshape(-1), table, np.int64(in_qmin), np.empty(q.size, dtype))
    return out.reshape(q.shape)


def apply_table_interp(q: np.ndarray, table: np.ndarray, in_qmin: int, step_log2: int, lo: int,
                       hi: int, mode: int, dtype) -> np.ndarray:
    """Linear interpolation: with ``d = q - in_qmin``, ``i = d >> step_log2``,
    ``f = d & (2^step_log2 - 1)``: ``clamp(table[i] + round_shift((table[i+1] - table[i]) · f,
    step_log2, mode), lo, hi)``; same shape as ``q``, as ``dtype``.  ``table`` comes from
    :func:`make_table` with ``log2_entries`` (``step_log2`` from :func:`interp_step_log2`)."""
    q = np.asarray(q)
    table = np.ascontiguousarray(table, np.int64)
    step_log2 = int(step_log2)
    if not 0 <= step_log2 <= 62 or table.shape[0] < 2:
        raise ValueError(f"need step_log2 in [0, 62] and >= 2 entries, got {step_log2}, {table.shape[0]}")
    lo, hi = out_bounds(lo, hi, dtype)
    if not _covers_dtype(q, int(in_qmin), (table.shape[0] - 1) << step_log2):
        _code_range(q, int(in_qmin), (table.shape[0] - 1) << step_log2)
    diff = int(np.abs(np.diff(table)).max())
    check_headroom(diff * ((1 << step_log2) - 1), step_log2)
    out = _interp(np.ascontiguousarray(q).reshape(-1), table, np.int64(in_qmin),
                  np.int64(step_log2), lo, hi, check_mode(mode), np.empty(q.size, dtype))
    return out.reshape(q.shape)
