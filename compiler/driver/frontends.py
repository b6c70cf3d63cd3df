"""``-f``: a model from another framework converted to ONNX before anything else (the reference
tool's pytorch2onnx / paddle2onnx / caffe2onnx / tensorflow2onnx step), then checked against
its own framework on the same inputs (the reference's float check): the largest output
difference relative to the output's largest value must stay within ``TOLERANCE``, else the
run stops naming the output.  The converted model is written (atomically) to
``{save_dir}/{model stem}.onnx`` and the run goes on with it; ``-r convert`` stops there
and then cleans it as for an ONNX model.

Built:

- ``paddle``: PaddlePaddle inference models (``-m`` the ``.pdmodel`` or PIR ``.json`` program,
  ``-w`` its ``.pdiparams``; paddle2onnx at opset 17).
- ``pytorch``: ``-m`` names a model definition the ``-uds`` script registers with
  ``@pytorch_model.register(name)``; called with ``weight_path`` (``-w``, a ``.pth``) it returns
  ``{"model": module, "inputs": [tensors]}`` and optionally ``dynamic_axes_inputs`` /
  ``dynamic_axes_outputs`` (``{name: {axis: label}}``; their keys name the model's inputs and
  outputs) and ``concrete_args`` (keyword arguments of ``forward``, fixed for the export).
  Exported by ``torch.onnx.export``'s TorchScript tracer at opset 17 (the dynamo exporter needs
  onnxscript and prints its progress), checked against the module on the returned inputs.

- ``tensorflow``: ``-m`` a SavedModel folder (its ``serving_default`` signature; ``-snn``/``-enn``
  may name other input/output tensors) or a frozen GraphDef ``.pb`` (``-snn``/``-enn`` name
  its input and output tensors, required); tf2onnx at opset 17, ``-c2chw`` making the inputs
  NCHW (tf2onnx's ``inputs_as_nchw``); checked against TensorFlow running the same graph.

- ``caffe``: ``-m`` the ``.prototxt``, ``-w`` the ``.caffemodel`` (default: beside it); caffe2onnx
  2.0.1 (installed ``--no-deps``: it pins onnx 1.6 and ships protobuf-3 generated code, so its
  ``caffe.proto`` descriptor is loaded into a pool of its own for today's protobuf).  No Caffe
  runtime installs here (pycaffe has no wheel), so the conversion is run by onnxruntime but
  not compared with Caffe's outputs: said in the log.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import io
import os
import random
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import descriptor_pool, message_factory

from ptqc.driver.data import load_registered, pytorch_model, user_call
from ptqc.errors import ConfigError, ModelError
from ptqc.files import atomic_path

TOLERANCE = 1e-4
OPSET = 17


def to_onnx(framework: str, model: Path, weight: Path | None, save_dir: Path,
            input_shapes: tuple = (), script: Path | None = None, nodes: tuple = ((), (), False)) -> Path:
    """The ONNX model to quantize: ``model`` itself for onnx, else the converted and checked one
    (``nodes``: tensorflow's ``-snn``, ``-enn`` and ``-c2chw``)."""
    if framework == "onnx":
        if weight is not None:
            raise ConfigError("-w/--weight: applies only to -f pytorch, caffe or paddle (an ONNX model holds its "
                              "weights)")
        return model
    if framework == "pytorch":
        return _pytorch(str(model), weight, save_dir, script)
    if framework == "tensorflow":
        return _tensorflow(model, save_dir, input_shapes, nodes)
    if framework == "caffe":
        return _caffe(model, weight, save_dir, input_shapes)
    if framework != "paddle":
        raise ConfigError(f"-f/--framework {framework}: not built yet (built: onnx, caffe, paddle, pytorch, "
                          "tensorflow); convert the model to ONNX with its framework's exporter and give the .onnx")
    return _paddle(model, weight, save_dir, input_shapes)


def _caffe(model: Path, weight: Path | None, save_dir: Path, input_shapes: tuple) -> Path:
    if model.suffix != ".prototxt":
        raise ConfigError(f"-m/--model {model}: -f caffe takes the network's .prototxt (-w its .caffemodel)")
    weight = weight if weight is not None else model.with_suffix(".caffemodel")
    for path, flag in ((model, "-m/--model"), (weight, "-w/--weight")):
        if not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    out = save_dir / f"{model.stem}.onnx"
    label = f"-f caffe {model}"
    with _converting(out, label) as tmp:
        proto = caffe_to_onnx(model, weight)

        onnx.save(proto, tmp)
        _check(tmp, None, input_shapes, label)
    return out


def caffe_to_onnx(prototxt: Path, caffemodel: Path):
    """caffe2onnx's conversion (its Caffe2Onnx) with its caffe.proto loaded for today's protobuf,
    its random node names seeded (the same files give the same model), the weights it also
    lists as graph inputs made plain initializers, at the opset its nodes follow (11)."""
    sys.modules.setdefault("caffe2onnx.proto.caffe_upsample_pb2", caffe_messages())
    from caffe2onnx.src.caffe2onnx import Caffe2Onnx  # optional frontend (installed --no-deps)
    from caffe2onnx.src.load_save_model import loadcaffemodel  # optional frontend (installed --no-deps)

    state = random.getstate()
    random.seed(0)
    try:
        with _quiet():
            net, params = loadcaffemodel(str(prototxt), str(caffemodel))
            proto = Caffe2Onnx(net, params, str(prototxt.with_suffix(".onnx"))).createOnnxModel()
    finally:
        random.setstate(state)
    weights = {t.name for t in proto.graph.initializer}
    kept = [i for i in proto.graph.input if i.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    # its nodes follow opset 11 (it was written for onnx 1.6); onnx's helper stamped today's default
    del proto.opset_import[:]
    proto.opset_import.add(domain="", version=11)
    return proto


def caffe_messages():
    """caffe2onnx's ``caffe_upsample_pb2`` (Caffe's messages: ``NetParameter``, ...) rebuilt from
    the serialized descriptor its generated file holds (the file itself needs protobuf 3)."""
    spec = importlib.util.find_spec("caffe2onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("-f/--framework caffe: needs caffe2onnx (pip install --no-deps caffe2onnx==2.0.1; see "
                          "README, frontends)")
    pb2 = Path(spec.submodule_search_locations[0]) / "proto" / "caffe_upsample_pb2.py"
    found = re.search(r"serialized_pb=(b'.*?')\n\)", pb2.read_text(), re.S)
    if found is None:
        raise ConfigError(f"-f/--framework caffe: {pb2} holds no caffe.proto descriptor (caffe2onnx 2.0.1 expected)")
    pool = descriptor_pool.DescriptorPool()
    file = pool.AddSerializedFile(ast.literal_eval(found.group(1)))
    module = types.ModuleType("caffe_upsample_pb2")
    for name in file.message_types_by_name:
        setattr(module, name, message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")))
    return module


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
            import paddle  # optional frontend (ptqc[paddle])
            import paddle2onnx  # optional frontend (ptqc[paddle])
    except ImportError as e:
        raise ConfigError(f"-f/--framework paddle: needs paddlepaddle and paddle2onnx ({e.name} is not "
                          "installed; see README, frontends)") from None
    out = save_dir / f"{model.stem}.onnx"
    with _converting(out, f"-f paddle {model}") as tmp, _quiet():
        paddle2onnx.export(str(model), str(weight), save_file=tmp, opset_version=OPSET, verbose=False)
        _check(tmp, _paddle_runner(paddle, model, weight), input_shapes, f"-f paddle {model}")
    return out


def _tensorflow(model: Path, save_dir: Path, input_shapes: tuple, nodes: tuple) -> Path:
    starts, ends, nchw = nodes
    frozen = model.is_file() and model.suffix == ".pb"
    if not (frozen or (model / "saved_model.pb").is_file()):
        raise ConfigError(f"-m/--model {model}: -f tensorflow takes a SavedModel folder or a frozen GraphDef .pb")
    if frozen and not (starts and ends):
        raise ConfigError(f"-snn/--start-node-names and -enn/--end-node-names: a frozen GraphDef ({model.name}) needs "
                          "its input and output tensor names")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up lines
    try:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tensorflow as tf  # optional frontend (ptqc[tensorflow])
            from tf2onnx import convert, tf_loader  # optional frontend (ptqc[tensorflow])
    except ImportError as e:
        raise ConfigError(f"-f/--framework tensorflow: needs tensorflow and tf2onnx ({e.name} is not installed; "
                          "see README, frontends)") from None
    tf.get_logger().setLevel("ERROR")
    tensor = lambda n: n if ":" in n else f"{n}:0"  # noqa: E731 - a node name means its first output
    starts, ends = [tensor(n) for n in starts], [tensor(n) for n in ends]
    out = save_dir / f"{model.stem if frozen else model.resolve().name}.onnx"
    label = f"-f tensorflow {model}"
    with _converting(out, label) as tmp, _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if frozen:
            graph_def, inputs, outputs = tf_loader.from_graphdef(str(model), starts, ends)
        else:
            graph_def, inputs, outputs = tf_loader.from_saved_model(str(model), starts or None, ends or None,
                                                                    tag="serve", signatures=["serving_default"])[:3]
        proto, _ = convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs, opset=OPSET,
                                          inputs_as_nchw=inputs if nchw else None)

        onnx.save(proto, tmp)
        _check(tmp, _tf_runner(tf, graph_def, inputs, outputs, nchw), input_shapes, label)
    return out


def _tf_runner(tf, graph_def, inputs: list[str], outputs: list[str], nchw: bool):
    """The frozen graph on TensorFlow: feeds by ONNX input name (NCHW ones transposed back) -> outputs."""
    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")
    fn = tf.compat.v1.wrap_function(imported, []).prune(inputs, outputs)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [np.transpose(feeds[n], (0, 2, 3, 1)) if nchw and feeds[n].ndim == 4 else feeds[n] for n in inputs]
        return [np.asarray(t) for t in fn(*[tf.constant(a) for a in args])]
    return run


@contextlib.contextmanager
def _converting(out: Path, label: str):
    """A temporary path beside ``out`` to write the converted model to, renamed to ``out`` when
    the block succeeds (removed otherwise: ``files.atomic_path``); a converter's own failure
    becomes a ModelError."""
    try:
        with atomic_path(out) as tmp:
            yield tmp
    except Exception as e:
        if isinstance(e, (ConfigError, ModelError)):
            raise
        raise ModelError(f"{label}: conversion failed: {' '.join(str(e).split()) or type(e).__name__}") from None


def _pytorch(name: str, weight: Path | None, save_dir: Path, script: Path | None) -> Path:
    try:
        import torch  # optional frontend (ptqc[pytorch])
    except ImportError:
        raise ConfigError("-f/--framework pytorch: needs torch (not installed; see README, frontends)") from None
    if weight is not None and not weight.is_file():
        raise ConfigError(f"-w/--weight {weight}: no such file")
    define = load_registered(pytorch_model, "-m/--model", script, name)
    spec = user_call(define, f"-m/--model {name}", **({"weight_path": str(weight)} if weight else {}))
    known = {"model", "inputs", "dynamic_axes_inputs", "dynamic_axes_outputs", "concrete_args"}
    if not isinstance(spec, dict) or not {"model", "inputs"} <= set(spec) or set(spec) - known:
        got = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ConfigError(f"-m/--model {name}: the model definition must return a dict with keys 'model' and "
                          f"'inputs' (optional: dynamic_axes_inputs, dynamic_axes_outputs, concrete_args); got {got}")
    module, inputs = spec["model"], spec["inputs"]
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not isinstance(module, torch.nn.Module) or not all(isinstance(t, torch.Tensor) for t in inputs) or not inputs:
        raise ConfigError(f"-m/--model {name}: 'model' must be a torch.nn.Module and 'inputs' a non-empty list of "
                          "torch.Tensor")
    out = save_dir / f"{name}.onnx"
    with _converting(out, f"-f pytorch {name}") as tmp:
        proto = torch_to_onnx(module, inputs, None, spec.get("dynamic_axes_inputs"), spec.get("dynamic_axes_outputs"),
                              spec.get("concrete_args"), label=f"-f pytorch {name}")

        onnx.save(proto, tmp)
        with torch.no_grad():
            want = module(*inputs, **(spec.get("concrete_args") or {}))
        want = [t.detach().numpy() for t in (want if isinstance(want, (list, tuple)) else [want])]
        feeds = {i.name: t.detach().numpy() for i, t in zip(proto.graph.input, inputs)}
        _compare(tmp, feeds, want, f"-f pytorch {name}")
    return out


def torch_to_onnx(module, inputs: list, names: list | None = None, dynamic_inputs: dict | None = None,
                  dynamic_outputs: dict | None = None, kwargs: dict | None = None, label: str = "model"):
    """``module`` (eval mode, no gradients) traced on ``inputs`` to an ONNX ModelProto at
    ``OPSET``: inputs named ``names``, else by ``dynamic_inputs``' keys, else ``input`` (or
    ``input0``, ...); outputs by ``dynamic_outputs``' keys; those axes left dynamic."""
    import torch  # optional frontend (ptqc[pytorch])

    names = list(names or dynamic_inputs or (["input"] if len(inputs) == 1 else
                                             [f"input{i}" for i in range(len(inputs))]))
    if len(names) != len(inputs):
        raise ConfigError(f"{label}: dynamic_axes_inputs names {len(names)} inputs, the model takes {len(inputs)}")
    outputs = list(dynamic_outputs) if dynamic_outputs else None
    axes = {**(dynamic_inputs or {}), **(dynamic_outputs or {})}
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    module.eval()
    if kwargs:  # fixed keyword arguments: Python constants of the trace, not traced tensors
        bound = module.forward

        def forward(*xs):
            return bound(*xs, **kwargs)
        module.forward = forward
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's own notice
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(module, tuple(inputs), buf, input_names=names, output_names=outputs, opset_version=OPSET,
                              dynamic_axes=axes or None, **options)
    except Exception as e:
        raise ModelError(f"{label}: torch.onnx.export failed: {' '.join(str(e).split())[:300] or type(e).__name__}") \
            from None
    finally:
        if kwargs:
            del module.forward  # the class's forward again
    return onnx.load_from_string(buf.getvalue())


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
    dimensions from ``-is``, else 1); with no ``source`` (Caffe) run only, its outputs finite."""
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
    if source is None:
        got = session.run(None, feeds)
        if not all(np.all(np.isfinite(g)) for g in got):
            raise ModelError(f"{label}: the converted model gives non-finite outputs on standard-normal inputs")
        return
    _compare(session, feeds, source(feeds), label)


def _compare(session, feeds: dict, want: list, label: str) -> None:
    """onnxruntime's outputs of the converted model (a session or a path) against the source's."""
    if not isinstance(session, ort.InferenceSession):
        session = ort.InferenceSession(session, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    if len(got) != len(want):
        raise ModelError(f"{label}: the converted model has {len(got)} outputs, the source {len(want)}")
    for out, g, w in zip(session.get_outputs(), got, want):
        w = np.asarray(w, np.float64)
        diff = float(np.max(np.abs(np.asarray(g, np.float64) - w))) if w.size else 0.0
        scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-6)
        if np.shape(g) != np.shape(w) or diff > TOLERANCE * scale:
            raise ModelError(f"{label}: the converted model's output {out.name!r} differs from the source framework's "
                             f"(max difference {diff:.3g}, {diff / scale:.3g} of its largest value; tolerance "
                             f"{TOLERANCE:g})")
