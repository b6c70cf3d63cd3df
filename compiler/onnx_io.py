"""Import ONNX models into the ptqc IR and export them back, losslessly.

Imports nothing of ptqc but the core (``ptqc.ir``, ``ptqc.errors``); uses onnx's own
helpers (numpy_helper, external_data_helper, shape_inference) wherever they do the job.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

_A = AttributeProto


def attribute_value(attr: AttributeProto) -> Any:
    """An ONNX attribute as a plain Python value.

    FLOAT -> float, INT -> int, STRING -> str (bytes if not UTF-8), TENSOR -> np.ndarray,
    FLOATS/INTS/STRINGS/TENSORS -> lists of those; GRAPH(S), SPARSE_TENSOR(S) and
    TYPE_PROTO(S) stay protobuf objects (opaque: ptqc never edits subgraphs).
    """
    t = attr.type
    if t == _A.FLOAT:
        return float(attr.f)
    if t == _A.INT:
        return int(attr.i)
    if t == _A.STRING:
        return _decode(attr.s)
    if t == _A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == _A.FLOATS:
        return [float(v) for v in attr.floats]
    if t == _A.INTS:
        return [int(v) for v in attr.ints]
    if t == _A.STRINGS:
        return [_decode(s) for s in attr.strings]
    if t == _A.TENSORS:
        return [numpy_helper.to_array(v) for v in attr.tensors]
    if t == _A.GRAPH:
        return attr.g
    if t == _A.GRAPHS:
        return list(attr.graphs)
    if t == _A.SPARSE_TENSOR:
        return attr.sparse_tensor
    if t == _A.SPARSE_TENSORS:
        return list(attr.sparse_tensors)
    if t == _A.TYPE_PROTO:
        return attr.tp
    if t == _A.TYPE_PROTOS:
        return list(attr.type_protos)
    return onnx.helper.get_attribute_value(attr)


def _decode(s: bytes) -> str | bytes:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def make_attribute(name: str, value: Any, attr_type: int | None = None) -> AttributeProto:
    """The inverse of :func:`attribute_value`; ``attr_type`` disambiguates empty lists."""
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        value = [numpy_helper.from_array(v) for v in value]
    elif isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if attr_type is None or attr_type == _A.UNDEFINED:
        return onnx.helper.make_attribute(name, value)
    return onnx.helper.make_attribute(name, value, attr_type=attr_type)
