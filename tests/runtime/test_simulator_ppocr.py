"""The simulator on the real PP-OCR models (det, rec, cls) at an 8-bit and a 16-bit family:
against onnxruntime running the same QDQ model, op by op and end to end; onnxruntime's own
quantize_static output; and the per-layer comparison finding a broken scale on rec."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import models
from checks import isolated_lsb, list_reader, ort_outputs
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.driver.simulate import first_drop, float_values
from ptqc.onnx_io import import_model
from ptqc.runtime.simulator import Simulator
from ptqc.targets.families import family_of
from ptqc.targets.lower import lower

CHIPS = [("TX510x", 8), ("TX5368AV200", 16)]


def _interp_error(program, op, graph) -> int:
    """The largest difference, over every input code, between a 16-bit op's interpolated
    table and the exact per-code table: what linear interpolation over 2^(16-L) codes costs
    by itself (across HardSwish's or HardSigmoid's kinks: several LSB)."""
    from ptqc.runtime.kernels.lut import apply_table_interp, make_table
    from ptqc.targets.lower_common import float_fn as _float_fn

    node = next(n for n in graph.nodes() if (n.name or n.outputs[0]) == op.node)
    xi, yo = program.tensors[op.inputs[0]], program.tensors[op.outputs[0]]
    codes = np.arange(xi.qmin, xi.qmax + 1).astype(xi.dtype)
    exact = make_table(_float_fn(node), xi.scale, xi.zero_point, xi.qmin, xi.qmax, yo.scale, yo.zero_point,
                       op.lo, op.hi)
    got = apply_table_interp(codes, program.constants[op.table], op.in_qmin, op.step_log2, op.lo, op.hi,
                             program.rounding, np.int64)
    return int(np.abs(got - exact).max())
_CACHE: dict = {}


def _quantized(name: str, chip: str, bits: int, tmp_path_factory) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(ptqc's QDQ model of PP-OCR ``name`` for ``chip``, its float model), once per session."""
    key = (name, chip)
    if key not in _CACHE:
        path = tmp_path_factory.mktemp(f"{name}_{chip}") / f"{name}_quantize.onnx"
        feeds = [models.ppocr_sample_inputs(name, s) for s in range(8)]
        report = quantize(models.ppocr_model_paths()[name], path, data=list_reader(feeds),
                          config=QuantConfig(chip=chip, bit_width=bits))
        _CACHE[key] = (onnx.load(str(path)), report.float_model)
    return _CACHE[key]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _ort_fused(qdq: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.slow
@pytest.mark.parametrize("chip,bits", CHIPS, ids=[c for c, _ in CHIPS])
@pytest.mark.parametrize("name", ["det", "rec", "cls"])
def test_simulator_agrees_with_onnxruntime_on_ppocr(ppocr, tmp_path_factory, name, chip, bits):
    """Op by op (each fed onnxruntime's integers) within 1 LSB, the differences being the
    fixed-point multiplier's rounding (16-bit tables: plus their own interpolation error,
    :func:`_interp_error`); end to end cosine
    >= 0.999.
    Exception, measured and explained: det at 8 bits amplifies single-LSB differences through
    60 convolutions and a Sigmoid head — onnxruntime's own output moves as much (cosine 0.996,
    up to 113 LSB) when the input is perturbed by 1e-6 relative — so there the bound is 0.98
    (measured 0.9897-0.9994 on these inputs).  And where onnxruntime's own fused run (QLinear
    kernels, another rounding) is further than that from its unfused one, the bound is that
    distance less 0.03: PP-OCR rec at 8 bits with the -qm auto ranges of these 8 images measures
    0.957-0.988 fused against unfused, the simulator 0.971 against unfused.)"""
    qdq, _ = _quantized(name, chip, bits, tmp_path_factory)
    program = lower(qdq, family_of(chip))
    sim = Simulator(program)
    graph = import_model(qdq)
    bound = {op.node: 1 + (_interp_error(program, op, graph) if op.kind == "lut_interp" else 0) for op in program.ops}
    for seed in (100, 101):
        feeds = models.ppocr_sample_inputs(name, seed)
        for node, (kind, lsb, _) in isolated_lsb(program, qdq, feeds).items():
            assert lsb <= bound[node], (node, kind, lsb, bound[node])
        fused = _ort_fused(qdq, feeds)
        for got, want, other in zip(sim.infer(feeds), ort_outputs(qdq, feeds), fused):
            assert got.dtype == want.dtype and got.shape == want.shape
            # never asked to agree with onnxruntime better than onnxruntime agrees with itself
            # when it fuses the Q/DQ groups (its own 1-LSB rounding differences)
            floor = min(0.98 if (name, bits) == ("det", 8) else 0.999, _cosine(other, want) - 0.03)
            assert _cosine(got, want) >= floor, (_cosine(got, want), _cosine(other, want))
    assert not sim.saturated or (name, bits) == ("det", 8), sim.saturated


@pytest.mark.slow
def test_onnxruntime_quantize_static_cls_lowers_and_simulates(ppocr, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    out = tmp_path / "cls_ort.onnx"
    feeds = [models.ppocr_sample_inputs("cls", s) for s in range(8)]
    quantize_static(str(ppocr["cls"]), str(out), list_reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True)
    qdq = onnx.load(str(out))
    program = lower(qdq, family_of("TX5368AV200"))
    kinds = program.kinds()  # onnxruntime keeps BN unfused: standalone BNs run as "affine"
    assert kinds["conv"] == 53 and kinds["affine"] == 35, kinds
    sim = Simulator(program)
    for seed in (100, 101, 102):
        feeds = models.ppocr_sample_inputs("cls", seed)
        for node, (kind, lsb, _) in isolated_lsb(program, qdq, feeds).items():
            assert lsb <= 1, (node, kind, lsb)
        for got, want in zip(sim.infer(feeds), ort_outputs(qdq, feeds)):
            assert _cosine(got, want) >= 0.999


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["graphwise", "layerwise"])
def test_compare_on_rec_finds_a_broken_scale_at_its_layer(ppocr, tmp_path_factory, mode):
    qdq, float_model = _quantized("rec", "TX5368AV200", 16, tmp_path_factory)
    feeds = models.ppocr_sample_inputs("rec", 100)
    ref = float_values(float_model, feeds)
    rows = Simulator(lower(qdq, family_of("TX5368AV200"))).compare(feeds, ref, mode)
    assert first_drop(rows) is None, first_drop(rows)  # 16-bit rec: no layer below 0.99
    # break the output scale of a convolution in the middle of the network
    convs = [r for r in rows if r.op_type == "Conv"]
    victim = convs[len(convs) // 2].tensor
    broken = onnx.ModelProto()
    broken.CopyFrom(qdq)
    q = next(n for n in broken.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == victim)
    init = next(i for i in broken.graph.initializer if i.name == q.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) / np.float32(50), init.name))
    rows = Simulator(lower(broken, family_of("TX5368AV200"))).compare(feeds, ref, mode)
    drop = first_drop(rows)
    assert drop is not None and drop.tensor == victim, (drop, victim)
