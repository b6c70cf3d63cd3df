"""``ptqc quant`` (-r quant) from the command line: what it writes, and every bad input it
must refuse with exit 2, one ``ptqc: error:`` line naming the file, tensor, flag or rule at
fault, no traceback, and no ``<model>_quantize.onnx`` / ``<model>_scale.json`` left behind."""
import json
import re
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from checks import assert_bad_input, ort_outputs, ptqc

# ------------------------------------------------------------------------------ helpers


def quant(save_dir, *args, chip=None):
    """``ptqc [--chip chip] quant <args> --save-dir save_dir``."""
    return ptqc(*(("--chip", chip) if chip else ()), "quant", *args, "--save-dir", save_dir)


def assert_nothing_written(save_dir):
    assert not list(save_dir.glob("*_quantize.onnx")), sorted(p.name for p in save_dir.iterdir())
    assert not list(save_dir.glob("*_scale.json")), sorted(p.name for p in save_dir.iterdir())
    assert not list(save_dir.glob(".*")), "temporary files left behind"


def assert_refused(result, save_dir, *needles):
    code, _, err = result
    assert_bad_input(code, err, *needles)
    assert_nothing_written(save_dir)


def assert_ok(result):
    code, out, err = result
    assert code == 0, err
    assert "Traceback" not in err
    return out


def npy_folder(folder, *arrays, name="sample"):
    folder.mkdir(parents=True)
    for i, a in enumerate(arrays):
        np.save(folder / f"{name}_{i:02d}.npy", a)
    return folder


def metric_of(out, pattern):
    match = re.search(pattern, out)
    assert match, out
    return float(match.group(1))


def qdq_params(model, tensor):
    """(scale, zero point) of the QuantizeLinear producing ``tensor`` or the DequantizeLinear
    reading it."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if (n.op_type == "QuantizeLinear" and n.output[0] == tensor) or \
                (n.op_type == "DequantizeLinear" and n.input[0] == tensor):
            return inits[n.input[1]], inits[n.input[2]]
    raise AssertionError(f"no Q/DQ node at {tensor!r}")


def dequantized_logits(model, feeds):
    (y,) = ort_outputs(model, feeds)
    if y.dtype.kind in "iu":
        scale, zp = qdq_params(model, "logits")
        y = (y.astype(np.float32) - zp.astype(np.float32)) * scale
    return y


def argmax_agreement(a, b):
    return float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))


# A user script; ROOT is replaced by the workspace folder.  The line marked "# BOOM" raises.
SCRIPT = '''\
import numpy as np

from ptqc import onnx_infer_func

X = np.load(r"ROOT/x.npy")
Y = np.load(r"ROOT/y.npy")
CALLS = []


@onnx_infer_func.register("accuracy")
def accuracy(executor):
    outputs = executor.forward(X)
    return float(np.mean(np.argmax(outputs[0], 1) == Y))


@onnx_infer_func.register("mean_logit")
def mean_logit(executor):
    outputs = executor.forward(X)
    return float(np.mean(outputs[0]))


@onnx_infer_func.register("boom")
def boom(executor):
    executor.forward(X[:1])
    return 1 / 0  # BOOM


@onnx_infer_func.register("two_arrays")
def two_arrays(executor):
    executor.forward(X[:1], X[:1])  # TWO
    return 1.0


@onnx_infer_func.register("fails_on_second_run")
def fails_on_second_run(executor):
    CALLS.append(1)
    if len(CALLS) > 1:
        raise RuntimeError("second run refused")  # SECOND
    executor.forward(X)
    return 1.0
'''


def line_of(marker):
    return next(i for i, ln in enumerate(SCRIPT.splitlines(), 1) if ln.endswith(marker))


@pytest.fixture(scope="module")
def ws(digits, tmp_path_factory):
    """The digits model, a -d folder of four training samples, the user script and its data."""
    root = tmp_path_factory.mktemp("quant")
    model = root / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data = npy_folder(root / "data", *(digits.x_train[i:i + 1] for i in range(4)))
    np.save(root / "x.npy", np.ascontiguousarray(digits.x_test[:32]))
    np.save(root / "y.npy", np.ascontiguousarray(digits.y_test[:32]))
    script = root / "s.py"
    script.write_text(SCRIPT.replace("ROOT", str(root)))
    return SimpleNamespace(root=root, model=model, data=data, script=script, digits=digits)


@pytest.fixture(scope="module")
def plain(ws):
    """A plain ``-d`` run: its save dir and output."""
    save = ws.root / "plain"
    out = assert_ok(quant(save, "-m", ws.model, "-d", ws.data))
    return SimpleNamespace(save=save, out=out, model=save / "digits_quantize.onnx")


@pytest.fixture(scope="module")
def gsj(ws):
    """A ``-d -gsj`` run: its save dir, quantized model and scale JSON."""
    save = ws.root / "gsj"
    assert_ok(quant(save, "-m", ws.model, "-d", ws.data, "-gsj"))
    return SimpleNamespace(save=save, model=save / "digits_quantize.onnx", json=save / "digits_scale.json")


@pytest.fixture(scope="module")
def uds(ws):
    """A ``-uds s.py -if accuracy`` run (no -d): its output and model."""
    save = ws.root / "uds"
    out = assert_ok(quant(save, "-m", ws.model, "-uds", ws.script, "-if", "accuracy", "-qm", "min_max"))
    return SimpleNamespace(save=save, out=out, model=save / "digits_quantize.onnx")


# ------------------------------------------------------------------------------ good runs


def test_plain_data_run_writes_a_checked_model_with_integer_outputs(ws, plain):
    assert "logits" in plain.out
    model = onnx.load(str(plain.model))
    onnx.checker.check_model(model)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    x = ws.digits.x_test[:64]
    (raw,) = ort_outputs(model, {"input": x})
    assert raw.dtype.kind in "iu", raw.dtype  # no -od: logits stay quantized
    (ref,) = ort_outputs(ws.digits.model, {"input": x})
    assert argmax_agreement(ref, dequantized_logits(model, {"input": x})) >= 0.95
    assert sorted(p.name for p in plain.save.iterdir()) == ["digits_quantize.onnx"]


def test_uds_run_prints_a_cosine_line_and_both_metrics(uds):
    cos = metric_of(uds.out, r"\n\s*logits\s+([0-9.]+)\s+[0-9.]+")
    assert 0.99 <= cos <= 1.0, uds.out
    assert metric_of(uds.out, r"metric: float ([0-9.]+)") >= 0.8
    assert metric_of(uds.out, r"quantized ([0-9.]+)") >= 0.8


def test_loading_the_generated_scale_json_reproduces_the_model_byte_for_byte(ws, gsj, tmp_path):
    table = json.loads(gsj.json.read_text())
    assert "input" in table["tensors"] and "relu1_out" in table["tensors"]
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "-lsj", gsj.json))
    assert (tmp_path / "digits_quantize.onnx").read_bytes() == gsj.model.read_bytes()
    assert not list(tmp_path.glob("*_scale.json"))


def test_output_dequant_gives_float_outputs(ws, tmp_path):
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "-od"))
    model = onnx.load(str(tmp_path / "digits_quantize.onnx"))
    (y,) = ort_outputs(model, {"input": ws.digits.x_test[:8]})
    assert y.dtype == np.float32


def test_quantize_input_dtype_makes_the_input_uint8(ws, tmp_path):
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "-qid", "uint8"))
    model = onnx.load(str(tmp_path / "digits_quantize.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    scale, zp = qdq_params(model, "input")
    x = ws.digits.x_test[:64]
    xq = np.clip(np.round(x / scale) + zp.astype(np.float32), 0, 255).astype(np.uint8)
    (ref,) = ort_outputs(ws.digits.model, {"input": x})
    assert argmax_agreement(ref, dequantized_logits(model, {"input": xq})) >= 0.95


def test_mean_std_normalizes_the_raw_float_input(ws, tmp_path):
    """--mean/--std insert x * (1/std) + (-mean/std); FoldAffineIntoConv then takes the Mul into
    the first (padded) Conv's weights and leaves the shift as one Add: Add -> Conv."""
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "--mean", "0.5", "--std", "0.25", "-od"))
    model = onnx.load(str(tmp_path / "digits_quantize.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    ops = [n.op_type for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert ops[:2] == ["Add", "Conv"], ops
    x = ws.digits.x_test[:64]
    (ref,) = ort_outputs(ws.digits.model, {"input": (x - 0.5) / 0.25})
    (got,) = ort_outputs(model, {"input": x})
    cos = float(ref.ravel() @ got.ravel() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos >= 0.99


def test_output_name_crops_the_model_at_an_intermediate_tensor(ws, tmp_path):
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "-on", "relu1_out"))
    model = onnx.load(str(tmp_path / "digits_quantize.onnx"))
    assert [o.name for o in model.graph.output] == ["relu1_out"]
    (y,) = ort_outputs(model, {"input": ws.digits.x_test[:2]})
    assert y.shape == (2, 8, 8, 8)


def test_infer_on_the_quantized_model_prints_the_metric(ws, uds):
    out = assert_ok(ptqc("quant", "-r", "infer", "-m", uds.model, "-uds", ws.script, "-if", "accuracy"))
    got = metric_of(out, r"infer function 'accuracy' returned ([0-9.]+)")
    assert got == pytest.approx(metric_of(uds.out, r"quantized ([0-9.]+)"), abs=1e-5)


def test_infer_metric_on_the_quantized_model_matches_the_quant_report(ws, tmp_path):
    """The quant run reports the quantized model's metric; -r infer on that very model must
    report the same (the function must see the same logits both times)."""
    out = assert_ok(quant(tmp_path, "-m", ws.model, "-uds", ws.script, "-if", "mean_logit"))
    reported = metric_of(out, r"quantized (-?[0-9.]+)")
    out = assert_ok(ptqc("quant", "-r", "infer", "-m", tmp_path / "digits_quantize.onnx", "-uds", ws.script,
                         "-if", "mean_logit"))
    assert metric_of(out, r"returned (-?[0-9.]+)") == pytest.approx(reported, rel=1e-4, abs=1e-4)


# ------------------------------------------------------------------------------ bad inputs


def test_bad_scale_json(ws, gsj, tmp_path):
    save = tmp_path / "out"
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "ptqc-scale", "tensors": {')
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-lsj", bad), save, "-lsj", "bad.json", "JSON")

    table = json.loads(gsj.json.read_text())
    table["tensors"]["no_such_tensor"] = table["tensors"].pop("relu1_out")
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(table))
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-lsj", renamed), save,
                   "-lsj", "renamed.json", "no_such_tensor")

    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-lsj", tmp_path / "missing.json"), save,
                   "-lsj", "missing.json", "no such file")


def test_generate_and_load_scale_json_together(ws, gsj, tmp_path):
    save = tmp_path / "out"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-gsj", "-lsj", gsj.json), save, "-gsj", "-lsj")


def test_bad_user_script(ws, tmp_path):
    save = tmp_path / "out"
    assert_refused(quant(save, "-m", ws.model, "-uds", tmp_path / "nofile.py", "-if", "accuracy"), save,
                   "-uds", "nofile.py", "no such file")
    assert_refused(quant(save, "-m", ws.model, "-uds", ws.script, "-if", "nope"), save, "-if", "nope", "s.py")
    assert_refused(quant(save, "-m", ws.model, "-uds", ws.script, "-if", "boom"), save,
                   "'boom'", f"{ws.script}:{line_of('# BOOM')}", "ZeroDivisionError")


@pytest.mark.parametrize("case", ["shape", "dtype", "forward_count", "input_name"])
def test_calibration_data_that_does_not_fit_the_model(ws, tmp_path, case):
    save = tmp_path / "out"
    x = ws.digits.x_train[:1]
    if case == "shape":
        data = npy_folder(tmp_path / "d", np.zeros((1, 1, 9, 9), np.float32), name="big")
        result, needles = quant(save, "-m", ws.model, "-d", data), ("big_00.npy", "input", "[1, 1, 9, 9]")
    elif case == "dtype":
        data = npy_folder(tmp_path / "d", x.astype(np.int32), name="ints")
        result, needles = quant(save, "-m", ws.model, "-d", data), ("ints_00.npy", "input", "int32")
    elif case == "forward_count":
        result = quant(save, "-m", ws.model, "-uds", ws.script, "-if", "two_arrays")
        needles = ("two_arrays", f"{ws.script}:{line_of('# TWO')}", "forward", "2 arrays")
    else:
        g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["s"], name="add"),
                               helper.make_node("Relu", ["s"], ["y"], name="relu")], "two_inputs",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        model = tmp_path / "two.onnx"
        model.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
        one = np.ones((1, 4), np.float32)
        for sample, names in (("s0", "ab"), ("s1", "ac")):  # s1 has c.npy where b.npy belongs
            (tmp_path / "d" / sample).mkdir(parents=True)
            for n in names:
                np.save(tmp_path / "d" / sample / f"{n}.npy", one)
        result, needles = quant(save, "-m", model, "-d", tmp_path / "d"), ("s1", "b.npy", "'b'")
    assert_refused(result, save, *needles)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_calibration_data_names_the_file(ws, tmp_path, value):
    save = tmp_path / "out"
    x = ws.digits.x_train[:1].copy()
    x[0, 0, 3, 3] = value
    data = npy_folder(tmp_path / "d", x, name="odd")
    assert_refused(quant(save, "-m", ws.model, "-d", data), save, "odd_00.npy")


@pytest.mark.parametrize("weight, value", [("conv1.weight", np.nan), ("conv2.weight", np.inf)],
                         ids=["nan", "inf"])
def test_non_finite_weights_name_the_weight(ws, tmp_path, weight, value):
    save = tmp_path / "out"
    model = onnx.load(str(ws.model))
    init = next(i for i in model.graph.initializer if i.name == weight)
    w = numpy_helper.to_array(init).copy()
    w.flat[4] = value
    init.CopyFrom(numpy_helper.from_array(w, weight))
    path = tmp_path / "odd.onnx"
    path.write_bytes(model.SerializeToString())
    assert_refused(quant(save, "-m", path, "-d", ws.data), save, weight)


@pytest.mark.parametrize("chip, args, needles", [
    ("TX9999", (), ("--chip", "TX9999")),
    ("TX510x", ("-b", "16"), ("bit-width", "TX510x", "16")),
    ("TX510x", ("-ams", "HAWQ"), ("-ams/--auto-mix-strategy HAWQ", "16")),
    ("TX5368AV200", ("-ll", "13"), ("-ll/--lut-len", "13")),
    (None, ("-on", "no_such_tensor"), ("-on", "no_such_tensor")),
], ids=["unknown-chip", "bit-width-rule", "hawq-on-8-bit-chip", "lut-len-range", "on-no-tensor"])
def test_target_and_feature_refusals(ws, tmp_path, chip, args, needles):
    save = tmp_path / "out"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, *args, chip=chip), save, *needles)


@pytest.mark.parametrize("args, needles", [
    (("-per", "0"), ("-per/--percent",)),
    (("-per", "1.5"), ("-per/--percent",)),
    (("-ll", "7"), ("-ll/--lut-len", "7")),
    (("-i", "0"), ("-i/--iteration",)),
    (("-bs", "0"), ("-bs/--batch-size",)),
    (("-l", "5"), ("-l/--log-level", "5")),
    (("-l", "-1"), ("-l/--log-level", "-1")),
    (("--mean", "0", "--std", "0"), ("--std",)),
    (("--mean", "0", "0", "--std", "1", "1"), ("--mean", "input", "2")),
    (("--mean", "0"), ("--mean", "--std")),
], ids=["per-0", "per-1.5", "ll-7", "i-0", "bs-0", "l-5", "l-minus-1", "std-0", "mean-2-channels",
        "mean-without-std"])
def test_out_of_range_flag_values(ws, tmp_path, args, needles):
    save = tmp_path / "out"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, *args), save, *needles)


def test_bad_model_file(ws, tmp_path):
    save = tmp_path / "out"
    assert_refused(quant(save, "-m", tmp_path / "nope.onnx", "-d", ws.data), save, "nope.onnx", "no such file")
    npy = next(ws.data.glob("*.npy"))
    assert_refused(quant(save, "-m", npy, "-d", ws.data), save, npy.name, "not an ONNX model")


@pytest.mark.parametrize("case", ["lsj-bad-data", "lsj-crashing-function", "gsj-crash-in-evaluation"])
def test_errors_found_after_calibration_leave_no_files(ws, gsj, tmp_path, case):
    """With -lsj nothing is calibrated, so the data is first touched when the written model is
    evaluated; a function may also fail only on its second (evaluation) run.  Either way the
    run fails, and must not leave a model (or scale JSON) behind."""
    save = tmp_path / "out"
    if case == "lsj-bad-data":
        data = npy_folder(tmp_path / "d", np.zeros((1, 1, 9, 9), np.float32), name="big")
        result = quant(save, "-m", ws.model, "-d", data, "-lsj", gsj.json)
        needles = ("big_00.npy", "[1, 1, 9, 9]")
    elif case == "lsj-crashing-function":
        result = quant(save, "-m", ws.model, "-uds", ws.script, "-if", "boom", "-lsj", gsj.json)
        needles = ("'boom'", f"{ws.script}:{line_of('# BOOM')}")
    else:
        result = quant(save, "-m", ws.model, "-uds", ws.script, "-if", "fails_on_second_run", "-gsj")
        needles = ("'fails_on_second_run'", f"{ws.script}:{line_of('# SECOND')}", "second run refused")
    assert_refused(result, save, *needles)


def test_dump_ir_numbers_every_pass_of_both_halves_once(ws, tmp_path):
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "--dump-ir"))
    steps = sorted(p.name for p in (tmp_path / "steps").glob("*.onnx"))
    numbers = [int(name.split("_")[0]) for name in steps]
    assert numbers == list(range(1, len(steps) + 1))
    assert steps[0].endswith("read_qdq.onnx") and steps[-1].endswith("insert_qdq.onnx")
    assert onnx.load(str(tmp_path / "steps" / steps[-1])).graph.node  # each step is a model


def test_infer_without_a_function_runs_every_batch_and_says_where(ws, tmp_path):
    """-r infer -d reads the folder as -r quant does (-i batches of -bs samples), writes each
    batch's outputs, and says what ran them: the chip's simulator for a QDQ model on a TX5xxx
    chip, the numpy reference executor otherwise."""
    out = assert_ok(ptqc("quant", "-r", "infer", "-m", ws.model, "-d", ws.data, "-i", "3", "--save-dir", tmp_path))
    assert sorted(p.name for p in (tmp_path / "infer").glob("*.npy")) == [f"logits_{k:04d}.npy" for k in range(3)]
    assert "3 batches on ptqc's numpy reference executor" in out
    assert_ok(quant(tmp_path / "q", "-m", ws.model, "-d", ws.data, chip="TX510x"))
    out = assert_ok(quant(tmp_path / "s", "-r", "infer", "-m", tmp_path / "q" / "digits_quantize.onnx", "-d", ws.data,
                          chip="TX510x"))
    assert "4 batches on the TX510x integer simulator" in out
    assert len(list((tmp_path / "s" / "infer").glob("*.npy"))) == 4


def test_cpu_num_shards_and_bad_parallel_settings_are_refused(ws, tmp_path):
    assert_ok(quant(tmp_path / "cn", "-m", ws.model, "-d", ws.data, "-cn", "2"))
    assert (tmp_path / "cn" / "digits_quantize.onnx").exists()
    save = tmp_path / "bad"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-cn", "0"), save, "-cn/--cpu-num")
    assert_refused(quant(save, "-m", ws.model, "-uds", ws.script, "-if", "accuracy", "-cn", "2"), save, "-cn/--cpu-num")
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "--dask-scheduler", "tcp://127.0.0.1:9"), save,
                   "--dask-scheduler", "cannot connect")


def test_several_methods_and_iterations_print_a_ranked_table_of_every_run(ws, tmp_path):
    out = assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "-qm", "kl", "min_max", "mse",
                          "-i", "1", "2", "-bs", "2"))
    rows = re.findall(r"^\s+(kl|min_max|mse)\s+([12])\s+([0-9.]+)\s+(\S+_quantize\.onnx)$", out, re.M)
    assert sorted((m, i) for m, i, _, _ in rows) == [(m, i) for m in ("kl", "min_max", "mse") for i in "12"]
    scores = [float(s) for _, _, s, _ in rows]
    assert scores == sorted(scores, reverse=True)
    assert len(list(tmp_path.glob("digits_*_i[12]_quantize.onnx"))) == 6


def test_nncase_quant_scheme_export_then_import_from_the_command_line(ws, tmp_path):
    assert_ok(quant(tmp_path / "a", "-m", ws.model, "-d", ws.data, "--export-quant-scheme"))
    scheme = tmp_path / "a" / "digits_quant_scheme.json"
    assert json.loads(scheme.read_text())["Outputs"]
    assert_ok(quant(tmp_path / "b", "-m", ws.model, "-d", ws.data, "--quant-scheme", scheme))
    assert (tmp_path / "a" / "digits_quantize.onnx").read_bytes() == (tmp_path / "b" / "digits_quantize.onnx").read_bytes()
    save = tmp_path / "c"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "--quant-scheme", tmp_path / "none.json"), save,
                   "--quant-scheme", "no such file")


def test_generate_template_then_mix_config_reproduces_the_run(ws, tmp_path):
    assert_ok(quant(tmp_path / "a", "-m", ws.model, "-d", ws.data, "-gt", chip="TX5368AV200"))
    template = tmp_path / "a" / "digits_mix.json"
    assert set(json.loads(template.read_text())) >= {"conv1", "conv2", "fc"}
    assert_ok(quant(tmp_path / "b", "-m", ws.model, "-d", ws.data, "-mc", template, chip="TX5368AV200"))
    assert (tmp_path / "a" / "digits_quantize.onnx").read_bytes() == (tmp_path / "b" / "digits_quantize.onnx").read_bytes()
    save = tmp_path / "c"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-mc", template, chip="TX510x"), save,
                   "-mc/--mix-config", "rule mixed-precision")


def test_bias_correction_flag_reaches_the_run(ws, tmp_path):
    """The flag runs the correction (its effect is tested in test_bias_correction.py); on the
    digits CNN the check on the calibration data decides, and the run says what it did."""
    code, out, err = quant(tmp_path, "-m", ws.model, "-d", ws.data, "--bias-correction", "-l", "1")
    assert code == 0 and "Traceback" not in err
    assert "--bias-correction: " in out + err


def test_validation_split_and_folder_say_what_the_cosines_were_measured_on(ws, tmp_path):
    """A -d folder without -i is read whole; every 4th batch (-vs 0.25) is held out of
    calibration and the cosine table is measured on it; -vd measures on a folder of its own;
    -vs 0 on the calibration data, and the summary says which."""
    data = npy_folder(tmp_path / "d8", *(ws.digits.x_train[i:i + 1] for i in range(8)))
    val = npy_folder(tmp_path / "v3", *(ws.digits.x_test[i:i + 1] for i in range(3)))
    out = assert_ok(quant(tmp_path / "a", "-m", ws.model, "-d", data))
    assert "cosine against float on 2 held-out batches (not calibrated on)" in out
    out = assert_ok(quant(tmp_path / "b", "-m", ws.model, "-d", data, "-vd", val))
    assert f"cosine against float on 3 batches of -vd {val}" in out
    out = assert_ok(quant(tmp_path / "c", "-m", ws.model, "-d", data, "-vs", "0"))
    assert "cosine against float on the calibration data (no batch held out: -vs 0)" in out
    out = assert_ok(quant(tmp_path / "d", "-m", ws.model, "-d", data, "-i", "2"))
    assert "no batch held out: fewer than 4 batches" in out
    for args, needle in [(("-vs", "0.9"), "-vs/--validation-split: 0.9 is outside [0, 0.5]"),
                         (("-vd", tmp_path / "nope"), "-vd/--validation-data")]:
        save = tmp_path / "bad"
        assert_refused(quant(save, "-m", ws.model, "-d", data, *args), save, needle)


def test_a_mix_config_cannot_mix_auto_with_other_modes(ws, tmp_path):
    assert_ok(quant(tmp_path / "a", "-m", ws.model, "-d", ws.data, "-gt", chip="TX5368AV200"))
    table = json.loads((tmp_path / "a" / "digits_mix.json").read_text())
    assert {v["mode"] for v in table.values()} == {"auto"}
    first = next(iter(table))
    table[first]["mode"] = "mse"
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(table))
    save = tmp_path / "b"
    assert_refused(quant(save, "-m", ws.model, "-d", ws.data, "-mc", path, chip="TX5368AV200"), save,
                   "-mc/--mix-config", "mode auto with other modes")


REFERENCE_SCRIPT = '''\
import json

import numpy as np

from onnx_quantize_tool.common.register import onnx_infer_func, pytorch_model

X = np.load(r"ROOT/x.npy")


@onnx_infer_func.register("with_shapes")
def with_shapes(executor):
    executor.init_shape_info()
    with open(r"ROOT/shapes.json", "w") as f:
        json.dump({"shapes": executor.shape_dicts, "layers": executor.output_name_to_node_name()}, f)
    executor.forward(X)
    return 1.0
'''


def test_a_script_written_for_the_reference_tool_runs_unchanged(ws, tmp_path):
    """Its import (onnx_quantize_tool.common.register), -ch for --chip, and
    executor.init_shape_info(): shape_dicts maps the model's layers to their output shapes."""
    script = tmp_path / "ref.py"
    script.write_text(REFERENCE_SCRIPT.replace("ROOT", str(tmp_path)))
    np.save(tmp_path / "x.npy", np.load(ws.root / "x.npy"))
    code, _, err = ptqc("-ch", "TX510x", "quant", "-m", ws.model, "-uds", script, "-if", "with_shapes",
                        "--save-dir", tmp_path / "out")
    assert code == 0, err
    seen = json.loads((tmp_path / "shapes.json").read_text())
    written = {n.name for n in onnx.load(str(tmp_path / "out" / "digits_quantize.onnx")).graph.node}
    assert seen["shapes"] and set(seen["shapes"]) <= written
    assert set(seen["layers"].values()) <= written
    convs = [n.name for n in onnx.load(str(tmp_path / "out" / "digits_quantize.onnx")).graph.node
             if n.op_type == "Conv"]
    assert [len(seen["shapes"][c]) for c in convs] == [4] * len(convs) and \
        all(seen["shapes"][c][1] > 0 for c in convs)


def test_ir_batch_makes_the_written_models_batch_static(ws, tmp_path):
    """-ib: the digits model's dynamic batch N becomes 3 in the written model (the run itself
    calibrates and evaluates on batches of 1); without -ib it stays dynamic."""
    assert_ok(quant(tmp_path, "-m", ws.model, "-d", ws.data, "-ib", "3", "-od"))
    model = onnx.load(str(tmp_path / "digits_quantize.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 8, 8]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 3
    (got,) = ort_outputs(model, {"input": ws.digits.x_test[:3]})
    assert got.shape == (3, 10)
    assert_refused(quant(tmp_path / "bad", "-m", ws.model, "-d", ws.data, "-ib", "0"), tmp_path / "bad",
                   "-ib/--ir-batch: must be >= 1, got 0")
