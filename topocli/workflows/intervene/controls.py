"""Control unit sets of a target: random draws and distance-matched translations.

- ``random``: the same number of units per area, drawn uniformly from the same area(s), disjoint
  from the target;
- ``distance-matched``: the target's shape translated within each area so that its centre lies at
  least the target's diameter from the target's centre; near an edge, where no translation fits,
  the nearest units of the area around a far site (same count, its centre checked alike).

Every draw is seeded by the run's seed, the dose and the kind (:func:`make_controls`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.workflows.intervene.targets import Selection, area_bounds

# 100 draws per kind: the smallest permutation p, 1 / (n + 1), is then below 0.01
DEFAULT_N_CONTROLS = 100
CONTROL_KINDS = ("random", "distance-matched")


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
        members = np.arange(*area_bounds(sheet, k))
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
    members = np.arange(*area_bounds(sheet, k))
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
        # sites that far may exist, but none holds a copy of the target that fits the area
        # and misses the target's own units
        far = int(np.count_nonzero(dist >= plan.diameter - 1e-9))
        return [], (
            f"no copy of the target fits in area {name!r} at least {plan.diameter:.3g} mm (the "
            f"target's diameter) from it: {far} sites lie that far (the farthest "
            f"{float(dist.max()):.3g} mm), but a copy there leaves the area or overlaps the "
            "target; lower the dose so the target is smaller, or use --controls random"
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


def perturbation_key(units: np.ndarray, values: np.ndarray) -> bytes:
    """Identity of a perturbation: its (unit, value) pairs, whatever order they were drawn in.

    Two draws with the same key edit the same units by the same values: one forward serves
    both.
    """
    u = np.asarray(units, dtype=np.int64)
    order = np.argsort(u, kind="stable")
    v = np.asarray(values, dtype=np.float64)[order]
    return u[order].tobytes() + b"|" + v.tobytes()


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
