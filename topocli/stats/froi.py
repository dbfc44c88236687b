"""Split-half fROI response profiles: the human EMFL method on the sheet.

As in the Efficient Multifunction fMRI Localizer analysis (Marvi et al. 2025), a functional region
of interest (fROI) is the top ``x`` % of units of a contrast's t map *inside a search region* (one
area of the sheet, or the whole sheet), defined on one half of the stimuli (``even``) and read out
on the other (``odd``), and vice versa. The fROI's response to a condition is the mean, over the
fROI's units, of the condition's mean response on the held-out half. Both directions are reported
as well as their average, so selection and measurement never see the same stimuli.

Uncertainty
    ``response_sem`` is the standard error across the held-out stimuli of the fROI-averaged
    response, computed from per-unit statistics only as ``mean_u(sd_u) / sqrt(n)`` (``sd_u`` the
    across-stimulus standard deviation of unit ``u``). That is exact when the fROI's units co-vary
    perfectly and an upper bound otherwise (the standard deviation of a mean is at most the mean
    of the standard deviations), so it never understates the error. The ``mean`` direction
    combines the two independent halves: ``sqrt(sem_1^2 + sem_2^2) / 2``.

Selection
    :func:`top_percent_mask` selects ``ceil(percent / 100 * n_finite)`` units (at least one when
    any t is finite), ``n_finite`` the region's units with a finite t; NaN t is never selected and
    ties are broken by the lower unit index, so the mask has exactly that many units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.sheet import Sheet

SPLITS = ("even", "odd")
DIRECTIONS = ("even->odd", "odd->even", "mean")
PROFILE_COLUMNS = [
    "froi",
    "contrast",
    "area",
    "condition",
    "split_direction",
    "response_mean",
    "response_sem",
    "n_units",
    "n_stimuli",
]
DICE_COLUMNS = ["froi", "contrast", "area", "n_units_even", "n_units_odd", "dice"]
WHOLE_SHEET = "sheet"

Region = Sheet | np.ndarray | slice | None


def _region_mask(region: Region, n_units: int) -> np.ndarray:
    """Boolean mask over ``n_units`` for a Sheet (all units), slice, bool mask or index array."""
    if region is None or isinstance(region, Sheet):
        if isinstance(region, Sheet) and region.n_units != n_units:
            raise TopoInputError(f"t has {n_units} units but the sheet has {region.n_units}")
        return np.ones(n_units, dtype=bool)
    mask = np.zeros(n_units, dtype=bool)
    if isinstance(region, slice):
        mask[region] = True
        return mask
    arr = np.asarray(region)
    if arr.dtype == bool:
        if arr.shape != (n_units,):
            raise TopoInputError(f"region mask has shape {arr.shape}, expected ({n_units},)")
        return arr.copy()
    mask[arr.astype(np.int64)] = True
    return mask


def _check_percent(percent: float) -> float:
    percent = float(percent)
    if not (math.isfinite(percent) and 0 < percent <= 100):
        raise TopoInputError(f"top percent must be in (0, 100], got {percent}")
    return percent


def top_percent_mask(t: np.ndarray, region: Region, percent: float) -> np.ndarray:
    """The top ``percent`` % of units by ``t`` inside a search region.

    Parameters
    ----------
    t : ndarray, shape (n_units,)
    region : Sheet, slice, ndarray of bool or int, or None
        Search region: a Sheet or None means every unit; a slice (e.g. ``sheet.area_slice(k)``),
        a boolean mask or unit indices restrict it.
    percent : float
        In (0, 100].

    Returns
    -------
    ndarray of bool, shape (n_units,)
        ``ceil(percent / 100 * n_finite)`` units (see the module docstring), highest t first, ties
        to the lower unit index; NaN t never selected.
    """
    percent = _check_percent(percent)
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1:
        raise TopoInputError(f"expected one t value per unit, got shape {t.shape}")
    cand = np.flatnonzero(_region_mask(region, t.size) & np.isfinite(t))
    out = np.zeros(t.size, dtype=bool)
    if cand.size == 0:
        return out
    k = max(1, math.ceil(round(percent * cand.size / 100.0, 9)))
    order = np.argsort(-t[cand], kind="stable")  # cand is ascending: ties keep the lower index
    out[cand[order[:k]]] = True
    return out


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice coefficient ``2 |A & B| / (|A| + |B|)`` of two boolean masks (NaN if both empty)."""
    a = np.asarray(mask_a, dtype=bool)
    b = np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(a & b)) / total


def search_regions(
    sheet: Sheet, areas: str | Sequence[str | int] = "each"
) -> list[tuple[str, np.ndarray]]:
    """Named search regions: ``"each"`` area separately, the whole ``"sheet"``, or listed areas.

    Returns
    -------
    list of (name, bool mask over the sheet's units)
    """
    if isinstance(areas, str):
        if areas == WHOLE_SHEET:
            return [(WHOLE_SHEET, np.ones(sheet.n_units, dtype=bool))]
        if areas == "each":
            ks = range(len(sheet.areas))
        else:
            ks = [sheet.area_index(areas)]
    else:
        ks = [sheet.area_index(a) for a in areas]
        if not ks:
            raise TopoInputError("no areas selected for the fROIs")
    out = []
    for k in ks:
        mask = np.zeros(sheet.n_units, dtype=bool)
        mask[sheet.area_slice(k)] = True
        out.append((sheet.areas[k].name, mask))
    return out


def _check_t_by_split(t_by_split: np.ndarray, sheet: Sheet) -> np.ndarray:
    t = np.asarray(t_by_split, dtype=np.float64)
    if t.shape != (2, sheet.n_units):
        raise TopoInputError(
            f"expected t maps of shape (2, {sheet.n_units}) (even, odd), got {t.shape}"
        )
    return t


def froi_masks(
    t_by_split: np.ndarray,
    sheet: Sheet,
    areas: str | Sequence[str | int] = "each",
    top_percent: float = 10.0,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """fROI masks per search region defined on each half.

    Returns
    -------
    list of (area name or "sheet", mask defined on even, mask defined on odd)
    """
    t = _check_t_by_split(t_by_split, sheet)
    return [
        (
            name,
            top_percent_mask(t[0], region, top_percent),
            top_percent_mask(t[1], region, top_percent),
        )
        for name, region in search_regions(sheet, areas)
    ]


def split_half_dice(
    t_by_split: np.ndarray,
    sheet: Sheet,
    contrast: str = "contrast",
    areas: str | Sequence[str | int] = "each",
    top_percent: float = 10.0,
) -> pd.DataFrame:
    """Split-half reliability: Dice of the even-defined and odd-defined fROIs per region."""
    rows = [
        {
            "froi": f"{contrast}@{name}",
            "contrast": contrast,
            "area": name,
            "n_units_even": int(m_even.sum()),
            "n_units_odd": int(m_odd.sum()),
            "dice": dice(m_even, m_odd),
        }
        for name, m_even, m_odd in froi_masks(t_by_split, sheet, areas, top_percent)
    ]
    return pd.DataFrame(rows, columns=DICE_COLUMNS)


def _readout(
    mask: np.ndarray, mean_row: np.ndarray, var_row: np.ndarray | None, n_stim: float
) -> tuple[float, float, int]:
    """Mean response over the fROI and its SEM bound (see module docstring)."""
    k = int(mask.sum())
    if k == 0:
        return float("nan"), float("nan"), 0
    mean = float(mean_row[mask].mean())
    if var_row is None or not n_stim > 0:
        return mean, float("nan"), k
    sd = np.sqrt(np.clip(var_row[mask], 0.0, None))
    return mean, float(sd.mean() / math.sqrt(n_stim)), k


def froi_profiles(
    t_by_split: np.ndarray,
    means: np.ndarray,
    sheet: Sheet,
    conditions: Sequence[str],
    contrast: str = "contrast",
    areas: str | Sequence[str | int] = "each",
    top_percent: float = 10.0,
    n: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> pd.DataFrame:
    """Cross-validated fROI response profiles (define on one half, measure on the other).

    Parameters
    ----------
    t_by_split : ndarray, shape (2, n_units)
        The contrast's t map computed on the even and on the odd half of the stimuli.
    means : ndarray, shape (n_conditions, 2, n_units)
        Mean response of every condition on each half (index 0 even, 1 odd).
    sheet : Sheet
    conditions : sequence of str
        Condition names, in the order of ``means``' first axis.
    contrast : str
        Contrast name; fROIs are called ``"{contrast}@{area}"``.
    areas : "each", "sheet", an area name, or a sequence of area names / indices
        Search regions: each area separately (default), the whole sheet, or the listed areas.
    top_percent : float
        Size of the fROI in % of the region's units (with a finite t).
    n : ndarray, shape (n_conditions, 2), optional
        Number of stimuli per condition and half.
    var : ndarray, shape (n_conditions, 2, n_units), optional
        Across-stimulus variance (ddof=1) per condition, half and unit. Without ``n`` and
        ``var`` the SEM is NaN.

    Returns
    -------
    DataFrame
        Tidy, columns ``froi, contrast, area, condition, split_direction ('even->odd',
        'odd->even', 'mean'), response_mean, response_sem, n_units, n_stimuli``. ``n_units`` of
        the mean row is the rounded average of the two fROI sizes, ``n_stimuli`` the held-out
        stimuli (both halves for the mean row).
    """
    t = _check_t_by_split(t_by_split, sheet)
    mu = np.asarray(means, dtype=np.float64)
    n_cond = len(conditions)
    if mu.shape != (n_cond, 2, sheet.n_units):
        raise TopoInputError(
            f"expected condition means of shape ({n_cond}, 2, {sheet.n_units}), got {mu.shape}"
        )
    if (n is None) != (var is None):
        raise TopoInputError("give both n and var for the SEM, or neither")
    counts = np.full((n_cond, 2), np.nan) if n is None else np.asarray(n, dtype=np.float64)
    variances = None if var is None else np.asarray(var, dtype=np.float64)
    if counts.shape != (n_cond, 2):
        raise TopoInputError(f"expected stimulus counts of shape ({n_cond}, 2), got {counts.shape}")
    if variances is not None and variances.shape != mu.shape:
        raise TopoInputError(f"expected variances of shape {mu.shape}, got {variances.shape}")
    rows = []
    for name, m_even, m_odd in froi_masks(t, sheet, areas, top_percent):
        froi = f"{contrast}@{name}"
        for c, cond in enumerate(conditions):
            parts = []
            for measure, mask in ((1, m_even), (0, m_odd)):
                v = None if variances is None else variances[c, measure]
                parts.append(_readout(mask, mu[c, measure], v, counts[c, measure]))
            (r1, s1, k1), (r2, s2, k2) = parts
            mean_row = (
                (r1 + r2) / 2.0,
                math.sqrt(s1**2 + s2**2) / 2.0,
                int(round((k1 + k2) / 2.0)),
            )
            stims = (counts[c, 1], counts[c, 0], counts[c, 0] + counts[c, 1])
            for direction, (resp, sem, k), n_stim in zip(
                DIRECTIONS, (*parts, mean_row), stims, strict=True
            ):
                rows.append(
                    {
                        "froi": froi,
                        "contrast": contrast,
                        "area": name,
                        "condition": cond,
                        "split_direction": direction,
                        "response_mean": resp,
                        "response_sem": sem,
                        "n_units": k,
                        "n_stimuli": n_stim,
                    }
                )
    table = pd.DataFrame(rows, columns=PROFILE_COLUMNS)
    if n is not None:
        table["n_stimuli"] = table["n_stimuli"].astype(np.int64)
    return table
