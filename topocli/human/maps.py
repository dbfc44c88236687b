"""The human side of ``topo compare``: fROI tables, maps, parcels, fROIs, thresholds, islands.

Everything here reads what a user brings (nothing is downloaded, nothing in ``../shared`` is
required) and turns bad input into :class:`~topocli.errors.TopoInputError` naming the file.

* Tables: :func:`load_human_profiles` reads the EMFL fROI-response format or a simple
  ``roi, condition, mean, sem, n[, category]`` table into one normalised shape;
  :func:`roi_profiles` and :func:`category_profiles` turn it into condition profiles.
* Maps: :func:`load_human_map` reads NIfTI volumes, GIFTI surface data and FreeSurfer MGZ/MGH
  into a :class:`HumanMap`; :func:`load_parcels` reads a folder of parcel masks (recursively,
  ``category/name``); :func:`check_alignment` resamples a map onto a parcel grid with nilearn or
  refuses in one line.
* fROIs: :func:`define_froi` (top x% of the contrast inside a parcel) and
  :func:`split_half_froi_responses` (define on even runs, read odd runs, and vice versa) are the
  same method ``localize`` runs on the model sheet.
* Thresholds and clusters: :func:`threshold_human_map` and :func:`human_cluster_table` are thin
  wrappers around ``nilearn.glm.threshold_stats_img`` and
  ``nilearn.reporting.get_clusters_table``.
* Island Moran's I: :func:`volume_islands_morans_i` (26-neighbour voxel adjacency) and
  :func:`surface_islands_morans_i` (mesh-edge adjacency) on top of :func:`morans_i_sparse`,
  which is the model side's definition (binary weights, row-standardised, values shuffled within
  the island, one-sided permutation p) vectorised over permutations with a sparse weight matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from topocli.errors import TopoInputError

EMFL_COLUMNS = (
    "roi_label",
    "condition",
    "modality",
    "parcel_category",
    "parcel_name",
    "hemisphere",
    "mean_beta_mean",
    "mean_beta_std",
    "mean_beta_sem",
    "mean_beta_count",
)
SIMPLE_COLUMNS = ("roi", "condition", "mean", "sem", "n")
PROFILE_COLUMNS = ("roi", "category", "condition", "mean", "sem", "n")
_EMFL_RENAME = {
    "roi_label": "roi",
    "parcel_category": "category",
    "mean_beta_mean": "mean",
    "mean_beta_sem": "sem",
    "mean_beta_count": "n",
    "mean_beta_std": "std",
}
_VOLUME_SUFFIXES = (".nii", ".nii.gz")
_MGH_SUFFIXES = (".mgz", ".mgh")
_GIFTI_SUFFIXES = (".gii", ".gii.gz")
_MESH_INTENTS = ("NIFTI_INTENT_POINTSET", "NIFTI_INTENT_TRIANGLE")
_SPLIT_DIRECTIONS = ("even->odd", "odd->even", "mean")


# --------------------------------------------------------------------------------------------
# fROI response tables
# --------------------------------------------------------------------------------------------


def load_human_profiles(csv_path: str | Path) -> pd.DataFrame:
    """Read a human fROI response table and normalise it.

    Two formats are accepted (column names are matched case-insensitively):

    * EMFL: ``roi_label, condition, modality, parcel_category, parcel_name, hemisphere,
      mean_beta_mean, mean_beta_std, mean_beta_sem, mean_beta_count`` (the format of the EMFL
      reference table). Recognised by a ``roi_label`` or ``mean_beta_mean`` column.
    * simple: ``roi, condition, mean, sem, n`` and optionally ``category``; without it each
      fROI is its own category.

    Parameters
    ----------
    csv_path : str or Path
        The CSV file.

    Returns
    -------
    pandas.DataFrame
        Columns ``roi, category, condition, mean, sem, n`` (strings, strings, strings, float,
        float, float), followed by ``std, modality, parcel_name, hemisphere`` when the file
        has them. One row per (roi, condition), in file order.

    Raises
    ------
    TopoInputError
        Unreadable file, missing columns (all named), non-numeric values, duplicated
        (roi, condition) rows or an empty table.
    """
    path = Path(csv_path)
    table = _read_csv(path)
    table.columns = [str(c).strip().lower() for c in table.columns]
    emfl = "roi_label" in table.columns or "mean_beta_mean" in table.columns
    required = EMFL_COLUMNS if emfl else SIMPLE_COLUMNS
    missing = [c for c in required if c not in table.columns]
    if missing:
        kind = "EMFL" if emfl else "simple (roi, condition, mean, sem, n[, category])"
        raise TopoInputError(
            f"human profile table ({kind} format) is missing columns: {', '.join(missing)}", path
        )
    if emfl:
        table = table.rename(columns=_EMFL_RENAME)
    elif "category" not in table.columns:
        table["category"] = table["roi"]
    if table.empty:
        raise TopoInputError("human profile table has no rows", path)
    for column in ("roi", "category", "condition"):
        if table[column].isna().any():
            raise TopoInputError(f"human profile table has empty '{column}' values", path)
        table[column] = table[column].astype(str).str.strip()
    for column in ("mean", "sem", "n", "std"):
        if column in table.columns:
            table[column] = _numeric_column(table[column], column, path)
    if table["mean"].isna().any():
        rows = table.index[table["mean"].isna()].tolist()[:5]
        raise TopoInputError(f"human profile table has empty 'mean' values (rows {rows})", path)
    duplicated = table.duplicated(["roi", "condition"])
    if duplicated.any():
        first = table.loc[duplicated, ["roi", "condition"]].iloc[0].tolist()
        raise TopoInputError(
            f"human profile table repeats (roi, condition) pairs, e.g. {tuple(first)}", path
        )
    extra = [c for c in ("std", "modality", "parcel_name", "hemisphere") if c in table.columns]
    return table[list(PROFILE_COLUMNS) + extra].reset_index(drop=True)


def roi_profiles(profiles: pd.DataFrame) -> pd.DataFrame:
    """Condition profiles per fROI.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Output of :func:`load_human_profiles`.

    Returns
    -------
    pandas.DataFrame
        Index ``condition`` (sorted), one column per fROI, values the mean response.
    """
    return profiles.pivot(index="condition", columns="roi", values="mean").sort_index()


def category_profiles(profiles: pd.DataFrame, categories: list[str] | None = None) -> pd.DataFrame:
    """Condition profiles per parcel category (e.g. ``language``, ``tom``, ``md``).

    A category's profile is the unweighted mean over its fROIs of their group-mean responses
    (each fROI counts once, whatever its size). A condition missing in some fROIs of the
    category is averaged over the fROIs that have it.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Output of :func:`load_human_profiles`.
    categories : list of str, optional
        Keep only these categories, in this order; an unknown one raises TopoInputError.

    Returns
    -------
    pandas.DataFrame
        Index ``condition`` (sorted), one column per category.
    """
    table = profiles.groupby(["condition", "category"])["mean"].mean().unstack("category")
    table = table.sort_index()
    if categories is not None:
        unknown = [c for c in categories if c not in table.columns]
        if unknown:
            known = ", ".join(map(str, table.columns))
            raise TopoInputError(
                f"unknown human categories: {', '.join(unknown)} (the table has: {known})"
            )
        table = table[list(categories)]
    table.columns.name = "category"
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TopoInputError("file not found", path)
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TopoInputError(f"cannot read as CSV ({first})", path) from None


def _numeric_column(column: pd.Series, name: str, path: Path) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        example = column[bad].iloc[0]
        raise TopoInputError(f"column '{name}' has a non-numeric value {example!r}", path)
    return values.astype(float)


# --------------------------------------------------------------------------------------------
# Maps and parcels
# --------------------------------------------------------------------------------------------


@dataclass
class HumanMap:
    """A human map or parcel mask read from disk.

    Attributes
    ----------
    data : numpy.ndarray
        Volumes: ``(X, Y, Z)`` or ``(X, Y, Z, T)`` (trailing singleton axes removed). Surfaces:
        ``(n_vertices,)`` or ``(n_vertices, T)``. Parcels: boolean.
    kind : str
        ``'volume'`` or ``'surface'``.
    affine : numpy.ndarray or None
        Voxel -> world (mm) affine of a volume; None for surfaces.
    path : str or None
        Where it was read from (for messages).
    name : str or None
        Parcel name (``'language/lh.ifg'``) when it came from :func:`load_parcels`.
    """

    data: np.ndarray
    kind: str
    affine: np.ndarray | None = None
    path: str | None = None
    name: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape: ``(X, Y, Z)`` for a volume, ``(n_vertices,)`` for a surface."""
        return tuple(self.data.shape[:3] if self.kind == "volume" else self.data.shape[:1])

    @property
    def n_vertices(self) -> int | None:
        """Number of vertices of a surface map, None for a volume."""
        return int(self.data.shape[0]) if self.kind == "surface" else None

    @property
    def label(self) -> str:
        """How messages name this map."""
        return self.name or self.path or "map"

    def to_nifti(self) -> nib.Nifti1Image:
        """The volume as an in-memory ``Nifti1Image`` (booleans stored as uint8)."""
        if self.kind != "volume":
            raise TopoInputError("a surface map has no NIfTI form", self.path)
        data = self.data.astype(np.uint8) if self.data.dtype == bool else self.data
        return nib.Nifti1Image(data, self.affine)


def load_human_map(path: str | Path) -> HumanMap:
    """Read a human map: NIfTI volume, GIFTI surface data or FreeSurfer MGZ/MGH.

    A ``.nii.gz`` file that is in fact not gzip-compressed (found in the wild, e.g. in the EMFL
    parcels) is read from its raw bytes. An MGZ/MGH whose shape is ``(n, 1, 1)`` is a surface
    overlay. A GIFTI holding a mesh (points / triangles) rather than data is refused.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    HumanMap
        ``data`` as float64 (volume or per-vertex values).

    Raises
    ------
    TopoInputError
        Missing file, unknown extension or a file nibabel cannot read.
    """
    return _read_map(Path(path), raw=False)


def _read_map(path: Path, raw: bool) -> HumanMap:
    """Read a map; ``raw`` keeps the stored dtype (parcels) instead of float64."""
    if not path.is_file():
        raise TopoInputError("file not found", path)
    name = path.name.lower()
    if name.endswith(_VOLUME_SUFFIXES + _MGH_SUFFIXES):
        img = _load_nifti(path) if name.endswith(_VOLUME_SUFFIXES) else _nib_load(path)
        try:
            data = np.asanyarray(img.dataobj) if raw else img.get_fdata(dtype=np.float64)
        except Exception as error:  # truncated or corrupt data block
            raise TopoInputError(f"cannot read data ({_first_line(error)})", path) from None
        data = np.asarray(data)
    if name.endswith(_VOLUME_SUFFIXES):
        return _volume_map(data, img.affine, path)
    if name.endswith(_MGH_SUFFIXES):
        if data.ndim >= 3 and data.shape[1] == 1 and data.shape[2] == 1:
            return HumanMap(_squeeze_tail(data[:, 0, 0], 1), "surface", None, str(path))
        return _volume_map(data, img.affine, path)
    if name.endswith(_GIFTI_SUFFIXES):
        return _load_gifti(path)
    raise TopoInputError("unknown map format (expected .nii, .nii.gz, .gii, .mgz or .mgh)", path)


def load_parcels(
    folder: str | Path, include: list[str] | None = None, split_labels: bool = False
) -> dict[str, HumanMap]:
    """Read every parcel mask under a folder, recursively.

    Parcel names are the file paths relative to ``folder`` without extension, with ``/``
    separators: ``language/lh.ifg.nii.gz`` -> ``'language/lh.ifg'``. A voxel / vertex belongs to
    the parcel when its value is finite and non-zero, so label-valued masks (the EMFL language
    parcels store their atlas label, e.g. 2) work as they are. Files with several non-zero labels
    (atlases such as ``language/all``) are one union parcel unless ``split_labels`` is set, in
    which case each label becomes ``'name:label'``. Parcels may sit on different grids (the EMFL
    folder mixes four); :func:`check_alignment` handles each one.

    Parameters
    ----------
    folder : str or Path
        Folder of ``.nii``, ``.nii.gz``, ``.mgz``, ``.mgh`` or ``.gii`` files.
    include : list of str, optional
        Only parcels whose name equals one of these, or starts with one followed by ``/``
        (a category such as ``'language'``). Loading full 256^3 grids costs ~16 MB each.
    split_labels : bool, default=False
        Split multi-label files into one parcel per label.

    Returns
    -------
    dict of str to HumanMap
        Sorted by name; each ``data`` is a boolean mask.

    Raises
    ------
    TopoInputError
        Missing folder, no parcel files (after ``include``), an unreadable file, or an empty
        parcel (named).
    """
    root = Path(folder)
    if not root.is_dir():
        raise TopoInputError("parcel folder not found", root)
    suffixes = _VOLUME_SUFFIXES + _MGH_SUFFIXES + _GIFTI_SUFFIXES
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
    parcels: dict[str, HumanMap] = {}
    for file in files:
        name = _parcel_name(file, root)
        if include is not None and not any(
            name == key or name.startswith(key.rstrip("/") + "/") for key in include
        ):
            continue
        labelled = _read_map(file, raw=True)
        values = labelled.data
        if values.ndim != (3 if labelled.kind == "volume" else 1):
            raise TopoInputError(f"parcel '{name}' is not a single 3-D mask", file)
        inside = values != 0
        if values.dtype.kind in "fc":
            inside &= np.isfinite(values)
        labels = np.unique(values[inside])
        if labels.size == 0:
            raise TopoInputError(f"parcel '{name}' is empty (no non-zero voxels)", file)
        pieces = [(name, inside)]
        if split_labels and labels.size > 1:
            pieces = [(f"{name}:{_label_text(v)}", values == v) for v in labels]
        for piece, mask in pieces:
            parcels[piece] = HumanMap(mask, labelled.kind, labelled.affine, str(file), piece)
    if not parcels:
        what = f" matching {include}" if include is not None else ""
        raise TopoInputError(f"no parcel files{what} (.nii, .nii.gz, .mgz, .gii)", root)
    return dict(sorted(parcels.items()))


def check_alignment(
    human_map: HumanMap, parcel: HumanMap, resample: bool = False, atol: float = 1e-3
) -> HumanMap:
    """Make sure a map lies on a parcel's grid, resampling it with nilearn when allowed.

    Volumes match when their spatial shapes are equal and their affines agree within ``atol``
    (mm). When they do not, ``resample=True`` resamples the map onto the parcel grid with
    ``nilearn.image.resample_to_img`` (``'continuous'`` interpolation for maps, ``'nearest'`` for
    boolean masks); ``resample=False`` refuses with one line naming both grids. Surfaces match
    when they have the same number of vertices; they are never resampled.

    Parameters
    ----------
    human_map : HumanMap
        The map (or a boolean mask) to check.
    parcel : HumanMap
        The parcel whose grid is the target.
    resample : bool, default=False
        Resample on mismatch instead of refusing.
    atol : float, default=1e-3
        Tolerance on affine entries.

    Returns
    -------
    HumanMap
        ``human_map`` itself when aligned, else the resampled map (same ``path``).

    Raises
    ------
    TopoInputError
        Volume against surface, surfaces of different sizes, or misaligned volumes with
        ``resample=False``.
    """
    where = parcel.label
    if human_map.kind != parcel.kind:
        raise TopoInputError(
            f"{human_map.kind} map cannot be used with {parcel.kind} parcel '{where}'",
            human_map.path,
        )
    if human_map.kind == "surface":
        if human_map.n_vertices != parcel.n_vertices:
            raise TopoInputError(
                f"surface map has {human_map.n_vertices} vertices but parcel '{where}' has "
                f"{parcel.n_vertices}; surfaces are not resampled: put both on the same mesh",
                human_map.path,
            )
        return human_map
    same_shape = human_map.shape == parcel.shape
    if same_shape and np.allclose(human_map.affine, parcel.affine, atol=atol):
        return human_map
    mine, theirs = _grid_text(human_map), _grid_text(parcel)
    if not resample:
        raise TopoInputError(
            f"map grid {mine} does not match parcel '{where}' grid {theirs}; refusing "
            "(resample=True / --resample resamples the map onto the parcel grid with nilearn)",
            human_map.path,
        )
    from nilearn.image import resample_to_img

    mask = human_map.data.dtype == bool
    resampled = resample_to_img(
        human_map.to_nifti(),
        parcel.to_nifti(),
        interpolation="nearest" if mask else "continuous",
        force_resample=True,
        copy_header=True,
    )
    data = np.asarray(resampled.get_fdata(dtype=np.float64))
    data = data > 0.5 if mask else data
    return HumanMap(_squeeze_tail(data, 3), "volume", parcel.affine, human_map.path, human_map.name)


def _nib_load(path: Path) -> Any:
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises many types for bad files
        raise TopoInputError(f"cannot read with nibabel ({_first_line(error)})", path) from None


def _load_nifti(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(str(path))
    except Exception as error:
        raw = path.read_bytes()
        if path.name.lower().endswith(".gz") and raw[:2] != b"\x1f\x8b":
            for image_class in (nib.Nifti1Image, nib.Nifti2Image):
                try:
                    return image_class.from_bytes(raw)
                except Exception:  # try the next NIfTI flavour
                    continue
        raise TopoInputError(f"cannot read as NIfTI ({_first_line(error)})", path) from None


def _load_gifti(path: Path) -> HumanMap:
    img = _nib_load(path)
    arrays = list(getattr(img, "darrays", []))
    intents = {nib.nifti1.intent_codes.niistring[a.intent] for a in arrays}
    if intents & set(_MESH_INTENTS):
        raise TopoInputError("GIFTI file holds a surface mesh, not a data map", path)
    if not arrays:
        raise TopoInputError("GIFTI file holds no data arrays", path)
    columns = [np.asarray(a.data, dtype=np.float64).reshape(len(a.data), -1) for a in arrays]
    if len({c.shape[0] for c in columns}) != 1:
        raise TopoInputError("GIFTI data arrays have different numbers of vertices", path)
    data = np.concatenate(columns, axis=1)
    return HumanMap(_squeeze_tail(data, 1), "surface", None, str(path))


def _volume_map(data: np.ndarray, affine: np.ndarray, path: Path) -> HumanMap:
    data = _squeeze_tail(data, 3)
    if data.ndim < 3:
        raise TopoInputError(f"volume has shape {data.shape}, expected 3-D or 4-D", path)
    return HumanMap(data, "volume", np.asarray(affine, dtype=np.float64), str(path))


def _squeeze_tail(data: np.ndarray, keep: int) -> np.ndarray:
    while data.ndim > keep and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def _parcel_name(file: Path, root: Path) -> str:
    relative = file.relative_to(root).as_posix()
    lower = relative.lower()
    for suffix in (".nii.gz", ".gii.gz", ".nii", ".gii", ".mgz", ".mgh"):
        if lower.endswith(suffix):
            return relative[: -len(suffix)]
    return relative


def _label_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _grid_text(item: HumanMap) -> str:
    voxel = np.sqrt((np.asarray(item.affine)[:3, :3] ** 2).sum(axis=0))
    size = "x".join(f"{v:g}" for v in np.round(voxel, 3))
    origin = ", ".join(f"{v:g}" for v in np.round(np.asarray(item.affine)[:3, 3], 2))
    return f"{'x'.join(map(str, item.shape))} ({size} mm, origin {origin})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# fROIs
# --------------------------------------------------------------------------------------------


def define_froi(
    contrast_map: HumanMap | np.ndarray,
    parcel_mask: HumanMap | np.ndarray,
    top_percent: float = 10.0,
) -> np.ndarray:
    """The top ``top_percent`` % of a contrast's voxels / vertices inside a parcel.

    The number kept is ``ceil(top_percent / 100 * n)`` (at least 1), where ``n`` counts the
    parcel's elements with a finite contrast value (NaN / inf are never chosen and do not count).
    Elements are ranked by contrast value, highest first; ties are broken by flat (C-order) index,
    lowest first, so the result is deterministic.

    Parameters
    ----------
    contrast_map : HumanMap or numpy.ndarray
        The localizer contrast (t-map or effect), same spatial shape as the parcel.
    parcel_mask : HumanMap or numpy.ndarray
        Boolean (or non-zero) parcel mask.
    top_percent : float, default=10.0
        Percentage in (0, 100].

    Returns
    -------
    numpy.ndarray
        Boolean mask of the parcel's shape.

    Raises
    ------
    TopoInputError
        Shapes differ, ``top_percent`` out of range, or no finite value inside the parcel.
    """
    values = _spatial_array(contrast_map)
    mask = _mask_array(parcel_mask)
    where = _label_of(parcel_mask)
    if values.shape != mask.shape:
        raise TopoInputError(
            f"contrast shape {values.shape} differs from parcel '{where}' shape {mask.shape}; "
            "align them first (check_alignment)"
        )
    if not 0 < top_percent <= 100:
        raise TopoInputError(f"top_percent must be in (0, 100], got {top_percent}")
    flat = values.ravel()
    candidates = np.flatnonzero(mask.ravel() & np.isfinite(flat))
    if candidates.size == 0:
        raise TopoInputError(f"parcel '{where}' has no finite contrast values")
    keep = max(1, math.ceil(round(top_percent * candidates.size / 100.0, 9)))
    order = np.argsort(-flat[candidates], kind="stable")
    froi = np.zeros(flat.shape, dtype=bool)
    froi[candidates[order[:keep]]] = True
    return froi.reshape(mask.shape)


def split_half_masks(
    contrast_even: HumanMap | np.ndarray,
    contrast_odd: HumanMap | np.ndarray,
    parcels: Mapping[str, HumanMap | np.ndarray],
    top_percent: float = 10.0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fROI of every parcel defined on each half (for split-half Dice reliability).

    Returns
    -------
    dict of str to (numpy.ndarray, numpy.ndarray)
        ``name -> (froi defined on even, froi defined on odd)``.
    """
    return {
        name: (
            define_froi(contrast_even, parcel, top_percent),
            define_froi(contrast_odd, parcel, top_percent),
        )
        for name, parcel in parcels.items()
    }


def split_half_froi_responses(
    contrast_even: HumanMap | np.ndarray,
    contrast_odd: HumanMap | np.ndarray,
    condition_maps_even: Mapping[str, HumanMap | np.ndarray],
    condition_maps_odd: Mapping[str, HumanMap | np.ndarray],
    parcels: Mapping[str, HumanMap | np.ndarray],
    top_percent: float = 10.0,
) -> pd.DataFrame:
    """Cross-validated fROI responses: define on one half, read the other, both ways, average.

    For each parcel the fROI defined on the even-run contrast is read out in the odd-run
    condition maps (``'even->odd'``), the fROI defined on the odd-run contrast in the even-run
    maps (``'odd->even'``), and the two are averaged (``'mean'``), as ``topocli.stats.froi`` does on
    the sheet (same selection rule, same direction names, ``mean = (a + b) / 2``). A readout is
    the mean of the *finite* condition values inside the fROI (human maps carry NaN outside the
    brain; NaN when none is finite).

    Parameters
    ----------
    contrast_even, contrast_odd : HumanMap or numpy.ndarray
        Localizer contrast of each half.
    condition_maps_even, condition_maps_odd : mapping of str to HumanMap or numpy.ndarray
        Per-condition response (beta) maps of each half; the same conditions in both.
    parcels : mapping of str to HumanMap or numpy.ndarray
        Parcel masks (e.g. from :func:`load_parcels`), all on the maps' grid.
    top_percent : float, default=10.0
        See :func:`define_froi`.

    Returns
    -------
    pandas.DataFrame
        Columns ``froi, condition, split_direction, response_mean, n_voxels``; rows ordered by
        parcel, condition, then ``even->odd, odd->even, mean``. ``n_voxels`` is the fROI size
        (for ``'mean'``: the rounded mean of the two sizes, equal to both unless NaNs differ).

    Raises
    ------
    TopoInputError
        Different conditions in the two halves, or any error from :func:`define_froi`.
    """
    even_keys, odd_keys = list(condition_maps_even), list(condition_maps_odd)
    if set(even_keys) != set(odd_keys):
        only_even = sorted(set(even_keys) - set(odd_keys))
        only_odd = sorted(set(odd_keys) - set(even_keys))
        raise TopoInputError(
            f"even and odd condition maps differ: only even {only_even}, only odd {only_odd}"
        )
    even = {c: _spatial_array(m) for c, m in condition_maps_even.items()}
    odd = {c: _spatial_array(m) for c, m in condition_maps_odd.items()}
    rows = []
    for name, (froi_even, froi_odd) in split_half_masks(
        contrast_even, contrast_odd, parcels, top_percent
    ).items():
        n_even, n_odd = int(froi_even.sum()), int(froi_odd.sum())
        for condition in even_keys:
            first = _readout(odd[condition], froi_even, condition, name)
            second = _readout(even[condition], froi_odd, condition, name)
            average = (first + second) / 2.0  # as the model side: NaN if either is NaN
            for direction, value, size in zip(
                _SPLIT_DIRECTIONS,
                (first, second, average),
                (n_even, n_odd, int(round((n_even + n_odd) / 2))),
                strict=True,
            ):
                rows.append((name, condition, direction, value, size))
    columns = ["froi", "condition", "split_direction", "response_mean", "n_voxels"]
    return pd.DataFrame(rows, columns=columns).astype({"n_voxels": int})


def _readout(values: np.ndarray, froi: np.ndarray, condition: str, name: str) -> float:
    if values.shape != froi.shape:
        raise TopoInputError(
            f"condition map '{condition}' shape {values.shape} differs from parcel '{name}' "
            f"shape {froi.shape}"
        )
    inside = values[froi]
    inside = inside[np.isfinite(inside)]
    return float(inside.mean()) if inside.size else float("nan")


def _spatial_array(item: HumanMap | np.ndarray) -> np.ndarray:
    data = item.data if isinstance(item, HumanMap) else np.asarray(item)
    return np.asarray(data, dtype=np.float64)


def _mask_array(item: HumanMap | np.ndarray) -> np.ndarray:
    data = item.data if isinstance(item, HumanMap) else np.asarray(item)
    if data.dtype == bool:
        return data
    return np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0) != 0


def _label_of(item: HumanMap | np.ndarray) -> str:
    return item.label if isinstance(item, HumanMap) else "mask"


# --------------------------------------------------------------------------------------------
# Thresholds and cluster tables (nilearn)
# --------------------------------------------------------------------------------------------


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
        raise TopoInputError(f"nilearn cannot threshold this map ({_first_line(error)})") from None
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
        raise TopoInputError(f"nilearn cannot tabulate clusters ({_first_line(error)})") from None


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


# --------------------------------------------------------------------------------------------
# Island Moran's I
# --------------------------------------------------------------------------------------------


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
    data = _spatial_array(stat_img_data)
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
    data = _spatial_array(values)
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
