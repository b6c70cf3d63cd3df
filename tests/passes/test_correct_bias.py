"""CorrectBias (--bias-correction): after it, every Conv's per-channel output mean over the
calibration data matches the float model's to within one step of its bias (its own rounding
and the earlier layers'), layer after layer; run alone on a QDQ graph it gives the model the
flag writes."""
import numpy as np
import onnx
from onnx import numpy_helper

from checks import list_reader, ort_outputs
from ptqc.driver.config import QuantConfig
from ptqc.driver.quantize import quantize
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext
from ptqc.passes.correct_bias import CorrectBias, correct_bias


def _drive(feeds):
    def drive(run):
        for f in feeds:
            run(f)
        return 0.0
    return drive


def _corrected(model: onnx.ModelProto, codes: dict) -> onnx.ModelProto:
    graph = import_model(model)
    for name, array in codes.items():
        graph.set_constant(name, array)
    return export_model(graph, constants_as_initializers=True)


def _means(model: onnx.ModelProto, names: list[str], feeds: list[dict]) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    outs = [ort_outputs(m, f) for f in feeds]
    return {n: np.mean([o[i].astype(np.float64).mean(axis=(0, 2, 3)) for o in outs], axis=0)
            for i, n in enumerate(names)}


def test_conv_output_means_match_the_float_model_after_correction(digits):
    feeds = [{"input": digits.x_train[i:i + 16]} for i in range(0, 64, 16)]
    report = quantize(digits.model, None, list_reader(feeds), QuantConfig(chip="TX510x", output_dequant=True),
                      evaluate=False)
    names = [n.output[0] for n in report.model.graph.node if n.op_type == "Conv"]
    assert len(names) >= 2

    codes = correct_bias(import_model(report.model), report.float_model, _drive(feeds))  # the mechanism alone
    assert len(codes) == len(names) + 1  # and the classifier's Gemm
    fixed = _corrected(report.model, codes)
    ref, before, after = (_means(m, names, feeds) for m in (report.float_model, report.model, fixed))
    inits = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    producer = {o: n for n in fixed.graph.node for o in n.output}
    for conv in (n for n in fixed.graph.node if n.op_type == "Conv"):
        y = conv.output[0]
        step = inits[producer[conv.input[2]].input[1]].astype(np.float64)  # the bias scale
        assert np.all(np.abs(after[y] - ref[y]) <= step + 1e-5 * np.abs(ref[y])), y
        assert np.abs(after[y] - ref[y]).sum() < 0.5 * np.abs(before[y] - ref[y]).sum(), y
    # only the int32 bias codes change
    changed = {i.name for i, j in zip(report.model.graph.initializer, fixed.graph.initializer) if i != j}
    assert changed and all(numpy_helper.to_array(next(i for i in fixed.graph.initializer if i.name == c)).dtype
                           == np.int32 for c in changed)


def test_the_flag_corrects_the_written_model(tmp_path, ppocr):
    """PP-OCR rec at 8 bits (mse): the flag moves only int32 bias codes, deterministically,
    and raises the output cosine on the calibration data (-vs 0: fitted and scored on the same
    four batches)."""
    import models

    feeds = [models.ppocr_sample_inputs("rec", seed=s) for s in range(4)]

    def run(out, **kw):
        cfg = QuantConfig(chip="TX5368AV200", quant_mode=("mse",), output_dequant=True, validation_split=0,
                          adaround=False, **kw)
        return quantize(ppocr["rec"], tmp_path / out, list_reader(feeds), cfg)

    plain, fixed, _ = run("a.onnx"), run("b.onnx", bias_correction=True), run("c.onnx", bias_correction=True)
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "c.onnx").read_bytes()  # deterministic
    codes = lambda m: {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}  # noqa: E731
    a, b = codes(plain.model), codes(fixed.model)
    changed = [n for n in a if not np.array_equal(a[n], b[n])]
    assert changed and all(a[n].dtype == np.int32 for n in changed)
    (out,) = plain.cosine
    assert fixed.cosine[out][0] > plain.cosine[out][0] + 0.01, (plain.cosine, fixed.cosine)


def test_a_correction_that_lowers_the_output_cosine_is_not_applied(ppocr, caplog):
    """PP-OCR det at 8 bits with kl: heavy clipping distorts more than the channel means, and
    matching the means pushes more values into the clip (output cosine 0.52 -> 0.0 on one
    calibration image).  The check on the calibration data keeps the model as it was."""
    import models

    feeds = [models.ppocr_sample_inputs("det", seed=s) for s in range(4)]
    report = quantize(ppocr["det"], None, list_reader(feeds),
                      QuantConfig(chip="TX5368AV200", quant_mode=("kl",), output_dequant=True, adaround=False),
                      evaluate=False)

    graph = import_model(report.model)
    ctx = PassContext(data=_drive(feeds))
    ctx.analyses["float_model"] = report.float_model
    with caplog.at_level("WARNING", logger="ptqc"):
        result = CorrectBias()(graph, ctx)
    assert ctx.analyses["bias_corrected"] == 0 and not result.modified
    assert export_model(graph, constants_as_initializers=True).SerializeToString() == \
        export_model(import_model(report.model), constants_as_initializers=True).SerializeToString()
    assert any("would lower the mean output cosine" in r.getMessage() for r in caplog.records)


def test_the_guard_scores_on_the_held_out_batches(tmp_path, ppocr, caplog):
    """PP-OCR rec, four images, the default split: the means are fitted on the three
    calibration images; on the fourth, held out, the correction lowers the output cosine
    (0.908 -> 0.886), so the written model is the uncorrected one."""
    import models

    feeds = [models.ppocr_sample_inputs("rec", seed=s) for s in range(4)]
    cfg = dict(chip="TX5368AV200", quant_mode=("mse",), output_dequant=True, adaround=False)
    plain = quantize(ppocr["rec"], tmp_path / "a.onnx", list_reader(feeds), QuantConfig(**cfg))
    with caplog.at_level("WARNING", logger="ptqc"):
        kept = quantize(ppocr["rec"], tmp_path / "b.onnx", list_reader(feeds), QuantConfig(bias_correction=True, **cfg))
    assert "held-out" in plain.evaluated_on
    assert any("lower the mean output cosine on the held-out data" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert kept.cosine == plain.cosine


def test_the_pass_alone_gives_the_model_the_flag_writes(digits):
    """CorrectBias run by hand on the QDQ model of a run without the flag (its float model,
    its data, nothing held out) gives the model the run with the flag writes: the same nodes
    and the same initializers, byte for byte."""
    feeds = [{"input": digits.x_train[i:i + 16]} for i in range(0, 64, 16)]
    cfg = dict(chip="TX510x", output_dequant=True, validation_split=0, adaround=False)
    plain = quantize(digits.model, None, list_reader(feeds), QuantConfig(**cfg), evaluate=False)
    flagged = quantize(digits.model, None, list_reader(feeds), QuantConfig(bias_correction=True, **cfg),
                       evaluate=False)
    graph = import_model(plain.model)
    ctx = PassContext(data=_drive(feeds))
    ctx.analyses["float_model"] = plain.float_model
    assert CorrectBias()(graph, ctx).modified and ctx.analyses["bias_corrected"] > 0
    by_hand = export_model(graph, constants_as_initializers=True)
    inits = lambda m: {i.name: i.SerializeToString() for i in m.graph.initializer}  # noqa: E731
    assert inits(by_hand) == inits(flagged.model) != inits(plain.model)
    nodes = lambda m: [n.SerializeToString() for n in m.graph.node]  # noqa: E731
    assert nodes(by_hand) == nodes(flagged.model)
