"""Shared by the integer-kernel tests: the rounding every requantization ends with, on Python
integers (the reference the kernels are held to), and a hypothesis strategy for integer
tensors that reach the saturation edges."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def ref_round_shift(v: int, s: int, mode: int) -> int:
    """round(v / 2^s) on Python ints; ties: 0 up, 1 to even, 2 away from zero."""
    if s <= 0:
        return v * 2 ** -s
    q, r = divmod(v, 2 ** s)
    if 2 * r != 2 ** s:
        return q + (2 * r > 2 ** s)
    return {0: q + 1, 1: q + q % 2, 2: q + 1 if v >= 0 else q}[mode]


@st.composite
def int_tensor(draw, shape, dtype, with_zero: bool = False):
    """Uniform values, or values piled on the dtype's edges (saturation), 0 among them
    with ``with_zero``."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if draw(st.booleans()):
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    edges = [info.min, info.min + 1] + [0] * with_zero + [info.max - 1, info.max]
    return rng.choice(np.clip(np.array(edges, np.int64), info.min, info.max), shape).astype(dtype)
