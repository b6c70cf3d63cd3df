"""QuantConfig: the one configuration object every front end loads into.

Today the CLI loads into it (``from_cli``); the run-config JSON, mixed-precision JSON, nncase
scheme, MindSpore INI and onnxruntime ``extra_options`` loaders join as their features land.
Defaults follow the reference tool (``shared/reference/knight-onnx-quant-tool.rst``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ptqc.driver.mindspore_ini import WeightQuant, load_ini
from ptqc.errors import ConfigError
from ptqc.vocab import ALL, AUTO, QUANT_MODES

RUN_MODES = ("quant", "infer", "convert", "compare")
INPUT_DTYPES = ("float32", "int8", "uint8", "int16", "None")
MIX_STRATEGIES = ("HAWQ", "IOhigh", "initial")
FRAMEWORKS = ("onnx", "pytorch", "caffe", "paddle", "tensorflow")
IMAGE_FORMATS = ("RGB", "BGR", "GRAY")
RESIZE_METHODS = ("LINEAR", "NEAREST", "CUBIC")
# Options that only an image -d folder honours, and the one every -d folder honours.
IMAGE_FLAGS = {"image_format": "--image-format", "resize": "--resize", "resize_method": "--resize-method",
               "center_crop": "--center-crop", "image_mean": "--image-mean", "image_std": "--image-std"}
FOLDER_FLAGS = {"calibrate_size": "--calibrate-size"}


@dataclass(frozen=True)
class QuantConfig:
    """Every option of a run.  ``explicit`` names the options the user set (CLI dest names),
    so a feature that is not built yet can refuse a flag instead of ignoring it."""

    model: Path | None = None
    chip: str = "generic"
    run_mode: str = "quant"
    framework: str = "onnx"
    save_dir: Path = Path("ptqc_output")
    data: Path | None = None
    infer_func: str = "infer_auto"
    user_defined_script: Path | None = None
    bit_width: int = 8
    iteration: tuple[int, ...] = (1,)
    batch_size: int = 1
    ir_batch: int = 1
    quant_mode: tuple[str, ...] = ()  # empty: auto (ranges chosen by measured output error)
    percent: float = 0.99999
    # min_max as onnxruntime's CalibMovingAverage (quantize_static only): the mean of per-batch minima/maxima
    minmax_average: bool = False
    lut_len: int = 10
    layer_threshold: float | None = None
    quantize_input_dtype: tuple[str, ...] = ()
    output_dequant: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_name: tuple[str, ...] = ()
    unify_input_scale: bool = False
    generate_scale_json: bool = False
    load_scale_json: Path | None = None
    generate_template: bool = False
    mix_config: Path | None = None
    auto_mix_ratio: float = 0.5
    auto_mix_strategy: str = "initial"
    target_cosine: float | None = None  # search the fewest 16-bit nodes reaching this output cosine
    bias_correction: bool = False  # fold each Conv/Gemm's measured output-mean shift into its int32 bias
    cross_layer_equalization: bool = False  # --cle: rescale channels between Conv pairs (float unchanged)
    adaround: bool = True  # learn each weight's rounding by layer output reconstruction (--no-adaround: nearest)
    validation_split: float = 0.25  # share of the batches held out to score decisions and the result
    validation_data: Path | None = None  # a separate validation folder instead of the split
    dump: bool = False
    cpu_num: int | None = None  # the reference defaults to 5; ptqc shards only when asked (quantize.workers_of)
    dask_scheduler: str | None = None
    quant_scheme: Path | None = None  # nncase quant scheme JSON read as range/type overrides
    config_file: Path | None = None  # MindSpore Lite PTQ INI (--config_file), loaded by with_ini
    per_channel: bool = True
    skip_quant_nodes: tuple[str, ...] = ()  # MindSpore skip_quant_node: these nodes stay float
    debug_info_save_path: Path | None = None  # MindSpore debug reports (CSV) go here
    export_quant_scheme: bool = False  # write {model}_quant_scheme.json (nncase format)
    cache_distribution: Path | None = None
    run_config: Path | None = None
    weight: Path | None = None
    dynamic_quant: str | None = None  # MindSpore INI DYNAMIC_QUANT: "ALWC" (ptqc.quantize_dynamic)
    weight_quant: WeightQuant | None = None  # MindSpore INI WEIGHT_QUANT (weights only, DequantizeLinear)
    start_node_names: tuple[str, ...] = ()
    end_node_names: tuple[str, ...] = ()
    convert2chw: bool = False
    log_level: int = 3
    dump_ir: bool = False
    debug: bool = False
    initializers: bool = False
    # image -d folders, MindSpore Lite's [data_preprocess_param]; image_mean/std normalize the
    # data, whereas --mean/--std put a normalization into the model
    image_format: str = "RGB"
    resize: tuple[int, ...] = ()  # (W, H); () = the model input's size
    resize_method: str = "LINEAR"
    center_crop: tuple[int, ...] = ()  # (W, H); () = no crop
    image_mean: tuple[float, ...] = ()
    image_std: tuple[float, ...] = ()
    calibrate_size: int | None = None  # at most this many samples of a -d folder
    explicit: frozenset[str] = field(default_factory=frozenset)

    @property
    def holdout(self) -> int:
        """Every holdout-th calibration batch is held out for validation (0: none)."""
        if self.validation_data is not None or self.validation_split <= 0:
            return 0
        return max(2, round(1.0 / self.validation_split))

    @property
    def effective_quant_modes(self) -> tuple[str, ...]:
        if not self.quant_mode:
            return (AUTO,)
        if ALL in self.quant_mode:
            return tuple(m for m in QUANT_MODES if m != ALL)
        return self.quant_mode


_TUPLE_FIELDS = {f.name for f in fields(QuantConfig) if str(f.type).startswith("tuple")}
_PATH_FIELDS = {f.name for f in fields(QuantConfig) if "Path" in str(f.type)}


def from_cli(values: dict[str, Any]) -> QuantConfig:
    """Build a config from parsed CLI values (argparse dests); None means "not given"."""
    kwargs: dict[str, Any] = {}
    explicit = set()
    names = {f.name for f in fields(QuantConfig)}
    for key, value in values.items():
        if key not in names or value is None or value is False:
            continue
        explicit.add(key)
        if key in _TUPLE_FIELDS:
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif key in _PATH_FIELDS:
            value = Path(value)
        kwargs[key] = value
    cfg = QuantConfig(**kwargs, explicit=frozenset(explicit))
    _validate(cfg)
    return cfg


def with_ini(cfg: QuantConfig) -> QuantConfig:
    """``--config_file``: the MindSpore INI's values for every field the command line did not set
    (explicit flags win), validated like flags."""
    if cfg.config_file is None:
        return cfg

    ini = {k: v for k, v in load_ini(Path(cfg.config_file)).items() if k not in cfg.explicit}
    cfg = replace(cfg, **ini, explicit=cfg.explicit | frozenset(ini))
    _validate(cfg)
    return cfg


def _validate(cfg: QuantConfig) -> None:
    if cfg.bit_width not in (8, 16):
        raise ConfigError(f"-b/--bit-width: {cfg.bit_width} is not 8 or 16")
    if not 8 <= cfg.lut_len <= 12:
        raise ConfigError(f"-ll/--lut-len: {cfg.lut_len} is outside 8..12")
    if not 0 <= cfg.log_level <= 3:
        raise ConfigError(f"-l/--log-level: {cfg.log_level} is outside 0..3")
    if not 0.0 < cfg.percent <= 1.0:
        raise ConfigError(f"-per/--percent: {cfg.percent} is outside (0, 1]")
    if any(i < 1 for i in cfg.iteration):
        raise ConfigError("-i/--iteration: every value must be >= 1")
    if cfg.batch_size < 1:
        raise ConfigError("-bs/--batch-size: must be >= 1")
    if cfg.ir_batch < 1:
        raise ConfigError(f"-ib/--ir-batch: must be >= 1, got {cfg.ir_batch}")
    if cfg.layer_threshold is not None and not cfg.layer_threshold > 0:
        raise ConfigError(f"-lt/--layer-threshold: must be > 0, got {cfg.layer_threshold}")
    if cfg.auto_mix_strategy == "HAWQ" and cfg.target_cosine is not None:
        raise ConfigError("-ams/--auto-mix-strategy HAWQ with --target-cosine: both choose the 16-bit nodes; give one")
    if not 0.0 <= cfg.auto_mix_ratio <= 1.0:
        raise ConfigError(f"-amr/--auto-mix-ratio: {cfg.auto_mix_ratio} is outside [0, 1]")
    if cfg.target_cosine is not None and not -1.0 <= cfg.target_cosine <= 1.0:
        raise ConfigError(f"--target-cosine: {cfg.target_cosine} is outside [-1, 1]")
    if cfg.mix_config and cfg.auto_mix_strategy != "initial":
        raise ConfigError("-mc and -ams/--auto-mix-strategy both assign bit-widths: give one")
    if cfg.target_cosine is not None and (cfg.mix_config or cfg.auto_mix_strategy != "initial"):
        raise ConfigError("--target-cosine searches the assignment itself: drop -mc/-ams")
    if not 0.0 <= cfg.validation_split <= 0.5:
        raise ConfigError(f"-vs/--validation-split: {cfg.validation_split} is outside [0, 0.5]")
    if cfg.cpu_num is not None and cfg.cpu_num < 1:
        raise ConfigError(f"-cn/--cpu-num: {cfg.cpu_num} is not >= 1")
    if bool(cfg.mean) != bool(cfg.std):
        raise ConfigError("--mean and --std must be given together")
    if cfg.generate_scale_json and cfg.load_scale_json:
        raise ConfigError("-gsj and -lsj are mutually exclusive")
    if cfg.load_scale_json and cfg.mix_config:
        raise ConfigError("-lsj and -mc are mutually exclusive")
    _validate_images(cfg)


def _validate_images(cfg: QuantConfig) -> None:
    if cfg.image_format not in IMAGE_FORMATS:
        raise ConfigError(f"--image-format: {cfg.image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
    if cfg.resize_method not in RESIZE_METHODS:
        raise ConfigError(f"--resize-method: {cfg.resize_method!r} is not one of {', '.join(RESIZE_METHODS)}")
    for key in ("resize", "center_crop"):
        sizes = getattr(cfg, key)
        if sizes and len(sizes) != 2:
            raise ConfigError(f"{IMAGE_FLAGS[key]}: give two values W H, got {len(sizes)}")
        if any(v < 1 for v in sizes):
            raise ConfigError(f"{IMAGE_FLAGS[key]}: sizes must be positive, got {' '.join(map(str, sizes))}")
    if bool(cfg.image_mean) != bool(cfg.image_std):
        raise ConfigError("--image-mean and --image-std must be given together")
    channels = 1 if cfg.image_format == "GRAY" else 3
    for key in ("image_mean", "image_std"):
        values = getattr(cfg, key)
        if values and len(values) not in (1, channels):
            raise ConfigError(f"{IMAGE_FLAGS[key]}: {len(values)} values; give 1 or {channels} "
                              f"(--image-format {cfg.image_format})")
    if any(v == 0 for v in cfg.image_std):
        raise ConfigError("--image-std: values must be nonzero")
    if cfg.calibrate_size is not None and cfg.calibrate_size < 1:
        raise ConfigError(f"--calibrate-size: must be >= 1, got {cfg.calibrate_size}")
