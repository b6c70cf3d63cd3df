"""InsertNormalization: ``(x - mean) / std`` right after the first graph input (``--mean``
/``--std``), as one Mul and one Add per channel (``x * (1/std) + (-mean/std)``) so it
quantizes like any other op.  One value broadcasts to every channel (NCHW, axis 1)."""
from __future__ import annotations

import numpy as np

from ptqc.errors import ConfigError
from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult


class InsertNormalization(Pass):
    """Normalize the first runtime input with per-channel ``mean`` and ``std``."""

    def __init__(self, mean: tuple[float, ...] = (), std: tuple[float, ...] = ()):
        self.mean, self.std = tuple(mean), tuple(std)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if not self.mean:
            return PassResult(graph, False)
        inputs = [n for n in graph.inputs if graph.value(n).const is None]
        if not inputs:
            raise ConfigError("--mean/--std: the model has no input")
        x = graph.value(inputs[0])
        if any(s == 0 for s in self.std):
            raise ConfigError("--std: a value is 0")
        channels = x.shape[1] if x.shape is not None and len(x.shape) > 1 else None
        for flag, vals in (("--mean", self.mean), ("--std", self.std)):
            if len(vals) != 1 and (not isinstance(channels, int) or len(vals) != channels):
                raise ConfigError(f"{flag}: {len(vals)} values given; input {x.name!r} (shape {list(x.shape or [])}) "
                                  f"needs 1 or one per channel")
        rank = len(x.shape) if x.shape is not None else 4
        shape = [1] * rank
        if max(len(self.mean), len(self.std)) > 1:
            shape[1] = -1
        inv = (1.0 / np.asarray(self.std, np.float64)).astype(np.float32).reshape(shape if len(self.std) > 1 else [1] * rank)
        shift = (-np.asarray(self.mean, np.float64) / np.asarray(self.std, np.float64)).astype(np.float32)
        shift = shift.reshape(shape if shift.size > 1 else [1] * rank)
        scaled, normalized = graph.unique_name(f"{x.name}_scaled"), graph.unique_name(f"{x.name}_normalized")
        consumers = graph.consumers(x)
        s = graph.add_constant(graph.unique_name(f"{x.name}_inv_std"), inv)
        b = graph.add_constant(graph.unique_name(f"{x.name}_neg_mean_over_std"), shift)
        graph.add_node("Mul", [x.name, s.name], [scaled], name=graph.unique_name("input_normalize_mul"))
        graph.add_node("Add", [scaled, b.name], [normalized], name=graph.unique_name("input_normalize_add"))
        for v in (scaled, normalized):
            graph.value(v).elem_type, graph.value(v).shape = x.elem_type, x.shape
        for node, idx in consumers:
            graph.set_input(node, idx, normalized)
        return PassResult(graph, True)
