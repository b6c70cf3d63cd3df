"""MindSpore Lite's quantization debug reports (``debug_info_save_path``), written as it
documents them:

* ``output_summary.csv``: Round, TensorName, CosineSimilarity for every model output;
* ``round_<k>.csv``: per quantized activation, one ``Origin`` row (the float model's tensor)
  and one ``Dequant`` row (the QDQ model's dequantized tensor): NodeName, NodeType,
  TensorName, InOutFlag, DataTypeFlag, TensorTypeFlag, Min, Q1, Median, Q3, MAX, Mean, Var,
  Sparsity (share of zeros), Clip (share of float values outside the quantized range),
  CosineSimilarity;
* ``quant_param.csv``: NodeName, NodeType, TensorName, ElementsNum, Dims, Scale, ZeroPoint,
  Bits, CorrectionVar, CorrectionMean (empty: ptqc does no bias correction yet).

A round is one batch of the data the infer function feeds.  Files are written atomically.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from ptqc.files import atomic_open
from ptqc.ir import Graph
from ptqc.onnx_io import with_outputs
from ptqc.quant import QuantParam
from ptqc.runtime.ort import OrtRunner
from ptqc.vocab import Meta

ROUND_FIELDS = ["NodeName", "NodeType", "TensorName", "InOutFlag", "DataTypeFlag", "TensorTypeFlag", "Min", "Q1",
                "Median", "Q3", "MAX", "Mean", "Var", "Sparsity", "Clip", "CosineSimilarity"]
PARAM_FIELDS = ["NodeName", "NodeType", "TensorName", "ElementsNum", "Dims", "Scale", "ZeroPoint", "Bits",
                "CorrectionVar", "CorrectionMean"]


def write_debug_reports(folder: Path, float_model: onnx.ModelProto, qmodel: onnx.ModelProto, graph: Graph,
                        weight_params: dict[str, QuantParam], drive: Callable, cosine: Callable) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    producer = {o: n for n in float_model.graph.node for o in n.output}
    float_tensors = set(producer) | {i.name for i in float_model.graph.input}
    dq_of = {}  # float tensor -> the QDQ model's dequantized tensor
    q_nodes = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    for n in qmodel.graph.node:
        q = q_nodes.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if q is None:
            continue
        # the tensor keeps its name on the Q input, or (graph outputs) on the Q or DQ output
        for name in (q.input[0], q.output[0], n.output[0]):
            if name in float_tensors and graph.has_value(name) and Meta.QUANT in graph.value(name).meta:
                dq_of.setdefault(name, n.output[0])
                break
    names = sorted(dq_of)
    outputs = [o.name for o in float_model.graph.output]
    f_run = OrtRunner(with_outputs(float_model, names), outputs + [n for n in names if n not in outputs])
    q_run = OrtRunner(with_outputs(qmodel, [dq_of[n] for n in names]),
                      [o.name for o in qmodel.graph.output] + [dq_of[n] for n in names])
    summary: list[list] = []
    rounds = [0]

    def run(feeds: dict) -> list:
        rounds[0] += 1
        ref, got = f_run.run(feeds), q_run.run(feeds)
        rows = []
        for name in names:
            p = graph.value(name).meta[Meta.QUANT]
            node = producer.get(name)
            base = [node.name if node else "", node.op_type if node else "Input", name, "OUTPUT" if node else "INPUT"]
            a, b = np.asarray(ref[name], np.float64), np.asarray(got[dq_of[name]], np.float64)
            clip = float(np.mean((a < float(np.min(p.rmin))) | (a > float(np.max(p.rmax))))) if p.rmin is not None else 0.0
            rows.append(base + ["Origin", "Activation", *_stats(a), 0.0, 1.0])
            rows.append(base + ["Dequant", "Activation", *_stats(b), clip, cosine(a, b)])
        _write_csv(folder / f"round_{rounds[0]}.csv", ROUND_FIELDS, rows)
        for o in outputs:
            if o in got:
                summary.append([rounds[0], o, cosine(ref[o], got[o])])
        return [ref[o] for o in outputs]

    drive(run)
    _write_csv(folder / "output_summary.csv", ["Round", "TensorName", "CosineSimilarity"], summary)
    _write_csv(folder / "quant_param.csv", PARAM_FIELDS, _param_rows(graph, producer, weight_params))
    return folder


def _stats(x: np.ndarray) -> list[float]:
    q = np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0]) if x.size else [0.0] * 5
    return [float(v) for v in q] + [float(x.mean()), float(x.var()), float(np.mean(x == 0))] if x.size else \
        [0.0] * 8


def _param_rows(graph: Graph, producer: dict, weight_params: dict[str, QuantParam]) -> list[list]:
    def row(name: str, p: QuantParam, shape) -> list:
        node = producer.get(name)
        consumer = next((n for n, _ in graph.consumers(name)), None) if graph.has_value(name) else None
        owner = node or consumer
        return [owner.name if owner is not None else "", owner.op_type if owner is not None else "", name,
                int(np.prod(shape)) if shape else "", "x".join(str(d) for d in shape) if shape else "",
                ";".join(f"{v:.9g}" for v in np.atleast_1d(p.scale)), ";".join(str(int(v)) for v in np.atleast_1d(p.zero_point)),
                p.bits, "", ""]
    rows = [row(v.name, v.meta[Meta.QUANT], v.static_shape) for v in graph.values()
            if Meta.QUANT in v.meta and v.const is None]
    rows += [row(name, p, None) for name, p in weight_params.items()]
    return rows


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_open(path) as f:
        f.write(buf.getvalue())
