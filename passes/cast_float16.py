"""CastFloat16: tensors an nncase quant scheme types ``f16`` rounded to float16 where they are.

A QDQ model says "this tensor is int8" with a QuantizeLinear/DequantizeLinear pair; it says
"this tensor is float16" the same way, with ``Cast(to=float16) -> Cast(to=float)`` after the
producer, so onnxruntime (and ``-r compare``) see exactly the values a float16 tensor holds,
while the ops around it keep their float inputs.  A constant is rounded in place.  The tensors
come from ``ctx.analyses["range_overrides"]`` entries whose type is float16 (PropagateRanges
leaves them unquantized, as it does ``f32``).  Run after InsertQDQ.
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis

_F16, _F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


class CastFloat16(Pass):
    """Round every tensor typed float16 by the overrides through a Cast pair (constants in place)."""

    preserves = (Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS, Analysis.QUANT_PARAMS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        names = sorted(n for n, o in (ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {}).items()
                       if o.dtype is not None and np.dtype(o.dtype) == np.float16 and graph.has_value(n))
        for name in names:
            v = graph.value(name)
            if v.const is not None:
                graph.set_constant(name, np.asarray(v.const).astype(np.float16).astype(v.const.dtype))
                continue
            half = graph.unique_name(f"{name}_float16")
            if name in graph.outputs and graph.producer(name) is not None:
                producer = graph.producer(name)  # the output keeps its name: the producer writes a new one
                src = graph.unique_name(f"{name}_float")
                graph.set_output(producer, list(producer.outputs).index(name), src)
                graph.value(src).elem_type, graph.value(src).shape = v.elem_type, v.shape
                back = name
            else:
                src, back = name, graph.unique_name(f"{name}_f16_float")
                graph.replace_all_uses(name, back)
            graph.add_node("Cast", [src], [half], {"to": _F16}, name=graph.unique_name(f"{name}_to_float16"))
            graph.add_node("Cast", [half], [back], {"to": _F32}, name=graph.unique_name(f"{name}_from_float16"))
            graph.value(half).elem_type, graph.value(half).shape = _F16, v.shape
            graph.value(back).elem_type, graph.value(back).shape = _F32, v.shape
        if names:
            ctx.logger.info("float16: %d tensor(s) rounded through float16 (%s)", len(names), ", ".join(names))
        return PassResult(graph, bool(names))
