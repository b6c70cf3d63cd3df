"""LiftConstantNodes: turn Constant ops into constant values.

Import already does this for the model's own Constant nodes; the pass covers graphs built
or edited in memory.  The value remembers it came from a Constant node, so export writes
it back as one unless initializers are asked for.
"""
from __future__ import annotations

from ptqc.ir import ConstantOrigin, Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis


class LiftConstantNodes(Pass):
    """Replace each Constant node holding a tensor by a constant value of the same name."""

    preserves = (Analysis.SHAPES,)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        lifted = 0
        for node in graph.nodes():
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
                continue
            array = graph.constant(node.outputs[0])
            if array is None:
                ctx.logger.debug("lift_constant_nodes: %r kept: holds a %s, not a tensor",
                                 node.name, ", ".join(node.attrs))
                continue
            name = node.outputs[0]
            graph.remove_node(node)
            if graph.has_value(name):
                graph.add_constant(name, array, ConstantOrigin("constant_node", node_name=node.name,
                                                               doc_string=node.doc_string))
            lifted += 1
        return PassResult(graph, lifted > 0)
