"""The test fixtures are real: trained digits CNN, PP-OCR models, synthetic graphs, light models."""
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import builders
import models

# --------------------------------------------------------------------------- digits CNN


def test_digits_accuracy_under_onnxruntime(digits):
    assert digits.float_accuracy >= 0.95
    logits = models.ort_run(digits.model, {"input": digits.x_test})[0]
    assert logits.shape == (len(digits.x_test), 10) and logits.dtype == np.float32
    assert float((logits.argmax(axis=1) == digits.y_test).mean()) == digits.float_accuracy


def test_digits_model_is_a_checked_conv_bn_cnn_with_initializer_weights(digits):
    model = digits.model
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert [n.op_type for n in model.graph.node] == [
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "BatchNormalization", "Relu", "Flatten", "Gemm"]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "logits"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 1, 8, 8]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 10]
    inits = {t.name for t in model.graph.initializer}
    assert all(name in inits for n in model.graph.node for name in n.input[1:])


def test_digits_batchnorms_are_trained_not_identity(digits):
    inits = {t.name: numpy_helper.to_array(t) for t in digits.model.graph.initializer}
    bns = [n for n in digits.model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 2
    for bn in bns:
        scale, bias, mean, var = (inits[name] for name in bn.input[1:])
        assert np.all(var > 0)
        assert np.abs(scale - 1).max() > 0.05, "BN scale never trained"
        assert np.abs(bias).max() > 0.05, "BN bias never trained"
        assert np.abs(mean).max() > 0.05, "running mean never updated"
        assert np.abs(var - 1).max() > 0.05, "running var never updated"
        # and BN is not a no-op on the real activations it sees
        assert not np.allclose(scale / np.sqrt(var + 1e-5), 1, atol=0.05)


def test_digits_dynamic_batch_and_numpy_reference(digits):
    full = models.ort_run(digits.model, {"input": digits.x_test})[0]
    for lo, hi in [(0, 1), (3, 10)]:
        part = models.ort_run(digits.model, {"input": digits.x_test[lo:hi]})[0]
        np.testing.assert_allclose(part, full[lo:hi], rtol=1e-5, atol=1e-5)
    # the exported graph computes what the numpy training code's inference path computes
    inits = {t.name: numpy_helper.to_array(t) for t in digits.model.graph.initializer}
    stats = {k: v for k, v in inits.items() if "running" in k}
    ref = models._forward_infer(inits, stats, digits.x_test)
    np.testing.assert_allclose(full, ref, rtol=1e-4, atol=1e-4)


def test_digits_split_is_stratified_and_read_only(digits):
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert digits.x_train.dtype == digits.x_test.dtype == np.float32
    assert digits.y_train.dtype == digits.y_test.dtype == np.int64
    assert 0.0 <= digits.x_test.min() and digits.x_test.max() <= 1.0
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # ~25% of each class (174..183 per class)
    assert not digits.x_test.flags.writeable and not digits.y_train.flags.writeable


def test_digits_cached_with_a_fresh_model_copy_per_call(digits):
    again = models.train_digits_cnn()
    assert again.model is not digits.model
    assert again.model.SerializeToString() == digits.model.SerializeToString()
    assert again.x_test is digits.x_test


def test_digits_training_is_deterministic(digits):
    blob, *_rest, acc = models._digits_cached.__wrapped__(0)  # retrain, bypassing the cache
    assert blob == digits.model.SerializeToString() and acc == digits.float_accuracy


# --------------------------------------------------------------------------- PP-OCR

_PPOCR_OUT = {"det": (1, 1, 64, 64), "rec": (1, 20, 6625), "cls": (1, 2)}


@pytest.mark.parametrize("name", ["det", "rec", "cls"])
def test_ppocr_models_check_and_run(ppocr, name):
    model = onnx.load(str(ppocr[name]))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    feeds = models.ppocr_sample_inputs(name)
    (out,) = models.ort_run(ppocr[name], feeds)
    assert out.shape == _PPOCR_OUT[name] and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    if name in ("rec", "cls"):  # softmax outputs
        np.testing.assert_allclose(out.sum(axis=-1), 1, rtol=1e-4)
    # the same through a ModelProto
    np.testing.assert_array_equal(models.ort_run(model, feeds)[0], out)


@pytest.mark.parametrize("name", ["det", "rec", "cls"])
def test_ppocr_weights_are_constant_nodes(ppocr, name):
    model = onnx.load(str(ppocr[name]))
    ops = Counter(n.op_type for n in model.graph.node)
    assert len(model.graph.initializer) == 0
    assert ops["Constant"] > 300 and ops["Conv"] > 30
    assert model.opset_import[0].version == {"det": 12, "rec": 12, "cls": 11}[name]


def test_ppocr_det_finds_the_synthetic_text_lines(ppocr):
    prob = models.ort_run(ppocr["det"], models.ppocr_sample_inputs("det"))[0]
    frac = float((prob > 0.3).mean())
    assert 0.05 < frac < 0.6, f"text-probability coverage {frac:.2f}: input does not look like text"


@pytest.mark.parametrize("name,shape", [("det", (1, 3, 64, 64)), ("rec", (1, 3, 48, 160)), ("cls", (1, 3, 48, 192))])
def test_ppocr_sample_inputs(name, shape):
    x = models.ppocr_sample_inputs(name)["x"]
    assert x.shape == shape and x.dtype == np.float32
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    np.testing.assert_array_equal(x, models.ppocr_sample_inputs(name, seed=0)["x"])
    assert not np.array_equal(x, models.ppocr_sample_inputs(name, seed=1)["x"])
    with pytest.raises(KeyError):
        models.ppocr_sample_inputs("nope")


# --------------------------------------------------------------------------- synthetic


def _live_nodes(model: onnx.ModelProto) -> set[int]:
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    live, stack = set(), [o.name for o in model.graph.output]
    while stack:
        i = producer.get(stack.pop())
        if i is not None and i not in live:
            live.add(i)
            stack.extend(model.graph.node[i].input)
    return live


def test_synthetic_model_1000_is_realistic_and_runs():
    model = builders.synthetic_model(1000)
    assert 900 <= len(model.graph.node) <= 1100
    onnx.checker.check_model(model, full_check=True)
    ops = Counter(n.op_type for n in model.graph.node)
    for op in ("Conv", "BatchNormalization", "Relu", "Add", "Identity", "Dropout", "Constant", "Mul"):
        assert ops[op] > 0, op
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    assert any(n.op_type == "Mul" and set(n.input) & consts for n in model.graph.node)
    live = _live_nodes(model)
    dead = [n for i, n in enumerate(model.graph.node) if i not in live]
    assert len(dead) >= 4 and {n.op_type for n in dead} == {"Conv", "Sigmoid"}
    feeds = builders.random_feeds(model)
    assert list(feeds) == ["input"] and feeds["input"].shape == (1, 4, 8, 8)
    (out,) = models.ort_run(model, feeds)
    assert out.shape == (1, 4, 8, 8) and np.all(np.isfinite(out)) and out.std() > 0.1


def test_synthetic_model_is_deterministic_and_exact_in_size():
    a, b = builders.synthetic_model(300, seed=3), builders.synthetic_model(300, seed=3)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != builders.synthetic_model(300, seed=4).SerializeToString()
    for n in (1, 2, 7, 64):
        m = builders.synthetic_model(n)
        assert len(m.graph.node) == n
        assert np.all(np.isfinite(models.ort_run(m, builders.random_feeds(m))[0]))


@pytest.mark.slow
def test_synthetic_model_10k_builds_and_runs():
    model = builders.synthetic_model(10_000)
    assert len(model.graph.node) == 10_000
    onnx.checker.check_model(model)
    (out,) = models.ort_run(model, builders.random_feeds(model))
    assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------- builders


def test_make_model_accepts_tuple_specs():
    model = builders.make_model(
        [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=onnx.TensorProto.INT64)],
        [("x", np.float32, ["N", 3])], [builders.tensor_output("y", ["N", 3], np.int64)],
        [builders.initializer("b", np.arange(3, dtype=np.float32))], value_info=[("s", "float32", ["N", 3])])
    assert model.ir_version >= 8 and model.opset_import[0].version == 13
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    feeds = builders.random_feeds(model, dims={"N": 2})
    assert feeds["x"].shape == (2, 3)
    np.testing.assert_array_equal(models.ort_run(model, feeds)[0], (feeds["x"] + np.arange(3)).astype(np.int64))
    with pytest.raises(ValueError, match="dynamic dim"):
        builders.random_feeds(model)
    scalar = builders.make_model([helper.make_node("Not", ["c"], ["y"])], [("c", np.bool_, [])],
                                 [("y", onnx.TensorProto.BOOL, None)])
    assert builders.random_feeds(scalar)["c"].shape == ()


def test_make_model_checks_unless_told_not_to():
    bad = [helper.make_node("Relu", ["missing"], ["y"])]
    with pytest.raises(onnx.checker.ValidationError):
        builders.make_model(bad, [("x", np.float32, [2])], [("y", np.float32, [2])])
    builders.make_model(bad, [("x", np.float32, [2])], [("y", np.float32, [2])], check=False)
    # an output of unknown rank passes (onnx's checker alone would insist on a shape field)
    model = builders.make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, ["N", 3])],
                                [("y", np.float32, None)], full_check=True)
    assert not model.graph.output[0].type.tensor_type.HasField("shape")


def test_conv_bn_relu_model_matches_numpy():
    model = builders.conv_bn_relu_model()
    assert [n.op_type for n in model.graph.node] == ["Conv", "BatchNormalization", "Relu"]
    p = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    assert np.all(p["bn.var"] > 0)
    feeds = builders.random_feeds(model, seed=1)
    z = models._conv3x3(feeds["x"].astype(np.float64), p["conv.weight"], p["conv.bias"])
    c = (slice(None), None, None)
    ref = np.maximum((z - p["bn.mean"][c]) / np.sqrt(p["bn.var"][c] + 1e-5) * p["bn.scale"][c] + p["bn.bias"][c], 0)
    (out,) = models.ort_run(model, feeds)
    assert out.shape == (1, 4, 8, 8)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert 0 < (out > 0).mean() < 1


# --------------------------------------------------------------------------- light models


def test_light_models_load(light_models):
    assert len(light_models) >= 8
    assert all(p.parent == models.onnx_backend_data_dir() / "light" for p in light_models)
    for path in light_models:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        feeds = models.light_inputs(path)
        inits = {t.name for t in model.graph.initializer}
        assert len(feeds) == 1 and not set(feeds) & inits
        (x,) = feeds.values()
        assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
        # structure only: the big weights are ConstantOfShape(0.02), not stored tensors
        assert any(n.op_type == "ConstantOfShape" for n in model.graph.node)


@pytest.mark.parametrize("path", models.light_model_paths(), ids=lambda p: p.stem)
def test_light_models_run(path):
    outs = models.ort_run(path, models.light_inputs(path))
    assert outs and all(np.all(np.isfinite(o)) for o in outs)


def test_ppocr_rec_reads_the_rendered_text_lines(ppocr):
    """The rendered lines are real text to PP-OCR rec: the float model reads nearly all of them
    (spaces aside), which makes "same string as float" a task metric for quantized rec."""
    lines = [models.ppocr_text_line(s) for s in range(16)]
    read = [models.ppocr_rec_decode(models.ort_run(ppocr["rec"], f)[0], ppocr["rec"]) for f, _ in lines]
    right = sum(r == t.replace(" ", "") for r, (_, t) in zip(read, lines))
    assert right >= 14, list(zip(read, [t for _, t in lines]))
    assert models.ppocr_text_line(3)[1] == lines[3][1] and np.array_equal(models.ppocr_text_line(3)[0]["x"],
                                                                            lines[3][0]["x"])
