"""The simulator's three modes on the op-zoo model: infer (deterministic), dump (every tensor
under the ONNX names) and compare (graphwise and layerwise; a broken scale is found at its
layer)."""
from __future__ import annotations

import csv

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import builders
from checks import list_reader
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.driver.simulate import first_drop, float_values
from ptqc.runtime.simulator import SimulationError, Simulator
from ptqc.targets.families import family_of
from ptqc.targets.lower import lower

FEEDS = [{"x": np.random.default_rng(s).uniform(-1, 2, (1, 4, 8, 8)).astype(np.float32)} for s in range(8)]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "zoo_quantize.onnx"
    report = quantize(builders.op_zoo_model(), path, data=list_reader(FEEDS),
                      config=QuantConfig(chip="TX5368AV200", bit_width=16))
    return onnx.load(str(path)), report.float_model


def test_infer_is_deterministic(zoo):
    qdq, _ = zoo
    a = Simulator(lower(qdq, family_of("TX5368AV200"))).infer(FEEDS[0])
    b = Simulator(lower(qdq, family_of("TX5368AV200"))).infer(FEEDS[0])
    assert all(x.tobytes() == y.tobytes() and x.dtype == y.dtype for x, y in zip(a, b))


def test_a_missing_feed_names_the_input(zoo):
    with pytest.raises(SimulationError, match="input 'x' is not fed"):
        Simulator(lower(zoo[0], family_of("TX5368AV200"))).infer({})


def test_dump_writes_every_tensor_under_its_onnx_name(zoo, tmp_path):
    qdq, _ = zoo
    sim = Simulator(lower(qdq, family_of("TX5368AV200")))
    files = sim.dump(FEEDS[0], tmp_path / "dump")
    rows = list(csv.DictReader(open(tmp_path / "dump" / "index.csv")))
    assert len(rows) == len(files) == sum(len(op.outputs) for op in sim.p.ops)
    by_tensor = {r["onnx_tensor"]: r for r in rows}
    assert {"r0", "r1", "cat", "probs"} <= set(by_tensor)  # named after the float model's tensors
    outputs = dict(zip(sim.p.outputs, sim.infer(FEEDS[0])))
    probs = by_tensor["probs"]
    np.testing.assert_array_equal(np.load(tmp_path / "dump" / probs["file"]), outputs["probs"])
    r1 = by_tensor["r1"]  # an integer tensor: codes plus its quantization in the index
    codes = np.load(tmp_path / "dump" / r1["file"])
    assert codes.dtype == np.int16 and float(r1["scale"]) > 0 and r1["zero_point"] == "0"
    assert not list((tmp_path / "dump").glob(".*.tmp"))


@pytest.mark.parametrize("mode", ["graphwise", "layerwise"])
def test_compare_rows_cover_the_integer_layers(zoo, mode):
    qdq, float_model = zoo
    sim = Simulator(lower(qdq, family_of("TX5368AV200")))
    rows = sim.compare(FEEDS[0], float_values(float_model, FEEDS[0]), mode)
    assert {r.tensor for r in rows} >= {"r0", "r1", "cat", "a4", "probs"}  # Relu/Clip fused: their outputs
    assert min(r.cosine for r in rows) > 0.999  # 16-bit: every layer close to float
    assert first_drop(rows) is None


def _break_scale(qdq: onnx.ModelProto, tensor: str, factor: float) -> onnx.ModelProto:
    """The QDQ model with the scale of ``tensor``'s Q/DQ pair multiplied by ``factor``."""
    broken = onnx.ModelProto()
    broken.CopyFrom(qdq)
    q = next(n for n in broken.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    init = next(i for i in broken.graph.initializer if i.name == q.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    return broken


@pytest.mark.parametrize("mode", ["graphwise", "layerwise"])
def test_compare_finds_a_broken_scale_at_its_layer(zoo, mode):
    qdq, float_model = zoo
    broken = _break_scale(qdq, "c3", 1 / 50)  # c3 saturates
    sim = Simulator(lower(broken, family_of("TX5368AV200")))
    rows = sim.compare(FEEDS[0], float_values(float_model, FEEDS[0]), mode)
    drop = first_drop(rows)
    assert drop is not None and drop.tensor == "c3", drop
    assert all(r.cosine > 0.999 for r in rows[:rows.index(drop)])


def test_compare_refuses_an_unknown_mode(zoo):
    with pytest.raises(ValueError, match="graphwise or layerwise"):
        Simulator(lower(zoo[0], family_of("TX5368AV200"))).compare(FEEDS[0], {}, "sideways")


def _conv_table_model() -> onnx.ModelProto:
    """Conv → HardSwish → depthwise Conv → Sigmoid → Conv: each Conv's codes read only by a table op."""
    rng = np.random.default_rng(3)
    inits = {name: rng.normal(0, 0.3, shape).astype(np.float32)
             for name, shape in (("w0", (8, 4, 3, 3)), ("b0", (8,)), ("wd", (8, 1, 3, 3)), ("w2", (4, 8, 1, 1)))}
    n = onnx.helper.make_node
    nodes = [n("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]), n("HardSwish", ["c0"], ["h0"]),
             n("Conv", ["h0", "wd"], ["cd"], pads=[1, 1, 1, 1], group=8, strides=[2, 1]), n("Sigmoid", ["cd"], ["s0"]),
             n("Conv", ["s0", "w2"], ["y"])]
    return builders.make_model(nodes, [("x", np.float32, [1, 4, 8, 8])], [("y", np.float32, [1, 4, 4, 8])], inits,
                               opset=17)


@pytest.mark.parametrize("chip,bits", [("TX510x", 8), ("TX5368AV200", 16)])
def test_a_conv_and_its_table_run_fused_to_the_same_codes(tmp_path, chip, bits):
    """infer() runs a Conv whose only reader is a table op as one pass (plain and depthwise,
    8-bit tables and 16-bit interpolated ones); the codes equal the op-by-op run's."""
    path = tmp_path / "q.onnx"
    quantize(_conv_table_model(), path, data=list_reader(FEEDS), config=QuantConfig(chip=chip, bit_width=bits))
    sim = Simulator(lower(onnx.load(str(path)), family_of(chip)))
    assert [op.kind for op in sim.schedule].count("conv+lut") == 2
    for feeds in FEEDS[:3]:
        full = sim.run(feeds, keep_all=True)  # op by op, every tensor kept
        assert {"c0", "cd"} <= {sim.p.source_of(t) for t in full}
        for name, got in zip(sim.p.outputs, sim.infer(feeds)):
            assert got.dtype == full[name].dtype and np.array_equal(got, full[name])
