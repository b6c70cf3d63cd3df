"""W8A8: SmoothQuant's migration keeps the float outputs (within 1e-5) and lowers the quantized
error where a few activation channels carry outliers; per-tensor activations become onnxruntime
QDQ pairs with the measured range, per-token ones run-time int8 codes through MatMulInteger,
each equal to a numpy reference of the same arithmetic."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import ort_outputs
from ptqc.errors import ConfigError
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext
from ptqc.passes.quantize_w8a8 import QuantizeW8A8
from ptqc.passes.smooth_activations import SmoothActivations

D, H = 64, 96


def _model(outliers: bool = True) -> onnx.ModelProto:
    """LayerNorm (its scale with a few large channels) -> up/gate MatMuls -> Relu * -> down MatMul,
    and a Gemm (transB) on the reshaped input: "down" and "side" get their 1/s as a Mul."""
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 1.5, D).astype(np.float32)
    if outliers:
        gamma[[3, 17, 40]] *= 40
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["ln", "w1"], ["a"], name="up"),
             helper.make_node("MatMul", ["ln", "w2"], ["b"], name="gate"),
             helper.make_node("Relu", ["a"], ["ar"]), helper.make_node("Mul", ["ar", "b"], ["c"]),
             helper.make_node("MatMul", ["c", "w3"], ["d"], name="down"),
             helper.make_node("Reshape", ["x", "shape"], ["x2"]),
             helper.make_node("Gemm", ["x2", "w4", "bias"], ["e"], transB=1, name="side")]
    inits = {"gamma": gamma, "beta": rng.normal(0, 0.1, D).astype(np.float32),
             "w1": rng.normal(0, 0.1, (D, H)).astype(np.float32), "w2": rng.normal(0, 0.1, (D, H)).astype(np.float32),
             "w3": rng.normal(0, 0.1, (H, D)).astype(np.float32), "shape": np.array([-1, D], np.int64),
             "w4": rng.normal(0, 0.1, (16, D)).astype(np.float32), "bias": rng.normal(0, 0.1, 16).astype(np.float32)}
    outputs = [("d", np.float32, None), ("e", np.float32, None)]
    return builders.make_model(nodes, [("x", np.float32, [2, 8, D])], outputs, inits, opset=17)


def _feeds(n: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(2, 8, D)).astype(np.float32)} for _ in range(n)]


def _ctx(feeds):
    return PassContext(data=lambda run: [run(f) for f in feeds])


def _err(model, quantized, feeds) -> float:
    total = 0.0
    for f in feeds:
        for want, got in zip(ort_outputs(model, f), ort_outputs(quantized, f)):
            total += float(np.sum((got - want) ** 2) / np.sum(want ** 2))
    return total


@pytest.mark.parametrize("strength", [0.5, 0.8, 0.0, 1.0])
def test_smoothing_keeps_the_float_outputs(strength):
    model = _model()
    graph = import_model(model)
    ctx = _ctx(_feeds(4))
    assert SmoothActivations(strength, guard=False).run(graph, ctx).modified
    smoothed = export_model(graph, constants_as_initializers=True)
    ln = next(n for n in smoothed.graph.node if n.op_type == "LayerNormalization")
    assert ln.input[1] != "gamma"  # up and gate are the norm's only readers: 1/s folded into it
    for f in _feeds(3, seed=9):
        for want, got in zip(ort_outputs(model, f), ort_outputs(smoothed, f)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert set(ctx.analyses["input_ranges"]) == {n.input[0] for n in smoothed.graph.node
                                                 if n.op_type in ("MatMul", "Gemm")}


def test_smoothquant_w8a8_beats_minmax_w8a8_when_channels_carry_outliers():
    model, feeds = _model(), _feeds(16)
    plain = import_model(model)
    QuantizeW8A8().run(plain, _ctx(feeds))
    smooth = import_model(model)
    ctx = _ctx(feeds)
    SmoothActivations(0.5).run(smooth, ctx)
    QuantizeW8A8().run(smooth, ctx)
    held_out = _feeds(4, seed=7)
    plain_err = _err(model, export_model(plain, constants_as_initializers=True), held_out)
    smooth_err = _err(model, export_model(smooth, constants_as_initializers=True), held_out)
    assert smooth_err < 0.5 * plain_err


def test_per_tensor_activations_are_qdq_pairs_on_the_measured_range():
    model, feeds = _model(outliers=False), _feeds(8)
    graph = import_model(model)
    QuantizeW8A8(symmetric=False).run(graph, _ctx(feeds))
    q = export_model(graph, constants_as_initializers=True)
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 3 + 4  # 3 inputs, 4 weights
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    ql = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x2")
    xs = np.concatenate([f["x"].reshape(-1) for f in feeds])
    lo, hi = min(xs.min(), 0), max(xs.max(), 0)
    assert inits[ql.input[1]] == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert _err(model, q, _feeds(4, seed=7)) < 8 * 1e-3  # 4 samples x 2 outputs, each under 1e-3


def test_per_token_activations_equal_the_reference_arithmetic():
    model = _model(outliers=False)
    graph = import_model(model)
    QuantizeW8A8(strategy="token").run(graph, PassContext())  # no data: scales come at run time
    q = export_model(graph, constants_as_initializers=True)
    assert [n.op_type for n in q.graph.node].count("MatMulInteger") == 4
    f = _feeds(1, seed=3)[0]
    got = dict(zip([o.name for o in q.graph.output], ort_outputs(q, f)))["e"]
    w = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w4")).astype(np.float64)
    b = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "bias"))
    x = f["x"].reshape(-1, D).astype(np.float32)
    t_scale = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-30) / np.float32(127)
    xq = np.clip(np.rint(x / t_scale), -127, 127)
    lo, hi = np.minimum(w.min(axis=1), 0), np.maximum(w.max(axis=1), 0)
    w_scale = np.where(-lo >= hi, lo, hi) / -128
    wq = np.clip(np.rint(w / w_scale[:, None]), -128, 127)
    want = (xq @ wq.T) * t_scale * w_scale.astype(np.float32) + b
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_refusals_are_named():
    with pytest.raises(ConfigError, match="strategy token: not built yet"):
        QuantizeW8A8(symmetric=False, strategy="token")
    with pytest.raises(ConfigError, match=r"smooth_strength 1.5: expected a value in \[0, 1\]"):
        SmoothActivations(1.5)
    with pytest.raises(ConfigError, match="quant_cfg.inputs strategy tensor: needs calibration data"):
        QuantizeW8A8().run(import_model(_model()), PassContext())


def test_smoothing_that_would_raise_the_estimated_error_is_left_out():
    """At strength 0 (s = 1 / max|W|) the weights' spread moves into the activations, which the
    per-tensor scale then pays for: every input is left as it is, the graph untouched."""
    model = _model()
    graph = import_model(model)
    ctx = _ctx(_feeds(4))
    assert not SmoothActivations(0.0).run(graph, ctx).modified
    assert export_model(graph, constants_as_initializers=True).SerializeToString() == export_model(
        import_model(model), constants_as_initializers=True).SerializeToString()

