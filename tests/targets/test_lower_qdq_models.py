"""QDQ models as onnxruntime's quantizer (or a hand) writes them, opsets 10-21, lowered and
simulated against onnxruntime: Pad (the ``value`` attribute, the ``constant_value`` and
``axes`` inputs, every mode), int4/uint4 weights (per tensor, per axis, block-wise), float8
and int4 activations refused in one line, and a sweep of ``quantize_static`` over tiny
models (activation/weight types, per channel, opsets 13 and 21).

The criterion everywhere is the one of test_lower.py: each integer op, fed onnxruntime's
integers, lands within 1 LSB of onnxruntime's integer output; end to end, within one step
of the coarsest quantization on the way (two ops of 1 LSB each may add up)."""
from __future__ import annotations

import itertools
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import builders
from checks import assert_bad_input, isolated_lsb, list_reader, ort_outputs, ptqc
from ptqc.errors import ModelError
from ptqc.onnx_io import import_model
from ptqc.runtime.simulator import Simulator
from ptqc.targets.families import family_of
from ptqc.targets.lower import Lowering, lower

CHIP = "TX5368AV200"  # 8- and 16-bit
n = helper.make_node


def _ort(model: onnx.ModelProto, feeds: dict, optimize: bool) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _codes(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.int64)


def _qdq(x: str, out: str, scale: str, zp: str, **attrs) -> list[onnx.NodeProto]:
    return [n("QuantizeLinear", [x, scale, zp], [out + "_q"], **attrs),
            n("DequantizeLinear", [out + "_q", scale, zp], [out], **attrs)]


# ---------------------------------------------------------------------------- Pad
def _pad_model(opset: int, mode: str = "constant", value: float | None = 10.0, cv: str = "init", axes: bool = False,
               x_q=(np.int8, 0.04477, 0), y_q=(np.int8, 0.06, 0), relu: bool = False) -> onnx.ModelProto:
    """x -Q/DQ-> Pad [-> Relu] -Q-> y (integer output).  ``value`` None: the default pad value
    (0); ``cv``: the opset >= 11 constant_value as an initializer ("init"), through a DQ of
    integer codes ("dq", as onnxruntime's quantizer writes it) or absent ("none")."""
    inits = {"xs": np.float32(x_q[1]), "xz": np.asarray(x_q[2], x_q[0]),
             "ys": np.float32(y_q[1]), "yz": np.asarray(y_q[2], y_q[0])}
    pads = [1, 2, 2, 1] if axes else [0, 0, 1, 2, 0, 0, 2, 1]
    attrs = {"mode": mode}
    nodes = _qdq("x", "xd", "xs", "xz")
    if opset < 11:
        attrs["pads"] = pads
        if value is not None and mode == "constant":
            attrs["value"] = float(value)
        inputs = ["xd"]
    else:
        inits["pads"] = np.asarray(pads, np.int64)
        inputs = ["xd", "pads", ""]
        if value is not None and mode == "constant" and cv == "init":
            inits["cv"] = np.float32(value)
            inputs[2] = "cv"
        elif value is not None and mode == "constant" and cv == "dq":
            inits.update(cv_codes=np.uint8(200), cv_s=np.float32(value / 100), cv_z=np.uint8(100))
            nodes.append(n("DequantizeLinear", ["cv_codes", "cv_s", "cv_z"], ["cv_d"]))
            inputs[2] = "cv_d"
        if axes:
            inits["axes"] = np.asarray([2, -1], np.int64)
            inputs.append("axes")
    nodes.append(n("Pad", inputs, ["p"], name="pad", **attrs))
    if relu:
        nodes.append(n("Relu", ["p"], ["pr"]))
    nodes.append(n("QuantizeLinear", ["pr" if relu else "p", "ys", "yz"], ["y"]))
    return builders.make_model(nodes, [("x", np.float32, [1, 2, 3, 4])], [("y", y_q[0], [1, 2, 6, 7])], inits,
                               opset=opset)


def _pad_feeds(seed: int = 0) -> dict:
    return {"x": np.random.default_rng(seed).uniform(-2, 2, (1, 2, 3, 4)).astype(np.float32)}


def _assert_pad_matches_onnxruntime(model: onnx.ModelProto) -> None:
    lowering = Lowering(import_model(model), family_of(CHIP))
    program = lowering.run()
    assert not program.float_nodes(), lowering.float_reasons
    assert [op.kind for op in program.ops if op.node == "pad"] == ["move"]
    sim = Simulator(program)
    for seed in range(3):
        feeds = _pad_feeds(seed)
        got = _codes(sim.infer(feeds)[0])
        for optimize in (True, False):  # onnxruntime's fusions (if any) and the plain QDQ graph agree
            want = _codes(_ort(model, feeds, optimize)[0])
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1, (optimize, got[0, 0], want[0, 0])


@pytest.mark.parametrize("x_q,y_q,value", [
    ((np.int8, 0.04477, 0), (np.int8, 0.06, 0), 10.0),  # the report: 5.686 (input's clip) instead of 7.62
    ((np.int8, 0.04477, 0), (np.int8, 0.1, 0), 10.0),  # within the output's range: exactly 10
    ((np.uint8, 0.02, 128), (np.uint8, 0.03, 100), -10.0),  # saturates at the output's low end
    ((np.int8, 0.05, 3), (np.int8, 0.03, -5), 0.123),
    ((np.uint8, 0.02, 128), (np.uint8, 0.03, 100), None),  # the default 0 is the output's zero point, not code 0
], ids=["int8-10", "int8-10-fits", "uint8-neg10", "int8-zp", "uint8-default"])
def test_opset10_pad_value_is_quantized_by_the_output_q(x_q, y_q, value):
    model = _pad_model(10, value=value, x_q=x_q, y_q=y_q)
    _assert_pad_matches_onnxruntime(model)
    program = lower(model, family_of(CHIP))
    (pad,) = [op for op in program.ops if op.node == "pad"]
    expected = np.clip(np.rint(np.float32(value or 0.0) / np.float32(y_q[1])) + y_q[2], *_range(y_q[0]))
    assert pad.pad_code == expected


def _range(dtype) -> tuple[int, int]:
    return int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)


def test_opset10_pad_value_of_the_report_comes_out_as_onnxruntime_says():
    model = _pad_model(10, value=10.0)
    feeds = _pad_feeds()
    got = Simulator(lower(model, family_of(CHIP))).infer(feeds)[0]
    want = _ort(model, feeds, True)[0]
    assert want[0, 0, 0, 0] == 127 and got[0, 0, 0, 0] == 127  # 10.0 saturates at 127 · 0.06 = 7.62, not 5.686
    np.testing.assert_array_equal(got[:, :, 0], want[:, :, 0])


PAD_CASES = [(opset, mode, cv, axes) for opset in (10, 11, 13, 18, 19, 21)
             for mode in ("constant", "reflect", "edge", "wrap")
             for cv in (("init", "dq", "none") if mode == "constant" and opset >= 11 else ("attr",))
             for axes in ((False, True) if opset >= 18 else (False,))
             if mode != "wrap" or opset >= 19]


@pytest.mark.parametrize("opset,mode,cv,axes", PAD_CASES, ids=[f"op{o}-{m}-{c}" + ("-axes" if a else "")
                                                               for o, m, c, a in PAD_CASES])
def test_pad_at_every_opset_and_mode_runs_integer_and_matches_onnxruntime(opset, mode, cv, axes):
    _assert_pad_matches_onnxruntime(_pad_model(opset, mode, 10.0, cv if cv != "attr" else "init", axes,
                                               x_q=(np.uint8, 0.02, 120), y_q=(np.uint8, 0.03, 100)))


def test_pad_followed_by_a_fused_relu_clamps_the_pad_value_too():
    for y_q in [(np.int8, 0.04477, 0), (np.int8, 0.05, -20)]:  # same quantization as the input, and not
        _assert_pad_matches_onnxruntime(_pad_model(13, value=-1.0, x_q=(np.int8, 0.04477, 0), y_q=y_q, relu=True))


def test_a_data_movement_op_with_a_fused_relu_at_the_same_scale_still_clamps():
    nodes = [*_qdq("x", "xd", "s", "z"), n("Reshape", ["xd", "shape"], ["r"], name="reshape"), n("Relu", ["r"], ["rr"]),
             n("QuantizeLinear", ["rr", "s", "z"], ["y"])]
    inits = {"s": np.float32(0.02), "z": np.int8(0), "shape": np.asarray([1, -1], np.int64)}
    model = builders.make_model(nodes, [("x", np.float32, [1, 2, 3])], [("y", np.int8, [1, 6])], inits, opset=13)
    feeds = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 2, 3)}
    got = Simulator(lower(model, family_of(CHIP))).infer(feeds)[0]
    np.testing.assert_array_equal(got, ort_outputs(model, feeds)[0])
    assert got.min() == 0


def test_pad_with_a_computed_constant_value_stays_float_and_says_why():
    nodes = [*_qdq("x", "xd", "s", "z"), n("ReduceMax", ["xd"], ["m"], keepdims=0),
             n("Pad", ["xd", "pads", "m"], ["p"], name="pad"), n("QuantizeLinear", ["p", "s", "z"], ["y"])]
    inits = {"s": np.float32(0.02), "z": np.int8(0), "pads": np.asarray([0, 1, 0, 1], np.int64)}
    model = builders.make_model(nodes, [("x", np.float32, [2, 3])], [("y", np.int8, [2, 5])], inits, opset=13)
    lowering = Lowering(import_model(model), family_of(CHIP))
    program = lowering.run()
    assert "Pad constant_value 'm' is computed" in lowering.float_reasons["pad"]
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, (2, 3)).astype(np.float32)}
    np.testing.assert_array_equal(Simulator(program).infer(feeds)[0], ort_outputs(model, feeds)[0])


# ---------------------------------------------------------------------------- int4 weights
def _int4_tensor(name: str, codes: np.ndarray, signed: bool) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT4 if signed else TensorProto.UINT4, codes.shape,
                              codes.reshape(-1).tolist())


def _int4_model(op: str, signed: bool, per_axis: bool, block: int = 0) -> onnx.ModelProto:
    """x -Q/DQ(uint8)-> op(x, DQ(int4/uint4 weight)[, bias]) -Q(uint8)-> y, by hand, opset 21."""
    rng = np.random.default_rng(7)
    lo, hi = (-8, 7) if signed else (0, 15)
    if op == "Conv":
        w_shape, axis, x_shape, y_shape = (6, 4, 3, 3), 0, [1, 4, 5, 5], [1, 6, 5, 5]
    elif op == "MatMul":
        w_shape, axis, x_shape, y_shape = (8, 5), 1, [2, 3, 8], [2, 3, 5]
    else:  # Gemm, transB
        w_shape, axis, x_shape, y_shape = (5, 8), 0, [3, 8], [3, 5]
    codes = rng.integers(lo, hi + 1, w_shape)
    n_out = w_shape[axis]
    if block:  # block-wise along the reduction axis: scale has the weight's rank
        red = 1 if op in ("Conv", "Gemm") else 0
        s_shape = list(w_shape)
        s_shape[red] = -(-w_shape[red] // block)
        w_s = rng.uniform(0.01, 0.05, s_shape).astype(np.float32)
        zp = rng.integers(lo, hi + 1, s_shape) if not signed else np.zeros(s_shape, np.int64)
        dq_attrs = {"axis": red, "block_size": block}
    elif per_axis:
        w_s = rng.uniform(0.01, 0.05, n_out).astype(np.float32)
        zp = rng.integers(lo, hi + 1, n_out) if not signed else np.zeros(n_out, np.int64)
        dq_attrs = {"axis": axis}
    else:
        w_s, zp, dq_attrs = np.float32(0.03), np.asarray(0 if signed else 8), {}
    inits = [builders.initializer("xs", np.float32(0.01)), builders.initializer("xz", np.uint8(128)),
             builders.initializer("ys", np.float32(0.05)), builders.initializer("yz", np.uint8(120)),
             _int4_tensor("w", codes, signed), builders.initializer("ws", w_s),
             _int4_tensor("wz", np.asarray(zp), signed)]
    nodes = [*_qdq("x", "xd", "xs", "xz"), n("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="w_dq", **dq_attrs)]
    if op == "Conv":
        inits.append(builders.initializer("b", rng.normal(0, 0.2, 6).astype(np.float32)))
        nodes.append(n("Conv", ["xd", "wd", "b"], ["o"], name="op", pads=[1, 1, 1, 1]))
    elif op == "MatMul":
        nodes.append(n("MatMul", ["xd", "wd"], ["o"], name="op"))
    else:
        inits.append(builders.initializer("b", rng.normal(0, 0.2, 5).astype(np.float32)))
        nodes.append(n("Gemm", ["xd", "wd", "b"], ["o"], name="op", transB=1))
    nodes.append(n("QuantizeLinear", ["o", "ys", "yz"], ["y"]))
    return builders.make_model(nodes, [("x", np.float32, x_shape)], [("y", np.uint8, y_shape)], inits, opset=21)


def _x_feeds(model: onnx.ModelProto, seed: int) -> dict:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).uniform(-1.2, 1.2, shape).astype(np.float32)}


@pytest.mark.parametrize("op", ["Conv", "MatMul", "Gemm"])
@pytest.mark.parametrize("signed", [True, False], ids=["int4", "uint4"])
@pytest.mark.parametrize("per_axis", [False, True], ids=["per-tensor", "per-axis"])
def test_int4_weights_run_integer_within_one_step_of_onnxruntime(op, signed, per_axis):
    model = _int4_model(op, signed, per_axis)
    program = lower(model, family_of(CHIP))
    assert not program.float_nodes()
    assert {"conv" if op == "Conv" else "matmul"} <= set(program.kinds())
    sim = Simulator(program)
    for seed in range(3):
        feeds = _x_feeds(model, seed)
        assert np.abs(_codes(sim.infer(feeds)[0]) - _codes(ort_outputs(model, feeds)[0])).max() <= 1


@pytest.mark.parametrize("op", ["Conv", "MatMul", "Gemm"])
def test_block_wise_int4_weights_stay_float_with_the_reason_and_match_onnxruntime(op):
    model = _int4_model(op, signed=op != "MatMul", per_axis=True, block=4)
    lowering = Lowering(import_model(model), family_of(CHIP))
    program = lowering.run()
    assert program.float_nodes() == [(op, "op")]
    assert "quantized block-wise (block_size 4)" in lowering.float_reasons["op"]
    sim = Simulator(program)  # the weight's DequantizeLinear expands the per-block scales exactly
    for seed in range(2):
        feeds = _x_feeds(model, seed)
        assert np.abs(_codes(sim.infer(feeds)[0]) - _codes(ort_outputs(model, feeds)[0])).max() <= 1


def test_int4_activations_are_refused_in_one_line_naming_the_node():
    inits = [helper.make_tensor("z", TensorProto.INT4, [], [0]), builders.initializer("s", np.float32(0.1)),
             builders.initializer("t", np.float32(0.1)), builders.initializer("u", np.int8(0))]
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q4"), n("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             n("Add", ["xd", "xd"], ["a"]), n("QuantizeLinear", ["a", "t", "u"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [1, 4])], [("y", np.int8, [1, 4])], inits, opset=21)
    with pytest.raises(ModelError, match=r"^cannot lower for .+: QuantizeLinear 'q4': INT4 activations") as e:
        lower(model, family_of(CHIP))
    assert "\n" not in str(e.value)


def test_opset21_output_dtype_without_zero_point_is_the_quantized_type():
    """QuantizeLinear(output_dtype=INT8) with no zero point: int8 codes, not the default uint8."""
    nodes = [n("QuantizeLinear", ["x", "s"], ["xq"], output_dtype=TensorProto.INT8),
             n("DequantizeLinear", ["xq", "s"], ["xd"]), n("Add", ["xd", "xd"], ["a"]),
             n("QuantizeLinear", ["a", "t"], ["y"], output_dtype=TensorProto.INT8)]
    inits = {"s": np.float32(0.02), "t": np.float32(0.04)}
    model = builders.make_model(nodes, [("x", np.float32, [1, 8])], [("y", np.int8, [1, 8])], inits, opset=21)
    program = lower(model, family_of(CHIP))
    assert program.kinds()["add"] == 1
    feeds = {"x": np.linspace(-3, 3, 8, dtype=np.float32).reshape(1, 8)}
    got, want = Simulator(program).infer(feeds)[0], ort_outputs(model, feeds)[0]
    assert got.dtype == want.dtype == np.int8
    assert np.abs(_codes(got) - _codes(want)).max() <= 1


# ---------------------------------------------------------------------------- float8
def _float8_model(where: str) -> onnx.ModelProto:
    """Float8 (E4M3FN) in the activation's Q/DQ, or in a weight's DQ."""
    f8 = TensorProto.FLOAT8E4M3FN
    if where == "activation":
        inits = [helper.make_tensor("z8", f8, [], [0.0]), builders.initializer("s", np.float32(0.1)),
                 builders.initializer("t", np.float32(0.1)), builders.initializer("u", np.int8(0))]
        nodes = [n("QuantizeLinear", ["x", "s", "z8"], ["xq"], name="q8"),
                 n("DequantizeLinear", ["xq", "s", "z8"], ["xd"], name="dq8"),
                 n("Add", ["xd", "xd"], ["a"]), n("QuantizeLinear", ["a", "t", "u"], ["y"])]
        return builders.make_model(nodes, [("x", np.float32, [1, 4])], [("y", np.int8, [1, 4])], inits, opset=21)
    w = np.random.default_rng(0).uniform(-2, 2, (4, 3)).astype(np.float32)
    inits = [helper.make_tensor("w", f8, w.shape, w.reshape(-1).tolist()), builders.initializer("ws", np.float32(0.5)),
             helper.make_tensor("wz", f8, [], [0.0]), builders.initializer("s", np.float32(0.1)),
             builders.initializer("z", np.int8(0))]
    nodes = [*_qdq("x", "xd", "s", "z"), n("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="w_dq8"),
             n("MatMul", ["xd", "wd"], ["m"]), n("QuantizeLinear", ["m", "s", "z"], ["y"])]
    return builders.make_model(nodes, [("x", np.float32, [1, 4])], [("y", np.int8, [1, 3])], inits, opset=21)


@pytest.mark.parametrize("where,node", [("activation", "q8"), ("weight", "w_dq8")])
def test_float8_quantization_is_refused_in_one_line_naming_node_and_type(where, node):
    model = _float8_model(where)
    ort_outputs(model, {"x": np.ones((1, 4), np.float32)})  # a valid model: onnxruntime runs it
    family = family_of(CHIP).name
    with pytest.raises(ModelError, match=rf"^cannot lower for {family}: \w+ '{node}': FLOAT8E4M3FN quantization") as e:
        lower(model, family_of(CHIP))
    assert "\n" not in str(e.value)


def test_float8_refusal_on_the_command_line_is_exit_2_in_one_line(tmp_path):
    """``--chip TX... quant -r infer`` with an infer function runs the simulator."""
    path = tmp_path / "f8.onnx"
    onnx.save(_float8_model("activation"), str(path))
    script = tmp_path / "infer_f8.py"
    script.write_text(INFER_SCRIPT)
    code, _, err = ptqc("--chip", CHIP, "quant", "-r", "infer", "-m", path, "-uds", script, "-if", "run",
                        "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "'q8'", "FLOAT8E4M3FN quantization")


INFER_SCRIPT = """\
import numpy as np

from ptqc import onnx_infer_func


@onnx_infer_func.register("run")
def run(executor):
    executor.forward(np.ones((1, 4), np.float32))
    return 0.0
"""


# ---------------------------------------------------------------------------- onnxruntime's quantizer
def _f32(rng, *shape) -> np.ndarray:
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _float_model(kind: str, opset: int) -> onnx.ModelProto:
    """A tiny float model around one op (its input from a Conv where onnxruntime quantizes the
    op only after a quantized producer; a Concat after ops whose output it leaves float)."""
    rng = np.random.default_rng(1)
    x, y, inits = [1, 4, 6, 6], [1, 4, 6, 6], {}
    if kind == "Conv":
        nodes, y = [n("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], [1, 6, 6, 6]
        inits = {"w": _f32(rng, 6, 4, 3, 3), "b": _f32(rng, 6)}
    elif kind == "MatMul":
        nodes, inits, y = [n("MatMul", ["x", "w"], ["y"])], {"w": _f32(rng, 6, 5)}, [1, 4, 6, 5]
    elif kind == "Gemm":
        x, y = [2, 8], [2, 5]
        nodes, inits = [n("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"w": _f32(rng, 5, 8), "b": _f32(rng, 5)}
    elif kind == "Add":
        nodes = [n("Relu", ["x"], ["r"]), n("Add", ["x", "r"], ["y"])]
    elif kind == "Mul":
        nodes = [n("Sigmoid", ["x"], ["s"]), n("Mul", ["x", "s"], ["y"])]
    elif kind == "Concat":
        nodes, y = [n("Relu", ["x"], ["r"]), n("Concat", ["x", "r"], ["y"], axis=1)], [1, 8, 6, 6]
    elif kind == "Pad":
        nodes, y = [n("Pad", ["x", "pads", "cv"], ["y"])], [1, 4, 8, 8]
        inits = {"pads": np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "cv": np.float32(0.5)}
    elif kind in ("Resize", "AveragePool"):
        op = (n("Resize", ["c", "", "sc"], ["r"], mode="linear") if kind == "Resize"
              else n("AveragePool", ["c"], ["r"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        inits = {"w1": _f32(rng, 4, 4, 1, 1)}
        if kind == "Resize":
            inits["sc"] = np.asarray([1, 1, 2, 2], np.float32)
        nodes = [n("Conv", ["x", "w1"], ["c"]), op, n("Concat", ["r", "r"], ["y"], axis=1)]
        y = [1, 8, 12, 12] if kind == "Resize" else [1, 8, 6, 6]
    elif kind == "Softmax":
        nodes = [n("Softmax", ["x"], ["y"], axis=-1)]
    else:
        nodes = [n(kind, ["x"], ["y"])]
    return builders.make_model(nodes, [("x", np.float32, x)], [("y", np.float32, y)], inits, opset=opset)


ACTIVATIONS = ["QUInt8", "QInt8", "QUInt16", "QInt16"]
WEIGHTS = ["QInt8", "QUInt8", "QInt16", "QInt4"]
LINEAR = ("Conv", "MatMul", "Gemm")
SWEEP = [(k, o, a, w, pc) for k, o, a, w, pc in itertools.product(
    LINEAR + ("Add", "Mul", "Concat", "Pad", "Resize", "AveragePool", "Softmax", "Sigmoid"), (13, 21), ACTIVATIONS,
    WEIGHTS, (False, True)) if k in LINEAR or (w == "QInt8" and not pc)]


@pytest.fixture(scope="module")
def ort_quantized(tmp_path_factory):
    """(kind, opset, activation, weight, per_channel) -> onnxruntime's QDQ model (None when
    onnxruntime's quantizer refuses the combination), written once per module."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    root = tmp_path_factory.mktemp("ortq")
    cache: dict = {}

    def get(kind, opset, act, wt, pc):
        key = (kind, opset, act, wt, pc)
        if key not in cache:
            src, dst = root / f"{kind}{opset}.onnx", root / f"{'_'.join(map(str, key))}.onnx"
            model = _float_model(kind, opset)
            onnx.save(model, str(src))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    logging.disable(logging.WARNING)  # onnxruntime's quantizer logs its choices
                    try:
                        quantize_static(str(src), str(dst), list_reader([_x_feeds(model, s) for s in range(4)]),
                                        quant_format=QuantFormat.QDQ, per_channel=pc,
                                        activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, wt))
                    finally:
                        logging.disable(logging.NOTSET)
                cache[key] = onnx.load(str(dst))
            except ValueError as e:  # "ONNXRuntime quantization doesn't support data format: ..."
                assert "doesn't support data format" in str(e), e
                cache[key] = None
        return cache[key]
    return get


def _coarsest_step(program) -> float:
    """The largest scale among the program's activation tensors (the output's included)."""
    return max(info.scale for name, info in program.tensors.items() if name not in program.constants)


@pytest.mark.parametrize("kind,opset,act,wt,pc", SWEEP, ids=[f"{k}-op{o}-{a}-w{w}" + ("-pc" if pc else "")
                                                            for k, o, a, w, pc in SWEEP])
def test_onnxruntime_quantize_static_models_simulate_within_one_step(ort_quantized, kind, opset, act, wt, pc):
    qdq = ort_quantized(kind, opset, act, wt, pc)
    if qdq is None:
        assert act == "QInt8" and wt == "QUInt8"  # onnxruntime's own refusal: int8 activations with uint8 weights
        return
    lowering = Lowering(import_model(qdq), family_of(CHIP))
    program = lowering.run()
    assert not program.float_nodes(), lowering.float_reasons  # every op of the sweep runs integer
    sim = Simulator(program)
    step = _coarsest_step(program)
    for seed in range(2):
        feeds = _x_feeds(qdq, seed)
        for node, (op_kind, lsb, _) in isolated_lsb(program, qdq, feeds).items():
            assert lsb <= 1, (node, op_kind, lsb)
        got, want = sim.infer(feeds)[0], ort_outputs(qdq, feeds)[0]
        assert got.shape == want.shape and got.dtype == want.dtype
        # two chained ops of 1 LSB each (Conv -> Resize), or 1 LSB of a coarse intermediate requantized
        # onto a finer output (AveragePool -> Concat), pass one step of the coarsest scale, never two
        assert np.abs(got.astype(np.float64) - want).max() <= 2 * step


def test_the_8_bit_family_refuses_16_bit_onnxruntime_models_in_one_line(ort_quantized):
    from ptqc.errors import ConfigError

    rule = r"^node '.+' \(.+\): '.+' is 16-bit: rule bit-width: TX510x runs 8-bit only$"
    with pytest.raises(ConfigError, match=rule):
        lower(ort_quantized("Conv", 13, "QUInt16", "QInt8", False), family_of("TX510x"))
    lower(ort_quantized("Conv", 21, "QUInt8", "QInt4", True), family_of("TX510x"))  # int4 weights: 8-bit codes


@pytest.mark.parametrize("kind", ["MatMul", "Gemm"])
def test_16_bit_matmul_weights_are_refused_on_the_8_bit_family(ort_quantized, kind):
    """The rule bit-width reads a MatMul/Gemm's constant B as it reads a Conv's weight."""
    from ptqc.errors import ConfigError

    qdq = ort_quantized(kind, 13, "QUInt8", "QInt16", False)
    with pytest.raises(ConfigError, match=r"is 16-bit: rule bit-width: TX510x runs 8-bit only$"):
        lower(qdq, family_of("TX510x"))
    lower(ort_quantized(kind, 13, "QUInt8", "QInt8", False), family_of("TX510x"))


@pytest.mark.parametrize("kind", ["Conv", "MatMul"])
def test_qoperator_models_are_refused_in_one_line_naming_the_node(tmp_path, kind):
    """onnxruntime's QOperator format (QLinearConv, QLinearMatMul) has no lowering and no float
    kernel: refused when lowering, naming the node, not midway through a run."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    model = _float_model(kind, 13)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(src))
    logging.disable(logging.WARNING)
    try:
        quantize_static(str(src), str(dst), list_reader([_x_feeds(model, s) for s in range(2)]),
                        quant_format=QuantFormat.QOperator)
    finally:
        logging.disable(logging.NOTSET)
    with pytest.raises(ModelError, match=rf"^cannot lower for {family_of(CHIP).name}: node '.+' \(QLinear{kind}\): a QOperator-format "
                                         r"op: write the model as QDQ$"):
        lower(str(dst), family_of(CHIP))


@pytest.mark.parametrize("kind", ["MatMul", "Gemm"])
def test_onnxruntime_quantize_dynamic_models_simulate_as_onnxruntime_runs_them(tmp_path, kind):
    """quantize_dynamic writes DynamicQuantizeLinear + MatMulInteger: both run in float on the
    reference executor, integer-exact, so the simulator gives onnxruntime's output."""
    from onnxruntime.quantization import quantize_dynamic

    model = _float_model(kind, 13)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(src))
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(src), str(dst))
    finally:
        logging.disable(logging.NOTSET)
    qdq = onnx.load(str(dst))
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {x.op_type for x in qdq.graph.node}
    sim = Simulator(lower(qdq, family_of(CHIP)))
    for seed in range(2):
        feeds = _x_feeds(qdq, seed)
        got, want = sim.infer(feeds)[0], ort_outputs(qdq, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
