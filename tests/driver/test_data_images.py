"""Image and raw .bin calibration folders (MindSpore Lite's [data_preprocess_param]), the
auto-detection of a -d folder's kind, the image flags, and two ``ptqc quant`` runs on images."""
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from checks import assert_bad_input, ptqc
from ptqc.driver.config import QuantConfig, from_cli
from ptqc.driver.data import (DataError, Executor, ImagePreprocess, InputSpec, make_bin_folder_func,
                              make_folder_func, make_image_folder_func)
from ptqc.driver.quantize import infer_function_of
from ptqc.errors import ConfigError

F32 = np.dtype(np.float32)


class Model:
    """A fake model: records every feed dict."""

    def __init__(self):
        self.feeds = []

    def __call__(self, feeds):
        self.feeds.append(feeds)
        return [np.zeros(1, np.float32)]


def run(fn, inputs, **kwargs):
    """Run infer function ``fn`` over fake-model inputs; the feeds it gave."""
    model = Model()
    fn(Executor(model, list(inputs), **kwargs))
    return model.feeds


def noise_image(path, width, height, seed=0, mode="RGB"):
    """A random image saved at ``path`` (PNG/BMP are lossless, so reading it back is exact)."""
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def solid_image(path, value, size=(4, 4)):
    """A one-colour RGB image whose red channel tells it apart from the others."""
    Image.new("RGB", size, (value, 0, 0)).save(path)
    return path


# --- preprocessing -----------------------------------------------------------------------

def hand_preprocess(path, size, crop, bgr, mean, std, resample=Image.BILINEAR):
    """MindSpore's order written out: resize, centre crop, float, channel order, normalize (HWC)."""
    image = Image.open(path).convert("RGB").resize(size, resample)
    (w, h), (cw, ch) = image.size, crop
    left, top = (w - cw) // 2, (h - ch) // 2
    x = np.asarray(image.crop((left, top, left + cw, top + ch)), np.float64)
    if bgr:
        x = x[..., ::-1]
    return (x - np.array(mean)) / np.array(std)


@pytest.mark.parametrize("shape, nchw", [((None, 3, 6, 8), True), ((None, 6, 8, 3), False)],
                         ids=["NCHW", "NHWC"])
def test_resize_crop_bgr_normalize_match_a_hand_computation(tmp_path, shape, nchw):
    path = noise_image(tmp_path / "a.png", 13, 11)
    pre = ImagePreprocess(image_to_format="BGR", normalize_mean=(10, 120, 200), normalize_std=(2, 50, 8),
                          resize_width=10, resize_height=9, center_crop_width=8, center_crop_height=6)
    (feed,) = run(make_image_folder_func(tmp_path, pre), [InputSpec("x", F32, shape)])
    want = hand_preprocess(path, (10, 9), (8, 6), True, (10, 120, 200), (2, 50, 8))
    want = want.transpose(2, 0, 1) if nchw else want
    assert feed["x"].dtype == np.float32 and feed["x"].shape == (1, *want.shape)
    np.testing.assert_allclose(feed["x"][0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method, resample", [("NEAREST", Image.NEAREST), ("CUBIC", Image.BICUBIC),
                                              ("LINEAR", Image.BILINEAR)])
def test_without_a_resize_size_images_take_the_models_size_as_raw_pixels(tmp_path, method, resample):
    path = noise_image(tmp_path / "a.bmp", 20, 15)
    (feed,) = run(make_image_folder_func(tmp_path, ImagePreprocess(resize_method=method)),
                  [InputSpec("x", F32, (1, 3, 5, 7))])
    want = np.asarray(Image.open(path).convert("RGB").resize((7, 5), resample), np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(feed["x"][0], want)
    assert feed["x"].max() > 1  # no normalization: 0..255


def test_a_center_crop_alone_crops_the_image_as_loaded(tmp_path):
    path = noise_image(tmp_path / "a.png", 9, 8)
    pre = ImagePreprocess(center_crop_width=4, center_crop_height=3)
    (feed,) = run(make_image_folder_func(tmp_path, pre), [InputSpec("x", F32, (1, 3, "h", "w"))])
    want = np.asarray(Image.open(path).convert("RGB"), np.float32)[2:5, 2:6].transpose(2, 0, 1)
    np.testing.assert_array_equal(feed["x"][0], want)


def test_gray_images_feed_one_channel(tmp_path):
    path = noise_image(tmp_path / "a.png", 4, 4)  # a colour file, converted as Pillow's L
    pre = ImagePreprocess(image_to_format="GRAY", normalize_mean=(100,), normalize_std=(4,))
    (feed,) = run(make_image_folder_func(tmp_path, pre), [InputSpec("x", F32, (None, 1, 4, 4))])
    want = (np.asarray(Image.open(path).convert("L"), np.float32) - 100) / 4
    assert feed["x"].shape == (1, 1, 4, 4)
    np.testing.assert_allclose(feed["x"][0, 0], want, rtol=1e-6)


def test_a_uint8_input_gets_the_pixels_unconverted(tmp_path):
    path = noise_image(tmp_path / "a.png", 4, 4)
    (feed,) = run(make_image_folder_func(tmp_path), [InputSpec("x", np.dtype(np.uint8), (1, 4, 4, 3))])
    assert feed["x"].dtype == np.uint8
    np.testing.assert_array_equal(feed["x"][0], np.asarray(Image.open(path)))


# --- batching and limits -----------------------------------------------------------------

def five_images(folder):
    """Five one-colour images, red 0..40 in name order; extensions in every case; a text file."""
    for i, name in enumerate(["a.PNG", "b.jpg", "c.bmp", "d.JPEG", "e.png"]):
        solid_image(folder / name, 10 * i)
    (folder / "labels.txt").write_text("not an image")


def reds(feeds):
    return [np.round(f["x"][:, 0, 0, 0]).astype(int).tolist() for f in feeds]


XS = [InputSpec("x", F32, (None, 3, 4, 4))]


def test_images_are_batched_in_name_order_and_the_short_last_batch_runs(tmp_path, caplog):
    five_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        feeds = run(make_image_folder_func(tmp_path), XS, iteration=10, batch_size=2)
    assert reds(feeds) == [[0, 10], [20, 30], [40]]
    assert "only 3 batches" in caplog.text


def test_images_stop_at_iteration_batches(tmp_path):
    five_images(tmp_path)
    assert reds(run(make_image_folder_func(tmp_path), XS, iteration=2, batch_size=2)) == [[0, 10], [20, 30]]


def test_calibrate_size_caps_the_images_read(tmp_path, caplog):
    five_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        feeds = run(make_image_folder_func(tmp_path, limit=3), XS, iteration=10, batch_size=2)
    assert reds(feeds) == [[0, 10], [20]]
    assert caplog.text == ""  # the user asked for three


def test_a_calibrate_size_beyond_iteration_times_batch_size_is_warned_about(tmp_path, caplog):
    five_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ptqc"):
        feeds = run(make_image_folder_func(tmp_path, limit=5), XS, iteration=1, batch_size=2)
    assert reds(feeds) == [[0, 10]]
    assert "--calibrate-size 5, but -i 1 x -bs 2 reads at most 2 samples" in caplog.text


# --- bad image data ----------------------------------------------------------------------

def test_a_corrupt_image_is_named_with_its_input_after_earlier_batches_ran(tmp_path):
    solid_image(tmp_path / "a.png", 0)
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage, not an image")
    model = Model()
    with pytest.raises(DataError) as e:
        make_image_folder_func(tmp_path)(Executor(model, XS, iteration=5))
    assert str(e.value).startswith(f"{tmp_path / 'b.png'}: unreadable image for input 'x' (")
    assert len(model.feeds) == 1  # a.png ran before b.png was read: the folder streams


def test_a_truncated_image_is_named(tmp_path):
    solid_image(tmp_path / "a.png", 0, size=(64, 64))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=f"^{tmp_path / 'a.png'}: unreadable image for input 'x'"):
        run(make_image_folder_func(tmp_path), [InputSpec("x", F32, (1, 3, 64, 64))])


@pytest.mark.parametrize("extra", [None, "notes.txt"])
def test_a_folder_without_images_is_refused(tmp_path, extra):
    if extra:
        (tmp_path / extra).write_text("")
    with pytest.raises(DataError, match=r"^-d/--data .*: no image files \(\.bmp, \.jpg, \.jpeg, \.png\)$"):
        make_image_folder_func(tmp_path)


@pytest.mark.parametrize("specs, message", [
    ([InputSpec("x", F32, (1, 3, 4, 4)), InputSpec("y", F32, (1, 3, 4, 4))],
     r"^-d/--data .*: an image folder feeds a model with one image input; this model has 2 inputs \(x, y\): "
     r"give one subfolder per sample holding <input_name>\.npy"),
    ([InputSpec("x", F32, (1, 3, "h", "w"))],
     r"^input 'x' \[1, 3, h, w\] has a dynamic height or width; give the image size with --resize W H"),
    ([InputSpec("x", F32, (1, 1, 4, 4))], r"^input 'x' \[1, 1, 4, 4\] has 1 channels; image format RGB gives 3"),
    ([InputSpec("x", F32, (1, 48))], r"^input 'x' has shape \[1, 48\]; an image folder feeds a rank-4"),
    ([InputSpec("x", np.dtype(np.int64), (1, 3, 4, 4))], r"^input 'x' has dtype int64; images give float32"),
])
def test_a_model_input_images_cannot_feed_is_named(tmp_path, specs, message):
    solid_image(tmp_path / "a.png", 0)
    with pytest.raises(ConfigError, match=message):
        run(make_image_folder_func(tmp_path), specs)


def test_a_wrong_resize_size_names_the_file_and_a_small_image_the_crop(tmp_path):
    solid_image(tmp_path / "a.png", 0, size=(6, 6))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'a.png'}: input 'x' has shape \[1, 3, 5, 5\], "
                                        r"model wants \[\?, 3, 4, 4\]$"):
        run(make_image_folder_func(tmp_path, ImagePreprocess(resize_width=5, resize_height=5)), XS)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'a.png'}: image 6x6 is smaller than the center crop "
                                        r"8x8 \(input 'x'\)$"):
        run(make_image_folder_func(tmp_path, ImagePreprocess(center_crop_width=8, center_crop_height=8)), XS)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_to_format": "RGBA"}, "^image_to_format 'RGBA': not one of RGB, BGR, GRAY$"),
    ({"resize_method": "AREA"}, "^resize_method 'AREA': not one of LINEAR, NEAREST, CUBIC$"),
    ({"normalize_mean": (1, 2, 3)}, "^normalize_mean and normalize_std must be given together$"),
    ({"normalize_mean": (1, 2), "normalize_std": (1,)}, r"^normalize_mean: 2 values; give 1 or 3"),
    ({"image_to_format": "GRAY", "normalize_mean": (1, 2, 3), "normalize_std": (1,)},
     r"^normalize_mean: 3 values; give 1 or 1"),
    ({"normalize_mean": (1,), "normalize_std": (0,)}, "^normalize_std: values must be nonzero$"),
    ({"resize_width": -1}, "^resize_width: -1 is negative$"),
])
def test_image_preprocess_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ImagePreprocess(**kwargs)


# --- raw .bin folders --------------------------------------------------------------------

def test_bin_files_take_dtype_and_shape_from_the_model(tmp_path):
    (tmp_path / "s0.bin").write_bytes(np.arange(6, dtype="<f4").tobytes())
    for i in (1, 2):
        (tmp_path / f"s{i}.bin").write_bytes(np.full(6, i, "<f4").tobytes())
    feeds = run(make_bin_folder_func(tmp_path), [InputSpec("x", F32, (None, 2, 3))], iteration=5, batch_size=2)
    assert [f["x"].shape for f in feeds] == [(2, 2, 3), (1, 2, 3)]
    np.testing.assert_array_equal(feeds[0]["x"][0], np.arange(6).reshape(2, 3))
    assert feeds[1]["x"].dtype == np.float32 and feeds[1]["x"][0, 0, 0] == 2


def test_bin_files_are_little_endian_and_capped_by_calibrate_size(tmp_path):
    for i in range(4):
        (tmp_path / f"s{i}.bin").write_bytes(np.array([i, 256 + i], "<i8").tobytes())
    feeds = run(make_bin_folder_func(tmp_path, limit=2), [InputSpec("ids", np.dtype(np.int64), (1, 2))],
                iteration=10)
    assert [f["ids"].tolist() for f in feeds] == [[[0, 256]], [[1, 257]]]


def test_a_bin_file_of_the_wrong_size_names_file_size_and_expected_size(tmp_path):
    (tmp_path / "a.bin").write_bytes(np.zeros(6, "<f4").tobytes())
    (tmp_path / "b.bin").write_bytes(np.zeros(5, "<f4").tobytes())
    model = Model()
    with pytest.raises(DataError) as e:
        make_bin_folder_func(tmp_path)(Executor(model, [InputSpec("x", F32, (1, 2, 3))], iteration=5))
    assert str(e.value) == f"{tmp_path / 'b.bin'}: 20 bytes; input 'x' (float32 [1, 2, 3]) needs 24"
    assert len(model.feeds) == 1


def test_bin_needs_static_dims_but_the_batch(tmp_path):
    (tmp_path / "a.bin").write_bytes(np.zeros(6, "<f4").tobytes())
    with pytest.raises(DataError, match=r"^input 'x' has shape \[\?, 2, n\]; \.bin files need every dim but "
                                        r"the batch static"):
        run(make_bin_folder_func(tmp_path), [InputSpec("x", F32, (None, 2, "n"))])


def test_bin_subfolders_hold_one_sample_of_every_input(tmp_path):
    specs = [InputSpec("x", F32, (None, 3)), InputSpec("y", np.dtype(np.int32), (None, 2))]
    for i in range(2):
        (tmp_path / f"s{i}").mkdir()
        (tmp_path / f"s{i}" / "x.bin").write_bytes(np.full(3, i, "<f4").tobytes())
        (tmp_path / f"s{i}" / "y.bin").write_bytes(np.array([i, -i], "<i4").tobytes())
    (feed,) = run(make_bin_folder_func(tmp_path), specs, batch_size=2)
    assert feed["x"][:, 0].tolist() == [0, 1] and feed["y"].tolist() == [[0, 0], [1, -1]]
    assert feed["y"].dtype == np.int32
    (tmp_path / "s1" / "y.bin").unlink()
    with pytest.raises(DataError, match=rf"^{tmp_path / 's1'}: no file y\.bin for input 'y'$"):
        run(make_bin_folder_func(tmp_path), specs, batch_size=2)


# --- which kind of folder ----------------------------------------------------------------

def test_the_files_decide_the_folder_kind(tmp_path):
    images, bins, npys, nested = (tmp_path / n for n in ("images", "bins", "npys", "nested"))
    for folder in (images, bins, npys, nested / "s0"):
        folder.mkdir(parents=True)
    solid_image(images / "a.JPG", 0)
    (bins / "a.bin").write_bytes(b"")
    np.save(npys / "a.npy", np.zeros(3))
    np.save(nested / "s0" / "x.npy", np.zeros(3))
    kinds = {folder.name: make_folder_func(folder)[1] for folder in (images, bins, npys, nested)}
    assert kinds == {"images": "image folder", "bins": "bin folder", "npys": "npy folder", "nested": "npy folder"}


def test_a_mixed_folder_lists_what_it_holds(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        solid_image(tmp_path / name, 0)
    (tmp_path / "s0").mkdir()
    np.save(tmp_path / "s0" / "x.npy", np.zeros(3))
    with pytest.raises(DataError) as e:
        make_folder_func(tmp_path)
    assert str(e.value) == (f"-d/--data {tmp_path}: mixed calibration files: 1 .npy file (s0/x.npy); "
                            "3 image files (a.png, b.png, ...); keep one kind per folder")


def test_a_folder_without_calibration_files_is_refused(tmp_path):
    (tmp_path / "readme.md").write_text("")
    with pytest.raises(DataError, match=r"^-d/--data .*: no calibration files \(\.npy, \.bin, or images"):
        make_folder_func(tmp_path)
    with pytest.raises(ConfigError, match=r"^-d/--data .*nope: no such folder$"):
        make_folder_func(tmp_path / "nope")


def test_infer_function_of_routes_a_folder_with_the_configs_preprocessing(tmp_path):
    noise_image(tmp_path / "a.png", 10, 10)
    noise_image(tmp_path / "b.png", 10, 10, seed=1)
    config = QuantConfig(data=tmp_path, image_format="BGR", resize=(6, 5), center_crop=(4, 3), calibrate_size=1,
                         image_mean=(1.0,), image_std=(2.0,), iteration=(5,))
    for data in (None, str(tmp_path)):  # -d, or quantize(data=folder)
        fn, name = infer_function_of(data, config)
        assert name == "image folder"
        (feed,) = run(fn, [InputSpec("x", F32, (1, 3, 3, 4))], iteration=5)
        want = hand_preprocess(tmp_path / "a.png", (6, 5), (4, 3), True, (1.0,), (2.0,))
        np.testing.assert_allclose(feed["x"][0], want.transpose(2, 0, 1), rtol=1e-6)


@pytest.mark.parametrize("config_kwargs, message", [
    ({"resize": (4, 4), "explicit": frozenset({"resize"})},
     r"^--resize: applies only to an image -d folder; the calibration data here comes from npy folder "),
    ({"calibrate_size": 3, "data": None, "explicit": frozenset({"calibrate_size"})},
     r"^--calibrate-size: applies only to a -d folder; the calibration data here comes from 'infer_auto'$"),
])
def test_flags_a_source_would_ignore_are_refused(tmp_path, config_kwargs, message):
    np.save(tmp_path / "a.npy", np.zeros(3, np.float32))
    config = QuantConfig(**{"data": tmp_path, **config_kwargs})
    with pytest.raises(ConfigError, match=message):
        infer_function_of(None, config)


# --- config ------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"resize": [0, 8]}, r"^--resize: sizes must be positive, got 0 8$"),
    ({"center_crop": [8]}, r"^--center-crop: give two values W H, got 1$"),
    ({"image_mean": [1.0]}, r"^--image-mean and --image-std must be given together$"),
    ({"image_mean": [1.0], "image_std": [0.0]}, r"^--image-std: values must be nonzero$"),
    ({"image_mean": [1.0, 2.0], "image_std": [1.0]}, r"^--image-mean: 2 values; give 1 or 3"),
    ({"image_format": "GRAY", "image_mean": [1.0], "image_std": [1.0, 2.0, 3.0]},
     r"^--image-std: 3 values; give 1 or 1 \(--image-format GRAY\)$"),
    ({"calibrate_size": 0}, r"^--calibrate-size: must be >= 1, got 0$"),
    ({"resize_method": "AREA"}, r"^--resize-method: 'AREA' is not one of LINEAR, NEAREST, CUBIC$"),
])
def test_image_flags_are_validated_naming_the_flag(values, message):
    with pytest.raises(ConfigError, match=message):
        from_cli(values)


def test_image_flags_land_in_the_config():
    cfg = from_cli({"image_format": "GRAY", "resize": [8, 6], "resize_method": "CUBIC", "center_crop": [4, 4],
                    "image_mean": [127.5], "image_std": [127.5], "calibrate_size": 100})
    assert (cfg.image_format, cfg.resize, cfg.resize_method, cfg.center_crop, cfg.image_mean, cfg.image_std,
            cfg.calibrate_size) == ("GRAY", (8, 6), "CUBIC", (4, 4), (127.5,), (127.5,), 100)
    assert {"resize", "calibrate_size", "image_mean"} <= cfg.explicit


# --- the command line --------------------------------------------------------------------

def conv_model(path):
    """x float32 [1, 3, 8, 8] -> Conv(3->2, 3x3, pads 1, constant weights) -> Relu -> y."""
    w = (np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) - 27) / 100
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0.1, -0.2], np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_cli_quantizes_from_a_folder_of_png_images(tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        noise_image(images / f"img{i}.png", 16, 12, seed=i)
    save = tmp_path / "out"
    code, out, err = ptqc("quant", "-m", model, "-d", images, "--resize", "8", "8", "--image-mean", "127.5",
                          "--image-std", "127.5", "-i", "4", "-qm", "min_max", "--save-dir", save)
    assert code == 0, err
    assert "Traceback" not in err
    written = save / "conv_quantize.onnx"
    assert written.is_file() and str(written) in out
    onnx.checker.check_model(onnx.load(written))


def test_cli_refuses_a_corrupt_image_naming_it_and_writes_nothing(tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    images = tmp_path / "images"
    images.mkdir()
    noise_image(images / "a.png", 8, 8)
    (images / "x.png").write_bytes(b"garbage bytes, not a png")
    save = tmp_path / "out"
    code, _, err = ptqc("quant", "-m", model, "-d", images, "-i", "2", "-qm", "min_max", "--save-dir", save)
    assert_bad_input(code, err, str(images / "x.png"), "input 'x'", "unreadable image")
    assert not list(save.glob("*_quantize.onnx"))


def test_cli_refuses_a_bad_resize_naming_the_flag(tmp_path):
    code, _, err = ptqc("quant", "-m", tmp_path / "m.onnx", "--resize", "0", "8", "--save-dir", tmp_path / "out")
    assert_bad_input(code, err, "--resize", "positive")
