"""The README demo: a real model quantized end to end on this machine, nothing downloaded.

Trains a small CNN on scikit-learn's bundled digits data (numpy, a few seconds), quantizes
it with ptqc (int8 QDQ, min_max calibration on the training images, fed through the
reference tool's infer-function protocol), and reports on the 450 held-out test images:
float vs quantized top-1 accuracy, the cosine of the logits, and ptqc's quantize time
against onnxruntime's ``quantize_static`` on the same data.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ptqc import samples as models
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import cosine, quantize


def _run(model_path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def main() -> int:
    t0 = time.perf_counter()
    digits = models.train_digits_cnn()
    print(f"trained the digits CNN in {time.perf_counter() - t0:.1f} s "
          f"({len(digits.y_train)} training / {len(digits.y_test)} test images)")
    x, y = digits.x_train, digits.y_train

    def calibrate(executor):  # the infer-function protocol: the user's loop calls forward
        correct = 0
        for i in range(0, len(x), executor.batch_size):
            logits = executor.forward(np.ascontiguousarray(x[i:i + executor.batch_size]))[0]
            correct += int((logits.argmax(1) == y[i:i + executor.batch_size]).sum())
        return correct / len(x)

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "digits.onnx", Path(tmp) / "digits_quantize.onnx"
        src.write_bytes(digits.model.SerializeToString())
        t0 = time.perf_counter()
        report = quantize(src, out, calibrate, QuantConfig(quant_mode=("min_max",), batch_size=64, output_dequant=True))
        ptqc_seconds = time.perf_counter() - t0
        float_logits, quant_logits = _run(src, digits.x_test), _run(out, digits.x_test)
        ort_seconds = _onnxruntime_quantize_seconds(src, Path(tmp) / "ort.onnx", x)
        chip_acc, chip_seconds = _on_the_chip(src, Path(tmp) / "digits_tx510x.onnx", calibrate, digits)
    float_acc = float((float_logits.argmax(1) == digits.y_test).mean())
    quant_acc = float((quant_logits.argmax(1) == digits.y_test).mean())
    cos = [cosine(a, b) for a, b in zip(float_logits, quant_logits)]
    ops = {}
    for n in report.model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"ptqc quantize: {sum(ops.values())} nodes ({ops.get('QuantizeLinear', 0)} QuantizeLinear, "
          f"{ops.get('DequantizeLinear', 0)} DequantizeLinear), calibrated on {len(x)} images in {ptqc_seconds:.2f} s "
          f"(onnxruntime quantize_static, same data: {ort_seconds:.2f} s; ratio {ptqc_seconds / ort_seconds:.2f})")
    print(f"training-set accuracy through the infer function: float {report.float_metric:.4f}, "
          f"quantized {report.quant_metric:.4f}")
    print(f"test accuracy: float {float_acc:.4f}, int8 {quant_acc:.4f} (drop {100 * (float_acc - quant_acc):.2f} pt); "
          f"logits cosine min {min(cos):.5f}, mean {np.mean(cos):.5f}")
    print(f"on the TX510x integer simulator (what the chip computes): test accuracy {chip_acc:.4f} "
          f"(drop {100 * (float_acc - chip_acc):.2f} pt), {len(digits.y_test)} images in {chip_seconds:.2f} s")
    return 0


def _on_the_chip(src: Path, out: Path, calibrate, digits) -> tuple[float, float]:
    """Quantize for TX510x (8-bit, symmetric) and run the held-out images on its simulator."""
    from ptqc.targets.families import family_of
    from ptqc.targets.lower import lower
    from ptqc.runtime.simulator import Simulator

    config = QuantConfig(chip="TX510x", quant_mode=("min_max",), batch_size=64, iteration=(22,), output_dequant=True)
    quantize(src, out, calibrate, config, evaluate=False)
    sim = Simulator(lower(out, family_of("TX510x")))
    t0 = time.perf_counter()
    logits = sim.infer({"input": digits.x_test})[0]
    return float((logits.argmax(1) == digits.y_test).mean()), time.perf_counter() - t0


def _onnxruntime_quantize_seconds(src: Path, out: Path, x: np.ndarray) -> float:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.ascontiguousarray(x[i:i + 64]) for i in range(0, len(x), 64))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    logging.getLogger().setLevel(logging.ERROR)
    t0 = time.perf_counter()
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
