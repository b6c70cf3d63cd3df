"""FuseConvScale: fold ``Mul(conv(x), c)`` with a per-output-channel constant ``c`` into the
conv's weights and bias.

Exporters emit such scales (paddle2onnx's learnable affine blocks: Conv -> Mul -> Add); folded,
the Conv is one op to quantize instead of three requantized ones.  Runs before FuseBiasAdd,
which then takes the Add.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewritePass, RewriteRule
from ptqc.passes.fuse_bias_add import match_conv_then_constant, per_output_channel
from ptqc.vocab import Analysis


class _FoldMulIntoWeights(RewriteRule):
    name = "fold_mul_into_weights"
    anchor = ("Mul",)

    def match(self, graph: Graph, mul: Node):
        found = match_conv_then_constant(graph, mul)
        if isinstance(found, Fail):
            return found
        conv, const, weight, bias = found
        if len(graph.consumers(conv.inputs[1])) != 1:
            return Fail(f"{conv.op_type} weight is shared with other ops")
        vector = per_output_channel(conv, weight, const)
        if vector is None:
            return Fail(f"constant of shape {const.shape} is not per output channel of {conv.op_type}")
        if conv.op_type == "ConvTranspose" and conv.attrs.get("group", 1) != 1 and np.unique(vector).size > 1:
            return Fail("per-channel scale of a grouped ConvTranspose")
        return {"mul": mul, "conv": conv, "weight": weight, "bias": bias, "vector": vector.astype(np.float64)}

    def rewrite(self, graph: Graph, m) -> None:
        mul, conv, w, b, c = m["mul"], m["conv"], m["weight"], m["bias"], m["vector"]
        if conv.op_type == "Conv":
            w2 = w * c.reshape((-1,) + (1,) * (w.ndim - 1))
        elif conv.op_type == "ConvTranspose":
            w2 = w * (c[: w.shape[1]].reshape((1, -1) + (1,) * (w.ndim - 2)))
        else:  # Gemm: output features along axis 0 of B^T
            w2 = w * (c.reshape(-1, 1) if conv.attrs.get("transB", 0) else c.reshape(1, -1))
        dtype = w.dtype
        wname = graph.unique_name(f"{conv.inputs[1]}_scaled")
        graph.add_constant(wname, np.asarray(w2, dtype))
        graph.set_input(conv, 1, wname)
        if b is not None:
            bname = graph.unique_name(f"{conv.inputs[2]}_scaled")
            graph.add_constant(bname, np.asarray(b.astype(np.float64) * c, dtype))
            graph.set_input(conv, 2, bname)
        y = mul.outputs[0]
        graph.remove_node(mul)
        graph.set_output(conv, 0, y)


class FuseConvScale(RewritePass):
    """Fold a Mul by a per-channel constant after Conv/ConvTranspose/Gemm into its weights."""

    rules = (_FoldMulIntoWeights(),)
    preserves = (Analysis.SHAPES,)
