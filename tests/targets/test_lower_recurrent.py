"""RNN/GRU/LSTM quantized by ptqc for a TX5xxx family, lowered onto the integer recurrent
kernel and simulated: within 1 LSB of onnxruntime running the same QDQ model (float cell on
the dequantized weights), every direction, layout, initial state and sequence length; float,
with the reason, where the family or the node's attributes cannot run it."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import list_reader, ort_outputs
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.onnx_io import import_model
from ptqc.quant import cosine
from ptqc.runtime.reference import ReferenceExecutor
from ptqc.runtime.simulator import Simulator
from ptqc.targets.families import family_of
from ptqc.targets.lower import Lowering

T, B, I, H = 6, 3, 5, 8
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def recurrent_model(op: str, direction: str = "forward", states: str = "none",
                    lens: bool = False, **attrs) -> tuple[onnx.ModelProto, list[dict]]:
    """MatMul -> ``op`` -> (Y, Y_h[, Y_c]) as graph outputs through Identity; ``states``:
    "none", "const" (initializers) or "input" (graph inputs, as a streaming model feeds
    them); ``lens``: a sequence_lens graph input.  Returns the model and 10 feeds."""
    rng = np.random.default_rng(0)
    d, g = (2 if direction == "bidirectional" else 1), GATES[op]
    x_shape, s_shape = [T, B, I], [d, B, H]
    inits = {"w0": rng.normal(0, 0.5, (I, I)).astype(np.float32),
             "W": rng.normal(0, 0.4, (d, g * H, I)).astype(np.float32),
             "R": rng.normal(0, 0.3, (d, g * H, H)).astype(np.float32),
             "B": rng.normal(0, 0.3, (d, 2 * g * H)).astype(np.float32)}
    inputs = [("x", np.float32, x_shape)]
    names = ["x1", "W", "R", "B", "", "", ""]
    if lens:
        inputs.append(("lens", np.int32, [B]))
        names[4] = "lens"
    for i, s in enumerate(["h0", "c0"][:2 if op == "LSTM" else 1]):
        if states == "const":
            inits[s] = np.tanh(rng.normal(0, 1, s_shape)).astype(np.float32)  # a hidden state is in (-1, 1)
        elif states == "input":
            inputs.append((s, np.float32, s_shape))
        if states != "none":
            names[5 + i] = s
    while not names[-1]:
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["x1"], name="fc"),
             helper.make_node(op, names, [o + "_" for o in outs], name="cell", hidden_size=H, direction=direction,
                              **attrs)]
    nodes += [helper.make_node("Identity", [o + "_"], [o], name="out_" + o) for o in outs]
    model = builders.make_model(nodes, inputs, [(o, np.float32, None) for o in outs], inits, opset=14)
    feeds = []
    for _ in range(10):
        f = {"x": rng.normal(0, 1, x_shape).astype(np.float32)}
        if lens:
            f["lens"] = rng.integers(1, T + 1, B).astype(np.int32)
        if states == "input":
            for s in ["h0", "c0"][:2 if op == "LSTM" else 1]:
                f[s] = np.tanh(rng.normal(0, 1, s_shape)).astype(np.float32)
        feeds.append(f)
    return model, feeds


def _reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    graph = import_model(model)
    out = ReferenceExecutor(graph.topological_order(), opset=graph.opset,
                            constants={v.name: v.const for v in graph.values() if v.const is not None}
                            ).run(feeds, list(graph.outputs))
    return [out[o] for o in graph.outputs]


def _quantized(model, feeds, tmp_path, chip="TX5368AV200") -> onnx.ModelProto:
    path = tmp_path / "q.onnx"
    quantize(model, path, data=list_reader(feeds[:6]), config=QuantConfig(chip=chip, validation_split=0))
    return onnx.load(str(path))


CASES = [("RNN", "forward", "none", False, {}), ("RNN", "reverse", "input", True, {}),
         ("GRU", "forward", "const", False, {}), ("GRU", "bidirectional", "input", True, {"linear_before_reset": 1}),
         ("GRU", "reverse", "none", True, {}), ("LSTM", "forward", "input", False, {}),
         ("LSTM", "bidirectional", "const", True, {}), ("LSTM", "reverse", "none", True, {})]


@pytest.mark.parametrize("op,direction,states,lens,attrs,layout",
                         [c + (0,) for c in CASES] + [c + (1,) for c in CASES if c[2] == "none" and not c[3]])
def test_simulated_cell_is_within_one_lsb_of_onnxruntime(op, direction, states, lens, attrs, layout, tmp_path):
    """layout=1 (batch first), which onnxruntime does not run (so ptqc cannot calibrate it):
    the layout-0 QDQ model with the attribute flipped reads [T, B, I] as [batch, steps, in];
    the reference executor is then the judge (cases without initial states and lengths,
    which are shaped for layout 0)."""
    model, feeds = recurrent_model(op, direction, states=states, lens=lens, **attrs)
    qdq = _quantized(model, feeds, tmp_path)
    if layout:
        cell = next(n for n in qdq.graph.node if n.op_type == op)
        cell.attribute.append(helper.make_attribute("layout", 1))
    dq_of = {n.input[0].split("_quantized")[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    assert {"W", "R"} <= dq_of, "W and R are quantized"
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in qdq.graph.initializer}
    y_float = next(n.output[0] for n in qdq.graph.node if n.op_type == op)
    y_scale = next(inits[n.input[1]] for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == y_float)
    program = Lowering(import_model(qdq), family_of("TX5368AV200")).run()
    assert program.float_nodes() == [] and program.kinds()["recurrent"] == 1
    sim = Simulator(program)
    run = ort_outputs if layout == 0 else _reference  # onnxruntime runs no layout=1 recurrent op
    for f in feeds[6:]:
        got, want, ref = sim.infer(f), run(qdq, f), ort_outputs(model, f)
        for name, g, w in zip(("Y", "Y_h", "Y_c"), got, want):
            assert g.dtype == w.dtype and g.shape == w.shape, name
            assert np.abs(g.astype(np.int64) - w.astype(np.int64)).max() <= 1, name
        if not layout:  # the flipped model computes something else than the float one
            assert cosine(y_scale * got[0].astype(np.float64), ref[0]) > 0.999


@pytest.mark.parametrize("chip", ["TX510x", "generic"])
def test_recurrent_ops_stay_float_where_the_family_runs_none(chip, tmp_path, caplog):
    model, feeds = recurrent_model("LSTM")
    with caplog.at_level(logging.DEBUG, logger="ptqc"):
        qdq = _quantized(model, feeds, tmp_path, chip)
    assert not any(n.op_type == "DequantizeLinear" and n.input[0].startswith("W") for n in qdq.graph.node)
    assert "recurrent ops run float on this target" in caplog.text


def test_a_cell_the_kernel_cannot_run_stays_float_with_its_reason(tmp_path, caplog):
    model, feeds = recurrent_model("GRU", activations=["Sigmoid", "Relu"])
    with caplog.at_level(logging.DEBUG, logger="ptqc"):
        qdq = _quantized(model, feeds, tmp_path)
    assert "the integer kernel runs the defaults" in caplog.text
    program = Lowering(import_model(qdq), family_of("TX5368AV200")).run()
    assert program.float_nodes() == [("GRU", "cell")]
    for f in feeds[6:]:
        for g, w in zip(Simulator(program).infer(f), ort_outputs(qdq, f)):
            assert np.abs(g.astype(np.int64) - w.astype(np.int64)).max() <= 1
