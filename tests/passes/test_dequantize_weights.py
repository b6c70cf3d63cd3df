"""DequantizeWeights (MindSpore WEIGHT_QUANT): under onnxruntime the written model computes what
the float model computes on weights rounded to the bits-bit symmetric grid along each op's
output-channel axis (Conv 0, ConvTranspose 1, MatMul 1), worked out here independently."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import ort_outputs
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext
from ptqc.passes.dequantize_weights import DequantizeWeights
from ptqc.passes.upgrade_opset import UpgradeOpset

AXES = {"wc": 0, "wt": 1, "wm": 1}


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("ConvTranspose", ["c", "wt"], ["t"], strides=[2, 2], name="deconv"),
             helper.make_node("Reshape", ["t", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["y"], name="fc")]
    inits = {"wc": rng.normal(0, 0.3, (20, 3, 3, 3)).astype(np.float32),
             "wt": rng.normal(0, 0.3, (20, 18, 2, 2)).astype(np.float32),
             "shape": np.array([1, -1], np.int64), "wm": rng.normal(0, 0.1, (18 * 8 * 8, 24)).astype(np.float32)}
    return builders.make_model(nodes, [("x", np.float32, [1, 3, 4, 4])], [("y", np.float32, None)], inits, opset=17)


def _reference(w: np.ndarray, axis: int, bits: int, per_channel: bool) -> np.ndarray:
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    half = 2 ** (bits - 1)
    out = np.empty_like(rows)
    for r in range(len(rows)):
        part = rows[r] if per_channel else rows
        lo, hi = min(part.min(), 0.0), max(part.max(), 0.0)
        scale = (lo if -lo >= hi else hi) / -half or 1.0
        out[r] = np.clip(np.rint(rows[r] / scale), -half, half - 1) * scale
    return np.moveaxis(out.reshape((w.shape[axis],) + tuple(np.delete(w.shape, axis))), 0, axis)


@pytest.mark.parametrize("bits, per_channel", [(8, True), (8, False), (4, True), (6, True), (12, False)])
def test_weights_read_through_dequantize_linear_give_the_rounded_float_model(bits, per_channel):
    model = _model()
    graph = import_model(model)
    ctx = PassContext()
    graph = UpgradeOpset(21).run(graph, ctx).graph
    assert DequantizeWeights(bits, per_channel, min_channels=0).run(graph, ctx).modified
    q = export_model(graph, constants_as_initializers=True)
    assert [n.op_type for n in q.graph.node].count("DequantizeLinear") == 3
    assert not {"wc", "wt", "wm"} & {t.name for t in q.graph.initializer}
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    for t in ref.graph.initializer:
        if t.name in AXES:
            w = onnx.numpy_helper.to_array(t)
            t.CopyFrom(onnx.numpy_helper.from_array(_reference(w, AXES[t.name], bits, per_channel).astype(np.float32),
                                                    t.name))
    x = {"x": np.random.default_rng(1).normal(size=(1, 3, 4, 4)).astype(np.float32)}
    want = ort_outputs(ref, x)[0]
    np.testing.assert_allclose(ort_outputs(q, x)[0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_channel_threshold_keeps_narrow_weights_float():
    graph = import_model(_model())
    ctx = PassContext()
    DequantizeWeights(8, min_channels=20).run(graph, ctx)  # conv has 20 output channels (not more), fc 24
    assert ctx.analyses["weight_layers"] == {"fc": 8}


def test_codes_the_graph_opset_cannot_read_are_refused():
    from ptqc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"4-bit codes need DequantizeLinear of opset 21; the graph is opset 17"):
        DequantizeWeights(4).run(import_model(_model()), PassContext())
