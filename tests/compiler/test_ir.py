"""The Graph facade: ordering, use lists, rewiring primitives and verify()."""
import numpy as np
import pytest

from ptqc.errors import GraphError
from ptqc.ir import Graph


def _chain() -> Graph:
    g = Graph("t")
    g.add_input("x", 1, (1, 4))
    g.add_constant("w", np.ones((4, 4), np.float32))
    g.add_node("MatMul", ["x", "w"], ["y"], name="mm")
    g.add_node("Relu", ["y"], ["z"], name="relu")
    g.add_node("Add", ["z", "y"], ["out"], name="add")
    g.outputs.append("out")
    return g


def test_consumers_are_ordered_slots():
    g = _chain()
    assert [(n.name, i) for n, i in g.consumers("y")] == [("relu", 0), ("add", 1)]
    assert g.producer("z").name == "relu"
    assert g.producer("x") is None


def test_topological_order_breaks_ties_by_insertion():
    g = Graph()
    g.add_input("x", 1, (1,))
    for i in range(5):  # five independent branches, inserted in order
        g.add_node("Relu", ["x"], [f"b{i}"], name=f"r{i}")
    g.add_node("Sum", [f"b{i}" for i in range(5)], ["s"], name="sum")
    order = [n.name for n in g.topological_order()]
    assert order == ["r0", "r1", "r2", "r3", "r4", "sum"]


def test_out_of_order_insertion_is_sorted():
    g = Graph()
    g.add_input("x", 1, (1,))
    g.add_node("Relu", ["a"], ["b"], name="second")  # reads a value produced later
    g.add_node("Relu", ["x"], ["a"], name="first")
    g.outputs.append("b")
    assert [n.name for n in g.topological_order()] == ["first", "second"]
    assert g.verify() == []


def test_replace_all_uses_and_remove():
    g = _chain()
    relu = g.producer("z")
    g.replace_all_uses("z", "y")
    g.remove_node(relu)
    assert [(n.name, i) for n, i in g.consumers("y")] == [("add", 0), ("add", 1)]
    assert not g.has_value("z")
    assert g.verify() == []


def test_set_output_moves_a_graph_output_name():
    g = _chain()
    add = g.producer("out")
    g.remove_node(add)  # "out" stays: it is a graph output, now without producer
    assert g.has_value("out") and g.producer("out") is None
    assert any("never produced" in p for p in g.verify())
    relu = g.producer("z")
    g.set_output(relu, 0, "out")
    assert g.producer("out") is relu and not g.has_value("z")
    assert g.verify() == []


def test_verify_names_dangling_values_cycles_and_duplicates():
    g = Graph()
    g.add_input("x", 1, (1,))
    g.add_node("Relu", ["ghost"], ["a"], name="r")
    g.outputs.append("a")
    assert any("'ghost'" in p and "never produced" in p for p in g.verify())

    c = Graph()
    c.add_input("x", 1, (1,))
    c.add_node("Add", ["x", "b"], ["a"], name="n1")
    c.add_node("Relu", ["a"], ["b"], name="n2")
    c.outputs.append("b")
    problems = c.verify()
    assert any("cyclic" in p and "n1" in p and "n2" in p for p in problems)
    with pytest.raises(GraphError, match="cyclic"):
        c.topological_order()

    d = _chain()
    d.add_node("Relu", ["out"], ["o2"], name="relu")
    assert any("'relu' is used 2 times" in p for p in d.verify())

    e = _chain()
    e.value("w").shape = (3, 3)
    assert any("constant 'w'" in p and "shape" in p for p in e.verify())


def test_two_producers_is_an_error():
    g = _chain()
    with pytest.raises(GraphError, match="already has a producer"):
        g.add_node("Relu", ["x"], ["y"])


def test_constant_sees_constant_ops_but_not_overridable_inputs():
    g = Graph()
    g.add_node("Constant", [], ["c"], {"value": np.arange(3, dtype=np.float32)})
    assert np.array_equal(g.constant("c"), np.arange(3, dtype=np.float32))
    g.add_input("w", 1, (2,))
    g.value("w").const = np.zeros(2, np.float32)  # initializer that is also an input
    assert g.constant("w") is None


def test_captured_values_cannot_be_replaced():
    g = _chain()
    g.add_node("If", ["x"], ["o"], name="if", captures=("y",))
    assert g.is_captured("y")
    with pytest.raises(GraphError, match="inside a subgraph"):
        g.replace_all_uses("y", "x")
