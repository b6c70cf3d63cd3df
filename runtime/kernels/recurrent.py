"""Integer LSTM, GRU and RNN (ONNX semantics, default activations) in fixed point.

The chip keeps a recurrent layer's internals in fixed formats that need no calibration,
because the gate functions bound them:

- gate pre-activations: int16 ``Q4.11`` (``GATE_FRAC``; range [-16, 16), where sigmoid and
  tanh are within 1.2e-7 of their limits);
- gate outputs (sigmoid, tanh) and the hidden state ``h``: int16 ``Q0.15`` (``STATE_FRAC``);
  ``h = o·tanh(c)`` and GRU's convex mix of tanh values stay inside (-1, 1);
- the LSTM cell state ``c``: int32 ``Q11.20`` (``CELL_FRAC``; ±2048).

Per step, per gate row ``r``: the input part ``Σ (x - zx)·W[r]`` (exact, saturated to the
accumulator width of the input's bit-width, all steps at once) and the recurrent part
``Σ h·R[r]`` (exact, saturated to the 16-bit accumulator) are each requantized to Q4.11 with
their own per-row multiplier, the biases (``Wb + Rb``, in Q4.11) added, and the sum clamped
to int16.  Sigmoid and tanh are the family's 16-bit interpolated tables (``lut.make_table``
with ``2^L + 1`` entries, ``lut.interp_one``).  Products of two Q0.15 values are
rounded right shifts (the target's rounding).  ``Y`` is ``h`` (zero past a batch entry's
sequence length, as ONNX says), requantized to the output's scale by the caller.

Not run in integer (:func:`unsupported` says which, in one line): activations other than the
defaults, ``clip``, ``input_forget``, LSTM peepholes.  Imports numpy, numba and
``ptqc.runtime.kernels`` only.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .lut import interp_one, make_table
from .requant import round_shift

GATE_FRAC, STATE_FRAC, CELL_FRAC = 11, 15, 20
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def unsupported(op_type: str, attrs: dict, inputs: list[str]) -> str:
    """Why this RNN/GRU/LSTM node cannot run on the integer kernel ("" if it can)."""
    acts = [a.decode() if isinstance(a, bytes) else str(a) for a in attrs.get("activations", []) or []]
    default = DEFAULT_ACTIVATIONS[op_type]
    if acts and [a.lower() for a in acts] not in ([d.lower() for d in default],
                                                  [d.lower() for d in default * 2]):
        return f"activations {acts}: the integer kernel runs the defaults {default} only"
    if attrs.get("clip") is not None:
        return "clip: the integer kernel has no cell clipping"
    if int(attrs.get("input_forget", 0) or 0):
        return "input_forget=1: the integer kernel couples no gates"
    if op_type == "LSTM" and len(inputs) > 7 and inputs[7]:
        return "peepholes (input P): the integer kernel has none"
    return ""


def gate_tables(lut_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(sigmoid table, tanh table, step_log2): Q4.11 in, Q0.15 out, ``2^lut_len + 1`` entries."""
    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))

    args = (2.0 ** -GATE_FRAC, 0, I16_MIN, I16_MAX, 2.0 ** -STATE_FRAC, 0, I16_MIN, I16_MAX)
    return (make_table(sigmoid, *args, log2_entries=lut_len), make_table(np.tanh, *args, log2_entries=lut_len),
            16 - int(lut_len))


@njit(cache=True, inline="always")
def _clamp(v, lo, hi):
    return min(max(v, lo), hi)


@njit(cache=True, inline="always")
def _table(v, table, step_log2, mode):
    """One Q4.11 code through an interpolated Q0.15 table."""
    return interp_one(v, table, np.int64(I16_MIN), step_log2, I16_MIN, I16_MAX, mode)


@njit(cache=True, inline="always")
def _recurrent_part(h, r_codes, row, m, s, acc_lo, acc_hi, mode):
    acc = np.int64(0)
    for j in range(h.shape[0]):
        acc += h[j] * r_codes[row, j]
    return round_shift(_clamp(acc, acc_lo, acc_hi) * m, s, mode)


@njit(cache=True)
def _run(kind, xg, r_codes, mh, sh, rbn, acc_bits, lens, reverse, h0, c0, sig, tanh, step_log2, lbr, mode,
         y, h_out, c_out):
    """One direction.  ``kind`` 0 RNN, 1 GRU, 2 LSTM; ``xg`` int64 [T, B, G·H]: the input part
    plus biases in Q4.11 (GRU with ``lbr``: without ``Rb`` of the n gate, which is ``rbn``)."""
    n_t, n_b, _ = xg.shape
    hidden = r_codes.shape[1]
    acc_hi = (np.int64(1) << (acc_bits - 1)) - 1
    acc_lo = -acc_hi - 1
    pre = np.empty(r_codes.shape[0], np.int64)
    h_new = np.empty(hidden, np.int64)
    rh = np.empty(hidden, np.int64)
    for b in range(n_b):
        h = h0[b].copy()
        c = c0[b].copy()
        for k in range(lens[b]):
            t = lens[b] - 1 - k if reverse else k
            if kind == 1:  # GRU: z, r first; n needs r
                for row in range(2 * hidden):
                    pre[row] = _clamp(xg[t, b, row] + _recurrent_part(h, r_codes, row, mh[row], sh[row], acc_lo,
                                                                      acc_hi, mode), I16_MIN, I16_MAX)
                for j in range(hidden):
                    z = _table(pre[j], sig, step_log2, mode)
                    rg = _table(pre[hidden + j], sig, step_log2, mode)
                    pre[j], pre[hidden + j] = z, rg
                for j in range(hidden):
                    rh[j] = round_shift(pre[hidden + j] * h[j], STATE_FRAC, mode)
                for j in range(hidden):
                    row = 2 * hidden + j
                    if lbr:
                        hn = _recurrent_part(h, r_codes, row, mh[row], sh[row], acc_lo, acc_hi, mode) + rbn[j]
                        v = xg[t, b, row] + round_shift(pre[hidden + j] * hn, STATE_FRAC, mode)
                    else:
                        v = xg[t, b, row] + _recurrent_part(rh, r_codes, row, mh[row], sh[row], acc_lo, acc_hi, mode)
                    n = _table(_clamp(v, I16_MIN, I16_MAX), tanh, step_log2, mode)
                    h_new[j] = _clamp(n + round_shift(pre[j] * (h[j] - n), STATE_FRAC, mode), I16_MIN, I16_MAX)
            else:
                for row in range(r_codes.shape[0]):
                    pre[row] = _clamp(xg[t, b, row] + _recurrent_part(h, r_codes, row, mh[row], sh[row], acc_lo,
                                                                      acc_hi, mode), I16_MIN, I16_MAX)
                for j in range(hidden):
                    if kind == 0:
                        h_new[j] = _table(pre[j], tanh, step_log2, mode)
                        continue
                    i = _table(pre[j], sig, step_log2, mode)  # ONNX LSTM gate order: i, o, f, c
                    o = _table(pre[hidden + j], sig, step_log2, mode)
                    f = _table(pre[2 * hidden + j], sig, step_log2, mode)
                    g = _table(pre[3 * hidden + j], tanh, step_log2, mode)
                    c[j] = _clamp(round_shift(f * c[j], STATE_FRAC, mode)
                                  + round_shift(i * g, 2 * STATE_FRAC - CELL_FRAC, mode), I32_MIN, I32_MAX)
                    tc = _table(_clamp(round_shift(c[j], CELL_FRAC - GATE_FRAC, mode), I16_MIN, I16_MAX), tanh,
                                step_log2, mode)
                    h_new[j] = round_shift(o * tc, STATE_FRAC, mode)
            h[:] = h_new
            y[t, b, :] = h
        h_out[b] = h
        c_out[b] = c


def recurrent_int(kind: str, xg: np.ndarray, r_codes: np.ndarray, mh: np.ndarray, sh: np.ndarray,
                  rbn: np.ndarray, acc_bits: int, lens: np.ndarray, reverse: bool, h0: np.ndarray,
                  c0: np.ndarray, sig: np.ndarray, tanh: np.ndarray, step_log2: int, linear_before_reset: bool,
                  mode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction of ``kind`` (RNN/GRU/LSTM) over ``xg`` [T, B, G·H] (Q4.11 input parts
    with biases).  ``r_codes`` [G·H, H] int (zero point removed), ``mh``/``sh`` per-row
    multipliers from ``2^-15 · R scale`` to ``2^-11``; ``h0`` [B, H] Q0.15, ``c0`` [B, H]
    Q11.20; ``lens`` [B] steps per batch entry.  Returns (Y [T, B, H] Q0.15 int16 — zero
    past each length, h_T [B, H] int16, c_T [B, H] Q11.20 int32)."""
    n_t, n_b, _ = xg.shape
    hidden = r_codes.shape[1]
    lens = np.asarray(lens, np.int64)
    if lens.shape != (n_b,) or lens.min(initial=0) < 0 or lens.max(initial=0) > n_t:
        raise ValueError(f"sequence_lens {lens.tolist()} do not fit {n_t} steps x {n_b} batch entries")
    y = np.zeros((n_t, n_b, hidden), np.int64)
    h_out = np.empty((n_b, hidden), np.int64)
    c_out = np.empty((n_b, hidden), np.int64)
    _run({"RNN": 0, "GRU": 1, "LSTM": 2}[kind], np.ascontiguousarray(xg, np.int64),
         np.ascontiguousarray(r_codes, np.int64), np.asarray(mh, np.int64), np.asarray(sh, np.int64),
         np.asarray(rbn, np.int64), np.int64(acc_bits), lens, bool(reverse),
         np.ascontiguousarray(h0, np.int64), np.ascontiguousarray(c0, np.int64), np.asarray(sig, np.int64),
         np.asarray(tanh, np.int64), np.int64(step_log2), bool(linear_before_reset), int(mode), y, h_out, c_out)
    return y.astype(np.int16), h_out.astype(np.int16), c_out.astype(np.int32)
