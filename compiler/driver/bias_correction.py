"""Empirical bias correction (MindSpore Lite's ``bias_correction``; Nagel et al. 2019, "Data-Free
Quantization", §4.2, measured on the calibration data instead of predicted).

Quantization shifts the mean of a layer's output channels: clipping cuts one tail more than
the other, and rounding errors of skewed activations do not cancel.  Rounding noise averages
away in a global pool or an SE block; a shifted mean does not, and the next layers amplify it.
Layer by layer in topological order, every earlier layer already corrected, each Conv/Gemm's
per-channel output mean over the calibration data is compared with the float model's, and the
difference goes into its int32 bias (``round(delta / bias_scale)``, saturated): the model keeps
its shape and every integer rule, and the simulator reads the corrected codes.

One onnxruntime session serves every layer: the QDQ model gets ``Add(y, delta_y)`` after each
corrected output, ``delta_y`` a graph input fed the corrections found so far.  Only
per-channel sums are kept, so memory does not grow with the data.  A correction that would
lower the mean output cosine on the calibration data is not applied (heavy clipping, e.g. kl at 8
bits, distorts more than the mean: shifting it can push more values into the clip).
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ptqc.onnx_io import with_outputs
from ptqc.quant import cosine
from ptqc.runtime.ort import OrtRunner

log = logging.getLogger("ptqc")

INT32 = np.iinfo(np.int32)


def _targets(qmodel: onnx.ModelProto, float_names: set[str]) -> list[tuple[str, str, str]]:
    """(output, int32 bias codes initializer, bias scale initializer) of each Conv/Gemm whose
    bias arrives through a DequantizeLinear of int32 codes, in topological order."""
    inits = {i.name: i for i in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    found = []
    for node in qmodel.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        dq = producer.get(node.input[2])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        if inits[dq.input[0]].data_type != onnx.TensorProto.INT32 or node.output[0] not in float_names:
            continue
        found.append((node.output[0], dq.input[0], dq.input[1]))
    shared = {c for c in (t[1] for t in found) if sum(t[1] == c for t in found) > 1}
    return [t for t in found if t[1] not in shared]  # codes two layers share cannot take two corrections


class _ChannelMeans:
    """Streaming per-channel (axis 1) means of named tensors."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.ranks: dict[str, int] = {}

    def add(self, name: str, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        axes = tuple(a for a in range(x.ndim) if a != 1)
        s = x.sum(axis=axes)
        self.sums[name] = self.sums.get(name, 0.0) + s
        self.counts[name] = self.counts.get(name, 0) + x.size // x.shape[1]
        self.ranks[name] = x.ndim

    def mean(self, name: str) -> np.ndarray:
        return self.sums[name] / max(self.counts[name], 1)


def _with_deltas(qmodel: onnx.ModelProto, outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    """The QDQ model with ``y = Add(y_raw, delta_y)`` right after each output's producer and
    ``y`` exposed; ``{y: delta input name}``."""
    m = onnx.ModelProto()
    m.CopyFrom(qmodel)
    g = m.graph
    feeds = {y: f"__bc_delta_{i}" for i, y in enumerate(outputs)}
    nodes = []
    for node in g.node:
        nodes.append(node)
        for k, o in enumerate(node.output):
            if o in feeds:
                raw = f"__bc_raw_{outputs.index(o)}"
                node.output[k] = raw
                nodes.append(helper.make_node("Add", [raw, feeds[o]], [o], name=f"__bc_add_{outputs.index(o)}"))
    del g.node[:]
    g.node.extend(nodes)
    g.input.extend(helper.make_tensor_value_info(d, onnx.TensorProto.FLOAT, None) for d in feeds.values())
    declared = {o.name for o in g.output}
    g.output.extend(helper.make_empty_tensor_value_info(y) for y in outputs if y not in declared)
    return m.SerializeToString(), feeds


def correct_bias(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, drive: Callable,
                 input_params: Mapping | None = None, output_params: Mapping | None = None,
                 guard: bool = True, what: str = "--bias-correction", score_drive: Callable | None = None,
                 holdout: int = 0) -> tuple[onnx.ModelProto, int]:
    """The QDQ model with corrected int32 biases, and how many layers were corrected (0 when
    the correction would lower the mean output cosine on ``score_drive``'s batches, the
    held-out ones: then the model is returned as it was, with a warning).  ``drive(run)``
    feeds the calibration data through ``run`` (the infer-function protocol: ``run(feeds)``
    returns the model outputs in order); the means are measured on its batches but the held-out
    ones (every ``holdout``-th, as calibration held them out);
    ``input_params`` quantize the feeds of integer inputs, ``output_params`` dequantize
    integer outputs; ``guard=False`` skips the output check."""
    from ptqc.driver.data import cannot_reread

    float_names = {o for n in float_model.graph.node for o in n.output}
    targets = _targets(qmodel, float_names)
    if not targets:
        return qmodel, 0
    outputs = [y for y, _, _ in targets]
    model_outputs = [o.name for o in float_model.graph.output]
    f_run = OrtRunner(with_outputs(float_model, outputs), model_outputs + outputs)
    ref = _ChannelMeans()

    fit = _fitting(holdout)

    def float_pass(feeds: dict) -> list:
        got = f_run.run(feeds)
        if fit():
            for y in outputs:
                ref.add(y, got[y])
        return [got[o] for o in model_outputs]

    drive(float_pass)
    if not ref.counts:
        raise cannot_reread(what)
    probe, delta_inputs = _with_deltas(qmodel, outputs)
    q_outputs = [o.name for o in qmodel.graph.output]
    q_run = OrtRunner(probe, q_outputs + outputs)
    deltas = {y: np.zeros_like(ref.mean(y)) for y in outputs}
    ins, outs = dict(input_params or {}), dict(output_params or {})

    def q_feeds(feeds: dict, scale: float = 1.0) -> dict:
        fed = {k: (ins[k].quantize(x) if k in ins else x) for k, x in feeds.items()}
        fed.update({delta_inputs[t]: (scale * deltas[t]).astype(np.float32).reshape([-1] + [1] * (ref.ranks[t] - 2))
                    for t in outputs})
        return fed

    def model_outs(got: dict) -> list:
        return [outs[o].dequantize(got[o]) if o in outs else got[o] for o in q_outputs]

    for y in outputs:  # topological: each layer sees every earlier one corrected
        got_means, fit = _ChannelMeans(), _fitting(holdout)

        def q_pass(feeds: dict, y=y, fit=fit) -> list:
            got = q_run.run(q_feeds(feeds))
            if fit():
                got_means.add(y, got[y])
            return model_outs(got)

        drive(q_pass)
        deltas[y] = deltas[y] + (ref.mean(y) - got_means.mean(y))
    fixed = _fold(qmodel, targets, deltas)
    if not guard:
        return fixed, len(targets)
    # the guard scores the two models as written: extra outputs (the probe's) change which
    # Q/DQ groups onnxruntime fuses, and so its numbers
    runs = [OrtRunner(m.SerializeToString(), q_outputs) for m in (qmodel, fixed)]
    scores: list[list[float]] = [[], []]  # output cosines without and with the correction

    def check(feeds: dict) -> list:
        want = f_run.run(feeds)
        fed = {k: (ins[k].quantize(x) if k in ins else x) for k, x in feeds.items()}
        for run, cos in zip(runs, scores):
            cos += [cosine(want[o], g) for o, g in zip(model_outputs, model_outs(run.run(fed)))]
        return [want[o] for o in model_outputs]

    (score_drive or drive)(check)
    before, after = (float(np.mean(s)) if s else 1.0 for s in scores)
    if after < before:
        log.warning("--bias-correction: correcting %d layers would lower the mean output cosine on the "
                    "%s data (%.6f -> %.6f); biases left as they were", len(targets),
                    "held-out" if score_drive is not None else "calibration", before, after)
        return qmodel, 0
    return fixed, len(targets)


def _fitting(holdout: int) -> Callable[[], bool]:
    """Called once per batch: False for the batches calibration held out for validation."""
    from ptqc.driver.pipeline import MAX_VALIDATION
    from ptqc.passes.calibrate import held_out

    seen = [0]

    def fit() -> bool:
        seen[0] += 1
        return not held_out(seen[0] - 1, holdout, MAX_VALIDATION)
    return fit


def _fold(qmodel: onnx.ModelProto, targets: list[tuple[str, str, str]], deltas: dict) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(qmodel)
    inits = {i.name: i for i in m.graph.initializer}
    for y, codes_name, scale_name in targets:
        codes = numpy_helper.to_array(inits[codes_name]).astype(np.int64)
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float64)
        step = np.rint(deltas[y] / scale).astype(np.int64).reshape(codes.shape)
        new = np.clip(codes + step, INT32.min, INT32.max).astype(np.int32)
        inits[codes_name].CopyFrom(numpy_helper.from_array(new, codes_name))
    return m
