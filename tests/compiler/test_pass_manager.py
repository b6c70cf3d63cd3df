"""The pass manager: requirements checked, analyses invalidated, instruments from outside."""
import pytest

from ptqc.errors import GraphError, PassOrderError
from ptqc.ir import Graph
from ptqc.onnx_io import import_model, save_model
from ptqc.pass_manager import (DumpIRInstrument, Pass, PassContext, PassManager, PassResult,
                               TimingInstrument, VerifyInstrument)


def _graph() -> Graph:
    g = Graph()
    g.add_input("x", 1, (2,))
    g.add_node("Relu", ["x"], ["y"], name="relu")
    g.outputs.append("y")
    g.value("y").elem_type, g.value("y").shape = 1, (2,)
    return g


class Produce(Pass):
    produces = ("facts",)

    def run(self, graph, ctx):
        return PassResult(graph, False)


class Need(Pass):
    requires = ("facts",)

    def run(self, graph, ctx):
        return PassResult(graph, False)


class Touch(Pass):
    def run(self, graph, ctx):
        graph.add_node("Neg", ["y"], [graph.unique_name("n")])
        return PassResult(graph, True)


class Break(Pass):
    def run(self, graph, ctx):
        graph.add_node("Neg", ["nowhere"], ["z"])
        return PassResult(graph, True)


def test_missing_requirement_names_pass_and_analysis():
    with pytest.raises(PassOrderError, match="pass need requires facts"):
        PassManager([Need()]).run(_graph())
    PassManager([Produce(), Need()]).run(_graph())


def test_modifying_pass_drops_analyses_it_does_not_preserve():
    ctx = PassContext()
    with pytest.raises(PassOrderError):
        PassManager([Produce(), Touch(), Need()]).run(_graph(), ctx)
    assert "facts" not in ctx.analyses.established


def test_result_reports_modified_honestly():
    assert not PassManager([Produce()]).run(_graph()).modified
    assert PassManager([Produce(), Touch()]).run(_graph()).modified


def test_timing_and_verify_instruments():
    timing = TimingInstrument()
    PassManager([Produce(), Touch()], [timing]).run(_graph())
    assert [(t.name, t.modified) for t in timing.timings] == [("produce", False), ("touch", True)]
    with pytest.raises(GraphError, match="after pass break: value 'nowhere'"):
        PassManager([Break()], [VerifyInstrument()]).run(_graph())


def test_dump_ir_writes_one_model_per_pass(tmp_path):
    PassManager([Produce(), Touch()], [DumpIRInstrument(tmp_path, save_model)]).run(_graph())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["01_produce.onnx", "02_touch.onnx"]
    assert import_model(tmp_path / "02_touch.onnx").op_counts() == {"Neg": 1, "Relu": 1}


def test_a_pass_runs_alone_without_a_manager():
    assert Touch()(_graph()).modified
