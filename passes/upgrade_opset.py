"""UpgradeOpset: raise the default-domain opset (QDQ per-channel needs 13) with onnx's own
``version_converter``; a model it cannot convert stops the run with a clear message instead
of producing an invalid model."""
from __future__ import annotations

import onnx
from onnx import version_converter

from ptqc.errors import ModelError
from ptqc.ir import Graph
from ptqc.onnx_io import export_model, import_model
from ptqc.pass_manager import Pass, PassContext, PassResult


class UpgradeOpset(Pass):
    """Convert the graph to opset ``target`` when it is older (never downgrade)."""

    def __init__(self, target: int = 13):
        self.target = target

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if graph.opset >= self.target:
            return PassResult(graph, False)
        before = graph.opset
        try:
            model = version_converter.convert_version(export_model(graph), self.target)
            # the converter keeps the IR version; opset 13 needs IR 7 (initializers need no
            # graph input from IR 4 on, which the new scales and zero points rely on)
            model.ir_version = max(model.ir_version, onnx.helper.find_min_ir_version_for(
                list(model.opset_import), ignore_unknown=True))
            onnx.checker.check_model(model)
        except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot upgrade the model from opset {before} to {self.target} "
                             f"(needed for per-channel QDQ): {msg}") from None
        upgraded = import_model(model, check=False)
        upgraded.meta.update(graph.meta)
        ctx.logger.info("upgrade_opset: opset %d -> %d", before, self.target)
        return PassResult(upgraded, True)
