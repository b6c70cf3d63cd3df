"""Import -> export is lossless: bit-identical outputs under onnxruntime, metadata kept."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import builders
import models
from backend_cases import node_cases
from ptqc.errors import ModelError
from ptqc.onnx_io import export_model, import_model, save_model


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 4
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, list) or isinstance(y, list):  # sequence outputs
            assert isinstance(x, list) and isinstance(y, list)
            _assert_identical(x, y)
            continue
        if x is None or y is None:  # optional outputs
            assert x is None and y is None
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")


def _round_trip_identical(model: onnx.ModelProto, feeds: dict) -> None:
    again = export_model(import_model(model))
    onnx.checker.check_model(again)
    _assert_identical(_session(model).run(None, feeds), _session(again).run(None, feeds))


def test_digits_cnn_round_trip(digits):
    _round_trip_identical(digits.model, {"input": digits.x_test[:16]})


@pytest.mark.parametrize("name", ["det", "rec", "cls"])
def test_ppocr_round_trip(ppocr, name):
    model = onnx.load(str(ppocr[name]))
    _round_trip_identical(model, models.ppocr_sample_inputs(name))
    # weights were Constant nodes and stay Constant nodes unless initializers are asked for
    again = export_model(import_model(model))
    assert sum(n.op_type == "Constant" for n in again.graph.node) == \
        sum(n.op_type == "Constant" for n in model.graph.node)
    assert len(again.graph.initializer) == 0
    flat = export_model(import_model(model), constants_as_initializers=True)
    assert not any(n.op_type == "Constant" for n in flat.graph.node) and len(flat.graph.initializer) > 0
    _assert_identical(_session(model).run(None, models.ppocr_sample_inputs(name)),
                      _session(flat).run(None, models.ppocr_sample_inputs(name)))


@pytest.mark.parametrize("path", models.light_model_paths(), ids=lambda p: p.stem)
def test_light_topologies_round_trip(path):
    model = onnx.load(str(path))
    _round_trip_identical(model, models.light_inputs(path))


def _runnable_cases():
    """Backend node cases onnxruntime can run, with their first data set."""
    out = []
    for case in node_cases():
        if not case.data_sets:
            continue
        inputs, _ = case.data_sets[0]
        out.append((case.name, case.model, inputs))
    return out


def test_backend_node_cases_round_trip():
    passed, control_flow, failures = 0, 0, []
    for name, model, inputs in _runnable_cases():
        feeds = {vi.name: x for vi, x in zip(model.graph.input, inputs)}
        try:
            expected = _session(model).run(None, feeds)
        except Exception:  # noqa: BLE001 - onnxruntime lacks this op/type: not our concern
            continue
        try:
            again = export_model(import_model(model, check=False))
            got = _session(again).run(None, feeds)
            _assert_identical(expected, got)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
            continue
        passed += 1
        control_flow += any(n.op_type in ("If", "Loop", "Scan") for n in model.graph.node)
    print(f"\nround trip: {passed} backend node cases bit-identical under onnxruntime "
          f"({control_flow} with If/Loop/Scan subgraphs)")
    assert not failures, failures[:5]
    assert passed >= 200 and control_flow >= 5


def _custom_node():
    node = helper.make_node("CustomOp", ["y"], ["z"], name="c", domain="com.example", alpha=0.5)
    node.attribute.append(helper.make_attribute("names", [], attr_type=onnx.AttributeProto.STRINGS))
    return node


def test_metadata_survives():
    model = builders.make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="r", doc_string="relu doc"),
         _custom_node()],
        [("x", np.float32, [1, "N"])], [("z", np.float32, None)], opset=13, check=False)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    model.doc_string = "model doc"
    model.producer_name, model.producer_version, model.model_version = "tester", "9.9", 7
    helper.set_model_props(model, {"author": "ptqc", "license": "MIT"})
    model.graph.doc_string = "graph doc"
    model.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N"]))
    again = export_model(import_model(model, check=False))
    assert {(o.domain, o.version) for o in again.opset_import} == {("", 13), ("com.example", 1)}
    assert again.doc_string == "model doc" and again.graph.doc_string == "graph doc"
    assert (again.producer_name, again.producer_version, again.model_version) == ("tester", "9.9", 7)
    assert {(p.key, p.value) for p in again.metadata_props} == {("author", "ptqc"), ("license", "MIT")}
    assert again.graph.node[0].doc_string == "relu doc"
    custom = again.graph.node[1]
    assert custom.domain == "com.example"
    assert {a.name: a.type for a in custom.attribute} == {"alpha": onnx.AttributeProto.FLOAT,
                                                          "names": onnx.AttributeProto.STRINGS}
    assert [d.dim_param or d.dim_value for d in again.graph.input[0].type.tensor_type.shape.dim] == [1, "N"]
    assert any(vi.name == "y" for vi in again.graph.value_info)


def test_subgraph_is_opaque_and_captures_are_tracked():
    then_g = helper.make_graph([helper.make_node("Relu", ["outer"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["outer"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    model = builders.make_model(
        [helper.make_node("Abs", ["x"], ["outer"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        [("x", np.float32, [2]), ("cond", np.bool_, [])], [("y", np.float32, [2])])
    g = import_model(model)
    (if_node,) = [n for n in g.nodes() if n.op_type == "If"]
    assert if_node.captures == ("outer",) and g.is_captured("outer")
    again = export_model(g)
    assert again.graph.node[1].attribute[0].g == model.graph.node[1].attribute[0].g
    feeds = {"x": np.array([-1.0, 2.0], np.float32), "cond": np.array(False)}
    _assert_identical(_session(model).run(None, feeds), _session(again).run(None, feeds))


@pytest.mark.slow
def test_over_two_gigabytes_round_trips_as_external_data(tmp_path):
    """A model with 2.1 GB of weights: saved as external data, imported memory-mapped,
    exported back, and onnxruntime gives identical outputs."""
    n = (2**31 + 2**26) // 4 // 4  # four tensors, > 2 GB in all
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i in range(4):
        w = np.full((n,), 0.5 + i, np.float32)
        w[:8] = rng.standard_normal(8)
        inits.append(onnx.numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Slice", [f"w{i}", "s", "e"], [f"ws{i}"]))
        nodes.append(helper.make_node("Add", [prev, f"ws{i}"], [f"a{i}"]))
        prev = f"a{i}"
    inits += [onnx.numpy_helper.from_array(np.array([0], np.int64), "s"),
              onnx.numpy_helper.from_array(np.array([8], np.int64), "e")]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src = tmp_path / "src" / "big.onnx"
    src.parent.mkdir()
    onnx.save_model(model, str(src), save_as_external_data=True, location="big.onnx.data")
    del model, graph, inits
    g = import_model(src)
    assert sum(v.const.nbytes for v in g.values() if v.const is not None) > 2**31
    out = tmp_path / "out" / "big.onnx"
    out.parent.mkdir()
    save_model(g, out)
    assert (out.parent / "big.onnx.data").stat().st_size > 2**31
    assert out.stat().st_size < 1 << 20
    feeds = {"x": np.arange(8, dtype=np.float32)}
    _assert_identical(_session(str(src)).run(None, feeds), _session(str(out)).run(None, feeds))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        import_model(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n this is not a model at all \xff\xfe")
    with pytest.raises(ModelError, match=r"junk\.onnx: not an ONNX model"):
        import_model(junk)
    good = builders.conv_bn_relu_model().SerializeToString()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match=r"cut\.onnx"):
        import_model(cut)
