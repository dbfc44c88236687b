"""Whole-map Moran's I, join counts and random-placement baselines against esda and planted maps."""

from __future__ import annotations

import numpy as np
import pytest

from topocli.sheet import AreaSpec, Sheet
from topocli.stats.topography import (
    PERCOLATION,
    area_morans_i,
    join_counts,
    percolates,
    random_placement_clusters,
)

esda = pytest.importorskip("esda")
libpysal = pytest.importorskip("libpysal")


def _sheet(seed=None) -> Sheet:
    # two full 12 x 16 areas, so each area is a complete lattice libpysal can build
    return Sheet.build(
        [AreaSpec("a", 192), AreaSpec("b", 192)], "stacked", width=16, permutation_seed=seed
    )


def _lattice_order(sheet: Sheet, k: int) -> np.ndarray:
    """The area's units in libpysal lat2W order (row-major over the area's box)."""
    sl = sheet.area_slice(k)
    a = sheet.areas[k]
    flat = (sheet.row[sl] - a.row0) * a.cols + (sheet.col[sl] - a.col0)
    return np.arange(sl.start, sl.stop)[np.argsort(flat)]


def test_area_morans_i_equals_esda(seed=3):
    sheet = _sheet(seed=5)
    rng = np.random.default_rng(seed)
    values = rng.normal(size=sheet.n_units)
    values[:192] += np.repeat(np.linspace(-2, 2, 12), 16)[np.argsort(_lattice_order(sheet, 0))]
    table = area_morans_i(values, sheet, permutations=0)
    for k in range(2):
        a = sheet.areas[k]
        w = libpysal.weights.lat2W(a.rows, a.cols, rook=False)
        ref = esda.Moran(values[_lattice_order(sheet, k)], w, transformation="r", permutations=0)
        assert table["moran_i"][k] == pytest.approx(ref.I, rel=1e-12, abs=1e-12)


def test_join_counts_equal_esda_and_find_a_planted_patch():
    sheet = _sheet()
    mask = np.zeros(sheet.n_units, bool)
    rng = np.random.default_rng(0)
    mask[rng.choice(192, 40, replace=False)] = True  # area a: random placement
    patch = (sheet.row >= 12) & (sheet.row < 17) & (sheet.col >= 4) & (sheet.col < 12)
    mask |= patch  # area b: one compact 5 x 8 patch
    table = join_counts(mask, sheet, permutations=499, seed=1)
    for k in range(2):
        a = sheet.areas[k]
        w = libpysal.weights.lat2W(a.rows, a.cols, rook=False)
        ref = esda.Join_Counts(mask[_lattice_order(sheet, k)].astype(int), w, permutations=0)
        assert table["bb_joins"][k] == pytest.approx(ref.bb)
    random_row, patch_row = table.iloc[0], table.iloc[1]
    assert abs(random_row["bb_z"]) < 3 and random_row["bb_p"] > 0.01
    assert patch_row["bb_z"] > 10 and patch_row["bb_p"] == pytest.approx(1 / 500)


def test_random_placement_is_the_base_rate_beside_a_cluster_count():
    sheet = _sheet()
    patch = (sheet.row < 6) & (sheet.col < 6)  # 36 units, one cluster
    base = random_placement_clusters(patch, sheet, 8, 8, permutations=49, seed=0)
    assert base["n_clusters"] == 1 and base["largest"] == 36
    assert base["largest_random"] < 20  # the same count at random does not form one patch
    dense = np.random.default_rng(1).random(sheet.n_units) < 0.6  # above percolation
    spread = random_placement_clusters(dense, sheet, 8, 8, permutations=19, seed=0)
    assert spread["n_clusters_random"] <= 2.5 and spread["largest_random"] > 150
    assert percolates(0.6) and not percolates(0.3) and PERCOLATION[8] < 0.41 < PERCOLATION[4]


def test_a_smooth_map_beats_its_noise_control_and_two_noise_maps_do_not():
    from scipy.ndimage import gaussian_filter

    from topocli.stats.topography import compare_topography, topography_table

    sheet = _sheet()
    rng = np.random.default_rng(2)
    grid = gaussian_filter(rng.normal(size=sheet.grid_shape), 2.0)
    smooth = grid[sheet.row, sheet.col]
    noise, noise2 = rng.normal(size=(2, sheet.n_units))
    sig = np.zeros(sheet.n_units, bool)

    def table(values):
        return topography_table(values, sig, sheet, permutations=199, seed=0)

    trained = compare_topography(table(smooth), table(noise))
    assert trained["moran_i_trained"] > 0.5 > abs(trained["moran_i_control"])
    assert trained["z"] > 5 and trained["p"] < 1e-6 and trained["n_areas"] == 2
    null = compare_topography(table(noise2), table(noise))
    assert abs(null["z"]) < 3
