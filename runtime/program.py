"""The lowered program: what the simulator runs, and all it knows.

A :class:`Program` is a flat list of :class:`Op` over named tensors.  Integer tensors carry
their quantization (:class:`TensorInfo`: dtype, scale, zero point) and the name of the ONNX
float tensor they stand for (``source``), so dumps and comparisons speak in the model's
names.  Each op kind is a small frozen dataclass (:class:`Conv`, :class:`Add`, :class:`Lut`...,
``KINDS`` by kind name): its fields are every number the simulator needs, computed by
lowering (multipliers, shifts, zero points, clamps; tables and weights as program constants
named by the fields in ``CONSTANTS``), one name per idea (``zp_in``/``zp_out``, ``zp_a``/``zp_b``
for a binary op's inputs; :class:`Rescale` for one code-to-code requantization, :class:`Requant`
for a linear op's accumulator to codes).  The simulator is a dispatch over these types.

- ``quantize`` / ``dequantize``: float ↔ integer at the borders of the integer part
  (rint half to even and saturation, the ONNX QuantizeLinear rule).
- ``conv``, ``conv_transpose``, ``matmul``, ``affine`` (an unfused BatchNormalization): exact
  integer accumulation, int64 bias, accumulator saturation at ``acc_bits``, per-channel
  requantization into ``[lo, hi]`` (fused Relu/Clip are in ``lo``/``hi``).
- ``add`` (Sub: negative ``mult_b``), ``mul``, ``rescale``, ``concat`` (a rescale per input),
  ``lut`` / ``lut_interp`` (tables), ``softmax``, ``layernorm`` (mixed), ``avgpool`` /
  ``global_avgpool`` (sums requantized by element count), ``resize_nearest`` / ``resize_linear``.
- ``recurrent``: RNN/GRU/LSTM on ``kernels.recurrent``.
- ``move``: an ONNX data-movement op run on integer codes (Reshape, Transpose, Slice, MaxPool,
  Pad...).
- ``float``: an ONNX op the target cannot run in integer, on float tensors.

Imports numpy only.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """An integer tensor: ``real = scale * (q - zero_point)``."""

    dtype: np.dtype
    scale: float
    zero_point: int
    source: str  # the ONNX float tensor this integer tensor represents

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    @property
    def bits(self) -> int:
        return np.dtype(self.dtype).itemsize * 8

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.rint(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(self.dtype)


@dataclass(frozen=True, eq=False)
class Rescale:
    """One requantization of codes: ``clamp(zp_out + round_shift((q - zp_in) · mult, shift), lo, hi)``."""

    zp_in: int
    mult: int
    shift: int
    zp_out: int
    lo: int
    hi: int


@dataclass(frozen=True, eq=False)
class Requant:
    """A linear op's accumulator to codes: add ``bias`` (program constant, int64 per channel,
    or None), saturate to a signed ``acc_bits`` accumulator (0: the sum cannot overflow, no
    saturation), then per channel (``mult``/``shift`` int64 of the channel count, or one
    element) ``clamp(zp_out + round_shift(acc · mult, shift), lo, hi)``."""

    bias: str | None
    acc_bits: int
    mult: np.ndarray
    shift: np.ndarray
    zp_out: int
    lo: int
    hi: int


@dataclass(frozen=True, eq=False)
class Window:
    """The spatial attributes of a Conv / pool, as the ONNX node gave them (``auto_pad`` is
    resolved against the input's size at run time)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    auto_pad: str = "NOTSET"
    ceil_mode: int = 0


@dataclass(frozen=True, eq=False)
class Op:
    """One op of the program; each kind is a subclass naming its constants in ``CONSTANTS``
    (fields holding program-constant keys)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    node: str  # the ONNX node it came from
    op_type: str  # that node's op type
    kind: ClassVar[str] = ""
    CONSTANTS: ClassVar[tuple[str, ...]] = ()

    def constant_keys(self) -> list[str]:
        """The program constants this op reads besides its inputs."""
        keys = [getattr(self, f) for f in self.CONSTANTS]
        for r in (getattr(self, "requant", None),):
            if isinstance(r, Requant) and r.bias:
                keys.append(r.bias)
        return [k for k in keys if k]


@dataclass(frozen=True, eq=False)
class Quantize(Op):
    """float → the output tensor's codes (rint half to even, saturation: QuantizeLinear)."""

    kind: ClassVar[str] = "quantize"


@dataclass(frozen=True, eq=False)
class Dequantize(Op):
    """codes → float with constant ``scale`` / ``zp`` (per tensor, per ``axis``, or per block)."""

    scale: str
    zp: str
    axis: int
    block_size: int
    kind: ClassVar[str] = "dequantize"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("scale", "zp")


@dataclass(frozen=True, eq=False)
class Conv(Op):
    """Exact integer Conv of ``x - zp_in`` with weights ``w - w_zp`` (w_zp int64 per output
    channel), then ``requant`` per output channel; ``group`` as ONNX."""

    w: str
    w_zp: str
    zp_in: int
    group: int
    window: Window
    requant: Requant
    kind: ClassVar[str] = "conv"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("w", "w_zp")


@dataclass(frozen=True, eq=False)
class ConvTranspose(Conv):
    """Exact integer ConvTranspose (weights (C, O/group, kernel...)); ``output_padding`` and
    ``output_shape`` as ONNX (empty: absent)."""

    output_padding: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    kind: ClassVar[str] = "conv_transpose"


@dataclass(frozen=True, eq=False)
class MatMul(Op):
    """Exact ``(A - zp_in) @ (B - zp_b)``: B a constant (``b_zp`` per column, program constant)
    or an activation (``b_zp`` None, ``zp_b`` its zero point); ``requant`` along the last axis."""

    zp_in: int
    b_zp: str | None
    zp_b: int
    requant: Requant
    kind: ClassVar[str] = "matmul"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("b_zp",)


@dataclass(frozen=True, eq=False)
class Affine(Op):
    """An unfused BatchNormalization: ``sign · (q - zp_in)`` per channel (axis 1), then ``requant``."""

    zp_in: int
    sign: str
    requant: Requant
    kind: ClassVar[str] = "affine"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("sign",)


@dataclass(frozen=True, eq=False)
class Add(Op):
    """``((a - zp_a)·mult_a + (b - zp_b)·mult_b) >> shift + zp_out`` clamped (Sub: negative ``mult_b``)."""

    zp_a: int
    mult_a: int
    zp_b: int
    mult_b: int
    shift: int
    zp_out: int
    lo: int
    hi: int
    kind: ClassVar[str] = "add"


@dataclass(frozen=True, eq=False)
class Mul(Op):
    """``(a - zp_a)·(b - zp_b)·mult >> shift + zp_out`` clamped."""

    zp_a: int
    zp_b: int
    mult: int
    shift: int
    zp_out: int
    lo: int
    hi: int
    kind: ClassVar[str] = "mul"


@dataclass(frozen=True, eq=False)
class RescaleOp(Op):
    """One requantization (a DQ → Q pair, Relu/Clip, a positive scalar Mul/Div)."""

    rescale: Rescale
    kind: ClassVar[str] = "rescale"


@dataclass(frozen=True, eq=False)
class Concat(Op):
    """Inputs each rescaled to the output's quantization, concatenated along ``axis``."""

    axis: int
    parts: tuple[Rescale, ...]
    kind: ClassVar[str] = "concat"


@dataclass(frozen=True, eq=False)
class Lut(Op):
    """An 8-bit input's codes through a table of every code (``table[q - in_qmin]``)."""

    table: str
    in_qmin: int
    kind: ClassVar[str] = "lut"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("table",)


@dataclass(frozen=True, eq=False)
class LutInterp(Op):
    """A 16-bit input through a table of 2^L entries, linearly interpolated (``step_log2``
    codes per entry), clamped to ``[lo, hi]``."""

    table: str
    in_qmin: int
    step_log2: int
    lo: int
    hi: int
    kind: ClassVar[str] = "lut_interp"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("table",)


@dataclass(frozen=True, eq=False)
class Softmax(Op):
    """Integer softmax along ``axis`` (``coerce_2d``: opset < 13, over the flattened axes from
    ``axis`` on) with an exp ``table``; the output in ``out_scale``."""

    table: str
    axis: int
    coerce_2d: bool
    out_scale: float
    zp_out: int
    lo: int
    hi: int
    kind: ClassVar[str] = "softmax"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("table",)


@dataclass(frozen=True, eq=False)
class LayerNorm(Op):
    """LayerNormalization, mixed: integer input, float statistics (``gamma``/``beta`` float64
    program constants, or None), requantized output."""

    zp_in: int
    in_scale: float
    axis: int
    gamma: str | None
    beta: str | None
    epsilon: float
    out_scale: float
    zp_out: int
    lo: int
    hi: int
    kind: ClassVar[str] = "layernorm"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("gamma", "beta")


@dataclass(frozen=True, eq=False)
class AvgPool(Op):
    """Integer window sums requantized by element count: ``mult[n]``/``shift[n]`` (program
    constants) for a window of n elements."""

    zp_in: int
    window: Window
    count_include_pad: int
    mult: str
    shift: str
    zp_out: int
    lo: int
    hi: int
    kind: ClassVar[str] = "avgpool"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("mult", "shift")


@dataclass(frozen=True, eq=False)
class GlobalAvgPool(Op):
    """Per-channel sums requantized by ``ratio / count``: ``requant`` holds that multiplier for
    the ``count`` the input's static shape gives (its ``mult`` is empty when the spatial size is
    only known at run time: then computed from ``ratio``)."""

    zp_in: int
    ratio: float
    count: int
    requant: Requant
    kind: ClassVar[str] = "global_avgpool"


@dataclass(frozen=True, eq=False)
class ResizeNearest(Op):
    """Nearest Resize of the last two axes on codes, then ``rescale``."""

    coordinate_mode: str
    nearest_mode: str
    rescale: Rescale
    kind: ClassVar[str] = "resize_nearest"


@dataclass(frozen=True, eq=False)
class ResizeLinear(Op):
    """Bilinear Resize of the last two axes with ``frac_bits``-bit fixed-point weights, the
    accumulator (``2 · frac_bits`` fraction bits) then ``requant``."""

    zp_in: int
    coordinate_mode: str
    frac_bits: int
    requant: Requant
    kind: ClassVar[str] = "resize_linear"


@dataclass(frozen=True, eq=False)
class Move(Op):
    """An ONNX data-movement op (Reshape, Transpose, Slice, MaxPool, Pad...) on codes, then
    ``rescale`` when the output's quantization differs (or a fused Relu/Clip clamps).  A
    constant-mode Pad pads with ``pad_code`` (its value quantized by lowering)."""

    onnx_attrs: dict[str, Any]
    rescale: Rescale | None = None
    n_outputs: int = 1
    pad_code: int | None = None
    kind: ClassVar[str] = "move"


@dataclass(frozen=True, eq=False)
class Recurrent(Op):
    """RNN / GRU / LSTM on ``kernels.recurrent``: inputs (X, sequence_lens, initial_h,
    initial_c), outputs (Y, Y_h, Y_c; "" unused).  Per direction: weights ``w``/``r`` (codes),
    per-row multipliers of the input (``mx``/``sx``) and recurrent (``mh``/``sh``) parts,
    biases in Q4.11 (``bias``, ``rbn``), gate tables; initial states' (mult, shift, zero point)
    to the kernel's formats; each output's (mult, shift) to its quantization."""

    cell: str
    layout: int
    reverse: tuple[bool, ...]
    zp_in: int
    x_acc_bits: int
    h_acc_bits: int
    step_log2: int
    lbr: bool
    h0: tuple[int, int, int] | None
    c0: tuple[int, int, int] | None
    requant: tuple[tuple[int, int] | None, ...]
    w: str
    r: str
    mx: str
    sx: str
    mh: str
    sh: str
    sig: str
    tanh: str
    bias: str
    rbn: str
    kind: ClassVar[str] = "recurrent"
    CONSTANTS: ClassVar[tuple[str, ...]] = ("w", "r", "mx", "sx", "mh", "sh", "sig", "tanh", "bias", "rbn")


@dataclass(frozen=True, eq=False)
class Float(Op):
    """An ONNX op the target cannot run in integer, on float tensors (the reference executor)."""

    onnx_attrs: dict[str, Any]
    domain: str = ""
    kind: ClassVar[str] = "float"


KINDS: dict[str, type[Op]] = {cls.kind: cls for cls in (
    Quantize, Dequantize, Conv, ConvTranspose, MatMul, Affine, Add, Mul, RescaleOp, Concat, Lut, LutInterp, Softmax,
    LayerNorm, AvgPool, GlobalAvgPool, ResizeNearest, ResizeLinear, Move, Recurrent, Float)}


@dataclass
class Program:
    """Ops in execution order; ``tensors`` describes every integer tensor (float tensors
    are absent); ``constants`` holds weights, biases, tables and float constants."""

    inputs: list[str]
    outputs: list[str]
    ops: list[Op]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    rounding: int  # runtime.kernels.requant mode
    opset: int = 13
    target: str = ""

    def kinds(self) -> Counter:
        return Counter(op.kind for op in self.ops)

    def float_nodes(self) -> list[tuple[str, str]]:
        """(op type, node name) of every ONNX node left in float."""
        return [(op.op_type, op.node) for op in self.ops if op.kind == "float"]

    def source_of(self, name: str) -> str:
        """The ONNX tensor a program tensor stands for (itself for float tensors)."""
        info = self.tensors.get(name)
        return info.source if info is not None else name
