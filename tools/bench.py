"""Benchmarks: ptqc against onnxruntime on the same models, in one run, as ratios.

    python tools/bench.py convert [--repeat 3]

``convert``: ptqc's import + cleanup pipeline + export, against onnxruntime's own offline
graph optimization of the same model (session creation at ORT_ENABLE_EXTENDED writing the
optimized model: constant folding, BN fusion, identity removal), on the PP-OCR models, the
digits CNN, the onnx ``light`` topologies and generated graphs of 1k and 10k nodes.  Prints
per-pass times, the ratio ptqc/onnxruntime, and the 10k/1k scaling factor (linear = 10).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import builders  # noqa: E402
import models  # noqa: E402

from ptqc.driver.pipeline import build_pipeline  # noqa: E402
from ptqc.onnx_io import export_model, import_model  # noqa: E402
from ptqc.pass_manager import PassContext, PassManager, TimingInstrument  # noqa: E402


def _ptqc_convert(model: onnx.ModelProto) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    graph = import_model(model)
    timing = TimingInstrument()
    graph = PassManager(build_pipeline("convert"), [timing]).run(graph, PassContext()).graph
    export_model(graph).SerializeToString()
    total = time.perf_counter() - t0
    return total, {t.name: t.seconds for t in timing.timings}


def _ort_optimize(model_bytes: bytes, out: Path) -> float:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 4
    t0 = time.perf_counter()
    ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return time.perf_counter() - t0


def _models() -> list[tuple[str, onnx.ModelProto]]:
    out = []
    for name, path in sorted(models.ppocr_model_paths().items()):
        out.append((f"ppocr-{name}", onnx.load(str(path))))
    out.append(("digits-cnn", models.train_digits_cnn().model))
    for path in models.light_model_paths():
        out.append((path.stem, onnx.load(str(path))))
    out.append(("synthetic-1k", builders.synthetic_model(1000)))
    out.append(("synthetic-10k", builders.synthetic_model(10000)))
    return out


def bench_convert(repeat: int) -> None:
    rows = []
    per_pass: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in _models():
            data = model.SerializeToString()
            ours, passes = [], []
            theirs = []
            for _ in range(repeat):
                total, by_pass = _ptqc_convert(model)
                ours.append(total)
                passes.append(by_pass)
                theirs.append(_ort_optimize(data, Path(tmp) / f"{name}.onnx"))
            o, t = statistics.median(ours), statistics.median(theirs)
            per_pass[name] = {k: statistics.median(p[k] for p in passes) for k in passes[0]}
            rows.append((name, len(model.graph.node), o, t))
    print(f"{'model':<22}{'nodes':>7}{'ptqc ms':>10}{'ort ms':>10}{'ptqc/ort':>10}")
    for name, nodes, o, t in rows:
        print(f"{name:<22}{nodes:>7}{o * 1e3:>10.1f}{t * 1e3:>10.1f}{o / t:>10.2f}")
    names = list(next(iter(per_pass.values())))
    print("\nper pass (ms):")
    print(f"{'model':<22}" + "".join(f"{n[:12]:>13}" for n in names))
    for model_name, by_pass in per_pass.items():
        print(f"{model_name:<22}" + "".join(f"{by_pass[n] * 1e3:>13.1f}" for n in names))
    small = next(r for r in rows if r[0] == "synthetic-1k")
    big = next(r for r in rows if r[0] == "synthetic-10k")
    pass_small = sum(per_pass["synthetic-1k"].values())
    pass_big = sum(per_pass["synthetic-10k"].values())
    print(f"\nscaling 1k -> 10k nodes: passes x{pass_big / pass_small:.1f}, "
          f"import+passes+export x{big[2] / small[2]:.1f} (linear: x10)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("convert", help="import + cleanup + export vs onnxruntime graph optimization")
    c.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.what == "convert":
        bench_convert(args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
