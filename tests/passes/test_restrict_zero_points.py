"""RestrictZeroPoints (onnxruntime's ActivationRestrictedAsymmetric): uint8 activation zero
points 0 or 128, parameters equal to onnxruntime's."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import list_reader
from ptqc.driver.quantize import quantize_static
from ptqc.passes.restrict_zero_points import snapped


@pytest.mark.parametrize("lo, hi", [(0.0, 3.0), (0.5, 2.0), (-1.0, 2.0), (-3.0, 0.5), (-2.0, 0.0), (0.0, 0.0),
                                    (-1e-3, 1e4)])
def test_snapped_parameters_equal_onnxruntimes(lo, hi):
    from onnxruntime.quantization.quant_utils import snap_zero_point_to_uint8

    want_zp, want_scale = snap_zero_point_to_uint8(np.float32(lo), np.float32(hi))
    got = snapped(min(lo, 0.0), max(hi, 0.0))
    assert int(got.zero_point) == int(want_zp) in (0, 128)
    assert np.float32(got.scale) == np.float32(want_scale)
    # the range fits unclipped: lo and hi land on codes within [0, 255]
    codes = np.rint(np.array([min(lo, 0.0), max(hi, 0.0)]) / got.scale) + got.zero_point
    assert codes.min() >= 0 and codes.max() <= 255


def test_quantize_static_option_gives_onnxruntimes_activation_parameters(tmp_path):
    """A Conv -> Relu -> Conv model with signed and non-negative activations: every activation
    scale and zero point equals onnxruntime's quantize_static with the same option, and the
    zero points are 0 (Relu's output) or 128 (the signed input); without it they are not."""
    from onnxruntime.quantization import QuantType, quantize_static as ort_quantize_static

    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [1, 2, 4, 4])], [("y", np.float32, None)],
                                {"w1": rng.normal(size=(3, 2, 1, 1)).astype(np.float32),
                                 "w2": rng.normal(size=(2, 3, 1, 1)).astype(np.float32)}, opset=17)
    onnx.save(model, str(tmp_path / "float.onnx"))
    data = [{"x": (rng.normal(size=(1, 2, 4, 4)) + 0.7).astype(np.float32)} for _ in range(3)]
    params = {}
    for who, run, extra in (("ptqc", quantize_static, True), ("ort", ort_quantize_static, True),
                            ("plain", quantize_static, False)):
        run(str(tmp_path / "float.onnx"), str(tmp_path / f"{who}.onnx"), list_reader(data),
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            extra_options={"ActivationRestrictedAsymmetric": extra})
        written = onnx.load(str(tmp_path / f"{who}.onnx")).graph.initializer
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in written}
        params[who] = {n: (inits[f"{n}_scale"], inits[f"{n}_zero_point"]) for n in ("x", "c1", "r")
                       if f"{n}_scale" in inits}
    assert params["ptqc"].keys() == params["ort"].keys() and "x" in params["ptqc"]
    for name, (scale, zp) in params["ptqc"].items():
        assert scale == params["ort"][name][0] and zp == params["ort"][name][1], name
        assert int(zp) in (0, 128)
    assert int(params["plain"]["x"][1]) not in (0, 128)
