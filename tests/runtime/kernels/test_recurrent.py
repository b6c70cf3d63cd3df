"""The integer RNN/GRU/LSTM kernel against a reference on Python integers, written from the
module's stated arithmetic (ONNX gate equations in Q4.11 / Q0.15 / Q11.20), and the fixed
formats against float: a step of each cell stays within a few LSB of the float cell."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intref import ref_round_shift
from ptqc.runtime.kernels.recurrent import (CELL_FRAC, GATE_FRAC, GATES, STATE_FRAC, gate_tables, recurrent_int,
                                            unsupported)


def _clamp(v: int, bits: int) -> int:
    return min(max(v, -(1 << (bits - 1))), (1 << (bits - 1)) - 1)


def _table(v: int, table, step: int, mode: int) -> int:
    d = v + (1 << 15)
    i, f = d >> step, d & ((1 << step) - 1)
    return _clamp(int(table[i]) + ref_round_shift((int(table[i + 1]) - int(table[i])) * f, step, mode), 16)


def ref_recurrent(kind, xg, r, mh, sh, rbn, acc_bits, lens, reverse, h0, c0, sig, tanh, step, lbr, mode):
    """The kernel's arithmetic on Python ints, one element at a time."""
    n_t, n_b, _ = xg.shape
    hid = r.shape[1]
    y = [[[0] * hid for _ in range(n_b)] for _ in range(n_t)]
    h_out, c_out = [], []

    def rec(h, row):
        acc = sum(int(h[j]) * int(r[row, j]) for j in range(hid))
        acc = min(max(acc, -(1 << (acc_bits - 1))), (1 << (acc_bits - 1)) - 1)
        return ref_round_shift(acc * int(mh[row]), int(sh[row]), mode)

    def rs(v, s):
        return ref_round_shift(v, s, mode)

    for b in range(n_b):
        h, c = [int(v) for v in h0[b]], [int(v) for v in c0[b]]
        for k in range(int(lens[b])):
            t = int(lens[b]) - 1 - k if reverse else k
            pre = [_clamp(int(xg[t, b, row]) + rec(h, row), 16) for row in range(r.shape[0])]
            if kind == "RNN":
                h = [_table(pre[j], tanh, step, mode) for j in range(hid)]
            elif kind == "LSTM":
                g = [[_table(pre[q * hid + j], tanh if q == 3 else sig, step, mode) for j in range(hid)] for q in range(4)]
                c = [_clamp(rs(g[2][j] * c[j], STATE_FRAC) + rs(g[0][j] * g[3][j], 2 * STATE_FRAC - CELL_FRAC), 32)
                     for j in range(hid)]
                h = [rs(g[1][j] * _table(_clamp(rs(c[j], CELL_FRAC - GATE_FRAC), 16), tanh, step, mode), STATE_FRAC)
                     for j in range(hid)]
            else:
                z = [_table(pre[j], sig, step, mode) for j in range(hid)]
                rg = [_table(pre[hid + j], sig, step, mode) for j in range(hid)]
                rh = [rs(rg[j] * h[j], STATE_FRAC) for j in range(hid)]
                new = []
                for j in range(hid):
                    row = 2 * hid + j
                    if lbr:
                        v = int(xg[t, b, row]) + rs(rg[j] * (rec(h, row) + int(rbn[j])), STATE_FRAC)
                    else:
                        v = int(xg[t, b, row]) + rec(rh, row)
                    n = _table(_clamp(v, 16), tanh, step, mode)
                    new.append(_clamp(n + rs(z[j] * (h[j] - n), STATE_FRAC), 16))
                h = new
            y[t][b] = list(h)
        h_out.append(h)
        c_out.append(c)
    return np.array(y, np.int64), np.array(h_out, np.int64), np.array(c_out, np.int64)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["RNN", "GRU", "LSTM"]), lbr=st.booleans(), reverse=st.booleans(),
       mode=st.sampled_from([0, 1, 2]), lut_len=st.sampled_from([8, 10, 12]), seed=st.integers(0, 2 ** 31),
       acc_bits=st.sampled_from([20, 48]), initial=st.booleans())
def test_kernel_is_bit_exact_against_the_integer_reference(kind, lbr, reverse, mode, lut_len, seed, acc_bits, initial):
    """Random codes across the whole int16 gate range (saturating pre-activations and tables'
    ends), per-row multipliers, sequence lengths with a zero, initial states near the limits;
    a 20-bit accumulator makes the recurrent sum saturate."""
    rng = np.random.default_rng(seed)
    n_t, n_b, hid = 5, 3, 4
    rows = GATES[kind] * hid
    xg = rng.integers(-40000, 40000, (n_t, n_b, rows))
    r = rng.integers(-128, 128, (rows, hid))
    mh = rng.integers(1 << 14, 1 << 15, rows)
    sh = rng.integers(14, 22, rows)
    rbn = rng.integers(-3000, 3000, hid)
    lens = np.array([n_t, 0, rng.integers(1, n_t + 1)])
    h0 = rng.integers(-32768, 32768, (n_b, hid)) if initial else np.zeros((n_b, hid), np.int64)
    c0 = rng.integers(-(1 << 31), 1 << 31, (n_b, hid)) if initial else np.zeros((n_b, hid), np.int64)
    sig, tanh, step = gate_tables(lut_len)
    args = (kind, xg, r, mh, sh, rbn, acc_bits, lens, reverse, h0, c0, sig, tanh, step, lbr, mode)
    got = recurrent_int(*args)
    want = ref_recurrent(*args)
    for g, w, name in zip(got, want, ("Y", "Y_h", "Y_c")):
        np.testing.assert_array_equal(g.astype(np.int64), w, err_msg=name)
    assert not got[0][:, 1].any()  # a zero-length entry: Y all zero


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_fixed_formats_track_the_float_cell(kind):
    """Fifty steps of each cell on Q-format inputs against the float cell on the same
    (dequantized) weights and inputs: the hidden state within 2e-3 (about 64 LSB of Q0.15)
    after the drift of fifty steps of rounding."""
    rng = np.random.default_rng(1)
    n_t, hid = 50, 8
    rows = GATES[kind] * hid
    pre_x = rng.normal(0, 1.5, (n_t, 1, rows))
    r_real = rng.normal(0, 0.4, (rows, hid))
    r_scale = np.abs(r_real).max(axis=1) / 127
    r_codes = np.rint(r_real / r_scale[:, None]).astype(np.int64)
    r_q = r_codes * r_scale[:, None]
    from ptqc.runtime.kernels.requant import quantize_multiplier
    mh, sh = quantize_multiplier(2.0 ** -STATE_FRAC * r_scale / 2.0 ** -GATE_FRAC, 15)
    sig, tanh, step = gate_tables(10)
    xg = np.rint(pre_x / 2.0 ** -GATE_FRAC).astype(np.int64)
    y, _, _ = recurrent_int(kind, xg, r_codes, mh, sh, np.zeros(hid, np.int64), 48, np.array([n_t]), False,
                            np.zeros((1, hid), np.int64), np.zeros((1, hid), np.int64), sig, tanh, step, False, 1)
    s = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, c = np.zeros(hid), np.zeros(hid)
    px = xg[:, 0] * 2.0 ** -GATE_FRAC
    for t in range(n_t):
        p = px[t] + (r_q @ h if kind != "GRU" else 0)
        if kind == "RNN":
            h = np.tanh(p)
        elif kind == "LSTM":
            i, o, f, g = s(p[:hid]), s(p[hid:2 * hid]), s(p[2 * hid:3 * hid]), np.tanh(p[3 * hid:])
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            zr = px[t][:2 * hid] + r_q[:2 * hid] @ h
            z, rg = s(zr[:hid]), s(zr[hid:])
            n = np.tanh(px[t][2 * hid:] + r_q[2 * hid:] @ (rg * h))
            h = (1 - z) * n + z * h
        assert np.abs(y[t, 0] * 2.0 ** -STATE_FRAC - h).max() < 2e-3, t


def test_unsupported_says_which_attribute():
    assert unsupported("LSTM", {}, ["x", "w", "r"]) == ""
    assert unsupported("GRU", {"activations": [b"Sigmoid", b"Tanh", b"Sigmoid", b"Tanh"]}, ["x"]) == ""
    assert "activations" in unsupported("RNN", {"activations": [b"Relu"]}, ["x"])
    assert "clip" in unsupported("LSTM", {"clip": 3.0}, ["x"])
    assert "input_forget" in unsupported("LSTM", {"input_forget": 1}, ["x"])
    assert "peepholes" in unsupported("LSTM", {}, ["x", "w", "r", "", "", "", "", "p"])
