"""onnxruntime's ``quantize_dynamic``, same arguments: the float cleanup (``-r convert``), then
:class:`~ptqc.passes.quantize_dynamic.QuantizeDynamic`, written atomically.  No calibration
data: activations are quantized at run time (DynamicQuantizeLinear), so the model runs on
onnxruntime, not on a TX5xxx chip (whose tables need fixed activation scales)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ptqc.driver.pipeline import dynamic_pipeline
from ptqc.errors import ConfigError, ModelError
from ptqc.onnx_io import check_model, export_model, import_model, save_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes.quantize_dynamic import OPS

# MatMulConstBOnly: onnxruntime's dynamic default (True) is what ptqc does; EnableSubgraph False
_EXTRA_OPTIONS = {"WeightSymmetric", "MatMulConstBOnly", "EnableSubgraph"}


def _enum_name(value: Any) -> str:
    return getattr(value, "name", str(value)).split(".")[-1]


def quantize_dynamic(model_input, model_output, op_types_to_quantize=None, per_channel=False, reduce_range=False,
                     weight_type="QInt8", nodes_to_quantize=None, nodes_to_exclude=None,
                     use_external_data_format=False, extra_options=None) -> onnx.ModelProto:
    """onnxruntime's ``quantize_dynamic``: MatMul (constant B), Gemm and Conv weights
    quantized (QInt8: symmetric, QUInt8: asymmetric, unless ``WeightSymmetric`` says
    otherwise; ``per_channel`` for MatMul/Gemm columns; ``reduce_range`` 7 bits), their
    inputs quantized at run time; other op types in ``op_types_to_quantize`` are refused by
    name.  Returns the model written to ``model_output``."""
    wt = _enum_name(weight_type)
    types = {"QInt8": np.int8, "QUInt8": np.uint8}
    if wt not in types:
        raise ConfigError(f"weight_type {wt}: not supported by dynamic quantization (use QInt8 or QUInt8)")
    extra = dict(extra_options or {})
    unknown = sorted(set(extra) - _EXTRA_OPTIONS)
    if unknown:
        raise ConfigError(f"extra_options {unknown[0]!r}: not supported "
                          f"(supported: {', '.join(sorted(_EXTRA_OPTIONS))})")
    if not extra.get("MatMulConstBOnly", True) or extra.get("EnableSubgraph", False):
        raise ConfigError("extra_options MatMulConstBOnly False / EnableSubgraph True: not built yet (MatMuls with "
                          "a constant B, outside subgraphs, are quantized)")
    ops = frozenset(op_types_to_quantize) if op_types_to_quantize else None
    if ops is not None and ops - set(OPS):
        raise ConfigError(f"op_types_to_quantize {sorted(ops - set(OPS))[0]}: not built yet for dynamic "
                          f"quantization (built: {', '.join(OPS)})")
    graph = import_model(model_input)
    passes = dynamic_pipeline(np.dtype(types[wt]), per_channel=bool(per_channel), reduce_range=bool(reduce_range),
                              symmetric=extra.get("WeightSymmetric"), op_types=ops,
                              nodes_to_quantize=frozenset(nodes_to_quantize) if nodes_to_quantize else None,
                              nodes_to_exclude=frozenset(nodes_to_exclude or ()))
    graph = PassManager(passes).run(graph, PassContext()).graph
    model = export_model(graph, constants_as_initializers=True)
    try:
        check_model(model, "dynamically quantized model")
    except ModelError as e:  # our bug, not the user's: say so
        raise RuntimeError(f"ptqc produced an invalid model: {e}") from None
    save_model(model, Path(model_output), external_data=True if use_external_data_format else None)
    return model
