"""The requantization every integer op ends with: round_shift's three rounding modes on exact
halves, the fixed-point multiplier, and the fused accumulator pass (bias, saturation,
per-channel requantization) bit-exact against Python integers (tests/intref.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intref import ref_round_shift
from ptqc.runtime.kernels.requant import (ROUNDING, quantize_multiplier, requantize_accumulator,
                                          requantize_channels)

CASES = settings(max_examples=200, deadline=None)


@CASES
@given(x=st.integers(-(1 << 38), 1 << 38), m=st.integers(0, (1 << 22) - 1), s=st.integers(-2, 70),
       mode=st.sampled_from(sorted(ROUNDING.values())))
def test_requantize_channels_is_exact(x, m, s, mode):
    got = requantize_channels(np.array([[x]], np.int64), [m], [s], 0, -(1 << 62), 1 << 62, mode, np.int64, None)
    assert int(got[0, 0]) == ref_round_shift(x * m, s, mode)


@CASES
@given(real=st.floats(1e-12, 1e6), bits=st.sampled_from([15, 31]))
def test_quantize_multiplier_is_normalized_and_close(real, bits):
    m, s = quantize_multiplier(real, bits)
    assert (1 << (bits - 1)) <= int(m) < (1 << bits)
    assert abs(int(m) * 2.0 ** -int(s) - real) <= real * 2.0 ** -bits


@CASES
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 9)), acc_bits=st.sampled_from([16, 32, 48]),
       float_acc=st.booleans(), mode=st.sampled_from(sorted(ROUNDING.values())), seed=st.integers(0, 2**32 - 1))
def test_requantize_accumulator_matches_python_integers(shape, acc_bits, float_acc, mode, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(1 << 20), 1 << 20, shape)
    bias = rng.integers(-(1 << 18), 1 << 18, shape[1])
    m, s = quantize_multiplier(rng.uniform(1e-6, 2.0, shape[1]), 31 if acc_bits <= 32 else 15)
    zp, lo, hi = int(rng.integers(-5, 5)), -128, 127
    got, saturated = requantize_accumulator(acc.astype(np.float32) if float_acc else acc, bias, acc_bits, m, s, zp,
                                            lo, hi, mode, np.int8, 1)
    bound, count = 1 << (acc_bits - 1), 0
    for idx in np.ndindex(*shape):
        a = int(acc[idx]) + int(bias[idx[1]])
        if not -bound <= a < bound:
            count += 1
            a = min(max(a, -bound), bound - 1)
        want = zp + ref_round_shift(a * int(m[idx[1]]), int(s[idx[1]]), mode)
        assert int(got[idx]) == min(max(want, lo), hi)
    assert saturated == count and got.dtype == np.int8


@CASES
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 40)), axis=st.sampled_from([1, -1]),
       mode=st.sampled_from(sorted(ROUNDING.values())), seed=st.integers(0, 2**32 - 1))
def test_requantize_accumulator_through_a_table_is_the_table_of_the_codes(shape, axis, mode, seed):
    """A table op fused after the requantization: ``table[q - in_qmin]`` of the plain codes,
    channels along axis 1 (Conv) or last (MatMul)."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(1 << 20), 1 << 20, shape).astype(np.float32)
    n = shape[axis]
    m, s = quantize_multiplier(rng.uniform(1e-6, 0.01, n), 31)
    bias = rng.integers(-1000, 1000, n)
    table = rng.permutation(256).astype(np.int64) - 128
    plain, sat = requantize_accumulator(acc, bias, 32, m, s, 3, -100, 127, mode, np.int8, axis)
    got, sat_t = requantize_accumulator(acc, bias, 32, m, s, 3, -100, 127, mode, np.int8, axis, table, -128)
    assert np.array_equal(got, table[plain.astype(np.int64) + 128].astype(np.int8)) and sat == sat_t


def test_a_table_that_misses_codes_is_refused():
    acc = np.zeros((1, 2, 20), np.float32)
    with pytest.raises(ValueError, match="does not cover"):
        requantize_accumulator(acc, None, 32, [1 << 30, 1 << 30], [31, 31], 0, -128, 127, 1, np.int8, 1,
                               np.zeros(100, np.int64), -128)
