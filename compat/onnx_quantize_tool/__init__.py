"""The reference tool's import names, so scripts written for it run under ptqc unchanged:
``from onnx_quantize_tool.common.register import onnx_infer_func, pytorch_model``."""
