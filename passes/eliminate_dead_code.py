"""EliminateDeadCode: remove ops and constants that no graph output depends on."""
from __future__ import annotations

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis


class EliminateDeadCode(Pass):
    """Keep what the graph outputs need (through node inputs and subgraph captures)."""

    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        live_values: set[str] = set()
        live_nodes: set[int] = set()
        stack = list(graph.outputs)
        while stack:
            name = stack.pop()
            if name in live_values or not name:
                continue
            live_values.add(name)
            node = graph.producer(name)
            if node is not None and node.id not in live_nodes:
                live_nodes.add(node.id)
                stack.extend(node.inputs)
                stack.extend(node.captures)
        removed = 0
        for node in reversed(graph.topological_order()):
            if node.id not in live_nodes:
                graph.remove_node(node)
                removed += 1
        for v in graph.values():
            if v.const is not None and v.name not in live_values and v.name not in graph.inputs \
                    and not graph.consumers(v):
                graph.remove_value(v.name)
                removed += 1
        if removed:
            ctx.logger.info("eliminate_dead_code: removed %d dead nodes and constants", removed)
        return PassResult(graph, removed > 0)
