"""ptqc.llm.quantize: the Ascend config dict, read exactly (every bad key or value a ConfigError
naming it), the data read for batch_num batches only, the model written atomically and run
by onnxruntime, a torch.nn.Module exported first."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import ort_outputs
from ptqc import llm
from ptqc.driver.llm_config import LlmConfig, parse
from ptqc.errors import ConfigError

W4 = {"type": "int4", "symmetric": False, "strategy": "group", "group_size": 32}
W8 = {"type": "int8", "symmetric": True, "strategy": "channel"}


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    return builders.make_model(nodes, [("x", np.float32, ["n", 96])], [("y", np.float32, None)],
                               {"w1": rng.normal(0, 0.1, (96, 128)).astype(np.float32),
                                "w2": rng.normal(0, 0.1, (128, 64)).astype(np.float32)}, opset=17)


def _feeds(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(8, 96)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("config,message", [
    ({"quant_cfg": {"weights": {**W4, "group_size": 48}}},
     "quant_cfg.weights.group_size 48: must be a multiple of 32 in [32, K-1]"),
    ({"quant_cfg": {"weights": {**W4, "bits": 4}}}, "quant_cfg.weights.bits: unknown key"),
    ({"quant_cfg": {"weights": {**W4, "type": "int2"}}}, "quant_cfg.weights.type 'int2': expected int4 or int8"),
    ({"quant_cfg": {"weights": {**W4, "strategy": "row"}}},
     "quant_cfg.weights.strategy 'row': expected tensor, channel or group"),
    ({"quant_cfg": {"weights": {"type": "int4", "strategy": "channel", "group_size": 64}}},
     "quant_cfg.weights.group_size: only with strategy group (strategy is channel)"),
    ({"quant_cfg": {"weights": {"type": "int4", "strategy": "group"}}}, "quant_cfg.weights.group_size: required"),
    ({"quant_cfg": {"weights": {**W4, "symmetric": "yes"}}}, "quant_cfg.weights.symmetric 'yes': expected True"),
    ({"quant_cfg": {}}, "quant_cfg.weights: missing"),
    ({"quant_cfg": {"weights": W4}, "batch_num": 0}, "batch_num 0: expected an integer >= 1"),
    ({"quant_cfg": {"weights": W4}, "algorithm": "rtn"}, "algorithm 'rtn': unknown"),
    ({"quant_cfg": {"weights": W4}, "algorithm": {"awq": {"grids_num": 0}}},
     "algorithm.awq.grids_num 0: expected an integer >= 1"),
    ({"quant_cfg": {"weights": W4}, "algorithm": {"awq": {"grid": 4}}}, "algorithm.awq.grid: unknown key"),
    ({"quant_cfg": {"weights": W4}, "algorithm": {"awq", "gptq"}}, "(one algorithm)"),
    ({"quant_cfg": {"weights": W4}, "skip": ["x"]}, "skip: unknown key"),
    ({"quant_cfg": {"weights": W4}, "skip_layers": [3]}, "skip_layers [3]: expected a layer-name substring"),
    ({"quant_cfg": {"weights": W4, "inputs": {"type": "int8", "strategy": "token"}}},
     "quant_cfg.inputs with quant_cfg.weights type int4, strategy group: not built yet (W8A8: weights int8"),
    ({"quant_cfg": {"weights": W8, "inputs": {"strategy": "token", "symmetric": False}}},
     "quant_cfg.inputs.symmetric False with strategy token: not built yet"),
    ({"quant_cfg": {"weights": W8, "inputs": {"strategy": "row"}}}, "quant_cfg.inputs.strategy 'row': expected"),
    ({"quant_cfg": {"weights": {**W8, "symmetric": False}, "inputs": {}}},
     "quant_cfg.weights.symmetric False with quant_cfg.inputs: not built yet"),
    ({"quant_cfg": {"weights": W8, "inputs": {}}, "algorithm": "gptq"},
     "algorithm gptq with quant_cfg.inputs: gptq is weight-only here"),
    ({"quant_cfg": {"weights": W8, "inputs": {}}, "algorithm": {"smoothquant": {"smooth_strength": 2}}},
     "algorithm.smoothquant.smooth_strength 2: expected a value in [0, 1]"),
    ({"quant_cfg": {"weights": W4, "inputs": {"type": "int4"}}}, "quant_cfg.inputs.type 'int4': expected int8"),
    ({"quant_cfg": {"weights": W4}, "algorithm": {"smoothquant": {"smooth_strength": 0.5}}},
     "algorithm smoothquant: migrates activation outliers for W8A8; give quant_cfg.inputs"),
])
def test_every_bad_key_or_value_is_named(config, message):
    with pytest.raises(ConfigError) as e:
        parse(config)
    assert message in str(e.value)


def test_the_documented_forms_read_as_written():
    assert parse({"batch_num": 1, "quant_cfg": {"weights": {"type": "int8", "symmetric": True, "strategy": "tensor"}},
                  "algorithm": {"minmax"}}) == LlmConfig(1, 8, True, "tensor", None, "minmax", 20, ())
    assert parse({"quant_cfg": {"weights": W4}, "algorithm": {"awq": {"grids_num": 10}}, "skip_layers": "head"}) \
        == LlmConfig(1, 4, False, "group", 32, "awq", 10, ("head",))
    assert parse({"quant_cfg": {"weights": {"type": "int4"}}, "algorithm": "gptq"}).strategy == "channel"
    assert parse({"quant_cfg": {"weights": W8, "inputs": {"type": "int8", "strategy": "token"}},
                  "algorithm": {"smoothquant": {"smooth_strength": 0.8}}}) == LlmConfig(
        1, 8, True, "channel", None, "smoothquant", 20, (), "token", True, 0.8)


@pytest.mark.parametrize("inputs", ["tensor", "token"])
def test_w8a8_with_smoothquant_runs_in_onnxruntime(inputs):
    cfg = {"batch_num": 4, "quant_cfg": {"weights": W8, "inputs": {"type": "int8", "strategy": inputs}},
           "algorithm": {"smoothquant": {"smooth_strength": 0.5}}}
    model = llm.quantize(_model(), cfg, _feeds(6))
    ops = [n.op_type for n in model.graph.node]
    assert ("MatMulInteger" in ops) == (inputs == "token") and ("QuantizeLinear" in ops) == (inputs == "tensor")
    f = _feeds(1, seed=5)[0]
    want, got = ort_outputs(_model(), f)[0], ort_outputs(model, f)[0]
    assert float(np.dot(want.ravel(), got.ravel()) / np.linalg.norm(want) / np.linalg.norm(got)) > 0.999


def test_quantize_reads_batch_num_batches_writes_atomically_and_onnxruntime_runs_it(tmp_path):
    read = []

    class Reader:  # an onnxruntime CalibrationDataReader
        def __init__(self):
            self.it = iter(_feeds(10))

        def get_next(self):
            f = next(self.it, None)
            read.append(f is not None)
            return f

    out = tmp_path / "q.onnx"
    model = llm.quantize(_model(), {"batch_num": 3, "quant_cfg": {"weights": W4}, "algorithm": "gptq"}, Reader(), out)
    assert sum(read) == 3
    assert onnx.load(out) == model and [p.name for p in tmp_path.iterdir()] == ["q.onnx"]
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits", "Relu", "MatMulNBits"]
    assert model.ByteSize() < 0.3 * _model().ByteSize()
    f = _feeds(1, seed=5)[0]
    want, got = ort_outputs(_model(), f)[0], ort_outputs(model, f)[0]
    assert float(np.dot(want.ravel(), got.ravel()) / np.linalg.norm(want) / np.linalg.norm(got)) > 0.99


def test_a_bad_config_writes_nothing(tmp_path):
    with pytest.raises(ConfigError):
        llm.quantize(_model(), {"quant_cfg": {"weights": {**W4, "group_size": 48}}}, None, tmp_path / "q.onnx")
    with pytest.raises(ConfigError, match="group_size 128: layer 'fc1' has K=96"):
        llm.quantize(_model(), {"quant_cfg": {"weights": {**W4, "group_size": 128}}}, None, tmp_path / "q.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_is_neither_onnx_nor_torch_is_refused():
    with pytest.raises(ConfigError, match="model: "):
        llm.quantize(object(), {"quant_cfg": {"weights": W4}}, _feeds(1))


def test_a_torch_module_is_exported_and_quantized():
    torch = pytest.importorskip("torch", reason="torch (an optional extra) is not installed")

    net = torch.nn.Sequential(torch.nn.Linear(96, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    model = llm.quantize(net, {"quant_cfg": {"weights": W4}, "algorithm": "awq"}, _feeds(4))
    assert [n.op_type for n in model.graph.node].count("MatMulNBits") == 2
    x = _feeds(1, seed=5)[0]
    want = net(torch.from_numpy(x["x"])).detach().numpy()
    got = ort_outputs(model, x)[0]
    assert float(np.dot(want.ravel(), got.ravel()) / np.linalg.norm(want) / np.linalg.norm(got)) > 0.99
