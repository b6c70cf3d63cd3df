"""FuseConvScale: Mul by a per-channel constant after Conv/ConvTranspose/Gemm goes into the weights."""
import numpy as np
import pytest
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.passes import FuseConvScale


def _model(op, scale_shape, seed=0):
    rng = np.random.default_rng(seed)
    attrs = {"Conv": dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "ConvTranspose": dict(kernel_shape=[3, 3]),
             "Gemm": dict(transB=1)}[op]
    w = {"Conv": (4, 3, 3, 3), "ConvTranspose": (3, 4, 3, 3), "Gemm": (4, 3)}[op]
    x = [1, 3, 5, 5] if op != "Gemm" else [2, 3]
    out = {"Conv": [1, 4, 5, 5], "ConvTranspose": [1, 4, 7, 7], "Gemm": [2, 4]}[op]
    inits = {"w": rng.standard_normal(w).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32),
             "s": rng.uniform(-2, 2, scale_shape).astype(np.float32)}
    nodes = [helper.make_node(op, ["x", "w", "b"], ["c"], name="conv", **attrs),
             helper.make_node("Mul", ["s", "c"], ["y"], name="mul")]
    return builders.make_model(nodes, [("x", np.float32, x)], [("y", np.float32, out)], inits)


@pytest.mark.parametrize("op,shape", [("Conv", [1, 4, 1, 1]), ("Conv", [1]), ("ConvTranspose", [4, 1, 1]),
                                      ("Gemm", [4])])
def test_scale_is_folded_and_outputs_are_unchanged(op, shape):
    model = _model(op, shape)
    result, _ = run_pass(model, FuseConvScale())
    assert result.modified and result.graph.op_counts() == {op: 1}
    feeds = builders.random_feeds(model, seed=1)
    assert_outputs_close(model, result.graph, feeds, bound=1e-5)


def test_a_scale_that_varies_spatially_is_left_with_the_reason():
    result, ctx = run_pass(_model("Conv", [1, 1, 5, 5]), FuseConvScale())
    assert not result.modified
    (failure,) = ctx.analyses["rewrite_failures"]["fuse_conv_scale"]
    assert "not per output channel" in failure[2]
