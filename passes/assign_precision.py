"""AssignPrecision: which template nodes (``node.meta["mixable"]``) run at 16 bits; the graph
specced again under that assignment.  Runs after calibration (and ChooseRanges, whose choices
every strategy scores on the all-8-bit model), before AdaRound and Q/DQ.

* ``mix``: a given assignment (``-mc``, already checked against the rules by ``ptqc.driver.mix``).
* ``IOhigh``: the share ``amount`` of nodes nearest the inputs and outputs
  (:func:`~ptqc.passes.mixed_precision.io_high`).
* ``HAWQ``: the share ``amount`` with the largest Hessian-aware sensitivity
  (:mod:`ptqc.passes.hawq`: ``½ · tr(H) · σ²`` at each node's output, σ² the 8-bit noise the
  histogram predicts).
* ``target-cosine``: the fewest 16-bit nodes whose minimum output cosine on the scoring
  batches is at least ``amount``.  Sensitivity is measured, not predicted: with everything at
  16 bits, each unit (the nodes rules 5 and 7 tie together) is lowered to 8 bits alone and the
  drop of the output cosine is its damage.  Units are lowered cheapest first (damage per
  node); a bisection finds the longest prefix that still holds the target, each candidate
  made rule-compliant (:func:`~ptqc.passes.mixed_precision.comply`) and scored on the real QDQ
  model (its biases corrected first with ``bias_correction``, as it will be written).  The
  target is checked on the scoring batches and the calibration batches Calibrate kept
  (``["calibration_feeds"]``): the minimum over 5 held-out samples misses the rare hard ones
  (brainmaze's bi-LSTM met 0.999 on its 5 with every node at 8 bits and gave 0.996 on 10
  new ones); the ranking, many trials, stays on the scoring batches.

The scoring batches are ``ctx.analyses["validation_feeds"]`` (held out by calibration), else
``ctx.data``; biases are fitted on ``ctx.data``.  Every strategy works from one calibration
(the histograms serve 8 and 16 bits and every method) and leaves its assignment in
``["mix"]`` for ``-gt``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import numpy as np

from ptqc.errors import ConfigError, cannot_reread
from ptqc.ir import Graph
from ptqc.onnx_io import export_model
from ptqc.pass_manager import AnalysisStore, Pass, PassContext, PassManager, PassResult
from ptqc.passes import hawq as hq
from ptqc.passes.assign_quant_specs import AssignQuantSpecs, clear_specs, node_key
from ptqc.passes.calibrate import feeds_drive, first_batch
from ptqc.passes.correct_bias import CorrectBias
from ptqc.passes.insert_qdq import InsertQDQ
from ptqc.passes.mixed_precision import as_mix, comply, io_high, share_units
from ptqc.passes.propagate_ranges import PropagateRanges
from ptqc.quant import QuantScheme, cosine, qparam_from_range
from ptqc.runtime.ort import OrtRunner
from ptqc.vocab import AUTO, Analysis, Meta

CACHE_BYTES = 256 << 20  # float outputs kept for the trials
STRATEGIES = {"IOhigh": "-ams/--auto-mix-strategy IOhigh", "HAWQ": "-ams/--auto-mix-strategy HAWQ",
              "target-cosine": "--target-cosine"}


class AssignPrecision(Pass):
    """Choose the 16-bit nodes (a given ``mix`` or a ``strategy``) and spec the graph again."""

    requires = (Analysis.QUANT_SPECS,)
    produces = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, scheme: QuantScheme, *, mix: dict[str, tuple[int, str]] | None = None,
                 strategy: str | None = None, amount: float = 0.5, bits: int = 8, method: str = AUTO,
                 percent: float = 0.99999, bias_correction: bool = False, holdout: int = 0, max_holdout: int = 8):
        if (mix is None) == (strategy is None) or (strategy is not None and strategy not in STRATEGIES):
            raise ConfigError(f"AssignPrecision: give a mix or one strategy of {', '.join(STRATEGIES)}")
        self.scheme, self.mix, self.strategy, self.amount = scheme, mix, strategy, amount
        self.bits, self.method, self.percent = bits, method, percent
        self.bias_correction, self.holdout, self.max_holdout = bias_correction, holdout, max_holdout

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        keys = [node_key(n) for n in graph.topological_order() if n.meta.get(Meta.MIXABLE)]
        if self.mix is not None:
            mix = self.mix
        elif self.strategy == "IOhigh":
            mix = as_mix(keys, comply(graph, io_high(graph, keys, self.amount), keys), self.bits, self.method)
        else:
            if self.method != AUTO:  # AUTO: ChooseRanges already set each tensor's method
                ctx.analyses[Analysis.OBSERVERS] = {n: o.with_method(self.method, percent=self.percent)
                                             for n, o in ctx.analyses[Analysis.OBSERVERS].items()}
            trials = Trials(clear_specs(copy.deepcopy(graph)), ctx, self.scheme, STRATEGIES[self.strategy],
                            self.bias_correction, self.holdout, self.max_holdout)
            high = target_cosine(trials, self.amount, ctx) if self.strategy == "target-cosine" else \
                hawq(trials, self.amount, ctx)
            mix = as_mix(keys, high, self.bits, self.method)
        scheme = dataclasses.replace(self.scheme, node_bits=tuple(sorted((k, b) for k, (b, _) in mix.items())),
                                     node_modes=tuple(sorted((k, m) for k, (_, m) in mix.items() if m != AUTO)))
        AssignQuantSpecs(scheme).run(clear_specs(graph), ctx)
        ctx.analyses[Analysis.MIX] = mix
        return PassResult(graph, False)


class Trials:
    """Assignments built and scored on one calibration.  ``plain`` is the graph without specs;
    ``specced(high)`` gives it specs with ``high`` at 16 bits; ``cosine(high)`` the minimum
    output cosine over the scoring batches, or with ``check`` over those and the calibration
    batches Calibrate kept (the float outputs are computed once per batch, by its digest, up
    to ``CACHE_BYTES``; batches beyond it run the float model again, so memory stays bounded)."""

    def __init__(self, plain: Graph, ctx: PassContext, scheme: QuantScheme, what: str, bias_correction: bool = False,
                 holdout: int = 0, max_holdout: int = 8):
        self.plain, self.ctx, self.scheme, self.what = plain, ctx, scheme, what
        self.bias_correction, self.holdout, self.max_holdout = bias_correction, holdout, max_holdout
        validation = ctx.analyses.get(Analysis.VALIDATION_FEEDS)
        self.drive = feeds_drive(validation) if validation else ctx.data  # scoring; biases fit on ctx.data
        self.scored_on = "held-out" if validation else "calibration"
        # the target checked on the held-out and the kept calibration batches: 5 samples miss the rare hard ones
        kept = list(ctx.analyses.get(Analysis.CALIBRATION_FEEDS) or [])
        self.check_drive = feeds_drive(list(validation) + kept) if validation and kept else self.drive
        self.checked_on = "held-out and calibration" if validation and kept else self.scored_on
        self.float_model = ctx.analyses[Analysis.FLOAT_MODEL]
        self.observers = ctx.analyses[Analysis.OBSERVERS]
        self.base = self.specced(set())
        self.keys = [node_key(n) for n in self.base.topological_order() if n.meta.get(Meta.MIXABLE)]
        self._float: dict[bytes, dict] = {}  # feeds' digest -> float outputs
        self._cached = 0
        self._float_run = None
        self.count = 0

    def specced(self, high: set[str]) -> Graph:
        bits = tuple(sorted((k, 16) for k in high))
        g = copy.deepcopy(self.plain)
        AssignQuantSpecs(dataclasses.replace(self.scheme, node_bits=bits)).run(
            g, dataclasses.replace(self.ctx, analyses=AnalysisStore()))
        return g

    def cosine(self, high: set[str], corrected: bool = False, check: bool = False) -> float:
        """``corrected``: score the model with its biases corrected (--bias-correction)."""
        analyses = AnalysisStore({k: self.ctx.analyses.get(k) for k in (Analysis.OBSERVERS, Analysis.FLOAT_MODEL,
                                                                         Analysis.VALIDATION_FEEDS)},
                                 (Analysis.QUANT_SPECS, Analysis.OBSERVERS))
        passes = [PropagateRanges(unify=self.scheme.unify_concat, wide_headroom=self.scheme.wide_headroom),
                  InsertQDQ(output_dequant=True),
                  *([CorrectBias(self.holdout, self.max_holdout, what=f"{self.what} --bias-correction")]
                    if corrected else [])]
        g = PassManager(passes).run(self.specced(high), dataclasses.replace(self.ctx, analyses=analyses)).graph
        q_run = OrtRunner(export_model(g, constants_as_initializers=True).SerializeToString())
        worst, seen = [1.0], [0]

        def run(feeds: dict) -> list:
            ref = self._reference(feeds)
            seen[0] += 1
            got = q_run.run(feeds)
            worst[0] = min([worst[0]] + [cosine(ref[n], got[n]) for n in ref])
            return [got[n] for n in ref]

        (self.check_drive if check else self.drive)(run)
        if not seen[0]:
            raise cannot_reread(self.what)
        self.count += 1
        return worst[0]

    def _reference(self, feeds: dict) -> dict:
        key = hashlib.sha1(b"".join(np.ascontiguousarray(feeds[k]).tobytes() for k in sorted(feeds))).digest()
        if key in self._float:
            return self._float[key]
        if self._float_run is None:
            self._float_run = OrtRunner(self.float_model.SerializeToString())
        out = self._float_run.run(feeds)
        size = sum(a.nbytes for a in out.values())
        if self._cached + size <= CACHE_BYTES:
            self._float[key] = out
            self._cached += size
        return out


def target_cosine(trials: Trials, target: float, ctx: PassContext) -> set[str]:
    """The 16-bit template nodes for ``--target-cosine``: see the module docstring."""
    keys, base = trials.keys, trials.base
    everything = set(keys)
    corrected = trials.bias_correction  # candidates are scored as they will be written
    if trials.cosine(set(), corrected, check=True) >= target:
        return set()
    reach = trials.cosine(everything, check=True)
    if reach < target:
        ctx.logger.warning("--target-cosine %g: even every node at 16 bits reaches only %.6f on the %s data; "
                           "all stay at 16 bits", target, reach, trials.checked_on)
        return everything
    top = trials.cosine(everything)
    units = share_units(base, keys)
    damage = [top - trials.cosine(comply(base, everything - set(u), keys)) for u in units]
    order = sorted(range(len(units)), key=lambda i: (max(damage[i], 0.0) / len(units[i]), i))
    for i in order:
        ctx.logger.debug("--target-cosine: damage %.3g lowering %s", damage[i], ", ".join(units[i]))
    best, lo, hi = everything, 0, len(order)  # lo units lowered are known to hold the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        high = comply(base, everything - {k for i in order[:mid] for k in units[i]}, keys)
        if trials.cosine(high, corrected, check=True) >= target:
            best, lo = high, mid
        else:
            hi = mid - 1
    ctx.logger.info("--target-cosine %g: %d of %d template nodes at 16 bits (%d trials; sensitivity on the %s "
                    "data, the target checked on the %s data)", target, len(best), len(keys), trials.count,
                    trials.scored_on, trials.checked_on)
    return best


def hawq(trials: Trials, share_high: float, ctx: PassContext) -> set[str]:
    """``-ams HAWQ``: the ``share_high`` of template nodes with the largest sensitivity at 16
    bits, made rule-compliant by raising only."""
    ranked = sensitivity_ranking(trials)
    count = int(round(share_high * len(trials.keys)))
    high = comply(trials.base, {k for k, _ in ranked[:count]}, trials.keys)
    ctx.logger.info("-ams HAWQ: %d of %d template nodes at 16 bits (%d chosen by sensitivity, the rest by the "
                    "rules)", len(high), len(trials.keys), count)
    return high


def sensitivity_ranking(trials: Trials) -> list[tuple[str, float]]:
    """Template nodes, most sensitive first, by HAWQ's Ω = ½ · tr(H) · σ² of the tensors they
    output (a fused activation's output for its producer)."""
    base, observers, float_model = trials.base, trials.observers, trials.float_model
    float_names = {o for n in float_model.graph.node for o in n.output}
    outputs = {}
    for n in base.topological_order():
        if not n.meta.get(Meta.MIXABLE):
            continue
        owned = [n] + ([base.node(n.meta[Meta.FUSED_ACTIVATION])] if Meta.FUSED_ACTIVATION in n.meta else [])
        outputs[node_key(n)] = [o for m in owned for o in m.outputs if o in observers
                                and Meta.QSPEC in base.value(o).meta and o in float_names]
    tensors = sorted({t for ts in outputs.values() for t in ts})
    runner = OrtRunner(float_model.SerializeToString())
    feeds = first_batch(trials.drive, lambda f: list(runner.run(f).values()))
    if not feeds:
        raise cannot_reread(trials.what)
    trace, power = hq.traces(float_model, tensors, feeds)
    rel = {t: relative_error(observers[t], base.value(t).meta[Meta.QSPEC]) for t in tensors}
    return hq.rank(outputs, trace, power, rel)


def relative_error(obs, spec) -> float:
    """E[(x - fq(x))^2] / E[x^2] the histogram predicts at the spec's type."""
    if not hasattr(obs, "counts") or obs.min is None:
        return 0.0
    lo, hi = obs.range(spec.dtype, spec.symmetric)
    p = qparam_from_range(lo, hi, spec.dtype, symmetric=spec.symmetric, warn=False)
    centers = (np.arange(obs.bins) - obs.bins // 2 + 0.5) * obs.width
    n = obs.counts.astype(np.float64)
    err = np.sum(n * (centers - p.fake_quantize(centers.astype(np.float32))) ** 2)
    return float(err / max(np.sum(n * centers ** 2), 1e-30))

