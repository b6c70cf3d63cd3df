"""QuantizeW8A8: int8 weights and int8 activations for MatMul/Gemm layers (Ascend's ``quantize``
with ``quant_cfg.inputs``), run after :class:`~ptqc.passes.smooth_activations.SmoothActivations`
when the algorithm is SmoothQuant.

Activations, per ``strategy``:

- ``tensor``: one scale (and zero point unless ``symmetric``) per input tensor from its range
  over the data (the ``input_ranges`` analysis when SmoothActivations just established it for
  this graph, else one pass over ``ctx.data``), as a QuantizeLinear -> DequantizeLinear pair in front of the
  layers, each weight through a per-channel (or per-tensor) int8 DequantizeLinear: onnxruntime's
  QDQ form, which it runs on integer kernels;
- ``token``: one scale per row (token) computed at run time, ``max|x| / 127`` over the last axis,
  the codes ``round(x / scale)`` as int8, ``MatMulInteger`` against the int8 weight, the int32
  result scaled by the token's and the weight channel's scales (symmetric only; no data needed).

Weights are int8, symmetric (zero point 0, the value of largest magnitude on code -128, as the
weight-only grid does), per output channel or per tensor.  Embedding tables stay float: W8A8 is
for the layers' arithmetic, and 8-bit tables cost more than it does (paraphrase-MiniLM-L3,
per-token W8A8: held-out min cosine 0.99932 with float tables, 0.99767 with 8-bit ones, for
0.77x against 0.26x the float bytes); weight-only quantization is the way to a smaller model.  The layers done are listed in
``ctx.analyses["weight_layers"]``.
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.errors import ConfigError
from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes import weight_rounding as wr
from ptqc.passes.quantize_weights import input_statistics, linear_weight
from ptqc.vocab import Analysis


class QuantizeW8A8(Pass):
    """MatMul/Gemm to int8 weights and int8 activations, per tensor (static) or per token (dynamic)."""

    def __init__(self, symmetric: bool = True, strategy: str = "tensor", per_channel: bool = True,
                 skip: tuple[str, ...] = ()):
        if strategy not in ("tensor", "token"):
            raise ConfigError(f"quant_cfg.inputs.strategy {strategy!r}: expected tensor or token")
        if strategy == "token" and not symmetric:
            raise ConfigError("quant_cfg.inputs.symmetric False with strategy token: not built yet (per-token "
                              "activations are symmetric)")
        self.symmetric, self.strategy, self.per_channel, self.skip = symmetric, strategy, per_channel, tuple(skip)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        by_input: dict[str, list] = {}
        for n in graph.topological_order():
            w = linear_weight(graph, n, self.skip)
            if w is not None:
                by_input.setdefault(n.inputs[0], []).append((n, w))
        ranges = {}
        if self.strategy == "tensor" and by_input:
            ranges = (ctx.analyses.get(Analysis.INPUT_RANGES) or {}) \
                if Analysis.INPUT_RANGES in ctx.analyses.established else {}
            missing = [x for x in by_input if x not in ranges]
            if missing:
                measured = input_statistics(graph, ctx, missing, False, "quant_cfg.inputs strategy tensor")
                ranges = {**ranges, **{x: (st.lo, st.hi) for x, st in measured.items()}}
        done = []
        for x, group in by_input.items():
            act = _activation_qdq(graph, x, *ranges[x], self.symmetric) if self.strategy == "tensor" else None
            for node, w in group:
                r = wr.rtn(w, wr.Grid(8, True, w.shape[1], per_tensor=not self.per_channel))
                done.append(node.name or node.inputs[1])
                if act is not None:
                    _write_qdq(graph, node, act, r)
                else:
                    _write_per_token(graph, node, r)
        ctx.analyses[Analysis.WEIGHT_LAYERS] = done
        ctx.logger.info("quantize w8a8: %d layers, activations per %s", len(done), self.strategy)
        return PassResult(graph, bool(done))


def _activation_qdq(graph: Graph, x: str, lo: np.ndarray, hi: np.ndarray, symmetric: bool) -> str:
    """A QuantizeLinear -> DequantizeLinear pair on ``x`` (int8; zero point 0 if symmetric) over the
    per-channel range [lo, hi]; its output."""
    lo, hi = min(float(np.min(lo)), 0.0), max(float(np.max(hi)), 0.0)
    if symmetric:
        scale, zp = max(-lo, hi) / 127.0, 0
    else:
        scale = (hi - lo) / 255.0
        zp = int(np.clip(np.rint(-128 - lo / scale), -128, 127)) if scale > 0 else 0
    scale = scale if scale > 0 else 1.0
    s = graph.add_constant(graph.unique_name(f"{x}_scale"), np.asarray(scale, np.float32)).name
    z = graph.add_constant(graph.unique_name(f"{x}_zero_point"), np.asarray(zp, np.int8)).name
    q, dq = graph.unique_name(f"{x}_quantized"), graph.unique_name(f"{x}_dequantized")
    graph.add_node("QuantizeLinear", [x, s, z], [q], name=q)
    graph.add_node("DequantizeLinear", [q, s, z], [dq], name=dq)
    return dq


def _weight_constants(graph: Graph, base: str, r: wr.Rounded) -> tuple[str, str]:
    """The int8 codes as ``[K, N]`` and the per-column (or one) scale, as constants."""
    codes = graph.add_constant(graph.unique_name(f"{base}_weight_q8"), r.codes.T.astype(np.int8)).name
    scale = r.scale[:1, 0].reshape(()) if r.grid.per_tensor else r.scale[:, 0]
    return codes, graph.add_constant(graph.unique_name(f"{base}_weight_scale"), scale.astype(np.float32)).name


def _detach(graph: Graph, node: Node) -> tuple[str, str, str | None, str]:
    """Take ``node`` out (and its float weight, if nothing else reads it): its input, output,
    Gemm bias (or None) and name, for the nodes that replace it."""
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] else None
    x, y, old = node.inputs[0], node.outputs[0], node.inputs[1]
    name = node.name or graph.unique_name(node.op_type)
    graph.remove_node(node)
    if not graph.consumers(old) and old not in graph.outputs and old not in graph.inputs:
        graph.remove_value(old)
    return x, y, bias, name


def _finish(graph: Graph, op: str, inputs: list[str], y: str, bias: str | None, name: str) -> None:
    """The last op writes ``y``, or a value Gemm's bias is then added to."""
    if bias is None:
        graph.add_node(op, inputs, [y], name=name)
        return
    out = graph.unique_name(f"{y}_before_bias")
    graph.add_node(op, inputs, [out], name=name)
    graph.add_node("Add", [out, bias], [y], name=graph.unique_name(f"{name}_bias"))


def _write_qdq(graph: Graph, node: Node, x_dq: str, r: wr.Rounded) -> None:
    """MatMul of the activation's Q/DQ output by the weight's per-channel (or per-tensor) DQ."""
    _, y, bias, name = _detach(graph, node)
    codes, scale = _weight_constants(graph, name, r)
    w = graph.unique_name(f"{codes}_dequantized")
    graph.add_node("DequantizeLinear", [codes, scale], [w], {} if r.grid.per_tensor else {"axis": 1}, name=w)
    _finish(graph, "MatMul", [x_dq, w], y, bias, name)


def _write_per_token(graph: Graph, node: Node, r: wr.Rounded) -> None:
    """Per-token symmetric int8 codes of the input at run time (``max|x| / 127`` over the last
    axis), MatMulInteger against the int8 weight, then the token's and the channel's scales."""
    x, y, bias, name = _detach(graph, node)
    codes, w_scale = _weight_constants(graph, name, r)
    n = lambda k: graph.unique_name(f"{name}_{k}")  # noqa: E731
    const = {k: graph.add_constant(n(k), v).name for k, v in (
        ("qmax", np.float32(127.0)), ("tiny", np.float32(1e-30)), ("qmin", np.float32(-127.0)))}
    if graph.opset >= 18:
        const["last_axis"] = graph.add_constant(n("last_axis"), np.array([-1], np.int64)).name
    absx, amax, safe, scale, div, rnd, clip, xq, acc, accf, y1 = (n(k) for k in (
        "abs", "absmax", "absmax_safe", "token_scale", "scaled", "rounded", "clipped", "token_q8", "int32", "float",
        "token_scaled"))
    graph.add_node("Abs", [x], [absx], name=absx)
    if graph.opset >= 18:  # axes became an input at opset 18
        graph.add_node("ReduceMax", [absx, const["last_axis"]], [amax], {"keepdims": 1}, name=amax)
    else:
        graph.add_node("ReduceMax", [absx], [amax], {"keepdims": 1, "axes": [-1]}, name=amax)
    graph.add_node("Max", [amax, const["tiny"]], [safe], name=safe)
    graph.add_node("Div", [safe, const["qmax"]], [scale], name=scale)
    graph.add_node("Div", [x, scale], [div], name=div)
    graph.add_node("Round", [div], [rnd], name=rnd)
    graph.add_node("Clip", [rnd, const["qmin"], const["qmax"]], [clip], name=clip)
    graph.add_node("Cast", [clip], [xq], {"to": onnx.TensorProto.INT8}, name=xq)
    graph.add_node("MatMulInteger", [xq, codes], [acc], name=acc)
    graph.add_node("Cast", [acc], [accf], {"to": onnx.TensorProto.FLOAT}, name=accf)
    graph.add_node("Mul", [accf, scale], [y1], name=y1)
    _finish(graph, "Mul", [y1, w_scale], y, bias, name)
