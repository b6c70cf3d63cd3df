"""The integer simulator: runs a lowered :class:`~ptqc.runtime.program.Program`.

- :meth:`Simulator.run` / :meth:`Simulator.infer`: outputs (integers where the model outputs
  integers, floats where it dequantizes), given float (or, for ``-qid`` inputs, integer) feeds.
- :meth:`Simulator.dump`: every tensor as ``.npy`` under a folder, named after the ONNX
  tensor it stands for, plus ``index.csv`` (file, ONNX tensor, dtype, scale, zero point).
- :meth:`Simulator.compare`: per layer, the dequantized integer result against the float
  model's tensor (cosine, max abs error, relative error), *graphwise* (errors accumulate)
  or *layerwise* (each op fed the float model's inputs, quantized).

Each op type of the program (``runtime/program.py``) has one function here (the ``_RUN``
table); integer ops run the numba kernels in ``runtime/kernels``, ``float`` ops the reference
executor.  Imports numpy, numba and ``ptqc.runtime`` only.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np

from ptqc.runtime.kernels import elementwise, linear, lut, norm, pool, recurrent, resize, softmax
from ptqc.runtime.kernels.requant import quantize_multiplier, requantize_accumulator, requantize_channels
from ptqc.runtime.program import (Add, Affine, AvgPool, Concat, Conv, ConvTranspose, Dequantize, Float, GlobalAvgPool,
                                  LayerNorm, Lut, LutInterp, MatMul, Move, Mul, Op, Program, Quantize, Recurrent,
                                  Requant, Rescale, RescaleOp, ResizeLinear, ResizeNearest, Softmax, TensorInfo, Window)
from ptqc.runtime.reference import run_node


class SimulationError(RuntimeError):
    """An op failed while simulating; the message names the op and the ONNX node."""


@dataclass
class LayerError:
    """One row of a comparison."""

    node: str
    op_type: str
    tensor: str  # the ONNX tensor compared
    cosine: float
    max_abs: float
    rel: float  # ||sim - float|| / ||float||


@dataclass(frozen=True, eq=False)
class _ConvLut(Op):
    """The simulator's own schedule (never in a program): a Conv whose only reader is a
    table op, run as one pass — the Conv's codes go through the table as they are made."""

    conv: Conv
    lut: Lut | LutInterp
    table: np.ndarray  # int64, of every code of the Conv's output
    in_qmin: int
    kind: ClassVar[str] = "conv+lut"


class Simulator:
    def __init__(self, program: Program):
        self.p = program
        self.saturated: dict[str, int] = {}  # node -> accumulator saturations seen
        self._plans: dict[int, object] = {}  # id(op) -> what is prepared once (weights, expanded tables)
        for op in program.ops:
            x = program.tensors.get(op.inputs[0]) if op.inputs else None
            if x is not None:
                prepare = _PREPARE.get(type(op))
                if prepare is not None:
                    self._plans[id(op)] = prepare(program, op, x)
        self._fast = _fuse_conv_lut(program, self._plans)  # run() without dumps or hooks
        self._last_use = {id(ops): _last_use(ops) for ops in (program.ops, self._fast)}

    @property
    def schedule(self) -> list[Op]:
        """The ops ``infer`` runs, in order: the program's, a fused Conv + table pair as one."""
        return list(self._fast)

    # ------------------------------------------------------------------ running
    def run(self, feeds: Mapping[str, np.ndarray], keep_all: bool = False,
            on_op: Callable[[Op, list[np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
        """The program's outputs for ``feeds`` (every tensor with ``keep_all``; ``on_op`` sees
        each op's outputs).  Without either, fused pairs run as one (same codes)."""
        env: dict[str, np.ndarray] = dict(self.p.constants)
        for name in self.p.inputs:
            if name not in feeds:
                raise SimulationError(f"input {name!r} is not fed")
            env[name] = np.asarray(feeds[name])
        keep = set(self.p.outputs)
        ops = self.p.ops if keep_all or on_op is not None else self._fast
        last_use = self._last_use[id(ops)]
        for i, op in enumerate(ops):
            outs = self.run_op(op, env)
            for name, value in zip(op.outputs, outs):
                if name:
                    env[name] = value
            if on_op is not None:
                on_op(op, outs)
            if not keep_all:
                for x in set(op.inputs):
                    if x and last_use.get(x) == i and x not in keep and x not in self.p.constants:
                        env.pop(x, None)
        if keep_all:
            return {k: v for k, v in env.items() if k not in self.p.constants or k in keep}
        return {o: env[o] for o in self.p.outputs}

    def infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out = self.run(feeds)
        return [out[o] for o in self.p.outputs]

    def run_op(self, op: Op, env: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            args = [env[x] if x else None for x in op.inputs]
        except KeyError as e:
            raise SimulationError(f"{op.kind} for node {op.node!r} ({op.op_type}): input {e.args[0]!r} has no value") from None
        try:
            out = _RUN[type(op)](self, op, args)
        except SimulationError:
            raise
        except Exception as e:  # noqa: BLE001 - one named error per failing op
            raise SimulationError(f"{op.kind} for node {op.node!r} ({op.op_type}): {type(e).__name__}: {e}") from e
        return out if isinstance(out, list) else [out]

    # ------------------------------------------------------------------ dump / compare
    def dump(self, feeds: Mapping[str, np.ndarray], folder: str | os.PathLike) -> list[Path]:
        """Every tensor of one run as ``folder/<onnx tensor>.npy`` (integer codes for integer
        tensors; ``index.csv`` gives their scale and zero point).  Atomic per file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        rows, written = [], []
        env = self.run(feeds, keep_all=True)
        for op in self.p.ops:
            for name in op.outputs:
                if not name or name not in env:
                    continue
                info = self.p.tensors.get(name)
                source = info.source if info else name
                file = _safe(source) + ("_int" if info else "") + ".npy"
                tmp = folder / f".{file}.tmp"
                with open(tmp, "wb") as f:
                    np.save(f, env[name])
                os.replace(tmp, folder / file)
                written.append(folder / file)
                rows.append([file, source, op.node, env[name].dtype, info.scale if info else "",
                             info.zero_point if info else ""])
        tmp = folder / ".index.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "onnx_tensor", "node", "dtype", "scale", "zero_point"])
            w.writerows(rows)
        os.replace(tmp, folder / "index.csv")
        return written

    def compare(self, feeds: Mapping[str, np.ndarray], float_values: Mapping[str, np.ndarray],
                mode: str = "graphwise") -> list[LayerError]:
        """Per integer op (in program order), its dequantized output against
        ``float_values[onnx tensor]`` (the float model's tensors for the same feeds)."""
        if mode not in ("graphwise", "layerwise"):
            raise ValueError(f"compare mode {mode!r}: graphwise or layerwise")
        rows: list[LayerError] = []

        def record(op: Op, outs: list[np.ndarray]) -> None:
            for name, value in zip(op.outputs, outs):
                info = self.p.tensors.get(name)
                if info is None or op.kind in ("quantize", "float") or info.source not in float_values:
                    continue
                rows.append(_error(op, info.source, info.dequantize(value), float_values[info.source]))

        if mode == "graphwise":
            self.run(feeds, on_op=record)
            return rows
        for op in self.p.ops:
            if op.kind in ("quantize", "dequantize", "float"):
                continue
            env = {}
            for x in op.inputs:
                if not x:
                    continue
                if x in self.p.constants:
                    env[x] = self.p.constants[x]
                    continue
                info = self.p.tensors.get(x)
                source = info.source if info else x
                if source not in float_values:
                    break
                env[x] = info.quantize(float_values[source]) if info else float_values[source]
            else:
                record(op, self.run_op(op, env))
        return rows


def _error(op: Op, tensor: str, got: np.ndarray, want: np.ndarray) -> LayerError:
    a = np.asarray(got, np.float64).reshape(-1)
    b = np.asarray(want, np.float64).reshape(-1)
    if a.shape != b.shape:
        return LayerError(op.node, op.op_type, tensor, float("nan"), float("nan"), float("nan"))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    diff = a - b
    return LayerError(op.node, op.op_type, tensor, cos, float(np.abs(diff).max(initial=0.0)),
                      float(np.linalg.norm(diff) / nb) if nb > 0 else float(np.linalg.norm(diff)))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _last_use(ops: Sequence[Op]) -> dict[str, int]:
    """Tensor -> index of the last op of ``ops`` reading it."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for x in op.inputs:
            if x:
                last[x] = i
    return last


def _fuse_conv_lut(p: Program, plans: dict[int, object]) -> list[Op]:
    """``p.ops`` with each Conv whose output only a Lut / LutInterp reads (and is no program
    output) merged with it into one :class:`_ConvLut`."""
    readers: dict[str, list[Op]] = {}
    for op in p.ops:
        for x in set(op.inputs):
            readers.setdefault(x, []).append(op)
    merged: dict[int, Op] = {}
    for op in p.ops:
        if type(op) is not Conv or op.outputs[0] in p.outputs:
            continue
        users = readers.get(op.outputs[0], [])
        if len(users) != 1 or type(users[0]) not in (Lut, LutInterp):
            continue
        lut_op = users[0]
        table, in_qmin = _table(p, plans, lut_op)
        if table is not None:
            merged[id(op)] = _ConvLut(op.inputs, lut_op.outputs, op.node, f"{op.op_type}+{lut_op.op_type}", op, lut_op,
                                      table, in_qmin)
            merged[id(lut_op)] = None
    return [merged.get(id(op), op) for op in p.ops if merged.get(id(op), op) is not None]


def _table(p: Program, plans: dict[int, object], op: Lut | LutInterp) -> tuple[np.ndarray | None, int]:
    """(int64 table of every input code, the first code) of a table op, or (None, 0) when
    its entries do not fit the output type."""
    table = p.constants[op.table] if isinstance(op, Lut) else plans.get(id(op))
    in_qmin = op.in_qmin if isinstance(op, Lut) else p.tensors[op.inputs[0]].qmin
    if table is None:
        return None, 0
    table = np.ascontiguousarray(table, np.int64)
    info = p.tensors[op.outputs[0]]
    if table.size and not info.qmin <= table.min() <= table.max() <= info.qmax:
        return None, 0
    return table, in_qmin


# ---------------------------------------------------------------------------- preparation
def _prepare_conv(p: Program, op: Conv, x: TensorInfo):
    c = p.constants
    plan = linear.ConvTransposePlan if isinstance(op, ConvTranspose) else linear.ConvPlan
    return plan(c[op.w], c[op.w_zp], x.dtype, op.zp_in, op.group)


def _prepare_matmul(p: Program, op: MatMul, x: TensorInfo):
    if op.b_zp is None:  # B is an activation: nothing to prepare
        return None
    return linear.MatMulPlan(p.constants[op.inputs[1]], p.constants[op.b_zp], x.dtype, op.zp_in)


def _prepare_lut_interp(p: Program, op: LutInterp, x: TensorInfo) -> np.ndarray:
    """The interpolation of every input code, once: identical results, and each run is a
    gather instead of a multiply-round."""
    codes = np.arange(x.qmin, x.qmax + 1).astype(x.dtype)
    return lut.apply_table_interp(codes, p.constants[op.table], op.in_qmin, op.step_log2, op.lo, op.hi, p.rounding,
                                  np.int64)


_PREPARE: dict[type, Callable] = {Conv: _prepare_conv, ConvTranspose: _prepare_conv, MatMul: _prepare_matmul,
                                  LutInterp: _prepare_lut_interp}


# ---------------------------------------------------------------------------- op kinds
def _info(sim: Simulator, op: Op) -> TensorInfo:
    return sim.p.tensors[op.outputs[0]]


def _quantize(sim: Simulator, op: Quantize, a: list) -> np.ndarray:
    info = _info(sim, op)
    return elementwise.quantize_float(a[0], info.scale, info.zero_point, info.dtype)


def _dequantize(sim: Simulator, op: Dequantize, a: list) -> np.ndarray:
    q = a[0]
    scale = np.asarray(sim.p.constants[op.scale], np.float32)
    zp = sim.p.constants[op.zp]
    if op.block_size and scale.size > 1:  # block-wise (opset 21): scale has q's rank, axis shortened by the block
        axis = op.axis % q.ndim
        zp = np.broadcast_to(zp, scale.shape)
        scale = np.repeat(scale, op.block_size, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        zp = np.repeat(zp, op.block_size, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
    elif scale.size > 1:
        shape = [1] * q.ndim
        shape[op.axis % q.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    else:  # per tensor: one pass
        return elementwise.dequantize_codes(q, scale.reshape(-1)[0], int(zp.reshape(-1)[0]))
    return ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def _requant(sim: Simulator, op: Op, r: Requant, acc: np.ndarray, axis: int) -> np.ndarray:
    """A linear op's accumulator through ``r`` (per channel along ``axis``), saturations counted."""
    bias = sim.p.constants[r.bias] if r.bias is not None else None
    out, saturated = requantize_accumulator(acc, bias, r.acc_bits, r.mult, r.shift, r.zp_out, r.lo, r.hi,
                                            sim.p.rounding, _info(sim, op).dtype, axis)
    if saturated:
        sim.saturated[op.node] = sim.saturated.get(op.node, 0) + saturated
    return out


def _window(w: Window, x: np.ndarray, transpose: bool = False, out_shape: Sequence[int] = (),
            output_padding: Sequence[int] = ()) -> tuple[tuple, tuple, tuple]:
    """(strides, explicit pads, dilations) of a window over ``x``: ``auto_pad`` SAME_* (and a
    ConvTranspose's ``output_shape``) resolved against the input's size."""
    nd = x.ndim - 2
    strides, dil, pads = w.strides, w.dilations, w.pads
    if w.auto_pad in ("SAME_UPPER", "SAME_LOWER") or (transpose and out_shape):
        pads = [0] * (2 * nd)
        for i in range(nd):
            size, k = x.shape[2 + i], (w.kernel[i] - 1) * dil[i] + 1
            if transpose:
                target = out_shape[i] if out_shape else size * strides[i]
                opad = output_padding[i] if output_padding else 0
                total = strides[i] * (size - 1) + opad + k - target
            else:
                total = max((math.ceil(size / strides[i]) - 1) * strides[i] + k - size, 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[nd + i] = (small, big) if w.auto_pad != "SAME_LOWER" else (big, small)
    elif w.auto_pad == "VALID":
        pads = [0] * (2 * nd)
    return tuple(strides), tuple(pads), tuple(dil)


def _conv(sim: Simulator, op: Conv, a: list, table: np.ndarray | None = None, in_qmin: int = 0,
          dtype=None) -> np.ndarray:
    """A Conv to its output codes, or (``table``) to those codes through a table op's table."""
    x, plan, r = a[0], sim._plans[id(op)], op.requant
    strides, pads, dil = _window(op.window, x)
    dtype = _info(sim, op).dtype if dtype is None else dtype
    bias = sim.p.constants[r.bias] if r.bias is not None else None
    if plan.depthwise:  # the requantization fused into the kernel's loops
        out, saturated = linear.depthwise_requantized(plan, x, strides, pads, dil, bias, r.acc_bits, r.mult, r.shift,
                                                      r.zp_out, r.lo, r.hi, sim.p.rounding, dtype, table, in_qmin)
    else:
        acc = linear.conv_planned(plan, x, strides, pads, dil)
        out, saturated = requantize_accumulator(acc, bias, r.acc_bits, r.mult, r.shift, r.zp_out, r.lo, r.hi,
                                                sim.p.rounding, dtype, 1, table, in_qmin)
    if saturated:
        sim.saturated[op.node] = sim.saturated.get(op.node, 0) + saturated
    return out


def _conv_lut(sim: Simulator, op: _ConvLut, a: list) -> np.ndarray:
    return _conv(sim, op.conv, a, op.table, op.in_qmin, _info(sim, op).dtype)


def _conv_transpose(sim: Simulator, op: ConvTranspose, a: list) -> np.ndarray:
    x = a[0]
    strides, pads, dil = _window(op.window, x, True, op.output_shape, op.output_padding)
    opad = op.output_padding or (0,) * (x.ndim - 2)
    acc = linear.conv_transpose_planned(sim._plans[id(op)], x, strides, pads, dil, opad)
    return _requant(sim, op, op.requant, acc, 1)


def _affine(sim: Simulator, op: Affine, a: list) -> np.ndarray:
    """Per-channel (axis 1) ``sign · (q - zp)`` requantized with a bias: an unfused BN."""
    x = a[0]
    shape = [1] * x.ndim
    shape[1] = -1
    acc = (x.astype(np.int64) - op.zp_in) * sim.p.constants[op.sign].reshape(shape)
    return _requant(sim, op, op.requant, acc, 1)


def _matmul(sim: Simulator, op: MatMul, a: list) -> np.ndarray:
    plan = sim._plans.get(id(op))
    if plan is not None:  # a constant B, prepared once
        acc = linear.matmul_planned(plan, a[0])
    else:
        acc = linear.int_matmul(a[0].astype(np.int32) - op.zp_in, a[1].astype(np.int32) - op.zp_b)
    return _requant(sim, op, op.requant, acc, -1)


def _add(sim: Simulator, op: Add, a: list) -> np.ndarray:
    return elementwise.add_int(a[0], op.zp_a, op.mult_a, a[1], op.zp_b, op.mult_b, op.shift, op.zp_out, op.lo, op.hi,
                               sim.p.rounding, _info(sim, op).dtype)


def _mul(sim: Simulator, op: Mul, a: list) -> np.ndarray:
    return elementwise.mul_int(a[0], op.zp_a, a[1], op.zp_b, op.mult, op.shift, op.zp_out, op.lo, op.hi,
                               sim.p.rounding, _info(sim, op).dtype)


def _rescale_with(sim: Simulator, q: np.ndarray, r: Rescale, dtype) -> np.ndarray:
    return elementwise.rescale(q, r.zp_in, r.mult, r.shift, r.zp_out, r.lo, r.hi, sim.p.rounding, dtype)


def _rescale(sim: Simulator, op: RescaleOp, a: list) -> np.ndarray:
    return _rescale_with(sim, a[0], op.rescale, _info(sim, op).dtype)


def _concat(sim: Simulator, op: Concat, a: list) -> np.ndarray:
    dtype = _info(sim, op).dtype
    return np.concatenate([_rescale_with(sim, q, r, dtype) for q, r in zip(a, op.parts)], axis=op.axis)


def _lut(sim: Simulator, op: Lut, a: list) -> np.ndarray:
    return lut.apply_table(a[0], sim.p.constants[op.table], op.in_qmin, _info(sim, op).dtype)


def _lut_interp(sim: Simulator, op: LutInterp, a: list) -> np.ndarray:
    expanded = sim._plans.get(id(op))
    x_info = sim.p.tensors[op.inputs[0]]
    if expanded is not None and a[0].dtype == x_info.dtype:
        return lut.apply_table(a[0], expanded, x_info.qmin, _info(sim, op).dtype)
    return lut.apply_table_interp(a[0], sim.p.constants[op.table], op.in_qmin, op.step_log2, op.lo, op.hi,
                                  sim.p.rounding, _info(sim, op).dtype)


def _softmax(sim: Simulator, op: Softmax, a: list) -> np.ndarray:
    x = a[0]
    axis = op.axis % x.ndim
    shape = x.shape
    if op.coerce_2d:  # opset < 13: softmax over the flattened dims from axis on
        x = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
        axis = 1
    out = softmax.softmax_int(x, axis, sim.p.constants[op.table], op.out_scale, op.zp_out, op.lo, op.hi,
                              _info(sim, op).dtype)
    return out.reshape(shape)


def _layernorm(sim: Simulator, op: LayerNorm, a: list) -> np.ndarray:
    c = sim.p.constants
    gamma = c[op.gamma] if op.gamma else np.ones(1)
    beta = c[op.beta] if op.beta else np.zeros(1)
    return norm.layernorm_mixed(a[0], op.zp_in, op.in_scale, op.axis, gamma, beta, op.epsilon, op.out_scale,
                                op.zp_out, op.lo, op.hi, _info(sim, op).dtype)


def _avgpool(sim: Simulator, op: AvgPool, a: list) -> np.ndarray:
    x = a[0]
    strides, pads, _ = _window(op.window, x)
    acc, count = pool.avg_pool_int(x, op.zp_in, op.window.kernel, strides, pads, op.window.ceil_mode,
                                   op.count_include_pad)
    c = sim.p.constants
    return pool.requantize_by_count(acc, count, c[op.mult], c[op.shift], op.zp_out, op.lo, op.hi, sim.p.rounding,
                                    _info(sim, op).dtype)


def _global_avgpool(sim: Simulator, op: GlobalAvgPool, a: list) -> np.ndarray:
    x, r = a[0], op.requant
    n = int(np.prod(x.shape[2:], dtype=np.int64))
    m, s = r.mult, r.shift
    if n != op.count:  # the spatial size was not static at lowering: the multiplier for this one
        m, s = quantize_multiplier(op.ratio / n, _mult_bits(x, n))
    acc = pool.global_avg_pool_int(x, op.zp_in)
    return requantize_channels(acc, m, s, r.zp_out, r.lo, r.hi, sim.p.rounding, _info(sim, op).dtype, None)


def _mult_bits(x: np.ndarray, gain: int) -> int:
    """Multiplier width for an accumulator of ``|x - zp| <= 2^bits`` codes times ``gain``:
    31 bits, fewer when acc · M would pass 2^62 (lowering's ``mult_bits``)."""
    acc_bits = np.dtype(x.dtype).itemsize * 8 + 1 + int(math.ceil(math.log2(max(gain, 1))))
    return min(31, 62 - acc_bits)


def _resize_size(op: Op, a: list) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(output spatial size, scales) of the resized trailing axes, per the ONNX rules."""
    x = a[0]
    scales = a[2] if len(a) > 2 and a[2] is not None and a[2].size else None
    sizes = a[3] if len(a) > 3 and a[3] is not None and a[3].size else None
    if scales is None and len(a) == 2 and a[1] is not None and a[1].dtype.kind == "f":  # opset 10 (X, scales)
        scales = a[1]
    if sizes is not None:
        out = tuple(int(s) for s in sizes)
        sc = tuple(o / i for o, i in zip(out, x.shape))
    else:
        sc = tuple(float(s) for s in scales)
        out = tuple(int(math.floor(i * s)) for i, s in zip(x.shape, sc))
    k = next((i for i in range(x.ndim) if out[i] != x.shape[i] or sc[i] != 1.0), x.ndim)
    if k < x.ndim - 2:
        raise SimulationError(f"Resize {op.node!r}: only the last two axes may be resized")
    return out[x.ndim - 2:], sc[x.ndim - 2:]


def _resize_nearest(sim: Simulator, op: ResizeNearest, a: list) -> np.ndarray:
    size, scales = _resize_size(op, a)
    q = resize.resize_nearest_int(a[0], size, scales, op.coordinate_mode, op.nearest_mode)
    return _rescale_with(sim, q, op.rescale, _info(sim, op).dtype)


def _resize_linear(sim: Simulator, op: ResizeLinear, a: list) -> np.ndarray:
    size, scales = _resize_size(op, a)
    acc = resize.resize_linear_int(a[0], op.zp_in, size, scales, op.coordinate_mode, op.frac_bits)
    r = op.requant
    return requantize_channels(acc, r.mult, r.shift, r.zp_out, r.lo, r.hi, sim.p.rounding, _info(sim, op).dtype, None)


def _pad(sim: Simulator, op: Move, a: list) -> np.ndarray:
    """Pad on codes: the input requantized to the output's quantization first (elementwise, so
    it commutes with the data movement), then padded — constant mode with ``pad_code``, the pad
    value already quantized by the output's QuantizeLinear (saturating) in lowering."""
    dtype = _info(sim, op).dtype
    x = _rescale_with(sim, a[0], op.rescale, dtype) if op.rescale else a[0]
    oa = dict(op.onnx_attrs)
    inputs = [x, *a[1:]]
    if op.pad_code is not None:
        if sim.p.opset < 11:
            oa["value"] = op.pad_code
        else:
            inputs += [None] * (3 - len(inputs))
            inputs[2] = np.asarray(op.pad_code, dtype)
    return run_node("Pad", inputs, oa, opset=sim.p.opset, name=op.node)[0].astype(dtype, copy=False)


def _move(sim: Simulator, op: Move, a: list) -> list[np.ndarray]:
    if op.op_type == "Pad":
        return [_pad(sim, op, a)]
    oa = op.onnx_attrs
    if op.op_type == "MaxPool":
        kernel = tuple(int(k) for k in oa["kernel_shape"])
        nd = len(kernel)
        w = Window(kernel, tuple(oa.get("strides", [1] * nd)), tuple(oa.get("pads", [0] * (2 * nd))),
                   tuple(oa.get("dilations", [1] * nd)), _attr_str(oa, "auto_pad", "NOTSET"))
        strides, pads, dil = _window(w, a[0])
        outs = [pool.max_pool_int(a[0], kernel, strides, pads, dil, int(oa.get("ceil_mode", 0)))]
    else:
        outs = run_node(op.op_type, a, oa, opset=sim.p.opset, name=op.node, n_outputs=op.n_outputs)
    if op.rescale:
        dtype = _info(sim, op).dtype
        outs = [_rescale_with(sim, o, op.rescale, dtype) for o in outs]
    return outs[:len(op.outputs)]


def _attr_str(oa: dict, key: str, default: str) -> str:
    v = oa.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _recurrent(sim: Simulator, op: Recurrent, a: list) -> list[np.ndarray]:
    """RNN/GRU/LSTM on ``kernels.recurrent`` (every multiplier and table from lowering):
    per direction the input part of all steps at once, then the steps."""
    c, mode = sim.p.constants, sim.p.rounding
    x = a[0] if op.layout == 0 else np.swapaxes(a[0], 0, 1)  # [T, B, I]
    n_t, n_b = x.shape[:2]
    lens = np.full(n_b, n_t, np.int64) if a[1] is None else np.asarray(a[1], np.int64).reshape(-1)
    hidden = c[op.r].shape[2]
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(op.reverse):
        acc = linear.int_matmul(x.astype(np.int32) - op.zp_in, np.ascontiguousarray(c[op.w][d].T))
        xg, saturated = requantize_accumulator(acc, None, op.x_acc_bits, c[op.mx][d], c[op.sx][d], 0,
                                               -(1 << 62), 1 << 62, mode, np.int64, -1)
        xg += c[op.bias][d]  # Wb + Rb in Q4.11
        if saturated:
            sim.saturated[op.node] = sim.saturated.get(op.node, 0) + saturated
        states = []
        for i, (fmt, bits) in enumerate(((op.h0, 16), (op.c0, 32))):
            q = a[2 + i]
            if q is None or fmt is None:
                states.append(np.zeros((n_b, hidden), np.int64))
                continue
            q = q[d] if op.layout == 0 else q[:, d]
            m, s, zp = fmt
            states.append(requantize_channels(q.astype(np.int64) - zp, m, s, 0, -(1 << (bits - 1)), (1 << (bits - 1)) - 1,
                                              mode, np.int64, None))
        y, h, cell = recurrent.recurrent_int(op.cell, xg, c[op.r][d], c[op.mh][d], c[op.sh][d], c[op.rbn][d],
                                             op.h_acc_bits, lens, reverse, states[0], states[1], c[op.sig],
                                             c[op.tanh], op.step_log2, op.lbr, mode)
        ys.append(y)
        hs.append(h)
        cs.append(cell)
    layout1 = op.layout == 1
    y_all = np.stack(ys, 1)  # [T, D, B, H]
    values = [y_all.transpose(2, 0, 1, 3) if layout1 else y_all,
              np.stack(hs, 1 if layout1 else 0), np.stack(cs, 1 if layout1 else 0)]
    out = []
    for name, value, rq in zip(op.outputs, values, op.requant):
        if not name:
            out.append(None)
            continue
        info = sim.p.tensors[name]
        out.append(requantize_channels(value.astype(np.int64), rq[0], rq[1], info.zero_point, info.qmin, info.qmax,
                                       mode, info.dtype, None))
    return out


def _float(sim: Simulator, op: Float, a: list) -> list[np.ndarray]:
    return run_node(op.op_type, a, op.onnx_attrs, domain=op.domain, opset=sim.p.opset, name=op.node,
                    n_outputs=len(op.outputs))


_RUN: dict[type, Callable] = {
    Quantize: _quantize, Dequantize: _dequantize, Affine: _affine, Conv: _conv, ConvTranspose: _conv_transpose,
    MatMul: _matmul, Add: _add, Mul: _mul, RescaleOp: _rescale, Concat: _concat, Lut: _lut, LutInterp: _lut_interp,
    Softmax: _softmax, LayerNorm: _layernorm, AvgPool: _avgpool, GlobalAvgPool: _global_avgpool,
    ResizeNearest: _resize_nearest, ResizeLinear: _resize_linear, Move: _move, Float: _float, Recurrent: _recurrent,
    _ConvLut: _conv_lut,
}
