"""onnxruntime's ``SmoothQuant`` extra option for quantize_static: SmoothQuant's migration on
the float model before it is calibrated (:class:`~ptqc.passes.smooth_activations.SmoothActivations`:
``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)`` per input channel of every MatMul/Gemm, folded
into the LayerNormalization in front where it can — onnxruntime's ``SmoothQuantFolding`` True —
else a Mul, which stays float as onnxruntime leaves it).  ptqc's pass smooths an input only where
that lowers its layers' estimated W8A8 error (onnxruntime smooths every one).

The data is read once for the statistics and once for calibration: a reader with ``rewind()`` is
rewound, another is deep-copied as onnxruntime does (and refused by name when it cannot be).
"""
from __future__ import annotations

import copy
from typing import Any

import onnx

from ptqc.driver.pipeline import convert_pipeline
from ptqc.errors import ConfigError, cannot_reread
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes.smooth_activations import SmoothActivations
from ptqc.passes.upgrade_opset import UpgradeOpset


def smoothed(model_input: Any, reader: Any, extra: dict) -> tuple[onnx.ModelProto, list[str]]:
    """The smoothed float model and the names of the Mul nodes it added (left float)."""
    if reader is None:
        raise ConfigError("extra_options SmoothQuant: needs a calibration_data_reader (a calibration cache holds "
                          "ranges only)")
    if not extra.get("SmoothQuantFolding", True):
        raise ConfigError("extra_options SmoothQuantFolding False: not built (ptqc folds the division into a "
                          "LayerNormalization where it can, else inserts a Mul)")
    alpha = extra.get("SmoothQuantAlpha", 0.5)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"extra_options SmoothQuantAlpha {alpha!r}: expected a number in [0, 1]")
    source = _first_read(reader)

    def drive(run) -> None:
        for feeds in iter(source.get_next, None):
            run(feeds)
    graph = import_model(model_input)
    before = {n.name for n in graph.nodes()}
    passes = [UpgradeOpset(17), *convert_pipeline(), SmoothActivations(float(alpha))]
    graph = PassManager(passes).run(graph, PassContext(data=drive)).graph
    if hasattr(reader, "rewind"):
        reader.rewind()
    added = [n.name for n in graph.nodes() if n.op_type == "Mul" and n.name not in before]
    return export_model(graph, constants_as_initializers=True), added


def _first_read(reader: Any) -> Any:
    """What the statistics read: the reader itself when it can be rewound, else a deep copy."""
    if hasattr(reader, "rewind"):
        return reader
    try:
        return copy.deepcopy(reader)
    except (TypeError, copy.Error):
        raise cannot_reread("extra_options SmoothQuant") from None
