"""EqualizeCrossLayer (``--cle``): cross-layer equalization (Nagel et al. 2019, "Data-Free
Quantization Through Weight Equalization and Bias Correction"; AIMET's CLE).

For ``Conv1 -> f -> Conv2`` where every op of ``f`` is positively homogeneous per channel
(``f(x / s) = f(x) / s`` for ``s > 0``: Relu, LeakyRelu, PRelu, MaxPool, AveragePool,
GlobalAveragePool, Identity), output channel c of Conv1 (weights and bias) is divided by
``s_c`` and input channel c of Conv2 multiplied by it.  The float function is unchanged;
with ``s_c = sqrt(r1_c / r2_c)`` (``r1_c = max|W1[c]|``, ``r2_c = max|W2[:, c]|``) both
layers' ranges on channel c become ``sqrt(r1_c r2_c)``: Conv2's per-output-channel weight
ranges are no longer set by one wide input channel, and the activation between has its
channels on comparable scales.  Conv2 may be grouped or depthwise; chains
(Conv1 -> Conv2 -> Conv3) are swept until no scale moves by more than 0.1% (at most
``rounds`` sweeps), as the paper iterates to convergence.
ReLU6/Clip and HardSwish are not homogeneous and stop a chain.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult, single_use
from ptqc.vocab import Analysis

HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "Identity")


class EqualizeCrossLayer(Pass):
    """Rescale channels between Conv pairs so both sides share their weight range."""

    preserves = (Analysis.SHAPES,)

    def __init__(self, rounds: int = 100):
        self.rounds = rounds

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs = [p for p in (_pair(graph, n) for n in graph.topological_order() if n.op_type == "Conv") if p]
        for _ in range(self.rounds):
            if max((_equalize(graph, c1, c2) for c1, c2 in pairs), default=0.0) < 1e-3:
                break
        if pairs:
            ctx.logger.info("cross-layer equalization: %d Conv pairs", len(pairs))
        return PassResult(graph, bool(pairs))


def _pair(graph: Graph, conv1: Node) -> tuple[Node, Node] | None:
    """(conv1, the Conv its output reaches through homogeneous single-use ops), or None."""
    if graph.constant(conv1.inputs[1]) is None or (len(conv1.inputs) > 2 and conv1.inputs[2]
                                                   and graph.constant(conv1.inputs[2]) is None):
        return None
    if len(graph.consumers(conv1.inputs[1])) != 1:
        return None
    x = conv1.outputs[0]
    while True:
        if x in graph.outputs:
            return None
        readers = graph.consumer_nodes(x)
        if len(readers) != 1:
            return None
        node = readers[0]
        if node.op_type == "Conv":
            ok = node.inputs[0] == x and graph.constant(node.inputs[1]) is not None \
                and single_use(graph, node.inputs[1])
            return (conv1, node) if ok else None
        if node.op_type not in HOMOGENEOUS or node.inputs[0] != x or len(node.outputs) != 1:
            return None
        if node.op_type == "PRelu" and graph.constant(node.inputs[1]) is None:
            return None
        x = node.outputs[0]


def _equalize(graph: Graph, conv1: Node, conv2: Node) -> float:
    """Rescale one pair; the largest |log s_c| applied."""
    w1 = graph.constant(conv1.inputs[1]).astype(np.float64)
    w2 = graph.constant(conv2.inputs[1]).astype(np.float64)
    channels = w1.shape[0]
    group = int(conv2.attrs.get("group", 1))
    per_group = w2.shape[1]  # input channels each of conv2's groups reads
    if per_group * group != channels:
        return 0.0
    r1 = np.abs(w1).reshape(channels, -1).max(axis=1)
    # conv2's weights of input channel c: rows of c's group, column c % per_group
    rows = w2.shape[0] // group
    w2c = w2.reshape(group, rows, per_group, -1).transpose(0, 2, 1, 3).reshape(channels, -1)
    r2 = np.abs(w2c).max(axis=1)
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
    if np.allclose(s, 1.0, rtol=1e-6):
        return 0.0
    shape1 = (-1,) + (1,) * (w1.ndim - 1)
    _set(graph, conv1, 1, w1 / s.reshape(shape1))
    if len(conv1.inputs) > 2 and conv1.inputs[2]:
        _set(graph, conv1, 2, graph.constant(conv1.inputs[2]).astype(np.float64) / s)
    scale2 = s.reshape(group, 1, per_group).repeat(rows, axis=1).reshape(w2.shape[0], per_group)
    _set(graph, conv2, 1, w2 * scale2.reshape(scale2.shape + (1,) * (w2.ndim - 2)))
    return float(np.abs(np.log(s)).max())


def _set(graph: Graph, node: Node, index: int, array: np.ndarray) -> None:
    """Conv input ``index`` takes ``array`` (in its dtype): in place when only this node reads
    the constant, else as a new constant."""
    name = node.inputs[index]
    array = np.asarray(array, graph.constant(name).dtype)
    if single_use(graph, name):
        graph.value(name).const = array
        return
    new = graph.unique_name(f"{name}_cle")
    graph.add_constant(new, array)
    graph.set_input(node, index, new)
