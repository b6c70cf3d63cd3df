"""Lowering of RNN / GRU / LSTM onto the integer recurrent kernel (runtime/kernels/recurrent.py).

A recurrent node runs in integer when its input ``X`` (and any ``initial_h`` / ``initial_c``
that is not a constant) comes through a per-tensor DequantizeLinear, ``W`` and ``R`` are
quantized constants (per tensor or per gate row, axis 1), ``B`` is constant, and every output
it uses goes only into QuantizeLinear nodes of one quantization.  Lowering computes every
constant the kernel needs: the centred weight codes, per-row multipliers of the input part
(``x scale · W scale → 2^-11``) and of the recurrent part (``2^-15 · R scale → 2^-11``), the
biases in Q4.11, the gate tables, and the rescales of the initial states and outputs.
"""
from __future__ import annotations

import numpy as np

from ptqc.ir import Node
from ptqc.runtime.kernels import recurrent
from ptqc.runtime.kernels.recurrent import CELL_FRAC, GATE_FRAC, GATES, STATE_FRAC
from ptqc.runtime.kernels.requant import quantize_multiplier
from ptqc.runtime.program import Move, Recurrent, TensorInfo
from ptqc.targets.lower_common import Q_OPS, NotInteger, attr_str, is_op, key as node_key

OPS = frozenset(GATES)


def lower_recurrent(low, node: Node, key: str) -> None:
    """Emit one ``recurrent`` op for ``node`` (program key ``key``) on the Lowering ``low``;
    raises ``NotInteger`` (lowering's "stays float" signal) saying why not."""
    why = recurrent.unsupported(node.op_type, node.attrs, node.inputs)
    if why:
        raise NotInteger(why)
    ins = list(node.inputs) + [""] * (8 - len(node.inputs))
    outputs, extra_qs = _outputs(low, node)
    x, xi = low.int_input(ins[0])
    w, w_scale, w_bits = _weight(low, ins[1])
    r, r_scale, _ = _weight(low, ins[2])
    dirs, rows, hidden = r.shape
    if rows != GATES[node.op_type] * hidden or w.shape[:2] != (dirs, rows):
        raise NotInteger(f"W {w.shape} / R {r.shape} do not match hidden_size {hidden}")
    gate = 2.0 ** -GATE_FRAC
    b = np.zeros((dirs, 2 * rows))
    if ins[3]:
        real = low.real_const(ins[3])
        if real is None:
            raise NotInteger(f"bias {ins[3]!r} is not constant")
        b = np.asarray(real, np.float64).reshape(dirs, 2 * rows)
    bias, rbn = b[:, :rows] + b[:, rows:], np.zeros((dirs, hidden))
    lbr = node.op_type == "GRU" and bool(node.attrs.get("linear_before_reset", 0))
    if lbr:  # Rb of the n gate is added inside r ⊙ (R·h + Rb)
        bias[:, 2 * hidden:] = b[:, 2 * hidden:rows]
        rbn = b[:, rows + 2 * hidden:]
    x_bits = max(xi.bits, w_bits)
    mx, sx = quantize_multiplier(np.broadcast_to(xi.scale * w_scale / gate, (dirs, rows)), low.target.mult_bits(x_bits))
    mh, sh = quantize_multiplier(np.broadcast_to(2.0 ** -STATE_FRAC * r_scale / gate, (dirs, rows)),
                                 low.target.mult_bits(16))
    sig, tanh, step_log2 = recurrent.gate_tables(low.lut_len)
    consts = {"w": w, "r": r, "mx": mx, "sx": sx, "mh": mh, "sh": sh, "sig": sig, "tanh": tanh,
              "bias": np.rint(bias / gate).astype(np.int64), "rbn": np.rint(rbn / gate).astype(np.int64)}
    for name, value in consts.items():
        low.constants[f"{key}::{name}"] = value
    states = [_state(low, ins[5], STATE_FRAC), _state(low, ins[6], CELL_FRAC)]
    direction = attr_str(node, "direction", "forward")
    bits = low.target.elementwise_multiplier_bits
    requant = [None if not out else tuple(int(v) for v in quantize_multiplier(2.0 ** -frac / info.scale, bits))
               for (out, info), frac in zip(outputs, (STATE_FRAC, STATE_FRAC, CELL_FRAC))]
    if ins[4] and low.const(ins[4]) is not None:
        low.constants[ins[4]] = low.const(ins[4])
    low.emit(Recurrent((x, ins[4], states[0][0], states[1][0]), tuple(out for out, _ in outputs), key, node.op_type,
                       node.op_type, int(node.attrs.get("layout", 0)),
                       (direction == "reverse",) if dirs == 1 else (False, True), xi.zero_point,
                       low.target.acc_bits(x_bits), low.target.acc_bits(16), step_log2, lbr, states[0][1], states[1][1],
                       tuple(requant), **{name: f"{key}::{name}" for name in consts}))
    for out, info in outputs:
        if out:
            low.tensors[out] = info
    for src, extra, info in extra_qs:  # a second Q of the same quantization
        low.emit(Move((src,), (extra.outputs[0],), node_key(extra), "Identity", {}))
        low.tensors[extra.outputs[0]] = info
        low.absorbed.add(extra.id)


def _weight(low, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes [D, rows, cols], scale per row [rows], bit-width) of a symmetric quantized weight."""
    codes, scale, zp, axis = low.int_const(name)
    if codes.ndim != 3:
        raise NotInteger(f"weight {name!r} is not 3-D")
    if scale.size != 1 and axis % 3 != 1:
        raise NotInteger(f"weight {name!r} is quantized along axis {axis} (per gate row is axis 1)")
    if np.any(zp != 0):
        raise NotInteger(f"weight {name!r} has a nonzero zero point (the chip's weights are symmetric)")
    rows = codes.shape[1]
    return codes, np.broadcast_to(scale.reshape(-1), (rows,)).astype(np.float64), np.dtype(codes.dtype).itemsize * 8


def _state(low, name: str, frac: int) -> tuple[str, tuple[int, int, int] | None]:
    """(program tensor, (mult, shift, zero point) to the kernel's fixed format) of an initial
    state: a quantized activation (saturating at the format's range: a hidden state a cell
    computed is inside it), a float constant (quantized here; beyond the range: NotInteger),
    or absent ("", None)."""
    if not name:
        return "", None
    c = low.const(name)
    if c is not None and c.dtype.kind == "f":
        dtype = np.int16 if frac == STATE_FRAC else np.int32
        info = TensorInfo(np.dtype(dtype), 2.0 ** -frac, 0, name)
        if np.abs(c).max(initial=0.0) > info.qmax * info.scale:
            raise NotInteger(f"initial state {name!r} reaches {np.abs(c).max():.4g}, beyond the kernel's fixed "
                              f"state range ±{info.qmax * info.scale:.4g}")
        low.constants[name + "::codes"] = info.quantize(c)
        low.tensors[name + "::codes"] = info
        return name + "::codes", (1, 0, 0)
    try:
        q, info = low.int_input(name)
    except NotInteger as e:
        raise NotInteger(f"initial state: {e}") from None
    m, s = quantize_multiplier(info.scale / 2.0 ** -frac, low.target.elementwise_multiplier_bits)
    return q, (int(m), int(s), info.zero_point)


def _outputs(low, node: Node) -> tuple[list[tuple[str, TensorInfo | None]], list]:
    """Per output (Y, Y_h, Y_c): (the integer tensor its Q writes, its quantization), or
    ("", None) for an output nothing reads; and the further Qs of an output, as
    (integer tensor, Q node, quantization)."""
    out, extra_qs = [], []
    for y in node.outputs:
        users = low.g.consumer_nodes(y) if y else []
        if y and y in low.g.outputs:
            raise NotInteger(f"its float output {y!r} is a graph output")
        if not users:
            out.append(("", None))
            continue
        if not all(is_op(u, Q_OPS) for u in users):
            raise NotInteger(f"its output {y!r} is not (only) quantized")
        infos = [low.q_info(u) for u in users]
        if any((i.dtype, i.scale, i.zero_point) != (infos[0].dtype, infos[0].scale, infos[0].zero_point) for i in infos):
            raise NotInteger(f"its output {y!r} is quantized in several ways")
        out.append((users[0].outputs[0], infos[0]))
        extra_qs += [(users[0].outputs[0], extra, infos[0]) for extra in users[1:]]
    return out, extra_qs
