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

import dataclasses
import logging
from typing import Any, Callable

import numpy as np
import onnx

from ptqc.errors import ConfigError, ModelError
from ptqc.ir import Graph, Node
from ptqc.onnx_io import import_model
from ptqc.runtime.kernels.lut import make_table
from ptqc.runtime.kernels.requant import ROUNDING, quantize_multiplier
from ptqc.runtime.kernels.softmax import make_exp_table
from ptqc.runtime.kernels.elementwise import add_multipliers
from ptqc.runtime.program import Op, Program, TensorInfo
from ptqc.runtime.reference import run_node, supports
from ptqc.targets.base import DATA_MOVEMENT, Target
from ptqc.targets.lower_recurrent import OPS as RECURRENT_OPS, lower_recurrent

log = logging.getLogger("ptqc.lower")

_Q = ("QuantizeLinear",)
_DQ = ("DequantizeLinear",)
_QDOMAINS = ("", "ai.onnx", "com.microsoft")
_INT_TYPES = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16)}
_NIBBLE_TYPES = {"int4": np.int8, "uint4": np.uint8}  # ml_dtypes names onnx reads INT4/UINT4 as
RESIZE_FRAC_BITS = 10  # fixed-point weights of linear Resize (per resized axis)
AFFINE_FRAC_BITS = 8  # fraction bits of a standalone BN's offset


class NotInteger(Exception):
    """Why one node stays float (a reason, not an error)."""


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
        self._affine: tuple[np.ndarray, np.ndarray] | None = None  # a BN folded into the op being lowered
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
        used |= {v for op in ops for v in op.attrs.values() if isinstance(v, str)}
        consts = {k: v for k, v in self.constants.items() if k in used}
        return Program(inputs, list(g.outputs), ops, self.tensors, consts, self.mode, g.opset, self.target.name)

    def _check_bits(self, ops: list[Op]) -> None:
        """Every integer tensor and weight must have a width the family runs (rule bit-width)."""
        for op in ops:
            names = [o for o in op.outputs if o in self.tensors] + [op.attrs[k] for k in ("w",) if k in op.attrs]
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
            domain = op.attrs.get("domain", "") if op.kind == "float" else ""
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
    @staticmethod
    def _is(node: Node, names: tuple[str, ...]) -> bool:
        return node.op_type in names and node.domain in _QDOMAINS

    def _const(self, name: str) -> np.ndarray | None:
        return self.g.constant(name) if name else None

    def _codes(self, dq: Node) -> np.ndarray | None:
        """The integer constant a DQ reads: an integer initializer, or a Q of a float constant
        (onnxruntime's QDQ form for weights held in Constant nodes), quantized here."""
        codes = self._const(dq.inputs[0])
        q = self.g.producer(dq.inputs[0])
        if codes is None and q is not None and self._is(q, _Q) and self._const(q.inputs[0]) is not None:
            inputs = [self._const(x) if x else None for x in q.inputs]
            try:
                codes = run_node("QuantizeLinear", inputs, q.attrs, opset=max(self.g.opset, 13), domain=q.domain)[0]
            except Exception as e:  # noqa: BLE001 - e.g. a type the reference executor does not quantize to
                raise NotInteger(f"QuantizeLinear {_key(q)!r} of a constant: {e}") from None
        return _as_codes(codes)

    def _real_const(self, name: str) -> np.ndarray | None:
        """The float value of a constant input, also when it arrives through DQ (of integer
        codes, or of a Q of a float constant: onnxruntime quantizes some parameters that way),
        dequantized in float64; None when the input is computed."""
        c = self._const(name)
        if c is not None or not name:
            return c
        try:
            codes, scale, zp, axis = self._int_const(name)
        except NotInteger:
            return None
        if scale.size > 1:
            shape = [1] * codes.ndim
            shape[axis % codes.ndim] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return (codes.astype(np.float64) - zp) * scale

    def _params(self, node: Node) -> tuple[np.ndarray, np.ndarray, int]:
        """(scale, zero point, axis); the zero point keeps the quantized type (int4 too)."""
        scale = self._const(node.inputs[1])
        if scale is None:
            raise NotInteger(f"{node.op_type} {node.name!r} has a computed scale")
        zp = self._const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if zp is None:
            zp = np.zeros((), self._qdtype(node) or np.dtype(np.uint8))
        return scale.astype(np.float64), zp, int(node.attrs.get("axis", 1))

    def _qdtype(self, node: Node, depth: int = 0) -> np.dtype | None:
        """The quantized type of a Q (output) or DQ (input) node, as numpy (ml_dtypes for
        int4/float8): the zero point's type; without one, a Q's ``output_dtype`` (opset 21,
        default uint8) and a DQ's input type (constant, producing Q or declared type)."""
        if len(node.inputs) > 2 and node.inputs[2]:
            zp = self._const(node.inputs[2])
            v = self.g.value(node.inputs[2]) if self.g.has_value(node.inputs[2]) else None
            if zp is not None:
                return np.dtype(zp.dtype)
            return v.dtype if v is not None else None
        if self._is(node, _Q):
            to = int(node.attrs.get("output_dtype", 0) or 0)
            return _np_dtype(to) if to else np.dtype(np.uint8)
        x = node.inputs[0]
        c = self._const(x)
        if c is not None:
            return np.dtype(c.dtype)
        p = self.g.producer(x)
        if p is not None and self._is(p, _Q) and depth < 4:
            return self._qdtype(p, depth + 1)
        return self.g.value(x).dtype if self.g.has_value(x) else None

    def _check_qtype(self, node: Node) -> None:
        """Q/DQ of a float type (float8...) cannot be simulated in integer: one-line refusal."""
        dtype = self._qdtype(node)
        if dtype is not None and dtype.kind not in "iu" and dtype.name not in _NIBBLE_TYPES:
            raise NotInteger(f"{node.op_type} {_key(node)!r}: {_type_name(dtype)} quantization: the integer simulator "
                             f"runs integer types only (int4/int8/int16, unsigned too)")

    def _q_info(self, q: Node) -> TensorInfo:
        scale, zp, _ = self._params(q)
        if scale.size != 1:
            raise NotInteger("per-channel activation quantization")
        _check_activation_type(zp)
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
        _check_activation_type(zp)
        source = dq.inputs[0]
        prod = self.g.producer(source)
        if prod is not None and self._is(prod, _Q):
            source = self._source(prod)
        return TensorInfo(np.dtype(zp.dtype), float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), source)

    def _lower_dq(self, dq: Node) -> None:
        scale, zp, axis = self._params(dq)
        src = dq.inputs[0]
        data = self._const(src)
        if data is not None:
            self.constants[src] = _as_codes(data)
        self.constants[dq.inputs[1]] = scale
        self.constants[_key(dq) + "::zp"] = zp.astype(np.int64)
        self._emit("dequantize", [src], [dq.outputs[0]], dq, scale=dq.inputs[1], zp=_key(dq) + "::zp", axis=axis,
                   block_size=int(dq.attrs.get("block_size", 0) or 0))

    def _lower_q(self, q: Node) -> None:
        out = q.outputs[0]
        if out in self.produced:
            return
        try:
            info = self._q_info(q)
        except NotInteger as e:
            raise NotInteger(f"QuantizeLinear {_key(q)!r}: {e}") from None
        self.tensors[out] = info
        src = self.g.producer(q.inputs[0])
        if src is not None and self._is(src, _DQ) and self._codes(src) is None:
            try:
                inp = self._int_input(q.inputs[0])
            except NotInteger:
                inp = None
            if inp is not None:  # DQ -> Q: one integer rescale
                self._emit("rescale", [inp[0]], [out], q, **self._rescale(inp[1], info, info.qmin, info.qmax))
                return
        c = self._const(q.inputs[0])
        if c is not None:
            self.constants[q.inputs[0]] = c
        self._emit("quantize", [q.inputs[0]], [out], q)

    def _emit(self, kind: str, inputs: list[str], outputs: list[str], node: Node, **attrs: Any) -> None:
        self.ops.append(Op(kind, list(inputs), list(outputs), attrs, _key(node), node.op_type))
        self.produced.update(outputs)

    # ------------------------------------------------------------------ integer views of a node
    def _int_input(self, name: str) -> tuple[str, TensorInfo]:
        """The integer tensor behind float input ``name`` (a per-tensor DQ of an activation)."""
        dq = self.g.producer(name)
        if dq is None or not self._is(dq, _DQ):
            raise NotInteger(f"input {name!r} is not dequantized from integers")
        if self._codes(dq) is not None:
            raise NotInteger(f"input {name!r} is a quantized constant")
        return dq.inputs[0], self._dq_info(dq)

    def _int_const(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
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

    def _int_operand(self, name: str) -> tuple[str, TensorInfo]:
        """An activation or a per-tensor quantized constant, as a program tensor."""
        try:
            return self._int_input(name)
        except NotInteger:
            c = self._const(name)
            if c is not None and c.dtype.kind == "f":  # a float constant the QDQ model left float
                return self._float_const_operand(name, c)
            codes, scale, zp, _ = self._int_const(name)
            if scale.size != 1:
                raise NotInteger(f"input {name!r}: per-channel constant operand") from None
            key = name + "::codes"
            self.constants[key] = codes
            info = TensorInfo(np.dtype(codes.dtype), float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), name)
            self.tensors[key] = info
            return key, info

    def _float_const_operand(self, name: str, c: np.ndarray) -> tuple[str, TensorInfo]:
        """A float constant operand quantized here: symmetric, per tensor, at the family's
        widest width."""
        dtype = np.dtype(np.int16 if 16 in self.target.bit_widths else np.int8)
        peak = float(np.abs(c).max(initial=0.0)) or 1.0
        info = TensorInfo(dtype, peak / np.iinfo(dtype).max, 0, name)
        key = name + "::codes"
        self.constants[key] = info.quantize(c)
        self.tensors[key] = info
        return key, info

    def _int_output(self, node: Node) -> tuple[str, TensorInfo, int, int, list[Node]]:
        """(integer output name, its quantization, lo, hi, absorbed nodes): the output goes
        only into Q nodes of one quantization, possibly through a fused Relu/Clip."""
        if len(node.outputs) < 1 or any(node.outputs[1:]) and node.op_type not in ("MaxPool", "Dropout"):
            raise NotInteger("more than one output")
        y = node.outputs[0]
        absorbed: list[Node] = []
        users = self.g.consumer_nodes(y)
        if y in self.g.outputs:
            raise NotInteger("its float output is a graph output")
        self._affine = None
        if node.op_type in ("Conv", "ConvTranspose") and len(users) == 1 and users[0].op_type == "BatchNormalization":
            bn = users[0]  # an unfused BN (onnxruntime's QDQ keeps them): folded into the requantization
            self._affine = self._bn_affine(bn)
            absorbed.append(bn)
            y = bn.outputs[0]
            users = self.g.consumer_nodes(y)
            if y in self.g.outputs:
                raise NotInteger("its BatchNormalization's float output is a graph output")
        lo_real, hi_real = -np.inf, np.inf
        if len(users) == 1 and users[0].op_type in self.target.fused_activations and not self._is(users[0], _Q) \
                and users[0].op_type in ("Relu", "Clip") and node.op_type not in ("Relu", "Clip"):
            act = users[0]
            lo_real, hi_real = _clip_bounds(act, self._const)
            absorbed.append(act)
            y = act.outputs[0]
            users = self.g.consumer_nodes(y)
            if y in self.g.outputs:
                raise NotInteger("its fused activation's float output is a graph output")
        if not users or not all(self._is(u, _Q) for u in users):
            raise NotInteger("its output is not (only) quantized")
        infos = [self._q_info(u) for u in users]
        first = infos[0]
        if any((i.dtype, i.scale, i.zero_point) != (first.dtype, first.scale, first.zero_point) for i in infos):
            raise NotInteger("its output is quantized in several ways")
        info = first
        lo, hi = info.qmin, info.qmax
        if np.isfinite(lo_real):
            lo = max(lo, int(info.quantize(np.float32(lo_real))))
        if np.isfinite(hi_real):
            hi = min(hi, int(info.quantize(np.float32(hi_real))))
        return users[0].outputs[0], info, lo, hi, absorbed + users[1:]

    # ------------------------------------------------------------------ compute nodes
    def _lower_compute(self, node: Node) -> None:
        reason = None
        if node.domain not in ("", "ai.onnx"):
            reason = f"domain {node.domain}"
        elif not self.target.runs_integer(node.op_type):
            reason = f"{self.target.name} runs no integer {node.op_type}"
        else:
            lowerer = _LOWERERS.get(node.op_type)
            if lowerer is None and node.op_type in self.target.lut_ops:
                lowerer = Lowering._lut
            elif lowerer is None and node.op_type in DATA_MOVEMENT:
                lowerer = Lowering._move
            try:
                if node.op_type in RECURRENT_OPS:  # several outputs, each into its own Q
                    lower_recurrent(self, node, _key(node), NotInteger)
                    return
                if lowerer is None:
                    raise NotInteger("no integer lowering")
                out, info, lo, hi, absorbed = self._int_output(node)
                n_before = len(self.ops)
                lowerer(self, node, out, info, lo, hi)
                self.tensors[out] = info
                for extra in absorbed:
                    if self._is(extra, _Q):  # a second Q of the same quantization
                        self._emit("move", [out], [extra.outputs[0]], extra, op_type="Identity", onnx_attrs={})
                        self.tensors[extra.outputs[0]] = info
                    self.absorbed.add(extra.id)
                assert len(self.ops) > n_before
                return
            except NotInteger as e:
                reason = str(e)
        self.float_reasons[_key(node)] = reason
        self._emit("float", list(node.inputs), list(node.outputs), node, op_type=node.op_type,
                   onnx_attrs=dict(node.attrs), domain=node.domain)
        for name in node.inputs:
            c = self._const(name)
            if c is not None:
                self.constants[name] = c

    def _bn_affine(self, bn: Node) -> tuple[np.ndarray, np.ndarray]:
        """BatchNormalization as y = a·x + b per channel (inference form)."""
        params = [self._real_const(x) for x in bn.inputs[1:5]]
        if any(p is None for p in params) or len(bn.outputs) > 1 and any(bn.outputs[1:]):
            raise NotInteger("BatchNormalization with computed parameters or training outputs")
        gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
        a = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        if np.any(a == 0):
            raise NotInteger("BatchNormalization with a zero gain")
        return a, beta - mean * a

    def _rescale(self, src: TensorInfo, dst: TensorInfo, lo: int, hi: int) -> dict:
        m, s = quantize_multiplier(src.scale / dst.scale, self.target.elementwise_multiplier_bits)
        return dict(zp_in=src.zero_point, mult=int(m), shift=int(s), zp_out=dst.zero_point, lo=lo, hi=hi)

    def _linear_requant(self, x: TensorInfo, w_scale: np.ndarray, w_bits: int, out: TensorInfo) -> dict:
        bits = max(x.bits, w_bits)
        m, s = quantize_multiplier(x.scale * w_scale.reshape(-1) / out.scale, self.target.mult_bits(bits))
        return dict(mult=m, shift=s, acc_bits=self.target.acc_bits(bits))

    def _bias(self, node: Node, idx: int, x: TensorInfo, w_scale: np.ndarray, n_out: int) -> str | None:
        if len(node.inputs) <= idx or not node.inputs[idx]:
            return None
        name = node.inputs[idx]
        real = self._real_const(name)
        if real is None:
            raise NotInteger(f"bias {name!r} is not constant")
        real = np.broadcast_to(np.asarray(real, np.float64).reshape(-1), (n_out,))
        key = name + "::acc"
        self.constants[key] = np.rint(real / (x.scale * np.broadcast_to(w_scale.reshape(-1), (n_out,)))).astype(np.int64)
        return key

    def _fold_affine(self, node: Node, w: str, w_scale: np.ndarray, xi: TensorInfo, n_out: int,
                     transpose: bool) -> tuple[str, np.ndarray, str]:
        """Fold a following BN (y = a·conv + b) into the requantization: |a| into the
        per-channel multiplier, sign(a) into the weight codes (exact: a sign flip of a
        zero-point-free code; a copy per node, as weights may be shared), and a·bias + b into
        the integer bias.  Returns (weight key, per-channel scale, bias key)."""
        a, b = (np.broadcast_to(v, (n_out,)) for v in self._affine)
        bias_real = np.zeros(n_out)
        if len(node.inputs) > 2 and node.inputs[2]:
            bias_real = self.constants[node.inputs[2] + "::acc"] * xi.scale * w_scale
        codes = self.constants[w]
        zp = self.constants[w + "::zp"]
        shape = [1] * codes.ndim
        shape[1 if transpose else 0] = -1
        if transpose and codes.shape[1] != n_out:
            raise NotInteger("grouped ConvTranspose followed by BatchNormalization")
        signed = (codes.astype(np.int64) - zp.reshape(shape)) * np.sign(a).astype(np.int64).reshape(shape)
        info = np.iinfo(codes.dtype)
        if signed.min() < info.min or signed.max() > info.max:
            raise NotInteger("BatchNormalization with a negative gain on a weight code that cannot be negated")
        folded = _key(node) + "::bn_codes"
        self.constants[folded] = signed.astype(codes.dtype)
        self.constants[folded + "::zp"] = np.zeros(n_out, np.int64)
        gain = np.abs(a)
        key = _key(node) + "::bn_bias"
        self.constants[key] = np.rint((a * bias_real + b) / (xi.scale * w_scale * gain)).astype(np.int64)
        return folded, w_scale * gain, key

    def _weight(self, name: str, axis_ok: tuple[int, ...], n_out: int) -> tuple[str, np.ndarray, int]:
        codes, scale, zp, axis = self._int_const(name)
        if scale.size != 1 and axis % codes.ndim not in axis_ok:
            raise NotInteger(f"weight {name!r} is quantized along axis {axis}")
        key = name + "::codes"
        self.constants[key] = codes
        self.constants[key + "::zp"] = np.broadcast_to(zp.reshape(-1), (n_out,)).astype(np.int64).copy()
        return key, np.broadcast_to(scale.reshape(-1), (n_out,)), np.dtype(codes.dtype).itemsize * 8

    def _conv(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        w_codes = self._int_const(node.inputs[1])[0]
        if w_codes.ndim not in (3, 4):
            raise NotInteger(f"{w_codes.ndim - 2}-D convolution")
        transpose = node.op_type == "ConvTranspose"
        group = int(node.attrs.get("group", 1))
        n_out = w_codes.shape[1] * group if transpose else w_codes.shape[0]
        if transpose and group != 1:
            raise NotInteger("grouped ConvTranspose")
        w, w_scale, w_bits = self._weight(node.inputs[1], (1,) if transpose else (0,), n_out)
        bias = self._bias(node, 2, xi, w_scale, n_out)
        if self._affine is not None:
            w, w_scale, bias = self._fold_affine(node, w, w_scale, xi, n_out, transpose)
        self._emit("conv_transpose" if transpose else "conv", [x], [out], node, w=w, w_zp=w + "::zp", bias=bias,
                   x_zp=xi.zero_point, zp_out=info.zero_point, lo=lo, hi=hi, onnx_attrs=dict(node.attrs),
                   **self._linear_requant(xi, w_scale, w_bits, info))

    def _matmul(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        a, ai = self._int_input(node.inputs[0])
        trans_b = False
        if node.op_type == "Gemm":
            at = node.attrs
            if at.get("transA", 0) or float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
                raise NotInteger("Gemm with transA, alpha or beta")
            trans_b = bool(at.get("transB", 0))
        try:
            b, bi = self._int_input(node.inputs[1])
            if trans_b:
                raise NotInteger("Gemm with a transposed activation B")
            n_out, b_scale, b_bits = 1, np.asarray([bi.scale]), bi.bits
            attrs = dict(b_zp=None, b_zp_scalar=bi.zero_point)
        except NotInteger:
            codes = self._int_const(node.inputs[1])[0]
            if codes.ndim != 2:
                raise NotInteger("a constant B that is not 2-D") from None
            n_out = codes.shape[0] if trans_b else codes.shape[1]
            b, b_scale, b_bits = self._weight(node.inputs[1], (0,) if trans_b else (1,), n_out)
            if trans_b:
                self.constants[b] = np.ascontiguousarray(self.constants[b].T)
            attrs = dict(b_zp=b + "::zp", b_zp_scalar=0)
        inputs = [a, b]
        bias = self._bias(node, 2, ai, b_scale, n_out) if node.op_type == "Gemm" else None
        self._emit("matmul", inputs, [out], node, a_zp=ai.zero_point, bias=bias, zp_out=info.zero_point, lo=lo,
                   hi=hi, **attrs, **self._linear_requant(ai, np.asarray(b_scale), b_bits, info))

    def _add(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        c = self._const(node.inputs[1])
        if node.op_type in ("Mul", "Div") and c is not None and c.size == 1 and float(c.reshape(-1)[0]) > 0:
            x, xi = self._int_input(node.inputs[0])  # times a positive float scalar: one rescale
            k = float(c.reshape(-1)[0])
            k = 1.0 / k if node.op_type == "Div" else k
            self._emit("rescale", [x], [out], node, **self._rescale(xi, dataclasses.replace(info, scale=info.scale / k),
                                                                    lo, hi))
            return
        if node.op_type == "Div":
            raise NotInteger("Div by something other than a positive constant scalar")
        (a, ai), (b, bi) = self._int_operand(node.inputs[0]), self._int_operand(node.inputs[1])
        if node.op_type == "Mul":
            bits = min(31, 62 - (ai.bits + 1) - (bi.bits + 1))  # (a-za)(b-zb)·M fits int64
            m, s = quantize_multiplier(ai.scale * bi.scale / info.scale, bits)
            self._emit("mul", [a, b], [out], node, za=ai.zero_point, zb=bi.zero_point, mult=int(m), shift=int(s),
                       zo=info.zero_point, lo=lo, hi=hi)
            return
        ma, mb, s = add_multipliers(ai.scale, bi.scale, info.scale, self.target.elementwise_multiplier_bits)
        if node.op_type == "Sub":
            mb = -mb
        self._emit("add", [a, b], [out], node, za=ai.zero_point, ma=int(ma), zb=bi.zero_point, mb=int(mb),
                   shift=int(s), zo=info.zero_point, lo=lo, hi=hi)

    def _batchnorm(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        """A standalone BN on integers: per channel, sign(a) on the codes, |a| into the
        multiplier, b into the integer offset."""
        x, xi = self._int_input(node.inputs[0])
        a, b = self._bn_affine(node)
        frac = AFFINE_FRAC_BITS  # the offset in 1/2^frac input codes, so |a| > 1 loses nothing
        m, s = quantize_multiplier(np.abs(a) * xi.scale / (info.scale * 2 ** frac), 31)
        key = _key(node)
        self.constants[key + "::sign"] = np.sign(a).astype(np.int64) << frac
        self.constants[key + "::acc"] = np.rint(b * 2 ** frac / (np.abs(a) * xi.scale)).astype(np.int64)
        self._emit("affine", [x], [out], node, zp_in=xi.zero_point, sign=key + "::sign", bias=key + "::acc",
                   mult=m, shift=s, acc_bits=32 + frac if xi.bits <= 8 else 48, zp_out=info.zero_point, lo=lo,
                   hi=hi)

    def _concat(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        parts = [self._int_operand(x) for x in node.inputs]
        self._emit("concat", [p[0] for p in parts], [out], node, axis=int(node.attrs.get("axis", 0)),
                   parts=[self._rescale(p[1], info, lo, hi) for p in parts])

    def _activation(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        lo_real, hi_real = _clip_bounds(node, self._const)
        if np.isfinite(lo_real):
            lo = max(lo, int(info.quantize(np.float32(lo_real))))
        if np.isfinite(hi_real):
            hi = min(hi, int(info.quantize(np.float32(hi_real))))
        self._emit("rescale", [x], [out], node, **self._rescale(xi, info, lo, hi))

    def _lut(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        fn = _float_fn(node)
        key = _key(node) + "::table"
        if xi.bits == 8:
            self.constants[key] = make_table(fn, xi.scale, xi.zero_point, xi.qmin, xi.qmax, info.scale,
                                             info.zero_point, lo, hi)
            self._emit("lut", [x], [out], node, table=key, in_qmin=xi.qmin)
            return
        self.constants[key] = make_table(fn, xi.scale, xi.zero_point, xi.qmin, xi.qmax, info.scale,
                                         info.zero_point, lo, hi, log2_entries=self.lut_len)
        self._emit("lut_interp", [x], [out], node, table=key, in_qmin=xi.qmin, step_log2=xi.bits - self.lut_len,
                   lo=lo, hi=hi)

    def _softmax(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        key = _key(node) + "::exp"
        # the table's fraction bits: 16 + log2(axis length) keep the output within 1 LSB
        # (runtime/kernels/softmax.py); 20 serve 8-bit outputs, 28 16-bit ones, int64-safe
        self.constants[key] = make_exp_table(xi.scale, frac_bits=20 if info.bits <= 8 else 28)
        self._emit("softmax", [x], [out], node, table=key, axis=int(node.attrs.get("axis", 1 if self.g.opset < 13 else -1)),
                   coerce_2d=self.g.opset < 13, out_scale=info.scale, zo=info.zero_point, lo=lo, hi=hi)

    def _layernorm(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        consts = []
        for idx in (1, 2):
            name = node.inputs[idx] if len(node.inputs) > idx else ""
            if not name:
                consts.append(None)
                continue
            real = self._real_const(name)
            if real is None:
                raise NotInteger(f"LayerNormalization parameter {name!r} is not constant")
            self.constants[name + "::real"] = np.asarray(real, np.float64)
            consts.append(name + "::real")
        self._emit("layernorm", [x], [out], node, zp_in=xi.zero_point, in_scale=xi.scale,
                   axis=int(node.attrs.get("axis", -1)), gamma=consts[0], beta=consts[1],
                   epsilon=float(node.attrs.get("epsilon", 1e-5)), out_scale=info.scale, zo=info.zero_point,
                   lo=lo, hi=hi)

    def _pool(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        attrs = dict(node.attrs)
        if node.op_type == "GlobalAveragePool":
            self._emit("global_avgpool", [x], [out], node, zp_in=xi.zero_point, ratio=xi.scale / info.scale,
                       zo=info.zero_point, lo=lo, hi=hi)
            return
        kernel = [int(k) for k in attrs.get("kernel_shape", [])]
        n = int(np.prod(kernel)) if kernel else 1
        m, s = quantize_multiplier(xi.scale / (info.scale * np.arange(1, n + 1)), self.target.elementwise_multiplier_bits)
        key = _key(node) + "::by_count"
        self.constants[key + "::mult"] = np.concatenate([[0], m]).astype(np.int64)
        self.constants[key + "::shift"] = np.concatenate([[0], s]).astype(np.int64)
        self._emit("avgpool", [x], [out], node, zp_in=xi.zero_point, mult=key + "::mult", shift=key + "::shift",
                   zo=info.zero_point, lo=lo, hi=hi, onnx_attrs=attrs)

    def _resize(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        mode = node.attrs.get("mode", "nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("nearest", "linear"):
            raise NotInteger(f"Resize mode {mode}")
        extra = [i for i in node.inputs[1:]]
        for name in extra:
            if name and self._const(name) is not None:
                self.constants[name] = self._const(name)
        if mode == "nearest":
            self._emit("resize_nearest", [x, *extra], [out], node, onnx_attrs=dict(node.attrs),
                       **self._rescale(xi, info, lo, hi))
            return
        self._emit("resize_linear", [x, *extra], [out], node, onnx_attrs=dict(node.attrs), zp_in=xi.zero_point,
                   frac_bits=RESIZE_FRAC_BITS, ratio=xi.scale / info.scale, zo=info.zero_point, lo=lo, hi=hi)

    def _move(self, node: Node, out: str, info: TensorInfo, lo: int, hi: int) -> None:
        x, xi = self._int_input(node.inputs[0])
        rest = list(node.inputs[1:])
        for name in rest:
            c = self._const(name) if name else None
            if c is not None:
                self.constants[name] = c
        attrs = dict(node.attrs)
        extra = {}
        if node.op_type == "Pad":
            extra["pad_code"] = self._pad_code(node, rest, info, lo, hi)
            if len(rest) >= 2:
                rest[1] = ""  # the simulator pads with pad_code (opset >= 11: constant_value)
            attrs.pop("value", None)  # opset < 11: likewise
        same = (xi.dtype, xi.scale, xi.zero_point) == (info.dtype, info.scale, info.zero_point) \
            and (lo, hi) == (info.qmin, info.qmax)  # a fused Relu/Clip needs the clamp of a rescale
        rescale = None if same else self._rescale(xi, info, lo, hi)
        self._emit("move", [x, *rest], [out], node, op_type=node.op_type, onnx_attrs=attrs, rescale=rescale,
                   n_outputs=len(node.outputs), **extra)

    def _pad_code(self, node: Node, rest: list[str], info: TensorInfo, lo: int, hi: int) -> int | None:
        """A constant-mode Pad's value as an output code: in the QDQ graph the float pad value
        goes through the output's QuantizeLinear (float32 division, half-to-even, saturating),
        and a fused Relu/Clip after it.  None for the other modes (pure data movement)."""
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            return None
        if self.g.opset < 11:
            value = float(node.attrs.get("value", 0.0))
        elif len(rest) >= 2 and rest[1]:
            real = self._real_const(rest[1])
            if real is None:
                raise NotInteger(f"Pad constant_value {rest[1]!r} is computed")
            value = float(np.asarray(real).reshape(-1)[0]) if np.size(real) else 0.0
        else:
            value = 0.0
        with np.errstate(all="ignore"):
            q = float(np.rint(np.float32(value) / np.float32(info.scale))) + info.zero_point
        if np.isnan(q):
            raise NotInteger("Pad with a NaN constant value")
        return int(np.clip(q, max(lo, info.qmin), min(hi, info.qmax)))


def _as_codes(a: np.ndarray | None) -> np.ndarray | None:
    """int4 / uint4 constants (``onnx.numpy_helper`` reads INT4/UINT4 as ml_dtypes arrays) as
    int8 / uint8 codes of the same values; other arrays as they are."""
    if a is not None and a.dtype.name in _NIBBLE_TYPES:
        return a.astype(_NIBBLE_TYPES[a.dtype.name])
    return a


def _np_dtype(tensor_type: int) -> np.dtype | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type))
    except (KeyError, TypeError, ValueError):
        return None


def _type_name(dtype: np.dtype) -> str:
    """The ONNX name of a numpy / ml_dtypes type (FLOAT8E4M3FN, INT4...), else numpy's."""
    try:
        return onnx.TensorProto.DataType.Name(onnx.helper.np_dtype_to_tensor_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        return dtype.name


def _check_activation_type(zp: np.ndarray) -> None:
    """Integer tensors of the program are int8/uint8/int16/uint16 (numpy types): an int4 or
    float8 activation is refused here (its Q/DQ then names the node)."""
    dtype = np.dtype(zp.dtype)
    if dtype.kind not in "iu":
        raise NotInteger(f"{_type_name(dtype)} activations: the integer simulator runs int8/int16 activations "
                         f"(unsigned too)")


def _key(node: Node) -> str:
    """The node's name, or (unnamed nodes) its first output's: unique either way."""
    return node.name or next((o for o in node.outputs if o), f"#{node.id}")


def _clip_bounds(node: Node, const: Callable) -> tuple[float, float]:
    if node.op_type == "Relu":
        return 0.0, np.inf
    if node.op_type != "Clip":
        return -np.inf, np.inf
    lo, hi = node.attrs.get("min", -np.inf), node.attrs.get("max", np.inf)
    if len(node.inputs) > 1 and node.inputs[1]:
        c = const(node.inputs[1])
        if c is None:
            raise NotInteger("Clip with a computed bound")
        lo = float(c)
    if len(node.inputs) > 2 and node.inputs[2]:
        c = const(node.inputs[2])
        if c is None:
            raise NotInteger("Clip with a computed bound")
        hi = float(c)
    return float(lo), float(hi)


def _float_fn(node: Node) -> Callable[[np.ndarray], np.ndarray]:
    """The op as a float64 → float64 function, through the reference executor (its ONNX
    semantics, attributes included)."""
    attrs = dict(node.attrs)

    def fn(x: np.ndarray) -> np.ndarray:
        return run_node(node.op_type, [np.asarray(x, np.float64)], attrs, name=node.name)[0].astype(np.float64)
    return fn


_LOWERERS: dict[str, Callable] = {
    "Conv": Lowering._conv, "ConvTranspose": Lowering._conv, "MatMul": Lowering._matmul, "Gemm": Lowering._matmul,
    "Add": Lowering._add, "Sub": Lowering._add, "Mul": Lowering._add, "Div": Lowering._add, "Concat": Lowering._concat,
    "Relu": Lowering._activation, "Clip": Lowering._activation, "Softmax": Lowering._softmax,
    "LayerNormalization": Lowering._layernorm, "AveragePool": Lowering._pool, "GlobalAveragePool": Lowering._pool,
    "Resize": Lowering._resize, "BatchNormalization": Lowering._batchnorm,
}
