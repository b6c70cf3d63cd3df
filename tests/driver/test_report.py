"""The HTML report (``ptqc.driver.report``): one self-contained file with the settings, the
per-layer cosine chart, the worst layers, the mixed-precision summary and every layer; names
escaped, output deterministic; and it renders in headless Chromium with no console errors."""
from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptqc.driver.report import write_report
from ptqc.runtime.simulator import LayerError

EVIL = 'mul<&>"x\'1'  # a node name every page must escape
OPS = ["Conv", "Relu", "Conv", "Add", "Mul", "Conv", "Sigmoid", "Conv", "MatMul", "Softmax"]
NAMES = ["stem/conv", "stem/relu", "block1/conv", "block1/add", EVIL, "block2/conv", "block2/sig",
         "block3/conv", "head/matmul", "head/softmax"]
GRAPH_COS = [1.0, 0.9999, 0.998, 0.996, 0.995, 0.993, 0.991, 0.975, 0.96, 0.95]
LAYER_COS = [1.0, 0.9999, 0.999, math.nan, 0.97, 0.999, 0.9995, 0.985, 0.998, 0.9999]
# first cosine below 0.99 (a NaN cosine, from a shape mismatch, is no drop, as in report.first_drop)
FIRST = {"graphwise": (7, "block3/conv"), "layerwise": (4, EVIL)}

# what Chromium prints on stderr for a page's console messages with --enable-logging=stderr:
# `[pid:tid:date:INFO:CONSOLE:1] "msg", source: file:///... (1)` (older builds: `CONSOLE(1)`),
# for console.log/warn/error alike and for uncaught exceptions ("Uncaught ReferenceError: ...")
CONSOLE = re.compile(r"\bCONSOLE\b|Uncaught|console\.error")
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (Debian: apt-get install "
                                    "chromium): the report is not rendered in a browser")


def _inputs(mix: dict | None = None) -> dict:
    def rows(cos, k):
        return [LayerError(n, o, f"{n}:0", c, k * (1 - c) if c == c else math.nan, 0.1 * k * (1 - c))
                for n, o, c in zip(NAMES, OPS, cos)]

    layers = [dict(node=n, op_type=o, tensor=f"{n}:0", bits=16 if o in ("Softmax", "Sigmoid") else 8,
                   dtype="int16" if o in ("Softmax", "Sigmoid") else "int8", scale=0.02 * (i + 1),
                   zero_point=0, rmin=-2.56 * (i + 1), rmax=2.54 * (i + 1))
              for i, (n, o) in enumerate(zip(NAMES, OPS))]
    return dict(title="tiny<net>&co", settings={"chip": "TX510", "bits": 8, "method": "kl", "iterations": 2,
                                                "data": "/data/<imgs>", "lut length": 256, "per channel": True},
                graphwise=rows(GRAPH_COS, 3.0), layerwise=rows(LAYER_COS, 1.0), layers=layers, mix=mix)


def _summary_item(text: str, mode: str) -> str:
    m = re.search(rf"<li><b>{mode}</b>(.*?)</li>", text, re.S)
    assert m, f"no {mode} line in the summary"
    return m.group(1)


def test_report_contents(tmp_path):
    path = write_report(tmp_path / "out" / "report.html", **_inputs())
    assert path == tmp_path / "out" / "report.html" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # the temporary file is gone
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # self-contained: nothing fetched, no script
    assert not re.search(r"""(src|href|xlink:href|action)\s*=\s*["']?\s*(https?:|//|ftp:)""", text, re.I)
    assert not re.search(r"https?://|url\(|@import|<link\b|<script\b|<img\b|<iframe\b", text, re.I)
    # names escaped wherever they appear (text, SVG tooltips)
    assert EVIL not in text and "tiny<net>" not in text and "/data/<imgs>" not in text
    assert html.escape(EVIL) in text and "tiny&lt;net&gt;&amp;co" in text
    assert text.count(html.escape(EVIL)) >= 4  # summary, chart tooltip(s), worst tables, layer table
    # settings
    for key in ("chip", "TX510", "lut length", "256", "per channel"):
        assert f">{key}<" in text
    # chart: two polylines (the layerwise one broken at its NaN), a tooltip per point, the threshold
    chart = text[text.index('<svg class="chart"'):text.index("</svg>")]
    assert chart.count("<polyline") == 3
    assert chart.count("<circle") == 19 + 2 + 2  # points with a cosine, legend, first-drop rings
    assert 'class="nanpt"' in chart and "layerwise cosine n/a" in chart
    assert 'class="threshold"' in chart and ">0.99<" in chart
    assert "#4 " + html.escape(f"{EVIL} (Mul)") in chart
    # the first drop, in the summary and marked on the chart, for each mode
    for mode, (i, node) in FIRST.items():
        line = _summary_item(text, mode)
        assert f'first below 0.99: <span class="drop">#{i} {html.escape(node)}</span>' in line
        assert f"{mode}: #{i} {html.escape(node)}" in chart
        assert re.search(rf'<g class="drop {mode}">.*?>#{i}</text></g>', chart)
    assert "1 without a cosine" in _summary_item(text, "layerwise")
    # worst layers: graphwise worst first; the NaN layer heads the layerwise table
    worst = text[text.index('<section id="worst">'):text.index('<section id="precision">')]
    g, lw = worst.split('<div class="col">')[1:]
    ranks = [int(x) for x in re.findall(r'<tr class="\w+"><td class="n">(\d+)</td>', g)]
    assert ranks == list(range(9, -1, -1))
    assert re.findall(r'<tr class="\w+"><td class="n">(\d+)</td>', lw)[:3] == ["3", "4", "7"]
    # precision from the layers: 8 x 8-bit, 2 x 16-bit
    prec = text[text.index('<section id="precision">'):text.index('<section id="layers">')]
    assert re.search(r"8-bit</td><td class=\"n\">8</td><td class=\"n\">80.0%", prec)
    assert re.search(r"16-bit</td><td class=\"n\">2</td><td class=\"n\">20.0%", prec)
    assert '<td class="name">Conv</td><td class="n">4</td><td class="n">0</td>' in prec
    # every layer, in order, with its quantization and both cosines
    table = text[text.index('<section id="layers">'):]
    assert re.findall(r'<td class="n">(\d+)</td><td class="name">', table) == [str(i) for i in range(10)]
    assert "[-12.8, 12.7]" in table and ">0.1<" in table and ">n/a<" in table
    assert table.count("<tr") == 11


def test_report_mix_and_empty(tmp_path):
    mix = {n: (16 if i < 3 else 8, "sym") for i, n in enumerate(NAMES)}
    text = write_report(tmp_path / "r.html", **_inputs(mix)).read_text()
    prec = text[text.index('<section id="precision">'):text.index('<section id="layers">')]
    assert "mixed-precision assignment" in prec
    assert re.search(r"16-bit</td><td class=\"n\">3</td><td class=\"n\">30.0%", prec)
    # nothing compared, nothing quantized: still a page
    empty = write_report(tmp_path / "e.html", title="e", settings={}, graphwise=[], layerwise=[], layers=[])
    text = empty.read_text()
    assert "No comparison rows" in text and "<svg" not in text and "No quantized nodes" in text
    assert "graphwise</b>: no comparison" in text


def test_report_deterministic(tmp_path):
    a = write_report(tmp_path / "a.html", **_inputs()).read_bytes()
    b = write_report(tmp_path / "b.html", **_inputs()).read_bytes()
    assert a == b
    c = write_report(tmp_path / "a.html", **_inputs()).read_bytes()  # overwrite in place
    assert c == a


# ----------------------------------------------------------------------------- Chromium
def _chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--log-level=0",
           *args, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _screenshot(page: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    png = tmp_path / (page.stem + ".png")
    done = _chromium(page, tmp_path, f"--screenshot={png}")
    assert png.is_file(), done.stdout + done.stderr[-2000:]
    return png, _console_lines(done.stderr)


def _console_lines(stderr: str) -> list[str]:
    """The page's console messages and uncaught errors (not Chromium's dbus/GPU warnings)."""
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def _blank(png: Path) -> bool:
    im = Image.open(png).convert("RGB")
    colours = im.getcolors(maxcolors=1 << 16)
    distinct = len(colours) if colours is not None else 1 << 16
    return distinct <= 50 and float(np.asarray(im, np.float64).std()) < 8.0


def _pixels_near(png: Path, rgb: tuple[int, int, int], tol: int = 40) -> int:
    a = np.asarray(Image.open(png).convert("RGB"), np.int32)
    return int((np.abs(a - np.array(rgb)).sum(axis=2) < tol).sum())


@needs_chromium
def test_report_renders_in_chromium(tmp_path):
    page = write_report(tmp_path / "report.html", **_inputs())
    png, console = _screenshot(page, tmp_path)
    assert console == [], console
    assert not _blank(png)
    assert Image.open(png).size == (1200, 1600)
    assert _pixels_near(png, (0x1F, 0x6F, 0xB4)) > 200  # the graphwise line and points
    assert _pixels_near(png, (0xE0, 0x7B, 0x00)) > 200  # the layerwise ones
    dom = _chromium(page, tmp_path, "--dump-dom")
    assert _console_lines(dom.stderr) == []
    assert '<svg class="chart"' in dom.stdout and dom.stdout.count("<polyline") == 3
    assert "block3/conv" in dom.stdout


@needs_chromium
def test_render_checks_catch_broken_pages(tmp_path):
    """The two checks above can fail: a blank page is blank, a page logging errors is caught."""
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><title>b</title></head><body></body></html>")
    png, console = _screenshot(blank, tmp_path)
    assert _blank(png) and console == []
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("report-broken");'
                      "undefinedReportFn();</script></body></html>")
    done = _chromium(broken, tmp_path, "--dump-dom")
    console = _console_lines(done.stderr)
    assert any("report-broken" in line for line in console), done.stderr[-3000:]
    assert any("Uncaught ReferenceError" in line for line in console)
