"""-cd / --cache-distribution: a rerun with the same inputs runs no inference and writes the
same bytes; changed data or model invalidates the cache and says so."""
import logging

import numpy as np
import onnx
import pytest

from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.errors import ConfigError
from ptqc.runtime import ort as ort_runtime


@pytest.fixture
def data(tmp_path, digits):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(12):
        np.save(folder / f"s{i:02d}.npy", digits.x_train[i])
    return folder


def _run(model, out, data, cache, **kw):
    # AdaRound reads the data for its layer statistics, which -cd does not keep: off here
    cfg = QuantConfig(cache_distribution=cache, iteration=(3,), batch_size=4, quant_mode=kw.pop("qm", ("kl",)),
                      adaround=False)
    return quantize(model, out, data, cfg)


def test_rerun_skips_inference_and_is_byte_identical(tmp_path, digits, data, monkeypatch):
    cache = tmp_path / "calib.npz"
    _run(digits.model, tmp_path / "a.onnx", data, cache)
    runs = []
    original = ort_runtime.OrtRunner.run
    monkeypatch.setattr(ort_runtime.OrtRunner, "run", lambda self, feeds: runs.append(1) or original(self, feeds))
    report = _run(digits.model, tmp_path / "b.onnx", data, cache)
    assert runs == []  # neither calibration nor the evaluation ran the model
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert report.cosine["logits"][0] > 0.9
    # every histogram method reads the same cached histogram
    _run(digits.model, tmp_path / "c.onnx", data, cache, qm=("mse",))
    assert runs == [1] * len(runs) and len(runs) == 3 * 2  # only mse's evaluation ran (float + quantized)


def test_changed_data_or_model_invalidates_and_says_so(tmp_path, digits, data, caplog):
    cache = tmp_path / "calib.npz"
    _run(digits.model, tmp_path / "a.onnx", data, cache)
    np.save(data / "s00.npy", digits.x_train[100])
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        _run(digits.model, tmp_path / "b.onnx", data, cache)
    assert "made for another model, data or method" in caplog.text
    caplog.clear()
    model = onnx.ModelProto()
    model.CopyFrom(digits.model)  # the session fixture stays untouched
    model.graph.initializer[0].float_data[:] = []  # same shape, other weights
    w = np.frombuffer(model.graph.initializer[0].raw_data, np.float32).copy() * 1.5
    model.graph.initializer[0].raw_data = w.tobytes()
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        _run(model, tmp_path / "c.onnx", data, cache)
    assert "made for another model, data or method" in caplog.text


def test_data_without_a_fingerprint_is_refused(tmp_path, digits):
    with pytest.raises(ConfigError, match="-cd/--cache-distribution"):
        _run(digits.model, tmp_path / "a.onnx", lambda executor: 1.0, tmp_path / "c.npz")
