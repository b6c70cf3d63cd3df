"""InferShapes fills value shapes through onnx, without serializing large weights."""
import numpy as np
from onnx import helper

import builders
from checks import run_pass
from ptqc.passes import InferShapes


def test_shapes_are_filled_including_through_constant_reshape_targets():
    w = np.zeros((16, 8, 3, 3), np.float32)  # 18 KB: passed to onnx without its data
    model = builders.make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Reshape", ["c", "shape"], ["y"])],
        [("x", np.float32, [1, 8, 5, 5])], [("y", np.float32, None)],
        [builders.initializer("w", w), builders.initializer("shape", np.array([1, -1], np.int64))])
    result, _ = run_pass(model, InferShapes())
    g = result.graph
    assert result.modified
    assert g.value("c").shape == (1, 16, 5, 5) and g.value("y").shape == (1, 400)
    assert g.value("y").dtype == np.float32


def test_symbolic_dims_survive():
    model = builders.make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, ["N", 3])],
                                [("y", np.float32, None)])
    result, _ = run_pass(model, InferShapes())
    assert result.graph.value("y").shape == ("N", 3)
