"""Tiny ONNX models for unit tests, built with onnx.helper (thin conveniences over it).

Value specs may be given as ``(name, elem_type, shape)`` tuples anywhere a ValueInfoProto
is accepted: ``elem_type`` is a TensorProto enum int or anything ``np.dtype`` accepts
(``np.float32``, ``np.bool_``, ``"int64"``); ``shape`` is a list of ints (static dims),
strings (symbolic dims, e.g. ``"N"``) or None (unknown dim), ``[]`` for a scalar, or
None as a whole for a tensor of unknown rank.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, ValueInfoProto, helper, numpy_helper

from ptqc.samples import random_feeds, synthetic_model  # shared with tools/; the tests use them from here

__all__ = [
    "elem_type", "value_info", "tensor_input", "tensor_output", "initializer", "make_model", "check_model",
    "conv_bn_relu_model", "random_feeds", "synthetic_model",
]

ValueSpec = ValueInfoProto | tuple


def elem_type(dtype: Any) -> int:
    """A TensorProto element type from an enum int, a numpy dtype/type, or a dtype name."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        return int(dtype)
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def value_info(name: str, dtype: Any = np.float32, shape: Sequence[int | str | None] | None = None) -> ValueInfoProto:
    """A tensor ValueInfoProto; ``shape=None`` means unknown rank, ``[]`` a scalar."""
    return helper.make_tensor_value_info(name, elem_type(dtype), None if shape is None else list(shape))


def tensor_input(name: str, shape: Sequence[int | str | None] | None, dtype: Any = np.float32) -> ValueInfoProto:
    """A graph input (or output, or value_info entry) of the given shape and dtype."""
    return value_info(name, dtype, shape)


tensor_output = tensor_input


def initializer(name: str, array: Any) -> TensorProto:
    """A TensorProto initializer holding ``array`` (numpy scalars become 0-d tensors)."""
    return numpy_helper.from_array(np.asarray(array), name)


def _as_value_info(spec: ValueSpec) -> ValueInfoProto:
    if isinstance(spec, ValueInfoProto):
        return spec
    if isinstance(spec, str):
        return helper.make_empty_tensor_value_info(spec)
    name, dtype, shape = spec
    return value_info(name, dtype, shape)


def _as_initializers(inits: Iterable[TensorProto | tuple] | Mapping[str, Any]) -> list[TensorProto]:
    if isinstance(inits, Mapping):
        return [initializer(k, v) for k, v in inits.items()]
    return [t if isinstance(t, TensorProto) else initializer(*t) for t in inits]


def _opset_imports(opset: int | Mapping[str, int]) -> list[onnx.OperatorSetIdProto]:
    if isinstance(opset, Mapping):
        return [helper.make_opsetid(d, v) for d, v in opset.items()]
    return [helper.make_opsetid("", int(opset))]


def make_model(nodes: Iterable[onnx.NodeProto], inputs: Iterable[ValueSpec], outputs: Iterable[ValueSpec],
               initializers: Iterable[TensorProto | tuple] | Mapping[str, Any] = (), opset: int | Mapping[str, int] = 13,
               value_info: Iterable[ValueSpec] = (), *, name: str = "test_graph", ir_version: int | None = None,
               check: bool = True, full_check: bool = False, **kw: Any) -> onnx.ModelProto:
    """A ModelProto from nodes and value specs, run through ``onnx.checker`` unless ``check=False``.

    ``opset`` is the default-domain version, or a mapping ``{domain: version}``.
    ``initializers`` are TensorProtos, ``(name, array)`` pairs, or a ``{name: array}`` mapping.
    ``ir_version`` defaults to the lowest one the opsets allow, but at least 8 (so
    initializers need not be graph inputs and any onnxruntime accepts it). Other keyword
    arguments go to ``onnx.helper.make_model`` (``producer_name``, ``functions``, ...).
    ``full_check=True`` also runs strict shape inference. Outputs (or inputs) of unknown
    rank (shape None) pass the check; see ``check_model``.
    """
    opsets = _opset_imports(opset)
    graph = helper.make_graph(list(nodes), name, [_as_value_info(s) for s in inputs],
                              [_as_value_info(s) for s in outputs], _as_initializers(initializers),
                              value_info=[_as_value_info(s) for s in value_info])
    if ir_version is None:
        ir_version = max(8, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version, **kw)
    if check:
        check_model(model, full_check=full_check)
    return model


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """``onnx.checker.check_model``, except that graph inputs/outputs of unknown rank
    (``shape=None``) are allowed: the checker insists on a shape field there, though
    onnxruntime and shape inference accept its absence. Such a model is checked as a copy
    with those shapes marked present, and ``full_check`` then runs strict shape inference
    on the original itself."""
    shapeless = [vi for vi in (*model.graph.input, *model.graph.output)
                 if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    if not shapeless:
        onnx.checker.check_model(model, full_check=full_check)
        return
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for vi in (*copy.graph.input, *copy.graph.output):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.SetInParent()
    onnx.checker.check_model(copy)
    if full_check:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def conv_bn_relu_model(in_channels: int = 3, out_channels: int = 4, hw: int | tuple[int, int] = 8,
                       kernel: int = 3, batch: int | str = 1, *, conv_bias: bool = True, seed: int = 0,
                       opset: int = 13, epsilon: float = 1e-5) -> onnx.ModelProto:
    """x[batch,in,H,W] -> Conv(kernel, pad "same", with bias unless conv_bias=False) -> BatchNormalization -> Relu -> y.

    Weights and BN parameters are random but valid: scale in +-[0.5, 1.5] (some negative),
    var in [0.5, 2.0] (> 0), mean and bias N(0, 0.5). Initializer names: ``conv.weight``,
    ``conv.bias``, ``bn.scale``, ``bn.bias``, ``bn.mean``, ``bn.var``; intermediate values
    ``conv_out``, ``bn_out``.
    """
    rng = np.random.default_rng(seed)
    h, w = (hw, hw) if isinstance(hw, int) else hw
    pad = kernel // 2
    fan_in = in_channels * kernel * kernel
    inits = [initializer("conv.weight", (rng.standard_normal((out_channels, in_channels, kernel, kernel))
                                         * np.sqrt(2.0 / fan_in)).astype(np.float32))]
    conv_inputs = ["x", "conv.weight"]
    if conv_bias:
        inits.append(initializer("conv.bias", rng.normal(0, 0.1, out_channels).astype(np.float32)))
        conv_inputs.append("conv.bias")
    scale = rng.uniform(0.5, 1.5, out_channels) * rng.choice([-1.0, 1.0], out_channels, p=[0.25, 0.75])
    inits += [initializer("bn.scale", scale.astype(np.float32)),
              initializer("bn.bias", rng.normal(0, 0.5, out_channels).astype(np.float32)),
              initializer("bn.mean", rng.normal(0, 0.5, out_channels).astype(np.float32)),
              initializer("bn.var", rng.uniform(0.5, 2.0, out_channels).astype(np.float32))]
    nodes = [
        helper.make_node("Conv", conv_inputs, ["conv_out"], name="conv", kernel_shape=[kernel, kernel],
                         pads=[pad, pad, pad, pad]),
        helper.make_node("BatchNormalization", ["conv_out", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
                         ["bn_out"], name="bn", epsilon=epsilon),
        helper.make_node("Relu", ["bn_out"], ["y"], name="relu"),
    ]
    out_hw = (h + 2 * pad - kernel + 1, w + 2 * pad - kernel + 1)
    return make_model(nodes, [("x", np.float32, [batch, in_channels, h, w])],
                      [("y", np.float32, [batch, out_channels, *out_hw])], inits, opset=opset,
                      name="conv_bn_relu", full_check=True)


def concat_heavy_model(seed: int = 0) -> onnx.ModelProto:
    """A float model full of Concats, for scale unification (-uis).  x[1,2,6,6] feeds three
    Convs: ``ra = Relu(Conv_a(x))``, ``b_out = Conv_b(x)``, ``m = 4 * Conv_d(x)``; then

        c1 = Concat(ra, b_out)      c2 = Concat(c1, m)   (a chain c1 -> c2)
        c3 = Concat(m, b_out)       (b_out and m each feed two Concats)
        y1 = MaxPool(Reshape(c2))   y2 = Conv_e(c3)

    The branches' ranges differ a lot (the x4), so unification is visible: with -uis, ra,
    b_out, m, c1, c2, c3 (and the pass-through r, y1) form one group.
    """
    rng = np.random.default_rng(seed)

    def w(o, i):
        return (rng.standard_normal((o, i, 3, 3)) * 0.3).astype(np.float32)

    inits = {"wa": w(3, 2), "wb": w(3, 2), "wd": w(2, 2), "we": w(2, 5), "four": np.array(4.0, np.float32),
             "shape": np.array([1, 8, 6, 6], np.int64)}
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a_out"], name="conv_a", **conv),
        helper.make_node("Relu", ["a_out"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["x", "wb"], ["b_out"], name="conv_b", **conv),
        helper.make_node("Conv", ["x", "wd"], ["d_out"], name="conv_d", **conv),
        helper.make_node("Mul", ["d_out", "four"], ["m"], name="mul"),
        helper.make_node("Concat", ["ra", "b_out"], ["c1"], name="concat1", axis=1),
        helper.make_node("Concat", ["c1", "m"], ["c2"], name="concat2", axis=1),
        helper.make_node("Concat", ["m", "b_out"], ["c3"], name="concat3", axis=1),
        helper.make_node("Reshape", ["c2", "shape"], ["r"], name="reshape"),
        helper.make_node("MaxPool", ["r"], ["y1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["c3", "we"], ["y2"], name="conv_e", **conv),
    ]
    return make_model(nodes, [("x", np.float32, [1, 2, 6, 6])],
                      [("y1", np.float32, [1, 8, 3, 3]), ("y2", np.float32, [1, 2, 6, 6])], inits,
                      name="concat_heavy")


def op_zoo_model(seed: int = 0, hw: int = 8) -> onnx.ModelProto:
    """One small float model (opset 17, input "x" 1x4xHxW, outputs "probs" and "feat") that
    runs every op kind the integer simulator lowers: Conv (plain, grouped/depthwise, strided,
    dilated) with Relu/Clip, ConvTranspose, Add/Sub/Mul, Concat, Max/Average/GlobalAverage
    pool, Resize nearest and linear, Sigmoid/HardSwish/Tanh tables, Reshape/Transpose/Flatten,
    MatMul, Gemm, LayerNormalization and Softmax."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return rng.normal(0, scale, shape).astype(np.float32)
    inits = {
        "w0": w(8, 4, 3, 3), "b0": w(8), "wd": w(8, 1, 3, 3), "bd": w(8), "w2": w(8, 8, 3, 3, scale=0.15),
        "wt": w(8, 4, 2, 2), "bt": w(4), "w3": w(4, 20, 1, 1), "b3": w(4),
        "mul_c": np.full((1, 4, 1, 1), 0.7, np.float32), "sizes": np.array([1, 4, hw, hw], np.int64),
        "scales2": np.array([1, 1, 2, 2], np.float32), "shape": np.array([1, 4, -1], np.int64),
        "wm": w(hw * hw // 4, 16, scale=0.2), "ln_g": (1 + w(16, scale=0.1)), "ln_b": w(16, scale=0.1),
        "wg": w(10, 64, scale=0.2), "bg": w(10), "lo": np.array(0.0, np.float32), "hi": np.array(4.0, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"]),
        n("Conv", ["r0", "wd", "bd"], ["cd"], pads=[2, 2, 2, 2], group=8, dilations=[2, 2]),
        n("Clip", ["cd", "lo", "hi"], ["r1"]),
        n("Conv", ["r1", "w2"], ["c2"], pads=[1, 0, 1, 1], strides=[2, 2]),
        n("HardSwish", ["c2"], ["h2"]),
        n("ConvTranspose", ["h2", "wt", "bt"], ["ct"], strides=[2, 2]),
        n("Sigmoid", ["ct"], ["s0"]),
        n("Mul", ["s0", "mul_c"], ["m0"]),
        n("MaxPool", ["r0"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Resize", ["mp", "", "scales2"], ["up_n"], mode="nearest"),
        n("AveragePool", ["r1"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        n("Concat", ["m0", "up_n", "ap"], ["cat"], axis=1),
        n("Conv", ["cat", "w3", "b3"], ["c3"]),
        n("Tanh", ["c3"], ["t3"]),
        n("Sub", ["t3", "m0"], ["d3"]),
        n("Add", ["d3", "s0"], ["a3"]),
        n("AveragePool", ["a3"], ["ap2"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Resize", ["ap2", "", "", "sizes"], ["up_l"], mode="linear"),
        n("Add", ["up_l", "a3"], ["a4"]),
        n("GlobalAveragePool", ["a4"], ["gap"]),
        n("MaxPool", ["a4"], ["mp2"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Reshape", ["mp2", "shape"], ["rs"]),
        n("MatMul", ["rs", "wm"], ["mm"]),
        n("LayerNormalization", ["mm", "ln_g", "ln_b"], ["ln"], axis=-1),
        n("Transpose", ["ln"], ["tr"], perm=[0, 2, 1]),
        n("Flatten", ["tr"], ["fl"]),
        n("Gemm", ["fl", "wg", "bg"], ["g"], transB=1),
        n("Softmax", ["g"], ["probs"], axis=-1),
        n("Flatten", ["gap"], ["feat"]),
    ]
    return make_model(nodes, [("x", np.float32, [1, 4, hw, hw])],
                      [("probs", np.float32, [1, 10]), ("feat", np.float32, [1, 4])], inits, opset=17)


def mixed_rules_model() -> onnx.ModelProto:
    """The mixed-precision rules' test model: x -> g1 -> LayerNormalization ln -> g2;
    Concat(ln, g2) -> g3; g4(x); add = g3 + g4; Abs(g4) -> z.  Gemms, ln, the Concat and the
    Add run quantized; Abs stays float."""
    rng = np.random.default_rng(0)
    w = lambda i, o: rng.standard_normal((i, o)).astype(np.float32)  # noqa: E731
    inits = {"w1": w(4, 4), "w2": w(4, 4), "w3": w(8, 4), "w4": w(4, 4),
             "s": np.ones(4, np.float32), "b": np.zeros(4, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h1"], name="g1"),
             helper.make_node("LayerNormalization", ["h1", "s", "b"], ["l"], name="ln", axis=-1),
             helper.make_node("Gemm", ["l", "w2"], ["h2"], name="g2"),
             helper.make_node("Concat", ["l", "h2"], ["c"], name="cat", axis=1),
             helper.make_node("Gemm", ["c", "w3"], ["h3"], name="g3"),
             helper.make_node("Gemm", ["x", "w4"], ["h4"], name="g4"),
             helper.make_node("Add", ["h3", "h4"], ["y"], name="add"),
             helper.make_node("Abs", ["h4"], ["z"], name="ab")]
    return make_model(nodes, [("x", np.float32, [1, 4])], [("y", np.float32, [1, 4]), ("z", np.float32, [1, 4])],
                      inits, opset=17)
