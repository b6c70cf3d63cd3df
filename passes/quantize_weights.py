"""QuantizeWeights: weight-only quantization of MatMul/Gemm layers and embedding tables (Ascend's
``quantize`` with ``quant_cfg.weights``; onnxruntime's ``MatMulNBitsQuantizer``), by RTN, GPTQ or
AWQ (``passes/weight_rounding.py``), written as onnxruntime's ``MatMulNBits`` (com.microsoft).

A layer is a MatMul whose B is a constant float32 ``[K, N]`` or a Gemm (``alpha`` 1, ``beta`` 1,
no ``transA``) with a constant B; its name (node name, else its weight's) must not contain a
``skip`` string.  GPTQ and AWQ read ``H = sum x^T x`` and ``mean |x|`` of each layer's input from
one pass of the float model over ``ctx.data``.  AWQ searches one ``s`` per input tensor (the
layers reading it share it) and divides the input by ``s``: folded into a LayerNormalization's
scale and bias when the input is one whose every reader is a layer of the group, else a
``Mul`` by ``1/s`` put in front of the group (llm-awq's ScaledActivation).

Embedding tables (a Gather on axis 0 from a constant float32 ``[V, D]``) become onnxruntime's
``GatherBlockQuantized`` at 8 bits, one scale per row, whatever the layers' type: a table is read
a row at a time, so its bytes go but no reconstruction can help it, and at 4 bits it costs more
than every layer together (paraphrase-MiniLM-L3, int4 g32 RTN: held-out min cosine 0.971 with
4-bit tables, 0.985 with 8-bit ones, 0.985 with float ones; the model is 0.16x, 0.23x and 0.74x
the float bytes).  ``skip_layers`` keeps a table float like any layer.

Every grid is one MatMulNBits layout: per group along K (``group`` columns; a group of 96 is
three blocks of 32 with equal scales), per channel (one block of the next power of two >= K,
padded with zero codes) or per tensor (the same, one scale everywhere).  Symmetric codes are
stored offset by ``2^(bits-1)`` without a zero-point input (onnxruntime's default); asymmetric
ones with packed zero points.  Gemm's bias stays float (an Add after).  What was done is left in
``ctx.analyses["weight_layers"]``: per layer, the algorithm and its output error on the data
relative to RTN's (1.0 where there was no data).
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ptqc.errors import ConfigError
from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes import weight_rounding as wr
from ptqc.passes.calibrate import stream_tensors
from ptqc.vocab import Analysis

MS_DOMAIN = "com.microsoft"
TABLE_BITS = 8


class QuantizeWeights(Pass):
    """MatMul/Gemm weights to MatMulNBits by RTN, GPTQ or AWQ."""

    def __init__(self, bits: int = 4, symmetric: bool = True, strategy: str = "group", group_size: int = 128,
                 algorithm: str = "minmax", grids_num: int = 20, skip: tuple[str, ...] = ()):
        if algorithm not in ("minmax", "gptq", "awq"):
            raise ConfigError(f"weight quantization algorithm {algorithm!r}: expected minmax, gptq or awq")
        if strategy == "group" and (group_size < 32 or group_size % 32):
            raise ConfigError(f"quant_cfg.weights.group_size {group_size}: must be a multiple of 32 in [32, K-1]")
        self.bits, self.symmetric, self.strategy, self.group_size = bits, symmetric, strategy, group_size
        self.algorithm, self.grids_num, self.skip = algorithm, grids_num, tuple(skip)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        layers = [(n, w) for n in graph.topological_order() if (w := linear_weight(graph, n, self.skip)) is not None]
        tables = [(n, w) for n in graph.topological_order() if (w := embedding_table(graph, n, self.skip)) is not None]
        for node, w in layers:  # (tables go per row at 8 bits, whatever the group)
            self._check_group(node, w.shape[1])
        stats = input_statistics(graph, ctx, sorted({n.inputs[0] for n, _ in layers}), True,
                                 f"algorithm {self.algorithm}") if self.algorithm != "minmax" and layers else {}
        done = {}
        by_input: dict[str, list] = {}
        for node, w in layers:
            by_input.setdefault(node.inputs[0], []).append((node, w))
        for x, group in by_input.items():
            grid = self._grid(group[0][1].shape[1])
            if x in stats and self.algorithm in ("awq", "gptq"):
                rounded, ratios = (self._awq if self.algorithm == "awq" else self._gptq)(graph, x, group, stats[x], grid)
            else:
                rounded, ratios = [(node, wr.rtn(w, grid)) for node, w in group], [1.0] * len(group)
            done.update({_label(node): (self.algorithm, ratio) for (node, _), ratio in zip(rounded, ratios)})
            for node, r in rounded:
                _write(graph, node, r, self._block(r.codes.shape[1]))
        for node, w in tables:  # embedding tables: 8 bits per row, round to nearest (see the module docstring)
            write_table(graph, node, w, self.symmetric)
            done[_label(node)] = ("minmax", 1.0)
        if done:
            graph.info.opset_imports.setdefault(MS_DOMAIN, 1)
        ctx.analyses[Analysis.WEIGHT_LAYERS] = done
        ctx.logger.info("quantize weights: %d layers to %d-bit %s (%s)", len(done), self.bits, self.strategy,
                        self.algorithm)
        return PassResult(graph, bool(done))

    def _awq(self, graph: Graph, x: str, group: list, st: InputStats, grid: wr.Grid) -> tuple[list, list]:
        """AWQ's scale, then clip, search for the layers reading ``x``; ``x`` divided by the scale where
        the result beats RTN on the data.  (rounded layers, error relative to RTN's per layer)."""
        l = wr.factor(st.h)
        s, _, base = wr.awq_scales([w for _, w in group], l, st.abs_mean, grid, self.grids_num)
        rounded = [(node, wr.rtn(w * s, grid, wr.clip_search(w * s, st.h / np.outer(s, s), grid, self.grids_num)))
                   for node, w in group]
        err = sum(wr.output_error(w, r.dequantize() / s, l) for (_, w), (_, r) in zip(group, rounded))
        if err >= base:  # the search found nothing better than nearest rounding on the data
            return [(node, wr.rtn(w, grid)) for node, w in group], [1.0] * len(group)
        divide_input(graph, x, [n for n, _ in group], s)
        return rounded, [err / base if base > 0 else 1.0] * len(group)

    def _gptq(self, graph: Graph, x: str, group: list, st: InputStats, grid: wr.Grid) -> tuple[list, list]:
        """GPTQ per layer reading ``x`` (one inverse factor shared)."""
        l, inverse = wr.factor(st.h), wr.inverse_factor(st.h)
        rounded, ratios = [], []
        for node, w in group:
            r = wr.gptq(w, inverse, grid)
            base = wr.output_error(w, wr.rtn(w, grid).dequantize(), l)
            rounded.append((node, r))
            ratios.append(wr.output_error(w, r.dequantize(), l) / base if base else 1.0)
        return rounded, ratios

    def _check_group(self, node: Node, k: int) -> None:
        if self.strategy == "group" and not 32 <= self.group_size <= k - 1:
            raise ConfigError(f"quant_cfg.weights.group_size {self.group_size}: layer {_label(node)!r} "
                              f"has K={k} inputs; a group must be in [32, K-1] (skip the layer with skip_layers)")

    def _grid(self, k: int) -> wr.Grid:
        if self.strategy == "group":
            return wr.Grid(self.bits, self.symmetric, self.group_size)
        return wr.Grid(self.bits, self.symmetric, k, per_tensor=self.strategy == "tensor")

    def _block(self, k: int) -> int:
        """MatMulNBits' block: the group's largest power-of-two divisor, else one block over K."""
        if self.strategy == "group":
            return self.group_size & -self.group_size
        return max(16, 1 << (k - 1).bit_length())


@dataclass
class InputStats:
    """What one pass over the data says of a layer input, per channel (its last axis)."""

    lo: np.ndarray
    hi: np.ndarray
    abs_sum: np.ndarray
    rows: int
    h: np.ndarray | None = None  # sum x^T x, when asked for

    @property
    def abs_mean(self) -> np.ndarray:
        return self.abs_sum / max(self.rows, 1)

    @property
    def abs_max(self) -> np.ndarray:
        return np.maximum(-self.lo, self.hi)


def input_statistics(graph: Graph, ctx: PassContext, inputs: list[str], hessians: bool,
                     what: str) -> dict[str, InputStats]:
    """Per tensor of ``inputs``: its :class:`InputStats` over ``ctx.data``, in one streaming pass of the
    float model (memory: ``K^2`` per input with ``hessians``, whatever the sample count).  ``what``
    names the option that needs the data, for the error when there is none."""
    acc: dict[str, InputStats] = {}

    def visit(values: dict) -> None:
        for x in inputs:
            v = np.asarray(values[x], np.float64)
            rows = v.reshape(-1, v.shape[-1])
            a = acc.get(x)
            h = rows.T @ rows if hessians else None
            if a is None:
                acc[x] = InputStats(rows.min(axis=0), rows.max(axis=0), np.abs(rows).sum(axis=0), len(rows), h)
            else:
                a.lo, a.hi = np.minimum(a.lo, rows.min(axis=0)), np.maximum(a.hi, rows.max(axis=0))
                a.abs_sum, a.rows = a.abs_sum + np.abs(rows).sum(axis=0), a.rows + len(rows)
                a.h = None if h is None else a.h + h
    stream_tensors(graph, ctx, inputs, visit, what, " (data=...)")
    return acc


def linear_weight(graph: Graph, node: Node, skip: tuple[str, ...] = ()) -> np.ndarray | None:
    """A layer's float weight as ``[N, K]`` (a MatMul whose B is a constant float32 ``[K, N]``, a Gemm
    with ``alpha`` 1, ``beta`` 1, no ``transA``), or None; also None when the node's name or its
    weight's contains a ``skip`` string."""
    if node.op_type not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    w = graph.constant(node.inputs[1])
    if w is None or w.dtype != np.float32 or w.ndim != 2 or not np.all(np.isfinite(w)):
        return None
    if any(s in node.name or s in node.inputs[1] for s in skip):
        return None
    if node.op_type == "MatMul":
        return w.T.astype(np.float64)
    a = node.attrs
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or (len(node.inputs) > 2 and a.get("beta", 1.0) != 1.0):
        return None
    return (w if a.get("transB", 0) else w.T).astype(np.float64)


def embedding_table(graph: Graph, node: Node, skip: tuple[str, ...] = ()) -> np.ndarray | None:
    """An embedding table (a Gather on axis 0 from a constant float32 ``[V, D]`` nothing else reads),
    as ``[V, D]``, or None; also None when the node's name or the table's contains a ``skip`` string."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or node.attrs.get("axis", 0) not in (0, -2):
        return None
    w = graph.constant(node.inputs[0])
    if w is None or w.dtype != np.float32 or w.ndim != 2 or len(graph.consumers(node.inputs[0])) != 1 \
            or not np.all(np.isfinite(w)) or any(s in node.name or s in node.inputs[0] for s in skip):
        return None
    return w.astype(np.float64)


def write_table(graph: Graph, node: Node, w: np.ndarray, symmetric: bool) -> None:
    """The table at :data:`TABLE_BITS` per row, round to nearest, as GatherBlockQuantized."""
    r = wr.rtn(w, wr.Grid(TABLE_BITS, symmetric, w.shape[1]))
    _write_gather(graph, node, r, max(16, 1 << (w.shape[1] - 1).bit_length()))
    graph.info.opset_imports.setdefault(MS_DOMAIN, 1)


def _label(node: Node) -> str:
    return node.name or node.inputs[0 if node.op_type == "Gather" else 1]


def divide_input(graph: Graph, x: str, nodes: list[Node], s: np.ndarray) -> None:
    """The group's input divided by ``s`` per channel: in the LayerNormalization that makes it
    when the group is its only reader, else by a Mul in front of the group."""
    prod = graph.producer(x)
    readers = {n.id for n in graph.consumer_nodes(x)}
    if prod is not None and prod.op_type == "LayerNormalization" and readers == {n.id for n in nodes} \
            and x not in graph.outputs and prod.attrs.get("axis", -1) in (-1, len(graph.value(x).shape or ()) - 1):
        consts = [graph.constant(i) if i else None for i in prod.inputs[1:3]]
        if all(c is not None and c.shape == s.shape for c in consts if c is not None) and consts[0] is not None:
            for slot, c in enumerate(consts, start=1):
                if c is not None:
                    name = graph.add_constant(graph.unique_name(f"{prod.inputs[slot]}_awq"),
                                              (c / s).astype(c.dtype)).name
                    graph.set_input(prod, slot, name)
            return
    inv = graph.add_constant(graph.unique_name(f"{x}_awq_inverse_scale"), (1.0 / s).astype(np.float32)).name
    scaled = graph.unique_name(f"{x}_awq")
    graph.add_node("Mul", [x, inv], [scaled], name=scaled)
    for n in nodes:
        graph.set_input(n, 0, scaled)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Codes (``[..., m]``, m a multiple of ``8 // bits``) packed into bytes, lowest bits first."""
    per = 8 // bits
    v = values.astype(np.uint8).reshape(*values.shape[:-1], -1, per)
    out = np.zeros(v.shape[:-1], np.uint8)
    for j in range(per):
        out |= (v[..., j] << (bits * j)).astype(np.uint8)
    return out


def _write(graph: Graph, node: Node, r: wr.Rounded, block: int) -> None:
    """Replace ``node`` by MatMulNBits reading ``r`` (and an Add for Gemm's bias)."""
    n, k = r.codes.shape
    blocks = -(-k // block)
    offset = 2 ** (r.grid.bits - 1) if r.grid.symmetric else 0
    codes = np.full((n, blocks * block), offset, np.int64)
    codes[:, :k] = r.codes.astype(np.int64) + offset
    starts = np.arange(blocks) * block
    group_of = np.searchsorted([sl.start for sl in r.grid.groups(k)], starts, side="right") - 1
    scale = r.scale[:, group_of].astype(np.float32)
    base = node.name or graph.unique_name("MatMulNBits")
    inputs = [node.inputs[0],
              graph.add_constant(graph.unique_name(f"{base}_weight_q{r.grid.bits}"),
                                 _pack(codes, r.grid.bits).reshape(n, blocks, -1)).name,
              graph.add_constant(graph.unique_name(f"{base}_scales"), scale.reshape(-1)).name]
    if not r.grid.symmetric:
        per = 8 // r.grid.bits
        zp = np.zeros((n, -(-blocks // per) * per), np.int64)
        zp[:, :blocks] = r.zero_point[:, group_of]
        packed = _pack(zp, r.grid.bits).reshape(-1)
        inputs.append(graph.add_constant(graph.unique_name(f"{base}_zero_points"), packed).name)
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] else None
    y, weight = node.outputs[0], node.inputs[1]
    graph.remove_node(node)
    if not graph.consumers(weight) and weight not in graph.outputs and weight not in graph.inputs:
        graph.remove_value(weight)  # the float weight goes: the model shrinks
    attrs = {"K": k, "N": n, "bits": r.grid.bits, "block_size": block}
    if bias is None:
        graph.add_node("MatMulNBits", inputs, [y], attrs, name=base, domain=MS_DOMAIN)
        return
    mm = graph.unique_name(f"{base}_matmul")
    graph.add_node("MatMulNBits", inputs, [mm], attrs, name=base, domain=MS_DOMAIN)
    graph.add_node("Add", [mm, bias], [y], name=graph.unique_name(f"{base}_bias"))


def _write_gather(graph: Graph, node: Node, r: wr.Rounded, block: int) -> None:
    """Replace an embedding Gather by GatherBlockQuantized reading ``r``: int4 codes (symmetric,
    zero point 0) or uint4 with uint4 zero points; 8 bits as uint8 codes with uint8 zero points
    (onnxruntime takes no int8 table)."""
    v, d = r.codes.shape
    blocks = -(-d // block)
    group_of = np.searchsorted([sl.start for sl in r.grid.groups(d)], np.arange(blocks) * block, side="right") - 1
    codes, zp = r.codes.astype(np.int64), r.zero_point[:, group_of].astype(np.int64)
    if r.grid.bits == 8 and r.grid.symmetric:
        codes, zp = codes + 128, zp + 128
    dtype = (ml_dtypes.int4 if r.grid.symmetric else ml_dtypes.uint4) if r.grid.bits == 4 else np.uint8
    base = node.name or graph.unique_name("GatherBlockQuantized")
    table = node.inputs[0]
    inputs = [graph.add_constant(graph.unique_name(f"{base}_table_q{r.grid.bits}"), codes.astype(dtype)).name,
              node.inputs[1],
              graph.add_constant(graph.unique_name(f"{base}_scales"), r.scale[:, group_of].astype(np.float32)).name]
    if not (r.grid.symmetric and r.grid.bits == 4):
        inputs.append(graph.add_constant(graph.unique_name(f"{base}_zero_points"), zp.astype(dtype)).name)
    y = node.outputs[0]
    graph.remove_node(node)
    if not graph.consumers(table) and table not in graph.outputs and table not in graph.inputs:
        graph.remove_value(table)
    graph.add_node("GatherBlockQuantized", inputs, [y],
                   {"gather_axis": 0, "quantize_axis": 1, "block_size": block, "bits": r.grid.bits},
                   name=base, domain=MS_DOMAIN)
