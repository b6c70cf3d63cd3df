"""PropagateRanges: turn specs and observed ranges into one QuantParam per tensor
(``value.meta["quant"]``), resolving every kind of sharing in one union-find.

Groups: a shared spec joins its source (Reshape, MaxPool, Split... use their input's
parameters); with ``unify`` the inputs and output of each quantized Concat/Stack/ScatterND
join one group, chains and inputs feeding several Concats included.  A group's range is the
union of its members' ranges (observer ranges; constants' own min/max), so every member gets
identical parameters; a 16-bit activation group's range is widened by ``wide_headroom``
(QuantScheme).  Weights get symmetric per-channel parameters from their data; biases
get scale = input scale x weight scale in int32.

With ``ctx.analyses["loaded_params"]`` (``-lsj``; a quantized input model's, which may
also hold weights') the loaded parameters replace calibration;
the members of a group must agree, or the run stops naming the two tensors.  With
``ctx.analyses["range_overrides"]`` (tensor -> :class:`~ptqc.quant.TensorOverride`: an nncase
scheme, onnxruntime's TensorQuantOverrides, ...) a group holding an overridden tensor takes
what the override fixes (type, range, symmetry, the parameters themselves) and calibration
gives the rest; a float type keeps the whole group float.  A bias with an override of its own
is quantized from its values like a weight (onnxruntime's rule) instead of at s_x * s_w.
So per group: an override > loaded parameters > calibration; with the per-node bit widths
(``QuantScheme.node_bits``, applied earlier by AssignQuantSpecs) this is the one precedence
written down in docs/DESIGN.md §4 ("Overrides: one precedence").
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ptqc.errors import PtqcError
from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.assign_quant_specs import UNIFY_OPS
from ptqc.quant import (QRANGE, DerivedSpec, PlainSpec, QuantParam, SharedSpec, TensorOverride, UnionFind,
                        qparam_from_range)
from ptqc.vocab import Analysis, Meta, Method


class PropagateRanges(Pass):
    """Resolve sharing and compute the parameters of every specced tensor."""

    requires = (Analysis.QUANT_SPECS,)
    produces = (Analysis.QUANT_PARAMS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS,
                 Analysis.QUANT_PARAMS)

    def __init__(self, unify: bool = False, wide_headroom: float = 1.0, widen_for_bias: bool = True):
        self.unify, self.wide_headroom, self.widen = unify, wide_headroom, widen_for_bias

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        groups = share_groups(graph, self.unify)
        observers = ctx.analyses.get(Analysis.OBSERVERS) or {}
        loaded = ctx.analyses.get(Analysis.LOADED_PARAMS)
        overrides = ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {}
        for root, members in groups.items():
            spec = graph.value(root).meta[Meta.QSPEC]
            override = next((overrides[m] for m in members if m in overrides), None)
            if override is not None:
                param = _override_param(graph, members, spec, override, observers, self.wide_headroom)
            elif loaded is not None and (graph.value(root).const is None or root in loaded):
                param = _loaded_group_param(members, loaded)
            else:
                param = group_param(graph, members, spec, observers, self.wide_headroom)
            for m in members:
                if param is None:
                    graph.value(m).meta.pop(Meta.QUANT, None)
                else:
                    graph.value(m).meta[Meta.QUANT] = param
        for v in graph.values():
            spec = v.meta.get(Meta.QSPEC)
            if isinstance(spec, DerivedSpec):
                own = overrides.get(v.name)  # like its weight (type, symmetry; per tensor) unless it says
                like = dataclasses.replace(graph.value(_plain_root(graph, spec.sources[1])).meta[Meta.QSPEC], axis=None)
                param = _bias_param(graph, v.name, spec, self.widen) if own is None else _override_param(
                    graph, [v.name], like, own, observers, 1.0)
                if param is not None:
                    v.meta[Meta.QUANT] = param
        ctx.analyses[Analysis.QUANT_GROUPS] = groups
        return PassResult(graph, False)


def share_groups(graph: Graph, unify: bool) -> dict[str, list[str]]:
    """root -> members for every value with a plain or shared spec."""
    uf = UnionFind()
    for v in graph.values():
        spec = v.meta.get(Meta.QSPEC)
        if isinstance(spec, PlainSpec):
            uf.add(v.name)
        elif isinstance(spec, SharedSpec):
            uf.union(_plain_root(graph, spec.source), v.name)
    if unify:
        for node in graph.topological_order():
            if node.op_type in UNIFY_OPS and node.meta.get(Meta.QUANTIZED):
                members = [x for x in list(node.inputs) + list(node.outputs)
                           if x and isinstance(graph.value(x).meta.get(Meta.QSPEC), (PlainSpec, SharedSpec))
                           and _axis(graph, x) is None]
                for x in members[1:]:
                    uf.union(members[0], x)
    return uf.groups()


def _plain_root(graph: Graph, name: str) -> str:
    spec = graph.value(name).meta.get(Meta.QSPEC)
    while isinstance(spec, SharedSpec):
        name = spec.source
        spec = graph.value(name).meta.get(Meta.QSPEC)
    return name


def _axis(graph: Graph, name: str) -> int | None:
    return getattr(graph.value(_plain_root(graph, name)).meta.get(Meta.QSPEC), "axis", None)


def group_param(graph: Graph, members: list[str], spec: PlainSpec, observers: dict,
                 wide_headroom: float = 1.0) -> QuantParam:
    lo = hi = None
    for m in members:
        r = _member_range(graph, m, spec, observers)
        if r is None:
            continue
        lo = r[0] if lo is None else np.minimum(lo, r[0])
        hi = r[1] if hi is None else np.maximum(hi, r[1])
    if lo is None and observers and all(m in observers for m in members):
        # observed on every batch but always empty (a ConstantOfShape of a zero-length shape):
        # any scale serves, so the zero range's default one is used
        lo = hi = np.float32(0.0)
    if lo is None:
        raise PtqcError(f"tensor {members[0]!r} has no observed range and no loaded one: calibrate it (give data) "
                        "or list it in the scale JSON or quant scheme")
    method = "weight" if graph.value(members[0]).const is not None else next(
        (observers[m].method for m in members if m in observers), Method.MIN_MAX)
    if method != "weight" and np.dtype(spec.dtype).itemsize >= 2:  # headroom for unseen inputs
        lo, hi = (np.asarray(r, np.float32) * np.float32(wide_headroom) for r in (lo, hi))
    return qparam_from_range(lo, hi, spec.dtype, symmetric=spec.symmetric, axis=spec.axis,
                             method=method, name=members[0], reduce_range=spec.reduce_range)


def _member_range(graph: Graph, name: str, spec: PlainSpec, observers: dict):
    v = graph.value(name)
    if v.const is not None:
        w = np.asarray(v.const, np.float32)
        if not np.all(np.isfinite(w)):
            raise PtqcError(f"weight {name!r} contains NaN or Inf")
        if spec.axis is None:
            return (w.min(), w.max()) if w.size else None
        moved = np.moveaxis(w, spec.axis, 0).reshape(w.shape[spec.axis], -1)
        return moved.min(axis=1), moved.max(axis=1)
    obs = observers.get(name)
    if obs is None:
        return None
    method = v.meta.get(Meta.QMETHOD)  # -mc: this tensor's own mode, read from the shared histogram
    if method and method != obs.method and hasattr(obs, "with_method"):
        obs = obs.with_method(method)
    return obs.range(spec.dtype, spec.symmetric)


def _loaded_group_param(members: list[str], loaded: dict[str, QuantParam]) -> QuantParam:
    have = [m for m in members if m in loaded]
    if not have:
        raise PtqcError(f"scale JSON has no entry for tensor {members[0]!r}")
    first = loaded[have[0]]
    for m in have[1:]:
        p = loaded[m]
        if p.dtype != first.dtype or not (np.array_equal(p.scale, first.scale)
                                          and np.array_equal(p.zero_point, first.zero_point)):
            raise PtqcError(f"scale JSON: tensors {have[0]!r} and {m!r} must share one scale and zero "
                            f"point (rule: shared quantization group)")
    return first


def _widen_weight_scale_for_bias(graph: Graph, weight: str, w: QuantParam, x: QuantParam,
                                 bias: np.ndarray) -> QuantParam:
    """A weight channel of near-zero values gets a tiny scale, and the bias of that channel
    then overflows int32 at scale s_x * s_w.  Widen such channels' weight scale until the bias
    fits (their weights are tiny, so nothing is lost), as onnxruntime does."""
    limit = float(QRANGE[np.dtype(np.int32)][1])
    need = np.abs(bias.astype(np.float64)) / (np.asarray(x.scale, np.float64) * limit)
    scale = np.asarray(w.scale, np.float64)
    if w.axis is None:
        need = need.max(initial=0.0)
    if not np.any(need > scale):
        return w
    wider = np.maximum(scale, need * (1 + 1e-6)).astype(np.float32).reshape(np.shape(w.scale))
    new = QuantParam(w.dtype, wider, w.zero_point, w.axis, bits=w.bits, method=w.method, rmin=w.rmin, rmax=w.rmax,
                     symmetric=w.symmetric)
    for v in graph.values():
        if v.meta.get(Meta.QUANT) is w:
            v.meta[Meta.QUANT] = new
    return new


def _override_param(graph: Graph, members: list[str], spec: PlainSpec, o: TensorOverride, observers: dict,
                    wide_headroom: float) -> QuantParam | None:
    if o.is_float:  # float (f16: CastFloat16 rounds it): not quantized
        return None
    per_channel = any(np.ndim(x) for x in (o.lo, o.scale))
    axis = o.axis if o.axis is not None else spec.axis if per_channel or o.lo is None and o.scale is None else None
    dtype = np.dtype(o.dtype if o.dtype is not None else spec.dtype)
    if o.scale is not None:
        return o.fixed_param(dtype, axis)
    spec = dataclasses.replace(spec, dtype=dtype, axis=axis,
                               symmetric=spec.symmetric if o.symmetric is None else o.symmetric,
                               reduce_range=spec.reduce_range if o.reduce_range is None else o.reduce_range)
    if o.lo is None:  # the type or symmetry fixed, the range calibrated (or the constant's own)
        return group_param(graph, members, spec, observers, wide_headroom)
    return qparam_from_range(np.asarray(o.lo, np.float64), np.asarray(o.hi, np.float64), dtype,
                             symmetric=spec.symmetric, axis=axis, method="override", name=members[0],
                             reduce_range=spec.reduce_range)


def _bias_param(graph: Graph, name: str, spec: DerivedSpec, widen: bool = True) -> QuantParam | None:
    x, w = (graph.value(s).meta.get(Meta.QUANT) for s in spec.sources)
    if x is None or w is None:  # its input or weight stays float (an override): so does the bias
        return None
    if widen:  # else (onnxruntime's QDQDisableWeightAdjustForInt32Bias) the bias saturates instead
        w = _widen_weight_scale_for_bias(graph, spec.sources[1], w, x, graph.value(name).const)
    scale = (np.asarray(x.scale, np.float64) * np.asarray(w.scale, np.float64)).astype(np.float32)
    axis = spec.axis if spec.axis is not None or np.ndim(w.scale) == 0 else 0  # an override made w per channel
    if axis is None:
        scale = scale.reshape(())
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    return QuantParam(np.dtype(np.int32), scale, np.zeros(scale.shape, np.int32), axis, bits=32,
                      method="derived", rmin=None, rmax=None, symmetric=True)
