"""What every part of lowering shares: the "stays float" signal, the integer view of a node's
output, and small helpers on ONNX nodes.  Imports no other lowering module."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from ptqc.ir import Node
from ptqc.runtime.kernels.requant import quantize_multiplier
from ptqc.runtime.program import Rescale, TensorInfo
from ptqc.runtime.reference import run_node

Q_OPS = ("QuantizeLinear",)
DQ_OPS = ("DequantizeLinear",)
QDOMAINS = ("", "ai.onnx", "com.microsoft")
NIBBLE_TYPES = {"int4": np.int8, "uint4": np.uint8}  # ml_dtypes names onnx reads INT4/UINT4 as


class NotInteger(Exception):
    """Why one node stays float (a reason, not an error)."""


@dataclass(frozen=True)
class Output:
    """The integer side of a node's output: the program tensor the Q writes, its quantization,
    the clamp ``[lo, hi]`` (a fused Relu/Clip narrows it), the BatchNormalization folded after
    a Conv (per channel ``y = a·x + b``) or None, and the nodes absorbed into the op."""

    name: str
    info: TensorInfo
    lo: int
    hi: int
    affine: tuple[np.ndarray, np.ndarray] | None = None
    absorbed: list[Node] = field(default_factory=list)


def is_op(node: Node, names: tuple[str, ...]) -> bool:
    return node.op_type in names and node.domain in QDOMAINS


def key(node: Node) -> str:
    """The node's name, or (unnamed nodes) its first output's: unique either way."""
    return node.name or next((o for o in node.outputs if o), f"#{node.id}")


def rescale(src: TensorInfo, dst: TensorInfo, lo: int, hi: int, bits: int) -> Rescale:
    """Codes of ``src`` to codes of ``dst`` clamped to ``[lo, hi]``, with a ``bits``-bit multiplier."""
    m, s = quantize_multiplier(src.scale / dst.scale, bits)
    return Rescale(src.zero_point, int(m), int(s), dst.zero_point, lo, hi)


def clamp_codes(info: TensorInfo, lo: int, hi: int, lo_real: float, hi_real: float) -> tuple[int, int]:
    """``[lo, hi]`` narrowed by a real clamp ``[lo_real, hi_real]`` quantized by ``info``."""
    if np.isfinite(lo_real):
        lo = max(lo, int(info.quantize(np.float32(lo_real))))
    if np.isfinite(hi_real):
        hi = min(hi, int(info.quantize(np.float32(hi_real))))
    return lo, hi


def clip_bounds(node: Node, const: Callable) -> tuple[float, float]:
    """The real interval a Relu / Clip keeps (Clip's bounds from attributes or constant inputs)."""
    if node.op_type == "Relu":
        return 0.0, np.inf
    if node.op_type != "Clip":
        return -np.inf, np.inf
    lo, hi = node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)
    if len(node.inputs) > 1 and node.inputs[1]:
        c = const(node.inputs[1])
        if c is None:
            raise NotInteger("Clip with a computed bound")
        lo = float(c)
    if len(node.inputs) > 2 and node.inputs[2]:
        c = const(node.inputs[2])
        if c is None:
            raise NotInteger("Clip with a computed bound")
        hi = float(c)
    return float(lo), float(hi)


def float_fn(node: Node) -> Callable[[np.ndarray], np.ndarray]:
    """The op as a float64 → float64 function, through the reference executor (its ONNX
    semantics, attributes included)."""
    attrs = dict(node.attrs)

    def fn(x: np.ndarray) -> np.ndarray:
        return run_node(node.op_type, [np.asarray(x, np.float64)], attrs, name=node.name)[0].astype(np.float64)
    return fn


def attr_str(node: Node, name: str, default: str) -> str:
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def as_codes(a: np.ndarray | None) -> np.ndarray | None:
    """int4 / uint4 constants (``onnx.numpy_helper`` reads INT4/UINT4 as ml_dtypes arrays) as
    int8 / uint8 codes of the same values; other arrays as they are."""
    if a is not None and a.dtype.name in NIBBLE_TYPES:
        return a.astype(NIBBLE_TYPES[a.dtype.name])
    return a


def np_dtype(tensor_type: int) -> np.dtype | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type))
    except (KeyError, TypeError, ValueError):
        return None


def type_name(dtype: np.dtype) -> str:
    """The ONNX name of a numpy / ml_dtypes type (FLOAT8E4M3FN, INT4...), else numpy's."""
    try:
        return onnx.TensorProto.DataType.Name(onnx.helper.np_dtype_to_tensor_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        return dtype.name


def check_activation_type(zp: np.ndarray) -> None:
    """Integer tensors of the program are int8/uint8/int16/uint16 (numpy types): an int4 or
    float8 activation is refused here (its Q/DQ then names the node)."""
    dtype = np.dtype(zp.dtype)
    if dtype.kind not in "iu":
        raise NotInteger(f"{type_name(dtype)} activations: the integer simulator runs int8/int16 activations "
                         f"(unsigned too)")
