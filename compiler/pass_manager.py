"""Passes, the pass manager, instruments, and anchored rewrite rules.

A pass is a small object with ``name``, ``requires``/``produces`` (analyses it needs and
establishes) and ``run(graph, ctx) -> PassResult``.  The :class:`PassManager` checks the
requirements, runs the passes in order and calls instruments around each one: timing,
``--dump-ir`` and verification live here, never inside a pass (TVM's PassInstrument).

Rewrite rules follow onnxscript's rewriter: a rule is anchored at one op type, ``match``
walks outward from the anchor and returns either the matched nodes or a :class:`Fail` that
says why the rule did not fire; ``rewrite`` edits the graph.  Matching is linear in graph
size.

Imports nothing of ptqc but the core (``ptqc.ir``, ``ptqc.errors``, ``ptqc.vocab``).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import onnx

from ptqc.errors import GraphError, PassOrderError
from ptqc.ir import Graph, Node
from ptqc.vocab import Analysis

log = logging.getLogger("ptqc")


@dataclass(frozen=True)
class PassResult:
    graph: Graph
    modified: bool


class AnalysisStore:
    """Named analysis results that passes read and write; ``established`` lists the analyses
    that are currently valid for the graph (the manager maintains it).  Keys and names are
    :class:`ptqc.vocab.Analysis` members (plain strings compare equal)."""

    def __init__(self, results: dict[str, Any] | None = None, established: Iterable[str] = ()) -> None:
        self.results: dict[str, Any] = dict(results or {})
        self.established: set[str] = set(established)

    def copy(self) -> AnalysisStore:
        """A store of its own with the same results and established analyses (the values
        themselves are shared): for a run on a copy of the graph that must not change this one."""
        return AnalysisStore(self.results, self.established)

    def __getitem__(self, key: str) -> Any:
        return self.results[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.results[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.results.get(key, default)

    def setdefault(self, key: str, default: Any) -> Any:
        return self.results.setdefault(key, default)


@dataclass(frozen=True)
class PassContext:
    """What every pass may read: configuration, target, calibration data, logger, and the
    store of analyses.  Frozen: a pass never swaps the configuration under the next one."""

    config: Any = None
    target: Any = None
    data: Any = None
    logger: logging.Logger = field(default_factory=lambda: log)
    analyses: AnalysisStore = field(default_factory=AnalysisStore)


class Pass:
    """Base class.  Subclasses set ``requires``/``produces``/``preserves`` and implement run.

    ``preserves`` lists analyses that stay valid when this pass modifies the graph; every
    other established analysis is dropped after a modifying pass.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = ()
    preserves: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if not cls.__dict__.get("name"):
            cls.name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError(f"pass {self.name} has no run()")

    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> PassResult:
        """Run this pass alone (a pass-level experiment); requirements are not checked."""
        return self.run(graph, ctx or PassContext())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PassInstrument:
    """Hooks around every pass; override what you need."""

    def before_pass(self, p: Pass, graph: Graph, ctx: PassContext, index: int) -> None:
        pass

    def after_pass(self, p: Pass, result: PassResult, ctx: PassContext, index: int, seconds: float) -> None:
        pass


@dataclass
class PassTiming:
    name: str
    seconds: float
    modified: bool
    nodes_after: int


class TimingInstrument(PassInstrument):
    """Records wall time per pass (``timings``)."""

    def __init__(self) -> None:
        self.timings: list[PassTiming] = []

    def after_pass(self, p, result, ctx, index, seconds):
        self.timings.append(PassTiming(p.name, seconds, result.modified, len(result.graph)))


class VerifyInstrument(PassInstrument):
    """Checks the graph after each modifying pass (debug mode); names the guilty pass."""

    def after_pass(self, p, result, ctx, index, seconds):
        if result.modified:
            problems = result.graph.verify()
            if problems:
                raise GraphError(f"after pass {p.name}: {problems[0]}")


class DumpIRInstrument(PassInstrument):
    """Writes ``<folder>/NN_<pass>.onnx`` after each pass (``--dump-ir``)."""

    def __init__(self, folder: str | Path, export, first: int = 1) -> None:
        self.folder = Path(folder)
        self.export = export  # (graph, path) -> None; injected so the core knows no I/O policy
        self.first = first  # the number of the first pass (a pipeline run in two managers)

    def after_pass(self, p, result, ctx, index, seconds):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.export(result.graph, self.folder / f"{index + self.first - 1:02d}_{p.name}.onnx")


class PassManager:
    """Runs an ordered list of passes with instruments attached from outside."""

    def __init__(self, passes: Sequence[Pass], instruments: Iterable[PassInstrument] = ()):
        self.passes = list(passes)
        self.instruments = list(instruments)

    def run(self, graph: Graph, ctx: PassContext | None = None) -> PassResult:
        ctx = ctx or PassContext()
        store = ctx.analyses
        modified = False
        for index, p in enumerate(self.passes, start=1):
            missing = [a for a in p.requires if a not in store.established]
            if missing:
                raise PassOrderError(f"pass {p.name} requires {', '.join(missing)}, which no earlier "
                                     f"pass established")
            for ins in self.instruments:
                ins.before_pass(p, graph, ctx, index)
            start = time.perf_counter()
            result = p.run(graph, ctx)
            seconds = time.perf_counter() - start
            if result.modified:
                store.established &= set(p.preserves)
            store.established |= set(p.produces)
            ctx.logger.info("pass %-24s %8.1f ms  %s", p.name, seconds * 1e3,
                            "modified" if result.modified else "unchanged")
            for ins in self.instruments:
                ins.after_pass(p, result, ctx, index, seconds)
            graph, modified = result.graph, modified or result.modified
        return PassResult(graph, modified)


# ------------------------------------------------------------------ rewrite rules
@dataclass(frozen=True)
class Fail:
    """Why a rule did not fire at a node (shown in the debug log and kept in the store)."""

    reason: str


def scalar_constant(graph: Graph, name: str) -> float | None:
    """The value of a one-element float constant input (``name`` may be empty), else None."""
    c = graph.constant(name) if name else None
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 and c.dtype.kind == "f" else None


def producer_op(graph: Graph, name: str, op: str) -> Node | None:
    """The default-domain ``op`` node producing ``name``, else None."""
    p = graph.producer(name)
    return p if p is not None and p.op_type == op and p.domain in ("", "ai.onnx") else None


def channel_vector(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant ``c`` broadcast against an NCHW-like tensor of ``rank`` as one value per
    channel (axis 1) of ``channels``, or None when it varies along another axis."""
    if c.ndim > rank:
        return None
    full = (1,) * (rank - c.ndim) + c.shape
    if full[0] != 1 or full[1] not in (1, channels) or any(d != 1 for d in full[2:]):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,)).copy()


def output_channels(node: Node, w: np.ndarray) -> int | None:
    """The output channels of a Conv, ConvTranspose or Gemm with weight ``w`` (None when ``w``
    has not the op's rank)."""
    if node.op_type == "Conv":
        return w.shape[0] if w.ndim >= 3 else None
    if node.op_type == "ConvTranspose":
        return w.shape[1] * node.attrs.get("group", 1) if w.ndim >= 3 else None
    if w.ndim != 2:
        return None
    return w.shape[0] if node.attrs.get("transB", 0) else w.shape[1]


def single_use(graph: Graph, value: str) -> bool:
    """Read by one consumer and nothing else (no graph output, no subgraph capture)."""
    return len(graph.consumers(value)) == 1 and value not in graph.outputs and not graph.is_captured(value)


def offset_inputs(graph: Graph, tensors: Sequence[str], prefix: str) -> dict[str, str]:
    """Make each tensor ``t`` of ``tensors`` the sum ``Add(t_raw, delta)`` right after its
    producer (every consumer and graph output reads the sum), ``delta`` a new float graph
    input named ``<prefix>_delta_<i>``: a probe model for perturbations (HAWQ) and output
    corrections (CorrectBias).  Returns ``{tensor: delta input name}``; a tensor without a
    producer is a GraphError."""
    deltas = {}
    for i, t in enumerate(tensors):
        node = graph.producer(t)
        if node is None:
            raise GraphError(f"tensor {t!r} has no producer to offset")
        raw, deltas[t] = graph.unique_name(f"{prefix}_raw_{i}"), graph.unique_name(f"{prefix}_delta_{i}")
        graph.set_output(node, list(node.outputs).index(t), raw)
        graph.add_input(deltas[t], onnx.TensorProto.FLOAT)
        graph.add_node("Add", [raw, deltas[t]], [t], name=graph.unique_name(f"{prefix}_add_{i}"))
    return deltas


class RewriteRule:
    """A pattern anchored at ``anchor`` op types: ``match`` returns the matched nodes (a dict)
    or a :class:`Fail`; ``rewrite`` edits the graph for a successful match."""

    name: ClassVar[str] = ""
    anchor: ClassVar[tuple[str, ...]] = ()

    def match(self, graph: Graph, node: Node) -> dict[str, Any] | Fail:  # pragma: no cover
        raise NotImplementedError

    def rewrite(self, graph: Graph, match: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError


class RewritePass(Pass):
    """Applies rules once over the nodes in topological order.  Every non-firing match is
    logged at debug level and recorded in ``ctx.analyses["rewrite_failures"][pass]``."""

    rules: ClassVar[tuple[RewriteRule, ...]] = ()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        failures: list[tuple[str, str, str]] = []
        fired = 0
        by_op: dict[str, list[RewriteRule]] = {}
        for rule in self.rules:
            for op in rule.anchor:
                by_op.setdefault(op, []).append(rule)
        for node in graph.topological_order():
            if not graph.has_node(node.id) or node.domain not in ("", "ai.onnx"):
                continue
            for rule in by_op.get(node.op_type, ()):
                m = rule.match(graph, node)
                if isinstance(m, Fail):
                    failures.append((rule.name, node.name or f"#{node.id}", m.reason))
                    ctx.logger.debug("%s: rule %s did not fire at %s %r: %s", self.name, rule.name,
                                     node.op_type, node.name, m.reason)
                    continue
                rule.rewrite(graph, m)
                fired += 1
                break
        ctx.analyses.setdefault(Analysis.REWRITE_FAILURES, {})[self.name] = failures
        ctx.analyses.setdefault(Analysis.REWRITE_COUNTS, {})[self.name] = fired
        return PassResult(graph, fired > 0)
