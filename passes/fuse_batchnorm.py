"""FuseBatchNorm: fold inference BatchNormalization into the Conv/ConvTranspose/Gemm feeding it.

y = s * (conv(x) - mean) + beta with s = gamma / sqrt(var + eps) becomes a conv whose
weights are scaled by s along the output channels and whose bias is (b - mean) * s + beta.
A BN that cannot fuse is left alone and the reason is logged (debug) and recorded.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewritePass, RewriteRule, output_channels
from ptqc.vocab import Analysis

_PRODUCERS = ("Conv", "ConvTranspose", "Gemm")


class _FoldBatchNorm(RewriteRule):
    name = "fold_batchnorm"
    anchor = ("BatchNormalization",)

    def match(self, graph: Graph, bn: Node):
        if bn.attrs.get("training_mode", 0):
            return Fail("training_mode=1")
        if any(o and (graph.consumers(o) or o in graph.outputs) for o in bn.outputs[1:]):
            return Fail("its running-statistics outputs are used")
        params = [graph.constant(n) for n in bn.inputs[1:5]]
        if len(params) != 4 or any(p is None for p in params):
            return Fail("scale, B, mean or var is not a constant")
        conv = graph.producer(bn.inputs[0])
        if conv is None or conv.op_type not in _PRODUCERS or conv.domain not in ("", "ai.onnx"):
            return Fail(f"input is not produced by {'/'.join(_PRODUCERS)}")
        out = conv.outputs[0]
        if len(graph.consumers(out)) != 1 or out in graph.outputs or graph.is_captured(out):
            return Fail(f"{conv.op_type} output {out!r} has other consumers")
        weight = graph.constant(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if weight is None or weight.dtype.kind != "f":
            return Fail(f"{conv.op_type} weight is not a float constant")
        bias_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
        bias = graph.constant(bias_name) if bias_name else None
        if bias_name and bias is None:
            return Fail(f"{conv.op_type} bias is not a constant")
        channels = output_channels(conv, weight)
        if channels is None:
            return Fail(f"{conv.op_type} weight layout is not supported (rank {weight.ndim})")
        if any(p.size not in (channels,) for p in params):
            return Fail(f"BN has {params[0].size} channels, {conv.op_type} has {channels}")
        return {"bn": bn, "conv": conv, "weight": weight, "bias": bias, "params": params}

    def rewrite(self, graph: Graph, m) -> None:
        bn, conv, weight = m["bn"], m["conv"], m["weight"]
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in m["params"])
        s = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        new_w = (weight.astype(np.float64) * _channel_view(conv, weight, s)).astype(weight.dtype)
        if conv.op_type == "Gemm":  # alpha*A*B + beta*C: B scales by s, C becomes s*(beta*C - mean) + beta_bn
            c = m["bias"].astype(np.float64) if m["bias"] is not None else np.zeros(1)
            new_b = (conv.attrs.get("beta", 1.0) * c - mean) * s + beta
            new_b = np.broadcast_to(new_b, np.broadcast_shapes(new_b.shape, s.shape)).astype(weight.dtype)
            conv.attrs["beta"] = 1.0
        else:
            b = m["bias"].astype(np.float64) if m["bias"] is not None else np.zeros_like(s)
            new_b = ((b - mean) * s + beta).astype(weight.dtype)
        y = bn.outputs[0]
        base = conv.name or conv.op_type.lower()
        w_name = graph.unique_name(f"{conv.inputs[1]}_bn")
        b_name = graph.unique_name(f"{base}_bias_bn")
        graph.add_constant(w_name, new_w)
        graph.add_constant(b_name, new_b)
        graph.remove_node(bn)
        graph.set_input(conv, 1, w_name)
        graph.set_input(conv, 2, b_name)
        graph.set_output(conv, 0, y)


def _channel_view(conv: Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``s`` shaped to multiply ``w`` along its output-channel axis."""
    if conv.op_type == "Conv":
        return s.reshape((-1,) + (1,) * (w.ndim - 1))
    if conv.op_type == "ConvTranspose":  # [Cin, Cout/g, k...]: channel o = group * Cout/g + j
        g = conv.attrs.get("group", 1)
        per = w.shape[1]
        view = s.reshape(g, 1, per, *(1,) * (w.ndim - 2))
        return np.broadcast_to(view, (g, w.shape[0] // g, per) + w.shape[2:]).reshape(w.shape)
    return s.reshape(-1, 1) if conv.attrs.get("transB", 0) else s.reshape(1, -1)


class FuseBatchNorm(RewritePass):
    """Fold each inference BatchNormalization into the Conv/ConvTranspose/Gemm before it."""

    rules = (_FoldBatchNorm(),)
    preserves = (Analysis.SHAPES,)
