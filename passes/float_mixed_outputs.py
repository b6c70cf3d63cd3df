"""FloatMixedOutputs: a Concat that writes a graph output from parts of very different magnitudes
stays float at its output, instead of one scale that erases the small parts.

The detection heads of YOLOv5/v8 end in ``Concat(boxes in pixels, class scores in [0, 1])``:
one per-tensor int8 scale over ``[0, 1024]`` is 8, so every score rounds to 0 (output cosine
0.998, mAP 0).  Each input keeps its own quantization; only the output is left float, as a
graph output costs nothing downstream.  The rule: the Concat's inputs' largest magnitudes
(their calibrated ranges) differ by more than ``2^(b-1) / MIN_LEVELS``, i.e. the smallest part
would keep fewer than ``MIN_LEVELS`` codes of its own.  Written as a float override
(``ctx.analyses["range_overrides"]``, tensor -> FLOAT_OVERRIDE), listed in ``float_ops`` with a
warning naming the node.  Runs after Calibrate (it reads the observers), before PropagateRanges.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.quant import FLOAT_OVERRIDE, PlainSpec, SharedSpec
from ptqc.vocab import Analysis, Meta

MIN_LEVELS = 16


class FloatMixedOutputs(Pass):
    """Leave float the output of a graph-output Concat whose parts differ in magnitude by more
    than the quantized type can hold."""

    requires = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        observers = ctx.analyses.get(Analysis.OBSERVERS) or {}
        overrides = dict(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {})
        float_ops = ctx.analyses.get(Analysis.FLOAT_OPS) or {}
        for node in graph.nodes():
            out = node.outputs[0] if node.outputs else ""
            if node.op_type != "Concat" or out not in graph.outputs or out in overrides:
                continue
            spec = _plain(graph, out)
            peaks = [_peak(graph, x, observers) for x in node.inputs]
            if spec is None or any(p is None for p in peaks) or min(peaks) <= 0:
                continue
            ratio = max(peaks) / min(peaks)
            if ratio * MIN_LEVELS <= 2 ** (np.dtype(spec.dtype).itemsize * 8 - 1):
                continue
            overrides[out] = FLOAT_OVERRIDE
            float_ops.setdefault("Concat", []).append(node.name)
            ctx.logger.warning("%s: output %r left float: its parts' magnitudes differ %.0fx, so one %s scale would "
                               "leave the smallest fewer than %d codes", node.name or "Concat", out, ratio,
                               np.dtype(spec.dtype), MIN_LEVELS)
        ctx.analyses[Analysis.RANGE_OVERRIDES] = overrides
        ctx.analyses[Analysis.FLOAT_OPS] = float_ops
        return PassResult(graph, False)


def _plain(graph: Graph, name: str) -> PlainSpec | None:
    spec = graph.value(name).meta.get(Meta.QSPEC)
    while isinstance(spec, SharedSpec):
        spec = graph.value(spec.source).meta.get(Meta.QSPEC)
    return spec if isinstance(spec, PlainSpec) else None


def _peak(graph: Graph, name: str, observers: dict) -> float | None:
    """The largest magnitude ``name`` takes: a constant's, else the largest its observer saw."""
    v = graph.value(name)
    if v.const is not None:
        return float(np.max(np.abs(v.const))) if np.size(v.const) else None
    obs = observers.get(name)
    if obs is None or getattr(obs, "min", None) is None:
        return None
    return float(max(abs(float(np.min(obs.min))), abs(float(np.max(obs.max)))))
