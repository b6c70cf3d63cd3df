"""Elementwise integer kernels: requantize one tensor, add (or subtract) and multiply two.

Everything is int64 and ends with :func:`requant.round_shift` (``mode`` = HALF_UP 0,
HALF_EVEN 1, HALF_AWAY 2); results are clamped to ``[lo, hi]`` and returned as ``dtype``.
Binary ops broadcast like numpy.  Before running, each kernel checks that its largest
intermediate ``|value| · 2^max(-shift, 0)`` fits int64 and that ``shift <= 63`` (the
range of ``round_shift``), and raises ValueError otherwise.
Imports numpy, numba and ``ptqc.runtime.kernels`` only.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .requant import round_shift

MAX_SHIFT = 63  # round_shift is exact for 0 < s <= 63 (x86 masks larger shift counts)
_INT64_LIMIT = 1 << 63


def out_bounds(lo: int, hi: int, dtype) -> tuple[np.int64, np.int64]:
    """``(lo, hi)`` as int64 after checking ``iinfo(dtype).min <= lo <= hi <= iinfo(dtype).max``."""
    info = np.iinfo(dtype)
    if not info.min <= int(lo) <= int(hi) <= info.max:
        raise ValueError(f"clamp range [{lo}, {hi}] is empty or outside {np.dtype(dtype).name}")
    return np.int64(lo), np.int64(hi)


def check_mode(mode: int) -> int:
    """``mode`` if it is a rounding mode of :mod:`requant` (0, 1, 2)."""
    if int(mode) not in (0, 1, 2):
        raise ValueError(f"rounding mode must be 0 (half up), 1 (half even) or 2 (half away), got {mode}")
    return int(mode)


def max_abs_offset(q: np.ndarray, zp: int) -> int:
    """``max |q - zp|`` over ``q`` (0 when empty), as a Python int."""
    if q.size == 0:
        return 0
    return max(abs(int(q.min()) - int(zp)), abs(int(q.max()) - int(zp)))


def check_headroom(bound: int, shift: int) -> None:
    """Raise ValueError unless ``shift <= 63`` and ``bound · 2^max(-shift, 0) < 2^63``
    (``bound`` = the largest ``|x|`` passed to ``round_shift(x, shift)``)."""
    if shift > MAX_SHIFT:
        raise ValueError(f"shift {shift} > {MAX_SHIFT}: round_shift is undefined there")
    if bound << max(-shift, 0) >= _INT64_LIMIT:
        raise ValueError(f"intermediate |x| <= {bound} with shift {shift} overflows int64")


def _dtype_offset(x: np.ndarray, zp: int) -> int:
    """``max |x - zp|`` over every value ``x``'s dtype can hold: a bound without a pass
    over the data (the data pass runs only when this bound is too loose)."""
    info = np.iinfo(x.dtype)
    return max(abs(int(info.min) - int(zp)), abs(int(info.max) - int(zp)))


def _headroom(bound_of, shift: int) -> None:
    """``check_headroom`` on the dtype bound, falling back to the data's own bound."""
    try:
        check_headroom(bound_of(_dtype_offset), shift)
    except ValueError:
        check_headroom(bound_of(max_abs_offset), shift)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1)


@njit(cache=True)
def _rescale(q, zp_in, mult, shift, zp_out, lo, hi, mode, out):
    for i in range(q.shape[0]):
        v = zp_out + round_shift((np.int64(q[i]) - zp_in) * mult, shift, mode)
        out[i] = min(max(v, lo), hi)
    return out


@njit(cache=True)
def _add(a, za, ma, b, zb, mb, shift, zo, lo, hi, mode, out):
    for i in range(a.shape[0]):
        acc = (np.int64(a[i]) - za) * ma + (np.int64(b[i]) - zb) * mb
        out[i] = min(max(zo + round_shift(acc, shift, mode), lo), hi)
    return out


@njit(cache=True)
def _mul(a, za, b, zb, mult, shift, zo, lo, hi, mode, out):
    for i in range(a.shape[0]):
        acc = (np.int64(a[i]) - za) * (np.int64(b[i]) - zb) * mult
        out[i] = min(max(zo + round_shift(acc, shift, mode), lo), hi)
    return out


@njit(cache=True)
def _quantize(x, scale, zp, qmin, qmax, out):
    for i in range(x.shape[0]):
        v = np.rint(x[i] / scale) + zp
        out[i] = min(max(v, qmin), qmax)
    return out


def quantize_float(x: np.ndarray, scale: float, zp: int, dtype) -> np.ndarray:
    """ONNX QuantizeLinear per tensor: ``saturate(rint(x / scale) + zp)`` with the division in
    float32 and rint half to even; same shape as ``x``, as the integer ``dtype``."""
    x = np.ascontiguousarray(x, np.float32)
    info = np.iinfo(dtype)
    out = _quantize(x.reshape(-1), np.float32(scale), np.float64(zp), np.float64(info.min), np.float64(info.max),
                    np.empty(x.size, dtype))
    return out.reshape(x.shape)


@njit(cache=True)
def _dequantize(q, zp, scale, out):
    for i in range(q.shape[0]):
        out[i] = np.float32(np.int64(q[i]) - zp) * scale
    return out


def dequantize_codes(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """ONNX DequantizeLinear per tensor: ``float32(q - zp) · scale`` in float32, same shape."""
    q = np.ascontiguousarray(q)
    out = _dequantize(q.reshape(-1), np.int64(zp), np.float32(scale), np.empty(q.size, np.float32))
    return out.reshape(q.shape)


def _operands(a, b) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Both operands flat over the broadcast shape (the broadcast one copied in its own
    dtype, never widened)."""
    a, b = np.asarray(a), np.asarray(b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    return _flat(np.broadcast_to(a, shape)), _flat(np.broadcast_to(b, shape)), shape


def rescale(q: np.ndarray, zp_in: int, mult: int, shift: int, zp_out: int, lo: int, hi: int,
            mode: int, dtype) -> np.ndarray:
    """``clamp(zp_out + round_shift((q - zp_in) · mult, shift, mode), lo, hi)`` per tensor,
    same shape as ``q``, as ``dtype``.  Requantization to a new scale (``mult · 2^-shift ≈
    s_in / s_out``), Relu / Clip as saturation through ``lo`` / ``hi``, Concat inputs."""
    q = np.asarray(q)
    lo, hi = out_bounds(lo, hi, dtype)
    _headroom(lambda off: off(q, zp_in) * abs(int(mult)), int(shift))
    out = _rescale(_flat(q), np.int64(zp_in), np.int64(mult), np.int64(shift), np.int64(zp_out),
                   lo, hi, check_mode(mode), np.empty(q.size, dtype))
    return out.reshape(q.shape)


def add_int(a: np.ndarray, za: int, ma: int, b: np.ndarray, zb: int, mb: int, shift: int, zo: int,
            lo: int, hi: int, mode: int, dtype) -> np.ndarray:
    """``clamp(zo + round_shift((a - za) · ma + (b - zb) · mb, shift, mode), lo, hi)`` with
    numpy broadcasting of ``a`` and ``b``; as ``dtype``.  ``mb < 0`` makes Sub.  Get
    ``(ma, mb, shift)`` from :func:`add_multipliers`."""
    fa, fb, shape = _operands(a, b)
    lo, hi = out_bounds(lo, hi, dtype)
    _headroom(lambda off: off(fa, za) * abs(int(ma)) + off(fb, zb) * abs(int(mb)), int(shift))
    out = _add(fa, np.int64(za), np.int64(ma), fb, np.int64(zb), np.int64(mb),
               np.int64(shift), np.int64(zo), lo, hi, check_mode(mode), np.empty(fa.size, dtype))
    return out.reshape(shape)


def mul_int(a: np.ndarray, za: int, b: np.ndarray, zb: int, mult: int, shift: int, zo: int,
            lo: int, hi: int, mode: int, dtype) -> np.ndarray:
    """``clamp(zo + round_shift((a - za) · (b - zb) · mult, shift, mode), lo, hi)`` with numpy
    broadcasting; as ``dtype``.  ``mult · 2^-shift ≈ sa · sb / so``
    (:func:`requant.quantize_multiplier`).  Any 16-bit operands with ``|mult| < 2^31`` fit
    int64: ``(2^16 - 1)^2 (2^31 - 1) < 2^63``."""
    fa, fb, shape = _operands(a, b)
    lo, hi = out_bounds(lo, hi, dtype)
    _headroom(lambda off: off(fa, za) * off(fb, zb) * abs(int(mult)), int(shift))
    out = _mul(fa, np.int64(za), fb, np.int64(zb), np.int64(mult), np.int64(shift),
               np.int64(zo), lo, hi, check_mode(mode), np.empty(fa.size, dtype))
    return out.reshape(shape)


def add_multipliers(sa: float, sb: float, so: float, bits: int = 31) -> tuple[int, int, int]:
    """``(ma, mb, shift)`` with ``ma · 2^-shift ≈ sa / so``, ``mb · 2^-shift ≈ sb / so`` (one
    shared shift, signs kept: a negative ``sb`` gives Sub) and ``max(|ma|, |mb|) < 2^bits``.

    ``shift`` is the largest for which the larger ratio still fits ``bits`` bits, and each
    multiplier is the nearest integer (half even), so both absolute errors are
    ``<= 2^-(shift+1)``, i.e. the larger ratio is exact to ``2^-bits`` relative (plus float64's
    ``2^-53`` on ``sa / so``).  In the add, the error before the final rounding is at most
    ``(|a - za| + |b - zb|) · 2^-(shift+1)`` output LSB.  ``shift`` is capped at 63 (then
    ratios below ``2^(bits-64)`` lose bits or become 0).  ``bits`` in [1, 52]; ``so > 0``."""
    if not 1 <= bits <= 52:
        raise ValueError(f"bits must be in [1, 52], got {bits}")
    if not (math.isfinite(sa) and math.isfinite(sb) and math.isfinite(so) and so > 0):
        raise ValueError("scales must be finite and the output scale > 0")
    ra, rb = sa / so, sb / so
    top = max(abs(ra), abs(rb))
    if top == 0:
        return 0, 0, 0
    shift = min(bits - math.frexp(top)[1], MAX_SHIFT)  # top · 2^shift in [2^(bits-1), 2^bits)
    ma, mb = (int(np.rint(math.ldexp(r, shift))) for r in (ra, rb))
    if max(abs(ma), abs(mb)) == 1 << bits:  # the larger one rounded up to 2^bits
        shift -= 1
        ma, mb = (int(np.rint(math.ldexp(r, shift))) for r in (ra, rb))
    return ma, mb, shift
