"""RemoveIdentity drops Identity/Dropout, keeping graph output names and subgraph reads."""
import numpy as np
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.passes import RemoveIdentity


def test_identity_and_dropout_are_removed():
    model = builders.make_model(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
         helper.make_node("Dropout", ["b"], ["c"]), helper.make_node("Neg", ["c"], ["y"])],
        [("x", np.float32, [4])], [("y", np.float32, [4])])
    result, _ = run_pass(model, RemoveIdentity())
    assert result.graph.op_counts() == {"Neg": 1, "Relu": 1}
    assert_outputs_close(model, result.graph, {"x": np.arange(-2, 2, dtype=np.float32)}, bound=0)


def test_identity_producing_graph_output_hands_its_name_to_the_producer():
    model = builders.make_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])],
                                [("x", np.float32, [4])], [("y", np.float32, [4])])
    result, _ = run_pass(model, RemoveIdentity())
    g = result.graph
    assert g.op_counts() == {"Relu": 1} and g.outputs == ["y"] and g.producer("y").op_type == "Relu"


def test_identity_of_graph_input_to_output_stays_with_reason():
    model = builders.make_model([helper.make_node("Identity", ["x"], ["y"])],
                                [("x", np.float32, [4])], [("y", np.float32, [4])])
    result, ctx = run_pass(model, RemoveIdentity())
    assert not result.modified
    assert "graph output" in ctx.analyses["rewrite_failures"]["remove_identity"][0][2]


def test_dropout_with_used_mask_stays():
    model = builders.make_model([helper.make_node("Dropout", ["x"], ["y", "mask"])],
                                [("x", np.float32, [4])], [("y", np.float32, [4]), ("mask", np.bool_, [4])])
    result, ctx = run_pass(model, RemoveIdentity())
    assert not result.modified
    assert "mask" in ctx.analyses["rewrite_failures"]["remove_identity"][0][2]
