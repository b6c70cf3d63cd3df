"""QuantParam, range -> parameters, and the union-find that resolves sharing."""
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptqc.quant import UnionFind, qparam_from_range


def test_asymmetric_uint8_covers_the_range_and_zero_is_exact():
    p = qparam_from_range(np.float32(-1.0), np.float32(3.0), np.uint8, symmetric=False)
    assert p.zero_point == 64 and np.isclose(p.scale, 4.0 / 255)
    assert p.dequantize(p.quantize(np.zeros(3, np.float32))).tolist() == [0, 0, 0]
    x = np.linspace(-1, 3, 101, dtype=np.float32)
    assert np.max(np.abs(p.fake_quantize(x) - x)) <= p.scale / 2 + 1e-7


def test_symmetric_int8_per_channel_uses_127():
    p = qparam_from_range(np.array([-2.0, -0.5]), np.array([1.0, 0.25]), np.int8, symmetric=True, axis=0)
    assert p.scale.tolist() == pytest.approx([2 / 127, 0.5 / 127])
    assert p.zero_point.tolist() == [0, 0] and p.qmin == -127


def test_zero_range_gets_the_unit_range_and_a_warning_naming_the_tensor(caplog):
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        p = qparam_from_range(np.float32(0), np.float32(0), np.uint8, symmetric=False, name="dead")
        q = qparam_from_range(np.zeros(2), np.array([0.0, 2.0]), np.int8, symmetric=True, axis=0, name="w")
    assert np.isclose(p.scale, 1 / 255) and p.zero_point == 0 and "dead" in caplog.text
    assert np.allclose(q.scale, [1 / 127, 2 / 127])  # only the all-zero channel gets it


def test_infinite_range_is_clamped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        p = qparam_from_range(np.float32(-np.inf), np.float32(1), np.int8, symmetric=True, name="mask")
    assert np.isfinite(p.scale) and p.scale > 0 and "mask" in caplog.text


@settings(max_examples=50, deadline=None)
@given(st.floats(-1e4, 0), st.floats(0, 1e4), st.booleans())
def test_quantize_error_is_at_most_half_a_step_inside_the_range(lo, hi, symmetric):
    p = qparam_from_range(np.float32(lo), np.float32(hi), np.int8, symmetric=symmetric)
    x = np.linspace(lo, hi, 257).astype(np.float32)
    assert np.max(np.abs(p.fake_quantize(x) - x)) <= p.scale * 0.5 * (1 + 1e-5) + 1e-6


def test_union_find_root_is_the_first_member_whatever_the_union_order():
    a, b = UnionFind(), UnionFind()
    for x in "pqrs":
        a.add(x)
        b.add(x)
    a.union("p", "q"), a.union("r", "s"), a.union("s", "q")
    b.union("s", "r"), b.union("q", "r"), b.union("q", "p")
    assert a.groups() == b.groups() == {"p": ["p", "q", "r", "s"]}
