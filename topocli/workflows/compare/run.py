"""``topo compare``: model localizer results beside human fMRI localizer data.

The same fROI method runs on both sides (top x % of the contrast inside a search region, defined
on one half of the data and read on the other); this module pairs what each side produced and
measures how well they agree, every number with its uncertainty.

Inputs
    * One or more model results folders written by ``topo localize`` (``profiles.csv`` with the
      split-half fROI profiles, ``clusters.csv`` with island Moran's I, ``dice.csv``,
      ``tmap.nii.gz``, ``manifest.json``). Each folder's model is identified from its manifest;
      a folder whose model is the non-topographic control (name ``minilm-control``, or adaptor
      mode without a trained checkpoint) is the *control* of the trained ones.
    * The human side, either a table of fROI responses
      (:func:`topocli.human.maps.load_human_profiles`:
      the EMFL format or ``roi, condition, mean, sem, n[, category]``) or maps
      (``--human-maps [KEY=]PATH ...``: contrast t/z maps and per-condition beta maps, NIfTI,
      GIFTI or MGZ, optionally split into even/odd halves, with ``--parcels`` a folder of parcel
      masks).
    * A condition map (:func:`topocli.stats.agreement.load_condition_map`) saying which model
      condition is which human condition and which model fROI (``contrast@area`` or a bare
      contrast: every area) is which human fROI or parcel category. Without one, the shipped
      map named after the model's localizer is used when it exists
      (``localizers/condition_maps/<localizer>.toml``), else conditions and fROIs with the same
      name on both sides.

Human maps
    A map's key is given as ``KEY=PATH`` or taken from the file name (``tom.even.nii.gz`` ->
    ``tom.even``). A key is a human condition (a per-condition response map) or a human fROI /
    parcel category (the contrast map that defines it), optionally followed by ``.even`` or
    ``.odd``. With both halves of the contrast and of the condition maps the fROIs are
    cross-validated exactly as on the sheet (:func:`topocli.human.maps.split_half_froi_responses`)
    and their split-half Dice is the human reliability; with whole maps only, the fROI is defined
    and read on the same data (said in the report). With ``--parcels`` the search regions of a
    category are the parcels under ``PARCELS/<category>/`` (or the parcel named so); without,
    the whole map (finite non-zero elements). Islands for Moran's I are the supra-threshold
    components of the whole contrast map after nilearn's FDR threshold (26-neighbour voxels,
    mesh edges on surfaces, the model's minimum cluster size and permutation count).

Metrics (``metrics.csv``, one row per number)
    * ``profile``: Pearson and Spearman r between the model fROI's and the human fROI's mean
      responses over the shared conditions, permutation p (exact enumeration when the
      conditions are few) and bootstrap 95 % CI (:func:`topocli.stats.agreement.profile_agreement`);
    * ``selectivity``: d' of the contrast's positive-weight (target) conditions against its
      negative-weight (other) conditions on each side, in units of that side's per-condition
      spread: the SD across held-out stimuli on the model (``response_sem * sqrt(n_stimuli)``,
      an upper bound, so d' is a lower bound) and the SD across participants on the human side;
    * ``spatial``: island Moran's I distributions (mean, SD, n islands) with Welch t and
      Mann-Whitney U between model and human and between every trained model and the control,
      plus cluster counts per 1000 searched elements and mean cluster size in % of them;
    * ``reliability``: split-half Dice of the model fROI (``dice.csv``) and of the human fROIs.

:func:`compare` computes everything (no files written); :func:`write_compare_results` writes the
results folder; :func:`run_compare` is the command.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.human import maps as hm
from topocli.stats.agreement import (
    MIN_SHARED_CONDITIONS,
    ConditionMap,
    compare_moran_distributions,
    load_condition_map,
    parse_model_froi,
    profile_agreement,
    selectivity_dprime,
)

CONTROL_NAMES = ("minilm-control",)
MODEL_PROFILE_COLUMNS = (
    "froi",
    "contrast",
    "area",
    "condition",
    "split_direction",
    "response_mean",
)
MODEL_CLUSTER_COLUMNS = ("contrast", "n_units", "moran_i")
MODEL_DICE_COLUMNS = ("froi", "dice")
METRIC_COLUMNS = [
    "model",
    "model_froi",
    "human_froi",
    "family",
    "metric",
    "value",
    "sd",
    "ci_low",
    "ci_high",
    "df",
    "p_value",
    "n",
    "method",
    "note",
]
PROFILE_COLUMNS = [
    "side",
    "source",
    "froi",
    "condition",
    "shared_condition",
    "mean",
    "sem",
    "sd",
    "n",
    "n_elements",
    "n_rois",
]
ISLAND_COLUMNS = ["human_froi", *hm.ISLAND_COLUMNS]
HUMAN_DICE_COLUMNS = ["human_froi", "parcel", "n_voxels_even", "n_voxels_odd", "dice"]
HALVES = ("even", "odd")
_SUMMARY_METRICS = ("dprime_model", "dprime_human", "dice_model", "dice_human")
FSAVERAGE5_VERTICES = 10242
_HALF_RE = re.compile(r"^(?P<key>.+?)[._-](?P<half>even|odd)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.:@/-]+$")


# --------------------------------------------------------------------------------------------
# Model results folders
# --------------------------------------------------------------------------------------------


@dataclass
class ModelResults:
    """What ``compare`` reads from one model results folder.

    Attributes
    ----------
    path : Path
        The folder.
    label : str
        How tables and figures name the model (unique among the folders compared).
    identity : dict
        ``manifest.extra.model`` (name, checkpoint, base model, mode, adaptor hash ...).
    is_control : bool
        The non-topographic control (see :func:`is_control_model`).
    profiles : pandas.DataFrame
        ``profiles.csv`` rows of the ``'mean'`` split direction, with ``response_sem``,
        ``n_units`` and ``n_stimuli`` (NaN when the file lacks them).
    clusters : pandas.DataFrame
        ``clusters.csv`` (``contrast, n_units, moran_i`` at least; empty when absent).
    dice : pandas.DataFrame or None
        ``dice.csv`` (``froi, dice``), None when absent.
    contrasts : dict of str to dict of str to float
        Contrast weights from the manifest.
    parameters : dict
        ``manifest.parameters``.
    localizer : str or None
        The localizer the folder came from.
    sheet : Sheet or None
        The sheet (``sheet.safetensors``) when the folder has one.
    """

    path: Path
    label: str
    identity: dict
    is_control: bool
    profiles: pd.DataFrame
    clusters: pd.DataFrame
    dice: pd.DataFrame | None
    contrasts: dict[str, dict[str, float]]
    parameters: dict
    localizer: str | None = None
    sheet: Any = None

    @property
    def conditions(self) -> list[str]:
        """Conditions in the profiles, in file order."""
        return list(dict.fromkeys(self.profiles["condition"]))

    @property
    def frois(self) -> list[str]:
        """Model fROIs (``contrast@area``), in file order."""
        return list(dict.fromkeys(self.profiles["froi"]))

    @property
    def n_units(self) -> int | None:
        """Units on the sheet (None without a sheet)."""
        return None if self.sheet is None else int(self.sheet.n_units)

    @property
    def mm_per_unit(self) -> float | None:
        return None if self.sheet is None else float(self.sheet.mm_per_unit)


def is_control_model(identity: Mapping[str, Any] | None) -> bool:
    """Whether a manifest's model identity is the non-topographic control.

    The control is the shipped ``minilm-control`` (identity adaptors), or any model in adaptor
    mode that was not loaded from a checkpoint (its adaptors were never trained).
    """
    identity = identity or {}
    if identity.get("name") in CONTROL_NAMES:
        return True
    return identity.get("mode") == "adaptor" and not identity.get("checkpoint")


def load_model_results(path: str | Path) -> ModelResults:
    """Read one model results folder (``topo localize`` output).

    Raises
    ------
    TopoInputError
        Not a topo results folder, no ``profiles.csv``, missing columns in any table, no
        ``'mean'`` split-direction rows, non-numeric responses or repeated (fROI, condition)
        rows.
    """
    from topocli.reporting.reader import read_manifest

    root = Path(path)
    manifest = read_manifest(root)
    profile_path = root / "profiles.csv"
    if not profile_path.is_file():
        raise TopoInputError(
            f"results folder of `topo {manifest.get('command')}` has no profiles.csv; "
            "compare needs `topo localize` results",
            root,
        )
    table = _read_table(profile_path, MODEL_PROFILE_COLUMNS, "model profile table")
    table = table[table["split_direction"].astype(str) == "mean"].copy()
    if table.empty:
        raise TopoInputError("model profile table has no 'mean' split-direction rows", profile_path)
    for column in ("froi", "contrast", "area", "condition"):
        table[column] = table[column].astype(str)
    for column in ("response_mean", "response_sem", "n_units", "n_stimuli"):
        if column not in table.columns:
            table[column] = np.nan
        table[column] = _numeric(table[column], column, profile_path)
    repeated = table.duplicated(["froi", "condition"])
    if repeated.any():
        first = tuple(table.loc[repeated, ["froi", "condition"]].iloc[0])
        raise TopoInputError(f"model profile table repeats (froi, condition) {first}", profile_path)
    cluster_path = root / "clusters.csv"
    if cluster_path.is_file():
        clusters = _read_table(cluster_path, MODEL_CLUSTER_COLUMNS, "model cluster table")
        clusters["contrast"] = clusters["contrast"].astype(str)
        for column in ("n_units", "moran_i"):
            clusters[column] = _numeric(clusters[column], column, cluster_path)
    else:
        clusters = pd.DataFrame({c: pd.Series(dtype=float) for c in MODEL_CLUSTER_COLUMNS})
    dice_path = root / "dice.csv"
    dice_table = None
    if dice_path.is_file():
        dice_table = _read_table(dice_path, MODEL_DICE_COLUMNS, "model Dice table")
        dice_table["froi"] = dice_table["froi"].astype(str)
        dice_table["dice"] = _numeric(dice_table["dice"], "dice", dice_path)
    extra = manifest.get("extra") or {}
    parameters = manifest.get("parameters") or {}
    raw_contrasts = extra.get("contrasts") or parameters.get("contrasts") or {}
    contrasts = {
        str(name): {str(c): float(w) for c, w in dict(weights).items()}
        for name, weights in dict(raw_contrasts).items()
        if isinstance(weights, Mapping)
    }
    identity = dict(extra.get("model") or {})
    localizer = extra.get("localizer") or parameters.get("localizer")
    return ModelResults(
        path=root,
        label=_model_label(identity, root),
        identity=identity,
        is_control=is_control_model(identity),
        profiles=table.reset_index(drop=True),
        clusters=clusters,
        dice=dice_table,
        contrasts=contrasts,
        parameters=dict(parameters),
        localizer=None if localizer is None else str(localizer),
        sheet=_load_sheet(root),
    )


def _model_label(identity: Mapping[str, Any], root: Path) -> str:
    name = identity.get("name")
    if name:
        return str(name)
    checkpoint = identity.get("checkpoint")
    if checkpoint:
        return Path(str(checkpoint)).name
    return root.name


def _unique_labels(models: list[ModelResults]) -> None:
    counts: dict[str, int] = {}
    for model in models:
        counts[model.label] = counts.get(model.label, 0) + 1
    for model in models:
        if counts[model.label] > 1:
            model.label = f"{model.label} ({model.path.name})"
    seen: dict[str, int] = {}
    for model in models:  # same label and same folder name: number them
        k = seen.get(model.label, 0)
        seen[model.label] = k + 1
        if k:
            model.label = f"{model.label} #{k + 1}"


def _load_sheet(root: Path) -> Any:
    from topocli.sheet import Sheet

    path = root / "sheet.safetensors"
    if not path.is_file():
        return None
    try:
        return Sheet.load(path)
    except Exception:  # a damaged sheet only costs the sheet map in the report
        return None


def _read_table(path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "empty"
        raise TopoInputError(f"cannot read {what} as CSV ({first})", path) from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise TopoInputError(f"{what} is missing columns: {', '.join(missing)}", path)
    return table


def _numeric(column: pd.Series, name: str, path: Path) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        raise TopoInputError(
            f"column '{name}' has a non-numeric value {column[bad].iloc[0]!r}", path
        )
    return values.astype(float)


# --------------------------------------------------------------------------------------------
# Human side
# --------------------------------------------------------------------------------------------


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
    :func:`topocli.human.maps.category_profiles`); its ``sem`` and ``sd`` are the mean of the fROIs'
    (exact when the fROIs co-vary perfectly across participants, an upper bound otherwise: the
    model side's fROI rule). ``sd`` is the table's ``std`` column, else ``sem * sqrt(n)``.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`topocli.human.maps.load_human_profiles`.
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
    """The human side from a fROI response table (profiles are filled in by :func:`compare`)."""
    table = hm.load_human_profiles(csv_path)
    targets = list(dict.fromkeys([*table["roi"], *table["category"]]))
    return HumanData(
        kind="table",
        source=Path(csv_path).name,
        conditions=list(dict.fromkeys(table["condition"])),
        targets=targets,
        table=table,
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
            item = hm.load_human_map(path)
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
        parcels = hm.load_parcels(parcels_dir, include=[target], split_labels=True)
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
    return {name: hm.HumanMap(mask, reference.kind, reference.affine, reference.path, name)}


def _aligned(item: Any, parcel: Any, resample: bool, cache: dict) -> Any:
    key = (id(item), parcel.shape, None if parcel.affine is None else parcel.affine.tobytes())
    if key not in cache:
        cache[key] = hm.check_alignment(item, parcel, resample)
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
            froi_even = hm.define_froi(even, parcel, top_percent)
            froi_odd = hm.define_froi(odd, parcel, top_percent)
            dice_rows.append(
                (target, name, int(froi_even.sum()), int(froi_odd.sum()), dice(froi_even, froi_odd))
            )
            if split_conditions:
                table = hm.split_half_froi_responses(
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
            froi = hm.define_froi(contrast, parcel, top_percent)
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
    _, threshold = hm.threshold_human_map(item, alpha=q, height_control="fdr", mesh=mesh)
    values = item.data
    n_elements = int(np.count_nonzero(np.isfinite(values) & (values != 0)))
    volume = item.kind == "volume"
    if not math.isfinite(threshold):
        islands = pd.DataFrame(columns=hm.ISLAND_COLUMNS)
    elif volume:
        islands = hm.volume_islands_morans_i(item, threshold, min_size, permutations, seed)
    else:
        islands = hm.surface_islands_morans_i(
            item, mesh[1], threshold, min_size, permutations, seed
        )
    cluster_table = None
    if volume and math.isfinite(threshold):
        cluster_table = hm.human_cluster_table(item, threshold, cluster_threshold=min_size)
    element_size = float(abs(np.linalg.det(item.affine[:3, :3]))) if volume else None
    return HumanSpatial(
        islands=islands,
        threshold=float(threshold),
        n_elements=n_elements,
        element="voxel" if volume else "vertex",
        element_size=element_size,
        cluster_table=cluster_table,
    )


# --------------------------------------------------------------------------------------------
# Condition maps
# --------------------------------------------------------------------------------------------


def shipped_condition_map(name: str) -> Path | None:
    """``localizers/condition_maps/<name>.toml`` when the project ships one."""
    from topocli.stimuli.localizers import library_root

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        return None
    path = library_root() / "condition_maps" / f"{name}.toml"
    return path if path.is_file() else None


def resolve_condition_map(
    spec: str | Path | None,
    models: Sequence[ModelResults],
    human_conditions: Sequence[str],
    human_targets: Sequence[str],
) -> tuple[ConditionMap, str]:
    """The condition map to use and how it was chosen.

    ``spec`` is a TOML/CSV file or the name of a shipped map. Without it: the shipped map
    named after the first model's localizer, else the identity on names found on both sides
    (a contrast maps to a human target of its own name, or to its localizer's parcel
    category).

    Returns
    -------
    (ConditionMap, str)
        The map and a sentence for the report.
    """
    if spec is not None:
        path = Path(spec)
        if not path.exists():
            shipped = shipped_condition_map(str(spec))
            if shipped is not None:
                return load_condition_map(shipped), f"shipped condition map '{spec}' ({shipped})"
        return load_condition_map(path), f"condition map {path}"
    localizer = next((m.localizer for m in models if m.localizer), None)
    shipped = shipped_condition_map(localizer) if localizer else None
    if shipped is not None:
        return (
            load_condition_map(shipped),
            f"shipped condition map of localizer '{localizer}' ({shipped})",
        )
    human_c, human_t = set(human_conditions), set(human_targets)
    cmap = ConditionMap()
    for model in models:
        for condition in model.conditions:
            if condition in human_c:
                cmap.conditions[condition] = condition
        categories = _localizer_categories(model.localizer)
        for contrast in dict.fromkeys(model.profiles["contrast"]):
            target = categories.get(contrast) if categories.get(contrast) in human_t else None
            target = target or (contrast if contrast in human_t else None)
            if target:
                cmap.frois[contrast] = target
    if not cmap.conditions:
        raise TopoInputError(
            "no condition has the same name on both sides; pass --condition-map "
            f"(model: {', '.join(models[0].conditions)}; human: {', '.join(human_conditions)})"
        )
    if not cmap.frois:
        raise TopoInputError(
            "no model contrast names a human fROI or category; pass --condition-map "
            f"(human fROIs/categories: {', '.join(list(human_targets)[:20])})"
        )
    return cmap, "same names on both sides (no condition map given)"


def _localizer_categories(name: str | None) -> dict[str, str]:
    if not name:
        return {}
    try:
        from topocli.stimuli.localizers import load_localizer

        localizer = load_localizer(name)
    except Exception:  # an unknown or custom localizer: no categories
        return {}
    out = {}
    for contrast_name, contrast in localizer.contrasts.items():
        category = contrast.parcel_category or localizer.parcel_category
        if category:
            out[contrast_name] = category
    return out


def check_condition_map(
    cmap: ConditionMap,
    models: Sequence[ModelResults],
    human_conditions: Sequence[str],
    human_targets: Sequence[str] | None,
) -> None:
    """Every condition of the map exists on both sides; targets exist on the human side.

    Raises
    ------
    TopoInputError
        One line listing every absent name by side, or fewer than 3 mapped conditions present
        on both sides.
    """
    human_c = set(human_conditions)
    problems = []
    for model in models:
        absent = [c for c in cmap.conditions if c not in set(model.conditions)]
        if absent:
            problems.append(
                f"model conditions absent from {model.path} ({model.label}): {absent} "
                f"(it has {model.conditions})"
            )
    absent_human = [h for h in cmap.conditions.values() if h not in human_c]
    if absent_human:
        problems.append(
            f"human conditions absent from the human data: {absent_human} "
            f"(it has {sorted(human_c)})"
        )
    if human_targets is not None:
        absent = sorted({t for t in cmap.frois.values() if t not in set(human_targets)})
        if absent:
            problems.append(f"human fROIs/categories absent from the human data: {absent}")
    if problems:
        raise TopoInputError("condition map: " + "; ".join(problems), cmap.path)
    shared = [h for h in cmap.conditions.values() if h in human_c]
    if len(shared) < MIN_SHARED_CONDITIONS:
        raise TopoInputError(
            f"condition map gives {len(shared)} shared condition(s) "
            f"({', '.join(shared) or 'none'}); a profile correlation needs at least "
            f"{MIN_SHARED_CONDITIONS}",
            cmap.path,
        )


# --------------------------------------------------------------------------------------------
# Pairs and metrics
# --------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """One model fROI matched with one human fROI or category."""

    model: ModelResults
    froi: str
    contrast: str
    area: str
    target: str


def match_pairs(cmap: ConditionMap, models: Sequence[ModelResults]) -> tuple[list[Pair], list[str]]:
    """Expand the condition map's fROI entries over every model folder.

    A key ``contrast@area`` matches that fROI, a bare ``contrast`` every area that has it.
    Entries a folder lacks are skipped with a note; none matching at all is an error.
    """
    pairs: list[Pair] = []
    notes: list[str] = []
    for model in models:
        froi_table = model.profiles.drop_duplicates("froi")
        for key, target in cmap.frois.items():
            contrast, area = parse_model_froi(key)
            hits = froi_table[
                (froi_table["contrast"] == contrast)
                & ((froi_table["area"] == area) if area else True)
            ]
            if hits.empty:
                notes.append(f"{model.label}: no model fROI '{key}' in {model.path}; skipped")
                continue
            for row in hits.itertuples(index=False):
                pairs.append(Pair(model, row.froi, row.contrast, row.area, target))
    if not pairs:
        have = sorted({f for m in models for f in m.frois})
        raise TopoInputError(
            f"none of the condition map's model fROIs ({', '.join(cmap.frois)}) is in the model "
            f"results (they have: {', '.join(have[:12])}{' ...' if len(have) > 12 else ''})",
            cmap.path,
        )
    return pairs, notes


def model_profile(model: ModelResults, froi: str) -> pd.DataFrame:
    """A model fROI's profile indexed by model condition: ``mean, sem, sd, n, n_elements``."""
    rows = model.profiles[model.profiles["froi"] == froi].set_index("condition")
    sd = rows["response_sem"] * np.sqrt(rows["n_stimuli"])
    out = pd.DataFrame(
        {
            "mean": rows["response_mean"],
            "sem": rows["response_sem"],
            "sd": sd,
            "n": rows["n_stimuli"],
            "n_elements": rows["n_units"],
            "n_rois": 1.0,
        }
    )
    out.index.name = "condition"
    return out


def _renamed(profile: pd.DataFrame, cmap: ConditionMap) -> pd.DataFrame:
    kept = [c for c in profile.index if c in cmap.conditions]
    out = profile.loc[kept].copy()
    out.index = pd.Index([cmap.conditions[c] for c in kept], name="condition")
    return out


def _row(**values: Any) -> dict[str, Any]:
    row = {c: np.nan for c in METRIC_COLUMNS}
    row.update({"method": "", "note": ""})
    row.update(values)
    return row


def _selectivity(
    pair: Pair, model_p: pd.DataFrame, human_p: pd.DataFrame | None, cmap: ConditionMap
) -> list[dict[str, Any]]:
    weights = pair.model.contrasts.get(pair.contrast)
    base = {"model": pair.model.label, "model_froi": pair.froi, "human_froi": pair.target}
    if not weights:
        note = "contrast weights not in the model manifest"
        return [
            _row(**base, family="selectivity", metric=f"dprime_{side}", note=note)
            for side in ("model", "human")
        ]
    shared = set(model_p.index) & (set(human_p.index) if human_p is not None else set())
    target = [cmap.conditions[c] for c, w in weights.items() if w > 0 and c in cmap.conditions]
    other = [cmap.conditions[c] for c, w in weights.items() if w < 0 and c in cmap.conditions]
    target = [c for c in target if c in shared]
    other = [c for c in other if c in shared]
    method = f"({' + '.join(target) or '?'}) vs ({' + '.join(other) or '?'})"
    rows = []
    for side, profile, spread in (
        ("model", model_p, "SD across held-out stimuli (upper bound)"),
        ("human", human_p, "SD across participants"),
    ):
        note = ""
        value = float("nan")
        if not target or not other:
            note = "the contrast's target or other conditions are not shared"
        elif profile is None:
            note = "no human profile"
        elif not np.isfinite(profile.loc[target + other, "sd"]).all():
            note = "no per-condition spread on this side"
        else:
            value = selectivity_dprime(
                profile["mean"], target, other, sem=profile["sd"].astype(float)
            )
        rows.append(
            _row(
                **base,
                family="selectivity",
                metric=f"dprime_{side}",
                value=value,
                n=len(target) + len(other),
                method=f"{method} / pooled {spread}",
                note=note,
            )
        )
    return rows


def _profile_rows(pair: Pair, agreement: dict) -> list[dict[str, Any]]:
    base = {"model": pair.model.label, "model_froi": pair.froi, "human_froi": pair.target}
    exact = agreement["permutation_exact"]
    perm = (
        f"exact permutation p over {agreement['n_permutations']} orderings"
        if exact
        else f"permutation p, {agreement['n_permutations']} random orderings"
    )
    boot = (
        f"bootstrap 95% percentile CI ({agreement['n_bootstrap_valid']} of "
        f"{agreement['n_bootstrap']} resamples had an r)"
    )
    rows = []
    for name in ("pearson", "spearman"):
        rows.append(
            _row(
                **base,
                family="profile",
                metric=f"{name}_r",
                value=agreement[f"{name}_r"],
                ci_low=agreement[f"{name}_ci_low"],
                ci_high=agreement[f"{name}_ci_high"],
                p_value=agreement[f"{name}_p_perm"],
                n=agreement["n_conditions"],
                method=f"{perm}; {boot}; conditions: {', '.join(agreement['conditions'])}",
                note=agreement["note"],
            )
        )
    return rows


def _model_spatial(model: ModelResults, contrast: str) -> dict[str, Any]:
    table = model.clusters[model.clusters["contrast"] == contrast]
    sizes = table["n_units"].to_numpy(dtype=float)
    return {
        "moran": table["moran_i"].to_numpy(dtype=float),
        "sizes": sizes,
        "n_elements": model.n_units,
        "element": "unit",
        "element_size": None if model.mm_per_unit is None else model.mm_per_unit**2,
    }


def _spatial_rows(
    base: dict[str, Any], side: str, moran: np.ndarray, sizes: np.ndarray, n_elements: int | None
) -> list[dict[str, Any]]:
    finite = moran[np.isfinite(moran)]
    rows = [
        _row(
            **base,
            family="spatial",
            metric=f"moran_i_{side}",
            value=float(finite.mean()) if finite.size else np.nan,
            sd=float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
            n=int(finite.size),
            method="island Moran's I (mean, SD over islands)",
            note="" if finite.size else "no island",
        )
    ]
    if n_elements:
        rows.append(
            _row(
                **base,
                family="spatial",
                metric=f"clusters_per_1000_{side}",
                value=1000.0 * sizes.size / n_elements,
                n=int(sizes.size),
                method=f"clusters per 1000 searched elements ({n_elements})",
            )
        )
        pct = 100.0 * sizes / n_elements
        rows.append(
            _row(
                **base,
                family="spatial",
                metric=f"cluster_size_pct_{side}",
                value=float(pct.mean()) if pct.size else np.nan,
                sd=float(pct.std(ddof=1)) if pct.size > 1 else np.nan,
                n=int(sizes.size),
                method="mean cluster size, % of searched elements",
            )
        )
    return rows


def _moran_test_rows(
    base: dict[str, Any], a: np.ndarray, b: np.ndarray, what: str
) -> list[dict[str, Any]]:
    test = compare_moran_distributions(a, b)
    n = f"{test['n_a']} vs {test['n_b']} islands"
    return [
        _row(
            **base,
            family="spatial",
            metric=f"moran_welch_t_{what}",
            value=test["welch_t"],
            df=test["welch_df"],
            p_value=test["welch_p"],
            n=test["n_a"] + test["n_b"],
            method=f"Welch t of island Moran's I ({n})",
            note="" if np.isfinite(test["welch_t"]) else "needs >= 2 islands a side",
        ),
        _row(
            **base,
            family="spatial",
            metric=f"moran_mannwhitney_u_{what}",
            value=test["mannwhitney_u"],
            p_value=test["mannwhitney_p"],
            n=test["n_a"] + test["n_b"],
            method=f"two-sided Mann-Whitney U of island Moran's I ({n})",
            note="" if np.isfinite(test["mannwhitney_u"]) else "needs >= 1 island a side",
        ),
    ]


@dataclass
class CompareResult:
    """Everything :func:`compare` computed; written by :func:`write_compare_results`."""

    models: list[ModelResults]
    human: HumanData
    cmap: ConditionMap
    cmap_source: str
    pairs: list[Pair]
    metrics: pd.DataFrame
    profiles: pd.DataFrame
    agreements: dict[tuple[str, str, str], dict]
    notes: list[str]
    params: dict[str, Any]

    def summary_table(self) -> pd.DataFrame:
        """One row per fROI pair: r, p, CI (Pearson and Spearman), d' both sides, Dice."""
        values = {
            (r.model, r.model_froi, r.human_froi, r.metric): r.value
            for r in self.metrics.itertuples(index=False)
        }
        rows = []
        for pair in self.pairs:
            key = (pair.model.label, pair.froi, pair.target)
            agreement = self.agreements[key]
            row = {m: values.get((*key, m), np.nan) for m in _SUMMARY_METRICS}
            rows.append(
                {
                    "model": pair.model.label,
                    "model_froi": pair.froi,
                    "human_froi": pair.target,
                    "n_conditions": agreement["n_conditions"],
                    "pearson_r": agreement["pearson_r"],
                    "pearson_p": agreement["pearson_p_perm"],
                    "pearson_ci_low": agreement["pearson_ci_low"],
                    "pearson_ci_high": agreement["pearson_ci_high"],
                    "spearman_r": agreement["spearman_r"],
                    "spearman_p": agreement["spearman_p_perm"],
                    "spearman_ci_low": agreement["spearman_ci_low"],
                    "spearman_ci_high": agreement["spearman_ci_high"],
                    "dprime_model": row.get("dprime_model", np.nan),
                    "dprime_human": row.get("dprime_human", np.nan),
                    "dice_model": row.get("dice_model", np.nan),
                    "dice_human": row.get("dice_human", np.nan),
                }
            )
        return pd.DataFrame(rows)


def compare(
    model_dirs: Sequence[str | Path],
    human_profiles: str | Path | None = None,
    human_maps: Sequence[str | Path] | None = None,
    parcels: str | Path | None = None,
    condition_map: str | Path | None = None,
    permutations: int = 10000,
    bootstrap: int = 10000,
    seed: int = 0,
    resample: bool = False,
    mesh: str | Path | None = None,
    human_q: float | None = None,
    top_percent: float | None = None,
) -> CompareResult:
    """Compare model localizer results with human fROI data (see the module docstring).

    Parameters
    ----------
    model_dirs : sequence of str or Path
        ``topo localize`` results folders.
    human_profiles : str or Path, optional
        Human fROI response table; exactly one of ``human_profiles`` and ``human_maps``.
    human_maps : sequence of str or Path, optional
        ``[KEY=]PATH`` entries (:func:`parse_map_specs`).
    parcels : str or Path, optional
        Parcel folder for ``human_maps``.
    condition_map : str or Path, optional
        Condition map file or shipped name (:func:`resolve_condition_map`).
    permutations, bootstrap : int
        Profile correlation: permutation orderings (exact when fewer would do) and bootstrap
        resamples.
    seed : int
        Seeds the permutations, bootstraps and human island permutations.
    resample : bool
        Resample human maps onto parcel grids when they differ (else refuse).
    mesh : str or Path, optional
        GIFTI geometry for surface maps.
    human_q : float, optional
        FDR level for human islands (default: the first model folder's ``q``, else 0.05).
    top_percent : float, optional
        Human fROI size (default: the first model folder's ``top_percent``, else 10).

    Returns
    -------
    CompareResult

    Raises
    ------
    TopoInputError
        Any bad input, in one line (see the issue's list: misaligned maps, absent conditions,
        missing columns, empty parcels, fewer than 3 shared conditions).
    """
    if (human_profiles is None) == (not human_maps):
        raise TopoInputError("give exactly one of --human-profiles CSV and --human-maps MAP ...")
    if parcels is not None and not human_maps:
        raise TopoInputError("--parcels goes with --human-maps")
    if permutations < 0 or bootstrap < 0:
        raise TopoInputError("--permutations and --bootstrap must be >= 0")
    if seed < 0:
        raise TopoInputError(f"--seed must be >= 0, got {seed}")
    if human_q is not None and not 0 < human_q < 1:
        raise TopoInputError(f"--human-q must be in (0, 1), got {human_q}")
    if top_percent is not None and not 0 < top_percent <= 100:
        raise TopoInputError(f"--top-percent must be in (0, 100], got {top_percent}")
    if not model_dirs:
        raise TopoInputError("give at least one --model-results folder")
    models = [load_model_results(d) for d in model_dirs]
    _unique_labels(models)
    first = models[0].parameters
    q = float(human_q if human_q is not None else first.get("q") or 0.05)
    top = float(top_percent if top_percent is not None else first.get("top_percent") or 10.0)
    min_size = int(first.get("min_cluster") or 8)
    island_permutations = int(first.get("permutations") or 999)
    notes: list[str] = []
    if human_profiles is not None:
        human = load_human_table(human_profiles)
        cmap, cmap_source = resolve_condition_map(
            condition_map, models, human.conditions, human.targets
        )
        check_condition_map(cmap, models, human.conditions, human.targets)
        pairs, skipped = match_pairs(cmap, models)
        for target in dict.fromkeys(p.target for p in pairs):
            human.profiles[target] = table_target_profile(human.table, target)
            human.notes.setdefault(target, []).append(
                "human profile from the table (split-half fROIs as its authors defined them); "
                "no human islands or Dice without maps"
            )
    else:
        specs = parse_map_specs(human_maps)
        keys = sorted({s.key for s in specs})
        cmap, cmap_source = resolve_condition_map(condition_map, models, keys, keys)
        classify_map_keys(specs, cmap)
        map_conditions = [s.key for s in specs if s.key in set(cmap.conditions.values())]
        check_condition_map(cmap, models, map_conditions, None)
        pairs, skipped = match_pairs(cmap, models)
        human = human_from_maps(
            specs,
            cmap,
            list(dict.fromkeys(p.target for p in pairs)),
            parcels,
            resample,
            mesh,
            top,
            q,
            min_size,
            island_permutations,
            seed,
        )
    notes.extend(skipped)
    pairs = _pairs_with_human_profiles(pairs, human, notes)
    if len(models) > 1 and not (
        any(m.is_control for m in models) and any(not m.is_control for m in models)
    ):
        kind = "controls" if all(m.is_control for m in models) else "trained models"
        notes.append(
            f"all {len(models)} model folders are {kind}: no trained-vs-control Moran test"
        )
    metrics: list[dict[str, Any]] = []
    agreements: dict[tuple[str, str, str], dict] = {}
    for pair in pairs:
        key = (pair.model.label, pair.froi, pair.target)
        model_p = _renamed(model_profile(pair.model, pair.froi), cmap)
        human_p = human.profiles[pair.target]
        agreement = profile_agreement(
            model_p["mean"], human_p["mean"], permutations, bootstrap, seed
        )
        agreements[key] = agreement
        metrics.extend(_profile_rows(pair, agreement))
        metrics.extend(_selectivity(pair, model_p, human_p, cmap))
        metrics.extend(_reliability_rows(pair, human))
    metrics.extend(_all_spatial_rows(pairs, models, human))
    params = {
        "model_results": [str(Path(d)) for d in model_dirs],
        "human_profiles": None if human_profiles is None else str(human_profiles),
        "human_maps": None if not human_maps else [str(m) for m in human_maps],
        "parcels": None if parcels is None else str(parcels),
        "condition_map": None if condition_map is None else str(condition_map),
        "condition_map_used": cmap.path,
        "condition_map_source": cmap_source,
        "conditions": dict(cmap.conditions),
        "frois": dict(cmap.frois),
        "permutations": int(permutations),
        "bootstrap": int(bootstrap),
        "seed": int(seed),
        "resample": bool(resample),
        "mesh": None if mesh is None else str(mesh),
        "human_q": q,
        "top_percent": top,
        "min_island": min_size,
        "island_permutations": island_permutations,
    }
    table = pd.DataFrame(metrics, columns=METRIC_COLUMNS)
    table["n"] = pd.array(table["n"].to_numpy(dtype=float), dtype="Int64")
    return CompareResult(
        models=models,
        human=human,
        cmap=cmap,
        cmap_source=cmap_source,
        pairs=pairs,
        metrics=table,
        profiles=_profiles_long(pairs, human, cmap),
        agreements=agreements,
        notes=notes,
        params=params,
    )


def _pairs_with_human_profiles(pairs: list[Pair], human: HumanData, notes: list[str]) -> list[Pair]:
    """Pairs whose human target has a profile; the others are dropped with a note."""
    missing = [t for t in dict.fromkeys(p.target for p in pairs) if t not in human.profiles]
    for target in missing:
        why = "; ".join(human.notes.get(target, [])) or "no data"
        notes.append(f"human '{target}' has no profile ({why}); its pairs are skipped")
    kept = [p for p in pairs if p.target in human.profiles]
    if not kept:
        raise TopoInputError(
            "no human fROI profile could be built: " + " | ".join(notes[-len(missing) :])
        )
    return kept


def _reliability_rows(pair: Pair, human: HumanData) -> list[dict[str, Any]]:
    base = {"model": pair.model.label, "model_froi": pair.froi, "human_froi": pair.target}
    rows = []
    table = pair.model.dice
    hit = None if table is None else table[table["froi"] == pair.froi]
    if hit is not None and len(hit):
        rows.append(
            _row(
                **base,
                family="reliability",
                metric="dice_model",
                value=float(hit["dice"].iloc[0]),
                n=1,
                method="Dice of the even- and odd-defined model fROIs",
            )
        )
    else:
        rows.append(
            _row(**base, family="reliability", metric="dice_model", note="no dice.csv entry")
        )
    parcels = human.dice.get(pair.target)
    if parcels is not None and len(parcels):
        values = parcels["dice"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        rows.append(
            _row(
                **base,
                family="reliability",
                metric="dice_human",
                value=float(finite.mean()) if finite.size else np.nan,
                sd=float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
                n=int(finite.size),
                method="Dice of the even- and odd-defined human fROIs, mean over parcels",
            )
        )
    else:
        note = "needs even and odd human contrast maps"
        rows.append(_row(**base, family="reliability", metric="dice_human", note=note))
    return rows


def _all_spatial_rows(
    pairs: Sequence[Pair], models: Sequence[ModelResults], human: HumanData
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    groups = list(dict.fromkeys((p.model.label, p.contrast, p.target) for p in pairs))
    by_label = {m.label: m for m in models}
    for label, contrast, target in groups:
        model = by_label[label]
        base = {"model": label, "model_froi": contrast, "human_froi": target}
        side = _model_spatial(model, contrast)
        rows.extend(_spatial_rows(base, "model", side["moran"], side["sizes"], side["n_elements"]))
        spatial = human.spatial.get(target)
        if spatial is None:
            continue
        sizes = spatial.islands["n_units"].to_numpy(dtype=float)
        moran = spatial.islands["moran_i"].to_numpy(dtype=float)
        rows.extend(_spatial_rows(base, "human", moran, sizes, spatial.n_elements))
        rows.extend(_moran_test_rows(base, side["moran"], moran, "model_vs_human"))
    controls = [m for m in models if m.is_control]
    for trained in (m for m in models if not m.is_control):
        for control in controls:
            shared = [
                c
                for c in dict.fromkeys(p.contrast for p in pairs if p.model is trained)
                if c in set(control.profiles["contrast"])
            ]
            for contrast in shared:
                base = {
                    "model": f"{trained.label} vs {control.label}",
                    "model_froi": contrast,
                    "human_froi": "",
                }
                a = _model_spatial(trained, contrast)["moran"]
                b = _model_spatial(control, contrast)["moran"]
                rows.extend(_moran_test_rows(base, a, b, "trained_vs_control"))
    return rows


def _profiles_long(pairs: Sequence[Pair], human: HumanData, cmap: ConditionMap) -> pd.DataFrame:
    frames = []
    seen: set[tuple[str, str]] = set()
    for pair in pairs:
        if (pair.model.label, pair.froi) in seen:
            continue
        seen.add((pair.model.label, pair.froi))
        profile = model_profile(pair.model, pair.froi).reset_index()
        profile.insert(0, "side", "model")
        profile.insert(1, "source", pair.model.label)
        profile.insert(2, "froi", pair.froi)
        profile.insert(4, "shared_condition", profile["condition"].map(cmap.conditions))
        frames.append(profile)
    for target in dict.fromkeys(p.target for p in pairs):
        if target not in human.profiles:
            continue
        profile = human.profiles[target].reset_index()
        profile.insert(0, "side", "human")
        profile.insert(1, "source", human.source)
        profile.insert(2, "froi", target)
        shared = set(cmap.conditions.values())
        profile.insert(
            4, "shared_condition", profile["condition"].where(profile["condition"].isin(shared))
        )
        frames.append(profile)
    return pd.concat(frames, ignore_index=True)[PROFILE_COLUMNS]


# --------------------------------------------------------------------------------------------
# Report and results folder
# --------------------------------------------------------------------------------------------


def _png(fig: Any) -> bytes:
    from topocli.reporting.plotting import figure_to_bytes

    return figure_to_bytes(fig, "png", dpi=110)


def side_by_side(left: bytes, right: bytes, gap: int = 16, shrink: float = 0.6) -> bytes:
    """Two PNG images next to each other as PNG bytes.

    The taller one is scaled down towards the shorter one's height, by at most ``1 - shrink``
    (a wide glass brain beside a tall sheet map both stay readable); the shorter one keeps its
    size and is centred vertically.
    """
    from PIL import Image

    with Image.open(io.BytesIO(left)) as a, Image.open(io.BytesIO(right)) as b:
        a, b = a.convert("RGB"), b.convert("RGB")
    short, tall = sorted((a.height, b.height))
    target = max(short, round(shrink * tall))
    a, b = (_to_height(im, target) if im.height > target else im for im in (a, b))
    height = max(a.height, b.height)
    canvas = Image.new("RGB", (a.width + gap + b.width, height), "white")
    canvas.paste(a, (0, (height - a.height) // 2))
    canvas.paste(b, (a.width + gap, (height - b.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_height(image: Any, height: int) -> Any:
    from PIL import Image

    if image.height == height:
        return image
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _profile_figures(
    result: CompareResult, label: str, contrast: str, target: str, pairs: list[Pair]
) -> bytes:
    from topocli.reporting.plotting import plot_profile_bars

    conditions = result.agreements[(label, pairs[0].froi, target)]["conditions"]
    model_rows = []
    for pair in pairs:
        profile = _renamed(model_profile(pair.model, pair.froi), result.cmap)
        profile = profile.reindex(conditions)
        model_rows.append(profile.assign(area=pair.area).reset_index())
    model_table = pd.concat(model_rows, ignore_index=True)
    hue = "area" if len(pairs) > 1 else None
    width = max(4.0, min(10.0, 1.8 + 0.3 * len(conditions) * len(pairs)))
    model_fig = plot_profile_bars(
        model_table,
        x="condition",
        y="mean",
        hue=hue,
        err="sem",
        title=f"model {label}: {contrast} fROI(s)",
        ylabel="response (held-out)",
        figsize=(width, 3.6),
    )
    human_table = result.human.profiles[target].reindex(conditions).reset_index()
    human_fig = plot_profile_bars(
        human_table,
        x="condition",
        y="mean",
        err="sem",
        title=f"human: {target}",
        ylabel="response (beta)" if result.human.kind == "table" else "response",
        figsize=(max(4.0, 1.8 + 0.9 * len(conditions)), 3.6),
    )
    return side_by_side(_png(model_fig), _png(human_fig))


def _model_map_png(model: ModelResults, contrast: str) -> bytes | None:
    from topocli.reporting.plotting import plot_sheet_map
    from topocli.reporting.reader import load_sheet_maps

    path = model.path / "tmap.nii.gz"
    if not path.is_file():
        return None
    try:
        values, names, sheet = load_sheet_maps(path)
    except TopoInputError:
        return None
    if contrast not in names:
        return None
    t = values[names.index(contrast)]
    labels = None
    units = model.path / "units.csv"
    if units.is_file():
        table = pd.read_csv(units, usecols=lambda c: c in ("contrast", "unit", "cluster"))
        if {"contrast", "unit", "cluster"} <= set(table.columns):
            rows = table[table["contrast"].astype(str) == contrast]
            if len(rows) == sheet.n_units:
                labels = np.zeros(sheet.n_units, dtype=np.int64)
                labels[rows["unit"].to_numpy(dtype=int)] = rows["cluster"].fillna(0).astype(int)
    finite = np.abs(t[np.isfinite(t)])
    vmax = float(np.percentile(finite, 99)) if finite.size else None
    fig = plot_sheet_map(
        t,
        sheet,
        title=f"model {model.label}: {contrast} t; clusters outlined",
        outline_labels=labels,
        colorbar_label="t",
        vmax=vmax or None,
    )
    return _png(fig)


def _human_map_png(item: Any, title: str, threshold: float | None, mesh: tuple | None) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from nilearn import plotting

    shown = threshold if threshold is not None and math.isfinite(threshold) else None
    if item.kind == "volume":
        fig = Figure(figsize=(7.5, 2.8))
        FigureCanvasAgg(fig)
        plotting.plot_glass_brain(
            item.to_nifti(),
            figure=fig,
            display_mode="lzry",
            threshold=shown,
            plot_abs=False,
            colorbar=True,
            title=title,
        )
    else:
        fig = Figure(figsize=(4.5, 4.0))
        FigureCanvasAgg(fig)
        plotting.plot_surf_stat_map(
            mesh,
            np.asarray(item.data, dtype=float),
            hemi="left",
            view="lateral",
            figure=fig,
            threshold=shown,
            colorbar=True,
            title=title,
        )
    return _png(fig)


def _moran_figure(result: CompareResult) -> Any | None:
    from topocli.reporting.plotting import STREAM_COLORS, new_figure

    groups: list[tuple[str, np.ndarray]] = []
    for model in result.models:
        for contrast in dict.fromkeys(p.contrast for p in result.pairs if p.model is model):
            values = _model_spatial(model, contrast)["moran"]
            groups.append((f"{model.label}\n{contrast}", values[np.isfinite(values)]))
    for target, spatial in result.human.spatial.items():
        values = spatial.islands["moran_i"].to_numpy(dtype=float)
        groups.append((f"human\n{target}", values[np.isfinite(values)]))
    if not any(v.size for _, v in groups):
        return None
    fig = new_figure((max(4.0, 1.1 * len(groups) + 1.5), 3.6))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for k, (_, values) in enumerate(groups):
        color = STREAM_COLORS[k % len(STREAM_COLORS)]
        if values.size:
            ax.scatter(k + rng.uniform(-0.18, 0.18, values.size), values, s=14, color=color)
            ax.hlines(values.mean(), k - 0.3, k + 0.3, color="#222222", lw=1.6)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], fontsize=7)
    ax.set_ylabel("island Moran's I")
    ax.set_title("Island Moran's I per island (bar: mean)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _fmt(value: Any, spec: str = ".3g") -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "—"
    return format(x, spec) if math.isfinite(x) else "—"


def build_report(result: CompareResult, command_line: str | None = None) -> Any:
    """The ``report.html`` of a compare run."""
    from topocli.reporting.html import Report

    labels = ", ".join(f"{m.label}{' (control)' if m.is_control else ''}" for m in result.models)
    rep = Report(
        "topo compare: model vs human localizer",
        subtitle=f"{labels} vs {result.human.source}",
        command=command_line,
    )
    p = result.params
    rep.add_section("Summary")
    rep.add_key_values(
        {
            "model results": "; ".join(
                f"{m.label}: {m.path}" + (" — non-topographic control" if m.is_control else "")
                for m in result.models
            ),
            "human data": result.human.source
            + (f" (parcels {p['parcels']})" if p.get("parcels") else ""),
            "condition map": result.cmap_source,
            "conditions (model → human)": ", ".join(
                f"{k} → {v}" for k, v in result.cmap.conditions.items()
            ),
            "fROIs (model → human)": ", ".join(f"{k} → {v}" for k, v in result.cmap.frois.items()),
            "profile agreement": f"Pearson and Spearman r; permutation p ({p['permutations']} "
            f"orderings, exact when n! is fewer); bootstrap 95% CI ({p['bootstrap']} resamples); "
            f"seed {p['seed']}",
        }
    )
    summary = result.summary_table()
    rep.add_table(
        summary,
        "Per fROI pair: profile correlation (p: permutation; CI: bootstrap 95%), selectivity "
        "d' on each side, split-half Dice",
        csv_name="metrics.csv",
    )
    for note in _limits(result):
        rep.add_note(note, "warning")
    groups: dict[tuple[str, str, str], list[Pair]] = {}
    for pair in result.pairs:
        groups.setdefault((pair.model.label, pair.contrast, pair.target), []).append(pair)
    model_maps: dict[tuple[str, str], bytes | None] = {}
    for (label, contrast, target), pairs in groups.items():
        rep.add_section(f"{label}: {contrast} ↔ human {target}")
        for note in result.human.notes.get(target, []):
            rep.add_paragraph(note)
        rep.add_image(
            _profile_figures(result, label, contrast, target, pairs),
            f"Left: the model's {contrast} fROI profile(s) (held-out halves, both directions "
            f"averaged; error bars: SEM bound). Right: human {target} "
            "(error bars: SEM across participants where known). Shared conditions only, "
            "in human names.",
        )
        model = pairs[0].model
        if (label, contrast) not in model_maps:
            model_maps[(label, contrast)] = _model_map_png(model, contrast)
        model_png = model_maps[(label, contrast)]
        human_item = result.human.maps.get(target)
        if human_item is not None and model_png is not None:
            spatial = result.human.spatial.get(target)
            threshold = spatial.threshold if spatial is not None else None
            human_png = _human_map_png(human_item, f"human {target}", threshold, result.human.mesh)
            rep.add_image(
                side_by_side(human_png, model_png),
                f"Left: human {target} contrast map (nilearn; thresholded at the FDR "
                f"q < {p['human_q']:g} level when anything survives). Right: the model's "
                f"{contrast} t map on the sheet with its clusters.",
            )
        elif model_png is not None:
            rep.add_image(model_png, f"The model's {contrast} t map on the sheet with its clusters")
        table = result.metrics[
            (result.metrics["model"] == label)
            & (result.metrics["human_froi"] == target)
            & (result.metrics["model_froi"].isin([pr.froi for pr in pairs] + [contrast]))
        ]
        rep.add_table(
            table.drop(columns=["model", "human_froi"]),
            f"Metrics of {label} {contrast} vs human {target}",
            csv_name="metrics.csv",
        )
    rep.add_section(
        "Spatial organisation",
        "Island Moran's I of every cluster (model: clusters.csv; human: supra-threshold "
        "islands of the contrast map), Welch t and Mann-Whitney U between the distributions, "
        "and cluster counts and sizes relative to the searched surface (sheet units, brain "
        "voxels or vertices).",
    )
    fig = _moran_figure(result)
    if fig is not None:
        rep.add_figure(fig, "Island Moran's I per island and group")
    spatial = result.metrics[result.metrics["family"] == "spatial"]
    rep.add_table(spatial, "Spatial metrics", csv_name="metrics.csv")
    if result.notes:
        rep.add_section("Notes")
        for note in result.notes:
            rep.add_paragraph(note)
    return rep


def _limits(result: CompareResult) -> list[str]:
    """Plain statements of what limits the comparison."""
    out = []
    ns = sorted({a["n_conditions"] for a in result.agreements.values()})
    exact = [a for a in result.agreements.values() if a["permutation_exact"]]
    if exact:
        orderings = min(a["n_permutations"] for a in exact)
        out.append(
            f"Profiles share {', '.join(map(str, ns))} condition(s): the exact permutation test "
            f"has only n! = {orderings} orderings, so p can be no smaller than "
            f"1/{orderings} = {1 / orderings:.3g} ({2 / orderings:.3g} for |r| = 1, whose "
            "reversal ties it), and bootstrap CIs over so few conditions are wide (resamples "
            "hold 2-3 distinct conditions, where r is often +-1)."
        )
    outside = _conditions_outside_contrasts(result)
    if outside:
        out.append(
            "The conditions that define a contrast are also in its fROI profile: a fROI "
            "selected for the contrast (even on held-out data) orders them alike on both sides "
            "by construction. Only the other shared conditions test the profile freely: "
            + "; ".join(f"{c}: {', '.join(names) or 'none'}" for c, names in outside.items())
            + "."
        )
    controls = [m.label for m in result.models if m.is_control]
    trained = [m.label for m in result.models if not m.is_control]
    if controls and not trained:
        out.append(
            f"Every model compared is a non-topographic control ({', '.join(controls)}): "
            "untrained adaptors, no spatial loss."
        )
    for model in result.models:
        asked = model.parameters.get("model", "?")
        if model.is_control and asked in (None, "", "minilm"):
            out.append(
                f"{model.label} ({model.path}) was localized with the default model "
                f"({'none given' if not asked else asked!r}), which resolved to the control: "
                "the trained topographic default is not installed."
            )
    if result.human.kind == "table":
        out.append(
            "The human side is a table of group fROI responses: no human islands, cluster "
            "counts or split-half Dice can be computed from it."
        )
    return out


def _conditions_outside_contrasts(result: CompareResult) -> dict[str, list[str]]:
    """Per contrast, the shared (human-named) conditions that carry no contrast weight."""
    out: dict[str, list[str]] = {}
    for pair in result.pairs:
        weights = pair.model.contrasts.get(pair.contrast)
        if not weights or pair.contrast in out:
            continue
        inside = {result.cmap.conditions.get(c) for c, w in weights.items() if w}
        shared = result.agreements[(pair.model.label, pair.froi, pair.target)]["conditions"]
        out[pair.contrast] = [c for c in shared if c not in inside]
    return out


def write_compare_results(rf: Any, result: CompareResult, command_line: str | None = None) -> None:
    """Write metrics.csv, profiles.csv, human tables, report.html and the manifest."""
    rf.write_csv("metrics.csv", result.metrics)
    rf.write_csv("profiles.csv", result.profiles)
    human = result.human
    if human.spatial:
        islands = [s.islands.assign(human_froi=t)[ISLAND_COLUMNS] for t, s in human.spatial.items()]
        islands_table = pd.concat(islands, ignore_index=True)
        islands_table["peak_index"] = islands_table["peak_index"].map(str)
        rf.write_csv("human_islands.csv", islands_table)
        tables = [
            s.cluster_table.assign(human_froi=t)
            for t, s in human.spatial.items()
            if s.cluster_table is not None
        ]
        if tables:
            rf.write_csv("human_clusters.csv", pd.concat(tables, ignore_index=True))
    if human.dice:
        rf.write_csv("human_dice.csv", pd.concat(human.dice.values(), ignore_index=True))
    rf.write_report(build_report(result, command_line))
    inputs: dict[str, Any] = {
        "model_results": [str(m.path) for m in result.models],
        "condition_map": result.cmap.path,
    }
    p = result.params
    if p["human_profiles"]:
        inputs["human_profiles"] = p["human_profiles"]
    if p["human_maps"]:
        inputs["human_maps"] = [str(s.path) for s in parse_map_specs(p["human_maps"])]
    if p["parcels"]:
        inputs["parcels"] = p["parcels"]
    if p["mesh"]:
        inputs["mesh"] = p["mesh"]
    rf.write_manifest(
        "compare",
        p,
        inputs,
        seed=p["seed"],
        extra={
            "models": [
                {
                    "label": m.label,
                    "path": str(m.path),
                    "is_control": m.is_control,
                    "identity": m.identity,
                    "localizer": m.localizer,
                }
                for m in result.models
            ],
            "pairs": [
                {"model": pr.model.label, "model_froi": pr.froi, "human_froi": pr.target}
                for pr in result.pairs
            ],
            "human_kind": human.kind,
            "notes": result.notes,
            "summary": result.summary_table().to_dict(orient="records"),
        },
    )


def run_compare(
    model_results: Sequence[Path],
    out: Path,
    human_profiles: Path | None = None,
    human_maps: Sequence[str] | None = None,
    parcels: Path | None = None,
    condition_map: str | None = None,
    permutations: int = 10000,
    bootstrap: int = 10000,
    seed: int = 0,
    resample: bool = False,
    mesh: Path | None = None,
    human_q: float | None = None,
    top_percent: float | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    console: Any = None,
    command_line: str | None = None,
) -> Path:
    """``topo compare``: compute, then write one results folder atomically; returns ``out``."""
    from topocli.reporting.results import ResultsFolder

    result = compare(
        model_results,
        human_profiles,
        human_maps,
        parcels,
        condition_map,
        permutations,
        bootstrap,
        seed,
        resample,
        mesh,
        human_q,
        top_percent,
    )
    with ResultsFolder(out, overwrite) as rf:
        write_compare_results(rf, result, command_line)
    if not quiet and console is not None:
        print_summary(result, console)
        console.print(f"wrote {out}")
    return Path(out)


def print_summary(result: CompareResult, console: Any) -> None:
    """A rich table: per fROI pair r, permutation p and bootstrap CI."""
    from rich.table import Table

    table = Table(title="Profile agreement (Pearson r; permutation p; bootstrap 95% CI)")
    for column in ("model", "model fROI", "human", "n", "r", "p", "95% CI", "Spearman", "d' m/h"):
        table.add_column(
            column, justify="left" if column in ("model", "model fROI", "human") else "right"
        )
    for row in result.summary_table().itertuples(index=False):
        table.add_row(
            row.model,
            row.model_froi,
            row.human_froi,
            str(row.n_conditions),
            _fmt(row.pearson_r),
            _fmt(row.pearson_p),
            f"[{_fmt(row.pearson_ci_low)}, {_fmt(row.pearson_ci_high)}]",
            _fmt(row.spearman_r),
            f"{_fmt(row.dprime_model)} / {_fmt(row.dprime_human)}",
        )
    console.print(table)
    for note in [*_limits(result), *result.notes]:
        console.print(f"note: {note}")
