"""A self-contained HTML report of one quantization run.

:func:`write_report` writes one HTML file with no external resources (inline CSS, inline
SVG, no JavaScript, no fonts or images by URL):

1. a header with the model name, a short summary and the run settings;
2. the per-layer cosine against the float model as an SVG chart (x = layer index in
   execution order, one polyline per comparison mode, a dashed line at the threshold, a
   tooltip per point, the first layer below the threshold marked in each mode);
3. the worst layers by cosine, graphwise and layerwise side by side;
4. the mixed-precision summary: nodes per bit-width, overall and per op type;
5. every layer: bit-width, scale, zero point, representable range, both cosines and the
   largest absolute error.

Same inputs give a byte-identical file (no timestamps, no randomness, insertion order kept).
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ptqc.files import atomic_open
from ptqc.runtime.simulator import LayerError

COMPARE_THRESHOLD = 0.99  # the cosine below which a layer is reported as the first drop


def first_drop(rows: list[LayerError], threshold: float = COMPARE_THRESHOLD) -> LayerError | None:
    """The first layer (in program order) whose cosine is below ``threshold``; a NaN cosine
    (a shape mismatch) is no drop."""
    return next((r for r in rows if r.cosine < threshold), None)

WORST = 20  # rows in the worst-layers tables
MODES = ("graphwise", "layerwise")
MODE_COLOUR = {"graphwise": "#1f6fb4", "layerwise": "#e07b00"}
BITS_COLOUR = {8: "#2a9d8f", 16: "#8e5cc7", 32: "#c0392b"}
OTHER_COLOUR = "#9aa0a6"

Key = tuple  # (node, tensor)


def write_report(path, *, title: str, settings: Mapping[str, object], graphwise: Sequence[LayerError],
                 layerwise: Sequence[LayerError], layers: Sequence[Mapping[str, object]],
                 mix: Mapping[str, object] | None = None) -> Path:
    """Write the report to ``path`` (atomically) and return it.

    ``graphwise`` / ``layerwise``: the simulator's comparisons in execution order (either may be
    empty); ``layers``: per quantized node a dict with ``node``, ``op_type``, ``tensor``,
    ``bits``, ``dtype``, ``scale``, ``zero_point``, ``rmin``, ``rmax``; ``mix``: a
    mixed-precision assignment {node: bits} (or {node: (bits, mode)}), None when uniform.
    """
    path = Path(path)
    text = render(title=title, settings=settings, graphwise=graphwise, layerwise=layerwise,
                  layers=layers, mix=mix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return path


def render(*, title: str, settings: Mapping[str, object], graphwise: Sequence[LayerError],
           layerwise: Sequence[LayerError], layers: Sequence[Mapping[str, object]],
           mix: Mapping[str, object] | None = None) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    rows = {"graphwise": list(graphwise), "layerwise": list(layerwise)}
    by_key = {m: {(r.node, r.tensor): r for r in rows[m]} for m in MODES}
    order = _merge_orders([[(r.node, r.tensor) for r in rows[m]] for m in MODES])
    index = {k: i for i, k in enumerate(order)}
    drops = {m: first_drop(rows[m]) for m in MODES}
    op_of = {}
    for m in MODES:
        for r in rows[m]:
            op_of.setdefault(r.node, r.op_type)
    for d in layers:
        op_of.setdefault(str(d.get("node")), str(d.get("op_type", "")))

    parts = [_HEAD.format(title=_e(title), css=_CSS),
             '<header>\n<h1>Quantization report: <span class="model">', _e(title), "</span></h1>\n",
             _summary(rows, drops, index),
             _settings_table(settings),
             "</header>\n",
             '<nav><a href="#cosine">cosine chart</a> · <a href="#worst">worst layers</a> · '
             '<a href="#precision">precision</a> · <a href="#layers">all layers</a></nav>\n',
             '<section id="cosine">\n<h2>Per-layer cosine vs the float model</h2>\n',
             '<p class="note">graphwise: the integer model end to end, errors accumulate; '
             'layerwise: each layer fed the float model\'s inputs. Hover a point for its node.</p>\n',
             _chart(order, by_key, drops, index),
             "</section>\n",
             '<section id="worst">\n<h2>Worst layers by cosine</h2>\n',
             _worst(rows, index),
             "</section>\n",
             '<section id="precision">\n<h2>Mixed precision</h2>\n',
             _precision(layers, mix, op_of),
             "</section>\n",
             '<section id="layers">\n<h2>All layers</h2>\n',
             _layer_table(order, by_key, layers, mix),
             "</section>\n",
             "<footer>written by ptqc</footer>\n</body>\n</html>\n"]
    return "".join(parts)


# ------------------------------------------------------------------------------- helpers
def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _short(name: str, n: int = 48) -> str:
    name = str(name)
    return name if len(name) <= n else name[:n - 1] + "…"


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _cos(x) -> str:
    return f"{float(x):.6f}" if _finite(x) else "n/a"


def _num(x) -> str:
    """A scalar (or a per-channel array, as its size and range) for a table cell."""
    if x is None:
        return ""
    if isinstance(x, str):
        return _e(x)
    a = np.asarray(x)
    if a.dtype == object:
        return _e(x)
    if a.size == 1:
        v = a.reshape(-1)[0]
        if np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_):
            return str(int(v))
        return f"{float(v):.6g}"
    if a.size == 0:
        return ""
    lo, hi = np.min(a), np.max(a)
    if np.issubdtype(a.dtype, np.integer):
        return f"[{a.size}] {int(lo)} … {int(hi)}"
    return f"[{a.size}] {float(lo):.4g} … {float(hi):.4g}"


def _bits_of(value) -> int | str | None:
    """Bits from a ``layers`` entry or a mix value: 8, (8, "mode"), {"bitwidth": 8}."""
    if isinstance(value, Mapping):
        value = value.get("bitwidth", value.get("bits"))
    elif isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def _merge_orders(seqs: Iterable[Sequence[Key]]) -> list[Key]:
    """One order holding every key: the first sequence's order; each key of a later sequence
    missing so far goes right after its predecessor in that sequence (or, with none, right
    before its first successor already placed; else at the end)."""
    out: list[Key] = []
    seen: set = set()
    for seq in seqs:
        seq = list(seq)
        prev = None
        for j, k in enumerate(seq):
            if k not in seen:
                if prev is not None:
                    at = out.index(prev) + 1
                else:
                    nxt = next((s for s in seq[j + 1:] if s in seen), None)
                    at = out.index(nxt) if nxt is not None else len(out)
                out.insert(at, k)
                seen.add(k)
            prev = k
    return out


def _summary(rows, drops, index) -> str:
    items = []
    for m in MODES:
        rs = rows[m]
        if not rs:
            items.append(f"<li><b>{m}</b>: no comparison</li>")
            continue
        fin = [r.cosine for r in rs if _finite(r.cosine)]
        nan = len(rs) - len(fin)
        d = drops[m]
        drop = (f'first below {COMPARE_THRESHOLD}: <span class="drop">#{index[(d.node, d.tensor)]} '
                f"{_e(d.node)}</span> ({_e(d.op_type)}, cosine {_cos(d.cosine)})" if d
                else f"no layer below {COMPARE_THRESHOLD}")
        last = rs[-1]
        items.append(f"<li><b>{m}</b>: {len(rs)} layers, min cosine {_cos(min(fin)) if fin else 'n/a'}, "
                     f"last layer {_cos(last.cosine)}; {drop}"
                     + (f'; <span class="nan">{nan} without a cosine (shapes differ)</span>' if nan else "")
                     + "</li>")
    return '<ul class="summary">\n' + "\n".join(items) + "\n</ul>\n"


def _setting(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return _e(", ".join(f"{k}={v}" for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return _e(", ".join(str(v) for v in value))
    return _e(value)


def _settings_table(settings: Mapping[str, object]) -> str:
    if not settings:
        return ""
    rows = "\n".join(f"<tr><th>{_e(k)}</th><td>{_setting(v)}</td></tr>" for k, v in settings.items())
    return f'<table class="settings">\n{rows}\n</table>\n'


# ------------------------------------------------------------------------------- chart
def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10.0 * mag


def _chart(order: list[Key], by_key, drops, index) -> str:
    n = len(order)
    if n == 0:
        return '<p class="note">No comparison rows: run with a simulator comparison to fill the chart.</p>\n'
    W, H = 1100, 400
    L, R, T, B = 64, 16, 64, 44
    pw, ph = W - L - R, H - T - B
    cos = [r.cosine for m in MODES for r in by_key[m].values() if _finite(r.cosine)]
    lo = min(min(cos), 1.0) if cos else 1.0
    ymin = lo - max(0.05 * (1.0 - lo), 1e-3)

    def x(i: int) -> float:
        return L + (pw / 2 if n == 1 else pw * i / (n - 1))

    def y(v: float) -> float:
        v = min(max(v, ymin), 1.0)
        return T + ph * (1.0 - v) / (1.0 - ymin)

    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="per-layer cosine, graphwise and layerwise">\n',
           f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" class="plot"/>\n']
    # y grid and labels
    step = _nice_step(1.0 - ymin, 5)
    mantissa = step / 10.0 ** math.floor(math.log10(step) + 1e-9)
    dec = max(0, math.ceil(-math.log10(step) - 1e-9)) + (1 if abs(mantissa - 2.5) < 1e-6 else 0)
    k = math.ceil(ymin / step - 1e-9)
    while k * step <= 1.0 + 1e-9:
        t, k = k * step, k + 1
        yy = y(t)
        out.append(f'<line x1="{L}" y1="{yy:.2f}" x2="{L + pw}" y2="{yy:.2f}" class="grid"/>'
                   f'<text x="{L - 6}" y="{yy + 4:.2f}" class="ytick">{t:.{dec}f}</text>\n')
    # x ticks
    xs = max(1, int(round(_nice_step(max(n - 1, 1), 10))))
    for i in range(0, n, xs):
        out.append(f'<line x1="{x(i):.2f}" y1="{T + ph}" x2="{x(i):.2f}" y2="{T + ph + 5}" class="axis"/>'
                   f'<text x="{x(i):.2f}" y="{T + ph + 18}" class="xtick">{i}</text>\n')
    out.append(f'<text x="{L + pw / 2:.2f}" y="{H - 6}" class="label">layer index (execution order)</text>\n'
               f'<text x="14" y="{T + ph / 2:.2f}" class="label" transform="rotate(-90 14 {T + ph / 2:.2f})">'
               f"cosine</text>\n")
    # threshold
    if ymin <= COMPARE_THRESHOLD <= 1.0:
        ty = y(COMPARE_THRESHOLD)
        out.append(f'<line x1="{L}" y1="{ty:.2f}" x2="{L + pw}" y2="{ty:.2f}" class="threshold">'
                   f"<title>threshold {COMPARE_THRESHOLD}</title></line>"
                   f'<text x="{L + pw - 4}" y="{ty - 4:.2f}" class="thlabel">{COMPARE_THRESHOLD}</text>\n')
    # lines and points, one mode after the other; the first drops; the legend above the plot
    r_pt = 3.0 if n <= 120 else (2.0 if n <= 400 else 1.4)
    for m in MODES:
        out += _series(m, [(index[k], by_key[m][k]) for k in order if k in by_key[m]], x, y, r_pt, T + ph)
    out += _drop_marks(drops, index, x, y, r_pt, T, ph)
    out += _legend(by_key, drops, index, L, ymin)
    out.append("</svg>\n")
    return "".join(out)


def _series(m: str, pts: list, x, y, r_pt: float, bottom: float) -> list[str]:
    """One mode's polyline (broken where a row has no cosine) and points, a cross on the
    bottom edge for a row without cosine (shapes differ)."""
    col, out = MODE_COLOUR[m], []
    seg: list[str] = []
    segs: list[list[str]] = []
    for i, r in pts:
        if _finite(r.cosine):
            seg.append(f"{x(i):.2f},{y(float(r.cosine)):.2f}")
        elif seg:
            segs.append(seg)
            seg = []
    if seg:
        segs.append(seg)
    out.append(f'<g class="mode {m}">\n')
    for s in segs:
        if len(s) > 1:
            out.append(f'<polyline points="{" ".join(s)}" fill="none" stroke="{col}" stroke-width="1.6"/>\n')
    for i, r in pts:
        tip = _e(f"#{i} {r.node} ({r.op_type})\n{m} cosine {_cos(r.cosine)}\n"
                 f"max abs {r.max_abs:.4g}, rel {r.rel:.4g}")
        if _finite(r.cosine):
            out.append(f'<circle cx="{x(i):.2f}" cy="{y(float(r.cosine)):.2f}" r="{r_pt}" fill="{col}">'
                       f"<title>{tip}</title></circle>\n")
        else:
            cx, cy, s = x(i), bottom, 4
            out.append(f'<path d="M{cx - s:.2f},{cy - s:.2f}L{cx + s:.2f},{cy + s:.2f}M{cx - s:.2f},{cy + s:.2f}'
                       f'L{cx + s:.2f},{cy - s:.2f}" stroke="{col}" stroke-width="2" class="nanpt">'
                       f"<title>{tip}</title></path>\n")
    out.append("</g>\n")
    return out


def _drop_marks(drops, index, x, y, r_pt: float, T: float, ph: float) -> list[str]:
    """The first drop in each mode: a ring, a dotted vertical line and its index above the plot."""
    out = []
    for j, m in enumerate(MODES):
        d = drops[m]
        if d is None:
            continue
        i = index[(d.node, d.tensor)]
        cx, cy, col = x(i), y(float(d.cosine)), MODE_COLOUR[m]
        tip = _e(f"first {m} cosine below {COMPARE_THRESHOLD}: #{i} {d.node} ({d.op_type}) cosine {_cos(d.cosine)}")
        tx, anchor = (cx + 2, "start") if j else (cx - 2, "end")  # graphwise left of the line, layerwise right
        out.append(f'<g class="drop {m}"><title>{tip}</title><line x1="{cx:.2f}" y1="{T - 2}" x2="{cx:.2f}" '
                   f'y2="{T + ph}" stroke="{col}" class="dropline"/><circle cx="{cx:.2f}" cy="{cy:.2f}" '
                   f'r="{r_pt + 5}" fill="none" stroke="{col}" stroke-width="2"/><text x="{tx:.2f}" '
                   f'y="{T - 5}" style="fill:{col}" text-anchor="{anchor}" class="droplabel">#{i}</text></g>\n')
    return out


def _legend(by_key, drops, index, L: float, ymin: float) -> list[str]:
    """Above the plot: the modes and the threshold, then the first drops."""
    out, lx = [], L
    for m in MODES:
        label = m if by_key[m] else f"{m} (no rows)"
        out.append(f'<line x1="{lx}" y1="14" x2="{lx + 24}" y2="14" stroke="{MODE_COLOUR[m]}" stroke-width="2.5"/>'
                   f'<circle cx="{lx + 12}" cy="14" r="3" fill="{MODE_COLOUR[m]}"/>'
                   f'<text x="{lx + 30}" y="18" class="legend">{label}</text>\n')
        lx += 30 + 8 * len(label) + 32
    out.append(f'<line x1="{lx}" y1="14" x2="{lx + 24}" y2="14" class="threshold"/>'
               f'<text x="{lx + 30}" y="18" class="legend">threshold {COMPARE_THRESHOLD}'
               f'{"" if ymin <= COMPARE_THRESHOLD else " (below the axis: every layer is above it)"}</text>\n')
    out.append(f'<text x="{L}" y="40" class="legend">first layer below {COMPARE_THRESHOLD}:')
    for m in MODES:
        d = drops[m]
        name = (f"#{index[(d.node, d.tensor)]} {_short(d.node)} ({_short(d.op_type, 20)})" if d is not None
                else "none" if by_key[m] else "no rows")
        out.append(f' <tspan fill="{MODE_COLOUR[m]}" font-weight="600">{m}: {_e(name)}</tspan>'
                   + (";" if m == MODES[0] else ""))
    out.append("</text>\n")
    return out


# ------------------------------------------------------------------------------- tables
def _worst(rows, index) -> str:
    cols = []
    for m in MODES:
        rs = rows[m]
        # no cosine first (the comparison failed), then ascending cosine, then execution order
        ranked = sorted(rs, key=lambda r: (0 if not _finite(r.cosine) else 1,
                                           float(r.cosine) if _finite(r.cosine) else 0.0,
                                           index[(r.node, r.tensor)]))[:WORST]
        body = "\n".join(
            f'<tr class="{_cos_class(r.cosine)}"><td class="n">{index[(r.node, r.tensor)]}</td>'
            f'<td class="name">{_e(r.node)}</td><td>{_e(r.op_type)}</td>'
            f'<td class="n">{_cos(r.cosine)}</td><td class="n">{r.max_abs:.4g}</td><td class="n">{r.rel:.4g}</td></tr>'
            for r in ranked) or '<tr><td colspan="6" class="note">no rows</td></tr>'
        cols.append(f'<div class="col"><h3 style="color:{MODE_COLOUR[m]}">{m}</h3>\n<table class="data">\n'
                    "<thead><tr><th>#</th><th>node</th><th>op</th><th>cosine</th><th>max abs</th><th>rel</th></tr>"
                    f"</thead>\n<tbody>\n{body}\n</tbody>\n</table></div>\n")
    return f'<div class="cols">\n{"".join(cols)}</div>\n'


def _cos_class(c) -> str:
    if not _finite(c):
        return "nan"
    return "bad" if float(c) < COMPARE_THRESHOLD else "ok"


def _bits_label(b) -> str:
    return "float" if b is None else (f"{b}-bit" if isinstance(b, int) else str(b))


def _bits_colour(b) -> str:
    return BITS_COLOUR.get(b, OTHER_COLOUR) if isinstance(b, int) else OTHER_COLOUR


def _bits_sort(b):
    return (0, b, "") if isinstance(b, int) else (1, 0, str(b))


def _precision(layers, mix, op_of) -> str:
    if mix is not None:
        assign = {str(k): _bits_of(v) for k, v in mix.items()}
        source = "the mixed-precision assignment"
    else:
        assign = {}
        for d in layers:
            assign.setdefault(str(d.get("node")), _bits_of(d.get("bits")))
        source = "the quantized layers (uniform precision)"
    if not assign:
        return '<p class="note">No quantized nodes.</p>\n'
    total = len(assign)
    counts: dict = {8: 0, 16: 0}
    per_op: dict[str, dict] = {}
    for node, b in assign.items():
        counts[b] = counts.get(b, 0) + 1
        # unnamed nodes go by "op#id" in mixed-precision templates
        op = op_of.get(node) or (node.split("#", 1)[0] if "#" in node else "?")
        per_op.setdefault(op, {})
        per_op[op][b] = per_op[op].get(b, 0) + 1
    keys = sorted(counts, key=_bits_sort)
    out = [f'<p class="note">{total} nodes, bit-widths from {source}.</p>\n',
           '<div class="stack big">' +
           "".join(f'<span style="width:{100 * counts[b] / total:.3f}%;background:{_bits_colour(b)}" '
                   f'title="{_bits_label(b)}: {counts[b]}"></span>' for b in keys if counts[b]) + "</div>\n",
           '<table class="data narrow">\n<thead><tr><th>bits</th><th>nodes</th><th>share</th></tr></thead>\n<tbody>\n']
    for b in keys:
        out.append(f'<tr><td><span class="swatch" style="background:{_bits_colour(b)}"></span>{_e(_bits_label(b))}</td>'
                   f'<td class="n">{counts[b]}</td><td class="n">{100 * counts[b] / total:.1f}%</td></tr>\n')
    out.append("</tbody>\n</table>\n<h3>Per op type</h3>\n<table class=\"data ops\">\n<thead><tr><th>op</th>"
               + "".join(f"<th>{_e(_bits_label(b))}</th>" for b in keys) + "<th>bar</th></tr></thead>\n<tbody>\n")
    widest = max(sum(c.values()) for c in per_op.values())
    for op, c in sorted(per_op.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        n = sum(c.values())
        bar = "".join(f'<span style="width:{100 * c[b] / widest:.3f}%;background:{_bits_colour(b)}" '
                      f'title="{_e(op)} {_bits_label(b)}: {c[b]}"></span>' for b in keys if c.get(b))
        out.append(f'<tr><td class="name">{_e(op)}</td>' + "".join(f'<td class="n">{c.get(b, 0)}</td>' for b in keys)
                   + f'<td class="barcell"><div class="stack" title="{_e(op)}: {n} nodes">{bar}</div></td></tr>\n')
    out.append("</tbody>\n</table>\n")
    return "".join(out)


def _layer_table(order: list[Key], by_key, layers, mix) -> str:
    # join each ``layers`` entry to its comparison rows: by (node, tensor), else by node when the
    # node has a single compared tensor nobody else claimed
    keys_of_node: dict[str, list[Key]] = {}
    for k in order:
        keys_of_node.setdefault(k[0], []).append(k)
    claimed: set = set()
    entries: list[tuple[Key, Mapping | None]] = []
    for d in layers:
        k = (str(d.get("node")), str(d.get("tensor")))
        if k not in keys_of_node.get(k[0], []):
            cands = [c for c in keys_of_node.get(k[0], []) if c not in claimed]
            k = cands[0] if len(cands) == 1 and len(keys_of_node[k[0]]) == 1 else ("\0layer", k)
        claimed.add(k)
        entries.append((k, d))
    layer_keys = [k for k, _ in entries]
    info = dict(entries)
    full = _merge_orders([order, layer_keys])
    index = {k: i for i, k in enumerate(order)}
    mix_bits = {str(k): _bits_of(v) for k, v in (mix or {}).items()}
    body = []
    for k in full:
        d = info.get(k) or {}
        g, lw = by_key["graphwise"].get(k), by_key["layerwise"].get(k)
        r = g or lw
        node = str(d.get("node", r.node if r else k[0]))
        op = str(d.get("op_type", r.op_type if r else ""))
        tensor = str(d.get("tensor", r.tensor if r else ""))
        b = _bits_of(d.get("bits")) if d.get("bits") is not None else mix_bits.get(node)
        bcell = (f'<span class="swatch" style="background:{_bits_colour(b)}"></span>{_e(b)}' if b is not None else "")
        dtype = _e(d.get("dtype", "")) if d.get("dtype") is not None else ""
        rng = (f"[{_num(d.get('rmin'))}, {_num(d.get('rmax'))}]"
               if d.get("rmin") is not None or d.get("rmax") is not None else "")
        cls = " ".join(sorted({_cos_class(x.cosine) for x in (g, lw) if x is not None} - {"ok"}))
        tr = f' class="{cls}"' if cls else ""
        body.append(
            f'<tr{tr}><td class="n">{index.get(k, "")}</td><td class="name">{_e(node)}</td>'
            f'<td>{_e(op)}</td><td class="name">{_e(tensor)}</td><td class="n">{bcell}</td><td>{dtype}</td>'
            f'<td class="n">{_num(d.get("scale"))}</td><td class="n">{_num(d.get("zero_point"))}</td>'
            f'<td class="n">{rng}</td>'
            f'<td class="n {_cos_class(g.cosine) if g else ""}">{_cos(g.cosine) if g else ""}</td>'
            f'<td class="n {_cos_class(lw.cosine) if lw else ""}">{_cos(lw.cosine) if lw else ""}</td>'
            f'<td class="n">{f"{g.max_abs:.4g}" if g else ""}</td>'
            f'<td class="n">{f"{lw.max_abs:.4g}" if lw else ""}</td></tr>')
    if not body:
        return '<p class="note">No layers.</p>\n'
    return ('<table class="data full">\n<thead><tr><th>#</th><th>node</th><th>op</th><th>tensor</th><th>bits</th>'
            "<th>dtype</th><th>scale</th><th>zero point</th><th>range</th><th>graphwise cosine</th>"
            "<th>layerwise cosine</th><th>max abs (graphwise)</th><th>max abs (layerwise)</th></tr></thead>\n"
            "<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n")


_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ptqc report: {title}</title>
<style>
{css}</style>
</head>
<body>
"""

_CSS = """\
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif;
       margin: 24px auto; max-width: 1200px; padding: 0 16px; color: #1d2329; background: #fff; font-size: 14px; }
h1 { font-size: 22px; margin: 0 0 8px; }
h1 .model { color: #1f6fb4; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d6dbe0; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
nav { margin: 12px 0; font-size: 13px; }
nav a { color: #1f6fb4; }
.note { color: #5f6b76; font-size: 13px; }
ul.summary { margin: 6px 0 12px; padding-left: 20px; }
.drop { color: #b3261e; font-weight: 600; }
.nan { color: #8a5a00; }
table { border-collapse: collapse; }
table.settings th { text-align: left; font-weight: 600; padding: 2px 16px 2px 0; color: #3c4650; }
table.settings td { padding: 2px 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
table.data { font-size: 12.5px; margin: 4px 0 12px; }
table.data th { background: #eef1f4; text-align: left; padding: 4px 8px; border-bottom: 1px solid #c8ced4;
                position: sticky; top: 0; }
table.data td { padding: 2px 8px; border-bottom: 1px solid #eceff2; white-space: nowrap; }
table.data td.name { font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: normal;
                     word-break: break-all; max-width: 360px; }
table.data td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr.bad td, td.bad { background: #fdecea; }
table.data tr.nan td, td.nan { background: #fff4d6; }
table.data td.bad, table.data td.nan { font-weight: 600; }
table.narrow { min-width: 260px; }
.cols { display: flex; gap: 24px; flex-wrap: wrap; }
.cols .col { flex: 1 1 520px; min-width: 0; }
svg.chart { width: 100%; height: auto; display: block; background: #fff; }
svg.chart .plot { fill: #fafbfc; stroke: #c8ced4; }
svg.chart .grid { stroke: #e3e7eb; stroke-width: 1; }
svg.chart .axis { stroke: #8a949e; }
svg.chart text { font-size: 12px; fill: #3c4650; }
svg.chart .ytick { text-anchor: end; }
svg.chart .xtick, svg.chart .label { text-anchor: middle; }
svg.chart .label { font-size: 13px; }
svg.chart .threshold { stroke: #b3261e; stroke-width: 1.3; stroke-dasharray: 6 4; }
svg.chart .thlabel { fill: #b3261e; text-anchor: end; font-size: 11px; }
svg.chart .dropline { stroke-width: 1; stroke-dasharray: 2 3; opacity: 0.8; }
svg.chart .droplabel { font-size: 12px; font-weight: 600; }
svg.chart .legend { font-size: 13px; }
.stack { display: flex; height: 14px; background: #f1f3f5; border-radius: 2px; overflow: hidden; min-width: 240px; }
.stack.big { height: 22px; max-width: 600px; margin: 6px 0 10px; }
.stack span { display: block; height: 100%; }
td.barcell { width: 320px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px;
          vertical-align: -1px; }
footer { margin: 32px 0 8px; color: #8a949e; font-size: 12px; }
"""
