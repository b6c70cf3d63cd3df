"""UnshareBiases: two Convs sharing a bias each get their own int32 bias at their own scale."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

import builders
from checks import list_reader, ort_outputs
from ptqc.driver.quantize import quantize_static


def test_a_shared_bias_is_quantized_once_per_reader_at_its_scale(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w0", "b"], ["y0"], name="Conv0"),
             helper.make_node("Conv", ["x", "w1", "b"], ["y1"], name="Conv1"),
             helper.make_node("Add", ["y0", "y1"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [1, 2, 4, 4])], [("y", np.float32, None)],
                                {"w0": np.ones([2, 2, 2, 2], np.float32), "w1": np.full([2, 2, 2, 2], 0.5, np.float32),
                                 "b": np.ones([2], np.float32)})
    onnx.save(model, str(tmp_path / "m.onnx"))
    data = [{"x": np.full([1, 2, 4, 4], v, np.float32)} for v in (0.0, 6.0, 12.0)]
    quantize_static(tmp_path / "m.onnx", tmp_path / "q.onnx", list_reader(data), activation_type="QUInt8")
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    biases = {}
    for conv in (n for n in q.graph.node if n.op_type == "Conv"):
        dq = producer[conv.input[2]]
        x_scale, w_scale = (float(inits[producer[conv.input[i]].input[1]].ravel()[0]) for i in (0, 1))
        assert inits[dq.input[0]].dtype == np.int32
        assert np.allclose(inits[dq.input[1]], x_scale * w_scale)  # each bias at its own reader's scale
        biases[conv.name] = dq.input[0]
    assert len(set(biases.values())) == 2
    (want,), (got,) = ort_outputs(model, data[1]), ort_outputs(q, data[1])
    assert np.max(np.abs(want - got)) <= 0.05 * np.max(np.abs(want))
