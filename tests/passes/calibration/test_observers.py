"""The min_max observer: streams, merges exactly, refuses NaN."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptqc.errors import PtqcError
from ptqc.passes.calibration import MinMaxObserver, make_observer


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(2, 6), st.integers(1, 5)),
                  elements=st.floats(-1e6, 1e6, width=32)), st.integers(1, 5), st.booleans())
def test_merge_of_halves_is_bit_identical_to_one_observer(x, cut, per_channel):
    cut = min(cut, len(x) - 1)
    axis = 1 if per_channel else None
    whole, a, b = MinMaxObserver("t", axis), MinMaxObserver("t", axis), MinMaxObserver("t", axis)
    for row in x:
        whole.observe(row[None])
    for row in x[:cut]:
        a.observe(row[None])
    for row in x[cut:]:
        b.observe(row[None])
    a.merge(b)
    for dtype, sym in ((np.uint8, False), (np.int8, True), (np.int16, True)):
        p, q = whole.qparams(dtype, symmetric=sym), a.qparams(dtype, symmetric=sym)
        assert p.scale.tobytes() == q.scale.tobytes() and p.zero_point.tobytes() == q.zero_point.tobytes()


def test_range_is_the_min_and_max_seen():
    obs = MinMaxObserver("t")
    obs.observe(np.array([[1.0, -2.0]], np.float32))
    obs.observe(np.array([[5.0, 0.0]], np.float32))
    assert obs.range() == (-2.0, 5.0)
    obs.reset()
    assert obs.range() is None


def test_nan_is_an_error_naming_the_tensor():
    obs = MinMaxObserver("conv3_out")
    with pytest.raises(PtqcError, match="conv3_out.*NaN"):
        obs.observe(np.array([1.0, np.nan], np.float32))


def test_unknown_methods_are_refused_by_name():
    assert isinstance(make_observer("min_max"), MinMaxObserver)
    with pytest.raises(PtqcError, match="-qm/--quant-mode entropy: unknown method"):
        make_observer("entropy")


@pytest.mark.parametrize("constant", [0.01, 0.5])
def test_moving_average_min_max_is_onnxruntimes(constant):
    """CalibMovingAverage: the same range as onnxruntime's MinMaxCalibrater (moving_average,
    averaging_constant) on the same batches; halves merged give the same."""
    import onnx
    from onnx import helper
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    rng = np.random.default_rng(5)
    batches = [(rng.normal(size=(2, 6)) * rng.uniform(0.5, 3)).astype(np.float32) for _ in range(7)]
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 6])],
                                                [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 6])]),
                              opset_imports=[helper.make_opsetid("", 13)])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": b} for b in batches)

        def get_next(self):
            return next(self.it, None)

    options = {"moving_average": True, "averaging_constant": constant}
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(model, str(path))
        calib = create_calibrator(str(path), ["Relu"], augmented_model_path=str(Path(tmp) / "a.onnx"),
                                  calibrate_method=CalibrationMethod.MinMax, extra_options=options)
        calib.collect_data(Reader())
        want = calib.compute_data()["y"].range_value
    obs, first, second = (make_observer("min_max", "y", average=True) for _ in range(3))
    for i, b in enumerate(batches):
        obs.observe(np.maximum(b, 0))
        (first if i < 3 else second).observe(np.maximum(b, 0))
    np.testing.assert_allclose(obs.range(), np.asarray(want, np.float64).reshape(2), rtol=1e-5)
    assert not np.allclose(obs.range(), (0.0, max(b.max() for b in batches)))  # not the global min/max
    first.merge(second)
    np.testing.assert_array_equal(first.range(), obs.range())
