"""ReadQDQ / FitQDQParams: a model that is already quantized is read as quantized, never
quantized twice: its activation and weight scales kept where the chip takes them, refit
(and said so, per tensor) where it does not, the Relu onnxruntime's quantizer folds into a
Q range put back; what cannot be read is refused in one line naming the node."""
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import builders
import models
from checks import assert_bad_input, list_reader, ort_outputs, ptqc
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.errors import ConfigError, ModelError
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext
from ptqc.passes import ReadQDQ


@pytest.fixture(scope="module")
def digits():
    return models.train_digits_cnn()


def _feeds(d, n, start=0):
    return [{"input": np.ascontiguousarray(d.x_train[i:i + 1])} for i in range(start, start + n)]


def _ort_qdq(d, tmp_path, activation: str, **extra) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, src, dst = tmp_path / "raw.onnx", tmp_path / "float.onnx", tmp_path / f"qdq_{activation}_{len(extra)}.onnx"
    onnx.save(d.model, str(raw))
    quant_pre_process(str(raw), str(src))  # BatchNorm folded, as ptqc folds it: the same roundings on both sides
    quantize_static(str(src), str(dst), list_reader(_feeds(d, 16)), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType[activation], weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": activation == "QInt8", **extra})
    return str(dst)


def _run(path_or_model, feeds):
    data = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0].astype(np.float64) for f in feeds]


def _scales(model: onnx.ModelProto) -> dict[str, float]:
    """activation tensor -> the scale of the QuantizeLinear reading it."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _cos(a, b) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def test_a_compliant_qdq_model_keeps_its_scales_and_is_not_quantized_twice(digits, tmp_path):
    qdq = _ort_qdq(digits, tmp_path, "QInt8")  # int8 symmetric activations: what TX510x takes
    out = tmp_path / "out.onnx"
    quantize(qdq, out, list_reader(_feeds(digits, 4, 100)), QuantConfig(chip="TX510x", output_dequant=True))
    mine, theirs = _scales(onnx.load(str(out))), _scales(onnx.load(qdq))
    kept = {x: s for x, s in mine.items() if x in theirs}
    assert kept and all(s == theirs[x] for x, s in kept.items()), (mine, theirs)
    readers = [n.input[0] for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"]
    assert len(readers) == len(set(readers)), "a tensor quantized twice"
    feeds = _feeds(digits, 4, 200)
    for a, b in zip(_run(qdq, feeds), _run(str(out), feeds)):
        assert _cos(a, b) > 0.9999


def test_weights_quantized_in_the_graph_keep_their_scales(digits, tmp_path, caplog):
    """onnxruntime's AddQDQPairToWeight: float weights with a per-channel Q -> DQ pair."""
    qdq = _ort_qdq(digits, tmp_path, "QInt8", AddQDQPairToWeight=True)
    assert any(n.op_type == "QuantizeLinear" and n.input[0] in {t.name for t in onnx.load(qdq).graph.initializer}
               for n in onnx.load(qdq).graph.node)
    out = tmp_path / "out.onnx"
    with caplog.at_level(logging.INFO, logger="ptqc"):
        quantize(qdq, out, list_reader(_feeds(digits, 4, 100)), QuantConfig(chip="TX510x", output_dequant=True))
    kept = next(r.getMessage() for r in caplog.records if "quantized weights keep their scales" in r.getMessage())
    assert kept.startswith("quantized input model: 3 of its 3"), kept
    feeds = _feeds(digits, 4, 200)
    for a, b in zip(_run(qdq, feeds), _run(str(out), feeds)):
        assert _cos(a, b) > 0.9999


def test_onnxruntimes_default_uint8_model_keeps_its_scales_on_generic_and_gets_its_relu_back(digits, tmp_path):
    qdq = _ort_qdq(digits, tmp_path, "QUInt8")  # onnxruntime drops the Relus: the Q range does their work
    assert "Relu" not in {n.op_type for n in onnx.load(qdq).graph.node}
    graph = import_model(qdq)
    ReadQDQ().run(graph, PassContext())
    stripped = export_model(graph, constants_as_initializers=True)
    assert sum(n.op_type == "Relu" for n in stripped.graph.node) == 2
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in stripped.graph.node}
    feeds = _feeds(digits, 4, 200)
    for a, b in zip(_run(digits.model, feeds), _run(stripped, feeds)):  # the float model it describes
        assert _cos(a, b) > 0.999
    out = tmp_path / "out.onnx"
    report = quantize(qdq, out, list_reader(feeds), QuantConfig(chip="generic", output_dequant=True))
    assert min(c for c, _ in report.cosine.values()) > 0.999
    for a, b in zip(_run(qdq, feeds), _run(str(out), feeds)):
        assert _cos(a, b) > 0.9999


def test_parameters_the_chip_cannot_take_are_refit_and_named(digits, tmp_path, caplog):
    qdq = _ort_qdq(digits, tmp_path, "QUInt8")
    out = tmp_path / "out.onnx"
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        report = quantize(qdq, out, list_reader(_feeds(digits, 4, 200)),
                          QuantConfig(chip="TX510x", output_dequant=True))
    refits = [r.getMessage() for r in caplog.records if "refit to int8" in r.getMessage()]
    assert refits and all("the chip takes int8 symmetric" in m for m in refits)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    zps = [inits[n.input[2]] for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"]
    assert all(z.dtype == np.int8 and not z.any() for z in zps)
    assert min(c for c, _ in report.cosine.values()) > 0.999


def test_requantizing_ptqcs_own_output_keeps_every_scale(tmp_path):
    model = builders.conv_bn_relu_model()
    feeds = [builders.random_feeds(model, seed=s) for s in range(6)]
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    quantize(model, first, list_reader(feeds), QuantConfig(chip="TX510x", output_dequant=True))
    quantize(str(first), second, list_reader(feeds), QuantConfig(chip="TX510x", output_dequant=True))
    a, b = onnx.load(str(first)), onnx.load(str(second))
    assert sorted(_scales(a).values()) == sorted(_scales(b).values())
    assert sum(n.op_type == "QuantizeLinear" for n in a.graph.node) == \
        sum(n.op_type == "QuantizeLinear" for n in b.graph.node)
    for x, y in zip(_run(str(first), feeds), _run(str(second), feeds)):
        np.testing.assert_allclose(x, y, atol=1e-6)


def _q_read_by(op: str) -> onnx.ModelProto:
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q0"), n(op, ["xq"], ["y"], name="reader")]
    return builders.make_model(nodes, [("x", np.float32, [1, 4])], [("y", np.int8 if op == "Identity" else
                                                                        np.float32, [1, 4])],
                               {"s": np.float32(0.1), "z": np.int8(0)}, opset=13)


def test_a_q_not_read_by_a_dq_is_refused_naming_the_node():
    with pytest.raises(ModelError, match="'q0'.*Identity 'reader'"):
        ReadQDQ().run(import_model(_q_read_by("Identity")), PassContext())


def test_an_integer_model_input_is_refused_naming_the_node():
    n = helper.make_node
    model = builders.make_model([n("DequantizeLinear", ["x", "s", "z"], ["y"], name="dq0")],
                                [("x", np.int8, [1, 4])], [("y", np.float32, [1, 4])],
                                {"s": np.float32(0.1), "z": np.int8(0)}, opset=13)
    with pytest.raises(ModelError, match="'dq0'.*integer model input"):
        ReadQDQ().run(import_model(model), PassContext())


def test_flags_that_would_choose_the_scales_again_are_refused(digits, tmp_path):
    qdq = _ort_qdq(digits, tmp_path, "QInt8")
    with pytest.raises(ConfigError, match="-qm/--quant-mode: the input model is already quantized"):
        quantize(qdq, tmp_path / "o.onnx", list_reader(_feeds(digits, 2)),
                 QuantConfig(chip="TX510x", quant_mode=("mse",), explicit=frozenset({"quant_mode"})))


def test_the_cli_refuses_an_unreadable_qdq_model_in_one_line(tmp_path):
    path = tmp_path / "bad_qdq.onnx"
    onnx.save(_q_read_by("Identity"), str(path))
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", path, "--save-dir", tmp_path / "out")
    assert_bad_input(code, err, "'q0'", "DequantizeLinear")
    assert not list((tmp_path / "out").glob("**/*.onnx"))


def test_a_rank_1_constant_with_a_one_element_scale_dequantizes_per_tensor():
    """As onnxruntime reads it (pipecat's smart-turn biases): a [1] scale is per tensor."""
    n = helper.make_node
    model = builders.make_model([n("DequantizeLinear", ["b_q", "s", "z"], ["b"], name="dq_b"),
                                 n("Add", ["x", "b"], ["y"], name="add")],
                                [("x", np.float32, [1, 3])], [("y", np.float32, [1, 3])],
                                {"b_q": np.array([10, -20, 30], np.int32), "s": np.array([0.5], np.float32),
                                 "z": np.array([0], np.int32)}, opset=13)
    graph = import_model(model)
    ReadQDQ().run(graph, PassContext())
    np.testing.assert_array_equal(graph.constant("b"), np.array([5.0, -10.0, 15.0], np.float32))


def test_a_float16_model_with_a_dequantized_constant_keeps_its_type_and_says_it_stays_float(tmp_path, caplog):
    """onnxruntime's pre-quantized-input test in float16: the folded constant stays float16 (it
    was float32, which onnxruntime refused beside a float16 Conv), and the run warns that float16
    tensors are not quantized instead of returning the model silently unchanged."""
    from onnx import TensorProto, numpy_helper

    from ptqc.driver.quantize import quantize_static

    inq = np.random.default_rng(0).integers(0, 255, [1, 2, 8, 8]).astype(np.uint8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="DQ0"),
         helper.make_node("Conv", ["xd", "w", "b"], ["y"], name="Conv0")],
        "g", [helper.make_tensor_value_info("w", TensorProto.FLOAT16, [2, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
        initializer=[numpy_helper.from_array(inq, "xq"), numpy_helper.from_array(np.array(3 / 255, np.float16), "xs"),
                     numpy_helper.from_array(np.array(127, np.uint8), "xz"),
                     numpy_helper.from_array(np.array([-1, 1], np.float16), "b")])
    path = tmp_path / "fp16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    feed = {"w": np.random.default_rng(1).uniform(-1, 1, [2, 2, 3, 3]).astype(np.float16)}
    with caplog.at_level("WARNING", logger="ptqc"):
        quantize_static(path, tmp_path / "out.onnx", list_reader([feed]))
    assert "computes in float16" in caplog.text
    out = onnx.load(str(tmp_path / "out.onnx"))
    (want,), (got,) = ort_outputs(onnx.load(str(path)), feed), ort_outputs(out, feed)
    assert got.dtype == np.float16 and np.allclose(got, want, atol=1e-2)


def test_prequantized_weights_keep_their_parameters_and_the_activations_are_calibrated(tmp_path):
    """A Conv whose weight arrives as DequantizeLinear(int8 codes) and whose activations are
    float (a weight-only quantized export): the activations get calibrated Q/DQ, the weight
    keeps its codes, scale and zero point, and the model stays near the float one."""
    from ptqc.driver.quantize import quantize_static

    rng = np.random.default_rng(5)
    w = np.linspace(-1.0, 1.0, 2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    scale = np.float32(2 / 254)
    codes = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="DQ0"),
             helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [1, 2, 8, 8])], [("y", np.float32, None)],
                                {"wq": codes, "ws": np.array(scale), "wz": np.array(0, np.int8),
                                 "b": np.array([-0.5, 0.5], np.float32)}, opset=21)
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"x": rng.uniform(-2, 2, (1, 2, 8, 8)).astype(np.float32)} for _ in range(4)]
    quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", list_reader(data), activation_type="QUInt8",
                    weight_type="QInt8")
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    conv = next(n for n in q.graph.node if n.op_type == "Conv")
    dq_w, dq_x = producers[conv.input[1]], producers[conv.input[0]]
    assert np.array_equal(inits[dq_w.input[0]], codes)
    assert inits[dq_w.input[1]] == scale and inits[dq_w.input[2]] == 0
    assert dq_x.op_type == "DequantizeLinear" and producers[dq_x.input[0]].op_type == "QuantizeLinear"
    test = {"x": rng.uniform(-2, 2, (1, 2, 8, 8)).astype(np.float32)}
    want, got = ort_outputs(model, test)[0], ort_outputs(q, test)[0]
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
