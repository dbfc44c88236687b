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


# ---------------------------------------------------------------------- results folders' reports
def _folder(path, command, inputs=None, build=None):
    from topocli.reporting.results import ResultsFolder

    rep = Report(f"topo {command}")
    rep.add_section("Summary")
    if build is not None:
        build(rep)
    with ResultsFolder(path) as rf:
        rf.write_report(rep)
        rf.write_manifest(command, {}, inputs or {})
    return path


def _source_hrefs(path) -> list[str]:
    html = (path / "report.html").read_text(encoding="utf-8")
    return re.findall(r'<a class="source-report" href="([^"]+)"', html)


def test_reports_link_the_reports_they_were_made_from(tmp_path):
    """Relative links from the manifest's inputs: a folder, a file inside one, a list."""
    import os

    loc = _folder(tmp_path / "loc", "localize")
    loc2 = _folder(tmp_path / "deep" / "loc2", "localize")
    smooth = _folder(tmp_path / "sm", "smooth", {"input": str(loc / "manifest.json")})
    screen = _folder(
        tmp_path / "runs" / "screen",
        "screen",
        {"known": [str(loc), str(loc2), str(loc)], "stimuli": str(tmp_path)},
    )
    assert _source_hrefs(smooth) == ["../loc/report.html"]
    hrefs = _source_hrefs(screen)
    assert hrefs == ["../../loc/report.html", "../../deep/loc2/report.html"]  # once each
    for href in hrefs:  # they resolve from the report's folder
        assert (screen / href).resolve() == (
            loc if "loc2" not in href else loc2
        ).resolve() / "report.html"
    # the links survive moving the whole tree (they are relative)
    os.rename(tmp_path / "runs", tmp_path / "moved")
    assert all((tmp_path / "moved" / "screen" / h).is_file() for h in hrefs)
    assert _source_hrefs(loc) == []


def test_figures_are_files_beside_the_report_and_in_the_manifest(tmp_path):
    import json

    sheet = _sheet()
    t = np.random.default_rng(0).standard_normal(sheet.n_units)

    def build(rep):
        rep.add_figure(plot_sheet_map(t, sheet, "t"), "t map of a>b")
        df = pd.DataFrame({"x": [1, 2, 3], "y": [1.0, 4.0, 9.0]})
        rep.add_figure(plot_lines(df, "x", "y"), "dose response")

    out = _folder(tmp_path / "r", "localize", build=build)
    files = sorted(p.relative_to(out).as_posix() for p in (out / "figures").iterdir())
    assert files == [
        "figures/01-t-map-of-a-b.png",
        "figures/02-dose-response.png",
        "figures/02-dose-response.svg",
    ]  # SVG only for the vector figure
    with Image.open(out / files[0]) as im:
        assert im.format == "PNG" and im.width > 300
    assert (out / files[2]).read_text().lstrip().startswith(("<?xml", "<svg"))
    outputs = {r["path"] for r in json.loads((out / "manifest.json").read_text())["outputs"]}
    assert set(files) <= outputs
    html = (out / "report.html").read_text()
    for f in files:
        assert f'href="{f}"' in html


def test_summary_json_beside_the_manifest(tmp_path):
    from topocli.errors import TopoInputError
    from topocli.reporting.summary import summary_of

    out = _folder(
        tmp_path / "r",
        "screen",
        build=lambda rep: rep.set_summary({"categories": [{"name": "faces", "peak_t": np.nan}]}),
    )
    data = summary_of(out)
    assert data["command"] == "screen" and data["tool"] == "topo"
    assert data["summary"] == {"categories": [{"name": "faces", "peak_t": None}]}
    import json

    listed = {r["path"] for r in json.loads((out / "manifest.json").read_text())["outputs"]}
    assert "summary.json" in listed
    with pytest.raises(TopoInputError, match="no summary.json"):
        summary_of(_folder(tmp_path / "none", "info"))


def test_table_decisive_columns_first_and_text_cells_wrap():
    df = pd.DataFrame(
        {"a": [1], "b": [2.0], "closest known": ["language 0.52"], "category": ["emotional"]}
    )
    rep = Report("t")
    rep.add_table(df, first=["category", "closest known", "missing"])
    html = rep.render()
    heads = re.findall(r"<th scope=\"col\"[^>]*>([^<]*)</th>", html)
    assert heads == ["category", "closest known", "a", "b"]
    row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", html, re.S).group(1)
    assert re.findall(r'<td class="(\w+)"', row) == ["text", "text", "num", "num"]
    css = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert "text-overflow: ellipsis" not in css  # nothing is cut, long text wraps
    assert re.search(r"td\.text \{[^}]*white-space: normal", css)


def test_sheet_viewer_payload_decodes_to_the_maps():
    """The embedded arrays decode (as the page's script does) to the units' values."""
    from topocli.reporting.viewer import viewer_payload

    sheet = _sheet()
    rng = np.random.default_rng(5)
    t = rng.standard_normal(sheet.n_units) * 4
    q = 10 ** -rng.uniform(0, 12, sheet.n_units)
    lab = (t > 2).astype(int)
    data = viewer_payload(sheet, [{"name": "a>b", "t": t, "q": q, "cluster": lab}])

    def arr(text, dtype):
        return np.frombuffer(base64.b64decode(text), dtype=dtype)

    tri = arr(data["unit"], "<i2").reshape(-1, 3)
    np.testing.assert_array_equal(tri[:, 0], sheet.row)
    np.testing.assert_array_equal(tri[:, 1], sheet.col)
    np.testing.assert_array_equal(tri[:, 2], sheet.area)
    m = data["maps"][0]
    np.testing.assert_allclose(arr(m["t"], "<f2"), t, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(10 ** -arr(m["q"], "<f2").astype(float), q, rtol=2e-2)
    np.testing.assert_array_equal(arr(m["cluster"], "<i2"), lab)
    assert data["areas"] == sheet.area_names and (data["rows"], data["cols"]) == sheet.grid_shape
    # compact: a few bytes per unit and map, not JSON floats
    import json

    assert len(json.dumps(data)) < 17 * sheet.n_units + 500  # 6 + 6 bytes per unit, base64


def test_profile_figure_text_is_legible_in_the_report():
    """Text >= 11 CSS px as shown in the report column, even for a wide profile."""
    from topocli.reporting.html import MAIN_WIDTH_PX
    from topocli.reporting.plotting import smallest_text_px

    conds = [f"condition {i}" for i in range(14)]
    df = pd.DataFrame(
        {
            "condition": np.repeat(conds, 3),
            "area": ["layer.1", "layer.2", "layer.3"] * len(conds),
            "m": np.arange(42.0),
            "e": 1.0,
        }
    )
    fig = plot_profile_bars(
        df, "condition", "m", hue="area", err="e", title="fROI", figsize=(14, 3.6)
    )
    assert smallest_text_px(fig, MAIN_WIDTH_PX) >= 11
    fig = plot_lines(df, "m", "e", hue="area", figsize=(12, 3))
    assert smallest_text_px(fig, MAIN_WIDTH_PX) >= 11
    # the oracle: an 8 pt legend in a 14-inch figure would be about 7 px, and fails
    small = new_figure((14, 3))
    small.add_subplot().set_title("x", fontsize=8)
    assert smallest_text_px(small, MAIN_WIDTH_PX) < 11


# ---------------------------------------------------------------------- terminal tables
def test_terminal_tables_fit_80_columns_without_cutting_names():
    from rich.console import Console

    from topocli.reporting.terminal import Column, fit_table

    names = ["emotional", "social interaction", "numbers and arithmetic", "faces"]
    columns = [
        Column("rank", priority=0),
        Column("category", "left", 0, name=True),
        Column("sig. units", priority=0),
        Column("clusters", priority=3),
        Column("peak t", priority=1),
        Column("map I", priority=2),
        Column("closest known (Dice)", "left", 1, name=True),
        Column("novelty", priority=1),
        Column("at random", priority=2),
        Column("stimuli", priority=4),
    ]
    rows = [
        [i + 1, n, 120 + i, 3, "5.21", "0.412", "language (0.52)", "0.48", "0.91", 40]
        for i, n in enumerate(names)
    ]
    for width in (80, 60):
        console = Console(width=width, record=True, color_system=None)
        console.print(fit_table(columns, rows, console.width, title="categories ranked"))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "…" not in text and "..." not in text
        lines = text.splitlines()
        for n in names:
            assert any(n in line for line in lines), n  # whole names, each on one line
        assert "not shown at" in text and "stimuli" in text.split("not shown at")[1]
        assert "category" in text and "sig. units" in text  # priority 0 stays
    wide = Console(width=200, record=True, color_system=None)
    wide.print(fit_table(columns, rows, wide.width))
    assert "not shown" not in wide.export_text()  # nothing dropped when it fits


def test_screen_summary_prints_at_80_columns():
    """screen's own table through print_summary, with a long category name."""
    from types import SimpleNamespace

    from rich.console import Console

    from topocli.workflows.screen.report import print_summary, summary_of_result

    cats = [
        SimpleNamespace(
            rank=i + 1,
            name=name,
            n_stimuli=40,
            n_significant=100 - i,
            n_clusters=2,
            peak_t=6.1,
            topography=None,
            best_known="language",
            max_dice=0.31,
            novelty=0.69,
            novelty_random=0.97,
        )
        for i, name in enumerate(["emotional", "spatial navigation", "faces"])
    ]
    result = SimpleNamespace(
        params={"q": 0.05, "fwhm_mm": 0.0, "min_cluster": 5, "rank_by": "n-significant"},
        categories=cats,
        mode="categories",
        control_comparison=None,
    )
    console = Console(width=80, record=True, color_system=None)
    print_summary(result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "categories ranked" in text and "…" not in text
    assert "emotional" in text and "spatial navigation" in text
    summary = summary_of_result(result)
    assert [c["category"] for c in summary["categories"]] == [
        "emotional",
        "spatial navigation",
        "faces",
    ]
    assert summary["categories"][0]["map_moran_i"] is not None  # NaN until written as JSON


# ---------------------------------------------------------------------- the same tables everywhere
def test_unit_rows_and_cluster_peaks_are_the_same_in_every_command():
    from topocli.reporting.tables import UNIT_COLUMNS, unit_frame, with_peak_position
    from topocli.workflows.localize.report import UNIT_COLUMNS as LOCALIZE_UNITS
    from topocli.workflows.screen.report import UNIT_COLUMNS as SCREEN_UNITS

    assert LOCALIZE_UNITS == ["contrast", *UNIT_COLUMNS]
    assert SCREEN_UNITS == ["category", "reference", *UNIT_COLUMNS]
    sheet = _sheet(mm=0.5)
    t = np.arange(sheet.n_units, dtype=float)
    rows = unit_frame(sheet, {"t": t}, {"contrast": "a>b"})
    assert list(rows.columns) == ["contrast", *UNIT_COLUMNS]
    assert rows["df"].isna().all() and (rows["cluster"] == 0).all()  # absent = empty, 0 = none
    np.testing.assert_array_equal(rows["x_mm"], sheet.col * 0.5)
    clusters = pd.DataFrame({"cluster": [1, 2], "peak_unit": [7, 150], "n_units": [3, 4]})
    out = with_peak_position(clusters, sheet)
    assert list(out.columns) == [
        "cluster",
        "peak_unit",
        "peak_area",
        "peak_row",
        "peak_col",
        "peak_x_mm",
        "peak_y_mm",
        "n_units",
    ]
    for r in out.itertuples():  # the oracle: the sheet's own coordinates
        assert r.peak_area == sheet.area_names[sheet.area[r.peak_unit]]
        assert (r.peak_row, r.peak_col) == (sheet.row[r.peak_unit], sheet.col[r.peak_unit])
        assert (r.peak_x_mm, r.peak_y_mm) == tuple(sheet.positions_mm[r.peak_unit])


def test_localize_and_intervene_summaries_print_at_80_columns():
    from types import SimpleNamespace

    from rich.console import Console

    from topocli.workflows.intervene.report import print_summary as print_intervene
    from topocli.workflows.localize.report import print_summary as print_localize

    def contrast(name):
        s = {
            "map_moran_i_unsmoothed": 0.61,
            "join_count_z_unsmoothed": 19.9,
            "n_clusters_unsmoothed": 12,
            "n_clusters_random_placement": 19.1,
        }
        return SimpleNamespace(
            name=name,
            n_significant=929,
            n_clusters=8,
            peak_t=46.2,
            moran_unsmoothed=0.34,
            summary=lambda: s,
        )

    names = ["sentences-jabberwocky", "emotional_faces-neutral_faces_and_houses"]
    result = SimpleNamespace(
        params={
            "q": 0.05,
            "alternative": "greater",
            "fdr_scope": "sheet",
            "fwhm_mm": 0.0,
            "min_cluster": 8,
        },
        sheet=SimpleNamespace(n_units=2304),
        contrasts=[contrast(n) for n in names],
        control_comparison=None,
    )
    console = Console(width=80, record=True, color_system=None)
    print_localize(result, console)
    stats = pd.DataFrame(
        {
            "dose": [1.0, 5.0],
            "readout": ["fidelity", "lm-loss"],
            "statistic": ["target_effect", "selectivity"],
            "target_value": [0.12, 0.5],
            "control": ["distance-matched", "random"],
            "control_mean": [0.01, np.nan],
            "p_permutation": [0.004, 0.2],
            "effect_size_z": [3.1, 0.4],
        }
    )
    print_intervene(stats, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    for name in [*names[:1], "distance-matched", "target_effect"]:
        assert any(name in line for line in lines), name
    # a name past 28 characters folds onto the next line, nothing of it lost
    cells = "".join(line.split("│")[1].strip() for line in lines if line.count("│") > 2)
    assert names[1] in cells


def test_viewer_data_cannot_close_its_script_tag():
    """A map name from a stimulus folder stays data: escaped in the JSON block, read back whole."""
    import json

    sheet = _sheet()
    rep = Report("v")
    rep.add_sheet_viewer(sheet, [{"name": EVIL, "t": np.zeros(sheet.n_units)}])
    html = rep.render()
    block = re.search(
        r'<script type="application/json" class="viewer-data">(.*?)</script>', html, re.S
    ).group(1)
    assert "<" not in block and json.loads(block)["maps"][0]["name"] == EVIL
    assert EVIL not in html
