"""``-rc/--run-config``'s tasks: the reference's ``infer_common.py`` / ``infer_default``, an infer
function driven by the run config's ``input-configs``, that scores a classifier (top-1, top-5)
or a YOLO-style detector (mAP@0.5) on a labelled image folder.

``input-configs`` keys (the reference's): ``data_dir`` (bmp/jpg/jpeg/png images, sorted by
name), ``label_dir`` (classification: ``labels.txt``, lines ``<image name> <class>``;
detection: YOLO labels, ``<image stem>.txt`` with lines ``class cx cy w h`` normalized to the
image), ``is_yolo`` (detection), ``color_space`` (RGB/BGR/GRAY, default BGR), ``augment``,
``mean``/``std`` (per channel, on 0..255 pixels; without them classification feeds raw 0..255
pixels and detection 0..1), ``calculate_acc``, ``draw_box``, ``max_det`` (300), ``anchors``,
``nc``, ``conf_thres`` (0.001), ``iou_thres`` (0.6), ``names``.

- Classification: each image resized (bilinear) to the input's size; the metric is top-1.
- Detection: each image letterboxed (aspect kept, padded with 114) to the input's size (an
  image smaller than the input is enlarged only with ``augment``, YOLOv5's ``scaleup``); the
  outputs read as YOLOv5's decoded ``[B, N, 5 + nc]`` (box, objectness, class scores), YOLOv8's
  ``[B, 4 + nc, N]``, or, with ``anchors``, raw per-level maps (``[B, na * (5 + nc), H, W]``
  or ``[B, na, H, W, 5 + nc]``, decoded as YOLOv5 does); class-wise NMS at ``iou_thres`` over
  boxes above ``conf_thres``, at most ``max_det``; the metric is mAP@0.5 (YOLOv5's
  ``ap_per_class``: all-point interpolated precision, 101 points) against the labels mapped
  back from the letterbox.  ``draw_box`` writes each image with its boxes (and ``names``) to
  ``<data_dir>/../label_imgs/`` (``-r infer`` only, as in the reference).

Without labels, ``calculate_acc`` takes the float model's outputs as the truth (:func:`write_labels`,
into ``<data_dir>/../labels/``, as the reference does).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from ptqc.driver.data import DataError, ImagePreprocess, image_files, image_plan, load_image, pillow
from ptqc.errors import ConfigError
from ptqc.files import atomic_open

log = logging.getLogger("ptqc")

_DEFAULTS = {"data_dir": None, "label_dir": None, "is_yolo": False, "color_space": "BGR", "augment": False,
             "mean": None, "std": None, "calculate_acc": False, "draw_box": False, "max_det": 300, "anchors": None,
             "nc": None, "conf_thres": 0.001, "iou_thres": 0.6, "names": None}


@dataclass(frozen=True)
class Task:
    """The parsed ``input-configs`` (see the module docstring)."""

    data_dir: Path
    label_dir: Path | None
    is_yolo: bool
    color_space: str
    mean: tuple | None
    std: tuple | None
    calculate_acc: bool
    draw_box: bool
    max_det: int
    anchors: tuple | None
    nc: int | None
    conf_thres: float
    iou_thres: float
    names: tuple | None
    augment: bool = False  # detection: enlarge images smaller than the input (YOLOv5's scaleup)


def parse_task(configs: Any, flag: str) -> Task:
    """``input-configs`` checked key by key; every unknown key or bad value named."""
    if not isinstance(configs, dict):
        raise ConfigError(f"{flag}: input-configs must be an object")
    unknown = sorted(set(configs) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"{flag}: input-configs key {unknown[0]!r} is not known (known: {', '.join(_DEFAULTS)})")
    c = {**_DEFAULTS, **configs}
    if not c["data_dir"] or not Path(c["data_dir"]).is_dir():
        raise ConfigError(f"{flag}: input-configs data_dir {c['data_dir']!r}: no such folder")
    if c["label_dir"] and not Path(c["label_dir"]).is_dir():
        raise ConfigError(f"{flag}: input-configs label_dir {c['label_dir']!r}: no such folder")
    if c["color_space"] not in ("RGB", "BGR", "GRAY"):
        raise ConfigError(f"{flag}: input-configs color_space {c['color_space']!r}: expected RGB, BGR or GRAY")
    if not isinstance(c["augment"], bool):
        raise ConfigError(f"{flag}: input-configs augment {c['augment']!r}: expected true or false")
    if (c["mean"] is None) != (c["std"] is None):
        raise ConfigError(f"{flag}: input-configs mean and std go together")
    for key in ("mean", "std"):
        values = c[key] if isinstance(c[key], list) else [c[key]]
        if c[key] is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{flag}: input-configs {key} {c[key]!r}: expected a number per channel")
    if not isinstance(c["max_det"], int) or isinstance(c["max_det"], bool) or c["max_det"] < 1:
        raise ConfigError(f"{flag}: input-configs max_det {c['max_det']!r}: expected a positive integer")
    if c["names"] is not None and not (isinstance(c["names"], list) and all(isinstance(n, str) for n in c["names"])):
        raise ConfigError(f"{flag}: input-configs names {c['names']!r}: expected a list of class names")
    for key in ("conf_thres", "iou_thres"):
        if not isinstance(c[key], (int, float)) or not 0 <= c[key] <= 1:
            raise ConfigError(f"{flag}: input-configs {key} {c[key]!r}: expected a number in [0, 1]")
    if c["is_yolo"] and c["nc"] is not None and (not isinstance(c["nc"], int) or c["nc"] < 1):
        raise ConfigError(f"{flag}: input-configs nc {c['nc']!r}: expected a positive integer")
    anchors = c["anchors"]
    if anchors is not None:
        try:
            anchors = tuple(tuple(float(v) for v in level) for level in anchors)
        except (TypeError, ValueError):
            raise ConfigError(f"{flag}: input-configs anchors: expected a list per level of pixel sizes "
                              "(w1, h1, w2, h2, ...)") from None
        if not anchors or any(len(level) % 2 or not level for level in anchors):
            raise ConfigError(f"{flag}: input-configs anchors: each level needs (w, h) pairs")
    return Task(Path(c["data_dir"]), Path(c["label_dir"]) if c["label_dir"] else None, bool(c["is_yolo"]),
                c["color_space"], _floats(c["mean"]), _floats(c["std"]), bool(c["calculate_acc"]),
                bool(c["draw_box"]), int(c["max_det"]), anchors, c["nc"], float(c["conf_thres"]),
                float(c["iou_thres"]), tuple(c["names"]) if c["names"] else None, c["augment"])


def task_of(run_config: Path) -> Task:
    """The task of a run config file (its ``input-configs``)."""
    _, configs = load_run_config(run_config)
    if configs is None:
        raise ConfigError(f"-rc/--run-config {run_config}: -if infer_default needs input-configs")
    return parse_task(configs, f"-rc/--run-config {run_config}")


def _floats(values) -> tuple | None:
    return None if values is None else tuple(float(v) for v in np.atleast_1d(values))


def load_run_config(path: Path) -> tuple[dict, dict | None]:
    """(the run config's flags by long name, its input-configs or None)."""
    flag = f"-rc/--run-config {path}"
    try:
        table = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{flag}: no such file") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{flag}: not readable JSON ({' '.join(str(e).split())})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{flag}: expected a JSON object of flags and input-configs")
    table = {k.lstrip("-").replace("-", "_"): v for k, v in table.items()}
    return table, table.pop("input_configs", None)


# --------------------------------------------------------------------------- the infer function

def make_task_infer(task: Task, draw: bool = False) -> Callable:
    """The reference's ``infer_default`` for ``task``: its metric is top-1 accuracy
    (classification) or mAP@0.5 (detection), 1.0 without ``calculate_acc``; ``draw`` (``-r
    infer``) lets ``draw_box`` write the boxed images."""
    def infer_default(executor) -> float:
        if len(executor.inputs) != 1:
            raise ConfigError(f"-rc input-configs: the {'detection' if task.is_yolo else 'classification'} task "
                              f"feeds one image input; the model has {len(executor.inputs)}")
        images = image_files(task.data_dir)
        if not images:
            raise DataError(f"-rc input-configs data_dir {task.data_dir}: no images (bmp, jpg, jpeg, png)")
        run = _detect if task.is_yolo else _classify
        return run(executor, executor.inputs[0], images, task, draw and task.draw_box)
    return infer_default


def _batches(executor, images: list[Path]):
    """The image paths in batches of ``executor.batch_size``, stopping at ``executor.iteration``."""
    for i in range(0, len(images), executor.batch_size):
        yield images[i:i + executor.batch_size]
        if executor.early_stop_flag:
            return


def classifications(executor, spec, images: list[Path], task: Task):
    """(path, its five best classes) per image read."""
    pre = ImagePreprocess(image_to_format=task.color_space, normalize_mean=task.mean or (),
                          normalize_std=task.std or ())
    plan = image_plan(spec, pre)
    for batch in _batches(executor, images):
        outputs = executor.forward(np.concatenate([load_image(p, spec, pre, plan) for p in batch]))
        if outputs:
            ranked = np.argsort(-np.asarray(outputs[0]).reshape(len(batch), -1), axis=1, kind="stable")[:, :5]
            yield from zip(batch, ranked)


def _classify(executor, spec, images: list[Path], task: Task, _draw: bool) -> float:
    truth = class_labels(task) if task.calculate_acc else {}
    top1 = top5 = seen = 0
    for path, row in classifications(executor, spec, images, task):
        if path.name in truth:
            seen += 1
            top1 += int(row[0] == truth[path.name])
            top5 += int(truth[path.name] in row)
    if not task.calculate_acc:
        return 1.0
    if not seen:
        raise DataError(f"-rc input-configs label_dir {task.label_dir}: labels.txt names none of the images read")
    log.info("classification: top-1 %.4f, top-5 %.4f over %d images", top1 / seen, top5 / seen, seen)
    return top1 / seen


def class_labels(task: Task) -> dict[str, int]:
    """``labels.txt``: image name -> class."""
    path = (task.label_dir or task.data_dir.parent / "labels") / "labels.txt"
    if not path.is_file():
        raise ConfigError(f"-rc input-configs label_dir: {path}: no such file (lines '<image name> <class>')")
    truth = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{n}: expected '<image name> <class>', got {line!r}")
        truth[parts[0]] = int(parts[1])
    return truth


# ------------------------------------------------------------------------------------ detection

@dataclass(frozen=True)
class _Letterbox:
    """How an image sits in the input: scale ``ratio``, padding ``(left, top)``, original size."""

    ratio: float
    pad: tuple[float, float]
    size: tuple[int, int]


def _letterbox(path: Path, spec, task: Task) -> tuple[np.ndarray, _Letterbox]:
    """The image resized with its aspect kept to fit the input, centred on 114-grey padding;
    0..1 values (or ``(x - mean) / std`` on 0..255), in the input's layout."""
    plan = image_plan(spec, ImagePreprocess(image_to_format=task.color_space))
    width, height = plan.size
    image_module = pillow()
    try:
        with image_module.open(path) as opened:
            image = opened.convert("L" if task.color_space == "GRAY" else "RGB")
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on bad files
        raise DataError(f"{path}: unreadable image ({' '.join(str(e).split())})") from None
    ratio = min(width / image.width, height / image.height)
    if not task.augment:  # YOLOv5's letterbox(scaleup=augment): a small image is padded, not enlarged
        ratio = min(ratio, 1.0)
    new = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    resample = getattr(image_module, "Resampling", image_module)
    canvas = image_module.new(image.mode, (width, height), 114 if image.mode == "L" else (114, 114, 114))
    left, top = (width - new[0]) // 2, (height - new[1]) // 2
    canvas.paste(image.resize(new, resample.BILINEAR), (left, top))
    x = np.asarray(canvas, np.float32)
    x = x[..., None] if x.ndim == 2 else x[..., ::-1] if task.color_space == "BGR" else x
    x = (x - np.asarray(task.mean, np.float32)) / np.asarray(task.std, np.float32) if task.mean else x / 255.0
    x = x.transpose(2, 0, 1) if plan.nchw else x
    return np.ascontiguousarray(x[None], dtype=plan.dtype), _Letterbox(ratio, (left, top), image.size)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode(outputs: list[np.ndarray], task: Task, input_hw: tuple[int, int]) -> np.ndarray:
    """The detector's outputs as ``[B, N, 4 + 1 + nc]`` rows (cx, cy, w, h, objectness, class
    scores) in input pixels; YOLOv8's rows get objectness 1."""
    if task.anchors:
        return _decode_raw(outputs, task, input_hw)
    p = next((np.asarray(o, np.float32) for o in outputs if np.ndim(o) == 3), None)
    if p is None:
        raise DataError("-rc detection: no [batch, boxes, values] output; raw per-level maps need input-configs "
                        f"anchors (outputs: {[list(np.shape(o)) for o in outputs]})")
    nc = task.nc
    v8 = (p.shape[1] == 4 + nc) if nc else p.shape[1] < p.shape[2]
    if v8:
        p = p.transpose(0, 2, 1)
        p = np.concatenate([p[..., :4], np.ones_like(p[..., :1]), p[..., 4:]], axis=-1)
    if nc and p.shape[-1] != 5 + nc:
        raise DataError(f"-rc detection: output rows hold {p.shape[-1]} values; nc {nc} needs {5 + nc}")
    return p


def _decode_raw(outputs: list[np.ndarray], task: Task, input_hw: tuple[int, int]) -> np.ndarray:
    """YOLOv5's Detect head on raw maps: levels by decreasing resolution take the anchors in
    order; xy = (2 s - 0.5 + grid) stride, wh = (2 s)^2 anchor, scores sigmoid."""
    maps = sorted((np.asarray(o, np.float32) for o in outputs if np.ndim(o) in (4, 5)), key=lambda o: -o.shape[-2]
                  if o.ndim == 4 else -o.shape[2])
    if len(maps) != len(task.anchors):
        raise DataError(f"-rc detection: {len(task.anchors)} anchor levels for {len(maps)} raw output maps")
    rows = []
    for o, anchors in zip(maps, task.anchors):
        na = len(anchors) // 2
        if o.ndim == 4:  # [B, na * (5 + nc), H, W]
            b, c, h, w = o.shape
            o = o.reshape(b, na, c // na, h, w).transpose(0, 1, 3, 4, 2)
        b, _, h, w, c = o.shape
        s = _sigmoid(o)
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        stride = np.float32(input_hw[0] / h)
        xy = (s[..., :2] * 2 - 0.5 + np.stack([gx, gy], -1)) * stride
        wh = (s[..., 2:4] * 2) ** 2 * np.asarray(anchors, np.float32).reshape(1, na, 1, 1, 2)
        rows.append(np.concatenate([xy, wh, s[..., 4:]], -1).reshape(b, -1, c))
    return np.concatenate(rows, axis=1)


def nms(rows: np.ndarray, task: Task) -> np.ndarray:
    """One image's ``[N, 5 + nc]`` rows -> ``[M, 6]`` (x1, y1, x2, y2, confidence, class), the
    best class per box, class-wise greedy NMS, at most ``max_det`` by confidence."""
    scores = rows[:, 5:] * rows[:, 4:5]
    cls = np.argmax(scores, axis=1)
    conf = scores[np.arange(len(rows)), cls]
    keep = conf > task.conf_thres
    boxes = _xyxy(rows[keep, :4])
    conf, cls = conf[keep], cls[keep]
    order = np.argsort(-conf, kind="stable")
    shifted = boxes + (cls * 4096.0)[:, None]  # boxes of different classes never overlap
    chosen = []
    while order.size and len(chosen) < task.max_det:
        i, order = order[0], order[1:]
        chosen.append(i)
        order = order[iou(shifted[i:i + 1], shifted[order])[0] <= task.iou_thres]
    return np.concatenate([boxes[chosen], conf[chosen, None], cls[chosen, None]], axis=1) if chosen \
        else np.zeros((0, 6), np.float32)


def _xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[n, 4]`` and ``[m, 4]`` x1y1x2y2 boxes."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:4] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def detections(executor, spec, images: list[Path], task: Task):
    """(path, letterbox, ``[M, 6]`` detections in original-image pixels) per image read."""
    for batch in _batches(executor, images):
        loaded = [_letterbox(p, spec, task) for p in batch]
        outputs = executor.forward(np.concatenate([x for x, _ in loaded]))
        if not outputs:
            continue
        input_hw = loaded[0][0].shape[2:4] if loaded[0][0].shape[1] in (1, 3) else loaded[0][0].shape[1:3]
        rows = decode(outputs, task, tuple(input_hw))
        for path, (_, box), r in zip(batch, loaded, rows):
            det = nms(r, task)
            det[:, [0, 2]] = np.clip((det[:, [0, 2]] - box.pad[0]) / box.ratio, 0, box.size[0])
            det[:, [1, 3]] = np.clip((det[:, [1, 3]] - box.pad[1]) / box.ratio, 0, box.size[1])
            yield path, box, det


def _detect(executor, spec, images: list[Path], task: Task, draw: bool) -> float:
    label_dir = task.label_dir or task.data_dir.parent / "labels"
    stats, classes = [], []
    for path, box, det in detections(executor, spec, images, task):
        if draw:
            draw_boxes(path, det, task)
        if task.calculate_acc:
            truth = yolo_labels(label_dir / f"{path.stem}.txt", box.size)
            stats.append(match(det, truth))
            classes.append(truth[:, 0])
    if not task.calculate_acc:
        return 1.0
    if not stats:
        return 0.0
    value = mean_ap(stats, np.concatenate(classes))
    log.info("detection: mAP@0.5 %.4f over %d images", value, len(stats))
    return value


def yolo_labels(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``[n, 5]`` (class, x1, y1, x2, y2) in image pixels from a YOLO label file (none: no objects)."""
    if not path.is_file():
        raise ConfigError(f"-rc input-configs label_dir: {path}: no such file (YOLO labels, 'class cx cy w h')")
    try:
        rows = np.loadtxt(path, ndmin=2, dtype=np.float64) if path.stat().st_size else np.zeros((0, 5))
    except ValueError as e:
        raise DataError(f"{path}: not YOLO labels ({e})") from None
    if rows.shape[1] != 5:
        raise DataError(f"{path}: YOLO label lines hold 5 numbers (class cx cy w h), found {rows.shape[1]}")
    scale = np.array([size[0], size[1], size[0], size[1]], np.float64)
    return np.concatenate([rows[:, :1], _xyxy(rows[:, 1:] * scale)], axis=1)


def match(det: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> tuple:
    """(true-positive flags, confidences, classes) of ``det`` against ``truth`` at IoU
    ``threshold``: each label matched once, by the most confident detection of its class."""
    tp = np.zeros(len(det), bool)
    if len(det) and len(truth):
        overlaps = iou(det[:, :4], truth[:, 1:5])
        used = np.zeros(len(truth), bool)
        for i in np.argsort(-det[:, 4], kind="stable"):
            cand = np.where((truth[:, 0] == det[i, 5]) & ~used & (overlaps[i] >= threshold))[0]
            if cand.size:
                used[cand[np.argmax(overlaps[i, cand])]] = tp[i] = True
    return tp, det[:, 4], det[:, 5]


def mean_ap(stats: list[tuple], truth_classes: np.ndarray) -> float:
    """mAP over the classes with labels (YOLOv5's ``ap_per_class``, 101-point interpolation)."""
    tp, conf, cls = (np.concatenate(x) for x in zip(*stats))
    order = np.argsort(-conf, kind="stable")
    tp, cls = tp[order], cls[order]
    aps = []
    for c in np.unique(truth_classes):
        n_truth, hits = int(np.sum(truth_classes == c)), tp[cls == c]
        if not hits.size:
            aps.append(0.0)
            continue
        tpc, fpc = np.cumsum(hits), np.cumsum(~hits)
        recall, precision = tpc / n_truth, tpc / (tpc + fpc)
        mrec, mpre = np.concatenate([[0.0], recall, [1.0]]), np.concatenate([[1.0], precision, [0.0]])
        mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
        x = np.linspace(0, 1, 101)
        aps.append(float(np.trapezoid(np.interp(x, mrec, mpre), x)))
    return float(np.mean(aps)) if aps else 0.0


def draw_boxes(path: Path, det: np.ndarray, task: Task) -> Path:
    """The image with its detections drawn, written to ``<data_dir>/../label_imgs/<name>``."""
    out = task.data_dir.parent / "label_imgs" / path.name
    out.parent.mkdir(exist_ok=True)
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    pen = ImageDraw.Draw(image)
    for x1, y1, x2, y2, conf, cls in det:
        name = task.names[int(cls)] if task.names and int(cls) < len(task.names) else str(int(cls))
        pen.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
        pen.text((x1 + 2, y1 + 2), f"{name} {conf:.2f}", fill=(255, 0, 0))
    with atomic_open(out, "wb") as f:
        image.save(f, format=image_format(path))
    return out


def image_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()]


PSEUDO_LABEL_CONF = 0.25  # YOLOv5 detect.py's default: the float model's boxes taken as labels


def write_labels(task: Task, executor) -> Task:
    """``calculate_acc`` without labels: the float model's answers (``executor`` runs it over
    every image: top-1 class; boxes above :data:`PSEUDO_LABEL_CONF`) written as labels to
    ``<data_dir>/../labels/``, as the reference does; returns the task reading them."""
    images = image_files(task.data_dir)
    folder = task.data_dir.parent / "labels"
    folder.mkdir(exist_ok=True)
    spec = executor.inputs[0]
    if not task.is_yolo:
        with atomic_open(folder / "labels.txt", "w") as f:
            f.writelines(f"{p.name} {int(row[0])}\n" for p, row in classifications(executor, spec, images, task))
    else:
        strict = dataclasses.replace(task, conf_thres=max(task.conf_thres, PSEUDO_LABEL_CONF))
        for path, box, det in detections(executor, spec, images, strict):
            w, h = box.size
            xywh = np.concatenate([(det[:, :2] + det[:, 2:4]) / 2, det[:, 2:4] - det[:, :2]], 1) / [w, h, w, h]
            with atomic_open(folder / f"{path.stem}.txt", "w") as f:
                f.writelines(f"{int(c)} {a:.6f} {b:.6f} {cw:.6f} {ch:.6f}\n" for (a, b, cw, ch), c in
                             zip(xywh, det[:, 5]))
    log.warning("-rc: no labels; the float model's answers written to %s and taken as the truth", folder)
    return dataclasses.replace(task, label_dir=folder)
