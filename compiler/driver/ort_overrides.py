"""onnxruntime's ``TensorQuantOverrides`` (quantize_static's extra option) read into ptqc's
:class:`~ptqc.quant.TensorOverride`.

The dictionary is checked by onnxruntime's own validator (``TensorQuantOverridesHelper.is_valid``:
unknown tensors, scale without zero point, scale beside rmin/rmax/symmetric/reduce_range,
per-channel lists of the wrong length...), so a dictionary onnxruntime refuses is refused here
with its message.  Per tensor: ``quant_type``, ``scale`` + ``zero_point``, ``rmin`` + ``rmax``,
``symmetric``, ``reduce_range``; per channel (constants): a list of such dicts, ``axis`` in the
first; ``convert`` (a second Q/DQ pair in another type for all or some consumers, ``recv_nodes``:
:mod:`ptqc.passes.convert_qdq`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx

from ptqc.errors import ConfigError
from ptqc.quant import TensorOverride

QUANT_TYPES = {"QInt8": np.int8, "QUInt8": np.uint8, "QInt16": np.int16, "QUInt16": np.uint16,
               "QInt4": ml_dtypes.int4, "QUInt4": ml_dtypes.uint4, "QFLOAT8E4M3FN": ml_dtypes.float8_e4m3fn}
_FLAG = "extra_options TensorQuantOverrides"


def tensor_overrides(raw: Any, model: str | Path | onnx.ModelProto, activation_type: str) -> dict[str, TensorOverride]:
    """``raw`` (tensor -> list of dicts) checked against ``model`` and converted."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{_FLAG}: expected a dict of tensor name -> list of dicts, got {type(raw).__name__}")
    if not raw:
        return {}
    from onnxruntime.quantization.quant_utils import QuantType  # heavy: 1.2 s to import
    from onnxruntime.quantization.tensor_quant_overrides import TensorQuantOverridesHelper  # heavy: 1.2 s to import

    proto = model_proto(model)
    initializers = {t.name: t for t in proto.graph.initializer}
    activations = {i.name for i in proto.graph.input} | {o for n in proto.graph.node for o in n.output}
    ok, why = TensorQuantOverridesHelper(raw).is_valid(initializers, activations, QuantType[activation_type])
    if not ok:
        raise ConfigError(f"{_FLAG}: {why}")
    return {name: _override(name, entries) for name, entries in raw.items() if entries and entries[0]}


def model_proto(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """quantize_static's ``model_input`` as a ModelProto (a path loaded without its external data)."""
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)


def _override(name: str, entries: list[dict]) -> TensorOverride:
    first = entries[0]
    dtype = _dtype(name, first["quant_type"]) if "quant_type" in first else None
    per_channel = len(entries) > 1 or "axis" in first

    def values(key: str) -> np.ndarray | None:
        if key not in first:
            return None
        got = [np.asarray(e[key], np.float64).reshape(()) for e in entries]
        return np.stack(got) if per_channel else got[0]

    zero_point = values("zero_point")
    convert = first.get("convert")
    recv = None if not convert or convert.get("recv_nodes") is None else frozenset(convert["recv_nodes"])
    return TensorOverride(dtype=dtype, lo=values("rmin"), hi=values("rmax"), symmetric=first.get("symmetric"),
                          reduce_range=first.get("reduce_range"), scale=values("scale"),
                          zero_point=None if zero_point is None else np.rint(zero_point).astype(np.int64),
                          axis=first.get("axis"), convert=_override(name, [convert]) if convert else None,
                          convert_nodes=recv)


def _dtype(name: str, quant_type: Any) -> np.dtype:
    kind = getattr(quant_type, "name", str(quant_type)).split(".")[-1]
    if kind not in QUANT_TYPES:
        raise ConfigError(f"{_FLAG}: tensor {name!r}: quant_type {kind} not supported "
                          f"(use {', '.join(QUANT_TYPES)})")
    return np.dtype(QUANT_TYPES[kind])
