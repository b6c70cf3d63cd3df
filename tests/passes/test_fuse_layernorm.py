"""FuseLayerNorm: exporters' decomposed layer normalization becomes one LayerNormalization."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
import models
from checks import assert_outputs_close, run_pass
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext
from ptqc.passes import FuseLayerNorm, InferShapes, LiftConstantNodes, UpgradeOpset

C = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32),
     "gamma": np.linspace(0.5, 1.5, 8).astype(np.float32), "beta": np.linspace(-1, 1, 8).astype(np.float32),
     "gamma2": np.linspace(0.5, 1.5, 24).reshape(3, 8).astype(np.float32)}


def _decomposed(square="pow", affine=("Mul", "Add"), axes=(-1,), opset=17, gamma="gamma", extra_use=False):
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=list(axes)),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["p"]) if square == "pow" else helper.make_node("Mul", ["d", "d"], ["p"]),
             helper.make_node("ReduceMean", ["p"], ["v"], axes=list(axes)),
             helper.make_node("Add", ["v", "eps"], ["e"]),
             helper.make_node("Sqrt", ["e"], ["s"]),
             helper.make_node("Div", ["d", "s"], ["n"])]
    last = "n"
    if "Mul" in affine:
        nodes.append(helper.make_node("Mul", [last, gamma], ["g"]))
        last = "g"
    if "Add" in affine:
        nodes.append(helper.make_node("Add", ["beta", last], ["b"]))
        last = "b"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    outputs = [("y", np.float32, [2, 3, 8])] + ([("v", np.float32, [2, 3, 1])] if extra_use else [])
    return builders.make_model(nodes, [("x", np.float32, [2, 3, 8])], outputs, C, opset=opset)


def _feeds():
    return {"x": np.random.default_rng(0).normal(3.0, 2.0, (2, 3, 8)).astype(np.float32)}


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("affine", [("Mul", "Add"), ("Mul",), ("Add",), ()], ids=["both", "gamma", "beta", "none"])
def test_decomposed_forms_become_one_layernorm_with_outputs_unchanged(square, affine):
    model = _decomposed(square, affine)
    result, _ = run_pass(model, FuseLayerNorm())
    assert result.graph.op_counts() == {"LayerNormalization": 1, "Identity": 1}
    ln = next(n for n in result.graph.nodes() if n.op_type == "LayerNormalization")
    assert ln.attrs == {"axis": -1, "epsilon": pytest.approx(1e-5)}
    assert_outputs_close(model, result.graph, _feeds(), bound=1e-5)


def test_positive_trailing_axes_and_a_gamma_broadcast_over_them():
    model = _decomposed(axes=(1, 2), gamma="gamma2")
    result, _ = run_pass(model, FuseLayerNorm())
    ln = next(n for n in result.graph.nodes() if n.op_type == "LayerNormalization")
    assert ln.attrs["axis"] == -2
    assert_outputs_close(model, result.graph, _feeds(), bound=1e-5)


@pytest.mark.parametrize("kw, reason", [
    ({"opset": 13}, "needs opset 17"),
    ({"axes": (1,)}, "are not the trailing axes"),
    ({"extra_use": True}, "an inner value has other consumers"),
])
def test_what_does_not_match_stays_and_says_why(kw, reason):
    result, ctx = run_pass(_decomposed(**kw), FuseLayerNorm())
    assert not result.modified
    assert any(reason in f[2] for f in ctx.analyses["rewrite_failures"]["fuse_layer_norm"])


def test_ppocr_rec_layernorms_fuse_and_the_model_computes_the_same(ppocr):
    """PP-OCRv4 rec (paddle2onnx, opset 12, constants in Constant nodes) has five decomposed
    layer normalizations in its SVTR blocks; after the opset upgrade all five fuse."""
    model = onnx.load(str(ppocr["rec"]))
    ctx = PassContext()
    graph = import_model(model)
    for p in (UpgradeOpset(17), LiftConstantNodes(), InferShapes(), FuseLayerNorm()):
        graph = p.run(graph, ctx).graph
    counts = graph.op_counts()
    assert counts["LayerNormalization"] == 5 and "Sqrt" not in counts and "Pow" not in counts
    assert_outputs_close(model, graph, models.ppocr_sample_inputs("rec"), bound=1e-5)
