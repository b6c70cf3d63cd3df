"""ThresholdLayerNorm: the reference's ``-lt/--layer-threshold t``, every quantized
LayerNormalization's input and output range set to ``[-t, t]`` instead of the calibrated one.

For a LayerNormalization whose accuracy drops because one outlier stretches its input's (or
output's) range: a tighter range keeps resolution for the bulk and saturates the outlier.
Written as ``ctx.analyses["range_overrides"]`` entries (tensor -> TensorOverride(dtype, -t, t)), which
PropagateRanges applies to the tensor's whole sharing group, at the tensor's quantized type as
specced when this pass runs (after AssignPrecision, so a 16-bit LayerNormalization keeps 16
bits).  An override already there (an nncase scheme, ``-qs``) wins: it names the tensor itself.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.quant import PlainSpec, SharedSpec, TensorOverride
from ptqc.vocab import Analysis, Meta


class ThresholdLayerNorm(Pass):
    """Override the ranges of LayerNormalization inputs and outputs with ``[-threshold, threshold]``."""

    requires = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, threshold: float):
        if not threshold > 0:
            raise ValueError(f"layer threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        overrides = dict(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {})
        count = 0
        for node in graph.nodes():
            if node.op_type != "LayerNormalization":
                continue
            for name in (node.inputs[0], node.outputs[0]):
                spec = _plain(graph, name)
                if spec is None or name in overrides:
                    continue
                overrides[name] = TensorOverride(np.dtype(spec.dtype), -self.threshold, self.threshold)
                count += 1
        ctx.analyses[Analysis.RANGE_OVERRIDES] = overrides
        ctx.logger.info("layer threshold %g: %d LayerNormalization input/output ranges set to [-%g, %g]",
                        self.threshold, count, self.threshold, self.threshold)
        return PassResult(graph, False)


def _plain(graph: Graph, name: str) -> PlainSpec | None:
    """The plain spec ``name``'s parameters come from (following shared specs), or None when
    the tensor is not quantized per tensor."""
    spec = graph.value(name).meta.get(Meta.QSPEC)
    while isinstance(spec, SharedSpec):
        spec = graph.value(spec.source).meta.get(Meta.QSPEC)
    return spec if isinstance(spec, PlainSpec) and spec.axis is None else None
