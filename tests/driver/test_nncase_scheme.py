"""nncase quant scheme JSON: export, import as overrides, round trip on real models."""
import json

import numpy as np
import onnx
import pytest

import models
from checks import list_reader
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.errors import ConfigError, PtqcError




def _digits_data(digits):
    return [{"input": digits.x_train[i:i + 16]} for i in range(0, 64, 16)]


@pytest.mark.parametrize("which", ["digits", "cls"])
def test_an_unchanged_exported_scheme_gives_the_same_model(tmp_path, digits, ppocr, which):
    if which == "digits":
        model, data = digits.model, _digits_data(digits)
    else:
        model, data = ppocr["cls"], [models.ppocr_sample_inputs("cls", seed=s) for s in range(3)]
    cfg = QuantConfig(quant_mode=("min_max",), export_quant_scheme=True)
    first = quantize(model, tmp_path / "m_quantize.onnx", list_reader(data), cfg, evaluate=False)
    scheme = json.loads(first.quant_scheme.read_text())
    kinds = {e["DataRangeMode"] for e in scheme["Outputs"]}
    assert kinds == {"by_tensor", "by_channel"} and scheme["Version"] == "1.0"
    again = quantize(model, None, list_reader(data), QuantConfig(quant_mode=("min_max",), quant_scheme=first.quant_scheme),
                     evaluate=False)
    assert again.model.SerializeToString() == first.model.SerializeToString()


def test_edited_types_and_ranges_override_calibration(tmp_path, digits):
    data = _digits_data(digits)
    first = quantize(digits.model, tmp_path / "d_quantize.onnx", list_reader(data),
                     QuantConfig(quant_mode=("min_max",), export_quant_scheme=True), evaluate=False)
    scheme = json.loads(first.quant_scheme.read_text())
    entries = {e["Name"]: e for e in scheme["Outputs"]}
    entries["relu1_out"]["DataType"] = "i16"          # one group to 16 bit
    entries["relu2_out"]["DataType"] = "f32"          # one group kept float
    entries["input"]["DataRange"] = [{"Min": 0.0, "Max": 2.0, "IsFull": False}]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(scheme))
    model = quantize(digits.model, None, list_reader(data), QuantConfig(quant_mode=("min_max",), quant_scheme=path),
                     evaluate=False).model
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    q_of = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert inits[q_of["relu1_out"].input[2]].dtype == np.int16
    assert "relu2_out" not in q_of
    assert np.isclose(inits[q_of["input"].input[1]], 2.0 / 255)
    onnx.checker.check_model(model)
    assert models.ort_run(model, {"input": digits.x_test[:4]})[0].shape == (4, 10)


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s["Outputs"].append({"Name": "nope", "DataType": "u8", "DataRange": [{"Min": 0, "Max": 1}]}), "'nope'"),
    (lambda s: s["Outputs"][0].update(DataType="u4"), "DataType 'u4'"),
    (lambda s: s["Outputs"][0].update(DataRange=[{"Min": 2, "Max": 1}]), "inverted"),
    (lambda s: s.pop("Outputs"), "Outputs"),
])
def test_bad_schemes_are_refused_by_name(tmp_path, digits, edit, needle):
    data = _digits_data(digits)
    first = quantize(digits.model, tmp_path / "d_quantize.onnx", list_reader(data),
                     QuantConfig(quant_mode=("min_max",), export_quant_scheme=True), evaluate=False)
    scheme = json.loads(first.quant_scheme.read_text())
    edit(scheme)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scheme))
    with pytest.raises(ConfigError, match=needle):
        quantize(digits.model, None, list_reader(data), QuantConfig(quant_mode=("min_max",), quant_scheme=path))


def test_f16_rounds_the_tensor_through_float16(tmp_path, digits):
    """f16 is float16, not float32: the tensor goes through Cast(float16) -> Cast(float), which
    onnxruntime keeps (its outputs differ from the f32 scheme's, by float16 rounding only)."""
    data = _digits_data(digits)
    first = quantize(digits.model, tmp_path / "d_quantize.onnx", list_reader(data),
                     QuantConfig(quant_mode=("min_max",), export_quant_scheme=True), evaluate=False)
    scheme = json.loads(first.quant_scheme.read_text())
    models_by_type = {}
    for kind in ("f16", "f32"):
        for e in scheme["Outputs"]:
            if e["Name"] in ("relu1_out", "logits"):
                e["DataType"] = kind
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(scheme))
        models_by_type[kind] = quantize(digits.model, None, list_reader(data),
                                        QuantConfig(quant_mode=("min_max",), quant_scheme=path), evaluate=False).model
    half = models_by_type["f16"]
    casts = {n.input[0]: n for n in half.graph.node if n.op_type == "Cast"}
    assert casts["relu1_out"].attribute[0].i == onnx.TensorProto.FLOAT16
    assert [o.name for o in half.graph.output] == ["logits"]  # the output keeps its name and float type
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(n.op_type == "Cast" for n in models_by_type["f32"].graph.node)
    onnx.checker.check_model(half)
    x = digits.x_test[:64]
    (a,), (b,) = models.ort_run(half, {"input": x}), models.ort_run(models_by_type["f32"], {"input": x})
    assert np.array_equal(a, a.astype(np.float16).astype(np.float32))  # the output itself is float16-exact
    assert not np.array_equal(a, b) and np.max(np.abs(a - b)) <= 1e-2 * np.max(np.abs(b))


def test_a_full_scheme_quantizes_without_data_and_a_partial_one_says_what_is_missing(tmp_path, digits):
    data = _digits_data(digits)
    first = quantize(digits.model, tmp_path / "d_quantize.onnx", list_reader(data),
                     QuantConfig(quant_mode=("min_max",), adaround=False, export_quant_scheme=True), evaluate=False)
    # no data: the listed ranges, and weights rounded to nearest (AdaRound has nothing to learn on)
    again = quantize(digits.model, None, None, QuantConfig(quant_scheme=first.quant_scheme), evaluate=False)
    assert again.model.SerializeToString() == first.model.SerializeToString()
    scheme = json.loads(first.quant_scheme.read_text())
    scheme["Outputs"] = [e for e in scheme["Outputs"] if e["Name"] != "input"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(scheme))
    with pytest.raises(PtqcError, match="'input' has no observed range and no loaded one"):
        quantize(digits.model, None, None, QuantConfig(quant_scheme=path), evaluate=False)
