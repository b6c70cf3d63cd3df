"""FuseHardSwish: recognise the decomposed hard-swish exporters emit and make it one
``HardSwish`` op (opset 14), which quantizes as one activation (and fuses with the Conv
before it) instead of four requantized ops.

    Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)      (paddle2onnx, older torch exports)
    Mul(Mul(x, Clip(Add(x, 3), 0, 6)), 1/6)
    Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5))
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewritePass, RewriteRule, producer_op, scalar_constant, single_use
from ptqc.vocab import Analysis


def _clip_branch(graph: Graph, mul: Node) -> tuple[str, list[Node]] | Fail:
    """``Mul(x, Clip(Add(x, 3), 0, 6))`` -> (x, [clip, add])."""
    for side in (0, 1):
        clip = producer_op(graph, mul.inputs[side], "Clip")
        if clip is None:
            continue
        x = mul.inputs[1 - side]
        lo = scalar_constant(graph, clip.inputs[1]) if len(clip.inputs) > 1 else clip.attrs.get("min")
        hi = scalar_constant(graph, clip.inputs[2]) if len(clip.inputs) > 2 else clip.attrs.get("max")
        if lo != 0.0 or hi != 6.0:
            return Fail("Clip bounds are not (0, 6)")
        add = producer_op(graph, clip.inputs[0], "Add")
        if add is None:
            return Fail("Clip input is not an Add")
        k = add.inputs.index(x) if x in add.inputs else -1
        if k < 0 or scalar_constant(graph, add.inputs[1 - k]) != 3.0:
            return Fail("Clip input is not x + 3")
        if not (single_use(graph, clip.outputs[0]) and single_use(graph, add.outputs[0])):
            return Fail("an inner value has other consumers")
        return x, [clip, add]
    return Fail("no Clip operand")


class _FuseHardSwish(RewriteRule):
    name = "fuse_hardswish"
    anchor = ("Div", "Mul")

    def match(self, graph: Graph, node: Node):
        if graph.opset < 14:
            return Fail(f"HardSwish needs opset 14 (graph has {graph.opset})")
        if node.op_type == "Mul":
            for side in (0, 1):
                hs = producer_op(graph, node.inputs[side], "HardSigmoid")
                if hs is not None and hs.inputs[0] == node.inputs[1 - side]:
                    if not (np.isclose(hs.attrs.get("alpha", 0.2), 1 / 6, rtol=1e-5)
                            and np.isclose(hs.attrs.get("beta", 0.5), 0.5)):
                        return Fail("HardSigmoid is not alpha=1/6, beta=0.5")
                    if not single_use(graph, hs.outputs[0]):
                        return Fail("HardSigmoid output has other consumers")
                    return {"x": hs.inputs[0], "out": node, "dead": [hs]}
        divisor = scalar_constant(graph, node.inputs[1])
        if node.op_type == "Div" and divisor != 6.0 or node.op_type == "Mul" and (
                divisor is None or not np.isclose(divisor, 1 / 6, rtol=1e-6)):
            return Fail("not a division by 6")
        inner = producer_op(graph, node.inputs[0], "Mul")
        if inner is None or not single_use(graph, inner.outputs[0]):
            return Fail("dividend is not a single-use Mul")
        found = _clip_branch(graph, inner)
        if isinstance(found, Fail):
            return found
        x, dead = found
        return {"x": x, "out": node, "dead": [inner, *dead]}

    def rewrite(self, graph: Graph, m) -> None:
        out = m["out"]
        y = out.outputs[0]
        graph.remove_node(out)
        for n in m["dead"]:
            graph.remove_node(n)
        graph.add_node("HardSwish", [m["x"]], [y], name=graph.unique_name(f"{out.name or 'hardswish'}_hardswish"))


class FuseHardSwish(RewritePass):
    """Replace decomposed hard-swish subgraphs by HardSwish."""

    rules = (_FuseHardSwish(),)
    preserves = (Analysis.SHAPES,)
