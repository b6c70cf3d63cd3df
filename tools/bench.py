"""Benchmarks: ptqc against onnxruntime on the same models, in one run, as ratios.

    python tools/bench.py convert [--repeat 3]
    python tools/bench.py quant [--samples 20] [--models NAME ...]

``convert``: ptqc's import + cleanup pipeline + export, against onnxruntime's own offline
graph optimization of the same model (session creation at ORT_ENABLE_EXTENDED writing the
optimized model: constant folding, BN fusion, identity removal), on the PP-OCR models, the
digits CNN, the onnx ``light`` topologies and generated graphs of 1k and 10k nodes.  Prints
per-pass times, the ratio ptqc/onnxruntime, and the 10k/1k scaling factor (linear = 10).

``quant``: ptqc's ``quantize_static`` against onnxruntime's, with identical arguments (QDQ,
per_channel, MinMax, QInt8 activations and weights) and the same calibration feeds, and
against onnxruntime's ``quant_pre_process`` + ``quantize_static``; on the digits CNN, the
PP-OCR models and the onnx wheel's ``pytorch-converted`` Conv*/Linear* models.  Each
quantized model is run under onnxruntime on held-out test feeds against the float model:
per output, the min (and mean) cosine over test samples; wall time of each quantize call
(calibration included) and the ratios; top-1 accuracy on the digits test set.  ``--models``
keeps the models whose name contains one of the given substrings.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import re
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import builders  # noqa: E402
import models  # noqa: E402

from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,  # noqa: E402
                                      QuantType)
from onnxruntime.quantization import quantize_static as ort_quantize_static  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

from ptqc.driver.pipeline import build_pipeline  # noqa: E402
from ptqc.driver.quantize import quantize_static as ptqc_quantize_static  # noqa: E402
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


# ------------------------------------------------------------------------------- quant
QUANTIZERS = ("ptqc", "ort", "ort+pre")
_TEST_SEEDS = 8  # PP-OCR / pytorch-converted test feeds: seeds 1000 .. 1000 + _TEST_SEEDS - 1
_DIGITS_COSINE_SAMPLES = 50


@dataclass
class QuantCase:
    """One model to quantize: its float file, calibration feeds and held-out test feeds."""

    name: str
    path: Path
    calib: list[dict[str, np.ndarray]]
    test: list[dict[str, np.ndarray]]  # one sample per feed dict
    labels: tuple[np.ndarray, np.ndarray] | None = None  # digits: (x_test, y_test) for accuracy


@dataclass
class QuantResult:
    seconds: float | None = None
    cosine: dict[str, tuple[float, float]] = field(default_factory=dict)  # output -> (min, mean)
    accuracy: float | None = None
    error: str | None = None


class _ListReader(CalibrationDataReader):
    """A fresh onnxruntime calibration reader over a list of feed dicts (no rewind)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


@contextlib.contextmanager
def _quiet_ort():
    """onnxruntime's quantizer logs INFO/WARNING through the root logger; errors still show."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line; a message-less exception (a bare assert) gets where it
    was raised instead."""
    msg = " ".join(str(exc).split())
    if not msg:
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            frame = tb[-1]
            msg = f"raised at {Path(frame.filename).name}:{frame.lineno} ({(frame.line or '').strip()})"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _quant_cases(samples: int, tmp: Path, keep) -> list[QuantCase]:
    cases = []
    if keep("digits-cnn"):
        d = models.train_digits_cnn()
        path = tmp / "digits-cnn.onnx"
        onnx.save(d.model, str(path))
        calib = [{"input": np.ascontiguousarray(d.x_train[i:i + 1])} for i in range(samples)]
        test = [{"input": np.ascontiguousarray(d.x_test[i:i + 1])} for i in range(_DIGITS_COSINE_SAMPLES)]
        cases.append(QuantCase("digits-cnn", path, calib, test, (np.ascontiguousarray(d.x_test), d.y_test)))
    ppocr = models.ppocr_model_paths()
    if not ppocr:
        print(f"note: PP-OCR models not found, skipped ({models.PPOCR_PIP})")
    for name, path in sorted(ppocr.items()):
        if keep(f"ppocr-{name}"):
            calib = [models.ppocr_sample_inputs(name, seed=i) for i in range(samples)]
            test = [models.ppocr_sample_inputs(name, seed=1000 + i) for i in range(_TEST_SEEDS)]
            cases.append(QuantCase(f"ppocr-{name}", path, calib, test))
    converted = models.onnx_backend_data_dir() / "pytorch-converted"
    folders = sorted(p for p in converted.glob("test_*") if p.name.startswith(("test_Conv", "test_Linear")))
    if not folders:
        print(f"note: no pytorch-converted Conv/Linear models under {converted}, skipped")
    for folder in folders:
        name = folder.name[len("test_"):]
        if keep(name):
            model = onnx.load(str(folder / "model.onnx"))
            calib = [builders.random_feeds(model, seed=i, default_dim=1) for i in range(samples)]
            test = [builders.random_feeds(model, seed=1000 + i, default_dim=1) for i in range(_TEST_SEEDS)]
            cases.append(QuantCase(name, folder / "model.onnx", calib, test))
    return cases


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), ort.SessionOptions(), providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def _opset13(path: Path, out: Path) -> Path:
    """onnxruntime's per-channel QDQ needs opset 13 but its quantizer does not upgrade (it
    writes an invalid model instead); give "ort+pre" the upgraded model, as ptqc upgrades."""
    model = onnx.load(str(path))
    if next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13) >= 13:
        return path
    model = onnx.version_converter.convert_version(model, 13)
    onnx.save(model, str(out))
    return out


def _run_quantizer(which: str, case: QuantCase, out: Path) -> float:
    kwargs = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                  weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    reader = _ListReader(case.calib)
    if which == "ptqc":
        t0 = time.perf_counter()
        ptqc_quantize_static(str(case.path), str(out), reader, **kwargs)
        return time.perf_counter() - t0
    with _quiet_ort():
        t0 = time.perf_counter()
        src = case.path
        if which == "ort+pre":
            src = out.with_name(out.stem + "-pre.onnx")
            # when its symbolic shape inference fails, onnxruntime dumps sym_shape_infer_temp.onnx
            # into the working directory: keep that in the temporary directory
            pre_in = _opset13(case.path, out.with_name(out.stem + "-opset13.onnx"))
            with contextlib.chdir(out.parent):
                try:
                    quant_pre_process(str(pre_in), str(src))
                except Exception:  # noqa: BLE001 - its symbolic shape inference fails on PP-OCR:
                    # retry the way onnxruntime's docs suggest (onnx shape inference + optimizer only)
                    quant_pre_process(str(pre_in), str(src), skip_symbolic_shape=True)
        ort_quantize_static(str(src), str(out), reader, **kwargs)
        return time.perf_counter() - t0


def _evaluate(case: QuantCase, names: list[str], float_test: list[list[np.ndarray]], out: Path,
              result: QuantResult) -> None:
    sess = _session(out)
    per_output: dict[str, list[float]] = {n: [] for n in names}
    for feeds, ref in zip(case.test, float_test):
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for n, r in zip(names, ref):
            per_output[n].append(_cosine(r, got[n]))
    result.cosine = {n: (min(v), statistics.fmean(v)) for n, v in per_output.items()}
    if case.labels is not None:
        x, y = case.labels
        result.accuracy = float((sess.run(None, {"input": x})[0].argmax(axis=1) == y).mean())


def bench_quant(samples: int, patterns: list[str] | None) -> None:
    def keep(name: str) -> bool:
        return not patterns or any(p in name for p in patterns)

    t_start = time.perf_counter()
    rows = []  # (case, float accuracy, {quantizer: QuantResult}, output names)
    notes: list[str] = []
    # onnxruntime's own warnings (opset-6 "only guarantees support", transpose optimizer) are
    # noise here; errors (severity 3) still show, and failing calls raise
    ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for case in _quant_cases(samples, tmp, keep):
            print(f"[quant] {case.name}", file=sys.stderr)  # tells which model ptqc's warnings are about
            float_model = onnx.load(str(case.path))
            outputs = [o.name for o in float_model.graph.output]
            try:
                float_sess = _session(case.path)
                float_test = [float_sess.run(outputs, feeds) for feeds in case.test]
            except Exception as exc:  # noqa: BLE001 - e.g. Gemm(6): no onnxruntime kernel
                notes.append(f"{case.name}: the float model does not run under onnxruntime "
                             f"({_one_line(exc)}); float reference from onnx.reference.ReferenceEvaluator")
                ref = ReferenceEvaluator(float_model)
                float_test = [ref.run(outputs, feeds) for feeds in case.test]
            float_acc = None
            if case.labels is not None:
                x, y = case.labels
                float_acc = float((float_sess.run(outputs, {"input": x})[0].argmax(axis=1) == y).mean())
            results = {}
            for which in QUANTIZERS:
                res = QuantResult()
                out = tmp / f"{case.name}-{which.replace('+', '-')}.onnx"
                try:
                    res.seconds = _run_quantizer(which, case, out)
                except Exception as exc:  # noqa: BLE001 - reported in the table, not hidden
                    res.error = f"quantize: {_one_line(exc)}"
                if res.error is None:
                    try:
                        _evaluate(case, outputs, float_test, out, res)
                    except Exception as exc:  # noqa: BLE001
                        res.error = f"evaluate: {_one_line(exc)}"
                results[which] = res
            rows.append((case, float_acc, results, outputs))
    ort.set_default_logger_severity(2)  # onnxruntime's default: warnings

    # the same failure on many models is listed once, with the models it hit
    errors: dict[str, list[str]] = {}

    def err_cell(case: QuantCase, which: str, res: QuantResult) -> str:
        msg = f"{which}: " + re.sub(re.escape(tmp_name) + r"/\S+?\.onnx", "<tmp>/<model>.onnx", res.error or "")
        hit = errors.setdefault(msg, [])
        if case.name not in hit:
            hit.append(case.name)
        return f"ERR[{list(errors).index(msg) + 1}]"

    def cos_cell(case, which, res, output) -> str:
        if res.error:
            return err_cell(case, which, res)
        lo, mean = res.cosine[output]
        return f"{lo:.4f} ({mean:.4f})"

    def time_cell(case, which, res) -> str:
        return err_cell(case, which, res) if res.error else f"{res.seconds:.2f}"

    def ratio_cell(a: QuantResult, b: QuantResult) -> str:
        return f"{a.seconds / b.seconds:.2f}" if a.error is None and b.error is None else "-"

    print(f"quantize_static, QDQ per-channel MinMax QInt8/QInt8, {samples} calibration samples; "
          f"cosine vs float on held-out test samples: min (mean)")
    header = (f"{'model':<34}{'output':<18}{'ptqc cos':>18}{'ort cos':>18}{'ort+pre cos':>18}"
              f"{'ptqc s':>9}{'ort s':>9}{'ort+pre s':>10}{'ptqc/ort':>10}{'ptqc/pre':>10}")
    print(header)
    print("-" * len(header))
    worse: list[str] = []
    failed: list[str] = []  # ptqc raised
    for case, _, results, outputs in rows:
        p, o, op = (results[q] for q in QUANTIZERS)
        for i, output in enumerate(outputs):
            times = (f"{time_cell(case, 'ptqc', p):>9}{time_cell(case, 'ort', o):>9}"
                     f"{time_cell(case, 'ort+pre', op):>10}{ratio_cell(p, o):>10}{ratio_cell(p, op):>10}")
            print(f"{case.name:<34}{output[:17]:<18}{cos_cell(case, 'ptqc', p, output):>18}"
                  f"{cos_cell(case, 'ort', o, output):>18}{cos_cell(case, 'ort+pre', op, output):>18}"
                  + (times if i == 0 else ""))
        if p.error:
            failed.append(case.name)
        else:  # against onnxruntime with and without its pre-process, where they produced a model
            bad = [f"{n}: {p.cosine[n][0]:.4f} < {q} {r.cosine[n][0]:.4f}" for q, r in (("ort", o), ("ort+pre", op))
                   if r.error is None for n in outputs if p.cosine[n][0] < r.cosine[n][0]]
            if bad:
                worse.append(f"{case.name} ({', '.join(bad)})")
    for case, float_acc, results, _ in rows:
        if case.labels is not None:
            cells = [f"float {float_acc:.4f}"]
            for q in QUANTIZERS:
                r = results[q]
                cells.append(f"{q} {err_cell(case, q, r) if r.error else f'{r.accuracy:.4f}'}")
            print(f"\n{case.name} top-1 accuracy on {len(case.labels[1])} test samples: " + ", ".join(cells))
    if notes:
        print("\nnotes:")
        for line in notes:
            print(f"  {line}")
    if errors:
        print("\nerrors:")
        for i, (msg, hit) in enumerate(errors.items(), 1):
            print(f"  [{i}] {msg}\n      on {len(hit)} model(s): {', '.join(hit)}")
    if failed:
        worse.append(f"ptqc failed on {len(failed)} model(s): {', '.join(failed)}")
    print(f"\nptqc min cosine >= onnxruntime's on every model: {'no' if worse else 'yes'}"
          + (f" ({'; '.join(worse)})" if worse else ""))
    print(f"total {time.perf_counter() - t_start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("convert", help="import + cleanup + export vs onnxruntime graph optimization")
    c.add_argument("--repeat", type=int, default=3)
    q = sub.add_parser("quant", help="ptqc quantize_static vs onnxruntime's (accuracy and time)")
    q.add_argument("--samples", type=int, default=20, help="calibration samples per model")
    q.add_argument("--models", nargs="+", metavar="NAME", help="keep models whose name contains one of these")
    args = ap.parse_args(argv)
    if args.what == "convert":
        bench_convert(args.repeat)
    elif args.what == "quant":
        bench_quant(args.samples, args.models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
