"""The README demo: a real model end to end on this machine, nothing downloaded.

Trains a small CNN on scikit-learn's bundled digits data (numpy, a few seconds), runs
ptqc's convert pipeline on it (BatchNormalization fused, graph cleaned), and reports the
accuracy of the float model, of the converted model under onnxruntime, and of the converted
model under ptqc's own numpy reference executor.  Quantization joins this demo when
``-r quant`` lands.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import models  # noqa: E402

from ptqc.driver.api import convert, infer_float  # noqa: E402
from ptqc.onnx_io import export_model  # noqa: E402


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def main() -> int:
    t0 = time.perf_counter()
    digits = models.train_digits_cnn()
    print(f"trained digits CNN in {time.perf_counter() - t0:.1f} s; "
          f"float accuracy (onnxruntime): {digits.float_accuracy:.4f} on {len(digits.y_test)} test images")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "digits.onnx"
        src.write_bytes(digits.model.SerializeToString())
        report = convert(src, Path(tmp) / "digits_convert.onnx")
        before, after = report.counts_before, report.counts_after
        print(f"ptqc convert: {sum(before.values())} -> {sum(after.values())} nodes, "
              f"BatchNormalization {before.get('BatchNormalization', 0)} -> {after.get('BatchNormalization', 0)}, "
              f"{sum(report.seconds.values()) * 1e3:.0f} ms")
        session = ort.InferenceSession(export_model(report.graph).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        ort_logits = session.run(None, {"input": digits.x_test})[0]
        ref_logits = next(iter(infer_float(report.graph, {"input": digits.x_test}).values()))
    print(f"converted model accuracy: onnxruntime {_accuracy(ort_logits, digits.y_test):.4f}, "
          f"ptqc reference executor {_accuracy(ref_logits, digits.y_test):.4f}")
    print(f"max |reference - onnxruntime| / max |onnxruntime| = "
          f"{np.abs(ref_logits - ort_logits).max() / np.abs(ort_logits).max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
