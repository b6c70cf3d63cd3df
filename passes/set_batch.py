"""SetBatch: the reference's ``-ib/--ir-batch n``, the written model's dynamic batch made static.

Every graph input whose first dimension is dynamic (a name or unknown) gets ``n`` there; the
shapes downstream follow by shape inference (run InferShapes after this pass).  Inputs with a
fixed first dimension are left alone, so on a model with a static batch the pass changes nothing,
as the reference says ("only takes effect when the float model has a dynamic batch").
"""
from __future__ import annotations

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis


class SetBatch(Pass):
    """Give every dynamic-batch graph input the static batch ``batch``."""

    preserves = (Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS, Analysis.QUANT_PARAMS)

    def __init__(self, batch: int):
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.batch = int(batch)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = []
        for name in graph.inputs:
            v = graph.value(name)
            if v.shape and not isinstance(v.shape[0], int):
                v.shape = (self.batch, *v.shape[1:])
                changed.append(name)
        ctx.logger.info("ir batch %d: %s", self.batch,
                        f"set on {', '.join(changed)}" if changed else "no input has a dynamic batch, nothing changed")
        return PassResult(graph, bool(changed))
