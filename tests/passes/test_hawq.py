"""-ams HAWQ: the forward-only Hutchinson trace is right on a model whose Hessian is known, and
the assignment puts the most sensitive nodes at 16 bits, rule-compliant, with the -amr share."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import list_reader
from ptqc.passes import hawq
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize


def _linear_model(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """y = (x @ w1) @ w2: the loss ½||Δy||² w.r.t. a = x @ w1 has Hessian w2 w2ᵀ per row."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["a", "w2"], ["y"])]
    return builders.make_model(nodes, [("x", np.float32, [3, 4])], [("y", np.float32, [3, 2])],
                               {"w1": w1, "w2": w2})


def _case():
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    return w1, w2, {"x": rng.normal(size=(3, 4)).astype(np.float32)}


def test_trace_is_the_hutchinson_estimate_of_the_known_jacobian():
    """For y = a @ w2, J v = v @ w2: the finite differences must give exactly
    mean_v ||v @ w2||² over the same Rademacher draws (seed 0, tensors in order)."""
    w1, w2, feeds = _case()
    trace, power = hawq.traces(_linear_model(w1, w2), ["a", "y"], feeds, seed=0)
    rng = np.random.default_rng(0)
    want = {}
    for t, jac in (("a", w2.astype(np.float64)), ("y", np.eye(2))):
        draws = [rng.choice(np.array([-1.0, 1.0], np.float32), size=(3, jac.shape[0])) for _ in range(hawq.PROBES)]
        want[t] = np.mean([np.sum((v.astype(np.float64) @ jac) ** 2) for v in draws])
    assert trace["a"] == pytest.approx(want["a"], rel=1e-3)
    assert trace["y"] == pytest.approx(want["y"], rel=1e-3)  # the output itself: J = I, trace 6
    assert power["a"] == pytest.approx(float(np.mean((feeds["x"] @ w1).astype(np.float64) ** 2)), rel=1e-5)


def test_trace_is_unbiased(monkeypatch):
    monkeypatch.setattr(hawq, "PROBES", 400)
    w1, w2, feeds = _case()
    trace, _ = hawq.traces(_linear_model(w1, w2), ["a"], feeds)
    assert trace["a"] == pytest.approx(3 * float(np.sum(w2.astype(np.float64) ** 2)), rel=0.1)  # 3 rows · tr(w2 w2ᵀ)


def test_rank_orders_by_omega():
    ranked = hawq.rank({"n1": ["a"], "n2": ["b"], "n3": []}, {"a": 1.0, "b": 10.0}, {"a": 1.0, "b": 1.0},
                       {"a": 0.5, "b": 0.01})
    assert [k for k, _ in ranked] == ["n1", "n2", "n3"]  # ½·1·0.5 > ½·10·0.01 > 0


def test_hawq_assignment_has_the_share_and_is_rule_compliant(tmp_path, digits):
    feeds = [{"input": digits.x_train[i * 16:(i + 1) * 16]} for i in range(4)]
    report = quantize(digits.model, tmp_path / "h_quantize.onnx", list_reader(feeds),
                      QuantConfig(chip="TX5368AV200", auto_mix_strategy="HAWQ", auto_mix_ratio=0.5,
                                  generate_template=True))
    table = json.loads(report.template.read_text())
    high = {k for k, v in table.items() if v["bitwidth"] == 16}
    assert len(high) >= round(0.5 * len(table))  # the chosen half, plus what the rules raised
    assert len(high) < len(table)
    # the mix file HAWQ wrote is a valid -mc input: loading it re-checks every rule
    again = quantize(digits.model, tmp_path / "again_quantize.onnx", list_reader(feeds),
                     QuantConfig(chip="TX5368AV200", mix_config=report.template))
    assert again.model.SerializeToString() == report.model.SerializeToString()
