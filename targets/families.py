"""The TX5xxx chip families of the reference tool, as data (one :class:`Target` row each):
family name, the chip names ``--chip`` accepts, bit-widths, mixed-precision support, and the
integer arithmetic; plus ``generic`` (onnxruntime QDQ, no chip rules).

The reference documents bit-widths and mixed precision per family; it is silent on op
coverage, so: TX510x (8-bit only, the oldest) runs the base integer op set; the 8/16-bit
families add the extended lookup tables (Gelu, Erf, Softplus, Reciprocal, Sqrt, Log...) and
LayerNormalization as a mixed op, and RNN/GRU/LSTM on the integer recurrent kernel.
"""
from __future__ import annotations

from ptqc.targets.base import BASE_INTEGER_OPS, EXTENDED_LUT_OPS, RECURRENT_OPS, RULES, Target  # noqa: F401 - RULES re-exported

_MIXED = frozenset({"LayerNormalization"})


def _family(name: str, chips: tuple[str, ...]) -> Target:
    return Target(name, chips, frozenset({8, 16}), True, integer_ops=BASE_INTEGER_OPS | RECURRENT_OPS,
                  lut_ops=EXTENDED_LUT_OPS, mixed_ops=_MIXED)


FAMILIES: tuple[Target, ...] = (
    Target("TX510x", ("TX510x",), frozenset({8}), False),
    _family("TX5336x_TX5256x", ("TX5336x", "TX5256x")),
    _family("TX5368x_TX5339x_TX5335x", ("TX5368x", "TX5368AV200", "TX5339x", "TX5335x")),
    _family("TX5215x_TX5239x200_TX5239x220_TX5239x300", ("TX5215x", "TX5239x200", "TX5239x220", "TX5239x300")),
    _family("TX5112x_TX5239x201", ("TX5112x", "TX5239x201")),
    Target("generic", ("generic",), frozenset({8, 16}), True, activation_symmetric=False,
           lut_ops=EXTENDED_LUT_OPS, mixed_ops=_MIXED,
           fused_activations=frozenset({"Relu", "Clip", "LeakyRelu", "HardSwish"})),
)


def family_of(chip: str) -> Target | None:
    """The family a chip (or family) name belongs to, case-insensitively; None if unknown."""
    key = chip.lower()
    for fam in FAMILIES:
        if key == fam.name.lower() or key in (c.lower() for c in fam.chips):
            return fam
    return None


def chip_names() -> list[str]:
    return [c for fam in FAMILIES for c in fam.chips]
