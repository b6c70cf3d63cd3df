"""SetBatch (-ib): dynamic-batch inputs become static, the shapes downstream follow."""
import numpy as np
from onnx import helper

import builders
from checks import ort_outputs
from ptqc.ir import Graph
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes.infer_shapes import InferShapes
from ptqc.passes.set_batch import SetBatch


def _model(x_shape):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"]),
             helper.make_node("Neg", ["z"], ["z2"])]
    return builders.make_model(nodes, [("x", np.float32, x_shape), ("z", np.float32, [2, 3])],
                               [("y", np.float32, [x_shape[0], 4]), ("z2", np.float32, [2, 3])],
                               {"w": rng.standard_normal((3, 4)).astype(np.float32)})


def _dims(vi):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_dynamic_batch_becomes_static_and_outputs_follow():
    graph: Graph = import_model(_model(["batch", 3]))
    graph = PassManager([SetBatch(5), InferShapes()]).run(graph, PassContext()).graph
    model = export_model(graph, constants_as_initializers=True)
    assert _dims(model.graph.input[0]) == [5, 3] and _dims(model.graph.input[1]) == [2, 3]
    assert _dims(model.graph.output[0]) == [5, 4]
    x = np.ones((5, 3), np.float32)
    y, _ = ort_outputs(model, {"x": x, "z": np.ones((2, 3), np.float32)})
    assert y.shape == (5, 4)


def test_a_static_batch_is_left_alone():
    graph = import_model(_model([2, 3]))
    result = PassManager([SetBatch(5)]).run(graph, PassContext())
    assert _dims(export_model(result.graph).graph.input[0]) == [2, 3]
