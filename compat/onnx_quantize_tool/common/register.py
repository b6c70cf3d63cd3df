"""The reference tool's registries, which are ptqc's own: a function registered here is the
one ``-if`` (``onnx_infer_func``) or ``-m`` with ``-f pytorch`` (``pytorch_model``) names."""
from ptqc.driver.data import onnx_infer_func, pytorch_model

__all__ = ["onnx_infer_func", "pytorch_model"]
