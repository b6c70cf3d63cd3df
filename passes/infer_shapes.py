"""InferShapes: fill every value's dtype and shape with onnx.shape_inference.

Weights over 4 KB are handed to onnx as data-less external references (dims and dtype
only), so inference never serializes the weights and works on models over 2 GB; small
constants (shape tensors) keep their data so data propagation still folds Reshape targets.
"""
from __future__ import annotations

import onnx

from ptqc.ir import Graph
from ptqc.onnx_io import export_model
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis

_STRIP_BYTES = 4096


class InferShapes(Pass):
    """Run onnx shape inference and record the types and shapes it finds on the values."""

    produces = (Analysis.SHAPES,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        model = export_model(graph, constants_as_initializers=True, strip_threshold=_STRIP_BYTES)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as e:
            ctx.logger.warning("shape inference failed, shapes stay as they were: %s",
                               str(e).strip().splitlines()[0])
            return PassResult(graph, False)
        modified = False
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            if not graph.has_value(vi.name) or not vi.type.HasField("tensor_type"):
                continue
            v = graph.value(vi.name)
            if v.const is not None:
                continue
            tt = vi.type.tensor_type
            elem = tt.elem_type or v.elem_type
            shape = v.shape
            if tt.HasField("shape"):
                new = tuple(int(d.dim_value) if d.HasField("dim_value") else
                            (d.dim_param if d.HasField("dim_param") else None) for d in tt.shape.dim)
                shape = _merge(v.shape, new)
            if (elem, shape) != (v.elem_type, v.shape):
                v.elem_type, v.shape, modified = elem, shape, True
        return PassResult(graph, modified)


def _merge(old, new):
    """Prefer known dims; never forget a dim the graph already knew."""
    if old is None or len(old) != len(new):
        return new
    return tuple(o if (n is None and o is not None) else n for o, n in zip(old, new))
