"""The model side of ``topo compare``: one ``topo localize`` results folder per model.

Every folder is read through :func:`topocli.reporting.reader.read_results`, the reader every
command uses for an earlier results folder (manifest checks, tables with one-line errors). What is
checked here is what compare itself relies on: held-out ``'mean'`` profile rows, numeric responses
and Moran's I, one row per (fROI, condition), and which model made the folder (trained or the
non-topographic control).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.models.shipped import CONTROL_OF
from topocli.reporting.reader import Results, read_results
from topocli.stats.froi import PROFILE_COLUMNS

CONTROL_NAMES = tuple(CONTROL_OF)
# the columns compare needs of a profiles.csv: the fROI, the condition and the held-out response
MODEL_PROFILE_COLUMNS = tuple(PROFILE_COLUMNS[: PROFILE_COLUMNS.index("response_mean") + 1])
MODEL_CLUSTER_COLUMNS = ("contrast", "n_units", "moran_i")
MODEL_DICE_COLUMNS = ("froi", "dice")


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
    folder : Results or None
        The folder as the reader returned it (the report reads its ``units.csv`` through it).
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
    folder: Results | None = None

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

    The control is a shipped ``NAME-control`` or any model whose adaptors are all the
    identity (``identity_adaptors``: a saved control checkpoint too), or any model in adaptor
    mode that was not loaded from a checkpoint (its adaptors were never trained).
    """
    identity = identity or {}
    if identity.get("name") in CONTROL_NAMES or identity.get("identity_adaptors"):
        return True
    return identity.get("mode") == "adaptor" and not identity.get("checkpoint")


def load_model_results(path: str | Path) -> ModelResults:
    """Read one model results folder (``topo localize`` output).

    Parameters
    ----------
    path : str or Path
        The folder; read with :func:`topocli.reporting.reader.read_results`.

    Returns
    -------
    ModelResults
        Labelled after the model (made unique among folders by :func:`unique_labels`).

    Raises
    ------
    TopoInputError
        Not a topo results folder, no ``profiles.csv``, missing columns in any table, no
        ``'mean'`` split-direction rows, non-numeric responses or repeated (fROI, condition)
        rows.
    """
    results = read_results(path)
    root = results.root
    if not results.has("profiles.csv"):
        raise TopoInputError(
            f"results folder of `topo {results.command}` has no profiles.csv; "
            "compare needs `topo localize` results",
            root,
        )
    identity = results.identity or {}
    return ModelResults(
        path=root,
        label=_model_label(identity, root),
        identity=identity,
        is_control=is_control_model(identity),
        profiles=_held_out_profiles(results),
        clusters=_clusters(results),
        dice=_dice(results),
        contrasts=results.contrasts,
        parameters=results.parameters,
        localizer=results.localizer,
        sheet=_load_sheet(results),
        folder=results,
    )


def _held_out_profiles(results: Results) -> pd.DataFrame:
    """``profiles.csv``: the ``'mean'`` rows, i.e. both held-out directions averaged."""
    path = results.path("profiles.csv")
    table = results.table("profiles.csv", MODEL_PROFILE_COLUMNS, "model profile table")
    table = table[table["split_direction"].astype(str) == "mean"].copy()
    if table.empty:
        raise TopoInputError("model profile table has no 'mean' split-direction rows", path)
    for column in ("froi", "contrast", "area", "condition"):
        table[column] = table[column].astype(str)
    # older folders lack the spread and sizes: NaN keeps d' and the figures' error bars honest
    for column in ("response_mean", "response_sem", "n_units", "n_stimuli"):
        if column not in table.columns:
            table[column] = np.nan
        table[column] = _numeric(table[column], column, path)
    repeated = table.duplicated(["froi", "condition"])
    if repeated.any():
        first = tuple(table.loc[repeated, ["froi", "condition"]].iloc[0])
        raise TopoInputError(f"model profile table repeats (froi, condition) {first}", path)
    return table.reset_index(drop=True)


def _clusters(results: Results) -> pd.DataFrame:
    """``clusters.csv`` (contrast, size, island Moran's I); an empty table when absent."""
    if not results.has("clusters.csv"):
        return pd.DataFrame({c: pd.Series(dtype=float) for c in MODEL_CLUSTER_COLUMNS})
    # Results.table, not Results.cluster_table: compare needs the contrast column itself (no ''
    # stand-in), and cluster_table reads the header bare, so an empty file would escape as a
    # pandas error instead of the one-line "cannot read model cluster table as CSV"
    clusters = results.table("clusters.csv", MODEL_CLUSTER_COLUMNS, "model cluster table")
    clusters["contrast"] = clusters["contrast"].astype(str)
    for column in ("n_units", "moran_i"):
        clusters[column] = _numeric(clusters[column], column, results.path("clusters.csv"))
    return clusters


def _dice(results: Results) -> pd.DataFrame | None:
    """``dice.csv`` (split-half Dice per model fROI), None when absent."""
    if not results.has("dice.csv"):
        return None
    table = results.table("dice.csv", MODEL_DICE_COLUMNS, "model Dice table")
    table["froi"] = table["froi"].astype(str)
    table["dice"] = _numeric(table["dice"], "dice", results.path("dice.csv"))
    return table


def _model_label(identity: Mapping[str, Any], root: Path) -> str:
    name = identity.get("name")
    if name:
        return str(name)
    checkpoint = identity.get("checkpoint")
    if checkpoint:
        return Path(str(checkpoint)).name
    return root.name


def unique_labels(models: list[ModelResults]) -> None:
    """Make the models' labels unique, in place: ``label (folder)``, then ``#2``, ``#3`` ...

    Parameters
    ----------
    models : list of ModelResults
        Every folder compared; tables and figures tell the models apart by label only.
    """
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


def _load_sheet(results: Results) -> Any:
    try:
        return results.sheet()
    except Exception:  # a damaged sheet only costs the sheet map in the report
        return None


def _numeric(column: pd.Series, name: str, path: Path) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        raise TopoInputError(
            f"column '{name}' has a non-numeric value {column[bad].iloc[0]!r}", path
        )
    return values.astype(float)


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


def model_spatial(model: ModelResults, contrast: str) -> dict[str, Any]:
    """A contrast's clusters on the sheet: what the spatial metrics and figures need.

    Returns
    -------
    dict
        ``moran`` and ``sizes`` (per cluster, float arrays), ``n_elements`` (sheet units, None
        without a sheet), ``element`` (``'unit'``) and ``element_size`` (mm², None without a
        sheet).
    """
    table = model.clusters[model.clusters["contrast"] == contrast]
    sizes = table["n_units"].to_numpy(dtype=float)
    return {
        "moran": table["moran_i"].to_numpy(dtype=float),
        "sizes": sizes,
        "n_elements": model.n_units,
        "element": "unit",
        "element_size": None if model.mm_per_unit is None else model.mm_per_unit**2,
    }
