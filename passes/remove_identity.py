"""RemoveIdentity: drop Identity and inference-mode Dropout nodes, wiring input to output."""
from __future__ import annotations

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewriteRule, RewritePass
from ptqc.vocab import Analysis


class _DropPassThrough(RewriteRule):
    name = "drop_pass_through"
    anchor = ("Identity", "Dropout")

    def match(self, graph: Graph, node: Node):
        if not node.inputs or not node.inputs[0]:
            return Fail("no input")
        if node.op_type == "Dropout":
            if len(node.outputs) > 1 and node.outputs[1] and (
                    graph.consumers(node.outputs[1]) or node.outputs[1] in graph.outputs):
                return Fail("its mask output is used")
            if len(node.inputs) > 2 and node.inputs[2]:
                mode = graph.constant(node.inputs[2])
                if mode is None or bool(mode):
                    return Fail("training_mode is not a constant false")
        src, dst = node.inputs[0], node.outputs[0]
        if graph.is_captured(dst):
            return Fail(f"output {dst!r} is read inside a subgraph")
        if dst in graph.outputs:
            producer = graph.producer(src)
            if (producer is None or src in graph.outputs or graph.is_captured(src)
                    or len(graph.consumers(src)) != 1):
                return Fail(f"output {dst!r} is a graph output and input {src!r} cannot take its name")
            return {"node": node, "producer": producer}
        return {"node": node}

    def rewrite(self, graph: Graph, m) -> None:
        node = m["node"]
        src, dst = node.inputs[0], node.outputs[0]
        if "producer" in m:  # keep the graph output's name: the producer now writes it
            producer = m["producer"]
            slot = producer.outputs.index(src)
            graph.remove_node(node)
            graph.set_output(producer, slot, dst)
        else:
            graph.replace_all_uses(dst, src)
            graph.remove_node(node)


class RemoveIdentity(RewritePass):
    """Remove Identity and Dropout (inference) nodes."""

    rules = (_DropPassThrough(),)
    preserves = (Analysis.SHAPES,)
