"""Each input's batch axis comes from the model, never assumed to be 0: a VAD-like model with
``x [N, 8]`` and LSTM states ``h, c [2, N, 4]`` reads its -d samples, checks their batch sizes,
joins them into -bs batches and draws infer_auto data along axis 0 for x and axis 1 for the
states; a state of static shape is fed as is, and -bs > 1 then refuses naming it."""
import json
import re

import numpy as np
import onnx
import pytest

from builders import make_model
from checks import assert_bad_input, ort_outputs, ptqc
from ptqc.driver.data import (DataError, Executor, InputSpec, batch_axes, make_bin_folder_func,
                              make_infer_auto, make_npy_folder_func)

F32 = np.dtype(np.float32)
H = 4


# --- the rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("shapes, axes", [
    ([["N", 512], [2, "N", 64], [2, "N", 64]], [0, 1, 1]),                 # VAD: shared dim_param
    ([[None, 8], [2, None, 4]], [0, 1]),                                    # unnamed dims
    ([["input_dyn_0", 8], [2, "h_dyn_1", 4]], [0, 1]),                      # exporter names per input
    ([[2, "N", 4], ["N", 8]], [1, 0]),                                      # the state first
    ([["T", "batch", 8], [1, "batch", 4]], [1, 1]),                         # time-major: 'batch' wins
    ([["N", "T", 8], ["T"]], [0, None]),                                    # T sits beside the batch
    ([["N", 8], [2, 1, 4]], [0, None]),                                     # a static state
    ([[1, "seq"], [1, "seq"]], [0, 0]),                                     # static batch, dynamic length
    ([[1, 512], [2, 1, 64]], [0, None]),                                    # a static VAD
    ([[2, 3]], [0]),                                                        # a static batch dim
    ([None, [2, "N", 4]], [0, 1]),                                          # no shape: axis 0
    ([[None, 2, "n"]], [0]),
])
def test_batch_axes_come_from_the_declared_shapes(shapes, axes):
    specs = [InputSpec(f"i{k}", F32, None if s is None else tuple(s)) for k, s in enumerate(shapes)]
    assert batch_axes(specs) == axes


# --- the data sources, on a fake model ---------------------------------------------------

STATE = [InputSpec("x", F32, ("N", 8)), InputSpec("h", F32, (2, "N", H))]


class Model:
    def __init__(self):
        self.feeds = []

    def __call__(self, feeds):
        self.feeds.append(feeds)
        return []


def feed(specs, fn, **kwargs):
    model = Model()
    fn(Executor(model, list(specs), **kwargs))
    return model.feeds


def write_samples(folder, xs, hs, suffix=".npy"):
    for i, (x, h) in enumerate(zip(xs, hs)):
        (folder / f"s{i}").mkdir(parents=True)
        for name, a in (("x", x), ("h", h)):
            if suffix == ".npy":
                np.save(folder / f"s{i}" / f"{name}.npy", a)
            else:
                (folder / f"s{i}" / f"{name}.bin").write_bytes(a.astype("<f4").tobytes())


def samples(n, rows=1, seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal((rows, 8)).astype(np.float32) for _ in range(n)],
            [rng.standard_normal((2, rows, H)).astype(np.float32) for _ in range(n)])


def test_npy_samples_join_along_each_inputs_own_batch_axis(tmp_path):
    xs, hs = samples(3)
    xs[2], hs[2] = xs[2][0], hs[2][:, 0]  # one rank less: one row, its batch axis inserted
    write_samples(tmp_path, xs, hs)
    feeds = feed(STATE, make_npy_folder_func(tmp_path), iteration=10, batch_size=2)
    assert [(f["x"].shape, f["h"].shape) for f in feeds] == [((2, 8), (2, 2, H)), ((1, 8), (2, 1, H))]
    np.testing.assert_array_equal(feeds[0]["h"], np.concatenate(hs[:2], axis=1))
    np.testing.assert_array_equal(feeds[1]["h"][:, 0], hs[2])
    np.testing.assert_array_equal(feeds[0]["x"], np.concatenate(xs[:2]))


def test_a_sample_of_several_rows_splits_along_each_inputs_batch_axis(tmp_path):
    xs, hs = samples(1, rows=3)
    write_samples(tmp_path, xs, hs)
    feeds = feed(STATE, make_npy_folder_func(tmp_path), iteration=10, batch_size=2)
    assert [f["h"].shape for f in feeds] == [(2, 2, H), (2, 1, H)]
    np.testing.assert_array_equal(feeds[1]["h"], hs[0][:, 2:])
    np.testing.assert_array_equal(feeds[1]["x"], xs[0][2:])


def test_batch_sizes_are_compared_along_each_inputs_batch_axis(tmp_path):
    xs, hs = samples(2)
    hs[1] = np.zeros((2, 3, H), np.float32)  # 3 rows along axis 1 against x's 1
    write_samples(tmp_path, xs, hs)
    with pytest.raises(DataError) as e:
        feed(STATE, make_npy_folder_func(tmp_path), iteration=10)
    assert str(e.value) == (f"{tmp_path / 's1'}: sample files have different batch sizes along their inputs' "
                            f"batch axes: x.npy 1 (axis 0 of [1, 8]), h.npy 3 (axis 1 of [2, 3, 4])")


def test_a_static_state_is_fed_as_is_and_refuses_batching_by_name(tmp_path):
    specs = [InputSpec("x", F32, ("N", 8)), InputSpec("h", F32, (2, 1, H))]
    xs, hs = samples(3)
    write_samples(tmp_path, xs, hs)
    feeds = feed(specs, make_npy_folder_func(tmp_path), iteration=10)
    assert [f["h"].shape for f in feeds] == [(2, 1, H)] * 3
    np.testing.assert_array_equal(feeds[2]["h"], hs[2])
    with pytest.raises(DataError, match=r"^-bs/--batch-size 2: input 'h' \[2, 1, 4\] has no dynamic batch dim, "
                                        r"so samples cannot be joined along it; use -bs 1"):
        feed(specs, make_npy_folder_func(tmp_path), iteration=10, batch_size=2)


def test_bin_samples_take_one_row_along_each_inputs_batch_axis(tmp_path):
    xs, hs = samples(3)
    write_samples(tmp_path, xs, hs, suffix=".bin")
    feeds = feed(STATE, make_bin_folder_func(tmp_path), iteration=10, batch_size=3)
    assert feeds[0]["h"].shape == (2, 3, H)
    np.testing.assert_array_equal(feeds[0]["h"], np.concatenate(hs, axis=1))


def test_infer_auto_puts_the_batch_size_on_each_inputs_batch_axis():
    specs = [*STATE, InputSpec("c", F32, (2, "N", H)), InputSpec("s", F32, (2, 1, H))]
    (f,) = feed(specs, make_infer_auto(), batch_size=3)
    assert [f[n].shape for n in "xhcs"] == [(3, 8), (2, 3, H), (2, 3, H), (2, 1, H)]


# --- the command line, on an LSTM ----------------------------------------------------------

def lstm_model(state_batch="N"):
    """A bidirectional LSTM step: out = Relu(h_n), with the state first among the inputs."""
    helper = onnx.helper
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Unsqueeze", ["x", "axes0"], ["x3"]),
             helper.make_node("LSTM", ["x3", "W", "R", "B", "", "h", "c"], ["Y", "hn", "cn"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("Relu", ["hn"], ["out"])]
    state = [2, state_batch, H]
    return make_model(nodes, [("h", np.float32, state), ("x", np.float32, ["N", 8]), ("c", np.float32, state)],
                      [("out", np.float32, state), ("cn", np.float32, state)],
                      {"axes0": np.array([0], np.int64), "W": rng.standard_normal((2, 4 * H, 8)).astype(np.float32),
                       "R": rng.standard_normal((2, 4 * H, H)).astype(np.float32),
                       "B": rng.standard_normal((2, 8 * H)).astype(np.float32)})


def write_lstm_samples(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    feeds = []
    for i in range(n):
        f = {"h": rng.standard_normal((2, 1, H)), "x": rng.standard_normal((1, 8)), "c": rng.standard_normal((2, 1, H))}
        f = {k: v.astype(np.float32) for k, v in f.items()}
        (folder / f"s{i}").mkdir(parents=True)
        for name, a in f.items():
            np.save(folder / f"s{i}" / f"{name}.npy", a)
        feeds.append(f)
    return feeds


def quant(tmp_path, model, data, *args):
    path = tmp_path / "vad.onnx"
    path.write_bytes(model.SerializeToString())
    return ptqc("--chip", "TX510x", "quant", "-m", path, "-d", data, "--save-dir", tmp_path / "out", *args)


def test_cli_batches_lstm_states_along_axis_1(tmp_path):
    model = lstm_model()
    feeds = write_lstm_samples(tmp_path / "data", 5)
    ranges = {}
    for bs, batches in ((1, 5), (2, 3)):
        code, _, err = quant(tmp_path, model, tmp_path / "data", "-bs", str(bs), "-qm", "min_max", "-vs", "0",
                             "-gsj", "-l", "1")
        assert code == 0, err
        assert re.search(rf"calibrate: {batches} batches, 5 samples", err), err
        table = json.loads((tmp_path / "out" / "vad_scale.json").read_text())["tensors"]
        ranges[bs] = table["hn"]["rmax"]
    # symmetric min_max: the range of hn is max |hn| over the samples, each run alone by onnxruntime;
    # a state paired with another sample's x, or joined along the wrong axis, gives another one
    with_hn = onnx.ModelProto()
    with_hn.CopyFrom(model)
    with_hn.graph.output.append(onnx.helper.make_tensor_value_info("hn", onnx.TensorProto.FLOAT, None))
    hn_max = max(float(np.abs(ort_outputs(with_hn, f)[-1]).max()) for f in feeds)
    assert ranges[1] == pytest.approx(hn_max, rel=1e-6) and ranges[2] == pytest.approx(hn_max, rel=1e-6)


def test_cli_refuses_samples_whose_batch_sizes_differ_along_their_batch_axes(tmp_path):
    write_lstm_samples(tmp_path / "data", 3)
    np.save(tmp_path / "data" / "s1" / "h.npy", np.zeros((2, 2, H), np.float32))
    code, _, err = quant(tmp_path, lstm_model(), tmp_path / "data")
    assert_bad_input(code, err, f"{tmp_path / 'data' / 's1'}: sample files have different batch sizes",
                     "h.npy 2 (axis 1 of [2, 2, 4])", "x.npy 1 (axis 0 of [1, 8])")


def test_cli_refuses_batching_a_static_state_naming_it(tmp_path):
    write_lstm_samples(tmp_path / "data", 2)
    code, _, err = quant(tmp_path, lstm_model(state_batch=1), tmp_path / "data", "-bs", "2")
    assert_bad_input(code, err, "-bs/--batch-size 2: input 'h' [2, 1, 4] has no dynamic batch dim")
