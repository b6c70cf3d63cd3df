"""ReadQDQ: a model that is already quantized (QAT, onnxruntime's quantizer) is read as
quantized, never quantized twice.

Its Q/DQ nodes come out, leaving the float model they describe:

* a DequantizeLinear of an integer constant (a weight, a bias) becomes the float constant
  it dequantizes to (per tensor, per axis or block-wise); requantized later with the same
  scale, a symmetric weight gets its codes back;
* a QuantizeLinear -> DequantizeLinear pair on a float weight (onnxruntime's
  AddQDQPairToWeight) is removed and the weight's parameters kept the same way;
* a QuantizeLinear -> DequantizeLinear pair on an activation is removed and the activation's
  (type, scale, zero point) kept in ``ctx.analyses["qdq_params"]`` (tensor -> QuantParam),
  which :class:`FitQDQParams` turns into the run's parameters once the specs say what the
  chip needs.  A graph output keeps its name.  A pair whose range starts at 0 clamps, and
  onnxruntime's quantizer drops the Relu it stands for, so a Relu takes its place (unless
  the producer never goes negative).

What such a pair cannot describe is refused in one line naming the node: a Q not read by a
DQ with the same parameters, an integer model input (a DQ with no Q before it), per-axis
activation parameters, float8 and int4 activations.
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.errors import ModelError
from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.propagate_ranges import share_groups
from ptqc.quant import FLOAT_OVERRIDE, QRANGE, PlainSpec, QuantParam, TensorOverride
from ptqc.runtime import reference
from ptqc.vocab import Analysis, Meta

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# ops whose output is never negative: a Q range starting at 0 after them clamps nothing
NON_NEGATIVE = ("Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp", "Sqrt")
MOVES = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather")
_TYPES = set(QRANGE)  # int8/uint8/int16/uint16, int32 biases


def is_qdq_model(graph: Graph) -> bool:
    """Whether the graph holds Q/DQ nodes (onnx or com.microsoft)."""
    return any(n.op_type in QDQ_OPS for n in graph.nodes())


def weights_only(graph: Graph) -> bool:
    """Whether its only Q/DQ nodes dequantize constants (prequantized weights, float
    activations): its activations are to be calibrated, its weights keep their parameters."""
    qdq = [n for n in graph.nodes() if n.op_type in QDQ_OPS]
    return bool(qdq) and all(n.op_type == "DequantizeLinear" and graph.constant(n.inputs[0]) is not None
                             for n in qdq)


class ReadQDQ(Pass):
    """Take a QDQ model's Q/DQ nodes out, keeping the activations' parameters."""

    name = "read_qdq"
    produces = (Analysis.QDQ_PARAMS, Analysis.QDQ_WEIGHT_PARAMS, Analysis.QDQ_FLOAT_CONSTANTS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        params: dict[str, QuantParam] = {}
        constants: dict[str, QuantParam] = {}
        weights = 0
        for node in list(graph.topological_order()):
            if not graph.has_node(node.id):
                continue
            if node.op_type == "DequantizeLinear" and graph.value(node.inputs[0]).const is not None:
                name, param = _fold_constant_dq(graph, node)
                if param is not None:
                    constants[name] = param
                weights += 1
            elif node.op_type == "QuantizeLinear":
                name, param = _remove_pair(graph, node)
                if graph.value(name).const is not None:  # a float weight quantized in the graph
                    constants[name] = param
                    weights += 1
                else:
                    params[name] = param
            elif node.op_type == "DequantizeLinear":
                raise ModelError(f"node {_label(node)}: DequantizeLinear of {node.inputs[0]!r}, which no "
                                 "QuantizeLinear produces (an integer model input): not built yet")
        ctx.analyses[Analysis.QDQ_PARAMS] = params
        ctx.analyses[Analysis.QDQ_WEIGHT_PARAMS] = constants
        # float constants the input model's ops read as they are (not through a DQ): they stay float
        ctx.analyses[Analysis.QDQ_FLOAT_CONSTANTS] = frozenset(
            v.name for v in graph.values() if v.const is not None and v.name not in constants
            and np.asarray(v.const).dtype.kind == "f") if params or weights else frozenset()
        if params or weights:
            ctx.logger.info("read the input model as quantized: %d activation Q/DQ pairs (their parameters kept), "
                            "%d quantized constants dequantized", len(params), weights)
        return PassResult(graph, bool(params or weights))


def _label(node: Node) -> str:
    return repr(node.name or node.outputs[0])


def _qparams(graph: Graph, node: Node) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """(scale, zero point, quantized type) of a Q or DQ whose scale and zero point are constants."""
    scale = graph.constant(node.inputs[1])
    zp = graph.constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if scale is None or (len(node.inputs) > 2 and node.inputs[2] and zp is None):
        raise ModelError(f"node {_label(node)} ({node.op_type}): scale and zero point must be constants")
    if zp is not None:
        dtype = np.dtype(zp.dtype)
    elif node.op_type == "DequantizeLinear":
        dtype = np.dtype(graph.value(node.inputs[0]).dtype or np.uint8)
    else:
        dtype = _output_dtype(node)
    if dtype not in _TYPES:
        raise ModelError(f"node {_label(node)} ({node.op_type}): quantized type {dtype} is not supported in an "
                         "input QDQ model (int8/uint8/int16/uint16, int32 biases)")
    zp = np.zeros(np.shape(scale), dtype) if zp is None else zp
    return np.asarray(scale, np.float32), np.asarray(zp), dtype


def _output_dtype(node: Node) -> np.dtype:
    to = node.attrs.get("output_dtype", onnx.TensorProto.UINT8)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))


def _fold_constant_dq(graph: Graph, node: Node) -> tuple[str, QuantParam | None]:
    """DQ(integer constant) -> the float constant, under the DQ output's name; its parameters
    (None for int32 biases, derived from their inputs', and block-wise ones)."""
    scale, zp, dtype = _qparams(graph, node)
    q = np.asarray(graph.constant(node.inputs[0]))
    if q.dtype not in _TYPES:
        raise ModelError(f"node {_label(node)} (DequantizeLinear): constant of type {q.dtype} is not supported "
                         "in an input QDQ model (int8/uint8/int16/uint16/int32)")
    axis = int(node.attrs.get("axis", 1)) % max(q.ndim, 1)
    block = int(node.attrs.get("block_size", 0))
    one = scale.size == 1  # a [1] scale is per tensor (as onnxruntime reads it), whatever the rank
    value = reference.run_node("DequantizeLinear", [q, scale.reshape(()) if one else scale,
                                                    (zp.reshape(()) if one else zp).astype(q.dtype)],
                               node.attrs, opset=graph.opset, name=node.name)[0]
    value = value.astype(np.asarray(graph.constant(node.inputs[1])).dtype)  # the DQ's own output type (float16...)
    out = node.outputs[0]
    if out in graph.outputs:
        raise ModelError(f"node {_label(node)}: a dequantized constant is a graph output; not built yet")
    graph.remove_node(node)
    graph.add_constant(out, value)
    if dtype == np.int32 or block:
        return out, None
    per_axis = scale.size > 1
    return out, QuantParam(dtype, scale.reshape(-1) if per_axis else scale.reshape(()),
                           zp.reshape(-1).astype(dtype) if per_axis else zp.reshape(()).astype(dtype),
                           axis if per_axis else None, bits=dtype.itemsize * 8, method="qdq",
                           symmetric=dtype.kind == "i" and bool(np.all(zp == 0)))


def _never_negative(graph: Graph, x: str) -> bool:
    """``x`` comes from an op that never goes negative, through data-movement ops."""
    producer = graph.producer(x)
    while producer is not None and producer.op_type in MOVES:
        producer = graph.producer(producer.inputs[0])
    return producer is not None and producer.op_type in NON_NEGATIVE


def _remove_pair(graph: Graph, q: Node) -> tuple[str, QuantParam | None]:
    """Remove ``q`` and the DQs reading it; the activation's name (the graph output's where a
    DQ wrote one) and its parameters (per axis allowed for a constant: a weight the graph
    quantizes, whose float data stays)."""
    scale, zp, dtype = _qparams(graph, q)
    x, y = q.inputs[0], q.outputs[0]
    weight = graph.value(x).const is not None
    if scale.size != 1 and not weight:
        raise ModelError(f"node {_label(q)} (QuantizeLinear): per-axis activation parameters are not supported")
    readers = graph.consumer_nodes(y)
    for dq in readers:
        if dq.op_type != "DequantizeLinear":
            raise ModelError(f"node {_label(q)}: its quantized output is read by {dq.op_type} {_label(dq)}, not by a "
                             "DequantizeLinear: not a QDQ model ptqc can read")
        s2, z2, t2 = _qparams(graph, dq)
        if t2 != dtype or not np.array_equal(s2, scale) or not np.array_equal(z2.astype(np.int64), zp.astype(np.int64)):
            raise ModelError(f"node {_label(dq)} (DequantizeLinear): its scale and zero point differ from those of "
                             f"QuantizeLinear {_label(q)}")
    keep = [o for o in [y, *(dq.outputs[0] for dq in readers)] if o in graph.outputs]
    if len(keep) > 1:
        raise ModelError(f"node {_label(q)}: both its quantized and dequantized outputs are graph outputs")
    # a range starting at 0 clamps: onnxruntime's quantizer drops a Relu (Clip) there and
    # lets the Q do its work, so the float model gets it back
    producer = graph.producer(x)
    clamp = not weight and int(zp) == QRANGE[dtype][0] and producer is not None and not _never_negative(graph, x)
    name = keep[0] if keep else graph.unique_name(f"{x}_clamped") if clamp else x
    for dq in readers:
        out = dq.outputs[0]
        graph.remove_node(dq)
        if out != name:
            graph.replace_all_uses(out, name)
    graph.remove_node(q)
    if clamp:
        graph.add_node("Relu", [x], [name], name=graph.unique_name(f"{x}_Relu"))
    elif name != x:  # the graph output keeps its name: x's producer now writes it
        if producer is None or x in graph.outputs or graph.is_captured(x):
            raise ModelError(f"node {_label(q)}: the graph output {name!r} quantizes a model input or another "
                             "output; not built yet")
        graph.replace_all_uses(x, name)
        graph.set_output(producer, list(producer.outputs).index(x), name)
    per_axis = scale.size > 1
    axis = int(q.attrs.get("axis", 1)) % max(np.ndim(graph.value(x).const), 1) if per_axis else None
    param = QuantParam(dtype, scale.reshape(-1) if per_axis else scale.reshape(()),
                       zp.reshape(-1).astype(dtype) if per_axis else zp.reshape(()).astype(dtype), axis,
                       bits=dtype.itemsize * 8, method="qdq-float" if weight else "qdq",
                       symmetric=dtype.kind == "i" and bool(np.all(zp == 0)))
    return name, param


class FitQDQParams(Pass):
    """The input model's activation parameters (``qdq_params``, from ReadQDQ) as the run's,
    after the specs: a sharing group whose members carry one parameter set of the type and
    symmetry the chip's spec asks for keeps it exactly (``loaded_params``); any other is refit
    to the chip's type over the range the input's parameters cover (the union over the
    group's members), and the change is logged per tensor with its rule; a group the input
    model left float stays float (``range_overrides``)."""

    name = "fit_qdq_params"
    requires = (Analysis.QUANT_SPECS,)

    def __init__(self, unify: bool = False, weights_only: bool = False):
        self.unify, self.weights_only = unify, weights_only  # weights only: the activations calibrate

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.weights_only:
            return self._weights(graph, ctx)
        qdq = ctx.analyses.get(Analysis.QDQ_PARAMS) or {}
        loaded, overrides, floats = {}, {}, []
        weights = ctx.analyses.get(Analysis.QDQ_WEIGHT_PARAMS) or {}
        float_constants = ctx.analyses.get(Analysis.QDQ_FLOAT_CONSTANTS) or frozenset()
        kept = 0
        for root, members in share_groups(graph, self.unify).items():
            if graph.value(root).const is not None and root in float_constants:
                overrides.update({m: FLOAT_OVERRIDE for m in members})
                floats.append(root)
                continue
            if graph.value(root).const is not None:
                param = _fitting_weight(graph.value(root).const, weights.get(root), graph.value(root).meta[Meta.QSPEC])
                if param is not None:
                    loaded[root] = param
                    kept += 1
                continue
            spec = graph.value(root).meta[Meta.QSPEC]
            have = [qdq[m] for m in members if m in qdq]
            if not have:
                overrides.update({m: FLOAT_OVERRIDE for m in members})
                floats.append(root)
                continue
            first = have[0]
            agree = all(p.dtype == first.dtype and np.array_equal(p.scale, first.scale)
                        and np.array_equal(p.zero_point, first.zero_point) for p in have)
            fits = first.dtype == spec.dtype and (not spec.symmetric or bool(np.all(first.zero_point == 0)))
            if agree and fits:
                loaded.update({m: first for m in members})
                continue
            lo = min(float((QRANGE[p.dtype][0] - p.zero_point.astype(np.int64)) * p.scale) for p in have)
            hi = max(float((QRANGE[p.dtype][1] - p.zero_point.astype(np.int64)) * p.scale) for p in have)
            overrides.update({m: TensorOverride(np.dtype(spec.dtype), lo, hi) for m in members})
            why = ("its members' parameters differ (rule: one scale per sharing group)" if not agree else
                   f"the chip takes {np.dtype(spec.dtype)}{' symmetric' if spec.symmetric else ''} here")
            ctx.logger.warning("quantized input model: tensor %r: %s scale %.6g zero point %d refit to %s over "
                               "[%.6g, %.6g]: %s", root, first.dtype, float(first.scale), int(first.zero_point),
                               np.dtype(spec.dtype), lo, hi, why)
        if weights:
            ctx.logger.info("quantized input model: %d of its %d quantized weights keep their scales (the others "
                            "are requantized from their values: the chip's type or axis differs, or a fusion "
                            "changed them)", kept, len(weights))
        if floats:
            ctx.logger.info("quantized input model: %d tensors (constants included) the chip would quantize are "
                            "float in it and stay float (first: %s)", len(floats),
                            ", ".join(repr(f) for f in floats[:3]))
        unused = sorted(set(qdq) - {m for m in loaded} - set(overrides))
        if unused:
            ctx.logger.info("quantized input model: %d of its quantized tensors are not quantized here (fused away, "
                            "or only float ops read them): %s",
                            len(unused), ", ".join(repr(u) for u in unused[:3]))
        ctx.analyses[Analysis.LOADED_PARAMS] = loaded
        ctx.analyses[Analysis.RANGE_OVERRIDES] = {**(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {}), **overrides}
        return PassResult(graph, False)


    def _weights(self, graph: Graph, ctx: PassContext) -> PassResult:
        """Prequantized weights only: each fitting weight's parameters as an override (what
        PropagateRanges gives its group), the others requantized from their values."""
        weights = ctx.analyses.get(Analysis.QDQ_WEIGHT_PARAMS) or {}
        overrides = dict(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {})
        for name, param in weights.items():
            v = graph.value(name) if graph.has_value(name) else None
            spec = v.meta.get(Meta.QSPEC) if v is not None and v.const is not None else None
            fit = _fitting_weight(v.const, param, spec) if isinstance(spec, PlainSpec) else None
            if fit is not None:
                overrides[name] = TensorOverride(np.dtype(fit.dtype), scale=fit.scale, zero_point=fit.zero_point,
                                                 axis=fit.axis)
        kept = sum(n in overrides for n in weights)
        ctx.logger.info("prequantized weights: %d of %d keep their parameters (the others are requantized from "
                        "their values: the type or axis differs, or a fusion changed them)", kept, len(weights))
        ctx.analyses[Analysis.RANGE_OVERRIDES] = overrides
        return PassResult(graph, False)


def _fitting_weight(data: np.ndarray, param: QuantParam | None, spec) -> QuantParam | None:
    """The input model's parameters of a weight, on the spec's axis, where they fit the spec
    and still quantize its data as the input model did: a dequantized weight exactly (a
    fusion such as BatchNorm folding changes it), a float one (quantized by a Q in the graph,
    method ``qdq-float``) within the type's range."""
    if param is None or param.dtype != spec.dtype or (spec.symmetric and not np.all(param.zero_point == 0)):
        return None
    if param.axis is not None and param.axis != spec.axis:
        return None
    if param.axis is None and spec.axis is not None:  # per tensor: the same scale on every channel
        n = data.shape[spec.axis]
        param = QuantParam(param.dtype, np.full(n, param.scale, np.float32), np.full(n, param.zero_point, param.dtype),
                           spec.axis, bits=param.bits, method=param.method, symmetric=param.symmetric)
    codes = data.astype(np.float64) / param._view(np.asarray(param.scale, np.float64), data.ndim)
    codes += param._view(param.zero_point.astype(np.float64), data.ndim)
    lo, hi = QRANGE[np.dtype(param.dtype)]
    nearest = np.rint(codes)
    on_grid = param.method == "qdq-float" or np.allclose(codes, nearest, rtol=0, atol=1e-3)  # float data: Q rounds it
    if not on_grid or nearest.min(initial=0) < lo or nearest.max(initial=0) > hi:
        return None
    return param
