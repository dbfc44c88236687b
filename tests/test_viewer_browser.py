"""The report's interactive sheet viewer and its links to source reports, in headless Chromium.

A localize-like folder with a planted map and a smooth-like folder made from it: the viewer draws
the map (the planted unit red), hovering a unit shows its area, row/col, mm, t, q and cluster,
picking another map redraws, and the "made from" link resolves to the source's report.

Skips when Chromium is not installed, unless ``TOPO_REQUIRE_BROWSER=1`` (set by CI), in which
case a missing browser is a failure.
"""

from __future__ import annotations

import html as htmllib
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from test_report_browser import _chromium, _console_lines, _run

from topocli.reporting.html import Report
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet

pytestmark = pytest.mark.slow

PLANT = 150  # the unit whose values are checked
PROBE = """
<script>
window.addEventListener("load", function () {
  var fig = document.querySelector("figure.sheet-viewer"), canvas = fig.querySelector("canvas");
  var cell = Number(fig.getAttribute("data-cell-px")), out = {};
  function hover(row, col) {
    var r = canvas.getBoundingClientRect(), s = r.width / canvas.width;
    canvas.dispatchEvent(new MouseEvent("mousemove", { bubbles: true,
      clientX: r.left + (col + 0.5) * cell * s, clientY: r.top + (row + 0.5) * cell * s }));
    return fig.querySelector(".viewer-tip").textContent;
  }
  function pixel(row, col) {
    var p = canvas.getContext("2d").getImageData((col + 0.5) * cell, (row + 0.5) * cell, 1, 1);
    return Array.prototype.slice.call(p.data, 0, 3).join(",");
  }
  out.tip = hover(ROW, COL);
  out.unit = fig.getAttribute("data-unit");
  out.pixel = pixel(ROW, COL);
  out.empty = hover(EMPTY_ROW, EMPTY_COL);
  var select = fig.querySelector("select");
  select.value = "1";
  select.dispatchEvent(new Event("change"));
  out.map = fig.getAttribute("data-map");
  out.tip2 = hover(ROW, COL);
  out.pixel2 = pixel(ROW, COL);
  out.links = Array.prototype.map.call(document.querySelectorAll("a.source-report"),
    function (a) { return a.href; }).join(" ");
  Object.keys(out).forEach(function (k) { document.body.setAttribute("data-" + k, out[k]); });
});
</script>
"""


def _sheet() -> Sheet:
    specs = [AreaSpec(f"encoder.layer.{i}", 100, "text") for i in range(3)]
    return Sheet.build(specs, "stacked", mm_per_unit=0.5)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    browser = _chromium()
    tmp = tmp_path_factory.mktemp("viewer")
    sheet = _sheet()
    t = np.zeros(sheet.n_units)
    t[PLANT] = 7.25
    t2 = -t
    q = np.full(sheet.n_units, 0.9)
    q[PLANT] = 0.0012
    cluster = np.zeros(sheet.n_units, int)
    cluster[PLANT] = 3
    loc = tmp / "loc"
    rep = Report("topo localize")
    rep.add_section("Sheet viewer")
    rep.add_sheet_viewer(
        sheet,
        [
            {"name": "a>b", "t": t, "q": q, "cluster": cluster},
            {"name": "b>a", "t": t2, "q": q, "cluster": None},
        ],
    )
    with ResultsFolder(loc) as rf:
        rf.write_sheet_nifti("tmap.nii.gz", np.stack([t, t2]), sheet, ["a>b", "b>a"], stat="t")
        rf.write_report(rep)
        rf.write_manifest("localize", {}, {})
    smooth = tmp / "elsewhere" / "sm"
    rep2 = Report("topo smooth")
    rep2.add_section("Sheet viewer")
    rep2.add_sheet_viewer(sheet, [{"name": "a>b", "t": t}, {"name": "b>a", "t": t2}])
    with ResultsFolder(smooth) as rf:
        rf.write_report(rep2)
        rf.write_manifest("smooth", {}, {"input": str(loc / "tmap.nii.gz")})
    return {"browser": browser, "tmp": tmp, "sheet": sheet, "loc": loc, "smooth": smooth}


def _dom(folders, page: Path) -> tuple[str, str]:
    run = _run(
        folders["browser"],
        folders["tmp"],
        [
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--window-size=1200,1600",
            "--dump-dom",
            page.as_uri(),
        ],
    )
    return run.stdout, run.stderr


def test_viewer_runs_under_the_reports_own_policy(folders):
    """The real page (CSP on): the viewer is set up and nothing errs or is blocked."""
    dom, err = _dom(folders, folders["loc"] / "report.html")
    root = re.search(r"<html[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', root))
    assert attrs.get("data-js-errors") == "0", (root, err[-2000:])
    assert attrs.get("data-ready") == "true"
    fig = re.search(r'<figure class="sheet-viewer"[^>]*>', dom).group(0)
    assert 'data-map="a&gt;b"' in fig and "data-cell-px" in fig
    assert dom.count("<option") == 2
    assert _console_lines(err) == []


def _probe_page(folders, report: Path, row: int, col: int, empty: tuple[int, int]) -> Path:
    """The report with its CSP removed (so the probe script may run) and the probe added."""
    text = report.read_text(encoding="utf-8")
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    probe = (
        PROBE.replace("EMPTY_ROW", str(empty[0]))
        .replace("EMPTY_COL", str(empty[1]))
        .replace("ROW", str(row))
        .replace("COL", str(col))
    )
    page = report.with_name("probe.html")
    page.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
    return page


def test_hover_shows_the_units_values_and_the_map_switches(folders):
    sheet = folders["sheet"]
    row, col = int(sheet.row[PLANT]), int(sheet.col[PLANT])
    grid = sheet.to_grid(np.ones(sheet.n_units))
    empty = tuple(int(v[0]) for v in np.nonzero(np.isnan(grid)))
    page = _probe_page(folders, folders["loc"] / "report.html", row, col, empty)
    dom, err = _dom(folders, page)
    body = dict(re.findall(r'(data-[a-z0-9]+)="([^"]*)"', re.search(r"<body[^>]*>", dom).group(0)))
    tip = htmllib.unescape(body["data-tip"])
    area = sheet.area_names[sheet.area[PLANT]]
    assert f"area {area}" in tip and f"row {row}, col {col}" in tip, tip
    assert f"x {col * 0.5:g} mm, y {row * 0.5:g} mm" in tip, tip
    assert "t 7.25" in tip and "q 0.0012" in tip and "cluster 3" in tip, tip
    assert body["data-unit"] == str(PLANT)
    r, g, b = map(int, body["data-pixel"].split(","))
    assert r > 150 and g < 80 and b < 80  # positive t: red
    assert htmllib.unescape(body["data-empty"]) == "no unit here"
    assert htmllib.unescape(body["data-map"]) == "b>a"
    tip2 = htmllib.unescape(body["data-tip2"])
    assert "t -7.25" in tip2 and "cluster none" in tip2, tip2
    r, g, b = map(int, body["data-pixel2"].split(","))
    assert b > 150 and r < 80  # negative t: blue
    # the probe's own pixel reads draw Chromium's "multiple readback" hint; nothing else
    assert [line for line in _console_lines(err) if "readback" not in line] == []


def test_made_from_link_resolves_in_the_browser(folders):
    sheet = folders["sheet"]
    page = _probe_page(
        folders, folders["smooth"] / "report.html", int(sheet.row[0]), int(sheet.col[0]), (0, 0)
    )
    dom, _ = _dom(folders, page)
    links = re.search(r'data-links="([^"]*)"', dom).group(1).split()
    assert len(links) == 1
    target = Path(unquote(urlparse(htmllib.unescape(links[0])).path))
    assert target.is_file() and target.resolve() == (folders["loc"] / "report.html").resolve()


WIDE_PROBE = """
<script>
window.addEventListener("load", function () {
  var wrap = document.querySelector(".table-wrap").getBoundingClientRect(), out = [];
  document.querySelectorAll("tbody tr:first-child td").forEach(function (td, i) {
    var r = td.getBoundingClientRect(), th = document.querySelectorAll("thead th")[i];
    var whole = td.scrollWidth <= td.clientWidth + 1;
    var seen = r.left >= wrap.left - 1 && r.right <= wrap.right + 1;
    out.push(th.textContent + "=" + (whole ? "whole" : "cut") + "/" + (seen ? "seen" : "off"));
  });
  document.body.setAttribute("data-cells", out.join("|"));
});
</script>
"""


def test_decisive_columns_of_a_wide_table_are_visible_at_1920_px(folders, tmp_path):
    """screen's ranked table: rank, category, ... closest known come first and are not cut."""
    import pandas as pd

    long_known = "toy localizer with a long name: sentences>nonwords 0.52"
    table = pd.DataFrame(
        {
            "rank": [1],
            "category": ["emotional and social interaction"],
            "stimuli": [40],
            "sig. units": [120],
            "clusters": [3],
            "peak t": [6.2],
            "Moran's I": [0.41],
            "held-out": [0.12],
            "novelty": [0.48],
            "closest known": [long_known],
            **{f"extra {i}": [f"some long value number {i} here"] for i in range(6)},
        }
    )
    rep = Report("topo screen")
    rep.add_section("Ranked categories")
    rep.add_table(
        table, first=["rank", "category", "sig. units", "peak t", "novelty", "closest known"]
    )
    page = tmp_path / "wide.html"
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", rep.render())
    page.write_text(text.replace("</body>", WIDE_PROBE + "</body>"), encoding="utf-8")
    run = _run(
        folders["browser"],
        tmp_path,
        ["--virtual-time-budget=5000", "--window-size=1920,1080", "--dump-dom", page.as_uri()],
    )
    cells = dict(
        c.split("=", 1)
        for c in htmllib.unescape(re.search(r'data-cells="([^"]*)"', run.stdout).group(1)).split(
            "|"
        )
    )
    for col in ("rank", "category", "sig. units", "peak t", "novelty", "closest known"):
        assert cells[col] == "whole/seen", (col, cells)
    assert list(cells)[:6] == [
        "rank",
        "category",
        "sig. units",
        "peak t",
        "novelty",
        "closest known",
    ]
