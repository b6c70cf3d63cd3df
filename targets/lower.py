"""Lowering: a QDQ graph (ptqc's, or any tool's, e.g. onnxruntime's ``quantize_static``) →
an integer :class:`~ptqc.runtime.program.Program` for a :class:`~ptqc.targets.base.Target`.

How a QDQ graph reads: an integer tensor ``t_q`` enters an op through DequantizeLinear and
the op's float result leaves through QuantizeLinear.  An op runs in integer when the target
lists it, each quantized input comes through a per-tensor DQ (weights and biases: DQ of a
constant), and its output goes only into Q nodes of one quantization (after an optional
fused Relu/Clip, which becomes saturation).  The op then reads the DQ inputs' integers and
writes the Q output's integers directly; the Q/DQ pair is folded away.  Every other op stays
float: its DQ inputs become ``dequantize`` ops and its Q outputs ``quantize`` ops, and
:attr:`Lowering.float_reasons` says why, per node.  A DQ feeding straight into a Q is a
``rescale``.  Ops whose results nothing reads are dropped at the end.

Quantized types: int8/uint8/int16/uint16 activations; weights also int4/uint4 (read as
int8/uint8 codes of the same values).  A block-wise weight (``block_size``) keeps its op
float (its DequantizeLinear is exact); float8 Q/DQ, and int4 activations, are ModelErrors
naming the node and the type.  A constant-mode Pad's value is quantized by the output's Q.
"""
from __future__ import annotations

import logging

import numpy as np

from ptqc.errors import ConfigError, ModelError
from ptqc.ir import Graph, Node
from ptqc.onnx_io import import_model
from ptqc.runtime.kernels.requant import ROUNDING
from ptqc.runtime.program import (Conv, Dequantize, Float, Move, Op, Program, Quantize, Recurrent, Rescale, RescaleOp,
                                  TensorInfo)
from ptqc.runtime.reference import run_node, supports
from ptqc.targets.base import DATA_MOVEMENT, Target
from ptqc.targets.lower_common import (DQ_OPS as _DQ, NIBBLE_TYPES, Q_OPS as _Q, NotInteger, Output, as_codes,
                                       check_activation_type, clamp_codes, clip_bounds, is_op, key as _key, np_dtype,
                                       rescale, type_name)
from ptqc.targets.lower_ops import LOWERERS, lower_lut, lower_move
from ptqc.targets.lower_recurrent import OPS as RECURRENT_OPS, lower_recurrent

log = logging.getLogger("ptqc.lower")

_INT_TYPES = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16)}


def lower(model, target: Target, lut_len: int | None = None) -> Program:
    """Lower a QDQ model (path, bytes, ModelProto or Graph) for ``target``.  A Q/DQ the
    simulator cannot read (computed or per-channel activation scales) is a ModelError naming
    the node; a width the family does not run is a ConfigError naming rule bit-width."""
    graph = model if isinstance(model, Graph) else import_model(model)
    try:
        return Lowering(graph, target, lut_len).run()
    except NotInteger as e:
        raise ModelError(f"cannot lower for {target.name}: {e}") from None


class Lowering:
    """The program being built (``ops``, ``tensors``, ``constants``) and the integer views of
    the QDQ graph the op lowerers (``targets/lower_ops.py``, ``lower_recurrent.py``) read
    through: ``int_input``, ``int_const``, ``int_operand``, ``real_const``, ``int_output``."""

    def __init__(self, graph: Graph, target: Target, lut_len: int | None = None):
        self.g = graph
        self.target = target
        self.lut_len = target.default_lut_len if lut_len is None else lut_len
        target.check_lut_len(self.lut_len)
        self.ops: list[Op] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.produced: set[str] = set()
        self.absorbed: set[int] = set()  # node ids folded into an integer op (fused activations)
        self.float_reasons: dict[str, str] = {}
        self.mode = ROUNDING[target.rounding]

    # ------------------------------------------------------------------ driver
    def run(self) -> Program:
        g = self.g
        inputs = []
        for name in g.inputs:
            v = g.value(name)
            if v.dtype in _INT_TYPES:  # arrives quantized (-qid): its DQ says how
                dq = [n for n, _ in g.consumers(name) if self._is(n, _DQ)]
                if dq:
                    self.tensors[name] = self._dq_info(dq[0])
            inputs.append(name)
        self.produced.update(inputs)
        order = g.topological_order()
        for node in order:
            if self._is(node, _Q + _DQ):
                self._check_qtype(node)
        for node in order:
            if node.id in self.absorbed:
                continue
            if self._is(node, _DQ):
                self._lower_dq(node)
            elif self._is(node, _Q):
                self._lower_q(node)
            else:
                self._lower_compute(node)
        ops = self._prune(list(g.outputs))
        self._check_bits(ops)
        self._check_float(ops)
        for op_type, name in [(op.op_type, op.node) for op in ops if op.kind == "float"]:
            log.info("float on %s: %s %r (%s)", self.target.name, op_type, name, self.float_reasons.get(name, ""))
        used = {x for op in ops for x in op.inputs} | set(g.outputs)
        used |= {k for op in ops for k in op.constant_keys()}
        consts = {k: v for k, v in self.constants.items() if k in used}
        return Program(inputs, list(g.outputs), ops, self.tensors, consts, self.mode, g.opset, self.target.name)

    def _check_bits(self, ops: list[Op]) -> None:
        """Every integer tensor and weight must have a width the family runs (rule bit-width)."""
        for op in ops:
            names = [o for o in op.outputs if o in self.tensors] + ([op.w] if isinstance(op, (Conv, Recurrent)) else [])
            if op.kind in ("matmul", "add", "mul", "concat"):  # constant weights / operands among the inputs
                names += [x for x in op.inputs if x in self.constants and (x in self.tensors or op.kind == "matmul")]
            for name in names:
                data = self.constants.get(name)
                bits = np.dtype(data.dtype).itemsize * 8 if data is not None else self.tensors[name].bits
                if bits not in self.target.bit_widths:
                    raise ConfigError(f"node {op.node!r} ({op.op_type}): {name!r} is {bits}-bit: rule bit-width: "
                                      f"{self.target.name} runs "
                                      f"{'/'.join(str(b) for b in sorted(self.target.bit_widths))}-bit only")

    def _check_float(self, ops: list[Op]) -> None:
        """Every op left in float must be one the reference executor runs: refused here, naming
        the node, rather than failing in the middle of a run (QOperator models, weight-only
        contrib ops, control flow)."""
        for op in ops:
            domain = op.domain if isinstance(op, Float) else ""
            if op.kind == "float" and not supports(op.op_type, domain):
                kind = "a QOperator-format op: write the model as QDQ" if op.op_type.startswith("QLinear") or \
                    op.op_type in ("QGemm", "QAttention", "QEmbedLayerNormalization") else \
                    "no integer lowering, and the reference executor cannot run it in float"
                raise ModelError(f"cannot lower for {self.target.name}: node {op.node!r} "
                                 f"({domain + '::' if domain else ''}{op.op_type}): {kind}")

    def _prune(self, outputs: list[str]) -> list[Op]:
        need = set(outputs)
        keep = []
        for op in reversed(self.ops):
            if any(o in need for o in op.outputs):
                keep.append(op)
                need.update(x for x in op.inputs if x)
        return keep[::-1]

    # ------------------------------------------------------------------ Q / DQ
    _is = staticmethod(is_op)

    def const(self, name: str) -> np.ndarray | None:
        return self.g.constant(name) if name else None

    def _codes(self, dq: Node) -> np.ndarray | None:
        """The integer constant a DQ reads: an integer initializer, or a Q of a float constant
        (onnxruntime's QDQ form for weights held in Constant nodes), quantized here."""
        codes = self.const(dq.inputs[0])
        q = self.g.producer(dq.inputs[0])
        if codes is None and q is not None and self._is(q, _Q) and self.const(q.inputs[0]) is not None:
            inputs = [self.const(x) if x else None for x in q.inputs]
            try:
                codes = run_node("QuantizeLinear", inputs, q.attrs, opset=max(self.g.opset, 13), domain=q.domain)[0]
            except Exception as e:  # noqa: BLE001 - e.g. a type the reference executor does not quantize to
                raise NotInteger(f"QuantizeLinear {_key(q)!r} of a constant: {e}") from None
        return as_codes(codes)

    def real_const(self, name: str) -> np.ndarray | None:
        """The float value of a constant input, also when it arrives through DQ (of integer
        codes, or of a Q of a float constant: onnxruntime quantizes some parameters that way),
        dequantized in float64; None when the input is computed."""
        c = self.const(name)
        if c is not None or not name:
            return c
        try:
            codes, scale, zp, axis = self.int_const(name)
        except NotInteger:
            return None
        if scale.size > 1:
            shape = [1] * codes.ndim
            shape[axis % codes.ndim] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return (codes.astype(np.float64) - zp) * scale

    def _params(self, node: Node) -> tuple[np.ndarray, np.ndarray, int]:
        """(scale, zero point, axis); the zero point keeps the quantized type (int4 too)."""
        scale = self.const(node.inputs[1])
        if scale is None:
            raise NotInteger(f"{node.op_type} {node.name!r} has a computed scale")
        zp = self.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if zp is None:
            zp = np.zeros((), self._qdtype(node) or np.dtype(np.uint8))
        return scale.astype(np.float64), zp, int(node.attrs.get("axis", 1))

    def _qdtype(self, node: Node, depth: int = 0) -> np.dtype | None:
        """The quantized type of a Q (output) or DQ (input) node, as numpy (ml_dtypes for
        int4/float8): the zero point's type; without one, a Q's ``output_dtype`` (opset 21,
        default uint8) and a DQ's input type (constant, producing Q or declared type)."""
        if len(node.inputs) > 2 and node.inputs[2]:
            zp = self.const(node.inputs[2])
            v = self.g.value(node.inputs[2]) if self.g.has_value(node.inputs[2]) else None
            if zp is not None:
                return np.dtype(zp.dtype)
            return v.dtype if v is not None else None
        if self._is(node, _Q):
            to = int(node.attrs.get("output_dtype", 0) or 0)
            return np_dtype(to) if to else np.dtype(np.uint8)
        x = node.inputs[0]
        c = self.const(x)
        if c is not None:
            return np.dtype(c.dtype)
        p = self.g.producer(x)
        if p is not None and self._is(p, _Q) and depth < 4:
            return self._qdtype(p, depth + 1)
        return self.g.value(x).dtype if self.g.has_value(x) else None

    def _check_qtype(self, node: Node) -> None:
        """Q/DQ of a float type (float8...) cannot be simulated in integer: one-line refusal."""
        dtype = self._qdtype(node)
        if dtype is not None and dtype.kind not in "iu" and dtype.name not in NIBBLE_TYPES:
            raise NotInteger(f"{node.op_type} {_key(node)!r}: {type_name(dtype)} quantization: the integer simulator "
                             f"runs integer types only (int4/int8/int16, unsigned too)")

    def q_info(self, q: Node) -> TensorInfo:
        scale, zp, _ = self._params(q)
        if scale.size != 1:
            raise NotInteger("per-channel activation quantization")
        check_activation_type(zp)
        return TensorInfo(np.dtype(zp.dtype), float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), self._source(q))

    def _source(self, q: Node) -> str:
        """The float model's name of the tensor ``q`` quantizes: its input, or, when the QDQ
        model renamed a graph output's producer (``y_float``), the graph output's name."""
        out = q.outputs[0]
        if out in self.g.outputs:
            return out
        for user in self.g.consumer_nodes(out):
            if self._is(user, _DQ) and user.outputs[0] in self.g.outputs:
                return user.outputs[0]
        return q.inputs[0]

    def _dq_info(self, dq: Node) -> TensorInfo:
        scale, zp, _ = self._params(dq)
        if scale.size != 1:
            raise NotInteger("per-channel activation quantization")
        check_activation_type(zp)
        source = dq.inputs[0]
        prod = self.g.producer(source)
        if prod is not None and self._is(prod, _Q):
            source = self._source(prod)
        return TensorInfo(np.dtype(zp.dtype), float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), source)

    def _lower_dq(self, dq: Node) -> None:
        scale, zp, axis = self._params(dq)
        src = dq.inputs[0]
        data = self.const(src)
        if data is not None:
            self.constants[src] = as_codes(data)
        self.constants[dq.inputs[1]] = scale
        self.constants[_key(dq) + "::zp"] = zp.astype(np.int64)
        self.emit(Dequantize((src,), (dq.outputs[0],), _key(dq), dq.op_type, dq.inputs[1], _key(dq) + "::zp", axis,
                             int(dq.attrs.get("block_size", 0) or 0)))

    def _lower_q(self, q: Node) -> None:
        out = q.outputs[0]
        if out in self.produced:
            return
        try:
            info = self.q_info(q)
        except NotInteger as e:
            raise NotInteger(f"QuantizeLinear {_key(q)!r}: {e}") from None
        self.tensors[out] = info
        src = self.g.producer(q.inputs[0])
        if src is not None and self._is(src, _DQ) and self._codes(src) is None:
            try:
                inp = self.int_input(q.inputs[0])
            except NotInteger:
                inp = None
            if inp is not None:  # DQ -> Q: one integer rescale
                self.emit(RescaleOp((inp[0],), (out,), _key(q), q.op_type,
                                    self.rescale(inp[1], info, info.qmin, info.qmax)))
                return
        c = self.const(q.inputs[0])
        if c is not None:
            self.constants[q.inputs[0]] = c
        self.emit(Quantize((q.inputs[0],), (out,), _key(q), q.op_type))

    def emit(self, op: Op) -> None:
        self.ops.append(op)
        self.produced.update(op.outputs)

    def rescale(self, src: TensorInfo, dst: TensorInfo, lo: int, hi: int) -> Rescale:
        """Codes of ``src`` to codes of ``dst`` in ``[lo, hi]`` at the family's elementwise width."""
        return rescale(src, dst, lo, hi, self.target.elementwise_multiplier_bits)

    # ------------------------------------------------------------------ integer views of a node
    def int_input(self, name: str) -> tuple[str, TensorInfo]:
        """The integer tensor behind float input ``name`` (a per-tensor DQ of an activation)."""
        dq = self.g.producer(name)
        if dq is None or not self._is(dq, _DQ):
            raise NotInteger(f"input {name!r} is not dequantized from integers")
        if self._codes(dq) is not None:
            raise NotInteger(f"input {name!r} is a quantized constant")
        return dq.inputs[0], self._dq_info(dq)

    def int_const(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(codes, scale, zero point, axis) of a constant read through a DQ."""
        dq = self.g.producer(name)
        codes = self._codes(dq) if dq is not None and self._is(dq, _DQ) else None
        if codes is None:
            raise NotInteger(f"input {name!r} is not a quantized constant")
        block = int(dq.attrs.get("block_size", 0) or 0)
        if block:
            raise NotInteger(f"input {name!r} is quantized block-wise (block_size {block}): one scale per block of "
                             f"the reduction axis has no integer accumulation")
        scale, zp, axis = self._params(dq)
        return codes, scale, zp.astype(np.int64), axis

    def int_operand(self, name: str) -> tuple[str, TensorInfo]:
        """An activation or a per-tensor quantized constant, as a program tensor."""
        try:
            return self.int_input(name)
        except NotInteger:
            c = self.const(name)
            if c is not None and c.dtype.kind == "f":  # a float constant the QDQ model left float
                return self.float_const_operand(name, c)
            codes, scale, zp, _ = self.int_const(name)
            if scale.size != 1:
                raise NotInteger(f"input {name!r}: per-channel constant operand") from None
            key = name + "::codes"
            self.constants[key] = codes
            info = TensorInfo(np.dtype(codes.dtype), float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), name)
            self.tensors[key] = info
            return key, info

    def float_const_operand(self, name: str, c: np.ndarray) -> tuple[str, TensorInfo]:
        """A float constant operand quantized here: symmetric, per tensor, at the family's
        widest width."""
        dtype = np.dtype(np.int16 if 16 in self.target.bit_widths else np.int8)
        peak = float(np.abs(c).max(initial=0.0)) or 1.0
        info = TensorInfo(dtype, peak / np.iinfo(dtype).max, 0, name)
        key = name + "::codes"
        self.constants[key] = info.quantize(c)
        self.tensors[key] = info
        return key, info

    def int_output(self, node: Node) -> Output:
        """The integer side of ``node``'s output: it goes only into Q nodes of one
        quantization, possibly through a BatchNormalization (after a Conv) and a fused Relu/Clip."""
        if len(node.outputs) < 1 or any(node.outputs[1:]) and node.op_type not in ("MaxPool", "Dropout"):
            raise NotInteger("more than one output")
        y = node.outputs[0]
        absorbed: list[Node] = []
        affine = None
        users = self.g.consumer_nodes(y)
        if y in self.g.outputs:
            raise NotInteger("its float output is a graph output")
        if node.op_type in ("Conv", "ConvTranspose") and len(users) == 1 and users[0].op_type == "BatchNormalization":
            bn = users[0]  # an unfused BN (onnxruntime's QDQ keeps them): folded into the requantization
            affine = self.bn_affine(bn)
            absorbed.append(bn)
            y = bn.outputs[0]
            users = self.g.consumer_nodes(y)
            if y in self.g.outputs:
                raise NotInteger("its BatchNormalization's float output is a graph output")
        lo_real, hi_real = -np.inf, np.inf
        if len(users) == 1 and users[0].op_type in self.target.fused_activations and not self._is(users[0], _Q) \
                and users[0].op_type in ("Relu", "Clip") and node.op_type not in ("Relu", "Clip"):
            act = users[0]
            lo_real, hi_real = clip_bounds(act, self.const)
            absorbed.append(act)
            y = act.outputs[0]
            users = self.g.consumer_nodes(y)
            if y in self.g.outputs:
                raise NotInteger("its fused activation's float output is a graph output")
        if not users or not all(self._is(u, _Q) for u in users):
            raise NotInteger("its output is not (only) quantized")
        infos = [self.q_info(u) for u in users]
        info = infos[0]
        if any((i.dtype, i.scale, i.zero_point) != (info.dtype, info.scale, info.zero_point) for i in infos):
            raise NotInteger("its output is quantized in several ways")
        lo, hi = clamp_codes(info, info.qmin, info.qmax, lo_real, hi_real)
        return Output(users[0].outputs[0], info, lo, hi, affine, absorbed + users[1:])

    def bn_affine(self, bn: Node) -> tuple[np.ndarray, np.ndarray]:
        """BatchNormalization as y = a·x + b per channel (inference form)."""
        params = [self.real_const(x) for x in bn.inputs[1:5]]
        if any(p is None for p in params) or len(bn.outputs) > 1 and any(bn.outputs[1:]):
            raise NotInteger("BatchNormalization with computed parameters or training outputs")
        gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        a = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        if np.any(a == 0):
            raise NotInteger("BatchNormalization with a zero gain")
        return a, beta - mean * a

    # ------------------------------------------------------------------ compute nodes
    def _lower_compute(self, node: Node) -> None:
        reason = None
        if node.domain not in ("", "ai.onnx"):
            reason = f"domain {node.domain}"
        elif not self.target.runs_integer(node.op_type):
            reason = f"{self.target.name} runs no integer {node.op_type}"
        else:
            try:
                if node.op_type in RECURRENT_OPS:  # several outputs, each into its own Q
                    lower_recurrent(self, node, _key(node))
                    return
                self._lower_integer(node)
                return
            except NotInteger as e:
                reason = str(e)
        self.float_reasons[_key(node)] = reason
        self.emit(Float(tuple(node.inputs), tuple(node.outputs), _key(node), node.op_type, dict(node.attrs),
                        node.domain))
        for name in node.inputs:
            c = self.const(name)
            if c is not None:
                self.constants[name] = c

    def _lower_integer(self, node: Node) -> None:
        """``node`` as one integer op (its lowerer's), the Q/DQ around it folded away."""
        lowerer = LOWERERS.get(node.op_type)
        if lowerer is None and node.op_type in self.target.lut_ops:
            lowerer = lower_lut
        elif lowerer is None and node.op_type in DATA_MOVEMENT:
            lowerer = lower_move
        if lowerer is None:
            raise NotInteger("no integer lowering")
        y = self.int_output(node)
        self.emit(lowerer(self, node, y))
        self.tensors[y.name] = y.info
        for extra in y.absorbed:
            if self._is(extra, _Q):  # a second Q of the same quantization
                self.emit(Move((y.name,), (extra.outputs[0],), _key(extra), "Identity", {}))
                self.tensors[extra.outputs[0]] = y.info
            self.absorbed.add(extra.id)
