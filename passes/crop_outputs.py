"""CropOutputs: make the named tensors the graph's outputs (``-on``); what no output needs is
left for dead-code elimination."""
from __future__ import annotations

from ptqc.errors import ConfigError
from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis


class CropOutputs(Pass):
    """Replace the graph outputs with ``names`` (tensors the graph computes)."""

    preserves = (Analysis.SHAPES,)

    def __init__(self, names: tuple[str, ...] = ()):
        self.names = tuple(names)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if not self.names or list(self.names) == graph.outputs:
            return PassResult(graph, False)
        for name in self.names:
            if not graph.has_value(name) or (graph.producer(name) is None and name not in graph.inputs):
                raise ConfigError(f"-on/--output-name: the model has no tensor named {name!r}")
        graph.outputs[:] = list(dict.fromkeys(self.names))
        return PassResult(graph, True)
