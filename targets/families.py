"""The TX5xxx chip families of the reference tool, as data: family name, the chip names
``--chip`` accepts, bit-widths, and whether mixed precision is supported.

This table names chips only; the full target descriptions (rounding, accumulator width,
LUT lengths, op support) are added with the integer lowering.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChipFamily:
    name: str
    chips: tuple[str, ...]
    bit_widths: frozenset[int]
    mixed_precision: bool


FAMILIES: tuple[ChipFamily, ...] = (
    ChipFamily("TX510x", ("TX510x",), frozenset({8}), False),
    ChipFamily("TX5336x_TX5256x", ("TX5336x", "TX5256x"), frozenset({8, 16}), True),
    ChipFamily("TX5368x_TX5339x_TX5335x", ("TX5368x", "TX5368AV200", "TX5339x", "TX5335x"),
               frozenset({8, 16}), True),
    ChipFamily("TX5215x_TX5239x200_TX5239x220_TX5239x300",
               ("TX5215x", "TX5239x200", "TX5239x220", "TX5239x300"), frozenset({8, 16}), True),
    ChipFamily("TX5112x_TX5239x201", ("TX5112x", "TX5239x201"), frozenset({8, 16}), True),
    ChipFamily("generic", ("generic",), frozenset({8, 16}), True),
)


def family_of(chip: str) -> ChipFamily | None:
    """The family a chip (or family) name belongs to, case-insensitively; None if unknown."""
    key = chip.lower()
    for fam in FAMILIES:
        if key == fam.name.lower() or key in (c.lower() for c in fam.chips):
            return fam
    return None


def chip_names() -> list[str]:
    return [c for fam in FAMILIES for c in fam.chips]
