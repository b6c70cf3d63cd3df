"""QuantizeDynamic and ptqc.quantize_dynamic: onnxruntime's quantize_dynamic, same arguments;
on the same model the outputs match onnxruntime's own dynamic model (same weight grids, the
same run-time quantization of the inputs) and stay close to float."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from checks import ort_outputs
from ptqc.driver.dynamic import quantize_dynamic
from ptqc.errors import ConfigError
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext
from ptqc.passes.quantize_dynamic import QuantizeDynamic
from ptqc.quant import cosine


def _model() -> onnx.ModelProto:
    """Conv(+bias) -> Relu -> Flatten -> MatMul -> Gemm(transB, bias): every op it rewrites."""
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["fl"]),
             helper.make_node("MatMul", ["fl", "m"], ["h"], name="mm"),
             helper.make_node("Gemm", ["h", "g", "gb"], ["y"], name="gemm", transB=1)]
    inits = [numpy_helper.from_array(a, n) for n, a in
             (("w", f(8, 3, 3, 3)), ("b", f(8)), ("m", 0.1 * f(8 * 6 * 6, 32) + 0.05), ("g", f(10, 32)), ("gb", f(10)))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = np.random.default_rng(1).standard_normal((4, 3, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("weight_type, per_channel, reduce_range, extra", [
    ("QInt8", False, False, None), ("QInt8", True, False, None), ("QUInt8", False, False, None),
    ("QUInt8", True, True, None), ("QInt8", False, True, {"WeightSymmetric": False})])
def test_outputs_match_onnxruntimes_dynamic_model(tmp_path, weight_type, per_channel, reduce_range, extra):
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    src = tmp_path / "f.onnx"
    onnx.save(_model(), str(src))
    ours = quantize_dynamic(src, tmp_path / "ours.onnx", per_channel=per_channel, reduce_range=reduce_range,
                            weight_type=weight_type, extra_options=extra)
    ort_quantize_dynamic(str(src), str(tmp_path / "ort.onnx"), per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType[weight_type], extra_options=extra or {})
    assert (tmp_path / "ours.onnx").read_bytes() == ours.SerializeToString()
    again = quantize_dynamic(src, tmp_path / "again.onnx", per_channel=per_channel, reduce_range=reduce_range,
                             weight_type=weight_type, extra_options=extra)
    assert again.SerializeToString() == ours.SerializeToString()  # deterministic
    ops = [n.op_type for n in ours.graph.node]
    assert ops.count("DynamicQuantizeLinear") == 3 and {"ConvInteger", "MatMulInteger"} <= set(ops)
    assert not {"Conv", "MatMul", "Gemm"} & set(ops)
    (want,) = ort_outputs(_model(), {"x": X})
    (got,) = ort_outputs(ours, {"x": X})
    (theirs,) = ort_outputs(onnx.load(str(tmp_path / "ort.onnx")), {"x": X})
    assert cosine(want, got) > 0.999
    assert np.max(np.abs(got - theirs)) <= 1e-4 * np.max(np.abs(theirs)), np.max(np.abs(got - theirs))


def test_selection_and_refusals():
    graph = import_model(_model())
    ctx = PassContext()
    QuantizeDynamic(nodes_to_exclude=frozenset({"conv"}), op_types=frozenset({"Conv", "MatMul"})).run(graph, ctx)
    assert ctx.analyses["dynamic_nodes"] == ["MatMul"]  # conv excluded by name, Gemm by type
    ops = [n.op_type for n in graph.nodes()]
    assert "Conv" in ops and "Gemm" in ops and "MatMulInteger" in ops
    with pytest.raises(ConfigError, match="op_types_to_quantize LSTM: not built yet"):
        quantize_dynamic(_model(), "/nonexistent/out.onnx", op_types_to_quantize=["LSTM"])
    with pytest.raises(ConfigError, match="extra_options 'ActivationSymmetric': not supported"):
        quantize_dynamic(_model(), "/nonexistent/out.onnx", extra_options={"ActivationSymmetric": True})
    with pytest.raises(ConfigError, match="weight_type QInt16"):
        quantize_dynamic(_model(), "/nonexistent/out.onnx", weight_type="QInt16")
