"""Integer softmax: ``exp(x - max)`` as a table over the code distance ``d = max - q``.

``e = E[d]`` with ``E[d] = rint(exp(-in_scale · d) · 2^frac_bits)``, ``S = Σ e`` along the axis,
``out = clamp(out_zp + round_div(e · K, S · 2^G), lo, hi)`` with ``K = rint(2^G / out_scale)``
and ``G = 16`` (:data:`K_BITS`): ``K`` then costs at most ``2^-17`` output LSB, and the
numerator ``E[0] · K + S · 2^(G-1)`` stays below ``2^63`` for every ``frac_bits <= 30``, axis
length ``<= 2^16`` and ``out_scale >= 1/65535`` (checked at run time, ValueError otherwise).

Accuracy against the float softmax of the dequantized input (``p = softmax(in_scale · q)``):
each ``E`` entry is within 0.5 of ``exp(-in_scale · d) · 2^frac_bits`` (entries that round to 0
are the table's end), ``S >= 2^frac_bits``, so
``|out - (out_zp + p / out_scale)| <= 0.5 + 0.5 · max(1, n - 1) / (2^frac_bits · out_scale)
+ 2^-17`` before the clamp (n = axis length; with a table cut by ``max_len`` before its
entries reach 0, codes beyond it count as 0 and the bound does not hold).  With
``frac_bits = 15`` and an 8-bit output (``out_scale = 1/256``) that is 1 LSB up to n = 128;
16-bit outputs need ``frac_bits`` near ``16 + log2(n)`` for the same.
Imports numpy, numba and ``ptqc.runtime.kernels`` only.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .elementwise import out_bounds

K_BITS = 16  # G: K = rint(2^G / out_scale)
_INT64_LIMIT = 1 << 63


def make_exp_table(in_scale: float, frac_bits: int = 15, max_len: int = 65536) -> np.ndarray:
    """int64 ``E[d] = rint(exp(-in_scale · d) · 2^frac_bits)`` (half even) for ``d = 0, 1, ...``,
    ending before the first 0 entry or at ``max_len`` entries.  ``in_scale > 0``,
    ``0 <= frac_bits <= 30``, ``max_len >= 1``."""
    if not (np.isfinite(in_scale) and in_scale > 0):
        raise ValueError(f"in_scale must be finite and > 0, got {in_scale}")
    if not 0 <= frac_bits <= 30 or max_len < 1:
        raise ValueError(f"need 0 <= frac_bits <= 30 and max_len >= 1, got {frac_bits}, {max_len}")
    d = np.arange(int(max_len), dtype=np.float64)
    table = np.rint(np.exp(-float(in_scale) * d) * float(1 << frac_bits)).astype(np.int64)
    zeros = np.flatnonzero(table == 0)
    return table[:zeros[0]] if zeros.size else table


@njit(cache=True)
def _softmax(q, table, k, g, zp, lo, hi, out):
    n0, n, n2 = q.shape
    size = table.shape[0]
    e = np.empty(n, np.int64)
    for o in range(n0):
        for i in range(n2):
            top = q[o, 0, i]
            for j in range(1, n):
                top = max(top, q[o, j, i])
            s = np.int64(0)
            for j in range(n):
                d = top - q[o, j, i]
                e[j] = table[d] if d < size else 0
                s += e[j]
            den = s << g
            half = den >> 1
            inv = 1.0 / den  # the quotient (< 2^17) from a float product, then made exact:
            for j in range(n):  # off by at most one, corrected by the remainder's sign
                a = e[j] * k + half
                quot = np.int64(a * inv)
                rem = a - quot * den
                quot += (rem >= den) - (rem < 0)
                out[o, j, i] = min(max(zp + quot, lo), hi)
    return out


def softmax_int(q: np.ndarray, axis: int, exp_table: np.ndarray, out_scale: float, out_zp: int,
                lo: int, hi: int, dtype) -> np.ndarray:
    """Softmax of the codes ``q`` along ``axis`` (one axis, ONNX opset >= 13):
    ``clamp(out_zp + round_div(E[max - q] · K, S · 2^16), lo, hi)`` (round half up, ``E`` from
    :func:`make_exp_table`, 0 beyond it); same shape as ``q``, as ``dtype``."""
    q = np.asarray(q)
    if q.ndim == 0 or not -q.ndim <= axis < q.ndim:
        raise ValueError(f"axis {axis} out of range for rank {q.ndim}")
    ax = axis % q.ndim
    table = np.ascontiguousarray(exp_table, np.int64)
    if table.shape[0] == 0 or table[0] <= 0 or table.min() < 0:
        raise ValueError("exp_table must be non-negative with exp_table[0] > 0")
    if not (np.isfinite(out_scale) and out_scale > 0):
        raise ValueError(f"out_scale must be finite and > 0, got {out_scale}")
    k = int(np.rint(float(1 << K_BITS) / out_scale))
    top, n = int(table.max()), q.shape[ax]
    if top * k + ((n * top) << (K_BITS - 1)) >= _INT64_LIMIT:
        raise ValueError(f"softmax over {n} codes with E[0] = {top} and K = {k} overflows int64")
    lo, hi = out_bounds(lo, hi, dtype)
    if q.size == 0:
        return np.empty(q.shape, dtype)
    outer = int(np.prod(q.shape[:ax], dtype=np.int64))
    view = np.ascontiguousarray(q, np.int64).reshape(outer, n, -1)
    out = _softmax(view, table, np.int64(k), np.int64(K_BITS), np.int64(out_zp), lo, hi,
                   np.empty(view.shape, np.int64))
    return out.reshape(q.shape).astype(dtype)
