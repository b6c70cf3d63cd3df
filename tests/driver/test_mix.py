"""-gt / -mc: the template round trip, mixed bit-widths and modes, and every rule's message."""
import json
import re

import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.errors import ConfigError

NODES = ("g1", "ln", "g2", "g3", "g4", "cat", "add")


def _model():
    return builders.mixed_rules_model()


def _data():
    rng = np.random.default_rng(1)
    return lambda executor: [executor.forward(rng.standard_normal((1, 4)).astype(np.float32)) for _ in range(4)] and 1.0


def _run(tmp_path, mix=None, chip="TX5368AV200", out="m_quantize.onnx", **kw):
    cfg = QuantConfig(chip=chip, quant_mode=("min_max",), mix_config=mix, **kw)
    return quantize(_model(), tmp_path / out, _data(), cfg, evaluate=False)


def _mix(tmp_path, edits, drop=()):
    table = {n: {"bitwidth": 8, "mode": "min_max"} for n in NODES if n not in drop}
    for name, entry in edits.items():
        table[name] = entry if not isinstance(entry, dict) else {**table.get(name, {}), **entry}
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(table))
    return path


def test_template_lists_the_quantized_nodes_and_reproduces_the_plain_run(tmp_path):
    plain = _run(tmp_path, generate_template=True)
    template = json.loads(plain.template.read_text())
    assert sorted(template) == sorted(NODES)
    assert all(v == {"bitwidth": 8, "mode": "min_max"} for v in template.values())
    again = _run(tmp_path, mix=plain.template, out="again_quantize.onnx")
    assert again.model.SerializeToString() == plain.model.SerializeToString()


def test_a_sixteen_bit_node_and_a_per_node_mode(tmp_path):
    model = _run(tmp_path, mix=_mix(tmp_path, {"g4": {"bitwidth": 16}, "g3": {"bitwidth": 16},
                                               "add": {"bitwidth": 16, "mode": "percentile"}})).model
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    q = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    q.update({n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"})  # graph outputs
    assert inits[q["h4"].input[2]].dtype == np.int16 and inits[q["h2"].input[2]].dtype == np.int8
    assert inits[q["y"].input[2]].dtype == np.int16  # the Add runs at 16 bits
    assert next(n for n in model.graph.node if n.output[0] == "y").domain == "com.microsoft"


M = "-mc/--mix-config {path}: "
RULES = [
    ({"nope": {"bitwidth": 8, "mode": "kl"}}, (), "node 'nope': rule 1: not a quantized node of the optimized "
                                                  "model (generate the template with -gt)"),
    ({"g1": {"bitwidth": 8}}, (), None),  # filled below: mode missing
    ({}, ("g2",), "node 'g2': rule 2: every quantized node sets bitwidth and mode (1 missing)"),
    ({"g1": {"bitwidth": 12}}, (), "node 'g1': rule 3: bitwidth 12 is not 8 or 16"),
    ({"g1": {"mode": "entropy"}}, (), "node 'g1': rule 4: mode 'entropy' is not one of auto, min_max, kl, kl_v2, "
                                      "percentile, mse"),
    ({"g1": {"bitwidth": 16}}, (), "node 'g1': rule 5: the quantized ops around LayerNormalization 'ln' share "
                                   "one bit-width ([8, 16] given)"),
    ({"ab": {"bitwidth": 8, "mode": "kl"}}, (), "node 'ab': rule 6: Abs takes no mixed precision"),
    ({"g4": {"bitwidth": 16}}, (), "node 'add': rule 7: its inputs come at different bit-widths ([8, 16])"),
    ({"g1": {"bitwidth": 16}, "ln": {"bitwidth": 16}, "g2": {"bitwidth": 16}, "cat": {"bitwidth": 16}}, (),
     "node 'cat': rule 8: a Concat fed by a recurrent op or LayerNormalization is no wider than its other "
     "quantized neighbours"),
]


@pytest.mark.parametrize("edits, drop, message", RULES, ids=["rule1", "rule2-mode", "rule2-node", "rule3", "rule4",
                                                              "rule5", "rule6", "rule7", "rule8"])
def test_each_rule_names_the_node_and_the_rule(tmp_path, edits, drop, message):
    if message is None:
        edits = {"g1": {"bitwidth": 8}}
        table = {n: {"bitwidth": 8, "mode": "min_max"} for n in NODES}
        table["g1"] = {"bitwidth": 8}
        path = tmp_path / "mix.json"
        path.write_text(json.dumps(table))
        message = "node 'g1': rule 2: set both bitwidth and mode"
    else:
        path = _mix(tmp_path, edits, drop)
    with pytest.raises(ConfigError, match="^" + re.escape(M.format(path=path) + message) + "$"):
        _run(tmp_path, mix=path)
    assert not (tmp_path / "m_quantize.onnx").exists()


def test_families_without_mixed_precision_refuse_mc(tmp_path):
    path = _mix(tmp_path, {})
    with pytest.raises(ConfigError, match=re.escape("rule mixed-precision: TX510x does not support mixed precision")):
        _run(tmp_path, mix=path, chip="TX510x")


def test_iohigh_puts_the_first_and_last_layers_at_16_bits_and_keeps_the_rules(tmp_path):
    report = _run(tmp_path, auto_mix_strategy="IOhigh", auto_mix_ratio=0.5, generate_template=True)
    table = json.loads(report.template.read_text())
    high = {k for k, v in table.items() if v["bitwidth"] == 16}
    assert {"g1", "g4", "add"} <= high  # next to the input x and the output y
    # the template it wrote passes every rule and quantizes to the same model
    again = _run(tmp_path, mix=report.template, out="again_quantize.onnx")
    assert again.model.SerializeToString() == report.model.SerializeToString()


def test_target_cosine_finds_a_small_16_bit_set_that_reaches_it(tmp_path, digits):
    data = [{"input": digits.x_train[i:i + 16]} for i in range(0, 64, 16)]

    def feed(executor):
        for f in data:
            executor.forward(f["input"])
        return 1.0

    cfg = QuantConfig(chip="TX5368AV200", quant_mode=("kl",), target_cosine=0.999, generate_template=True,
                      output_dequant=True)
    report = quantize(digits.model, tmp_path / "d_quantize.onnx", feed, cfg)
    table = json.loads(report.template.read_text())
    high = [k for k, v in table.items() if v["bitwidth"] == 16]
    assert report.cosine["logits"][0] >= 0.999
    assert 0 < len(high) < len(table)
    plain = quantize(digits.model, None, feed, QuantConfig(chip="TX5368AV200", quant_mode=("kl",), output_dequant=True))
    assert plain.cosine["logits"][0] < 0.999  # the search had something to do
    again = quantize(digits.model, tmp_path / "again_quantize.onnx", feed,
                     QuantConfig(chip="TX5368AV200", quant_mode=("kl",), mix_config=report.template,
                                 output_dequant=True))
    assert again.model.SerializeToString() == report.model.SerializeToString()  # the template it wrote is the model


def test_conflicting_assignments_are_refused(tmp_path):
    from ptqc.driver.config import _validate

    with pytest.raises(ConfigError, match="HAWQ with --target-cosine: both choose"):
        _validate(QuantConfig(auto_mix_strategy="HAWQ", target_cosine=0.99))
    with pytest.raises(ConfigError, match="-mc and -ams/--auto-mix-strategy both assign"):
        _validate(QuantConfig(auto_mix_strategy="IOhigh", mix_config=tmp_path / "m.json"))
    with pytest.raises(ConfigError, match="--target-cosine searches the assignment itself"):
        _validate(QuantConfig(target_cosine=0.99, mix_config=tmp_path / "m.json"))


def _conv_relu_reshape():
    """x -> Conv c -> Relu r (fused into c on TX chips) -> Reshape rs -> Gemm g."""
    rng = np.random.default_rng(2)
    inits = {"w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "shape": np.array([1, 64], np.int64),
             "wg": rng.standard_normal((64, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="c", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["a"], name="r"),
             helper.make_node("Reshape", ["a", "shape"], ["f"], name="rs"),
             helper.make_node("Gemm", ["f", "wg"], ["y"], name="g")]
    return builders.make_model(nodes, [("x", np.float32, [1, 2, 4, 4])], [("y", np.float32, [1, 3])], inits, opset=17)


def test_pass_through_ops_and_fused_activations_follow_the_op_that_sets_their_width(tmp_path):
    """As in the reference tool, a Reshape and an activation fused into its Conv are no
    template entries: the Relu's output takes the Conv's bit-width, the Reshape its input's."""
    def run(mix=None, out="r_quantize.onnx"):
        data = lambda ex: [ex.forward(np.random.default_rng(i).standard_normal((1, 2, 4, 4)).astype(np.float32))  # noqa: E731
                           for i in range(4)] and 1.0
        cfg = QuantConfig(chip="TX5368AV200", quant_mode=("min_max",), mix_config=mix, generate_template=mix is None)
        return quantize(_conv_relu_reshape(), tmp_path / out, data, cfg, evaluate=False)

    table = json.loads(run().template.read_text())
    assert sorted(table) == ["c", "g"]
    table["c"]["bitwidth"] = 16
    (tmp_path / "c16.json").write_text(json.dumps(table))
    model = run(tmp_path / "c16.json", "c16_quantize.onnx").model
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    q = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert inits[q["a"].input[2]].dtype == np.int16  # the fused Relu's output, at the Conv's width
    table["r"] = {"bitwidth": 16, "mode": "min_max"}
    (tmp_path / "r.json").write_text(json.dumps(table))
    with pytest.raises(ConfigError, match=re.escape("node 'r': rule 1: a pass-through op or an activation fused "
                                                    "into its producer (it follows that op's bit-width)")):
        run(tmp_path / "r.json", "bad_quantize.onnx")
