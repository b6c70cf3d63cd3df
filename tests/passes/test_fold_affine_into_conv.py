"""FoldAffineIntoConv: a per-channel a * x + b before a Conv goes into its weights and bias."""
import numpy as np
import pytest
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.passes import FoldAffineIntoConv


def _model(pads, group=1, a_shape=(1,), b_shape=(1,)):
    rng = np.random.default_rng(0)
    cin, cout = 4, 4 if group > 1 else 6
    inits = {"a": rng.uniform(0.5, 2, a_shape).astype(np.float32), "b": rng.normal(0, 1, b_shape).astype(np.float32),
             "w": rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32),
             "bias": rng.standard_normal(cout).astype(np.float32)}
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Mul", ["r", "a"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
             helper.make_node("Conv", ["s", "w", "bias"], ["y"], kernel_shape=[3, 3], pads=[pads] * 4, group=group)]
    hw = 6 + 2 * pads - 2
    return builders.make_model(nodes, [("x", np.float32, [1, cin, 6, 6])], [("y", np.float32, [1, cout, hw, hw])], inits)


@pytest.mark.parametrize("group,a_shape,b_shape", [(1, (1,), (1,)), (1, (1, 4, 1, 1), (4, 1, 1)), (4, (4, 1, 1), (1,))])
def test_unpadded_conv_takes_the_whole_affine(group, a_shape, b_shape):
    model = _model(pads=0, group=group, a_shape=a_shape, b_shape=b_shape)
    result, _ = run_pass(model, FoldAffineIntoConv())
    assert result.graph.op_counts() == {"Conv": 1, "Relu": 1}
    assert_outputs_close(model, result.graph, builders.random_feeds(model, seed=2), bound=1e-5)


def test_padded_conv_takes_the_scale_and_keeps_a_shift():
    model = _model(pads=1, a_shape=(1, 4, 1, 1))
    result, _ = run_pass(model, FoldAffineIntoConv())
    assert result.graph.op_counts() == {"Add": 1, "Conv": 1, "Relu": 1}
    assert_outputs_close(model, result.graph, builders.random_feeds(model, seed=3), bound=1e-5)
