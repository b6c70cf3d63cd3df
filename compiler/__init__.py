"""ptqc: a post-training quantization compiler for ONNX models.

This package root is the core a pass author works against: ``ptqc.ir`` (Graph, Node,
Value), ``ptqc.onnx_io`` (import/export), ``ptqc.pass_manager`` (Pass, PassResult,
PassContext, instruments) and ``ptqc.errors``.  The public API (``quantize``,
``quantize_static``, ``quantize_dynamic``, ``onnx_infer_func``, and the ``llm`` module:
``from ptqc import llm``) is resolved lazily through module ``__getattr__`` so that importing
``ptqc.ir`` from a pass never drags in the driver.
"""
from __future__ import annotations

import importlib

__version__ = "0.4.0"  # pyproject.toml and README's status line say the same

_LAZY = {
    "quantize": ("ptqc.driver.api", "quantize"),
    "quantize_static": ("ptqc.driver.api", "quantize_static"),
    "quantize_dynamic": ("ptqc.driver.api", "quantize_dynamic"),
    "onnx_infer_func": ("ptqc.driver.api", "onnx_infer_func"),
    "llm": ("ptqc.driver.llm", None),  # the module: ptqc.llm.quantize, the Ascend API
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        found = importlib.import_module(module)
        return found if attr is None else getattr(found, attr)
    raise AttributeError(f"module 'ptqc' has no attribute {name!r}")
