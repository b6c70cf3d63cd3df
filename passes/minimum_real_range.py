"""MinimumRealRange: onnxruntime's ``extra_options={"MinimumRealRange": m}``, every activation
group's range (0 included) at least ``m`` wide: where ``rmax - rmin < m``, ``rmax = rmin + m``
(onnxruntime's ``compute_scale_zp``; QNN needs a minimum range).  Written as range overrides for
the groups it widens (PropagateRanges applies them), so other groups keep their own ranges;
an override already there wins.  Runs after calibration, before PropagateRanges.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.propagate_ranges import share_groups
from ptqc.quant import PlainSpec, TensorOverride
from ptqc.vocab import Analysis, Meta


class MinimumRealRange(Pass):
    """Widen every per-tensor activation group narrower than ``minimum`` to that width."""

    requires = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, minimum: float, unify: bool = False):
        self.minimum, self.unify = float(minimum), unify

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        observers = ctx.analyses.get(Analysis.OBSERVERS) or {}
        overrides = dict(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {})
        widened = 0
        for root, members in share_groups(graph, self.unify).items():
            spec = graph.value(root).meta[Meta.QSPEC]
            if not isinstance(spec, PlainSpec) or spec.axis is not None or any(m in overrides for m in members) \
                    or graph.value(root).const is not None:
                continue
            ranges = [observers[m].range(spec.dtype, spec.symmetric) for m in members if m in observers]
            ranges = [r for r in ranges if r is not None]
            if not ranges:
                continue
            lo = min(0.0, min(float(np.min(r[0])) for r in ranges))
            hi = max(0.0, max(float(np.max(r[1])) for r in ranges))
            if hi - lo < self.minimum:
                overrides[root] = TensorOverride(np.dtype(spec.dtype), lo, lo + self.minimum)
                widened += 1
        ctx.analyses[Analysis.RANGE_OVERRIDES] = overrides
        if widened:
            ctx.logger.info("minimum real range %g: %d groups widened", self.minimum, widened)
        return PassResult(graph, False)
