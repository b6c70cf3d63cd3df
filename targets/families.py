"""The TX5xxx chip families of the reference tool, as data: family name, the chip names
``--chip`` accepts, bit-widths, mixed-precision support and how activations are quantized;
plus ``generic`` (onnxruntime QDQ, no chip rules).

The full target descriptions (rounding, accumulator width, LUT lengths, op support) are
added with the integer lowering.  Every rule a target enforces has a name (``RULES``); a
violation is a ConfigError naming the rule, the target and the value.
"""
from __future__ import annotations

from dataclasses import dataclass

from ptqc.errors import ConfigError

RULES = {
    "bit-width": "the family runs only these activation/weight bit-widths",
}


@dataclass(frozen=True)
class ChipFamily:
    """One row of the family table.

    ``activation_symmetric``: the reference is silent on zero points.  TX5xxx NPUs are
    treated as symmetric int8/int16 for activations (zero point 0), the common NPU choice
    that keeps the integer kernels free of zero-point cross terms; ``generic`` follows
    onnxruntime's default (asymmetric uint8 activations, which suit post-ReLU tensors best).
    Weights are symmetric int8/int16 per output channel everywhere.
    """

    name: str
    chips: tuple[str, ...]
    bit_widths: frozenset[int]
    mixed_precision: bool
    activation_symmetric: bool = True

    def check_bit_width(self, bits: int, where: str = "-b/--bit-width") -> None:
        if bits not in self.bit_widths:
            raise ConfigError(f"{where} {bits}: rule bit-width: {self.name} runs "
                              f"{'/'.join(str(b) for b in sorted(self.bit_widths))}-bit only")


FAMILIES: tuple[ChipFamily, ...] = (
    ChipFamily("TX510x", ("TX510x",), frozenset({8}), False),
    ChipFamily("TX5336x_TX5256x", ("TX5336x", "TX5256x"), frozenset({8, 16}), True),
    ChipFamily("TX5368x_TX5339x_TX5335x", ("TX5368x", "TX5368AV200", "TX5339x", "TX5335x"),
               frozenset({8, 16}), True),
    ChipFamily("TX5215x_TX5239x200_TX5239x220_TX5239x300",
               ("TX5215x", "TX5239x200", "TX5239x220", "TX5239x300"), frozenset({8, 16}), True),
    ChipFamily("TX5112x_TX5239x201", ("TX5112x", "TX5239x201"), frozenset({8, 16}), True),
    ChipFamily("generic", ("generic",), frozenset({8, 16}), True, activation_symmetric=False),
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
