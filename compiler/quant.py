"""Quantization decisions as data: QuantParam and the three spec kinds.

Affine convention: ``real = scale * (q - zero_point)``; quantization rounds half to even
(the ONNX QuantizeLinear rule) and saturates to the dtype's range.  A spec says how a value
gets its parameters (torch.ao's three kinds): :class:`PlainSpec` (observe this tensor),
:class:`SharedSpec` (use that value's parameters: pass-through ops, Concat groups) and
:class:`DerivedSpec` (bias: scale = input scale x weight scale, zero point 0).

Imports nothing of ptqc (numpy only).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from ptqc.vocab import Method

log = logging.getLogger("ptqc")

# Code ranges per type; int8 weights use the symmetric [-127, 127] (DESIGN.md, ORT's convention).
FLOAT8 = np.dtype(ml_dtypes.float8_e4m3fn)  # onnx FLOAT8E4M3FN (opset 19): codes are floats, zero point 0
QRANGE = {
    FLOAT8: (-448, 448),  # its largest finite values; symmetric only, scale = max|x| / 448
    np.dtype(ml_dtypes.int4): (-8, 7),  # 4-bit weights (onnx INT4/UINT4, opset 21)
    np.dtype(ml_dtypes.uint4): (0, 15),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int32): (-(2**31), 2**31 - 1),
}
# A tensor whose observed range is exactly zero is quantized as if its range were [0, 1]
# ([-1, 1] symmetric).  onnxruntime uses scale 1 there, which turns a value of 0.5 the
# calibration data never showed into a whole unit (a threshold): on PP-OCR det one such SE
# vector made the quantized map swing by 80 steps on a one-step input change.
UNIT_RANGE = 1.0


@dataclass(frozen=True, eq=False)
class QuantParam:
    """Parameters of one quantized tensor.  ``scale``/``zero_point`` are 0-d for per-tensor
    and 1-d along ``axis`` for per-channel."""

    dtype: np.dtype
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    bits: int = 8
    method: str = Method.MIN_MAX
    rmin: np.ndarray | None = None
    rmax: np.ndarray | None = None
    symmetric: bool = False
    reduce_range: bool = False  # codes within REDUCED_RANGE (onnxruntime's reduce_range weights)
    # > 0: blocked along ``axis`` (opset 21): scale/zero_point have the tensor's rank, ``axis``
    # holding ceil(n / block_size) blocks (onnxruntime's BlockSize, MatMul weights)
    block_size: int = 0

    @property
    def qmin(self) -> int:
        return _narrow(self.dtype, self.symmetric, self.reduce_range)[0]

    @property
    def qmax(self) -> int:
        return _narrow(self.dtype, self.symmetric, self.reduce_range)[1]

    def _view(self, a: np.ndarray, ndim: int, length: int | None = None) -> np.ndarray:
        if self.block_size:  # each block's parameter repeated over its block (``length``: the axis')
            return np.take(np.repeat(a, self.block_size, axis=self.axis), np.arange(length), axis=self.axis)
        if self.axis is None or a.ndim == 0:
            return a
        shape = [1] * ndim
        shape[self.axis] = -1
        return a.reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """QuantizeLinear: round half to even, saturate (full dtype range, as ONNX does; the reduced
        range with ``reduce_range``, as onnxruntime stores such weights)."""
        x = np.asarray(x, np.float32)
        n = x.shape[self.axis] if self.block_size else None
        s = self._view(self.scale.astype(np.float32), x.ndim, n)
        zp = self._view(self.zero_point.astype(np.int64), x.ndim, n)
        lo, hi = REDUCED_RANGE[np.dtype(self.dtype)] if self.reduce_range else QRANGE[np.dtype(self.dtype)]
        if np.dtype(self.dtype) == FLOAT8:  # rounded to the nearest float8, saturated (QuantizeLinear's default)
            return np.clip(x / s, lo, hi).astype(self.dtype)
        return np.clip(np.rint(x / s) + zp, lo, hi).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        n = q.shape[self.axis] if self.block_size else None
        s = self._view(self.scale.astype(np.float32), q.ndim, n)
        if np.dtype(self.dtype) == FLOAT8:
            return (np.asarray(q).astype(np.float32) * s).astype(np.float32)
        zp = self._view(self.zero_point.astype(np.int64), q.ndim, n)
        return ((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        return self.dequantize(self.quantize(x))

    def to_json(self) -> dict:
        return {"dtype": str(np.dtype(self.dtype)), "scale": np.asarray(self.scale).tolist(),
                "zero_point": np.asarray(self.zero_point).tolist(), "axis": self.axis, "bits": self.bits,
                "method": self.method, "symmetric": self.symmetric,
                "rmin": None if self.rmin is None else np.asarray(self.rmin).tolist(),
                "rmax": None if self.rmax is None else np.asarray(self.rmax).tolist()}


# onnxruntime's reduce_range (its ONNX_INT_TYPE_REDUCED_RANGE): one bit fewer, for weights
REDUCED_RANGE = {np.dtype(np.int8): (-64, 64), np.dtype(np.uint8): (0, 127), np.dtype(np.int16): (-16384, 16384),
                 np.dtype(np.uint16): (0, 32767), np.dtype(ml_dtypes.int4): (-4, 3),
                 np.dtype(ml_dtypes.uint4): (0, 7)}


def type_bits(dtype) -> int:
    """The bits of a quantized type (4 for int4/uint4, which numpy stores in a byte)."""
    dtype = np.dtype(dtype)
    return 4 if dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)) else dtype.itemsize * 8


def _narrow(dtype: np.dtype, symmetric: bool, reduce_range: bool = False) -> tuple[int, int]:
    if reduce_range:
        return REDUCED_RANGE[np.dtype(dtype)]
    lo, hi = QRANGE[np.dtype(dtype)]
    if symmetric and lo < 0:
        lo = -hi  # int8 symmetric: [-127, 127], so the range is centred and -128 never occurs
    return lo, hi


def qparam_from_range(rmin, rmax, dtype, *, symmetric: bool, axis: int | None = None,
                      method: str = Method.MIN_MAX, name: str = "", warn: bool = True,
                      reduce_range: bool = False) -> QuantParam:
    """Scale and zero point covering [rmin, rmax] (widened to include 0).

    Symmetric: ``scale = max|r| / qmax``, zero point 0 (or the midpoint for unsigned types).
    Asymmetric: ``scale = (rmax - rmin) / (qmax - qmin)``, ``zp = round(qmin - rmin / scale)``.
    A zero-width range gets scale 1 and a warning naming the tensor; infinite bounds are
    clamped to the float32 range first (attention masks), also with a warning.  ``warn=False``
    for estimates on a tensor whose own quantization warns (AdaRound's weight grid, HAWQ's).
    ``reduce_range``: the codes span :data:`REDUCED_RANGE` (onnxruntime's 7-bit weights).
    """
    dtype = np.dtype(dtype)
    symmetric = symmetric or dtype == FLOAT8  # float8 has no zero point to shift
    lo = np.minimum(np.asarray(rmin, np.float64), 0.0)
    hi = np.maximum(np.asarray(rmax, np.float64), 0.0)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        if warn:
            log.warning("tensor %r has an infinite range; clamped to the float32 range", name)
        big = float(np.finfo(np.float32).max) / 4
        lo, hi = np.clip(lo, -big, 0.0), np.clip(hi, 0.0, big)
    qmin, qmax = _narrow(dtype, symmetric, reduce_range)
    if symmetric:
        absmax = np.maximum(-lo, hi)
        if qmin < 0:
            scale = absmax / qmax
            zp = np.zeros_like(scale)
        else:  # unsigned symmetric: centre the range on the middle code
            scale = 2 * absmax / (qmax - qmin)
            zp = np.full_like(scale, (qmin + qmax + 1) // 2)
        lo, hi = -absmax, absmax
    else:
        scale = (hi - lo) / (qmax - qmin)
        safe = np.where(scale >= np.finfo(np.float32).tiny, scale, 1.0)
        zp = np.clip(np.rint(qmin - lo / safe), qmin, qmax)
    degenerate = ~(scale >= np.finfo(np.float32).tiny)  # zero, subnormal or NaN: no usable step
    if np.any(degenerate):
        if warn:
            log.warning("tensor %r has a zero range; quantized as if its range were [%s, %g]", name,
                        -UNIT_RANGE if symmetric else 0, UNIT_RANGE)
        if symmetric:
            unit = UNIT_RANGE / qmax if qmin < 0 else 2 * UNIT_RANGE / (qmax - qmin)
            lo, hi = np.where(degenerate, -UNIT_RANGE, lo), np.where(degenerate, UNIT_RANGE, hi)
        else:
            unit = UNIT_RANGE / (qmax - qmin)
            zp = np.where(degenerate, qmin, zp)
            hi = np.where(degenerate, UNIT_RANGE, hi)
        scale = np.where(degenerate, unit, scale)
    return QuantParam(dtype, np.asarray(scale, np.float32), np.asarray(zp).astype(dtype), axis,
                      bits=type_bits(dtype), method=method, rmin=np.asarray(lo, np.float32),
                      rmax=np.asarray(hi, np.float32), symmetric=symmetric, reduce_range=reduce_range)


# ------------------------------------------------------------------------------ overrides
@dataclass(frozen=True, eq=False)
class TensorOverride:
    """A tensor's quantization fixed from outside calibration: ``ctx.analyses["range_overrides"]``
    maps tensor names to these (onnxruntime's TensorQuantOverrides, an nncase scheme, -lt,
    MinimumRealRange, a quantized input model's refits, FloatMixedOutputs).  A field left None
    keeps what the spec and calibration give; PropagateRanges applies the first override found
    in a sharing group to the whole group, over loaded parameters and calibration (the one
    precedence of the three override channels: docs/DESIGN.md §4).

    ``dtype`` a float type leaves the tensor float (float16: CastFloat16 rounds it through
    float16); ``lo``/``hi`` the range (per channel along ``axis`` when arrays); ``scale`` and
    ``zero_point`` the parameters themselves; ``symmetric``/``reduce_range`` as in QuantScheme.
    """

    dtype: np.dtype | None = None
    lo: float | np.ndarray | None = None
    hi: float | np.ndarray | None = None
    symmetric: bool | None = None
    reduce_range: bool | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None
    # a second Q/DQ pair in ``convert``'s type after this one, read by the consumers named in
    # ``convert_nodes`` (None: every consumer and the graph output): onnxruntime's 'convert'
    convert: TensorOverride | None = None
    convert_nodes: frozenset[str] | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype is not None and np.dtype(self.dtype).kind == "f"

    def fixed_param(self, dtype: np.dtype, axis: int | None) -> QuantParam:
        """The parameters this override fixes itself (``scale`` and ``zero_point``), in ``dtype``."""
        dtype = np.dtype(dtype)
        return QuantParam(dtype, np.asarray(self.scale, np.float32), np.asarray(self.zero_point).astype(dtype), axis,
                          bits=type_bits(dtype), method="override", rmin=None, rmax=None,
                          symmetric=bool(np.all(np.asarray(self.zero_point) == 0)))


FLOAT_OVERRIDE = TensorOverride(np.dtype(np.float32))  # the tensor stays float


# ------------------------------------------------------------------------------ specs
@dataclass(frozen=True)
class PlainSpec:
    """Observe this value and derive its parameters from the observed range."""

    dtype: np.dtype
    symmetric: bool
    axis: int | None = None  # per-channel axis (weights), None per-tensor
    reduce_range: bool = False  # codes one bit short of the type (onnxruntime's reduce_range, weights)


@dataclass(frozen=True)
class SharedSpec:
    """Use the parameters of value ``source`` (resolved by union-find)."""

    source: str


@dataclass(frozen=True)
class DerivedSpec:
    """Parameters computed from other values' parameters: bias scale = x scale * w scale."""

    sources: tuple[str, ...]
    dtype: np.dtype = field(default=np.dtype(np.int32))
    axis: int | None = None


# ------------------------------------------------------------------------------ sharing
class UnionFind:
    """Groups of value names that share one set of parameters.  Deterministic: the root of
    a group is its member added first, so group names and output files never depend on
    hashing or on the order unions happen in."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._rank: dict[str, int] = {}  # insertion index: the smaller one becomes the root

    def add(self, x: str) -> None:
        if x not in self._parent:
            self._parent[x] = x
            self._rank[x] = len(self._rank)

    def find(self, x: str) -> str:
        self.add(x)
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:  # path compression
            self._parent[x], x = root, self._parent[x]
        return root

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._rank[rb] < self._rank[ra]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        return ra

    def groups(self) -> dict[str, list[str]]:
        """root -> members, both in insertion order."""
        out: dict[str, list[str]] = {}
        for x in self._parent:
            out.setdefault(self.find(x), []).append(x)
        return out


@dataclass(frozen=True)
class QuantScheme:
    """What to quantize and how: the data the spec pass works from.  The driver builds it from
    the QuantConfig and the target; a pass run alone gets the default (onnxruntime's QDQ
    defaults: asymmetric uint8 activations, symmetric int8 per-channel weights)."""

    activation_dtype: np.dtype = np.dtype(np.uint8)
    activation_symmetric: bool = False
    weight_dtype: np.dtype = np.dtype(np.int8)
    weight_symmetric: bool = True  # False: per-channel zero points (onnxruntime's QUInt8 weights)
    reduce_range: bool = False  # weights one bit short of their type (onnxruntime's reduce_range)
    per_channel: bool = True
    op_types: frozenset[str] | None = None  # None: every op ptqc can quantize
    nodes_to_quantize: frozenset[str] | None = None  # None: every node
    nodes_to_exclude: frozenset[str] = frozenset()
    unify_concat: bool = False  # -uis: Concat/Stack/ScatterND inputs and output share one scale
    # False (-od): a graph output computed by Conv/ConvTranspose/Gemm/MatMul leaves as its int32
    # accumulator times its scale, with no 8-bit requantization: how an NPU hands back a
    # dequantized output layer, and it keeps close logits apart.
    requantize_outputs: bool = True
    # -mc: per node (name -> 8/16 bits, name -> calibration method); a tensor follows its producer
    node_bits: tuple[tuple[str, int], ...] = ()
    node_modes: tuple[tuple[str, str], ...] = ()
    # 16-bit activation ranges are widened by this factor.  At 16 bits rounding noise is ~1e-9
    # of the signal, so what hurts is an unseen input beyond the calibrated range: on PP-OCR
    # rec (8 calibration images) clipping alone took held-out cosine to 0.9981; 1.25 (a third
    # of a bit) brings it to 0.99999.  8-bit ranges are never widened: there noise dominates.
    wide_headroom: float = 1.25
    # RNN/GRU/LSTM run quantized (X, W, R, states and outputs; the chip's integer recurrent
    # kernel): on the TX5xxx families that run it, not on onnxruntime (which runs them float)
    recurrent: bool = False
    # onnxruntime's MinimumRealRange: activation ranges at least this wide (None: as calibrated)
    min_real_range: float | None = None
    # False (onnxruntime's QDQDisableWeightAdjustForInt32Bias): a bias too large for int32 at
    # s_x * s_w saturates instead of widening its weight's scale
    widen_weights_for_bias: bool = True
    # onnxruntime's ActivationRestrictedAsymmetric: uint8 activation zero points only 0 or 128
    restricted_zero_points: bool = False
    contrib_qdq: bool = False  # onnxruntime's UseQDQContribOps: Q/DQ nodes in the com.microsoft domain
    block_size: int = 0  # onnxruntime's BlockSize: MatMul weights blocked along K
    # onnxruntime's QuantizeBias, MatMulConstBOnly, OpTypesToExcludeOutputQuantization
    quantize_bias: bool = True  # False: biases stay float
    matmul_const_b_only: bool = False  # True: a MatMul of two activations stays float
    float_output_ops: frozenset[str] = frozenset()  # their outputs stay float unless a quantized op reads them
    weight_qdq_pairs: bool = False  # onnxruntime's AddQDQPairToWeight
    dedicated_qdq_pairs: bool = False  # onnxruntime's DedicatedQDQPair
    keep_activations: bool = False  # onnxruntime's QDQKeepRemovableActivations: Relu/Clip not fused
    # tensor name -> TensorOverride (onnxruntime's TensorQuantOverrides): over everything else
    tensor_overrides: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def bits(self) -> int:
        return np.dtype(self.activation_dtype).itemsize * 8


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors, flattened, in float64 (1.0 when both are zero)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))
