"""FuseBiasAdd folds a per-channel constant Add after Conv/ConvTranspose/Gemm into the bias."""
import numpy as np
import pytest
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext
from ptqc.passes import FuseBatchNorm, FuseBiasAdd


def _conv_add(op, const_shape, bias, rng, group=1, const_first=False):
    cin, cout = 4, 6
    w_shape = (cout, cin // group, 3, 3) if op == "Conv" else (cin, cout // group, 3, 3)
    inits = [builders.initializer("w", rng.standard_normal(w_shape).astype(np.float32)),
             builders.initializer("c", rng.standard_normal(const_shape).astype(np.float32))]
    conv_in = ["x", "w"]
    if bias:
        inits.append(builders.initializer("b", rng.standard_normal(cout).astype(np.float32)))
        conv_in.append("b")
    add_in = ["c", "t"] if const_first else ["t", "c"]
    return builders.make_model(
        [helper.make_node(op, conv_in, ["t"], group=group, pads=[1, 1, 1, 1]), helper.make_node("Add", add_in, ["y"])],
        [("x", np.float32, [2, cin, 5, 5])], [("y", np.float32, None)], inits)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("const_shape", [(6, 1, 1), (1, 6, 1, 1), (1,), ()])
@pytest.mark.parametrize("bias", [False, True])
def test_per_channel_add_folds_with_outputs_unchanged(op, const_shape, bias):
    rng = np.random.default_rng(0)
    model = _conv_add(op, const_shape, bias, rng, group=2, const_first=bias)
    result, ctx = run_pass(model, FuseBiasAdd())
    assert result.modified and result.graph.op_counts() == {op: 1}
    assert_outputs_close(model, result.graph, {"x": rng.standard_normal((2, 4, 5, 5)).astype(np.float32)}, 1e-5)


@pytest.mark.parametrize("const_shape", [(6, 5, 5), (2, 6, 1, 1), (1, 1, 5, 1)])
def test_add_varying_beyond_channels_is_left_with_reason(const_shape):
    model = _conv_add("Conv", const_shape, True, np.random.default_rng(1))
    result, ctx = run_pass(model, FuseBiasAdd())
    assert not result.modified and result.graph.op_counts() == {"Conv": 1, "Add": 1}
    ((rule, _node, reason),) = ctx.analyses["rewrite_failures"]["fuse_bias_add"]
    assert rule == "fold_add_into_bias" and "not per output channel" in reason


def test_gemm_takes_the_add_into_c():
    rng = np.random.default_rng(2)
    model = builders.make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["t"], transB=1, beta=0.5), helper.make_node("Add", ["t", "c"], ["y"])],
        [("x", np.float32, [3, 4])], [("y", np.float32, None)],
        [builders.initializer("w", rng.standard_normal((5, 4)).astype(np.float32)),
         builders.initializer("b", rng.standard_normal(5).astype(np.float32)),
         builders.initializer("c", rng.standard_normal((1, 5)).astype(np.float32))])
    result, _ = run_pass(model, FuseBiasAdd())
    assert result.graph.op_counts() == {"Gemm": 1}
    assert_outputs_close(model, result.graph, {"x": rng.standard_normal((3, 4)).astype(np.float32)}, 1e-5)


def test_then_batchnorm_after_the_add_fuses():
    """The PP-OCR det pattern: ConvTranspose -> Add(bias) -> BatchNormalization."""
    rng = np.random.default_rng(3)
    model = _conv_add("ConvTranspose", (6, 1, 1), False, rng)
    model.graph.node.append(helper.make_node("BatchNormalization", ["y", "s", "bb", "m", "v"], ["z"]))
    for name, arr in [("s", rng.uniform(0.5, 2, 6)), ("bb", rng.standard_normal(6)), ("m", rng.standard_normal(6)),
                      ("v", rng.uniform(0.1, 2, 6))]:
        model.graph.initializer.append(builders.initializer(name, arr.astype(np.float32)))
    model.graph.output[0].name = "z"
    ctx = PassContext()
    result = FuseBatchNorm().run(FuseBiasAdd().run(import_model(model), ctx).graph, ctx)
    assert result.graph.op_counts() == {"ConvTranspose": 1}
    assert_outputs_close(model, result.graph, {"x": rng.standard_normal((2, 4, 5, 5)).astype(np.float32)}, 1e-5)
