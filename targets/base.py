"""What a target is: one frozen row of data (STYLE.md §5).  The families live in
``families.py``; nothing outside this folder branches on a chip name.

Every rule a target enforces has a name in :data:`RULES`; a violation is a ConfigError
naming the rule, the node (or flag) and the value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ptqc.errors import ConfigError

RULES = {
    "bit-width": "the family runs only these activation/weight bit-widths",
    "mixed-precision": "the family runs one bit-width for the whole model",
    "lut-len": "16-bit lookup tables have 2^L entries, L in the family's range",
    "accumulator": "an integer accumulator saturates at the family's accumulator width",
}

# Ops every family runs on integer tensors without arithmetic: they move or select codes, so
# input and output share scale and zero point (a differing output scale adds one requantize).
DATA_MOVEMENT = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Slice", "Split",
    "Gather", "Pad", "DepthToSpace", "SpaceToDepth", "Tile", "Expand", "MaxPool", "GlobalMaxPool",
})

# Integer arithmetic of the oldest family (TX510x); Div only by a constant (a rescale).  Nonlinear ops listed in ``lut_ops`` run
# as tables.  Everything else stays float with explicit Q/DQ at its borders.
BASE_INTEGER_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Concat", "AveragePool",
    "GlobalAveragePool", "Resize", "Relu", "Clip", "Softmax", "BatchNormalization",
}) | DATA_MOVEMENT
# Recurrent layers on the integer recurrent kernel (runtime/kernels/recurrent.py): 16-bit
# states and gates inside, so only on families that run 16 bits.
RECURRENT_OPS = frozenset({"RNN", "GRU", "LSTM"})
BASE_LUT_OPS = frozenset({"Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Exp"})
EXTENDED_LUT_OPS = BASE_LUT_OPS | frozenset({
    "Gelu", "Erf", "Softplus", "Reciprocal", "Sqrt", "Log", "Elu", "Selu", "Mish", "Softsign", "Abs", "Neg",
})


@dataclass(frozen=True)
class Target:
    """One chip family.

    Integer arithmetic (DESIGN.md, quantization conventions): an op accumulates
    ``sum((x - zp_x) * w)`` exactly in ``accumulator_bits[bits]`` bits (saturating), then
    requantizes ``q = clamp(zp_out + round_shift(acc * M, s))`` with an unsigned multiplier
    ``M`` of ``multiplier_bits[bits]`` bits and a right shift ``s`` rounded per ``rounding``.

    Choices where the reference is silent (each tested in tests/targets/):

    - ``rounding = "half_even"`` (convergent rounding) everywhere.  Ties are frequent, not
      rare: an Add or average whose scales stand in a power-of-two ratio lands on exact
      halves for a large share of elements (14 % in one PP-OCR det Add), and half-up rounding
      would add +½ LSB of bias at each, accumulating along residual chains.  It is also the
      ONNX QuantizeLinear rule, so the simulator and onnxruntime agree on every tie.
      ``half_up`` and ``half_away`` are implemented and tested for families that need them.
    - ``accumulator_bits``: 32 for 8-bit activations (int8·int8 products are 2^14, so 2^17
      terms fit), 48 for 16-bit (int16·int16 products are 2^30).  ``multiplier_bits`` is then
      31 and 15, so ``acc · M`` fits the 64-bit product register (32+31, 48+15 ≤ 63).  A
      15-bit multiplier is exact to 2^-16 relative: at most 0.5 LSB at full int16 scale.
      Elementwise rescaling (Add/Sub/Concat/requantize) always uses 31-bit multipliers.
    - Accumulator overflow saturates (and the simulator counts it).
    - ``activation_symmetric``: TX5xxx activations are symmetric (zero point 0), weights
      symmetric per output channel everywhere.
    - Softmax runs in integer (exp table on ``max - x``, integer sum and division);
      LayerNormalization runs "mixed" (exact integer statistics, float normalization) on
      the families that list it, float elsewhere.
    - RNN/GRU/LSTM run on the 8/16-bit families with fixed-point internals (Q4.11 gate
      inputs, Q0.15 gates and hidden state, Q11.20 cell state: runtime/kernels/recurrent.py);
      TX510x, 8-bit only, runs them float.
    """

    name: str
    chips: tuple[str, ...]
    bit_widths: frozenset[int]
    mixed_precision: bool
    activation_symmetric: bool = True
    rounding: str = "half_even"
    accumulator_bits: tuple[tuple[int, int], ...] = ((8, 32), (16, 48))
    multiplier_bits: tuple[tuple[int, int], ...] = ((8, 31), (16, 15))
    elementwise_multiplier_bits: int = 31
    lut_lengths: range = range(8, 13)
    default_lut_len: int = 10
    integer_ops: frozenset[str] = BASE_INTEGER_OPS
    lut_ops: frozenset[str] = BASE_LUT_OPS
    mixed_ops: frozenset[str] = field(default_factory=frozenset)  # integer I/O, float inside
    # Activations that run inside the producer's requantization (no Q/DQ between): on a chip
    # only what saturation computes; other activations get their own quantized input.
    fused_activations: frozenset[str] = frozenset({"Relu", "Clip"})

    def check_bit_width(self, bits: int, where: str = "-b/--bit-width") -> None:
        if bits not in self.bit_widths:
            raise ConfigError(f"{where} {bits}: rule bit-width: {self.name} runs "
                              f"{'/'.join(str(b) for b in sorted(self.bit_widths))}-bit only")

    def check_lut_len(self, length: int, where: str = "-ll/--lut-len") -> None:
        if length not in self.lut_lengths:
            raise ConfigError(f"{where} {length}: rule lut-len: {self.name} takes "
                              f"{self.lut_lengths.start}..{self.lut_lengths.stop - 1}")

    def acc_bits(self, bits: int) -> int:
        return dict(self.accumulator_bits)[self._width(bits)]

    def mult_bits(self, bits: int) -> int:
        return dict(self.multiplier_bits)[self._width(bits)]

    def runs_integer(self, op_type: str) -> bool:
        return op_type in self.integer_ops or op_type in self.lut_ops or op_type in self.mixed_ops

    def _width(self, bits: int) -> int:
        return 8 if bits <= 8 else 16
