"""The integer lowering of each op family: ``lower_X(low, node, y) -> Op``.

``low`` is the :class:`~ptqc.targets.lower.Lowering` (the graph, the target and the program
being built: its ``constants`` and ``tensors``), ``y`` the node's integer :class:`Output`.
Each function reads the node's integer inputs through ``low``, computes every constant the
simulator needs and returns the typed op; it raises :class:`NotInteger` when the node has
to stay float.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from ptqc.ir import Node
from ptqc.runtime.kernels.elementwise import add_multipliers
from ptqc.runtime.kernels.lut import make_table
from ptqc.runtime.kernels.requant import quantize_multiplier
from ptqc.runtime.kernels.softmax import make_exp_table
from ptqc.runtime.program import (Add, Affine, AvgPool, Concat, Conv, ConvTranspose, GlobalAvgPool, LayerNorm, Lut,
                                  LutInterp, MatMul, Move, Mul, Op, RescaleOp, Requant, ResizeLinear, ResizeNearest,
                                  Softmax, TensorInfo, Window)
from ptqc.targets.lower_common import NotInteger, Output, attr_str, clamp_codes, clip_bounds, float_fn, key

RESIZE_FRAC_BITS = 10  # fixed-point weights of linear Resize (per resized axis)
AFFINE_FRAC_BITS = 8  # fraction bits of a standalone BN's offset


def mult_bits(x_bits: int, gain: int) -> int:
    """Multiplier width for an accumulator of ``|x - zp| <= 2^x_bits`` codes times ``gain``:
    31 bits, fewer when acc · M would pass 2^62."""
    acc_bits = x_bits + 1 + int(math.ceil(math.log2(max(gain, 1))))
    return min(31, 62 - acc_bits)


# ------------------------------------------------------------------ linear ops
def _linear_requant(low, x: TensorInfo, w_scale: np.ndarray, w_bits: int, y: Output, bias: str | None) -> Requant:
    bits = max(x.bits, w_bits)
    m, s = quantize_multiplier(x.scale * w_scale.reshape(-1) / y.info.scale, low.target.mult_bits(bits))
    return Requant(bias, low.target.acc_bits(bits), m.astype(np.int64), s.astype(np.int64), y.info.zero_point, y.lo,
                   y.hi)


def _bias(low, node: Node, idx: int, x: TensorInfo, w_scale: np.ndarray, n_out: int) -> str | None:
    if len(node.inputs) <= idx or not node.inputs[idx]:
        return None
    name = node.inputs[idx]
    real = low.real_const(name)
    if real is None:
        raise NotInteger(f"bias {name!r} is not constant")
    real = np.broadcast_to(np.asarray(real, np.float64).reshape(-1), (n_out,))
    k = name + "::acc"
    low.constants[k] = np.rint(real / (x.scale * np.broadcast_to(w_scale.reshape(-1), (n_out,)))).astype(np.int64)
    return k


def _weight(low, name: str, axis_ok: tuple[int, ...], n_out: int) -> tuple[str, np.ndarray, int]:
    """(program constant of the codes, scale per output channel, bit width) of a weight; its
    zero points are the constant ``<codes>::zp`` (int64 per output channel)."""
    codes, scale, zp, axis = low.int_const(name)
    if scale.size != 1 and axis % codes.ndim not in axis_ok:
        raise NotInteger(f"weight {name!r} is quantized along axis {axis}")
    k = name + "::codes"
    low.constants[k] = codes
    low.constants[k + "::zp"] = np.broadcast_to(zp.reshape(-1), (n_out,)).astype(np.int64).copy()
    return k, np.broadcast_to(scale.reshape(-1), (n_out,)), np.dtype(codes.dtype).itemsize * 8


def _fold_affine(low, node: Node, affine, w: str, w_scale: np.ndarray, xi: TensorInfo, n_out: int,
                 transpose: bool) -> tuple[str, np.ndarray, str]:
    """Fold a following BN (y = a·conv + b) into the requantization: |a| into the per-channel
    multiplier, sign(a) into the weight codes (exact: a sign flip of a zero-point-free code; a
    copy per node, as weights may be shared), and a·bias + b into the integer bias.  Returns
    (weight key, per-channel scale, bias key)."""
    a, b = (np.broadcast_to(v, (n_out,)) for v in affine)
    bias_real = np.zeros(n_out)
    if len(node.inputs) > 2 and node.inputs[2]:
        bias_real = low.constants[node.inputs[2] + "::acc"] * xi.scale * w_scale
    codes = low.constants[w]
    zp = low.constants[w + "::zp"]
    shape = [1] * codes.ndim
    shape[1 if transpose else 0] = -1
    if transpose and codes.shape[1] != n_out:
        raise NotInteger("grouped ConvTranspose followed by BatchNormalization")
    signed = (codes.astype(np.int64) - zp.reshape(shape)) * np.sign(a).astype(np.int64).reshape(shape)
    info = np.iinfo(codes.dtype)
    if signed.min() < info.min or signed.max() > info.max:
        raise NotInteger("BatchNormalization with a negative gain on a weight code that cannot be negated")
    folded = key(node) + "::bn_codes"
    low.constants[folded] = signed.astype(codes.dtype)
    low.constants[folded + "::zp"] = np.zeros(n_out, np.int64)
    gain = np.abs(a)
    k = key(node) + "::bn_bias"
    low.constants[k] = np.rint((a * bias_real + b) / (xi.scale * w_scale * gain)).astype(np.int64)
    return folded, w_scale * gain, k


def _window(node: Node, kernel: list[int] | tuple[int, ...]) -> Window:
    nd = len(kernel)
    at = node.attrs
    return Window(tuple(int(k) for k in kernel), tuple(int(s) for s in at.get("strides", [1] * nd)),
                  tuple(int(p) for p in at.get("pads", [0] * (2 * nd))),
                  tuple(int(d) for d in at.get("dilations", [1] * nd)), attr_str(node, "auto_pad", "NOTSET"),
                  int(at.get("ceil_mode", 0)))


def lower_conv(low, node: Node, y: Output) -> Op:
    x, xi = low.int_input(node.inputs[0])
    w_codes = low.int_const(node.inputs[1])[0]
    if w_codes.ndim not in (3, 4):
        raise NotInteger(f"{w_codes.ndim - 2}-D convolution")
    transpose = node.op_type == "ConvTranspose"
    group = int(node.attrs.get("group", 1))
    n_out = w_codes.shape[1] * group if transpose else w_codes.shape[0]
    if transpose and group != 1:
        raise NotInteger("grouped ConvTranspose")
    w, w_scale, w_bits = _weight(low, node.inputs[1], (1,) if transpose else (0,), n_out)
    bias = _bias(low, node, 2, xi, w_scale, n_out)
    if y.affine is not None:
        w, w_scale, bias = _fold_affine(low, node, y.affine, w, w_scale, xi, n_out, transpose)
    head = ((x,), (y.name,), key(node), node.op_type)
    window = _window(node, w_codes.shape[2:])
    requant = _linear_requant(low, xi, w_scale, w_bits, y, bias)
    if not transpose:
        return Conv(*head, w, w + "::zp", xi.zero_point, group, window, requant)
    at = node.attrs
    return ConvTranspose(*head, w, w + "::zp", xi.zero_point, group, window, requant,
                         tuple(int(v) for v in at.get("output_padding", [])),
                         tuple(int(v) for v in at.get("output_shape", [])))


def lower_matmul(low, node: Node, y: Output) -> Op:
    a, ai = low.int_input(node.inputs[0])
    trans_b = False
    if node.op_type == "Gemm":
        at = node.attrs
        if at.get("transA", 0) or float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
            raise NotInteger("Gemm with transA, alpha or beta")
        trans_b = bool(at.get("transB", 0))
    try:
        b, bi = low.int_input(node.inputs[1])
        if trans_b:
            raise NotInteger("Gemm with a transposed activation B")
        n_out, b_scale, b_bits = 1, np.asarray([bi.scale]), bi.bits
        b_zp, zp_b = None, bi.zero_point
    except NotInteger:
        codes = low.int_const(node.inputs[1])[0]
        if codes.ndim != 2:
            raise NotInteger("a constant B that is not 2-D") from None
        n_out = codes.shape[0] if trans_b else codes.shape[1]
        b, b_scale, b_bits = _weight(low, node.inputs[1], (0,) if trans_b else (1,), n_out)
        if trans_b:
            low.constants[b] = np.ascontiguousarray(low.constants[b].T)
        b_zp, zp_b = b + "::zp", 0
    bias = _bias(low, node, 2, ai, b_scale, n_out) if node.op_type == "Gemm" else None
    return MatMul((a, b), (y.name,), key(node), node.op_type, ai.zero_point, b_zp, zp_b,
                  _linear_requant(low, ai, np.asarray(b_scale), b_bits, y, bias))


def lower_batchnorm(low, node: Node, y: Output) -> Op:
    """A standalone BN on integers: per channel, sign(a) on the codes, |a| into the multiplier,
    b into the integer offset."""
    x, xi = low.int_input(node.inputs[0])
    a, b = low.bn_affine(node)
    frac = AFFINE_FRAC_BITS  # the offset in 1/2^frac input codes, so |a| > 1 loses nothing
    m, s = quantize_multiplier(np.abs(a) * xi.scale / (y.info.scale * 2 ** frac), 31)
    k = key(node)
    low.constants[k + "::sign"] = np.sign(a).astype(np.int64) << frac
    low.constants[k + "::acc"] = np.rint(b * 2 ** frac / (np.abs(a) * xi.scale)).astype(np.int64)
    requant = Requant(k + "::acc", 32 + frac if xi.bits <= 8 else 48, m.astype(np.int64), s.astype(np.int64),
                      y.info.zero_point, y.lo, y.hi)
    return Affine((x,), (y.name,), k, node.op_type, xi.zero_point, k + "::sign", requant)


# ------------------------------------------------------------------ elementwise
def lower_elementwise(low, node: Node, y: Output) -> Op:
    """Add / Sub / Mul on two integer operands; Mul / Div by a positive float scalar as one rescale."""
    info = y.info
    head = (key(node), node.op_type)
    c = low.const(node.inputs[1])
    if node.op_type in ("Mul", "Div") and c is not None and c.size == 1 and float(c.reshape(-1)[0]) > 0:
        x, xi = low.int_input(node.inputs[0])  # times a positive float scalar: one rescale
        k = float(c.reshape(-1)[0])
        k = 1.0 / k if node.op_type == "Div" else k
        return RescaleOp((x,), (y.name,), *head, low.rescale(xi, dataclasses.replace(info, scale=info.scale / k),
                                                              y.lo, y.hi))
    if node.op_type == "Div":
        raise NotInteger("Div by something other than a positive constant scalar")
    (a, ai), (b, bi) = low.int_operand(node.inputs[0]), low.int_operand(node.inputs[1])
    if node.op_type == "Mul":
        bits = min(31, 62 - (ai.bits + 1) - (bi.bits + 1))  # (a-za)(b-zb)·M fits int64
        m, s = quantize_multiplier(ai.scale * bi.scale / info.scale, bits)
        return Mul((a, b), (y.name,), *head, ai.zero_point, bi.zero_point, int(m), int(s), info.zero_point, y.lo, y.hi)
    ma, mb, s = add_multipliers(ai.scale, bi.scale, info.scale, low.target.elementwise_multiplier_bits)
    if node.op_type == "Sub":
        mb = -mb
    return Add((a, b), (y.name,), *head, ai.zero_point, int(ma), bi.zero_point, int(mb), int(s), info.zero_point,
               y.lo, y.hi)


def lower_concat(low, node: Node, y: Output) -> Op:
    parts = [low.int_operand(x) for x in node.inputs]
    return Concat(tuple(p[0] for p in parts), (y.name,), key(node), node.op_type, int(node.attrs.get("axis", 0)),
                  tuple(low.rescale(p[1], y.info, y.lo, y.hi) for p in parts))


def lower_activation(low, node: Node, y: Output) -> Op:
    """Relu / Clip standing alone: one rescale with the clamp."""
    x, xi = low.int_input(node.inputs[0])
    lo, hi = clamp_codes(y.info, y.lo, y.hi, *clip_bounds(node, low.const))
    return RescaleOp((x,), (y.name,), key(node), node.op_type, low.rescale(xi, y.info, lo, hi))


def lower_lut(low, node: Node, y: Output) -> Op:
    """A unary op as a table: of every code (8-bit inputs) or interpolated (16-bit)."""
    x, xi = low.int_input(node.inputs[0])
    info, k = y.info, key(node) + "::table"
    head = ((x,), (y.name,), key(node), node.op_type)
    if xi.bits == 8:
        low.constants[k] = make_table(float_fn(node), xi.scale, xi.zero_point, xi.qmin, xi.qmax, info.scale,
                                      info.zero_point, y.lo, y.hi)
        return Lut(*head, k, xi.qmin)
    low.constants[k] = make_table(float_fn(node), xi.scale, xi.zero_point, xi.qmin, xi.qmax, info.scale,
                                  info.zero_point, y.lo, y.hi, log2_entries=low.lut_len)
    return LutInterp(*head, k, xi.qmin, xi.bits - low.lut_len, y.lo, y.hi)


def lower_softmax(low, node: Node, y: Output) -> Op:
    x, xi = low.int_input(node.inputs[0])
    k = key(node) + "::exp"
    # the table's fraction bits: 16 + log2(axis length) keep the output within 1 LSB
    # (runtime/kernels/softmax.py); 20 serve 8-bit outputs, 28 16-bit ones, int64-safe
    low.constants[k] = make_exp_table(xi.scale, frac_bits=20 if y.info.bits <= 8 else 28)
    axis = int(node.attrs.get("axis", 1 if low.g.opset < 13 else -1))
    return Softmax((x,), (y.name,), key(node), node.op_type, k, axis, low.g.opset < 13, y.info.scale,
                   y.info.zero_point, y.lo, y.hi)


def lower_layernorm(low, node: Node, y: Output) -> Op:
    x, xi = low.int_input(node.inputs[0])
    consts = []
    for idx in (1, 2):
        name = node.inputs[idx] if len(node.inputs) > idx else ""
        if not name:
            consts.append(None)
            continue
        real = low.real_const(name)
        if real is None:
            raise NotInteger(f"LayerNormalization parameter {name!r} is not constant")
        low.constants[name + "::real"] = np.asarray(real, np.float64)
        consts.append(name + "::real")
    return LayerNorm((x,), (y.name,), key(node), node.op_type, xi.zero_point, xi.scale,
                     int(node.attrs.get("axis", -1)), consts[0], consts[1], float(node.attrs.get("epsilon", 1e-5)),
                     y.info.scale, y.info.zero_point, y.lo, y.hi)


# ------------------------------------------------------------------ pooling, resizing, data movement
def lower_pool(low, node: Node, y: Output) -> Op:
    x, xi = low.int_input(node.inputs[0])
    head = ((x,), (y.name,), key(node), node.op_type)
    ratio = xi.scale / y.info.scale
    if node.op_type == "GlobalAveragePool":
        shape = low.g.value(node.inputs[0]).static_shape if low.g.has_value(node.inputs[0]) else None
        count = int(np.prod(shape[2:], dtype=np.int64)) if shape and len(shape) > 2 else 0
        m, s = quantize_multiplier(ratio / count, mult_bits(xi.bits, count)) if count else (np.zeros(0), np.zeros(0))
        requant = Requant(None, 0, np.asarray(m, np.int64).reshape(-1), np.asarray(s, np.int64).reshape(-1),
                          y.info.zero_point, y.lo, y.hi)
        return GlobalAvgPool(*head, xi.zero_point, ratio, count, requant)
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    n = int(np.prod(kernel)) if kernel else 1
    m, s = quantize_multiplier(ratio / np.arange(1, n + 1), low.target.elementwise_multiplier_bits)
    k = key(node) + "::by_count"
    low.constants[k + "::mult"] = np.concatenate([[0], m]).astype(np.int64)
    low.constants[k + "::shift"] = np.concatenate([[0], s]).astype(np.int64)
    return AvgPool(*head, xi.zero_point, _window(node, kernel), int(node.attrs.get("count_include_pad", 0)),
                   k + "::mult", k + "::shift", y.info.zero_point, y.lo, y.hi)


def lower_resize(low, node: Node, y: Output) -> Op:
    x, xi = low.int_input(node.inputs[0])
    mode = attr_str(node, "mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise NotInteger(f"Resize mode {mode}")
    extra = list(node.inputs[1:])
    for name in extra:
        if name and low.const(name) is not None:
            low.constants[name] = low.const(name)
    head = ((x, *extra), (y.name,), key(node), node.op_type)
    coord = attr_str(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        return ResizeNearest(*head, coord, attr_str(node, "nearest_mode", "round_prefer_floor"),
                             low.rescale(xi, y.info, y.lo, y.hi))
    gain = 1 << (RESIZE_FRAC_BITS * 2)  # the kernel interpolates along the two trailing axes
    m, s = quantize_multiplier(xi.scale / y.info.scale / float(gain), mult_bits(xi.bits, gain))
    requant = Requant(None, 0, np.asarray(m, np.int64).reshape(1), np.asarray(s, np.int64).reshape(1),
                      y.info.zero_point, y.lo, y.hi)
    return ResizeLinear(*head, xi.zero_point, coord, RESIZE_FRAC_BITS, requant)


def lower_move(low, node: Node, y: Output) -> Op:
    x, xi = low.int_input(node.inputs[0])
    info = y.info
    rest = list(node.inputs[1:])
    for name in rest:
        c = low.const(name) if name else None
        if c is not None:
            low.constants[name] = c
    attrs = dict(node.attrs)
    pad_code = None
    if node.op_type == "Pad":
        pad_code = _pad_code(low, node, rest, y)
        if len(rest) >= 2:
            rest[1] = ""  # the simulator pads with pad_code (opset >= 11: constant_value)
        attrs.pop("value", None)  # opset < 11: likewise
    same = (xi.dtype, xi.scale, xi.zero_point) == (info.dtype, info.scale, info.zero_point) \
        and (y.lo, y.hi) == (info.qmin, info.qmax)  # a fused Relu/Clip needs the clamp of a rescale
    return Move((x, *rest), (y.name,), key(node), node.op_type, attrs,
                None if same else low.rescale(xi, info, y.lo, y.hi), len(node.outputs), pad_code)


def _pad_code(low, node: Node, rest: list[str], y: Output) -> int | None:
    """A constant-mode Pad's value as an output code: in the QDQ graph the float pad value
    goes through the output's QuantizeLinear (float32 division, half-to-even, saturating), and
    a fused Relu/Clip after it.  None for the other modes (pure data movement)."""
    if attr_str(node, "mode", "constant") != "constant":
        return None
    info = y.info
    if low.g.opset < 11:
        value = float(node.attrs.get("value", 0.0))
    elif len(rest) >= 2 and rest[1]:
        real = low.real_const(rest[1])
        if real is None:
            raise NotInteger(f"Pad constant_value {rest[1]!r} is computed")
        value = float(np.asarray(real).reshape(-1)[0]) if np.size(real) else 0.0
    else:
        value = 0.0
    with np.errstate(all="ignore"):
        q = float(np.rint(np.float32(value) / np.float32(info.scale))) + info.zero_point
    if np.isnan(q):
        raise NotInteger("Pad with a NaN constant value")
    return int(np.clip(q, max(y.lo, info.qmin), min(y.hi, info.qmax)))


LOWERERS: dict[str, Callable[..., Op]] = {
    "Conv": lower_conv, "ConvTranspose": lower_conv, "MatMul": lower_matmul, "Gemm": lower_matmul,
    "Add": lower_elementwise, "Sub": lower_elementwise, "Mul": lower_elementwise, "Div": lower_elementwise,
    "Concat": lower_concat, "Relu": lower_activation, "Clip": lower_activation, "Softmax": lower_softmax,
    "LayerNormalization": lower_layernorm, "AveragePool": lower_pool, "GlobalAveragePool": lower_pool,
    "Resize": lower_resize, "BatchNormalization": lower_batchnorm,
}
