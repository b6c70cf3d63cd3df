"""QDQToQOperator: onnxruntime's QOperator format from a QDQ graph (``quant_format=QOperator``).

Every ``DequantizeLinear -> op -> QuantizeLinear`` group that onnxruntime has one integer op
for becomes that op, reading the codes and writing the codes, with the same scales and zero
points (so the two formats agree within a rounding step):

    Conv -> QLinearConv, MatMul -> QLinearMatMul, Gemm -> QGemm (com.microsoft),
    Add/Mul -> QLinearAdd/QLinearMul, Sigmoid -> QLinearSigmoid, LeakyRelu -> QLinearLeakyRelu,
    GlobalAveragePool -> QLinearGlobalAveragePool, AveragePool -> QLinearAveragePool,
    Concat -> QLinearConcat (the last six com.microsoft).

A group qualifies when every float input the op reads comes from a DequantizeLinear (a Conv's
or Gemm's bias from one of int32 codes), its activations are per tensor, and its output's only
reader is a QuantizeLinear; a Relu or Clip between the op and that QuantizeLinear is absorbed
when the QuantizeLinear's codes cannot leave its range (saturation does its work), as
onnxruntime's quantizer does.
Everything else keeps its Q/DQ, as onnxruntime's QOperator models do for ops without an
integer kernel.  DequantizeLinears left unread are removed.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult

MS = "com.microsoft"
# op -> (integer op, domain, which inputs are quantized activations/weights, bias input or None)
_OPS = {"Conv": ("QLinearConv", "", (0, 1), 2), "MatMul": ("QLinearMatMul", "", (0, 1), None),
        "Gemm": ("QGemm", MS, (0, 1), 2), "Add": ("QLinearAdd", MS, (0, 1), None),
        "Mul": ("QLinearMul", MS, (0, 1), None), "Sigmoid": ("QLinearSigmoid", MS, (0,), None),
        "LeakyRelu": ("QLinearLeakyRelu", MS, (0,), None),
        "GlobalAveragePool": ("QLinearGlobalAveragePool", MS, (0,), None),
        "AveragePool": ("QLinearAveragePool", MS, (0,), None), "Concat": ("QLinearConcat", MS, None, None)}


class QDQToQOperator(Pass):
    """Fold DequantizeLinear -> op -> QuantizeLinear groups into onnxruntime's QLinear ops."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        count = 0
        for node in graph.topological_order():
            if node.op_type in _OPS and not node.domain and graph.has_node(node.id):
                count += self._fold(graph, node)
        for node in list(graph.nodes()):
            if node.op_type == "DequantizeLinear" and not graph.consumers(node.outputs[0]) \
                    and node.outputs[0] not in graph.outputs:
                graph.remove_node(node)
        if count:
            graph.info.opset_imports.setdefault(MS, 1)
        ctx.logger.info("QOperator: %d ops folded into integer ops", count)
        return PassResult(graph, count > 0)

    def _fold(self, graph: Graph, node: Node) -> int:
        qop, domain, quantized, bias = _OPS[node.op_type]
        slots = range(len(node.inputs)) if quantized is None else quantized
        dqs = [_dq(graph, node.inputs[i]) for i in slots]
        tail = _tail(graph, node)
        if any(d is None for d in dqs) or tail is None:
            return 0
        relu, q = tail
        weight = 1 if node.op_type in ("Conv", "Gemm", "MatMul") else None  # per channel allowed there only
        if any(not _per_tensor(graph, d) for i, d in enumerate(dqs) if i != weight) \
                or not all(_eight_bit(graph, d.inputs[2] if len(d.inputs) > 2 else "") for d in dqs) \
                or not _eight_bit(graph, q.inputs[2] if len(q.inputs) > 2 else "") \
                or (relu is not None and not _implied(graph, relu, q)) \
                or (node.op_type == "Gemm" and float(node.attrs.get("beta", 1.0)) != 1.0) \
                or (weight is None and len({_zp_type(graph, n) for n in (*dqs, q)}) > 1):
            return 0  # (the elementwise QLinear ops take one code type for all their inputs and output)
        b = None
        if bias is not None and len(node.inputs) > bias and node.inputs[bias]:
            bdq = _dq(graph, node.inputs[bias])
            if bdq is None or graph.value(bdq.inputs[0]).dtype != np.int32:
                return 0
            b = bdq.inputs[0]
        y = list(q.inputs[1:3]) + ([""] if len(q.inputs) < 3 else [])
        if node.op_type == "Concat":
            inputs = y + [x for d in dqs for x in _triple(d)]
        elif node.op_type == "Gemm":
            inputs = [*_triple(dqs[0]), *_triple(dqs[1]), b or "", *y]
        else:
            inputs = [x for d in dqs for x in _triple(d)] + y + ([b] if b else [])
        attrs = dict(node.attrs)
        if node.op_type == "Gemm":
            attrs.pop("beta", None)
        out = q.outputs[0]
        for n in ([q] + ([relu] if relu is not None else []) + [node]):
            graph.remove_node(n)
        graph.add_node(qop, inputs, [out], attrs, name=graph.unique_name(f"{node.name or node.op_type}_quant"),
                       domain=domain)
        return 1


def _dq(graph: Graph, name: str) -> Node | None:
    p = graph.producer(name) if name else None
    return p if p is not None and p.op_type == "DequantizeLinear" else None


def _triple(dq: Node) -> list[str]:
    return [dq.inputs[0], dq.inputs[1], dq.inputs[2] if len(dq.inputs) > 2 else ""]


def _tail(graph: Graph, node: Node) -> tuple[Node | None, Node] | None:
    """(a Relu/Clip or None, the QuantizeLinear) that alone read ``node``'s output."""
    out = node.outputs[0]
    readers = graph.consumer_nodes(out)
    if out in graph.outputs or len(readers) != 1:
        return None
    relu = readers[0] if readers[0].op_type in ("Relu", "Clip") else None
    if relu is not None:
        readers = graph.consumer_nodes(relu.outputs[0])
        if relu.outputs[0] in graph.outputs or len(readers) != 1:
            return None
    q = readers[0]
    return (relu, q) if q.op_type == "QuantizeLinear" and not q.attrs.get("axis") else None


def _per_tensor(graph: Graph, dq: Node) -> bool:
    scale = graph.constant(dq.inputs[1])
    return scale is not None and np.size(scale) == 1


def _eight_bit(graph: Graph, zp: str) -> bool:
    """An 8-bit zero point (onnxruntime's QLinear ops take int8/uint8 codes only)."""
    value = graph.constant(zp) if zp else None
    return value is not None and np.asarray(value).dtype.itemsize == 1


def _zp_type(graph: Graph, qdq: Node) -> np.dtype | None:
    zp = graph.constant(qdq.inputs[2]) if len(qdq.inputs) > 2 else None
    return None if zp is None else np.asarray(zp).dtype


def _implied(graph: Graph, act: Node, q: Node) -> bool:
    """True when ``q``'s codes cannot leave the Relu's / Clip's range (saturation does its work)."""
    scale, zp = graph.constant(q.inputs[1]), graph.constant(q.inputs[2]) if len(q.inputs) > 2 else np.uint8(0)
    if scale is None or zp is None:
        return False
    info = np.iinfo(np.asarray(zp).dtype)
    z, s = float(np.asarray(zp).ravel()[0]), float(np.asarray(scale).ravel()[0])
    lo, hi = ((c - z) * s for c in (info.min, info.max))
    if act.op_type == "Relu":
        return lo >= 0.0
    bounds = [graph.constant(x) if x else None for x in (list(act.inputs[1:3]) + ["", ""])[:2]]
    if len(act.inputs) == 1 and ("min" in act.attrs or "max" in act.attrs):  # Clip before opset 11
        bounds = [act.attrs.get("min"), act.attrs.get("max")]
    low = -np.inf if bounds[0] is None else float(np.asarray(bounds[0]))
    high = np.inf if bounds[1] is None else float(np.asarray(bounds[1]))
    return lo >= low - 1e-6 and hi <= high + 1e-6
