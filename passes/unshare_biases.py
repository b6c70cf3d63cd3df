"""UnshareBiases: a bias constant read by several Conv/ConvTranspose/Gemm nodes gets one copy
per reader, before quantization.

A quantized bias is int32 codes at its reader's ``input scale x weight scale``, which differs
between readers (two Convs with different weights): one shared int32 bias can be right for only
one of them (onnxruntime's quantizer duplicates it the same way, ``test_dup_shared_bias``).
Float outputs are unchanged: the copies hold the same values.
"""
from __future__ import annotations

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis

_BIAS = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


class UnshareBiases(Pass):
    """Give every reader of a shared bias constant its own copy."""

    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        copies = 0
        seen: set[str] = set()
        for node in graph.topological_order():
            slot = _BIAS.get(node.op_type)
            if slot is None or node.domain or len(node.inputs) <= slot or not node.inputs[slot]:
                continue
            name = node.inputs[slot]
            value = graph.value(name)
            if value.const is None or len(graph.consumer_nodes(name)) < 2:
                continue
            if name in seen:  # the first reader keeps the original, the others get copies
                copy = graph.add_constant(graph.unique_name(f"{name}_{node.name or node.op_type}"), value.const.copy())
                graph.set_input(node, slot, copy.name)
                copies += 1
            seen.add(name)
        if copies:
            ctx.logger.info("unshare biases: %d shared bias reads given their own copy", copies)
        return PassResult(graph, copies > 0)
