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


def _biased_model() -> onnx.ModelProto:
    """Conv (grouped, padded, strided, with bias), MatMul (no bias) and Gemm (transB, with C) on
    inputs of non-zero mean."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], group=2, pads=[1, 0, 1, 2], strides=[2, 1],
                              name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["m"], name="fc"),
             helper.make_node("Gemm", ["m", "wg", "bg"], ["y"], transB=1, name="gemm")]
    inits = {"wc": rng.normal(0, 0.3, (8, 2, 3, 3)).astype(np.float32), "bc": rng.normal(0, 0.1, 8).astype(np.float32),
             "shape": np.array([-1, 8 * 3 * 6], np.int64), "wm": rng.normal(0, 0.1, (144, 32)).astype(np.float32),
             "wg": rng.normal(0, 0.2, (16, 32)).astype(np.float32), "bg": np.zeros(16, np.float32)}
    return builders.make_model(nodes, [("x", np.float32, ["n", 4, 6, 6])], [("y", np.float32, None)], inits,
                               opset=17)


def _feeds(seed: int, n: int = 8) -> dict:
    return {"x": (np.random.default_rng(seed).normal(size=(n, 4, 6, 6)) + 1.5).astype(np.float32)}


@pytest.mark.parametrize("node, tensor", [("conv", "c"), ("fc", "m"), ("gemm", "y")])
def test_bias_correction_puts_each_layers_output_mean_back(node, tensor):
    """With bias correction each Conv/MatMul/Gemm's output mean per channel over the data equals the
    float layer's on the same inputs (its own rounding's shift (W - Q(W)) E[x] removed); without, it does not;
    and the model's output error on other inputs drops."""
    from ptqc.passes.calibrate import feeds_drive

    model = _biased_model()
    calib = [_feeds(s) for s in range(4)]

    def quantized(correct: bool) -> onnx.ModelProto:
        graph = UpgradeOpset(21).run(import_model(model), PassContext()).graph
        DequantizeWeights(4, min_channels=0, bias_correction=correct).run(graph, PassContext(data=feeds_drive(calib)))
        return export_model(graph, constants_as_initializers=True)

    x_name = next(n.input[0] for n in model.graph.node if n.name == node)
    probe = _with_outputs(model, [x_name, tensor])
    for m, exact in ((quantized(True), True), (quantized(False), False)):
        shifts = []
        for f in calib:  # the layer fed the float model's input, as the correction measures it
            got = dict(zip([o.name for o in probe.graph.output], ort_outputs(probe, f)))
            x, y_float = got[x_name], got[tensor]
            d = np.moveaxis(_layer_alone(m, node, x) - y_float, 1 if node == "conv" else -1, -1)
            shifts.append(d.reshape(-1, d.shape[-1]))  # per output channel
        shift = np.abs(np.mean(np.concatenate(shifts), axis=0)).max()
        assert (shift < 1e-4) == exact, (node, exact, shift)
    test = [_feeds(100 + s) for s in range(3)]
    err = {k: sum(float(np.abs(ort_outputs(m, f)[0] - ort_outputs(model, f)[0]).mean()) for f in test)
           for k, m in (("plain", quantized(False)), ("corrected", quantized(True)))}
    assert err["corrected"] < err["plain"], err


def _with_outputs(m: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names
                            if n not in have)
    return out


def _layer_alone(m: onnx.ModelProto, node: str, x: np.ndarray) -> np.ndarray:
    """The named layer of ``m`` (its weight DQ and any bias-correction Add after it) run on ``x``."""
    graph = import_model(m)
    layer = next(n for n in graph.nodes() if n.name == node)
    after = [n for n in graph.consumer_nodes(layer.outputs[0]) if n.op_type == "Add" and "bias_correction" in n.name]
    out = after[0].outputs[0] if after else layer.outputs[0]
    sub = onnx.utils.Extractor(_with_outputs(m, [out])).extract_model([layer.inputs[0]], [out])
    return ort_outputs(sub, {layer.inputs[0]: x})[0]


def test_bias_correction_without_data_is_refused_by_name():
    from ptqc.errors import ConfigError

    graph = UpgradeOpset(21).run(import_model(_biased_model()), PassContext()).graph
    with pytest.raises(ConfigError, match=r"^\[weight_quant_param\] bias_correction: needs calibration data$"):
        DequantizeWeights(8, bias_correction=True).run(graph, PassContext())
