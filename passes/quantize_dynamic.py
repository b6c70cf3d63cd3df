"""QuantizeDynamic: dynamic quantization (onnxruntime's ``quantize_dynamic``; MindSpore's
DYNAMIC_QUANT in its ACWL form): weights quantized once, activations at run time.

Each MatMul (constant 2-D B), Gemm (constant B, alpha 1, no transA) and Conv (constant W)
the selection allows becomes, as onnxruntime writes it:

    x_q, x_scale, x_zp = DynamicQuantizeLinear(x)        # uint8, per tensor, per call
    y = Cast(MatMulInteger(x_q, W_q, x_zp, W_zp)) * (x_scale * W_scale)   [+ bias]

(ConvInteger for Conv, its attributes kept; Gemm's bias C and Conv's bias added in float).
One DynamicQuantizeLinear serves every reader of a tensor.  Weights: int8 symmetric
(``[-127, 127]``, zero point 0) or uint8 asymmetric over ``[min(w, 0), max(w, 0)]`` (either
type either way with ``symmetric``), on onnxruntime's grids; ``reduce_range`` keeps 7 bits;
``per_channel`` gives MatMul/Gemm one scale per output column (Conv stays per tensor, as
onnxruntime's ConvInteger does).  Every rewritten node is listed
by op type in ``ctx.analyses["dynamic_nodes"]``.
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.vocab import Analysis

FLOAT = onnx.TensorProto.FLOAT
OPS = ("MatMul", "Gemm", "Conv")


class QuantizeDynamic(Pass):
    """MatMul/Gemm/Conv with constant weights to integer ops on run-time-quantized inputs."""

    def __init__(self, weight_dtype: np.dtype = np.dtype(np.int8), per_channel: bool = False,
                 reduce_range: bool = False, symmetric: bool | None = None, op_types: frozenset | None = None,
                 nodes_to_quantize: frozenset | None = None, nodes_to_exclude: frozenset = frozenset()):
        self.weight_dtype, self.per_channel, self.reduce_range = np.dtype(weight_dtype), per_channel, reduce_range
        self.symmetric = self.weight_dtype == np.int8 if symmetric is None else symmetric
        self.op_types, self.include, self.exclude = op_types, nodes_to_quantize, nodes_to_exclude

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        dynamic: dict[str, tuple[str, str, str]] = {}  # activation -> its DynamicQuantizeLinear outputs
        done: list[str] = []
        for node in graph.topological_order():
            weight = self._weight(graph, node)
            if weight is None:
                continue
            x = node.inputs[0]
            if x not in dynamic:
                outs = tuple(graph.unique_name(f"{x}_{s}") for s in ("quantized", "scale", "zero_point"))
                graph.add_node("DynamicQuantizeLinear", [x], outs, name=graph.unique_name(f"{x}_dynamic_quantize"))
                dynamic[x] = outs
            self._rewrite(graph, node, weight, *dynamic[x])
            done.append(node.op_type)
        ctx.analyses[Analysis.DYNAMIC_NODES] = done
        if done:
            ctx.logger.info("quantize dynamic: %s", ", ".join(f"{op} x{done.count(op)}" for op in OPS if op in done))
        return PassResult(graph, bool(done))

    def _weight(self, graph: Graph, node: Node) -> np.ndarray | None:
        """The float weight as the integer op reads it ([K, N] for MatMul/Gemm), or None when
        the node is not rewritten."""
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
            return None
        if (self.op_types is not None and node.op_type not in self.op_types) or node.name in self.exclude \
                or (self.include is not None and node.name not in self.include):
            return None
        if graph.value(node.inputs[0]).elem_type not in (FLOAT, 0) or len(node.inputs) < 2:
            return None
        w = graph.constant(node.inputs[1])
        if w is None or w.dtype != np.float32 or not np.all(np.isfinite(w)):
            return None
        if node.op_type == "MatMul":
            return w if w.ndim == 2 else None
        if node.op_type == "Gemm":
            a = node.attrs
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or w.ndim != 2:
                return None
            if len(node.inputs) > 2 and node.inputs[2] and a.get("beta", 1.0) != 1.0:
                return None
            return w.T if a.get("transB", 0) else w
        return w if w.ndim >= 3 else None

    def _quantize(self, w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes, scale, zero point) per tensor or along ``axis``, on onnxruntime's grids:
        int8 [-127, 127] symmetric or [-128, 127], uint8 [0, 255]; with ``reduce_range``
        int8 [-64, 64], uint8 [0, 127]."""
        signed = self.weight_dtype == np.int8
        if signed:
            qmin, qmax = (-64, 64) if self.reduce_range else (-127, 127) if self.symmetric else (-128, 127)
        else:
            qmin, qmax = (0, 127) if self.reduce_range else (0, 255)
        reduce = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
        lo = np.minimum(np.min(w, axis=reduce), 0.0).astype(np.float64)
        hi = np.maximum(np.max(w, axis=reduce), 0.0).astype(np.float64)
        if self.symmetric:
            hi = np.maximum(np.abs(lo), np.abs(hi))
            lo = -hi
        scale = (hi - lo) / (qmax - qmin)
        zp = np.full_like(scale, np.round((qmax + qmin) / 2)) if self.symmetric else \
            np.round(qmin - lo / np.where(scale > 0, scale, 1.0))
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        shaped = (lambda a: a) if axis is None else \
            (lambda a: np.expand_dims(a, tuple(i for i in range(w.ndim) if i != axis)))
        codes = np.clip(np.round(w / shaped(scale)) + shaped(zp), qmin, qmax).astype(self.weight_dtype)
        return codes, scale, zp.astype(self.weight_dtype)

    def _rewrite(self, graph: Graph, node: Node, w: np.ndarray, x_q: str, x_scale: str, x_zp: str) -> None:
        conv = node.op_type == "Conv"
        axis = 1 if self.per_channel and not conv else None
        codes, scale, zp = self._quantize(w, axis)
        base = node.name or graph.unique_name(node.op_type)
        c = {k: graph.add_constant(graph.unique_name(f"{base}_w_{k}"), v).name
             for k, v in (("quantized", codes), ("scale", scale), ("zero_point", zp))}
        y, bias = node.outputs[0], node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        acc, cast, scaled, both = (graph.unique_name(f"{base}_{s}") for s in ("int", "cast", "scaled", "scale"))
        op, attrs = ("ConvInteger", dict(node.attrs)) if conv else ("MatMulInteger", {})
        graph.remove_node(node)
        graph.add_node("Mul", [x_scale, c["scale"]], [both], name=graph.unique_name(f"{base}_scale_mul"))
        graph.add_node(op, [x_q, c["quantized"], x_zp, c["zero_point"]], [acc], attrs, name=base)
        graph.add_node("Cast", [acc], [cast], {"to": FLOAT}, name=graph.unique_name(f"{base}_cast"))
        if bias is None:
            graph.add_node("Mul", [cast, both], [y], name=graph.unique_name(f"{base}_mul"))
            return
        graph.add_node("Mul", [cast, both], [scaled], name=graph.unique_name(f"{base}_mul"))
        if conv:  # the [M] bias against [N, M, spatial...]
            b = graph.constant(bias)
            if b is not None:
                bias = graph.add_constant(graph.unique_name(f"{base}_bias"),
                                          b.reshape([-1] + [1] * (w.ndim - 2)).astype(np.float32)).name
            else:
                shape = graph.add_constant(graph.unique_name(f"{base}_bias_shape"),
                                           np.array([-1] + [1] * (w.ndim - 2), np.int64)).name
                reshaped = graph.unique_name(f"{base}_bias")
                graph.add_node("Reshape", [bias, shape], [reshaped])
                bias = reshaped
        graph.add_node("Add", [scaled, bias], [y], name=graph.unique_name(f"{base}_bias_add"))
