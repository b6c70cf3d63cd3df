"""EqualizeCrossLayer: the float outputs stay (within 1e-5), each equalized channel ends with
the same weight range on both sides, and non-homogeneous ops (Clip) stop a chain."""
import numpy as np
from onnx import helper

import builders
from checks import ort_outputs, relative_error
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext
from ptqc.passes import EqualizeCrossLayer


def _model(seed=0):
    rng = np.random.default_rng(seed)
    wide = lambda *s: (rng.standard_normal(s) * np.exp(rng.uniform(-2, 2, (s[0],) + (1,) * (len(s) - 1))))  # noqa: E731
    inits = {"w1": wide(8, 3, 3, 3), "b1": rng.standard_normal(8), "w2": wide(8, 1, 3, 3), "b2": rng.standard_normal(8),
             "slope": rng.uniform(0.05, 0.3, (8, 1, 1)), "w3": wide(6, 4, 1, 1), "b3": rng.standard_normal(6),
             "w4": wide(4, 6, 3, 3), "w5": wide(4, 4, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], group=8, pads=[1, 1, 1, 1]),  # depthwise
             helper.make_node("PRelu", ["c2", "slope"], ["a2"]),
             helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], group=2),  # grouped
             helper.make_node("Conv", ["c3", "w4"], ["c4"], pads=[1, 1, 1, 1]),  # no bias
             helper.make_node("Clip", ["c4", "lo", "hi"], ["k4"]),
             helper.make_node("Conv", ["k4", "w5"], ["y"])]
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    inits.update(lo=np.float32(0), hi=np.float32(6))
    return builders.make_model(nodes, [("x", np.float32, [2, 3, 16, 16])], [("y", np.float32, None)], inits, opset=13)


def _exact(model, feeds):
    """The model's output computed in float64 (onnx's reference evaluator)."""
    from onnx import TensorProto, numpy_helper
    from onnx.reference import ReferenceEvaluator

    m = type(model)()
    m.CopyFrom(model)
    for i in m.graph.initializer:
        if i.data_type == TensorProto.FLOAT:
            i.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(i).astype(np.float64), i.name))
    for v in [*m.graph.input, *m.graph.output]:
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return ReferenceEvaluator(m).run(None, {k: v.astype(np.float64) for k, v in feeds.items()})[0]


def _ranges(graph, w, axis):
    a = np.abs(graph.constant(w)).astype(np.float64)
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).max(axis=1)


def test_float_outputs_stay_and_both_sides_share_each_channel_range():
    model = _model()
    feeds = builders.random_feeds(model, seed=1)
    graph = import_model(model)
    result = EqualizeCrossLayer().run(graph, PassContext())
    assert result.modified
    after = export_model(graph)
    # this model's channel ranges span e^4 and its sums cancel: float32 itself is 1e-5 off the
    # exact function here, so the equalized model must be as close to exact as the original
    exact = _exact(model, feeds)
    original = relative_error(exact, ort_outputs(model, feeds)[0])
    assert relative_error(exact, ort_outputs(after, feeds)[0]) <= 2 * original
    convs = {n.outputs[0]: n for n in graph.nodes() if n.op_type == "Conv"}
    w1, w2, w3, w4, w5 = (convs[c].inputs[1] for c in ("c1", "c2", "c3", "c4", "y"))
    # c1 -> (Relu, MaxPool) -> depthwise c2: channel c of w1 and w2[c] share their range
    np.testing.assert_allclose(_ranges(graph, w1, 0), _ranges(graph, w2, 0), rtol=0.05)
    # c3 -> c4 (grouped -> dense): w3's output channel c and w4's input channel c
    np.testing.assert_allclose(_ranges(graph, w3, 0), _ranges(graph, w4, 1), rtol=0.05)
    # the Clip stops the chain: w5 is untouched
    np.testing.assert_array_equal(graph.constant(w5), import_model(model).constant("w5"))


def test_nothing_to_equalize_leaves_the_graph_alone():
    model = builders.conv_bn_relu_model()
    graph = import_model(model)
    before = export_model(graph).SerializeToString()
    assert not EqualizeCrossLayer().run(graph, PassContext()).modified
    assert export_model(graph).SerializeToString() == before


def test_digits_cnn_outputs_stay_within_1e_5(digits):
    """The trained digits CNN after the float cleanup (BatchNormalization folded): its
    Conv -> Relu -> MaxPool -> Conv pair is equalized and the logits move by at most 1e-5
    of their range."""
    from ptqc.driver.pipeline import prepare_pipeline
    from ptqc.pass_manager import PassManager

    graph = PassManager(prepare_pipeline()).run(import_model(digits.model), PassContext()).graph
    before = export_model(graph)
    assert EqualizeCrossLayer().run(graph, PassContext()).modified
    feeds = {"input": digits.x_test[:64]}
    assert relative_error(ort_outputs(before, feeds)[0], ort_outputs(export_model(graph), feeds)[0]) <= 1e-5
