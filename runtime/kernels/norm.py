"""LayerNormalization "mixed": integer statistics, float64 normalization.

Over the axes ``axis .. rank-1`` (``n`` elements per row), with ``x = q - zp_in``:
``S1 = Σ x``, ``S2 = Σ x²`` (int64, exact for ``n · max x² < 2^63``);
``mean = float(S1) / float(n)``, ``var = float(S2 · n - S1²) / float(n²)`` (the numerator is an
exact integer, Python-int arithmetic per row, then correctly rounded to float64);
``den = sqrt(var · (in_scale · in_scale) + epsilon)``;
``y = (x - mean) · in_scale / den · gamma + beta`` (float64, left to right);
``out = clamp(rint(y / out_scale) + out_zp, lo, hi)`` (rint half even).
Imports numpy, numba and ``ptqc.runtime.kernels`` only.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .elementwise import max_abs_offset, out_bounds

_INT64_LIMIT = 1 << 63
_FLOAT_EXACT = 1 << 53


@njit(cache=True)
def _moments(x, s1, s2):
    for r in range(x.shape[0]):
        a = np.int64(0)
        b = np.int64(0)
        for j in range(x.shape[1]):
            v = x[r, j]
            a += v
            b += v * v
        s1[r] = a
        s2[r] = b


@njit(cache=True)
def _normalize(x, mean, den, in_scale, gamma, beta, out_scale, zp, lo, hi, out):
    flo = np.float64(lo)
    fhi = np.float64(hi)
    for r in range(x.shape[0]):
        m = mean[r]
        s = den[r]
        for j in range(x.shape[1]):
            y = (np.float64(x[r, j]) - m) * in_scale / s * gamma[j] + beta[j]
            v = np.rint(y / out_scale) + zp
            out[r, j] = np.int64(min(max(v, flo), fhi))
    return out


def _per_element(v, norm_shape: tuple[int, ...]) -> np.ndarray:
    """``v`` broadcast to ``norm_shape``, flattened to a new float64 array."""
    return np.broadcast_to(np.asarray(v, np.float64), norm_shape).flatten()


def _row_stats(s1: np.ndarray, s2: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``(mean, var)`` per row from the exact int64 sums: ``float(S1) / float(n)`` and
    ``float(S2 · n - S1²) / float(n²)`` with the numerator in exact integers."""
    s1o, s2o = s1.astype(object), s2.astype(object)
    num = (s2o * n - s1o * s1o).astype(np.float64)
    return s1.astype(np.float64) / float(n), num / float(n * n)


def layernorm_mixed(q: np.ndarray, zp_in: int, in_scale: float, axis: int, gamma: np.ndarray,
                    beta: np.ndarray | None, epsilon: float, out_scale: float, out_zp: int, lo: int,
                    hi: int, dtype) -> np.ndarray:
    """LayerNormalization of the codes ``q`` (real value ``in_scale · (q - zp_in)``) over the
    axes ``axis ..`` last, requantized to ``(out_scale, out_zp)``; same shape as ``q``, as
    ``dtype``.  ``gamma`` / ``beta`` (None = 0) broadcast to ``q.shape[axis:]``.  Needs
    ``epsilon > 0`` (a constant row would give 0/0), finite gamma / beta, and
    ``n · max|q - zp_in|² < 2^63`` and ``|lo|, |hi| <= 2^53``; ValueError otherwise."""
    q = np.asarray(q)
    in_scale, epsilon, out_scale = float(in_scale), float(epsilon), float(out_scale)
    if q.ndim == 0 or not -q.ndim <= axis < q.ndim:
        raise ValueError(f"axis {axis} out of range for rank {q.ndim}")
    if not (np.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
    if not (np.isfinite(in_scale) and in_scale > 0 and np.isfinite(out_scale) and out_scale > 0):
        raise ValueError("scales must be finite and > 0")
    lo, hi = out_bounds(lo, hi, dtype)
    if max(abs(int(lo)), abs(int(hi))) > _FLOAT_EXACT:
        raise ValueError(f"clamp range [{lo}, {hi}] exceeds ±2^53 (outputs are rounded float64)")
    norm_shape = q.shape[axis % q.ndim:]
    n = int(np.prod(norm_shape, dtype=np.int64))
    g = _per_element(gamma, norm_shape)
    b = np.zeros(n) if beta is None else _per_element(beta, norm_shape)
    if not (np.isfinite(g).all() and np.isfinite(b).all()):
        raise ValueError("gamma and beta must be finite")
    if q.size == 0:
        return np.empty(q.shape, dtype)
    if n * max_abs_offset(q, zp_in) ** 2 >= _INT64_LIMIT:
        raise ValueError(f"sum of squares over {n} elements may overflow int64")
    x = np.ascontiguousarray(q, np.int64).reshape(-1, n) - np.int64(zp_in)
    s1, s2 = np.empty(x.shape[0], np.int64), np.empty(x.shape[0], np.int64)
    _moments(x, s1, s2)
    mean, var = _row_stats(s1, s2, n)
    den = np.sqrt(var * (in_scale * in_scale) + epsilon)
    out = _normalize(x, mean, den, in_scale, g, b, out_scale,
                     np.float64(out_zp), lo, hi, np.empty(x.shape, np.int64))
    return out.reshape(q.shape).astype(dtype)
