"""Automatic mixed precision: which template nodes (ptqc.driver.mix) run at 16 bits.

* ``-ams IOhigh``: the nodes nearest the inputs and outputs (``mix.io_high``).
* ``-ams HAWQ``: the share 1 - ``-amr`` with the largest Hessian-aware sensitivity
  (ptqc.driver.hawq: ``½ · tr(H) · σ²`` at each node's output, σ² the 8-bit noise the
  histogram predicts).
* ``--target-cosine C``: the fewest 16-bit nodes whose output cosine on the calibration data
  is at least ``C``.  Sensitivity is measured, not predicted: with everything at 16 bits,
  each unit (the nodes rules 5 and 7 tie together) is lowered to 8 bits alone and the drop
  of the output cosine is its damage.  Units are lowered cheapest first (damage per node);
  a bisection finds the longest prefix that still holds ``C``, each candidate made
  rule-compliant (``mix.comply``) and scored on the real QDQ model (with its biases
  corrected first under ``--bias-correction``, as it will be written).

Every strategy works from one calibration (the histograms serve 8 and 16 bits and every
method) and leaves its assignment in ``ctx.analyses["mix"]`` for ``-gt``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from typing import Callable

import numpy as np
import onnx

from ptqc.driver.bias_correction import correct_bias
from ptqc.driver.data import cannot_reread, first_batch
from ptqc.driver.mix import as_mix, comply, share_units
from ptqc.driver.pipeline import materialize_pipeline
from ptqc.errors import ConfigError
from ptqc.ir import Graph
from ptqc.onnx_io import export_model
from ptqc.pass_manager import AnalysisStore, PassContext, PassManager
from ptqc.passes import AssignQuantSpecs
from ptqc.passes.assign_quant_specs import node_key
from ptqc.quant import QuantScheme, cosine, qparam_from_range
from ptqc.runtime.ort import OrtRunner

log = logging.getLogger("ptqc")
CACHE_BYTES = 256 << 20  # float outputs kept for the trials


def check_mixed(family, what: str) -> None:
    family.check_bit_width(16, what)
    if not family.mixed_precision:
        raise ConfigError(f"{what}: rule mixed-precision: {family.name} does not support mixed precision")


class Trials:
    """Assignments built and scored on one calibration.  ``prepared`` is the float graph
    before specs; ``specced(high)`` gives it specs with ``high`` at 16 bits; ``cosine(high)``
    the minimum output cosine over the scoring batches ``drive`` gives (the held-out
    validation batches where there are some) (the float outputs are computed
    once and reused while the infer function feeds the same batches, up to ``CACHE_BYTES``;
    batches beyond it run the float model again, so memory stays bounded)."""

    def __init__(self, prepared: Graph, ctx: PassContext, scheme: QuantScheme, config, drive: Callable,
                 float_model: onnx.ModelProto, method: str, fit_drive: Callable | None = None):
        self.prepared, self.ctx, self.scheme, self.config = prepared, ctx, scheme, config
        self.what = "--target-cosine" if config.target_cosine is not None else "-ams/--auto-mix-strategy HAWQ"
        self.drive, self.float_model, self.method = drive, float_model, method
        self.fit_drive = fit_drive or drive  # bias means are fitted on it; trials are scored on drive
        self.observers = ctx.analyses["observers"]
        self.base = self.specced(set())[0]
        self.keys = [node_key(n) for n in self.base.topological_order() if n.meta.get("mixable")]
        self._float: list[tuple[bytes, dict]] = []
        self._cached = 0
        self._float_run = None
        self.count = 0

    def mix(self, high: set[str]) -> dict[str, tuple[int, str]]:
        return as_mix(self.keys, high, self.config.bit_width, self.method) if high else {}

    def specced(self, high: set[str]) -> tuple[Graph, QuantScheme]:
        mix = self.mix(high)
        sch = dataclasses.replace(self.scheme, node_bits=tuple(sorted((k, b) for k, (b, _) in mix.items())))
        g = copy.deepcopy(self.prepared)
        AssignQuantSpecs(sch).run(g, dataclasses.replace(self.ctx, analyses=AnalysisStore()))
        return g, sch

    def cosine(self, high: set[str], corrected: bool = False) -> float:
        """``corrected``: score the model with its biases corrected (--bias-correction)."""
        g, sch = self.specced(high)
        analyses = AnalysisStore()
        analyses.results, analyses.established = {"observers": self.observers}, {"quant_specs", "observers"}
        g = PassManager(materialize_pipeline(sch, output_dequant=True)).run(
            g, dataclasses.replace(self.ctx, analyses=analyses)).graph
        qmodel = export_model(g, constants_as_initializers=True)
        if corrected:
            qmodel, _ = correct_bias(qmodel, self.float_model, self.fit_drive, what=self.what + " --bias-correction",
                                     score_drive=self.drive, holdout=self.config.holdout)
        q_run = OrtRunner(qmodel.SerializeToString())
        worst, seen = [1.0], [0]

        def run(feeds: dict) -> list:
            ref = self._reference(seen[0], feeds)
            seen[0] += 1
            got = q_run.run(feeds)
            worst[0] = min([worst[0]] + [cosine(ref[n], got[n]) for n in ref])
            return [got[n] for n in ref]

        self.drive(run)
        if not seen[0]:
            raise cannot_reread(self.what)
        self.count += 1
        return worst[0]

    def _reference(self, index: int, feeds: dict) -> dict:
        key = hashlib.sha1(b"".join(np.ascontiguousarray(feeds[k]).tobytes() for k in sorted(feeds))).digest()
        if index < len(self._float) and self._float[index][0] == key:
            return self._float[index][1]
        if self._float_run is None:
            self._float_run = OrtRunner(self.float_model.SerializeToString())
        out = self._float_run.run(feeds)
        size = sum(a.nbytes for a in out.values())
        if index == len(self._float) and self._cached + size <= CACHE_BYTES:
            self._float.append((key, out))
            self._cached += size
        return out


def target_cosine(trials: Trials, target: float) -> set[str]:
    """The 16-bit template nodes for ``--target-cosine``: see the module docstring."""
    keys, base = trials.keys, trials.base
    everything = set(keys)
    corrected = trials.config.bias_correction  # candidates are scored as they will be written
    if trials.cosine(set(), corrected) >= target:
        return set()
    top = trials.cosine(everything)
    if top < target:
        log.warning("--target-cosine %g: even every node at 16 bits reaches only %.6f on the calibration data; "
                    "all stay at 16 bits", target, top)
        return everything
    units = share_units(base, keys)
    damage = [top - trials.cosine(comply(base, everything - set(u), keys)) for u in units]
    order = sorted(range(len(units)), key=lambda i: (max(damage[i], 0.0) / len(units[i]), i))
    for i in order:
        log.debug("--target-cosine: damage %.3g lowering %s", damage[i], ", ".join(units[i]))
    best, lo, hi = everything, 0, len(order)  # lo units lowered are known to hold the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        high = comply(base, everything - {k for i in order[:mid] for k in units[i]}, keys)
        if trials.cosine(high, corrected) >= target:
            best, lo = high, mid
        else:
            hi = mid - 1
    log.info("--target-cosine %g: %d of %d template nodes at 16 bits (%d trials on the calibration data)",
             target, len(best), len(keys), trials.count)
    return best


def hawq(trials: Trials, share_high: float) -> set[str]:
    """``-ams HAWQ``: the ``share_high`` of template nodes with the largest sensitivity at 16
    bits, made rule-compliant by raising only."""
    ranked = sensitivity_ranking(trials)
    count = int(round(share_high * len(trials.keys)))
    high = comply(trials.base, {k for k, _ in ranked[:count]}, trials.keys)
    log.info("-ams HAWQ: %d of %d template nodes at 16 bits (%d chosen by sensitivity, the rest by the rules)",
             len(high), len(trials.keys), count)
    return high


def sensitivity_ranking(trials: Trials) -> list[tuple[str, float]]:
    """Template nodes, most sensitive first, by HAWQ's Ω = ½ · tr(H) · σ² of the tensors they
    output (a fused activation's output for its producer)."""
    from ptqc.driver import hawq as hq

    base, observers, float_model = trials.base, trials.observers, trials.float_model
    float_names = {o for n in float_model.graph.node for o in n.output}
    outputs = {}
    for n in base.topological_order():
        if not n.meta.get("mixable"):
            continue
        owned = [n] + ([base.node(n.meta["fused_activation"])] if "fused_activation" in n.meta else [])
        outputs[node_key(n)] = [o for m in owned for o in m.outputs if o in observers
                                and "qspec" in base.value(o).meta and o in float_names]
    tensors = sorted({t for ts in outputs.values() for t in ts})
    runner = OrtRunner(float_model.SerializeToString())
    feeds = first_batch(trials.drive, lambda f: list(runner.run(f).values()))
    if not feeds:
        raise cannot_reread(trials.what)
    trace, power = hq.traces(float_model, tensors, feeds)
    rel = {t: relative_error(observers[t], base.value(t).meta["qspec"]) for t in tensors}
    return hq.rank(outputs, trace, power, rel)


def relative_error(obs, spec) -> float:
    """E[(x - fq(x))^2] / E[x^2] the histogram predicts at the spec's type."""
    if not hasattr(obs, "counts") or obs.min is None:
        return 0.0
    lo, hi = obs.range(spec.dtype, spec.symmetric)
    p = qparam_from_range(lo, hi, spec.dtype, symmetric=spec.symmetric)
    centers = (np.arange(obs.bins) - obs.bins // 2 + 0.5) * obs.width
    n = obs.counts.astype(np.float64)
    err = np.sum(n * (centers - p.fake_quantize(centers.astype(np.float32))) ** 2)
    return float(err / max(np.sum(n * centers ** 2), 1e-30))
