"""FoldAffineIntoConv: fold an affine ``a * x + b`` (constants per input channel or scalars)
that feeds a Conv into the Conv's weights and bias.

    Conv(a * x + b) = Conv'(x)      W' = W * a (per input channel), B' = B + sum(W * b)

exactly, when the Conv pads nothing (padding inserts zeros *after* the affine).  A padded
Conv takes ``a`` only: ``a * x + b = a * (x + b / a)``, so the Add of ``b / a`` stays and the
Mul goes.  paddle2onnx's learnable affine blocks put such a Mul/Add after every activation;
folded, each costs no requantization.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewritePass, RewriteRule, channel_vector, producer_op, single_use
from ptqc.vocab import Analysis


def _producer(graph: Graph, name: str, op: str) -> Node | None:
    """The single-use ``op`` producing ``name``."""
    p = producer_op(graph, name, op)
    return p if p is not None and single_use(graph, p.outputs[0]) else None


def _operand(graph: Graph, node: Node) -> tuple[str, np.ndarray] | None:
    """(the non-constant input, the constant) of a binary op."""
    for side in (0, 1):
        c = graph.constant(node.inputs[1 - side])
        if c is not None and graph.constant(node.inputs[side]) is None:
            return node.inputs[side], c
    return None


def _per_input_channel(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    vector = channel_vector(c, channels, rank) if c.dtype.kind == "f" else None
    return None if vector is None else vector.astype(np.float64)


def _affine_step(graph: Graph, x: str, op: str, channels: int, rank: int):
    """(node, its other input, its constant per input channel) when ``x`` is a single-use
    ``op`` by a constant; (None, x, None) when it is not; a Fail when the constant does not fit."""
    node = _producer(graph, x, op)
    found = _operand(graph, node) if node is not None else None
    if found is None:
        return None, x, None
    vector = _per_input_channel(found[1], channels, rank)
    if vector is None:
        return Fail(f"{op} constant of shape {found[1].shape} is not per input channel"), x, None
    return node, found[0], vector


class _FoldAffine(RewriteRule):
    name = "fold_affine_into_conv"
    anchor = ("Conv",)

    def match(self, graph: Graph, conv: Node):
        w = graph.constant(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if w is None or w.dtype.kind != "f" or len(graph.consumers(conv.inputs[1])) != 1:
            return Fail("weight is not a float constant used by this Conv only")
        bias_name = conv.inputs[2] if len(conv.inputs) > 2 else ""
        bias = graph.constant(bias_name) if bias_name else None
        if bias_name and bias is None:
            return Fail("bias is not a constant")
        channels = w.shape[1] * conv.attrs.get("group", 1)
        add, x, b = _affine_step(graph, conv.inputs[0], "Add", channels, w.ndim)
        if isinstance(add, Fail):
            return add
        mul, x, a = _affine_step(graph, x, "Mul", channels, w.ndim)
        if isinstance(mul, Fail):
            return mul
        a = np.ones(channels) if a is None else a
        b = np.zeros(channels) if b is None else b
        if mul is None and add is None:
            return Fail("input is not a single-use Mul/Add by a constant")
        padded = any(conv.attrs.get("pads", [])) or conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
        if padded and b.any():
            if mul is None or not np.all(a != 0):
                return Fail("the Conv pads, so the Add cannot move into it")
            return {"conv": conv, "x": x, "a": a, "b": None, "keep_add": add, "shift": b / a, "mul": mul,
                    "w": w, "bias": bias}
        return {"conv": conv, "x": x, "a": a, "b": b, "keep_add": None, "add": add, "mul": mul,
                "w": w, "bias": bias}

    def rewrite(self, graph: Graph, m) -> None:
        conv, w, a = m["conv"], m["w"].astype(np.float64), m["a"]
        group = conv.attrs.get("group", 1)
        per_group, out_per_group = w.shape[1], w.shape[0] // group
        # the input channel W[o, ci] reads is (o // out_per_group) * per_group + ci
        idx = (np.arange(w.shape[0])[:, None] // out_per_group) * per_group + np.arange(per_group)[None, :]
        shape = idx.shape + (1,) * (w.ndim - 2)
        dtype = m["w"].dtype
        wname = graph.unique_name(f"{conv.inputs[1]}_affine")
        graph.add_constant(wname, (w * a[idx].reshape(shape)).astype(dtype))
        graph.set_input(conv, 1, wname)
        if m["b"] is not None and m["b"].any():
            extra = (w * m["b"][idx].reshape(shape)).sum(axis=tuple(range(1, w.ndim)))
            bias = (m["bias"].astype(np.float64) if m["bias"] is not None else 0.0) + extra
            bname = graph.unique_name(f"{conv.name or 'conv'}_bias_affine")
            graph.add_constant(bname, np.asarray(bias, dtype))
            graph.set_input(conv, 2, bname)
        keep = m["keep_add"]
        if keep is not None:  # the Add of b / a stays, read straight from x
            shift = graph.add_constant(graph.unique_name(f"{keep.name or 'add'}_shift"),
                                       m["shift"].astype(dtype).reshape((1, -1) + (1,) * (w.ndim - 2)))
            graph.set_input(keep, 0, m["x"])
            graph.set_input(keep, 1, shift.name)
            graph.remove_node(m["mul"])
            return
        graph.set_input(conv, 0, m["x"])
        for n in (m["add"], m["mul"]):
            if n is not None:
                graph.remove_node(n)


class FoldAffineIntoConv(RewritePass):
    """Fold a per-channel Mul/Add by constants feeding a Conv into its weights and bias."""

    rules = (_FoldAffine(),)
    preserves = (Analysis.SHAPES,)
