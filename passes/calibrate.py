"""Calibrate: run the float model over the calibration data and feed one observer per
activation tensor that has a plain quant spec.  The graph is unchanged.

The data source is ``ctx.data``: a callable that takes ``run(feeds) -> [outputs]`` and
drives it over the data (the infer-function protocol: the user's function calls
``executor.forward`` once per batch), returning the function's metric.  Every batch runs the
model once, with all observed tensors as extra outputs of that one run; each observer takes
its tensor and the batch is dropped (memory does not grow with the number of batches).
Observers land in ``ctx.analyses["observers"]``; the metric in ``["float_metric"]``.

With ``holdout`` h > 0 (``-vs``), every h-th batch (up to ``max_holdout`` of them) is held out:
run but not observed, its feeds kept in ``["validation_feeds"]`` for the decisions that
choose among candidates and for the evaluation, so that none is scored on the data it was
fitted to (:func:`held_out` says which batches, by index alone, so shards agree).  The first
``max_holdout`` calibration batches are kept in ``["calibration_feeds"]``: where none is held
out (fewer batches than h, or h = 0) a choice is still scored when the data cannot be read
again (a reader without rewind()), and the mixed-precision target is checked on both.

With ``workers > 1`` (``-cn``) or a Dask ``client``, a built-in data source (whose drive has
``shard(k, n)``) is split: worker k of n runs batches k, k + n, ... with its own model session
and observers, and the observer states merge exactly, in worker order.
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from ptqc.errors import ConfigError, PtqcError
from ptqc.ir import Graph
from ptqc.onnx_io import with_outputs
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.calibration import make_observer
from ptqc.quant import PlainSpec
from ptqc.runtime.ort import OrtRunner
from ptqc.runtime.reference import ReferenceExecutor
from ptqc.vocab import Analysis, Meta, Method

Run = Callable[[dict], list]


class Calibrate(Pass):
    """Observe every activation with a plain spec over the calibration data."""

    requires = (Analysis.QUANT_SPECS,)
    produces = (Analysis.OBSERVERS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, method: str = Method.MIN_MAX, executor: str = "onnxruntime", *, workers: int = 1,
                 client=None, snapshots: tuple[int, ...] = (), holdout: int = 0, max_holdout: int = 8,
                 **options):
        if executor not in ("onnxruntime", "reference"):
            raise PtqcError(f"calibration executor {executor!r}: use onnxruntime or reference")
        if snapshots and (workers > 1 or client is not None):
            raise PtqcError("several -i values with -cn/--dask-scheduler: not built yet; give one -i")
        self.method, self.executor, self.options = method, executor, options
        self.workers, self.client = workers, client
        self.holdout, self.max_holdout = holdout, max_holdout
        # batch counts after which a copy of every observer is kept (several -i from one run)
        self.snapshots = tuple(sorted(set(snapshots)))

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.workers > 1 or self.client is not None:
            return self._run_sharded(graph, ctx)
        names = observed_values(graph)
        observers = {n: make_observer(self.method, n, **self.options) for n in names}
        run_model = self._runner(graph, names)
        counter = _counting_input(graph)
        stats = {"batches": 0, "samples": 0, "seen": 0}
        validation: list[dict] = []
        kept: list[dict] = []  # the first calibration batches, for scoring when none is held out

        bar = tqdm(desc="calibrate", unit="batch", disable=None, leave=False)  # silent unless a terminal
        snapshots: dict[int, dict] = {}

        def run(feeds: dict) -> list:
            values = run_model(feeds)
            stats["seen"] += 1
            if held_out(stats["seen"] - 1, self.holdout, self.max_holdout):
                validation.append(dict(feeds))
                return [values[o] for o in graph.outputs]
            if len(kept) < self.max_holdout:
                kept.append(dict(feeds))
            for n, obs in observers.items():
                obs.observe(feeds[n] if n in feeds else values[n])
            stats["batches"] += 1
            stats["samples"] += _batch_len(feeds, counter)
            if stats["batches"] in self.snapshots:
                snapshots[stats["batches"]] = copy.deepcopy(observers)
            bar.update(1)
            return [values[o] for o in graph.outputs]

        drive = ctx.data or random_data(graph)
        start = time.perf_counter()
        try:
            metric = drive(run)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        if stats["batches"] == 0:
            raise PtqcError("calibration ran no batch: the data source gave no data")
        ctx.logger.info("calibrate: %d batches, %d samples in %.2f s (%.1f samples/s), %d tensors observed; "
                        "%d batches held out", stats["batches"], stats["samples"], seconds,
                        stats["samples"] / max(seconds, 1e-9), len(names), len(validation))
        ctx.analyses[Analysis.OBSERVERS] = observers
        ctx.analyses[Analysis.VALIDATION_FEEDS] = validation
        ctx.analyses[Analysis.CALIBRATION_FEEDS] = kept
        ctx.analyses[Analysis.FLOAT_METRIC] = metric
        ctx.analyses[Analysis.CALIBRATION_BATCHES] = stats["batches"]
        if self.snapshots:
            snapshots[stats["batches"]] = observers
            ctx.analyses[Analysis.OBSERVER_SNAPSHOTS] = snapshots  # batches seen -> observers then
        return PassResult(graph, False)

    def _run_sharded(self, graph: Graph, ctx: PassContext) -> PassResult:
        """-cn N (forked worker processes) or a Dask client: worker k of n runs batches k, k+n,
        ... of a built-in data source with its own model session and observers, and returns
        their state; the states merge in worker order (exactly: see the observers)."""
        shard_of = getattr(ctx.data, "shard", None)
        if shard_of is None:
            raise PtqcError("-cn/--cpu-num and --dask-scheduler split built-in data sources (-d folders, "
                            "infer_auto); an infer function (-uds/-if) drives its own loop in one process")
        names = observed_values(graph)
        fetch = list(dict.fromkeys(list(graph.outputs) + [n for n in names if n not in graph.inputs]))
        job = _ShardJob(with_outputs(graph, fetch), list(graph.outputs), fetch, names, self.method,
                        self.options, shard_of, self.holdout, self.max_holdout)
        start = time.perf_counter()
        if self.client is not None:
            n = max(1, len(self.client.scheduler_info().get("workers", {})))
            futures = [self.client.submit(_observe_shard, job, k, n, pure=False) for k in range(n)]
            results = self.client.gather(futures)
        else:
            n = self.workers
            global _FORKED_JOB
            _FORKED_JOB = job  # inherited by the forked workers: closures need no pickling
            try:
                with multiprocessing.get_context("fork").Pool(n) as pool:
                    results = pool.starmap(_observe_forked_shard, [(k, n) for k in range(n)])
            finally:
                _FORKED_JOB = None
        observers = results[0][0]
        for other, *_ in results[1:]:
            for name, obs in observers.items():
                obs.merge(other[name])
        batches = sum(r[1] for r in results)
        validation = [f for _, f in sorted(i for r in results for i in r[2])]
        if batches == 0:
            raise PtqcError("calibration ran no batch: the data source gave no data")
        seconds = time.perf_counter() - start
        ctx.logger.info("calibrate: %d batches over %d workers in %.2f s, %d tensors observed", batches, n,
                        seconds, len(names))
        ctx.analyses[Analysis.OBSERVERS] = observers
        ctx.analyses[Analysis.VALIDATION_FEEDS] = validation
        ctx.analyses[Analysis.FLOAT_METRIC] = None
        ctx.analyses[Analysis.CALIBRATION_BATCHES] = batches
        return PassResult(graph, False)

    def _runner(self, graph: Graph, names: list[str]) -> Callable[[dict], dict]:
        wanted = list(dict.fromkeys(list(graph.outputs) + [n for n in names if n not in graph.inputs]))
        if self.executor == "reference":
            constants = {v.name: v.const for v in graph.values() if v.const is not None}
            ex = ReferenceExecutor(graph.topological_order(), opset=graph.opset, constants=constants)
            return lambda feeds: ex.run(feeds, wanted)

        runner = OrtRunner(with_outputs(graph, wanted), wanted)
        return runner.run


@dataclass(frozen=True)
class _ShardJob:
    model: bytes
    outputs: list[str]
    fetch: list[str]
    names: list[str]
    method: str
    options: dict
    shard_of: Callable
    holdout: int = 0
    max_holdout: int = 8


_FORKED_JOB: _ShardJob | None = None


def _observe_forked_shard(k: int, n: int):
    return _observe_shard(_FORKED_JOB, k, n)


def _observe_shard(job: _ShardJob, k: int, n: int):
    """One worker's share: (observer states, batches observed, [(batch index, feeds)] held
    out).  Runs in another process."""
    runner = OrtRunner(job.model, job.fetch, threads=max(1, (os.cpu_count() or 1) // n))
    observers = {name: make_observer(job.method, name, **job.options) for name in job.names}
    count, seen, validation = [0], [0], []

    def run(feeds: dict) -> list:
        index = k + seen[0] * n  # worker k runs batches k, k + n, ...
        seen[0] += 1
        if held_out(index, job.holdout, job.max_holdout):
            validation.append((index, dict(feeds)))
            return []
        values = runner.run(feeds)
        for name, obs in observers.items():
            obs.observe(feeds[name] if name in feeds else values[name])
        count[0] += 1
        return [values[o] for o in job.outputs]

    job.shard_of(k, n)(run)
    return observers, count[0], validation


def stream_tensors(graph: Graph, ctx: PassContext, names: list[str], visit: Callable[[dict], None], what: str,
                   hint: str = "") -> None:
    """One streaming pass of the float ``graph`` over ``ctx.data``: ``visit(values)`` per batch, with
    every tensor of ``names`` (graph inputs taken from the feeds).  ``what`` names the option that
    needs the data, for the error when there is none (``hint`` added to it) or no batch came."""
    if ctx.data is None:
        raise ConfigError(f"{what}: needs calibration data{hint}")
    wanted = list(dict.fromkeys(list(graph.outputs) + [n for n in names if n not in graph.inputs]))
    runner, seen = OrtRunner(with_outputs(graph, wanted), wanted), [0]

    def run(feeds: dict) -> list:
        got = runner.run(feeds)
        visit({n: feeds[n] if n in feeds else got[n] for n in names})
        seen[0] += 1
        return [got[o] for o in graph.outputs]
    ctx.data(run)
    if not seen[0]:
        raise ConfigError(f"{what}: the data gave no batch")


def first_batch(drive: Callable, run: Run) -> dict:
    """The first feeds the infer function hands to ``forward`` ({} if none); the function
    runs to its end on ``run`` (so it sees real outputs throughout)."""
    first: list[dict] = []

    def capture(feeds: dict) -> list:
        if not first:
            first.append(dict(feeds))
        return run(feeds)
    drive(capture)
    return first[0] if first else {}


def feeds_drive(feeds: list[dict]) -> Callable[[Run], None]:
    """A drive over stored feeds (the held-out batches), in the infer-function protocol."""
    def drive(run: Run) -> None:
        for f in feeds:
            run(f)
    return drive


def held_out(index: int, holdout: int, max_holdout: int) -> bool:
    """Whether batch ``index`` (0-based) is held out for validation: every ``holdout``-th
    batch, the first ``max_holdout`` such; 0 holds out nothing."""
    return holdout > 0 and index % holdout == holdout - 1 and index // holdout < max_holdout


def observed_values(graph: Graph) -> list[str]:
    """Tensors computed at run time (or fed) whose spec asks for an observer, in a stable order."""
    return [v.name for v in graph.values()
            if isinstance(v.meta.get(Meta.QSPEC), PlainSpec) and v.const is None]


def random_data(graph: Graph, batches: int = 1, seed: int = 0) -> Callable[[Run], float]:
    """The fallback source when a pass runs alone: seeded standard-normal batches for inputs of
    static shape (the reference tool's ``infer_auto`` without -is)."""
    feeds_spec = []
    for name in graph.inputs:
        v = graph.value(name)
        if v.const is not None:
            continue
        if v.static_shape is None or v.dtype is None:
            raise PtqcError(f"calibration has no data and input {name!r} has no static shape")
        feeds_spec.append((name, v.static_shape, v.dtype))

    def drive(run: Run) -> float:
        rng = np.random.default_rng(seed)
        for _ in range(batches):
            run({n: rng.standard_normal(s).astype(d) for n, s, d in feeds_spec})
        return 1.0
    return drive


def _counting_input(graph: Graph) -> str | None:
    """The input whose dim 0 counts the samples of a batch: the first with a symbolic dim 0
    (a state input such as ``h [layers, N, hidden]`` has its batch on another axis); None,
    when there is none, for the first input (a static model's dim 0 is its batch)."""
    for name in graph.inputs:
        v = graph.value(name)
        if v.const is None and v.shape and not (isinstance(v.shape[0], int) and v.shape[0] >= 0):
            return name
    return None


def _batch_len(feeds: dict, counter: str | None = None) -> int:
    """Samples in a batch: dim 0 of ``feeds[counter]`` (:func:`_counting_input`), else of the first feed."""
    x = feeds.get(counter) if counter is not None else None
    for x in ([x] if x is not None else feeds.values()):
        return int(x.shape[0]) if getattr(x, "ndim", 0) else 1
    return 0
