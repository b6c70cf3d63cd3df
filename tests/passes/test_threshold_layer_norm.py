"""ThresholdLayerNorm (-lt): LayerNormalization's input and output take the range [-t, t]."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

import builders
from checks import list_reader
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize


def _ln_model(seed=0):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "w2"], ["y"])]
    inits = {"w1": rng.standard_normal((16, 16)).astype(np.float32), "g": np.ones(16, np.float32),
             "b": np.zeros(16, np.float32), "w2": rng.standard_normal((16, 8)).astype(np.float32)}
    return builders.make_model(nodes, [("x", np.float32, ["N", 16])], [("y", np.float32, ["N", 8])], inits, opset=17)


def _range_read(model, tensor):
    """The float range [lo, hi] the QuantizeLinear of ``tensor`` can represent."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    scale, zp = float(inits[q.input[1]]), inits[q.input[2]]
    info = np.iinfo(zp.dtype)
    return (info.min - int(zp)) * scale, (info.max - int(zp)) * scale, scale


def _feeds(n, seed):
    rng = np.random.default_rng(seed)
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(n)]
    feeds[0]["x"][0] *= 30.0  # one outlier row stretches the calibrated ranges
    return feeds


def test_layer_threshold_sets_layernorm_input_and_output_ranges():
    model = _ln_model()
    base = quantize(model, None, list_reader(_feeds(4, 1)), QuantConfig(quant_mode=("min_max",)), evaluate=False)
    got = quantize(model, None, list_reader(_feeds(4, 1)), QuantConfig(quant_mode=("min_max",), layer_threshold=3.0),
                   evaluate=False)
    for tensor in ("h", "n"):
        lo, hi, scale = _range_read(got.model, tensor)
        assert -3.0 - scale <= lo <= -3.0 + scale and 3.0 - scale <= hi <= 3.0 + scale, (tensor, lo, hi)
        base_lo, base_hi, _ = _range_read(base.model, tensor)
        assert abs(base_hi - hi) > scale  # calibrated: wider before the LayerNorm (the outlier), narrower after
    # the other tensors keep their calibrated ranges
    assert _range_read(got.model, "x")[:2] == _range_read(base.model, "x")[:2]
    onnx.checker.check_model(got.model)
