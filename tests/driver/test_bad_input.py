"""Bad input found only late: a model only onnxruntime can find fault with (an opset it does
not know, a type clash, a Conv or Reshape that cannot run on the data), or -is/--input-shapes
contradicting the -d data: exit 2, one line naming the file and node (or flag), no output
written; the API raises ModelError."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import assert_bad_input, list_reader, ptqc
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import infer, quantize
from ptqc.errors import ModelError

n = helper.make_node


def _model(kind: str) -> onnx.ModelProto:
    if kind == "gemm-types":
        return builders.make_model([n("Gemm", ["x", "w"], ["y"], name="gemm")], [("x", np.float32, [1, 4])],
                                   [("y", np.float32, [1, 3])], {"w": np.ones((4, 3), np.float64)}, check=False)
    if kind == "conv-channels":
        return builders.make_model([n("Conv", ["x", "w"], ["y"], name="conv")], [("x", np.float32, [1, 3, 8, 8])],
                                   [("y", np.float32, None)], {"w": np.ones((4, 5, 3, 3), np.float32)}, check=False)
    if kind == "reshape":
        return builders.make_model([n("Reshape", ["x", "s"], ["y"], name="reshape")], [("x", np.float32, [1, 12])],
                                   [("y", np.float32, None)], {"s": np.array([5, 5], np.int64)}, check=False)
    return builders.make_model([n("Relu", ["x"], ["y"], name="relu")], [("x", np.float32, [1, 4])],
                               [("y", np.float32, [1, 4])], opset=99, check=False)


CASES = [("gemm-types", "node 'gemm' (Gemm)", "different types"),
         ("conv-channels", "Conv node 'conv'", "kernel channels"),  # onnxruntime calls it 'y_nchwc'
         ("reshape", "Reshape node 'reshape'", "cannot be reshaped"),
         ("opset-99", "", "Opset 99")]


@pytest.mark.parametrize("kind, node, reason", CASES)
def test_the_cli_names_file_and_node_and_writes_nothing(tmp_path, kind, node, reason):
    path = tmp_path / f"{kind}.onnx"
    onnx.save(_model(kind), str(path))
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", path, "--save-dir", tmp_path / "out")
    assert_bad_input(code, err, f"{kind}.onnx", node, reason, "onnxruntime cannot run the model")
    assert not list((tmp_path / "out").glob("**/*.onnx"))


@pytest.mark.parametrize("kind", ["conv-channels", "reshape"])
def test_the_api_raises_model_error_for_quantize_and_infer(tmp_path, kind):
    model = _model(kind)
    feeds = [builders.random_feeds(model, seed=s) for s in range(2)]
    with pytest.raises(ModelError, match="onnxruntime cannot run the model"):
        quantize(model, tmp_path / "o.onnx", list_reader(feeds), QuantConfig(chip="TX510x"))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="onnxruntime cannot run the model"):
        infer(str(path), list_reader(feeds), QuantConfig())
    assert not (tmp_path / "o.onnx").exists()


def test_input_shapes_contradicting_the_data_are_refused_naming_flag_file_and_input(tmp_path):
    model = builders.conv_bn_relu_model()  # x [1, 3, 8, 8]
    path, data = tmp_path / "m.onnx", tmp_path / "data"
    onnx.save(model, str(path))
    data.mkdir()
    for i in range(2):
        np.save(data / f"{i}.npy", builders.random_feeds(model, seed=i)["x"])
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", path, "-d", data, "-is", 1, 3, 16, 16,
                        "--save-dir", tmp_path / "out")
    assert_bad_input(code, err, "0.npy", "-is/--input-shapes", "'x'", "[1, 3, 16, 16]", "[1, 3, 8, 8]")
    assert not list((tmp_path / "out").glob("**/*.onnx"))
    code, out, err = ptqc("--chip", "TX510x", "quant", "-m", path, "-d", data, "-is", 1, 3, 8, 8,
                          "--save-dir", tmp_path / "ok")
    assert code == 0, err


def test_a_zero_size_sample_is_refused_naming_its_file(tmp_path):
    model = builders.conv_bn_relu_model()
    path, data = tmp_path / "m.onnx", tmp_path / "data"
    onnx.save(model, str(path))
    data.mkdir()
    np.save(data / "a.npy", builders.random_feeds(model, seed=0)["x"])
    np.save(data / "b.npy", np.zeros((0, 3, 8, 8), np.float32))
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", path, "-d", data, "--save-dir", tmp_path / "out")
    assert_bad_input(code, err, "b.npy", "'x'", "holds no data", "[0, 3, 8, 8]")
    assert not list((tmp_path / "out").glob("**/*.onnx"))


def test_an_infer_function_that_never_calls_forward_is_named(tmp_path):
    model = builders.conv_bn_relu_model()
    path, script = tmp_path / "m.onnx", tmp_path / "lazy.py"
    onnx.save(model, str(path))
    script.write_text("from ptqc import onnx_infer_func\n\n\n@onnx_infer_func.register('lazy')\n"
                      "def lazy(executor):\n    return 1.0\n")
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", path, "-uds", script, "-if", "lazy",
                        "--save-dir", tmp_path / "out")
    assert_bad_input(code, err, "'lazy'", "never called executor.forward")
