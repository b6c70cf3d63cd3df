"""InsertQDQ: Q/DQ nodes in onnxruntime's QDQ form; ORT and our reference agree on them."""
import numpy as np
import onnx
import pytest

import builders
from checks import ort_outputs
from ptqc.errors import ConfigError
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import PassContext, PassManager
from ptqc.passes import (AssignQuantSpecs, Calibrate, FuseBatchNorm, InferShapes, InsertQDQ, MarkActivationFusion,
                         PropagateRanges)
from ptqc.quant import QuantScheme
from ptqc.runtime.reference import ReferenceExecutor


def _quantized(model, scheme=None, **qdq):
    graph = import_model(model)
    ctx = PassContext()
    passes = [InferShapes(), FuseBatchNorm(), MarkActivationFusion(), AssignQuantSpecs(scheme), Calibrate(),
              PropagateRanges(unify=bool(scheme and scheme.unify_concat)), InsertQDQ(**qdq)]
    graph = PassManager(passes).run(graph, ctx).graph
    return graph, export_model(graph, constants_as_initializers=True), ctx


def _reference(graph, feeds):
    ex = ReferenceExecutor(graph.topological_order(), opset=graph.opset,
                           constants={v.name: v.const for v in graph.values() if v.const is not None})
    out = ex.run(feeds, list(graph.outputs))
    return [out[o] for o in graph.outputs]


def test_conv_model_is_valid_qdq_with_per_channel_weights_and_int32_bias():
    graph, model, _ = _quantized(builders.conv_bn_relu_model())
    onnx.checker.check_model(model)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    kinds = sorted(str(a.dtype) for a in inits.values() if a.ndim >= 1 and a.dtype != np.float32)
    assert "int32" in kinds and "int8" in kinds
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 4  # x, y; + weight, bias
    (wdq,) = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
              and inits.get(n.input[0], np.zeros(0)).dtype == np.int8]
    assert onnx.helper.get_attribute_value(wdq.attribute[0]) == 0  # axis 0


def test_onnxruntime_and_reference_agree_within_one_step():
    graph, model, _ = _quantized(builders.concat_heavy_model(), QuantScheme(unify_concat=True),
                                 output_dequant=False)
    rng = np.random.default_rng(5)
    for _ in range(3):
        feeds = {"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32)}
        for a, b in zip(ort_outputs(model, feeds), _reference(graph, feeds)):
            assert a.dtype == b.dtype and a.dtype.kind in "iu"  # integer outputs without -od
            diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
            assert diff.max() <= 1 and (diff == 0).mean() >= 0.99


def test_uis_groups_share_one_scale_initializer():
    _, model, _ = _quantized(builders.concat_heavy_model(), QuantScheme(unify_concat=True))
    scale_of = {n.input[0]: n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert len({scale_of[t] for t in ("ra", "b_out", "m", "c1", "c2", "c3")}) == 1


def test_output_dequant_and_quantized_inputs():
    graph, model, ctx = _quantized(builders.conv_bn_relu_model(), output_dequant=False)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert set(ctx.analyses["output_params"]) == {"y"}
    _, model, _ = _quantized(builders.conv_bn_relu_model(), input_dtypes={"x": np.uint8})
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    with pytest.raises(ConfigError, match="input 'x' is quantized as uint8, not int8"):
        _quantized(builders.conv_bn_relu_model(), input_dtypes={"x": np.int8})


def test_sixteen_bit_uses_contrib_qdq_below_opset_21():
    scheme = QuantScheme(activation_dtype=np.dtype(np.int16), activation_symmetric=True,
                         weight_dtype=np.dtype(np.int16))
    graph, model, _ = _quantized(builders.conv_bn_relu_model(), scheme)
    domains = {n.domain for n in model.graph.node if n.op_type.endswith("QuantizeLinear")}
    assert domains == {"com.microsoft"}
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    a, = ort_outputs(model, feeds)
    b, = _reference(graph, feeds)
    assert np.abs(a - b).max() <= 1e-6 + float(np.abs(b).max()) * 1e-5
