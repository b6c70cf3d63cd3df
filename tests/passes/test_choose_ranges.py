"""ChooseRanges (-qm auto): never worse on the scoring batches than min_max, and where it leaves
min_max, better than it by more than noise and never worse than the best single method;
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
from ptqc.passes.choose_ranges import CANDIDATES, PRIOR, _better, _loss
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


def _errors(float_model, qmodel: bytes, feeds) -> np.ndarray:
    """The pass's own measure, computed independently: per sample (one per feed, batches of
    one), the mean over outputs of the relative squared output error."""
    f, q = OrtRunner(float_model.SerializeToString()), OrtRunner(qmodel)
    errs = []
    for x in feeds:
        per = [float(np.sum((np.asarray(y, np.float64) - r) ** 2) / np.sum(np.asarray(r, np.float64) ** 2))
               for r, y in zip(f.run(x).values(), q.run(x).values())]
        errs.append(np.mean(per))
    return np.array(errs)


def _cases():
    d = models.train_digits_cnn()
    yield "digits", d.model, [{"input": d.x_train[i:i + 1]} for i in range(12)], \
        [{"input": d.x_test[i:i + 1]} for i in range(4)]
    m = builders.synthetic_model(40, seed=3)
    feeds = [builders.random_feeds(m, seed=s) for s in range(16)]
    yield "synthetic", m, feeds[:12], feeds[12:]


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_choice_beats_min_max_beyond_noise_and_every_single_method_or_is_min_max(name):
    _, model, calib, validation = next(c for c in _cases() if c[0] == name)
    graph, ctx = _calibrated(model, calib, validation)
    observers = ctx.analyses["observers"]
    single = {lab: _errors(model, _materialized(graph, ctx, {n: o.with_method(m, **opts) for n, o in observers.items()}),
                           validation) for lab, m, opts in CANDIDATES}
    ChooseRanges().run(graph, ctx)
    chosen = _errors(model, _materialized(graph, ctx, ctx.analyses["observers"]), validation)
    choices = set(ctx.analyses["range_choices"].values())
    assert choices <= {lab for lab, _, _ in CANDIDATES}
    if choices == {PRIOR}:
        np.testing.assert_allclose(chosen, single[PRIOR], rtol=1e-6)
    else:
        assert _better(chosen, single[PRIOR], 2.0), (chosen, single[PRIOR])
        assert chosen.mean() <= min(v.mean() for v in single.values()) * (1 + 1e-6) + 1e-12


def test_a_search_that_does_not_beat_min_max_beyond_noise_falls_back_to_it(caplog):
    """With a bar no gain reaches (z huge), every group reads min_max and the log says why."""
    _, model, calib, validation = next(c for c in _cases() if c[0] == "synthetic")
    graph, ctx = _calibrated(model, calib, validation)
    with caplog.at_level("INFO", logger="ptqc"):
        ChooseRanges(z=1e9).run(graph, ctx)
    assert set(ctx.analyses["range_choices"].values()) == {PRIOR}
    assert "by more than noise" in caplog.text or "start min_max" in caplog.text


def test_a_change_must_beat_the_current_errors_by_more_than_noise():
    old = np.full(8, 1.0)
    assert _better(old - 0.1, old, 2.0)  # every sample a little better
    lucky = old.copy()
    lucky[0] = 0.0  # one sample much better, the rest a little worse: a mean gain, but noise
    lucky[1:] += 0.05
    assert lucky.mean() < old.mean() and not _better(lucky, old, 2.0)
    assert not _better(old, old, 0.0) and _better(np.array([0.5]), np.array([1.0]), 2.0)


class _Echo:
    """A runner returning fixed outputs, for :func:`_loss`."""

    def __init__(self, outputs):
        self.outputs = outputs

    def run(self, feeds):
        return dict(enumerate(self.outputs))


def test_samples_are_rows_only_where_every_output_is_batched_along_axis_0():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(3, 4))
    noisy = ref + np.array([[0.1], [0.0], [0.0]])
    feeds = {"x": np.zeros((3, 5), np.float32)}
    rows = _loss(_Echo([noisy]), [[ref]], [feeds], {})
    assert rows.shape == (3,) and rows[0] > 0 and rows[1] == rows[2] == 0
    # an LSTM's [time, N, 4] output with N = 1: the batch is one sample, not 3 time steps
    whole = _loss(_Echo([noisy[:, None]]), [[ref[:, None]]], [{"x": np.zeros((1, 5), np.float32)}], {})
    assert whole.shape == (1,)
    np.testing.assert_allclose(whole[0], np.sum((noisy - ref) ** 2) / np.sum(ref ** 2))


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
