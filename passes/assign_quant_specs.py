"""AssignQuantSpecs: decide which ops run quantized and put a quant spec on every tensor they
read or write (``value.meta["qspec"]``): plain (observe it), shared (pass-through ops use
their input's parameters) or derived (bias = input scale x weight scale).

The op table below is data: for each op, which inputs are activations, which is the weight
(and its per-channel axis), which is the bias, and whether the output has its own range,
shares its input's, or (Concat) may be unified with its inputs.  Ops not in the table stay
float and are listed in ``ctx.analyses["float_ops"]``.  The graph itself is unchanged.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx

from ptqc.errors import PtqcError
from ptqc.ir import Graph, Node
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.passes.masks import mask_tensors
from ptqc.quant import DerivedSpec, PlainSpec, QuantScheme, SharedSpec
from ptqc.runtime.kernels.recurrent import GATES, unsupported as recurrent_unsupported
from ptqc.vocab import Analysis, Meta

FLOAT = onnx.TensorProto.FLOAT
RECURRENT = frozenset(GATES)  # RNN, GRU, LSTM


@dataclass(frozen=True)
class OpRole:
    output: str  # "own": observed range; "shared": input 0's parameters; "concat": own, or unified by -uis
    data: tuple[int, ...] | None = (0,)  # activation inputs; None = every float input
    weight: int | None = None
    bias: int | None = None


_OWN = OpRole("own")
_OWN_ALL = OpRole("own", None)
_SHARED = OpRole("shared")
OP_ROLES: dict[str, OpRole] = {
    "Conv": OpRole("own", (0,), weight=1, bias=2),
    "ConvTranspose": OpRole("own", (0,), weight=1, bias=2),
    "Gemm": OpRole("own", (0,), weight=1, bias=2),
    "MatMul": OpRole("own", (0, 1)),  # input 1 becomes a weight when constant (see _weight_axis)
    **dict.fromkeys(["Add", "Sub", "Mul"], _OWN_ALL),
    **dict.fromkeys(["Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                     "Softmax", "AveragePool", "GlobalAveragePool", "ReduceMean", "LayerNormalization"], _OWN),
    # one-input nonlinear ops a chip runs as lookup tables (targets/base.py EXTENDED_LUT_OPS) whose
    # output range a table holds; Exp, Log, Reciprocal and Sqrt stay float (their outputs span
    # decades, which one 8-bit scale cannot hold), and Abs (the reference's mixed-precision
    # rule 6 refuses it, so a template listing it could not be loaded back)
    **dict.fromkeys(["Gelu", "Erf", "Softplus", "Elu", "Selu", "Mish", "Softsign", "Neg"], _OWN),
    "Div": OpRole("own", (0,)),  # by a positive constant scalar only (a rescale; _role)
    "PRelu": OpRole("own", (0, 1)),
    # X, W, R (constants: per gate row, axis 1), initial_h, initial_c; B stays float (lowering
    # puts it in the gate format); only where the scheme runs recurrent ops (_refusal)
    **dict.fromkeys(RECURRENT, OpRole("own", (0, 1, 2, 5, 6))),
    **dict.fromkeys(["Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather",
                     "Split", "MaxPool", "GlobalMaxPool", "Identity", "DepthToSpace", "SpaceToDepth",
                     "Expand", "Tile"], _SHARED),
    "Pad": _SHARED,  # own range when it pads with a non-zero constant (_role)
    "Resize": _SHARED,  # own range unless nearest (_role)
    "Concat": OpRole("concat", None),
    "ScatterND": OpRole("concat", (0, 2)),
}
UNIFY_OPS = frozenset({"Concat", "Stack", "ScatterND"})


class AssignQuantSpecs(Pass):
    """Mark the ops that run quantized and the spec of every tensor they touch."""

    produces = (Analysis.QUANT_SPECS,)
    preserves = (Analysis.SHAPES, Analysis.ACTIVATION_GROUPS, Analysis.QUANT_SPECS)

    def __init__(self, scheme: QuantScheme | None = None):
        self.scheme = scheme or QuantScheme()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        s = self.scheme
        act = PlainSpec(np.dtype(s.activation_dtype), s.activation_symmetric)
        self._bits, self._modes = dict(s.node_bits), dict(s.node_modes)
        quantized: set[int] = set()
        float_ops: dict[str, list[str]] = {}
        order = graph.topological_order()
        self._fills, self._mask_arithmetic = mask_tensors(graph)
        for node in order:
            role = _role(graph, node)
            why = self._refusal(graph, node, role)
            if not why and role.output == "shared":
                why = _follows_quantized(graph, node, quantized)
            if why:
                if why != "not float":
                    float_ops.setdefault(node.op_type, []).append(node.name)
                    ctx.logger.debug("assign_quant_specs: %s %r stays float: %s", node.op_type, node.name, why)
                continue
            quantized.add(node.id)
            node.meta[Meta.QUANTIZED] = True
        for node in order:
            if node.id in quantized:
                role = _role(graph, node)
                # a mixed-precision template entry: an op with its own output parameters that
                # no producer absorbed (pass-through ops follow their input, a fused
                # activation its producer: the reference tool lists neither)
                node.meta[Meta.MIXABLE] = role.output != "shared" and node.meta.get(Meta.FUSED_INTO) not in quantized
                self._spec_node(graph, node, role, act, quantized)
        ctx.analyses[Analysis.FLOAT_OPS] = float_ops
        if float_ops:
            ctx.logger.info("ops left in float: %s", ", ".join(f"{op} x{len(n)}" for op, n in sorted(float_ops.items())))
        return PassResult(graph, False)

    def _refusal(self, graph: Graph, node: Node, role: OpRole | None) -> str:
        s = self.scheme
        if node.op_type in RECURRENT and node.domain in ("", "ai.onnx"):
            if not s.recurrent:
                return ("recurrent ops run float on this target (onnxruntime runs LSTM/GRU/RNN in float; TX510x, "
                        "8-bit only, has no 16-bit recurrent state)")
            why = recurrent_unsupported(node.op_type, node.attrs, node.inputs)
            if why or any(graph.constant(x) is None for x in node.inputs[1:3]):
                return f"recurrent op runs float: {why or 'W or R is computed'}"
        if role is None and node.op_type == "Div" and node.domain in ("", "ai.onnx"):
            return "only Div by a positive constant scalar runs quantized (a rescale)"
        if role is None or node.domain not in ("", "ai.onnx"):
            return "ptqc does not quantize this op"
        if s.op_types is not None and node.op_type not in s.op_types:
            return "op type not in op_types_to_quantize"
        if node.name in s.nodes_to_exclude:
            return "in nodes_to_exclude"
        if s.matmul_const_b_only and node.op_type == "MatMul" and graph.constant(node.inputs[1]) is None:
            return "MatMulConstBOnly: its B is not a constant"
        if s.nodes_to_quantize is not None and node.name not in s.nodes_to_quantize:
            return "not in nodes_to_quantize"
        data = _data_inputs(graph, node, role)
        if not data or any(graph.value(x).elem_type != FLOAT for x in data):
            return "not float"
        if any(x in self._fills for x in node.inputs) or any(x in self._fills for x in node.outputs):
            return "an attention-mask fill passes through it (no range can hold it; see passes/masks.py)"
        if any(x in self._mask_arithmetic for x in node.outputs):
            return "it computes an attention mask's fill"
        return ""

    def _spec_node(self, graph: Graph, node: Node, role: OpRole, act: PlainSpec, quantized: set[int]) -> None:
        internal = _fused_internal(graph, node, quantized)
        weight = PlainSpec(np.dtype(self.scheme.weight_dtype), self.scheme.weight_symmetric,
                           reduce_range=self.scheme.reduce_range)
        owner = graph.node(node.meta[Meta.FUSED_INTO]) if node.meta.get(Meta.FUSED_INTO) in quantized else node
        if self._bits.get(node_key(owner)) == 16:  # -mc: this node (or the op it is fused into) runs at 16 bits
            act, weight = PlainSpec(np.dtype(np.int16), True), PlainSpec(np.dtype(np.int16), True)
        mode = self._modes.get(node_key(owner))
        for x in _data_inputs(graph, node, role):
            v = graph.value(x)
            if x in internal or Meta.QSPEC in v.meta:
                continue
            if v.const is not None and node.op_type not in UNIFY_OPS:
                v.meta[Meta.QSPEC] = dataclasses.replace(weight, axis=_weight_axis(graph, node, x, self.scheme))
            elif role.output == "shared" and x in graph.inputs and self._read_high(graph, x, quantized):
                v.meta[Meta.QSPEC] = PlainSpec(np.dtype(np.int16), True)
            else:
                v.meta[Meta.QSPEC] = act
                if mode:
                    v.meta[Meta.QMETHOD] = mode
        if role.weight is not None and len(node.inputs) > role.weight and node.inputs[role.weight]:
            w = graph.value(node.inputs[role.weight])
            _check_finite(graph, node, role)
            if Meta.QSPEC not in w.meta:
                axis = _weight_axis(graph, node, w.name, self.scheme) if w.const is not None else None
                w.meta[Meta.QSPEC] = dataclasses.replace(weight, axis=axis) if w.const is not None else act
            if role.bias is not None and len(node.inputs) > role.bias and node.inputs[role.bias] \
                    and self.scheme.quantize_bias:
                b = graph.value(node.inputs[role.bias])
                if b.const is not None and Meta.QSPEC not in b.meta and _is_bias(graph, node, b.const):
                    b.meta[Meta.QSPEC] = DerivedSpec((node.inputs[0], w.name),
                                                     axis=0 if w.meta[Meta.QSPEC].axis is not None else None)
        accumulator_out = not self.scheme.requantize_outputs and (
            role.weight is not None or node.op_type == "MatMul" or node.meta.get(Meta.FUSED_INTO) in quantized)
        for i, out in enumerate(node.outputs):
            if not out or out in internal or graph.value(out).elem_type not in (FLOAT, 0):
                continue
            if accumulator_out and out in graph.outputs and len(graph.consumers(out)) == 0:
                continue
            if owner.op_type in self.scheme.float_output_ops:
                continue  # onnxruntime's OpTypesToExcludeOutputQuantization: a quantized reader still specs it
            v = graph.value(out)
            v.meta[Meta.QSPEC] = SharedSpec(node.inputs[0]) if role.output == "shared" else act
            if mode and role.output != "shared":
                v.meta[Meta.QMETHOD] = mode


    def _read_high(self, graph: Graph, value: str, quantized: set[int]) -> bool:
        """Whether an op at 16 bits reads ``value`` through pass-through ops only: a model input
        that an Unsqueeze or Transpose reads first takes the precision of the op behind it, as
        it would reading the input itself."""
        seen: set[int] = set()
        todo = [value]
        while todo:
            for n in graph.consumer_nodes(todo.pop()):
                if n.id not in quantized or n.id in seen:
                    continue
                seen.add(n.id)
                if _role(graph, n).output == "shared":
                    todo += [o for o in n.outputs if o]
                    continue
                owner = graph.node(n.meta[Meta.FUSED_INTO]) if n.meta.get(Meta.FUSED_INTO) in quantized else n
                if self._bits.get(node_key(owner)) == 16:
                    return True
        return False


def clear_specs(graph: Graph) -> Graph:
    """``graph`` as it was before AssignQuantSpecs (every mark it leaves removed), to be specced
    again under another scheme (mixed precision)."""
    for node in graph.nodes():
        node.meta.pop(Meta.QUANTIZED, None)
        node.meta.pop(Meta.MIXABLE, None)
    for v in graph.values():
        v.meta.pop(Meta.QSPEC, None)
        v.meta.pop(Meta.QMETHOD, None)
    return graph


def node_key(node: Node) -> str:
    """The name a node goes by in mixed-precision templates (unnamed nodes: op#id)."""
    return node.name or f"{node.op_type}#{node.id}"


def _check_finite(graph: Graph, node: Node, role: OpRole) -> None:
    for i in (role.weight, role.bias):
        if i is not None and i < len(node.inputs) and node.inputs[i]:
            _check_constant(graph, node, node.inputs[i])


def _check_constant(graph: Graph, node: Node, name: str) -> None:
    w = graph.constant(name)
    if w is not None and w.dtype.kind == "f" and not np.isfinite(w).all():
        bad = "NaN" if np.isnan(w).any() else "Inf"
        raise PtqcError(f"weight {name!r} of {node.op_type} {node.name!r} contains {bad}")


def check_weights(graph: Graph) -> None:
    """NaN/Inf in a weight, bias or BatchNormalization parameter is bad input (run before BN
    folding renames them, so the message names the model's own tensor)."""
    for node in graph.nodes():
        role = OP_ROLES.get(node.op_type)
        if node.op_type == "BatchNormalization":
            for name in node.inputs[1:]:
                _check_constant(graph, node, name)
        elif role is not None:
            _check_finite(graph, node, role)


def _role(graph: Graph, node: Node) -> OpRole | None:
    role = OP_ROLES.get(node.op_type)
    if node.op_type == "Div" and not _positive_scalar(graph, node.inputs[1] if len(node.inputs) > 1 else ""):
        return None
    if node.op_type == "Resize" and node.attrs.get("mode", "nearest") != "nearest":
        return _OWN
    if node.op_type == "Pad" and node.attrs.get("mode", "constant") == "constant":
        pad_value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        if pad_value and (graph.constant(pad_value) is None or np.any(graph.constant(pad_value) != 0)):
            return _OWN
        if node.attrs.get("value", 0.0) != 0.0:
            return _OWN
    return role


def _positive_scalar(graph: Graph, name: str) -> bool:
    c = graph.constant(name) if name else None
    return c is not None and c.size == 1 and c.dtype.kind == "f" and float(c.reshape(-1)[0]) > 0


def _follows_quantized(graph: Graph, node: Node, quantized: set[int]) -> str:
    """A pass-through op runs quantized only behind a quantized tensor (nodes are decided in
    topological order, so its producer is already decided)."""
    src = graph.value(node.inputs[0])
    if src.const is not None:
        return "its input is a constant"
    producer = graph.producer(src)
    if src.name in graph.inputs or (producer is not None and producer.id in quantized):
        return ""
    return "its input is not quantized"


def _data_inputs(graph: Graph, node: Node, role: OpRole) -> list[str]:
    if role.data is None:
        return [x for x in node.inputs if x and graph.value(x).elem_type == FLOAT]
    data = [node.inputs[i] for i in role.data if i < len(node.inputs) and node.inputs[i]]
    if node.op_type in RECURRENT:  # a constant initial state goes in as it is (lowering)
        data = [x for x in data if x in node.inputs[:3] or graph.constant(x) is None]
    return data


def _fused_internal(graph: Graph, node: Node, quantized: set[int]) -> set[str]:
    """The tensor between a producer and its fused activation, when both run quantized: it
    never leaves the accumulator, so it gets no Q/DQ (the activation's range covers both)."""
    if Meta.FUSED_ACTIVATION in node.meta and node.meta[Meta.FUSED_ACTIVATION] in quantized:
        return {node.outputs[0]}
    if Meta.FUSED_INTO in node.meta and node.meta[Meta.FUSED_INTO] in quantized:
        return {node.inputs[0]}
    return set()


def _weight_axis(graph: Graph, node: Node, name: str, scheme: QuantScheme) -> int | None:
    """Per output channel: Conv axis 0, ConvTranspose axis 1 (one group), Gemm/MatMul the
    output features; None (per tensor) for anything else or when per-channel is off."""
    w = graph.constant(name)
    if not scheme.per_channel or w is None or w.ndim < 2:
        return None
    if node.op_type == "Conv" and name == node.inputs[1]:
        return 0
    if node.op_type == "ConvTranspose" and name == node.inputs[1]:
        return 1 if node.attrs.get("group", 1) == 1 else None
    if node.op_type == "Gemm" and name == node.inputs[1]:
        return 0 if node.attrs.get("transB", 0) else 1
    if node.op_type == "MatMul" and len(node.inputs) > 1 and name == node.inputs[1] and w.ndim == 2:
        return 1
    if node.op_type in RECURRENT and name in node.inputs[1:3] and w.ndim == 3:
        return 1  # [directions, gates x hidden, in]: per gate row
    return None


def _is_bias(graph: Graph, node: Node, b: np.ndarray) -> bool:
    """A 1-D per-output-channel vector added with weight 1: then its scale is derived."""
    if b.ndim != 1 or b.dtype != np.float32:
        return False
    if node.op_type == "Gemm":
        return node.attrs.get("alpha", 1.0) == 1.0 and node.attrs.get("beta", 1.0) == 1.0
    return True
