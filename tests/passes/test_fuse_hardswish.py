"""FuseHardSwish: exporters' decomposed hard-swish becomes one HardSwish."""
import numpy as np
import pytest
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.passes import FuseHardSwish

C = {"three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
     "sixth": np.array(1 / 6, np.float32)}


def _decomposed(form, opset=14):
    if form == "div":
        nodes = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                 helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])]
    elif form == "mul":
        nodes = [helper.make_node("Add", ["three", "x"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                 helper.make_node("Mul", ["c", "x"], ["m"]), helper.make_node("Mul", ["m", "sixth"], ["y"])]
    else:
        nodes = [helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5),
                 helper.make_node("Mul", ["x", "h"], ["y"])]
    return builders.make_model(nodes, [("x", np.float32, [2, 50])], [("y", np.float32, [2, 50])], C, opset=opset)


@pytest.mark.parametrize("form", ["div", "mul", "hardsigmoid"])
def test_decomposed_forms_become_one_hardswish_with_outputs_unchanged(form):
    model = _decomposed(form)
    result, _ = run_pass(model, FuseHardSwish())
    assert result.graph.op_counts() == {"HardSwish": 1}
    x = np.linspace(-5, 5, 100, dtype=np.float32).reshape(2, 50)
    assert_outputs_close(model, result.graph, {"x": x}, bound=1e-6)


def test_older_opsets_keep_the_decomposition_and_say_why():
    result, ctx = run_pass(_decomposed("div", opset=13), FuseHardSwish())
    assert not result.modified
    assert any("needs opset 14" in f[2] for f in ctx.analyses["rewrite_failures"]["fuse_hard_swish"])
