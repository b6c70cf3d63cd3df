"""QuantizeWeights: MatMul/Gemm weights to onnxruntime's MatMulNBits.  Under onnxruntime the
written model computes what the float model computes with each weight replaced by its
round-to-nearest grid (worked out here independently), for every type, symmetry and strategy;
AWQ's input scaling is folded into a LayerNormalization or put in a Mul, and never changes the
function before rounding; group sizes and skips are honoured."""
import numpy as np
import onnx
import pytest
from onnx import helper

import builders
from checks import ort_outputs
from ptqc.errors import ConfigError
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext
from ptqc.passes.quantize_weights import QuantizeWeights

D, H = 128, 192  # model width, hidden width: K is 128 for up/gate/head, 192 for down
CONFIGS = [(4, False, "group", 32), (4, True, "group", 32), (4, True, "group", 96), (8, False, "group", 64),
           (4, False, "channel", 0), (8, True, "channel", 0), (4, True, "tensor", 0), (4, False, "tensor", 0)]


def _model(seed: int = 0, outlier: bool = False) -> onnx.ModelProto:
    """LayerNorm -> two MatMuls (the norm's only readers) -> Relu * -> MatMul -> Reshape -> Gemm."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["ln", "w1"], ["a"], name="up"),
             helper.make_node("MatMul", ["ln", "w2"], ["b"], name="gate"),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Mul", ["ar", "b"], ["c"]),
             helper.make_node("MatMul", ["c", "w3"], ["d"], name="down"),
             helper.make_node("Reshape", ["d", "shape"], ["d2"]),
             helper.make_node("Gemm", ["d2", "w4", "bias"], ["y"], transB=1, name="head")]
    gamma = rng.uniform(0.5, 1.5, D).astype(np.float32)
    if outlier:
        gamma[:3] *= 20
    inits = {"gamma": gamma, "beta": rng.normal(0, 0.1, D).astype(np.float32),
             "w1": rng.normal(0, 0.1, (D, H)).astype(np.float32), "w2": rng.normal(0, 0.1, (D, H)).astype(np.float32),
             "w3": rng.normal(0, 0.1, (H, D)).astype(np.float32), "shape": np.array([-1, D], np.int64),
             "w4": rng.normal(0, 0.1, (40, D)).astype(np.float32), "bias": rng.normal(0, 0.1, 40).astype(np.float32)}
    return builders.make_model(nodes, [("x", np.float32, [2, 8, D])], [("y", np.float32, None)], inits, opset=17)


def _feeds(n: int, seed: int = 1) -> list[dict]:
    """Inputs with correlated channels (a fixed mixing), as real activations have."""
    mix = np.eye(D) + 0.5 * np.random.default_rng(99).normal(size=(D, D)) / np.sqrt(D)
    rng = np.random.default_rng(seed)
    return [{"x": (rng.normal(size=(2, 8, D)) @ mix).astype(np.float32)} for _ in range(n)]


def _reference_grid(w: np.ndarray, bits: int, symmetric: bool, strategy: str, group: int) -> np.ndarray:
    """Round to nearest, written out plainly: w is [N, K], groups along K."""
    n, k = w.shape
    out = np.empty_like(w, dtype=np.float64)
    size = k if strategy != "group" else group
    for r in range(n):
        for g0 in range(0, k, size):
            part = w[:, :] if strategy == "tensor" else w[r:r + 1, g0:g0 + size]
            lo, hi = min(part.min(), 0.0), max(part.max(), 0.0)
            v = w[r, g0:g0 + size].astype(np.float64)
            if symmetric:
                half = 2 ** (bits - 1)  # the value of largest magnitude sits on code -half
                scale = (lo if -lo >= hi else hi) / -half or 1.0
                out[r, g0:g0 + size] = np.clip(np.rint(v / scale), -half, half - 1) * scale
            else:
                qmax = 2 ** bits - 1
                scale = (hi - lo) / qmax or 1.0
                zp = np.clip(np.rint(-lo / scale), 0, qmax)
                out[r, g0:g0 + size] = (np.clip(np.rint(v / scale) + zp, 0, qmax) - zp) * scale
    return out


def _run(model, feeds, **kw):
    graph = import_model(model)
    ctx = PassContext(data=lambda run: [run(f) for f in feeds])
    assert QuantizeWeights(**kw).run(graph, ctx).modified
    return export_model(graph, constants_as_initializers=True), ctx


@pytest.mark.parametrize("bits,symmetric,strategy,group", CONFIGS)
def test_matmulnbits_computes_the_float_model_on_the_rounded_grid(bits, symmetric, strategy, group):
    model = _model()
    q, _ = _run(model, [], bits=bits, symmetric=symmetric, strategy=strategy, group_size=group)
    assert [n.op_type for n in q.graph.node].count("MatMulNBits") == 4
    assert not {"w1", "w2", "w3", "w4"} & {t.name for t in q.graph.initializer}  # float weights gone
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    for t in ref.graph.initializer:
        if t.name in ("w1", "w2", "w3", "w4"):
            w = onnx.numpy_helper.to_array(t)
            wt = w if t.name == "w4" else w.T  # [N, K]
            r = _reference_grid(wt, bits, symmetric, strategy, group).astype(np.float32)
            t.CopyFrom(onnx.numpy_helper.from_array(r if t.name == "w4" else r.T, t.name))
    for f in _feeds(2):
        got, want = ort_outputs(q, f)[0], ort_outputs(ref, f)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_awq_folds_into_the_layernorm_and_scales_the_mul_input():
    model = _model(outlier=True)
    feeds = _feeds(8)
    q, ctx = _run(model, feeds, bits=4, symmetric=True, strategy="group", group_size=32, algorithm="awq")
    ops = [n.op_type for n in q.graph.node]
    ln = next(n for n in q.graph.node if n.op_type == "LayerNormalization")
    assert ln.input[1] != "gamma"  # up/gate read only the norm: 1/s folded into its scale and bias
    assert ops.count("Mul") >= 2  # the Relu*gate product reaches "down" through a 1/s Mul
    assert all(v[0] == "awq" and v[1] <= 1.0 for v in ctx.analyses["weight_layers"].values())
    q1, _ = _run(model, feeds, bits=4, symmetric=True, strategy="group", group_size=32, algorithm="awq", grids_num=1)
    rtn, _ = _run(model, feeds, bits=4, symmetric=True, strategy="group", group_size=32)
    assert q1.SerializeToString() == rtn.SerializeToString()  # one grid point is RTN
    err = {name: 0.0 for name in ("awq", "rtn")}
    for f in _feeds(4, seed=7):  # held-out
        want = ort_outputs(model, f)[0]
        for name, m in (("awq", q), ("rtn", rtn)):
            err[name] += float(np.sum((ort_outputs(m, f)[0] - want) ** 2))
    assert err["awq"] < err["rtn"]


def test_gptq_lowers_the_error_on_held_out_inputs():
    model, feeds = _model(), _feeds(32)
    g, ctx = _run(model, feeds, bits=4, symmetric=False, strategy="group", group_size=32, algorithm="gptq")
    rtn, _ = _run(model, feeds, bits=4, symmetric=False, strategy="group", group_size=32)
    assert all(v[0] == "gptq" and v[1] < 1.0 for v in ctx.analyses["weight_layers"].values())
    err = {"gptq": 0.0, "rtn": 0.0}
    for f in _feeds(4, seed=7):
        want = ort_outputs(model, f)[0]
        for name, m in (("gptq", g), ("rtn", rtn)):
            err[name] += float(np.sum((ort_outputs(m, f)[0] - want) ** 2))
    assert err["gptq"] < err["rtn"]


def test_a_group_of_k_or_more_is_refused_naming_the_layer_and_skip_layers_keeps_it_float():
    with pytest.raises(ConfigError, match=r"group_size 128: layer 'up' has K=128 inputs; a group must be in \[32, "):
        _run(_model(), [], bits=4, strategy="group", group_size=128)
    with pytest.raises(ConfigError, match=r"group_size 48: must be a multiple of 32"):
        _run(_model(), [], bits=4, strategy="group", group_size=48)
    q, ctx = _run(_model(), [], bits=4, strategy="group", group_size=32, skip=("gate", "w4"))
    kept = {n.name for n in q.graph.node if n.op_type in ("MatMul", "Gemm")}
    assert kept == {"gate", "head"} and set(ctx.analyses["weight_layers"]) == {"up", "down"}


def test_gptq_and_awq_without_data_are_refused():
    for algorithm in ("gptq", "awq"):
        graph = import_model(_model())
        with pytest.raises(ConfigError, match=f"algorithm {algorithm}: needs calibration data"):
            QuantizeWeights(algorithm=algorithm, strategy="channel").run(graph, PassContext())


@pytest.mark.parametrize("bits,symmetric,strategy,group", CONFIGS)
def test_an_embedding_table_becomes_gatherblockquantized_at_8_bits_per_row(bits, symmetric, strategy, group):
    rng = np.random.default_rng(4)
    table = rng.normal(0, 0.5, (50, D)).astype(np.float32)
    model = builders.make_model([helper.make_node("Gather", ["table", "ids"], ["y"], name="embed")],
                                [("ids", np.int64, [2, 5])], [("y", np.float32, None)], {"table": table}, opset=17)
    q, ctx = _run(model, [], bits=bits, symmetric=symmetric, strategy=strategy, group_size=group)
    assert [n.op_type for n in q.graph.node] == ["GatherBlockQuantized"] and ctx.analyses["weight_layers"] == {
        "embed": ("minmax", 1.0)}
    ids = {"ids": rng.integers(0, 50, (2, 5)).astype(np.int64)}
    want = _reference_grid(table, 8, symmetric, "channel", 0)[ids["ids"]]  # whatever the layers' bits
    np.testing.assert_allclose(ort_outputs(q, ids)[0], want, rtol=1e-5, atol=1e-6)
