"""A real report.html opened in headless Chromium: it renders, images decode, no console errors.

Skips when Chromium is not installed, unless ``TOPO_REQUIRE_BROWSER=1`` (set by CI), in which
case a missing browser is a failure.
"""

from __future__ import annotations

import html as htmllib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageStat

from topocli.reporting.html import Report
from topocli.reporting.plotting import plot_layout, plot_sheet_map
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet

pytestmark = pytest.mark.slow

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]
WINDOW = (1200, 1600)
STIMULUS = "<script>alert('stimulus')</script> & friends"


def _chromium() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    msg = "headless Chromium not found (Debian: apt-get install -y chromium)"
    if os.environ.get("TOPO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{msg}, and TOPO_REQUIRE_BROWSER=1 requires it")
    pytest.skip(f"{msg}; set TOPO_REQUIRE_BROWSER=1 to make this a failure")


def _run(browser: str, tmp: Path, args: list[str]) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    env = {**os.environ, "HOME": str(tmp)}
    try:
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium did not finish: {exc}")


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    browser = _chromium()
    tmp = tmp_path_factory.mktemp("browser")
    specs = [AreaSpec(f"encoder.layer.{i}", 384, "text") for i in range(3)]
    sheet = Sheet.build(specs, "stacked", mm_per_unit=1.0)
    yy, xx = np.mgrid[: sheet.grid_shape[0], : sheet.grid_shape[1]]
    grid = 6 * np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 30.0) - 3 * np.exp(
        -((yy - 28) ** 2 + (xx - 8) ** 2) / 20.0
    )
    t = sheet.from_grid(grid)
    labels = (t > 3).astype(int) + 2 * (t < -1.5)
    table = pd.DataFrame(
        {
            "cluster": [1, 2, 3],
            "stimulus": [STIMULUS, "sentences", "non-words"],
            "peak_t": [6.0, -3.0, np.nan],
            "n_units": [24, 11, 0],
        }
    )
    rep = Report("Localizer: language", subtitle=STIMULUS, command="topo localize --seed 0")
    rep.add_section("Overview", "A synthetic t map with two planted clusters.")
    rep.add_key_values({"alpha": 0.05, "fwhm_mm": 4, "stimulus": STIMULUS})
    rep.add_section("Maps")
    rep.add_figure(plot_sheet_map(t, sheet, "t map", outline_labels=labels), "t map, clusters")
    rep.add_figure(plot_layout(sheet), "layout", dpi=80)
    rep.add_section("Clusters")
    rep.add_table(table, "Cluster table", csv_name="clusters.csv")
    rep.add_image_grid(
        [Image.new("RGB", (96, 64), c) for c in ("#c0392b", "#2980b9", "#27ae60")],
        labels=["a", "b", STIMULUS],
        caption="exemplars",
    )
    out = tmp / "results"
    with ResultsFolder(out) as rf:
        rf.write_csv("clusters.csv", table)
        rf.write_report(rep)
        rf.write_manifest("localize", {"seed": 0}, {}, seed=0)
    page = (out / "report.html").as_uri()
    shot = tmp / "screenshot.png"
    w, h = WINDOW
    r_shot = _run(browser, tmp, [f"--screenshot={shot}", f"--window-size={w},{h}", page])
    r_dom = _run(
        browser,
        tmp,
        [
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            f"--window-size={w},{h}",
            "--dump-dom",
            page,
        ],
    )
    return {
        "browser": browser,
        "tmp": tmp,
        "source": (out / "report.html").read_text(encoding="utf-8"),
        "shot": shot,
        "shot_run": r_shot,
        "dom_run": r_dom,
        "table": table,
    }


def test_screenshot_is_not_blank(rendered):
    shot = rendered["shot"]
    assert shot.is_file(), rendered["shot_run"].stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == WINDOW
    colors = img.getcolors(maxcolors=1 << 24)
    assert len(colors) > 500  # text, figure and gradients, not a flat page
    assert max(ImageStat.Stat(img).stddev) > 25
    r, g, b = img.getpixel((15, 15))  # the dark header band: the inline CSS was applied
    assert r + g + b < 250 and b > r


def test_dom_has_rows_images_and_no_errors(rendered):
    run = rendered["dom_run"]
    dom = run.stdout
    assert "<html" in dom, run.stderr[-2000:]
    root = re.search(r"<html[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', root))
    n_img = len(re.findall(r"<img\b", rendered["source"]))
    assert n_img == 5  # 2 figures + 3 thumbnails
    assert attrs.get("data-ready") == "true", root
    assert attrs.get("data-images-ok") == str(n_img), root
    assert attrs.get("data-images-broken") == "0", root
    assert attrs.get("data-js-errors") == "0", root
    body = dom[dom.index("<tbody>") : dom.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == len(rendered["table"])
    cells = [htmllib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0])]
    assert cells == ["1", STIMULUS, "6", "24"]
    assert "alert('stimulus')</script>" not in dom  # shown as text, never parsed as a tag
    assert _console_lines(run.stderr) == []


def test_table_sorting_script(rendered, tmp_path):
    """The report's own script sorts a table when a header is clicked (numbers numerically)."""
    js = re.search(r"<script>(.*?)</script>", rendered["source"], re.S).group(1)
    page = tmp_path / "sort.html"
    page.write_text(
        "<!DOCTYPE html><html><head><script>"
        + js
        + "</script></head><body><table class='sortable'><thead><tr><th class='num'>t</th>"
        "<th>name</th></tr></thead><tbody>"
        "<tr><td data-sort='10'>10</td><td data-sort='b'>b</td></tr>"
        "<tr><td data-sort=''>-</td><td data-sort='c'>c</td></tr>"
        "<tr><td data-sort='9'>9</td><td data-sort='a'>a</td></tr>"
        "<tr><td data-sort='-1e3'>-1000</td><td data-sort='d'>d</td></tr>"
        "</tbody></table><script>"
        "document.addEventListener('DOMContentLoaded', function () {"
        " var th = document.querySelector('th'), out = [];"
        " function names() { return Array.prototype.map.call(document.querySelectorAll('tbody tr'),"
        "   function (r) { return r.cells[1].textContent; }).join(''); }"
        " th.click(); out.push(names()); th.click(); out.push(names());"
        " document.body.setAttribute('data-order', out.join('|'));"
        " document.body.setAttribute('data-aria', th.getAttribute('aria-sort'));"
        "});</script></body></html>",
        encoding="utf-8",
    )
    run = _run(
        rendered["browser"],
        tmp_path,
        [
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
    )
    assert 'data-order="dabc|badc"' in run.stdout, run.stdout[-1000:]
    assert 'data-aria="descending"' in run.stdout
    assert _console_lines(run.stderr) == []
