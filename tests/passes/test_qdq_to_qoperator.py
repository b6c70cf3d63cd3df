"""QDQToQOperator (quantize_static quant_format=QOperator): the integer ops onnxruntime runs,
with the QDQ model's scales, giving the QDQ model's outputs within a rounding step."""
import numpy as np
import onnx
import pytest

import builders
from checks import list_reader, ort_outputs
from ptqc.driver.quantize import quantize_static


@pytest.mark.parametrize("act", ["QUInt8", "QInt8"])
def test_qoperator_model_runs_integer_ops_and_matches_the_qdq_model(tmp_path, act):
    model = builders.op_zoo_model()
    path = tmp_path / "zoo.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    data = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(6)]
    for fmt in ("QDQ", "QOperator"):
        quantize_static(path, tmp_path / f"{fmt}.onnx", list_reader(data), quant_format=fmt, activation_type=act,
                        per_channel=True)
    qop = onnx.load(str(tmp_path / "QOperator.onnx"))
    onnx.checker.check_model(qop)
    ops = {n.op_type for n in qop.graph.node}
    want = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearSigmoid", "QLinearConcat", "QLinearAveragePool",
            "QLinearGlobalAveragePool"}
    # the Mul by a constant: its constant is an int8 weight, which QLinearMul cannot mix with uint8 codes
    assert want | ({"QLinearMul"} if act == "QInt8" else set()) <= ops, sorted(ops)
    # every Conv reads and writes codes but the one fused with the HardSwish after it (no Q between)
    left = [n for n in qop.graph.node if n.op_type == "Conv"]
    assert len(left) == 1 and [n.op_type for n in qop.graph.node if left[0].output[0] in n.input] == ["HardSwish"]
    x = {"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    qdq = ort_outputs(onnx.load(str(tmp_path / "QDQ.onnx")), x)
    got = ort_outputs(qop, x)
    for a, b in zip(qdq, got):
        assert np.max(np.abs(a - b)) <= 0.05 * np.max(np.abs(a)) + 1e-6  # a few rounding steps apart at most
