"""The ``--from`` results folder of ``topo intervene``: maps, clusters, model and stimuli.

Read through the project's one results-folder reader (:func:`topocli.reporting.reader.
read_results`), so a localize and a screen folder look alike here: ``units.csv`` and
``clusters.csv`` with a ``contrast`` column (a screen category is the contrast of that category
against the rest) and only the primary maps of a screen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.reporting.reader import (
    Results,
    describe_identity,
    identity_differences,
    read_results,
)


@dataclass
class SourceResults:
    """What intervene reads from a localize / screen results folder.

    Attributes
    ----------
    results : Results
        The folder as the reader returns it (manifest, identity, conditions, contrasts, maps).
    units : DataFrame
        ``units.csv`` with ``contrast``, ``unit`` and ``t`` columns (primary maps only).
    clusters : DataFrame or None
        ``clusters.csv`` with a ``contrast`` column (None when the folder has none).
    """

    results: Results
    units: pd.DataFrame
    clusters: pd.DataFrame | None

    @property
    def root(self) -> Path:
        return self.results.root

    @property
    def manifest(self) -> dict:
        return self.results.manifest

    @property
    def command(self) -> str:
        return self.results.command

    @property
    def identity(self) -> dict | None:
        return self.results.identity

    @property
    def conditions(self) -> list[str]:
        return self.results.conditions

    @property
    def contrasts(self) -> dict[str, dict[str, float]]:
        return self.results.contrasts

    def contrast_names(self) -> list[str]:
        return list(dict.fromkeys(self.units["contrast"].astype(str)))

    def t_map(self, contrast: str, n_units: int) -> np.ndarray:
        """The contrast's t per sheet unit (NaN where missing)."""
        return self.results.t_map(contrast, n_units)


def read_source(root: str | Path) -> SourceResults:
    """Read and check a localize or screen results folder (manifest, units.csv, clusters.csv).

    Parameters
    ----------
    root : str or Path

    Returns
    -------
    SourceResults

    Raises
    ------
    TopoInputError
        Not a topo results folder, not a localize or screen one, or a table is unreadable.
    """
    results = read_results(root)
    results.require_command(("localize", "screen"), "--from")
    units = results.unit_maps(("unit", "t"))
    clusters = results.cluster_table(("cluster",))
    if clusters is not None and units.size and (clusters["contrast"] == "").all():
        # a clusters.csv without a contrast column belongs to the folder's (first) contrast
        clusters["contrast"] = units["contrast"].iloc[0]
    return SourceResults(results, units, clusters)


def resolve_contrast(source: SourceResults, contrast: str | None) -> str:
    """The contrast to use: the one named, or the folder's only one."""
    names = source.contrast_names()
    if contrast is None:
        if len(names) == 1:
            return names[0]
        raise TopoInputError(
            f"the results folder holds {len(names)} contrasts; pick one with --contrast "
            f"({', '.join(names)})",
            source.root,
        )
    return source.results.find_contrast(contrast, names)


def contrast_weights(source: SourceResults, contrast: str) -> dict[str, float]:
    """Condition weights of a contrast (a screen category: that category against the rest)."""
    if contrast in source.contrasts:
        return dict(source.contrasts[contrast])
    if contrast in source.conditions:
        others = [c for c in source.conditions if c != contrast]
        return {contrast: 1.0, **{c: -1.0 / max(len(others), 1) for c in others}}
    if ">" in contrast:
        left, right = (s.strip() for s in contrast.split(">", 1))
        return {left: 1.0, right: -1.0}
    raise TopoInputError(
        f"cannot tell which conditions contrast {contrast!r} compares (no weights in the manifest)",
        source.root,
    )


def cluster_ids(source: SourceResults, contrast: str) -> list[int]:
    if source.clusters is None:
        return []
    sub = source.clusters[source.clusters["contrast"] == contrast]
    return sorted(int(c) for c in sub["cluster"].unique())


def check_cluster(source: SourceResults, contrast: str, cluster: int) -> None:
    """A cluster id that is not in clusters.csv is bad input (the message lists the ids)."""
    ids = cluster_ids(source, contrast)
    if cluster not in ids:
        known = ", ".join(map(str, ids)) if ids else "none"
        raise TopoInputError(
            f"no cluster {cluster} for contrast {contrast!r}; clusters.csv has: {known}",
            source.root,
        )
    if "cluster" not in source.units.columns:
        raise TopoInputError("units.csv has no 'cluster' column to find its units", source.root)


def cluster_members(source: SourceResults, contrast: str, cluster: int) -> tuple[np.ndarray, int]:
    """The cluster's units (sorted by t, highest first) and its peak unit."""
    rows = source.units[source.units["contrast"] == contrast]
    rows = rows[rows["cluster"].fillna(0).astype(np.int64) == int(cluster)]
    if rows.empty:
        raise TopoInputError(f"cluster {cluster} has no units in units.csv", source.root)
    order = np.argsort(-np.abs(rows["t"].to_numpy(dtype=np.float64)), kind="stable")
    units = rows["unit"].to_numpy(dtype=np.int64)[order]
    peak = int(units[0])
    if source.clusters is not None and "peak_unit" in source.clusters.columns:
        c = source.clusters
        row = c[(c["contrast"] == contrast) & (c["cluster"] == cluster)]
        if len(row) and np.isfinite(row["peak_unit"].iloc[0]):
            peak = int(row["peak_unit"].iloc[0])
    return units, peak


def model_spec_from_manifest(manifest: dict) -> str | None:
    """What ``--model`` the results folder was made with (for reloading it)."""
    from topocli.models.registry import model_spec_of

    return model_spec_of((manifest.get("extra") or {}).get("model"), manifest.get("parameters"))


def check_identity(source: SourceResults, model: Any, given_spec: str | None) -> None:
    """Refuse a results folder whose model identity differs from the loaded model's."""
    from topocli.models.checkpoint import model_identity

    expected = source.identity
    if not expected:
        raise TopoInputError(
            "manifest.json does not record the model it was made with", source.root
        )
    actual = model_identity(model)
    diff = identity_differences(expected, actual)
    if not diff:
        return
    what = ", ".join(diff)
    if given_spec:
        raise TopoInputError(
            f"results folder is from model {describe_identity(expected)!r}, not --model "
            f"{given_spec!r} ({what} differ); pass the same model or leave out --model",
            source.root,
        )
    raise TopoInputError(
        f"the model {describe_identity(expected)!r} this folder was made with has changed since "
        f"({what} differ)",
        source.root,
    )


def source_stimuli(source: SourceResults, allow_outside: bool = False) -> tuple[Any, list[str]]:
    """Rebuild the source folder's stimulus set; also notes (e.g. the stimuli changed)."""
    from topocli.reporting.results import describe_input
    from topocli.stimuli.stimulus_set import load_condition_folders, load_stimulus_set

    params = source.manifest.get("parameters") or {}
    notes: list[str] = []
    described = (source.manifest.get("inputs") or {}).get("stimuli")
    entries = described if isinstance(described, list) else [described] if described else []
    paths = [Path(e["path"]) for e in entries if isinstance(e, Mapping) and e.get("path")]
    if params.get("stimuli") and Path(params["stimuli"]).exists():
        stim_set = load_stimulus_set(params["stimuli"], allow_outside=allow_outside)
    elif paths and paths[0].suffix.lower() == ".csv" and paths[0].is_file():
        # a CSV manifest is recorded first, then every file it references
        stim_set = load_stimulus_set(paths[0], allow_outside=allow_outside)
    elif len(paths) == 1 and (paths[0].is_file() or _has_subfolders(paths[0])):
        stim_set = load_stimulus_set(paths[0], allow_outside=allow_outside)
    elif paths and len(paths) == len(source.conditions):
        missing = [p for p in paths if not p.is_dir()]
        if missing:
            raise TopoInputError(
                "the stimulus folder of the results folder is gone; pass --stimuli DIR", missing[0]
            )
        stim_set = load_condition_folders(dict(zip(source.conditions, paths)))
    else:
        raise TopoInputError(
            "cannot tell which stimuli made this results folder; pass --stimuli DIR", source.root
        )
    for e in entries:
        if isinstance(e, Mapping) and e.get("sha256") and Path(e["path"]).exists():
            if describe_input(e["path"]).get("sha256") != e["sha256"]:
                notes.append(f"stimuli changed since the results folder was made: {e['path']}")
    return stim_set, notes


def _has_subfolders(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.iterdir())
