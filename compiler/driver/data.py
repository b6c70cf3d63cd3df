"""Calibration data sources, all spoken through the reference tool's infer-function protocol.

A user script registers ``@onnx_infer_func.register("name")`` on a function taking an
:class:`Executor`; the function feeds its own data with ``executor.forward(x1, x2, ...)`` (one
numpy array per model input, in input order), stops after ``executor.iteration`` batches or
when ``executor.early_stop_flag`` is set, and returns a metric (1 if it has none).  The built-in
sources are infer functions too: seeded random data (:func:`make_infer_auto`, registered as
``"infer_auto"``), a ``-d`` folder of ``.npy`` files (:func:`make_npy_folder_func`), of images
with MindSpore's preprocessing (:func:`make_image_folder_func`) or of raw ``.bin`` buffers
(:func:`make_bin_folder_func`) -- :func:`make_folder_func` tells which from the files -- and an
onnxruntime ``CalibrationDataReader`` (:func:`make_reader_func`).  :func:`load_infer_function`
imports a ``-uds`` script and :func:`run_infer_function` runs one, turning a crash in user code
into a one-line error naming the user's file and line.

Imports numpy, the standard library and ``ptqc.errors`` (Pillow when an image folder is read);
nothing else of ptqc.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import logging
import numbers
import site
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ptqc.driver.config import IMAGE_FORMATS, RESIZE_METHODS
from ptqc.errors import ConfigError, PtqcError

log = logging.getLogger("ptqc")

F = TypeVar("F", bound=Callable)
InferFunction = Callable[["Executor"], Any]


class DataError(ConfigError):
    """Calibration data does not fit the model: wrong count, shape, dtype, NaN, bad file."""


@dataclass(frozen=True)
class InputSpec:
    """One model input as the data must match it.  A dim is an int (static) or None/str
    (dynamic, any size accepted); ``shape`` None means the rank is unknown."""
    name: str
    dtype: np.dtype
    shape: tuple


class Registry:
    """Functions by name, filled by user scripts through a decorator: infer functions
    (``@onnx_infer_func.register(name)``) and PyTorch model definitions
    (``@pytorch_model.register(name)``, the reference's ``-f pytorch``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._functions: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            self._functions[name] = fn  # re-registering replaces: rerunning a script is harmless
            return fn
        return decorate

    def get(self, name: str) -> Callable:
        if name not in self._functions:
            raise ConfigError(f"{self.kind} {name!r} is not registered "
                              f"(registered: {', '.join(self.names()) or 'none'})")
        return self._functions[name]

    def names(self) -> list[str]:
        return sorted(self._functions)


onnx_infer_func = Registry("infer function")
pytorch_model = Registry("pytorch model")


class Executor:
    """What an infer function sees: run settings, the model's inputs, and ``forward``, which
    checks every batch against the inputs before running the model on it."""

    def __init__(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                 inputs: list[InputSpec], *, iteration: int = 1, batch_size: int = 1,
                 dataset: str | None = None, node_of_output: dict[str, str] | None = None,
                 shard: tuple[int, int] | None = None, layer_shapes: dict[str, list] | None = None):
        if iteration < 1:
            raise ConfigError(f"-i/--iteration must be at least 1, got {iteration}")
        if batch_size < 1:
            raise ConfigError(f"-bs/--batch-size must be at least 1, got {batch_size}")
        self._run = run
        self._node_of_output = dict(node_of_output or {})
        self._layer_shapes = dict(layer_shapes or {})
        self.shape_dicts: dict[str, list] = {}  # filled by init_shape_info(), as in the reference
        self.inputs = list(inputs)
        self.input_nodes = [spec.name for spec in self.inputs]
        self.iteration = iteration
        self.batch_size = batch_size
        self.dataset = dataset
        self.early_stop_flag = False
        self.calls = 0
        # (k, n): this executor runs batches k, k + n, ... and skips the rest (returning no
        # outputs): one of n workers sharing a built-in data source, which ignores outputs.
        self.shard = shard

    def forward(self, *inputs) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise DataError(f"forward got {len(inputs)} arrays, model has {len(self.inputs)} "
                            f"inputs ({', '.join(self.input_nodes)})")
        batch = self.calls + 1
        feeds = {spec.name: check_array(array, spec, f"input {spec.name!r} of batch {batch}")
                 for spec, array in zip(self.inputs, inputs)}
        mine = self.shard is None or self.calls % self.shard[1] == self.shard[0]
        outputs = list(self._run(feeds)) if mine else []
        self.calls += 1
        if self.calls >= self.iteration:
            self.early_stop_flag = True
        return outputs

    def output_name_to_node_name(self) -> dict[str, str]:
        return dict(self._node_of_output)

    def init_shape_info(self) -> dict[str, list]:
        """Fill ``shape_dicts``: node name -> the shape of its first output as the model
        declares or shape inference finds it (a named dimension as its name, an unknown one as
        None)."""
        self.shape_dicts = {k: list(v) for k, v in self._layer_shapes.items()}
        return self.shape_dicts


def check_array(array: Any, spec: InputSpec, where: str, batch_axis: int | None = None) -> np.ndarray:
    """``array`` checked against ``spec`` (float64 cast to a float32 spec); ``where`` starts the
    error message.  ``batch_axis`` is left unchecked (a sample file may hold any number of rows
    along its input's batch axis: see :func:`batch_axes`)."""
    if not isinstance(array, np.ndarray):
        raise DataError(f"{where} is a {type(array).__name__}, not a numpy array")
    if spec.shape is not None and (array.ndim != len(spec.shape) or any(
            _is_static(d) and d != s for i, (d, s) in enumerate(zip(spec.shape, array.shape))
            if i != batch_axis)):
        raise DataError(f"{where} has shape {list(array.shape)}, model wants {_show_shape(spec.shape)}")
    if array.dtype != spec.dtype:
        # Images are often loaded as float64; casting them is what every user would do.
        if not (array.dtype == np.float64 and spec.dtype == np.float32):
            raise DataError(f"{where} has dtype {array.dtype}, model wants {np.dtype(spec.dtype)}")
        array = array.astype(np.float32)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{where} contains {'NaN' if np.isnan(array).any() else 'Inf'}")
    return array


def _is_static(dim: Any) -> bool:
    return isinstance(dim, int) and dim >= 0


def _show_shape(shape: tuple | None) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ", ".join(str(d) if _is_static(d) or isinstance(d, str) else "?" for d in shape) + "]"


def batch_axes(specs: list[InputSpec]) -> list[int | None]:
    """The batch axis of each input, read from the model's declared shapes (never assumed to
    be 0: LSTM states are ``[layers, N, hidden]``); None for an input without one.

    The batch dim is the symbolic dim (dim_param) that looks like a batch (``N``, ``B``, any
    name holding "batch") or sits at axis 0 of some input -- the one most inputs share.  An
    input holding it is batched along it.  Another input with symbolic dims is batched along
    its only one (an unnamed dim, or a name the exporter gave per input), or along the
    batch-like or else first of several; names that sit beside the batch dim in another input
    (``T`` of ``x[N, T, 8]``) are not batch dims.  An input of static shape has no batch axis:
    it is fed as is.  An input of unknown shape falls back to axis 0.  A model whose dims say
    nothing of a batch (all static, or only non-batch dims like ``[1, seq]``) keeps axis 0 as a
    static batch dim, for every input whose dim 0 matches the first input's."""
    shapes = [spec.shape for spec in specs]
    known = [shape for shape in shapes if shape is not None]
    names = list(dict.fromkeys(d for shape in known for d in shape if isinstance(d, str)))
    candidates = [n for n in names if _batch_like(n) or any(shape and shape[0] == n for shape in known)]
    batch = max(candidates, default=None,
                key=lambda n: (_batch_like(n), sum(n in shape for shape in known), -names.index(n)))
    beside = {d for shape in known if batch in shape for d in shape if isinstance(d, str) and d != batch}
    has_batch = batch is not None or any(shape and shape[0] is None for shape in known)
    axes: list[int | None] = []
    for shape in shapes:
        if shape is None:
            axes.append(0)
        elif batch is not None and batch in shape:
            axes.append(shape.index(batch))
        else:
            dynamic = [i for i, d in enumerate(shape) if has_batch and not _is_static(d) and d not in beside]
            dynamic = [i for i in dynamic if _batch_like(shape[i])] or dynamic
            axes.append(dynamic[0] if dynamic else None)
    if not any(a is not None and shape is not None for a, shape in zip(axes, shapes)):
        first = next((shape[0] for shape in known if shape), None)
        axes = [0 if shape is None or (shape and shape[0] == first) else None for shape in shapes]
    return axes


def _batch_like(name: Any) -> bool:
    return isinstance(name, str) and (name in ("N", "B") or "batch" in name.lower())


# --- random data -------------------------------------------------------------------------

def make_infer_auto(input_shapes: tuple[tuple[int, ...], ...] = ()) -> InferFunction:
    """The built-in default: ``executor.iteration`` batches of seeded random data.  A dynamic
    batch dim (each input's own batch axis, :func:`batch_axes`) becomes ``executor.batch_size``;
    ``input_shapes`` (``-is``, one shape per input in order) replaces the model's shapes.
    Reruns draw identical data."""
    def infer_auto(executor: Executor) -> float:
        shapes = _resolve_auto_shapes(executor.inputs, input_shapes, executor.batch_size)
        rng = np.random.default_rng(0)
        for _ in range(executor.iteration):
            executor.forward(*(_draw_random(rng, spec, shape)
                               for spec, shape in zip(executor.inputs, shapes)))
            if executor.early_stop_flag:  # also set from outside when calibration converges
                break
        return 1.0
    return infer_auto


def check_input_shapes_count(specs: list[InputSpec], input_shapes: tuple) -> None:
    """``-is`` gives one shape per model input, or none."""
    if input_shapes and len(input_shapes) != len(specs):
        raise ConfigError(f"-is/--input-shapes: {len(input_shapes)} shapes given, model has "
                          f"{len(specs)} inputs")


def _resolve_auto_shapes(specs: list[InputSpec], input_shapes: tuple, batch_size: int) -> list[tuple]:
    check_input_shapes_count(specs, input_shapes)
    shapes = []
    axes = batch_axes(specs)
    for i, spec in enumerate(specs):
        if input_shapes:
            shape = tuple(input_shapes[i])
            if spec.shape is not None and len(shape) != len(spec.shape):
                raise ConfigError(f"-is/--input-shapes: input {spec.name!r} has rank "
                                  f"{len(spec.shape)}, got {list(shape)}")
        elif spec.shape is not None:
            shape = tuple(batch_size if j == axes[i] and not _is_static(d) else d
                          for j, d in enumerate(spec.shape))
        else:
            shape = None
        if shape is None or not all(map(_is_static, shape)):
            raise ConfigError(f"input {spec.name!r} has dynamic shape {_show_shape(spec.shape)}; "
                              "give it with -is/--input-shapes")
        shapes.append(shape)
    return shapes


def _draw_random(rng: np.random.Generator, spec: InputSpec, shape: tuple) -> np.ndarray:
    kind = np.dtype(spec.dtype).kind
    if kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if kind in "iub":
        return rng.integers(0, 2, size=shape).astype(spec.dtype)
    raise ConfigError(f"input {spec.name!r}: cannot generate random data of type {spec.dtype}")


infer_auto = onnx_infer_func.register("infer_auto")(make_infer_auto())


# --- a folder of .npy files --------------------------------------------------------------

def make_npy_folder_func(folder: Path, limit: int | None = None) -> InferFunction:
    """``-d`` as an infer function.  Layouts: subfolders (sorted), each one sample holding
    ``<input_name>.npy`` per input; or flat files: every ``*.npy`` (sorted) is one sample of a
    one-input model, and a multi-input model reads ``<input_name>.npy`` once.  Each input has
    its own batch axis, from the model (:func:`batch_axes`: ``h [2, N, 64]`` is batched along
    axis 1).  A sample has the input's full rank or one less (then it is one row); its files
    must agree on the batch size along their batch axes.  Consecutive samples are joined along
    those axes into batches of ``executor.batch_size``; the last, shorter batch runs too unless
    an input's batch dim is static.  An input of static shape (no batch axis) is fed as is:
    each sample is then one batch, and -bs > 1 is refused.  Files are read one batch at a
    time.  ``limit`` (MindSpore's ``calibrate_size``) caps the samples read, on top of
    ``executor.iteration`` batches."""
    folder = _check_folder(folder)
    if not any(folder.glob("*.npy")) and not any(folder.glob("*/*.npy")):
        raise ConfigError(f"-d/--data {folder}: no .npy files")

    def infer_npy_folder(executor: Executor) -> float:
        return _feed_folder(executor, folder, _list_samples(folder, executor.input_nodes), _load_sample, limit)
    return infer_npy_folder


def _check_folder(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"-d/--data {folder}: no such folder")
    return folder


def _feed_folder(executor: Executor, folder: Path, samples: list[dict[str, Path]],
                 load: Callable[[Path, InputSpec, int | None], np.ndarray], limit: int | None) -> float:
    """Feed ``samples`` (at most ``limit``) in batches until ``executor.iteration`` batches ran
    or the early-stop flag rose; a batch the model rejects names its first file."""
    reach = executor.iteration * executor.batch_size
    if limit is not None and limit > reach and len(samples) > reach:
        log.warning("-d/--data %s: --calibrate-size %d, but -i %d x -bs %d reads at most %d samples; "
                    "raise -i to use more", folder, limit, executor.iteration, executor.batch_size, reach)
    samples = samples if limit is None else samples[:limit]
    used = 0
    for first_file, arrays in _batch_samples(samples, executor.inputs, executor.batch_size, load):
        try:
            executor.forward(*arrays)
        except DataError as e:
            raise DataError(f"{first_file}: {e}") from None
        used += 1
        if used == executor.iteration or executor.early_stop_flag:
            break
    if used < executor.iteration < 1 << 62 and (limit is None or limit > used * executor.batch_size):
        log.warning("-d/--data %s: only %d batches of up to %d samples for %d iterations; "
                    "using %d", folder, used, executor.batch_size, executor.iteration, used)
    return 1.0


def _list_samples(folder: Path, names: list[str], suffix: str = ".npy") -> list[dict[str, Path]]:
    """The samples of a ``-d`` folder, each ``{input name: file path}``, in order."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        return [{name: _require_file(sub, name, suffix) for name in names} for sub in subfolders]
    if len(names) == 1:
        return [{names[0]: path} for path in sorted(folder.glob(f"*{suffix}"))]
    return [{name: _require_file(folder, name, suffix) for name in names}]


def _require_file(folder: Path, name: str, suffix: str = ".npy") -> Path:
    path = folder / f"{name}{suffix}"
    if not path.is_file():
        raise DataError(f"{folder}: no file {name}{suffix} for input {name!r}")
    return path


def _batch_samples(samples: list[dict[str, Path]], specs: list[InputSpec], batch_size: int,
                   load: Callable[[Path, InputSpec, int | None], np.ndarray] | None = None
                   ) -> Iterator[tuple[Path, list[np.ndarray]]]:
    """(first file, one array per input) per batch; holds at most a batch plus one sample.
    ``load(path, spec, batch_axis)`` reads one sample (default: a .npy file).  Samples are
    counted, checked and joined along each input's own batch axis (:func:`batch_axes`).  An
    input without one is fed as is: then each sample is one batch, and ``batch_size`` > 1 is
    refused naming that input."""
    load = load or _load_sample
    axes = batch_axes(specs)
    fixed = [spec for spec, axis in zip(specs, axes) if axis is None]
    if fixed and batch_size > 1:
        raise DataError(f"-bs/--batch-size {batch_size}: input {fixed[0].name!r} "
                        f"{_show_shape(fixed[0].shape)} has no dynamic batch dim, so samples cannot be joined "
                        "along it; use -bs 1 (each sample is then one batch, fed as is)")
    pending: list[list[np.ndarray]] = [[] for _ in specs]
    rows, first_file = 0, None
    for sample in samples:
        arrays = [load(sample[spec.name], spec, axis) for spec, axis in zip(specs, axes)]
        sizes = [None if axis is None else a.shape[axis] for a, axis in zip(arrays, axes)]
        empty = next((spec for spec, a in zip(specs, arrays) if a.size == 0), None)
        if empty is not None:
            raise DataError(f"{sample[empty.name]}: input {empty.name!r} holds no data "
                            f"(shape {list(arrays[specs.index(empty)].shape)})")
        if len({n for n in sizes if n is not None}) > 1:
            listing = ", ".join(f"{sample[spec.name].name} {n} (axis {axis} of {list(a.shape)})"
                                for spec, a, n, axis in zip(specs, arrays, sizes, axes) if n is not None)
            raise DataError(f"{sample[specs[0].name].parent}: sample files have different batch sizes along "
                            f"their inputs' batch axes: {listing}")
        if fixed:  # nothing to join or split along: the sample is the batch
            yield sample[specs[0].name], arrays
            continue
        for queue, array in zip(pending, arrays):
            queue.append(array)
        first_file = first_file or sample[specs[0].name]
        rows += sizes[0]
        while rows >= batch_size:
            joined = [np.concatenate(queue, axis=axis) for queue, axis in zip(pending, axes)]
            yield first_file, [_rows(a, axis, 0, batch_size) for a, axis in zip(joined, axes)]
            # copy: a view of the remainder would keep the whole joined batch alive
            pending = [[_rows(a, axis, batch_size, None).copy()] for a, axis in zip(joined, axes)]
            rows -= batch_size
            first_file = sample[specs[0].name] if rows else None
    if rows:
        static = [s.name for s, axis in zip(specs, axes)
                  if s.shape and _is_static(s.shape[axis]) and s.shape[axis] != rows]
        if static:
            log.warning("-d/--data: dropping the last %d samples: input %r has a static batch dim",
                        rows, static[0])
            return
        yield first_file, [np.concatenate(queue, axis=axis) for queue, axis in zip(pending, axes)]


def _rows(array: np.ndarray, axis: int, start: int, stop: int | None) -> np.ndarray:
    """``array[start:stop]`` along ``axis``."""
    return array[(slice(None),) * axis + (slice(start, stop),)]


def _load_sample(path: Path, spec: InputSpec, axis: int | None = 0) -> np.ndarray:
    """One .npy sample of ``spec``: its full rank, or one less when the input has a batch axis
    (then it is one row, and the batch axis is inserted)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable .npy file for input {spec.name!r} ({_one_line(e)})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive saved under a .npy name
        raise DataError(f"{path}: not a .npy array (input {spec.name!r})")
    if spec.shape is not None and axis is not None and array.ndim == len(spec.shape) - 1:
        array = np.expand_dims(array, axis)
    return check_array(array, spec, f"{path}: input {spec.name!r}", batch_axis=axis)


# --- a folder of images (MindSpore Lite's preprocessing) -----------------------------------

IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ImagePreprocess:
    """MindSpore Lite's ``[data_preprocess_param]`` for image calibration data, applied in its
    order: load (Pillow, as RGB, or L for GRAY), resize to ``resize_width`` x ``resize_height``
    with ``resize_method`` (0: the model input's W/H; with only a center crop given, no resize),
    center crop (0: none), float32 pixel values 0..255, channel order ``image_to_format``,
    ``(x - normalize_mean) / normalize_std`` (per channel or one value; none when empty, so the
    model sees raw 0..255 values, as when ``--mean/--std`` put the normalization into the
    model), then the model input's layout, NCHW or NHWC."""

    image_to_format: str = "RGB"
    normalize_mean: tuple[float, ...] = ()
    normalize_std: tuple[float, ...] = ()
    resize_width: int = 0
    resize_height: int = 0
    resize_method: str = "LINEAR"
    center_crop_width: int = 0
    center_crop_height: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalize_mean", tuple(float(v) for v in self.normalize_mean))
        object.__setattr__(self, "normalize_std", tuple(float(v) for v in self.normalize_std))
        if self.image_to_format not in IMAGE_FORMATS:
            raise ConfigError(f"image_to_format {self.image_to_format!r}: not one of {', '.join(IMAGE_FORMATS)}")
        if self.resize_method not in RESIZE_METHODS:
            raise ConfigError(f"resize_method {self.resize_method!r}: not one of {', '.join(RESIZE_METHODS)}")
        if bool(self.normalize_mean) != bool(self.normalize_std):
            raise ConfigError("normalize_mean and normalize_std must be given together")
        for key in ("normalize_mean", "normalize_std"):
            values = getattr(self, key)
            if values and len(values) not in (1, self.channels):
                raise ConfigError(f"{key}: {len(values)} values; give 1 or {self.channels} "
                                  f"(image_to_format {self.image_to_format})")
        if 0.0 in self.normalize_std:
            raise ConfigError("normalize_std: values must be nonzero")
        for key in ("resize_width", "resize_height", "center_crop_width", "center_crop_height"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: {getattr(self, key)} is negative")

    @property
    def channels(self) -> int:
        return 1 if self.image_to_format == "GRAY" else 3


@dataclass(frozen=True)
class _ImagePlan:
    """How the images of one input become its arrays: layout, resize size (W, H) or None."""
    nchw: bool
    size: tuple[int, int] | None
    dtype: np.dtype


def make_image_folder_func(folder: Path, preprocess: ImagePreprocess | None = None,
                           limit: int | None = None) -> InferFunction:
    """``-d`` holding images (``.bmp .jpg .jpeg .png``, any case, sorted by name) for a model
    with one rank-4 image input, as an infer function: each image goes through ``preprocess``
    and ``executor.batch_size`` of them make a batch; at most ``executor.iteration`` batches
    and at most ``limit`` images (MindSpore's ``calibrate_size``) are read, one batch at a time.
    A multi-input model needs .npy (or .bin) subfolders instead."""
    folder = _check_folder(folder)
    preprocess = preprocess or ImagePreprocess()
    pillow()
    if not image_files(folder):
        raise DataError(f"-d/--data {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")

    def infer_image_folder(executor: Executor) -> float:
        if len(executor.inputs) != 1:
            raise ConfigError(f"-d/--data {folder}: an image folder feeds a model with one image input; this "
                              f"model has {len(executor.inputs)} inputs ({', '.join(executor.input_nodes)}): give "
                              "one subfolder per sample holding <input_name>.npy for every input")
        spec = executor.inputs[0]
        plan = image_plan(spec, preprocess)
        samples = [{spec.name: path} for path in image_files(folder)]
        return _feed_folder(executor, folder, samples,
                            lambda path, s, _axis: load_image(path, s, preprocess, plan), limit)
    return infer_image_folder


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def image_plan(spec: InputSpec, pre: ImagePreprocess) -> _ImagePlan:
    """Layout from the input's shape: dim 1 of 1 or 3 -> NCHW, else last dim of 1 or 3 -> NHWC,
    else (dynamic or ambiguous) NCHW."""
    shape = spec.shape
    if shape is None or len(shape) != 4:
        raise DataError(f"input {spec.name!r} has shape {_show_shape(shape)}; an image folder feeds a rank-4 "
                        "(NCHW or NHWC) input")
    _, d1, d2, d3 = shape
    nhwc = not (_is_static(d1) and d1 in (1, 3)) and _is_static(d3) and d3 in (1, 3)
    channels, height, width = (d3, d1, d2) if nhwc else (d1, d2, d3)
    if _is_static(channels) and channels != pre.channels:
        raise DataError(f"input {spec.name!r} {_show_shape(shape)} has {channels} channels; image format "
                        f"{pre.image_to_format} gives {pre.channels} (--image-format)")
    size = None
    if pre.resize_width or pre.resize_height or not (pre.center_crop_width or pre.center_crop_height):
        w, h = pre.resize_width or width, pre.resize_height or height
        if not (_is_static(w) and _is_static(h)):
            raise DataError(f"input {spec.name!r} {_show_shape(shape)} has a dynamic height or width; give the "
                            "image size with --resize W H (resize_width/resize_height)")
        size = (w, h)
    dtype = np.dtype(spec.dtype)
    if dtype.kind != "f" and not (dtype == np.uint8 and not pre.normalize_mean):
        raise DataError(f"input {spec.name!r} has dtype {dtype}; images give float32 (or uint8 without "
                        "normalization)")
    return _ImagePlan(not nhwc, size, dtype)


def load_image(path: Path, spec: InputSpec, pre: ImagePreprocess, plan: _ImagePlan) -> np.ndarray:
    image_module = pillow()
    try:
        with image_module.open(path) as opened:
            image = opened.convert("L" if pre.image_to_format == "GRAY" else "RGB")
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError... on bad files
        raise DataError(f"{path}: unreadable image for input {spec.name!r} ({_one_line(e)})") from None
    if plan.size is not None and image.size != plan.size:
        resample = getattr(image_module, "Resampling", image_module)
        image = image.resize(plan.size, {"LINEAR": resample.BILINEAR, "NEAREST": resample.NEAREST,
                                         "CUBIC": resample.BICUBIC}[pre.resize_method])
    crop_w, crop_h = pre.center_crop_width or image.width, pre.center_crop_height or image.height
    if crop_w > image.width or crop_h > image.height:
        raise DataError(f"{path}: image {image.width}x{image.height} is smaller than the center crop "
                        f"{crop_w}x{crop_h} (input {spec.name!r})")
    if (crop_w, crop_h) != image.size:
        left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., np.newaxis]
    if pre.image_to_format == "BGR":
        x = x[..., ::-1]
    if pre.normalize_mean:
        x = (x - np.asarray(pre.normalize_mean, np.float32)) / np.asarray(pre.normalize_std, np.float32)
    if plan.nchw:
        x = x.transpose(2, 0, 1)
    x = np.ascontiguousarray(x[np.newaxis], dtype=plan.dtype)
    return check_array(x, spec, f"{path}: input {spec.name!r}", batch_axis=0)


def pillow():
    try:
        from PIL import Image  # a declared dependency, refused by name if a trimmed install lacks it
    except ImportError:
        raise ConfigError("image calibration data needs Pillow: pip install pillow") from None
    return Image


# --- a folder of raw .bin buffers --------------------------------------------------------

def make_bin_folder_func(folder: Path, limit: int | None = None) -> InferFunction:
    """``-d`` holding raw little-endian ``.bin`` buffers, as an infer function: each file is one
    sample (1 along the input's batch axis, :func:`batch_axes`) whose dtype and shape come from
    the model input, so every dim but the batch must be static.  Layouts as for .npy: flat
    ``*.bin`` (sorted) for a one-input model, or one subfolder per sample holding
    ``<input_name>.bin`` per input.  Batching, ``limit``
    and ``executor.iteration`` as for .npy folders."""
    folder = _check_folder(folder)
    if not any(folder.glob("*.bin")) and not any(folder.glob("*/*.bin")):
        raise DataError(f"-d/--data {folder}: no .bin files")

    def infer_bin_folder(executor: Executor) -> float:
        for spec, axis in zip(executor.inputs, batch_axes(executor.inputs)):
            _bin_shape(spec, axis)
        return _feed_folder(executor, folder, _list_samples(folder, executor.input_nodes, ".bin"), _load_bin, limit)
    return infer_bin_folder


def _bin_shape(spec: InputSpec, axis: int | None) -> tuple[int, ...]:
    """The shape of one .bin sample: the input's, with 1 at its batch axis (if it has one)."""
    shape = spec.shape
    if shape is None or not all(_is_static(d) for i, d in enumerate(shape) if i != axis):
        raise DataError(f"input {spec.name!r} has shape {_show_shape(shape)}; .bin files need every dim but the "
                        "batch static (use .npy files)")
    if np.dtype(spec.dtype).kind not in "biufc":
        raise DataError(f"input {spec.name!r} has dtype {spec.dtype}; .bin files hold numbers")
    return tuple(1 if i == axis else d for i, d in enumerate(shape))


def _load_bin(path: Path, spec: InputSpec, axis: int | None) -> np.ndarray:
    shape = _bin_shape(spec, axis)
    dtype = np.dtype(spec.dtype).newbyteorder("<")
    expected = int(np.prod(shape)) * dtype.itemsize
    try:
        size = path.stat().st_size
        if size == expected:
            array = np.fromfile(path, dtype=dtype)
    except OSError as e:
        raise DataError(f"{path}: unreadable .bin file for input {spec.name!r} ({_one_line(e)})") from None
    if size != expected:
        raise DataError(f"{path}: {size} bytes; input {spec.name!r} ({np.dtype(spec.dtype)} "
                        f"{_show_shape(shape)}) needs {expected}")
    array = array.reshape(shape).astype(spec.dtype, copy=False)
    return check_array(array, spec, f"{path}: input {spec.name!r}", batch_axis=axis)


# --- which folder source ------------------------------------------------------------------

def make_folder_func(folder: Path, preprocess: ImagePreprocess | None = None,
                     limit: int | None = None) -> tuple[InferFunction, str]:
    """``-d``: (infer function, its name) for the kind of files the folder and its subfolders
    hold: images -> :func:`make_image_folder_func`, ``.bin`` -> :func:`make_bin_folder_func`,
    ``.npy`` -> :func:`make_npy_folder_func`.  Other files are ignored; no known files, or
    several kinds, is an error listing what was found."""
    folder = _check_folder(folder)
    found: dict[str, list[Path]] = {}
    subfolders = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    for path in sorted([*folder.iterdir(), *(q for sub in subfolders for q in sub.iterdir())]):
        kind = path.suffix if path.suffix in (".npy", ".bin") else \
            "image" if path.suffix.lower() in IMAGE_SUFFIXES else None
        if kind and not path.name.startswith(".") and path.is_file():
            found.setdefault(kind, []).append(path)
    if not found:
        raise DataError(f"-d/--data {folder}: no calibration files (.npy, .bin, or images "
                        f"{' '.join(IMAGE_SUFFIXES)})")
    if len(found) > 1:
        listing = "; ".join(
            f"{len(paths)} {kind} file{'s' if len(paths) > 1 else ''} "
            f"({', '.join(str(p.relative_to(folder)) for p in paths[:2])}{', ...' if len(paths) > 2 else ''})"
            for kind, paths in sorted(found.items()))
        raise DataError(f"-d/--data {folder}: mixed calibration files: {listing}; keep one kind per folder")
    kind = next(iter(found))
    if kind == "image":
        return make_image_folder_func(folder, preprocess, limit), "image folder"
    if kind == ".bin":
        return make_bin_folder_func(folder, limit), "bin folder"
    return make_npy_folder_func(folder, limit), "npy folder"


# --- onnxruntime CalibrationDataReader ---------------------------------------------------

def make_reader_func(reader: Any, limit: int | None = None) -> InferFunction:
    """An onnxruntime ``CalibrationDataReader`` (``get_next()`` -> {input name: array} or None)
    as an infer function: every batch it gives is run, or ``limit`` batches; the executor's
    ``iteration`` does not cut it short.  A reader with ``rewind()`` is rewound first, so it
    can serve calibration and then evaluation; one without is used up by the first run, and
    later runs see zero batches."""
    def infer_reader(executor: Executor) -> float:
        rewind = getattr(reader, "rewind", None)
        if callable(rewind):
            rewind()
        batches = 0
        while limit is None or batches < limit:
            feeds = reader.get_next()
            if feeds is None:
                break
            for key in feeds:
                if key not in executor.input_nodes:
                    raise DataError(f"calibration data reader gave {key!r}, which is not a model "
                                    f"input (inputs: {', '.join(executor.input_nodes)})")
            for name in executor.input_nodes:
                if name not in feeds:
                    raise DataError(f"calibration data reader gave no array for input {name!r} "
                                    f"in batch {batches + 1}")
            executor.forward(*(feeds[name] for name in executor.input_nodes))
            batches += 1
        return 1.0
    return infer_reader


# --- user scripts ------------------------------------------------------------------------

_script_ids = itertools.count()


def load_script(script: Path) -> None:
    """Import a user script (``-uds``) so that its ``register`` decorators run.  The script's
    folder is importable while it loads, so it may import modules next to it."""
    script = Path(script)
    if not script.is_file():
        raise ConfigError(f"-uds/--user-defined-script {script}: no such file")
    module_name = f"ptqc_user_script_{next(_script_ids)}_{script.stem}"
    # An explicit loader, so that a script not named *.py still loads.
    loader = importlib.machinery.SourceFileLoader(module_name, str(script))
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_file_location(module_name, script, loader=loader))
    folder = str(script.resolve().parent)
    sys.modules[module_name] = module
    sys.path.insert(0, folder)
    try:
        loader.exec_module(module)
    except (Exception, SystemExit) as e:
        del sys.modules[module_name]
        file, line = _locate_user_code(e) or (script, "?")
        raise ConfigError(f"-uds/--user-defined-script {script}: import failed at {file}:{line}: "
                          f"{type(e).__name__}: {_one_line(e)}") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def load_registered(registry: Registry, flag: str, script: Path | None, name: str) -> Callable:
    """The function ``name`` of ``registry`` (an infer function for ``-if``, a PyTorch model
    definition for ``-m`` with ``-f pytorch``), after importing ``script`` (``-uds``) if given."""
    if script is None:
        if name not in registry.names():
            raise ConfigError(f"{flag} {name}: not registered (registered: {', '.join(registry.names()) or 'none'}; "
                              f"a -uds script registers {registry.kind}s)")
        return registry.get(name)
    before = {n: registry.get(n) for n in registry.names()}
    load_script(script)
    if name not in registry.names():
        registered = [n for n in registry.names() if before.get(n) is not registry.get(n)]
        raise ConfigError(f"{flag} {name}: not registered by {Path(script).name} "
                          f"(registered: {', '.join(registered) or 'none'})")
    return registry.get(name)


def load_infer_function(script: Path | None, name: str) -> Callable:
    """The infer function ``name`` (``-if``), after importing ``script`` (``-uds``)."""
    return load_registered(onnx_infer_func, "-if/--infer-func", script, name)


def run_infer_function(fn: InferFunction, executor: Executor, name: str = "") -> float:
    """``fn(executor)`` as a float metric (1.0 if it returns no number).  A crash in user code
    becomes a one-line ConfigError naming the user's file and line; ptqc's own errors, and
    crashes inside ptqc, pass through unchanged."""
    name = name or getattr(fn, "__name__", "?")
    try:
        metric = user_call(fn, f"infer function {name!r}", executor)
    except DataError as e:  # a bad batch handed to forward: say where the user's code did it
        where = _user_frame(e)
        if where is None:  # ptqc's own sources (npy folder, readers) name the file themselves
            raise
        raise DataError(f"infer function {name!r} at {where[0]}:{where[1]}: {e}") from None
    if executor.calls == 0 and not getattr(fn, "__module__", "").startswith("ptqc."):
        raise DataError(f"infer function {name!r} never called executor.forward: it gave no data")
    if isinstance(metric, numbers.Real):
        return float(metric)
    log.debug("infer function %r returned %r, not a number; metric taken as 1.0", name, metric)
    return 1.0


def user_call(fn: Callable, label: str, *args, **kwargs):
    """``fn(*args, **kwargs)`` for a function of a user script: a crash in the user's code is a
    one-line ConfigError naming ``label`` and the user's file and line."""
    try:
        return fn(*args, **kwargs)
    except PtqcError:
        raise
    except (Exception, SystemExit) as e:
        where = _locate_user_code(e)
        if where is None:
            raise
        raise ConfigError(f"{label} failed at {where[0]}:{where[1]}: {type(e).__name__}: {_one_line(e)}") from e


_LIBRARY_DIRS = tuple({*(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
                       *site.getsitepackages(), site.getusersitepackages()})


def _locate_user_code(error: BaseException) -> tuple[str, int] | None:
    """(file, line) of the innermost frame of user code that ``error`` passed through, skipping
    Python's and installed libraries' frames (an np.load failure is the caller's line); None if
    that frame is ptqc's own, i.e. the error is not the user's."""
    if isinstance(error, SyntaxError) and error.filename:
        return error.filename, error.lineno
    for frame, line in reversed(list(traceback.walk_tb(error.__traceback__))):
        filename = frame.f_code.co_filename
        if filename.startswith("<") or filename.startswith(_LIBRARY_DIRS):
            continue
        module = frame.f_globals.get("__name__", "")
        return None if module == "ptqc" or module.startswith("ptqc.") else (filename, line)
    return None


def _user_frame(error: BaseException) -> tuple[str, int] | None:
    """(file, line) of the innermost frame outside ptqc and the libraries, if any."""
    for frame, line in reversed(list(traceback.walk_tb(error.__traceback__))):
        filename = frame.f_code.co_filename
        module = frame.f_globals.get("__name__", "")
        if filename.startswith("<") or filename.startswith(_LIBRARY_DIRS) or module == "ptqc" \
                or module.startswith("ptqc."):
            continue
        return filename, line
    return None


def _one_line(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return error.msg
    return " ".join(str(error).split())


