"""The ptqc IR: a thin, honest facade over ``networkx.MultiDiGraph``.

Ops are networkx nodes keyed by a stable integer id (insertion order); every tensor is a
:class:`Value` with one producer (an op, a graph input, or a constant) and ordered consumer
slots ``(node, input_index)``.  An edge ``producer -> consumer`` carries the key
``(value_name, input_index)`` so operand order is never lost.  Users never touch networkx.

What is serialized (ONNX attributes, constants, names) is kept apart from ``meta`` dicts that
passes use for analyses (quantization parameters, fusion groups); ``meta`` never reaches
the exported model.

Imports nothing of ptqc but ``ptqc.errors`` (numpy, onnx, networkx only).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import networkx as nx
import numpy as np
import onnx

from ptqc.errors import GraphError

Dim = int | str | None  # static size, symbolic name, or unknown


@dataclass(eq=False)
class ConstantOrigin:
    """Where a constant came from, so export can write it back the same way."""

    kind: str  # "initializer" | "constant_node" | "sparse_initializer"
    node_name: str = ""  # the Constant node's name (constant_node)
    attr: str = "value"  # which Constant attribute held it (value, value_float, ...)
    doc_string: str = ""
    proto: Any = None  # the original SparseTensorProto (sparse_initializer)


@dataclass(eq=False)
class Value:
    """A tensor (or, opaquely, a sequence/optional/map) flowing through the graph.

    ``elem_type`` is the ONNX ``TensorProto.DataType`` (0 = unknown); ``shape`` is None when
    the rank is unknown.  ``type_proto`` holds the full type only for non-tensor values.
    """

    name: str
    elem_type: int = 0
    shape: tuple[Dim, ...] | None = None
    const: np.ndarray | None = None
    origin: ConstantOrigin | None = None
    type_proto: onnx.TypeProto | None = None
    doc_string: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    producer_id: int | None = field(default=None, repr=False)

    @property
    def dtype(self) -> np.dtype | None:
        if not self.elem_type:
            return None
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def is_constant(self) -> bool:
        return self.const is not None

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape if every dimension is a known integer, else None."""
        if self.shape is None or not all(isinstance(d, int) and d >= 0 for d in self.shape):
            return None
        return tuple(self.shape)  # type: ignore[arg-type]


@dataclass(eq=False)
class Node:
    """One op.  Change ``inputs``/``outputs`` only through :class:`Graph` methods."""

    id: int
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    name: str = ""
    doc_string: str = ""
    attr_types: dict[str, int] = field(default_factory=dict)  # ONNX AttributeType, from import
    extra: dict[str, Any] = field(default_factory=dict)  # other serialized fields (overload...)
    meta: dict[str, Any] = field(default_factory=dict)
    captures: tuple[str, ...] = ()  # outer values that the node's subgraphs read

    def __repr__(self) -> str:
        return f"Node({self.id}, {self.op_type}, {self.name!r})"


@dataclass
class ModelInfo:
    """Model-level fields kept verbatim for a lossless round trip."""

    ir_version: int = onnx.IR_VERSION
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 13})
    producer_name: str = "ptqc"
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata_props: list[tuple[str, str]] = field(default_factory=list)
    functions: list[Any] = field(default_factory=list)  # FunctionProto, opaque
    extra: dict[str, Any] = field(default_factory=dict)  # training_info, graph-level extras


class Graph:
    """A computation graph.  Iteration order is deterministic (insertion order)."""

    def __init__(self, name: str = "graph", info: ModelInfo | None = None):
        self.name = name
        self.doc_string = ""
        self.info = info or ModelInfo()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}
        self._nx = nx.MultiDiGraph()
        self._nodes: dict[int, Node] = {}
        self._values: dict[str, Value] = {}
        self._uses: dict[str, list[tuple[int, int]]] = {}
        self._ids = itertools.count()
        self._order: list[Node] | None = None
        self._names = itertools.count()

    # ---------------------------------------------------------------- values
    @property
    def opset(self) -> int:
        """The default-domain opset version."""
        return self.info.opset_imports.get("", self.info.opset_imports.get("ai.onnx", 1))

    def value(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise GraphError(f"graph {self.name!r} has no value named {name!r}") from None

    def has_value(self, name: str) -> bool:
        return name in self._values

    def values(self) -> Iterator[Value]:
        return iter(list(self._values.values()))

    def _ensure_value(self, name: str) -> Value:
        v = self._values.get(name)
        if v is None:
            v = self._values[name] = Value(name)
            self._uses[name] = []
        return v

    def add_input(self, name: str, elem_type: int = 0, shape: Sequence[Dim] | None = None,
                  type_proto: onnx.TypeProto | None = None) -> Value:
        v = self._ensure_value(name)
        if name in self.inputs or v.producer_id is not None:
            raise GraphError(f"graph input {name!r} is defined twice")
        v.elem_type, v.shape, v.type_proto = elem_type, _shape(shape), type_proto
        self.inputs.append(name)
        return v

    def add_constant(self, name: str, array: np.ndarray, origin: ConstantOrigin | None = None) -> Value:
        v = self._ensure_value(name)
        if v.producer_id is not None or v.const is not None:
            raise GraphError(f"constant {name!r} is defined twice")
        array = np.asarray(array)
        v.const, v.origin = array, origin or ConstantOrigin("initializer")
        v.elem_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype) if array.dtype != object else onnx.TensorProto.STRING
        v.shape = tuple(int(d) for d in array.shape)
        self._order = None
        return v

    def set_constant(self, name: str, array: np.ndarray) -> Value:
        """Replace a constant's data (same name, same origin kind)."""
        v = self.value(name)
        if v.const is None:
            raise GraphError(f"value {name!r} is not a constant")
        array = np.asarray(array)
        v.const = array
        v.elem_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        v.shape = tuple(int(d) for d in array.shape)
        return v

    def fresh_name(self, name: str) -> str:
        """``name`` itself when no value has it yet (the names onnxruntime's quantizer writes, such
        as ``x_scale``, stay predictable), else :meth:`unique_name`."""
        return name if name not in self._values else self.unique_name(name)

    def unique_name(self, prefix: str) -> str:
        while True:
            name = f"{prefix}__{next(self._names)}"
            if name not in self._values:
                return name

    def constant(self, value: str | Value) -> np.ndarray | None:
        """The array of a constant value (initializer, lifted Constant node, or the output of a
        Constant op); None for anything computed at run time or overridable as a graph input."""
        v = self._values.get(value if isinstance(value, str) else value.name)
        if v is None or v.name in self.inputs:
            return None
        if v.const is not None:
            return v.const
        p = self.producer(v)
        if p is not None and p.op_type == "Constant" and p.domain in ("", "ai.onnx") and "value" in p.attrs:
            return p.attrs["value"] if isinstance(p.attrs["value"], np.ndarray) else None
        return None

    def remove_value(self, name: str) -> None:
        """Drop a constant or producer-less value that nothing uses."""
        v = self.value(name)
        if self._uses[name] or name in self.outputs or v.producer_id is not None:
            raise GraphError(f"value {name!r} is still produced or used")
        if name in self.inputs:
            self.inputs.remove(name)
        del self._values[name], self._uses[name]

    # ----------------------------------------------------------------- nodes
    def nodes(self) -> Iterator[Node]:
        """All nodes in insertion order."""
        return iter(list(self._nodes.values()))

    def __len__(self) -> int:
        return len(self._nodes)

    def node(self, node_id: int) -> Node:
        return self._nodes[node_id]

    def has_node(self, node_id: int) -> bool:
        return node_id in self._nodes

    def add_node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str],
                 attrs: dict[str, Any] | None = None, *, name: str = "", domain: str = "",
                 **fields: Any) -> Node:
        """Add an op.  Inputs may name values not produced yet (``verify`` reports them if they
        never are); outputs must not already have a producer."""
        node = Node(next(self._ids), op_type, tuple(inputs), tuple(outputs), dict(attrs or {}),
                    domain=domain, name=name, **fields)
        for out in node.outputs:
            v = self._values.get(out)
            if v is not None and (v.producer_id is not None or v.const is not None or out in self.inputs):
                raise GraphError(f"node {name or op_type!r}: output {out!r} already has a producer")
        self._nodes[node.id] = node
        self._nx.add_node(node.id)
        for out in node.outputs:
            if out:
                self._ensure_value(out).producer_id = node.id
                for consumer_id, idx in self._uses[out]:
                    self._nx.add_edge(node.id, consumer_id, key=(out, idx))
        for idx, inp in enumerate(node.inputs):
            self._attach_use(node.id, inp, idx)
        for inp in node.captures:
            self._attach_use(node.id, inp, -1)
        self._order = None
        return node

    def _attach_use(self, node_id: int, name: str, idx: int) -> None:
        if not name:
            return
        v = self._ensure_value(name)
        self._uses[name].append((node_id, idx))
        if v.producer_id is not None:
            self._nx.add_edge(v.producer_id, node_id, key=(name, idx))

    def _detach_use(self, node_id: int, name: str, idx: int) -> None:
        if not name:
            return
        self._uses[name].remove((node_id, idx))
        v = self._values[name]
        if v.producer_id is not None:
            self._nx.remove_edge(v.producer_id, node_id, key=(name, idx))

    def remove_node(self, node: Node) -> None:
        """Remove an op.  Its outputs that nothing uses vanish; outputs still used (or graph
        outputs) stay as producer-less values for :meth:`set_output` to re-attach."""
        for idx, inp in enumerate(node.inputs):
            self._detach_use(node.id, inp, idx)
        for inp in node.captures:
            self._detach_use(node.id, inp, -1)
        for out in node.outputs:
            if not out:
                continue
            v = self._values[out]
            v.producer_id = None
            if not self._uses[out] and out not in self.outputs:
                del self._values[out], self._uses[out]
        self._nx.remove_node(node.id)
        del self._nodes[node.id]
        self._order = None

    def set_input(self, node: Node, index: int, name: str) -> None:
        """Make ``node`` read ``name`` at input slot ``index`` ("" = absent optional input)."""
        ins = list(node.inputs)
        while len(ins) <= index:
            ins.append("")
        self._detach_use(node.id, ins[index], index)
        ins[index] = name
        while ins and not ins[-1]:
            ins.pop()
        node.inputs = tuple(ins)
        self._attach_use(node.id, name, index)
        self._order = None

    def set_output(self, node: Node, index: int, name: str) -> None:
        """Make ``node`` produce ``name`` (an existing producer-less value, or a new one) at
        output slot ``index``; the value it produced there before vanishes if unused."""
        v = self._ensure_value(name)
        if v.producer_id is not None or v.const is not None or name in self.inputs:
            raise GraphError(f"node {node.name or node.op_type!r}: value {name!r} already has a producer")
        outs = list(node.outputs)
        old = outs[index]
        if old:
            ov = self._values[old]
            for consumer_id, idx in self._uses[old]:
                self._nx.remove_edge(node.id, consumer_id, key=(old, idx))
            ov.producer_id = None
            if not self._uses[old] and old not in self.outputs:
                del self._values[old], self._uses[old]
        outs[index] = name
        node.outputs = tuple(outs)
        v.producer_id = node.id
        for consumer_id, idx in self._uses[name]:
            self._nx.add_edge(node.id, consumer_id, key=(name, idx))
        self._order = None

    # ------------------------------------------------------------ navigation
    def producer(self, value: str | Value) -> Node | None:
        v = self._values.get(value if isinstance(value, str) else value.name)
        return None if v is None or v.producer_id is None else self._nodes[v.producer_id]

    def consumers(self, value: str | Value) -> list[tuple[Node, int]]:
        """``(node, input_index)`` for every use, in insertion order; index -1 marks a read
        from inside a subgraph (If/Loop/Scan body)."""
        uses = self._uses.get(value if isinstance(value, str) else value.name, [])
        return [(self._nodes[n], i) for n, i in sorted(uses)]

    def consumer_nodes(self, value: str | Value) -> list[Node]:
        seen: dict[int, Node] = {}
        for n, _ in self.consumers(value):
            seen.setdefault(n.id, n)
        return list(seen.values())

    def is_captured(self, value: str | Value) -> bool:
        """True when a subgraph reads the value by name (it cannot be renamed or replaced)."""
        return any(i == -1 for _, i in self._uses.get(value if isinstance(value, str) else value.name, []))

    def replace_all_uses(self, old: str | Value, new: str | Value) -> None:
        """Every consumer slot reading ``old`` reads ``new`` instead.  Graph outputs keep their
        names, so a graph output is not redirected (use :meth:`set_output` on its producer)."""
        old_name = old if isinstance(old, str) else old.name
        new_name = new if isinstance(new, str) else new.name
        if self.is_captured(old_name):
            raise GraphError(f"value {old_name!r} is read inside a subgraph; it cannot be replaced")
        for consumer_id, idx in list(self._uses.get(old_name, [])):
            self.set_input(self._nodes[consumer_id], idx, new_name)

    def topological_order(self) -> list[Node]:
        """Nodes in dependency order, ties broken by insertion order (deterministic)."""
        if self._order is None:
            try:
                ids = nx.lexicographical_topological_sort(self._nx)
                self._order = [self._nodes[i] for i in ids]
            except nx.NetworkXUnfeasible:
                raise GraphError(f"graph {self.name!r} is cyclic: {self._cycle_text()}") from None
        return list(self._order)

    def _cycle_text(self) -> str:
        cycle = nx.find_cycle(self._nx)
        names = [self._nodes[u].name or f"#{u}({self._nodes[u].op_type})" for u, _, _ in cycle]
        return " -> ".join(names + names[:1])

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self._nodes.values():
            key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    # ------------------------------------------------------------ checking
    def verify(self) -> list[str]:
        """Structural problems, each naming the value or node: dangling values, cycles,
        duplicate names, type/shape mismatches of constants.  Empty when the graph is sound."""
        problems: list[str] = []
        if not nx.is_directed_acyclic_graph(self._nx):
            problems.append(f"graph is cyclic: {self._cycle_text()}")
        for name in self.inputs:
            if self.inputs.count(name) > 1:
                problems.append(f"graph input {name!r} is listed twice")
                break
        for name in self.outputs:
            if name not in self._values:
                problems.append(f"graph output {name!r} has no value")
        for v in self._values.values():
            defined = v.producer_id is not None or v.const is not None or v.name in self.inputs
            if not defined and (self._uses[v.name] or v.name in self.outputs):
                users = ", ".join(sorted({repr(self._nodes[n].name or self._nodes[n].op_type)
                                          for n, _ in self._uses[v.name]})) or "graph output"
                problems.append(f"value {v.name!r} is used by {users} but never produced")
            if v.const is not None:
                want = onnx.helper.np_dtype_to_tensor_dtype(v.const.dtype) if v.const.dtype != object else 8
                if v.elem_type and v.elem_type != want:
                    problems.append(f"constant {v.name!r}: declared type {v.elem_type} but data is {v.const.dtype}")
                if v.shape is not None and tuple(v.shape) != v.const.shape:
                    problems.append(f"constant {v.name!r}: declared shape {v.shape} but data is {v.const.shape}")
        node_names: dict[str, int] = {}
        for n in self._nodes.values():
            if n.name:
                node_names[n.name] = node_names.get(n.name, 0) + 1
        problems += [f"node name {k!r} is used {c} times" for k, c in node_names.items() if c > 1]
        return problems

    def check(self) -> None:
        """Raise :class:`GraphError` with the first problem :meth:`verify` finds."""
        problems = self.verify()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise GraphError(f"graph {self.name!r}: {problems[0]}{more}")


def _shape(shape: Sequence[Dim] | None) -> tuple[Dim, ...] | None:
    return None if shape is None else tuple(shape)


def iter_subgraph_attrs(attrs: dict[str, Any]) -> Iterable[onnx.GraphProto]:
    """The subgraph protos among a node's attributes (If/Loop/Scan bodies)."""
    for v in attrs.values():
        if isinstance(v, onnx.GraphProto):
            yield v
        elif isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto):
            yield from v
