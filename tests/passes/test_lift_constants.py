"""LiftConstantNodes turns Constant ops built in memory into constant values."""
import numpy as np

from ptqc.ir import Graph
from ptqc.onnx_io import export_model
from ptqc.passes import LiftConstantNodes


def test_constant_op_becomes_a_value_and_exports_as_constant_node():
    g = Graph()
    g.add_input("x", 1, (2,))
    g.add_node("Constant", [], ["c"], {"value": np.array([1.0, 2.0], np.float32)}, name="const")
    g.add_node("Add", ["x", "c"], ["y"])
    g.outputs.append("y")
    result = LiftConstantNodes()(g)
    assert result.modified and g.op_counts() == {"Add": 1}
    assert np.array_equal(g.value("c").const, [1.0, 2.0])
    nodes = export_model(g).graph.node
    assert [n.op_type for n in nodes] == ["Constant", "Add"] and nodes[0].name == "const"
    assert not LiftConstantNodes()(g).modified
