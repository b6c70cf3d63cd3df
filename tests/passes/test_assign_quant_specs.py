"""AssignQuantSpecs: which ops run quantized and the spec of each tensor they touch."""
import numpy as np
from onnx import helper

import builders
from checks import run_pass
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import AssignQuantSpecs, FuseBatchNorm, InferShapes, MarkActivationFusion
from ptqc.quant import DerivedSpec, PlainSpec, QuantScheme, SharedSpec


def _specced(model, scheme=None):
    ctx = PassContext()
    g = PassManager([InferShapes(), FuseBatchNorm(), MarkActivationFusion(), AssignQuantSpecs(scheme)]).run(
        import_model(model), ctx).graph
    return g, ctx


def test_conv_relu_group_has_no_qdq_between_and_weights_per_channel():
    g, _ = _specced(builders.conv_bn_relu_model())
    (conv,) = [n for n in g.nodes() if n.op_type == "Conv"]
    assert "qspec" not in g.value(conv.outputs[0]).meta  # inside the fused Conv+Relu
    assert g.value("x").meta["qspec"] == PlainSpec(np.dtype(np.uint8), False)
    assert g.value("y").meta["qspec"] == PlainSpec(np.dtype(np.uint8), False)
    assert g.value(conv.inputs[1]).meta["qspec"] == PlainSpec(np.dtype(np.int8), True, 0)
    bias = g.value(conv.inputs[2]).meta["qspec"]
    assert isinstance(bias, DerivedSpec) and bias.sources == ("x", conv.inputs[1]) and bias.axis == 0


def test_pass_through_ops_share_their_input_and_unknown_ops_stay_float():
    model = builders.make_model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Transpose", ["r"], ["t"], name="tr", perm=[1, 0]),
         helper.make_node("Exp", ["t"], ["e"], name="exp"),
         helper.make_node("Reshape", ["e", "shape"], ["y"], name="reshape")],
        [("x", np.float32, [2, 3])], [("y", np.float32, [6])], {"shape": np.array([6], np.int64)})
    g, ctx = _specced(model)
    assert g.value("t").meta["qspec"] == SharedSpec("r")
    assert "qspec" not in g.value("y").meta  # a Reshape behind the float Exp stays float
    assert ctx.analyses["float_ops"] == {"Exp": ["exp"], "Reshape": ["reshape"]}


def test_a_model_input_behind_a_pass_through_op_takes_the_bits_of_the_op_that_reads_it():
    """x -> Unsqueeze -> Conv: with the Conv at 16 bits, x is 16-bit as it would be if the Conv
    read it directly (an 8-bit input held an all-16-bit mix of brainmaze's bi-LSTM at 0.994)."""
    rng = np.random.default_rng(0)
    model = builders.make_model(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="unsq"),
         helper.make_node("Conv", ["u", "w"], ["y"], name="conv")],
        [("x", np.float32, [1, 8, 8])], [("y", np.float32, [1, 2, 8, 8])],
        {"axes": np.array([1], np.int64), "w": rng.normal(size=(2, 1, 1, 1)).astype(np.float32)})
    for bits, dtype in (((("conv", 16),), np.int16), ((), np.int8)):
        g, _ = _specced(model, QuantScheme(activation_dtype=np.dtype(np.int8), activation_symmetric=True,
                                           node_bits=bits))
        assert g.value("x").meta["qspec"] == PlainSpec(np.dtype(dtype), True), bits
        assert g.value("u").meta["qspec"] == SharedSpec("x")


def test_gemm_weight_axis_follows_transB_and_node_exclusion_is_honoured():
    rng = np.random.default_rng(0)
    model = builders.make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc1", transB=1),
         helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc2")],
        [("x", np.float32, [1, 4])], [("y", np.float32, [1, 2])],
        {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.zeros(3, np.float32),
         "w2": rng.standard_normal((3, 2)).astype(np.float32)})
    g, _ = _specced(model)
    assert g.value("w").meta["qspec"].axis == 0 and g.value("w2").meta["qspec"].axis == 1
    g, ctx = _specced(model, QuantScheme(nodes_to_exclude=frozenset({"fc2"})))
    assert "qspec" not in g.value("w2").meta and ctx.analyses["float_ops"] == {"Gemm": ["fc2"]}
    g, _ = _specced(model, QuantScheme(per_channel=False))
    assert g.value("w").meta["qspec"].axis is None


def test_pass_runs_alone_and_leaves_the_graph_unchanged():
    model = builders.conv_bn_relu_model()
    result, _ = run_pass(model, AssignQuantSpecs())
    assert not result.modified and result.graph.op_counts() == {"BatchNormalization": 1, "Conv": 1, "Relu": 1}


def _gru_model(activations=None):
    rng = np.random.default_rng(0)
    return builders.make_model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("GRU", ["r", "w", "rr", "", "", "h0"], ["y", ""], name="gru", hidden_size=4,
                          **({"activations": activations} if activations else {}))],
        [("x", np.float32, [5, 1, 3])], [("y", np.float32, None)],
        {"w": rng.normal(size=(1, 12, 3)).astype(np.float32), "rr": rng.normal(size=(1, 12, 4)).astype(np.float32),
         "h0": np.zeros((1, 1, 4), np.float32)})


def test_recurrent_ops_stay_float_by_default_and_say_why(caplog):
    with caplog.at_level("DEBUG", logger="ptqc"):
        g, ctx = _specced(_gru_model())
    assert ctx.analyses["float_ops"] == {"GRU": ["gru"]}
    assert "recurrent ops run float on this target" in caplog.text


def test_where_the_scheme_runs_recurrent_ops_w_and_r_are_per_gate_row_and_constant_states_stay_float(caplog):
    g, ctx = _specced(_gru_model(), QuantScheme(recurrent=True))
    assert "GRU" not in ctx.analyses["float_ops"]
    assert g.value("w").meta["qspec"].axis == 1 and g.value("rr").meta["qspec"].axis == 1
    assert g.value("y").meta["qspec"] == PlainSpec(np.dtype(np.uint8), False)
    assert "qspec" not in g.value("h0").meta  # lowering puts a constant state in the kernel's format itself
    with caplog.at_level("DEBUG", logger="ptqc"):
        g, ctx = _specced(_gru_model(["Sigmoid", "Relu"]), QuantScheme(recurrent=True))
    assert ctx.analyses["float_ops"] == {"GRU": ["gru"]}
    assert "the integer kernel runs the defaults" in caplog.text


def test_gelu_erf_and_div_by_a_positive_constant_run_quantized_div_by_a_tensor_does_not(caplog):
    """BERT's GELU, x * 0.5 * (1 + erf(x / sqrt 2)): the Div is a rescale and Erf a table, so
    every op of it is quantized; a Div by a tensor or by a negative constant stays float, with
    its reason in the log."""
    model = builders.make_model(
        [helper.make_node("Div", ["x", "s2"], ["d"], name="div"),
         helper.make_node("Erf", ["d"], ["e"], name="erf"),
         helper.make_node("Add", ["e", "one"], ["e1"], name="add"),
         helper.make_node("Mul", ["x", "e1"], ["m"], name="mul"),
         helper.make_node("Gelu", ["m"], ["g"], name="gelu"),
         helper.make_node("Div", ["g", "x"], ["q"], name="div_tensor"),
         helper.make_node("Div", ["q", "neg"], ["y"], name="div_negative")],
        [("x", np.float32, [2, 3])], [("y", np.float32, [2, 3])],
        {"s2": np.array(1.4142135, np.float32), "one": np.array(1.0, np.float32),
         "neg": np.array(-2.0, np.float32)}, opset=20)
    with caplog.at_level("DEBUG", logger="ptqc"):
        g, ctx = _specced(model)
    assert ctx.analyses["float_ops"] == {"Div": ["div_tensor", "div_negative"]}
    for name in ("d", "e", "e1", "m", "g"):
        assert g.value(name).meta["qspec"] == PlainSpec(np.dtype(np.uint8), False), name
    assert "qspec" not in g.value("s2").meta  # the divisor is folded into the rescale, not quantized
    assert "only Div by a positive constant scalar runs quantized" in caplog.text
