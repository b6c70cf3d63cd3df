"""nncase's quant scheme JSON (``ptq_options.quant_scheme`` / ``export_quant_scheme``): per
tensor ``Name``, ``DataType`` (u8, i8, i16, f16, f32), ``DataRange`` (one ``{Min, Max,
IsFull}`` per tensor, or one per channel) and ``DataRangeMode`` (``by_tensor`` /
``by_channel``).

``--export-quant-scheme`` writes every quantized activation and weight of a run (the range
its parameters cover); ``--quant-scheme FILE`` reads one back as overrides: a listed tensor
takes the listed range and type (its whole sharing group does), f32 keeps it float, f16 keeps
it unquantized and rounds the listed tensor through float16 (CastFloat16), and tensors the
file does not list are calibrated as usual; a file that lists every quantized tensor needs no
calibration data (nncase: "no calibration set is needed after importing the scheme").
``IsFull`` is nncase's derived flag (the range is the type's whole range) and is not
read.  An unchanged exported file gives the
same model again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ptqc.driver.scale_json import read_json, write_scale_json
from ptqc.errors import ConfigError
from ptqc.ir import Graph
from ptqc.quant import QuantParam, TensorOverride
from ptqc.vocab import Meta

_TYPES = {"u8": np.uint8, "i8": np.int8, "i16": np.int16, "f16": np.float16, "f32": None}
_NAMES = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8", np.dtype(np.int16): "i16"}


def _entry(name: str, p: QuantParam) -> dict:
    lo, hi = np.atleast_1d(np.asarray(p.rmin, np.float64)), np.atleast_1d(np.asarray(p.rmax, np.float64))
    return {"Name": name, "DataType": _NAMES.get(np.dtype(p.dtype), "f32"),
            "DataRange": [{"Min": float(a), "Max": float(b), "IsFull": False} for a, b in zip(lo, hi)],
            "DataRangeMode": "by_channel" if p.axis is not None and np.ndim(p.rmin) else "by_tensor"}


def export_scheme(graph: Graph, weight_params: dict[str, QuantParam], path: Path) -> Path:
    """Write the scheme of a quantized graph (activations from ``value.meta["quant"]``, weights
    from InsertQDQ's record), atomically."""
    outputs = [_entry(v.name, v.meta[Meta.QUANT]) for v in graph.values()
               if Meta.QUANT in v.meta and v.const is None and v.meta[Meta.QUANT].rmin is not None]
    outputs += [_entry(name, p) for name, p in weight_params.items() if p.rmin is not None]
    return write_scale_json({"Version": "1.0", "Model": None, "Outputs": outputs}, path)


def load_scheme(path: Path, graph: Graph) -> dict[str, tuple]:
    """tensor -> (dtype: an integer type, float16, or None for float32; min, max): arrays for
    by_channel entries."""
    flag = f"--quant-scheme {path}"
    table = read_json(Path(path), flag)
    if not isinstance(table, dict) or not isinstance(table.get("Outputs"), list):
        raise ConfigError(f"{flag}: no \"Outputs\" list (not an nncase quant scheme)")
    overrides: dict[str, tuple] = {}
    for e in table["Outputs"]:
        name = e.get("Name") if isinstance(e, dict) else None
        if not isinstance(name, str) or not graph.has_value(name):
            raise ConfigError(f"{flag}: tensor {name!r} is not in the model")
        kind = e.get("DataType")
        if kind not in _TYPES:
            raise ConfigError(f"{flag}: tensor {name!r}: DataType {kind!r} is not one of {', '.join(_TYPES)}")
        ranges = e.get("DataRange")
        try:
            lo = np.array([float(r["Min"]) for r in ranges])
            hi = np.array([float(r["Max"]) for r in ranges])
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"{flag}: tensor {name!r}: DataRange must be a list of {{Min, Max}}") from None
        if not lo.size or np.any(lo > hi) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ConfigError(f"{flag}: tensor {name!r}: empty or inverted DataRange")
        mode = e.get("DataRangeMode", "by_tensor")
        if mode not in ("by_tensor", "by_channel") or (mode == "by_tensor" and lo.size != 1):
            raise ConfigError(f"{flag}: tensor {name!r}: DataRangeMode {mode!r} does not fit {lo.size} ranges")
        dtype = _TYPES[kind]
        per = mode == "by_channel"
        overrides[name] = TensorOverride(np.dtype(np.float32 if dtype is None else dtype), lo if per else lo[0],
                                        hi if per else hi[0])
    return overrides
