"""The Ascend ``quantize(model, config)`` config dict (shared/reference/ascend-quantize-api.md),
read into one frozen :class:`LlmConfig`.  Every unknown key and every invalid value is a
ConfigError naming its path (``quant_cfg.weights.group_size 48: ...``).

    {"batch_num": 1,
     "quant_cfg": {"weights": {"type": "int4", "symmetric": True, "strategy": "group", "group_size": 128},
                   "inputs": {"type": "int8", "symmetric": True, "strategy": "token"}},
     "algorithm": {"awq": {"grids_num": 20}},      # or "gptq", {"minmax"}, {"smoothquant": {...}}
     "skip_layers": ["lm_head"]}

``algorithm`` is a name, a one-name set/list, or a one-key dict of the algorithm's options.
Defaults where the reference names none: ``batch_num`` 1, ``symmetric`` True, ``strategy``
``channel`` (``group`` when a ``group_size`` is given), algorithm ``minmax``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ptqc.errors import ConfigError

ALGORITHMS = {"minmax": {}, "gptq": {}, "awq": {"grids_num": 20}, "smoothquant": {"smooth_strength": 0.5}}
NOT_BUILT = "not built yet"


@dataclass(frozen=True)
class LlmConfig:
    batch_num: int = 1
    bits: int = 4
    symmetric: bool = True
    strategy: str = "channel"
    group_size: int | None = None
    algorithm: str = "minmax"
    grids_num: int = 20
    skip_layers: tuple[str, ...] = ()
    inputs: str | None = None  # W8A8 activations: "tensor" or "token"; None = weight-only
    inputs_symmetric: bool = True
    smooth_strength: float = 0.5


def _keys(d: Any, where: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'}: expected a dict, got {type(d).__name__}")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected {', '.join(allowed)})".lstrip("."))
    return d


def _bool(d: dict, key: str, where: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{where}.{key} {v!r}: expected True or False")
    return v


def _int(v: Any, where: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{where} {v!r}: expected an integer >= {lo}")
    return v


def _algorithm(value: Any) -> tuple[str, dict]:
    if isinstance(value, str):
        name, opts = value, {}
    elif isinstance(value, (set, frozenset, list, tuple)) and len(value) == 1:
        name, opts = next(iter(value)), {}
    elif isinstance(value, dict) and len(value) == 1:
        name, opts = next(iter(value.items()))
        opts = {} if opts is None else opts
    else:
        raise ConfigError(f"algorithm {value!r}: expected one of {', '.join(ALGORITHMS)} (one algorithm)")
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm {name!r}: unknown (expected {', '.join(ALGORITHMS)})")
    opts = dict(_keys(opts, f"algorithm.{name}", tuple(ALGORITHMS[name])))
    return name, {**ALGORITHMS[name], **opts}


def parse(config: Any) -> LlmConfig:
    """The config dict as an :class:`LlmConfig`, or a ConfigError naming the first bad key."""
    cfg = _keys(config, "", ("batch_num", "quant_cfg", "algorithm", "skip_layers"))
    batch_num = _int(cfg.get("batch_num", 1), "batch_num", 1)
    quant = _keys(cfg.get("quant_cfg", {}), "quant_cfg", ("weights", "inputs"))
    if "weights" not in quant:
        raise ConfigError("quant_cfg.weights: missing (weight quantization is what this API does)")
    w = _keys(quant["weights"], "quant_cfg.weights", ("type", "symmetric", "strategy", "group_size"))
    types = {"int4": 4, "int8": 8}
    if w.get("type") not in types:
        raise ConfigError(f"quant_cfg.weights.type {w.get('type')!r}: expected int4 or int8")
    strategy = w.get("strategy", "group" if "group_size" in w else "channel")
    if strategy not in ("tensor", "channel", "group"):
        raise ConfigError(f"quant_cfg.weights.strategy {strategy!r}: expected tensor, channel or group")
    group_size = None
    if "group_size" in w:
        if strategy != "group":
            raise ConfigError(f"quant_cfg.weights.group_size: only with strategy group (strategy is {strategy})")
        group_size = w["group_size"]
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 32 or group_size % 32:
            raise ConfigError(f"quant_cfg.weights.group_size {group_size!r}: must be a multiple of 32 in [32, K-1]")
    elif strategy == "group":
        raise ConfigError("quant_cfg.weights.group_size: required with strategy group (a multiple of 32 in [32, K-1])")
    name, opts = _algorithm(cfg.get("algorithm", "minmax"))
    inputs, inputs_symmetric = None, True
    if "inputs" in quant:
        i = _keys(quant["inputs"], "quant_cfg.inputs", ("type", "symmetric", "strategy"))
        if i.get("type", "int8") != "int8":
            raise ConfigError(f"quant_cfg.inputs.type {i.get('type')!r}: expected int8")
        inputs = i.get("strategy", "tensor")
        if inputs not in ("tensor", "token"):
            raise ConfigError(f"quant_cfg.inputs.strategy {inputs!r}: expected tensor or token")
        inputs_symmetric = _bool(i, "symmetric", "quant_cfg.inputs", True)
        if inputs == "token" and not inputs_symmetric:
            raise ConfigError(f"quant_cfg.inputs.symmetric False with strategy token: {NOT_BUILT} (per-token "
                              "activations are symmetric)")
        if w["type"] != "int8" or strategy == "group":
            raise ConfigError(f"quant_cfg.inputs with quant_cfg.weights type {w['type']}, strategy {strategy}: "
                              f"{NOT_BUILT} (W8A8: weights int8 per tensor or channel)")
        if not _bool(w, "symmetric", "quant_cfg.weights", True):
            raise ConfigError(f"quant_cfg.weights.symmetric False with quant_cfg.inputs: {NOT_BUILT} (W8A8 weights "
                              "are symmetric)")
        if name in ("awq", "gptq"):
            raise ConfigError(f"algorithm {name} with quant_cfg.inputs: {name} is weight-only here (W8A8 takes "
                              "minmax or smoothquant)")
    elif name == "smoothquant":
        raise ConfigError("algorithm smoothquant: migrates activation outliers for W8A8; give quant_cfg.inputs")
    strength = opts.get("smooth_strength", 0.5)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ConfigError(f"algorithm.smoothquant.smooth_strength {strength!r}: expected a value in [0, 1]")
    grids = _int(opts.get("grids_num", 20), "algorithm.awq.grids_num", 1)
    skip = cfg.get("skip_layers", ())
    skip = (skip,) if isinstance(skip, str) else skip
    if not isinstance(skip, (list, tuple)) or not all(isinstance(s, str) and s for s in skip):
        raise ConfigError(f"skip_layers {cfg.get('skip_layers')!r}: expected a layer-name substring or a list of them")
    return LlmConfig(batch_num, types[w["type"]], _bool(w, "symmetric", "quant_cfg.weights", True), strategy,
                     group_size, name, grids, tuple(skip), inputs, inputs_symmetric, float(strength))
