"""FuseBiasAdd: fold ``Add(conv(x), c)`` with a per-channel constant ``c`` into the conv's bias.

Exporters (paddle2onnx among them) often emit a bias-less Conv/ConvTranspose followed by an
Add of a constant; folding it gives one op to quantize (bias int32 derived from the
input and weight scales, not a separate requantized Add) and lets FuseBatchNorm reach a
BatchNormalization that follows the Add.  Gemm takes the constant into C.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewritePass, RewriteRule, channel_vector, output_channels
from ptqc.vocab import Analysis


class _FoldAddIntoBias(RewriteRule):
    name = "fold_add_into_bias"
    anchor = ("Add",)

    def match(self, graph: Graph, add: Node):
        found = match_conv_then_constant(graph, add)
        if isinstance(found, Fail):
            return found
        conv, const, weight, bias = found
        vector = per_output_channel(conv, weight, const)
        if vector is None:
            return Fail(f"constant of shape {const.shape} is not per output channel of {conv.op_type}")
        return {"add": add, "conv": conv, "bias": bias, "vector": vector, "dtype": weight.dtype}

    def rewrite(self, graph: Graph, m) -> None:
        add, conv, bias, vector = m["add"], m["conv"], m["bias"], m["vector"]
        if conv.op_type == "Gemm":
            c = bias.astype(np.float64) * conv.attrs.get("beta", 1.0) if bias is not None else 0.0
            new_b = c + vector.astype(np.float64)
            conv.attrs["beta"] = 1.0
        else:
            new_b = (bias.astype(np.float64) if bias is not None else 0.0) + vector.astype(np.float64)
        name = graph.unique_name(f"{conv.name or conv.op_type.lower()}_bias_add")
        graph.add_constant(name, np.asarray(new_b, dtype=m["dtype"]))
        y = add.outputs[0]
        graph.remove_node(add)
        graph.set_input(conv, 2, name)
        graph.set_output(conv, 0, y)


def match_conv_then_constant(graph: Graph, node: Node):
    """``node(conv(x), c)`` with a constant ``c``, where the conv's output feeds only ``node``
    and its weight (and bias, if any) are constants: (conv, c, weight, bias), or a Fail."""
    for side in (0, 1):
        conv = graph.producer(node.inputs[side])
        const = graph.constant(node.inputs[1 - side])
        if conv is not None and const is not None and conv.op_type in ("Conv", "ConvTranspose", "Gemm"):
            break
    else:
        return Fail(f"not {node.op_type}(Conv/ConvTranspose/Gemm, constant)")
    if conv.domain not in ("", "ai.onnx"):
        return Fail(f"{conv.op_type} is not in the default domain")
    out = conv.outputs[0]
    if len(graph.consumers(out)) != 1 or out in graph.outputs or graph.is_captured(out):
        return Fail(f"{conv.op_type} output {out!r} has other consumers")
    weight = graph.constant(conv.inputs[1]) if len(conv.inputs) > 1 and conv.inputs[1] else None
    if weight is None or weight.dtype.kind != "f" or const.dtype != weight.dtype:
        return Fail(f"{conv.op_type} weight is not a constant of the {node.op_type}'s dtype")
    bias_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
    bias = graph.constant(bias_name) if bias_name else None
    if bias_name and bias is None:
        return Fail(f"{conv.op_type} bias is not a constant")
    return conv, const, weight, bias


def per_output_channel(conv: Node, w: np.ndarray, c: np.ndarray) -> np.ndarray | None:
    """``c`` (after Conv/ConvTranspose/Gemm) as one value per output channel, or None if it
    varies along other axes."""
    n = output_channels(conv, w)
    if n is None:
        return None
    if conv.op_type == "Gemm":
        if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or (c.ndim and c.shape[-1] not in (1, n)):
            return None
        return np.broadcast_to(c.reshape(-1), (n,)).copy()
    return channel_vector(c, n, w.ndim)  # the output's rank is the weight's: N, C, spatial...


class FuseBiasAdd(RewritePass):
    """Fold an Add of a per-channel constant after Conv/ConvTranspose/Gemm into its bias."""

    rules = (_FoldAddIntoBias(),)
    preserves = (Analysis.SHAPES,)
