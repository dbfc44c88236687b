"""HTML report (escaping, embedding, self-containment) and the plotting helpers behind it."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle
from PIL import Image
from scipy import stats

from topocli.reporting.html import Report
from topocli.reporting.plotting import (
    figure_to_bytes,
    figure_to_png_bytes,
    label_edges,
    new_figure,
    plot_layout,
    plot_lines,
    plot_profile_bars,
    plot_sheet_map,
    plot_sheet_maps,
    short_name,
)
from topocli.sheet import AreaSpec, Sheet

EVIL = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


def _sheet(layout: str = "stacked", mm: float = 1.0) -> Sheet:
    specs = [AreaSpec("encoder.layer.0", 100, "text"), AreaSpec("encoder.layer.1", 64, "text")]
    return Sheet.build(specs, layout, mm_per_unit=mm)


def _small_fig():
    fig = new_figure((2, 1.5))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def _data_uris(html: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r'src="data:image/[a-z+]+;base64,([^"]+)"', html)
    ]


# ---------------------------------------------------------------------- escaping
def test_every_user_string_is_escaped():
    rep = Report(EVIL, subtitle=EVIL, command=f"topo localize --text '{EVIL}'")
    rep.add_paragraph(EVIL)
    rep.add_section(EVIL, EVIL)
    rep.add_subsection(EVIL)
    rep.add_note(EVIL, "warning")
    rep.add_table(pd.DataFrame({EVIL: [EVIL, "ok"], "t": [1.0, 2.0]}), caption=EVIL, csv_name=EVIL)
    rep.add_key_values({EVIL: EVIL, "nested": {"k": EVIL}}, caption=EVIL)
    rep.add_code(EVIL, caption=EVIL)
    rep.add_figure(_small_fig(), caption=EVIL)
    rep.add_image_grid([Image.new("RGB", (8, 8), "red")], labels=[EVIL], caption=EVIL)
    rep.add_file_list([EVIL])
    html = rep.render()
    assert EVIL not in html
    assert 'alert("x")' not in html
    assert html.count("<script") == 1  # only the report's own script
    assert html.count(ESCAPED) >= 15
    assert re.search(r"<script>\s*\(function", html)


def test_section_anchors_are_unique_and_safe():
    rep = Report("r")
    ids = [
        rep.add_section("Maps & clusters"),
        rep.add_section("Maps & clusters"),
        rep.add_section(EVIL),
    ]
    assert ids[0] == "maps-clusters" and ids[1] == "maps-clusters-2"
    assert re.fullmatch(r"[a-z0-9-]+", ids[2])
    html = rep.render()
    for i in ids:
        assert f'href="#{i}"' in html and f'id="{i}"' in html


# ---------------------------------------------------------------------- embedding
def test_figures_and_images_are_embedded():
    sheet = _sheet()
    values = np.linspace(-3, 3, sheet.n_units)
    fig = plot_sheet_map(values, sheet, "t map")
    rep = Report("r")
    rep.add_section("Maps")
    rep.add_figure(fig, "t map", dpi=80)
    rep.add_figure(_small_fig(), "svg", fmt="svg")
    rep.add_image(Image.new("RGB", (30, 20), "blue"), "one image")
    thumbs = [Image.new("RGB", (300, 150), c) for c in ("red", "green")]
    rep.add_image_grid(thumbs, labels=["r", "g"], thumb_px=64, fmt="jpeg")
    html = rep.render()
    blobs = _data_uris(html)
    assert len(blobs) == 5
    fresh = plot_sheet_map(values, sheet, "t map")
    assert blobs[0] == figure_to_png_bytes(fresh, dpi=80)  # the exact PNG, deterministic
    png = Image.open(io.BytesIO(blobs[0]))
    assert png.format == "PNG" and png.width > 100
    assert blobs[1].lstrip().startswith(b"<?xml") and b"<svg" in blobs[1]
    assert Image.open(io.BytesIO(blobs[2])).size == (30, 20)
    assert Image.open(io.BytesIO(blobs[3])).size == (64, 32)  # thumbnail keeps the aspect
    assert Image.open(io.BytesIO(blobs[3])).format == "JPEG"
    # figure shown at physical size: PNG pixels * 96 / dpi
    w = re.search(r'<img class="plot" src="data:image/png[^"]+" width="(\d+)"', html).group(1)
    assert int(w) == round(png.width * 96 / 80)


def test_no_external_urls_and_csp_hashes_match():
    sheet = _sheet()
    rep = Report("r", command="topo info")
    rep.add_section("s", "see the table")
    rep.add_figure(plot_layout(sheet), "layout", dpi=50)
    rep.add_figure(_small_fig(), "svg", fmt="svg", dpi=50)
    rep.add_table(pd.DataFrame({"a": [1, 2]}), "t")
    rep.add_image_grid([Image.new("L", (10, 10))])
    html = rep.render()
    assert not re.search(r"https?://", html, re.I)
    assert not re.search(r"""(src|href)=["']//""", html)
    assert "@import" not in html and "url(" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp
    for tag in ("style", "script"):
        body = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp


# ---------------------------------------------------------------------- tables
def test_table_cells_sort_keys_and_truncation():
    df = pd.DataFrame(
        {
            "area": ["b", "a", "c", "d"],
            "t": [1.23456789, -np.inf, np.nan, 1e-12],
            "n": np.array([3, 1, 2, 4], dtype=np.int64),
            "sig": [True, False, True, False],
        }
    )
    rep = Report("r")
    rep.add_table(df, "clusters", max_rows=3, float_format="%.3f", csv_name="clusters.csv")
    html = rep.render()
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert len(rows) == 3
    assert '<td class="num" data-sort="1.23456789">1.235</td>' in rows[0]
    assert 'data-sort="-Infinity">−∞<' in rows[1]
    assert '<td class="num" data-sort="">—</td>' in rows[2]  # missing: sorts last
    assert '<th scope="col" class="num">t</th>' in html and '<th scope="col">area</th>' in html
    assert "4 rows, showing the first 3" in html and 'href="clusters.csv"' in html
    rep2 = Report("r")
    rep2.add_table(df, float_format="{:.2e}")
    assert ">1.23e+00<" in rep2.render()


def test_save_writes_the_rendering(tmp_path):
    rep = Report("r", created="2020-01-01T00:00:00Z")
    rep.add_paragraph("first\n\nsecond")
    path = rep.save(tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text == rep.render() and "<p>first</p>" in text and "<p>second</p>" in text
    assert "2020-01-01T00:00:00Z" in text


# ---------------------------------------------------------------------- plotting
def test_label_edges_matches_a_brute_force_perimeter():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, size=(7, 9))
    segs = label_edges(lab)
    expected = set()
    pad = np.pad(lab, 1)
    for r in range(-1, 7):
        for c in range(-1, 9):
            here = pad[r + 1, c + 1]
            for dr, dc in ((1, 0), (0, 1)):
                there = pad[r + 1 + dr, c + 1 + dc]
                if here != there and max(here, there) > 0:
                    if dr:  # horizontal edge below cell (r, c)
                        expected.add(((c - 0.5, r + 0.5), (c + 0.5, r + 0.5)))
                    else:  # vertical edge right of cell (r, c)
                        expected.add(((c + 0.5, r - 0.5), (c + 0.5, r + 0.5)))
    got = {tuple(map(tuple, s)) for s in segs.tolist()}
    assert got == expected and len(segs) == len(expected)
    assert label_edges(np.zeros((3, 3), int)).shape == (0, 2, 2)


def test_plot_sheet_map_draws_the_grid_in_mm():
    sheet = _sheet(mm=0.5)
    values = np.random.default_rng(1).standard_normal(sheet.n_units)
    labels = np.zeros(sheet.n_units, int)
    labels[:10] = 1
    fig = plot_sheet_map(values, sheet, "t", outline_labels=labels, colorbar_label="t value")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    im = ax.images[0]
    grid = sheet.to_grid(values)
    arr = im.get_array()
    np.testing.assert_array_equal(arr.mask, np.isnan(grid))
    np.testing.assert_array_equal(arr.filled(np.nan)[~np.isnan(grid)], grid[~np.isnan(grid)])
    rows, cols = sheet.grid_shape
    np.testing.assert_allclose(
        im.get_extent(), [-0.25, (cols - 0.5) * 0.5, (rows - 0.5) * 0.5, -0.25]
    )
    vmin, vmax = im.get_clim()
    assert vmin == -vmax == -np.abs(values).max()
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == len(sheet.areas)
    texts = [t.get_text() for t in ax.texts]
    assert "layer.0" in texts and "1" in texts  # area names (short) and cluster number
    outline = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert outline and len(outline[-1].get_segments()) == len(
        label_edges(sheet.to_grid(labels, fill=0))
    )
    assert ax.get_xlabel() == "x (mm)" and fig.axes[1].get_ylabel() == "t value"
    short = plot_sheet_map(values, sheet, "t", colorbar_label="t")
    assert short.axes[1].get_title(loc="left") == "t"
    again = plot_sheet_map(values, sheet, "t", outline_labels=labels, colorbar_label="t value")
    assert figure_to_png_bytes(fig, 60) == figure_to_png_bytes(again, 60)  # deterministic


def test_plot_layout_and_small_multiples():
    sheet = Sheet.build(
        [
            AreaSpec("v.0", 256, "vision"),
            AreaSpec("a.0", 256, "audio"),
            AreaSpec("lm.0", 512, "text"),
        ],
        "stacked",
        stages=[["vision", "audio"], ["text"]],
    )
    fig = plot_layout(sheet)
    ax = fig.axes[0]
    assert len([p for p in ax.patches if isinstance(p, Rectangle)]) == 3
    assert any("v.0" in t.get_text() and "256 units" in t.get_text() for t in ax.texts)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["vision", "audio", "text"]
    tiled = _sheet("tiled")
    maps = [(np.arange(tiled.n_units, dtype=float), f"m{i}") for i in range(5)]
    fig = plot_sheet_maps(maps, tiled, ncols=3, shared_scale=True)
    visible = [a for a in fig.axes if a.get_visible() and a.images]
    assert len(visible) == 5 and {a.images[0].get_clim() for a in visible} == {(-163.0, 163.0)}
    again = plot_sheet_maps(maps, tiled, ncols=3, shared_scale=True)
    assert figure_to_bytes(fig, "png", 40) == figure_to_bytes(again, "png", 40)
    with pytest.raises(ValueError):
        figure_to_bytes(fig, "gif")


def test_profile_bars_use_mean_and_sem():
    rng = np.random.default_rng(2)
    df = pd.DataFrame(
        {
            "condition": np.repeat(["S", "N"], 12),
            "froi": np.tile(["A", "B", "C"], 8),
            "response": rng.standard_normal(24),
        }
    )
    fig = plot_profile_bars(df, "condition", "response", hue="froi")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    errs = []
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer):
            continue
        lines = container.lines[2][0].get_segments()
        errs += [(s[1][1] - s[0][1]) / 2 for s in lines]
    exp_h, exp_e = [], []
    for f in ["A", "B", "C"]:
        for c in ["S", "N"]:
            v = df[(df.froi == f) & (df.condition == c)].response
            exp_h.append(v.mean())
            exp_e.append(stats.sem(v))
    np.testing.assert_allclose(heights, exp_h)
    np.testing.assert_allclose(errs, exp_e)
    summary = pd.DataFrame({"condition": ["S", "N"], "mean": [1.0, 2.0], "se": [0.1, 0.2]})
    fig = plot_profile_bars(summary, "condition", "mean", err="se")
    assert [p.get_height() for p in fig.axes[0].patches] == [1.0, 2.0]


def test_plot_lines_one_line_per_hue():
    df = pd.DataFrame(
        {"step": [2, 1, 0, 0, 1, 2], "loss": [3, 2, 1, 6, 5, 4], "run": list("aaabbb")}
    )
    df["sd"] = 0.1
    fig = plot_lines(df, "step", "loss", hue="run", err="sd", logy=True)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    np.testing.assert_array_equal(lines[0].get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(lines[0].get_ydata(), [1, 2, 3])
    assert fig.axes[0].get_yscale() == "log"


def test_short_name():
    assert short_name("encoder.layer.3") == "layer.3"
    assert short_name("model.thinker.model.layers.11") == "layers.11"
    s = short_name("a_really_long_module_name_indeed", 12)
    assert len(s) == 12 and "…" in s
