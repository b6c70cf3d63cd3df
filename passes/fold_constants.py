"""FoldConstants: evaluate ops whose inputs are all constant, with the reference executor.

Also folds Shape/Size of values whose shape is fully static.  Never folds Quantize/
DequantizeLinear (they carry a QDQ model's quantization), random ops, ops with subgraphs,
ops outside the default domain, graph outputs, or results much larger than their inputs.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import ConstantOrigin, Graph, Node
from ptqc.pass_manager import Fail, Pass, PassContext, PassResult
from ptqc.runtime import reference
from ptqc.vocab import Analysis

_NEVER = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "RandomNormal",
                    "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "If", "Loop", "Scan"})
_MAX_GROWTH_BYTES = 1 << 20  # a fold may add this much over its inputs (ConstantOfShape, Tile)


class FoldConstants(Pass):
    """Replace constant subexpressions by their values."""

    preserves = (Analysis.SHAPES,)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        folded = 0
        failures = ctx.analyses.setdefault(Analysis.FOLD_FAILURES, [])
        for node in graph.topological_order():
            values = _fold(graph, node)
            if isinstance(values, Fail):
                if values.reason:
                    failures.append((node.name, values.reason))
                    ctx.logger.debug("fold_constants: %s %r not folded: %s", node.op_type, node.name,
                                     values.reason)
                continue
            graph.remove_node(node)
            for name, array in zip(node.outputs, values):
                if name and graph.has_value(name):
                    graph.add_constant(name, array, ConstantOrigin("initializer"))
            folded += 1
        return PassResult(graph, folded > 0)


def _fold(graph: Graph, node: Node) -> list[np.ndarray] | Fail:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER or node.captures:
        return Fail("")  # silently kept: not a fold candidate
    if node.op_type in ("Shape", "Size") and node.inputs:
        return _fold_shape(graph, node)
    inputs = [graph.constant(name) if name else None for name in node.inputs]
    if any(a is None for a, name in zip(inputs, node.inputs) if name):
        return Fail("")
    if any(o in graph.outputs for o in node.outputs):
        return Fail("its output is a graph output")
    if not reference.supports(node.op_type):
        return Fail(f"op {node.op_type} is not in the reference executor")
    try:
        outs = reference.run_node(node.op_type, inputs, node.attrs, opset=graph.opset, name=node.name,
                                 n_outputs=len(node.outputs))
    except (reference.UnsupportedOpError, reference.ReferenceRuntimeError) as e:
        return Fail(str(e))
    in_bytes = sum(a.nbytes for a in inputs if a is not None)
    if sum(o.nbytes for o in outs) > in_bytes + _MAX_GROWTH_BYTES:
        return Fail("folding would grow the model by more than 1 MB")
    return outs


def _fold_shape(graph: Graph, node: Node) -> list[np.ndarray] | Fail:
    if node.outputs[0] in graph.outputs:
        return Fail("its output is a graph output")
    shape = graph.value(node.inputs[0]).static_shape
    if shape is None:
        return Fail("")
    if node.op_type == "Size":
        return [np.array(int(np.prod(shape)), dtype=np.int64)]
    rank = len(shape)
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", rank)
    start, end = (max(0, min(rank, s + rank if s < 0 else s)) for s in (start, end))
    return [np.array(shape[start:end], dtype=np.int64)]
