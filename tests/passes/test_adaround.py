"""AdaRound: every layer it rounds reconstructs its output better than round-to-nearest
(measured here independently: the output of a Conv whose weights are the rounding error, on
the layer's float inputs), its weights stay on the quantization grid the Q/DQ reads them
with, and a rounding that lowers the held-out cosine is refused."""
import copy

import numpy as np
import onnx
from onnx import helper

import builders
from checks import ort_outputs
from ptqc.onnx_io import export_model, import_model, with_outputs
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import AdaRound, AssignQuantSpecs
from ptqc.quant import QuantScheme


def _prepared(model, feeds):
    from ptqc.driver.pipeline import prepare_pipeline

    graph = PassManager(prepare_pipeline()).run(import_model(model), PassContext()).graph
    ctx = PassContext(data=lambda run: [run(f) for f in feeds])
    AssignQuantSpecs(QuantScheme(activation_dtype="int8", activation_symmetric=True)).run(graph, ctx)
    return graph, ctx


def _conv_error(node, x: np.ndarray, delta: np.ndarray) -> float:
    """||Conv(x; delta)||²: the output error of weights off by ``delta`` (no bias)."""
    attrs = {k: v for k, v in node.attrs.items()}
    conv = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    m = builders.make_model([conv], [("x", np.float32, list(x.shape))], [("y", np.float32, None)],
                            {"w": delta.astype(np.float32)}, opset=13)
    y = ort_outputs(m, {"x": x.astype(np.float32)})[0].astype(np.float64)
    return float(np.sum(y * y))


def test_each_rounded_layer_reconstructs_better_than_round_to_nearest(digits):
    feeds = [{"input": digits.x_train[i * 16:(i + 1) * 16]} for i in range(6)]
    graph, ctx = _prepared(digits.model, feeds)
    float_graph = copy.deepcopy(graph)
    assert AdaRound(guard=False).run(graph, ctx).modified
    model = export_model(float_graph, constants_as_initializers=True)
    convs = [n for n in graph.topological_order() if n.op_type == "Conv"]
    inputs = [n.inputs[0] for n in convs]
    sess_model = onnx.load_from_string(with_outputs(model, inputs))
    names = [o.name for o in sess_model.graph.output]
    values = [dict(zip(names, ort_outputs(sess_model, f))) | f for f in feeds]
    rounded = 0
    for node in convs:
        w = float_graph.constant(node.inputs[1]).astype(np.float64)
        w2 = graph.constant(node.inputs[1]).astype(np.float64)
        s = np.abs(w).reshape(len(w), -1).max(axis=1).reshape((-1,) + (1,) * (w.ndim - 1)) / 127
        q = np.rint(w2 / s)
        assert np.abs(w2 / s - q).max() < 1e-3 and np.abs(q).max() <= 127  # on the grid
        nearest = np.rint(w / s)
        if np.array_equal(q, nearest):
            continue
        rounded += 1
        assert np.abs(q - w / s).max() < 1 + 1e-6  # up or down, never further
        err = [sum(_conv_error(node, v[node.inputs[0]], s * codes - w) for v in values) for codes in (nearest, q)]
        assert err[1] < err[0], (node.name, err)
    assert rounded == len(convs)


def test_a_rounding_that_lowers_the_held_out_cosine_is_refused(digits, caplog):
    """The guard scores round-to-nearest and the learned rounding on the held-out batches;
    told the learned one scores lower, it restores every weight and says so."""
    feeds = [{"input": digits.x_train[i * 16:(i + 1) * 16]} for i in range(6)]
    graph, ctx = _prepared(digits.model, feeds)
    from ptqc.passes import Calibrate

    Calibrate().run(graph, ctx)
    ctx.analyses["validation_feeds"] = [{"input": digits.x_test[:32]}]
    before = {n.inputs[1]: graph.constant(n.inputs[1]).copy() for n in graph.nodes() if n.op_type in ("Conv", "Gemm")}
    pass_ = AdaRound()
    measured = []
    real = pass_._cosine

    def scored(g, f, c, x):  # the real measure, then the learned rounding made to look worse
        measured.append(real(g, f, c, x))
        return measured[-1] - (0.5 if len(measured) == 2 else 0.0)
    pass_._cosine = scored
    with caplog.at_level("INFO", logger="ptqc"):
        result = pass_.run(graph, ctx)
    assert len(measured) == 2 and 0.9 < measured[0] <= 1.0
    assert not result.modified and all(np.array_equal(before[k], graph.constant(k)) for k in before)
    assert "round-to-nearest kept" in caplog.text


def test_a_layer_with_fewer_input_rows_than_four_per_input_keeps_round_to_nearest(caplog):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    model = builders.make_model(nodes, [("x", np.float32, ["n", 32])], [("y", np.float32, None)],
                                {"w": rng.normal(size=(16, 32)).astype(np.float32),
                                 "b": np.zeros(16, np.float32)}, opset=13)
    for batches, learns in ((20, True), (12, False)):  # 8 rows a batch; 4 * 32 = 128 rows needed
        feeds = [{"x": rng.normal(size=(8, 32)).astype(np.float32)} for _ in range(batches)]
        graph, ctx = _prepared(model, feeds)
        before = graph.constant("w").copy()
        with caplog.at_level("INFO", logger="ptqc"):
            AdaRound(guard=False).run(graph, ctx)
        assert (not np.array_equal(before, graph.constant("w"))) == learns, batches


def test_a_weight_row_of_zeros_is_warned_about_once_by_name_not_by_adaround(caplog):
    """AdaRound rebuilds each weight's grid for itself; a zero output channel is the weight's own
    quantization's to report, by name, not AdaRound's as an unnamed tensor ''."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 32)).astype(np.float32)
    w[3] = 0.0
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    model = builders.make_model(nodes, [("x", np.float32, ["n", 32])], [("y", np.float32, None)],
                                {"w": w, "b": np.zeros(16, np.float32)}, opset=13)
    graph, ctx = _prepared(model, [{"x": rng.normal(size=(8, 32)).astype(np.float32)} for _ in range(20)])
    with caplog.at_level("WARNING", logger="ptqc"):
        assert AdaRound(guard=False).run(graph, ctx).modified
    assert "zero range" not in caplog.text
    from ptqc.quant import qparam_from_range

    with caplog.at_level("WARNING", logger="ptqc"):
        qparam_from_range(np.zeros(2), np.array([0.0, 1.0]), np.int8, symmetric=True, axis=0, name="w")
    assert caplog.text.count("tensor 'w' has a zero range") == 1
