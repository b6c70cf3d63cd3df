"""``ptqc.llm.quantize(model, config, data=None, output=None)`` (this module, reached as
``ptqc.llm``): the Ascend ``quantize`` API
(shared/reference/ascend-quantize-api.md) on ONNX models: weight-only int4/int8 quantization of
every MatMul/Gemm layer by minmax (RTN), AWQ or GPTQ, written as onnxruntime's MatMulNBits; with
``quant_cfg.inputs``, W8A8 (activations int8 per tensor as QDQ, or per token at run time through
MatMulInteger), SmoothQuant's migration first when the algorithm is smoothquant.

``model`` is an ONNX path, bytes or ModelProto, or a ``torch.nn.Module`` (exported by
``torch.onnx.export`` at opset 17 on the first batch of ``data``; torch is an optional extra).
``config`` is the Ascend dict (:mod:`ptqc.driver.llm_config`).  ``data`` is an iterable of feed
dicts or an onnxruntime ``CalibrationDataReader``; its first ``batch_num`` batches are read
once, streaming (AWQ and GPTQ need it; minmax does not).  Returns the quantized ModelProto,
after checking that onnxruntime loads it (and runs it on the first batch when there is data);
``output`` is written atomically.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx

from ptqc.driver.frontends import torch_to_onnx
from ptqc.driver.llm_config import LlmConfig, parse
from ptqc.driver.pipeline import convert_pipeline
from ptqc.errors import ConfigError, ModelError, onnxruntime_error
from ptqc.onnx_io import check_model, export_model, import_model, save_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes.quantize_w8a8 import QuantizeW8A8
from ptqc.passes.quantize_weights import QuantizeWeights
from ptqc.passes.smooth_activations import SmoothActivations
from ptqc.passes.upgrade_opset import UpgradeOpset
from ptqc.runtime.ort import OrtRunner


def quantize(model: Any, config: dict, data: Iterable[dict] | Any = None,
             output: str | os.PathLike | None = None) -> onnx.ModelProto:
    """Weight-only or W8A8 quantization as configured; see the module docstring."""
    cfg = parse(config)
    batches = _batches(data, cfg.batch_num)
    if not isinstance(model, (str, os.PathLike, bytes, onnx.ModelProto)):
        model, batches = _from_torch(model, batches)
    graph = import_model(model)
    label = str(model) if isinstance(model, (str, os.PathLike)) else "model"
    nodes = {n.name: n.op_type for n in graph.nodes()}
    first: list[dict] = []

    def drive(run) -> None:
        for feeds in batches:
            if not first:
                first.append(feeds)
            try:
                run(feeds)
            except Exception as e:  # noqa: BLE001 - onnxruntime's failure on the user's model, named
                err = onnxruntime_error(e, label, nodes)
                if err is None:
                    raise
                raise err from None
    ctx = PassContext(data=drive if batches is not None else None)
    passes = [UpgradeOpset(17), *convert_pipeline(), *_passes(cfg)]
    graph = PassManager(passes).run(graph, ctx).graph
    result = export_model(graph, constants_as_initializers=True)
    try:
        check_model(result, "weight-quantized model")
    except ModelError as e:  # our bug, not the user's
        raise RuntimeError(f"ptqc produced an invalid model: {e}") from None
    if not first and batches is not None:  # minmax read no data: run the check on the first batch
        first = [f for f in itertools.islice(batches, 1)]
    _runs(result, first[0] if first else None)
    if output is not None:
        save_model(result, Path(output))
    return result


def _passes(cfg: LlmConfig) -> list:
    """Weight-only (QuantizeWeights), or W8A8 (SmoothActivations first for smoothquant, then QuantizeW8A8)."""
    if cfg.inputs is None:
        return [QuantizeWeights(cfg.bits, cfg.symmetric, cfg.strategy, cfg.group_size or 0, cfg.algorithm,
                                cfg.grids_num, cfg.skip_layers)]
    smooth = [SmoothActivations(cfg.smooth_strength, cfg.skip_layers)] if cfg.algorithm == "smoothquant" else []
    return [*smooth, QuantizeW8A8(cfg.inputs_symmetric, cfg.inputs, cfg.strategy == "channel", cfg.skip_layers)]


def _batches(data: Any, count: int) -> Iterable[dict] | None:
    """The first ``count`` feed dicts of ``data`` (a reader's get_next() or an iterable), lazily."""
    if data is None:
        return None
    if hasattr(data, "get_next"):
        source = iter(data.get_next, None)
    else:
        try:
            source = iter(data)
        except TypeError:
            raise ConfigError(f"data: expected an iterable of feed dicts or a CalibrationDataReader, got "
                              f"{type(data).__name__}") from None
    return _checked(itertools.islice(source, count))


def _checked(feeds: Iterable) -> Iterable[dict]:
    for i, f in enumerate(feeds):
        if not isinstance(f, dict) or not f:
            raise ConfigError(f"data batch {i}: expected a non-empty dict of input name -> array, got "
                              f"{type(f).__name__}")
        yield {k: np.asarray(v) for k, v in f.items()}


def _from_torch(module: Any, batches: Iterable[dict] | None) -> tuple[onnx.ModelProto, Iterable[dict] | None]:
    """A torch.nn.Module exported to ONNX on the first batch (kept for the run)."""
    try:
        import torch  # optional frontend (ptqc[pytorch])
    except ImportError:
        raise ConfigError(f"model: a {type(module).__name__} is not an ONNX model, and torch (to export a "
                          "torch.nn.Module) is not installed") from None
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"model: expected an ONNX path, bytes, ModelProto or torch.nn.Module, got "
                          f"{type(module).__name__}")
    it = iter(batches) if batches is not None else iter(())
    first = next(it, None)
    if first is None:
        raise ConfigError("model: exporting a torch.nn.Module needs data (its first batch gives the example inputs)")
    proto = torch_to_onnx(module, [torch.from_numpy(v) for v in first.values()], names=list(first),
                          label=f"model {type(module).__name__}")
    return proto, itertools.chain([first], it)


def _runs(model: onnx.ModelProto, feeds: dict | None) -> None:
    """onnxruntime loads the result (and runs every output on ``feeds``)."""
    try:
        runner = OrtRunner(model.SerializeToString())
        if feeds is not None:
            runner.run(feeds)
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"onnxruntime cannot run ptqc's weight-quantized model: {' '.join(str(e).split())}") \
            from None
