"""ChooseRanges (``-qm auto``): each activation group's range read from its histogram by the
method whose error is smallest where it matters, at the model's outputs against float.

Every tensor keeps one histogram (calibration), so every method's range is at hand without
another pass over the data: ``min_max``, ``percentile`` at two levels, ``mse``, ``kl_v2`` and
``kl``.  Which one a tensor wants depends on what reads it (an SE gate, a residual sum, a
softmax input are hurt by clipping; a wide post-ReLU tensor by rounding), which no per-tensor
statistic sees.  So the choice is measured, on one QDQ model whose activation scales and
zero points are graph inputs (one onnxruntime session serves every trial; the float outputs
are computed once):

1. every method applied to every group; the one with the least output error is the start;
2. the groups visited in topological order (the sequential layer-wise search of
   AdaQuant/BRECQ and PPQ, without training): each distinct candidate range is scored where
   the group is read (its readers' outputs, by a small model of just those nodes, against
   float), and the local favourite replaces the current choice only where the whole
   model's error drops;
3. the result is kept only where it beats ``min_max`` everywhere (onnxruntime's default) by
   more than noise; else every group reads min_max.

The error is, per sample, the mean over outputs of ||y - y_float||² / ||y_float||²; "more
than noise" is a mean paired improvement over the samples of more than ``z`` (2) standard
errors.  Scoring batches are few (a quarter of 20 samples is 5) and per-sample errors are
heavy-tailed (on brainmaze's bi-LSTM 4 samples of 20 carry most of it), so a plain "lower
mean" follows whichever samples landed in the scoring share: there the search settled on a
99.99th-percentile clip that halved the error of the 5 scoring samples and doubled that of 10
held-out ones (probability cosine 0.9975 against min_max's 0.9994).  One test on the final
result, not one per step: each step of the refinement gains little against that noise, their
sum a lot (PP-OCR rec: 0.23 -> 0.03, every scoring sample better).

The scoring batches are ``ctx.analyses["validation_feeds"]`` (batches the calibration held
out; see :class:`~ptqc.passes.calibrate.Calibrate`), else the calibration batches it kept
(``["calibration_feeds"]``) or up to ``max_batches`` batches of ``ctx.data`` (then the choice
is scored on calibration data, and the log says so).  The
result is the observers, each member reading its group's chosen method
(``ctx.analyses["observers"]``), and the choices in ``ctx.analyses["range_choices"]``.
Ties keep the earlier candidate; the same inputs give the same choices.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import onnx

from ptqc.errors import PtqcError
from ptqc.ir import Graph
from ptqc.onnx_io import export_model
from ptqc.pass_manager import AnalysisStore, Pass, PassContext, PassResult
from ptqc.passes.calibrate import random_data
from ptqc.passes.insert_qdq import InsertQDQ
from ptqc.passes.propagate_ranges import PropagateRanges, group_param, share_groups
from ptqc.quant import QRANGE, DerivedSpec
from ptqc.runtime.ort import OrtRunner
from ptqc.vocab import Analysis, Meta, Method

# (label, method, options); the first is every group's start
CANDIDATES = ((Method.MSE, Method.MSE, {}), (Method.MIN_MAX, Method.MIN_MAX, {}),
              (Method.PERCENTILE, Method.PERCENTILE, {"percent": 0.99999}),
              ("percentile_0.9999", Method.PERCENTILE, {"percent": 0.9999}), (Method.KL_V2, Method.KL_V2, {}),
              (Method.KL, Method.KL, {}))
QRANGE_32 = QRANGE[np.dtype(np.int32)]
SAME_SCALE = 1e-3  # candidates whose scales differ by less than this share one trial
PRIOR = Method.MIN_MAX  # kept unless another method is better by more than noise (onnxruntime's default)


class ChooseRanges(Pass):
    """Pick each activation group's range method by the output error it causes."""

    requires = (Analysis.QUANT_SPECS, Analysis.OBSERVERS)
    produces = (Analysis.OBSERVERS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, unify: bool = False, wide_headroom: float = 1.0, max_batches: int = 8, refine: bool = True,
                 z: float = 2.0):
        self.unify, self.wide_headroom, self.max_batches, self.refine = unify, wide_headroom, max_batches, refine
        self.z = z  # the result must beat PRIOR's mean per-sample error by z standard errors

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        observers = dict(ctx.analyses[Analysis.OBSERVERS])
        groups = [(root, members) for root, members in share_groups(graph, self.unify).items()
                  if graph.value(root).const is None
                  and all(hasattr(observers.get(m), "with_method") for m in members if m in observers)
                  and any(m in observers for m in members) and not _empty(observers, members)]
        options = {lab: [self._variant(observers, members, method, opts) for _, members in groups]
                   for lab, method, opts in CANDIDATES}
        feeds = self._feeds(graph, ctx)
        trial_graph, trial, names = _trial_model(graph, ctx, observers, self.unify, self.wide_headroom)
        params = [{lab: _param(group_param(graph, members, graph.value(root).meta[Meta.QSPEC],
                                           {**observers, **options[lab][gi]}, self.wide_headroom))
                   for lab, _, _ in CANDIDATES} for gi, (root, members) in enumerate(groups)]
        search = _Search(params, [names.get(next((m for m in members if m in names), None)) for _, members in groups],
                         *_runners(graph, trial, feeds))
        start = search.start()
        if self.refine:
            search.refine(_Local(trial_graph, trial, graph, names, groups, search.feeds, search.values))
        if any(c != PRIOR for c in search.choices) and not _better(search.errors, search.uniform[PRIOR], self.z):
            ctx.logger.info("choose ranges: the search's error %.3g does not beat %s's %.3g by more than noise "
                            "(%g standard errors over %d samples); %s kept", search.best, PRIOR,
                            search.uniform[PRIOR].mean(), self.z, len(search.errors), PRIOR)
            search.choices = [PRIOR] * len(groups)
            search.best = float(search.uniform[PRIOR].mean())
        choices = {root: search.choices[gi] for gi, (root, _) in enumerate(groups)}
        for gi, (root, _) in enumerate(groups):
            observers.update(options[choices[root]][gi])
        ctx.analyses[Analysis.OBSERVERS] = observers
        ctx.analyses[Analysis.RANGE_CHOICES] = choices
        counts = {lab: sum(c == lab for c in choices.values()) for lab, _, _ in CANDIDATES}
        ctx.logger.info("choose ranges: %d groups, start %s (relative output error %.3g), %d whole-model trials "
                        "on %d batches, error %.3g; %s", len(groups), start, search.uniform[start].mean(), search.trials,
                        len(search.feeds), search.best, ", ".join(f"{k} {v}" for k, v in counts.items() if v))
        return PassResult(graph, False)

    @staticmethod
    def _variant(observers: dict, members: list[str], method: str, opts: dict) -> dict:
        return {m: observers[m].with_method(method, **opts) for m in members if m in observers}

    def _feeds(self, graph: Graph, ctx: PassContext) -> list[dict]:
        feeds = ctx.analyses.get(Analysis.VALIDATION_FEEDS)
        if feeds:
            return list(feeds)[: self.max_batches]
        collected = list(ctx.analyses.get(Analysis.CALIBRATION_FEEDS) or [])[: self.max_batches]
        if not collected:
            drive, float_run = ctx.data or random_data(graph), _float_runner(graph)

            def run(f: dict) -> list:
                if len(collected) < self.max_batches:
                    collected.append(dict(f))
                return float_run(f)
            drive(run)
        if not collected:
            raise PtqcError("choose ranges: the data source gave no batch to score the ranges on")
        ctx.logger.info("choose ranges: no held-out batches; scored on %d calibration batches", len(collected))
        return collected


class _Search:
    """The choice state: per group its candidates' (scale, zero point), the trial model's
    scale/zero-point inputs (``values``), the whole model's per-sample errors with them
    (``errors``) and their mean (``best``)."""

    def __init__(self, params: list[dict], slot: list, runner, feeds: list[dict], reference):
        self.params, self.slot, self.runner, self.feeds, self.reference = params, slot, runner, feeds, reference
        self.values: dict = {}
        self.choices: list[str] = []
        self.uniform: dict[str, np.ndarray] = {}  # per-sample errors with every group on one method
        self.errors = np.zeros(0)
        self.best, self.trials = float("inf"), 0

    def assign(self, gi: int, lab: str) -> None:
        if self.slot[gi] is not None:
            self.values[self.slot[gi][0]], self.values[self.slot[gi][1]] = self.params[gi][lab]

    def loss(self) -> np.ndarray:
        self.trials += 1
        return _loss(self.runner, self.reference, self.feeds, self.values)

    def start(self) -> str:
        """Every group on the best single method (ties: the earlier candidate)."""
        labels = [lab for lab, _, _ in CANDIDATES]
        for lab in labels:
            self.uniform_on(lab)
            self.uniform[lab] = self.loss()
        start = min(labels, key=lambda lab: (self.uniform[lab].mean(), labels.index(lab)))
        self.uniform_on(start)
        self.errors, self.best, self.choices = self.uniform[start], float(self.uniform[start].mean()), \
            [start] * len(self.params)
        return start

    def uniform_on(self, lab: str) -> None:
        for gi in range(len(self.params)):
            self.assign(gi, lab)

    def refine(self, local: "_Local") -> None:
        """Group by group in topological order: the candidate the group's readers like best
        (local error) replaces the current one where the whole model's error drops."""
        for gi, cands in enumerate(self.params):
            if self.slot[gi] is None:
                continue
            distinct: dict[str, tuple] = {}
            for lab, (s, z) in cands.items():
                if not any(_same(s, z, *q) for q in distinct.values()):
                    distinct[lab] = (s, z)
            if len(distinct) < 2:
                continue
            scored = {}
            for lab in distinct:
                self.assign(gi, lab)
                scored[lab] = local.score(gi, self.values)
            self.assign(gi, self.choices[gi])
            if any(v is None for v in scored.values()):
                continue
            pick = min(scored, key=lambda lab: scored[lab])
            if _same(*cands[pick], *cands[self.choices[gi]]):
                continue
            self.assign(gi, pick)
            errors = self.loss()
            if errors.mean() < self.best:
                self.errors, self.best, self.choices[gi] = errors, float(errors.mean()), pick
            else:
                self.assign(gi, self.choices[gi])


def _param(p) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(p.scale, np.float32), np.asarray(p.zero_point).astype(p.dtype)


def _same(s1, z1, s2, z2) -> bool:
    return _close(s1, s2) and np.array_equal(z1, z2)


def _close(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= SAME_SCALE * np.maximum(np.abs(a), np.abs(b))))


def _trial_model(graph: Graph, ctx: PassContext, observers: dict, unify: bool, wide_headroom: float):
    """The QDQ model with every activation group's scale and zero point as graph inputs, and
    the map activation -> (scale input, zero-point input)."""
    g = copy.deepcopy(graph)
    analyses = AnalysisStore({Analysis.OBSERVERS: observers}, (Analysis.QUANT_SPECS, Analysis.OBSERVERS))
    tctx = dataclasses.replace(ctx, analyses=analyses)
    g = PropagateRanges(unify=unify, wide_headroom=wide_headroom).run(g, tctx).graph
    biases = [(v.const, readers, readers[0][0].inputs.index(v.meta[Meta.QSPEC].sources[1]),
               v.meta[Meta.QSPEC].sources[0])
              for v in g.values() if v.const is not None and isinstance(v.meta.get(Meta.QSPEC), DerivedSpec)
              and Meta.QUANT in v.meta and (readers := g.consumers(v))
              and v.meta[Meta.QSPEC].sources[1] in readers[0][0].inputs]
    g = InsertQDQ(output_dequant=True).run(g, tctx).graph
    names = {a: sz for a, sz in analyses[Analysis.QDQ_PARAM_NAMES].items()
             if not _empty(observers, [a])}
    for s, z in set(names.values()):
        for n in (s, z):
            v = g.value(n)
            v.const = None
            g.add_input(n, v.elem_type, v.shape)
    for bias, readers, w_slot, x in biases:
        if x in names:
            _live_bias(g, bias, readers, names[x][0], w_slot)
    return g, export_model(g, constants_as_initializers=True).SerializeToString(), names


def _live_bias(g: Graph, bias: np.ndarray, readers: list, x_scale: str, w_slot: int) -> None:
    """The int32 bias re-quantized in the graph at the trial's input scale, as InsertQDQ
    stores it: round(b / (s_x * s_w)) * (s_x * s_w).  A bias quantized once, at the scale the
    trial model was built with, differs from the written model's by its rounding, and a
    quantized network can amplify that: on PP-OCR cls one sample read 0.54 instead of 0.43."""
    node = readers[0][0]
    w_dq = g.producer(node.inputs[w_slot])
    if w_dq is None or w_dq.op_type != "DequantizeLinear":
        return
    old = node.inputs[readers[0][1]]
    name = g.unique_name(f"{old}_live")
    s, s64, q = (g.unique_name(f"{name}_{k}") for k in ("scale", "scale64", "codes"))
    b64 = g.add_constant(g.unique_name(f"{name}_float"), np.asarray(bias, np.float64)).name
    lo, hi = (g.add_constant(g.unique_name(f"{name}_{k}"), np.float64(v)).name for k, v in zip("lh", QRANGE_32))
    g.add_node("Mul", [x_scale, w_dq.inputs[1]], [s], name=s)
    g.add_node("Cast", [s], [s64], {"to": onnx.TensorProto.DOUBLE}, name=s64)
    g.add_node("Div", [b64, s64], [q + "_div"], name=q + "_div")
    g.add_node("Round", [q + "_div"], [q + "_round"], name=q + "_round")
    g.add_node("Clip", [q + "_round", lo, hi], [q + "_clip"], name=q + "_clip")
    g.add_node("Cast", [q + "_clip"], [q], {"to": onnx.TensorProto.FLOAT}, name=q)
    g.add_node("Mul", [q, s], [name], name=name)
    for reader, idx in readers:
        g.set_input(reader, idx, name)
    dq = g.producer(old)
    if dq is not None and not g.consumers(old):
        g.remove_node(dq)


def _empty(observers: dict, members: list[str]) -> bool:
    """Observed, but empty on every batch: nothing to choose, and its scale stays a constant
    (onnxruntime 1.2x crashes on Q/DQ of an empty tensor whose scale is a graph input)."""
    return all(getattr(observers.get(m), "min", 0) is None for m in members)


def _float_runner(graph: Graph):
    runner = OrtRunner(export_model(graph, constants_as_initializers=True).SerializeToString())
    return lambda feeds: list(runner.run(feeds).values())


def _runners(graph: Graph, trial: bytes, feeds: list[dict]):
    """The trial session, the scoring feeds (stacked into one batch where the model gives the
    same outputs that way: one run per trial instead of one per batch) and their float outputs."""
    float_run = _float_runner(graph)
    reference = [[np.asarray(y, np.float64) for y in float_run(f)] for f in feeds]
    stacked = _stacked(feeds)
    if stacked is not None:
        try:
            together = [np.asarray(y, np.float64) for y in float_run(stacked)]
        except Exception:  # noqa: BLE001 - a model that refuses a larger batch is scored batch by batch
            together = None
        parts = [np.concatenate(ys) if all(y.ndim for y in ys) else None for ys in zip(*reference)]
        if together is not None and all(p is not None and p.shape == t.shape and np.allclose(p, t, rtol=1e-3, atol=1e-5)
                                        for p, t in zip(parts, together)):
            feeds, reference = [stacked], [together]
    return OrtRunner(trial, list(graph.outputs)), feeds, reference


def _stacked(feeds: list[dict]) -> dict | None:
    """The batches concatenated along axis 0, or None where their shapes differ elsewhere."""
    if len(feeds) < 2 or any(f.keys() != feeds[0].keys() for f in feeds):
        return None
    out = {}
    for k in feeds[0]:
        arrays = [np.asarray(f[k]) for f in feeds]
        if any(a.ndim == 0 or a.shape[1:] != arrays[0].shape[1:] or a.dtype != arrays[0].dtype for a in arrays):
            return None
        out[k] = np.concatenate(arrays)
    return out


def _loss(runner, reference: list[list[np.ndarray]], feeds: list[dict], values: dict) -> np.ndarray:
    """Per sample, the mean over outputs of ||y - y_float||² / ||y_float||²: each sample weighs
    the same, whatever its outputs' magnitude.  A batch's samples are the rows of axis 0 where
    every output has as many as the batch has samples; else (an output batched along another
    axis: an LSTM's ``[time, N, 4]``) the batch counts as one sample."""
    per_sample = []
    for f, ref in zip(feeds, reference):
        got = runner.run({**f, **values})
        n = _batch_rows(f)
        rows = all(r.ndim and len(r) == n for r in ref)
        total = 0.0
        for r, y in zip(ref, got.values()):
            r2 = r.reshape(len(r), -1) if rows else r.reshape(1, -1)
            d = np.asarray(y, np.float64).reshape(r2.shape) - r2
            total = total + np.einsum("ij,ij->i", d, d) / np.maximum(np.einsum("ij,ij->i", r2, r2), 1e-30)
        per_sample.append(np.atleast_1d(total) / max(len(ref), 1))
    return np.concatenate(per_sample) if per_sample else np.zeros(0)


def _batch_rows(feeds: dict) -> int:
    """Dim 0 of the first batched feed (1 for scalars)."""
    x = next(iter(feeds.values()), None)
    return int(x.shape[0]) if getattr(x, "ndim", 0) else 1


def _better(new: np.ndarray, old: np.ndarray, z: float) -> bool:
    """Whether per-sample errors ``new`` beat ``old`` by more than noise: the mean paired
    improvement exceeds ``z`` standard errors (with one sample, any improvement)."""
    d = old - new
    gain = float(d.mean())
    if gain <= 0:
        return False
    return len(d) < 2 or gain > z * float(d.std(ddof=1)) / np.sqrt(len(d))


class _Local:
    """Each group scored where it is read: at its readers' outputs, computed by a model of just
    those nodes (the group's Q/DQ and pass-through ops, its readers, their weight DQs) from
    the values one run of the whole trial model gave, against the float model's values."""

    def __init__(self, trial_graph: Graph, trial: bytes, float_graph: Graph, names: dict, groups: list,
                 feeds: list[dict], values: dict):
        self.g, self.names = trial_graph, names
        plans = [self._plan(members) for _, members in groups]
        params = {x for pair in names.values() for x in pair}
        wanted = sorted({x for p in plans if p for x in p[0]} - params - set(feeds[0]))
        renamed = {self.g.producer(self.g.producer(o).inputs[0]).inputs[0]: o for o in self.g.outputs
                   if self.g.producer(o) is not None and self.g.producer(o).op_type == "DequantizeLinear"}
        targets = sorted({renamed.get(y, y) for p in plans if p for y in p[2]})
        model = onnx.load_from_string(trial)
        run = OrtRunner(_typed_outputs(model, wanted, trial_graph), wanted) if wanted else None
        self.stored = [{**f, **values, **(run.run({**f, **values}) if run else {})} for f in feeds]
        fmodel = export_model(float_graph, constants_as_initializers=True)
        fr = OrtRunner(_typed_outputs(fmodel, targets, float_graph), targets)
        self.reference = [{k: (np.ascontiguousarray(v, np.float32).ravel(), max(_sq(v), 1e-30))
                           for k, v in fr.run(f).items()} for f in feeds]
        self.models = [None if p is None else
                       (OrtRunner(_submodel(model, p[0], p[1], self.stored[0], trial_graph), list(p[1])), p[0],
                        [renamed.get(y, y) for y in p[2]]) for p in plans]

    def _plan(self, members: list[str]):
        """(boundary inputs, outputs, the float model's names for them) of one group's local
        model, or None."""
        g = self.g
        own = [m for m in members if m in self.names]
        dqs = {}
        for m in own:
            q = next((n for n in g.consumer_nodes(m) if n.op_type == "QuantizeLinear"), None)
            dq = q and next((n for n in g.consumer_nodes(q.outputs[0]) if n.op_type == "DequantizeLinear"), None)
            if dq is None:
                return None
            dqs[m] = dq.outputs[0]
        inner = set(dqs.values())  # values the local model computes from the group itself
        boundary, outputs = set(), []
        for m in own:
            prod = g.producer(m)
            if prod is None or not all(g.value(x).const is not None or x in inner for x in prod.inputs if x):
                boundary.add(m)
            readers = [n for n in g.consumer_nodes(dqs[m]) if not (set(n.outputs) & set(own))]
            if not readers or dqs[m] in g.outputs:
                outputs.append((dqs[m], m))
            for n in readers:
                outputs += [(o, o) for o in n.outputs if o]
                for x in n.inputs:
                    p = x and g.producer(x)
                    weight = p and p.op_type == "DequantizeLinear" and g.value(p.inputs[0]).const is not None
                    if x and x not in inner and not weight and g.value(x).const is None:
                        boundary.add(x)
        for s, z in {self.names[m] for m in own}:
            boundary |= {s, z}
        outputs = list(dict.fromkeys(outputs))
        return tuple(sorted(boundary)), tuple(o for o, _ in outputs), tuple(f for _, f in outputs)

    def score(self, gi: int, values: dict) -> float | None:
        """Relative squared error at the group's readers with ``values`` for the scales."""
        entry = self.models[gi]
        if entry is None:
            return None
        runner, inputs, refs = entry
        total, count = 0.0, 0
        for stored, ref in zip(self.stored, self.reference):
            got = runner.run({x: values[x] if x in values else stored[x] for x in inputs})
            for y, r in zip(got.values(), refs):
                r, norm = ref[r]
                total += _sq(np.asarray(y, np.float32).ravel() - r) / norm
                count += 1
        return total / max(count, 1)


def _sq(x) -> float:
    x = np.asarray(x, np.float32).ravel()
    with np.errstate(over="ignore"):
        sq = float(np.dot(x, x))
    if not np.isfinite(sq):  # float32 overflows on a mask's fill (-3.4e38): again in float64
        x = x.astype(np.float64)
        sq = float(np.dot(x, x))
    return sq


def _submodel(model, inputs: tuple[str, ...], outputs: tuple[str, ...], example: dict, graph: Graph) -> bytes:
    """The nodes of ``model`` that compute ``outputs`` from ``inputs`` (typed like ``example``'s
    arrays) and its initializers, as a model of its own."""
    producer = {o: n for n in model.graph.node for o in n.output}
    stop, seen, stack = set(inputs), set(), list(outputs)
    while stack:
        x = stack.pop()
        n = producer.get(x)
        if x in stop or n is None or id(n) in seen:
            continue
        seen.add(id(n))
        stack += [i for i in n.input if i]
    nodes = [n for n in model.graph.node if id(n) in seen]  # the model's order is topological
    used = {i for n in nodes for i in n.input}
    graph = onnx.helper.make_graph(
        nodes, "local", [onnx.helper.make_tensor_value_info(
            x, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(example[x]).dtype), None) for x in inputs],
        [onnx.helper.make_tensor_value_info(y, graph.value(y).elem_type or onnx.TensorProto.FLOAT, None)
         for y in outputs],
        [t for t in model.graph.initializer if t.name in used])
    return onnx.helper.make_model(graph, opset_imports=model.opset_import,
                                  ir_version=model.ir_version).SerializeToString()


def _typed_outputs(model, names: list[str], graph: Graph) -> bytes:
    """``model`` with ``names`` added to its outputs, each typed as ``graph`` has it."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, graph.value(n).elem_type or onnx.TensorProto.FLOAT,
                                                             None) for n in names if n not in have)
    return m.SerializeToString()
