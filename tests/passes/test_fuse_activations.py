"""MarkActivationFusion groups Conv/Gemm/MatMul with a following Relu/Clip/LeakyRelu/HardSwish."""
import numpy as np
from onnx import helper

import builders
from checks import run_pass
from ptqc.passes import MarkActivationFusion


def test_conv_relu_and_gemm_clip_are_grouped_and_shared_outputs_are_not():
    rng = np.random.default_rng(0)
    model = builders.make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["m"], name="gemm"),
         helper.make_node("Clip", ["m", "lo", "hi"], ["y"], name="clip"),
         helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2"),
         helper.make_node("Relu", ["c2"], ["r2"], name="relu2"), helper.make_node("Neg", ["c2"], ["n2"])],
        [("x", np.float32, [1, 2, 3, 3])],
        [("y", np.float32, None), ("r2", np.float32, None), ("n2", np.float32, None)],
        [builders.initializer("w", rng.standard_normal((2, 2, 1, 1)).astype(np.float32)),
         builders.initializer("g", rng.standard_normal((18, 4)).astype(np.float32)),
         builders.initializer("lo", np.float32(0)), builders.initializer("hi", np.float32(6))])
    result, ctx = run_pass(model, MarkActivationFusion())
    assert ctx.analyses["activation_groups"] == [("conv", "relu"), ("gemm", "clip")]
    g = result.graph
    conv = next(n for n in g.nodes() if n.name == "conv")
    relu = next(n for n in g.nodes() if n.name == "relu")
    assert conv.meta["fused_activation"] == relu.id and relu.meta["fused_into"] == conv.id
    # marks are metadata: the exported model is the same graph
    from ptqc.onnx_io import export_model
    assert [n.op_type for n in export_model(g).graph.node] == [n.op_type for n in model.graph.node]
