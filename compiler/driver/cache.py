"""The calibration cache (``-cd / --cache-distribution PATH``): observer states saved under a
key made of the model, the data, and what the observers keep, so a rerun with the same
inputs skips inference and gives byte-identical output.

The key hashes (sha256): the float model after cleanup with its observed tensor list, the
observer kind (min_max keeps min/max; every histogram method shares one histogram, so kl,
mse, percentile... reuse one cache), and the data: the -d folder's files (names and
contents), the -uds script's text and -if name, -i, -bs, -is, --calibrate-size and the image
options.  Data given to the API as a reader or a function has no fingerprint and cannot be
cached (a clear error).  The file is one ``.npz``, written atomically.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ptqc.driver.config import QuantConfig
from ptqc.errors import ConfigError
from ptqc.files import atomic_open
from ptqc.passes.calibration.observers import HistogramObserver, MinMaxObserver

log = logging.getLogger("ptqc")
FORMAT = "ptqc-calibration-cache-1"


def data_fingerprint(config: QuantConfig, data: Any) -> str:
    if data is not None and not isinstance(data, (str, Path)):
        raise ConfigError("-cd/--cache-distribution: calibration data given as a reader or a function has no "
                          "fingerprint to key a cache with; give a -d folder or a -uds script")
    h = hashlib.sha256()
    settings = {k: getattr(config, k) for k in ("infer_func", "iteration", "batch_size", "input_shapes",
                                                 "calibrate_size", "image_format", "resize", "resize_method",
                                                 "center_crop", "image_mean", "image_std", "holdout", "validation_data")
                if hasattr(config, k)}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    if config.user_defined_script is not None:
        h.update(Path(config.user_defined_script).read_bytes())
    folder = Path(data) if data is not None else (Path(config.data) if config.data is not None else None)
    if folder is not None and folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def cache_key(model_bytes: bytes, observed: list[str], kind: str, fingerprint: str) -> str:
    h = hashlib.sha256(model_bytes)
    h.update(json.dumps({"observed": observed, "kind": kind, "data": fingerprint}).encode())
    return h.hexdigest()


def load(path: Path, key: str) -> tuple[dict, float | None] | None:
    """The cached observers and float metric, or None (missing, or made for another model or
    data: said in the log)."""
    if not path.exists():
        log.info("-cd %s: no cache yet; calibrating and writing it", path)
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            if header.get("format") != FORMAT:
                raise ValueError("not a ptqc calibration cache")
            if header["key"] != key:
                log.warning("-cd %s: made for another model, data or method; recalibrating and replacing it", path)
                return None
            observers = {}
            for i, entry in enumerate(header["observers"]):
                observers[entry["name"]] = _restore(entry, z, i)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"-cd/--cache-distribution {path}: unreadable cache ({e})") from None
    log.info("-cd %s: %d observer states loaded; calibration skipped", path, len(observers))
    return observers, header.get("metric")


def save(path: Path, key: str, observers: dict, metric: float | None = None) -> None:
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i, (name, obs) in enumerate(observers.items()):
        if isinstance(obs, HistogramObserver):
            entries.append({"name": name, "kind": "histogram", "method": obs.method, "bins": obs.bins,
                            "exponent": obs.exponent, "min": obs.min, "max": obs.max, "batches": obs.batches,
                            "percent": obs.percent, "outlier_ratio": obs.outlier_ratio})
            arrays[f"counts_{i}"] = obs.counts
        else:
            entries.append({"name": name, "kind": "min_max", "axis": obs.axis, "batches": obs.batches})
            arrays[f"min_{i}"], arrays[f"max_{i}"] = obs.min, obs.max
    arrays["header"] = np.asarray(json.dumps({"format": FORMAT, "key": key, "observers": entries, "metric": metric}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def _restore(entry: dict, z, i: int):
    if entry["kind"] == "histogram":
        obs = HistogramObserver(entry["name"], method=entry["method"], bins=entry["bins"], percent=entry["percent"],
                                outlier_ratio=entry["outlier_ratio"])
        obs.counts = np.array(z[f"counts_{i}"], np.int64)
        obs.exponent, obs.min, obs.max, obs.batches = entry["exponent"], entry["min"], entry["max"], entry["batches"]
        return obs
    obs = MinMaxObserver(entry["name"], entry["axis"])
    obs.min, obs.max, obs.batches = np.array(z[f"min_{i}"]), np.array(z[f"max_{i}"]), entry["batches"]
    return obs


# Evaluation results (per-output cosine, the infer function's metric) depend only on the
# quantized model and the data, so a rerun that produced the same model bytes from the same
# data reuses them: the rerun then runs no inference at all.
def _evaluations_path(path: Path) -> Path:
    return path.with_name(path.name + ".evaluations.json")


def load_evaluation(path: Path, model_bytes: bytes, fingerprint: str) -> dict | None:
    key = hashlib.sha256(model_bytes + fingerprint.encode()).hexdigest()
    try:
        return json.loads(_evaluations_path(path).read_text()).get(key)
    except (OSError, ValueError):
        return None


def save_evaluation(path: Path, model_bytes: bytes, fingerprint: str, result: dict) -> None:
    key = hashlib.sha256(model_bytes + fingerprint.encode()).hexdigest()
    target = _evaluations_path(path)
    try:
        table = json.loads(target.read_text())
    except (OSError, ValueError):
        table = {}
    table[key] = result
    with atomic_open(target) as f:
        json.dump(table, f)
