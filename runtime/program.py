"""The lowered program: what the simulator runs, and all it knows.

A :class:`Program` is a flat list of :class:`Op` over named tensors.  Integer tensors carry
their quantization (:class:`TensorInfo`: dtype, scale, zero point) and the name of the ONNX
float tensor they stand for (``source``), so dumps and comparisons speak in the model's
names.  Op kinds and their attributes (all numpy arrays / Python scalars):

- ``quantize`` / ``dequantize``: float ↔ integer at the borders of the integer part
  (rint half to even and saturation, the ONNX QuantizeLinear rule).
- ``conv``, ``conv_transpose``, ``matmul``: exact integer accumulation, int32/int64 bias,
  accumulator saturation at ``acc_bits``, per-channel requantization (``mult``, ``shift``,
  ``axis``) into ``[lo, hi]`` (fused Relu/Clip are in ``lo``/``hi``).
- ``affine``: an unfused BatchNormalization, ``sign · (q - zp) + bias`` requantized per
  channel.
- ``add`` (Sub: negative ``mb``), ``mul``, ``rescale`` (one requantize: Relu/Clip, scale
  changes), ``concat`` (a rescale per input), ``lut`` / ``lut_interp`` (tables), ``softmax``,
  ``layernorm`` (mixed), ``avgpool`` / ``global_avgpool`` (sums, requantized
  by element count), ``resize_nearest`` / ``resize_linear``.
- ``recurrent``: RNN/GRU/LSTM on ``kernels.recurrent`` (inputs X, sequence_lens,
  initial_h, initial_c; outputs Y, Y_h, Y_c, "" where unused): weights, per-row multipliers,
  Q4.11 biases and gate tables as constants, rescales of the states and outputs.
- ``move``: an ONNX data-movement op run on integer codes (Reshape, Transpose, Slice, MaxPool,
  Pad...).
- ``float``: an ONNX op the target cannot run in integer, on float tensors.

Imports numpy only.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class Op:
    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    node: str = ""  # the ONNX node it came from
    op_type: str = ""  # that node's op type


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
