"""-f: a model from another framework goes through conversion, the float check against its own
framework, quantization, onnxruntime and the chip's simulator; what is not built says so."""
import numpy as np
import onnx
import pytest

from checks import assert_bad_input, ort_outputs, ptqc


def _calibration_folder(tmp_path, digits):
    """8 .npy files of 4 training digits each (NCHW), the -d folder of every frontend test."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(8):
        np.save(data / f"s{i}.npy", np.ascontiguousarray(digits.x_train[i * 4:i * 4 + 4]))
    return data


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

    data = _calibration_folder(tmp_path, digits)
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


TORCH_SCRIPT = """
import torch
from onnx_quantize_tool.common.register import pytorch_model


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, x, scale=True):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        y = self.fc(torch.flatten(torch.relu(self.conv2(x)), 1))
        return y * 2 if scale else y


@pytorch_model.register("digits")
def digits(weight_path=None):
    model = Net()
    if weight_path:
        model.load_state_dict(torch.load(weight_path, map_location="cpu"), strict=True)
    return {"model": model, "inputs": [torch.randn(4, 1, 8, 8)], "concrete_args": {"scale": False},
            "dynamic_axes_inputs": {"x": {0: "batch_size"}}, "dynamic_axes_outputs": {"logits": {0: "batch_size"}}}


@pytorch_model.register("broken")
def broken(weight_path=None):
    return {"model": Net()}
"""


def _torch_digits(tmp_path, digits):
    """The reference's -f pytorch script (a CNN definition registered by name) and a .pth of
    that CNN trained in torch on the digits here; returns (script, weights, the trained module)."""
    torch = pytest.importorskip("torch", reason="torch (the pytorch extra) is not installed")
    script = tmp_path / "defs.py"
    script.write_text(TORCH_SCRIPT)
    namespace = {}
    exec(compile(TORCH_SCRIPT, str(script), "exec"), namespace)
    torch.manual_seed(0)
    net = namespace["Net"]()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.from_numpy(np.array(digits.x_train)), torch.from_numpy(np.array(digits.y_train)).long()
    for epoch in range(3):
        for i in range(0, len(x), 64):
            loss = torch.nn.functional.cross_entropy(net(x[i:i + 64], scale=False), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    weights = tmp_path / "digits.pth"
    torch.save(net.state_dict(), weights)
    return script, weights, net


def test_a_pytorch_model_is_converted_checked_quantized_and_simulated(tmp_path, digits):
    script, weights, net = _torch_digits(tmp_path, digits)
    import torch

    data = _calibration_folder(tmp_path, digits)
    out = tmp_path / "out"
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-f", "pytorch", "-m", "digits", "-w", weights, "-uds", script,
                             "-d", data, "--save-dir", out)
    assert code == 0, err
    assert "outputs checked against pytorch" in stdout
    converted = onnx.load(str(out / "digits.onnx"))
    assert [i.name for i in converted.graph.input] == ["x"] and converted.graph.output[0].name == "logits"
    assert converted.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch_size"
    x = np.ascontiguousarray(digits.x_test)
    (want,) = ort_outputs(converted, {"x": x})
    with torch.no_grad():
        source = net(torch.from_numpy(x), scale=False).numpy()  # concrete_args honoured: no doubling
    assert np.max(np.abs(want - source)) <= 1e-4 * np.max(np.abs(source))
    quantized = out / "digits_quantize.onnx"
    (got,) = ort_outputs(onnx.load(str(quantized)), {"x": x})
    float_acc = np.mean(np.argmax(source, 1) == digits.y_test)
    assert float_acc > 0.8 and np.mean(np.argmax(got, 1) == digits.y_test) >= float_acc - 0.03
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-r", "infer", "-m", quantized, "-d", data,
                             "--save-dir", out)
    assert code == 0 and "simulator" in stdout, err
    code, stdout, err = ptqc("quant", "-r", "convert", "-f", "pytorch", "-m", "digits", "-uds", script,
                             "--save-dir", tmp_path / "conv")
    assert code == 0, err
    assert (tmp_path / "conv" / "digits.onnx").is_file()


def test_pytorch_bad_definitions_are_refused_by_name(tmp_path, digits):
    script, weights, _ = _torch_digits(tmp_path, digits)
    cases = [
        (["-m", "nope", "-uds", script], "-m/--model nope: not registered by defs.py (registered: broken, digits)"),
        (["-m", "broken", "-uds", script], "-m/--model broken: the model definition must return a dict with keys"),
        (["-m", "digits", "-uds", script, "-w", tmp_path / "none.pth"], f"-w/--weight {tmp_path / 'none.pth'}: "
                                                                        "no such file"),
        (["-m", "digits", "-uds", script, "-w", script], "-m/--model digits failed at "),
        (["-m", "digits"], "-m/--model digits: not registered"),
    ]
    for args, message in cases:
        out = tmp_path / "o"
        code, _, err = ptqc("quant", "-r", "convert", "-f", "pytorch", *args, "--save-dir", out)
        assert_bad_input(code, err, message)
        assert not list(out.glob("*.onnx"))


def test_a_weight_file_for_onnx_and_a_caffe_net_without_weights_are_refused_by_name(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    code, _, err = ptqc("quant", "-f", "caffe", "-m", model, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "-f caffe takes the network's .prototxt")
    net = tmp_path / "net.prototxt"
    net.write_text('name: "x"')
    code, _, err = ptqc("quant", "-f", "caffe", "-m", net, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, f"-w/--weight {tmp_path / 'net.caffemodel'}: no such file")
    code, _, err = ptqc("quant", "-m", model, "-w", tmp_path / "w.pth", "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "-w/--weight: applies only to -f")


def _caffe_digits(tmp_path, digits):
    """The digits CNN (trained in the tests) written as a Caffe net: Convolution, BatchNorm +
    Scale, ReLU, Pooling, InnerProduct; returns (prototxt, caffemodel)."""
    import importlib.util

    if importlib.util.find_spec("caffe2onnx") is None:
        pytest.skip("caffe2onnx is not installed: pip install --no-deps caffe2onnx==2.0.1")
    from google.protobuf import text_format

    from ptqc.driver.frontends import caffe_messages

    caffe = caffe_messages()
    w = {t.name: onnx.numpy_helper.to_array(t) for t in digits.model.graph.initializer}
    layers = ['layer { name: "data" type: "Input" top: "input" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }']
    blobs = {}
    bottom = "input"
    for i, (width, pool) in enumerate(((8, True), (16, False)), start=1):
        layers += [f'layer {{ name: "conv{i}" type: "Convolution" bottom: "{bottom}" top: "conv{i}" '
                   f'convolution_param {{ num_output: {width} kernel_size: 3 pad: 1 }} }}',
                   f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "conv{i}" top: "conv{i}" '
                   'batch_norm_param { use_global_stats: true eps: 1e-5 } }',
                   f'layer {{ name: "scale{i}" type: "Scale" bottom: "conv{i}" top: "conv{i}" '
                   'scale_param { bias_term: true } }',
                   f'layer {{ name: "relu{i}" type: "ReLU" bottom: "conv{i}" top: "conv{i}" }}']
        bottom = f"conv{i}"
        if pool:
            layers.append(f'layer {{ name: "pool{i}" type: "Pooling" bottom: "{bottom}" top: "pool{i}" '
                          'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }')
            bottom = f"pool{i}"
        blobs[f"conv{i}"] = [w[f"conv{i}.weight"], w[f"conv{i}.bias"]]
        blobs[f"bn{i}"] = [w[f"bn{i}.running_mean"], w[f"bn{i}.running_var"], np.ones(1, np.float32)]
        blobs[f"scale{i}"] = [w[f"bn{i}.weight"], w[f"bn{i}.bias"]]
    layers.append(f'layer {{ name: "fc" type: "InnerProduct" bottom: "{bottom}" top: "logits" '
                  'inner_product_param { num_output: 10 } }')
    blobs["fc"] = [w["fc.weight"], w["fc.bias"]]
    prototxt = tmp_path / "caffe" / "digits.prototxt"
    prototxt.parent.mkdir()
    prototxt.write_text('name: "digits"\n' + "\n".join(layers) + "\n")
    net = caffe.NetParameter()
    text_format.Merge(prototxt.read_text(), net)
    for layer in net.layer:
        for a in blobs.get(layer.name, []):
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(np.asarray(a, np.float32).ravel().tolist())
    weights = prototxt.with_suffix(".caffemodel")
    weights.write_bytes(net.SerializeToString())
    return prototxt, weights


def test_a_caffe_model_is_converted_quantized_and_simulated(tmp_path, digits):
    """The digits CNN's trained weights as a .prototxt + .caffemodel: -f caffe converts it
    (run by onnxruntime; no Caffe runtime exists to compare with, so the test compares with the
    same weights in the ONNX digits model, within 1e-4), quantizes it within 3 points of the
    float accuracy, and the chip's simulator runs it; the same files give the same model."""
    prototxt, weights = _caffe_digits(tmp_path, digits)
    data = _calibration_folder(tmp_path, digits)
    out = tmp_path / "out"
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-f", "caffe", "-m", prototxt, "-w", weights, "-d", data,
                             "--save-dir", out)
    assert code == 0, err
    assert "no Caffe runtime here to compare its outputs with" in stdout
    converted = onnx.load(str(out / "digits.onnx"))
    x = np.ascontiguousarray(digits.x_test)
    name = converted.graph.input[0].name

    def run(model, feed):  # a Caffe Input has a fixed batch of 1
        return np.concatenate([ort_outputs(model, {feed: x[i:i + 1]})[0] for i in range(len(x))])
    got, want = run(converted, name), run(digits.model, "input")
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))
    quant = run(onnx.load(str(out / "digits_quantize.onnx")), name)
    float_acc = np.mean(np.argmax(want, 1) == digits.y_test)
    assert float_acc > 0.8 and np.mean(np.argmax(quant, 1) == digits.y_test) >= float_acc - 0.03
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-r", "infer", "-m", out / "digits_quantize.onnx", "-d", data,
                             "--save-dir", out)
    assert code == 0 and "simulator" in stdout, err
    code, _, err = ptqc("quant", "-r", "convert", "-f", "caffe", "-m", prototxt, "--save-dir", tmp_path / "again")
    assert code == 0, err
    assert (tmp_path / "again" / "digits.onnx").read_bytes() == (out / "digits.onnx").read_bytes()


def test_a_paddle_program_without_its_params_is_refused_naming_the_file(tmp_path):
    pytest.importorskip("paddle")
    pytest.importorskip("paddle2onnx")
    program = tmp_path / "net.json"
    program.write_text("{}")
    code, _, err = ptqc("quant", "-f", "paddle", "-m", program, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, f"-w/--weight {tmp_path / 'net.pdiparams'}: no such file")


def _tf_digits(tmp_path, digits):
    """A small CNN built and trained in TensorFlow on the digits (NHWC), saved as a SavedModel
    and as a frozen GraphDef .pb; returns (SavedModel folder, .pb file, its signature function)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow", reason="tensorflow (the tensorflow extra) is not installed")
    pytest.importorskip("tf2onnx", reason="tf2onnx (the tensorflow extra) is not installed")
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1 = tf.Variable(rng.standard_normal((3, 3, 1, 8)).astype(np.float32) * 0.3)
            self.b1 = tf.Variable(np.zeros(8, np.float32))
            self.w2 = tf.Variable(rng.standard_normal((4 * 4 * 8, 10)).astype(np.float32) * 0.1)
            self.b2 = tf.Variable(np.zeros(10, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="x")])
        def __call__(self, x):
            h = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME") + self.b1), 2, 2, "VALID")
            return {"logits": tf.matmul(tf.reshape(h, [-1, 4 * 4 * 8]), self.w2) + self.b2}

    net = Net()
    opt = tf.keras.optimizers.Adam(0.01)
    x = np.ascontiguousarray(digits.x_train.transpose(0, 2, 3, 1))
    for epoch in range(4):
        for i in range(0, len(x), 64):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    digits.y_train[i:i + 64].astype(np.int64), net(x[i:i + 64])["logits"]))
            opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
    saved = tmp_path / "tf_digits"
    tf.saved_model.save(net, str(saved), signatures={"serving_default": net.__call__})
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())
    pb = tmp_path / "tf_digits_frozen.pb"
    pb.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    out_name = frozen.outputs[0].name
    return saved, pb, net, out_name


def test_a_tensorflow_model_is_converted_checked_quantized_and_simulated(tmp_path, digits):
    saved, pb, net, out_name = _tf_digits(tmp_path, digits)
    data = _calibration_folder(tmp_path, digits)  # -c2chw: the converted model takes NCHW, so the data is NCHW
    out = tmp_path / "out"
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-f", "tensorflow", "-m", saved, "-c2chw", "-d", data,
                             "--save-dir", out)
    assert code == 0, err
    assert "outputs checked against tensorflow" in stdout
    converted = onnx.load(str(out / "tf_digits.onnx"))
    x = np.ascontiguousarray(digits.x_test)
    (want,) = ort_outputs(converted, {converted.graph.input[0].name: x})
    source = net(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))["logits"].numpy()
    assert np.max(np.abs(want - source)) <= 1e-4 * np.max(np.abs(source))
    quantized = onnx.load(str(out / "tf_digits_quantize.onnx"))
    (got,) = ort_outputs(quantized, {quantized.graph.input[0].name: x})
    float_acc = np.mean(np.argmax(source, 1) == digits.y_test)
    assert float_acc > 0.8 and np.mean(np.argmax(got, 1) == digits.y_test) >= float_acc - 0.03
    code, stdout, err = ptqc("-ch", "TX510x", "quant", "-r", "infer", "-m", out / "tf_digits_quantize.onnx", "-d",
                             data, "--save-dir", out)
    assert code == 0 and "simulator" in stdout, err
    # the frozen GraphDef: -snn/-enn name its tensors; NHWC data this time
    nhwc = tmp_path / "nhwc"
    nhwc.mkdir()
    np.save(nhwc / "s0.npy", np.ascontiguousarray(digits.x_train[:4].transpose(0, 2, 3, 1)))
    code, stdout, err = ptqc("quant", "-f", "tensorflow", "-m", pb, "-snn", "x", "-enn", out_name, "-d", nhwc,
                             "--save-dir", tmp_path / "out_pb")
    assert code == 0, err
    assert (tmp_path / "out_pb" / "tf_digits_frozen_quantize.onnx").is_file()
    code, _, err = ptqc("quant", "-f", "tensorflow", "-m", pb, "--save-dir", tmp_path / "o")
    assert_bad_input(code, err, "-snn/--start-node-names and -enn/--end-node-names: a frozen GraphDef")
