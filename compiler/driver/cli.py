"""The ``ptqc`` command, shaped like the reference tool:

    ptqc [--chip NAME] quant -m model.onnx [-d data/ | -uds s.py -if f] [-qm min_max] --save-dir out/
    ptqc [--chip NAME] quant -r convert -m model.onnx --save-dir out/ [--dump-ir] [-l 0..3]
    ptqc [--chip TX...] quant -r infer -m model_quantize.onnx -uds s.py -if f   (a chip: the simulator)
    ptqc --chip NAME quant -r compare -m model.onnx -d data/ --save-dir out/ [-du] [-ll 10]

Every flag of the reference is parsed; a flag whose feature is not built yet exits 2 and
says so.  Exit codes: 0 success, 2 bad input or configuration (one line naming the file,
node or flag), 1 internal error.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn, Sequence

import numpy as np
import onnx
import onnxruntime
import onnxruntime as ort

from ptqc.driver.config import (FOLDER_FLAGS, FRAMEWORKS, IMAGE_FLAGS, IMAGE_FORMATS, INPUT_DTYPES, MIX_STRATEGIES,
                                QUANT_MODES, RESIZE_METHODS, RUN_MODES, QuantConfig, from_cli, with_ini)
from ptqc import __version__
from ptqc.driver.tasks import load_run_config, task_of, write_labels
from ptqc.errors import ConfigError, PtqcError
from ptqc.targets.families import chip_names, family_of
from ptqc.driver.quantize import (infer, infer_batches, input_specs, quantize, runs_builtin_task, runs_on, target_of,
                                  UNCALIBRATED_FLAGS, uncalibrated_kind)
from ptqc.driver.api import convert
from ptqc.driver.data import Executor
from ptqc.driver.frontends import to_onnx
from ptqc.files import atomic_open
from ptqc.onnx_io import import_model
from ptqc.passes.read_qdq import is_qdq_model
from ptqc.runtime.reference import UnsupportedOpError

# What each run mode can honour today; any other flag the user sets is refused by name.
_COMMON = {"model", "chip", "run_mode", "framework", "weight", "save_dir", "log_level", "start_node_names",
           "end_node_names", "convert2chw"}
_DATA = {"data", "input_shapes", "infer_func", "user_defined_script", "iteration", "batch_size"}
_IMAGES = set(IMAGE_FLAGS) | set(FOLDER_FLAGS)  # -d folders: image preprocessing, calibrate_size
BUILT_FLAGS = {
    "quant": _COMMON | _DATA | {"bit_width", "quant_mode", "percent", "cache_distribution", "cpu_num",
                                "dask_scheduler", "quant_scheme", "export_quant_scheme", "config_file",
                                "per_channel", "skip_quant_nodes", "debug_info_save_path", "generate_template",
                                "mix_config", "auto_mix_strategy", "auto_mix_ratio", "target_cosine", "bias_correction",
                                "cross_layer_equalization", "adaround", "validation_split", "validation_data",
                                "quantize_input_dtype", "output_dequant", "mean", "std",
                                "output_name", "unify_input_scale", "generate_scale_json", "load_scale_json",
                                "dump_ir", "debug", "dump", "lut_len", "dynamic_quant", "weight_quant", "ir_batch",
                                "layer_threshold", "run_config"} | _IMAGES,
    "convert": _COMMON | {"dump_ir", "debug", "initializers", "user_defined_script"},
    "infer": _COMMON | _DATA | _IMAGES | {"lut_len", "run_config"},
}
BUILT_FLAGS["compare"] = BUILT_FLAGS["quant"]  # compare = quant + the per-layer comparison (and -du)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        print(f"ptqc: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ptqc", allow_abbrev=False,
                description="Post-training quantization compiler for ONNX models.")
    p.add_argument("-ch", "--chip", default=None, help="target chip or family (e.g. TX5368AV200); "
                   f"known: {', '.join(chip_names())}")
    p.add_argument("--version", action="version", version=f"ptqc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    q = sub.add_parser("quant", allow_abbrev=False, help="quantize / convert / infer a model")
    a = q.add_argument
    a("-m", "--model", help="ONNX model file")
    a("-f", "--framework", choices=FRAMEWORKS, help="framework of the model (default onnx)")
    a("-r", "--run-mode", choices=RUN_MODES, help="quant (default), infer, convert, compare")
    a("--save-dir", help="output folder (default ./ptqc_output)")
    a("-d", "--data", help="calibration / input data folder")
    a("-if", "--infer-func", help="infer function name (default infer_auto)")
    a("-uds", "--user-defined-script", help="python script that registers infer functions")
    a("-b", "--bit-width", type=int, help="8 or 16 (default 8)")
    a("-i", "--iteration", type=int, nargs="+", help="inference iterations (several: one run each)")
    a("-bs", "--batch-size", type=int, help="calibration batch size (default 1)")
    a("-ib", "--ir-batch", type=int, help="batch size of the quantized model")
    a("-qm", "--quant-mode", nargs="+", choices=QUANT_MODES, help="activation range method(s)")
    a("-per", "--percent", type=float, help="percentile kept by -qm percentile (default 0.99999)")
    a("-ll", "--lut-len", type=int, help="16-bit LUT length exponent 8..12 (default 10)")
    a("-lt", "--layer-threshold", type=float, help="LayerNormalization input/output range")
    a("-qid", "--quantize-input-dtype", nargs="+", choices=INPUT_DTYPES, help="quantized input dtypes")
    a("-od", "--output-dequant", action="store_true", default=None, help="dequantize before outputs")
    a("--mean", type=float, nargs="+", help="per-channel mean inserted after the first input")
    a("--std", type=float, nargs="+", help="per-channel std inserted after the first input")
    a("--image-format", choices=IMAGE_FORMATS, help="channel order of image -d data (default RGB)")
    a("--resize", type=int, nargs=2, metavar=("W", "H"), help="resize image -d data (default: the input's W H)")
    a("--resize-method", choices=RESIZE_METHODS, help="image resize: LINEAR (default), NEAREST, CUBIC")
    a("--center-crop", type=int, nargs=2, metavar=("W", "H"), help="center-crop image -d data after resizing")
    a("--image-mean", type=float, nargs="+", help="normalize image -d data: (x - mean) / std, x in 0..255")
    a("--image-std", type=float, nargs="+", help="normalize image -d data (with --image-mean)")
    a("--calibrate-size", type=int, help="read at most N samples of -d (also capped by -i x -bs)")
    a("-is", "--input-shapes", type=int, nargs="+", action="append", help="input shape (repeat per input)")
    a("-on", "--output-name", nargs="+", help="crop the model at these outputs")
    a("-uis", "--unify-input-scale", action="store_true", default=None, help="one scale for Concat/Stack/ScatterND inputs")
    a("-gsj", "--generate-scale-json", action="store_true", default=None, help="write the scale JSON")
    a("-lsj", "--load-scale-json", help="load scales from this JSON")
    a("-gt", "--generate-template", action="store_true", default=None, help="write a mixed-precision template")
    a("-mc", "--mix-config", help="mixed-precision JSON")
    a("-amr", "--auto-mix-ratio", type=float, help="low-bit ratio of the generated template (0.5)")
    a("-ams", "--auto-mix-strategy", choices=MIX_STRATEGIES, help="template strategy (initial)")
    a("--target-cosine", type=float, help="find few 16-bit nodes whose output cosine reaches this")
    a("--bias-correction", action="store_true", default=None,
      help="fold each Conv/Gemm's output-mean shift, measured on the calibration data, into its int32 bias")
    a("--cle", "--cross-layer-equalization", dest="cross_layer_equalization", action="store_true", default=None,
      help="cross-layer equalization of Conv -> (Relu/PRelu/pool) -> Conv pairs before calibration")
    a("--adaround", action=argparse.BooleanOptionalAction, default=None,
      help="learn each Conv/Gemm/MatMul weight's rounding by output reconstruction on the calibration data "
           "(default on; kept only where the held-out cosine does not drop)")
    a("-vs", "--validation-split", type=float,
      help="share of the data batches held out to score every choice and the result (default 0.25, 0 = none)")
    a("-vd", "--validation-data", help="a separate validation folder (instead of -vs)")
    a("-du", "--dump", action="store_true", default=None, help="write every tensor of the first batch, simulated on the chip, to {save_dir}/dump")
    a("-cn", "--cpu-num", type=int, help="calibration worker processes (default 1; the reference tool's 5 is not assumed)")
    a("-cd", "--cache-distribution", help="calibration cache file")
    a("--config_file", "--config-file", dest="config_file", help="MindSpore Lite PTQ INI ([common_quant_param], "
      "[data_preprocess_param], [full_quant_param])")
    a("--quant-scheme", help="nncase quant scheme JSON: its ranges and types override calibration")
    a("--export-quant-scheme", action="store_true", default=None,
      help="write {save_dir}/{model}_quant_scheme.json (nncase format)")
    a("--dask-scheduler", help="calibrate on this Dask cluster (pip install ptqc[dask]), e.g. tcp://host:8786")
    a("-rc", "--run-config", help="run-config JSON")
    a("-w", "--weight", help="weights file (-f paddle: the .pdiparams)")
    a("-snn", "--start-node-names", nargs="+", help="tensorflow start nodes")
    a("-enn", "--end-node-names", nargs="+", help="tensorflow end nodes")
    a("-c2chw", "--convert2chw", action="store_true", default=None, help="tensorflow NHWC to NCHW")
    a("-l", "--log-level", type=int, help="0 debug, 1 info, 2 warning, 3 error (default 3)")
    a("--dump-ir", action="store_true", default=None, help="write steps/NN_<pass>.onnx after each pass")
    a("--debug", action="store_true", default=None, help="verify the graph after every pass")
    a("--initializers", action="store_true", default=None,
      help="write constants as initializers (default: keep Constant nodes as they were)")
    return p


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = {a.dest: "/".join(a.option_strings) for a in sub.choices["quant"]._actions if a.option_strings}
    names["chip"] = "--chip"
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    values = vars(ns)
    level = values.get("log_level")
    if level is not None and not 0 <= level <= 3:
        print(f"ptqc: error: -l/--log-level: {level} is outside 0..3", file=sys.stderr)
        return 2
    _configure_logging(3 if level is None else level)

    onnxruntime.set_default_logger_severity(4)  # its failures come back as exceptions, named once
    try:
        if values.get("run_config") is not None:
            values = _with_run_config(list(sys.argv[1:] if argv is None else argv), values, parser)
        cfg = with_ini(from_cli(values))
        return _run(cfg, _flag_names(parser))
    except PtqcError as e:
        return _fail(e)
    except Exception as e:  # noqa: BLE001 - the one place internal errors become exit 1
        if _is_input_error(e):
            return _fail(e)
        print(f"ptqc: internal error: {type(e).__name__}: {e}".splitlines()[0]
              + ("" if level == 0 else " (run with -l 0 for the traceback)"), file=sys.stderr)
        if level == 0:
            traceback.print_exc()
        return 1


def _with_run_config(argv: list[str], values: dict, parser: argparse.ArgumentParser) -> dict:
    """``-rc``: the run config's flags (by long name, dashes or underscores) parsed as if given
    before the command line's own, which win; a key the run mode does not honour is left out
    (one file serves quant and infer); with ``input-configs`` and no ``-if``, the infer function
    is the built-in ``infer_default`` (:mod:`ptqc.driver.tasks`)."""
    path = values["run_config"]
    table, configs = load_run_config(Path(path))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in sub.choices["quant"]._actions if a.option_strings}
    top, tokens = [], []
    mode = values.get("run_mode") or table.get("run_mode") or "quant"
    for key, value in table.items():
        if key != "chip" and key in actions and key not in BUILT_FLAGS.get(mode, {key}):
            logging.getLogger("ptqc").info("-rc/--run-config %s: %s does not apply to -r %s; not used", path, key, mode)
            continue
        if key == "chip":
            top += [] if values.get("chip") is not None else ["--chip", str(value)]
            continue
        action = actions.get(key)
        if action is None or key == "run_config":
            raise ConfigError(f"-rc/--run-config {path}: key {key!r} is not a flag of ptqc quant")
        if values.get(key) is not None or value is None or value is False and action.nargs == 0:
            continue  # the command line's value wins; false switches stay off
        flag = action.option_strings[-1]
        if isinstance(action, argparse.BooleanOptionalAction):
            tokens.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:
            tokens.append(flag)
        elif action.dest == "input_shapes":
            for shape in value:
                tokens += [flag, *map(str, shape)]
        else:
            tokens += [flag, *map(str, value if isinstance(value, list) else [value])]
    if configs is not None and values.get("infer_func") is None and "infer_func" not in table:
        tokens += ["--infer-func", "infer_default"]
    at = argv.index("quant")
    return vars(parser.parse_args([*top, *argv[:at], "quant", *tokens, *argv[at + 1:]]))


def _task_labels(cfg: QuantConfig) -> None:
    """An ``-rc`` task with ``calculate_acc`` and no labels: the float model's answers become them."""
    if not runs_builtin_task(cfg):
        return
    task = task_of(cfg.run_config)
    default = task.data_dir.parent / "labels"
    if not task.calculate_acc or task.label_dir is not None or default.is_dir() and any(default.iterdir()):
        return


    graph = import_model(cfg.model)
    if is_qdq_model(graph):
        raise ConfigError(f"-rc/--run-config {cfg.run_config}: calculate_acc without label_dir takes the float "
                          f"model's answers as labels, and {cfg.model} is quantized: give label_dir")
    session = ort.InferenceSession(onnx.load(str(cfg.model)).SerializeToString(), providers=["CPUExecutionProvider"])
    write_labels(task, Executor(lambda feeds: session.run(None, feeds), input_specs(graph), iteration=1 << 30,
                                batch_size=cfg.batch_size))


def _is_input_error(e: Exception) -> bool:
    return isinstance(e, UnsupportedOpError)


def _fail(e: Exception) -> int:
    text = str(e).strip().splitlines()
    print(f"ptqc: error: {text[0] if text else type(e).__name__}", file=sys.stderr)
    return 2


def _configure_logging(level: int) -> None:
    logging.basicConfig(format="ptqc %(levelname)s: %(message)s", stream=sys.stderr,
                        level=[logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR][level], force=True)


def _run(cfg: QuantConfig, flags: dict[str, str]) -> int:
    if cfg.chip and family_of(cfg.chip) is None:
        raise ConfigError(f"--chip: unknown chip {cfg.chip!r} (known: {', '.join(chip_names())})")
    built = BUILT_FLAGS.get(cfg.run_mode)
    if built is None:
        raise ConfigError(f"-r/--run-mode {cfg.run_mode}: not built yet in ptqc {__version__} "
                          f"(available: {', '.join(BUILT_FLAGS)})")
    refused = sorted(cfg.explicit - built)
    if refused:
        raise ConfigError(f"{flags.get(refused[0], refused[0])}: not built yet for -r {cfg.run_mode} "
                          f"in ptqc {__version__}")
    if cfg.model is None:
        raise ConfigError("-m/--model is required")
    tf_only = sorted({"start_node_names", "end_node_names", "convert2chw"} & cfg.explicit)
    if tf_only and cfg.framework != "tensorflow":
        raise ConfigError(f"{flags.get(tf_only[0], tf_only[0])}: applies only to -f tensorflow")
    _refuse_for_uncalibrated(cfg, flags)
    save_dir = _prepare_save_dir(cfg.save_dir)
    if cfg.framework != "onnx" or cfg.weight is not None:
        model = to_onnx(cfg.framework, Path(cfg.model), Path(cfg.weight) if cfg.weight else None, save_dir,
                        cfg.input_shapes, cfg.user_defined_script,
                        (cfg.start_node_names, cfg.end_node_names, cfg.convert2chw))
        check = ("run by onnxruntime; no Caffe runtime here to compare its outputs with" if cfg.framework == "caffe"
                 else f"outputs checked against {cfg.framework}")
        print(f"ptqc: -f {cfg.framework}: {cfg.model} -> {model} ({check})")
        cfg = dataclasses.replace(cfg, model=model)
    if cfg.run_mode == "convert":
        return _convert(cfg, save_dir)
    _task_labels(cfg)
    if cfg.run_mode in ("quant", "compare"):
        return _quant(cfg, save_dir)
    if cfg.user_defined_script is not None or "infer_func" in cfg.explicit:
        return _infer_with_function(cfg)
    return _infer(cfg, save_dir)


def _refuse_for_uncalibrated(cfg: QuantConfig, flags: dict[str, str]) -> None:
    """A MindSpore INI with quant_type=DYNAMIC_QUANT or WEIGHT_QUANT: the flags it would not honour, by name."""
    if cfg.config_file is None or cfg.run_mode not in ("quant", "compare"):
        return

    kind = uncalibrated_kind(with_ini(cfg))
    if kind is not None:
        extra = sorted(cfg.explicit - UNCALIBRATED_FLAGS)  # (a TX5xxx --chip: refused with its reason by quantize)
        if extra:
            raise ConfigError(f"{flags.get(extra[0], extra[0])}: does not apply to quant_type={kind} "
                              f"(--config_file {cfg.config_file})")


def _prepare_save_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--save-dir {path}: cannot create ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--save-dir {path}: not writable")
    return path


def _convert(cfg: QuantConfig, save_dir: Path) -> int:
    output = save_dir / f"{cfg.model.stem}_convert.onnx"
    report = convert(cfg.model, output, dump_ir=save_dir / "steps" if cfg.dump_ir else None,
                     debug=cfg.debug, constants_as_initializers=cfg.initializers)
    print(format_convert_summary(cfg.model, report))
    return 0


def format_convert_summary(model: Path, report) -> str:
    before, after = report.counts_before, report.counts_after
    lines = [f"ptqc convert: {model} -> {report.output}",
             f"  nodes {sum(before.values())} -> {sum(after.values())}; "
             f"BatchNormalization fused: {report.rewrites.get('fuse_batch_norm', 0)}, "
             f"left: {after.get('BatchNormalization', 0)}"]
    changed = [op for op in sorted(set(before) | set(after)) if before.get(op, 0) != after.get(op, 0)]
    if changed:
        lines.append(f"  {'op type':<24}{'before':>8}{'after':>8}")
        lines += [f"  {op:<24}{before.get(op, 0):>8}{after.get(op, 0):>8}" for op in changed]
    lines.append(f"  {'pass':<24}{'ms':>8}  changed")
    lines += [f"  {t.name:<24}{t.seconds * 1e3:>8.1f}  {'yes' if t.modified else 'no'}" for t in report.timings]
    s = report.seconds
    lines.append(f"  total {sum(s.values()) * 1e3:.0f} ms (import {s['import'] * 1e3:.0f}, passes "
                 f"{s['passes'] * 1e3:.0f}, export {s['export'] * 1e3:.0f})")
    for rule, node, reason in report.not_fused:
        if rule == "fold_batchnorm":
            lines.append(f"  BatchNormalization {node!r} not fused: {reason}")
    return "\n".join(lines)


def _quant(cfg: QuantConfig, save_dir: Path) -> int:
    output = save_dir / f"{cfg.model.stem}_quantize.onnx"
    report = quantize(cfg.model, output, config=cfg)
    print(format_quant_summary(cfg, report))
    if runs_builtin_task(cfg) and target_of(cfg).name != "generic":
        metric = infer(output, config=cfg)
        print(f"  infer-function metric on the {target_of(cfg).name} integer simulator: {metric:.6g}")
    return 0


def format_quant_summary(cfg: QuantConfig, report) -> str:
    s = report.seconds
    lines = [f"ptqc quant: {cfg.model} -> {report.output}",
             f"  method {report.method}, {cfg.bit_width}-bit, chip {cfg.chip}; time {sum(s.values()):.2f} s "
             f"(prepare {s['prepare']:.2f}, calibrate {s['calibrate']:.2f}, quantize {s['quantize']:.2f}, "
             f"export {s['export']:.2f}, evaluate {s['evaluate']:.2f})"]
    if report.scale_json:
        lines.append(f"  scales: {report.scale_json}")
    lines.append(f"  cosine against float on {report.evaluated_on}:")
    lines.append(f"  {'output':<32}{'min cosine':>12}{'mean cosine':>13}")
    lines += [f"  {name:<32}{lo:>12.6f}{mean:>13.6f}" for name, (lo, mean) in report.cosine.items()]
    if report.float_metric is not None and report.quant_metric is not None:
        lines.append(f"  infer-function metric: float {report.float_metric:.6g}, quantized {report.quant_metric:.6g}")
    if len(report.ranking) > 1:
        lines.append(f"  ranked by min cosine (mean over outputs), {len(report.ranking)} runs from one calibration run:")
        lines.append(f"    {'method':<16}{'-i':>5}{'min cosine':>12}  model")
        for r in report.ranking:
            score = np.mean([lo for lo, _ in r.cosine.values()]) if r.cosine else float("nan")
            lines.append(f"    {r.method:<16}{r.iteration:>5}{score:>12.6f}  {r.output or ''}")
    lines += report.simulation
    if report.float_ops:
        lines.append("  left in float: " + ", ".join(f"{op} x{len(names)}" for op, names in sorted(report.float_ops.items())))
    return "\n".join(lines)


def _infer_with_function(cfg: QuantConfig) -> int:
    metric = infer(cfg.model, config=cfg)
    where = runs_on(import_model(cfg.model), target_of(cfg))
    print(f"ptqc infer: {cfg.model}: infer function {cfg.infer_func!r} returned {metric:.6g} (on {where})")
    return 0


def _infer(cfg: QuantConfig, save_dir: Path) -> int:
    """Every batch's outputs to ``{save_dir}/infer/<output>.npy`` (one batch) or
    ``<output>_<k>.npy`` (several), each written atomically as it comes."""
    out_dir = save_dir / "infer"
    written: list[tuple[str, str, list[int], Path]] = []  # what was written (the arrays are not kept)

    def keep(k: int, outputs: dict) -> None:
        out_dir.mkdir(exist_ok=True)
        for name, array in outputs.items():
            safe = name.replace("/", "_").replace(os.sep, "_")
            path = out_dir / f"{safe}_{k:04d}.npy"
            with atomic_open(path, "wb") as f:
                np.save(f, array)
            written.append((name, str(array.dtype), list(array.shape), path))

    where, count = infer_batches(cfg.model, cfg, keep)
    for name, dtype, shape, path in written:
        if count == 1:  # one batch: <output>.npy, as the reference names it
            path = path.rename(path.with_name(path.name.removesuffix("_0000.npy") + ".npy"))
        print(f"ptqc infer: {name} {dtype} {shape} -> {path}")
    print(f"ptqc infer: {cfg.model}: {count} batch{'es' * (count != 1)} on {where}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
