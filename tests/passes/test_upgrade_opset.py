"""UpgradeOpset: onnx's version converter to opset 13, outputs unchanged."""
import numpy as np
import onnx
from onnx import helper

import builders
from checks import assert_outputs_close, run_pass
from ptqc.onnx_io import export_model
from ptqc.passes import UpgradeOpset


def test_opset_11_model_is_upgraded_with_outputs_unchanged():
    model = builders.make_model(
        [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
         helper.make_node("Squeeze", ["u"], ["s"], axes=[0]),
         helper.make_node("Relu", ["s"], ["y"])],
        [("x", np.float32, [2, 3])], [("y", np.float32, [2, 3])], opset=11)
    result, _ = run_pass(model, UpgradeOpset(13))
    out = export_model(result.graph)
    assert result.modified and out.opset_import[0].version == 13
    onnx.checker.check_model(out)
    assert_outputs_close(model, out, {"x": np.arange(6, dtype=np.float32).reshape(2, 3) - 3}, bound=0)


def test_newer_models_are_left_alone():
    result, _ = run_pass(builders.conv_bn_relu_model(opset=17), UpgradeOpset(13))
    assert not result.modified and result.graph.opset == 17
