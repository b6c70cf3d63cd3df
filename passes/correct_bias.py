"""CorrectBias (``--bias-correction``): empirical bias correction on the QDQ graph (MindSpore
Lite's ``bias_correction``; Nagel et al. 2019, "Data-Free Quantization", §4.2, measured on the
calibration data instead of predicted).  Runs after InsertQDQ.

Quantization shifts the mean of a layer's output channels: clipping cuts one tail more than
the other, and rounding errors of skewed activations do not cancel.  Rounding noise averages
away in a global pool or an SE block; a shifted mean does not, and the next layers amplify it.
Layer by layer in topological order, every earlier layer already corrected, each Conv/Gemm's
per-channel output mean over the calibration data (``ctx.data``, the batches calibration held
out skipped) is compared with the float model's (``ctx.analyses["float_model"]``), and the
difference goes into its int32 bias (``round(delta / bias_scale)``, saturated): the graph keeps
its shape and every integer rule, and the simulator reads the corrected codes.

One onnxruntime session serves every layer: a copy of the graph gets ``Add(y, delta_y)`` after
each corrected output, ``delta_y`` a graph input fed the corrections found so far.  Only
per-channel sums are kept, so memory does not grow with the data.  With ``guard``, a
correction that would lower the mean output cosine on the held-out batches
(``["validation_feeds"]``; the calibration data when none is held out) is not applied (heavy
clipping, e.g. kl at 8 bits, distorts more than the mean: shifting it can push more values
into the clip).  The number of layers corrected lands in ``["bias_corrected"]``.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import onnx

from ptqc.errors import PtqcError, cannot_reread
from ptqc.ir import Graph
from ptqc.onnx_io import export_model, with_outputs
from ptqc.pass_manager import Pass, PassContext, PassResult, offset_inputs
from ptqc.passes.calibrate import feeds_drive, held_out
from ptqc.quant import cosine
from ptqc.runtime.ort import OrtRunner
from ptqc.vocab import Analysis, Meta

INT32 = np.iinfo(np.int32)
Target = tuple[str, str, str]  # (layer output, int32 bias codes constant, bias scale constant)


class CorrectBias(Pass):
    """Fold each Conv/Gemm's measured output-mean shift into its int32 bias."""

    preserves = (Analysis.SHAPES,)

    def __init__(self, holdout: int = 0, max_holdout: int = 8, guard: bool = True, what: str = "--bias-correction"):
        self.holdout, self.max_holdout, self.guard, self.what = holdout, max_holdout, guard, what

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        float_model = ctx.analyses.get(Analysis.FLOAT_MODEL)
        if float_model is None or ctx.data is None:
            raise PtqcError(f"{self.what}: needs the float model (analyses['float_model']) and data (ctx.data)")
        validation = ctx.analyses.get(Analysis.VALIDATION_FEEDS)
        codes = correct_bias(graph, float_model, ctx.data, ctx.analyses.get(Analysis.OUTPUT_PARAMS) or {},
                             self.holdout, self.max_holdout, self.what)
        if codes and self.guard:
            codes = self._guarded(graph, codes, float_model, ctx, feeds_drive(validation) if validation else ctx.data,
                                  "held-out" if validation else "calibration")
        for name, array in codes.items():
            graph.set_constant(name, array)
        ctx.analyses[Analysis.BIAS_CORRECTED] = len(codes)
        ctx.logger.info("%s: %d Conv/Gemm biases corrected on the calibration data", self.what, len(codes))
        return PassResult(graph, bool(codes))

    def _guarded(self, graph: Graph, codes: dict, float_model: onnx.ModelProto, ctx: PassContext,
                 score: Callable, data: str) -> dict:
        """``codes``, or {} when they lower the mean output cosine on ``score``'s batches."""
        fixed = copy.deepcopy(graph)
        for name, array in codes.items():
            fixed.set_constant(name, array)
        # the two models as written: extra outputs (the probe's) change which Q/DQ groups
        # onnxruntime fuses, and so its numbers
        f_run = OrtRunner(float_model.SerializeToString())
        runs = [OrtRunner(export_model(g, constants_as_initializers=True).SerializeToString()) for g in (graph, fixed)]
        io = _Io(graph, ctx.analyses.get(Analysis.OUTPUT_PARAMS) or {})
        scores: list[list[float]] = [[], []]  # output cosines without and with the correction

        def check(feeds: dict) -> list:
            want = f_run.run(feeds)
            for run, cos in zip(runs, scores):
                cos += [cosine(w, g) for w, g in zip(want.values(), io.outputs(run.run(io.feeds(feeds))))]
            return list(want.values())

        score(check)
        before, after = (float(np.mean(s)) if s else 1.0 for s in scores)
        if after < before:
            ctx.logger.warning("%s: correcting %d layers would lower the mean output cosine on the %s data "
                               "(%.6f -> %.6f); biases left as they were", self.what, len(codes), data, before, after)
            return {}
        return codes


class _Io:
    """Feeds quantized for integer graph inputs; integer graph outputs dequantized."""

    def __init__(self, graph: Graph, output_params: dict):
        self.ins = {n: graph.value(n).meta[Meta.QUANT] for n in graph.inputs if Meta.QUANT in graph.value(n).meta
                    and graph.value(n).dtype is not None and graph.value(n).dtype.kind in "iu"}
        self.outs, self.names = dict(output_params), list(graph.outputs)

    def feeds(self, feeds: dict) -> dict:
        return {k: (self.ins[k].quantize(x) if k in self.ins else x) for k, x in feeds.items()}

    def outputs(self, got: dict) -> list:
        return [self.outs[o].dequantize(got[o]) if o in self.outs else got[o] for o in self.names]


def correct_bias(graph: Graph, float_model: onnx.ModelProto, drive: Callable, output_params: dict | None = None,
                 holdout: int = 0, max_holdout: int = 8, what: str = "--bias-correction") -> dict[str, np.ndarray]:
    """The corrected int32 bias codes of ``graph`` (a QDQ graph), by constant name (the
    mechanism alone: no guard, the graph unchanged).  ``drive(run)`` feeds the calibration
    data through ``run`` (the infer-function protocol); the batches calibration held out
    (every ``holdout``-th) are skipped."""
    float_names = {o for n in float_model.graph.node for o in n.output}
    targets = _targets(graph, float_names)
    if not targets:
        return {}
    outputs = [y for y, _, _ in targets]
    model_outputs = [o.name for o in float_model.graph.output]
    f_run = OrtRunner(with_outputs(float_model, outputs), model_outputs + outputs)
    ref, fit = _ChannelMeans(), _fitting(holdout, max_holdout)

    def float_pass(feeds: dict) -> list:
        got = f_run.run(feeds)
        if fit():
            for y in outputs:
                ref.add(y, got[y])
        return [got[o] for o in model_outputs]

    drive(float_pass)
    if not ref.counts:
        raise cannot_reread(what)
    probe, delta_inputs = _with_deltas(graph, outputs)
    io = _Io(graph, output_params or {})
    q_run = OrtRunner(with_outputs(probe, outputs), io.names + outputs)
    deltas = {y: np.zeros_like(ref.mean(y)) for y in outputs}

    def q_feeds(feeds: dict) -> dict:
        fed = io.feeds(feeds)
        fed.update({delta_inputs[t]: deltas[t].astype(np.float32).reshape([-1] + [1] * (ref.ranks[t] - 2))
                    for t in outputs})
        return fed

    for y in outputs:  # topological: each layer sees every earlier one corrected
        got_means, fit = _ChannelMeans(), _fitting(holdout, max_holdout)

        def q_pass(feeds: dict, y=y, fit=fit, got_means=got_means) -> list:
            got = q_run.run(q_feeds(feeds))
            if fit():
                got_means.add(y, got[y])
            return io.outputs(got)

        drive(q_pass)
        deltas[y] = deltas[y] + (ref.mean(y) - got_means.mean(y))
    codes = {}
    for y, codes_name, scale_name in targets:
        old = graph.constant(codes_name).astype(np.int64)
        step = np.rint(deltas[y] / graph.constant(scale_name).astype(np.float64)).astype(np.int64).reshape(old.shape)
        codes[codes_name] = np.clip(old + step, INT32.min, INT32.max).astype(np.int32)
    return codes


def _targets(graph: Graph, float_names: set[str]) -> list[Target]:
    """Each Conv/Gemm whose bias arrives through a DequantizeLinear of int32 codes and whose
    output the float model has too, in topological order (codes two layers share cannot take
    two corrections)."""
    found = []
    for node in graph.topological_order():
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(node.inputs) < 3 or not node.inputs[2]:
            continue
        dq = graph.producer(node.inputs[2])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        codes, scale = graph.constant(dq.inputs[0]), graph.constant(dq.inputs[1])
        if codes is None or scale is None or codes.dtype != np.int32 or node.outputs[0] not in float_names:
            continue
        found.append((node.outputs[0], dq.inputs[0], dq.inputs[1]))
    shared = {c for c in (t[1] for t in found) if sum(t[1] == c for t in found) > 1}
    return [t for t in found if t[1] not in shared]


class _ChannelMeans:
    """Streaming per-channel (axis 1) means of named tensors."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.ranks: dict[str, int] = {}

    def add(self, name: str, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        axes = tuple(a for a in range(x.ndim) if a != 1)
        self.sums[name] = self.sums.get(name, 0.0) + x.sum(axis=axes)
        self.counts[name] = self.counts.get(name, 0) + x.size // x.shape[1]
        self.ranks[name] = x.ndim

    def mean(self, name: str) -> np.ndarray:
        return self.sums[name] / max(self.counts[name], 1)


def _with_deltas(graph: Graph, outputs: list[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of the graph with each output offset by a float graph input
    (``pass_manager.offset_inputs``); ``{y: delta input name}``."""
    probe = copy.deepcopy(graph)
    feeds = offset_inputs(probe, outputs, "bc")
    return export_model(probe, constants_as_initializers=True), feeds


def _fitting(holdout: int, max_holdout: int) -> Callable[[], bool]:
    """Called once per batch: False for the batches calibration held out for validation."""
    seen = [0]

    def fit() -> bool:
        seen[0] += 1
        return not held_out(seen[0] - 1, holdout, max_holdout)
    return fit
