"""The simulator in the driver: ``-r infer`` on a chip, ``-du`` dumps, ``-r compare``.

A QDQ model is lowered for the chip's target (targets/lower.py) and run by
``ptqc.runtime.simulator``; the float side of a comparison is the float model run by
onnxruntime with every intermediate tensor as an output.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from ptqc.driver.report import COMPARE_THRESHOLD, first_drop, write_report
from ptqc.errors import ConfigError
from ptqc.files import atomic_open
from ptqc.onnx_io import import_model, with_outputs
from ptqc.runtime.ort import OrtRunner
from ptqc.runtime.simulator import LayerError, Simulator
from ptqc.targets.base import Target
from ptqc.targets.lower import lower

log = logging.getLogger("ptqc.simulate")



def simulator_for(model, target: Target, lut_len: int | None = None) -> Simulator:
    """Lower a QDQ model for ``target`` and wrap it in a simulator; says what stays float."""
    if target.name == "generic":
        raise ConfigError("--chip generic has no integer simulator: name a TX5xxx chip")
    program = lower(model, target, lut_len)
    floats = program.float_nodes()
    if floats:
        counts: dict[str, int] = {}
        for op_type, _ in floats:
            counts[op_type] = counts.get(op_type, 0) + 1
        log.warning("simulator on %s: %d nodes run in float: %s", target.name, len(floats),
                    ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    return Simulator(program)


def float_values(float_model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of the float model for ``feeds`` (one onnxruntime run)."""
    graph = import_model(float_model)
    names = [o for n in graph.nodes() for o in n.outputs if o]
    runner = OrtRunner(with_outputs(graph, names))
    values = runner.run(feeds)
    values.update(feeds)
    return values


def write_compare_csv(rows: list[LayerError], path: Path) -> Path:
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["node", "op_type", "tensor", "cosine", "max_abs_error", "relative_error"])
        for r in rows:
            w.writerow([r.node, r.op_type, r.tensor, f"{r.cosine:.6f}", f"{r.max_abs:.6g}", f"{r.rel:.6g}"])
    return path


def format_compare(rows: list[LayerError], mode: str, limit: int = 12) -> str:
    """The worst layers and the first drop below the threshold, for the screen."""
    lines = [f"  compare ({mode}, {len(rows)} layers vs float):"]
    drop = first_drop(rows)
    lines.append(f"    first cosine < {COMPARE_THRESHOLD}: " +
                 (f"{drop.node!r} ({drop.op_type}) cosine {drop.cosine:.6f}" if drop else "none"))
    lines.append(f"    {'node':<40}{'op':<20}{'cosine':>10}{'max abs':>12}{'rel':>10}")
    for r in sorted(rows, key=lambda r: (math.isfinite(r.cosine), r.cosine))[:limit]:  # NaN (shape) rows first
        lines.append(f"    {r.node[:39]:<40}{r.op_type:<20}{r.cosine:>10.6f}{r.max_abs:>12.4g}{r.rel:>10.4f}")
    return "\n".join(lines)


def layer_table(sim: Simulator) -> list[dict]:
    """Per integer op output: node, op, ONNX tensor, width and representable range."""
    rows = []
    for op in sim.p.ops:
        info = sim.p.tensors.get(op.outputs[0]) if op.outputs else None
        if info is None or op.kind == "quantize":
            continue
        rows.append({"node": op.node, "op_type": op.op_type, "tensor": info.source, "bits": info.bits,
                     "dtype": info.dtype.name, "scale": info.scale, "zero_point": info.zero_point,
                     "rmin": info.scale * (info.qmin - info.zero_point), "rmax": info.scale * (info.qmax - info.zero_point)})
    return rows


def dump_and_compare(qmodel: onnx.ModelProto, float_model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                     target: Target, lut_len: int | None, save_dir: Path, dump: bool, compare: bool,
                     settings: Mapping[str, object] | None = None, title: str = "model") -> list[str]:
    """``-du``: the simulator's tensors for one batch under ``save_dir/dump``; ``-r compare``:
    both comparisons as CSV under ``save_dir`` and the HTML report ``save_dir/report.html``.
    Returns lines for the summary."""
    sim = simulator_for(qmodel, target, lut_len)
    lines = []
    if dump:
        files = sim.dump(feeds, save_dir / "dump")
        lines.append(f"  dump: {len(files)} tensors -> {save_dir / 'dump'}")
    if compare:
        ref = float_values(float_model, feeds)
        rows = {}
        for mode in ("graphwise", "layerwise"):
            rows[mode] = sim.compare(feeds, ref, mode)
            path = write_compare_csv(rows[mode], save_dir / f"compare_{mode}.csv")
            lines.append(format_compare(rows[mode], mode))
            lines.append(f"    -> {path}")
        report = write_report(save_dir / "report.html", title=title, settings=dict(settings or {}),
                              graphwise=rows["graphwise"], layerwise=rows["layerwise"], layers=layer_table(sim))
        lines.append(f"  report: {report}")
    return lines
