"""The streaming histogram behind the kl, kl_v2, mse, percentile and removal_outlier observers,
and the numba loops that fill it and search it.

The histogram covers ``[-R, R)`` with ``R = 2**e`` the smallest power of two above every
|value| seen, in ``bins`` equal bins (a power of two).  A value's bin is
``floor(v * bins / (2R)) + bins / 2``: a product by a power of two, exact in float64.  When a
larger value arrives, ``R`` doubles and each pair of neighbouring bins becomes one: no count
is lost and the new grid contains the old one.  So two histograms merge exactly (bring both
to the larger ``R``, add counts), and the merged histogram is bit-identical to one that saw
all the data in any order.  Its resolution is at least ``bins / 4`` bins over ``[0, max|x|]``.
"""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _accumulate(x, counts, inv_width, half):  # pragma: no cover - compiled
    n = counts.shape[0]
    for i in range(x.shape[0]):
        k = int(math.floor(x[i] * inv_width)) + half
        if k < 0:
            k = 0
        elif k >= n:
            k = n - 1
        counts[k] += 1


@numba.njit(cache=True)
def _min_max(x):  # pragma: no cover - compiled
    lo = np.inf
    hi = -np.inf
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:  # NaN
            return np.nan, np.nan
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


def min_max(x: np.ndarray) -> tuple[float, float]:
    """(min, max) in one pass; (nan, nan) if any value is NaN."""
    flat = np.ascontiguousarray(x).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    lo, hi = _min_max(flat)
    return float(lo), float(hi)


def accumulate(x: np.ndarray, counts: np.ndarray, exponent: int) -> None:
    """Add the values of ``x`` (any shape, finite) to ``counts`` over ``[-2**exponent, 2**exponent)``."""
    bins = counts.shape[0]
    inv_width = float(bins) / (2.0 * 2.0 ** exponent)  # a power of two: v * inv_width is exact
    _accumulate(np.ascontiguousarray(x, dtype=np.float64).reshape(-1) if x.dtype != np.float32
                else np.ascontiguousarray(x).reshape(-1), counts, inv_width, bins // 2)


def coarsen(counts: np.ndarray, times: int) -> np.ndarray:
    """The histogram after ``R`` doubled ``times`` times: bin ``j`` (relative to the centre) goes
    to ``floor(j / 2)``, so pairs merge and the outer half of the new grid starts empty."""
    bins = counts.shape[0]
    half = bins // 2
    for _ in range(min(times, 64)):
        rel = np.arange(bins) - half
        new = np.zeros_like(counts)
        np.add.at(new, np.floor_divide(rel, 2) + half, counts)
        counts = new
    return counts


def exponent_for(absmax: float) -> int:
    """The smallest ``e`` with ``2**e > absmax`` (strictly: the top edge is never reached)."""
    return int(math.floor(math.log2(absmax))) + 1 if absmax > 0 else -126


# ------------------------------------------------------------------------------ KL search
@numba.njit(cache=True)
def _smoothed(p, eps):  # pragma: no cover - compiled
    """Zeros get ``eps``, the mass is taken evenly off the non-zero bins (MXNet/TensorRT)."""
    zeros = 0
    for k in range(p.shape[0]):
        if p[k] == 0:
            zeros += 1
    nonzeros = p.shape[0] - zeros
    if nonzeros == 0:
        return p, False
    eps1 = eps * zeros / nonzeros
    out = np.empty_like(p)
    for k in range(p.shape[0]):
        out[k] = eps if p[k] == 0 else p[k] - eps1
    return out, True


@numba.njit(cache=True)
def _kl_at(h, beyond, i, levels):  # pragma: no cover - compiled
    """KL(P || Q) for the candidate that keeps the first ``i`` bins (inf when undefined)."""
    p = h[:i].copy()
    p[i - 1] += beyond[i]
    merged = i // levels
    q = np.zeros(i)
    for j in range(levels):
        lo = j * merged
        hi = lo + merged if j < levels - 1 else i
        mass = 0.0
        nonzero = 0
        for k in range(lo, hi):
            mass += h[k]
            if p[k] != 0:
                nonzero += 1
        if nonzero == 0:
            continue
        for k in range(lo, hi):
            if p[k] != 0:
                q[k] = mass / nonzero
    ps, ok_p = _smoothed(p, 1e-4)
    qs, ok_q = _smoothed(q, 1e-4)
    if not (ok_p and ok_q):
        return np.inf
    p_sum = ps.sum()
    q_sum = qs.sum()
    kl = 0.0
    for k in range(i):
        pk = ps[k] / p_sum
        if pk > 0:
            kl += pk * math.log(pk / (qs[k] / q_sum))
    return kl


@numba.njit(cache=True)
def _kl_threshold(hist, levels, skip_zero, step):  # pragma: no cover - compiled
    """TensorRT's entropy calibration (as in MXNet, which onnxruntime follows) on a histogram
    of |x| (bin i covers [i, i+1) widths).  For each candidate end bin i: P is hist[:i] with
    everything beyond folded into its last bin; Q is hist[:i] merged into ``levels`` bins of
    i // levels (the remainder into the last) and spread back over the bins where P is not
    zero; both smoothed (eps 1e-4).  Returns the i with the smallest KL(P || Q), searching
    every ``step``-th candidate and then every candidate around the best (``step`` 1: all)."""
    n = hist.shape[0]
    h = hist.copy()
    if skip_zero:
        h[0] = 0.0
    beyond = np.zeros(n + 1)
    for k in range(n - 1, -1, -1):
        beyond[k] = beyond[k + 1] + h[k]
    best_i = n
    best_kl = np.inf
    for i in range(levels, n + 1, step):
        kl = _kl_at(h, beyond, i, levels)
        if kl < best_kl:
            best_kl = kl
            best_i = i
    kl = _kl_at(h, beyond, n, levels)
    if kl < best_kl:
        best_kl = kl
        best_i = n
    if step > 1:
        centre = best_i
        for i in range(max(levels, centre - step + 1), min(n, centre + step - 1) + 1):
            kl = _kl_at(h, beyond, i, levels)
            if kl < best_kl:
                best_kl = kl
                best_i = i
    return best_i


def kl_threshold(abs_hist: np.ndarray, levels: int, skip_zero: bool = False, step: int = 8) -> int:
    """The number of |x| bins to keep (the threshold is that many bin widths).  ``step`` > 1
    searches coarse-to-fine (every step-th candidate, then all around the best): ~step times
    faster, and on smooth histograms the same answer; ``step=1`` is TensorRT's full search."""
    if levels >= abs_hist.shape[0]:
        return abs_hist.shape[0]
    return int(_kl_threshold(abs_hist.astype(np.float64), levels, skip_zero, max(1, step)))
