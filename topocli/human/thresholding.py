"""Thresholded human maps and their cluster tables: thin wrappers around nilearn
(``nilearn.glm.threshold_stats_img``, ``nilearn.reporting.get_clusters_table``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.human.maps import HumanMap, first_line, load_human_map


def threshold_human_map(
    img: Any,
    alpha: float = 0.05,
    height_control: str | None = "fdr",
    cluster_threshold: int = 0,
    two_sided: bool = False,
    mask_img: Any = None,
    mesh: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Any, float]:
    """Threshold a human z-map with ``nilearn.glm.threshold_stats_img``.

    ``two_sided`` defaults to False (nilearn's default is True) because the model side's
    localizer t-maps are one-sided (ON > OFF); pass True to keep deactivations too, in which
    case nilearn halves ``alpha``. nilearn assumes a z-scale map; without ``mask_img`` its mask is
    the non-background (non-zero) voxels, and its volume cluster-extent threshold uses
    6-connectivity (faces).

    Parameters
    ----------
    img : HumanMap, path, nibabel image or nilearn SurfaceImage
        The statistical map. A surface :class:`HumanMap` needs ``mesh``.
    alpha : float, default=0.05
        q (FDR), p (FPR) or family-wise p (Bonferroni).
    height_control : {'fdr', 'fpr', 'bonferroni', None}, default='fdr'
        nilearn's height control.
    cluster_threshold : int, default=0
        Minimum cluster size in voxels / vertices.
    two_sided : bool, default=False
        Keep both tails.
    mask_img : optional
        Passed to nilearn.
    mesh : (coordinates, faces), optional
        The mesh of a surface :class:`HumanMap` (one hemisphere).

    Returns
    -------
    (image, float)
        The thresholded image (NIfTI or SurfaceImage) and the z threshold used (``inf`` when
        nothing survives FDR).

    Raises
    ------
    TopoInputError
        An argument nilearn refuses, or a surface map without a mesh.
    """
    from nilearn.glm import threshold_stats_img

    stat_img = _nilearn_image(img, mesh)
    try:
        out, threshold = threshold_stats_img(
            stat_img,
            mask_img=mask_img,
            alpha=alpha,
            height_control=height_control,
            cluster_threshold=cluster_threshold,
            two_sided=two_sided,
        )
    except (ValueError, TypeError) as error:
        raise TopoInputError(f"nilearn cannot threshold this map ({first_line(error)})") from None
    return out, float(threshold)


def human_cluster_table(
    img: Any,
    stat_threshold: float,
    cluster_threshold: int = 0,
    two_sided: bool = False,
    min_distance: float = 8.0,
) -> pd.DataFrame:
    """Cluster table of a human volume with ``nilearn.reporting.get_clusters_table``.

    nilearn defines clusters with 6-connectivity (faces); its table lists each cluster's peak
    and sub-peaks at least ``min_distance`` mm apart, with the size in mm^3 on the peak row.

    Parameters
    ----------
    img : HumanMap, path or nibabel image
        A 3-D statistical volume.
    stat_threshold : float
        Cluster-forming threshold.
    cluster_threshold : int, default=0
        Minimum cluster size in voxels.
    two_sided : bool, default=False
        Report negative clusters too.
    min_distance : float, default=8.0
        Minimum distance between sub-peaks, mm.

    Returns
    -------
    pandas.DataFrame
        nilearn's table (``Cluster ID, X, Y, Z, Peak Stat, Cluster Size (mm3)``).
    """
    from nilearn.reporting import get_clusters_table

    if isinstance(img, HumanMap) and img.kind != "volume":
        raise TopoInputError("cluster tables are computed for volumes only", img.path)
    stat_img = _nilearn_image(img, None)
    try:
        return get_clusters_table(
            stat_img,
            stat_threshold=stat_threshold,
            cluster_threshold=cluster_threshold,
            two_sided=two_sided,
            min_distance=min_distance,
        )
    except (ValueError, TypeError) as error:
        raise TopoInputError(f"nilearn cannot tabulate clusters ({first_line(error)})") from None


def _nilearn_image(img: Any, mesh: tuple[np.ndarray, np.ndarray] | None) -> Any:
    if isinstance(img, (str, Path)):
        img = load_human_map(img)
    if not isinstance(img, HumanMap):
        return img
    if img.kind == "volume":
        return img.to_nifti()
    if mesh is None:
        raise TopoInputError("a surface map needs its mesh (coordinates, faces)", img.path)
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    coordinates, faces = mesh
    polymesh = PolyMesh(left=InMemoryMesh(np.asarray(coordinates), np.asarray(faces)))
    return SurfaceImage(mesh=polymesh, data={"left": img.data})
