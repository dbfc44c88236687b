"""``topo intervene``: perturb sheet units through hooks, with controls and behavioural read-outs.

A localize (or screen) results folder names the model, the sheet and the contrast's t-map; this
module reloads the model from its manifest, picks the target units (a cluster of ``clusters.csv``
or the top P% units of a contrast by t), perturbs them through the model's hook points and
measures what changes downstream.

Interventions (one hook API for all: :meth:`topocli.models.topo_model.HookPoint.add_edit`)
---------------------------------------------------------------------------
Every intervention is a set of sheet units and one value per unit:

- ``ablate``: the units' activation ``Z`` is set to 0 at every token;
- ``mean``: set to the unit's mean over a reference set (the stimuli's unperturbed mean from the
  results folder's ``stats.safetensors``; recomputed from an unperturbed pass when those
  statistics were smoothed or are missing);
- ``steer``: ``strength * (target-category mean - other-categories mean)`` is added to every
  token (the contrast's positive conditions against its negative ones; a screen's category
  against the rest); a negative strength suppresses;
- ``stimulate``: ``strength * sd_u * exp(-d^2 / (2 spread^2))`` is added to the units within
  ``3 * spread`` mm of the site (the cluster's peak unit), inside the site's area or over the
  contiguous sheet (``across_areas``); ``sd_u`` is the unit's SD over the reference set, so the
  amplitude is in SD units.

Dose: for ablate / mean / steer the percentage of units kept from the ranking by t (top P% of
the sheet for a contrast, of the cluster's units for a cluster); for stimulate the spread in mm.

Controls (on by default, seeded)
--------------------------------
- ``random``: the same number of units per area, drawn uniformly from the same area(s), disjoint
  from the target;
- ``distance-matched``: the target's shape translated within each area so that its centre lies at
  least the target's diameter (largest distance between two of its units, in mm) from the
  target's centre; near an edge, where no translation fits, the nearest units of the area around
  a far site (same count, its centre checked against the same rule).

A control of ablate / mean does the same operation on its own units; a steer control adds the
control units' own category-difference direction rescaled to the target's norm (the same push,
elsewhere); a stimulate control carries the Gaussian weights over (random: in draw order;
distance-matched: the translated shape) with the control units' own SD scale.

All perturbations of one dose (the target and every control draw) are evaluated together: the
prepared batch is repeated M times along the batch dimension and perturbation ``j`` edits rows
``j*B .. (j+1)*B``, so controls cost batched forwards, not Python loops.

Read-outs and statistics
------------------------
- ``fidelity``: cosine between each stimulus's final representation under the intervention and
  unperturbed; effect = ``1 - cosine``;
- ``lm-loss``: mean next-token cross-entropy per stimulus (causal language models only); effect =
  loss increase;
- ``probe``: a classifier (logistic regression or nearest centroid, scikit-learn) trained on the
  unperturbed final representations of the even half of the stimuli, tested on the odd half;
  effect = accuracy drop; also the share of test stimuli predicted as the target category.

``stats.csv`` compares the target intervention's effect on the target condition(s) (and its
selectivity: effect on target minus effect on the other conditions) with each control
distribution: permutation ``p = (1 + #{control >= target}) / (n_controls + 1)`` and effect size
``z = (target - mean(controls)) / sd(controls)``; and, within the target intervention, per-stimulus
effects on target against other conditions (one-sided Welch t, Cohen's d). For the probe's
target bias the statistic is signed so that the expected direction is positive (driving: steer or
stimulate with strength > 0, more predictions of the target; otherwise fewer).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from topocli.errors import TopoInputError
from topocli.sheet import Sheet

MODES = ("ablate", "mean", "steer", "stimulate")
READOUTS = ("probe", "lm-loss", "fidelity")
CONTROL_KINDS = ("random", "distance-matched")
CLASSIFIERS = ("logistic", "centroid")
REPLACE_MODES = ("ablate", "mean")
IDENTITY_KEYS = ("weights_sha256", "mode", "areas", "sheet", "adaptor_sha256")
STIMULATE_TRUNCATE = 3.0
# rows of one forward pass (perturbations x stimuli); logits of an LM are capped separately
MAX_ROWS_CPU = 256
MAX_ROWS_GPU = 2048
LOGIT_BUDGET = 1 << 26
EFFECT_LABELS = {
    "fidelity": "1 - cosine to unperturbed",
    "lm-loss": "loss increase (nats / token)",
    "probe": "probe accuracy drop",
}


# ---------------------------------------------------------------------- options
def parse_list(text: str | None, allowed: Sequence[str], what: str) -> list[str]:
    """Comma-separated choices, each checked against ``allowed``; ``none`` gives an empty list."""
    if text is None:
        return []
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if items == ["none"]:
        return []
    bad = [t for t in items if t not in allowed]
    if bad:
        raise TopoInputError(f"unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_doses(text: str | float | Sequence[float] | None, mode: str) -> list[float]:
    """Dose list from ``"1,5,10"``: percentages in (0, 100], or spreads in mm > 0 (stimulate)."""
    if text is None:
        return []
    if isinstance(text, (int, float)):
        items: list[Any] = [text]
    elif isinstance(text, str):
        items = [t.strip() for t in text.split(",") if t.strip()]
    else:
        items = list(text)
    if not items:
        raise TopoInputError("--dose is empty; give numbers such as 1,5,10")
    doses = []
    for item in items:
        try:
            d = float(item)
        except (TypeError, ValueError):
            raise TopoInputError(f"--dose must be numbers, got {item!r}") from None
        if mode == "stimulate":
            if not (math.isfinite(d) and d > 0):
                raise TopoInputError(f"--dose (spread in mm) must be > 0, got {item}")
        elif not (math.isfinite(d) and 0.0 < d <= 100.0):
            raise TopoInputError(f"--dose must lie in (0, 100] (percent of units), got {item}")
        doses.append(d)
    return list(dict.fromkeys(doses))


# ---------------------------------------------------------------------- the source folder
@dataclass
class SourceResults:
    """What intervene reads from a localize / screen results folder."""

    root: Path
    manifest: dict
    units: pd.DataFrame
    clusters: pd.DataFrame | None
    contrast_col: str
    conditions: list[str]
    contrasts: dict[str, dict[str, float]]

    @property
    def command(self) -> str:
        return str(self.manifest.get("command"))

    @property
    def identity(self) -> dict | None:
        return (self.manifest.get("extra") or {}).get("model")

    def contrast_names(self) -> list[str]:
        return list(dict.fromkeys(self.units[self.contrast_col].astype(str)))


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise TopoInputError(f"unreadable CSV ({exc})", path) from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TopoInputError(f"has no column(s) {', '.join(missing)}", path)
    return df


def read_source(root: str | Path) -> SourceResults:
    """Read and check a localize or screen results folder (manifest, units.csv, clusters.csv)."""
    from topocli.reporting.reader import read_manifest

    root = Path(root)
    manifest = read_manifest(root)
    if manifest.get("command") not in ("localize", "screen"):
        raise TopoInputError(
            f"is a `topo {manifest.get('command')}` folder; --from needs a localize or screen "
            "results folder",
            root,
        )
    units_path = root / "units.csv"
    if not units_path.is_file():
        raise TopoInputError("has no units.csv", root)
    head = pd.read_csv(units_path, nrows=0).columns
    col = "contrast" if "contrast" in head else "category" if "category" in head else None
    if col is None:
        raise TopoInputError("has no 'contrast' (or 'category') column", units_path)
    units = _read_csv(units_path, [col, "unit", "t"])
    units[col] = units[col].astype(str)
    if "reference" in units.columns:  # a screen folder: keep the primary (category vs rest) maps
        units = units[units["reference"].astype(str) != "baseline"].reset_index(drop=True)
    clusters = None
    if (root / "clusters.csv").is_file():
        clusters = _read_csv(root / "clusters.csv", ["cluster"])
        ccol = "contrast" if "contrast" in clusters.columns else "category"
        if ccol not in clusters.columns:
            clusters[ccol] = units[col].iloc[0]
        clusters = clusters.rename(columns={ccol: col})
        clusters[col] = clusters[col].astype(str)
    extra = manifest.get("extra") or {}
    conditions = [str(c) for c in (extra.get("conditions") or extra.get("categories") or [])]
    contrasts = {
        str(k): {str(c): float(w) for c, w in v.items()}
        for k, v in (extra.get("contrasts") or {}).items()
        if isinstance(v, Mapping)
    }
    return SourceResults(root, manifest, units, clusters, col, conditions, contrasts)


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
    if contrast not in names:
        raise TopoInputError(
            f"no contrast {contrast!r} in units.csv; it has {', '.join(names)}", source.root
        )
    return contrast


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


def t_values(source: SourceResults, contrast: str, n_units: int) -> np.ndarray:
    """The contrast's t per sheet unit (NaN where missing)."""
    rows = source.units[source.units[source.contrast_col] == contrast]
    t = np.full(n_units, np.nan)
    unit = rows["unit"].to_numpy(dtype=np.int64)
    if unit.size and (unit.min() < 0 or unit.max() >= n_units):
        raise TopoInputError(
            f"units.csv names units up to {unit.max()}, but the sheet has {n_units}", source.root
        )
    t[unit] = rows["t"].to_numpy(dtype=np.float64)
    return t


def cluster_ids(source: SourceResults, contrast: str) -> list[int]:
    if source.clusters is None:
        return []
    sub = source.clusters[source.clusters[source.contrast_col] == contrast]
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
    rows = source.units[source.units[source.contrast_col] == contrast]
    rows = rows[rows["cluster"].fillna(0).astype(np.int64) == int(cluster)]
    if rows.empty:
        raise TopoInputError(f"cluster {cluster} has no units in units.csv", source.root)
    order = np.argsort(-np.abs(rows["t"].to_numpy(dtype=np.float64)), kind="stable")
    units = rows["unit"].to_numpy(dtype=np.int64)[order]
    peak = int(units[0])
    if source.clusters is not None and "peak_unit" in source.clusters.columns:
        c = source.clusters
        row = c[(c[source.contrast_col] == contrast) & (c["cluster"] == cluster)]
        if len(row) and np.isfinite(row["peak_unit"].iloc[0]):
            peak = int(row["peak_unit"].iloc[0])
    return units, peak


def model_spec_from_manifest(manifest: dict) -> str | None:
    """What ``--model`` the results folder was made with (for reloading it)."""
    from topocli.models.checkpoint import CONTROL_MODEL, DEFAULT_MODEL, EMBEDDED_BASE

    ident = (manifest.get("extra") or {}).get("model") or {}
    if ident.get("name") in (DEFAULT_MODEL, CONTROL_MODEL):
        return ident["name"]
    if ident.get("checkpoint"):
        return ident["checkpoint"]
    spec = (manifest.get("parameters") or {}).get("model")
    if spec:
        return spec
    base = ident.get("base_model")
    return None if base == EMBEDDED_BASE else base


def identity_mismatch(expected: dict, actual: dict) -> list[str]:
    """Which identity fields differ between the results folder's model and the loaded one."""
    return [k for k in IDENTITY_KEYS if to_json(expected.get(k)) != to_json(actual.get(k))]


def to_json(obj: Any) -> str:
    from topocli.reporting.results import to_jsonable

    return json.dumps(to_jsonable(obj), sort_keys=True)


def _describe_model(ident: Mapping[str, Any]) -> str:
    return str(ident.get("name") or ident.get("checkpoint") or ident.get("base_model"))


def check_identity(source: SourceResults, model: Any, given_spec: str | None) -> None:
    """Refuse a results folder whose model identity differs from the loaded model's."""
    from topocli.models.checkpoint import model_identity

    expected = source.identity
    if not expected:
        raise TopoInputError(
            "manifest.json does not record the model it was made with", source.root
        )
    actual = model_identity(model)
    diff = identity_mismatch(expected, actual)
    if not diff:
        return
    what = ", ".join(diff)
    if given_spec:
        raise TopoInputError(
            f"results folder is from model {_describe_model(expected)!r}, not --model "
            f"{given_spec!r} ({what} differ); pass the same model or leave out --model",
            source.root,
        )
    raise TopoInputError(
        f"the model {_describe_model(expected)!r} this folder was made with has changed since "
        f"({what} differ)",
        source.root,
    )


# ---------------------------------------------------------------------- stimuli
def source_stimuli(source: SourceResults) -> tuple[Any, list[str]]:
    """Rebuild the source folder's stimulus set; also notes (e.g. the stimuli changed)."""
    from topocli.reporting.results import describe_input
    from topocli.stimuli.stimulus_set import load_condition_folders, load_stimulus_set

    params = source.manifest.get("parameters") or {}
    notes: list[str] = []
    described = (source.manifest.get("inputs") or {}).get("stimuli")
    entries = described if isinstance(described, list) else [described] if described else []
    paths = [Path(e["path"]) for e in entries if isinstance(e, Mapping) and e.get("path")]
    if params.get("stimuli") and Path(params["stimuli"]).exists():
        stim_set = load_stimulus_set(params["stimuli"])
    elif len(paths) == 1 and (paths[0].is_file() or _has_subfolders(paths[0])):
        stim_set = load_stimulus_set(paths[0])
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


# ---------------------------------------------------------------------- target selection
@dataclass
class Selection:
    """Units of one perturbation with a per-unit weight (1, or the stimulation Gaussian)."""

    units: np.ndarray
    weights: np.ndarray
    dose: float = float("nan")
    site: int | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.units = np.asarray(self.units, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.units.shape != self.weights.shape:
            raise ValueError("units and weights must have the same length")


def top_units(t: np.ndarray, percent: float, among: np.ndarray | None = None) -> np.ndarray:
    """The top ``percent`` % of units by t (of ``among``, or of the sheet); highest first.

    Ties are broken by unit index; units with NaN t are never chosen. At least one unit.
    """
    pool = np.arange(t.size) if among is None else np.asarray(among, dtype=np.int64)
    pool = pool[np.isfinite(t[pool])]
    if pool.size == 0:
        raise TopoInputError("the contrast has no unit with a finite t to pick from")
    n = max(1, int(math.ceil(percent * pool.size / 100.0 - 1e-9)))
    order = np.lexsort((pool, -t[pool]))
    return pool[order[:n]]


def stimulation_units(
    sheet: Sheet, site: int, spread_mm: float, across_areas: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Units within ``3 * spread`` mm of ``site`` (its area, or the sheet) and Gaussian weights."""
    if across_areas and sheet.layout != "stacked":
        raise TopoInputError("--across-areas needs a contiguous (stacked) sheet; this one is tiled")
    pos = sheet.positions_mm
    d = np.hypot(*(pos - pos[site]).T)
    keep = d <= STIMULATE_TRUNCATE * spread_mm + 1e-9
    if not across_areas:
        keep &= sheet.area == sheet.area[site]
    units = np.flatnonzero(keep)
    order = np.lexsort((units, d[units]))
    units = units[order]
    return units, np.exp(-(d[units] ** 2) / (2.0 * spread_mm**2))


# ---------------------------------------------------------------------- controls
@dataclass
class Control:
    """One control draw: its kind, index and selection, and its centre's distance (mm)."""

    kind: str
    draw: int
    selection: Selection
    distance_mm: float = float("nan")


def _by_area(sheet: Sheet, units: np.ndarray) -> dict[int, np.ndarray]:
    """Positions (indices into ``units``) of the units of each area, in order."""
    areas = sheet.area[units]
    return {int(k): np.flatnonzero(areas == k) for k in dict.fromkeys(areas.tolist())}


def random_controls(
    sheet: Sheet, target: Selection, n: int, rng: np.random.Generator
) -> list[Control]:
    """``n`` draws of the same number of units per area, from the same areas, not the target's.

    Weights are carried over in draw order. Raises TopoInputError when an area has fewer
    non-target units than the target has there.
    """
    groups = _by_area(sheet, target.units)
    taken = set(target.units.tolist())
    pools = {}
    for k, idx in groups.items():
        members = np.arange(*_slice_bounds(sheet, k))
        pool = np.array([u for u in members if u not in taken], dtype=np.int64)
        if pool.size < idx.size:
            raise TopoInputError(
                f"random controls need {idx.size} units of area {sheet.areas[k].name!r} outside "
                f"the target, but it has only {pool.size} ({members.size} units, {idx.size} "
                "targeted); lower the dose"
            )
        pools[k] = pool
    out = []
    for i in range(n):
        units = np.empty_like(target.units)
        for k, idx in groups.items():
            units[idx] = rng.choice(pools[k], size=idx.size, replace=False)
        out.append(Control("random", i, Selection(units, target.weights, target.dose)))
    return out


def _slice_bounds(sheet: Sheet, k: int) -> tuple[int, int]:
    s = sheet.area_slice(k)
    return s.start, s.stop


def diameter_mm(pos: np.ndarray) -> float:
    """Largest distance between two points (0 for one point)."""
    if len(pos) < 2:
        return 0.0
    from scipy.spatial.distance import pdist

    return float(pdist(pos).max())


@dataclass
class _AreaPlan:
    """Where a target's part in one area sits and how far its controls must go."""

    idx: np.ndarray
    units: np.ndarray
    centre: np.ndarray
    anchor: int
    diameter: float


def _area_plan(sheet: Sheet, target: Selection, idx: np.ndarray) -> _AreaPlan:
    units = target.units[idx]
    pos = sheet.positions_mm[units]
    centre = pos.mean(axis=0) if target.site is None else sheet.positions_mm[target.site]
    if target.site is not None and target.site in set(units.tolist()):
        anchor = int(target.site)
    else:
        anchor = int(units[np.argmin(np.hypot(*(pos - centre).T))])
    diam = max(diameter_mm(pos), float(sheet.mm_per_unit))
    return _AreaPlan(idx, units, centre, anchor, diam)


def _translated(sheet: Sheet, plan: _AreaPlan, site: int, grid: np.ndarray) -> np.ndarray | None:
    """The plan's units shifted so that its anchor lands on ``site``; None if it leaves the area."""
    dr = int(sheet.row[site]) - int(sheet.row[plan.anchor])
    dc = int(sheet.col[site]) - int(sheet.col[plan.anchor])
    rows = sheet.row[plan.units].astype(np.int64) + dr
    cols = sheet.col[plan.units].astype(np.int64) + dc
    n_rows, n_cols = sheet.grid_shape
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= n_rows or cols.max() >= n_cols:
        return None
    units = grid[rows, cols]
    if (units < 0).any() or (sheet.area[units] != sheet.area[plan.anchor]).any():
        return None
    return units


def _patch(
    sheet: Sheet, plan: _AreaPlan, site: int, members: np.ndarray, taken: set[int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The plan's size of units nearest ``site`` (not the target's), weights by distance rank."""
    pos = sheet.positions_mm
    pool = np.array([u for u in members if u not in taken], dtype=np.int64)
    if pool.size < plan.units.size:
        return None
    d = np.hypot(*(pos[pool] - pos[site]).T)
    chosen = pool[np.lexsort((pool, d))[: plan.units.size]]
    centre = pos[chosen].mean(axis=0)
    if np.hypot(*(centre - plan.centre)) < plan.diameter - 1e-9:
        return None
    # the target's units ranked by distance from its centre get the patch's units ranked alike
    rank_t = np.argsort(np.hypot(*(pos[plan.units] - plan.centre).T), kind="stable")
    rank_p = np.argsort(np.hypot(*(pos[chosen] - centre).T), kind="stable")
    placed = np.empty_like(chosen)
    placed[rank_t] = chosen[rank_p]
    return placed, centre


def _area_sites(
    sheet: Sheet, plan: _AreaPlan, n: int, rng: np.random.Generator, taken: set[int]
) -> tuple[list[tuple[np.ndarray, float]], str | None]:
    """Up to ``n`` distance-matched placements of one area's part: (units, distance mm)."""
    k = int(sheet.area[plan.anchor])
    members = np.arange(*_slice_bounds(sheet, k))
    pos = sheet.positions_mm
    dist = np.hypot(*(pos[members] - pos[plan.anchor]).T)
    candidates = rng.permutation(members[dist >= plan.diameter - 1e-9])
    grid = sheet.unit_grid
    sites: list[tuple[np.ndarray, float]] = []
    leftovers = []
    for site in candidates:
        units = _translated(sheet, plan, int(site), grid)
        if units is None or taken.intersection(units.tolist()):
            leftovers.append(int(site))
            continue
        shift = pos[units].mean(axis=0) - pos[plan.units].mean(axis=0)
        centre = plan.centre + shift
        sites.append((units, float(np.hypot(*(centre - plan.centre)))))
        if len(sites) == n:
            return sites, None
    for site in leftovers[: 20 * n]:
        found = _patch(sheet, plan, site, members, taken)
        if found is not None:
            units, centre = found
            sites.append((units, float(np.hypot(*(centre - plan.centre)))))
            if len(sites) == n:
                return sites, None
    name = sheet.areas[k].name
    if not sites:
        return [], (
            f"no site in area {name!r} lies {plan.diameter:.3g} mm (the target's diameter) "
            "from the target's centre"
        )
    return sites, f"only {len(sites)} distinct distance-matched sites in area {name!r}; reused"


def distance_matched_controls(
    sheet: Sheet, target: Selection, n: int, rng: np.random.Generator
) -> tuple[list[Control], str | None]:
    """``n`` translated copies of the target, each area's centre >= its diameter away.

    Returns the controls and a note (None when all ``n`` distinct draws were found; the controls
    are empty when some area has no site far enough away).
    """
    taken = set(target.units.tolist())
    parts = []
    notes = []
    for _k, idx in _by_area(sheet, target.units).items():
        plan = _area_plan(sheet, target, idx)
        sites, note = _area_sites(sheet, plan, n, rng, taken)
        if note:
            notes.append(note)
        if not sites:
            return [], "; ".join(notes)
        if len(sites) < n:
            extra = rng.choice(len(sites), size=n - len(sites), replace=True)
            sites = sites + [sites[i] for i in extra]
        parts.append((idx, sites))
    out = []
    for i in range(n):
        units = np.empty_like(target.units)
        dists = []
        for idx, sites in parts:
            units[idx] = sites[i][0]
            dists.append(sites[i][1])
        sel = Selection(units, target.weights, target.dose)
        out.append(Control("distance-matched", i, sel, float(min(dists))))
    return out, "; ".join(notes) or None


def make_controls(
    sheet: Sheet, target: Selection, kinds: Sequence[str], n: int, seed: int, dose_index: int
) -> tuple[list[Control], list[str]]:
    """All control draws of one dose (seeded by ``seed``, the dose and the kind)."""
    out: list[Control] = []
    notes: list[str] = []
    for kind in kinds:
        rng = np.random.default_rng([int(seed), int(dose_index), CONTROL_KINDS.index(kind)])
        if kind == "random":
            out.extend(random_controls(sheet, target, n, rng))
        else:
            found, note = distance_matched_controls(sheet, target, n, rng)
            out.extend(found)
            if note:
                notes.append(f"dose {target.dose:g}: {note}")
    return out, notes


# ---------------------------------------------------------------------- values per unit
@dataclass
class Reference:
    """Per-unit reference numbers: mean, category direction and SD, and where they came from."""

    mean: np.ndarray
    direction: np.ndarray
    sd: np.ndarray
    source: str


def weighted_direction(
    means: np.ndarray, counts: np.ndarray, conditions: Sequence[str], weights: Mapping[str, float]
) -> np.ndarray:
    """``mean(positive conditions) - mean(negative conditions)``, each side weight-normalised."""
    w = np.array([float(weights.get(c, 0.0)) for c in conditions])
    w = np.where(counts > 0, w, 0.0)
    pos, neg = np.clip(w, 0, None), np.clip(-w, 0, None)
    direction = np.zeros(means.shape[1])
    if pos.sum() > 0:
        direction += pos @ means / pos.sum()
    if neg.sum() > 0:
        direction -= neg @ means / neg.sum()
    return direction


def reference_from_stats(
    stats: Any, conditions: Sequence[str], weights: Mapping[str, float]
) -> Reference:
    """Reference numbers from (condition, split) sufficient statistics (groups 2*c + split)."""
    n_all, mean_all, m2_all = stats.total()
    k = len(conditions)
    if stats.n_groups != 2 * k:
        raise TopoInputError(
            f"stats.safetensors holds {stats.n_groups} groups, expected {2 * k} (2 per condition)"
        )
    means = np.zeros((k, stats.n_units))
    counts = np.zeros(k)
    for c in range(k):
        n, m, _ = stats.pooled([2 * c, 2 * c + 1])
        means[c], counts[c] = m, n
    sd = np.sqrt(m2_all / max(n_all - 1.0, 1.0))
    direction = weighted_direction(means, counts, conditions, weights)
    return Reference(mean_all, direction, sd, "stats.safetensors of the results folder")


def reference_from_activations(
    acts: np.ndarray, condition_index: np.ndarray, conditions: Sequence[str], weights: Mapping
) -> Reference:
    """Reference numbers from unperturbed pooled activations [N, U]."""
    k = len(conditions)
    counts = np.bincount(condition_index, minlength=k).astype(np.float64)
    means = np.zeros((k, acts.shape[1]))
    for c in range(k):
        if counts[c]:
            means[c] = acts[condition_index == c].mean(axis=0)
    sd = acts.std(axis=0, ddof=1) if len(acts) > 1 else np.zeros(acts.shape[1])
    direction = weighted_direction(means, counts, conditions, weights)
    return Reference(
        acts.mean(axis=0), direction, sd, "an unperturbed pass over the intervention's stimuli"
    )


def perturbation_values(
    mode: str,
    strength: float,
    sel: Selection,
    ref: Reference,
    target_norm: float | None = None,
) -> np.ndarray:
    """The value per unit: replacement (ablate, mean) or addition (steer, stimulate).

    ``target_norm``: for a steer control, the control's direction is rescaled to this L2 norm
    (the target's), so the push has the same size at other units.
    """
    u = sel.units
    if mode == "ablate":
        return np.zeros(u.size)
    if mode == "mean":
        return ref.mean[u].astype(np.float64)
    if mode == "steer":
        d = strength * ref.direction[u] * sel.weights
        if target_norm is not None:
            norm = float(np.linalg.norm(d))
            d = d * (target_norm / norm) if norm > 0 else d
        return d
    if mode == "stimulate":
        return strength * ref.sd[u] * sel.weights
    raise TopoInputError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")


# ---------------------------------------------------------------------- hooks
class PerturbationSet:
    """M perturbations of one kind, as dense per-area masks and values on the model's device.

    :meth:`applied` registers one edit per touched area; rows of the batch are perturbation-major
    (rows ``j*B .. (j+1)*B`` get perturbation ``j``), so M perturbations share one forward pass.
    """

    def __init__(
        self,
        model: Any,
        units: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        replace: bool,
    ) -> None:
        sheet = model.sheet
        self.model = model
        self.replace = bool(replace)
        self.n = len(units)
        self.areas: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        device = model.device
        for k in range(len(model.blocks)):
            lo, hi = _slice_bounds(sheet, k)
            mask = np.zeros((self.n, hi - lo), dtype=bool)
            vals = np.zeros((self.n, hi - lo), dtype=np.float32)
            for j, (u, v) in enumerate(zip(units, values)):
                u = np.asarray(u, dtype=np.int64)
                sel = (u >= lo) & (u < hi)
                mask[j, u[sel] - lo] = True
                vals[j, u[sel] - lo] = np.asarray(v, dtype=np.float64)[sel]
            if mask.any():
                self.areas[k] = (
                    torch.from_numpy(mask).to(device),
                    torch.from_numpy(vals).to(device),
                )

    @contextmanager
    def applied(self, start: int = 0, stop: int | None = None) -> Iterator[None]:
        """Edits for perturbations ``start:stop`` registered while the block runs."""
        stop = self.n if stop is None else stop
        removers = []
        try:
            for k, (mask, vals) in self.areas.items():
                m, v = mask[start:stop], vals[start:stop]
                if not bool(m.any()):
                    continue
                hook_point = self.model.hook_points[self.model.blocks[k].name]
                removers.append(hook_point.add_edit(make_edit(m, v, self.replace)))
            yield
        finally:
            for remove in removers:
                remove()


def make_edit(mask: torch.Tensor, values: torch.Tensor, replace: bool):
    """An edit ``Z -> Z'`` for M stacked perturbations: ``mask``/``values`` are [M, H].

    Units outside the mask keep their exact values (``torch.where``, no arithmetic on them).
    """
    n_pert, width = mask.shape

    def edit(z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != width or z.shape[0] % n_pert:
            raise RuntimeError(
                f"edit for {n_pert} perturbations x {width} units got activations {tuple(z.shape)}"
            )
        zz = z.reshape(n_pert, z.shape[0] // n_pert, *z.shape[1:])
        view = (n_pert,) + (1,) * (z.ndim - 1) + (width,)
        m = mask.view(view)
        v = values.view(view).to(device=z.device, dtype=z.dtype)
        new = v if replace else zz + v
        return torch.where(m, new, zz).reshape(z.shape)

    return edit


@contextmanager
def perturbed(model: Any, units: np.ndarray, values: np.ndarray, mode: str) -> Iterator[None]:
    """One perturbation applied while the block runs (convenience for library users)."""
    pset = PerturbationSet(model, [units], [values], mode in REPLACE_MODES)
    with pset.applied():
        yield


# ---------------------------------------------------------------------- forward passes
def is_causal_lm(model: Any) -> bool:
    name = type(model.backbone).__name__
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel")


def check_readouts(model: Any, readouts: Sequence[str], modality: str, n_conditions: int) -> None:
    """A read-out the model or stimuli cannot give is bad input."""
    if "lm-loss" in readouts:
        if modality != "text":
            raise TopoInputError(f"--readout lm-loss needs text stimuli, these are {modality}")
        if not is_causal_lm(model):
            kind = model.source.get("model_type") or type(model.backbone).__name__
            raise TopoInputError(
                f"--readout lm-loss needs a causal language model with an LM head; this "
                f"{kind} model ({type(model.backbone).__name__}) has none (masked-token loss is "
                "not supported); use --readout fidelity or probe"
            )
    if "probe" in readouts and n_conditions < 2:
        raise TopoInputError("--readout probe needs stimuli of at least 2 conditions")


def _repeat(value: Any, times: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and times > 1:
        return value.repeat(times, *([1] * (value.ndim - 1)))
    return value


def token_losses(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Mean next-token cross-entropy per row over valid (token, next token) pairs; NaN if none."""
    pred = logits[:, :-1].float()
    target = input_ids[:, 1:]
    valid = (mask[:, 1:].bool() & mask[:, :-1].bool()).float()
    ce = torch.nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none"
    ).view(target.shape)
    n = valid.sum(1)
    loss = (ce * valid).sum(1) / n.clamp_min(1.0)
    loss = torch.where(n > 0, loss, torch.full_like(loss, float("nan")))
    return loss.cpu().numpy().astype(np.float64)


@dataclass
class Prepared:
    """Prepared batches of the stimuli, reused by every perturbation."""

    batches: list[Any]
    n: int
    causal: bool
    want_final: bool
    want_loss: bool


def prepare_stimuli(
    model: Any,
    stim_set: Any,
    batch_size: int,
    readouts: Sequence[str],
    subset: np.ndarray | None = None,
) -> Prepared:
    """Tokenise / preprocess once (all stimuli, or the rows of ``subset``), in length order."""
    from topocli.activations.extraction import batch_order, prepare_batch

    causal = is_causal_lm(model)
    ordered = np.concatenate(list(batch_order(stim_set, max(1, len(stim_set)))))
    if subset is not None:
        ordered = ordered[np.isin(ordered, subset)]
    batches = []
    for start in range(0, ordered.size, batch_size):
        rows = ordered[start : start + batch_size]
        batch = prepare_batch(model, [stim_set.stimuli[i] for i in rows], rows)
        if causal:
            batch.inputs["output_hidden_states"] = True
        batches.append(batch)
    want_final = "fidelity" in readouts or "probe" in readouts
    return Prepared(batches, len(stim_set), causal, want_final, "lm-loss" in readouts)


def _forward(model: Any, batch: Any, times: int, prep: Prepared) -> tuple[Any, Any]:
    from topocli.activations.extraction import autocast_for, final_representation

    inputs = {k: _repeat(v, times) for k, v in batch.inputs.items()}
    masks = [_repeat(m, times) for m in batch.masks]
    with autocast_for(model):
        out = model.forward(inputs, batch.modality)
    final = final_representation(out, masks) if prep.want_final else None
    loss = None
    if prep.want_loss:
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
        loss = token_losses(out.logits, inputs["input_ids"], mask)
    return final, loss


@dataclass
class Baseline:
    """The unperturbed model's outputs per stimulus."""

    final: np.ndarray | None
    loss: np.ndarray | None
    acts: np.ndarray


def run_baseline(model: Any, prep: Prepared, progress: Any = None) -> Baseline:
    """Unperturbed final representations, LM losses and pooled sheet activations."""
    from topocli.activations.extraction import autocast_for, final_representation

    final = loss = None
    acts = np.zeros((prep.n, model.sheet.n_units), dtype=np.float32)
    task = progress.add_task("unperturbed", total=prep.n) if progress else None
    with torch.no_grad():
        for batch in prep.batches:
            with autocast_for(model):
                out, pooled = model.record(batch.inputs, batch.modality, "mean", batch.masks)
            acts[batch.indices] = pooled.float().cpu().numpy()
            if prep.want_final:
                f = final_representation(out, batch.masks).cpu().numpy()
                if final is None:
                    final = np.zeros((prep.n, f.shape[1]), dtype=np.float64)
                final[batch.indices] = f
            if prep.want_loss:
                mask = batch.inputs.get("attention_mask")
                if mask is None:
                    mask = torch.ones_like(batch.inputs["input_ids"])
                if loss is None:
                    loss = np.full(prep.n, np.nan)
                loss[batch.indices] = token_losses(out.logits, batch.inputs["input_ids"], mask)
            if progress:
                progress.advance(task, len(batch.indices))
    return Baseline(final, loss, acts)


def _rows_limit(model: Any, batch: Any, prep: Prepared) -> int:
    limit = MAX_ROWS_CPU if model.device.type == "cpu" else MAX_ROWS_GPU
    if prep.want_loss:
        ids = batch.inputs["input_ids"]
        vocab = int(getattr(model.backbone.config, "vocab_size", 0) or 50000)
        limit = min(limit, max(1, LOGIT_BUDGET // max(1, ids.shape[1] * vocab)))
    return limit


@dataclass
class Outcome:
    """Per-perturbation, per-stimulus read-outs of one dose: arrays [M, N]."""

    cosine: np.ndarray | None = None
    loss: np.ndarray | None = None
    predicted: np.ndarray | None = None


def evaluate(
    model: Any,
    prep: Prepared,
    pset: PerturbationSet,
    base: Baseline,
    probe: Any = None,
    progress: Any = None,
    label: str = "perturbed",
) -> Outcome:
    """Every perturbation of ``pset`` on every prepared stimulus, batched; [M, N] arrays.

    Stimuli that were not prepared (a subset) are NaN (or -1 for predictions).
    """
    m_total = pset.n
    out = Outcome()
    need_cos = base.final is not None and prep.want_final
    if need_cos:
        out.cosine = np.full((m_total, prep.n), np.nan)
        ref = base.final / np.maximum(np.linalg.norm(base.final, axis=1, keepdims=True), 1e-30)
    if prep.want_loss:
        out.loss = np.full((m_total, prep.n), np.nan)
    if probe is not None:
        out.predicted = np.full((m_total, prep.n), -1, dtype=np.int64)
    total = sum(len(b.indices) for b in prep.batches) * m_total
    task = progress.add_task(label, total=total) if progress else None
    with torch.no_grad():
        for batch in prep.batches:
            b = len(batch.indices)
            chunk = max(1, _rows_limit(model, batch, prep) // b)
            for j0 in range(0, m_total, chunk):
                j1 = min(m_total, j0 + chunk)
                with pset.applied(j0, j1):
                    final, loss = _forward(model, batch, j1 - j0, prep)
                idx = batch.indices
                if final is not None:
                    f = final.cpu().numpy().astype(np.float64).reshape(j1 - j0, b, -1)
                    if need_cos:
                        fn = f / np.maximum(np.linalg.norm(f, axis=2, keepdims=True), 1e-30)
                        out.cosine[j0:j1, idx] = np.einsum("mbd,bd->mb", fn, ref[idx])
                    if probe is not None:
                        pred = probe.predict(f.reshape(-1, f.shape[-1])).reshape(j1 - j0, b)
                        out.predicted[j0:j1, idx] = pred
                if loss is not None:
                    out.loss[j0:j1, idx] = loss.reshape(j1 - j0, b)
                if progress:
                    progress.advance(task, b * (j1 - j0))
    return out


# ---------------------------------------------------------------------- the probe
def fit_probe(features: np.ndarray, labels: np.ndarray, kind: str = "logistic", seed: int = 0):
    """Standardise, then logistic regression or nearest centroid (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind not in CLASSIFIERS:
        raise TopoInputError(
            f"unknown --probe-classifier {kind!r}; choose {', '.join(CLASSIFIERS)}"
        )
    if len(np.unique(labels)) < 2:
        raise TopoInputError("--readout probe needs at least 2 conditions in the even half")
    clf = (
        LogisticRegression(max_iter=5000, random_state=seed)
        if kind == "logistic"
        else NearestCentroid()
    )
    return make_pipeline(StandardScaler(), clf).fit(features, labels)


# ---------------------------------------------------------------------- statistics
def permutation_p(target: float, controls: Sequence[float]) -> float:
    """``(1 + #{control >= target}) / (n + 1)``; NaN controls are left out; NaN without any."""
    c = np.asarray(controls, dtype=np.float64)
    c = c[np.isfinite(c)]
    if not np.isfinite(target) or c.size == 0:
        return float("nan")
    return float((1 + np.count_nonzero(c >= target)) / (c.size + 1))


def effect_size_z(target: float, controls: Sequence[float]) -> float:
    """``(target - mean) / sd`` of the control distribution (ddof 1); NaN if undefined."""
    c = np.asarray(controls, dtype=np.float64)
    c = c[np.isfinite(c)]
    if c.size < 2 or not np.isfinite(target):
        return float("nan")
    sd = c.std(ddof=1)
    return float((target - c.mean()) / sd) if sd > 0 else float("nan")


def welch_greater(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """One-sided Welch t (a > b), its p and Cohen's d (pooled SD); NaN when undefined."""
    from scipy import stats as sps

    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1), b.var(ddof=1)
    if va == 0 and vb == 0:
        return float("nan"), float("nan"), float("nan")
    res = sps.ttest_ind(a, b, equal_var=False, alternative="greater")
    pooled = ((a.size - 1) * va + (b.size - 1) * vb) / (a.size + b.size - 2)
    d = (a.mean() - b.mean()) / math.sqrt(pooled) if pooled > 0 else float("nan")
    return float(res.statistic), float(res.pvalue), float(d)


@dataclass
class Design:
    """Stimulus-level facts the statistics need."""

    conditions: list[str]
    condition_index: np.ndarray
    split: np.ndarray
    targets: list[str]
    others: list[str]

    def rows_of(self, names: Sequence[str], among: np.ndarray | None = None) -> np.ndarray:
        ids = [self.conditions.index(c) for c in names if c in self.conditions]
        sel = np.isin(self.condition_index, ids)
        if among is not None:
            sel &= among
        return np.flatnonzero(sel)


@dataclass
class DoseResult:
    """One dose: the target selection, its controls and the per-stimulus read-outs."""

    dose: float
    target: Selection
    values: np.ndarray
    controls: list[Control]
    outcome: Outcome
    notes: list[str] = field(default_factory=list)


def per_stimulus_effects(
    readout: str, outcome: Outcome, base: Baseline, probe_base: np.ndarray | None, design: Design
) -> tuple[np.ndarray, np.ndarray]:
    """Effect per (perturbation, stimulus) [M, N] (NaN where not measured) and the rows used."""
    if readout == "fidelity":
        return 1.0 - outcome.cosine, np.arange(outcome.cosine.shape[1])
    if readout == "lm-loss":
        return outcome.loss - base.loss[None, :], np.arange(outcome.loss.shape[1])
    test = np.flatnonzero(design.split == 1)
    truth = design.condition_index
    eff = np.full(outcome.predicted.shape, np.nan)
    correct0 = (probe_base == truth).astype(np.float64)
    correct = (outcome.predicted[:, test] == truth[test]).astype(np.float64)
    eff[:, test] = correct0[None, test] - correct
    return eff, test


def _mean_over(eff: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if rows.size == 0:
        return np.full(eff.shape[0], np.nan)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmean(eff[:, rows], axis=1)


@contextmanager
def _quiet_nanmean():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def readout_values(
    readout: str,
    outcome: Outcome | None,
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    m: int,
) -> list[tuple[str, str, np.ndarray, float]]:
    """(condition, readout name, value per perturbation [M], unperturbed value) rows."""
    out = []
    groups = [(c, design.rows_of([c])) for c in design.conditions]
    groups.append(("all", np.arange(design.condition_index.size)))
    if readout == "fidelity":
        cos = outcome.cosine if outcome is not None else np.ones((m, design.split.size))
        for name, rows in groups:
            out.append((name, "fidelity_cosine", _mean_over(cos, rows), 1.0))
    elif readout == "lm-loss":
        loss = outcome.loss if outcome is not None else np.tile(base.loss, (m, 1))
        for name, rows in groups:
            base_v = float(_mean_over(base.loss[None, :], rows)[0])
            out.append((name, "lm_loss", _mean_over(loss, rows), base_v))
    else:
        test = design.split == 1
        truth = design.condition_index
        pred = outcome.predicted if outcome is not None else np.tile(probe_base, (m, 1))
        for name, rows in groups:
            rows = rows[test[rows]]
            if rows.size == 0:
                continue
            acc = (pred[:, rows] == truth[rows]).mean(axis=1)
            acc0 = float((probe_base[rows] == truth[rows]).mean())
            out.append((name, "probe_accuracy", acc, acc0))
            for k, cat in enumerate(design.conditions):
                share = (pred[:, rows] == k).mean(axis=1)
                share0 = float((probe_base[rows] == k).mean())
                out.append((name, f"probe_predicted:{cat}", share, share0))
    return out


def effects_tables(
    doses: Sequence[DoseResult],
    readouts: Sequence[str],
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    mode: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``effects.csv`` (unperturbed, target, control means) and ``controls.csv`` (every draw)."""
    eff_rows: list[dict] = []
    ctrl_rows: list[dict] = []
    for readout in readouts:
        for cond, name, _values, base_v in readout_values(
            readout, None, base, probe_base, design, 1
        ):
            eff_rows.append(_eff_row(cond, "none", "unperturbed", np.nan, name, base_v, base_v, 0))
        for res in doses:
            kinds = [c.kind for c in res.controls]
            for cond, name, values, base_v in readout_values(
                readout, res.outcome, base, probe_base, design, 1 + len(res.controls)
            ):
                n_t = int(res.target.units.size)
                eff_rows.append(
                    _eff_row(cond, mode, "target", res.dose, name, values[0], base_v, n_t)
                )
                for kind in dict.fromkeys(kinds):
                    sel = np.array([k == kind for k in kinds])
                    v = values[1:][sel]
                    row = _eff_row(
                        cond, mode, f"{kind} (mean)", res.dose, name, v.mean(), base_v, n_t
                    )
                    row["sd"] = float(v.std(ddof=1)) if v.size > 1 else np.nan
                    row["n_draws"] = int(v.size)
                    eff_rows.append(row)
                for c, v in zip(res.controls, values[1:]):
                    ctrl_rows.append(
                        {
                            "control": c.kind,
                            "draw": c.draw,
                            "dose": res.dose,
                            "condition": cond,
                            "readout": name,
                            "value": float(v),
                            "change": float(v - base_v),
                            "n_units": int(c.selection.units.size),
                            "distance_mm": c.distance_mm,
                        }
                    )
    effects = pd.DataFrame(eff_rows)
    for col in ("sd", "n_draws"):
        if col not in effects.columns:
            effects[col] = np.nan
    controls = pd.DataFrame(
        ctrl_rows,
        columns=[
            "control",
            "draw",
            "dose",
            "condition",
            "readout",
            "value",
            "change",
            "n_units",
            "distance_mm",
        ],
    )
    return effects, controls


def _eff_row(cond, mode, intervention, dose, readout, value, base_v, n_units) -> dict:
    return {
        "condition": cond,
        "mode": mode,
        "intervention": intervention,
        "dose": dose,
        "readout": readout,
        "value": float(value),
        "change": float(value - base_v),
        "n_units": int(n_units),
    }


def stats_table(
    doses: Sequence[DoseResult],
    readouts: Sequence[str],
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    driving: bool,
) -> pd.DataFrame:
    """``stats.csv``: the target's effect against each control distribution, per dose/readout."""
    rows = []
    for res in doses:
        kinds = np.array([c.kind for c in res.controls])
        for readout in readouts:
            eff, used = per_stimulus_effects(readout, res.outcome, base, probe_base, design)
            mask = np.zeros(design.split.size, dtype=bool)
            mask[used] = True
            t_rows = design.rows_of(design.targets, mask)
            o_rows = design.rows_of(design.others, mask)
            target_eff = _mean_over(eff, t_rows)
            other_eff = _mean_over(eff, o_rows)
            stats = {
                "target_effect": target_eff,
                "selectivity": target_eff - other_eff,
            }
            if readout == "probe":
                stats["target_bias"] = _target_bias(res.outcome, probe_base, design, driving)
            welch = welch_greater(eff[0, t_rows], eff[0, o_rows])
            for name, vals in stats.items():
                for kind in [k for k in CONTROL_KINDS if k in set(kinds)] or ["none"]:
                    ctrl = vals[1:][kinds == kind] if kind != "none" else np.array([])
                    rows.append(
                        {
                            "dose": res.dose,
                            "readout": readout,
                            "statistic": name,
                            "target_conditions": ",".join(design.targets),
                            "other_conditions": ",".join(design.others),
                            "target_value": float(vals[0]),
                            "on_target_conditions": float(target_eff[0]),
                            "on_other_conditions": float(other_eff[0]),
                            "control": kind,
                            "n_controls": int(np.isfinite(ctrl).sum()),
                            "control_mean": float(np.nanmean(ctrl)) if ctrl.size else np.nan,
                            "control_sd": float(np.nanstd(ctrl, ddof=1))
                            if np.isfinite(ctrl).sum() > 1
                            else np.nan,
                            "control_max": float(np.nanmax(ctrl)) if ctrl.size else np.nan,
                            "p_permutation": permutation_p(float(vals[0]), ctrl),
                            "effect_size_z": effect_size_z(float(vals[0]), ctrl),
                            "welch_t_target_vs_others": welch[0],
                            "welch_p_target_vs_others": welch[1],
                            "cohens_d_target_vs_others": welch[2],
                        }
                    )
    return pd.DataFrame(rows)


def _target_bias(
    outcome: Outcome, probe_base: np.ndarray, design: Design, driving: bool
) -> np.ndarray:
    test = np.flatnonzero(design.split == 1)
    ids = [design.conditions.index(c) for c in design.targets if c in design.conditions]
    share = np.isin(outcome.predicted[:, test], ids).mean(axis=1)
    share0 = np.isin(probe_base[test], ids).mean()
    return (share - share0) * (1.0 if driving else -1.0)


# ---------------------------------------------------------------------- report
def targets_table(sheet: Sheet, doses: Sequence[DoseResult]) -> pd.DataFrame:
    frames = []
    for res in doses:
        u = res.target.units
        frames.append(
            pd.DataFrame(
                {
                    "dose": res.dose,
                    "unit": u,
                    "area": np.asarray(sheet.area_names, dtype=object)[sheet.area[u]],
                    "row": sheet.row[u],
                    "col": sheet.col[u],
                    "x_mm": sheet.x_mm[u],
                    "y_mm": sheet.y_mm[u],
                    "weight": res.target.weights,
                    "value": res.values,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def build_report(
    sheet: Sheet,
    t: np.ndarray,
    doses: Sequence[DoseResult],
    effects: pd.DataFrame,
    stats: pd.DataFrame,
    readouts: Sequence[str],
    summary: Mapping[str, Any],
    notes: Sequence[str],
):
    """report.html: summary, dose-response plots, the targeted units on the sheet, tables."""
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_lines, plot_sheet_map

    rep = Report(
        f"Intervention: {summary['mode']} of {summary['target']}",
        subtitle=str(summary.get("model")),
    )
    rep.add_section("Summary")
    rep.add_key_values(summary)
    for note in notes:
        rep.add_note(note, "warning")
    rep.add_section(
        "Dose-response",
        "Effect on the target condition(s) of the targeted units and of the control draws "
        "(mean ± SD over draws); then the target intervention's change per condition.",
    )
    for readout in readouts:
        sub = stats[(stats["readout"] == readout) & (stats["statistic"] == "target_effect")].copy()
        if sub.empty:
            continue
        lines = [
            {"dose": r.dose, "intervention": "target", "effect": r.target_value, "sd": np.nan}
            for r in sub.drop_duplicates("dose").itertuples()
        ]
        for r in sub[sub["control"] != "none"].itertuples():
            lines.append(
                {
                    "dose": r.dose,
                    "intervention": f"{r.control} control",
                    "effect": r.control_mean,
                    "sd": r.control_sd,
                }
            )
        df = pd.DataFrame(lines)
        xlabel = "spread (mm)" if summary["mode"] == "stimulate" else "dose (% of units)"
        fig = plot_lines(
            df,
            "dose",
            "effect",
            hue="intervention",
            err="sd",
            title=f"{readout}: effect on {summary['target conditions']}",
            xlabel=xlabel,
            ylabel=EFFECT_LABELS[readout],
        )
        rep.add_figure(fig, f"{readout}: target vs control draws")
        main = {"fidelity": "fidelity_cosine", "lm-loss": "lm_loss", "probe": "probe_accuracy"}
        per_cond = effects[
            (effects["readout"] == main[readout]) & (effects["intervention"] == "target")
        ]
        if len(per_cond):
            fig = plot_lines(
                per_cond,
                "dose",
                "change",
                hue="condition",
                title=f"{readout}: change vs unperturbed, per condition",
                xlabel=xlabel,
                ylabel=f"change in {main[readout]}",
            )
            rep.add_figure(fig, f"{readout}: change per condition (target intervention)")
    rep.add_section("Targeted units on the sheet")
    last = doses[-1]
    labels = np.zeros(sheet.n_units, dtype=np.int64)
    dm = next((c for c in last.controls if c.kind == "distance-matched"), None)
    if dm is not None:
        labels[dm.selection.units] = 2
    labels[last.target.units] = 1
    caption = f"t map of the contrast; outlined: the targeted units at dose {last.dose:g} (1)" + (
        " and the first distance-matched control (2)" if dm is not None else ""
    )
    values = np.where(np.isfinite(t), t, np.nan)
    fig = plot_sheet_map(values, sheet, "targeted units", outline_labels=labels)
    rep.add_figure(fig, caption)
    rep.add_section("Statistics")
    rep.add_paragraph(
        "p_permutation = (1 + #{control >= target}) / (n_controls + 1); effect_size_z = "
        "(target - mean(controls)) / sd(controls). target_effect: the effect on the target "
        "condition(s); selectivity: target minus other conditions; Welch t / Cohen's d compare "
        "per-stimulus effects of the target intervention on target vs other conditions."
    )
    rep.add_table(stats, "stats.csv", csv_name="stats.csv")
    rep.add_table(
        effects[effects["intervention"].isin(["none", "target"])],
        "effects.csv (target rows)",
        csv_name="effects.csv",
    )
    return rep


# ---------------------------------------------------------------------- the command
@dataclass
class Plan:
    """Validated options (everything checked before the model loads)."""

    source: SourceResults
    contrast: str
    cluster: int | None
    mode: str
    strength: float
    spread_mm: float
    across_areas: bool
    doses: list[float]
    readouts: list[str]
    controls: list[str]
    n_controls: int
    probe_classifier: str
    weights: dict[str, float]


def plan_intervention(
    from_dir: str | Path,
    cluster: int | None = None,
    contrast: str | None = None,
    top_percent: float | None = None,
    mode: str = "ablate",
    strength: float = 1.0,
    spread_mm: float = 2.0,
    across_areas: bool = False,
    dose: str | Sequence[float] | None = None,
    readout: str = "fidelity",
    controls: str = "random,distance-matched",
    n_controls: int = 50,
    probe_classifier: str = "logistic",
) -> Plan:
    """Check every option and read the source folder; raise TopoInputError on bad input."""
    if mode not in MODES:
        raise TopoInputError(f"unknown --mode {mode!r}; choose one of {', '.join(MODES)}")
    readouts = parse_list(readout, READOUTS, "--readout")
    if not readouts:
        raise TopoInputError(f"--readout needs at least one of {', '.join(READOUTS)}")
    kinds = parse_list(controls, CONTROL_KINDS, "--controls")
    if kinds and (int(n_controls) != n_controls or n_controls < 1):
        raise TopoInputError(f"--n-controls must be an integer >= 1, got {n_controls}")
    if probe_classifier not in CLASSIFIERS:
        raise TopoInputError(
            f"unknown --probe-classifier {probe_classifier!r}; choose {', '.join(CLASSIFIERS)}"
        )
    if not math.isfinite(float(strength)):
        raise TopoInputError(f"--strength must be a finite number, got {strength}")
    if not (math.isfinite(float(spread_mm)) and spread_mm > 0):
        raise TopoInputError(f"--spread-mm must be > 0, got {spread_mm}")
    if top_percent is not None and dose is not None:
        raise TopoInputError("--top-percent and --dose both set the coverage; give one of them")
    if top_percent is not None and mode == "stimulate":
        raise TopoInputError("--top-percent does not apply to stimulate (its dose is --spread-mm)")
    if top_percent is not None and cluster is not None:
        raise TopoInputError("--top-percent goes with --contrast; for a cluster use --dose")
    doses = parse_doses(dose if dose is not None else top_percent, mode)
    if not doses:
        doses = [spread_mm] if mode == "stimulate" else [100.0] if cluster is not None else [10.0]
    source = read_source(from_dir)
    name = resolve_contrast(source, contrast)
    if cluster is not None:
        check_cluster(source, name, int(cluster))
    weights = contrast_weights(source, name)
    if not any(w > 0 for w in weights.values()):
        raise TopoInputError(f"contrast {name!r} has no positive (target) condition")
    return Plan(
        source,
        name,
        None if cluster is None else int(cluster),
        mode,
        float(strength),
        float(spread_mm),
        bool(across_areas),
        doses,
        readouts,
        kinds,
        int(n_controls),
        probe_classifier,
        weights,
    )


def select_target(plan: Plan, sheet: Sheet, t: np.ndarray, dose: float) -> Selection:
    """The target units of one dose."""
    if plan.mode == "stimulate":
        if plan.cluster is not None:
            _, site = cluster_members(plan.source, plan.contrast, plan.cluster)
        else:
            if not np.isfinite(t).any():
                raise TopoInputError("the contrast has no unit with a finite t to pick from")
            site = int(np.nanargmax(t))
        units, weights = stimulation_units(sheet, site, dose, plan.across_areas)
        return Selection(units, weights, dose, site, f"site unit {site}, spread {dose:g} mm")
    if plan.cluster is not None:
        members, _ = cluster_members(plan.source, plan.contrast, plan.cluster)
        units = members[: max(1, int(math.ceil(dose * members.size / 100.0 - 1e-9)))]
        label = f"cluster {plan.cluster}" + (f", top {dose:g}%" if dose < 100 else "")
    else:
        units = top_units(t, dose)
        label = f"top {dose:g}% of {plan.contrast}"
    return Selection(units, np.ones(units.size), dose, None, label)


def design_of(stim_set: Any, plan: Plan) -> Design:
    conditions = list(stim_set.conditions)
    targets = [c for c, w in plan.weights.items() if w > 0]
    missing = [c for c in targets if c not in conditions]
    if missing:
        raise TopoInputError(
            f"the stimuli have no condition {missing[0]!r} (the contrast's target); they have "
            f"{', '.join(conditions)}",
            stim_set.root,
        )
    others = [c for c, w in plan.weights.items() if w < 0 and c in conditions]
    if not others:
        others = [c for c in conditions if c not in targets]
    return Design(conditions, stim_set.condition_index(), stim_set.split_index(), targets, others)


def load_reference(
    plan: Plan, sheet: Sheet, base: Baseline, design: Design
) -> tuple[Reference, list[str]]:
    """Reference mean / direction / SD: the results folder's statistics when usable."""
    from topocli.stats.suffstats import SufficientStats

    path = plan.source.root / "stats.safetensors"
    notes = []
    if path.is_file():
        stats = SufficientStats.load(path)
        meta = stats.metadata
        params = plan.source.manifest.get("parameters") or {}
        conds = json.loads(meta["conditions"]) if "conditions" in meta else plan.source.conditions
        fwhm = float(meta.get("fwhm_mm", params.get("fwhm_mm") or 0) or 0)
        pooling = meta.get("pooling", params.get("pooling") or "mean")
        if stats.n_units == sheet.n_units and fwhm == 0 and pooling == "mean" and conds:
            return reference_from_stats(stats, conds, plan.weights), notes
        notes.append(
            "stats.safetensors holds smoothed or last-token statistics; reference means come "
            "from an unperturbed pass over the stimuli"
        )
    ref = reference_from_activations(
        base.acts.astype(np.float64), design.condition_index, design.conditions, plan.weights
    )
    return ref, notes


def run_intervene(
    ctx: Any,
    from_dir: Path,
    cluster: int | None = None,
    contrast: str | None = None,
    top_percent: float | None = None,
    mode: str = "ablate",
    strength: float = 1.0,
    spread_mm: float = 2.0,
    across_areas: bool = False,
    dose: str | None = None,
    readout: str = "fidelity",
    stimuli: Path | None = None,
    controls: str = "random,distance-matched",
    n_controls: int = 50,
    probe_classifier: str = "logistic",
    out_console: Any = None,
) -> Path:
    """``topo intervene``: perturb, measure, compare with controls, write a results folder."""
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.results import ResultsFolder
    from topocli.stimuli.stimulus_set import load_stimulus_set

    started = time.perf_counter()
    plan = plan_intervention(
        from_dir,
        cluster,
        contrast,
        top_percent,
        mode,
        strength,
        spread_mm,
        across_areas,
        dose,
        readout,
        controls,
        n_controls,
        probe_classifier,
    )
    notes: list[str] = []
    if stimuli is not None:
        stim_set = load_stimulus_set(stimuli)
    else:
        stim_set, stim_notes = source_stimuli(plan.source)
        notes += stim_notes
    design = design_of(stim_set, plan)
    given_spec = ctx.model_spec
    if not given_spec:
        ctx.model_spec = model_spec_from_manifest(plan.source.manifest)
    out = Path(ctx.out) if ctx.out is not None else Path(f"intervene-{plan.mode}")
    with ExitStack() as stack:
        rf = stack.enter_context(ResultsFolder(out, getattr(ctx, "overwrite", False)))
        model = ctx.load_model()
        check_identity(plan.source, model, given_spec)
        check_readouts(model, plan.readouts, stim_set.modality, len(design.conditions))
        sheet = model.sheet
        t = t_values(plan.source, plan.contrast, sheet.n_units)
        targets = [select_target(plan, sheet, t, d) for d in plan.doses]
        control_sets = []
        for i, target in enumerate(targets):
            found, control_notes = make_controls(
                sheet, target, plan.controls, plan.n_controls, ctx.seed, i
            )
            control_sets.append(found)
            notes += control_notes
        model.eval()
        prep = prepare_stimuli(model, stim_set, int(ctx.batch_size), plan.readouts)
        with ctx.progress() as progress:
            base = run_baseline(model, prep, progress)
            ref, ref_notes = load_reference(plan, sheet, base, design)
            if plan.mode != "ablate":  # ablation needs no reference numbers
                notes += ref_notes
            probe = probe_base = None
            perturbed_prep = prep
            if "probe" in plan.readouts:
                train = design.split == 0
                probe = fit_probe(
                    base.final[train],
                    design.condition_index[train],
                    plan.probe_classifier,
                    ctx.seed,
                )
                probe_base = probe.predict(base.final)
                if plan.readouts == ["probe"]:  # only the test half needs perturbed passes
                    perturbed_prep = prepare_stimuli(
                        model,
                        stim_set,
                        int(ctx.batch_size),
                        plan.readouts,
                        np.flatnonzero(design.split == 1),
                    )
            results = []
            for target, ctrls in zip(targets, control_sets):
                values = perturbation_values(plan.mode, plan.strength, target, ref)
                norm = float(np.linalg.norm(values)) if plan.mode == "steer" else None
                sels = [target] + [c.selection for c in ctrls]
                vals = [values] + [
                    perturbation_values(plan.mode, plan.strength, c.selection, ref, norm)
                    for c in ctrls
                ]
                pset = PerturbationSet(
                    model, [s.units for s in sels], vals, plan.mode in REPLACE_MODES
                )
                outcome = evaluate(
                    model, perturbed_prep, pset, base, probe, progress, f"dose {target.dose:g}"
                )
                results.append(DoseResult(target.dose, target, values, ctrls, outcome))
        driving = plan.mode in ("steer", "stimulate") and plan.strength > 0
        ref_desc = ref.source if plan.mode != "ablate" else "none needed (ablate sets units to 0)"
        effects, controls_df = effects_tables(
            results, plan.readouts, base, probe_base, design, plan.mode
        )
        stats = stats_table(results, plan.readouts, base, probe_base, design, driving)
        target_desc = (
            f"cluster {plan.cluster} of {plan.contrast}"
            if plan.cluster is not None
            else f"top units of {plan.contrast}"
        )
        if plan.mode == "stimulate":
            target_desc = f"a site of {target_desc} (stimulation)"
        summary = {
            "results folder": str(plan.source.root),
            "model": _describe_model(model_identity(model)),
            "mode": plan.mode,
            "target": target_desc,
            "target conditions": ", ".join(design.targets),
            "other conditions": ", ".join(design.others),
            "doses": ", ".join(f"{d:g}" for d in plan.doses),
            "units per dose": ", ".join(str(r.target.units.size) for r in results),
            "strength": plan.strength,
            "readouts": ", ".join(plan.readouts),
            "controls": ", ".join(plan.controls) or "none",
            "control draws per kind": plan.n_controls if plan.controls else 0,
            "stimuli": len(stim_set),
            "reference": ref_desc,
            "seed": ctx.seed,
        }
        rf.write_csv("effects.csv", effects)
        rf.write_csv("controls.csv", controls_df)
        rf.write_csv("stats.csv", stats)
        rf.write_csv("targets.csv", targets_table(sheet, results))
        rf.write_report(
            build_report(sheet, t, results, effects, stats, plan.readouts, summary, notes)
        )
        elapsed = time.perf_counter() - started
        params = {
            "from": str(plan.source.root),
            "model": ctx.model_spec,
            "contrast": plan.contrast,
            "cluster": plan.cluster,
            "mode": plan.mode,
            "strength": plan.strength,
            "spread_mm": plan.spread_mm,
            "across_areas": plan.across_areas,
            "doses": plan.doses,
            "readouts": plan.readouts,
            "controls": plan.controls,
            "n_controls": plan.n_controls,
            "probe_classifier": plan.probe_classifier,
            "stimuli": str(stimuli) if stimuli is not None else None,
            "device": getattr(ctx, "device_name", None),
            "dtype": getattr(ctx, "dtype_name", None),
            "batch_size": int(ctx.batch_size),
        }
        rf.write_manifest(
            "intervene",
            params,
            {"results": str(plan.source.root), "stimuli": [str(p) for p in _stim_paths(stim_set)]},
            seed=ctx.seed,
            extra={
                "model": model_identity(model),
                "source": {
                    "command": plan.source.command,
                    "path": str(plan.source.root),
                    "created": plan.source.manifest.get("created"),
                },
                "contrast_weights": plan.weights,
                "target_conditions": design.targets,
                "other_conditions": design.others,
                "units_per_dose": {f"{r.dose:g}": int(r.target.units.size) for r in results},
                "reference": ref_desc,
                "notes": notes,
                "seconds": round(elapsed, 3),
            },
        )
    if not ctx.quiet and out_console is not None:
        print_summary(stats, out_console)
        out_console.print(f"wrote {out}")
    return out


def _stim_paths(stim_set: Any) -> list[Path]:
    root = Path(stim_set.root)
    if root.is_file():
        return [root]
    parents = [s.path.parent for s in stim_set.stimuli if s.path is not None]
    return list(dict.fromkeys(parents)) or [root]


def print_summary(stats: pd.DataFrame, console: Any) -> None:
    """A rich table of the target effects against the controls."""
    from rich.table import Table

    table = Table(title="effect of the intervention vs controls (permutation p)")
    for col in ("dose", "readout", "statistic", "target", "control", "control mean", "p", "z"):
        table.add_column(
            col, justify="left" if col in ("readout", "statistic", "control") else "right"
        )
    for r in stats.itertuples():
        table.add_row(
            f"{r.dose:g}",
            r.readout,
            r.statistic,
            f"{r.target_value:.4g}",
            r.control,
            "—" if not np.isfinite(r.control_mean) else f"{r.control_mean:.4g}",
            "—" if not np.isfinite(r.p_permutation) else f"{r.p_permutation:.3g}",
            "—" if not np.isfinite(r.effect_size_z) else f"{r.effect_size_z:.2f}",
        )
    console.print(table)
