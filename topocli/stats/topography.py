"""Measures of topography that can tell a topographic sheet from its control.

Island Moran's I (:func:`topocli.stats.clusters.island_morans_i`) is circular: it measures the
autocorrelation of t inside islands cut from the same t map, and a control's islands read close
to their null expectation ``-1 / (n - 1)``. The measures here are not:

- :func:`area_morans_i`: Moran's I of the whole (unthresholded) map within each area, queen
  weights, row-standardised, with a permutation p over the area's cells;
- :func:`join_counts`: the number of queen neighbour pairs of significant units (black-black
  joins) within each area against random placement of the same number of significant units in
  the area (permutation z and p);
- :func:`random_placement_clusters`: how many clusters (and how large the largest) the same
  number of significant units per area would form if they were placed at random: the base rate
  beside every cluster count;
- :data:`PERCOLATION` and :func:`percolates`: above the site-percolation density of the grid a
  random placement already forms one spanning cluster, so a cluster count or a Dice says little.

All of them take the unsmoothed map: smoothing makes any map autocorrelated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.stats.clusters import _moran, find_clusters, queen_weights

# site-percolation thresholds of the square lattice (Newman & Ziff 2000; Malarz & Galam 2005)
PERCOLATION = {4: 0.592746, 8: 0.407254}
AREA_MORAN_COLUMNS = ["area", "n_units", "moran_i", "moran_p", "null_sd"]
JOIN_COUNT_COLUMNS = [
    "area",
    "n_units",
    "n_significant",
    "bb_joins",
    "bb_expected",
    "bb_sd",
    "bb_z",
    "bb_p",
]


def _check(permutations: int, seed: int) -> None:
    if int(permutations) != permutations or permutations < 0:
        raise TopoInputError(f"permutations must be an integer >= 0, got {permutations}")
    if seed < 0:
        raise TopoInputError(f"seed must be >= 0, got {seed}")


def area_morans_i(
    values: np.ndarray, sheet: Sheet, permutations: int = 999, seed: int = 0
) -> pd.DataFrame:
    """Whole-map Moran's I of ``values`` [U] within each area (queen, row-standardised).

    Units with a non-finite value are left out. Area ``k`` draws its permutations from
    ``numpy.random.default_rng([seed, k])``; p is one-sided (like values cluster).

    Returns
    -------
    DataFrame
        One row per area: :data:`AREA_MORAN_COLUMNS` (``null_sd``: the SD of I over the
        permutations).
    """
    _check(permutations, seed)
    values = np.asarray(values, dtype=np.float64)
    rows = []
    for k, area in enumerate(sheet.areas):
        sl = sheet.area_slice(k)
        v = values[sl]
        ok = np.isfinite(v)
        if ok.sum() < 2:
            rows.append((area.name, int(ok.sum()), float("nan"), float("nan"), float("nan")))
            continue
        wmat = queen_weights(sheet.row[sl][ok], sheet.col[sl][ok], "r")
        sd: list = []
        i, p = _moran(v[ok], wmat, permutations, np.random.default_rng([int(seed), k]), sd)
        rows.append((area.name, int(ok.sum()), i, p, sd[0]))
    return pd.DataFrame(rows, columns=AREA_MORAN_COLUMNS)


def join_counts(
    mask: np.ndarray, sheet: Sheet, permutations: int = 999, seed: int = 0
) -> pd.DataFrame:
    """Black-black joins of a significance mask within each area against random placement.

    ``bb_joins`` is the number of queen neighbour pairs of two significant units in the area;
    the null permutes the mask among the area's units (the same number of significant units,
    placed at random). ``bb_z = (bb - mean) / sd`` over the permutations and
    ``bb_p = (1 + #{bb_perm >= bb}) / (permutations + 1)``.

    Returns
    -------
    DataFrame
        One row per area: :data:`JOIN_COUNT_COLUMNS`.
    """
    _check(permutations, seed)
    mask = np.asarray(mask, dtype=bool)
    out = []
    for k, area in enumerate(sheet.areas):
        sl = sheet.area_slice(k)
        m = mask[sl].astype(np.float64)
        n_sig = int(m.sum())
        wmat = queen_weights(sheet.row[sl], sheet.col[sl], "b")
        bb = 0.5 * float(m @ (wmat @ m))
        if permutations == 0 or n_sig == 0 or n_sig == m.size:
            out.append((area.name, m.size, n_sig, bb, bb, 0.0, float("nan"), float("nan")))
            continue
        perm = _permuted(m, permutations, np.random.default_rng([int(seed), k]))
        null = 0.5 * np.einsum("ij,ij->i", perm, (wmat @ perm.T).T)
        mean, sd = float(null.mean()), float(null.std(ddof=1))
        z = (bb - mean) / sd if sd > 0 else float("nan")
        p = (1 + int(np.count_nonzero(null >= bb - 1e-9))) / (permutations + 1)
        out.append((area.name, m.size, n_sig, bb, mean, sd, z, p))
    return pd.DataFrame(out, columns=JOIN_COUNT_COLUMNS)


def _permuted(x: np.ndarray, times: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permuted(np.tile(x, (times, 1)), axis=1)


def place_at_random(mask: np.ndarray, sheet: Sheet, rng: np.random.Generator) -> np.ndarray:
    """``mask`` with its units shuffled within each area: the same count per area, at random."""
    placed = np.array(mask, copy=True)
    for k in range(len(sheet.areas)):
        sl = sheet.area_slice(k)
        placed[sl] = rng.permutation(placed[sl])
    return placed


def random_placement_clusters(
    mask: np.ndarray,
    sheet: Sheet,
    connectivity: int = 8,
    min_size: int = 8,
    permutations: int = 99,
    seed: int = 0,
) -> dict[str, float]:
    """Cluster counts of the same number of significant units per area, placed at random.

    Returns
    -------
    dict
        ``n_clusters`` and ``largest`` of the observed mask; ``n_clusters_random`` and
        ``largest_random``: their means over ``permutations`` placements that shuffle the mask
        within each area.
    """
    _check(permutations, seed)
    mask = np.asarray(mask, dtype=bool)
    zeros = np.zeros(sheet.n_units)

    def count(m: np.ndarray) -> tuple[int, int]:
        labels, table = find_clusters(zeros + 1.0, m, sheet, connectivity, min_size, True)
        sizes = np.bincount(labels[labels > 0]) if (labels > 0).any() else np.zeros(1, int)
        return len(table), int(sizes.max())

    observed = count(mask)
    rng = np.random.default_rng(int(seed))
    placed = []
    for _ in range(int(permutations)):
        placed.append(count(place_at_random(mask, sheet, rng)))
    placed_arr = np.asarray(placed, dtype=np.float64).reshape(-1, 2)
    return {
        "n_clusters": float(observed[0]),
        "largest": float(observed[1]),
        "n_clusters_random": float(placed_arr[:, 0].mean()) if len(placed) else float("nan"),
        "largest_random": float(placed_arr[:, 1].mean()) if len(placed) else float("nan"),
    }


def percolates(fraction: float, connectivity: int = 8) -> bool:
    """Whether a significant fraction lies above the grid's site-percolation density."""
    return bool(fraction > PERCOLATION[int(connectivity)])


TOPOGRAPHY_COLUMNS = [
    "area",
    "n_units",
    "n_significant",
    "fraction_significant",
    "percolates",
    "moran_i",
    "moran_p",
    "moran_null_sd",
    "bb_joins",
    "bb_expected",
    "bb_z",
    "bb_p",
]


def topography_table(
    t: np.ndarray,
    significant: np.ndarray,
    sheet: Sheet,
    connectivity: int = 8,
    permutations: int = 999,
    seed: int = 0,
) -> pd.DataFrame:
    """Per area: the significant fraction (and whether it percolates), whole-map Moran's I of
    ``t`` and the join-count test of ``significant``; all on the map as given (pass the
    unsmoothed one)."""
    moran = area_morans_i(t, sheet, permutations, seed)
    joins = join_counts(significant, sheet, permutations, seed)
    table = joins[["area", "n_units", "n_significant", "bb_joins", "bb_expected", "bb_z", "bb_p"]]
    table = table.assign(
        fraction_significant=table["n_significant"] / table["n_units"],
        moran_i=moran["moran_i"].to_numpy(),
        moran_p=moran["moran_p"].to_numpy(),
        moran_null_sd=moran["null_sd"].to_numpy(),
    )
    table["percolates"] = [percolates(f, connectivity) for f in table["fraction_significant"]]
    return table[TOPOGRAPHY_COLUMNS]


def compare_topography(trained: pd.DataFrame, control: pd.DataFrame) -> dict[str, float]:
    """Whole-map Moran's I of a trained map against its control's, area by area.

    Each map's I is compared with its own null (unit positions permuted within the area); the
    difference of the two I's per area is divided by the root sum of the two null variances,
    ``z_k = (I_trained - I_control) / sqrt(sd_trained^2 + sd_control^2)``, and the areas are
    combined with Stouffer's ``Z = sum z_k / sqrt(K)`` (one-sided p from the normal). The areas
    are the independent samples, never the islands of one map.

    Parameters
    ----------
    trained, control : DataFrame
        :func:`topography_table` of the same contrast on the two models (same areas).
    """
    from scipy import stats as sps

    t = trained.set_index("area")
    c = control.set_index("area").reindex(t.index)
    sd = np.sqrt(t["moran_null_sd"].to_numpy() ** 2 + c["moran_null_sd"].to_numpy() ** 2)
    diff = t["moran_i"].to_numpy() - c["moran_i"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        z = diff / sd
    z = z[np.isfinite(z)]
    big = float(z.sum() / np.sqrt(z.size)) if z.size else float("nan")
    return {
        "moran_i_trained": float(t["moran_i"].mean()),
        "moran_i_control": float(c["moran_i"].mean()),
        "difference": float(np.nanmean(diff)),
        "z": big,
        "p": float(sps.norm.sf(big)) if np.isfinite(big) else float("nan"),
        "n_areas": int(z.size),
    }
