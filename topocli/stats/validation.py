"""Checks of the analysis options shared by every command that makes sheet maps.

Called once at the boundary, before a model runs, so a bad option is one line and costs nothing.
"""

from __future__ import annotations

import math

from topocli.errors import TopoInputError

ALTERNATIVES = ("greater", "two-sided")
FDR_SCOPES = ("sheet", "area")


def check_map_options(
    q: float,
    alternative: str,
    fdr_scope: str,
    top_percent: float,
    min_cluster: int,
    connectivity: int,
    permutations: int,
    fwhm_mm: float,
) -> None:
    """One-line TopoInputError for any map option out of range.

    Parameters
    ----------
    q : float
        BH-FDR threshold, strictly inside (0, 1).
    alternative : {"greater", "two-sided"}
    fdr_scope : {"sheet", "area"}
    top_percent : float
        fROI size in (0, 100].
    min_cluster : int
        Smallest cluster, >= 1.
    connectivity : {4, 8}
    permutations : int
        >= 0.
    fwhm_mm : float
        Finite, >= 0.
    """
    try:
        qv = float(q)
    except (TypeError, ValueError):
        raise TopoInputError(f"--q must be a number in (0, 1), got {q!r}") from None
    if not (math.isfinite(qv) and 0.0 < qv < 1.0):
        raise TopoInputError(f"--q must lie strictly between 0 and 1, got {q}")
    if alternative not in ALTERNATIVES:
        raise TopoInputError(
            f"--alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}"
        )
    if fdr_scope not in FDR_SCOPES:
        raise TopoInputError(
            f"--fdr-scope must be one of {', '.join(FDR_SCOPES)}, got {fdr_scope!r}"
        )
    tp = float(top_percent)
    if not (math.isfinite(tp) and 0.0 < tp <= 100.0):
        raise TopoInputError(f"--top-percent must lie in (0, 100], got {top_percent}")
    if int(min_cluster) != min_cluster or min_cluster < 1:
        raise TopoInputError(f"--min-cluster must be an integer >= 1, got {min_cluster}")
    if connectivity not in (4, 8):
        raise TopoInputError(f"--connectivity must be 4 or 8, got {connectivity}")
    if int(permutations) != permutations or permutations < 0:
        raise TopoInputError(f"--permutations must be an integer >= 0, got {permutations}")
    fw = float(fwhm_mm)
    if not (math.isfinite(fw) and fw >= 0):
        raise TopoInputError(f"--fwhm-mm must be a finite number >= 0, got {fwhm_mm}")
