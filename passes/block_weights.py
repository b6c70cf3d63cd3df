"""BlockWeights: onnxruntime's ``extra_options={"BlockSize": b}``: every quantized constant
MatMul weight ``B [K, N]`` gets one scale (and zero point) per block of ``b`` rows along K and
per column: ``scale [ceil(K / b), N]``, written as opset-21 Q/DQ with ``axis=0, block_size=b``
(finer than per column where a few large weights would set the scale of the whole column).

Each block's parameters come from its own values, in the weight's type and symmetry (and
reduce_range).  Only rank-2 MatMul weights: a Conv, Gemm or ConvTranspose weight, or a
MatMul weight read by another op too, is refused naming the node (ONNX's blocked
DequantizeLinear needs the scale at the weight's rank, and a bias would need one scale per
output channel).  Runs after PropagateRanges, before InsertQDQ; the model must be opset 21.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ptqc.errors import ConfigError
from ptqc.ir import Graph
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.quant import QuantParam, qparam_from_range
from ptqc.vocab import Analysis, Meta

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class BlockWeights(Pass):
    """Blocked parameters for every quantized constant MatMul weight."""

    requires = (Analysis.QUANT_PARAMS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS,
                 Analysis.QUANT_PARAMS)

    def __init__(self, block_size: int):
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 2:
            raise ConfigError(f"BlockSize {block_size!r}: expected an integer of at least 2")
        self.block_size = block_size

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        count = 0
        for node in graph.topological_order():
            w = node.inputs[1] if len(node.inputs) > 1 and node.op_type in _WEIGHTED else None
            v = graph.value(w) if w else None
            if v is None or v.const is None or Meta.QUANT not in v.meta:
                continue
            if node.op_type != "MatMul" or v.const.ndim != 2 or len(graph.consumers(w)) > 1:
                raise ConfigError(f"BlockSize: node {node.name or node.op_type!r} ({node.op_type}, weight {w!r} of "
                                  f"rank {v.const.ndim}): blocks are built for rank-2 MatMul weights only")
            v.meta[Meta.QUANT] = blocked(v.const, v.meta[Meta.QUANT], self.block_size, w)
            count += 1
        ctx.logger.info("BlockSize %d: %d MatMul weights blocked", self.block_size, count)
        return PassResult(graph, count > 0)


def blocked(w: np.ndarray, p: QuantParam, block: int, name: str = "") -> QuantParam:
    """``p``'s type and symmetry with one scale per ``block`` rows of ``w [K, N]`` per column."""
    k, n = w.shape
    padded = np.full((-(-k // block) * block, n), np.nan, np.float32)
    padded[:k] = w
    blocks = padded.reshape(-1, block, n)
    lo, hi = np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)
    q = qparam_from_range(lo, hi, p.dtype, symmetric=p.symmetric, axis=0, method=p.method, name=name,
                          reduce_range=p.reduce_range)
    return dataclasses.replace(q, block_size=block)
