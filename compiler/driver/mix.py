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

from ptqc.driver.scale_json import read_json, write_scale_json
from ptqc.errors import ConfigError
from ptqc.ir import Graph
from ptqc.passes.assign_quant_specs import node_key
from ptqc.passes.mixed_precision import check_rules
from ptqc.targets.base import Target
from ptqc.vocab import AUTO, Meta, Method

# rule 4: the reference tool's template modes (no removal_outlier), and auto (chosen by measured error, -qm auto)
MODES = (AUTO, Method.MIN_MAX, Method.KL, Method.KL_V2, Method.PERCENTILE, Method.MSE)


def template(graph: Graph, bits: int, mode: str, mix: dict | None = None) -> dict:
    """The -gt JSON: the assignment used (``mix``), or every node at ``bits`` and ``mode``."""
    return {node_key(n): ({"bitwidth": mix[node_key(n)][0], "mode": mix[node_key(n)][1]} if mix and node_key(n) in mix
                          else {"bitwidth": bits, "mode": mode})
            for n in graph.topological_order() if n.meta.get(Meta.MIXABLE)}


def write_template(graph: Graph, bits: int, mode: str, path: Path, mix: dict | None = None) -> Path:
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
    quantized = {k for k, n in nodes.items() if n.meta.get(Meta.MIXABLE)}
    out: dict[str, tuple[int, str]] = {}
    for key, entry in table.items():
        if key in nodes and nodes[key].op_type == "Abs":
            raise ConfigError(f"{flag}: node {key!r}: rule 6: Abs takes no mixed precision")
        if key not in quantized:
            what = ("a pass-through op or an activation fused into its producer (it follows that "
                    "op's bit-width)" if key in nodes and nodes[key].meta.get(Meta.QUANTIZED)
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
    check_rules(flag, graph, out)
    return out
