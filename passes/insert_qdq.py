"""InsertQDQ: materialize the parameters as QuantizeLinear/DequantizeLinear nodes, the way
onnxruntime's QDQ format expects them (so its graph optimizer fuses DQ -> op -> Q into
integer kernels).

Activations get a Q -> DQ pair right after their producer, read by every consumer;
constant weights and biases are stored quantized (int8 / int32) and read through a DQ
(per-channel with ``axis``).  One scale/zero-point initializer pair per sharing group, so a
group's members visibly share their parameters.  Graph outputs keep their names: as integers
(the chip's output) or, with ``output_dequant`` (``-od``), as dequantized floats.
``input_dtypes`` (``-qid``) makes a quantized graph input arrive already quantized.
16-bit and 4-bit types use onnxruntime's ``com.microsoft`` Q/DQ below opset 21.
"""
from __future__ import annotations

import numpy as np
import onnx

from ptqc.errors import ConfigError
from ptqc.ir import Graph, Value
from ptqc.pass_manager import Pass, PassContext, PassResult
from ptqc.quant import FLOAT8, QRANGE, QuantParam, type_bits
from ptqc.vocab import Analysis, Meta

MS_DOMAIN = "com.microsoft"


class InsertQDQ(Pass):
    """Turn every ``value.meta["quant"]`` into Q/DQ nodes and quantized constants."""

    name = "insert_qdq"
    requires = (Analysis.QUANT_PARAMS,)

    def __init__(self, output_dequant: bool = True, input_dtypes: dict[str, np.dtype] | None = None,
                 contrib_ops: bool = False, weight_pairs: bool = False, dedicated_pairs: bool = False):
        self.output_dequant, self.contrib_ops = output_dequant, contrib_ops  # contrib: com.microsoft Q/DQ
        # onnxruntime's AddQDQPairToWeight (a weight kept float, on its grid, read through Q -> DQ)
        # and DedicatedQDQPair (one Q -> DQ pair per reader of an activation)
        self.weight_pairs, self.dedicated_pairs = weight_pairs, dedicated_pairs
        self.input_dtypes = {k: np.dtype(v) for k, v in (input_dtypes or {}).items()}

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        params: dict[int, tuple[str, str]] = {}
        self.weight_params: dict[str, QuantParam] = {}
        self.param_names: dict[str, tuple[str, str]] = {}  # activation -> its (scale, zero point) constants
        self.qdq_names: dict[str, tuple[str, str, QuantParam]] = {}  # activation -> Q and DQ outputs, parameters
        output_params: dict[str, QuantParam] = {}
        unknown = sorted(set(self.input_dtypes) - set(graph.inputs))
        if unknown:
            raise ConfigError(f"-qid/--quantize-input-dtype: {unknown[0]!r} is not a model input")
        count = 0
        for v in graph.values():
            p = v.meta.get(Meta.QUANT)
            if p is None or graph.is_captured(v.name):
                continue
            scale, zp = self._qparams(graph, v, p, params)
            if v.const is not None:
                self._quantize_constant(graph, v, p, scale, zp)
            elif v.name in self.input_dtypes:
                self._quantized_input(graph, v, p, scale, zp)
            else:
                self.param_names[v.name] = (scale, zp)
                if self._quantize_activation(graph, v, p, scale, zp):
                    output_params[v.name] = p
            count += 1
        for name in self.input_dtypes:
            if Meta.QUANT not in graph.value(name).meta:
                raise ConfigError(f"-qid/--quantize-input-dtype: input {name!r} is not quantized "
                                  "(no quantized op reads it), so it cannot arrive quantized")
        ctx.analyses[Analysis.OUTPUT_PARAMS] = output_params
        ctx.analyses[Analysis.WEIGHT_PARAMS] = self.weight_params
        ctx.analyses[Analysis.QDQ_PARAM_NAMES] = self.param_names
        ctx.analyses[Analysis.ACTIVATION_QDQ] = self.qdq_names
        return PassResult(graph, count > 0)

    def _qparams(self, graph: Graph, v: Value, p: QuantParam, cache: dict) -> tuple[str, str]:
        if id(p) not in cache:
            scale = graph.add_constant(graph.fresh_name(f"{v.name}_scale"), np.asarray(p.scale, np.float32))
            zp = graph.add_constant(graph.fresh_name(f"{v.name}_zero_point"), np.asarray(p.zero_point).astype(p.dtype))
            cache[id(p)] = (scale.name, zp.name)
        return cache[id(p)]

    def _q_node(self, graph: Graph, op: str, x: str, out: str, p: QuantParam, scale: str, zp: str) -> None:
        attrs = {"axis": int(p.axis)} if p.axis is not None and np.ndim(p.scale) else {}
        if p.block_size:
            attrs["block_size"] = int(p.block_size)
        domain = ""
        if self.contrib_ops or type_bits(p.dtype) in (4, 16) and graph.opset < 21:
            domain = MS_DOMAIN
            graph.info.opset_imports.setdefault(MS_DOMAIN, 1)
        graph.add_node(op, [x, scale, zp], [out], attrs, name=graph.unique_name(f"{x}_{op}"), domain=domain)

    def _quantize_constant(self, graph: Graph, v: Value, p: QuantParam, scale: str, zp: str) -> None:
        if v.name in graph.outputs or not graph.consumers(v):
            return
        data = np.asarray(v.const)
        if p.dtype == np.int32:  # bias: round(b / (s_x * s_w)), saturated
            s = p._view(np.asarray(p.scale, np.float64), data.ndim)
            lo, hi = QRANGE[np.dtype(np.int32)]
            q = np.clip(np.rint(data.astype(np.float64) / s), lo, hi).astype(np.int32)
        else:  # the narrowed codes of a symmetric integer type (float8 saturates in quantize)
            q = p.quantize(data) if np.dtype(p.dtype) == FLOAT8 else np.clip(p.quantize(data), p.qmin,
                                                                               p.qmax).astype(p.dtype)
        self.weight_params[v.name] = p
        dq = graph.unique_name(f"{v.name}_dequantized")
        graph.replace_all_uses(v.name, dq)
        if self.weight_pairs and p.dtype != np.int32:  # the float weight on its grid: Q gives back q exactly
            graph.set_constant(v.name, p.dequantize(q).astype(data.dtype))
            qv = graph.unique_name(f"{v.name}_quantized")
            self._q_node(graph, "QuantizeLinear", v.name, qv, p, scale, zp)
            _typed(graph, qv, v, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(p.dtype)))
            self._q_node(graph, "DequantizeLinear", qv, dq, p, scale, zp)
            _typed(graph, dq, v, onnx.TensorProto.FLOAT)
            return
        qv = graph.add_constant(graph.fresh_name(f"{v.name}_quantized"), q).name
        self._q_node(graph, "DequantizeLinear", qv, dq, p, scale, zp)
        _typed(graph, dq, v, onnx.TensorProto.FLOAT)
        graph.remove_value(v.name)

    def _quantized_input(self, graph: Graph, v: Value, p: QuantParam, scale: str, zp: str) -> None:
        want = self.input_dtypes[v.name]
        if want != np.dtype(p.dtype):
            raise ConfigError(f"-qid/--quantize-input-dtype: input {v.name!r} is quantized as {np.dtype(p.dtype)}, "
                              f"not {want}")
        dq = graph.unique_name(f"{v.name}_dequantized")
        graph.replace_all_uses(v.name, dq)
        v.elem_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(p.dtype))
        self._q_node(graph, "DequantizeLinear", v.name, dq, p, scale, zp)
        _typed(graph, dq, v, onnx.TensorProto.FLOAT)

    def _quantize_activation(self, graph: Graph, v: Value, p: QuantParam, scale: str, zp: str) -> bool:
        """Q/DQ after ``v`` (their outputs recorded in ``qdq_names``); True when a graph output
        now carries integers."""
        qtype = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(p.dtype))
        if v.name in graph.outputs:
            producer = graph.producer(v)
            if producer is None:
                return False
            src = graph.unique_name(f"{v.name}_float")
            consumers = graph.consumers(v)
            graph.set_output(producer, list(producer.outputs).index(v.name), src)
            _typed(graph, src, v, onnx.TensorProto.FLOAT)
            for node, idx in consumers:
                graph.set_input(node, idx, src)
            q = v.name if not self.output_dequant else graph.unique_name(f"{v.name}_quantized")
            dq = graph.unique_name(f"{v.name}_dequantized") if not self.output_dequant else v.name
            self._q_node(graph, "QuantizeLinear", src, q, p, scale, zp)
            _typed(graph, q, v, qtype)
            if consumers or self.output_dequant:
                self._q_node(graph, "DequantizeLinear", q, dq, p, scale, zp)
                _typed(graph, dq, v, onnx.TensorProto.FLOAT)
                for node, idx in consumers:
                    graph.set_input(node, idx, dq)
                self.qdq_names[v.name] = (q, dq, p)
            return not self.output_dequant
        readers = (graph.consumers(v) if self.dedicated_pairs else []) or [None]
        for i, reader in enumerate(readers):
            q = graph.unique_name(f"{v.name}_quantized")
            dq = graph.unique_name(f"{v.name}_dequantized")
            if reader is None:
                graph.replace_all_uses(v.name, dq)
            else:
                graph.set_input(reader[0], reader[1], dq)
            self._q_node(graph, "QuantizeLinear", v.name, q, p, scale, zp)
            _typed(graph, q, v, qtype)
            self._q_node(graph, "DequantizeLinear", q, dq, p, scale, zp)
            _typed(graph, dq, v, onnx.TensorProto.FLOAT)
            if i == 0:
                self.qdq_names[v.name] = (q, dq, p)
        return False


def _typed(graph: Graph, name: str, like: Value, elem_type: int) -> None:
    nv = graph.value(name)
    nv.elem_type, nv.shape = elem_type, like.shape
