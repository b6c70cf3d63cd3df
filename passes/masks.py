"""Attention masks: which tensors carry a mask fill, so that no range ever includes one.

A transformer writes its attention mask as a huge negative number added to (or put by
``Where`` into) the attention scores before Softmax: ``(1 - mask) * -3.4e38``, ``-10000``,
``-1e9``, ``-inf`` from ``ConstantOfShape``.  A quantized tensor holding such a fill gets a
range that swamps every real value (one step of ~1e36): the scores, and everything after,
are lost at any bit-width.

The analysis, by structure (no data needed), in one walk in topological order:

* a tensor **carries a fill** when a fill constant (|value| >= ``FILL`` or non-finite; also a
  ``ConstantOfShape`` value) enters mask arithmetic (Mul/Add/Sub/Expand/... of tensors that no
  float data reaches: integer inputs, shapes, constants), or is put into a tensor by
  ``Where``; and every tensor computed from one carries it too, except a Softmax's output
  (``exp`` of the fill is an exact 0);
* the mask arithmetic feeding only such tensors (``1 - mask``) goes with them.

"Float data" is a float graph input or an embedding lookup (Gather from a float constant), so
that a token model's whole network is not mistaken for mask arithmetic.  ``Clip``, ``Min`` and
``Max`` bounds are never fills (an unbounded Clip writes +-inf).

The choice (made in :class:`~ptqc.passes.AssignQuantSpecs`): every op reading a tensor that
carries a fill, or belonging to the mask arithmetic, stays float with its reason.  So the
masked Add/Where and the Softmax behind it run float and exactly, and the Softmax's output (in
[0, 1]) is quantized as usual by its consumer.  This is the one choice that is exact whatever
the fill value; saturating the fill to the scores' range instead lets masked positions leak
into the Softmax (``exp(-2 * range)`` each).
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.ir import Graph

FILL = 1e4  # the smallest |value| taken as a mask fill (old BERTs use -10000)
_SHAPE_ONLY = frozenset({"Shape", "Size"})
_ENDS_FILL = frozenset({"Softmax"})
_BOUNDS = frozenset({"Clip", "Min", "Max"})
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)


def mask_tensors(graph: Graph) -> tuple[set[str], set[str]]:
    """(tensors carrying a fill, mask-arithmetic tensors feeding only those)."""
    data = {n for n in graph.inputs if graph.value(n).elem_type in _FLOATS}
    fills = {v.name for v in graph.values() if v.const is not None and _is_fill(v.const)}
    carries: set[str] = set()
    order = graph.topological_order()
    for node in order:
        ins = [x for x in node.inputs if x]
        outs = [o for o in node.outputs if o]
        if node.op_type in _SHAPE_ONLY:
            continue
        if any(x in data for x in ins) or (node.op_type == "Gather" and _float_const(graph, ins[0])):
            data.update(outs)
        if node.op_type in _ENDS_FILL:
            continue
        starts = (node.op_type == "Where" and any(x in fills for x in ins[1:])) or (
            node.op_type not in _BOUNDS and not any(x in data for x in ins)
            and (any(x in fills for x in ins) or _fill_attribute(node)))
        if starts or any(x in carries for x in ins):
            carries.update(outs)
    arithmetic: set[str] = set()
    for node in reversed(order):  # 1 - mask, Cast(mask)...: mask values feeding only the fill
        outs = [o for o in node.outputs if o]
        if (outs and not any(x in data for x in node.inputs if x) and node.op_type not in _SHAPE_ONLY
                and all(c.op_type not in _SHAPE_ONLY and any(o in carries or o in arithmetic for o in c.outputs)
                        for o in outs for c, _ in graph.consumers(o))
                and all(graph.consumers(o) for o in outs) and not (set(outs) & carries)):
            arithmetic.update(outs)
    return carries, arithmetic


def _float_const(graph: Graph, name: str) -> bool:
    c = graph.constant(name)
    return c is not None and c.dtype.kind == "f"


def _is_fill(a: np.ndarray) -> bool:
    a = np.asarray(a)
    return a.dtype.kind == "f" and a.size > 0 and bool(np.any(~np.isfinite(a) | (np.abs(a) >= FILL)))


def _fill_attribute(node) -> bool:
    v = node.attrs.get("value") if node.op_type == "ConstantOfShape" else None
    return v is not None and _is_fill(np.asarray(v))
