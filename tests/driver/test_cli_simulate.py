"""The simulator from the command line: ``--chip TX... quant -r infer`` runs a QDQ model's
integer arithmetic under the user's infer function; ``-du`` dumps every tensor; ``-r compare``
writes the per-layer comparison in both modes."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from checks import assert_bad_input, ptqc

SCRIPT = '''\
import numpy as np

from ptqc import onnx_infer_func

X = np.load(r"ROOT/x.npy")
Y = np.load(r"ROOT/y.npy")


@onnx_infer_func.register("accuracy")
def accuracy(executor):
    right = 0
    for i in range(0, len(X), 50):
        right += int(np.sum(np.argmax(executor.forward(X[i:i + 50])[0], 1) == Y[i:i + 50]))
    return right / len(X)
'''


def _ok(result):
    code, out, err = result
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def ws(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    model = root / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data = root / "data"
    data.mkdir()
    for i in range(16):
        np.save(data / f"s{i:02d}.npy", digits.x_train[i * 8:(i + 1) * 8])
    np.save(root / "x.npy", np.ascontiguousarray(digits.x_test))  # the whole held-out split, 450 images
    np.save(root / "y.npy", np.ascontiguousarray(digits.y_test))
    script = root / "infer_digits.py"
    script.write_text(SCRIPT.replace("ROOT", str(root)))
    return root, model, data, script


@pytest.fixture(scope="module")
def tx510(ws):
    root, model, data, _ = ws
    save = root / "tx510"
    out = _ok(ptqc("--chip", "TX510x", "quant", "-m", model, "-d", data, "-i", "16", "--save-dir", save, "-du"))
    return save, out


def _accuracy(out: str) -> float:
    return float(out.rsplit("returned", 1)[1].split()[0])


def test_digits_on_tx510x_through_infer_is_within_07pt_of_float(ws, tx510, digits):
    """The simulated chip reads as many of the 450 held-out images right as onnxruntime running
    the same QDQ model (one image either way), and 8-bit logits lose at most 3 of them (two of
    the 10 wrong ones are ties between int8 logit codes)."""
    root, model, _, script = ws
    save, _ = tx510
    float_acc = _accuracy(_ok(ptqc("quant", "-r", "infer", "-m", model, "-uds", script, "-if", "accuracy")))
    qdq_acc = _accuracy(_ok(ptqc("quant", "-r", "infer", "-m", save / "digits_quantize.onnx",
                                 "-uds", script, "-if", "accuracy")))
    sim_acc = _accuracy(_ok(ptqc("--chip", "TX510x", "quant", "-r", "infer", "-m", save / "digits_quantize.onnx",
                                 "-uds", script, "-if", "accuracy")))
    assert float_acc == pytest.approx(digits.float_accuracy, abs=1e-5)
    assert abs(sim_acc - qdq_acc) <= 0.0023, (qdq_acc, sim_acc)  # one image of 450 is 0.22 pt
    assert sim_acc >= float_acc - 0.007, (float_acc, sim_acc)


def test_dump_during_quant_writes_every_tensor_with_an_index(tx510):
    save, out = tx510
    assert "dump:" in out
    rows = list(csv.DictReader(open(save / "dump" / "index.csv")))
    assert {r["node"] for r in rows} >= {"conv1", "pool1", "conv2", "flatten", "fc"}
    for row in rows:
        array = np.load(save / "dump" / row["file"])
        if row["scale"]:  # an integer tensor: its codes, named after the ONNX tensor
            assert array.dtype == np.int8 and row["file"].endswith("_int.npy")
    assert "logits" in {r["onnx_tensor"] for r in rows}


def test_compare_writes_both_modes_and_names_the_first_drop(ws, tmp_path):
    root, model, data, _ = ws
    out = _ok(ptqc("--chip", "TX5368AV200", "quant", "-r", "compare", "-b", "16", "-m", model, "-d", data,
                   "--save-dir", tmp_path))
    for mode in ("graphwise", "layerwise"):
        assert f"compare ({mode}" in out
        rows = list(csv.DictReader(open(tmp_path / f"compare_{mode}.csv")))
        assert {r["op_type"] for r in rows} >= {"Conv", "Gemm"}
        assert all(float(r["cosine"]) > 0.999 for r in rows), rows  # 16-bit: no layer drops
    assert "first cosine < 0.99: none" in out
    html = (tmp_path / "report.html").read_text()
    assert "digits" in html and "<svg" in html and "conv1" in html


def test_a_16_bit_model_on_an_8_bit_chip_names_the_rule(ws, tmp_path):
    root, model, data, script = ws
    _ok(ptqc("--chip", "TX5368AV200", "quant", "-b", "16", "-m", model, "-d", data, "--save-dir", tmp_path))
    code, _, err = ptqc("--chip", "TX510x", "quant", "-r", "infer", "-m", tmp_path / "digits_quantize.onnx",
                        "-uds", script, "-if", "accuracy")
    assert_bad_input(code, err, "rule bit-width", "TX510x runs 8-bit only", "16-bit")


def test_lut_len_out_of_range_is_refused(ws, tmp_path):
    root, model, data, _ = ws
    code, _, err = ptqc("--chip", "TX5368AV200", "quant", "-m", model, "-d", data, "-ll", "13", "--save-dir", tmp_path)
    assert_bad_input(code, err, "-ll/--lut-len", "13")


def test_dump_and_compare_need_a_chip_and_write_nothing_without_one(ws, tmp_path):
    root, model, data, _ = ws
    for flags, needle in ((("-du",), "-du/--dump"), (("-r", "compare"), "-r/--run-mode compare")):
        code, _, err = ptqc("quant", "-m", model, "-d", data, "--save-dir", tmp_path, *flags)
        assert_bad_input(code, err, needle, "TX5xxx --chip")
    assert not list(tmp_path.glob("*.onnx")) and not (tmp_path / "dump").exists()
