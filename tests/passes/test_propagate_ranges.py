"""PropagateRanges: one union-find resolves pass-through sharing and -uis Concat groups."""
import numpy as np

import builders
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import AssignQuantSpecs, Calibrate, InferShapes, MarkActivationFusion, PropagateRanges
from ptqc.quant import QuantScheme

UNIFIED = ["ra", "b_out", "m", "c1", "c2", "c3", "y1"]


def _params(unify):
    graph = import_model(builders.concat_heavy_model())
    passes = [InferShapes(), MarkActivationFusion(), AssignQuantSpecs(QuantScheme(unify_concat=unify)), Calibrate(),
              PropagateRanges(unify=unify)]
    PassManager(passes).run(graph, PassContext())
    return graph


def test_uis_gives_every_concat_input_and_output_one_scale():
    g = _params(unify=True)
    ps = [g.value(n).meta["quant"] for n in UNIFIED]
    assert all(p is ps[0] for p in ps), "a Concat input kept its own parameters"
    assert ps[0].rmax >= g.value("m").meta["quant"].rmax  # the union of the ranges
    lo = min(float(g.value(n).meta["quant"].rmin) for n in UNIFIED)
    assert float(ps[0].rmin) == lo


def test_without_uis_concat_inputs_keep_their_own_scales_and_pass_through_shares():
    g = _params(unify=False)
    scales = {n: float(g.value(n).meta["quant"].scale) for n in ("ra", "b_out", "m", "c1")}
    assert len(set(scales.values())) == 4
    assert g.value("y1").meta["quant"] is g.value("c2").meta["quant"]  # Reshape -> MaxPool share c2's
    assert g.value("x").meta["quant"] is not g.value("ra").meta["quant"]


def test_bias_scale_is_input_scale_times_weight_scale():
    graph = import_model(builders.conv_bn_relu_model(conv_bias=True))
    PassManager([InferShapes(), AssignQuantSpecs(), Calibrate(), PropagateRanges()]).run(graph, PassContext())
    x, w, b = (graph.value(n).meta["quant"] for n in ("x", "conv.weight", "conv.bias"))
    np.testing.assert_allclose(b.scale, x.scale * w.scale, rtol=1e-6)
    assert b.dtype == np.int32 and b.axis == 0 and not b.zero_point.any()


def test_16_bit_activation_ranges_get_headroom_and_8_bit_ones_and_weights_do_not():
    """A 16-bit activation group's range is widened by ``wide_headroom`` (unseen inputs beyond
    the calibration range otherwise clip); 8-bit ranges and weights keep their observed ones."""
    def params(dtype, headroom):
        graph = import_model(builders.conv_bn_relu_model(conv_bias=True))
        scheme = QuantScheme(activation_dtype=np.dtype(dtype), activation_symmetric=True, weight_dtype=np.dtype(dtype))
        PassManager([InferShapes(), AssignQuantSpecs(scheme), Calibrate(), PropagateRanges(wide_headroom=headroom)]).run(
            graph, PassContext())
        return {n: graph.value(n).meta["quant"] for n in ("x", "conv.weight")}

    wide, narrow = params(np.int16, 1.25), params(np.int16, 1.0)
    np.testing.assert_allclose(wide["x"].scale, narrow["x"].scale * 1.25, rtol=1e-6)
    np.testing.assert_array_equal(wide["conv.weight"].scale, narrow["conv.weight"].scale)
    assert float(params(np.int8, 1.25)["x"].scale) == float(params(np.int8, 1.0)["x"].scale)
