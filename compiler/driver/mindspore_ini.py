"""MindSpore Lite's post-training quantization INI (``--config_file x.ini``), loaded into
QuantConfig fields.

Sections and keys that map to ptqc: ``[common_quant_param]`` quant_type=FULL_QUANT, bit_num
(8 or 16), skip_quant_node, debug_info_save_path; ``[data_preprocess_param]`` calibrate_path
(``input:dir``, one input), calibrate_size, input_type (IMAGE/BIN), image_to_format,
normalize_mean/std, resize_width/height/method, center_crop_width/height;
``[full_quant_param]`` activation_quant_method (MAX_MIN, KL, REMOVAL_OUTLIER), per_channel,
bias_correction; quant_type=DYNAMIC_QUANT with ``[dynamic_quant_param]`` quant_strategy=ALWC
(ptqc's quantize_dynamic, weights per channel); quant_type=WEIGHT_QUANT at bit_num 1..16 with
min_quant_weight_size, min_quant_weight_channel, skip_quant_node, enable_encode and
``[weight_quant_param]`` per_channel, dequant_strategy=ON_THE_FLY (weights read through
DequantizeLinear: passes/dequantize_weights.py; codes stored as int4, int8 or int16, so
enable_encode packs no further than that), and bit_num=0 (mixed bits) with
``[mixed_bit_weight_quant_param]`` init_scale (each weight's fewest bits whose relative error is
at most init_scale: the pass's docstring says why; auto_tune=true searches init_scale for an
output cosine of 0.995 on the data), and ``[weight_quant_param] bias_correction=true`` (each
layer's output-mean shift from rounding put back into its bias, the input means measured on the
data given with -d or -uds/-if, which it then needs; MindSpore documents true as the default,
ptqc corrects only when the key says true, as it cannot measure without data).  Anything else
(dynamic ACWL; target devices, Ascend options) is an error naming the section and key: never
silently ignored.  Explicit command-line flags win
over the file.
"""
from __future__ import annotations

import configparser
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptqc.errors import ConfigError
from ptqc.vocab import Method


@dataclass(frozen=True)
class WeightQuant:
    """MindSpore's WEIGHT_QUANT: ``bit_num`` (0: mixed bits, each weight's fewest bits whose relative
    error is at most ``init_scale``), ``per_channel``, and the weights quantized (more elements than
    ``min_quant_weight_size``, more channels than ``min_quant_weight_channel``)."""

    bits: int = 8
    per_channel: bool = True
    min_size: int = 0
    min_channels: int = 16
    init_scale: float | None = None  # mixed bits (bits 0)
    auto_tune: bool = False  # mixed bits: init_scale searched to an output cosine of 0.995 on the data
    bias_correction: bool = False  # each layer's output-mean shift from rounding into its bias (needs data)


METHODS = {"MAX_MIN": Method.MIN_MAX, "KL": Method.KL, "REMOVAL_OUTLIER": Method.REMOVAL_OUTLIER,
           "REMOVALOUTLIER": Method.REMOVAL_OUTLIER}
_KNOWN = {
    "common_quant_param": {"quant_type", "bit_num", "skip_quant_node", "debug_info_save_path", "min_quant_weight_size",
                           "min_quant_weight_channel", "enable_encode"},
    "data_preprocess_param": {"calibrate_path", "calibrate_size", "input_type", "image_to_format", "normalize_mean",
                              "normalize_std", "resize_width", "resize_height", "resize_method", "center_crop_width",
                              "center_crop_height"},
    "full_quant_param": {"activation_quant_method", "per_channel", "bias_correction"},
    "dynamic_quant_param": {"quant_strategy"},
    "weight_quant_param": {"per_channel", "bias_correction", "dequant_strategy"},
    "mixed_bit_weight_quant_param": {"init_scale", "auto_tune"},
}
_WEIGHT_ONLY = ("min_quant_weight_size", "min_quant_weight_channel", "enable_encode")


def load_ini(path: Path) -> dict[str, Any]:
    """QuantConfig field values from a MindSpore INI; ConfigError naming the key otherwise."""
    flag = f"--config_file {path}"
    parser = configparser.ConfigParser(inline_comment_prefixes=("#",))
    try:
        with open(path) as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{flag}: no such file") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ConfigError(f"{flag}: not a valid INI file ({str(e).splitlines()[0]})") from None
    for section in parser.sections():
        if section not in _KNOWN:
            raise ConfigError(f"{flag}: [{section}] is not supported yet (supported: "
                              f"{', '.join(f'[{s}]' for s in _KNOWN)})")
        for key in parser[section]:
            if key not in _KNOWN[section]:
                raise ConfigError(f"{flag}: [{section}] {key} is not supported yet")
    get = lambda section, key: parser.get(section, key, fallback=None)  # noqa: E731
    out: dict[str, Any] = {}
    quant_type = get("common_quant_param", "quant_type")
    if quant_type is None:
        raise ConfigError(f"{flag}: [common_quant_param] quant_type is required")
    if quant_type.strip() == "WEIGHT_QUANT":
        return _weight(flag, parser, get)
    for key in _WEIGHT_ONLY:
        if get("common_quant_param", key) is not None:
            raise ConfigError(f"{flag}: [common_quant_param] {key} applies to quant_type=WEIGHT_QUANT only")
    for section in ("weight_quant_param", "mixed_bit_weight_quant_param"):
        if parser.has_section(section):
            raise ConfigError(f"{flag}: [{section}] applies to quant_type=WEIGHT_QUANT only")
    if quant_type.strip() == "DYNAMIC_QUANT":
        return _dynamic(flag, parser, get)
    if quant_type.strip() != "FULL_QUANT":
        raise ConfigError(f"{flag}: [common_quant_param] quant_type={quant_type}: use WEIGHT_QUANT, FULL_QUANT or "
                          "DYNAMIC_QUANT")
    if parser.has_section("dynamic_quant_param"):
        raise ConfigError(f"{flag}: [dynamic_quant_param] applies to quant_type=DYNAMIC_QUANT only")
    if get("common_quant_param", "bit_num") is not None:
        out["bit_width"] = _int(flag, "common_quant_param", "bit_num", get("common_quant_param", "bit_num"))
    if get("common_quant_param", "skip_quant_node"):
        out["skip_quant_nodes"] = tuple(n.strip() for n in get("common_quant_param", "skip_quant_node").split(",")
                                        if n.strip())
    if get("common_quant_param", "debug_info_save_path"):
        out["debug_info_save_path"] = Path(get("common_quant_param", "debug_info_save_path"))
    _data_section(flag, get, out)
    method = get("full_quant_param", "activation_quant_method")
    if method is not None:
        if method.strip().upper() not in METHODS:
            raise ConfigError(f"{flag}: [full_quant_param] activation_quant_method={method}: use MAX_MIN, KL or "
                              "REMOVAL_OUTLIER")
        out["quant_mode"] = (METHODS[method.strip().upper()],)
    if get("full_quant_param", "per_channel") is not None:
        out["per_channel"] = _bool(flag, "full_quant_param", "per_channel", get("full_quant_param", "per_channel"))
    correction = get("full_quant_param", "bias_correction")
    if correction is not None:
        out["bias_correction"] = _bool(flag, "full_quant_param", "bias_correction", correction)
    return out


def _dynamic(flag: str, parser: configparser.ConfigParser, get) -> dict[str, Any]:
    """DYNAMIC_QUANT: ALWC (activations per layer at run time, weights per channel: ptqc's
    quantize_dynamic); int8 only, no calibration data."""
    for section in ("data_preprocess_param", "full_quant_param"):
        if parser.has_section(section):
            raise ConfigError(f"{flag}: [{section}] applies to quant_type=FULL_QUANT (DYNAMIC_QUANT calibrates "
                              "nothing)")
    strategy = (get("dynamic_quant_param", "quant_strategy") or "ALWC").strip().upper()
    if strategy == "ACWL":
        raise ConfigError(f"{flag}: [dynamic_quant_param] quant_strategy=ACWL: not built yet (activations per channel "
                          "at run time; onnxruntime's DynamicQuantizeLinear is per tensor): use ALWC")
    if strategy != "ALWC":
        raise ConfigError(f"{flag}: [dynamic_quant_param] quant_strategy={strategy}: use ALWC or ACWL")
    out: dict[str, Any] = {"dynamic_quant": strategy}
    bits = get("common_quant_param", "bit_num")
    if bits is not None and _int(flag, "common_quant_param", "bit_num", bits) != 8:
        raise ConfigError(f"{flag}: [common_quant_param] bit_num={bits.strip()}: DYNAMIC_QUANT is 8-bit")
    if get("common_quant_param", "skip_quant_node"):
        out["skip_quant_nodes"] = tuple(n.strip() for n in get("common_quant_param", "skip_quant_node").split(",")
                                        if n.strip())
    if get("common_quant_param", "debug_info_save_path"):
        raise ConfigError(f"{flag}: [common_quant_param] debug_info_save_path: not built yet for DYNAMIC_QUANT")
    return out


def _weight(flag: str, parser: configparser.ConfigParser, get) -> dict[str, Any]:
    """WEIGHT_QUANT at fixed bits: weights only, read through DequantizeLinear; no data needed."""
    for section in ("data_preprocess_param", "full_quant_param", "dynamic_quant_param"):
        if parser.has_section(section):
            raise ConfigError(f"{flag}: [{section}] does not apply to quant_type=WEIGHT_QUANT")
    c, w = "common_quant_param", "weight_quant_param"
    bits = _int(flag, c, "bit_num", get(c, "bit_num") or "8")
    if not 0 <= bits <= 16:
        raise ConfigError(f"{flag}: [common_quant_param] bit_num={bits}: WEIGHT_QUANT takes 0 (mixed bits) .. 16")
    m = "mixed_bit_weight_quant_param"
    if parser.has_section(m) and bits != 0:
        raise ConfigError(f"{flag}: [{m}] applies to bit_num=0 (mixed bits); bit_num is {bits}")
    init_scale = None
    if bits == 0:
        try:
            init_scale = float((get(m, "init_scale") or "0.02").strip())
        except ValueError:
            raise ConfigError(f"{flag}: [{m}] init_scale={get(m, 'init_scale')}: not a number") from None
        if not 0 < init_scale < 1:
            raise ConfigError(f"{flag}: [{m}] init_scale={init_scale:g}: outside (0, 1)")
    auto_tune = bits == 0 and get(m, "auto_tune") is not None and _bool(flag, m, "auto_tune", get(m, "auto_tune"))
    sizes = {}
    for key, default in (("min_quant_weight_size", 0), ("min_quant_weight_channel", 16)):
        sizes[key] = _int(flag, c, key, get(c, key) or str(default))
        if not 0 <= sizes[key] <= 65535:
            raise ConfigError(f"{flag}: [common_quant_param] {key}={sizes[key]}: outside [0, 65535]")
    if get(c, "enable_encode") is not None and not _bool(flag, c, "enable_encode", get(c, "enable_encode")) \
            and bits not in (8, 16):
        raise ConfigError(f"{flag}: [common_quant_param] enable_encode=false: only with bit_num 8 or 16")
    correction = get(w, "bias_correction") is not None and _bool(flag, w, "bias_correction", get(w, "bias_correction"))
    strategy = get(w, "dequant_strategy")
    if strategy is not None and strategy.strip().upper() != "ON_THE_FLY":
        raise ConfigError(f"{flag}: [weight_quant_param] dequant_strategy={strategy.strip()}: use ON_THE_FLY")
    per_channel = _bool(flag, w, "per_channel", get(w, "per_channel") or "true")
    out: dict[str, Any] = {"weight_quant": WeightQuant(bits, per_channel, sizes["min_quant_weight_size"],
                                                       sizes["min_quant_weight_channel"], init_scale, auto_tune,
                                                       correction)}
    if get(c, "skip_quant_node"):
        out["skip_quant_nodes"] = tuple(n.strip() for n in get(c, "skip_quant_node").split(",") if n.strip())
    if get(c, "debug_info_save_path"):
        raise ConfigError(f"{flag}: [common_quant_param] debug_info_save_path: not built yet for WEIGHT_QUANT")
    return out


def _data_section(flag: str, get, out: dict[str, Any]) -> None:
    s = "data_preprocess_param"
    path = get(s, "calibrate_path")
    if path:
        entries = [p.strip() for p in path.split(",") if p.strip()]
        if len(entries) != 1:
            raise ConfigError(f"{flag}: [{s}] calibrate_path: one folder per input is built for one input only; "
                              "give several inputs as .npy subfolders with -d")
        out["data"] = Path(entries[0].split(":", 1)[1] if ":" in entries[0] and not Path(entries[0]).exists()
                           else entries[0])
    if get(s, "calibrate_size") is not None:
        out["calibrate_size"] = _int(flag, s, "calibrate_size", get(s, "calibrate_size"))
        out["iteration"] = (out["calibrate_size"],)  # one sample a batch unless -i/-bs say otherwise
    kind = get(s, "input_type")
    if kind is not None and kind.strip().upper() not in ("IMAGE", "BIN"):
        raise ConfigError(f"{flag}: [{s}] input_type={kind}: use IMAGE or BIN")
    folder = out.get("data")
    if kind is not None and folder is not None and folder.is_dir():
        want = (".bin",) if kind.strip().upper() == "BIN" else (".bmp", ".jpg", ".jpeg", ".png")
        if not any(p.suffix.lower() in want for p in folder.rglob("*")):
            raise ConfigError(f"{flag}: [{s}] input_type={kind.strip()} but {folder} holds no {'/'.join(want)} files")
    if get(s, "image_to_format") is not None:
        out["image_format"] = get(s, "image_to_format").strip().upper()
    for key, field in (("normalize_mean", "image_mean"), ("normalize_std", "image_std")):
        if get(s, key) is not None:
            try:
                values = json.loads(get(s, key))
                out[field] = tuple(float(v) for v in (values if isinstance(values, list) else [values]))
            except (ValueError, TypeError):
                raise ConfigError(f"{flag}: [{s}] {key}: expected a list like [127.5, 127.5, 127.5]") from None
    for pair, field in ((("resize_width", "resize_height"), "resize"),
                        (("center_crop_width", "center_crop_height"), "center_crop")):
        given = [get(s, k) for k in pair]
        if any(v is not None for v in given):
            if None in given:
                raise ConfigError(f"{flag}: [{s}] {pair[0]} and {pair[1]} go together")
            out[field] = tuple(_int(flag, s, k, v) for k, v in zip(pair, given))
    if get(s, "resize_method") is not None:
        out["resize_method"] = get(s, "resize_method").strip().upper()


def _int(flag: str, section: str, key: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{flag}: [{section}] {key}={value}: not an integer") from None


def _bool(flag: str, section: str, key: str, value: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise ConfigError(f"{flag}: [{section}] {key}={value}: use true or false")
    return v == "true"
