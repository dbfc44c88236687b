"""The human side of ``topo compare``: a fROI response table, or maps with parcels.

A table (:func:`load_human_table`) gives the group fROI profiles as its authors defined them.
Maps (:func:`human_from_maps`) go through the same fROI method as the sheet: the top x % of the
contrast inside each parcel, split-half (defined on even, read on odd and vice versa) when both
halves are given, plus the islands of the whole contrast map for Moran's I.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.human.froi import define_froi, split_half_froi_responses
from topocli.human.maps import HumanMap, check_alignment, load_human_map, load_parcels
from topocli.human.moran import ISLAND_COLUMNS, surface_islands_morans_i, volume_islands_morans_i
from topocli.human.profiles import load_human_profiles
from topocli.human.thresholding import human_cluster_table, threshold_human_map
from topocli.stats.agreement import ConditionMap

ISLAND_COLUMNS = ["human_froi", *ISLAND_COLUMNS]
HUMAN_DICE_COLUMNS = ["human_froi", "parcel", "n_voxels_even", "n_voxels_odd", "dice"]
HALVES = ("even", "odd")
FSAVERAGE5_VERTICES = 10242
_HALF_RE = re.compile(r"^(?P<key>.+?)[._-](?P<half>even|odd)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.:@/-]+$")


@dataclass
class HumanSpatial:
    """Islands and clusters of one human contrast map."""

    islands: pd.DataFrame
    threshold: float
    n_elements: int
    element: str
    element_size: float | None
    cluster_table: pd.DataFrame | None = None


@dataclass
class HumanData:
    """The human side after loading: profiles per target, and maps' spatial results.

    Attributes
    ----------
    kind : str
        ``'table'`` or ``'maps'``.
    source : str
        Names the human data in tables (the file or ``'human maps'``).
    conditions : list of str
        Conditions with data.
    targets : list of str
        fROI labels and categories (table) or map targets.
    profiles : dict of str to pandas.DataFrame
        Target -> frame indexed by condition with ``mean, sem, sd, n, n_elements, n_rois``.
    spatial : dict of str to HumanSpatial
    dice : dict of str to pandas.DataFrame
        Target -> per-parcel split-half Dice (``HUMAN_DICE_COLUMNS``).
    maps : dict of str to HumanMap
        Target -> contrast map (for the report).
    mesh : (coordinates, faces) or None
    notes : dict of str to list of str
        Target -> what limits its numbers.
    table : pandas.DataFrame or None
        The normalised fROI table (``kind == 'table'``).
    """

    kind: str
    source: str
    conditions: list[str]
    targets: list[str]
    profiles: dict[str, pd.DataFrame] = field(default_factory=dict)
    spatial: dict[str, HumanSpatial] = field(default_factory=dict)
    dice: dict[str, pd.DataFrame] = field(default_factory=dict)
    maps: dict[str, Any] = field(default_factory=dict)
    mesh: tuple[np.ndarray, np.ndarray] | None = None
    notes: dict[str, list[str]] = field(default_factory=dict)
    table: pd.DataFrame | None = None


def table_target_profile(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """Condition profile of one human fROI label or parcel category of a profile table.

    A fROI label gives its rows. A category averages its fROIs per condition (unweighted, as
    :func:`topocli.human.profiles.category_profiles`); its ``sem`` and ``sd`` are the mean of the
    fROIs' (exact when the fROIs co-vary perfectly across participants, an upper bound otherwise:
    the model side's fROI rule). ``sd`` is the table's ``std`` column, else ``sem * sqrt(n)``.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`topocli.human.profiles.load_human_profiles`.
    target : str
        A fROI label (``roi``) or a ``category``; a label wins when a name is both.

    Returns
    -------
    pandas.DataFrame
        Indexed by condition (file order): ``mean, sem, sd, n, n_elements, n_rois``.
    """
    rows = table[table["roi"] == target]
    if rows.empty:
        rows = table[table["category"] == target]
    if rows.empty:
        raise TopoInputError(f"human table has no fROI or category '{target}'")
    rows = rows.copy()
    sd = rows["std"] if "std" in rows.columns else pd.Series(np.nan, index=rows.index)
    rows["sd"] = sd.where(sd.notna(), rows["sem"] * np.sqrt(rows["n"]))
    grouped = rows.groupby("condition", sort=False)
    out = pd.DataFrame(
        {
            "mean": grouped["mean"].mean(),
            "sem": grouped["sem"].mean(),
            "sd": grouped["sd"].mean(),
            "n": grouped["n"].mean(),
            "n_rois": grouped["roi"].nunique().astype(float),
        }
    )
    out["n_elements"] = np.nan
    out.index.name = "condition"
    return out[["mean", "sem", "sd", "n", "n_elements", "n_rois"]]


def load_human_table(csv_path: str | Path) -> HumanData:
    """The human side from a fROI response table (profiles: :func:`add_table_profiles`)."""
    table = load_human_profiles(csv_path)
    targets = list(dict.fromkeys([*table["roi"], *table["category"]]))
    return HumanData(
        kind="table",
        source=Path(csv_path).name,
        conditions=list(dict.fromkeys(table["condition"])),
        targets=targets,
        table=table,
    )


def add_table_profiles(human: HumanData, targets: Sequence[str]) -> None:
    """Fill in the profiles of a table's human targets, in place.

    Only the targets that are paired with a model fROI are built (the table may hold many more
    fROIs and categories than the condition map names).

    Parameters
    ----------
    human : HumanData
        From :func:`load_human_table`.
    targets : sequence of str
        fROI labels or categories (:func:`table_target_profile`).
    """
    for target in dict.fromkeys(targets):
        human.profiles[target] = table_target_profile(human.table, target)
        human.notes.setdefault(target, []).append(
            "human profile from the table (split-half fROIs as its authors defined them); "
            "no human islands or Dice without maps"
        )


@dataclass
class MapSpec:
    """One ``--human-maps`` entry: ``key`` (condition or target), ``half`` and ``path``."""

    key: str
    half: str | None
    path: Path

    @property
    def name(self) -> str:
        return self.key if self.half is None else f"{self.key}.{self.half}"


def parse_map_specs(values: Sequence[str | Path]) -> list[MapSpec]:
    """Parse ``[KEY=]PATH`` entries; the key defaults to the file name without extension.

    A key ending in ``.even`` / ``.odd`` (or ``_even``, ``-odd`` ...) names one half.

    Raises
    ------
    TopoInputError
        An empty or malformed key, or the same key (and half) given twice.
    """
    specs: list[MapSpec] = []
    seen: dict[str, str] = {}
    for value in values:
        text = str(value)
        key, sep, rest = text.partition("=")
        if sep and rest and _KEY_RE.match(key) and not Path(text).exists():
            path = Path(rest)
        else:
            path = Path(text)
            key = _map_stem(path.name)
        if not key:
            raise TopoInputError(f"human map entry {text!r} has no key (use KEY=PATH)")
        match = _HALF_RE.match(key)
        half = match.group("half") if match else None
        key = match.group("key") if match else key
        if not path.is_file():
            raise TopoInputError("human map not found", path)
        spec = MapSpec(key, half, path)
        if spec.name in seen:
            raise TopoInputError(
                f"human map '{spec.name}' is given twice ({seen[spec.name]} and {path})"
            )
        seen[spec.name] = str(path)
        specs.append(spec)
    if not specs:
        raise TopoInputError("--human-maps needs at least one map")
    return specs


def _map_stem(name: str) -> str:
    lower = name.lower()
    for suffix in (".nii.gz", ".gii.gz", ".nii", ".gii", ".mgz", ".mgh"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_mesh(path: str | Path | None, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """The triangle mesh of a surface map: a GIFTI geometry file, or nilearn's fsaverage5.

    Without ``path`` a map of 10242 vertices is taken to lie on fsaverage5 (bundled with
    nilearn, no download; left and right hemispheres share one triangulation).

    Raises
    ------
    TopoInputError
        No mesh for the vertex count, an unreadable file, or a mesh of another size.
    """
    import nibabel as nib

    if path is None:
        if n_vertices != FSAVERAGE5_VERTICES:
            raise TopoInputError(
                f"surface map has {n_vertices} vertices; pass --mesh with its surface geometry "
                f"(only fsaverage5, {FSAVERAGE5_VERTICES} vertices, is known without one)"
            )
        from nilearn import datasets

        mesh = datasets.load_fsaverage("fsaverage5")["pial"].parts["left"]
        return np.asarray(mesh.coordinates, dtype=np.float64), np.asarray(mesh.faces)
    file = Path(path)
    if not file.is_file():
        raise TopoInputError("mesh file not found", file)
    try:
        img = nib.load(str(file))
        arrays = {nib.nifti1.intent_codes.niistring[a.intent]: a.data for a in img.darrays}
        coordinates = np.asarray(arrays["NIFTI_INTENT_POINTSET"], dtype=np.float64)
        faces = np.asarray(arrays["NIFTI_INTENT_TRIANGLE"], dtype=np.int64)
    except KeyError:
        raise TopoInputError("GIFTI mesh needs a POINTSET and a TRIANGLE array", file) from None
    except Exception as error:  # nibabel raises many types for bad files
        raise TopoInputError(f"cannot read the mesh ({_first_line(error)})", file) from None
    if coordinates.shape[0] != n_vertices:
        raise TopoInputError(
            f"mesh has {coordinates.shape[0]} vertices but the surface map has {n_vertices}", file
        )
    return coordinates, faces


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass
class _TargetMaps:
    contrast: dict[str | None, Any] = field(default_factory=dict)
    conditions: dict[str, dict[str | None, Any]] = field(default_factory=dict)


def human_from_maps(
    specs: Sequence[MapSpec],
    cmap: ConditionMap,
    targets: Sequence[str],
    parcels_dir: str | Path | None = None,
    resample: bool = False,
    mesh_path: str | Path | None = None,
    top_percent: float = 10.0,
    q: float = 0.05,
    min_size: int = 8,
    permutations: int = 999,
    seed: int = 0,
) -> HumanData:
    """The human side from maps: fROI profiles, split-half Dice, islands and clusters.

    Parameters
    ----------
    specs : sequence of MapSpec
        From :func:`parse_map_specs`; keys must be human conditions or targets of ``cmap``.
    cmap : ConditionMap
    targets : sequence of str
        The human fROIs / categories needed (those of the model fROIs being compared).
    parcels_dir : str or Path, optional
        Parcel folder (``category/name`` masks); without it the whole map is the search region.
    resample : bool
        Resample maps onto a parcel's grid when they differ (else refuse).
    mesh_path : str or Path, optional
        GIFTI geometry of surface maps (default: fsaverage5 when the vertex count fits).
    top_percent : float
        fROI size in % of a parcel's elements.
    q : float
        FDR level of nilearn's threshold for the islands.
    min_size, permutations, seed : int
        Islands (as the model side: minimum size, Moran permutations, seed).

    Returns
    -------
    HumanData
    """
    classify_map_keys(specs, cmap)
    target_set = set(cmap.frois.values())
    by_target: dict[str, _TargetMaps] = {t: _TargetMaps() for t in target_set}
    cache: dict[Path, Any] = {}

    def read(path: Path) -> Any:
        if path not in cache:
            item = load_human_map(path)
            spatial_ndim = 3 if item.kind == "volume" else 1
            if item.data.ndim != spatial_ndim:
                raise TopoInputError(
                    f"map holds {item.data.shape[-1]} maps; give one map per file", path
                )
            cache[path] = item
        return cache[path]

    condition_maps: dict[str, dict[str | None, Any]] = {}
    for spec in specs:
        if spec.key in target_set:
            by_target[spec.key].contrast[spec.half] = read(spec.path)
        else:
            condition_maps.setdefault(spec.key, {})[spec.half] = read(spec.path)
    kinds = {m.kind for m in cache.values()}
    if len(kinds) > 1:
        raise TopoInputError("human maps mix volumes and surfaces; give one kind")
    mesh = None
    if kinds == {"surface"}:
        sizes = {m.n_vertices for m in cache.values()}
        if len(sizes) > 1:
            raise TopoInputError(f"surface maps have different vertex counts: {sorted(sizes)}")
        mesh = load_mesh(mesh_path, sizes.pop())
    data = HumanData(
        kind="maps",
        source="human maps",
        conditions=sorted(condition_maps),
        targets=sorted(target_set),
        mesh=mesh,
    )
    for target in targets:
        maps = by_target[target]
        maps.conditions = condition_maps
        notes = data.notes.setdefault(target, [])
        if not maps.contrast:
            notes.append(f"no contrast map for '{target}': no human fROIs or islands")
            continue
        data.maps[target] = maps.contrast.get(None) or maps.contrast.get("even")
        parcels = _target_parcels(target, maps, parcels_dir, notes)
        profile, dice_rows = _target_profile(target, maps, parcels, resample, top_percent, notes)
        if profile is not None:
            data.profiles[target] = profile
        if dice_rows is not None:
            data.dice[target] = dice_rows
        whole = maps.contrast.get(None)
        if whole is None:
            notes.append("islands need the whole-data contrast map (key without .even/.odd)")
        else:
            data.spatial[target] = _human_spatial(whole, mesh, q, min_size, permutations, seed)
    return data


def classify_map_keys(specs: Sequence[MapSpec], cmap: ConditionMap) -> None:
    """Every map key must be a human condition or a human fROI/category of ``cmap``, not both.

    Raises
    ------
    TopoInputError
        Naming the first key that is neither, or both.
    """
    conditions = set(cmap.conditions.values())
    target_set = set(cmap.frois.values())
    for spec in specs:
        is_condition, is_target = spec.key in conditions, spec.key in target_set
        if is_condition and is_target:
            raise TopoInputError(
                f"human map key '{spec.key}' is both a condition and an fROI/category of the "
                "condition map; rename one",
                spec.path,
            )
        if not (is_condition or is_target):
            raise TopoInputError(
                f"human map key '{spec.key}' is neither a human condition "
                f"({', '.join(sorted(conditions))}) nor a human fROI/category "
                f"({', '.join(sorted(target_set))}) of the condition map",
                spec.path,
            )


def _target_parcels(
    target: str, maps: _TargetMaps, parcels_dir: str | Path | None, notes: list[str]
) -> dict[str, Any]:
    """Search regions of a target: its parcels, or the whole map without a parcel folder.

    A file holding several labels (an atlas such as EMFL's ``language/all``) repeats the
    single-parcel files beside it and is skipped; when a target has only such files, each
    label is one parcel (``name:label``).
    """
    if parcels_dir is not None:
        parcels = load_parcels(parcels_dir, include=[target], split_labels=True)
        atlas = [n for n in parcels if ":" in n.rsplit("/", 1)[-1]]
        single = {n: p for n, p in parcels.items() if n not in atlas}
        if single and atlas:
            files = sorted({n.rsplit(":", 1)[0] for n in atlas})
            notes.append(f"multi-label atlas file(s) {files} skipped: they repeat the parcels")
            return single
        return parcels
    reference = maps.contrast.get(None) or next(iter(maps.contrast.values()))
    values = reference.data
    mask = np.isfinite(values) & (values != 0)
    if not mask.any():
        raise TopoInputError(f"contrast map of '{target}' has no finite non-zero value")
    name = f"{target}/whole map"
    return {name: HumanMap(mask, reference.kind, reference.affine, reference.path, name)}


def _aligned(item: Any, parcel: Any, resample: bool, cache: dict) -> Any:
    key = (id(item), parcel.shape, None if parcel.affine is None else parcel.affine.tobytes())
    if key not in cache:
        cache[key] = check_alignment(item, parcel, resample)
    return cache[key]


def _target_profile(
    target: str,
    maps: _TargetMaps,
    parcels: Mapping[str, Any],
    resample: bool,
    top_percent: float,
    notes: list[str],
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Category profile (mean over parcels) and per-parcel Dice from maps."""
    from topocli.stats.agreement import dice

    split_conditions = [
        c for c, halves in maps.conditions.items() if all(h in halves for h in HALVES)
    ]
    whole_conditions = [c for c, halves in maps.conditions.items() if None in halves]
    split = all(h in maps.contrast for h in HALVES)
    cache: dict = {}
    rows: list[pd.DataFrame] = []
    dice_rows = []
    for name, parcel in parcels.items():
        if split:
            even = _aligned(maps.contrast["even"], parcel, resample, cache)
            odd = _aligned(maps.contrast["odd"], parcel, resample, cache)
            froi_even = define_froi(even, parcel, top_percent)
            froi_odd = define_froi(odd, parcel, top_percent)
            dice_rows.append(
                (target, name, int(froi_even.sum()), int(froi_odd.sum()), dice(froi_even, froi_odd))
            )
            if split_conditions:
                table = split_half_froi_responses(
                    even,
                    odd,
                    {
                        c: _aligned(maps.conditions[c]["even"], parcel, resample, cache)
                        for c in split_conditions
                    },
                    {
                        c: _aligned(maps.conditions[c]["odd"], parcel, resample, cache)
                        for c in split_conditions
                    },
                    {name: parcel},
                    top_percent,
                )
                table = table[table["split_direction"] == "mean"]
                rows.append(table[["froi", "condition", "response_mean", "n_voxels"]])
                continue
        whole = maps.contrast.get(None)
        if whole is not None and whole_conditions:
            contrast = _aligned(whole, parcel, resample, cache)
            froi = define_froi(contrast, parcel, top_percent)
            for condition in whole_conditions:
                values = _aligned(maps.conditions[condition][None], parcel, resample, cache).data
                inside = values[froi]
                inside = inside[np.isfinite(inside)]
                rows.append(
                    pd.DataFrame(
                        {
                            "froi": [name],
                            "condition": [condition],
                            "response_mean": [float(inside.mean()) if inside.size else np.nan],
                            "n_voxels": [int(froi.sum())],
                        }
                    )
                )
    dice_table = pd.DataFrame(dice_rows, columns=HUMAN_DICE_COLUMNS) if dice_rows else None
    if split and split_conditions:
        notes.append(
            f"human fROIs cross-validated: top {top_percent:g}% defined on even, read on odd "
            "and vice versa"
        )
    elif rows:
        notes.append(
            "human fROIs defined and read on the same (whole) maps: not cross-validated, "
            "responses are biased towards the contrast"
        )
    else:
        notes.append(f"no condition maps to read '{target}' fROIs: no human profile")
        return None, dice_table
    if split and not split_conditions:
        notes.append("condition maps are not split into halves: profile read on whole maps")
    frame = pd.concat(rows, ignore_index=True)
    grouped = frame.groupby("condition", sort=False)
    profile = pd.DataFrame(
        {
            "mean": grouped["response_mean"].mean(),
            "sem": np.nan,
            "sd": np.nan,
            "n": np.nan,
            "n_elements": grouped["n_voxels"].sum().astype(float),
            "n_rois": grouped["froi"].nunique().astype(float),
        }
    )
    profile.index.name = "condition"
    return profile, dice_table


def _human_spatial(
    item: Any,
    mesh: tuple[np.ndarray, np.ndarray] | None,
    q: float,
    min_size: int,
    permutations: int,
    seed: int,
) -> HumanSpatial:
    """FDR threshold (nilearn), islands with Moran's I, and (volumes) nilearn's cluster table."""
    _, threshold = threshold_human_map(item, alpha=q, height_control="fdr", mesh=mesh)
    values = item.data
    n_elements = int(np.count_nonzero(np.isfinite(values) & (values != 0)))
    volume = item.kind == "volume"
    if not math.isfinite(threshold):
        islands = pd.DataFrame(columns=ISLAND_COLUMNS)
    elif volume:
        islands = volume_islands_morans_i(item, threshold, min_size, permutations, seed)
    else:
        islands = surface_islands_morans_i(
            item, mesh[1], threshold, min_size, permutations, seed
        )
    cluster_table = None
    if volume and math.isfinite(threshold):
        cluster_table = human_cluster_table(item, threshold, cluster_threshold=min_size)
    element_size = float(abs(np.linalg.det(item.affine[:3, :3]))) if volume else None
    return HumanSpatial(
        islands=islands,
        threshold=float(threshold),
        n_elements=n_elements,
        element="voxel" if volume else "vertex",
        element_size=element_size,
        cluster_table=cluster_table,
    )
