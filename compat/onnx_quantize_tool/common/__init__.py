"""See :mod:`onnx_quantize_tool.common.register`."""
