"""Attention-mask fills never enter a range: the masked Add/Where and its Softmax stay float,
every way a mask is written, and a masked attention block quantizes within a stated bound."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import builders
from checks import list_reader
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.onnx_io import import_model
from ptqc.passes.masks import mask_tensors

S, D = 6, 8  # sequence length, head width
FMIN = float(np.finfo(np.float32).min)


def _attention(style: str):
    """One attention head over x [1, S, D] with an integer mask [1, S] written as ``style``:
    'hf' (1 - mask) * finfo.min added; 'old' (mask - 1) * 10000 added; 'where' Where(mask,
    scores, -inf from ConstantOfShape); 'expand' Where(bool mask, scores, Expand(-1e9))."""
    rng = np.random.default_rng(0)
    w = {k: rng.normal(0, 0.5, (D, D)).astype(np.float32) for k in "qkvo"}
    nodes = [helper.make_node("MatMul", ["x", f"w{k}"], [k]) for k in "qkv"]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
              helper.make_node("MatMul", ["q", "kt"], ["s0"]), helper.make_node("Div", ["s0", "sqrt_d"], ["s"]),
              helper.make_node("Unsqueeze", ["mask", "axis1"], ["m3"])]  # [1, 1, S]
    inits = {**{f"w{k}": v for k, v in w.items()}, "sqrt_d": np.array(np.sqrt(D), np.float32),
             "axis1": np.array([1], np.int64), "one": np.array(1.0, np.float32)}
    if style in ("hf", "old"):
        fill = FMIN if style == "hf" else 10000.0
        nodes += [helper.make_node("Cast", ["m3"], ["mf"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["one", "mf"] if style == "hf" else ["mf", "one"], ["inv"]),
                  helper.make_node("Mul", ["inv", "fill"], ["bias"]), helper.make_node("Add", ["s", "bias"], ["a"])]
        inits["fill"] = np.array(fill, np.float32)
    else:
        nodes += [helper.make_node("Cast", ["m3"], ["mb"], to=TensorProto.BOOL),
                  helper.make_node("Shape", ["s"], ["shape"])]
        if style == "where":
            nodes.append(helper.make_node("ConstantOfShape", ["shape"], ["neg"],
                                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-np.inf])))
        else:
            nodes.append(helper.make_node("Expand", ["fill", "shape"], ["neg"]))
            inits["fill"] = np.array(-1e9, np.float32)
        nodes.append(helper.make_node("Where", ["mb", "s", "neg"], ["a"]))
    nodes += [helper.make_node("Softmax", ["a"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["c"]),
              helper.make_node("MatMul", ["c", "wo"], ["y"])]
    return builders.make_model(nodes, [("x", np.float32, [1, S, D]), ("mask", np.int64, [1, S])],
                               [("y", np.float32, [1, S, D])], inits, opset=17)


def _feeds(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        keep = int(rng.integers(2, S + 1))
        out.append({"x": rng.normal(size=(1, S, D)).astype(np.float32),
                    "mask": (np.arange(S) < keep).astype(np.int64)[None]})
    return out


@pytest.mark.parametrize("style", ["hf", "old", "where", "expand"])
def test_the_fill_is_found_and_ends_at_the_softmax(style):
    carries, arithmetic = mask_tensors(import_model(_attention(style)))
    assert "a" in carries and "p" not in carries and "y" not in carries
    assert not {"s", "q", "k", "v", "c"} & carries
    if style in ("hf", "old"):
        assert "bias" in carries and "inv" in arithmetic


def test_clip_bounds_and_image_models_carry_no_fill():
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    model = builders.make_model(nodes, [("x", np.float32, [1, 4])], [("y", np.float32, [1, 4])],
                                {"lo": np.array(-np.inf, np.float32), "hi": np.array(1e30, np.float32)}, opset=17)
    assert mask_tensors(import_model(model)) == (set(), set())


@pytest.mark.parametrize("style", ["hf", "old", "where", "expand"])
def test_a_masked_attention_block_quantizes_accurately(style):
    model = _attention(style)
    feeds = _feeds(24)
    for bits, bound in ((16, 0.999), (8, 0.99)):
        report = quantize(model, None, list_reader(feeds), QuantConfig(bit_width=bits, output_dequant=True))
        lo = min(c for c, _ in report.cosine.values())
        assert lo >= bound, (style, bits, report.cosine)
        scales = [numpy_helper.to_array(t) for t in report.model.graph.initializer if "scale" in t.name]
        assert scales and max(float(np.max(s)) for s in scales) < 1.0  # no range holds a fill
        assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "a" for n in report.model.graph.node)
