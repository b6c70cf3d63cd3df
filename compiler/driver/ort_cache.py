"""onnxruntime's calibration cache (quantize_static's ``calibration_cache_path``): the activation
ranges in onnxruntime's own JSON (``TensorsData``, written and read by its
``save_tensors_data`` / ``load_tensors_data``): onnxruntime's caches serve ptqc, and ptqc's serve
onnxruntime where they hold the tensors it quantizes (ptqc observes no range for a graph output
it leaves as a Conv/Gemm/MatMul accumulator).

No file yet: calibrate, then write every calibrated tensor's range (a quantized activation's:
the one its scale was computed from, zero included) tagged with the calibration method.  A file: its ranges become
range overrides and calibration is skipped (no data reader needed); a cache written with a
different ``calibrate_method`` is refused (onnxruntime's rule), one written with SmoothQuant on
by a run with it off (or the other way) is recomputed and overwritten, warned (its wording).  A tensor the
cache does not hold is named by the range propagation ("no observed range").
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ptqc.errors import ConfigError
from ptqc.quant import QuantParam, TensorOverride

log = logging.getLogger("ptqc")


def read_cache(path: str | Path, method: str, smooth_quant: bool = False) -> dict[str, TensorOverride] | None:
    """The cached ranges as overrides, or None when they are to be computed (and written)."""
    from onnxruntime.quantization.calibrate import load_tensors_data  # heavy: 1.2 s to import

    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"calibration_cache_path {path}: not a file")
    if not path.exists():
        return None
    try:
        cached_smooth = bool(json.loads(path.read_text()).get("smooth_quant", False))
        if cached_smooth != smooth_quant:
            log.warning("Calibration cache at %s was produced with smooth_quant=%s; current run uses smooth_quant=%s. "
                        "Recomputing ranges and overwriting cache.", path, cached_smooth, smooth_quant)
            return None
        data = load_tensors_data(path)
        ranges = {name: td.range_value for name, td in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise ConfigError(f"calibration_cache_path {path}: not an onnxruntime calibration cache "
                          f"({type(e).__name__}: {' '.join(str(e).split())})") from None
    cached = getattr(data.calibration_method, "name", str(data.calibration_method))
    if cached != method:
        raise ConfigError(f"calibration_cache_path {path}: written with calibrate_method {cached}, but this run uses "
                          f"{method}; delete the cache or pass a matching calibrate_method")
    return {name: TensorOverride(lo=np.asarray(lo, np.float64), hi=np.asarray(hi, np.float64))
            for name, (lo, hi) in ranges.items()}


def write_cache(path: str | Path, method: str, params: dict[str, QuantParam], observed: dict[str, tuple],
                smooth_quant: bool = False) -> None:
    """Every calibrated tensor's range (a quantized activation's: the one its scale came from),
    in onnxruntime's format (written to a temporary file, then renamed)."""
    from onnxruntime.quantization.calibrate import (  # heavy: 1.2 s to import
        CalibrationMethod, TensorData, TensorsData, save_tensors_data)

    ranges = {n: r for n, r in observed.items() if r is not None and np.ndim(r[0]) == 0}
    ranges.update({n: (p.rmin, p.rmax) for n, p in params.items() if p.rmin is not None and p.axis is None})
    data = {name: TensorData(lowest=np.asarray(lo, np.float32), highest=np.asarray(hi, np.float32))
            for name, (lo, hi) in sorted(ranges.items())}
    save_tensors_data(TensorsData(CalibrationMethod[method], data), Path(path), smooth_quant=smooth_quant)
