"""The integer simulator: runs a lowered :class:`~ptqc.runtime.program.Program`.

- :meth:`Simulator.run` / :meth:`Simulator.infer`: outputs (integers where the model outputs
  integers, floats where it dequantizes), given float (or, for ``-qid`` inputs, integer) feeds.
- :meth:`Simulator.dump`: every tensor as ``.npy`` under a folder, named after the ONNX
  tensor it stands for, plus ``index.csv`` (file, ONNX tensor, dtype, scale, zero point).
- :meth:`Simulator.compare`: per layer, the dequantized integer result against the float
  model's tensor (cosine, max abs error, relative error), *graphwise* (errors accumulate)
  or *layerwise* (each op fed the float model's inputs, quantized).

Integer ops run the numba kernels in ``runtime/kernels``; ``float`` ops run the reference
executor.  Imports numpy, numba and ``ptqc.runtime`` only.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptqc.runtime.kernels import elementwise, linear, lut, norm, pool, recurrent, resize, softmax
from ptqc.runtime.kernels.requant import quantize_multiplier, requantize_accumulator, requantize_channels
from ptqc.runtime.program import Op, Program, TensorInfo
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


class Simulator:
    def __init__(self, program: Program):
        self.p = program
        self.saturated: dict[str, int] = {}  # node -> accumulator saturations seen
        last: dict[str, int] = {}
        for i, op in enumerate(program.ops):
            for x in op.inputs:
                if x:
                    last[x] = i
        self._last_use = last
        self._plans: dict[int, object] = {}  # id(op) -> weights prepared once (ConvPlan / MatMulPlan)
        for op in program.ops:
            x = program.tensors.get(op.inputs[0]) if op.inputs else None
            if op.kind == "conv" and x is not None:
                c = program.constants
                self._plans[id(op)] = linear.ConvPlan(c[op.attrs["w"]], c[op.attrs["w_zp"]], x.dtype, x.zero_point,
                                                      int(op.attrs["onnx_attrs"].get("group", 1)))
            elif op.kind == "lut_interp" and x is not None:  # the interpolation of every input code, once:
                at = op.attrs  # identical results, and each run is a gather instead of a multiply-round
                codes = np.arange(x.qmin, x.qmax + 1).astype(x.dtype)
                self._plans[id(op)] = lut.apply_table_interp(codes, program.constants[at["table"]], at["in_qmin"],
                                                             at["step_log2"], at["lo"], at["hi"], program.rounding,
                                                             np.int64)
            elif op.kind == "conv_transpose" and x is not None:
                c = program.constants
                self._plans[id(op)] = linear.ConvTransposePlan(c[op.attrs["w"]], c[op.attrs["w_zp"]], x.dtype,
                                                               x.zero_point, int(op.attrs["onnx_attrs"].get("group", 1)))
            elif op.kind == "matmul" and x is not None and op.attrs["b_zp"] is not None:
                c = program.constants
                self._plans[id(op)] = linear.MatMulPlan(c[op.inputs[1]], c[op.attrs["b_zp"]], x.dtype, op.attrs["a_zp"])

    # ------------------------------------------------------------------ running
    def run(self, feeds: Mapping[str, np.ndarray], keep_all: bool = False,
            on_op: Callable[[Op, list[np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = dict(self.p.constants)
        for name in self.p.inputs:
            if name not in feeds:
                raise SimulationError(f"input {name!r} is not fed")
            env[name] = np.asarray(feeds[name])
        keep = set(self.p.outputs)
        for i, op in enumerate(self.p.ops):
            outs = self.run_op(op, env)
            for name, value in zip(op.outputs, outs):
                if name:
                    env[name] = value
            if on_op is not None:
                on_op(op, outs)
            if not keep_all:
                for x in set(op.inputs):
                    if x and self._last_use.get(x) == i and x not in keep and x not in self.p.constants:
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
            out = _KINDS[op.kind](self, op, args)
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


# ---------------------------------------------------------------------------- op kinds
def _info(sim: Simulator, op: Op) -> TensorInfo:
    return sim.p.tensors[op.outputs[0]]


def _quantize(sim: Simulator, op: Op, a: list) -> np.ndarray:
    info = _info(sim, op)
    x = np.asarray(a[0], np.float32)
    q = np.rint(x / np.float32(info.scale)).astype(np.float64) + info.zero_point
    return np.clip(q, info.qmin, info.qmax).astype(info.dtype)


def _dequantize(sim: Simulator, op: Op, a: list) -> np.ndarray:
    q = a[0]
    scale = np.asarray(sim.p.constants[op.attrs["scale"]], np.float32)
    zp = sim.p.constants[op.attrs["zp"]]
    block = op.attrs.get("block_size", 0)
    if block and scale.size > 1:  # block-wise (opset 21): scale has q's rank, axis shortened by the block size
        axis = op.attrs["axis"] % q.ndim
        zp = np.broadcast_to(zp, scale.shape)
        scale = np.repeat(scale, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        zp = np.repeat(zp, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
    elif scale.size > 1:
        shape = [1] * q.ndim
        shape[op.attrs["axis"] % q.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    return ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def _requant_linear(sim: Simulator, op: Op, acc: np.ndarray, axis: int) -> np.ndarray:
    at = op.attrs
    bias = sim.p.constants[at["bias"]] if at["bias"] is not None else None
    out, saturated = requantize_accumulator(acc, bias, at["acc_bits"], at["mult"], at["shift"], at["zp_out"], at["lo"],
                                            at["hi"], sim.p.rounding, _info(sim, op).dtype, axis)
    if saturated:
        sim.saturated[op.node] = sim.saturated.get(op.node, 0) + saturated
    return out


def _spatial_attrs(at: dict, x: np.ndarray, kernel: Sequence[int], transpose: bool = False,
                   out_shape: Sequence[int] | None = None) -> tuple[tuple, tuple, tuple]:
    nd = x.ndim - 2
    strides = tuple(int(s) for s in at.get("strides", [1] * nd))
    dil = tuple(int(d) for d in at.get("dilations", [1] * nd))
    pads = [int(p) for p in at.get("pads", [0] * (2 * nd))]
    auto = at.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER") or (transpose and out_shape):
        pads = [0] * (2 * nd)
        for i in range(nd):
            size, k = x.shape[2 + i], (kernel[i] - 1) * dil[i] + 1
            if transpose:
                target = out_shape[i] if out_shape else size * strides[i]
                opad = int(at.get("output_padding", [0] * nd)[i])
                total = strides[i] * (size - 1) + opad + k - target
            else:
                total = max((math.ceil(size / strides[i]) - 1) * strides[i] + k - size, 0)
            small, big = total // 2, total - total // 2
            upper = auto != "SAME_LOWER"
            pads[i], pads[nd + i] = (small, big) if upper else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return strides, tuple(pads), dil


def _conv(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at, c = op.attrs, sim.p.constants
    w, x = c[at["w"]], a[0]
    oa = at["onnx_attrs"]
    strides, pads, dil = _spatial_attrs(oa, x, w.shape[2:], op.kind == "conv_transpose", oa.get("output_shape"))
    if op.kind == "conv":
        acc = linear.conv_planned(sim._plans[id(op)], x, strides, pads, dil)
    else:
        nd = x.ndim - 2
        opad = tuple(int(v) for v in oa.get("output_padding", [0] * nd))
        acc = linear.conv_transpose_planned(sim._plans[id(op)], x, strides, pads, dil, opad)
    return _requant_linear(sim, op, acc, 1)


def _affine(sim: Simulator, op: Op, a: list) -> np.ndarray:
    """Per-channel (axis 1) ``sign · (q - zp)`` requantized with a bias: an unfused BN."""
    at, x = op.attrs, a[0]
    shape = [1] * x.ndim
    shape[1] = -1
    acc = (x.astype(np.int64) - at["zp_in"]) * sim.p.constants[at["sign"]].reshape(shape)
    return _requant_linear(sim, op, acc, 1)


def _matmul(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at = op.attrs
    plan = sim._plans.get(id(op))
    if plan is not None:  # a constant B, prepared once
        acc = linear.matmul_planned(plan, a[0])
    else:
        acc = linear.int_matmul(a[0].astype(np.int32) - at["a_zp"], a[1].astype(np.int32) - at["b_zp_scalar"])
    return _requant_linear(sim, op, acc, -1)


def _add(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at = op.attrs
    return elementwise.add_int(a[0], at["za"], at["ma"], a[1], at["zb"], at["mb"], at["shift"], at["zo"], at["lo"],
                               at["hi"], sim.p.rounding, _info(sim, op).dtype)


def _mul(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at = op.attrs
    return elementwise.mul_int(a[0], at["za"], a[1], at["zb"], at["mult"], at["shift"], at["zo"], at["lo"], at["hi"],
                               sim.p.rounding, _info(sim, op).dtype)


def _rescale_with(sim: Simulator, q: np.ndarray, r: dict, dtype) -> np.ndarray:
    return elementwise.rescale(q, r["zp_in"], r["mult"], r["shift"], r["zp_out"], r["lo"], r["hi"], sim.p.rounding,
                               dtype)


def _rescale(sim: Simulator, op: Op, a: list) -> np.ndarray:
    return _rescale_with(sim, a[0], op.attrs, _info(sim, op).dtype)


def _concat(sim: Simulator, op: Op, a: list) -> np.ndarray:
    dtype = _info(sim, op).dtype
    parts = [_rescale_with(sim, q, r, dtype) for q, r in zip(a, op.attrs["parts"])]
    return np.concatenate(parts, axis=op.attrs["axis"])


def _lut(sim: Simulator, op: Op, a: list) -> np.ndarray:
    table = sim.p.constants[op.attrs["table"]]
    return lut.apply_table(a[0], table, op.attrs["in_qmin"], _info(sim, op).dtype)


def _lut_interp(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at = op.attrs
    expanded = sim._plans.get(id(op))
    if expanded is not None and a[0].dtype == sim.p.tensors[op.inputs[0]].dtype:
        return lut.apply_table(a[0], expanded, sim.p.tensors[op.inputs[0]].qmin, _info(sim, op).dtype)
    return lut.apply_table_interp(a[0], sim.p.constants[at["table"]], at["in_qmin"], at["step_log2"], at["lo"],
                                  at["hi"], sim.p.rounding, _info(sim, op).dtype)


def _softmax(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at = op.attrs
    x = a[0]
    axis = at["axis"] % x.ndim
    shape = x.shape
    if at["coerce_2d"]:  # opset < 13: softmax over the flattened dims from axis on
        x = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
        axis = 1
    out = softmax.softmax_int(x, axis, sim.p.constants[at["table"]], at["out_scale"], at["zo"], at["lo"], at["hi"],
                              _info(sim, op).dtype)
    return out.reshape(shape)


def _layernorm(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at, c = op.attrs, sim.p.constants
    gamma = c[at["gamma"]] if at["gamma"] else np.ones(1)
    beta = c[at["beta"]] if at["beta"] else np.zeros(1)
    return norm.layernorm_mixed(a[0], at["zp_in"], at["in_scale"], at["axis"], gamma, beta, at["epsilon"],
                                at["out_scale"], at["zo"], at["lo"], at["hi"], _info(sim, op).dtype)


def _avgpool(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at, oa = op.attrs, op.attrs["onnx_attrs"]
    x = a[0]
    kernel = tuple(int(k) for k in oa["kernel_shape"])
    strides, pads, dil = _spatial_attrs(oa, x, kernel)
    acc, count = pool.avg_pool_int(x, at["zp_in"], kernel, strides, pads, int(oa.get("ceil_mode", 0)),
                                   int(oa.get("count_include_pad", 0)))
    c = sim.p.constants
    return pool.requantize_by_count(acc, count, c[at["mult"]], c[at["shift"]], at["zo"], at["lo"], at["hi"],
                                    sim.p.rounding, _info(sim, op).dtype)


def _global_avgpool(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at, x = op.attrs, a[0]
    n = int(np.prod(x.shape[2:], dtype=np.int64))
    acc = pool.global_avg_pool_int(x, at["zp_in"])
    m, s = quantize_multiplier(at["ratio"] / n, _mult_bits(x, n))
    return requantize_channels(acc, m, s, at["zo"], at["lo"], at["hi"], sim.p.rounding, _info(sim, op).dtype, None)


def _mult_bits(x: np.ndarray, gain: int) -> int:
    """Multiplier width for an accumulator of ``|x - zp| <= 2^bits`` codes times ``gain``:
    31 bits, fewer when acc · M would pass 2^62."""
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


def _attr_str(oa: dict, key: str, default: str) -> str:
    v = oa.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _resize_nearest(sim: Simulator, op: Op, a: list) -> np.ndarray:
    oa = op.attrs["onnx_attrs"]
    size, scales = _resize_size(op, a)
    q = resize.resize_nearest_int(a[0], size, scales, _attr_str(oa, "coordinate_transformation_mode", "half_pixel"),
                                  _attr_str(oa, "nearest_mode", "round_prefer_floor"))
    return _rescale_with(sim, q, op.attrs, _info(sim, op).dtype)


def _resize_linear(sim: Simulator, op: Op, a: list) -> np.ndarray:
    at, oa = op.attrs, op.attrs["onnx_attrs"]
    size, scales = _resize_size(op, a)
    acc = resize.resize_linear_int(a[0], at["zp_in"], size, scales,
                                   _attr_str(oa, "coordinate_transformation_mode", "half_pixel"), at["frac_bits"])
    k = len(size)  # the kernel interpolates along each of the trailing axes it is given
    m, s = quantize_multiplier(at["ratio"] / float(1 << (at["frac_bits"] * k)), _mult_bits(a[0], 1 << (at["frac_bits"] * k)))
    return requantize_channels(acc, m, s, at["zo"], at["lo"], at["hi"], sim.p.rounding, _info(sim, op).dtype, None)


def _pad(sim: Simulator, op: Op, a: list) -> np.ndarray:
    """Pad on codes: the input requantized to the output's quantization first (elementwise, so
    it commutes with the data movement), then padded — constant mode with ``pad_code``, the pad
    value already quantized by the output's QuantizeLinear (saturating) in lowering."""
    at = op.attrs
    dtype = _info(sim, op).dtype
    x = _rescale_with(sim, a[0], at["rescale"], dtype) if at.get("rescale") else a[0]
    oa = dict(at["onnx_attrs"])
    inputs = [x, *a[1:]]
    code = at.get("pad_code")
    if code is not None:
        if sim.p.opset < 11:
            oa["value"] = code
        else:
            inputs += [None] * (3 - len(inputs))
            inputs[2] = np.asarray(code, dtype)
    return run_node("Pad", inputs, oa, opset=sim.p.opset, name=op.node)[0].astype(dtype, copy=False)


def _move(sim: Simulator, op: Op, a: list) -> list[np.ndarray]:
    at = op.attrs
    if at["op_type"] == "Pad":
        return [_pad(sim, op, a)]
    if at["op_type"] in ("MaxPool",):
        oa = at["onnx_attrs"]
        kernel = tuple(int(k) for k in oa["kernel_shape"])
        strides, pads, dil = _spatial_attrs(oa, a[0], kernel)
        outs = [pool.max_pool_int(a[0], kernel, strides, pads, dil, int(oa.get("ceil_mode", 0)))]
    else:
        outs = run_node(at["op_type"], a, at["onnx_attrs"], opset=sim.p.opset, name=op.node,
                        n_outputs=at.get("n_outputs", 1))
    if at.get("rescale"):
        dtype = _info(sim, op).dtype
        outs = [_rescale_with(sim, o, at["rescale"], dtype) for o in outs]
    return outs[:len(op.outputs)]


def _recurrent(sim: Simulator, op: Op, a: list) -> list[np.ndarray]:
    """RNN/GRU/LSTM on ``kernels.recurrent`` (every multiplier and table from lowering):
    per direction the input part of all steps at once, then the steps."""
    at, c, mode = op.attrs, sim.p.constants, sim.p.rounding
    x = a[0] if at["layout"] == 0 else np.swapaxes(a[0], 0, 1)  # [T, B, I]
    n_t, n_b = x.shape[:2]
    lens = np.full(n_b, n_t, np.int64) if a[1] is None else np.asarray(a[1], np.int64).reshape(-1)
    hidden = c[at["r"]].shape[2]
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(at["reverse"]):
        acc = linear.int_matmul(x.astype(np.int32) - at["x_zp"], np.ascontiguousarray(c[at["w"]][d].T))
        xg, saturated = requantize_accumulator(acc, None, at["x_acc_bits"], c[at["mx"]][d], c[at["sx"]][d], 0,
                                               -(1 << 62), 1 << 62, mode, np.int64, -1)
        xg += c[at["bias"]][d]  # Wb + Rb in Q4.11
        if saturated:
            sim.saturated[op.node] = sim.saturated.get(op.node, 0) + saturated
        states = []
        for i, (key, bits) in enumerate((("h0", 16), ("c0", 32))):
            q = a[2 + i]
            if q is None or at[key] is None:
                states.append(np.zeros((n_b, hidden), np.int64))
                continue
            q = q[d] if at["layout"] == 0 else q[:, d]
            m, s, zp = at[key]
            states.append(requantize_channels(q.astype(np.int64) - zp, m, s, 0, -(1 << (bits - 1)), (1 << (bits - 1)) - 1,
                                              mode, np.int64, None))
        y, h, cell = recurrent.recurrent_int(at["cell"], xg, c[at["r"]][d], c[at["mh"]][d], c[at["sh"]][d],
                                             c[at["rbn"]][d], at["h_acc_bits"], lens, reverse, states[0], states[1],
                                             c[at["sig"]], c[at["tanh"]], at["step_log2"], at["lbr"], mode)
        ys.append(y)
        hs.append(h)
        cs.append(cell)
    layout1 = at["layout"] == 1
    y_all = np.stack(ys, 1)  # [T, D, B, H]
    values = [y_all.transpose(2, 0, 1, 3) if layout1 else y_all,
              np.stack(hs, 1 if layout1 else 0), np.stack(cs, 1 if layout1 else 0)]
    out = []
    for name, value, rq in zip(op.outputs, values, at["requant"]):
        if not name:
            out.append(None)
            continue
        info = sim.p.tensors[name]
        out.append(requantize_channels(value.astype(np.int64), rq[0], rq[1], info.zero_point, info.qmin, info.qmax,
                                       mode, info.dtype, None))
    return out


def _float(sim: Simulator, op: Op, a: list) -> list[np.ndarray]:
    at = op.attrs
    return run_node(at["op_type"], a, at["onnx_attrs"], domain=at.get("domain", ""), opset=sim.p.opset, name=op.node,
                    n_outputs=len(op.outputs))


_KINDS: dict[str, Callable] = {
    "quantize": _quantize, "dequantize": _dequantize, "affine": _affine, "conv": _conv, "conv_transpose": _conv, "matmul": _matmul,
    "add": _add, "mul": _mul, "rescale": _rescale, "concat": _concat, "lut": _lut, "lut_interp": _lut_interp,
    "softmax": _softmax, "layernorm": _layernorm, "avgpool": _avgpool, "global_avgpool": _global_avgpool,
    "resize_nearest": _resize_nearest, "resize_linear": _resize_linear, "move": _move, "float": _float,
    "recurrent": _recurrent,
}
