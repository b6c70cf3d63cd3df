"""``-f``: a model from another framework converted to ONNX before anything else (the reference
tool's pytorch2onnx / paddle2onnx / caffe2onnx / tensorflow2onnx step), then checked against
its own framework on the same inputs (the reference's float check): the largest output
difference relative to the output's largest value must stay within ``TOLERANCE``, else the
run stops naming the output.  The converted model is written (atomically) to
``{save_dir}/{model stem}.onnx`` and the run goes on with it; ``-r convert`` stops there
and then cleans it as for an ONNX model.

Built: ``paddle`` (PaddlePaddle inference models: ``-m`` the ``.pdmodel`` or PIR ``.json``
program, ``-w`` its ``.pdiparams``; paddle2onnx at opset 17).  ``pytorch``, ``caffe`` and
``tensorflow`` say by name that they are not built yet.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ptqc.errors import ConfigError, ModelError

TOLERANCE = 1e-4
OPSET = 17


def to_onnx(framework: str, model: Path, weight: Path | None, save_dir: Path,
            input_shapes: tuple = ()) -> Path:
    """The ONNX model to quantize: ``model`` itself for onnx, else the converted and checked one."""
    if framework == "onnx":
        if weight is not None:
            raise ConfigError("-w/--weight: applies only to -f pytorch, caffe or paddle (an ONNX model holds its "
                              "weights)")
        return model
    if framework != "paddle":
        raise ConfigError(f"-f/--framework {framework}: not built yet (built: onnx, paddle); convert the model to "
                          "ONNX with its framework's exporter and give the .onnx")
    return _paddle(model, weight, save_dir, input_shapes)


def _paddle(model: Path, weight: Path | None, save_dir: Path, input_shapes: tuple) -> Path:
    if model.suffix not in (".pdmodel", ".json"):
        raise ConfigError(f"-m/--model {model}: -f paddle takes the inference program (.pdmodel, or .json "
                          "from PaddlePaddle 3)")
    weight = weight if weight is not None else model.with_suffix(".pdiparams")
    for path, flag in ((model, "-m/--model"), (weight, "-w/--weight")):
        if not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    try:
        with warnings.catch_warnings():  # paddle warns on import about build tools it does not need here
            warnings.simplefilter("ignore")
            import paddle
            import paddle2onnx
    except ImportError as e:
        raise ConfigError(f"-f/--framework paddle: needs paddlepaddle and paddle2onnx ({e.name} is not "
                          "installed; see README, frontends)") from None
    out = save_dir / f"{model.stem}.onnx"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=save_dir)
    os.close(fd)
    try:
        with _quiet():
            paddle2onnx.export(str(model), str(weight), save_file=tmp, opset_version=OPSET, verbose=False)
            _check(tmp, _paddle_runner(paddle, model, weight), input_shapes, f"-f paddle {model}")
        os.replace(tmp, out)
    except Exception as e:
        if isinstance(e, (ConfigError, ModelError)):
            raise
        raise ModelError(f"-f paddle {model}: conversion failed: {' '.join(str(e).split()) or type(e).__name__}") \
            from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@contextlib.contextmanager
def _quiet():
    """The converters' own progress lines (printed by C++ code, past sys.stdout) kept off the
    terminal: file descriptors 1 and 2 point to /dev/null meanwhile; exceptions still rise."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _paddle_runner(paddle, model: Path, weight: Path):
    """The source model on Paddle Inference: feeds by name -> outputs in order."""
    config = paddle.inference.Config(str(model), str(weight))
    config.disable_gpu()
    config.switch_ir_optim(False)  # the program as written: the check compares the conversion, not fusions
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name in predictor.get_input_names():
            predictor.get_input_handle(name).copy_from_cpu(feeds[name])
        predictor.run()
        return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    return run


def _check(path: str, source, input_shapes: tuple, label: str) -> None:
    """The converted model against its framework on seeded standard-normal inputs (dynamic
    dimensions from ``-is``, else 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if input_shapes and len(input_shapes) != len(inputs):
        raise ConfigError(f"-is/--input-shapes: {len(input_shapes)} shapes for {len(inputs)} inputs of {label}")
    rng = np.random.default_rng(0)
    feeds = {}
    for i, x in enumerate(inputs):
        shape = list(input_shapes[i]) if input_shapes else [d if isinstance(d, int) and d > 0 else 1 for d in x.shape]
        kind = np.float32 if "float" in x.type else np.int64
        feeds[x.name] = rng.standard_normal(shape).astype(kind) if kind is np.float32 else np.zeros(shape, kind)
    got, want = session.run(None, feeds), source(feeds)
    for out, g, w in zip(session.get_outputs(), got, want):
        w = np.asarray(w, np.float64)
        diff = float(np.max(np.abs(np.asarray(g, np.float64) - w))) if w.size else 0.0
        scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-6)
        if np.shape(g) != np.shape(w) or diff > TOLERANCE * scale:
            raise ModelError(f"{label}: the converted model's output {out.name!r} differs from the source framework's "
                             f"(max difference {diff:.3g}, {diff / scale:.3g} of its largest value; tolerance "
                             f"{TOLERANCE:g})")
