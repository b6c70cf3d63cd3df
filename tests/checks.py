"""Assertions shared by the pass tests: run models under onnxruntime and compare."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

from ptqc.ir import Graph
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import Pass, PassContext, PassResult


def ort_outputs(model: onnx.ModelProto | Graph, feeds: dict) -> list[np.ndarray]:
    if isinstance(model, Graph):
        model = export_model(model)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |got - ref| / max |ref|: the bound the issues state for float rewrites."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-12)) if ref.size else 0.0


def run_pass(model: onnx.ModelProto, p: Pass, ctx: PassContext | None = None) -> tuple[PassResult, PassContext]:
    """Import ``model`` and run one pass alone on it, as a user's pass-level experiment."""
    ctx = ctx or PassContext()
    return p.run(import_model(model), ctx), ctx


def assert_outputs_close(before: onnx.ModelProto, after: onnx.ModelProto | Graph, feeds: dict,
                         bound: float = 1e-5) -> None:
    a, b = ort_outputs(before, feeds), ort_outputs(after, feeds)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        err = relative_error(x, y)
        assert err <= bound, f"relative error {err:.3g} > {bound}"


def ptqc(*args, cwd=None) -> tuple[int, str, str]:
    """Run the ``ptqc`` command in a subprocess: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "ptqc", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def assert_bad_input(code: int, err: str, *needles: str) -> None:
    """Exit 2, no traceback, one stderr line ``ptqc: error: ...`` containing every needle."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptqc: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def list_reader(feeds: list[dict]):
    """onnxruntime's CalibrationDataReader protocol over a list of feed dicts, with rewind (so
    ptqc's evaluation run sees the data again)."""
    class Reader:
        def __init__(self):
            self.rewind()

        def rewind(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)
    return Reader()


def ort_quantized_values(qdq: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    """Every QuantizeLinear output of a QDQ model under onnxruntime, for ``feeds``."""
    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    names = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in names)
    return dict(zip(names, ort_outputs(m, feeds)))


def isolated_lsb(program, qdq: onnx.ModelProto, feeds: dict) -> dict[str, tuple[str, int, float]]:
    """Each integer op of ``program`` fed onnxruntime's integer inputs: {node: (kind, max LSB
    difference from onnxruntime's integer output, share of elements that differ)}."""
    from ptqc.runtime.simulator import Simulator

    sim = Simulator(program)
    vals = ort_quantized_values(qdq, feeds)
    vals.update(feeds)
    out = {}
    for op in program.ops:
        if op.kind in ("float", "quantize", "dequantize") or op.outputs[0] not in vals:
            continue
        env = {x: program.constants[x] if x in program.constants else vals.get(x) for x in op.inputs if x}
        if any(v is None for v in env.values()):
            continue
        got = sim.run_op(op, env)[0].astype(np.int64)
        d = np.abs(got - vals[op.outputs[0]].astype(np.int64))
        out[op.node] = (op.kind, int(d.max(initial=0)), float(np.mean(d > 0)))
    return out
