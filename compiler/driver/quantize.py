"""``-r quant`` and ``-r infer`` as functions: :func:`quantize`, onnxruntime's
:func:`quantize_static` signature on top of it, and :func:`infer`.

A quantize run: import -> the float half of the pipeline (the model the result is compared
against) -> specs, calibration, range propagation, Q/DQ -> checked export, written
atomically -> optional scale JSON -> an evaluation pass over the same data that runs the
float and the quantized model side by side (per-output cosine; the infer function's metric
for both).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx
import onnx.version_converter

from ptqc.driver.config import FOLDER_FLAGS, IMAGE_FLAGS, QuantConfig, with_ini
from ptqc.driver.data import (batch_axes, check_input_shapes_count, DataError, Executor, ImagePreprocess, InputSpec,
                              load_infer_function, make_folder_func, make_infer_auto, make_reader_func,
                              run_infer_function)
from ptqc.driver.pipeline import (MAX_VALIDATION, materialize_pipeline, observe_pipeline, prepare_pipeline,
                                  weight_only_pipeline)
from ptqc.driver.ort_cache import read_cache, write_cache
from ptqc.driver.ort_overrides import QUANT_TYPES, model_proto, tensor_overrides
from ptqc.driver.ort_smooth import smoothed
from ptqc.driver.scale_json import load_scale_json, scale_table, write_scale_json
from ptqc.errors import ConfigError, ModelError, cannot_reread, onnxruntime_error
from ptqc.ir import Graph
from ptqc.onnx_io import check_model, export_model, import_model, load_model, save_model
from ptqc.pass_manager import (AnalysisStore, DumpIRInstrument, PassContext, PassManager, PassTiming, TimingInstrument,
                               VerifyInstrument)
from ptqc.driver import cache
from ptqc.driver.debug_report import write_debug_reports
from ptqc.driver.dynamic import quantize_dynamic
from ptqc.driver.mix import load_mix, write_template
from ptqc.driver.nncase_scheme import export_scheme, load_scheme
from ptqc.driver.simulate import dump_and_compare, simulator_for
from ptqc.driver.tasks import make_task_infer, task_of
from ptqc.passes import AssignQuantSpecs
from ptqc.passes.assign_quant_specs import check_weights
from ptqc.passes.calibrate import feeds_drive, first_batch, held_out, observed_values
from ptqc.passes.eliminate_dead_code import EliminateDeadCode
from ptqc.passes.infer_shapes import InferShapes
from ptqc.passes.qdq_to_qoperator import QDQToQOperator
from ptqc.passes.read_qdq import is_qdq_model, weights_only
from ptqc.passes.set_batch import SetBatch
from ptqc.quant import FLOAT8, QuantParam, QuantScheme, TensorOverride, cosine, type_bits
from ptqc.runtime import reference
from ptqc.runtime.ort import OrtRunner
from ptqc.runtime.reference import ReferenceExecutor, UnsupportedOpError
from ptqc.runtime.simulator import SimulationError
from ptqc.targets.base import Target
from ptqc.targets.families import chip_names, family_of
from ptqc.vocab import AUTO, Analysis, HISTOGRAM, Meta, Method, REFERENCE_DEFAULT

RANGE_METHODS = (AUTO, *Method)  # -qm: auto chooses among the observers' methods per tensor

log = logging.getLogger("ptqc")


@dataclass
class QuantReport:
    """What a quantize run produced and measured."""

    model: onnx.ModelProto  # the QDQ model
    float_model: onnx.ModelProto  # the float model it is compared against (after -on/--mean/cleanup)
    output: Path | None
    scale_json: Path | None = None
    cosine: dict[str, tuple[float, float]] = field(default_factory=dict)  # output -> (min, mean) over batches
    float_metric: float | None = None
    quant_metric: float | None = None
    float_ops: dict[str, list[str]] = field(default_factory=dict)
    output_params: dict[str, QuantParam] = field(default_factory=dict)
    activation_params: dict[str, QuantParam] = field(default_factory=dict)  # every quantized activation's
    observed_ranges: dict[str, tuple] = field(default_factory=dict)  # every calibrated tensor's (min, max)
    input_params: dict[str, QuantParam] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    timings: list[PassTiming] = field(default_factory=list)
    method: str = Method.MIN_MAX
    ranking: list["QuantReport"] = field(default_factory=list)  # several -qm/-i: every run's, best first
    iteration: int = 1  # batches its calibration saw
    quant_scheme: Path | None = None  # the nncase scheme written (--export-quant-scheme)
    template: Path | None = None  # the mixed-precision template written (-gt)
    simulation: list[str] = field(default_factory=list)  # -du / -r compare summary lines
    evaluated_on: str = ""  # the data the cosines (and every choice) were scored on


# ------------------------------------------------------------------------ settings
def target_of(config: QuantConfig) -> Target:
    family = family_of(config.chip or "generic")
    if family is None:
        raise ConfigError(f"--chip: unknown chip {config.chip!r} (known: {', '.join(chip_names())})")
    family.check_bit_width(config.bit_width)
    return family


def scheme_of(config: QuantConfig, family: Target) -> QuantScheme:
    """Activations: asymmetric uint8 on ``generic`` (onnxruntime's default), symmetric int8
    on the TX5xxx families; 16-bit is symmetric int16.  Weights symmetric per channel."""
    bits = config.bit_width
    symmetric = family.activation_symmetric or bits == 16
    act = {8: np.int8 if symmetric else np.uint8, 16: np.int16}[bits]
    return QuantScheme(activation_dtype=np.dtype(act), activation_symmetric=symmetric,
                       weight_dtype=np.dtype(np.int8 if bits == 8 else np.int16), per_channel=config.per_channel,
                       unify_concat=config.unify_input_scale, requantize_outputs=not config.output_dequant,
                       nodes_to_exclude=frozenset(config.skip_quant_nodes),
                       recurrent=family.runs_integer("LSTM"))


def workers_of(config: QuantConfig, client=None):
    """(worker processes, Dask client) for calibration: -cn N when given (the reference's
    default of 5 processes is not applied implicitly: on a small machine, or for an infer
    function, which cannot be split, one process is right), --dask-scheduler or an API client."""
    if client is None and config.dask_scheduler:
        try:
            from dask.distributed import Client  # optional: ptqc[dask]
        except ImportError:
            raise ConfigError("--dask-scheduler: Dask is not installed (pip install ptqc[dask])") from None
        try:
            client = Client(config.dask_scheduler, timeout="5s")
        except OSError as e:
            raise ConfigError(f"--dask-scheduler {config.dask_scheduler}: cannot connect ({e})") from None
    return config.cpu_num or 1, client


def methods_of(config: QuantConfig) -> tuple[str, ...]:
    """``-qm``: ``auto`` by default (each tensor's method chosen by measured output error,
    :mod:`ptqc.passes.choose_ranges`); several values, or ``all``, quantize once per method
    from one calibration run."""
    modes = config.effective_quant_modes
    unknown = [m for m in modes if m not in RANGE_METHODS]
    if unknown:
        raise ConfigError(f"-qm/--quant-mode {unknown[0]}: unknown method (available: {', '.join(RANGE_METHODS)})")
    return tuple(dict.fromkeys(modes))


def input_dtypes_of(config: QuantConfig, inputs: list[str]) -> dict[str, np.dtype]:
    """``-qid``: one value for every input, or one per input; float32/None keep the input float."""
    given = config.quantize_input_dtype
    if not given:
        return {}
    if len(given) == 1:
        given = given * len(inputs)
    if len(given) != len(inputs):
        raise ConfigError(f"-qid/--quantize-input-dtype: {len(given)} values for {len(inputs)} inputs")
    return {n: np.dtype(d) for n, d in zip(inputs, given) if d not in ("float32", "None")}


# ------------------------------------------------------------------------ data
def infer_function_of(data: Any, config: QuantConfig) -> tuple[Callable, str]:
    """The infer function that drives the model over the data: ``data`` (a folder of .npy, .bin
    or image files, an onnxruntime CalibrationDataReader, or an infer function) or, when None,
    the config's ``-uds/-if``, ``-d`` or the built-in ``infer_auto``.  A folder's files decide
    its kind (:func:`~ptqc.driver.data.make_folder_func`); an image flag the user set for any
    other source, or --calibrate-size for a source that is no folder, is refused by name."""
    folder = Path(data) if isinstance(data, (str, Path)) else None
    if data is None and config.user_defined_script is None and config.infer_func == "infer_auto" \
            and config.data is not None:
        folder = Path(config.data)
    if folder is not None:
        resize, crop = config.resize or (0, 0), config.center_crop or (0, 0)
        preprocess = ImagePreprocess(image_to_format=config.image_format, normalize_mean=config.image_mean,
                                     normalize_std=config.image_std, resize_width=resize[0], resize_height=resize[1],
                                     resize_method=config.resize_method, center_crop_width=crop[0],
                                     center_crop_height=crop[1])
        fn, name = make_folder_func(folder, preprocess, config.calibrate_size)
    elif data is None:
        if runs_builtin_task(config):
            fn, name = make_task_infer(task_of(config.run_config), draw=config.run_mode == "infer"), "infer_default"
        elif config.user_defined_script is not None or config.infer_func != "infer_auto":
            fn, name = load_infer_function(config.user_defined_script, config.infer_func), config.infer_func
        else:
            fn, name = make_infer_auto(config.input_shapes), "infer_auto"
    elif hasattr(data, "get_next"):
        limit = max(config.iteration) if "iteration" in config.explicit else None
        fn, name = make_reader_func(data, limit), type(data).__name__
    elif callable(data):
        fn, name = data, getattr(data, "__name__", "infer function")
    else:
        raise ConfigError(f"calibration data of type {type(data).__name__}: give a folder of .npy, .bin or image "
                          "files, a CalibrationDataReader or an infer function")
    honoured = set(FOLDER_FLAGS) if folder is not None else set()
    if name == "image folder":
        honoured |= set(IMAGE_FLAGS)
    flags = {**IMAGE_FLAGS, **FOLDER_FLAGS}
    refused = sorted(set(flags) & config.explicit - honoured)
    if refused:
        what = "an image -d folder" if refused[0] in IMAGE_FLAGS else "a -d folder"
        source = f"{name} {folder}" if folder is not None else f"{name!r}"
        raise ConfigError(f"{flags[refused[0]]}: applies only to {what}; the calibration data here comes from "
                          f"{source}")
    return fn, name


def runs_builtin_task(config: QuantConfig) -> bool:
    """An ``-rc`` run whose infer function is ``infer_default`` with no ``-uds`` script, or
    the reference's ``infer_common.py`` that is not on disk: ptqc's :mod:`ptqc.driver.tasks`."""
    script = config.user_defined_script
    return config.run_config is not None and config.infer_func == "infer_default" and (
        script is None or (Path(script).name == "infer_common.py" and not Path(script).is_file()))


def input_specs(graph: Graph) -> list[InputSpec]:
    specs = []
    for name in graph.inputs:
        v = graph.value(name)
        if v.const is None:
            specs.append(InputSpec(name, v.dtype or np.dtype(np.float32), tuple(v.shape) if v.shape is not None else None))
    return specs


SHARDABLE = ("infer_auto", "npy folder", "image folder", "bin folder")  # built-in sources ignore outputs
EVERY_BATCH = 1 << 62  # the iteration count of a -d folder read whole


def make_drive(fn: Callable, name: str, specs: list[InputSpec], config: QuantConfig,
               graph: Graph | None = None, shard: tuple[int, int] | None = None) -> Callable[[Callable], float]:
    """``drive(run)``: run the infer function with an executor whose forward calls ``run``
    (``graph``'s layers: ``executor.output_name_to_node_name()``, ``init_shape_info()``).
    A built-in source's drive also has ``drive.shard(k, n)``: the drive of worker k of n
    (-cn, Dask), which runs every n-th batch."""
    nodes = list(graph.nodes()) if graph is not None else []
    node_of_output = {o: n.name for n in nodes for o in n.outputs if o}
    layer_shapes = {n.name: [d if isinstance(d, (int, str)) and d != -1 else None for d in v.shape]
                    for n in nodes if n.name and n.outputs and n.outputs[0]
                    and (v := graph.value(n.outputs[0])).shape is not None}
    every = name in SHARDABLE and name != "infer_auto" and "iteration" not in config.explicit
    iteration = EVERY_BATCH if every else max(config.iteration)  # a -d folder without -i: all of it

    shaped = _shapes_checker(specs, config.input_shapes)

    def drive(run: Callable[[dict], list]) -> float:
        executor = Executor(shaped(run), specs, iteration=iteration, batch_size=config.batch_size,
                            dataset=str(config.data) if config.data is not None else None,
                            node_of_output=node_of_output, layer_shapes=layer_shapes, shard=shard)
        return run_infer_function(fn, executor, name)
    if name in SHARDABLE and shard is None:
        drive.shard = lambda k, n: make_drive(fn, name, specs, config, graph, (k, n))
    return drive


def _shapes_checker(specs: list[InputSpec], input_shapes: tuple) -> Callable[[Callable], Callable]:
    """With ``-is``, data of another shape (its batch axis aside) is a contradiction: ``run``
    wrapped to refuse it naming the input (a -d folder's message adds the file)."""
    check_input_shapes_count(specs, input_shapes)
    if not input_shapes:
        return lambda run: run
    checks = list(zip(specs, input_shapes, batch_axes(specs)))

    def checked(run: Callable[[dict], list], feeds: dict) -> list:
        for spec, want, axis in checks:
            got = np.shape(feeds[spec.name])
            if len(got) != len(want) or any(g != w for i, (g, w) in enumerate(zip(got, want)) if i != axis):
                raise DataError(f"-is/--input-shapes gives input {spec.name!r} as {list(want)}, the data as "
                                f"{list(got)}")
        return run(feeds)
    return lambda run: functools.partial(checked, run)


# ------------------------------------------------------------------------ quantize
def quantize(model: str | Path | onnx.ModelProto, output: str | Path | None = None, data: Any = None,
             config: QuantConfig | None = None, *, scheme: QuantScheme | None = None, evaluate: bool = True,
             executor: str = "onnxruntime", external_data: bool | None = None, client=None,
             logger: logging.Logger | None = None) -> QuantReport:
    """Quantize ``model`` to QDQ and (with ``output``) save it atomically.

    ``data``: a folder of .npy files, an onnxruntime ``CalibrationDataReader``, an infer
    function ``f(executor) -> metric``, or None to use the config's ``-uds/-if``, ``-d`` or
    random data (``infer_auto``).  ``scheme`` overrides what the config and chip decide;
    ``executor`` runs calibration on ``"onnxruntime"`` or on ptqc's numpy ``"reference"``;
    ``client`` (a ``dask.distributed.Client``) spreads it over a Dask cluster.

    With several methods (``-qm kl mse``, ``-qm all``) one calibration run fills one histogram
    per tensor that every method reads its range from; with several ``-i`` values the same run
    goes to the largest and keeps a copy of every observer after each smaller count.  Each
    (method, iteration) writes its own model (``<model>_<method>_i<N>_quantize.onnx``) and the
    report returned is the best ranked (mean over outputs of the min cosine; all evaluated on
    the same, largest data), every run's report in ``ranking``.
    """
    logger = logger or log
    with warnings_once(logger):
        return _quantize(model, output, data, with_ini(config or QuantConfig()), scheme, evaluate, executor,
                         external_data, client, logger)


class _Once(logging.Filter):
    """Passes each distinct warning once: range choice, precision trials and AdaRound's guard
    rebuild the same quantization many times, and each would repeat its warnings."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (str(record.msg), repr(record.args))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def warnings_once(logger: logging.Logger):
    """Within the block, a warning ``logger`` (or the "ptqc" logger the passes' helpers use)
    has already given is not given again."""
    once, loggers = _Once(), {logger, log}
    for x in loggers:
        x.addFilter(once)
    try:
        yield
    finally:
        for x in loggers:
            x.removeFilter(once)


def _quantize(model, output, data, config: QuantConfig, scheme: QuantScheme | None, evaluate: bool, executor: str,
              external_data: bool | None, client, logger: logging.Logger) -> QuantReport:
    if uncalibrated_kind(config) is not None:
        return _quantize_uncalibrated(model, output, data, config, evaluate, external_data)
    family = target_of(config)
    if (config.dump or config.run_mode == "compare") and family.name == "generic":
        raise ConfigError(f"{'-du/--dump' if config.dump else '-r/--run-mode compare'}: runs the chip's integer "
                          "simulator: name a TX5xxx --chip (generic has none)")
    scheme = scheme or scheme_of(config, family)
    methods, iterations, loaded = runs_of(config)
    fn, fn_name = infer_function_of(data, config)
    workers, client = workers_of(config, client)
    t0 = time.perf_counter()
    graph = import_model(model)
    check_weights(graph)
    prequantized_weights = weights_only(graph)  # float activations: calibrated; weights keep their scales
    quantized_input = is_qdq_model(graph) and not prequantized_weights
    if quantized_input:  # its scales are read, not calibrated again
        refuse_on_quantized_input(config)
        loaded, methods, iterations = True, ("loaded",), iterations[-1:]
    elif (config.quant_scheme is not None or scheme.tensor_overrides) and fn_name == "infer_auto" and data is None:
        # nncase (or onnxruntime's calibration cache): a scheme needs no calibration set; every
        # quantized tensor must then be listed
        if config.adaround and "adaround" in config.explicit:
            raise ConfigError("--adaround: learns the weights' rounding on calibration data; give -d or -uds/-if "
                              "beside --quant-scheme")
        loaded, methods, iterations = True, ("loaded",), iterations[-1:]
        config = dataclasses.replace(config, adaround=False)  # no data to learn the rounding on
    timing = TimingInstrument()
    instruments: list = [timing] + ([VerifyInstrument()] if config.debug else [])
    prepare = prepare_pipeline(config.output_name, config.mean, config.std, config.cross_layer_equalization)
    steps = Path(config.save_dir) / "steps"  # --dump-ir numbers the halves as one pipeline
    dump = (lambda first, folder=steps: [DumpIRInstrument(folder, save_model, first)] if config.dump_ir else [])
    ctx = PassContext(config=config, target=family, logger=logger)
    model_errors = _OnnxruntimeErrors(model, graph)  # the float model fails in onnxruntime: name the node
    with model_errors:
        graph = PassManager(prepare, instruments + dump(1)).run(graph, ctx).graph
    float_model = export_model(graph, constants_as_initializers=True)
    ctx.analyses[Analysis.FLOAT_MODEL] = float_model
    if any(v.elem_type == onnx.TensorProto.FLOAT16 for v in graph.values()):
        logger.warning("the model computes in float16: its float16 tensors stay float (ptqc quantizes float32 "
                       "tensors); convert it to float32 first to quantize them")
    t1 = time.perf_counter()
    precision, methods, observe_method = _precision(graph, ctx, scheme, family, config, methods)
    observe = observe_pipeline(scheme, method=observe_method, calibrate=not loaded, executor=executor,
                               workers=workers, client=client, snapshots=iterations[:-1], holdout=config.holdout,
                               percent=config.percent, quantized_input=quantized_input,
                               prequantized_weights=prequantized_weights,
                               **({"average": True} if config.minmax_average else {}))
    specs = input_specs(graph)
    drive = make_drive(fn, fn_name, specs, config, graph)
    ctx = PassContext(config=config, target=family, data=drive, logger=logger, analyses=ctx.analyses)
    _load_overrides(ctx, config, graph, scheme)
    with model_errors:
        if config.cache_distribution is not None and not loaded:
            graph = _observe_with_cache(graph, ctx, observe, methods, data, config, instruments)
        else:
            graph = PassManager(observe, instruments + dump(len(prepare) + 1)).run(graph, ctx).graph
        validation, evaluated_on = validation_of(ctx, config, drive, float_model, specs, fn_name)
    ctx.analyses[Analysis.VALIDATION_FEEDS] = validation
    every = _metric_matters(fn_name, data) or not validation
    drives = Drives(drive, drive if every else feeds_drive(validation))
    plan = _Plan(scheme, precision, methods, iterations, input_dtypes_of(config, [s.name for s in specs]),
                 instruments, dump, len(prepare) + len(observe) + 1, drives, evaluated_on if not every or not
                 validation else "every batch (the infer function's metric needs them all)",
                 {"prepare": t1 - t0, "calibrate": time.perf_counter() - t1}, quantized_input, timing)
    reports = [_materialize(plan, graph, ctx, float_model, method, iteration, evaluate, output, external_data, data)
               for iteration in iterations for method in methods]
    ranked = sorted(reports, key=lambda r: -_score(r)) if evaluate else reports
    ranked[0].ranking = ranked
    return ranked[0]


def runs_of(config: QuantConfig) -> tuple[tuple[str, ...], tuple[int, ...], bool]:
    """The methods and iteration counts to quantize with, and whether the scales are loaded
    (-lsj: one run, no calibration)."""
    methods = methods_of(config)  # validated even with -lsj: a bad -qm is refused, never ignored
    iterations = tuple(sorted(set(config.iteration)))
    loaded = config.load_scale_json is not None
    if loaded:
        methods, iterations = ("loaded",), iterations[-1:]
    if len(iterations) > 1 and config.cache_distribution is not None:
        raise ConfigError("-cd/--cache-distribution with several -i values: not built yet; give one -i")
    return methods, iterations, loaded


def _load_overrides(ctx: PassContext, config: QuantConfig, graph: Graph, scheme: QuantScheme) -> None:
    """-lsj's parameters, -qs's ranges and the scheme's tensor overrides, checked against the
    graph, into the analyses (a tensor the graph cleanup folded away is named in a warning)."""
    if config.load_scale_json is not None:
        ctx.analyses[Analysis.LOADED_PARAMS] = load_scale_json(Path(config.load_scale_json), graph)
    if config.quant_scheme is not None:
        ctx.analyses[Analysis.RANGE_OVERRIDES] = load_scheme(Path(config.quant_scheme), graph)
    if scheme.tensor_overrides:
        gone = sorted(n for n in scheme.tensor_overrides if not graph.has_value(n))
        if gone:
            ctx.logger.warning("tensor overrides for %s not used: ptqc's graph cleanup removed %s (fused or folded)",
                               ", ".join(repr(g) for g in gone[:3]), "them" if len(gone) > 1 else "it")
        ctx.analyses[Analysis.RANGE_OVERRIDES] = {**(ctx.analyses.get(Analysis.RANGE_OVERRIDES) or {}),
                                           **{n: o for n, o in scheme.tensor_overrides.items() if n not in gone}}


# what a DYNAMIC_QUANT or WEIGHT_QUANT run honours besides its INI: the model, where to write, the data to evaluate on
UNCALIBRATED_FLAGS = {"model", "chip", "run_mode", "framework", "weight", "save_dir", "log_level", "config_file",
                      "dynamic_quant", "weight_quant", "skip_quant_nodes", "data", "input_shapes", "infer_func",
                      "user_defined_script", "iteration", "batch_size", "image_format", "image_mean", "image_std",
                      "resize", "resize_method", "center_crop", "calibrate_size"}


def uncalibrated_kind(config: QuantConfig) -> str | None:
    """The MindSpore quant_type of a run that calibrates nothing (DYNAMIC_QUANT, WEIGHT_QUANT), or None."""
    return "DYNAMIC_QUANT" if config.dynamic_quant is not None else \
        "WEIGHT_QUANT" if config.weight_quant is not None else None


def _quantize_uncalibrated(model, output, data, config: QuantConfig, evaluate: bool, external_data) -> QuantReport:
    """MindSpore's DYNAMIC_QUANT (ALWC: :func:`ptqc.driver.dynamic.quantize_dynamic` with weights
    per channel) or WEIGHT_QUANT (weights through DequantizeLinear, activations float:
    :func:`ptqc.driver.pipeline.weight_only_pipeline`); then the output cosine against the float
    model on the data (-d, -uds/-if or random inputs from the shapes).  Both run on onnxruntime,
    not on a TX5xxx chip, which is refused, and so is every flag they would not honour."""
    kind = uncalibrated_kind(config)
    if target_of(config).name != "generic":
        why = "quantizes activations at run time" if kind == "DYNAMIC_QUANT" else "keeps activations float"
        raise ConfigError(f"--chip {config.chip}: {kind} {why}, which a TX5xxx chip cannot run (its integer ops "
                          "need fixed activation scales); drop --chip or use FULL_QUANT")
    refused = sorted(config.explicit - UNCALIBRATED_FLAGS)
    if refused:
        raise ConfigError(f"{refused[0]}: does not apply to quant_type={kind} (--config_file {config.config_file})")
    t0 = time.perf_counter()
    float_model = export_model(import_model(model), constants_as_initializers=True)
    if kind == "DYNAMIC_QUANT":
        with tempfile.TemporaryDirectory() as tmp:  # written once evaluated: a failing infer function leaves nothing
            qmodel = quantize_dynamic(float_model, Path(tmp) / "m.onnx", per_channel=True,
                                      nodes_to_exclude=config.skip_quant_nodes)
        method = f"dynamic {config.dynamic_quant}"
    else:
        w = config.weight_quant
        init_scale = _tune_init_scale(float_model, data, config) if w.auto_tune else w.init_scale
        qmodel = _weight_only(float_model, config, init_scale, data)
        width = f"{w.bits}-bit" if init_scale is None else \
            f"mixed-bit (init_scale {init_scale:.4g}{', auto-tuned' if w.auto_tune else ''})"
        method = f"weight-only {width} {'per channel' if w.per_channel else 'per layer'}"
    report = QuantReport(qmodel, float_model, None, method=method)
    t1 = time.perf_counter()
    if evaluate:
        fn, fn_name = infer_function_of(data, config)
        graph = import_model(float_model)
        report.cosine, report.quant_metric = compare_outputs(float_model, qmodel, make_drive(
            fn, fn_name, input_specs(graph), config, graph), report)
        report.evaluated_on = f"the data given ({kind} calibrates nothing)"
    if output is not None:
        report.output = save_model(qmodel, Path(output), external_data=external_data)
    report.seconds = {"prepare": 0.0, "calibrate": 0.0, "quantize": t1 - t0, "export": 0.0,
                      "evaluate": time.perf_counter() - t1}
    return report


AUTO_TUNE_COSINE = 0.995  # MindSpore's auto_tune target: output cosine "around 0.995"


def _weight_only(float_model: onnx.ModelProto, config: QuantConfig, init_scale: float | None,
                 data: Any = None) -> onnx.ModelProto:
    """The float model with its weights read through DequantizeLinear, as ``config.weight_quant`` says
    (with bias_correction, the input means measured on ``data``, else the config's -d or -uds/-if)."""
    w = config.weight_quant
    passes = weight_only_pipeline(w.bits, init_scale, per_channel=w.per_channel, min_size=w.min_size,
                                  min_channels=w.min_channels, skip=config.skip_quant_nodes,
                                  bias_correction=w.bias_correction)
    graph, drive = import_model(float_model), None
    if w.bias_correction:
        fn, fn_name = infer_function_of(data, config)
        if fn_name == "infer_auto":
            raise ConfigError(f"[weight_quant_param] bias_correction=true (--config_file {config.config_file}): "
                              "measures each layer's input mean on calibration data: give -d or -uds/-if")
        drive = make_drive(fn, fn_name, input_specs(graph), config, graph)
    return export_model(PassManager(passes).run(graph, PassContext(data=drive)).graph, constants_as_initializers=True)


def _tune_init_scale(float_model: onnx.ModelProto, data, config: QuantConfig) -> float:
    """MindSpore's mixed-bit ``auto_tune``: the largest init_scale (bisection on its logarithm over
    [1e-3, 0.5], 8 steps) whose model keeps every output's mean cosine at :data:`AUTO_TUNE_COSINE`
    or above on the data the run evaluates on; 1e-3 (the most bits) if even that misses it."""
    fn, fn_name = infer_function_of(data, config)
    graph = import_model(float_model)
    drive = make_drive(fn, fn_name, input_specs(graph), config, graph)

    def meets(scale: float) -> bool:
        qmodel = _weight_only(float_model, config, scale, data)
        cos, _ = compare_outputs(float_model, qmodel, drive, QuantReport(qmodel, float_model, None))
        if not cos:
            raise cannot_reread("[mixed_bit_weight_quant_param] auto_tune")
        worst = min(mean for _, mean in cos.values())
        log.info("auto_tune: init_scale %.4g gives output cosine %.5f", scale, worst)
        return worst >= AUTO_TUNE_COSINE
    lo, hi = math.log(1e-3), math.log(0.5)
    if not meets(math.exp(lo)):
        return math.exp(lo)
    for _ in range(8):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if meets(math.exp(mid)) else (lo, mid)
    return math.exp(lo)


@dataclass(frozen=True)
class _Plan:
    """What every (method, iteration) run of one quantize shares."""

    scheme: QuantScheme
    precision: dict | None  # AssignPrecision's arguments
    methods: tuple[str, ...]
    iterations: tuple[int, ...]
    input_dtypes: dict[str, np.dtype]
    instruments: list
    dump: Callable  # (first pass number, folder) -> --dump-ir instruments
    first: int  # the number of the first materializing pass
    drives: "Drives"
    evaluated_on: str
    seconds: dict[str, float]
    quantized_input: bool
    timing: TimingInstrument


def _materialize(plan: _Plan, graph: Graph, ctx: PassContext, float_model: onnx.ModelProto, method: str,
                 iteration: int, evaluate: bool, output, external_data, data) -> QuantReport:
    """One (method, iteration) run: the materializing passes on the calibrated graph (on a copy,
    with that method's reading of the observers as they were after ``iteration`` batches,
    when there are several runs), then export, evaluation and the files."""
    config, several = ctx.config, len(plan.methods) * len(plan.iterations) > 1
    t0 = time.perf_counter()
    label = "_".join([method] * (len(plan.methods) > 1) + [f"i{iteration}"] * (len(plan.iterations) > 1))
    g, analyses = graph, ctx.analyses
    if several:
        snapshots = (ctx.analyses.get(Analysis.OBSERVER_SNAPSHOTS)
                     or {plan.iterations[-1]: ctx.analyses.get(Analysis.OBSERVERS) or {}})
        observers = snapshots.get(iteration, snapshots[max(snapshots)])  # the data ran out before i batches
        g, analyses = copy.deepcopy(graph), ctx.analyses.copy()
        analyses[Analysis.OBSERVERS] = {n: o.with_method(method, percent=config.percent)
                                 if len(plan.methods) > 1 and method != AUTO else o for n, o in observers.items()}
    mctx = dataclasses.replace(ctx, analyses=analyses)
    steps = Path(config.save_dir) / "steps"
    passes = materialize_pipeline(plan.scheme, output_dequant=config.output_dequant, input_dtypes=plan.input_dtypes,
                                  choose=method == AUTO, adaround=config.adaround and not plan.quantized_input,
                                  precision=plan.precision and {**plan.precision, "method": method},
                                  bias_correction=config.bias_correction, holdout=config.holdout,
                                  batches=iteration if iteration != plan.iterations[-1] else None,
                                  layer_threshold=config.layer_threshold, float16=config.quant_scheme is not None)
    g = PassManager(passes, plan.instruments + plan.dump(plan.first, steps / label if several else steps)).run(
        g, mctx).graph
    report = _finish(g, float_model, mctx, plan.drives, method, config, evaluate,
                     _method_path(output, label, several), external_data, data, label if several else None)
    report.iteration, report.evaluated_on, report.timings = iteration, plan.evaluated_on, plan.timing.timings
    report.seconds = {**plan.seconds, "quantize": time.perf_counter() - t0 - report.seconds.get("evaluate", 0.0),
                      **report.seconds}
    return report


class _OnnxruntimeErrors(contextlib.AbstractContextManager):
    """onnxruntime failing on the user's model (opset it does not know, a type clash, a Conv
    or Reshape that cannot run on the data) as a one-line ModelError naming the node; every
    other exception passes through.  Reusable: one instance guards several blocks."""

    def __init__(self, model, graph: Graph):
        self.label = str(model) if isinstance(model, (str, Path)) else "the model"
        self.nodes = {n.name: n.op_type for n in graph.nodes() if n.name}

    def __exit__(self, kind, exc, tb):
        error = onnxruntime_error(exc, self.label, self.nodes) if exc is not None else None
        if error is not None:
            raise error from None
        return False


def refuse_on_quantized_input(config: QuantConfig) -> None:
    """An input model that is already QDQ keeps its scales: the flags that would choose them
    again are refused by name."""
    clash = [flag for flag, given in (("-lsj/--load-scale-json", config.load_scale_json is not None),
                                      ("-qs/--quant-scheme", config.quant_scheme is not None),
                                      ("-qm/--quant-mode", "quant_mode" in config.explicit),
                                      ("-mc/--mix-config", config.mix_config is not None),
                                      ("--target-cosine", config.target_cosine is not None),
                                      ("-ams/--auto-mix-strategy", "auto_mix_strategy" in config.explicit),
                                      ("--cle", config.cross_layer_equalization),
                                      ("-cd/--cache-distribution", config.cache_distribution is not None))
             if given]
    if clash:
        raise ConfigError(f"{clash[0]}: the input model is already quantized (it holds QuantizeLinear/"
                          "DequantizeLinear nodes) and keeps its scales; give its float model to quantize afresh")


def _precision(graph: Graph, ctx: PassContext, scheme: QuantScheme, family, config: QuantConfig,
               methods: tuple[str, ...]) -> tuple[dict | None, tuple[str, ...], str]:
    """AssignPrecision's arguments for -mc / -ams / --target-cosine (None: every node at
    -b bits), the methods to run, and the one calibration reads.  A -mc file is checked
    against the nodes this model quantizes (found on a copy) before any calibration; one
    histogram serves mixed modes and the searches."""
    calibrated = methods[0] if len(methods) == 1 else HISTOGRAM
    what = ("-mc/--mix-config" if config.mix_config is not None else
            "-ams/--auto-mix-strategy IOhigh" if config.auto_mix_strategy == "IOhigh" else
            "--target-cosine" if config.target_cosine is not None else
            "-ams/--auto-mix-strategy HAWQ" if config.auto_mix_strategy == "HAWQ" else None)
    if what is None:
        return None, methods, calibrated
    bits, high = config.bit_width, 1.0 - config.auto_mix_ratio
    if config.mix_config is None:  # (load_mix checks the family on its own)
        check_mixed(family, what)
        strategy, amount = (("IOhigh", high) if what.endswith("IOhigh") else ("HAWQ", high) if what.endswith("HAWQ")
                            else ("target-cosine", config.target_cosine))
        return dict(strategy=strategy, amount=amount, bits=bits, percent=config.percent), methods, \
            calibrated if strategy == "IOhigh" else HISTOGRAM
    probe = copy.deepcopy(graph)
    AssignQuantSpecs(scheme).run(probe, dataclasses.replace(ctx, analyses=AnalysisStore()))
    mix = load_mix(Path(config.mix_config), probe, family, bits)
    modes = sorted({m for _, m in mix.values()})
    if AUTO in modes and len(modes) > 1:
        raise ConfigError(f"-mc/--mix-config {config.mix_config}: mode auto with other modes in one file is not "
                          "built yet (auto chooses every tensor's method; give auto to every node or to none)")
    one = modes[0] if len(modes) == 1 else None
    return dict(mix=mix, bits=bits, percent=config.percent), (one or "mixed",), one or HISTOGRAM


def check_mixed(family: Target, what: str) -> None:
    family.check_bit_width(16, what)
    if not family.mixed_precision:
        raise ConfigError(f"{what}: rule mixed-precision: {family.name} does not support mixed precision")


def _observe_with_cache(graph: Graph, ctx: PassContext, observe: list, methods: tuple[str, ...], data: Any,
                        config: QuantConfig, instruments: list) -> Graph:
    """``-cd``: specs, then the cached observer states when the key matches, else calibration
    and a new cache."""
    path = Path(config.cache_distribution)
    fingerprint = cache.data_fingerprint(config, data)  # refuses unfingerprintable data before any work
    kind = "min_max" if methods == (Method.MIN_MAX,) else "histogram"  # the cache's two kinds of observer state
    *specs_passes, calibrate_pass = observe  # (shared biases copied,) specs, calibration
    graph = PassManager(specs_passes, instruments).run(graph, ctx).graph
    observed = observed_values(graph)
    key = cache.cache_key(export_model(graph).SerializeToString(), observed, kind, fingerprint)
    hit = cache.load(path, key)
    if hit is not None:
        observers, ctx.analyses[Analysis.FLOAT_METRIC] = hit
        if kind == "histogram":  # the cache keeps the histogram; this run reads it its own way
            observers = {n: o.with_method(methods[0], percent=config.percent) for n, o in observers.items()}
        ctx.analyses[Analysis.OBSERVERS] = observers
        return graph
    graph = PassManager([calibrate_pass], instruments).run(graph, ctx).graph
    cache.save(path, key, ctx.analyses[Analysis.OBSERVERS], ctx.analyses.get(Analysis.FLOAT_METRIC))
    return graph


def calibrate(model: str | Path | onnx.ModelProto, data: Any = None, config: QuantConfig | None = None, *,
              scheme: QuantScheme | None = None, executor: str = "onnxruntime",
              logger: logging.Logger | None = None) -> tuple[dict, dict[str, tuple[float, float]]]:
    """Calibration alone (what ``tools/bench.py calib`` times): the float half of the pipeline,
    specs, one calibration run with the first ``-qm`` method; returns the observers and each
    observed tensor's range as that method reads it."""
    config = config or QuantConfig()
    family = target_of(config)
    scheme = scheme or scheme_of(config, family)
    method = methods_of(config)[0]
    fn, fn_name = infer_function_of(data, config)
    graph = import_model(model)
    ctx = PassContext(config=config, target=family, logger=logger or log)
    prepare = prepare_pipeline(config.output_name, config.mean, config.std, config.cross_layer_equalization)
    graph = PassManager(prepare).run(graph, ctx).graph
    drive = make_drive(fn, fn_name, input_specs(graph), config)
    ctx = dataclasses.replace(ctx, data=drive)
    PassManager(observe_pipeline(scheme, method=method, executor=executor, percent=config.percent)).run(graph, ctx)
    observers = ctx.analyses[Analysis.OBSERVERS]
    ranges = {}
    for n, o in observers.items():
        r = o.range(scheme.activation_dtype, scheme.activation_symmetric)
        if r is not None:
            ranges[n] = (float(r[0]), float(r[1]))
    return observers, ranges


def validation_of(ctx: PassContext, config: QuantConfig, drive: Callable, float_model: onnx.ModelProto,
                  specs: list[InputSpec], fn_name: str = "") -> tuple[list[dict], str]:
    """The batches every choice and the evaluation are scored on, and what they are: up to
    MAX_VALIDATION batches of ``-vd``, else those calibration held out (``-vs``; found again
    by index when calibration did not run: ``-cd`` hit, ``-lsj``), else none."""
    if config.validation_data is not None:
        folder = Path(config.validation_data)
        if not folder.is_dir():
            raise ConfigError(f"-vd/--validation-data {folder}: no such folder")
        fn, name = infer_function_of(folder, config)
        run = (lambda f: []) if name in SHARDABLE else _float_run(float_model)  # noqa: E731 - built-ins ignore it
        feeds = collect_feeds(make_drive(fn, name, specs, config), run, lambda i: i < MAX_VALIDATION)
        if not feeds:
            raise ConfigError(f"-vd/--validation-data {folder}: the folder gave no batch")
        return feeds, f"{len(feeds)} batches of -vd {folder}"
    feeds = ctx.analyses.get(Analysis.VALIDATION_FEEDS)
    if feeds is None and config.holdout:  # the built-in sources ignore the outputs: no need to run the model
        run = (lambda f: []) if fn_name in SHARDABLE else _float_run(float_model)  # noqa: E731
        feeds = collect_feeds(drive, run, lambda i: held_out(i, config.holdout, MAX_VALIDATION))
    if feeds:
        return list(feeds), f"{len(feeds)} held-out batches (not calibrated on)"
    why = "-vs 0" if not config.holdout else f"fewer than {config.holdout} batches"
    return [], f"the calibration data (no batch held out: {why})"


def collect_feeds(drive: Callable, run: Callable[[dict], list], keep: Callable[[int], bool]) -> list[dict]:
    """The feeds of the batches ``keep(index)`` selects, from one pass of ``drive`` on ``run``."""
    kept, seen = [], [0]

    def collect(feeds: dict) -> list:
        if keep(seen[0]):
            kept.append(dict(feeds))
        seen[0] += 1
        return run(feeds)
    drive(collect)
    return kept


def _metric_matters(fn_name: str, data: Any) -> bool:
    """A user's infer function computes a metric over all its batches; the built-in sources
    and readers return none, so their evaluation can stay on the held-out batches."""
    return fn_name not in SHARDABLE and not hasattr(data, "get_next") and fn_name != "infer_auto"


def _score(report: QuantReport) -> float:
    return float(np.mean([lo for lo, _ in report.cosine.values()])) if report.cosine else -1.0


def _method_path(output: str | Path | None, method: str, several: bool) -> Path | None:
    if output is None or not several:
        return None if output is None else Path(output)
    output = Path(output)
    name = output.name
    if name.endswith("_quantize.onnx"):
        return output.with_name(name[: -len("_quantize.onnx")] + f"_{method}_quantize.onnx")
    return output.with_name(f"{output.stem}_{method}{output.suffix}")


def _evaluate(float_model: onnx.ModelProto, qmodel: onnx.ModelProto, drive: Callable, report: QuantReport,
              config: QuantConfig, data: Any):
    """compare_outputs, or with -cd the stored result for these very model bytes and data."""
    if config.cache_distribution is None:
        return compare_outputs(float_model, qmodel, drive, report)

    path, fingerprint = Path(config.cache_distribution), cache.data_fingerprint(config, data)
    blob = qmodel.SerializeToString()
    stored = cache.load_evaluation(path, blob, fingerprint)
    if stored is not None:
        return {k: tuple(v) for k, v in stored["cosine"].items()}, stored["metric"]
    cos, metric = compare_outputs(float_model, qmodel, drive, report)
    cache.save_evaluation(path, blob, fingerprint, {"cosine": cos, "metric": metric})
    return cos, metric


@dataclass(frozen=True)
class Drives:
    """The data in the infer-function protocol: ``data`` every batch (the passes fit on it,
    skipping the held-out batches, and score on ``["validation_feeds"]``; -du and the debug
    reports read it), ``evaluate`` what the reported cosines are measured on."""

    data: Callable
    evaluate: Callable


def _finish(graph: Graph, float_model: onnx.ModelProto, ctx: PassContext, drives: Drives, method: str,
            config: QuantConfig, evaluate: bool, output: Path | None, external_data: bool | None,
            data: Any = None, label: str | None = None) -> QuantReport:
    """Export and check, evaluate (on ``drives.evaluate``, the held-out batches unless the infer
    function's metric needs every batch; before anything is written: a failing infer function
    leaves no output behind), then save the model and the scale JSON."""
    t0 = time.perf_counter()
    qmodel = export_model(graph, constants_as_initializers=True)
    try:
        check_model(qmodel, "quantized model")
    except ModelError as e:  # our bug, not the user's: say so
        raise RuntimeError(f"ptqc produced an invalid QDQ model: {e}") from None
    input_params = {n: graph.value(n).meta[Meta.QUANT] for n in graph.inputs
                    if Meta.QUANT in graph.value(n).meta and graph.value(n).dtype is not None
                    and graph.value(n).dtype.kind in "iu"}
    store = ctx.analyses
    report = QuantReport(qmodel, float_model, None, float_ops=dict(store.get(Analysis.FLOAT_OPS, {})),
                         output_params=dict(store.get(Analysis.OUTPUT_PARAMS, {})), input_params=input_params,
                         activation_params={n: r[2] for n, r in (store.get(Analysis.ACTIVATION_QDQ) or {}).items()},
                         observed_ranges={n: o.range() for n, o in (store.get(Analysis.OBSERVERS) or {}).items()},
                         method=method, float_metric=store.get(Analysis.FLOAT_METRIC))
    t1 = time.perf_counter()
    if evaluate:
        report.cosine, report.quant_metric = _evaluate(float_model, qmodel, drives.evaluate, report, config, data)
    t2 = time.perf_counter()
    if "ir_batch" in config.explicit:  # -ib: the written model's batch; the run itself kept the data's
        graph = PassManager([SetBatch(config.ir_batch), InferShapes()]).run(graph, ctx).graph
        qmodel = report.model = export_model(graph, constants_as_initializers=True)
    if output is not None:
        table = scale_table(graph, ctx.analyses.get(Analysis.WEIGHT_PARAMS)) if config.generate_scale_json else None
        report.output = save_model(qmodel, output, external_data=external_data)
        stem = output.name.removesuffix(".onnx").removesuffix("_quantize")
        if table is not None:
            report.scale_json = write_scale_json(table, output.parent / f"{stem}_scale.json")
        if config.debug_info_save_path is not None:
            folder = Path(config.debug_info_save_path) / (label or "")  # several runs: one folder each
            write_debug_reports(folder, float_model, qmodel, graph, ctx.analyses.get(Analysis.WEIGHT_PARAMS) or {},
                                drives.data, cosine)
        if config.generate_template:
            mode = method if method in RANGE_METHODS else REFERENCE_DEFAULT  # -lsj or several -mc modes: no one method
            report.template = write_template(graph, config.bit_width, mode,
                                             output.parent / f"{stem}_mix.json", ctx.analyses.get(Analysis.MIX))
        if config.export_quant_scheme:
            report.quant_scheme = export_scheme(graph, ctx.analyses.get(Analysis.WEIGHT_PARAMS) or {},
                                                output.parent / f"{stem}_quant_scheme.json")
        if config.dump or config.run_mode == "compare":
            report.simulation = _simulate(qmodel, float_model, drives.data, report, ctx.target, config, output.parent)
    report.seconds = {"evaluate": t2 - t1, "export": (t1 - t0) + (time.perf_counter() - t2)}
    return report


def _float_run(float_model: onnx.ModelProto) -> Callable[[dict], list]:
    """onnxruntime running the float model, in the infer-function protocol (outputs in order)."""
    runner = OrtRunner(float_model.SerializeToString())
    return lambda feeds: list(runner.run(feeds).values())


def _simulate(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, drive: Callable, report: QuantReport,
              target, config: QuantConfig, save_dir: Path) -> list[str]:
    """``-du`` / ``-r compare`` on the first batch the infer function feeds."""
    feeds = first_batch(drive, _float_run(float_model))
    if not feeds:
        raise ConfigError("-du/-r compare: the infer function fed no data")
    qfeeds = {k: (report.input_params[k].quantize(x) if k in report.input_params else x) for k, x in feeds.items()}
    named = isinstance(config.model, (str, Path))
    settings = {"model": str(config.model) if named else "(in memory)", "chip": f"{config.chip} ({target.name})",
                "bit width": config.bit_width, "method": report.method, "iterations (-i)": " ".join(map(str, config.iteration)),
                "data": str(config.data or config.infer_func), "lut length (-ll, 16-bit)": config.lut_len,
                "rounding": target.rounding, "compared on": "the first batch"}
    lines = dump_and_compare(qmodel, float_model, qfeeds, target, config.lut_len, save_dir, config.dump,
                             config.run_mode == "compare", settings, Path(config.model).stem if named else "model")
    return lines


def compare_outputs(float_model: onnx.ModelProto, qmodel: onnx.ModelProto, drive: Callable,
                    report: QuantReport) -> tuple[dict[str, tuple[float, float]], float]:
    """Run both models on every batch the infer function feeds; per output, the min and mean
    cosine over batches.  The infer function sees the quantized outputs (as floats), so the
    metric it returns is the quantized model's."""
    f_run = OrtRunner(float_model.SerializeToString())
    q_run = OrtRunner(qmodel.SerializeToString())
    names = f_run.outputs
    stats: dict[str, list[float]] = {n: [] for n in names}

    def run(feeds: dict) -> list:
        ref = f_run.run(feeds)
        qfeeds = {k: (report.input_params[k].quantize(x) if k in report.input_params else x) for k, x in feeds.items()}
        got = q_run.run(qfeeds)
        outs = []
        for n in names:
            y = got[n]
            if n in report.output_params:
                y = report.output_params[n].dequantize(y)
            stats[n].append(cosine(ref[n], y))
            outs.append(y)
        return outs

    metric = drive(run)
    if not any(stats.values()):
        log.warning("the evaluation run saw no data (a CalibrationDataReader without rewind() is used up by "
                    "calibration); no cosine to report")
    return {n: (min(c), float(np.mean(c))) for n, c in stats.items() if c}, metric


# ------------------------------------------------------------------------ infer
def infer(model: str | Path | onnx.ModelProto, data: Any = None, config: QuantConfig | None = None) -> float:
    """``-r infer``: run the infer function (``-uds/-if``, ``-d`` or ``infer_auto``) on a float or
    QDQ model; returns the function's metric.  A QDQ model with a TX5xxx ``--chip`` runs on
    the integer simulator (the chip's arithmetic), anything else on onnxruntime
    (:func:`runs_on` says which)."""
    config = config or QuantConfig()
    fn, fn_name = infer_function_of(data, config)
    graph = import_model(model)
    model_errors = _OnnxruntimeErrors(model, graph)
    _, names, run_model = model_runner(graph, config, model_errors)
    drive = make_drive(fn, fn_name, input_specs(graph), config, graph)
    dequantize = output_dequantizers(graph)

    def run(feeds: dict) -> list:
        with model_errors:
            out = run_model(feeds)
        return [dequantize[n](out[n]) if n in dequantize else out[n] for n in names]
    return drive(run)


def infer_batches(model: str | Path | onnx.ModelProto, config: QuantConfig,
                  keep: Callable[[int, dict[str, np.ndarray]], None]) -> tuple[str, int]:
    """``-r infer`` without an infer function: every batch of ``-d`` (read as ``-r quant``
    reads it), or one random batch from the input shapes, through the model; ``keep(k,
    outputs)`` gets each batch's outputs as the model gives them.  A QDQ model with a TX5xxx
    ``--chip`` runs on the integer simulator, anything else on ptqc's numpy reference
    executor.  Returns where it ran and the number of batches."""
    graph = import_model(model)
    model_errors = _OnnxruntimeErrors(model, graph)
    where, names, run_model = model_runner(graph, config, model_errors, reference=True)
    fn, fn_name = infer_function_of(None, config)
    drive = make_drive(fn, fn_name, input_specs(graph), config, graph)
    count = [0]

    def run(feeds: dict) -> list:
        out = run_model(feeds)
        keep(count[0], {n: out[n] for n in names})
        count[0] += 1
        return [out[n] for n in names]
    drive(run)
    return where, count[0]


def runs_on(graph: Graph, family: Target, reference: bool = False) -> str:
    """Where ``-r infer`` runs ``graph``: the chip's integer simulator for a QDQ model on a
    TX5xxx family, else onnxruntime (or, ``reference``, ptqc's numpy executor)."""
    if family.name != "generic" and is_qdq_model(graph):
        return f"the {family.name} integer simulator"
    return "ptqc's numpy reference executor" if reference else "onnxruntime"


def model_runner(graph: Graph, config: QuantConfig, model_errors: "_OnnxruntimeErrors",
                 reference: bool = False) -> tuple[str, list[str], Callable[[dict], dict]]:
    """(:func:`runs_on`, the output names, ``run(feeds) -> {output: array}``); an op the
    reference executor lacks is refused naming the node before anything runs."""
    family = target_of(config)
    where = runs_on(graph, family, reference)
    if where.endswith("simulator"):  # the chip's integer arithmetic

        sim = simulator_for(graph, family, config.lut_len)

        def simulate(feeds: dict) -> dict:
            try:
                return sim.run(feeds)
            except SimulationError as e:  # the model or its data, not the user's code: name the node
                raise ModelError(f"simulating on {family.name}: {e}") from None
        return where, list(graph.outputs), simulate
    if reference:
        run = reference_runner(graph)
        return where, list(graph.outputs), lambda feeds: run(feeds, list(graph.outputs))
    with model_errors:
        runner = OrtRunner(export_model(graph, constants_as_initializers=True).SerializeToString())
    return where, runner.outputs, runner.run


def reference_runner(graph: Graph) -> Callable[[Mapping[str, np.ndarray], list[str]], dict[str, np.ndarray]]:
    """``run(feeds, outputs)`` on the numpy reference executor, every op checked first (an
    :class:`UnsupportedOpError` naming the node); a missing input is a ConfigError."""
    nodes = graph.topological_order()
    for n in nodes:
        if not reference.supports(n.op_type, n.domain):
            raise UnsupportedOpError(n.op_type, n.domain, n.name, opset=graph.opset)
    constants = {v.name: v.const for v in graph.values() if v.const is not None}
    executor = ReferenceExecutor(nodes, opset=graph.opset, constants=constants)

    def run(feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        missing = [name for name in graph.inputs if graph.value(name).const is None and name not in feeds]
        if missing:
            raise ConfigError(f"no data for model input {missing[0]!r}")
        return executor.run(dict(feeds), outputs)
    return run


def output_dequantizers(graph: Graph) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """For graph outputs a QuantizeLinear produces (a quantized model without -od): the
    dequantization its scale and zero point define, so infer functions always see floats."""
    out = {}
    for name in graph.outputs:
        q = graph.producer(name)
        if q is None or q.op_type != "QuantizeLinear":
            continue
        scale = graph.constant(q.inputs[1])
        zp = graph.constant(q.inputs[2]) if len(q.inputs) > 2 and q.inputs[2] else None
        if scale is None:
            continue
        p = QuantParam(np.dtype(zp.dtype if zp is not None else np.uint8), np.asarray(scale, np.float32),
                       np.asarray(zp if zp is not None else 0), q.attrs.get("axis", 1) if np.ndim(scale) else None)
        out[name] = p.dequantize
    return out


# ------------------------------------------------------------------------ onnxruntime's API
# CalibStridedMinMax and CalibMaxIntermediateOutputs only bound onnxruntime's memory ("the same
# result as all computing with None"): ptqc's calibration streams anyway, so they change nothing
_EXTRA_OPTIONS = {"ActivationSymmetric", "WeightSymmetric", "QuantizeBias", "CalibTensorRangeSymmetric",
                  "CalibPercentile", "CalibStridedMinMax", "CalibMaxIntermediateOutputs", "CalibMovingAverage",
                  "CalibMovingAverageConstant", "ForceQuantizeNoInputCheck", "MinimumRealRange",
                  "TensorQuantOverrides", "UseQDQContribOps", "QDQDisableWeightAdjustForInt32Bias",
                  "ActivationRestrictedAsymmetric", "BlockSize", "MatMulConstBOnly", "AddQDQPairToWeight",
                  "OpTypesToExcludeOutputQuantization", "DedicatedQDQPair", "extra.Sigmoid.nnapi",
                  "QDQKeepRemovableActivations", "SmoothQuant", "SmoothQuantAlpha", "SmoothQuantFolding"}
# onnxruntime's calibrators -> ptqc's methods on the same idea (Entropy: the KL-divergence
# threshold search, on ptqc's histogram)
# Distribution: onnxruntime's range for integer types is its histogram's, +-max|x|: MinMax over a
# symmetric range (its float8 scales come from the standard deviation; ptqc's are max|x| / 448)
_CALIBRATE_METHODS = {"MinMax": Method.MIN_MAX, "Entropy": Method.KL, "Percentile": Method.PERCENTILE,
                      "Distribution": Method.MIN_MAX}


# the extra options onnxruntime's own scripts (static_quantize_runner, get_qdq_config) always pass,
# accepted at the values that ask for nothing (what ptqc does anyway); any other value is refused
_NO_OP_OPTIONS = {"EnableSubgraph", "QDQOpTypePerChannelSupportToAxis"}
# activation_type / weight_type given as onnx.TensorProto data types, as onnxruntime accepts
_TENSOR_TYPES = {2: "QUInt8", 3: "QInt8", 4: "QUInt16", 5: "QInt16", 17: "QFLOAT8E4M3FN", 21: "QUInt4", 22: "QInt4"}


def _static_extra(extra_options: dict | None) -> dict:
    """quantize_static's extra_options without the do-nothing ones, checked option by option."""
    extra = {k: v for k, v in dict(extra_options or {}).items() if not _no_op(k, v)}
    if extra.get("ForceQuantizeNoInputCheck", True) is False:
        log.warning("extra_options ForceQuantizeNoInputCheck False: ptqc quantizes MaxPool, Transpose and the other "
                    "data-movement ops whatever their input, as True does")
        extra.pop("ForceQuantizeNoInputCheck")
    unknown = sorted(set(extra) - _EXTRA_OPTIONS)
    if unknown:
        raise ConfigError(f"extra_options {unknown[0]!r}: not supported "
                          f"(supported: {', '.join(sorted(_EXTRA_OPTIONS))})")
    return extra


def _write_static(fmt: str, model_input, model_output, reader, config: QuantConfig, scheme: QuantScheme,
                  external: bool | None) -> QuantReport:
    """The QDQ model written as it is, or folded into onnxruntime's QOperator ops first."""
    if fmt == "QDQ":
        return quantize(model_input, model_output, reader, config, scheme=scheme, evaluate=False,
                        external_data=external)
    report = quantize(model_input, None, reader, config, scheme=scheme, evaluate=False)
    graph = PassManager([QDQToQOperator(), EliminateDeadCode()]).run(import_model(report.model), PassContext()).graph
    report.model = export_model(graph, constants_as_initializers=True)
    report.output = save_model(report.model, Path(model_output), external_data=external)
    return report


def _static_types(activation_type, weight_type, fmt: str) -> tuple[str, str]:
    """The two QuantType names, checked as onnxruntime's check_static_quant_arguments does."""
    act, wt = (_TENSOR_TYPES.get(t, _enum_name(t)) if isinstance(t, int) else _enum_name(t)
               for t in (activation_type, weight_type))
    for what, name in (("activation_type", act), ("weight_type", wt)):
        if name not in QUANT_TYPES or what == "activation_type" and name.endswith("4"):
            raise ConfigError(f"{what} {name}: not supported (use QInt8, QUInt8, QInt16, QUInt16 or QFLOAT8E4M3FN"
                              f"{'; or QInt4/QUInt4 weights' if what == 'weight_type' else ''})")
    if (act, wt) == ("QInt8", "QUInt8"):  # onnxruntime has no integer kernels for these
        raise ConfigError("activation_type QInt8 with weight_type QUInt8: not supported (onnxruntime has no "
                          "int8 x uint8 kernels; use QUInt8 activations or QInt8 weights)")
    if fmt == "QOperator" and ("16" in act + wt or wt.endswith("4") or "FLOAT8" in act):
        raise ConfigError(f"quant_format QOperator with {act if '16' in act else wt}: only QDQ supports 16-bit, "
                          "4-bit and float8 types")
    if ("FLOAT8" in act) != ("FLOAT8" in wt):  # onnxruntime's rule
        raise ConfigError(f"activation_type {act} with weight_type {wt}: float8 goes for both or neither")
    return act, wt


def _static_warnings(report: QuantReport, scheme: QuantScheme, op_types_to_quantize) -> None:
    """What the written model does not do as asked, or where onnxruntime runs it wrong."""
    if scheme.activation_dtype == FLOAT8 and any(n.op_type in ("Relu", "Clip") for n in report.model.graph.node):
        log.warning("float8: onnxruntime 1.32's CPU graph optimizer (ORT_ENABLE_EXTENDED and above) drops a "
                    "Relu/Clip in front of a float8 QuantizeLinear, taking zero point 0 for the type's minimum, "
                    "and the outputs go wrong; run this model with graph_optimization_level ORT_ENABLE_BASIC or on "
                    "an execution provider that runs float8")
    left = sorted(set(op_types_to_quantize or ()) & set(report.float_ops))
    if left:
        log.warning("op_types_to_quantize names %s, which ptqc leaves float (%s)", ", ".join(left),
                    "; ".join(f"{op}: {', '.join(report.float_ops[op][:3])}" for op in left))


def _static_scheme(model_input, fmt: str, act: str, wt: str, extra: dict, cached: dict | None,
                   per_channel: bool, **fields) -> QuantScheme:
    """quantize_static's arguments and extra options as a QuantScheme."""
    scheme = QuantScheme(**_static_types_scheme(act, wt, extra, per_channel), **fields,
                         requantize_outputs=fmt == "QOperator",
                         min_real_range=_minimum_range(extra.get("MinimumRealRange")),
                         tensor_overrides=_with_cached(tensor_overrides(extra.get("TensorQuantOverrides") or {},
                                                                        model_input, act), cached),
                         widen_weights_for_bias=not extra.get("QDQDisableWeightAdjustForInt32Bias", False),
                         contrib_qdq=bool(extra.get("UseQDQContribOps", False)),
                         restricted_zero_points=bool(extra.get("ActivationRestrictedAsymmetric", False)),
                         block_size=_block_size(extra.get("BlockSize"), fmt, extra),
                         quantize_bias=bool(extra.get("QuantizeBias", True)),
                         matmul_const_b_only=bool(extra.get("MatMulConstBOnly", False)),
                         float_output_ops=frozenset(extra.get("OpTypesToExcludeOutputQuantization") or ()),
                         weight_qdq_pairs=bool(extra.get("AddQDQPairToWeight", False)),
                         dedicated_qdq_pairs=bool(extra.get("DedicatedQDQPair", False)),
                         keep_activations=bool(extra.get("QDQKeepRemovableActivations", False)))
    if scheme.activation_dtype == FLOAT8:  # float biases (onnxruntime keeps them float too); amax scales
        if extra.get("UseQDQContribOps"):
            raise ConfigError("extra_options UseQDQContribOps with float8: not built (float8 Q/DQ are ai.onnx's)")
        scheme = dataclasses.replace(scheme, quantize_bias=False)
    if extra.get("extra.Sigmoid.nnapi") and act == "QUInt8":  # NNAPI's fixed Sigmoid output: 1/256, 0
        scheme = dataclasses.replace(scheme, tensor_overrides={**_sigmoid_outputs(model_input),
                                                               **scheme.tensor_overrides})
    if scheme.block_size:  # onnxruntime 1.32 fuses DQ(blocked B) -> MatMul -> float into MatMulIntegerToFloat,
        # which fails on blocked scales: a MatMul graph output is requantized, as onnxruntime writes it
        scheme = dataclasses.replace(scheme, requantize_outputs=True)
    return scheme


def _static_types_scheme(act: str, wt: str, extra: dict, per_channel) -> dict:
    """The QuantScheme fields of the types and their symmetry.  onnxruntime 1.32: WeightSymmetric
    unset (or None) means symmetric for signed weight types, and its per-channel weights come
    out symmetric whatever the type (uint8 on zero point 128)."""
    weight_symmetric = bool(extra["WeightSymmetric"]) if extra.get("WeightSymmetric") is not None else \
        wt in ("QInt8", "QInt16", "QInt4") or bool(per_channel)
    return dict(activation_dtype=np.dtype(QUANT_TYPES[act]), weight_dtype=np.dtype(QUANT_TYPES[wt]),
                activation_symmetric=bool(extra.get("ActivationSymmetric") or extra.get("CalibTensorRangeSymmetric")),
                weight_symmetric=weight_symmetric, per_channel=bool(per_channel))


def _with_cached(overrides: dict[str, TensorOverride], cached: dict[str, TensorOverride] | None) -> dict:
    """The user's overrides over the cached ranges: an override fixing no range or parameters
    (a type, a symmetry) takes the cached range."""
    if not cached:
        return overrides
    both = dict(cached)
    for name, o in overrides.items():
        ranged = o.lo is None and o.scale is None and name in cached
        both[name] = dataclasses.replace(o, lo=cached[name].lo, hi=cached[name].hi) if ranged else o
    return both


def _opset_for_types(model_input, scheme: QuantScheme):
    """onnxruntime 1.32's rule: ai.onnx QuantizeLinear takes float8 from opset 19, 16-bit and
    4-bit types (and block_size) from 21, so an older model is converted first (onnx's version
    converter, as onnxruntime does), warned; UseQDQContribOps keeps the opset for 16-/4-bit types
    (com.microsoft Q/DQ)."""
    types = [scheme.activation_dtype, scheme.weight_dtype] + [t.dtype for o in scheme.tensor_overrides.values()
                                                              for t in (o, o.convert) if t is not None]
    narrow = any(t is not None and np.dtype(t).kind in "iuV" and type_bits(t) in (4, 16) for t in types)
    need = 21 if scheme.block_size or narrow and not scheme.contrib_qdq else \
        19 if any(t is not None and np.dtype(t) == FLOAT8 for t in types) else 0
    if not need:
        return model_input
    model = model_input if isinstance(model_input, onnx.ModelProto) else load_model(model_input)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), need)
    if opset >= need:
        return model_input
    log.warning("the model's opset %d has no QuantizeLinear for these types: converted to opset %d first "
                "(onnxruntime's rule; UseQDQContribOps True keeps the opset for 16- and 4-bit types)", opset, need)
    try:
        return onnx.version_converter.convert_version(model, need)
    except Exception as e:  # onnx's converter names the op it cannot convert
        raise ModelError(f"{model_input if isinstance(model_input, (str, Path)) else 'model'}: converting to opset "
                         f"{need} for its Q/DQ types failed ({' '.join(str(e).split())})") from None


def _sigmoid_outputs(model_input) -> dict[str, TensorOverride]:
    """onnxruntime's extra.Sigmoid.nnapi: every Sigmoid output at scale 1/256, zero point 0 (uint8)."""
    proto = model_proto(model_input)
    fixed = TensorOverride(np.dtype(np.uint8), scale=np.float32(1 / 256), zero_point=np.int64(0))
    return {n.output[0]: fixed for n in proto.graph.node if n.op_type == "Sigmoid" and n.domain in ("", "ai.onnx")}


def _block_size(value: Any, fmt: str, extra: dict) -> int:
    if value in (None, 0):
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ConfigError(f"extra_options BlockSize {value!r}: expected an integer of at least 2")
    if fmt != "QDQ" or extra.get("UseQDQContribOps"):
        raise ConfigError("extra_options BlockSize: blocked weights are ai.onnx opset-21 QDQ (not QOperator, not "
                          "UseQDQContribOps)")
    return value


def _minimum_range(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"extra_options MinimumRealRange {value!r}: expected a positive number or None")
    return float(value)


def _no_op(key: str, value: Any) -> bool:
    return key in _NO_OP_OPTIONS and (value is None or value is False or (hasattr(value, "__len__") and not value))


def _enum_name(value: Any) -> str:
    return getattr(value, "name", str(value)).split(".")[-1]


def _moving_average(extra: dict, method: str) -> bool:
    """onnxruntime's CalibMovingAverage for MinMax: the mean of the batches' minima and maxima, as
    its quantize_static computes it in one compute_data; CalibMovingAverageConstant (checked)
    weighs one such mean against an earlier one, which one run never has.  (onnxruntime 1.32 with
    CalibMaxIntermediateOutputs set drops every full chunk of batches in collect_data; its docs
    say that option changes nothing, and in ptqc it does not.)"""
    if not extra.get("CalibMovingAverage", False):
        return False
    if method != "MinMax":
        raise ConfigError(f"extra_options CalibMovingAverage: applies to calibrate_method MinMax, not {method}")
    constant = float(extra.get("CalibMovingAverageConstant", 0.01))
    if not 0.0 <= constant <= 1.0:
        raise ConfigError(f"extra_options CalibMovingAverageConstant {constant}: must be in [0, 1]")
    return True


def quantize_static(model_input, model_output, calibration_data_reader, quant_format="QDQ",
                    op_types_to_quantize=None, per_channel=False, reduce_range=False,
                    activation_type="QInt8", weight_type="QInt8", nodes_to_quantize=None,
                    nodes_to_exclude=None, use_external_data_format=False, calibrate_method="MinMax",
                    calibration_providers=None, extra_options=None, calibration_cache_path=None,
                    optimize_model=None) -> QuantReport:
    """onnxruntime's ``quantize_static``, same arguments (its enums, their names as strings, or
    onnx.TensorProto types for the quantized types).

    Supported: QDQ and QOperator (:mod:`ptqc.passes.qdq_to_qoperator`) formats; MinMax, Entropy
    (ptqc's kl), Percentile and Distribution (its ±max|x| range) calibration; (U)Int8/(U)Int16
    activations, (U)Int8/(U)Int16/(U)Int4 weights, QFLOAT8E4M3FN for both (scales max|x| / 448,
    the amax scaling GPU float8 uses, not onnxruntime's standard-deviation one; float biases)
    (16- and 4-bit at opset 21, float8 at 19: an older model is converted first, as onnxruntime does),
    onnxruntime 1.32's weight symmetry defaults, ``reduce_range``, per channel, op/node
    selection, external data, ``calibration_cache_path`` (onnxruntime's JSON:
    :mod:`ptqc.driver.ort_cache`), a model with prequantized weights (kept; activations
    calibrated).  extra_options: ActivationSymmetric, CalibTensorRangeSymmetric,
    WeightSymmetric, QuantizeBias (False: float biases), ForceQuantizeNoInputCheck (False warns: ptqc quantizes
    data-movement ops whatever their input), CalibPercentile, CalibMovingAverage(+Constant),
    CalibStridedMinMax / CalibMaxIntermediateOutputs (memory bounds; ptqc streams anyway),
    MinimumRealRange, ActivationRestrictedAsymmetric (:mod:`ptqc.passes.restrict_zero_points`),
    UseQDQContribOps, QDQDisableWeightAdjustForInt32Bias, BlockSize (MatMul weights:
    :mod:`ptqc.passes.block_weights`), TensorQuantOverrides (:mod:`ptqc.driver.ort_overrides`),
    MatMulConstBOnly, OpTypesToExcludeOutputQuantization, AddQDQPairToWeight
    (the weight kept float on its grid), DedicatedQDQPair, QDQKeepRemovableActivations,
    extra.Sigmoid.nnapi, SmoothQuant (+ SmoothQuantAlpha; :mod:`ptqc.driver.ort_smooth`), and at
    their do-nothing values EnableSubgraph (False) and
    QDQOpTypePerChannelSupportToAxis (empty).  ``calibration_providers``: the CPU provider;
    ``optimize_model`` is accepted (ptqc always cleans the graph first).  Not built, refused by
    name: the Distribution ``scenario`` option, SmoothQuantFolding False, anything else.  Where the
    graph differs from onnxruntime's: a graph output a Conv/Gemm/MatMul computes stays its
    accumulator times its scale (not requantized; QOperator and BlockSize requantize it), Relu
    and Clip fold into ranges, ops with no integer use (ArgMax, Cos...) stay float, warned.
    """
    fmt = _enum_name(quant_format)
    if fmt not in ("QDQ", "QOperator"):
        raise ConfigError(f"quant_format {fmt}: expected QDQ or QOperator")
    method = _enum_name(calibrate_method)
    if method not in _CALIBRATE_METHODS:
        raise ConfigError(f"calibrate_method {method}: not built yet (available: {', '.join(_CALIBRATE_METHODS)})")
    if calibration_providers not in (None, [], ["CPUExecutionProvider"], ("CPUExecutionProvider",)):
        raise ConfigError(f"calibration_providers {calibration_providers}: ptqc calibrates on the CPU provider only")
    smooth = bool((extra_options or {}).get("SmoothQuant", False))
    cached = read_cache(calibration_cache_path, method, smooth) if calibration_cache_path is not None else None
    if calibration_data_reader is None and cached is None:
        raise ConfigError("calibration_data_reader: None; quantize_static calibrates on it (give a "
                          "CalibrationDataReader, or a calibration_cache_path holding the ranges)")
    extra = _static_extra(extra_options)
    act, wt = _static_types(activation_type, weight_type, fmt)
    if "FLOAT8" in act and method == "Entropy":
        raise ConfigError("calibrate_method Entropy with float8: not built (its search counts an integer type's "
                          "levels); use MinMax, Percentile or Distribution")
    if method == "Distribution":  # onnxruntime's range for integer types: the histogram's, +-max|x|
        extra = {**extra, "CalibTensorRangeSymmetric": True}
    if smooth:  # its Mul nodes stay float, as onnxruntime excludes them
        model_input, added = smoothed(model_input, calibration_data_reader, extra)
        nodes_to_exclude = [*(nodes_to_exclude or ()), *added]
    percentile = float(extra.get("CalibPercentile", 99.999))
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"extra_options CalibPercentile {percentile}: must be in (0, 100]")
    selection = dict(op_types=frozenset(op_types_to_quantize) if op_types_to_quantize else None,
                     nodes_to_quantize=frozenset(nodes_to_quantize) if nodes_to_quantize else None,
                     nodes_to_exclude=frozenset(nodes_to_exclude or ()))
    scheme = _static_scheme(model_input, fmt, act, wt, extra, cached, per_channel=bool(per_channel),
                            reduce_range=bool(reduce_range), **selection)
    model_input = _opset_for_types(model_input, scheme)
    config = QuantConfig(bit_width=16 if act.endswith("16") else 8, output_dequant=True,
                         quant_mode=(_CALIBRATE_METHODS[method],), percent=percentile / 100.0,
                         minmax_average=_moving_average(extra, method))
    report = _write_static(fmt, model_input, model_output, None if cached else calibration_data_reader, config,
                           scheme, True if use_external_data_format else None)
    if calibration_cache_path is not None and cached is None:
        write_cache(calibration_cache_path, method, report.activation_params, report.observed_ranges, smooth)
    _static_warnings(report, scheme, op_types_to_quantize)
    return report
