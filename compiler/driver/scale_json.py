"""The scale JSON (``-gsj`` writes it, ``-lsj`` loads it): every quantized activation
tensor's parameters, by tensor name.

    {"format": "ptqc-scale", "version": 1,
     "tensors": {"<tensor>": {"dtype": "uint8", "scale": 0.0123, "zero_point": 128,
                              "axis": null, "bits": 8, "method": "min_max",
                              "rmin": -1.57, "rmax": 1.56}},
     "weights": {"<weight>": {... "axis": 0, "scale": [..per channel..] ...}}}

``tensors`` holds activations (graph inputs and computed tensors): loading the file uses
these parameters instead of calibrating; ``scale`` and ``zero_point`` are what is applied
(``rmin``/``rmax`` are the observed range, for information).  ``weights`` (and int32 biases)
are written for information only: they are always computed from the model's own weights.
Tensors that share parameters (pass-through ops, ``-uis`` groups) must keep equal entries.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ptqc.errors import ConfigError
from ptqc.files import atomic_open
from ptqc.ir import Graph
from ptqc.quant import QuantParam
from ptqc.vocab import Meta

FORMAT = "ptqc-scale"


def _entry(p: QuantParam) -> dict:
    def plain(a):
        return None if a is None else (np.asarray(a).tolist())
    return {"dtype": str(np.dtype(p.dtype)), "scale": plain(p.scale), "zero_point": plain(p.zero_point),
            "axis": p.axis, "bits": p.bits, "method": p.method, "rmin": plain(p.rmin), "rmax": plain(p.rmax)}


def scale_table(graph: Graph, weight_params: dict[str, QuantParam] | None = None) -> dict:
    """The JSON object for a quantized graph: activations from ``value.meta["quant"]``, weights
    and biases from ``weight_params`` (InsertQDQ's record of the constants it quantized)."""
    tensors = {v.name: _entry(v.meta[Meta.QUANT]) for v in graph.values()
               if Meta.QUANT in v.meta and v.const is None}
    weights = {name: _entry(p) for name, p in (weight_params or {}).items()}
    return {"format": FORMAT, "version": 1, "tensors": tensors, "weights": weights}


def write_scale_json(table: dict, path: Path) -> Path:
    """Write atomically (temp file, then rename)."""
    with atomic_open(path) as f:
        json.dump(table, f, indent=1, sort_keys=False)
        f.write("\n")
    return path


def read_json(path: Path, flag: str):
    """A JSON file's content; a one-line ConfigError naming the flag and file otherwise."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{flag}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{flag}: not valid JSON ({e})") from None


def load_scale_json(path: Path, graph: Graph) -> dict[str, QuantParam]:
    """Activation parameters from ``path``; every name must be a tensor of ``graph``."""
    flag = f"-lsj/--load-scale-json {path}"
    table = read_json(Path(path), flag)
    if not isinstance(table, dict) or not isinstance(table.get("tensors"), dict):
        raise ConfigError(f"{flag}: no \"tensors\" object (not a ptqc scale JSON)")
    out: dict[str, QuantParam] = {}
    for name, e in table["tensors"].items():
        if not graph.has_value(name):
            raise ConfigError(f"{flag}: tensor {name!r} is not in the model")
        try:
            dtype = np.dtype(e["dtype"])
            scale = np.asarray(e["scale"], np.float32)
            zp = np.asarray(e["zero_point"]).astype(dtype)
            axis = e.get("axis")
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{flag}: tensor {name!r}: bad entry ({err})") from None
        if dtype.kind not in "iu" or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ConfigError(f"{flag}: tensor {name!r}: scale must be positive and dtype an integer type")
        out[name] = QuantParam(dtype, scale, zp, axis, bits=dtype.itemsize * 8, method=str(e.get("method", "loaded")),
                               rmin=None if e.get("rmin") is None else np.asarray(e["rmin"], np.float32),
                               rmax=None if e.get("rmax") is None else np.asarray(e["rmax"], np.float32),
                               symmetric=bool(np.all(zp == 0)))
    return out
