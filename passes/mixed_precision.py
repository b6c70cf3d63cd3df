"""The mixed-precision rules (the reference tool's rules 5, 7 and 8; ``ptqc.driver.mix`` has
them all) on a specced graph, and the assignments that keep them: which template nodes share
one bit-width, the smallest rule-compliant superset of a 16-bit set, IOhigh's choice.

A template node is a quantized op with its own output parameters (``node.meta["mixable"]``,
set by AssignQuantSpecs), keyed by :func:`~ptqc.passes.assign_quant_specs.node_key`.
"""
from __future__ import annotations

from ptqc.errors import ConfigError
from ptqc.ir import Graph, Node
from ptqc.passes.assign_quant_specs import node_key
from ptqc.vocab import Meta

RECURRENT = frozenset({"RNN", "LSTM", "GRU", "SRU", "LSTMP"})
NORMALIZATION = frozenset({"LayerNormalization"})


def _owner(graph: Graph, node: Node | None) -> Node | None:
    """The template node whose bit-width ``node``'s output carries: itself, or through
    pass-through ops and fused activations back to the op that sets it."""
    while node is not None and node.meta.get(Meta.QUANTIZED) and not node.meta.get(Meta.MIXABLE):
        node = graph.node(node.meta[Meta.FUSED_INTO]) if Meta.FUSED_INTO in node.meta else \
            graph.producer(node.inputs[0])
    return node if node is not None and node.meta.get(Meta.MIXABLE) else None


def _quantized_neighbours(graph: Graph, node: Node, bits_of: dict[str, int]) -> tuple[list[Node], list[Node]]:
    """The template nodes whose outputs ``node`` reads, and those reading its output (looking
    through pass-through ops and fused activations)."""
    parents = [p for x in node.inputs if x and (p := _owner(graph, graph.producer(x))) is not None
               and node_key(p) in bits_of]
    children: list[Node] = []
    todo = [c for o in node.outputs if o for c in graph.consumer_nodes(o)]
    while todo:
        c = todo.pop(0)
        if c.meta.get(Meta.MIXABLE):
            if node_key(c) in bits_of and c not in children:
                children.append(c)
        elif c.meta.get(Meta.QUANTIZED):
            todo += [d for o in c.outputs if o for d in graph.consumer_nodes(o)]
    return parents, children


def check_rules(flag: str, graph: Graph, mix: dict[str, tuple[int, str]]) -> None:
    """Rules 5, 7 and 8 on a full assignment (node key -> (bits, mode)); a violation is a
    ConfigError naming ``flag``, the node and the rule."""
    bits_of = {k: b for k, (b, _) in mix.items()}
    for node in graph.topological_order():
        parents, children = _quantized_neighbours(graph, node, bits_of)
        key = node_key(node)
        around = parents + children
        if node.op_type in RECURRENT | NORMALIZATION and around:
            reference = bits_of.get(key, bits_of[node_key(around[0])])
            other = next((n for n in around if bits_of[node_key(n)] != reference), None)
            if other is not None:
                widths = sorted({bits_of[node_key(n)] for n in around} | {reference})
                raise ConfigError(f"{flag}: node {node_key(other)!r}: rule 5: the quantized ops around "
                                  f"{node.op_type} {key!r} share one bit-width ({widths} given)")
        if key in bits_of:
            widths = {bits_of[node_key(p)] for p in parents}
            if len(widths) > 1:
                raise ConfigError(f"{flag}: node {key!r}: rule 7: its inputs come at different bit-widths "
                                  f"({sorted(widths)})")
        if node.op_type == "Concat" and key in bits_of:
            special = [x for x in node.inputs if x and (p := _owner(graph, graph.producer(x))) is not None
                       and p.op_type in RECURRENT | NORMALIZATION]
            others = [n for n in parents + children if n.op_type not in RECURRENT | NORMALIZATION]
            if special and others and bits_of[key] > min(bits_of[node_key(n)] for n in others):
                raise ConfigError(f"{flag}: node {key!r}: rule 8: a Concat fed by a recurrent op or "
                                  "LayerNormalization is no wider than its other quantized neighbours")


def comply(graph: Graph, high: set[str], quantized: list[str]) -> set[str]:
    """The smallest superset of ``high`` (16-bit nodes) that keeps rules 5, 7 and 8: only ever
    raising nodes to 16 bits, until nothing changes."""
    high = set(high)
    bits = lambda: {k: (16 if k in high else 8) for k in quantized}  # noqa: E731
    changed = True
    while changed:
        changed = False
        b = bits()
        for node in graph.topological_order():
            parents, children = _quantized_neighbours(graph, node, b)
            key = node_key(node)
            groups = []
            if node.op_type in RECURRENT | NORMALIZATION:
                groups.append(parents + children + ([node] if key in b else []))
            if key in b:
                groups.append(parents)
            if node.op_type == "Concat" and key in high and any(
                    (p := _owner(graph, graph.producer(x))) is not None and p.op_type in RECURRENT | NORMALIZATION
                    for x in node.inputs):
                groups.append(parents + children)
            for group in groups:
                keys = {node_key(n) for n in group}
                if keys & high and not keys <= high:
                    high |= keys
                    changed = True
                    b = bits()
    return high


def share_units(graph: Graph, quantized: list[str]) -> list[list[str]]:
    """The quantized nodes in groups that rules 5 and 7 make share one bit-width (the inputs
    of a node; the quantized ops around a recurrent op or LayerNormalization), in
    topological order of their first member."""
    parent = {k: k for k in quantized}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    bits = dict.fromkeys(quantized, 8)
    for node in graph.topological_order():
        if not node.meta.get(Meta.MIXABLE) and node.op_type not in RECURRENT | NORMALIZATION:
            continue
        parents, children = _quantized_neighbours(graph, node, bits)
        group = parents + children + ([node] if node_key(node) in bits else []) \
            if node.op_type in RECURRENT | NORMALIZATION else parents if node_key(node) in bits else []
        for other in group[1:]:
            a, b = find(node_key(group[0])), find(node_key(other))
            if a != b:
                parent[max(a, b, key=quantized.index)] = min(a, b, key=quantized.index)
    units: dict[str, list[str]] = {}
    for k in quantized:
        units.setdefault(find(k), []).append(k)
    return list(units.values())


def io_high(graph: Graph, quantized: list[str], share_high: float) -> set[str]:
    """IOhigh: the quantized nodes nearest the model's inputs and outputs run at 16 bits, the
    share ``share_high`` of them (ties in topological order)."""
    order = [n for n in graph.topological_order() if node_key(n) in set(quantized)]
    if not order:
        return set()
    depth_in: dict[int, int] = {}
    for n in graph.topological_order():
        parents = [graph.producer(x) for x in n.inputs if x and graph.producer(x) is not None]
        depth_in[n.id] = 1 + max((depth_in[p.id] for p in parents), default=-1)
    depth_out: dict[int, int] = {}
    for n in reversed(graph.topological_order()):
        kids = [c for o in n.outputs if o for c in graph.consumer_nodes(o)]
        depth_out[n.id] = 1 + max((depth_out[c.id] for c in kids), default=-1)
    ranked = sorted(order, key=lambda n: (min(depth_in[n.id], depth_out[n.id]), order.index(n)))
    count = int(round(share_high * len(order)))
    return {node_key(n) for n in ranked[:count]}


def as_mix(quantized: list[str], high: set[str], low_bits: int, mode: str) -> dict[str, tuple[int, str]]:
    return {k: (16 if k in high else low_bits, mode) for k in quantized}
