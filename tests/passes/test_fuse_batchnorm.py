"""FuseBatchNorm folds BN into Conv/ConvTranspose/Gemm with outputs unchanged (1e-5 rel)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.passes import FuseBatchNorm


def _bn_params(rng, c, prefix="bn"):
    return [builders.initializer(f"{prefix}_scale", rng.uniform(0.5, 2.0, c).astype(np.float32)),
            builders.initializer(f"{prefix}_bias", rng.standard_normal(c).astype(np.float32)),
            builders.initializer(f"{prefix}_mean", rng.standard_normal(c).astype(np.float32)),
            builders.initializer(f"{prefix}_var", rng.uniform(0.1, 3.0, c).astype(np.float32))]


def _bn_node(x, y, prefix="bn", **attrs):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_scale", f"{prefix}_bias",
                                                   f"{prefix}_mean", f"{prefix}_var"], [y], **attrs)


def _fused(model, feeds, bound=1e-5):
    result, ctx = run_pass(model, FuseBatchNorm())
    counts = result.graph.op_counts()
    assert_outputs_close(model, result.graph, feeds, bound)
    return result, counts, ctx


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 6), cout_per_group=st.integers(1, 4), group=st.sampled_from([1, 2]),
       k=st.sampled_from([1, 3]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_bn_fuses_with_outputs_unchanged(cin, cout_per_group, group, k, bias, seed):
    rng = np.random.default_rng(seed)
    cin, cout = cin * group, cout_per_group * group
    inits = [builders.initializer("w", rng.standard_normal((cout, cin // group, k, k)).astype(np.float32))]
    conv_in = ["x", "w"]
    if bias:
        inits.append(builders.initializer("b", rng.standard_normal(cout).astype(np.float32)))
        conv_in.append("b")
    inits += _bn_params(rng, cout)
    model = builders.make_model(
        [helper.make_node("Conv", conv_in, ["c"], group=group, pads=[k // 2] * 4), _bn_node("c", "y")],
        [("x", np.float32, [2, cin, 5, 5])], [("y", np.float32, None)], inits)
    result, counts, _ = _fused(model, {"x": rng.standard_normal((2, cin, 5, 5)).astype(np.float32)})
    assert result.modified and counts == {"Conv": 1}


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_bn_fuses(group):
    rng = np.random.default_rng(group)
    cin, cout_g = 4, 3
    inits = [builders.initializer("w", rng.standard_normal((cin, cout_g, 3, 3)).astype(np.float32))]
    inits += _bn_params(rng, cout_g * group)
    model = builders.make_model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=group, strides=[2, 2]),
         _bn_node("c", "y")],
        [("x", np.float32, [1, cin, 4, 4])], [("y", np.float32, None)], inits)
    _, counts, _ = _fused(model, {"x": rng.standard_normal((1, cin, 4, 4)).astype(np.float32)})
    assert counts == {"ConvTranspose": 1}


@pytest.mark.parametrize("trans_b,c_shape", [(0, None), (1, (5,)), (0, (1, 5)), (1, (3, 5))])
def test_gemm_bn_fuses(trans_b, c_shape):
    rng = np.random.default_rng(trans_b)
    w = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    inits = [builders.initializer("w", w)] + _bn_params(rng, 5)
    ins = ["x", "w"]
    if c_shape:
        inits.append(builders.initializer("c0", rng.standard_normal(c_shape).astype(np.float32)))
        ins.append("c0")
    model = builders.make_model(
        [helper.make_node("Gemm", ins, ["g"], transB=trans_b, alpha=0.7, beta=1.3), _bn_node("g", "y")],
        [("x", np.float32, [3, 4])], [("y", np.float32, None)], inits)
    _, counts, _ = _fused(model, {"x": rng.standard_normal((3, 4)).astype(np.float32)})
    assert counts == {"Gemm": 1}


def test_shared_conv_output_is_left_alone_with_reason():
    rng = np.random.default_rng(0)
    inits = [builders.initializer("w", rng.standard_normal((2, 2, 1, 1)).astype(np.float32))] + _bn_params(rng, 2)
    model = builders.make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), _bn_node("c", "y"), helper.make_node("Relu", ["c"], ["r"])],
        [("x", np.float32, [1, 2, 3, 3])], [("y", np.float32, None), ("r", np.float32, None)], inits)
    result, ctx = run_pass(model, FuseBatchNorm())
    assert not result.modified and result.graph.op_counts()["BatchNormalization"] == 1
    (failure,) = ctx.analyses["rewrite_failures"]["fuse_batch_norm"]
    assert "other consumers" in failure[2]


def test_runtime_bn_params_are_left_alone_with_reason():
    rng = np.random.default_rng(0)
    inits = [builders.initializer("w", rng.standard_normal((2, 2, 1, 1)).astype(np.float32))] + _bn_params(rng, 2)[:3]
    model = builders.make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), _bn_node("c", "y")],
        [("x", np.float32, [1, 2, 3, 3]), ("bn_var", np.float32, [2])], [("y", np.float32, None)], inits)
    result, ctx = run_pass(model, FuseBatchNorm())
    assert not result.modified
    assert "not a constant" in ctx.analyses["rewrite_failures"]["fuse_batch_norm"][0][2]


def test_standalone_bn_after_non_conv_is_reported():
    rng = np.random.default_rng(0)
    model = builders.make_model([helper.make_node("Relu", ["x"], ["r"]), _bn_node("r", "y")],
                                [("x", np.float32, [1, 2, 3, 3])], [("y", np.float32, None)], _bn_params(rng, 2))
    result, ctx = run_pass(model, FuseBatchNorm())
    assert not result.modified
    assert "not produced by Conv" in ctx.analyses["rewrite_failures"]["fuse_batch_norm"][0][2]


def test_bn_feeding_graph_output_keeps_the_output_name():
    rng = np.random.default_rng(1)
    inits = [builders.initializer("w", rng.standard_normal((3, 2, 1, 1)).astype(np.float32))] + _bn_params(rng, 3)
    model = builders.make_model([helper.make_node("Conv", ["x", "w"], ["c"]), _bn_node("c", "y")],
                                [("x", np.float32, [1, 2, 3, 3])], [("y", np.float32, None)], inits)
    result, _ = run_pass(model, FuseBatchNorm())
    assert result.graph.outputs == ["y"] and result.graph.producer("y").op_type == "Conv"
    assert result.graph.verify() == []
