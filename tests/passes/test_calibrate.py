"""Calibrate: one model run per batch feeds every observer; the graph is unchanged."""
import numpy as np
import pytest

import builders
from ptqc.errors import PtqcError
from ptqc.onnx_io import import_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import AssignQuantSpecs, Calibrate, InferShapes
from ptqc.passes.calibrate import observed_values
from ptqc.runtime.reference import ReferenceExecutor


def _batches(n=5):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32) * (i + 1)} for i in range(n)]


@pytest.mark.parametrize("executor", ["onnxruntime", "reference"])
def test_observers_see_the_min_and_max_of_every_batch(executor):
    graph = import_model(builders.concat_heavy_model())
    ctx = PassContext()
    PassManager([InferShapes(), AssignQuantSpecs()]).run(graph, ctx)
    before = graph.op_counts()
    runs = []

    def drive(run):
        for feeds in _batches():
            runs.append(run(feeds))
        return 0.5

    ctx = PassContext(data=drive, analyses=ctx.analyses)
    result = Calibrate(executor=executor).run(graph, ctx)
    assert not result.modified and graph.op_counts() == before
    names = observed_values(graph)
    assert {"x", "ra", "b_out", "m", "c1", "c2", "c3"} <= set(names)
    ref = ReferenceExecutor(graph.topological_order(), constants={v.name: v.const for v in graph.values()
                                                                  if v.const is not None})
    seen = [ref.run(f, names + list(graph.outputs)) | f for f in _batches()]
    for name in names:
        obs = ctx.analyses["observers"][name]
        lo = min(float(s[name].min()) for s in seen)
        hi = max(float(s[name].max()) for s in seen)
        assert obs.batches == 5
        assert obs.range()[0] == pytest.approx(lo, rel=1e-5, abs=1e-6)
        assert obs.range()[1] == pytest.approx(hi, rel=1e-5, abs=1e-6)
    # forward returns the model's own outputs, in order
    assert [o.shape for o in runs[0]] == [(1, 8, 3, 3), (1, 2, 6, 6)]
    assert ctx.analyses["float_metric"] == 0.5


def test_no_batch_is_an_error():
    graph = import_model(builders.conv_bn_relu_model())
    ctx = PassContext(data=lambda run: 1.0)
    AssignQuantSpecs().run(graph, ctx)
    with pytest.raises(PtqcError, match="no batch"):
        Calibrate().run(graph, ctx)


def test_runs_alone_on_random_data_when_no_source_is_given():
    graph = import_model(builders.conv_bn_relu_model())
    ctx = PassContext()
    AssignQuantSpecs().run(graph, ctx)
    Calibrate().run(graph, ctx)
    assert ctx.analyses["observers"]["x"].range() is not None


def test_memory_does_not_grow_with_the_number_of_batches():
    """Streaming: peak Python/numpy memory of calibrating 40 batches is that of 4 (the reference
    executor's arrays are numpy, so tracemalloc sees every activation)."""
    import tracemalloc

    def peak(n):
        graph = import_model(builders.concat_heavy_model())
        ctx = PassContext()
        PassManager([InferShapes(), AssignQuantSpecs()]).run(graph, ctx)
        rng = np.random.default_rng(0)

        def drive(run):
            for _ in range(n):
                run({"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32)})
            return 1.0

        tracemalloc.start()
        Calibrate(executor="reference").run(graph, PassContext(data=drive, analyses=ctx.analyses))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(2)  # warm-up: one-time imports and caches are not the calibration's memory
    small, large = min(peak(4), peak(4)), min(peak(40), peak(40))
    assert large <= small * 1.2 + 64 * 1024, (small, large)


def test_held_out_batches_are_run_but_not_observed():
    graph = import_model(builders.conv_bn_relu_model())
    batches = [{"x": np.full((1, 3, 8, 8), float(i), np.float32)} for i in range(9)]
    ctx = PassContext(data=lambda run: [run(f) for f in batches])
    AssignQuantSpecs().run(graph, ctx)
    Calibrate(holdout=3, max_holdout=2).run(graph, ctx)
    held = [float(f["x"].flat[0]) for f in ctx.analyses["validation_feeds"]]
    assert held == [2.0, 5.0]  # every 3rd batch, at most 2 of them; batch 8 is calibrated on
    # the first calibration batches are kept beside them (the mixed-precision target checks both)
    assert [float(f["x"].flat[0]) for f in ctx.analyses["calibration_feeds"]] == [0.0, 1.0]
    assert ctx.analyses["calibration_batches"] == 7
    assert ctx.analyses["observers"]["x"].range()[1] == pytest.approx(8.0)
