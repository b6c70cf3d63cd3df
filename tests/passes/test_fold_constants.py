"""FoldConstants evaluates constant subexpressions with the reference executor."""
import numpy as np
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import FoldConstants, InferShapes


def test_constant_chain_folds_to_one_constant():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = builders.make_model(
        [helper.make_node("Transpose", ["a"], ["at"]),
         helper.make_node("Mul", ["at", "two"], ["m"]),
         helper.make_node("Reshape", ["m", "shape"], ["r"]),
         helper.make_node("Add", ["x", "r"], ["y"])],
        [("x", np.float32, [6])], [("y", np.float32, [6])],
        [builders.initializer("a", a), builders.initializer("two", np.float32(2.0)),
         builders.initializer("shape", np.array([6], np.int64))])
    result, _ = run_pass(model, FoldConstants())
    assert result.modified and result.graph.op_counts() == {"Add": 1}
    assert np.array_equal(result.graph.constant("r"), (a.T * 2).reshape(6))
    assert_outputs_close(model, result.graph, {"x": np.ones(6, np.float32)}, bound=0)


def test_shape_of_static_value_folds_after_shape_inference():
    model = builders.make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
         helper.make_node("Cast", ["s"], ["sf"], to=1), helper.make_node("Add", ["sf", "b"], ["y"])],
        [("x", np.float32, [2, 3])], [("y", np.float32, [2])],
        [builders.initializer("b", np.zeros(2, np.float32))])
    graph = PassManager([InferShapes(), FoldConstants()]).run(
        __import__("ptqc.onnx_io", fromlist=["import_model"]).import_model(model), PassContext()).graph
    assert "Shape" not in graph.op_counts() and "Cast" not in graph.op_counts()
    assert np.array_equal(graph.constant("sf"), np.array([2.0, 3.0], np.float32))


def test_dynamic_shape_and_quantize_nodes_are_not_folded():
    model = builders.make_model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("DequantizeLinear", ["wq", "sc"], ["w"]),
         helper.make_node("Reshape", ["w", "s"], ["y"])],
        [("x", np.float32, ["N"])], [("y", np.float32, None)],
        [builders.initializer("wq", np.arange(4, dtype=np.int8)), builders.initializer("sc", np.float32(0.5))])
    result, _ = run_pass(model, FoldConstants())
    assert not result.modified
    assert result.graph.op_counts() == {"DequantizeLinear": 1, "Reshape": 1, "Shape": 1}


def test_graph_output_is_not_folded_and_reason_is_kept():
    model = builders.make_model([helper.make_node("Neg", ["c"], ["y"])], [], [("y", np.float32, [2])],
                                [builders.initializer("c", np.ones(2, np.float32))])
    ctx = PassContext()
    result, ctx = run_pass(model, FoldConstants(), ctx)
    assert not result.modified
    assert ctx.analyses["fold_failures"] == [("", "its output is a graph output")]
