"""The reference executor's RNN, GRU and LSTM against onnxruntime (CPU).

Each case is one node with every input a graph input (so onnxruntime cannot fold or prepack
it away), run through ``import_model`` and :class:`ReferenceExecutor` as ptqc runs a model.
The onnx wheel's own backend cases for these ops run in test_reference_backend.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from builders import make_model
from checks import ort_outputs
from ptqc.onnx_io import import_model
from ptqc.runtime.reference import ReferenceExecutor, UnsupportedOpError, run_node

SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
INPUT_NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
DIRECTIONS = ["forward", "reverse", "bidirectional"]


def recurrent_case(op: str, direction: str = "forward", *, bias: bool = True, lens: list[int] | None = None,
                   initial: bool = False, peepholes: bool = False, layout: int = 0, opset: int = 22,
                   outputs: list[str] | None = None, seed: int = 0, **attrs):
    """(model, feeds) of one ``op`` node; optional inputs left out are empty names.  The random
    values do not depend on ``layout`` (layout=1 gets the same numbers batch-first)."""
    rng = np.random.default_rng(seed)
    dirs, gates = (2 if direction == "bidirectional" else 1), GATES[op]

    def rand(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    feeds = {"X": rand(SEQ, BATCH, INPUT, scale=1.0), "W": rand(dirs, gates * HIDDEN, INPUT),
             "R": rand(dirs, gates * HIDDEN, HIDDEN)}
    if bias:
        feeds["B"] = rand(dirs, 2 * gates * HIDDEN)
    if lens is not None:
        feeds["sequence_lens"] = np.array(lens, np.int32)
    if initial:
        feeds["initial_h"] = rand(dirs, BATCH, HIDDEN, scale=1.0)
        if op == "LSTM":
            feeds["initial_c"] = rand(dirs, BATCH, HIDDEN, scale=1.0)
    if peepholes:
        feeds["P"] = rand(dirs, 3 * HIDDEN)
    if layout:
        feeds = {n: v.swapaxes(0, 1) if n in ("X", "initial_h", "initial_c") else v for n, v in feeds.items()}
    used = max(INPUT_NAMES.index(n) for n in feeds) + 1
    inputs = [n if n in feeds else "" for n in INPUT_NAMES[:used]]
    outputs = outputs or ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    attrs = dict(hidden_size=HIDDEN, direction=direction, **attrs)
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, inputs, outputs, name=f"{op.lower()}0", **attrs)
    model = make_model([node], [(n, v.dtype, list(v.shape)) for n, v in feeds.items()],
                       [(o, np.float32, None) for o in outputs if o], opset=opset)
    return model, feeds


def ours(model, feeds) -> dict[str, np.ndarray]:
    graph = import_model(model)
    return ReferenceExecutor(graph.topological_order(), opset=graph.opset).run(feeds, list(graph.outputs))


def assert_close(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def with_directions(kw: dict, direction: str) -> dict:
    """``kw`` with activations (and their alphas/betas) given for both directions if bidirectional."""
    if direction != "bidirectional":
        return kw
    return {k: v * 2 if k in ("activations", "activation_alpha", "activation_beta") else v for k, v in kw.items()}


# (id, ops, keyword arguments of recurrent_case); each runs in every direction.
VARIANTS = [
    ("plain", ["RNN", "GRU", "LSTM"], dict(bias=False)),
    ("bias", ["RNN", "GRU", "LSTM"], {}),
    ("initial", ["RNN", "GRU", "LSTM"], dict(initial=True)),
    ("lens", ["RNN", "GRU", "LSTM"], dict(lens=[5, 2, 4], initial=True)),
    ("lens0", ["GRU", "LSTM"], dict(lens=[0, 5, 2], initial=True)),  # RNN: onnxruntime reads Y[-1]
    ("clip", ["RNN", "GRU", "LSTM"], dict(clip=0.7, initial=True)),
    ("opset7", ["RNN", "GRU", "LSTM"], dict(opset=7, initial=True)),
    ("opset14", ["RNN", "GRU", "LSTM"], dict(opset=14, lens=[3, 5, 1])),
    ("lbr1", ["GRU"], dict(linear_before_reset=1, initial=True, lens=[4, 5, 2])),
    ("peepholes", ["LSTM"], dict(peepholes=True, initial=True, lens=[2, 5, 3])),
    ("input_forget", ["LSTM"], dict(input_forget=1, peepholes=True, clip=1.5)),
    ("relu", ["RNN"], dict(activations=["Relu"], initial=True)),
    ("acts", ["RNN"], dict(activations=["ScaledTanh"], activation_alpha=[1.3], activation_beta=[0.7])),
    ("acts", ["GRU"], dict(activations=["HardSigmoid", "Softsign"], activation_alpha=[0.3], activation_beta=[0.4],
                           linear_before_reset=1)),
    ("acts", ["LSTM"], dict(activations=["HardSigmoid", "Tanh", "Tanh"], peepholes=True)),
    # alphas/betas are consumed in order by the functions that take any: LeakyRelu 0.1,
    # ScaledTanh (0.8, 0.6), Affine (1.5, 0.2)
    ("alphas", ["LSTM"], dict(activations=["LeakyRelu", "ScaledTanh", "Affine"], activation_alpha=[0.1, 0.8, 1.5],
                              activation_beta=[0.6, 0.2])),
    ("acts2", ["LSTM"], dict(activations=["Sigmoid", "Softsign", "Softplus"], initial=True)),
    # omitted alphas: onnxruntime's defaults (HardSigmoid 0.2 and 0.5, Elu 1, ThresholdedRelu 0)
    ("default_alphas", ["GRU"], dict(activations=["HardSigmoid", "Elu"])),
    ("default_alphas", ["RNN"], dict(activations=["ThresholdedRelu"])),
]
CASES = [pytest.param(op, d, kw, id=f"{op}-{name}-{d}") for name, ops, kw in VARIANTS for op in ops
         for d in DIRECTIONS]


@pytest.mark.parametrize("op, direction, kw", CASES)
def test_matches_onnxruntime(op, direction, kw):
    model, feeds = recurrent_case(op, direction, **with_directions(kw, direction))
    got = ours(model, feeds)
    for out, want in zip(model.graph.output, ort_outputs(model, feeds)):
        assert_close(got[out.name], want, out.name)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_batch_first_layout(op, direction):
    """onnxruntime (CPU) refuses layout=1 ("Batchwise recurrent operations (layout == 1) are not
    supported"), so the batch-first node is compared with it on the same numbers at layout=0."""
    kw = dict(initial=True, lens=[3, 5, 1], peepholes=op == "LSTM")
    model, feeds = recurrent_case(op, direction, layout=1, opset=14, **kw)
    model0, feeds0 = recurrent_case(op, direction, layout=0, opset=14, **kw)
    got = ours(model, feeds)
    for out, want in zip(model.graph.output, ort_outputs(model0, feeds0)):
        want = want.transpose(2, 0, 1, 3) if out.name == "Y" else want.swapaxes(0, 1)
        assert_close(got[out.name], want, out.name)


@pytest.mark.parametrize("op, outputs", [("LSTM", ["", "Y_h"]), ("LSTM", ["", "", "Y_c"]), ("LSTM", ["Y"]),
                                         ("GRU", ["", "Y_h"]), ("RNN", ["Y"])])
def test_output_subsets(op, outputs):
    model, feeds = recurrent_case(op, "bidirectional", outputs=outputs, lens=[4, 1, 5], initial=True)
    got = ours(model, feeds)
    assert set(got) == {o for o in outputs if o}
    for out, want in zip(model.graph.output, ort_outputs(model, feeds)):
        assert_close(got[out.name], want, out.name)


def test_float16_computes_in_float32():
    model, feeds = recurrent_case("LSTM", "bidirectional", lens=[5, 3, 2], initial=True, peepholes=True)
    half = {n: v.astype(np.float16) if v.dtype == np.float32 else v for n, v in feeds.items()}
    args = [half.get(n) for n in INPUT_NAMES]
    y, y_h, y_c = run_node("LSTM", args, {"hidden_size": HIDDEN, "direction": "bidirectional"}, opset=22,
                           n_outputs=3)
    ref = run_node("LSTM", [None if v is None else v.astype(np.float32) if v.dtype == np.float16 else v
                            for v in args], {"hidden_size": HIDDEN, "direction": "bidirectional"}, opset=22,
                   n_outputs=3)
    assert y.dtype == y_h.dtype == y_c.dtype == np.float16
    for got, want in zip((y, y_h, y_c), ref):
        np.testing.assert_array_equal(got, want.astype(np.float16))


@pytest.mark.parametrize("attrs, needle", [
    (dict(activations=["Sigmoid", "Gelu"]), "activation 'Gelu'"),
    (dict(direction="sideways"), "direction 'sideways'"),
    (dict(int_x=True), "X of dtype int32"),
])
def test_refusals_name_what_is_missing(attrs, needle):
    _, feeds = recurrent_case("GRU")
    x = feeds["X"].astype(np.int32) if attrs.pop("int_x", False) else feeds["X"]
    attrs = dict(hidden_size=HIDDEN, **attrs)
    with pytest.raises(UnsupportedOpError, match=needle) as e:
        run_node("GRU", [x, feeds["W"], feeds["R"]], attrs, opset=22, name="gru0", n_outputs=2)
    assert "node 'gru0': op GRU at opset 22 is not supported" in str(e.value)
