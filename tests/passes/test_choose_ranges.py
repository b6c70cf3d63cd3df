"""ChooseRanges (-qm auto): never worse on the scoring batches than the best single method,
deterministic, runnable alone on a specced and calibrated graph."""
import copy

import numpy as np
import onnx
import pytest

import builders
import models
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import AnalysisStore, PassContext, PassManager
from ptqc.passes import AssignQuantSpecs, Calibrate, ChooseRanges, InferShapes, InsertQDQ, PropagateRanges
from ptqc.passes.choose_ranges import CANDIDATES
from ptqc.runtime.ort import OrtRunner


def _calibrated(model, calib, validation):
    graph = import_model(model)
    ctx = PassContext(data=lambda run: [run(f) for f in calib])
    graph = PassManager([InferShapes(), AssignQuantSpecs(), Calibrate("kl")]).run(graph, ctx).graph
    ctx.analyses["validation_feeds"] = validation
    return graph, ctx


def _materialized(graph, ctx, observers) -> bytes:
    g, analyses = copy.deepcopy(graph), AnalysisStore()
    analyses.results, analyses.established = dict(ctx.analyses.results), set(ctx.analyses.established)
    analyses["observers"] = observers
    mctx = PassContext(analyses=analyses)
    g = PassManager([PropagateRanges(), InsertQDQ()]).run(g, mctx).graph
    return export_model(g, constants_as_initializers=True).SerializeToString()


def _error(float_model, qmodel: bytes, feeds) -> float:
    """The pass's own measure, computed independently: mean relative squared output error."""
    f, q = OrtRunner(float_model.SerializeToString()), OrtRunner(qmodel)
    errs = []
    for x in feeds:
        for r, y in zip(f.run(x).values(), q.run(x).values()):
            r, y = np.asarray(r, np.float64), np.asarray(y, np.float64)
            errs.append(float(np.sum((y - r) ** 2) / np.sum(r * r)))
    return float(np.mean(errs))


def _cases():
    d = models.train_digits_cnn()
    yield "digits", d.model, [{"input": d.x_train[i:i + 1]} for i in range(12)], \
        [{"input": d.x_test[i:i + 1]} for i in range(4)]
    m = builders.synthetic_model(40, seed=3)
    feeds = [builders.random_feeds(m, seed=s) for s in range(16)]
    yield "synthetic", m, feeds[:12], feeds[12:]


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_choice_is_never_worse_on_validation_than_the_best_single_method(name):
    _, model, calib, validation = next(c for c in _cases() if c[0] == name)
    graph, ctx = _calibrated(model, calib, validation)
    observers = ctx.analyses["observers"]
    single = {lab: _error(model, _materialized(graph, ctx, {n: o.with_method(m, **opts) for n, o in observers.items()}),
                          validation) for lab, m, opts in CANDIDATES}
    ChooseRanges().run(graph, ctx)
    chosen = _error(model, _materialized(graph, ctx, ctx.analyses["observers"]), validation)
    assert chosen <= min(single.values()) * (1 + 1e-6) + 1e-12, (chosen, single)
    assert set(ctx.analyses["range_choices"].values()) <= {lab for lab, _, _ in CANDIDATES}


def test_the_same_inputs_give_the_same_choices():
    _, model, calib, validation = next(_cases())
    runs = []
    for _ in range(2):
        graph, ctx = _calibrated(model, calib, validation)
        ChooseRanges().run(graph, ctx)
        runs.append((ctx.analyses["range_choices"], _materialized(graph, ctx, ctx.analyses["observers"])))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]


def test_without_held_out_batches_it_scores_on_the_data_and_says_so(caplog):
    model = builders.conv_bn_relu_model()
    feeds = [builders.random_feeds(model, seed=s) for s in range(4)]
    graph, ctx = _calibrated(model, feeds, None)
    ctx = PassContext(data=lambda run: [run(f) for f in feeds], analyses=ctx.analyses)
    with caplog.at_level("INFO", logger="ptqc"):
        ChooseRanges().run(graph, ctx)
    assert "scored on 4 calibration batches" in caplog.text
    assert ctx.analyses["range_choices"]


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_the_trial_model_computes_exactly_the_model_each_candidate_writes(name):
    """The scored model is the written one: scales as inputs, and the int32 biases re-quantized
    at those scales (a bias rounded once at another scale moved PP-OCR cls's outputs)."""
    import onnxruntime as ort

    from ptqc.passes.choose_ranges import _trial_model

    _, model, calib, validation = next(c for c in _cases() if c[0] == name)
    graph, ctx = _calibrated(model, calib, validation)
    observers = ctx.analyses["observers"]
    _, trial, names = _trial_model(graph, ctx, observers, False, 1.0)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    trial_session = ort.InferenceSession(trial, so, providers=["CPUExecutionProvider"])
    for lab, method, opts in CANDIDATES[:3]:
        chosen = {n: o.with_method(method, **opts) for n, o in observers.items()}
        written = _materialized(graph, ctx, chosen)
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load_from_string(written).graph.initializer}
        values = {x: inits[x] for pair in names.values() for x in pair}
        assert values, "no scale became a trial input"
        session = ort.InferenceSession(written, so, providers=["CPUExecutionProvider"])
        for f in validation:
            for a, b in zip(trial_session.run(None, {**f, **values}), session.run(None, f)):
                np.testing.assert_array_equal(a, b, err_msg=lab)
