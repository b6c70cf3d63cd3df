"""Mixed precision templates (``-gt`` writes, ``-mc`` reads): every quantized node (after the
graph optimizations) with its ``bitwidth`` and ``mode``, keyed by node name.

The reference tool's eight rules, checked on load; a violation exits 2 naming the node and
the rule:

1. keys are the quantized nodes' names (a node the model does not quantize is refused);
2. every node sets both ``bitwidth`` and ``mode``;
3. ``bitwidth`` is 8 or 16;
4. ``mode`` is one of min_max / kl / kl_v2 / percentile / mse;
5. recurrent ops (RNN/LSTM/GRU/SRU/LSTMP) and LayerNormalization share their bit-width with
   the quantized ops around them;
6. Abs takes no mixed precision;
7. all inputs of a node share one bit-width (their quantized producers agree);
8. a Concat fed by a recurrent op or LayerNormalization is no wider than its other quantized
   neighbours.

Families without mixed precision (TX510x) refuse ``-mc``.  A tensor takes the bit-width and
mode of the node that produces it (a graph input: of the node that reads it).
"""
from __future__ import annotations

from pathlib import Path

from ptqc.driver.scale_json import read_json
from ptqc.errors import ConfigError
from ptqc.ir import Graph, Node
from ptqc.passes.assign_quant_specs import node_key
from ptqc.targets.base import Target

MODES = ("auto", "min_max", "kl", "kl_v2", "percentile", "mse")  # auto: chosen by measured error (-qm auto)
RECURRENT = frozenset({"RNN", "LSTM", "GRU", "SRU", "LSTMP"})
NORMALIZATION = frozenset({"LayerNormalization"})


def template(graph: Graph, bits: int, mode: str, mix: dict | None = None) -> dict:
    """The -gt JSON: the assignment used (``mix``), or every node at ``bits`` and ``mode``."""
    return {node_key(n): ({"bitwidth": mix[node_key(n)][0], "mode": mix[node_key(n)][1]} if mix and node_key(n) in mix
                          else {"bitwidth": bits, "mode": mode})
            for n in graph.topological_order() if n.meta.get("mixable")}


def write_template(graph: Graph, bits: int, mode: str, path: Path, mix: dict | None = None) -> Path:
    from ptqc.driver.scale_json import write_scale_json

    return write_scale_json(template(graph, bits, mode, mix), path)


def load_mix(path: Path, graph: Graph, family: Target, bits: int) -> dict[str, tuple[int, str]]:
    """node name -> (bitwidth, mode), every rule checked."""
    flag = f"-mc/--mix-config {path}"
    if not family.mixed_precision:
        raise ConfigError(f"{flag}: rule mixed-precision: {family.name} does not support mixed precision")
    table = read_json(Path(path), flag)
    if not isinstance(table, dict):
        raise ConfigError(f"{flag}: expected an object of node name -> {{bitwidth, mode}}")
    nodes = {node_key(n): n for n in graph.nodes()}
    quantized = {k for k, n in nodes.items() if n.meta.get("mixable")}
    out: dict[str, tuple[int, str]] = {}
    for key, entry in table.items():
        if key in nodes and nodes[key].op_type == "Abs":
            raise ConfigError(f"{flag}: node {key!r}: rule 6: Abs takes no mixed precision")
        if key not in quantized:
            what = ("a pass-through op or an activation fused into its producer (it follows that "
                    "op's bit-width)" if key in nodes and nodes[key].meta.get("quantized")
                    else "not a quantized node of the optimized model")
            raise ConfigError(f"{flag}: node {key!r}: rule 1: {what} (generate the template with -gt)")
        if not isinstance(entry, dict) or "bitwidth" not in entry or "mode" not in entry:
            raise ConfigError(f"{flag}: node {key!r}: rule 2: set both bitwidth and mode")
        if entry["bitwidth"] not in (8, 16):
            raise ConfigError(f"{flag}: node {key!r}: rule 3: bitwidth {entry['bitwidth']!r} is not 8 or 16")
        if entry["mode"] not in MODES:
            raise ConfigError(f"{flag}: node {key!r}: rule 4: mode {entry['mode']!r} is not one of {', '.join(MODES)}")
        family.check_bit_width(entry["bitwidth"], f"{flag}: node {key!r}:")
        out[key] = (int(entry["bitwidth"]), str(entry["mode"]))
    missing = sorted(quantized - set(out))
    if missing:
        raise ConfigError(f"{flag}: node {missing[0]!r}: rule 2: every quantized node sets bitwidth and mode "
                          f"({len(missing)} missing)")
    _check_graph_rules(flag, graph, out, bits)
    return out


def _owner(graph: Graph, node: Node | None) -> Node | None:
    """The template node whose bit-width ``node``'s output carries: itself, or through
    pass-through ops and fused activations back to the op that sets it."""
    while node is not None and node.meta.get("quantized") and not node.meta.get("mixable"):
        node = graph.node(node.meta["fused_into"]) if "fused_into" in node.meta else graph.producer(node.inputs[0])
    return node if node is not None and node.meta.get("mixable") else None


def _quantized_neighbours(graph: Graph, node: Node, bits_of: dict[str, int]) -> tuple[list[Node], list[Node]]:
    """The template nodes whose outputs ``node`` reads, and those reading its output (looking
    through pass-through ops and fused activations)."""
    parents = [p for x in node.inputs if x and (p := _owner(graph, graph.producer(x))) is not None
               and node_key(p) in bits_of]
    children: list[Node] = []
    todo = [c for o in node.outputs if o for c in graph.consumer_nodes(o)]
    while todo:
        c = todo.pop(0)
        if c.meta.get("mixable"):
            if node_key(c) in bits_of and c not in children:
                children.append(c)
        elif c.meta.get("quantized"):
            todo += [d for o in c.outputs if o for d in graph.consumer_nodes(o)]
    return parents, children


def _check_graph_rules(flag: str, graph: Graph, mix: dict[str, tuple[int, str]], default_bits: int) -> None:
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


# ------------------------------------------------------------------------ automatic assignment
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
        if not node.meta.get("mixable") and node.op_type not in RECURRENT | NORMALIZATION:
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
