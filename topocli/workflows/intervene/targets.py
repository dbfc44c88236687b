"""Target units of an intervention: a cluster's units, the top P% (or a percentile band) by t,
or a stimulation site.

A :class:`Selection` is the unit set of one perturbation with a weight per unit (1, or the
stimulation Gaussian); controls (:mod:`.controls`) and per-unit values (:mod:`.perturbations`)
are built from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from topocli.errors import TopoInputError
from topocli.sheet import Sheet

# the stimulation Gaussian is cut at this many spreads (beyond, under 1.2% of its peak)
STIMULATE_TRUNCATE = 3.0


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


def band_units(t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Units whose t lies in the ``lo``-``hi`` percentile band of the finite t; highest first.

    A unit's percentile is the percent of finite units with a lower t (ranks from the lowest,
    ties by unit index: scipy's ``percentileofscore(kind="strict")`` without ties); the band
    holds the units with ``lo <= percentile < hi`` (``hi = 100`` includes the top unit), so
    ``0-1`` is the least selective 1%. At least one unit.
    """
    pool = np.flatnonzero(np.isfinite(t))
    if pool.size == 0:
        raise TopoInputError("the contrast has no unit with a finite t to pick from")
    n = pool.size
    order = pool[np.lexsort((pool, t[pool]))]
    first = min(n - 1, int(math.ceil(lo * n / 100.0 - 1e-9)))
    stop = max(first + 1, int(math.ceil(hi * n / 100.0 - 1e-9)))
    chosen = order[first : min(stop, n)]
    return chosen[np.lexsort((chosen, -t[chosen]))]


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


def area_bounds(sheet: Sheet, k: int) -> tuple[int, int]:
    """First and one-past-last sheet unit of area ``k``."""
    s = sheet.area_slice(k)
    return s.start, s.stop
