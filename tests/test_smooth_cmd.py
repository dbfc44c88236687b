"""`topo smooth`: sheet maps from a results folder or one NIfTI file, smoothed and written."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from topocli.errors import TopoInputError
from topocli.reporting.reader import load_sheet_maps, read_manifest
from topocli.reporting.results import ResultsFolder
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.smoothing import smooth_map
from topocli.workflows.smooth.run import default_out, run_smooth


def _ctx(out=None, quiet=True, overwrite=False):
    return SimpleNamespace(out=out, quiet=quiet, overwrite=overwrite)


def _results(tmp_path: Path, layout: str = "stacked", name: str = "loc") -> tuple[Path, Sheet]:
    sheet = Sheet.build(
        [AreaSpec("a", 60), AreaSpec("b", 45)],
        layout,
        mm_per_unit=0.5,
        width=10,
        permutation_seed=3,
    )
    rng = np.random.default_rng(0)
    t = rng.normal(size=(2, sheet.n_units))
    t[0, :5] = np.nan
    q = rng.uniform(size=sheet.n_units)
    out = tmp_path / name
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("tmap.nii.gz", t, sheet, ["c1", "c2"])
        rf.write_sheet_nifti("maps/qmap.nii.gz", q, sheet)
        rf.write_csv("units.csv", __import__("pandas").DataFrame({"x": [1]}))
        rf.write_manifest("localize", {"q": 0.05})
    return out, sheet


def test_folder_input_smooths_every_map_within_areas(tmp_path):
    src, sheet = _results(tmp_path)
    out = run_smooth(_ctx(), src, 3.0)
    assert out == tmp_path / "loc-smoothed-3mm" == default_out(src, 3.0)
    # p and q maps are never smoothed: a smoothed p-value is not a p-value
    assert not (out / "maps" / "qmap.nii.gz").exists()
    for rel in ("tmap.nii.gz",):
        before, names, sh = load_sheet_maps(src / rel)
        after, names_after, sh_after = load_sheet_maps(out / rel)
        assert names_after == names and sh_after == sheet
        np.testing.assert_allclose(
            after, smooth_map(before, sh, 3.0).astype(np.float32), rtol=1e-6, equal_nan=True
        )
    after, _, _ = load_sheet_maps(out / "tmap.nii.gz")
    assert np.isnan(after[0, :5]).all() and np.isfinite(after[0, 5:]).all()
    manifest = read_manifest(out, verify=True)
    assert manifest["command"] == "smooth"
    assert manifest["parameters"] == {"fwhm_mm": 3.0, "across_areas": False, "maps": None}
    assert manifest["inputs"]["input"]["kind"] == "folder"
    assert manifest["extra"]["source_command"] == "localize"
    assert manifest["extra"]["not_smoothed"] == ["qmap:qmap"]
    assert manifest["extra"]["display_only"] is True
    html = (out / "report.html").read_text()
    assert "before" in html and "FWHM 3 mm" in html


def test_single_file_map_selection_and_across_areas(tmp_path):
    src, sheet = _results(tmp_path)
    out = run_smooth(_ctx(), src / "tmap.nii.gz", 2.5, across_areas=True, maps=["c2"])
    assert out == tmp_path / "loc-tmap-smoothed-2.5mm"
    values, names, _ = load_sheet_maps(out / "tmap.nii.gz")
    before, _, _ = load_sheet_maps(src / "tmap.nii.gz")
    assert names == ["c2"]
    np.testing.assert_allclose(
        values[0],
        smooth_map(before[1], sheet, 2.5, across_areas=True).astype(np.float32),
        rtol=1e-6,
    )
    within = smooth_map(before[1], sheet, 2.5)
    assert not np.allclose(values[0], within, rtol=1e-3)  # across areas is different
    assert not (out / "maps").exists()
    # a file stem picks the whole file; an explicit --out wins
    out2 = run_smooth(_ctx(tmp_path / "mine"), src, 1.0, maps=["tmap"])
    assert out2 == tmp_path / "mine"
    assert load_sheet_maps(out2 / "tmap.nii.gz")[1] == ["c1", "c2"]
    # asking for a q map alone is refused in one line, and nothing is written
    with pytest.raises(TopoInputError, match="qmap:qmap is a p, q or label map"):
        run_smooth(_ctx(tmp_path / "q-only"), src, 1.0, maps=["qmap"])
    assert not (tmp_path / "q-only").exists()


def test_prints_a_line_unless_quiet(tmp_path):
    from rich.console import Console

    src, _ = _results(tmp_path)
    buf = io.StringIO()
    run_smooth(_ctx(quiet=False), src, 2.0, out_console=Console(file=buf, width=300))
    text = buf.getvalue()
    assert "smoothed 2 maps with FWHM 2 mm" in text and "1 p / q / label map(s) left out" in text


def test_bad_input_is_one_line(tmp_path):
    src, _ = _results(tmp_path)
    tiled, _ = _results(tmp_path, "tiled", "tiled")
    cases = [
        (dict(input_path=src, fwhm_mm=0.0), "> 0"),
        (dict(input_path=src, fwhm_mm=float("nan")), "> 0"),
        (dict(input_path=tmp_path / "nope", fwhm_mm=2.0), "not found"),
        (dict(input_path=src, fwhm_mm=2.0, maps=["c9"]), "no map 'c9'.*tmap:c1"),
        (dict(input_path=tiled, fwhm_mm=2.0, across_areas=True), "stacked"),
    ]
    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(src / "tmap.nii.gz", stray / "tmap.nii.gz")
    cases.append((dict(input_path=stray / "tmap.nii.gz", fwhm_mm=2.0), "results folder"))
    no_sidecar, _ = _results(tmp_path, name="nosidecar")
    (no_sidecar / "tmap.json").unlink()
    cases.append((dict(input_path=no_sidecar / "tmap.nii.gz", fwhm_mm=2.0), "sidecar"))
    with ResultsFolder(tmp_path / "info") as rf:
        rf.write_text("areas.csv", "a\n1\n")
        rf.write_manifest("info")
    cases.append((dict(input_path=tmp_path / "info", fwhm_mm=2.0), "no sheet maps"))
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("a\n")
    cases.append((dict(input_path=bad_csv, fwhm_mm=2.0), "NIfTI"))
    for kwargs, message in cases:
        with pytest.raises(TopoInputError, match=message) as info:
            run_smooth(_ctx(tmp_path / "never"), **kwargs)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "never").exists()
