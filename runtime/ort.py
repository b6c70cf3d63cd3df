"""onnxruntime as an executor: one session per model, any intermediate tensors as extra
outputs of the same run (calibration reads every observed tensor from one inference).

Imports numpy and onnxruntime only.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort


class OrtRunner:
    """Runs a serialized model on the CPU provider and returns ``{name: array}`` for
    ``outputs`` (names the model declares as graph outputs).  Threads default to onnxruntime's
    choice; ``threads`` pins the intra-op count (worker processes use 1)."""

    def __init__(self, model: bytes, outputs: Sequence[str] | None = None, *, threads: int = 0,
                 optimize: bool = True):
        so = ort.SessionOptions()
        so.log_severity_level = 4  # fatal only: a failure comes back as the exception, not a log line
        if threads:
            so.intra_op_num_threads = threads
        if not optimize:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.outputs = list(outputs) if outputs is not None else [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, dict(feeds))
        return dict(zip(self.outputs, values))
