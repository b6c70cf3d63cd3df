"""The onnx wheel's backend node test cases, collected once per process (takes ~6 s)."""
from __future__ import annotations

import functools
import warnings


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(collect_testcases(None))
