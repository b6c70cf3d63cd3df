"""EliminateDeadCode removes what no output needs, and nothing else."""
import numpy as np
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.passes import EliminateDeadCode


def test_dead_branch_and_its_constants_go():
    model = builders.make_model(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Mul", ["x", "k"], ["dead1"]),
         helper.make_node("Neg", ["dead1"], ["dead2"])],
        [("x", np.float32, [3])], [("y", np.float32, [3])], [builders.initializer("k", np.ones(3, np.float32))])
    result, _ = run_pass(model, EliminateDeadCode())
    g = result.graph
    assert result.modified and g.op_counts() == {"Relu": 1} and not g.has_value("k")
    assert g.inputs == ["x"]
    assert_outputs_close(model, g, {"x": np.arange(3, dtype=np.float32)}, bound=0)


def test_live_graph_is_untouched():
    model = builders.make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, [3])],
                                [("y", np.float32, [3])])
    result, _ = run_pass(model, EliminateDeadCode())
    assert not result.modified and result.graph.op_counts() == {"Relu": 1}
