"""DequantizeWeights: weight-only quantization as DequantizeLinear in front of each float op
(MindSpore Lite's ``WEIGHT_QUANT`` at fixed ``bit_num`` 1..16): the model computes in float on
weights rounded to a ``bits``-bit grid, and stores the codes.

Weights of Conv, ConvTranspose, MatMul and Gemm (constant float32 B) and embedding tables
(Gather on axis 0 from a constant ``[V, D]``) are rounded to nearest on the symmetric grid of
``passes/weight_rounding.py`` (zero point 0, the value of largest magnitude on code
``-2^(bits-1)``): per output channel (Conv axis 0, ConvTranspose axis 1, MatMul/Gemm's N, a
table's rows) or, without ``per_channel``, one scale per weight.  Codes are stored as int4
(``bits`` <= 4), int8 (<= 8) or int16 (opset 21 for int4/int16).  A weight is quantized when
its element count exceeds ``min_size`` and its channel count exceeds ``min_channels``, and its
node's name is not in ``skip`` (MindSpore's ``min_quant_weight_size``,
``min_quant_weight_channel``, ``skip_quant_node``).  The quantized weights and their bits are
listed in ``ctx.analyses["weight_layers"]``.

Mixed bits (MindSpore's ``bit_num=0``, ``[mixed_bit_weight_quant_param] init_scale``): each weight
takes the fewest bits in 2..16 whose relative rounding error ``||W - Q(W)|| / ||W||`` is at most
``max_error``.  MindSpore documents ``init_scale`` only as the search's starting value, "larger:
more compression, more loss", the default 0.02 compressing "like 6-7 fixed bits"; ptqc reads it
as that error bound, which behaves as documented (a Gaussian weight per channel needs 7 bits for
0.02: its 8-bit error is about 0.009, 7-bit 0.018, 6-bit 0.036).

``bias_correction`` (MindSpore's ``[weight_quant_param] bias_correction=true``): each Conv,
MatMul and Gemm's output mean shift ``(W - Q(W)) · E[x]``, ``E[x]`` measured on ``ctx.data``,
goes into its bias (``passes/weight_bias.py``).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ptqc.errors import ConfigError
from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes import weight_bias as wb
from ptqc.passes import weight_rounding as wr
from ptqc.vocab import Analysis

OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Gather")
MIXED_BITS = tuple(range(2, 17))  # the widths a mixed-bit search tries, fewest first


def storage(bits: int) -> tuple[np.dtype, int]:
    """The integer type a ``bits``-bit code is stored in, and the opset its DequantizeLinear needs."""
    if bits <= 4:
        return np.dtype(ml_dtypes.int4), 21
    return (np.dtype(np.int8), 13) if bits <= 8 else (np.dtype(np.int16), 21)


class DequantizeWeights(Pass):
    """Weights to ``bits``-bit codes (or, with ``max_error``, each weight's fewest bits) read through
    DequantizeLinear."""

    def __init__(self, bits: int = 8, per_channel: bool = True, min_size: int = 0, min_channels: int = 16,
                 skip: tuple[str, ...] = (), max_error: float | None = None, bias_correction: bool = False):
        self.bits, self.per_channel, self.max_error = bits, per_channel, max_error
        self.bias_correction = bias_correction
        self.min_size, self.min_channels, self.skip = min_size, min_channels, frozenset(skip)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        need = storage(MIXED_BITS[-1] if self.max_error is not None else self.bits)[1]
        if graph.opset < need:
            raise ConfigError(f"dequantize weights: {self.bits}-bit codes need DequantizeLinear of opset {need}; the "
                              f"graph is opset {graph.opset} (run UpgradeOpset({need}) first)")
        done, corrected = {}, 0
        layers = [(node, found) for node in graph.topological_order() if (found := self._weight(graph, node))]
        means = wb.input_means(graph, ctx, [n for n, _ in layers if n.op_type in wb.CORRECTED],
                               "[weight_quant_param] bias_correction") if self.bias_correction else {}
        for node, (slot, axis) in layers:
            w = graph.constant(node.inputs[slot])
            rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
            bits, r = self._round(rows)
            shape = (w.shape[axis],) + tuple(np.delete(w.shape, axis))
            codes = np.moveaxis(r.codes.reshape(shape), 0, axis)
            if node.id in means:
                error = np.moveaxis((rows - r.dequantize()).reshape(shape), 0, axis)
                wb.add_bias(graph, node, wb.bias_shift(node, error, means[node.id]))
                corrected += 1
            self._write(graph, node, slot, codes, r.scale[:, 0], axis, bits)
            done[node.name or node.inputs[slot]] = bits
        ctx.analyses[Analysis.WEIGHT_LAYERS] = done
        counts = {b: list(done.values()).count(b) for b in sorted(set(done.values()))}
        ctx.logger.info("dequantize weights: %d weights (%s), %s%s", len(done),
                        ", ".join(f"{n} at {b} bits" for b, n in counts.items()) or "none",
                        "per channel" if self.per_channel else "per layer",
                        f"; {corrected} biases corrected" if self.bias_correction else "")
        return PassResult(graph, bool(done))

    def _round(self, rows: np.ndarray) -> tuple[int, wr.Rounded]:
        """(bits, rounding) of a weight as ``[channels, rest]``: at ``bits``, or with ``max_error`` at the
        fewest of :data:`MIXED_BITS` whose relative error ``||W - Q(W)|| / ||W||`` is at most it."""
        norm = float(np.linalg.norm(rows)) or 1.0
        for bits in (MIXED_BITS if self.max_error is not None else (self.bits,)):
            r = wr.rtn(rows, wr.Grid(bits, True, rows.shape[1], per_tensor=not self.per_channel))
            if self.max_error is None or np.linalg.norm(r.dequantize() - rows) / norm <= self.max_error:
                return bits, r
        return bits, r

    def _weight(self, graph: Graph, node: Node) -> tuple[int, int] | None:
        """(input slot of the weight, its output-channel axis), or None to leave the node float."""
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx") or node.name in self.skip:
            return None
        if node.op_type == "Gather":
            slot, axis = 0, 0
            if node.attrs.get("axis", 0) not in (0, -2):
                return None
        else:
            slot = 1
            if len(node.inputs) < 2:
                return None
            if node.op_type == "Gemm":
                a = node.attrs
                if a.get("transA", 0):
                    return None
                axis = 0 if a.get("transB", 0) else 1
            else:
                axis = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}[node.op_type]
        w = graph.constant(node.inputs[slot])
        if w is None or w.dtype != np.float32 or w.ndim < 2 or not np.all(np.isfinite(w)) \
                or len(graph.consumers(node.inputs[slot])) != 1:
            return None
        if node.op_type in ("MatMul", "Gather", "Gemm") and w.ndim != 2:
            return None
        if w.size <= self.min_size or w.shape[axis] <= self.min_channels:
            return None
        return slot, axis

    def _write(self, graph: Graph, node: Node, slot: int, codes: np.ndarray, scale: np.ndarray, axis: int,
               bits: int) -> None:
        dtype, _ = storage(bits)
        name = node.inputs[slot]
        q = graph.add_constant(graph.unique_name(f"{name}_q{bits}"), codes.astype(dtype)).name
        s = graph.add_constant(graph.unique_name(f"{name}_scale"),
                               (scale if self.per_channel else scale[:1].reshape(())).astype(np.float32)).name
        out = graph.unique_name(f"{name}_dequantized")
        graph.add_node("DequantizeLinear", [q, s], [out], {"axis": axis} if self.per_channel else {},
                       name=graph.unique_name(f"{name}_DequantizeLinear"))
        graph.set_input(node, slot, out)
        if not graph.consumers(name) and name not in graph.outputs and name not in graph.inputs:
            graph.remove_value(name)
