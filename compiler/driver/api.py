"""The Python API: what the CLI runs, callable from a notebook.

``quantize`` is ``-r quant``; ``quantize_static`` is onnxruntime's function of the same name
and arguments, so an onnxruntime user changes one import; ``convert`` runs the cleanup
pipeline (``-r convert``); ``infer_float`` runs a model with the numpy reference executor;
``infer`` runs a user's infer function on a float or QDQ model (``-r infer``).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from ptqc.driver.pipeline import build_pipeline
from ptqc.errors import ConfigError, ModelError
from ptqc.ir import Graph
from ptqc.onnx_io import import_model, save_model
from ptqc.pass_manager import (DumpIRInstrument, PassContext, PassManager, PassTiming,
                               TimingInstrument, VerifyInstrument)
from ptqc.vocab import Analysis

log = logging.getLogger("ptqc")


@dataclass
class ConvertReport:
    """What a convert run did: op counts of the input and output models, pass timings."""

    graph: Graph
    output: Path | None
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    timings: list[PassTiming]
    seconds: dict[str, float] = field(default_factory=dict)  # import / passes / export
    rewrites: dict[str, int] = field(default_factory=dict)
    not_fused: list[tuple[str, str, str]] = field(default_factory=list)


def op_counts(graph: Graph, constants_as_initializers: bool = False) -> dict[str, int]:
    """Node counts per op type of the model ``graph`` exports to: ops, plus the Constant
    nodes its constants are written back as (custom domains as ``domain::Op``)."""
    counts = Counter(graph.op_counts())
    if not constants_as_initializers:
        counts["Constant"] += sum(1 for v in graph.values() if v.const is not None and v.origin is not None
                                  and v.origin.kind == "constant_node" and v.name not in graph.inputs)
    return dict(sorted((k, c) for k, c in counts.items() if c))


def convert(model: str | Path | onnx.ModelProto, output: str | Path | None = None, *,
            dump_ir: str | Path | None = None, debug: bool = False,
            constants_as_initializers: bool = False,
            logger: logging.Logger | None = None) -> ConvertReport:
    """Import ``model``, run the convert pipeline, and (if ``output``) save atomically.

    ``dump_ir`` writes ``NN_<pass>.onnx`` after each pass into that folder; ``debug``
    verifies the graph after every modifying pass.
    """
    logger = logger or log
    t0 = time.perf_counter()
    graph = import_model(model)
    counts_before = op_counts(graph)
    t1 = time.perf_counter()
    timing = TimingInstrument()
    instruments = [timing]
    if debug:
        instruments.append(VerifyInstrument())
    if dump_ir is not None:
        instruments.append(DumpIRInstrument(dump_ir, lambda g, p: save_model(
            g, p, constants_as_initializers=constants_as_initializers)))
    ctx = PassContext(logger=logger)
    graph = PassManager(build_pipeline("convert"), instruments).run(graph, ctx).graph
    t2 = time.perf_counter()
    if output is not None:
        save_model(graph, output, constants_as_initializers=constants_as_initializers)
    t3 = time.perf_counter()
    return ConvertReport(graph, Path(output) if output is not None else None, counts_before,
                         op_counts(graph, constants_as_initializers), timing.timings,
                         {"import": t1 - t0, "passes": t2 - t1, "export": t3 - t2},
                         dict(ctx.analyses.get(Analysis.REWRITE_COUNTS, {})),
                         [f for fs in ctx.analyses.get(Analysis.REWRITE_FAILURES, {}).values() for f in fs])


def infer_float(model: str | Path | onnx.ModelProto | Graph, feeds: Mapping[str, np.ndarray],
                outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Run a model with the numpy reference executor.  An op the executor lacks is an
    :class:`UnsupportedOpError` naming the node, raised before anything runs."""
    graph = model if isinstance(model, Graph) else import_model(model)
    return reference_runner(graph)(feeds, outputs or list(graph.outputs))


def random_feeds(graph: Graph, input_shapes: tuple[tuple[int, ...], ...] = (),
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs from the model's input shapes (the reference tool's ``infer_auto``);
    ``input_shapes`` (``-is``) gives the shapes of inputs with dynamic dims, in order."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    runtime_inputs = [n for n in graph.inputs if graph.value(n).const is None]
    if input_shapes and len(input_shapes) != len(runtime_inputs):
        raise ConfigError(f"-is/--input-shapes: {len(input_shapes)} shapes given, model has "
                          f"{len(runtime_inputs)} inputs")
    for i, name in enumerate(runtime_inputs):
        v = graph.value(name)
        shape = input_shapes[i] if input_shapes else v.static_shape
        if shape is None:
            raise ConfigError(f"input {name!r} has dynamic shape {v.shape}; give it with -is/--input-shapes")
        if v.shape is not None and len(shape) != len(v.shape):
            raise ConfigError(f"-is/--input-shapes: input {name!r} has rank {len(v.shape)}, got {list(shape)}")
        dtype = v.dtype or np.dtype(np.float32)
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ConfigError(f"input {name!r}: cannot generate random data of type {dtype}")
    return feeds


def load_feeds(graph: Graph, folder: Path) -> dict[str, np.ndarray]:
    """Inputs from ``-d``: ``<input_name>.npy`` per input, or for a one-input model the
    first ``.npy`` file.  Shapes and dtypes are checked against the model."""
    if not folder.is_dir():
        raise ConfigError(f"-d/--data {folder}: no such folder")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise ConfigError(f"-d/--data {folder}: no .npy files")
    runtime_inputs = [n for n in graph.inputs if graph.value(n).const is None]
    feeds = {}
    for name in runtime_inputs:
        path = folder / f"{name}.npy"
        if not path.exists():
            if len(runtime_inputs) != 1:
                raise ConfigError(f"-d/--data {folder}: no file {name}.npy for input {name!r}")
            path = files[0]
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable .npy file ({e})") from None
        v = graph.value(name)
        if v.shape is not None and (len(v.shape) != array.ndim or any(
                isinstance(d, int) and d != s for d, s in zip(v.shape, array.shape))):
            raise ConfigError(f"{path}: shape {list(array.shape)} does not fit input {name!r} {list(v.shape)}")
        if v.dtype is not None and array.dtype != v.dtype:
            raise ConfigError(f"{path}: dtype {array.dtype} does not fit input {name!r} ({v.dtype})")
        feeds[name] = array
    return feeds


from ptqc.driver.quantize import (QuantReport, infer, quantize, quantize_static, reference_runner)  # noqa: E402
from ptqc.driver.data import onnx_infer_func  # noqa: E402
from ptqc.driver.dynamic import quantize_dynamic  # noqa: E402

__all__ = ["ConvertReport", "QuantReport", "convert", "infer", "infer_float", "load_feeds", "onnx_infer_func",
           "op_counts", "quantize", "quantize_dynamic", "quantize_static", "random_feeds", "ModelError"]
