"""Data of the report's interactive sheet viewer (drawn by the report's own inline script).

The viewer shows one sheet map at a time on a canvas; hovering a unit shows its area, grid row
and column, position in mm, t, q and cluster. Everything it needs is embedded in the page as
compact arrays: per unit int16 row, column and area index, and per map float16 t, float16
``-log10 q`` (q itself would underflow float16 below 6e-8) and int16 cluster id, each
little-endian and base64-encoded. 2,304 units and six maps take about 50 kB.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAX_VIEWER_MAPS = 24  # more maps: the first ones (the rest are in the NIfTI files)


def _b64(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def _neg_log10(q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.log10(np.clip(q, 1e-300, 1.0))
    return np.where(np.isfinite(q), out, np.nan)


def viewer_payload(sheet: Any, maps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON the viewer script reads: the sheet's geometry and each map's values.

    Parameters
    ----------
    sheet : Sheet
    maps : sequence of mapping
        ``name`` and ``t`` (n_units,), optionally ``q`` (n_units,) and ``cluster`` (n_units,
        0 or NaN = none).

    Returns
    -------
    dict
        ``rows``, ``cols``, ``mm``, ``areas`` (names), ``unit`` (base64 int16 triples row,
        col, area per unit), and ``maps``: ``[{name, vmax, t, q, cluster}]`` with ``q`` and
        ``cluster`` null when not given. ``vmax`` is the 99th percentile of |t| (colour limit).
    """
    if not maps:
        raise ValueError("the sheet viewer needs at least one map")
    n = sheet.n_units
    rows, cols = sheet.grid_shape
    triples = np.stack([sheet.row, sheet.col, sheet.area], axis=1).astype("<i2")
    out_maps = []
    for m in list(maps)[:MAX_VIEWER_MAPS]:
        t = np.asarray(m["t"], dtype=np.float64)
        if t.shape != (n,):
            raise ValueError(f"map {m.get('name')!r}: expected ({n},) t values, got {t.shape}")
        finite = np.abs(t[np.isfinite(t)])
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
        entry: dict[str, Any] = {
            "name": str(m["name"]),
            "vmax": round(vmax, 3) if vmax > 0 else 1.0,
            "t": _b64(t, "<f2"),
            "q": None,
            "cluster": None,
        }
        if m.get("q") is not None:
            entry["q"] = _b64(_neg_log10(np.asarray(m["q"], dtype=np.float64)), "<f2")
        if m.get("cluster") is not None:
            lab = np.nan_to_num(np.asarray(m["cluster"], dtype=np.float64), nan=0.0)
            entry["cluster"] = _b64(lab, "<i2")
        out_maps.append(entry)
    return {
        "rows": int(rows),
        "cols": int(cols),
        "mm": float(sheet.mm_per_unit),
        "n_units": int(n),
        "areas": [str(a) for a in sheet.area_names],
        "unit": _b64(triples, "<i2"),
        "maps": out_maps,
        "n_maps_total": len(maps),
    }
