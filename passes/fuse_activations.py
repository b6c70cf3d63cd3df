"""MarkActivationFusion: group Conv/ConvTranspose/Gemm/MatMul with the activation after it.

The groups are marks in ``node.meta`` (``fused_activation`` on the producer, ``fused_into``
on the activation) and the ``activation_groups`` analysis; the graph itself is unchanged.
Quantization later takes the range after the activation and puts no Q/DQ between the two.
Which activations fuse is the target's ``fused_activations`` (a chip fuses only what its
requantizer's saturation computes: Relu, Clip); without a target, all of ``ACTIVATIONS``.
"""
from __future__ import annotations

from ptqc.ir import Graph, Node
from ptqc.pass_manager import Fail, Pass, PassContext, PassResult
from ptqc.vocab import Analysis, Meta

PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "HardSwish"})


class MarkActivationFusion(Pass):
    """Mark producer+activation pairs that run as one quantized op."""

    produces = (Analysis.ACTIVATION_GROUPS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        groups: list[tuple[str, str]] = []
        changed = False
        fusable = getattr(ctx.target, "fused_activations", ACTIVATIONS)
        for act in graph.topological_order():
            if act.op_type not in fusable or act.domain not in ("", "ai.onnx"):
                continue
            found = _match(graph, act)
            if isinstance(found, Fail):
                ctx.logger.debug("mark_activation_fusion: %s %r not grouped: %s", act.op_type,
                                 act.name, found.reason)
                continue
            if found.meta.get(Meta.FUSED_ACTIVATION) != act.id:
                found.meta[Meta.FUSED_ACTIVATION] = act.id
                act.meta[Meta.FUSED_INTO] = found.id
                changed = True
            groups.append((found.name, act.name))
        ctx.analyses[Analysis.ACTIVATION_GROUPS] = groups
        return PassResult(graph, changed)


class UnfuseActivations(Pass):
    """Undo MarkActivationFusion: every activation quantized on its own, its input and output
    each with a Q/DQ pair (onnxruntime's QDQKeepRemovableActivations, for tools that later take
    the Q/DQ out and need the Relu/Clip to be there)."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        marked = [n for n in graph.nodes() if Meta.FUSED_INTO in n.meta or Meta.FUSED_ACTIVATION in n.meta]
        for n in marked:
            n.meta.pop(Meta.FUSED_INTO, None)
            n.meta.pop(Meta.FUSED_ACTIVATION, None)
        ctx.analyses[Analysis.ACTIVATION_GROUPS] = []
        return PassResult(graph, bool(marked))


def _match(graph: Graph, act: Node) -> Node | Fail:
    if not act.inputs:
        return Fail("no input")
    producer = graph.producer(act.inputs[0])
    if producer is None or producer.op_type not in PRODUCERS or producer.domain not in ("", "ai.onnx"):
        return Fail(f"input is not produced by one of {', '.join(sorted(PRODUCERS))}")
    out = producer.outputs[0]
    if len(graph.consumers(out)) != 1 or out in graph.outputs or graph.is_captured(out):
        return Fail(f"{producer.op_type} output {out!r} has other consumers")
    if act.op_type == "Clip":
        bounds = act.inputs[1:3] if graph.opset >= 11 else ()
        if any(b and graph.constant(b) is None for b in bounds):
            return Fail("Clip bounds are not constants")
    return producer
