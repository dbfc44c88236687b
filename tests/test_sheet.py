import numpy as np
import pytest

from topocli.errors import TopoInputError
from topocli.sheet import AreaSpec, Sheet, tile_shape


def _specs(n_areas=6, n=384, stream="text"):
    return [AreaSpec(f"layer{i}", n, stream) for i in range(n_areas)]


def test_stacked_minilm_is_bands_of_12_by_32():
    sheet = Sheet.build(_specs())
    assert sheet.grid_shape == (72, 32)
    for k, area in enumerate(sheet.areas):
        assert (area.row0, area.rows, area.cols) == (12 * k, 12, 32)
    # unit i of area k is hidden index i; row-major inside its band
    assert sheet.row[384 + 33] == 12 + 1 and sheet.col[384 + 33] == 1


def test_stacked_topo_omni_widths():
    specs = [
        AreaSpec("v", 1280, "vision"),
        AreaSpec("a", 1280, "audio"),
        AreaSpec("lm", 2048, "text"),
    ]
    sheet = Sheet.build(specs, width=512, stages=[["vision", "audio"], ["text"]])
    v, a, lm = sheet.areas
    assert (v.rows, v.cols, v.col0) == (5, 256, 0)
    assert (a.rows, a.cols, a.col0) == (5, 256, 256)
    assert (lm.row0, lm.rows, lm.cols) == (5, 4, 512)
    assert sheet.grid_shape == (9, 512)


def test_non_multiple_width_leaves_partial_row_empty():
    sheet = Sheet.build([AreaSpec("a", 100), AreaSpec("b", 50)], width=16)
    grid = sheet.unit_grid
    assert sheet.areas[0].rows == 7 and (grid[6, 4:] == -1).all() and grid[6, 3] == 99
    assert sheet.areas[1].row0 == 7
    values = np.arange(150, dtype=float)
    mapped = sheet.to_grid(values)
    assert np.isnan(mapped[6, 4:]).all()
    np.testing.assert_array_equal(sheet.from_grid(mapped), values)


@pytest.mark.parametrize(
    "n,shape", [(784, (28, 28)), (384, (16, 24)), (2048, (32, 64)), (97, (10, 10))]
)
def test_tile_shapes(n, shape):
    assert tile_shape(n) == shape


def test_tiled_areas_never_touch():
    sheet = Sheet.build(_specs(3, 784), layout="tiled")
    grid = sheet.area_grid
    # no two different areas are 8-neighbours anywhere
    padded = np.pad(grid, 1, constant_values=-1)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            shifted = padded[1 + dr : 1 + dr + grid.shape[0], 1 + dc : 1 + dc + grid.shape[1]]
            clash = (grid >= 0) & (shifted >= 0) & (grid != shifted)
            assert not clash.any()


def test_permutation_is_seeded_and_within_area():
    a = Sheet.build(_specs(2, 64), permutation_seed=3)
    b = Sheet.build(_specs(2, 64), permutation_seed=3)
    c = Sheet.build(_specs(2, 64), permutation_seed=4)
    plain = Sheet.build(_specs(2, 64))
    assert a == b and a != c
    assert not np.array_equal(a.row, plain.row)
    for k in range(2):
        sel = a.area == k
        cells = set(zip(a.row[sel], a.col[sel]))
        assert cells == set(zip(plain.row[sel], plain.col[sel]))


def test_round_trip_exact(tmp_path):
    sheet = Sheet.build(_specs(3, 100), layout="tiled", mm_per_unit=0.5, permutation_seed=1)
    sheet.save(tmp_path / "sheet.safetensors")
    loaded = Sheet.load(tmp_path / "sheet.safetensors")
    assert loaded == sheet
    np.testing.assert_array_equal(loaded.positions_mm, sheet.positions_mm)
    assert loaded.positions_mm[:, 0].max() == pytest.approx(sheet.col.max() * 0.5)


def test_validate_names_the_mismatch(tmp_path):
    sheet = Sheet.build(_specs(2, 64))
    with pytest.raises(TopoInputError, match="64 units but the model records 'layer1' with 32"):
        sheet.validate([AreaSpec("layer0", 64), AreaSpec("layer1", 32)], tmp_path / "s")
    with pytest.raises(TopoInputError, match="2 areas but the model records 3"):
        sheet.validate(_specs(3, 64))


def test_bad_layout_options():
    with pytest.raises(TopoInputError):
        Sheet.build(_specs(), layout="spiral")
    with pytest.raises(TopoInputError):
        Sheet.build(_specs(), mm_per_unit=0)
    with pytest.raises(TopoInputError, match="does not divide"):
        Sheet.build(
            [AreaSpec("v", 10, "vision"), AreaSpec("a", 10, "audio")],
            width=5,
            stages=[["vision", "audio"]],
        )


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "sheet.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(TopoInputError, match="not a topo sheet"):
        Sheet.load(bad)
