"""Results folders: atomic writes, overwrite rules, NIfTI maps, manifests, deterministic CSV."""

from __future__ import annotations

import hashlib
import io
import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.affines import apply_affine

from topocli.errors import TopoInputError
from topocli.reporting import results
from topocli.reporting.reader import load_sheet_map, load_sheet_maps, read_manifest
from topocli.reporting.results import (
    ResultsFolder,
    atomic_write_bytes,
    atomic_write_text,
    sha256_tree,
    to_jsonable,
)
from topocli.sheet import AreaSpec, Sheet


def _sheet(mm: float = 0.5, seed: int | None = None) -> Sheet:
    # 100 units in a 16-wide stream leave a partial last row: cells with no unit.
    specs = [AreaSpec("a", 100, "s1"), AreaSpec("b", 64, "s1"), AreaSpec("c", 48, "s2")]
    return Sheet.build(
        specs, "stacked", mm_per_unit=mm, stages=[["s1", "s2"]], permutation_seed=seed
    )


def _leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _write_min(rf: ResultsFolder, tag: str = "x") -> None:
    rf.write_text(f"{tag}.txt", tag)
    rf.write_manifest("test", {"tag": tag}, {}, seed=0)


# ---------------------------------------------------------------------- atomicity
def test_success_is_atomic(tmp_path):
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_csv("t.csv", pd.DataFrame({"a": [1, 2]}))
        assert not out.exists()  # nothing visible until the block ends
        assert rf.path("t.csv").parent.parent == tmp_path  # temp dir is beside out
        _write_min(rf)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "t.csv", "x.txt"]
    assert _leftovers(tmp_path) == []
    assert rf.committed


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "deep" / "er" / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with ResultsFolder(out) as rf:
            _write_min(rf)
            rf.write_csv("t.csv", pd.DataFrame({"a": [1.5]}))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no out, no temp dir, no created parents


def test_failure_keeps_existing_empty_out_and_old_results(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyError):
        with ResultsFolder(empty):
            raise KeyError("x")
    assert empty.is_dir() and list(empty.iterdir()) == []

    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        _write_min(rf, "old")
    with pytest.raises(ValueError):
        with ResultsFolder(out, overwrite=True) as rf:
            _write_min(rf, "new")
            raise ValueError("fail")
    assert (out / "old.txt").read_text() == "old" and not (out / "new.txt").exists()
    assert _leftovers(tmp_path) == []


def test_missing_manifest_is_a_programming_error(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="write_manifest"):
        with ResultsFolder(out) as rf:
            rf.write_text("a.txt", "a")
    assert list(tmp_path.iterdir()) == []


def test_empty_existing_out_is_used(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with ResultsFolder(out) as rf:
        _write_min(rf)
    assert (out / "x.txt").read_text() == "x"
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------- overwrite rules
def test_non_empty_out_refused_with_message(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TopoInputError) as err:
        with ResultsFolder(out):
            pass
    assert str(err.value) == f"{out}: exists and is not empty; pass --overwrite"
    assert err.value.path == str(out)
    assert (out / "keep.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_folder_that_is_not_results(tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(TopoInputError, match="not a topo results folder"):
        with ResultsFolder(out, overwrite=True):
            pass
    assert (out / "thesis.tex").read_text() == "precious"


def test_out_that_is_a_file_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TopoInputError, match="not a folder"):
        with ResultsFolder(f, overwrite=True):
            pass


@pytest.mark.parametrize("exchange", [True, False])
def test_overwrite_replaces_old_results(tmp_path, monkeypatch, exchange):
    if not exchange:  # the portable path: rename aside, rename in, delete old
        monkeypatch.setattr(results, "_exchange", lambda a, b: False)
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        _write_min(rf, "old")
    with ResultsFolder(out, overwrite=True) as rf:
        assert (out / "old.txt").exists()  # old results stay until the new ones are complete
        _write_min(rf, "new")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new.txt"]
    assert read_manifest(out)["parameters"] == {"tag": "new"}
    assert _leftovers(tmp_path) == []


def test_unwritable_parent_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(results.os, "access", lambda *a, **k: False)
    with pytest.raises(TopoInputError, match="not writable"):
        with ResultsFolder(tmp_path / "new" / "run"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_parent_refused_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        with pytest.raises(TopoInputError):
            with ResultsFolder(ro / "run"):
                pass
    finally:
        ro.chmod(0o755)


def test_names_must_stay_inside(tmp_path):
    with ResultsFolder(tmp_path / "run") as rf:
        for bad in ("../x.csv", "/etc/x", "a/../../x"):
            with pytest.raises(ValueError):
                rf.path(bad)
        assert rf.path("sub/dir/x.csv").parent.is_dir()
        _write_min(rf)


# ---------------------------------------------------------------------- NIfTI
def test_nifti_round_trip_through_nibabel(tmp_path):
    sheet = _sheet(mm=0.5)
    values = np.random.default_rng(0).standard_normal(sheet.n_units)
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("maps/tmap.nii.gz", values, sheet)
        _write_min(rf)
    img = nib.load(out / "maps" / "tmap.nii.gz")
    data = np.asarray(img.dataobj)
    rows, cols = sheet.grid_shape
    assert data.shape == (cols, rows, 1) and data.dtype == np.float32
    # the value at (row, col) is the unit's value: x = column, y = row
    np.testing.assert_array_equal(data[sheet.col, sheet.row, 0], values.astype(np.float32))
    empty = np.ones((cols, rows), bool)
    empty[sheet.col, sheet.row] = False
    assert empty.any() and np.isnan(data[..., 0][empty]).all()
    assert not np.isnan(data[sheet.col, sheet.row, 0]).any()
    np.testing.assert_array_equal(img.affine, np.diag([0.5, -0.5, 0.5, 1.0]))
    assert img.header.get_xyzt_units()[0] == "mm"
    # voxel (col, row, 0) lands at (x_mm, -y_mm): y flipped so row 0 is on top in viewers
    ijk = np.stack([sheet.col, sheet.row, np.zeros(sheet.n_units)], 1)
    world = apply_affine(img.affine, ijk)[:, :2]
    np.testing.assert_allclose(world, sheet.positions_mm * [1.0, -1.0])
    sidecar = json.loads((out / "maps" / "tmap.json").read_text())
    assert sidecar["maps"] == ["tmap"] and sidecar["sheet_file"] == "../sheet.safetensors"
    back, sheet2 = load_sheet_map(out / "maps" / "tmap.nii.gz")
    assert sheet2 == sheet
    np.testing.assert_array_equal(back, values.astype(np.float32).astype(np.float64))


def test_nifti_4d_and_permuted_sheet(tmp_path):
    sheet = _sheet(mm=2.0, seed=7)
    rng = np.random.default_rng(1)
    maps = rng.standard_normal((3, sheet.n_units))
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("all.nii", maps, sheet, names=["faces", "bodies", "words"])
        rf.write_sheet_nifti("one.nii.gz", maps[1], sheet)
        _write_min(rf)
    img = nib.load(out / "all.nii")
    rows, cols = sheet.grid_shape
    assert img.shape == (cols, rows, 1, 3)
    data = np.asarray(img.dataobj)
    for m in range(3):
        np.testing.assert_array_equal(data[sheet.col, sheet.row, 0, m], maps[m].astype(np.float32))
    values, names, sheet2 = load_sheet_maps(out / "all.nii")
    assert names == ["faces", "bodies", "words"] and sheet2 == sheet
    np.testing.assert_array_equal(values, maps.astype(np.float32))
    bodies, _ = load_sheet_map(out / "all.nii", "bodies")
    np.testing.assert_array_equal(bodies, maps[1].astype(np.float32))
    with pytest.raises(TopoInputError, match="pick one"):
        load_sheet_map(out / "all.nii")
    with pytest.raises(TopoInputError, match="no map"):
        load_sheet_map(out / "all.nii", "houses")
    manifest = read_manifest(out)
    assert [r["path"] for r in manifest["outputs"]].count("sheet.safetensors") == 1


def test_nifti_rejects_other_sheets_and_bad_shapes(tmp_path):
    sheet = _sheet()
    other = Sheet.build([AreaSpec("z", sheet.n_units)], "tiled")
    with ResultsFolder(tmp_path / "run") as rf:
        rf.write_sheet_nifti("a.nii", np.zeros(sheet.n_units), sheet)
        with pytest.raises(ValueError, match="same sheet"):
            rf.write_sheet_nifti("b.nii", np.zeros(other.n_units), other)
        with pytest.raises(ValueError, match="expected"):
            rf.write_sheet_nifti("c.nii", np.zeros(sheet.n_units + 1), sheet)
        with pytest.raises(ValueError, match=".nii"):
            rf.write_sheet_nifti("d.img", np.zeros(sheet.n_units), sheet)
        _write_min(rf)


def test_load_sheet_map_needs_a_results_folder(tmp_path):
    sheet = _sheet()
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("t.nii", np.ones(sheet.n_units), sheet)
        _write_min(rf)
    (out / "manifest.json").unlink()
    with pytest.raises(TopoInputError, match="manifest.json"):
        load_sheet_map(out / "t.nii")
    with pytest.raises(TopoInputError, match="not found"):
        load_sheet_map(out / "nope.nii")


# ---------------------------------------------------------------------- manifest
def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_hashes_equal_hashlib(tmp_path):
    stim = tmp_path / "stimuli"
    (stim / "faces").mkdir(parents=True)
    (stim / "faces" / "a.txt").write_text("a face\n")
    (stim / "words.txt").write_text("word\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_csv("t.csv", pd.DataFrame({"x": [0.1, 0.2]}))
        rf.write_json("s.json", {"q": np.float64(0.5), "n": np.int64(3), "bad": float("nan")})
        rf.write_manifest(
            "localize",
            {"alpha": 0.05, "path": tmp_path, "fwhm": (2, 4)},
            {"config": cfg, "stimuli": stim, "model": "org/model-id", "extra": [cfg], "no": None},
            seed=123,
            extra={"note": "hi"},
        )
    m = read_manifest(out, verify=True)
    assert m["command"] == "localize" and m["seed"] == 123 and m["extra"] == {"note": "hi"}
    assert m["parameters"] == {"alpha": 0.05, "path": str(tmp_path), "fwhm": [2, 4]}
    assert m["inputs"]["config"]["sha256"] == _sha(cfg)
    assert m["inputs"]["extra"][0]["sha256"] == _sha(cfg)
    assert m["inputs"]["model"] == {"path": "org/model-id", "kind": "reference", "sha256": None}
    assert m["inputs"]["no"] is None
    tree = m["inputs"]["stimuli"]
    assert tree["kind"] == "folder" and tree["n_files"] == 2
    # independent oracle for the folder hash
    h = hashlib.sha256()
    for rel in ["faces/a.txt", "words.txt"]:
        data = (stim / rel).read_bytes()
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    assert tree["sha256"] == h.hexdigest()
    outputs = {r["path"]: r for r in m["outputs"]}
    assert set(outputs) == {"t.csv", "s.json"}
    for name, row in outputs.items():
        assert row["sha256"] == _sha(out / name) and row["bytes"] == (out / name).stat().st_size
    assert json.loads((out / "s.json").read_text()) == {"q": 0.5, "n": 3, "bad": None}
    for pkg in ("topo", "torch", "transformers", "numpy", "scipy", "nibabel", "nilearn"):
        assert pkg in m["versions"]
    assert m["versions"]["numpy"] == np.__version__ and m["versions"]["python"]
    assert m["created"].endswith("Z")
    # tampering is detected
    (out / "t.csv").write_text("x\n9\n")
    with pytest.raises(TopoInputError, match="changed"):
        read_manifest(out, verify=True)
    (out / "t.csv").unlink()
    with pytest.raises(TopoInputError, match="missing"):
        read_manifest(out)


def test_tree_hash_sees_renames_and_edits(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"1")
    (d / "b").write_bytes(b"2")
    h0 = sha256_tree(d)[0]
    (d / "b").write_bytes(b"3")
    h1 = sha256_tree(d)[0]
    (d / "b").rename(d / "c")
    h2 = sha256_tree(d)[0]
    assert len({h0, h1, h2}) == 3
    (d / "c").rename(d / "b")
    assert sha256_tree(d)[0] == h1


def test_read_manifest_errors(tmp_path):
    with pytest.raises(TopoInputError, match="not found"):
        read_manifest(tmp_path / "none")
    with pytest.raises(TopoInputError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(TopoInputError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"tool": "other"}')
    with pytest.raises(TopoInputError, match="not written by topo"):
        read_manifest(tmp_path)


def test_source_date_epoch_fixes_the_time(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    with ResultsFolder(tmp_path / "run") as rf:
        _write_min(rf)
    assert read_manifest(tmp_path / "run")["created"] == "1970-01-01T00:00:00Z"


# ---------------------------------------------------------------------- CSV / JSON / small files
def test_csv_bytes_are_deterministic_and_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(500) * 10.0 ** rng.integers(-200, 200, 500)
    df = pd.DataFrame({"name": [f"u{i}" for i in range(500)], "x": x, "n": np.arange(500)})
    df.loc[3, "x"] = np.nan
    paths = []
    for k in range(2):
        with ResultsFolder(tmp_path / f"run{k}") as rf:
            paths.append(rf.write_csv("t.csv", df.copy()))
            _write_min(rf)
    a, b = (tmp_path / "run0" / "t.csv").read_bytes(), (tmp_path / "run1" / "t.csv").read_bytes()
    assert a == b and b"\r" not in a
    back = pd.read_csv(io.BytesIO(a))
    np.testing.assert_array_equal(back["x"].to_numpy(), df["x"].to_numpy())  # exact, NaN too
    assert list(back["name"]) == list(df["name"]) and back["n"].tolist() == list(range(500))


def test_to_jsonable():
    from enum import Enum

    class Mode(Enum):
        A = "a"

    obj = {"e": Mode.A, "s": {3, 1}, "a": np.arange(3), "b": np.bool_(True), "i": float("inf")}
    assert to_jsonable(obj) == {"e": "a", "s": [1, 3], "a": [0, 1, 2], "b": True, "i": None}
    with pytest.raises(TypeError):
        to_jsonable({"x": object()})


def test_atomic_write(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f.txt"]

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "three")
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["f.txt"]


# ---------------------------------------------------------------------- NIfTI shape and intent
def test_one_map_is_3d_even_when_given_as_a_stack(tmp_path):
    """A (1, n_units) stack (localize with one contrast) is a 3-D image; several stay 4-D."""
    sheet = _sheet()
    rows, cols = sheet.grid_shape
    values = np.random.default_rng(3).standard_normal((2, sheet.n_units))
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("one.nii.gz", values[:1], sheet, ["a>b"])
        rf.write_sheet_nifti("two.nii.gz", values, sheet, ["a>b", "b>a"])
        _write_min(rf)
    assert nib.load(out / "one.nii.gz").shape == (cols, rows, 1)
    assert nib.load(out / "two.nii.gz").shape == (cols, rows, 1, 2)
    back, names, _ = load_sheet_maps(out / "one.nii.gz")
    assert names == ["a>b"] and back.shape == (1, sheet.n_units)
    np.testing.assert_array_equal(back[0], values[0].astype(np.float32))


def test_intent_codes_and_df(tmp_path):
    sheet = _sheet()
    rng = np.random.default_rng(4)
    t = rng.standard_normal((2, sheet.n_units))
    welch_df = rng.uniform(5, 30, (2, sheet.n_units))
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("t_uniform.nii.gz", t, sheet, ["a", "b"], stat="t", df=18.0)
        rf.write_sheet_nifti("t_welch.nii.gz", t, sheet, ["a", "b"], stat="t", df=welch_df)
        rf.write_sheet_nifti("p.nii.gz", np.abs(t[0]) / 10, sheet, stat="p")
        rf.write_sheet_nifti("q.nii.gz", np.abs(t) / 10, sheet, ["a", "b"], stat="q")
        rf.write_sheet_nifti("z.nii.gz", t[0], sheet, stat="z")
        rf.write_sheet_nifti("lab.nii.gz", (t[0] > 1).astype(float), sheet, stat="label")
        rf.write_sheet_nifti("mixed.nii.gz", t, sheet, ["F", "q"], stat=["F", "q"])
        with pytest.raises(ValueError, match="unknown map statistic"):
            rf.write_sheet_nifti("bad.nii.gz", t[0], sheet, stat="chi2")
        with pytest.raises(ValueError, match="only recorded for t"):
            rf.write_sheet_nifti("bad.nii.gz", t[0], sheet, stat="z", df=3.0)
        _write_min(rf)

    def intent(name):
        return nib.load(out / name).header.get_intent()

    assert intent("t_uniform.nii.gz")[:2] == ("t test", (18.0,))
    assert json.loads((out / "t_uniform.json").read_text())["df"] == 18.0
    code, params, label = intent("t_welch.nii.gz")
    assert code == "t test" and "sidecar" in label
    side = json.loads((out / "t_welch.json").read_text())
    assert side["stat"] == ["t", "t"] and set(side["df"]) == {"a", "b"}
    np.testing.assert_allclose(side["df"]["b"], welch_df[1], rtol=1e-3)  # 4 significant digits
    assert intent("p.nii.gz")[0] == "p value" and intent("q.nii.gz")[0] == "p value"
    assert intent("q.nii.gz")[2].startswith("q")
    assert intent("z.nii.gz")[0] == "z score" and intent("lab.nii.gz")[0] == "label"
    assert intent("mixed.nii.gz")[0] == "none"
    assert json.loads((out / "mixed.json").read_text())["stat"] == ["F", "q"]


@pytest.mark.slow  # importing nilearn's plotting takes ~10 s on a shared CPU
def test_sheet_shows_the_same_way_up_in_nilearn_as_in_topo_figures(tmp_path):
    """A blob planted at the top-left of the sheet (row 0, col 0) is at the top-left of topo's
    own figure and of nilearn's axial view of the NIfTI file (x to the right, +y up)."""
    pytest.importorskip("nilearn", reason="pip install nilearn")
    from matplotlib.figure import Figure
    from nilearn import plotting

    from topocli.reporting.plotting import draw_sheet_map, figure_to_bytes, new_figure

    sheet = Sheet.build([AreaSpec("a", 24 * 24, "s")], "stacked", mm_per_unit=1.0)
    values = np.where((sheet.row < 6) & (sheet.col < 6), 10.0, 0.0)
    out = tmp_path / "run"
    with ResultsFolder(out) as rf:
        rf.write_sheet_nifti("blob.nii.gz", values, sheet, stat="z")
        _write_min(rf)

    def red_centre(png: bytes) -> tuple[float, float]:
        from PIL import Image

        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        red = (rgb[..., 0] > rgb[..., 1] + 60) & (rgb[..., 0] > rgb[..., 2] + 60)
        ys, xs = np.nonzero(red)
        assert ys.size > 20
        return xs.mean() / rgb.shape[1], ys.mean() / rgb.shape[0]

    topo_fig = new_figure((4, 4))
    ax = topo_fig.add_subplot()
    draw_sheet_map(ax, values, sheet, cmap="Reds", symmetric=False, area_boundaries=False)
    ours = figure_to_bytes(topo_fig)
    fig = Figure(figsize=(4, 4))
    plotting.plot_img(
        str(out / "blob.nii.gz"),
        display_mode="z",
        cut_coords=[0.0],
        cmap="Reds",
        vmin=0,
        vmax=10,
        figure=fig,
        annotate=False,
        draw_cross=False,
        colorbar=False,
        black_bg=False,
    )
    theirs = figure_to_bytes(fig)
    for png in (ours, theirs):
        x, y = red_centre(png)
        assert x < 0.5 and y < 0.5, (x, y)


def test_old_screen_map_names_are_still_found(tmp_path):
    """Folders written before the names were unified (screen's tmaps.nii.gz) still read."""
    from topocli.reporting.reader import sheet_map_file

    sheet = _sheet()
    values = np.random.default_rng(6).standard_normal((2, sheet.n_units))
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, name in ((old, "tmaps.nii.gz"), (new, "tmap.nii.gz")):
        with ResultsFolder(folder) as rf:
            rf.write_sheet_nifti(name, values, sheet, ["a", "b"])
            _write_min(rf)
    assert sheet_map_file(old) == old / "tmaps.nii.gz"
    assert sheet_map_file(new) == new / "tmap.nii.gz"
    assert sheet_map_file(new, "qmap.nii.gz") is None
    back, names, _ = load_sheet_maps(sheet_map_file(old))
    assert names == ["a", "b"]
    np.testing.assert_array_equal(back, values.astype(np.float32))
