"""RestrictZeroPoints: onnxruntime's ``extra_options={"ActivationRestrictedAsymmetric": True}``:
every asymmetric uint8 activation group's zero point snapped to 0 when its range (0 included)
is non-negative, else to the middle code 128, the scale recomputed so the range still fits
unclipped (onnxruntime's ``snap_zero_point_to_uint8``; hardware that takes only those two zero
points).  Written as overrides fixing scale and zero point (PropagateRanges applies them, biases
included); a range override already there (MinimumRealRange, -lt) gives the range, one fixing
the type or the parameters is left alone.  Runs after MinimumRealRange, before PropagateRanges.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.propagate_ranges import share_groups
from ptqc.quant import QRANGE, PlainSpec, TensorOverride
from ptqc.vocab import Analysis, Meta


class RestrictZeroPoints(Pass):
    """Zero point 0 or 128 for every per-tensor asymmetric uint8 activation group."""

    requires = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, unify: bool = False):
        self.unify = unify

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        observers = ctx.analyses.get(Analysis.OBSERVERS) or {}
        overrides = dict(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {})
        for root, members in share_groups(graph, self.unify).items():
            spec = graph.value(root).meta[Meta.QSPEC]
            if not isinstance(spec, PlainSpec) or spec.axis is not None or spec.symmetric \
                    or np.dtype(spec.dtype) != np.uint8 or graph.value(root).const is not None:
                continue
            given = next((overrides[m] for m in members if m in overrides), None)
            if given is not None and (given.dtype is not None or given.scale is not None or given.lo is None):
                continue
            ranges = [(given.lo, given.hi)] if given is not None else \
                [observers[m].range(spec.dtype, False) for m in members if m in observers]
            ranges = [r for r in ranges if r is not None]
            if ranges:
                lo = min(0.0, min(float(np.min(r[0])) for r in ranges))
                hi = max(0.0, max(float(np.max(r[1])) for r in ranges))
                overrides[root] = snapped(lo, hi)
        ctx.analyses[Analysis.RANGE_OVERRIDES] = overrides
        return PassResult(graph, False)


def snapped(lo: float, hi: float) -> TensorOverride:
    """uint8 parameters for [lo, hi] (0 inside) with zero point 0 or 128, as onnxruntime computes them."""
    qmin, qmax = QRANGE[np.dtype(np.uint8)]
    mid = (qmin + qmax + 1) // 2
    if hi <= lo:  # zero range: any scale represents it; onnxruntime's
        zp, scale = (qmin, 1.0 / (qmax - qmin)) if lo >= 0 else (mid, 1.0 / ((qmax - qmin) // 2))
    elif lo >= 0:
        zp, scale = qmin, hi / (qmax - qmin)
    else:
        zp, scale = mid, max(-lo / (mid - qmin), hi / (qmax - mid))
    return TensorOverride(np.dtype(np.uint8), scale=np.float32(scale), zero_point=np.int64(zp))
