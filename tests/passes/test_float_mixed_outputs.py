"""FloatMixedOutputs: a graph-output Concat of pixels beside [0, 1] scores keeps a float output."""
import numpy as np
from onnx import helper

import builders
from checks import list_reader, ort_outputs
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize


def _head(scale):
    """x -> (x * scale, Sigmoid(x)) -> Concat -> out: YOLOv8's boxes-and-scores output."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["boxes"]), helper.make_node("Sigmoid", ["x"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["out"], axis=1)]
    return builders.make_model(nodes, [("x", np.float32, [1, 4, 32])], [("out", np.float32, [1, 8, 32])],
                               {"s": np.float32(scale)}, opset=13)


def _run(model):
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 4, 32)).astype(np.float32)} for _ in range(4)]
    report = quantize(model, None, list_reader(feeds), QuantConfig(quant_mode=("min_max",), output_dequant=True),
                      evaluate=False)
    q_inputs = {n.input[0] for n in report.model.graph.node if n.op_type == "QuantizeLinear"}
    return report, q_inputs, feeds[0]


def test_scores_beside_pixels_survive_with_a_float_output():
    model = _head(500.0)
    report, q_inputs, feed = _run(model)
    assert not any(n.startswith("out") for n in q_inputs) and {"boxes", "scores"} <= q_inputs  # each part still quantized on its own
    assert report.float_ops.get("Concat")
    (want,), (got,) = ort_outputs(model, feed), ort_outputs(report.model, feed)
    # the scores keep their own 8 bits (one output scale over [-2000, 2000] would be 16 per step)
    assert np.max(np.abs(got[:, 4:] - want[:, 4:])) <= 0.02


def test_parts_of_like_magnitude_keep_a_quantized_output():
    _, q_inputs, _ = _run(_head(2.0))
    assert any(n.startswith("out") for n in q_inputs)
