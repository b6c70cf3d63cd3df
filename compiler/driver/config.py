"""QuantConfig: the one configuration object every front end loads into.

Today the CLI loads into it (``from_cli``); the run-config JSON, mixed-precision JSON, nncase
scheme, MindSpore INI and onnxruntime ``extra_options`` loaders join as their features land.
Defaults follow the reference tool (``shared/reference/knight-onnx-quant-tool.rst``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ptqc.errors import ConfigError

RUN_MODES = ("quant", "infer", "convert", "compare")
QUANT_MODES = ("kl", "min_max", "mse", "percentile", "kl_v2", "all")
INPUT_DTYPES = ("float32", "int8", "uint8", "int16", "None")
MIX_STRATEGIES = ("HAWQ", "IOhigh", "initial")
FRAMEWORKS = ("onnx", "pytorch", "caffe", "paddle", "tensorflow")


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
    quant_mode: tuple[str, ...] = ()  # empty: kl at 8 bit, min_max at 16 bit
    percent: float = 0.99999
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
    dump: bool = False
    cpu_num: int = 5
    cache_distribution: Path | None = None
    run_config: Path | None = None
    weight: Path | None = None
    start_node_names: tuple[str, ...] = ()
    end_node_names: tuple[str, ...] = ()
    convert2chw: bool = False
    log_level: int = 3
    dump_ir: bool = False
    debug: bool = False
    initializers: bool = False
    explicit: frozenset[str] = field(default_factory=frozenset)

    @property
    def effective_quant_modes(self) -> tuple[str, ...]:
        if not self.quant_mode:
            return ("kl",) if self.bit_width == 8 else ("min_max",)
        if "all" in self.quant_mode:
            return tuple(m for m in QUANT_MODES if m != "all")
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
    if bool(cfg.mean) != bool(cfg.std):
        raise ConfigError("--mean and --std must be given together")
    if cfg.generate_scale_json and cfg.load_scale_json:
        raise ConfigError("-gsj and -lsj are mutually exclusive")
    if cfg.load_scale_json and cfg.mix_config:
        raise ConfigError("-lsj and -mc are mutually exclusive")
