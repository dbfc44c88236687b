"""Tables every command writes the same way: ``units.csv`` rows and cluster tables.

``units.csv`` has one row per (map, unit) with the columns :data:`UNIT_COLUMNS` after the
command's key columns (``contrast`` for localize; ``category`` and ``reference`` for screen). A
statistic a command does not compute is an empty column, not a missing one. ``cluster`` is the
unit's cluster id as in ``clusters.csv`` (1 = largest); 0 means the unit is in no cluster (not
significant, or in a component smaller than ``--min-cluster``), as in label images.

Cluster tables carry the peak's position: ``peak_unit``, ``peak_area``, ``peak_row``,
``peak_col`` and ``peak_x_mm`` / ``peak_y_mm`` (the sheet's mm, as the centroids).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

UNIT_COLUMNS = [
    "unit",
    "area",
    "row",
    "col",
    "x_mm",
    "y_mm",
    "t",
    "df",
    "p",
    "q",
    "d",
    "significant",
    "cluster",
]
UNIT_STATS = ("t", "df", "p", "q", "d")
PEAK_COLUMNS = ["peak_unit", "peak_area", "peak_row", "peak_col", "peak_x_mm", "peak_y_mm"]


def unit_frame(sheet: Any, maps: Mapping[str, Any], keys: Mapping[str, Any]) -> pd.DataFrame:
    """One map's rows of ``units.csv``: ``keys`` columns first, then :data:`UNIT_COLUMNS`.

    Parameters
    ----------
    sheet : Sheet
    maps : mapping
        Per-unit arrays by name: ``t`` (required), ``df``, ``p``, ``q``, ``d``,
        ``significant`` and ``cluster`` (missing statistics are NaN; missing significance
        False; missing cluster 0).
    keys : mapping
        The command's key columns and their value for this map (e.g. ``{"contrast": "a>b"}``).
    """
    n = sheet.n_units
    area = np.asarray(sheet.area_names, dtype=object)[sheet.area]
    data: dict[str, Any] = {k: v for k, v in keys.items()}
    data.update(
        unit=np.arange(n),
        area=area,
        row=sheet.row,
        col=sheet.col,
        x_mm=sheet.x_mm,
        y_mm=sheet.y_mm,
    )
    for stat in UNIT_STATS:
        value = maps.get(stat)
        data[stat] = np.full(n, np.nan) if value is None else np.asarray(value, dtype=np.float64)
    sig = maps.get("significant")
    data["significant"] = np.zeros(n, bool) if sig is None else np.asarray(sig, dtype=bool)
    lab = maps.get("cluster")
    data["cluster"] = np.zeros(n, np.int64) if lab is None else np.asarray(lab, dtype=np.int64)
    return pd.DataFrame(data)[[*keys, *UNIT_COLUMNS]]


def with_peak_position(clusters: pd.DataFrame, sheet: Any) -> pd.DataFrame:
    """A cluster table with the peak's area, row, column and position in mm after ``peak_unit``.

    Rows without a peak unit get empty positions. The table is returned unchanged when it has
    no ``peak_unit`` column.
    """
    if "peak_unit" not in clusters.columns:
        return clusters
    out = clusters.drop(columns=[c for c in PEAK_COLUMNS[1:] if c in clusters.columns])
    unit = pd.to_numeric(out["peak_unit"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(unit) & (unit >= 0) & (unit < sheet.n_units)
    idx = np.where(ok, unit, 0).astype(np.int64)
    names = np.asarray(sheet.area_names, dtype=object)[sheet.area]

    def column(values: np.ndarray, dtype: str | None = None) -> pd.Series:
        col = pd.Series(np.asarray(values)[idx], index=out.index, dtype=dtype)
        return col.where(pd.Series(ok, index=out.index))

    extra = {
        "peak_area": column(names, "object"),
        "peak_row": column(sheet.row, "Int64"),
        "peak_col": column(sheet.col, "Int64"),
        "peak_x_mm": column(sheet.x_mm),
        "peak_y_mm": column(sheet.y_mm),
    }
    at = list(out.columns).index("peak_unit") + 1
    for offset, (name, values) in enumerate(extra.items()):
        out.insert(at + offset, name, values)
    return out
