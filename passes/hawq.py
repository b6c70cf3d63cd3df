"""``-ams HAWQ`` (AssignPrecision): which nodes go to 16 bits, by Hessian-aware sensitivity,
forward-only.

HAWQ ranks layers by ``Ω = ½ · tr(H) · σ²``: how much the loss grows when a tensor carries
quantization noise of variance ``σ²``.  ptqc measures it on each quantized node's output
tensor ``a`` (so weightless ops — Add, Mul, tables — are ranked like convolutions), with the
loss ``L(δ) = ½ Σ_outputs ||f(a + δ) − f(a)||²``.  At ``δ = 0`` the residual is zero, so the
Hessian is the Gauss–Newton ``JᵀJ`` and Hutchinson's estimator needs no gradient:

    tr(H) = E_v ||J v||²,   J v ≈ (f(a + εv) − f(a − εv)) / 2ε,   v Rademacher,

two forward runs per probe (``ε`` = 1e-3 · RMS of ``a``).  One onnxruntime session serves
every tensor: each gets an ``Add(a, noise_a)`` (built through the IR) with ``noise_a`` a graph
input, fed 0 (a broadcast scalar) except for the tensor being probed.  ``σ²`` is the 8-bit quantization
error the calibration histogram predicts for ``a``.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import onnx

from ptqc.errors import GraphError, PtqcError
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import offset_inputs
from ptqc.runtime.ort import OrtRunner

log = logging.getLogger("ptqc.hawq")

PROBES = 2  # Rademacher vectors per tensor
EPS_REL = 1e-3


def _perturbable(model: onnx.ModelProto, tensors: list[str]) -> tuple[bytes, dict[str, str]]:
    """The model with each tensor offset by a float graph input (``pass_manager.offset_inputs``);
    ``{tensor: noise input name}``."""
    graph = import_model(model)
    try:
        noise = offset_inputs(graph, tensors, "hawq")
    except GraphError as e:
        raise PtqcError(f"HAWQ: {e}") from None
    return export_model(graph, constants_as_initializers=True).SerializeToString(), noise


def traces(float_model: onnx.ModelProto, tensors: list[str], feeds: Mapping[str, np.ndarray],
           seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """({tensor: tr(H) estimate}, {tensor: mean square value}) for one batch of ``feeds``."""
    outs = [o.name for o in float_model.graph.output]
    seen = onnx.ModelProto()
    seen.CopyFrom(float_model)
    seen.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in outs)
    base = OrtRunner(seen.SerializeToString()).run(feeds)
    blob, noise = _perturbable(float_model, tensors)
    runner = OrtRunner(blob, outs)
    zero = np.zeros((), np.float32)
    idle = {n: zero for n in noise.values()}
    rng = np.random.default_rng(seed)
    trace, power = {}, {}
    for t in tensors:
        a = np.asarray(base[t], np.float32)
        power[t] = float(np.mean(a.astype(np.float64) ** 2))
        eps = EPS_REL * (np.sqrt(power[t]) or 1.0)
        total = 0.0
        for _ in range(PROBES):
            v = rng.choice(np.array([-1.0, 1.0], np.float32), size=a.shape)
            plus = runner.run({**feeds, **idle, noise[t]: (eps * v).astype(np.float32)})
            minus = runner.run({**feeds, **idle, noise[t]: (-eps * v).astype(np.float32)})
            total += sum(float(np.sum(((plus[o].astype(np.float64) - minus[o]) / (2 * eps)) ** 2)) for o in outs)
        trace[t] = total / PROBES
    return trace, power


def rank(node_tensors: Mapping[str, list[str]], trace: Mapping[str, float], power: Mapping[str, float],
         rel_error: Mapping[str, float]) -> list[tuple[str, float]]:
    """Nodes by Ω = Σ over their outputs of ½ · tr(H) · σ² (σ² = relative 8-bit error ×
    mean square), most sensitive first; ties in the given order."""
    omega = {k: sum(0.5 * trace[t] * rel_error.get(t, 0.0) * power[t] for t in ts if t in trace)
             for k, ts in node_tensors.items()}
    order = list(node_tensors)
    return sorted(((k, omega[k]) for k in order), key=lambda kv: (-kv[1], order.index(kv[0])))
