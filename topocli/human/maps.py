"""Human maps and parcels: NIfTI volumes, GIFTI surface data, FreeSurfer MGZ/MGH (nibabel).

:func:`load_human_map` reads a map into a :class:`HumanMap`; :func:`load_parcels` reads a folder
of parcel masks (recursively, ``category/name``); :func:`check_alignment` resamples a map onto a
parcel grid with nilearn or refuses in one line. Nothing is downloaded; bad input is a
:class:`~topocli.errors.TopoInputError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from topocli.errors import TopoInputError

_VOLUME_SUFFIXES = (".nii", ".nii.gz")


_MGH_SUFFIXES = (".mgz", ".mgh")


_GIFTI_SUFFIXES = (".gii", ".gii.gz")


_MESH_INTENTS = ("NIFTI_INTENT_POINTSET", "NIFTI_INTENT_TRIANGLE")


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
            raise TopoInputError(f"cannot read data ({first_line(error)})", path) from None
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
        raise TopoInputError(f"cannot read with nibabel ({first_line(error)})", path) from None


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
        raise TopoInputError(f"cannot read as NIfTI ({first_line(error)})", path) from None


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


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def spatial_array(item: HumanMap | np.ndarray) -> np.ndarray:
    data = item.data if isinstance(item, HumanMap) else np.asarray(item)
    return np.asarray(data, dtype=np.float64)


def mask_array(item: HumanMap | np.ndarray) -> np.ndarray:
    data = item.data if isinstance(item, HumanMap) else np.asarray(item)
    if data.dtype == bool:
        return data
    return np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0) != 0


def label_of(item: HumanMap | np.ndarray) -> str:
    return item.label if isinstance(item, HumanMap) else "mask"
