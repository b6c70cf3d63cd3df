"""The target table: every family and chip of the reference, its rules by name, and the
arithmetic choices written next to the values."""
from __future__ import annotations

import numpy as np
import pytest

from ptqc.errors import ConfigError
from ptqc.runtime.kernels.requant import ROUNDING, quantize_multiplier, requantize_channels
from ptqc.targets.base import RULES
from ptqc.targets.families import FAMILIES, chip_names, family_of

# The reference's table: family -> (chips named in it, bit-widths).
REFERENCE = {
    "TX510x": ({"TX510x"}, {8}),
    "TX5336x_TX5256x": ({"TX5336x", "TX5256x"}, {8, 16}),
    "TX5368x_TX5339x_TX5335x": ({"TX5368x", "TX5368AV200", "TX5339x", "TX5335x"}, {8, 16}),
    "TX5215x_TX5239x200_TX5239x220_TX5239x300": ({"TX5215x", "TX5239x200", "TX5239x220", "TX5239x300"}, {8, 16}),
    "TX5112x_TX5239x201": ({"TX5112x", "TX5239x201"}, {8, 16}),
}


@pytest.mark.parametrize("family", sorted(REFERENCE))
def test_every_reference_family_and_chip_resolves(family):
    chips, bits = REFERENCE[family]
    for name in chips | {family, family.lower()}:
        assert family_of(name).name == family
    fam = family_of(family)
    assert fam.bit_widths == frozenset(bits)
    assert fam.mixed_precision == (bits == {8, 16})
    assert chips <= set(chip_names())


def test_unknown_chip_is_none():
    assert family_of("TX9999") is None


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_arithmetic_fits_the_64_bit_product(fam):
    """acc · M must fit int64 for every width the family runs; rounding is a known mode."""
    assert fam.rounding in ROUNDING
    for bits in fam.bit_widths:
        assert fam.acc_bits(bits) + fam.mult_bits(bits) <= 63
        # the accumulator holds a full 3x3x512 int-by-int dot product without saturating
        assert (2 * (bits - 1)) + int(np.ceil(np.log2(9 * 512))) < fam.acc_bits(bits)
    assert fam.default_lut_len in fam.lut_lengths and fam.lut_lengths == range(8, 13)


def test_violations_name_the_rule_and_value():
    tx510 = family_of("TX510x")
    with pytest.raises(ConfigError, match=r"-b/--bit-width 16: rule bit-width: TX510x runs 8-bit only"):
        tx510.check_bit_width(16)
    with pytest.raises(ConfigError, match=r"-ll/--lut-len 13: rule lut-len"):
        family_of("TX5368AV200").check_lut_len(13)
    assert {"bit-width", "mixed-precision", "lut-len", "accumulator"} <= set(RULES)


def test_tx_rounding_is_half_even_on_ties():
    """The documented choice: requantization ties go to even (…, 0.5 → 0, 1.5 → 2, -0.5 → 0)."""
    fam = family_of("TX510x")
    acc = np.array([[1, 3, 5, -1, -3, 7]], np.int64)  # / 2 -> 0.5, 1.5, 2.5, -0.5, -1.5, 3.5
    m, s = quantize_multiplier(0.5, fam.mult_bits(8))
    out = requantize_channels(acc, m, s, 0, -128, 127, ROUNDING[fam.rounding], np.int8, None)
    assert out.tolist() == [[0, 2, 2, 0, -2, 4]]


def test_chips_fuse_only_saturating_activations():
    for fam in FAMILIES:
        if fam.name != "generic":
            assert fam.fused_activations == {"Relu", "Clip"}
