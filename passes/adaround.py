"""AdaRound (``--adaround``): each weight's rounding, up or down, learned by layer-wise output
reconstruction on the calibration data (Nagel et al. 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization"; AIMET's AdaRound).

Round-to-nearest minimizes each weight's own error, not the layer's: for a Conv/Gemm/MatMul
with weight rows ``w`` (one per output channel, per group), scale ``s`` and input columns
``x`` (im2col patches), the output error over the calibration data is

    E(h) = sum_x ||(s * (floor(w / s) + h) - w) . x||² = tr(D H D^T),   H = sum_x x x^T

with ``h`` in {0, 1} per weight. ``H`` is gathered once (streaming: one d x d sum per layer and
group) over the first ``HESSIAN_BATCHES`` calibration batches. As in the paper, ``h`` is relaxed
to a rectified sigmoid ``h(V)`` and ``E / N + lambda * sum(1 - |2h - 1|^beta)`` minimized by
Adam, ``beta`` annealed 20 -> 2 after a warm-up so that every ``h`` ends at 0 or 1. A layer with
fewer than ``ROWS_PER_INPUT`` input rows per input dimension keeps round-to-nearest (its ``H``
is too noisy to generalize). A layer keeps the learned rounding only where it reconstructs
better than round-to-nearest (``E`` on the same data), and each row's largest weight keeps its
nearest rounding so that the scale (``max|w| / qmax``) does not move. The float weights are
replaced by ``s * q``: the Q/DQ that follows quantizes them to exactly ``q``. Large ``d`` uses
``H``'s leading eigenvectors (99.99 % of its trace, at most ``MAX_RANK``). The inputs are the
float model's (symmetric reconstruction); batches the calibration held out are skipped. With
``guard`` the result is kept only where it does not lower the output cosine on the held-out
batches (as the pipeline quantizes the model: against round-to-nearest), as bias correction
refuses itself.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ptqc.ir import Graph, Node
from ptqc.onnx_io import export_model, with_outputs
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.calibrate import held_out
from ptqc.passes.insert_qdq import InsertQDQ
from ptqc.passes.propagate_ranges import PropagateRanges
from ptqc.quant import cosine, qparam_from_range
from ptqc.runtime.ort import OrtRunner
from ptqc.vocab import Analysis, Meta

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch
MAX_RANK = 512
HESSIAN_BATCHES = 32  # H from the first 32 calibration batches: each gives many patch rows, and time stays bounded
ROWS_PER_INPUT = 4  # a layer learns only with at least 4 input rows (patches, tokens) per input dimension
MAX_D = 8192  # larger layers keep round-to-nearest (H would not fit a sane memory budget)


class AdaRound(Pass):
    """Learn weight rounding per layer by output reconstruction."""

    requires = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS, Analysis.OBSERVERS)

    def __init__(self, iterations: int = 500, reg: float = 0.01, lr: float = 0.02, holdout: int = 0,
                 max_holdout: int = 8, guard: bool = True, unify: bool = False, wide_headroom: float = 1.0,
                 max_batches: int | None = None):
        self.iterations, self.reg, self.lr = iterations, reg, lr
        self.holdout, self.max_holdout = holdout, max_holdout
        self.guard, self.unify, self.wide_headroom = guard, unify, wide_headroom
        self.max_batches = max_batches  # calibration batches used (several -i: the run's own count)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        layers = [t for t in (_layer(graph, n) for n in graph.topological_order()) if t is not None]
        if not layers or ctx.data is None:
            return PassResult(graph, False)
        hessians = self._hessians(graph, ctx, layers)
        before = copy.deepcopy(graph) if self.guard else None
        gains, thin = [], 0
        for layer, (h, n) in zip(layers, hessians):
            if n < ROWS_PER_INPUT * layer.d:  # H too noisy to generalize (and the time goes for nothing)
                thin += n > 0
                continue
            rtn, learned, q = self._learn(layer, h, n)
            if learned < rtn:
                layer.write(graph, q)
                gains.append(learned / max(rtn, 1e-30))
        ctx.logger.info("adaround: %d of %d layers rounded by reconstruction (error %.2fx round-to-nearest's, "
                        "median)", len(gains), len(layers), float(np.median(gains)) if gains else 1.0)
        if thin:
            ctx.logger.info("adaround: %d layers keep round-to-nearest: the calibration data gives them fewer than "
                            "%d input rows per input", thin, ROWS_PER_INPUT)
        feeds = ctx.analyses.get(Analysis.VALIDATION_FEEDS) or ctx.analyses.get(Analysis.CALIBRATION_FEEDS)
        if gains and before is not None and feeds:
            f = OrtRunner(export_model(before, constants_as_initializers=True).SerializeToString(), list(graph.outputs))
            reference = [list(f.run(x).values()) for x in feeds]
            old, new = (self._cosine(g, ctx, feeds, reference) for g in (before, graph))
            if new < old:  # never applied where it lowers the held-out cosine
                ctx.logger.warning("adaround: the learned rounding would lower the output cosine on the %s batches "
                                   "(%.6f -> %.6f); round-to-nearest kept", "held-out" if ctx.analyses.get(
                                       Analysis.VALIDATION_FEEDS) else "calibration", old, new)
                for layer in layers:
                    graph.value(layer.node.inputs[1]).const = before.value(layer.node.inputs[1]).const
                return PassResult(graph, False)
            ctx.logger.info("adaround: output cosine on the scoring batches %.6f -> %.6f", old, new)
        return PassResult(graph, bool(gains))

    def _cosine(self, graph: Graph, ctx: PassContext, feeds: list[dict], reference: list[list[np.ndarray]]) -> float:
        """Mean over outputs of the min over ``feeds`` of the cosine between ``graph`` quantized
        (as the pipeline will) and the float model's outputs ``reference`` (one list per feed)."""
        g, analyses = copy.deepcopy(graph), ctx.analyses.copy()
        qctx = dataclasses.replace(ctx, analyses=analyses)
        for p in (PropagateRanges(unify=self.unify, wide_headroom=self.wide_headroom), InsertQDQ(output_dequant=True)):
            g = p.run(g, qctx).graph
        q = OrtRunner(export_model(g, constants_as_initializers=True).SerializeToString(), list(graph.outputs))
        worst = {o: 1.0 for o in graph.outputs}
        for x, ref in zip(feeds, reference):
            for (o, y), r in zip(q.run(x).items(), ref):
                worst[o] = min(worst[o], cosine(r, y))
        return float(np.mean(list(worst.values())))

    def _hessians(self, graph: Graph, ctx: PassContext, layers: list["_Layer"]) -> list:
        inputs = sorted({t.node.inputs[0] for t in layers} - set(graph.inputs))
        model = export_model(graph, constants_as_initializers=True)
        runner = OrtRunner(with_outputs(model, inputs), list(graph.outputs) + inputs)
        acc = [(np.zeros((t.groups, t.d, t.d)), 0) for t in layers]  # per layer (nodes may have no name)
        seen, used = [0], [0]

        def run(feeds: dict) -> list:
            got = runner.run(feeds)
            seen[0] += 1
            fit = not held_out(seen[0] - 1, self.holdout, self.max_holdout)
            used[0] += fit
            if fit and used[0] <= min(self.max_batches or HESSIAN_BATCHES, HESSIAN_BATCHES):
                for i, t in enumerate(layers):
                    x = feeds[t.node.inputs[0]] if t.node.inputs[0] in feeds else got[t.node.inputs[0]]
                    cols = np.ascontiguousarray(t.columns(np.asarray(x, np.float32)))  # (groups, rows, d)
                    h, n = acc[i]
                    acc[i] = (h + np.matmul(cols.transpose(0, 2, 1), cols), n + cols.shape[1])  # BLAS, float32
            return [got[o] for o in graph.outputs]
        ctx.data(run)
        return acc

    def _learn(self, layer: "_Layer", hess: np.ndarray, n: int) -> tuple[float, float, np.ndarray]:
        """(round-to-nearest's error, the learned rounding's error, the learned codes)."""
        w, s, qmin, qmax = layer.w, layer.scale, layer.qmin, layer.qmax  # w: (groups, rows, d); s: (groups, rows, 1)
        x = w / s
        base = np.floor(x)
        rest = x - base
        nearest = np.clip(np.rint(x), qmin, qmax)
        keep = np.abs(x) >= np.abs(x).max(axis=2, keepdims=True)  # each row's largest weight stays nearest
        factors = [_factor(hg) for hg in hess]  # H ~= L L^T per group
        # the gradient's D H: one product with H where L is not much narrower, else two with L
        ops = [(f @ f.T).astype(np.float32) if 2 * f.shape[1] >= f.shape[0] else f.astype(np.float32) for f in factors]
        if len({o.shape for o in ops}) == 1:
            ops = np.stack(ops)  # one batched product for every group (depthwise: many)
        w32, s32, base32 = (a.astype(np.float32) for a in (w, s, base))
        v = -np.log((ZETA - GAMMA) / (np.clip(rest, 0.01, 0.99) - GAMMA) - 1).astype(np.float32)
        m, u = np.zeros_like(v), np.zeros_like(v)
        scale_loss = 1.0 / (n * w.shape[1])
        warm = int(0.2 * self.iterations)
        for it in range(self.iterations):
            sig = 1 / (1 + np.exp(-v))
            raw = sig * (ZETA - GAMMA) + GAMMA
            h = np.clip(raw, 0, 1)
            d = s32 * (base32 + h) - w32
            grad = np.float32(2 * scale_loss) * s32 * _through(d, ops)
            if it >= warm:
                beta = 20 + (2 - 20) * (it - warm) / max(self.iterations - warm - 1, 1)
                t = 2 * h - 1
                grad = grad - self.reg * beta * np.abs(t) ** (beta - 1) * np.sign(t) * 2
            grad = grad * ((raw > 0) & (raw < 1)) * sig * (1 - sig) * (ZETA - GAMMA)
            m = 0.9 * m + 0.1 * grad
            u = 0.999 * u + 0.001 * grad * grad
            v = v - self.lr * (m / (1 - 0.9 ** (it + 1))) / (np.sqrt(u / (1 - 0.999 ** (it + 1))) + 1e-8)
        learned = np.clip(base + (np.clip((1 / (1 + np.exp(-v))) * (ZETA - GAMMA) + GAMMA, 0, 1) >= 0.5), qmin, qmax)
        learned = np.where(keep, nearest, learned)
        err = lambda q: float(sum(np.sum((dg @ f) ** 2) for dg, f in zip(s * q - w, factors)))  # noqa: E731
        return err(nearest), err(learned), learned


def _through(d: np.ndarray, ops) -> np.ndarray:
    """D H per group, each H given as itself (square) or as L with H = L L^T (narrow)."""
    one = lambda dg, o: dg @ o if o.shape[0] == o.shape[1] else (dg @ o) @ o.T  # noqa: E731
    if isinstance(ops, np.ndarray) and ops.shape[1] == ops.shape[2]:
        return d @ ops
    if isinstance(ops, np.ndarray):
        return (d @ ops) @ ops.transpose(0, 2, 1)
    return np.stack([one(dg, o) for dg, o in zip(d, ops)])


def _factor(h: np.ndarray) -> np.ndarray:
    """L with H ~= L L^T: the Cholesky-like square root of H, low rank when d is large."""
    vals, vecs = np.linalg.eigh(h)
    vals = np.clip(vals, 0, None)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    if len(vals) > MAX_RANK // 2:
        total = vals.sum()
        rank = int(np.searchsorted(np.cumsum(vals), 0.9999 * total) + 1) if total > 0 else 1
        rank = min(max(rank, 1), MAX_RANK, len(vals))
        vals, vecs = vals[:rank], vecs[:, :rank]
    return vecs * np.sqrt(vals)


class _Layer:
    """A Conv/Gemm/MatMul whose constant weight is quantized, seen as (groups, rows, d)."""

    def __init__(self, node: Node, w: np.ndarray, spec, groups: int, layout: str):
        self.node, self.spec, self.groups, self.layout = node, spec, groups, layout
        self.shape, self.dtype = w.shape, w.dtype
        if layout == "conv":
            rows = w.shape[0] // groups
            self.w = w.astype(np.float64).reshape(groups, rows, -1)
        else:  # "rows": weight (out, in); "cols": weight (in, out)
            m = w.astype(np.float64) if layout == "rows" else w.astype(np.float64).T
            self.w = m[None]
        self.d = self.w.shape[2]
        per_row = spec.axis is not None
        flat = self.w.reshape(-1, self.d)
        lo, hi = (flat.min(axis=1), flat.max(axis=1)) if per_row else (flat.min(), flat.max())
        p = qparam_from_range(lo, hi, spec.dtype, symmetric=spec.symmetric, axis=0 if per_row else None,
                              reduce_range=spec.reduce_range,
                              warn=False)  # the weight's own quantization warns, by name
        scale = np.asarray(p.scale, np.float64)
        self.scale = (scale.reshape(self.w.shape[0], self.w.shape[1], 1) if per_row
                      else np.full((self.w.shape[0], self.w.shape[1], 1), float(scale)))
        self.qmin, self.qmax = -int(np.iinfo(spec.dtype).max), int(np.iinfo(spec.dtype).max)

    def columns(self, x: np.ndarray) -> np.ndarray:
        """The layer's input as (groups, rows, d) patches."""
        if self.layout != "conv":
            return x.reshape(-1, x.shape[-1])[None]
        a = self.node.attrs
        k = self.shape[2:]
        nd = len(k)
        pads = list(a.get("pads", [0] * (2 * nd)))
        strides, dil = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
        x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
        span = [dil[i] * (k[i] - 1) + 1 for i in range(nd)]
        win = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + nd)))
        win = win[(slice(None), slice(None)) + tuple(slice(None, None, strides[i]) for i in range(nd))
                  + tuple(slice(None, None, dil[i]) for i in range(nd))]
        n, c = win.shape[:2]
        out = win.shape[2:2 + nd]
        win = win.reshape(n, self.groups, c // self.groups, int(np.prod(out)), -1)  # (n, g, cin_g, L, k)
        return win.transpose(1, 0, 3, 2, 4).reshape(self.groups, n * int(np.prod(out)), -1)

    def write(self, graph: Graph, q: np.ndarray) -> None:
        w = self.scale * q
        if self.layout == "conv":
            w = w.reshape(self.shape)
        else:
            w = w[0] if self.layout == "rows" else w[0].T
        name = self.node.inputs[1]
        graph.value(name).const = np.asarray(w, self.dtype)


def _layer(graph: Graph, node: Node) -> _Layer | None:
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    w = graph.constant(node.inputs[1])
    spec = graph.value(node.inputs[1]).meta.get(Meta.QSPEC)
    if w is None or spec is None or w.dtype.kind != "f" or len(graph.consumers(node.inputs[1])) != 1 \
            or np.dtype(spec.dtype).kind != "i" or not spec.symmetric:
        return None
    if node.op_type == "Conv":
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET") or w.ndim < 3 \
                or spec.axis not in (0, None):
            return None
        layer = _Layer(node, w, spec, int(node.attrs.get("group", 1)), "conv")
    elif w.ndim != 2 or (node.op_type == "Gemm" and node.attrs.get("transA", 0)):
        return None
    else:
        rows = node.op_type == "Gemm" and node.attrs.get("transB", 0)
        if spec.axis not in (None, 0 if rows else 1):
            return None
        layer = _Layer(node, w, spec, 1, "rows" if rows else "cols")
    return layer if layer.d <= MAX_D else None
