"""FuseLayerNorm: recognise the decomposed layer normalization exporters emit (paddle2onnx,
torch before opset 17) and make it one ``LayerNormalization`` op (opset 17)::

    d = Sub(x, ReduceMean(x, axes))
    y = Div(d, Sqrt(Add(ReduceMean(Pow(d, 2) | Mul(d, d), axes), eps)))
    y = Add(Mul(y, gamma), beta)          # Mul and Add optional, constants

Nine ops become one, which quantizes as one op (the chip runs it mixed: integer statistics,
float normalization) instead of requantizing the mean, the centred values and the variance,
whose ranges 8 bits cannot hold.  ``axes`` must be the trailing axes.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, RewritePass, RewriteRule, producer_op, scalar_constant, single_use
from ptqc.vocab import Analysis


def _sole_consumer(graph: Graph, node: Node, op: str) -> Node | None:
    """The one consumer of ``node``'s output when it is ``op`` and the output is not kept."""
    out = node.outputs[0]
    if not single_use(graph, out) or graph.consumer_nodes(out)[0].op_type != op:
        return None
    return graph.consumer_nodes(out)[0]


def _axes(graph: Graph, reduce: Node) -> list[int] | None:
    if reduce.attrs.get("keepdims", 1) != 1:
        return None
    if "axes" in reduce.attrs:
        return [int(a) for a in reduce.attrs["axes"]]
    c = graph.constant(reduce.inputs[1]) if len(reduce.inputs) > 1 and reduce.inputs[1] else None
    return None if c is None else [int(a) for a in c.reshape(-1)]


def _first_normalized_axis(axes: list[int], rank: int | None) -> int | Fail:
    """The LayerNormalization ``axis`` for reduction ``axes`` (negative: no rank needed)."""
    if all(a < 0 for a in axes):
        neg = sorted(axes)
        return neg[0] if neg == list(range(neg[0], 0)) else Fail(f"axes {axes} are not the trailing axes")
    if rank is None:
        return Fail(f"axes {axes} need the input's rank, which is unknown")
    pos = sorted(a % rank for a in axes)
    return pos[0] - rank if pos == list(range(pos[0], rank)) else Fail(f"axes {axes} are not the trailing axes")


class _FuseLayerNorm(RewriteRule):
    name = "fuse_layernorm"
    anchor = ("Div",)

    def match(self, graph: Graph, div: Node):
        if graph.opset < 17:
            return Fail(f"LayerNormalization needs opset 17 (graph has {graph.opset})")
        d = div.inputs[0]
        sqrt = producer_op(graph, div.inputs[1], "Sqrt")
        add_eps = sqrt and producer_op(graph, sqrt.inputs[0], "Add")
        var = add_eps and next((p for x in add_eps.inputs if (p := producer_op(graph, x, "ReduceMean"))), None)
        if var is None:
            return Fail("divisor is not Sqrt(Add(ReduceMean(.), eps))")
        eps = scalar_constant(graph, add_eps.inputs[1 - add_eps.inputs.index(var.outputs[0])])
        square = producer_op(graph, var.inputs[0], "Pow") or producer_op(graph, var.inputs[0], "Mul")
        if eps is None or square is None:
            return Fail("no scalar epsilon, or the variance is not of a Pow or Mul")
        if square.op_type == "Pow" and (square.inputs[0] != d or scalar_constant(graph, square.inputs[1]) != 2.0) or \
                square.op_type == "Mul" and square.inputs != (d, d):
            return Fail("the variance is not the mean of the centred values squared")
        sub = producer_op(graph, d, "Sub")
        mean = sub and producer_op(graph, sub.inputs[1], "ReduceMean")
        if mean is None or mean.inputs[0] != sub.inputs[0]:
            return Fail("the dividend is not x - ReduceMean(x)")
        x = sub.inputs[0]
        axes, var_axes = _axes(graph, mean), _axes(graph, var)
        if axes is None or var_axes is None or sorted(axes) != sorted(var_axes):
            return Fail("the two means reduce different or unknown axes, or drop them")
        shape = graph.value(x).shape
        axis = _first_normalized_axis(axes, None if shape is None else len(shape))
        if isinstance(axis, Fail):
            return axis
        normalized = None if shape is None else tuple(shape[axis:])
        if normalized is None or not all(isinstance(s, int) and s > 0 for s in normalized):
            return Fail("the normalized dimensions are not static (gamma and beta take their shape)")
        inner = [mean, sub, square, var, add_eps, sqrt]
        if {n.id for n in graph.consumer_nodes(d)} != {square.id, div.id} or d in graph.outputs or any(
                _sole_consumer(graph, n, nxt.op_type) is not nxt for n, nxt in
                [(mean, sub), (square, var), (var, add_eps), (add_eps, sqrt), (sqrt, div)]):
            return Fail("an inner value has other consumers")
        dtype = graph.value(x).dtype or np.dtype(np.float32)
        params, last, tail = _affine(graph, div, axis, normalized, dtype)
        return {"x": x, "axis": axis, "eps": eps, "gamma": params["Mul"], "beta": params["Add"], "last": last,
                "dead": [*inner, div, *tail]}

    def rewrite(self, graph: Graph, m) -> None:
        last = m["last"]
        y = last.outputs[0]
        for n in m["dead"]:
            graph.remove_node(n)
        base = last.name or "layernorm"
        inputs = [m["x"], graph.add_constant(graph.unique_name(f"{base}_gamma"), m["gamma"]).name]
        if m["beta"] is not None:
            inputs.append(graph.add_constant(graph.unique_name(f"{base}_beta"), m["beta"]).name)
        graph.add_node("LayerNormalization", inputs, [y], {"axis": m["axis"], "epsilon": m["eps"]},
                       name=graph.unique_name(f"{base}_layernorm"))


def _affine(graph: Graph, div: Node, axis: int, normalized: tuple[int, ...], dtype: np.dtype):
    """The optional ``Mul(., gamma)`` then ``Add(., beta)`` after the division, as arrays of the
    normalized shape (gamma ones when absent, beta None), the last fused node and the fused tail."""
    params: dict[str, np.ndarray | None] = {"Mul": np.ones(normalized, dtype), "Add": None}
    last, tail = div, []
    for op in ("Mul", "Add"):
        nxt = _sole_consumer(graph, last, op)
        if nxt is None:
            continue
        others = [x for x in nxt.inputs if x != last.outputs[0]]
        c = graph.constant(others[0]) if len(others) == 1 else None
        lead = c.ndim + axis if c is not None else 0  # dims of c before the normalized ones
        if c is None or c.dtype != dtype or any(s != 1 for s in c.shape[:max(lead, 0)]):
            break  # not a per-feature constant: the fusion ends before it
        try:
            params[op] = np.broadcast_to(c.reshape(c.shape[max(lead, 0):]), normalized).copy()
        except ValueError:
            break
        last, tail = nxt, [*tail, nxt]
    return params, last, tail


class FuseLayerNorm(RewritePass):
    """Replace decomposed layer normalizations by LayerNormalization."""

    rules = (_FuseLayerNorm(),)
    preserves = (Analysis.SHAPES,)
