"""The ordered pass lists, by run mode.  The whole compiler's order is readable here."""
from __future__ import annotations

from typing import Callable

from ptqc.pass_manager import Pass
from ptqc.passes import (EliminateDeadCode, FoldConstants, FuseBatchNorm, FuseBiasAdd, InferShapes,
                         LiftConstantNodes, MarkActivationFusion, RemoveIdentity)


def convert_pipeline() -> list[Pass]:
    """``-r convert``: clean the float graph, quantize nothing."""
    return [LiftConstantNodes(), InferShapes(), FoldConstants(), RemoveIdentity(), FuseBiasAdd(), FuseBatchNorm(),
            MarkActivationFusion(), EliminateDeadCode()]


PIPELINES: dict[str, Callable[[], list[Pass]]] = {"convert": convert_pipeline}


def build_pipeline(mode: str) -> list[Pass]:
    """Fresh pass instances for a run mode."""
    return PIPELINES[mode]()
