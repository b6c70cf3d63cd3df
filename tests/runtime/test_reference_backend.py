"""The reference executor against the onnx wheel's own backend node test cases.

Every case whose ops the executor claims (``supports``) must either match the expected
outputs (rtol 1e-3, atol 1e-5, the backend runner's tolerance), or refuse with an
:class:`UnsupportedOpError` that names what it lacks (bfloat16/float8/int4 tensors, antialias,
training-mode Dropout...), or be listed below with the reason.  The list is checked both ways,
so a fixed case must leave it.
"""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from backend_cases import node_cases
from ptqc.onnx_io import import_model
from ptqc.runtime import reference
from ptqc.runtime.reference import ReferenceExecutor, UnsupportedOpError

# Where the onnx spec's reference and onnxruntime disagree we follow onnxruntime, the float
# reference every other part of ptqc is compared with.
KNOWN_BACKEND_FAILURES = {
    # align_corners with *scales*: the spec divides by scale*in-1, onnxruntime by out-1.
    "test_resize_downsample_scales_linear_align_corners",
    "test_resize_downsample_scales_cubic_align_corners",
}

# The op list: each must pass at least one backend case.
REQUIRED_OPS = """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Pow Sqrt Exp Log Abs Neg Reciprocal Relu
LeakyRelu PRelu Clip Sigmoid HardSigmoid HardSwish Tanh Erf Gelu Softmax LogSoftmax BatchNormalization
LayerNormalization MaxPool AveragePool GlobalAveragePool GlobalMaxPool ReduceMean ReduceSum ReduceMax
ReduceMin Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather Expand Tile Pad Shape
ConstantOfShape Cast Where Equal Less Greater Not Resize Identity Dropout QuantizeLinear
DequantizeLinear DynamicQuantizeLinear MatMulInteger ConvInteger""".split()


def _array(x):
    if hasattr(x, "SerializeToString"):
        return numpy_helper.to_array(x)
    return np.asarray(x) if isinstance(x, (np.ndarray, np.generic)) else x


def _run_case(case) -> str:
    """'pass', 'unsupported: <message>' or 'fail: <what>'."""
    graph = import_model(case.model)
    constants = {v.name: v.const for v in graph.values() if v.const is not None}
    executor = ReferenceExecutor(graph.topological_order(), opset=graph.opset, constants=constants)
    runtime_inputs = [n for n in graph.inputs if graph.value(n).const is None]
    for inputs, expected in case.data_sets:
        try:
            got = executor.run(dict(zip(runtime_inputs, map(_array, inputs))), list(graph.outputs))
        except UnsupportedOpError as e:
            return f"unsupported: {e}"
        except Exception as e:  # noqa: BLE001 - reported per case below
            return f"fail: {type(e).__name__}: {e}"
        for name, want in zip(graph.outputs, map(_array, expected)):
            ours = got[name]
            if not (isinstance(want, np.ndarray) and ours.shape == want.shape and ours.dtype == want.dtype
                    and np.allclose(ours.astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-5,
                                    equal_nan=True)):
                return f"fail: output {name} {ours.dtype}{ours.shape} differs from the expected"
    return "pass"


def test_backend_node_cases():
    cases = node_cases()
    results = {}
    for case in cases:
        if all(reference.supports(n.op_type, n.domain) for n in case.model.graph.node):
            results[case.name] = _run_case(case)
    passed = {n for n, r in results.items() if r == "pass"}
    failed = {n: r for n, r in results.items() if r.startswith("fail")}
    unexpected = {n: r for n, r in failed.items() if n not in KNOWN_BACKEND_FAILURES}
    assert not unexpected, "\n".join(f"{n}: {r}" for n, r in sorted(unexpected.items()))
    assert not KNOWN_BACKEND_FAILURES - set(failed), "now passing, remove from the list: " + ", ".join(
        sorted(KNOWN_BACKEND_FAILURES - set(failed)))
    print(f"\nreference executor: {len(passed)} of {len(cases)} backend node cases pass, "
          f"{len(results) - len(passed) - len(failed)} refused with UnsupportedOpError, "
          f"{len(cases) - len(results)} use ops it lacks")
    assert len(passed) >= 1100
    ops_passing = {n.op_type for case in cases if case.name in passed for n in case.model.graph.node}
    assert not set(REQUIRED_OPS) - ops_passing


def test_unsupported_refusals_name_what_is_missing():
    """A refusal is a clear message, never a numpy traceback in disguise."""
    for case in node_cases():
        if case.name in ("test_resize_downsample_scales_linear_antialias", "test_cast_FLOAT_to_BFLOAT16"):
            result = _run_case(case)
            assert result.startswith("unsupported: ")
            assert "antialias" in result or "dtype 16" in result
