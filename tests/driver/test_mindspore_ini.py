"""MindSpore Lite PTQ INI (--config_file) and its debug reports (debug_info_save_path)."""
import csv
import re

import numpy as np
import pytest

import models
from checks import assert_bad_input, ptqc
from ptqc.driver.config import QuantConfig, with_ini
from ptqc.driver.mindspore_ini import load_ini
from ptqc.driver.quantize import quantize
from ptqc.errors import ConfigError

FULL = """[common_quant_param]
quant_type=FULL_QUANT
bit_num=8
skip_quant_node=conv2, fc
debug_info_save_path={debug}

[data_preprocess_param]
calibrate_path=input:{data}
calibrate_size=6
input_type=IMAGE
image_to_format=BGR
normalize_mean=[127.5, 127.5, 127.5]
normalize_std=[127.5, 127.5, 127.5]
resize_width=32
resize_height=24
resize_method=NEAREST
center_crop_width=16
center_crop_height=16

[full_quant_param]
activation_quant_method=KL
per_channel=false
bias_correction=true
"""


def _digits_files(tmp_path, digits):
    """The digits CNN as a file, and a -d folder of one 64-image batch of its test set."""
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "x.npy", np.ascontiguousarray(digits.x_test[:64]))
    return model, data


def _ini(tmp_path, text):
    path = tmp_path / "q.ini"
    path.write_text(text)
    return path


def test_documented_keys_map_to_the_config(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    values = load_ini(_ini(tmp_path, FULL.format(debug=tmp_path / "dbg", data=images)))
    assert values == {"bit_width": 8, "skip_quant_nodes": ("conv2", "fc"), "debug_info_save_path": tmp_path / "dbg",
                      "data": images, "calibrate_size": 6, "iteration": (6,), "image_format": "BGR",
                      "image_mean": (127.5,) * 3, "image_std": (127.5,) * 3, "resize": (32, 24),
                      "resize_method": "NEAREST", "center_crop": (16, 16), "quant_mode": ("kl",), "per_channel": False,
                      "bias_correction": True}
    cfg = with_ini(QuantConfig(config_file=tmp_path / "q.ini", bit_width=16, explicit=frozenset({"bit_width"})))
    assert cfg.bit_width == 16 and cfg.quant_mode == ("kl",)  # an explicit flag wins over the file


@pytest.mark.parametrize("text, needle", [
    ("[common_quant_param]\nquant_type=INT_QUANT\n", "quant_type=INT_QUANT: use WEIGHT_QUANT, FULL_QUANT or"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=0\n[mixed_bit_weight_quant_param]\nauto_tune=yes\n",
     "[mixed_bit_weight_quant_param] auto_tune=yes: use true or false"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\n[mixed_bit_weight_quant_param]\ninit_scale=0.02\n",
     "[mixed_bit_weight_quant_param] applies to bit_num=0"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=0\n[mixed_bit_weight_quant_param]\ninit_scale=1.5\n",
     "init_scale=1.5: outside"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=17\n", "bit_num=17: WEIGHT_QUANT takes 0"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\nmin_quant_weight_size=70000\n",
     "min_quant_weight_size=70000: outside [0, 65535]"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=4\nenable_encode=false\n",
     "enable_encode=false: only with bit_num 8 or 16"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\n[weight_quant_param]\ndequant_strategy=OFFLINE\n",
     "dequant_strategy=OFFLINE: use ON_THE_FLY"),
    ("[common_quant_param]\nquant_type=WEIGHT_QUANT\n[full_quant_param]\nper_channel=true\n",
     "[full_quant_param] does not apply to quant_type=WEIGHT_QUANT"),
    ("[common_quant_param]\nquant_type=DYNAMIC_QUANT\n[weight_quant_param]\nper_channel=true\n",
     "[weight_quant_param] applies to quant_type=WEIGHT_QUANT only"),
    ("[common_quant_param]\nquant_type=DYNAMIC_QUANT\n[dynamic_quant_param]\nquant_strategy=ACWL\n",
     "[dynamic_quant_param] quant_strategy=ACWL: not built yet"),
    ("[common_quant_param]\nquant_type=DYNAMIC_QUANT\nbit_num=16\n", "bit_num=16: DYNAMIC_QUANT is 8-bit"),
    ("[common_quant_param]\nquant_type=DYNAMIC_QUANT\n[full_quant_param]\nper_channel=true\n",
     "[full_quant_param] applies to quant_type=FULL_QUANT"),
    ("[common_quant_param]\nquant_type=FULL_QUANT\n[dynamic_quant_param]\nquant_strategy=ALWC\n",
     "[dynamic_quant_param] applies to quant_type=DYNAMIC_QUANT only"),
    ("[common_quant_param]\nquant_type=FULL_QUANT\nenable_encode=true\n", "[common_quant_param] enable_encode"),
    ("[common_quant_param]\nquant_type=FULL_QUANT\n[mixed_bit_weight_quant_param]\ninit_scale=0.02\n",
     "[mixed_bit_weight_quant_param] applies to quant_type=WEIGHT_QUANT only"),
    ("[common_quant_param]\nquant_type=FULL_QUANT\n[full_quant_param]\nbias_correction=yes\n",
     "bias_correction=yes: use true or false"),
    ("[common_quant_param]\nquant_type=FULL_QUANT\n[full_quant_param]\nactivation_quant_method=MSE\n",
     "activation_quant_method=MSE"),
    ("[common_quant_param]\nbit_num=8\n", "quant_type is required"),
    ("not an ini", "not a valid INI"),
])
def test_unsupported_or_bad_keys_are_refused_by_name(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_ini(_ini(tmp_path, text))


def test_debug_reports_on_ppocr_cls(tmp_path, ppocr):
    data = tmp_path / "data"
    data.mkdir()
    for s in range(3):
        np.save(data / f"s{s}.npy", models.ppocr_sample_inputs("cls", seed=s)["x"][0])
    ini = _ini(tmp_path, f"""[common_quant_param]
quant_type=FULL_QUANT
debug_info_save_path={tmp_path / 'debug'}
[data_preprocess_param]
calibrate_path=x:{data}
calibrate_size=3
[full_quant_param]
activation_quant_method=MAX_MIN
bias_correction=false
""")
    report = quantize(ppocr["cls"], tmp_path / "cls_quantize.onnx", config=QuantConfig(config_file=ini))
    debug = tmp_path / "debug"
    summary = list(csv.DictReader(open(debug / "output_summary.csv")))
    assert [r["Round"] for r in summary] == ["1", "2", "3"]
    assert all(float(r["CosineSimilarity"]) > 0.9 for r in summary)
    rows = list(csv.DictReader(open(debug / "round_1.csv")))
    assert {r["DataTypeFlag"] for r in rows} == {"Origin", "Dequant"} and len(rows) >= 100
    first = rows[1]
    assert float(first["Min"]) <= float(first["Q1"]) <= float(first["Median"]) <= float(first["Q3"]) <= float(first["MAX"])
    params = list(csv.DictReader(open(debug / "quant_param.csv")))
    assert any(";" in p["Scale"] for p in params)  # per-channel weights
    assert report.cosine


def test_config_file_from_the_command_line(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        np.save(data / f"s{i}.npy", digits.x_train[i])
    ini = _ini(tmp_path, f"[common_quant_param]\nquant_type=FULL_QUANT\nskip_quant_node=fc\n"
                         f"[data_preprocess_param]\ncalibrate_path=input:{data}\ncalibrate_size=4\n")
    code, out, err = ptqc("quant", "-m", model, "--config_file", ini, "--save-dir", tmp_path / "o")
    assert code == 0, err
    assert "left in float: Gemm x1" in out
    bad = _ini(tmp_path, "[common_quant_param]\nquant_type=FULL_QUANT\ntarget=x\n")
    code, _, err = ptqc("quant", "-m", model, "--config_file", bad, "--save-dir", tmp_path / "p")
    assert_bad_input(code, err, "--config_file", "[common_quant_param] target")


def test_dynamic_quant_alwc_from_the_command_line(tmp_path, digits):
    """DYNAMIC_QUANT ALWC: the digits CNN's Conv and Gemm become integer ops on run-time
    quantized inputs, weights per channel; the top-1 answers stay; flags it would not honour
    and a TX5xxx chip are refused by name."""
    import onnx

    from checks import ort_outputs

    model, data = _digits_files(tmp_path, digits)
    ini = _ini(tmp_path, "[common_quant_param]\nquant_type=DYNAMIC_QUANT\nbit_num=8\n"
                         "[dynamic_quant_param]\nquant_strategy=ALWC\n")
    code, out, err = ptqc("quant", "-m", model, "--config_file", ini, "-d", data, "-bs", "64", "--save-dir",
                          tmp_path / "o")
    assert code == 0, err
    assert "method dynamic ALWC" in out
    written = onnx.load(str(tmp_path / "o" / "digits_quantize.onnx"))
    ops = [n.op_type for n in written.graph.node]
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= set(ops) and "Conv" not in ops
    x = np.ascontiguousarray(digits.x_test)
    (want,), (got,) = ort_outputs(digits.model, {"input": x}), ort_outputs(written, {"input": x})
    assert np.mean(np.argmax(want, 1) == np.argmax(got, 1)) >= 0.98
    code, _, err = ptqc("quant", "-m", model, "--config_file", ini, "-qm", "kl", "--save-dir", tmp_path / "p")
    assert_bad_input(code, err, "-qm/--quant-mode: does not apply to quant_type=DYNAMIC_QUANT")
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", model, "--config_file", ini, "--save-dir", tmp_path / "p")
    assert_bad_input(code, err, "--chip TX510x: DYNAMIC_QUANT quantizes activations at run time")
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").glob("*.onnx"))


@pytest.mark.parametrize("bits, storage", [(8, "int8"), (4, "int4"), (12, "int16")])
def test_weight_quant_from_the_command_line(tmp_path, digits, bits, storage):
    """WEIGHT_QUANT: every Conv/Gemm weight of the digits CNN (channels above the threshold) read
    through a DequantizeLinear of bits-bit codes, activations float; the top-1 answers stay at 8
    and 12 bits; the cosine is printed; flags it would not honour and a TX5xxx chip are refused."""
    import onnx

    from checks import ort_outputs
    from ptqc.driver.config import WeightQuant

    model, data = _digits_files(tmp_path, digits)
    text = (f"[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num={bits}\nmin_quant_weight_size=0\n"
            "min_quant_weight_channel=0\n[weight_quant_param]\nper_channel=true\nbias_correction=false\n"
            "dequant_strategy=ON_THE_FLY\n")
    ini = _ini(tmp_path, text)
    assert load_ini(ini) == {"weight_quant": WeightQuant(bits, True, 0, 0)}
    code, out, err = ptqc("quant", "-m", model, "--config_file", ini, "-d", data, "-bs", "64", "--save-dir",
                          tmp_path / "o")
    assert code == 0, err
    assert f"method weight-only {bits}-bit per channel" in out and "cosine" in out.lower()
    written = onnx.load(str(tmp_path / "o" / "digits_quantize.onnx"))
    dqs = [n for n in written.graph.node if n.op_type == "DequantizeLinear"]
    codes = {t.name: t for t in written.graph.initializer}
    weights = [n for n in digits.model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(dqs) == len(weights) and all(
        onnx.helper.tensor_dtype_to_np_dtype(codes[n.input[0]].data_type).name == storage for n in dqs)
    for n in dqs:  # each weight's codes lie on the bits-bit grid
        q = onnx.numpy_helper.to_array(codes[n.input[0]]).astype(np.int64)
        assert q.min() >= -2 ** (bits - 1) and q.max() <= 2 ** (bits - 1) - 1
    x = np.ascontiguousarray(digits.x_test)
    (want,), (got,) = ort_outputs(digits.model, {"input": x}), ort_outputs(written, {"input": x})
    assert np.mean(np.argmax(want, 1) == np.argmax(got, 1)) >= (0.98 if bits >= 8 else 0.8)
    code, _, err = ptqc("quant", "-m", model, "--config_file", ini, "-qm", "kl", "--save-dir", tmp_path / "p")
    assert_bad_input(code, err, "-qm/--quant-mode: does not apply to quant_type=WEIGHT_QUANT")
    code, _, err = ptqc("--chip", "TX510x", "quant", "-m", model, "--config_file", ini, "--save-dir", tmp_path / "p")
    assert_bad_input(code, err, "--chip TX510x: WEIGHT_QUANT keeps activations float")


def test_weight_quant_bias_correction_from_the_command_line(tmp_path, digits):
    """bias_correction=true: the 4-bit digits CNN gets its layers' output means put back (biases
    changed, the output closer to the float model's than without); without data it is refused."""
    import onnx

    from checks import ort_outputs
    from ptqc.driver.config import WeightQuant

    model, data = _digits_files(tmp_path, digits)
    head = "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=4\nmin_quant_weight_channel=0\n[weight_quant_param]\n"
    x = np.ascontiguousarray(digits.x_test[64:256])
    (want,) = ort_outputs(digits.model, {"input": x})
    err = {}
    for flag in ("false", "true"):
        ini = _ini(tmp_path, head + f"bias_correction={flag}\n")
        assert load_ini(ini)["weight_quant"] == WeightQuant(4, True, 0, 0, bias_correction=flag == "true")
        code, out, stderr = ptqc("quant", "-m", model, "--config_file", ini, "-d", data, "-bs", "64", "--save-dir",
                                 tmp_path / flag)
        assert code == 0, stderr
        (got,) = ort_outputs(onnx.load(str(tmp_path / flag / "digits_quantize.onnx")), {"input": x})
        err[flag] = float(np.abs(got - want).mean())
    assert err["true"] < err["false"], err
    code, _, stderr = ptqc("quant", "-m", model, "--config_file", ini, "--save-dir", tmp_path / "none")
    assert_bad_input(code, stderr, "[weight_quant_param] bias_correction=true (--config_file")
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").glob("*.onnx"))


def test_weight_quant_skips_small_weights_and_named_nodes(tmp_path, digits):
    from ptqc.onnx_io import import_model
    from ptqc.pass_manager import PassContext
    from ptqc.passes.dequantize_weights import DequantizeWeights

    weights = {n.name: next(t for t in digits.model.graph.initializer if t.name == n.input[1])
               for n in digits.model.graph.node if n.op_type in ("Conv", "Gemm")}
    sizes = {k: int(np.prod(t.dims)) for k, t in weights.items()}
    graph = import_model(digits.model)
    ctx = PassContext()
    smallest = min(sizes.values())
    DequantizeWeights(8, min_size=smallest, min_channels=0, skip=(max(sizes, key=sizes.get),)).run(graph, ctx)
    assert set(ctx.analyses["weight_layers"]) == {k for k, v in sizes.items() if v > smallest} - {
        max(sizes, key=sizes.get)}


def test_weight_quant_mixed_bits_gives_each_weight_its_fewest_bits_within_init_scale(tmp_path, digits):
    """bit_num=0: every weight at the fewest bits whose relative rounding error is within init_scale;
    a looser bound never takes more bits; the run is evaluated like fixed bits."""
    from ptqc.driver.config import WeightQuant
    from ptqc.onnx_io import import_model
    from ptqc.pass_manager import PassContext
    from ptqc.passes.dequantize_weights import DequantizeWeights
    from ptqc.passes.upgrade_opset import UpgradeOpset

    ini = _ini(tmp_path, "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=0\nmin_quant_weight_channel=0\n"
                         "[mixed_bit_weight_quant_param]\ninit_scale=0.02\nauto_tune=false\n")
    assert load_ini(ini) == {"weight_quant": WeightQuant(0, True, 0, 0, 0.02)}
    chosen = {}
    for bound in (0.005, 0.02, 0.08):
        graph = UpgradeOpset(21).run(import_model(digits.model), PassContext()).graph
        ctx = PassContext()
        DequantizeWeights(0, min_channels=0, max_error=bound).run(graph, ctx)
        chosen[bound] = ctx.analyses["weight_layers"]
        for name, bits in chosen[bound].items():  # fewest bits within the bound: one fewer is outside it
            w = next(onnx_array(t) for t in digits.model.graph.initializer
                     if t.name in {n.input[1] for n in digits.model.graph.node if n.name == name})
            assert _relative_error(w, bits) <= bound < (_relative_error(w, bits - 1) if bits > 2 else 1.0)
    assert all(chosen[0.005][k] >= chosen[0.02][k] >= chosen[0.08][k] for k in chosen[0.02])
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    code, out, err = ptqc("quant", "-m", model, "--config_file", ini, "--save-dir", tmp_path / "o")
    assert code == 0, err
    assert "method weight-only mixed-bit (init_scale 0.02) per channel" in out


def onnx_array(t):
    import onnx

    return onnx.numpy_helper.to_array(t)


def _relative_error(w: np.ndarray, bits: int) -> float:
    """Per output channel (axis 0 for Conv, 1 for MatMul/Gemm B: the digits CNN's Gemm is transB)."""
    rows = w.reshape(len(w), -1).astype(np.float64)
    half = 2 ** (bits - 1)
    lo, hi = np.minimum(rows.min(axis=1), 0), np.maximum(rows.max(axis=1), 0)
    scale = np.where(-lo >= hi, lo, hi) / -half
    scale = np.where(scale != 0, scale, 1.0)[:, None]
    q = np.clip(np.rint(rows / scale), -half, half - 1) * scale
    return float(np.linalg.norm(q - rows) / np.linalg.norm(rows))


def test_weight_quant_auto_tune_finds_an_init_scale_that_keeps_the_output_cosine(tmp_path, digits):
    """auto_tune=true: init_scale searched on the -d data; the written model keeps every output's mean
    cosine at 0.995 or above, and the search moved off its tightest bound (fewer bits than it)."""
    import onnx

    from ptqc.driver.config import WeightQuant
    from ptqc.driver.quantize import AUTO_TUNE_COSINE

    model, data = _digits_files(tmp_path, digits)
    ini = _ini(tmp_path, "[common_quant_param]\nquant_type=WEIGHT_QUANT\nbit_num=0\nmin_quant_weight_channel=0\n"
                         "[mixed_bit_weight_quant_param]\nauto_tune=true\n")
    assert load_ini(ini) == {"weight_quant": WeightQuant(0, True, 0, 0, 0.02, True)}
    code, out, err = ptqc("quant", "-m", model, "--config_file", ini, "-d", data, "-bs", "64", "--save-dir",
                          tmp_path / "o")
    assert code == 0, err
    tuned = float(re.search(r"mixed-bit \(init_scale ([0-9.e-]+), auto-tuned\)", out).group(1))
    assert tuned > 1.01e-3
    from checks import ort_outputs

    written = onnx.load(str(tmp_path / "o" / "digits_quantize.onnx"))
    x = np.ascontiguousarray(digits.x_test[:64])
    (want,), (got,) = ort_outputs(digits.model, {"input": x}), ort_outputs(written, {"input": x})
    cos = np.sum(want * got, axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert float(np.mean(cos)) >= AUTO_TUNE_COSINE - 1e-6
