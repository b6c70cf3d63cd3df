"""onnxruntime's quantize_static options beyond the basics, each checked against onnxruntime's own
quantize_static on the same model where both write the same thing: TensorQuantOverrides (its
test model: Sigmoid then Conv with a bias), convert, the calibration cache, 4-bit and float8
types, BlockSize, SmoothQuant, and the graph options (QuantizeBias, MatMulConstBOnly, ...)."""
import numpy as np
import onnx
import pytest
from onnx import helper
from onnxruntime.quantization import QuantType

import builders
import models
from checks import list_reader
from ptqc.driver.quantize import quantize_static
from ptqc.errors import ConfigError

WEIGHT = np.array([[[-1.0, -2.0], [1.0, 2.0]], [[-0.5, -1.5], [0.5, 1.5]]], np.float32)
DATA = [{"INP": np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], np.float32)}]


def _model(opset: int = 13, bias=(0.0, 1.0), weight=WEIGHT) -> onnx.ModelProto:
    nodes = [helper.make_node("Sigmoid", ["INP"], ["SIG_OUT"]),
             helper.make_node("Conv", ["SIG_OUT", "WGT", "BIAS"], ["OUT"])]
    return builders.make_model(nodes, [("INP", np.float32, [1, 2, 3])], [("OUT", np.float32, None)],
                               {"WGT": weight, "BIAS": np.asarray(bias, np.float32)}, opset=opset)


def _both(tmp_path, overrides=None, model=None, **options) -> tuple[dict, dict]:
    """(ptqc's, onnxruntime's) initializers, name -> (data type, array)."""
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    onnx.save(model or _model(), str(tmp_path / "float.onnx"))
    options = {"activation_type": "QUInt8", "weight_type": "QUInt8", "op_types_to_quantize": ["Conv", "Sigmoid"],
               "extra_options": {"TensorQuantOverrides": overrides} if overrides else {}, **options}
    enums = {k: getattr(QuantType, v) if k.endswith("_type") else v for k, v in options.items()}
    out = {}
    for who, run, kwargs in (("ptqc", quantize_static, options), ("ort", ort_quantize_static, enums)):
        run(str(tmp_path / "float.onnx"), str(tmp_path / f"{who}.onnx"), list_reader(DATA), **kwargs)
        m = onnx.load(str(tmp_path / f"{who}.onnx"))
        # onnxruntime names a bias's parameters BIAS_quantized_scale or BIAS_scale, depending
        out[who] = {t.name.replace("BIAS_quantized_", "BIAS_"): (t.data_type, onnx.numpy_helper.to_array(t))
                    for t in m.graph.initializer}
    return out["ptqc"], out["ort"]


CASES = {
    "scale, type, symmetric, reduce_range, a bias quantized as a weight": dict(overrides={
        "SIG_OUT": [{"scale": np.array(1.0, np.float32), "zero_point": np.array(127, np.uint8)}],
        "WGT": [{"quant_type": QuantType.QInt8, "symmetric": True, "reduce_range": True}],
        "BIAS": [{"quant_type": QuantType.QInt8, "symmetric": True, "reduce_range": True}]}),
    "activation range": dict(overrides={"SIG_OUT": [{"rmin": np.float32(0.0), "rmax": np.float32(0.5)}]}),
    "weight range": dict(overrides={"WGT": [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]}),
    "weight scale and zero point": dict(overrides={"WGT": [{"zero_point": np.float32(4), "scale": np.float32(0.5)}]}),
    "per channel": dict(per_channel=True, overrides={
        "WGT": [{"axis": 0, "zero_point": 2.0, "scale": 0.5}, {"zero_point": 4.0, "scale": 0.2}],
        "BIAS": [{"axis": 0, "zero_point": 2.0, "scale": 0.5}, {"zero_point": 4.0, "scale": 0.2}]}),
    "per-channel ranges": dict(per_channel=True, overrides={
        "WGT": [{"axis": 0, "rmin": np.float32(0.0), "rmax": np.float32(1.0)},
                {"rmin": np.float32(0.2), "rmax": np.float32(0.8)}]}),
}


@pytest.mark.parametrize("case", CASES)
def test_tensor_quant_overrides_give_onnxruntimes_parameters(tmp_path, case):
    """Every scale and zero point both write equals onnxruntime's (a per-tensor bias scale is
    [1] there, a scalar here; OUT, a graph output Conv computes, stays the int32 accumulator
    times its scale in ptqc: see quantize_static), and each is written in the typed fields."""
    ours, theirs = _both(tmp_path, **CASES[case])
    names = [n for n in theirs if n.endswith(("_scale", "_zero_point")) and not n.startswith("OUT")]
    assert len(names) >= 8
    for name in names:
        assert ours[name][0] == theirs[name][0], name
        np.testing.assert_array_equal(ours[name][1].ravel(), theirs[name][1].ravel(), err_msg=name)
    written = {t.name: t for t in onnx.load(str(tmp_path / "ptqc.onnx")).graph.initializer}
    assert written["WGT_scale"].float_data and not written["WGT_scale"].raw_data
    assert written["INP_zero_point"].int32_data and written["WGT_quantized"].raw_data


@pytest.mark.parametrize("overrides, why", [
    ({"NOPE": [{"rmin": 0.0, "rmax": 1.0}]}, "is not present in the model"),
    ({"SIG_OUT": [{"scale": np.float32(1.0)}]}, "Must provide both 'scale' and 'zero_point'"),
    ({"SIG_OUT": [{"scale": np.float32(1.0), "zero_point": np.uint8(0), "rmax": 1.0}]},
     "option(s) [rmax] are invalid with 'scale' and 'zero_point'"),
    ({"WGT": [{"axis": 0}, {}, {}]}, "Incorrect number of channel overrides"),
    ({"SIG_OUT": [{"quant_type": QuantType.QUInt8, "convert": {"quant_type": QuantType.QUInt8}}]},
     "'convert' quant_type must differ"),
    ({"WGT": [{"quant_type": "QInt2"}]}, "quant_type QInt2 not supported"),
])
def test_bad_overrides_are_refused_naming_the_tensor_and_the_rule(tmp_path, overrides, why):
    onnx.save(_model(), str(tmp_path / "float.onnx"))
    with pytest.raises(ConfigError, match="TensorQuantOverrides") as e:
        quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", list_reader(DATA),
                        extra_options={"TensorQuantOverrides": overrides})
    assert why in str(e.value) and isinstance(e.value, ValueError)  # onnxruntime raises ValueError
    assert not (tmp_path / "q.onnx").exists()


def test_16bit_goes_to_opset_21_or_to_contrib_ops(tmp_path):
    """A 16-bit override on an opset-13 model: converted to opset 21 with ai.onnx Q/DQ
    (onnxruntime's rule), or kept below 21 with com.microsoft Q/DQ under UseQDQContribOps; both run
    and stay near the float model.  (ptqc's graph cleanup may raise the opset below 21 on its own.)"""
    overrides = {"INP": [{"quant_type": "QUInt16"}], "SIG_OUT": [{"quant_type": "QUInt16"}]}
    onnx.save(_model(), str(tmp_path / "float.onnx"))
    for contrib in (False, True):
        out = tmp_path / f"q{contrib}.onnx"
        quantize_static(tmp_path / "float.onnx", out, list_reader(DATA), activation_type="QUInt8",
                        extra_options={"TensorQuantOverrides": overrides, "UseQDQContribOps": contrib})
        m = onnx.load(str(out))
        opset = next(o.version for o in m.opset_import if o.domain == "")
        domains = {n.domain for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
        assert (opset < 21, domains) == ((True, {"com.microsoft"}) if contrib else (False, {""}))
        zps = {t.name: t.data_type for t in m.graph.initializer if t.name.endswith("_zero_point")}
        assert zps["INP_zero_point"] == zps["SIG_OUT_zero_point"] == onnx.TensorProto.UINT16
        assert zps["WGT_zero_point"] == onnx.TensorProto.INT8
        got, want = models.ort_run(m, DATA[0])[0], models.ort_run(_model(), DATA[0])[0]
        np.testing.assert_allclose(got, want, atol=0.02)


def test_disabling_the_weight_adjust_saturates_the_bias_as_onnxruntime_does(tmp_path):
    """A bias too large for int32 at s_x * s_w: by default the weight's scale widens until it
    fits; with QDQDisableWeightAdjustForInt32Bias True the weight keeps onnxruntime's scale and
    the bias saturates at the int32 limit."""
    weight = np.full((2, 2, 2), 1e-6, np.float32)
    model = _model(bias=(0.0, 1e4), weight=weight)
    extra = {"QDQDisableWeightAdjustForInt32Bias": True}
    ours, theirs = _both(tmp_path, model=model, weight_type="QInt8", extra_options=extra)
    np.testing.assert_array_equal(ours["WGT_scale"][1], theirs["WGT_scale"][1])
    assert ours["BIAS_quantized"][1].max() == np.iinfo(np.int32).max
    widened, _ = _both(tmp_path, model=model, weight_type="QInt8")
    assert widened["WGT_scale"][1] > ours["WGT_scale"][1]
    bias = widened["BIAS_quantized"][1].astype(np.float64) * widened["BIAS_scale"][1]
    np.testing.assert_allclose(bias, [0.0, 1e4], rtol=1e-6)


@pytest.mark.parametrize("recv, graph_output", [(None, False), ({"op_1"}, False), (None, True), ({"op_1"}, True)])
def test_convert_adds_a_second_pair_as_onnxruntime_does(tmp_path, recv, graph_output):
    """'convert': the tensor's uint8 pair, then a uint16 pair for the named consumers (or all,
    and the graph output): the same Q/DQ counts, types and converted parameters as onnxruntime's
    quantize_static, outputs within a few uint8 steps of onnxruntime's model (on an input inside
    the calibrated range: beyond it ptqc's 16-bit headroom and onnxruntime's clipping differ)."""
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Sigmoid", ["x"], ["op_0_out"], name="op_0"),
             helper.make_node("Mul", ["op_0_out", "m"], ["y1"], name="op_1"),
             helper.make_node("Add", ["op_0_out", "a"], ["y2"], name="op_2")]
    outputs = [("y1", np.float32, [1, 8]), ("y2", np.float32, [1, 8])] + \
        ([("op_0_out", np.float32, [1, 8])] if graph_output else [])
    model = builders.make_model(nodes, [("x", np.float32, [1, 8])], outputs,
                                {"m": rng.normal(size=(1, 8)).astype(np.float32),
                                 "a": rng.normal(size=(1, 8)).astype(np.float32)}, opset=21)
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"x": rng.normal(size=(1, 8)).astype(np.float32) * 3} for _ in range(4)]
    convert = {"quant_type": QuantType.QUInt16, **({"recv_nodes": recv} if recv else {})}
    overrides = {"op_0_out": [{"quant_type": QuantType.QUInt8, "convert": convert}],
                 "y1": [{"quant_type": QuantType.QUInt16}]}
    written = {}
    for who, run in (("ptqc", quantize_static), ("ort", ort_quantize_static)):
        run(str(tmp_path / "float.onnx"), str(tmp_path / f"{who}.onnx"), list_reader(data),
            activation_type=QuantType.QUInt8, op_types_to_quantize=["Sigmoid", "Mul", "Add"],
            extra_options={"TensorQuantOverrides": overrides})
        written[who] = onnx.load(str(tmp_path / f"{who}.onnx"))
    counts = [{op: sum(n.op_type == op for n in m.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
              for m in (written["ptqc"], written["ort"])]
    # onnxruntime also requantizes the Mul's and the Add's outputs (graph outputs ptqc leaves as its
    # accumulator for Conv/Gemm/MatMul only; Mul and Add are requantized in both): equal counts
    assert counts[0] == counts[1]
    inits = [{t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
             for m in (written["ptqc"], written["ort"])]
    for name in ("op_0_out_scale_convert", "op_0_out_zero_point_convert", "op_0_out_scale", "op_0_out_zero_point"):
        assert inits[0][name].dtype == inits[1][name].dtype, name
        np.testing.assert_allclose(inits[0][name], inits[1][name], rtol=1e-6, err_msg=name)
    test = {"x": rng.normal(size=(1, 8)).astype(np.float32)}
    for got, want in zip(models.ort_run(written["ptqc"], test), models.ort_run(written["ort"], test)):
        step = (max(want.max(), 0) - min(want.min(), 0)) / 255  # about one uint8 step of that output
        np.testing.assert_allclose(got, want, atol=2 * step)


def test_calibration_cache_is_written_read_and_shared_with_onnxruntime(tmp_path):
    """calibration_cache_path: the first run writes onnxruntime's JSON (its loader reads it), a
    second run without a reader writes the same model byte for byte, onnxruntime's quantize_static
    runs from ptqc's cache and ptqc from onnxruntime's with the same activation scales; another
    calibrate_method or a folder is refused."""
    from onnxruntime.quantization import CalibrationMethod, quantize_static as ort_quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    onnx.save(_model(), str(tmp_path / "float.onnx"))
    cache, options = tmp_path / "cache.json", dict(activation_type="QUInt8", weight_type="QInt8")
    quantize_static(tmp_path / "float.onnx", tmp_path / "a.onnx", list_reader(DATA), calibration_cache_path=cache,
                    **options)
    data = load_tensors_data(cache)
    assert data.calibration_method == CalibrationMethod.MinMax and {"INP", "SIG_OUT"} <= set(data.keys())
    quantize_static(tmp_path / "float.onnx", tmp_path / "b.onnx", None, calibration_cache_path=cache, **options)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()

    def scales(path) -> dict:
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
        return {n: inits[f"{n}_scale"] for n in ("INP", "SIG_OUT")}
    from onnxruntime.quantization import QuantType
    # (onnxruntime quantizes the Sigmoid only: ptqc observes no range for OUT, the graph output it
    # leaves as the Conv's accumulator, and onnxruntime would need one)
    ort_quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "ort_from_ours.onnx"), None,
                        calibration_cache_path=str(cache), activation_type=QuantType.QUInt8,
                        op_types_to_quantize=["Sigmoid"])
    theirs = tmp_path / "theirs.json"
    ort_quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "ort.onnx"), list_reader(DATA),
                        calibration_cache_path=str(theirs), activation_type=QuantType.QUInt8)
    quantize_static(tmp_path / "float.onnx", tmp_path / "c.onnx", None, calibration_cache_path=theirs, **options)
    for a, b in ((scales(tmp_path / "a.onnx"), scales(tmp_path / "ort_from_ours.onnx")),
                 (scales(tmp_path / "c.onnx"), scales(tmp_path / "a.onnx"))):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, err_msg=name)
    with pytest.raises(ConfigError, match="written with calibrate_method MinMax, but this run uses Entropy"):
        quantize_static(tmp_path / "float.onnx", tmp_path / "d.onnx", None, calibration_cache_path=cache,
                        calibrate_method="Entropy", **options)
    with pytest.raises(ConfigError, match="not a file"):
        quantize_static(tmp_path / "float.onnx", tmp_path / "d.onnx", list_reader(DATA),
                        calibration_cache_path=tmp_path, **options)
    assert not (tmp_path / "d.onnx").exists()


@pytest.mark.parametrize("weight_type, per_channel", [("QUInt4", False), ("QInt4", True), ("QInt4", False)])
def test_4bit_weights_are_written_packed_at_opset_21_and_run(tmp_path, weight_type, per_channel):
    """weight_type QInt4/QUInt4: the opset-13 model goes to opset 21, the weight is stored as
    packed INT4/UINT4 codes (half a byte each), onnxruntime runs it near the float model; an
    asymmetric per-tensor weight gets onnxruntime's own scale and zero point, a symmetric one
    ptqc's [-7, 7] (onnxruntime's [-8, 7] clips the largest weight by half a step)."""
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    rng = np.random.default_rng(4)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [1, 3, 8, 8])], [("y", np.float32, None)],
                                {"w": weight, "b": np.zeros(4, np.float32)}, opset=13)
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    options = dict(activation_type="QUInt8", weight_type=weight_type, per_channel=per_channel)
    quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", list_reader(data), **options)
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: t for t in q.graph.initializer}
    four = onnx.TensorProto.INT4 if weight_type == "QInt4" else onnx.TensorProto.UINT4
    assert next(o.version for o in q.opset_import if o.domain == "") == 21
    assert inits["w_quantized"].data_type == inits["w_zero_point"].data_type == four
    assert len(inits["w_quantized"].raw_data) == weight.size // 2 + weight.size % 2
    scale = onnx.numpy_helper.to_array(inits["w_scale"])
    if weight_type == "QInt4":
        absmax = np.abs(weight).reshape(4, -1).max(axis=1) if per_channel else np.abs(weight).max()
        np.testing.assert_allclose(scale, absmax / 7, rtol=1e-6)
    else:
        enums = {**options, "weight_type": QuantType.QUInt4, "activation_type": QuantType.QUInt8}
        ort_quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "ort.onnx"), list_reader(data), **enums)
        written = onnx.load(str(tmp_path / "ort.onnx")).graph.initializer
        theirs = {t.name: onnx.numpy_helper.to_array(t) for t in written}
        np.testing.assert_allclose(scale, theirs["w_scale"], rtol=1e-6)
        assert int(onnx.numpy_helper.to_array(inits["w_zero_point"])) == int(theirs["w_zero_point"])
    test = {"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)}
    got, want = models.ort_run(q, test)[0], models.ort_run(model, test)[0]
    assert float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want)) > 0.98


def test_block_size_blocks_matmul_weights_like_onnxruntime_and_refuses_conv(tmp_path):
    """BlockSize 32 on a [64, 32] MatMul weight: scale [2, 32] on opset-21 Q/DQ with
    block_size 32, equal to onnxruntime's; the weight's error is no larger than per column; a
    Conv weight is refused naming the node."""
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    rng = np.random.default_rng(6)
    weight = rng.uniform(-1, 1, (64, 32)).astype(np.float32)
    weight[:32] *= 0.05  # the first block's values are small: a per-column scale wastes its codes
    model = builders.make_model([helper.make_node("MatMul", ["A", "B"], ["Y"], name="MatMul0")],
                                [("A", np.float32, [1, 64])], [("Y", np.float32, None)], {"B": weight}, opset=13)
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"A": rng.uniform(-1, 1, (1, 64)).astype(np.float32)} for _ in range(3)]
    options = dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                   extra_options={"WeightSymmetric": True, "ActivationSymmetric": True, "BlockSize": 32})
    quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", list_reader(data), **options)
    ort_quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "ort.onnx"), list_reader(data), **options)
    q = onnx.load(str(tmp_path / "q.onnx"))
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "B_quantized")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 0, "block_size": 32}
    assert next(o.version for o in q.opset_import if o.domain == "") == 21
    ours = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    theirs = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "ort.onnx")).graph.initializer}
    assert ours["B_scale"].shape == (2, 32)
    np.testing.assert_allclose(ours["B_scale"], theirs["B_scale"], rtol=1e-6)
    blocked = np.repeat(ours["B_scale"], 32, axis=0) * ours["B_quantized"].astype(np.float32)
    per_column = np.abs(weight).max(axis=0) / 127
    assert np.abs(blocked - weight).max() <= np.abs(np.rint(weight / per_column) * per_column - weight).max()
    test = {"A": rng.uniform(-1, 1, (1, 64)).astype(np.float32)}
    np.testing.assert_allclose(models.ort_run(q, test)[0], models.ort_run(model, test)[0], atol=0.05)
    conv = builders.make_model([helper.make_node("Conv", ["X", "W"], ["Y"], name="Conv0")],
                               [("X", np.float32, [1, 1, 8, 8])], [("Y", np.float32, None)],
                               {"W": rng.uniform(-1, 1, (8, 1, 3, 3)).astype(np.float32)}, opset=21)
    onnx.save(conv, str(tmp_path / "conv.onnx"))
    with pytest.raises(ConfigError, match="BlockSize: node 'Conv0' .*rank-2 MatMul weights only"):
        quantize_static(tmp_path / "conv.onnx", tmp_path / "c.onnx",
                        list_reader([{"X": np.ones((1, 1, 8, 8), np.float32)}]), extra_options={"BlockSize": 4})
    assert not (tmp_path / "c.onnx").exists()


def test_a_per_channel_weight_override_in_a_per_tensor_run_gives_a_per_channel_bias(tmp_path):
    """per_channel False, but the weight's override asks for axis 0 (and int4): the weight and
    its int32 bias come out per channel, the model runs near the float one."""
    weight = np.linspace(-1.5, 1.5, 2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)
    onnx.save(_model(weight=weight), str(tmp_path / "float.onnx"))
    quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", list_reader(DATA), activation_type="QUInt8",
                    weight_type="QUInt8", extra_options={"TensorQuantOverrides": {
                        "WGT": [{"quant_type": QuantType.QInt4, "axis": 0}]}})
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    assert inits["WGT_scale"].shape == inits["BIAS_scale"].shape == (2,)
    np.testing.assert_allclose(models.ort_run(q, DATA[0])[0], models.ort_run(_model(weight=weight), DATA[0])[0],
                               atol=0.05)


def _options_model() -> onnx.ModelProto:
    """x -> Conv(W, B) -> Relu -> Sigmoid -> s; s + k -> y1, s * k -> y2 (s read twice); u @ v -> y3."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"), helper.make_node("Sigmoid", ["r"], ["s"]),
             helper.make_node("Add", ["s", "k"], ["y1"], name="add"), helper.make_node("Mul", ["s", "k"], ["y2"]),
             helper.make_node("MatMul", ["u", "v"], ["y3"], name="mm")]
    return builders.make_model(nodes, [("x", np.float32, [1, 2, 4, 4]), ("u", np.float32, [3, 4]),
                                       ("v", np.float32, [4, 5])],
                               [("y1", np.float32, None), ("y2", np.float32, None), ("y3", np.float32, None)],
                               {"W": rng.normal(size=(3, 2, 1, 1)).astype(np.float32),
                                "B": rng.normal(size=3).astype(np.float32),
                                "k": rng.normal(size=(1, 3, 1, 1)).astype(np.float32)}, opset=17)


@pytest.mark.parametrize("option", ["QuantizeBias", "MatMulConstBOnly", "OpTypesToExcludeOutputQuantization",
                                    "AddQDQPairToWeight", "DedicatedQDQPair", "extra.Sigmoid.nnapi",
                                    "QDQKeepRemovableActivations"])
def test_onnxruntimes_graph_options_do_what_they_say(tmp_path, option):
    """Each option against the same run without it, on one model that onnxruntime then runs."""
    rng = np.random.default_rng(9)
    model = _options_model()
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"x": rng.normal(size=(1, 2, 4, 4)).astype(np.float32), "u": rng.normal(size=(3, 4)).astype(np.float32),
             "v": rng.normal(size=(4, 5)).astype(np.float32)} for _ in range(3)]
    value = {"QuantizeBias": False, "OpTypesToExcludeOutputQuantization": ["Add"]}.get(option, True)
    written = {}
    for name, extra in (("plain", {}), ("option", {option: value})):
        quantize_static(tmp_path / "float.onnx", tmp_path / f"{name}.onnx", list_reader(data),
                        activation_type="QUInt8", extra_options=extra)
        written[name] = onnx.load(str(tmp_path / f"{name}.onnx"))
    plain, got = written["plain"], written["option"]

    def producer(m, name):
        return next((n for n in m.graph.node if name in n.output), None)

    def readers(m, name):
        return [n for n in m.graph.node if name in n.input]
    conv = next(n for n in got.graph.node if n.op_type == "Conv")
    if option == "QuantizeBias":
        assert producer(plain, next(n for n in plain.graph.node if n.op_type == "Conv").input[2]) is not None
        assert conv.input[2] == "B" and producer(got, "B") is None  # the float bias, read directly
    elif option == "MatMulConstBOnly":
        mm = next(n for n in got.graph.node if n.op_type == "MatMul")
        assert list(mm.input) == ["u", "v"]
        assert producer(plain, next(n for n in plain.graph.node if n.op_type == "MatMul").input[0]) is not None
    elif option == "OpTypesToExcludeOutputQuantization":
        assert producer(got, "y1").op_type == "Add" and producer(plain, "y1").op_type == "DequantizeLinear"
    elif option == "AddQDQPairToWeight":
        dq = producer(got, conv.input[1])
        q = producer(got, dq.input[0])
        assert (dq.op_type, q.op_type, q.input[0]) == ("DequantizeLinear", "QuantizeLinear", "W")
        codes = {t.name: onnx.numpy_helper.to_array(t) for t in plain.graph.initializer}["W_quantized"]
        weight = {t.name: onnx.numpy_helper.to_array(t) for t in got.graph.initializer}["W"]
        scale = {t.name: onnx.numpy_helper.to_array(t) for t in got.graph.initializer}["W_scale"]
        np.testing.assert_array_equal(np.rint(weight / scale.reshape(-1, 1, 1, 1)), codes)
    elif option == "QDQKeepRemovableActivations":  # fused by default: no Q/DQ between Conv and Relu
        relu = [next(n for n in m.graph.node if n.op_type == "Relu") for m in (plain, got)]
        assert producer(plain, relu[0].input[0]).op_type == "Conv"
        assert producer(got, relu[1].input[0]).op_type == "DequantizeLinear"
    elif option == "DedicatedQDQPair":
        assert len([n for n in readers(got, "s") if n.op_type == "QuantizeLinear"]) == 2
        assert len([n for n in readers(plain, "s") if n.op_type == "QuantizeLinear"]) == 1
    else:
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in got.graph.initializer}
        assert inits["s_scale"] == np.float32(1 / 256) and inits["s_zero_point"] == 0
    want = models.ort_run(model, data[0])
    for a, b in zip(models.ort_run(got, data[0]), want):
        np.testing.assert_allclose(a, b, atol=0.1 * np.abs(b).max() + 0.05)


def test_smooth_quant_moves_outliers_into_the_weights_and_helps_held_out(tmp_path):
    """SmoothQuant on MatMuls whose input has three outlier channels (x60): the smoothed model's
    held-out min cosine is at least the plain one's, the inserted Mul reads the float input (left
    float, as onnxruntime excludes it), the cache records smooth_quant; a reader that can be
    neither rewound nor copied, or SmoothQuantFolding False, is refused by name."""
    import json

    rng = np.random.default_rng(10)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [8, 64])], [("y", np.float32, None)],
                                {"w": rng.normal(0, 0.1, (64, 32)).astype(np.float32),
                                 "w2": rng.normal(size=(32, 10)).astype(np.float32)}, opset=17)
    onnx.save(model, str(tmp_path / "float.onnx"))

    def batch():
        x = rng.normal(size=(8, 64)).astype(np.float32)
        x[:, :3] *= 60
        return {"x": x}
    calibration, held_out = [batch() for _ in range(8)], [batch() for _ in range(8)]
    worst = {}
    for smooth in (False, True):
        out = tmp_path / f"q{smooth}.onnx"
        quantize_static(tmp_path / "float.onnx", out, list_reader(calibration), activation_type="QUInt8",
                        extra_options={"SmoothQuant": smooth}, calibration_cache_path=tmp_path / f"c{smooth}.json")
        q = onnx.load(str(out))
        worst[smooth] = min(float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))
                            for t in held_out for a, b in [(models.ort_run(q, t)[0], models.ort_run(model, t)[0])])
        assert json.loads((tmp_path / f"c{smooth}.json").read_text())["smooth_quant"] is smooth
    first = onnx.load(str(tmp_path / "qTrue.onnx")).graph.node[0]
    assert (first.op_type, first.input[0]) == ("Mul", "x")
    assert worst[True] >= worst[False] > 0.98

    class OneShot:
        def __init__(self):
            self.it = (b for b in calibration)

        def get_next(self):
            return next(self.it, None)
    with pytest.raises(ConfigError, match="extra_options SmoothQuant: the calibration data cannot be read again"):
        quantize_static(tmp_path / "float.onnx", tmp_path / "r.onnx", OneShot(), extra_options={"SmoothQuant": True})
    with pytest.raises(ConfigError, match="SmoothQuantFolding False: not built"):
        quantize_static(tmp_path / "float.onnx", tmp_path / "r.onnx", list_reader(calibration),
                        extra_options={"SmoothQuant": True, "SmoothQuantFolding": False})
    assert not (tmp_path / "r.onnx").exists()


@pytest.mark.parametrize("method", ["MinMax", "Distribution"])
def test_float8_is_written_at_opset_19_with_amax_scales(tmp_path, method, caplog):
    """QFLOAT8E4M3FN for both types: opset 19, FLOAT8E4M3FN codes with zero point 0, scales
    max|x| / 448 (weights per tensor, activations from calibration), biases float; onnxruntime
    (at ORT_ENABLE_BASIC: its extended optimizer drops a Relu in front of a float8 Q, warned)
    runs it within float8's precision of the float model.  Mixing float8 with integers, Entropy,
    and QOperator are refused by name."""
    rng = np.random.default_rng(11)
    weight = rng.normal(size=(32, 16)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [4, 16])], [("y", np.float32, None)],
                                {"w": weight, "b": rng.normal(size=32).astype(np.float32),
                                 "w2": rng.normal(size=(32, 8)).astype(np.float32)}, opset=13)
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"x": rng.normal(size=(4, 16)).astype(np.float32)} for _ in range(4)]
    eight = dict(activation_type="QFLOAT8E4M3FN", weight_type="QFLOAT8E4M3FN")
    quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", list_reader(data), calibrate_method=method, **eight)
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert next(o.version for o in q.opset_import if o.domain == "") == 19
    inits = {t.name: t for t in q.graph.initializer}
    assert inits["w_quantized"].data_type == inits["x_zero_point"].data_type == onnx.TensorProto.FLOAT8E4M3FN
    assert onnx.numpy_helper.to_array(inits["w_scale"]) == np.float32(np.abs(weight).max() / 448)
    assert inits["b"].data_type == onnx.TensorProto.FLOAT and "drops a Relu/Clip" in caplog.text
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    test = {"x": rng.normal(size=(4, 16)).astype(np.float32)}
    got = ort.InferenceSession(q.SerializeToString(), options).run(None, test)[0]
    want = models.ort_run(model, test)[0]
    assert float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want)) > 0.99
    for kwargs, needle in ((dict(activation_type="QFLOAT8E4M3FN", weight_type="QInt8"), "float8 goes for both"),
                           (dict(calibrate_method="Entropy", **eight), "Entropy with float8: not built"),
                           (dict(quant_format="QOperator", **eight), "only QDQ supports")):
        with pytest.raises(ConfigError, match=needle):
            quantize_static(tmp_path / "float.onnx", tmp_path / "r.onnx", list_reader(data), **kwargs)
    assert not (tmp_path / "r.onnx").exists()
