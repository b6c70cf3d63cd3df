"""The ptqc command: convert end to end, and every bad input exits 2 with one line."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
import models
from checks import assert_bad_input, ort_outputs, ptqc, relative_error


def test_convert_ppocr_cls_fuses_every_batchnorm(ppocr, tmp_path):
    code, out, err = ptqc("--chip", "TX5368AV200", "quant", "-r", "convert", "-m", ppocr["cls"],
                          "--save-dir", tmp_path, "--dump-ir", "-l", "2")
    assert code == 0, err
    result = tmp_path / "ch_ppocr_mobile_v2.0_cls_infer_convert.onnx"
    converted = onnx.load(str(result))
    onnx.checker.check_model(converted)
    assert not any(n.op_type == "BatchNormalization" for n in converted.graph.node)
    feeds = models.ppocr_sample_inputs("cls")
    for a, b in zip(ort_outputs(onnx.load(str(ppocr["cls"])), feeds), ort_outputs(converted, feeds)):
        assert relative_error(a, b) <= 1e-4
    assert "BatchNormalization fused: 35" in out and "fuse_batch_norm" in out
    steps = sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert steps[0].startswith("01_") and any("fuse_batch_norm" in s for s in steps)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.parametrize("name", ["det", "rec"])
def test_convert_ppocr_det_rec_fuses_every_batchnorm(ppocr, tmp_path, name):
    """det's third BN sits after ConvTranspose -> Add(bias): FuseBiasAdd opens the way."""
    from ptqc.driver.api import convert

    report = convert(ppocr[name], tmp_path / "m.onnx")
    g = report.graph
    assert "BatchNormalization" not in g.op_counts()
    feeds = models.ppocr_sample_inputs(name)
    for a, b in zip(ort_outputs(onnx.load(str(ppocr[name])), feeds), ort_outputs(g, feeds)):
        assert relative_error(a, b) <= 1e-4


def test_missing_model_file(tmp_path):
    code, _, err = ptqc("quant", "-r", "convert", "-m", tmp_path / "nope.onnx", "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "nope.onnx", "no such file")
    assert not list((tmp_path / "o").glob("*.onnx"))


def test_non_onnx_bytes(tmp_path):
    bad = tmp_path / "photo.onnx"
    bad.write_bytes(b"\xff\xd8\xff\xe0 JFIF not a model")
    code, _, err = ptqc("quant", "-r", "convert", "-m", bad, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "photo.onnx", "not an ONNX model")
    assert not list((tmp_path / "o").glob("*.onnx"))


def test_truncated_protobuf(tmp_path, digits):
    data = digits.model.SerializeToString()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = ptqc("quant", "-r", "convert", "-m", bad, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "cut.onnx")
    assert not list((tmp_path / "o").glob("*.onnx"))


def test_checker_failure(tmp_path):
    model = builders.make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, [2])],
                                [("y", np.float32, [2])])
    model.graph.node[0].input.append("x")  # Relu takes one input
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    code, _, err = ptqc("quant", "-r", "convert", "-m", bad, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "bad.onnx", "checker")
    assert not list((tmp_path / "o").glob("*.onnx"))


def test_cyclic_graph(tmp_path):
    g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                           helper.make_node("Relu", ["a"], ["b"], name="n2")], "cyc",
                          [helper.make_tensor_value_info("x", 1, [2])], [helper.make_tensor_value_info("b", 1, [2])])
    bad = tmp_path / "cyc.onnx"
    bad.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    code, _, err = ptqc("quant", "-r", "convert", "-m", bad, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "cyc.onnx", "cyclic", "n1", "n2")
    assert not list((tmp_path / "o").glob("*.onnx"))


def test_unknown_op_in_reference_executor(tmp_path):
    model = builders.make_model([helper.make_node("Relu", ["x"], ["r"]),
                                 helper.make_node("Frobnicate", ["r"], ["y"], name="frob_1", domain="com.acme")],
                                [("x", np.float32, [2])], [("y", np.float32, [2])], check=False)
    model.opset_import.append(helper.make_opsetid("com.acme", 1))
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    code, _, err = ptqc("quant", "-r", "infer", "-m", path, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "frob_1", "Frobnicate")
    assert not (tmp_path / "o" / "infer").exists() or not list((tmp_path / "o" / "infer").iterdir())


def test_unwritable_save_dir(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    blocker = tmp_path / "file"
    blocker.write_text("a file where the save dir should be")
    code, _, err = ptqc("quant", "-r", "convert", "-m", model, "--save-dir", blocker / "out")
    assert_bad_input(code, err, "--save-dir", "cannot create")


def test_flag_not_built_yet_is_refused_by_name(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    code, _, err = ptqc("quant", "-r", "convert", "-m", model, "-qm", "kl", "--save-dir", tmp_path)
    assert_bad_input(code, err, "-qm/--quant-mode", "not built yet")
    code, _, err = ptqc("quant", "-m", model, "-c2chw", "--save-dir", tmp_path)
    assert_bad_input(code, err, "-c2chw/--convert2chw: applies only to -f tensorflow")
    code, _, err = ptqc("quant", "-r", "convert", "-m", model, "-du", "--save-dir", tmp_path)
    assert_bad_input(code, err, "-du/--dump", "not built yet for -r convert")
    code, _, err = ptqc("--chip", "TX9999", "quant", "-r", "convert", "-m", model)
    assert_bad_input(code, err, "--chip", "TX9999")
    code, _, err = ptqc("quant", "-r", "convert", "-m", model, "-b", "12")
    assert_bad_input(code, err, "-b/--bit-width")
    code, _, err = ptqc("quant", "--no-such-flag")
    assert_bad_input(code, err, "--no-such-flag")
    assert not list(tmp_path.glob("*_convert.onnx"))


def test_infer_with_reference_executor_matches_onnxruntime(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data = tmp_path / "data"
    data.mkdir()
    x = digits.x_test[:4]
    np.save(data / "input.npy", x)
    code, out, err = ptqc("quant", "-r", "infer", "-m", model, "-d", data, "-bs", "4", "--save-dir", tmp_path / "o")
    assert code == 0, err
    (logits_file,) = (tmp_path / "o" / "infer").glob("*.npy")  # one batch of -bs 4: logits.npy
    assert relative_error(ort_outputs(digits.model, {"input": x})[0], np.load(logits_file)) <= 1e-4
