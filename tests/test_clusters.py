"""Connected components, cluster tables and island Moran's I against scipy / esda / formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from topocli.errors import TopoInputError
from topocli.sheet import AreaSpec, Sheet
from topocli.stats.clusters import (
    CLUSTER_COLUMNS,
    find_clusters,
    island_morans_i,
    label_components,
    morans_i,
    queen_weights,
)
from topocli.stats.froi import dice

esda = pytest.importorskip("esda")
libpysal = pytest.importorskip("libpysal")


# ---------------------------------------------------------------------- components
def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    flat = labels.ravel()
    return {frozenset(np.flatnonzero(flat == k).tolist()) for k in np.unique(flat[flat > 0])}


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_equal_scipy_label(connectivity, seed):
    mask = np.random.default_rng(seed).random((40, 57)) < 0.45
    got = label_components(mask, connectivity)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    ref, n = ndimage.label(mask, structure=structure)
    assert got.max() == n
    assert _partition(got) == _partition(ref)
    sizes = np.bincount(got.ravel())[1:]
    assert np.all(np.diff(sizes) <= 0)  # 1 is the largest, sizes never increase


def test_four_and_eight_connectivity_differ_on_a_diagonal():
    mask = np.eye(5, dtype=bool)
    assert label_components(mask, 4).max() == 5
    assert label_components(mask, 8).max() == 1


def test_min_size_drops_small_components_and_renumbers():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0, 0] = True  # size 1
    mask[5:7, 5:7] = True  # size 4
    mask[0, 5:8] = True  # size 3
    got = label_components(mask, 4, min_size=3)
    assert set(np.unique(got)) == {0, 1, 2}
    assert (got == 1).sum() == 4 and (got == 2).sum() == 3 and got[0, 0] == 0
    with pytest.raises(TopoInputError):
        label_components(mask, 6)


# ---------------------------------------------------------------------- find_clusters
def _disk(sheet: Sheet, centre_rc: tuple[float, float], radius: float) -> np.ndarray:
    return (sheet.row - centre_rc[0]) ** 2 + (sheet.col - centre_rc[1]) ** 2 <= radius**2


def test_planted_blob_is_recovered():
    sheet = Sheet.build(
        [AreaSpec("v1", 1024), AreaSpec("v2", 1024)], "stacked", mm_per_unit=0.5, width=32
    )
    rng = np.random.default_rng(0)
    blob = _disk(sheet, (14, 16), 6.0)
    t = rng.normal(size=sheet.n_units) + 6.0 * blob
    q = stats.false_discovery_control(stats.norm.sf(t))
    labels, table = find_clusters(t, q < 0.05, sheet, connectivity=8, min_size=8)
    assert list(table.columns) == CLUSTER_COLUMNS
    assert dice(labels == 1, blob) >= 0.9
    top = table.iloc[0]
    assert top["cluster"] == 1 and top["areas"] == "v1" and top["sign"] == 1
    members = labels == 1
    assert top["n_units"] == members.sum()
    assert top["peak_t"] == pytest.approx(t[members].max())
    assert top["peak_unit"] == np.flatnonzero(members)[np.argmax(t[members])]
    assert top["mean_t"] == pytest.approx(t[members].mean())
    assert top["centroid_x_mm"] == pytest.approx(16 * 0.5, abs=0.3)
    assert top["centroid_y_mm"] == pytest.approx(14 * 0.5, abs=0.3)


def test_one_sided_ignores_negative_two_sided_keeps_them_apart():
    sheet = Sheet.build([AreaSpec("a", 400)], "stacked", width=20)
    t = np.zeros(sheet.n_units)
    pos = (sheet.row >= 2) & (sheet.row < 6) & (sheet.col >= 2) & (sheet.col < 8)
    neg = (sheet.row >= 6) & (sheet.row < 9) & (sheet.col >= 2) & (sheet.col < 8)  # touches pos
    t[pos], t[neg] = 5.0, -4.0
    t[np.flatnonzero(pos)[0]] = 7.0
    sig = pos | neg
    labels, table = find_clusters(t, sig, sheet, one_sided=True)
    assert len(table) == 1 and np.array_equal(labels > 0, pos)
    labels, table = find_clusters(t, sig, sheet, one_sided=False)
    assert len(table) == 2
    assert table["sign"].tolist() == [1, -1]
    assert np.array_equal(labels == 1, pos) and np.array_equal(labels == 2, neg)
    assert table["peak_t"].tolist() == [7.0, -4.0]
    assert table["n_units"].tolist() == [24, 18]


def test_tiled_tiles_never_merge_stacked_bands_do():
    specs = [AreaSpec("a", 100), AreaSpec("b", 100)]
    tiled = Sheet.build(specs, "tiled")
    everything = np.ones(tiled.n_units, dtype=bool)
    labels, table = find_clusters(np.ones(tiled.n_units), everything, tiled, connectivity=8)
    assert len(table) == 2 and set(table["areas"]) == {"a", "b"}
    stacked = Sheet.build(specs, "stacked", width=10)
    labels, table = find_clusters(np.ones(stacked.n_units), everything, stacked)
    assert len(table) == 1 and table.loc[0, "areas"] == "a;b"


def test_nan_t_never_in_a_cluster():
    sheet = Sheet.build([AreaSpec("a", 64)], "stacked", width=8)
    t = np.full(sheet.n_units, 5.0)
    t[10] = np.nan
    labels, table = find_clusters(t, np.ones(sheet.n_units, dtype=bool), sheet)
    assert labels[10] == 0 and table.loc[0, "n_units"] == 63


def test_empty_result_has_the_columns():
    sheet = Sheet.build([AreaSpec("a", 64)], "stacked", width=8)
    labels, table = find_clusters(np.zeros(64), np.zeros(64, dtype=bool), sheet)
    assert not labels.any() and table.empty and list(table.columns) == CLUSTER_COLUMNS


# ---------------------------------------------------------------------- Moran's I
def _island_w(rows: np.ndarray, cols: np.ndarray):
    """libpysal W of queen neighbours restricted to the island's cells."""
    cells = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    neighbours = {}
    for (r, c), i in cells.items():
        nb = [
            cells[(r + dr, c + dc)]
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if (dr, dc) != (0, 0) and (r + dr, c + dc) in cells
        ]
        neighbours[i] = nb
    return libpysal.weights.W(neighbours, silence_warnings=True)


def _direct_moran(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """Textbook formula with explicit loops, row-standardised queen weights."""
    n = values.size
    w = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and max(abs(rows[i] - rows[j]), abs(cols[i] - cols[j])) == 1:
                w[i, j] = 1.0
    w /= w.sum(axis=1, keepdims=True)
    z = values - values.mean()
    num = sum(w[i, j] * z[i] * z[j] for i in range(n) for j in range(n))
    return n / w.sum() * num / (z**2).sum()


def test_moran_equals_formula_on_tiny_lattice():
    values = np.array([[1.0, 2.0, 4.0], [2.0, 3.0, 5.0], [0.0, 7.0, 6.0]])
    rows, cols = np.nonzero(np.ones((3, 3)))
    want = _direct_moran(values.ravel(), rows, cols)
    got, _ = morans_i(values)
    assert got == pytest.approx(want, rel=1e-12)
    lat = esda.Moran(values.ravel(), libpysal.weights.lat2W(3, 3, rook=False), permutations=0)
    assert got == pytest.approx(lat.I, rel=1e-12)


def test_queen_weights_row_standardised_like_libpysal():
    rows, cols = np.nonzero(np.ones((4, 5)))
    w = libpysal.weights.lat2W(4, 5, rook=False)
    w.transform = "r"
    np.testing.assert_allclose(queen_weights(rows, cols).toarray(), w.full()[0], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_island_moran_equals_esda_on_irregular_islands(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.normal(size=(30, 30)), 2) > 0.05
    labels = label_components(mask, 8, min_size=8)
    values = ndimage.gaussian_filter(rng.normal(size=(30, 30)), 1.0) + 0.3 * rng.normal(
        size=(30, 30)
    )
    res = island_morans_i(values, labels, permutations=0, min_size=8)
    assert len(res.table) == labels.max() > 0
    for row in res.table.itertuples():
        r, c = np.nonzero(labels == row.cluster)
        ref = esda.Moran(values[r, c], _island_w(r, c), transformation="r", permutations=0)
        assert row.moran_i == pytest.approx(ref.I, rel=1e-10, abs=1e-12)
        assert row.n_units == r.size
    assert res.mean_i == pytest.approx(res.table["moran_i"].mean())
    assert np.isnan(res.table["moran_p"]).all()


def test_permutation_p_matches_explicit_loop():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(6, 7))
    labels = np.ones((6, 7), dtype=int)
    res = island_morans_i(values, labels, permutations=99, seed=11)
    r, c = np.nonzero(labels)
    v = values[r, c]
    i_obs = _direct_moran(v, r, c)
    perms = np.random.default_rng([11, 1]).permuted(np.tile(np.arange(v.size), (99, 1)), axis=1)
    n_ge = sum(_direct_moran(v[p], r, c) >= i_obs - 1e-12 for p in perms)
    assert res.table.loc[0, "moran_p"] == pytest.approx((1 + n_ge) / 100)
    again = island_morans_i(values, labels, permutations=99, seed=11)
    assert again.table.equals(res.table)


def test_smooth_gradient_island_has_small_p():
    yy, xx = np.mgrid[0:10, 0:12]
    values = (xx + 0.5 * yy).astype(float)
    labels = np.zeros((12, 14), dtype=int)
    labels[1:11, 1:13] = 1
    padded = np.zeros((12, 14))
    padded[1:11, 1:13] = values
    res = island_morans_i(padded, labels, permutations=999)
    assert res.table.loc[0, "moran_i"] > 0.8
    assert res.table.loc[0, "moran_p"] == pytest.approx(1 / 1000)


def test_null_p_is_roughly_uniform():
    labels = np.ones((8, 8), dtype=int)
    ps = [
        island_morans_i(
            np.random.default_rng(s).normal(size=(8, 8)), labels, 199, seed=s
        ).table.loc[0, "moran_p"]
        for s in range(200)
    ]
    ps = np.asarray(ps)
    assert abs(ps.mean() - 0.5) < 0.07
    assert 0.02 < (ps <= 0.05).mean() < 0.1


def test_min_size_constant_islands_and_mean():
    labels = np.zeros((10, 10), dtype=int)
    labels[0:3, 0:3] = 1  # 9 cells
    labels[5:7, 5:7] = 2  # 4 cells: skipped
    labels[5:8, 0:3] = 3  # 9 cells, constant values
    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 10))
    values[5:8, 0:3] = 2.0
    res = island_morans_i(values, labels, permutations=9, min_size=8)
    assert res.table["cluster"].tolist() == [1, 3]
    assert np.isnan(res.table.loc[1, "moran_i"])
    assert res.mean_i == pytest.approx(res.table.loc[0, "moran_i"])
    assert np.isnan(res.sem_i)


def test_topographic_map_beats_shuffled_map():
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.normal(size=(24, 24)), 2.0)
    labels = np.ones((24, 24), dtype=int)
    shuffled = rng.permutation(smooth.ravel()).reshape(24, 24)
    i_smooth = island_morans_i(smooth, labels, 0).mean_i
    i_shuffled = island_morans_i(shuffled, labels, 0).mean_i
    assert i_smooth > 0.7 and abs(i_shuffled) < 0.15
