"""Clusters of significant units on the sheet grid and island Moran's I.

Connected components
    :func:`label_components` labels a boolean grid with ``scipy.ndimage.label`` (4- or
    8-connectivity), drops components below ``min_size`` cells and renumbers the rest ``1..n`` by
    decreasing size (ties keep scipy's raster order of first appearance); 0 is background.
    :func:`find_clusters` does it for the significant units of a t map: on a ``tiled`` sheet the
    one-cell gap between tiles keeps components inside one area, on a ``stacked`` sheet a
    component may cross an area border (that is the contiguous sheet).

Island Moran's I
    Inside each island (a labelled component of at least ``min_size`` cells), Moran's I of the
    island's values with *queen* (8-neighbour) binary contiguity between cells of that same
    island, **row-standardised** (libpysal / esda transform ``'r'``, esda's default)::

        I = n / S0 * (z' W z) / (z' z),   z = x - mean(x),   S0 = sum(W)

    A cell with no queen neighbour inside the island (possible only when non-finite cells are
    left out, or for labels not built by :func:`label_components`) keeps a zero row and ``S0``
    is the sum of the remaining weights, as in esda. The permutation p value
    is one-sided (clustering of like values): ``p = (1 + #{I_perm >= I_obs}) / (permutations + 1)``
    with the island's values shuffled among its cells; note that esda's ``p_sim`` is folded
    (it takes the smaller tail), ours is not. Permutations are drawn with
    ``numpy.random.default_rng([seed, label])`` so an island's p does not depend on the others,
    and are evaluated in matrix form, in blocks, without a Python loop over permutations.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage, sparse

from topocli.errors import TopoInputError
from topocli.sheet import Sheet

CLUSTER_COLUMNS = [
    "cluster",
    "sign",
    "areas",
    "n_units",
    "peak_t",
    "peak_unit",
    "mean_t",
    "centroid_x_mm",
    "centroid_y_mm",
]
ISLAND_COLUMNS = ["cluster", "n_units", "moran_i", "moran_p"]
# the cluster table every command writes (after its own id column: contrast or category)
CLUSTER_TABLE_COLUMNS = [
    "cluster",
    "areas",
    "n_units",
    "peak_t",
    "mean_t",
    "centroid_x_mm",
    "centroid_y_mm",
    "moran_i",
    "moran_p",
]
QUEEN_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_BLOCK_ELEMENTS = 1 << 22  # permutations x cells evaluated at once


# ---------------------------------------------------------------------- components
def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise TopoInputError(f"connectivity must be 4 or 8, got {connectivity}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def label_components(mask_grid: np.ndarray, connectivity: int = 8, min_size: int = 1) -> np.ndarray:
    """Connected components of a boolean grid, renumbered by decreasing size.

    Parameters
    ----------
    mask_grid : ndarray of bool, shape (R, C)
    connectivity : {4, 8}
        Edge neighbours only (4) or edges and corners (8).
    min_size : int
        Components with fewer cells are dropped (label 0).

    Returns
    -------
    ndarray of int32, shape (R, C)
        0 = no component; ``1..n`` with 1 the largest (ties: scipy's raster order).
    """
    if min_size < 1:
        raise TopoInputError(f"minimum cluster size must be >= 1, got {min_size}")
    mask = np.asarray(mask_grid, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D grid, got shape {mask.shape}")
    raw, n = ndimage.label(mask, structure=_structure(connectivity))
    if n == 0:
        return raw.astype(np.int32)
    sizes = np.bincount(raw.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    keep = order[sizes[order] >= min_size]
    new = np.zeros(n + 1, dtype=np.int32)
    new[keep + 1] = np.arange(1, keep.size + 1, dtype=np.int32)
    return new[raw]


def find_clusters(
    t_units: np.ndarray,
    significant_units: np.ndarray,
    sheet: Sheet,
    connectivity: int = 8,
    min_size: int = 1,
    one_sided: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Clusters of significant units and their table.

    Parameters
    ----------
    t_units : ndarray, shape (n_units,)
        t value per unit (NaN never counts).
    significant_units : ndarray of bool, shape (n_units,)
    sheet : Sheet
    connectivity : {4, 8}
    min_size : int
        Smallest cluster kept, in units.
    one_sided : bool
        True: clusters of significant units with ``t > 0`` only. False: positive (``t > 0``)
        and negative (``t < 0``) clusters are labelled separately (they never merge).

    Returns
    -------
    labels : ndarray of int32, shape (n_units,)
        0 = in no cluster. Positive clusters are ``1..P`` by decreasing size, negative ones
        ``P+1..P+N`` by decreasing size.
    table : DataFrame
        One row per cluster, columns ``cluster, sign (+1/-1), areas (';'-joined names in sheet
        order), n_units, peak_t (largest |t| with the cluster's sign), peak_unit (its unit
        index), mean_t, centroid_x_mm, centroid_y_mm``.
    """
    t = np.asarray(t_units, dtype=np.float64)
    sig = np.asarray(significant_units, dtype=bool)
    if t.shape != (sheet.n_units,) or sig.shape != (sheet.n_units,):
        raise TopoInputError(
            f"expected t and significance for {sheet.n_units} units, got {t.shape} and {sig.shape}"
        )
    finite = np.isfinite(t)
    labels = np.zeros(sheet.n_units, dtype=np.int32)
    signs = [1] if one_sided else [1, -1]
    offset = 0
    for s in signs:
        sel = sig & finite & (s * t > 0)
        grid = np.zeros(sheet.grid_shape, dtype=bool)
        grid[sheet.row, sheet.col] = sel
        lab = sheet.from_grid(label_components(grid, connectivity, min_size))
        labels[lab > 0] = lab[lab > 0] + offset
        offset += int(lab.max()) if lab.size else 0
    return labels, cluster_table(t, labels, sheet)


def cluster_table(t: np.ndarray, labels: np.ndarray, sheet: Sheet) -> pd.DataFrame:
    """Per-cluster summary for unit ``labels`` (0 = none); see :func:`find_clusters`."""
    t = np.asarray(t, dtype=np.float64)
    labels = np.asarray(labels)
    names = np.array(sheet.area_names, dtype=object)
    x_mm, y_mm = sheet.x_mm, sheet.y_mm
    rows = []
    for lab in np.unique(labels[labels > 0]):
        idx = np.flatnonzero(labels == lab)
        tv = t[idx]
        sign = 1 if np.nanmean(tv) >= 0 else -1
        peak = idx[np.argmax(sign * tv)]
        rows.append(
            {
                "cluster": int(lab),
                "sign": sign,
                "areas": ";".join(names[np.unique(sheet.area[idx])]),
                "n_units": int(idx.size),
                "peak_t": float(t[peak]),
                "peak_unit": int(peak),
                "mean_t": float(tv.mean()),
                "centroid_x_mm": float(x_mm[idx].mean()),
                "centroid_y_mm": float(y_mm[idx].mean()),
            }
        )
    return pd.DataFrame(rows, columns=CLUSTER_COLUMNS)


# ---------------------------------------------------------------------- Moran's I
def queen_weights(rows: np.ndarray, cols: np.ndarray, transform: str = "r") -> sparse.csr_matrix:
    """Queen contiguity between the given cells only, binary (``'b'``) or row-standardised.

    Parameters
    ----------
    rows, cols : ndarray of int, shape (n,)
        Distinct grid cells.
    transform : {"r", "b"}
        ``'r'``: every row with neighbours sums to 1 (libpysal's ``'r'``); ``'b'``: binary.
    """
    if transform not in ("r", "b"):
        raise ValueError(f"transform must be 'r' or 'b', got {transform!r}")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n = rows.size
    r0, c0 = rows.min(), cols.min()
    h, w = rows.max() - r0 + 3, cols.max() - c0 + 3  # one-cell border: no bounds checks
    lookup = np.full((h, w), -1, dtype=np.int64)
    rr, cc = rows - r0 + 1, cols - c0 + 1
    lookup[rr, cc] = np.arange(n)
    src, dst = [], []
    for dr, dc in QUEEN_OFFSETS:
        nb = lookup[rr + dr, cc + dc]
        ok = nb >= 0
        src.append(np.flatnonzero(ok))
        dst.append(nb[ok])
    src = np.concatenate(src)
    dst = np.concatenate(dst)
    wmat = sparse.csr_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    if transform == "r":
        deg = np.asarray(wmat.sum(axis=1)).ravel()
        inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
        wmat = sparse.diags(inv) @ wmat
    return wmat.tocsr()


def _moran(
    values: np.ndarray,
    wmat: sparse.csr_matrix,
    permutations: int,
    rng: np.random.Generator,
    null_sd: list | None = None,
) -> tuple[float, float]:
    """Moran's I and one-sided permutation p of ``values`` under weights ``wmat``.

    ``null_sd``, a list, receives the SD of I over the permutations (NaN without them).
    """
    n = values.size
    s0 = wmat.sum()
    z = values - values.mean()
    zz = float(z @ z)
    spread = float(np.ptp(values)) if n else 0.0
    if null_sd is not None:
        null_sd.append(float("nan"))
    if n < 2 or s0 == 0 or spread <= 1e-12 * float(np.abs(values).max()):
        return float("nan"), float("nan")
    scale = n / s0 / zz
    i_obs = float(scale * (z @ (wmat @ z)))
    if permutations <= 0:
        return i_obs, float("nan")
    total, total_sq = 0.0, 0.0
    block = max(1, min(permutations, _BLOCK_ELEMENTS // max(n, 1)))
    base = np.tile(np.arange(n), (block, 1))
    n_ge = 0
    done = 0
    tol = 1e-12 * max(1.0, abs(i_obs))
    while done < permutations:
        m = min(block, permutations - done)
        perm = rng.permuted(base[:m], axis=1)
        zp = z[perm]  # (m, n)
        lag = (wmat @ zp.T).T  # (m, n)
        i_perm = scale * np.einsum("ij,ij->i", zp, lag)
        n_ge += int(np.count_nonzero(i_perm >= i_obs - tol))
        total += float(i_perm.sum())
        total_sq += float((i_perm**2).sum())
        done += m
    if null_sd is not None and permutations > 1:
        mean = total / permutations
        null_sd[-1] = float(np.sqrt(max(total_sq / permutations - mean**2, 0.0)))
    return i_obs, (1 + n_ge) / (permutations + 1)


def morans_i(
    values_grid: np.ndarray,
    mask: np.ndarray | None = None,
    permutations: int = 0,
    seed: int = 0,
) -> tuple[float, float]:
    """Moran's I of a whole map with row-standardised queen weights among the masked cells.

    Parameters
    ----------
    values_grid : ndarray, shape (R, C)
    mask : ndarray of bool, shape (R, C), optional
        Cells to use (default: every finite cell); non-finite cells are always left out.
    permutations : int
        0 gives ``p = NaN``.
    seed : int

    Returns
    -------
    (I, p)
    """
    vals = np.asarray(values_grid, dtype=np.float64)
    use = np.isfinite(vals) if mask is None else np.asarray(mask, dtype=bool) & np.isfinite(vals)
    rows, cols = np.nonzero(use)
    if rows.size < 2:
        return float("nan"), float("nan")
    wmat = queen_weights(rows, cols, "r")
    return _moran(vals[rows, cols], wmat, permutations, np.random.default_rng(seed))


class IslandMoran(NamedTuple):
    """Result of :func:`island_morans_i`."""

    table: pd.DataFrame
    """One row per island: cluster, n_units, moran_i, moran_p."""
    mean_i: float
    """Mean Moran's I over the islands with a defined I (NaN when none)."""
    sem_i: float
    """Standard error of that mean across islands (NaN for fewer than 2)."""


def island_morans_i(
    values_grid: np.ndarray,
    label_grid: np.ndarray,
    permutations: int = 999,
    seed: int = 0,
    min_size: int = 8,
) -> IslandMoran:
    """Moran's I inside every island of a label grid, with permutation p values.

    Parameters
    ----------
    values_grid : ndarray, shape (R, C)
        Values per cell (t values, responses...). Non-finite cells are left out of an island.
    label_grid : ndarray of int, shape (R, C)
        Island labels (> 0); e.g. from :func:`label_components` or ``sheet.to_grid(labels)``
        (NaN / <= 0 = none).
    permutations : int
        Shuffles of the island's values among its cells (0: no p value).
    seed : int
        Island ``k`` draws from ``numpy.random.default_rng([seed, k])``.
    min_size : int
        Islands with fewer (finite) cells are skipped.

    Returns
    -------
    IslandMoran
        ``table`` (cluster, n_units, moran_i, moran_p; islands in label order), ``mean_i``,
        ``sem_i``. An island of constant values has ``moran_i = NaN`` and is left out of the
        mean.
    """
    if permutations < 0:
        raise TopoInputError(f"permutations must be >= 0, got {permutations}")
    if seed < 0:
        raise TopoInputError(f"seed must be >= 0, got {seed}")
    vals = np.asarray(values_grid, dtype=np.float64)
    labels = np.nan_to_num(np.asarray(label_grid, dtype=np.float64), nan=0.0).astype(np.int64)
    if vals.shape != labels.shape:
        raise ValueError(f"values {vals.shape} and labels {labels.shape} differ in shape")
    use = (labels > 0) & np.isfinite(vals)
    rows_all, cols_all = np.nonzero(use)
    lab_all = labels[rows_all, cols_all]
    order = np.argsort(lab_all, kind="stable")
    rows_all, cols_all, lab_all = rows_all[order], cols_all[order], lab_all[order]
    uniq, starts, counts = np.unique(lab_all, return_index=True, return_counts=True)
    records = []
    for lab, start, count in zip(uniq, starts, counts, strict=True):
        if count < min_size:
            continue
        r = rows_all[start : start + count]
        c = cols_all[start : start + count]
        wmat = queen_weights(r, c, "r")
        rng = np.random.default_rng([int(seed), int(lab)])
        i_val, p_val = _moran(vals[r, c], wmat, permutations, rng)
        records.append((int(lab), int(count), i_val, p_val))
    table = pd.DataFrame(records, columns=ISLAND_COLUMNS)
    defined = table["moran_i"].dropna().to_numpy()
    mean_i = float(defined.mean()) if defined.size else float("nan")
    sem_i = float(defined.std(ddof=1) / np.sqrt(defined.size)) if defined.size > 1 else float("nan")
    return IslandMoran(table, mean_i, sem_i)


def clusters_with_moran(
    t: np.ndarray,
    significant: np.ndarray,
    sheet: Sheet,
    one_sided: bool = True,
    connectivity: int = 8,
    min_cluster: int = 8,
    permutations: int = 999,
    seed: int = 0,
) -> tuple[np.ndarray, pd.DataFrame, float, float]:
    """Clusters of a t map's significant units with each island's Moran's I.

    Returns
    -------
    labels : ndarray of int [U]
        Cluster per unit (0: none).
    table : DataFrame
        :data:`CLUSTER_COLUMNS` plus ``moran_i`` and ``moran_p``.
    mean_i, sem_i : float
        Mean island Moran's I and its SEM across islands (NaN without islands).
    """
    labels, table = find_clusters(t, significant, sheet, connectivity, min_cluster, one_sided)
    if not len(table):
        table = table.assign(moran_i=pd.Series(dtype=float), moran_p=pd.Series(dtype=float))
        return labels, table, float("nan"), float("nan")
    islands = island_morans_i(
        sheet.to_grid(t), sheet.to_grid(labels, fill=0), permutations, seed, min_cluster
    )
    table = table.merge(islands.table[["cluster", "moran_i", "moran_p"]], on="cluster", how="left")
    return labels, table, islands.mean_i, islands.sem_i
