"""Human fROIs: the top x% of a contrast inside a parcel, defined on one half, read on the other.

The same method ``localize`` runs on the model sheet: :func:`define_froi` and
:func:`split_half_froi_responses` (define on even runs, read odd runs, and vice versa).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.human.maps import HumanMap, label_of, mask_array, spatial_array

_SPLIT_DIRECTIONS = ("even->odd", "odd->even", "mean")


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
    values = spatial_array(contrast_map)
    mask = mask_array(parcel_mask)
    where = label_of(parcel_mask)
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
    even = {c: spatial_array(m) for c, m in condition_maps_even.items()}
    odd = {c: spatial_array(m) for c, m in condition_maps_odd.items()}
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


