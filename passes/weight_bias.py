"""Bias correction for weight-only quantization (MindSpore WEIGHT_QUANT's ``bias_correction``):
rounding a weight shifts the mean of its layer's output by ``(W - Q(W)) · E[x]``; adding that to
the layer's bias puts the mean back (Nagel et al. 2019, "Data-Free Quantization", §4.2, with
``E[x]`` measured on the data instead of predicted from BatchNorm).

:func:`input_means` measures ``E[x]`` per input channel of each layer in one streaming pass of
the float graph (per-channel sums only: memory does not grow with the data); :func:`bias_shift`
turns a weight's rounding error into the per-output-channel shift; :func:`add_bias` writes it
(Conv's bias input, Gemm's C, an Add after a MatMul).  The mean is of what each weight
multiplies: per input channel for MatMul and Gemm, per (channel, kernel offset) over the windows
a Conv reads (padding zeros included), so the layer's own output-mean shift is removed exactly.
ConvTranspose and tables get none.
"""
from __future__ import annotations

import numpy as np

from ptqc.errors import ConfigError
from ptqc.ir import Graph, Node
from ptqc.pass_manager import PassContext
from ptqc.passes.calibrate import stream_tensors

CORRECTED = ("Conv", "MatMul", "Gemm")


def input_means(graph: Graph, ctx: PassContext, nodes: list[Node], what: str) -> dict[str, np.ndarray]:
    """Per layer (node name or id): the mean of what its weight multiplies over ``ctx.data``: per
    input channel (the last axis) for MatMul/Gemm; for a Conv per (channel, kernel offset), over
    the windows it reads, padding zeros included (``[C, *kernel]``)."""
    sums: dict[int, list] = {}

    def visit(values: dict) -> None:
        for n in nodes:
            v = np.asarray(values[n.inputs[0]], np.float64)
            total, count = _window_sums(n, v, graph) if n.op_type == "Conv" else \
                (v.reshape(-1, v.shape[-1]).sum(axis=0), v.size // v.shape[-1])
            s = sums.setdefault(n.id, [0.0, 0])
            s[0], s[1] = s[0] + total, s[1] + count
    stream_tensors(graph, ctx, sorted({n.inputs[0] for n in nodes}), visit, what)
    return {i: total / max(count, 1) for i, (total, count) in sums.items()}


def _window_sums(node: Node, x: np.ndarray, graph: Graph) -> tuple[np.ndarray, int]:
    """Sum over batch and output positions of the input each kernel offset reads: ``[C, *kernel]``,
    and the count of windows."""
    kernel = list(graph.constant(node.inputs[1]).shape[2:])
    nd = len(kernel)
    a = node.attrs
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise ConfigError(f"bias correction: Conv {node.name!r} with auto_pad: give explicit pads")
    pads = list(a.get("pads") or [0] * 2 * nd)
    strides, dil = list(a.get("strides") or [1] * nd), list(a.get("dilations") or [1] * nd)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    out = [(xp.shape[2 + i] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    sums = np.zeros((x.shape[1], *kernel))
    for k in np.ndindex(*kernel):
        window = tuple(slice(k[i] * dil[i], k[i] * dil[i] + strides[i] * (out[i] - 1) + 1, strides[i]) for i in range(nd))
        sums[(slice(None),) + k] = xp[(slice(None), slice(None)) + window].sum(axis=tuple([0] + list(range(2, 2 + nd))))
    return sums, x.shape[0] * int(np.prod(out))


def bias_shift(node: Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(W - Q(W)) · E[x]`` per output channel; ``error`` is ``W - Q(W)`` in the weight's own layout."""
    e = np.asarray(error, np.float64)
    if node.op_type == "Conv":  # mean: [C, *kernel]
        groups = int(node.attrs.get("group", 1))
        m = np.asarray(mean).reshape(groups, -1)  # [g, C/g * prod(kernel)]
        return np.einsum("ok,ok->o", e.reshape(e.shape[0], -1), np.repeat(m, e.shape[0] // groups, axis=0))
    if node.op_type == "Gemm" and node.attrs.get("transB", 0):
        return e @ mean
    return mean @ e  # MatMul, Gemm without transB: W is [K, N]


def add_bias(graph: Graph, node: Node, delta: np.ndarray) -> None:
    """``delta`` added to the layer's output: into Conv's bias or Gemm's constant C, else by an Add."""
    delta = np.asarray(delta, np.float32)
    slot = {"Conv": 2, "Gemm": 2}.get(node.op_type)
    if slot is not None:
        beta = float(node.attrs.get("beta", 1.0)) if node.op_type == "Gemm" else 1.0
        old = node.inputs[slot] if len(node.inputs) > slot and node.inputs[slot] else None
        c = graph.constant(old) if old else np.zeros_like(delta)
        if c is not None and beta != 0.0:
            new = (np.asarray(c, np.float32) + delta / np.float32(beta)).astype(np.float32)
            name = graph.add_constant(graph.unique_name(f"{old or node.name or 'layer'}_corrected"), new).name
            graph.set_input(node, slot, name)
            return
    out = node.outputs[0]
    raw = graph.unique_name(f"{out}_uncorrected")
    graph.set_output(node, 0, raw)
    shift = graph.add_constant(graph.unique_name(f"{out}_bias_correction"), delta).name
    graph.add_node("Add", [raw, shift], [out], name=graph.unique_name(f"{node.name or out}_bias_correction"))
