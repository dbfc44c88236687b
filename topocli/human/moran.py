"""Island Moran's I on human maps: voxel (26-neighbour) and mesh-edge adjacency.

:func:`volume_islands_morans_i` and :func:`surface_islands_morans_i` build on
:func:`morans_i_sparse`, the model side's definition (binary weights, row-standardised, values
shuffled within the island, one-sided permutation p) vectorised over permutations with a sparse
weight matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from topocli.errors import TopoInputError
from topocli.human.maps import HumanMap, spatial_array

ISLAND_COLUMNS = [
    "cluster",
    "n_units",
    "moran_i",
    "moran_p",
    "expected_i",
    "peak_value",
    "peak_index",
]


_BLOCK_ELEMENTS = 1 << 22  # permutations x elements evaluated at once (as topocli.stats.clusters)


@dataclass
class MoranResult:
    """Moran's I of one set of values with its permutation test.

    Attributes
    ----------
    i : float
        Observed Moran's I (NaN when undefined: constant values, fewer than 2 elements or no
        neighbours).
    expected_i : float
        ``-1 / (n - 1)``.
    p_value : float
        ``(1 + #{I_perm >= I_obs}) / (permutations + 1)`` (NaN when ``i`` is NaN or
        ``permutations == 0``).
    n : int
        Number of elements.
    permuted : numpy.ndarray
        The ``permutations`` values of I under shuffling (empty when ``i`` is NaN).
    """

    i: float
    expected_i: float
    p_value: float
    n: int
    permuted: np.ndarray


def morans_i_sparse(
    values: np.ndarray,
    weights: sparse.spmatrix | sparse.sparray,
    permutations: int = 999,
    rng: np.random.Generator | int | Sequence[int] | None = 0,
) -> MoranResult:
    """Moran's I with a sparse weight matrix and a vectorised permutation test.

    The model side's definition (``topocli.stats.clusters``), for any adjacency: the weights are
    row-standardised (esda's default ``'r'`` transform; rows without neighbours stay zero),
    ``I = n / S0 * (z' W z) / (z' z)`` with ``z = y - mean(y)`` and ``S0`` the sum of the
    standardised weights, as ``esda.Moran``. The null shuffles the values among the elements:
    each block of permutations is ``rng.permuted`` of a tiled ``arange(n)`` (same draws as the
    model side), and ``I_perm = rowsum(Z * (W Z')')`` for the whole block in one sparse product.
    ``p = (1 + #{I_perm >= I_obs - tol}) / (permutations + 1)`` with ``tol = 1e-12 max(1, |I|)``
    (one-sided: clustering of like values; esda's ``p_sim`` folds to the smaller tail instead,
    so it differs when I is low). Values whose spread is below ``1e-12 max|y|`` are constant:
    I is NaN.

    Parameters
    ----------
    values : numpy.ndarray
        One value per element, shape ``(n,)``.
    weights : scipy sparse matrix, shape (n, n)
        Adjacency (binary for islands); symmetric is not required.
    permutations : int, default=999
        Number of random permutations (0: no test, p is NaN).
    rng : numpy.random.Generator, seed or seed sequence, default=0
        Random generator, or what ``numpy.random.default_rng`` takes.

    Returns
    -------
    MoranResult
    """
    if permutations < 0:
        raise TopoInputError(f"permutations must be >= 0, got {permutations}")
    y = np.asarray(values, dtype=np.float64).ravel()
    n = y.size
    w = sparse.csr_matrix(weights, dtype=np.float64)
    if w.shape != (n, n):
        raise ValueError(f"weights shape {w.shape} does not match {n} values")
    row_sums = np.asarray(w.sum(axis=1)).ravel()
    scale = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums != 0)
    w = (sparse.diags(scale) @ w).tocsr()
    s0 = float(w.sum())
    expected = -1.0 / (n - 1) if n > 1 else float("nan")
    spread = float(np.ptp(y)) if n else 0.0
    if n < 2 or s0 == 0 or not spread > 1e-12 * float(np.abs(y).max()):
        return MoranResult(float("nan"), expected, float("nan"), n, np.empty(0))
    z = y - y.mean()
    factor = n / s0 / float(z @ z)
    observed = factor * float(z @ (w @ z))
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    permuted = np.empty(permutations)
    block = max(1, min(permutations, _BLOCK_ELEMENTS // n))
    base = np.tile(np.arange(n), (block, 1))
    for start in range(0, permutations, block):
        stop = min(permutations, start + block)
        shuffled = z[generator.permuted(base[: stop - start], axis=1)]
        lagged = (w @ shuffled.T).T
        permuted[start:stop] = factor * np.einsum("ij,ij->i", shuffled, lagged)
    if permutations == 0:
        return MoranResult(observed, expected, float("nan"), n, permuted)
    tolerance = 1e-12 * max(1.0, abs(observed))
    larger = int(np.count_nonzero(permuted >= observed - tolerance))
    return MoranResult(observed, expected, (1 + larger) / (permutations + 1), n, permuted)


def voxel_adjacency(mask: np.ndarray) -> sparse.csr_matrix:
    """Binary 26-neighbour adjacency among the True voxels of a 3-D mask.

    Element ``k`` is the ``k``-th True voxel in C order (``np.flatnonzero(mask)``). Two voxels
    are neighbours when they differ by at most 1 along every axis (faces, edges and corners).

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric ``(n, n)`` matrix of ones, zero diagonal.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"voxel adjacency needs a 3-D mask, got shape {mask.shape}")
    n = int(mask.sum())
    index = np.full(tuple(s + 2 for s in mask.shape), -1, dtype=np.int64)
    inner = (slice(1, -1),) * 3
    index[inner][mask] = np.arange(n)
    centre = index[inner]
    offsets = [o for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]  # the 13 "forward" offsets
    rows, cols = [], []
    for offset in offsets:
        shifted = index[tuple(slice(o, o + s) for o, s in zip(offset, mask.shape, strict=True))]
        both = (centre >= 0) & (shifted >= 0)
        rows.append(centre[both])
        cols.append(shifted[both])
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    data = np.ones(2 * row.size)
    return sparse.csr_matrix(
        (data, (np.concatenate([row, col]), np.concatenate([col, row]))), shape=(n, n)
    )


def mesh_adjacency(faces: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """Binary vertex adjacency of a triangle mesh: vertices sharing a triangle edge.

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric ``(n_vertices, n_vertices)`` matrix of ones, zero diagonal.

    Raises
    ------
    TopoInputError
        Faces that are not ``(n, 3)`` or index vertices outside ``[0, n_vertices)``.
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise TopoInputError(f"mesh faces must have shape (n, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise TopoInputError(f"mesh faces index vertices outside [0, {n_vertices})")
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    keep = a != b
    a, b = a[keep], b[keep]
    adjacency = sparse.csr_matrix(
        (np.ones(2 * a.size), (np.concatenate([a, b]), np.concatenate([b, a]))),
        shape=(n_vertices, n_vertices),
    )
    adjacency.data[:] = 1.0  # duplicates (edges shared by two triangles) were summed
    return adjacency


def volume_islands_morans_i(
    stat_img_data: HumanMap | np.ndarray,
    threshold: float,
    min_size: int = 8,
    permutations: int = 999,
    seed: int = 0,
) -> pd.DataFrame:
    """Island Moran's I on a human volume.

    Islands are the connected components (26-connectivity, ``scipy.ndimage.label`` with a
    3x3x3 structure) of the finite voxels with value ``>= threshold`` (nilearn's convention for
    a kept voxel). As on the model side (``topocli.stats.clusters``), islands below ``min_size`` are
    dropped, the rest are numbered ``1..n`` by decreasing size (ties: scipy's raster order),
    and island ``k`` draws its permutations from ``numpy.random.default_rng([seed, k])`` so its
    p does not depend on the other islands. Moran's I uses binary 26-neighbour weights inside
    the island (:func:`voxel_adjacency`, :func:`morans_i_sparse`).

    Parameters
    ----------
    stat_img_data : HumanMap or numpy.ndarray
        3-D statistical map.
    threshold : float
        Island-forming threshold (e.g. from :func:`threshold_human_map`).
    min_size : int, default=8
        Smallest island kept, in voxels.
    permutations : int, default=999
    seed : int, default=0

    Returns
    -------
    pandas.DataFrame
        ``ISLAND_COLUMNS``: ``cluster, n_units, moran_i, moran_p`` (the model side's island
        columns; ``n_units`` counts voxels) then ``expected_i, peak_value, peak_index`` (the
        peak voxel's index as a tuple). One row per island, largest first.
    """
    _check_island_args(min_size, permutations, seed)
    data = spatial_array(stat_img_data)
    if data.ndim != 3:
        raise TopoInputError(f"island Moran's I needs a 3-D volume, got shape {data.shape}")
    supra = np.isfinite(data) & (data >= threshold)
    labels, _ = ndimage.label(supra, structure=np.ones((3, 3, 3), dtype=bool))
    boxes = ndimage.find_objects(labels)
    sizes = np.bincount(labels.ravel(), minlength=len(boxes) + 1)[1:]
    rows = []
    for number, raw in enumerate(_by_decreasing_size(sizes, min_size), start=1):
        box = boxes[raw]
        inside = labels[box] == raw + 1
        values = data[box][inside]
        result = morans_i_sparse(
            values, voxel_adjacency(inside), permutations, np.random.default_rng([seed, number])
        )
        peak = np.argwhere(inside)[int(np.argmax(values))]
        peak_index = tuple(int(p + s.start) for p, s in zip(peak, box, strict=True))
        rows.append(_island_row(number, result, float(values.max()), peak_index))
    return pd.DataFrame(rows, columns=ISLAND_COLUMNS)


def surface_islands_morans_i(
    values: HumanMap | np.ndarray,
    faces: np.ndarray,
    threshold: float,
    min_size: int = 8,
    permutations: int = 999,
    seed: int = 0,
) -> pd.DataFrame:
    """Island Moran's I on a human surface map.

    Islands are the connected components (``scipy.sparse.csgraph.connected_components``) of
    the mesh graph (triangle edges) restricted to the finite vertices with value
    ``>= threshold``; weights inside an island are its mesh edges (:func:`mesh_adjacency`).
    Numbering, seeding and columns as :func:`volume_islands_morans_i` (ties in size keep
    scipy's component order, i.e. by lowest vertex index); ``peak_index`` is a vertex index.
    """
    _check_island_args(min_size, permutations, seed)
    data = spatial_array(values)
    if data.ndim != 1:
        raise TopoInputError(f"surface values must be one per vertex, got shape {data.shape}")
    adjacency = mesh_adjacency(faces, data.size)
    supra = np.flatnonzero(np.isfinite(data) & (data >= threshold))
    n_islands, labels = connected_components(adjacency[supra][:, supra], directed=False)
    sizes = np.bincount(labels, minlength=n_islands)
    rows = []
    for number, raw in enumerate(_by_decreasing_size(sizes, min_size), start=1):
        members = supra[labels == raw]
        island_values = data[members]
        result = morans_i_sparse(
            island_values,
            adjacency[members][:, members],
            permutations,
            np.random.default_rng([seed, number]),
        )
        peak = int(members[int(np.argmax(island_values))])
        rows.append(_island_row(number, result, float(island_values.max()), peak))
    return pd.DataFrame(rows, columns=ISLAND_COLUMNS)


def _by_decreasing_size(sizes: np.ndarray, min_size: int) -> np.ndarray:
    """Indices of the components with ``size >= min_size``, largest first, ties in order."""
    order = np.argsort(-sizes, kind="stable")
    return order[sizes[order] >= min_size]


def _check_island_args(min_size: int, permutations: int, seed: int) -> None:
    if min_size < 1:
        raise TopoInputError(f"minimum island size must be >= 1, got {min_size}")
    if permutations < 0:
        raise TopoInputError(f"permutations must be >= 0, got {permutations}")
    if seed < 0:
        raise TopoInputError(f"seed must be >= 0, got {seed}")


def _island_row(number: int, result: MoranResult, peak_value: float, peak_index: Any) -> tuple:
    return (
        number,
        result.n,
        result.i,
        result.p_value,
        result.expected_i,
        peak_value,
        peak_index,
    )
