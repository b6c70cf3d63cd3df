"""The reference executor runs whole real models within 1e-4 relative of onnxruntime."""
import onnx
import pytest

import models
from checks import ort_outputs, relative_error
from ptqc.driver.api import infer_float
from ptqc.onnx_io import import_model


def test_digits_cnn_matches_onnxruntime(digits):
    feeds = {"input": digits.x_test}
    ours = infer_float(import_model(digits.model), feeds)
    (ref,) = ort_outputs(digits.model, feeds)
    assert relative_error(ref, next(iter(ours.values()))) <= 1e-4
    assert (next(iter(ours.values())).argmax(1) == digits.y_test).mean() == pytest.approx(digits.float_accuracy)


@pytest.mark.parametrize("name", ["det", "rec", "cls"])
def test_ppocr_matches_onnxruntime(ppocr, name):
    model = onnx.load(str(ppocr[name]))
    feeds = models.ppocr_sample_inputs(name)
    graph = import_model(model)
    ours = infer_float(graph, feeds)
    for out_name, ref in zip(graph.outputs, ort_outputs(model, feeds)):
        assert ours[out_name].shape == ref.shape
        assert relative_error(ref, ours[out_name]) <= 1e-4, out_name
