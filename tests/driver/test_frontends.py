"""-f: a model from another framework goes through conversion, the float check against its own
framework, quantization, onnxruntime and the chip's simulator; what is not built says so."""
import numpy as np
import onnx
import pytest

from checks import assert_bad_input, ort_outputs, ptqc


def _paddle_digits(tmp_path, digits):
    """A small CNN built and trained in PaddlePaddle on the digits (BatchNorm in eval mode),
    saved as an inference model; returns (program file, params file, the Layer)."""
    paddle = pytest.importorskip("paddle")
    pytest.importorskip("paddle2onnx")

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = paddle.nn.Conv2D(1, 8, 3, padding=1), paddle.nn.BatchNorm2D(8)
            self.conv2 = paddle.nn.Conv2D(8, 16, 3, padding=1)
            self.fc = paddle.nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            x = paddle.nn.functional.max_pool2d(paddle.nn.functional.relu(self.bn1(self.conv1(x))), 2)
            return self.fc(paddle.flatten(paddle.nn.functional.relu(self.conv2(x)), 1))

    paddle.seed(0)
    net = Net()
    opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=net.parameters())
    x, y = paddle.to_tensor(np.ascontiguousarray(digits.x_train)), paddle.to_tensor(digits.y_train)
    for epoch in range(3):
        for i in range(0, len(digits.x_train), 64):
            loss = paddle.nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            opt.step()
            opt.clear_grad()
    net.eval()
    prefix = tmp_path / "paddle" / "digits"
    paddle.jit.save(net, str(prefix), input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")])
    program = next(p for p in prefix.parent.iterdir() if p.suffix in (".json", ".pdmodel"))
    return program, prefix.with_suffix(".pdiparams"), net


def test_a_paddle_model_is_converted_checked_quantized_and_simulated(tmp_path, digits):
    program, params, net = _paddle_digits(tmp_path, digits)
    import paddle

    data = tmp_path / "data"
    data.mkdir()
    for i in range(8):
        np.save(data / f"s{i}.npy", np.ascontiguousarray(digits.x_train[i * 4:i * 4 + 4]))
    out = tmp_path / "out"
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-f", "paddle", "-m", program, "-w", params, "-d", data,
                             "--save-dir", out)
    assert code == 0, err
    assert "outputs checked against paddle" in stdout
    converted = out / f"{program.stem}.onnx"
    x = np.ascontiguousarray(digits.x_test)
    (want,) = ort_outputs(onnx.load(str(converted)), {"x": x})
    source = net(paddle.to_tensor(x)).numpy()
    assert np.max(np.abs(want - source)) <= 1e-4 * np.max(np.abs(source))
    quantized = out / f"{program.stem}_quantize.onnx"
    (got,) = ort_outputs(onnx.load(str(quantized)), {"x": x})
    float_acc = np.mean(np.argmax(source, 1) == digits.y_test)
    assert float_acc > 0.8 and np.mean(np.argmax(got, 1) == digits.y_test) >= float_acc - 0.03
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-r", "infer", "-m", quantized, "-d", data,
                             "--save-dir", out)
    assert code == 0, err


def test_frameworks_not_built_and_a_weight_file_for_onnx_are_refused_by_name(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    code, _, err = ptqc("quant", "-f", "pytorch", "-m", "resnet18", "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "-f/--framework pytorch: not built yet")
    code, _, err = ptqc("quant", "-m", model, "-w", tmp_path / "w.pth", "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "-w/--weight: applies only to -f")


def test_a_paddle_program_without_its_params_is_refused_naming_the_file(tmp_path):
    pytest.importorskip("paddle")
    pytest.importorskip("paddle2onnx")
    program = tmp_path / "net.json"
    program.write_text("{}")
    code, _, err = ptqc("quant", "-f", "paddle", "-m", program, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, f"-w/--weight {tmp_path / 'net.pdiparams'}: no such file")
