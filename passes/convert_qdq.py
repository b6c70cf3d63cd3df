"""ConvertQDQ: onnxruntime's TensorQuantOverrides ``convert``: a tensor quantized in one type is
requantized to another for some of its consumers (mixed precision at a boundary: an 8-bit
producer feeding a 16-bit consumer), as onnxruntime writes it::

    every consumer converted:  producer -> Q1 -> DQ1 -> Q2 -> DQ2 -> consumers (and graph output)
    some of them (recv_nodes): producer -> Q1 -> DQ1 -> the others (and graph output)
                                           Q1 -> DQ1' -> Q2 -> DQ2 -> the named consumers

The converted parameters come from the range the first pair was computed from
(``QuantParam.rmin/rmax``) in the new type, or are the override's own scale and zero point;
their constants are named ``<tensor>_scale_convert`` / ``<tensor>_zero_point_convert``.  Runs
after InsertQDQ, reading its ``activation_qdq`` record and the ``range_overrides``.
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.insert_qdq import MS_DOMAIN
from ptqc.quant import QuantParam, TensorOverride, qparam_from_range, type_bits
from ptqc.vocab import Analysis


class ConvertQDQ(Pass):
    """A second Q/DQ pair, in the ``convert`` type, for every tensor whose override has one."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        overrides = ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {}
        done = ctx.analyses.get(Analysis.ACTIVATION_QDQ) or {}
        count = 0
        for name in sorted(n for n, o in overrides.items() if o.convert is not None):
            if name not in done:
                ctx.logger.warning("TensorQuantOverrides: %r has a 'convert' but ptqc leaves it float (no quantized "
                                   "op reads or writes it): not converted", name)
                continue
            _, dq, first = done[name]
            _convert(graph, name, dq, converted(first, overrides[name].convert), overrides[name].convert_nodes)
            count += 1
        return PassResult(graph, count > 0)


def converted(first: QuantParam, o: TensorOverride) -> QuantParam:
    """The second pair's parameters: the override's own, or the first pair's range in its type."""
    dtype = np.dtype(o.dtype if o.dtype is not None else first.dtype)
    if o.scale is not None:
        return o.fixed_param(dtype, None)
    symmetric = first.symmetric if o.symmetric is None else o.symmetric
    return qparam_from_range(np.asarray(first.rmin, np.float64), np.asarray(first.rmax, np.float64), dtype,
                             symmetric=symmetric, method="override", name="convert")


def _convert(graph: Graph, name: str, dq: str, p: QuantParam, recv: frozenset[str] | None) -> None:
    first_dq = graph.producer(dq)
    readers = [(n, i) for n, i in graph.consumers(dq) if recv is None or n.name in recv]
    if recv is not None and not readers:
        return
    scale = graph.add_constant(graph.fresh_name(f"{name}_scale_convert"), np.asarray(p.scale, np.float32)).name
    zp = graph.add_constant(graph.fresh_name(f"{name}_zero_point_convert"),
                            np.asarray(p.zero_point).astype(p.dtype)).name
    domain = MS_DOMAIN if type_bits(p.dtype) in (4, 16) and graph.opset < 21 else first_dq.domain
    if domain:
        graph.info.opset_imports.setdefault(domain, 1)
    source = dq
    if recv is not None:  # the others keep the first pair: the converted chain gets a DQ of its own
        source = graph.unique_name(f"{name}_dequantized")
        graph.add_node("DequantizeLinear", list(first_dq.inputs), [source], dict(first_dq.attrs),
                       name=graph.unique_name(f"{name}_DequantizeLinear"), domain=first_dq.domain)
    elif dq in graph.outputs:  # the graph output takes the converted value, under its name
        source = graph.unique_name(f"{name}_dequantized")
        graph.set_output(first_dq, 0, source)
    q2, dq2 = graph.unique_name(f"{name}_quantized_convert"), graph.unique_name(f"{name}_dequantized_convert")
    if recv is None and dq in graph.outputs:
        dq2 = dq
    for node, idx in (graph.consumers(source) if recv is None else readers):
        graph.set_input(node, idx, dq2)
    graph.add_node("QuantizeLinear", [source, scale, zp], [q2], name=graph.unique_name(f"{name}_QuantizeLinear"),
                   domain=domain)
    graph.add_node("DequantizeLinear", [q2, scale, zp], [dq2], name=graph.unique_name(f"{name}_DequantizeLinear"),
                   domain=domain)
    like = graph.value(dq) if graph.has_value(dq) else graph.value(source)
    for out, elem in ((source, onnx.TensorProto.FLOAT), (q2, onnx.helper.np_dtype_to_tensor_dtype(p.dtype)),
                      (dq2, onnx.TensorProto.FLOAT)):
        v = graph.value(out)
        v.elem_type, v.shape = elem, like.shape
