"""Per-unit maps of a weighted contrast from per-(condition, split) sufficient statistics.

The pipeline (:func:`topocli.activations.extraction.extract`) accumulates one group per
``2 * condition + split`` cell. :func:`condition_moments` pools the two splits of each condition;
:func:`split_moments` keeps them apart (for split-half fROIs); :func:`contrast_maps` gives the
Welch t, df, p, BH q, Cohen's d and the significance mask of one contrast. A condition whose
responses do not vary (SD below ``1e-12 |mean|``, float64 rounding of a constant input) gets an
exact zero variance, so its t is NaN and it is never significant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.stats.contrasts import bh_fdr, contrast_d, contrast_t
from topocli.stats.suffstats import SufficientStats, chan_merge


@dataclass
class ContrastMap:
    """A contrast's maps on the sheet (one value per unit) and its clusters.

    Attributes
    ----------
    t, df, p, q, d : ndarray [U]
        Welch t, Welch-Satterthwaite df, p, BH q and Cohen's d per unit.
    significant : ndarray of bool [U]
    labels : ndarray of int [U]
        Cluster per unit (0: none).
    clusters : DataFrame
        The cluster table (with island Moran's I).
    moran_mean : float
        Mean island Moran's I (NaN without islands).
    """

    t: np.ndarray
    df: np.ndarray
    p: np.ndarray
    q: np.ndarray
    d: np.ndarray
    significant: np.ndarray
    labels: np.ndarray
    clusters: pd.DataFrame
    moran_mean: float

    @property
    def n_significant(self) -> int:
        return int(np.count_nonzero(self.significant))

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)


def require_some_variation(maps, where=None) -> None:
    """One-line TopoInputError when no map has a single finite t.

    That happens only when every unit's response is constant within each condition (identical
    stimuli, or a model whose recorded units do not respond): the maps would be all NaN.
    """
    if maps and not any(np.isfinite(m.t).any() for m in maps):
        raise TopoInputError(
            "every unit's response is constant within each condition, so no t is defined "
            "anywhere (are the stimuli identical?); nothing to test",
            where,
        )


# a condition's responses count as constant when their SD is below this fraction of |mean|
# (float64 rounding of a constant float32 input is ~1e-16 relative; real variation >= ~1e-7)
ZERO_VARIANCE_RTOL = 1e-12


def clean_variance(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Set numerically-zero variances (SD <= 1e-12 |mean|) to exactly 0."""
    with np.errstate(invalid="ignore"):
        tiny = np.sqrt(np.clip(var, 0.0, None)) <= ZERO_VARIANCE_RTOL * np.abs(mean)
    return np.where(tiny & np.isfinite(var), 0.0, var)


def condition_moments(stats: SufficientStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-condition ``n`` [C], ``mean`` [C, U] and ddof-1 ``var`` [C, U] (splits pooled)."""
    n_cond = stats.n_groups // 2
    n = np.empty(n_cond)
    mean = np.empty((n_cond, stats.n_units))
    var = np.empty((n_cond, stats.n_units))
    for c in range(n_cond):
        nc, mu, m2 = stats.pooled([2 * c, 2 * c + 1])
        n[c] = nc
        mean[c] = mu
        with np.errstate(invalid="ignore", divide="ignore"):
            var[c] = m2 / (nc - 1) if nc >= 2 else np.nan
    return n, mean, clean_variance(mean, var)


def split_moments(stats: SufficientStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-(condition, split) ``n`` [C, 2], ``mean`` [C, 2, U], ``var`` [C, 2, U]."""
    n_cond = stats.n_groups // 2
    n = stats.count.reshape(n_cond, 2)
    mean = stats.mean.reshape(n_cond, 2, stats.n_units)
    var = stats.variance().reshape(n_cond, 2, stats.n_units)
    return n, mean, clean_variance(mean, var)


def merge_splits(stats: SufficientStats) -> SufficientStats:
    """Per-condition statistics (both splits) from per-(condition, split) statistics."""
    n, mean, m2 = chan_merge(
        stats.count[0::2, None],
        stats.mean[0::2],
        stats.m2[0::2],
        stats.count[1::2, None],
        stats.mean[1::2],
        stats.m2[1::2],
    )
    return SufficientStats.from_arrays(n[:, 0], mean, m2)


def split_stats(stats: SufficientStats, split: int) -> SufficientStats:
    """Per-condition statistics of one split (0 = even, 1 = odd)."""
    return SufficientStats.from_arrays(
        stats.count[split::2], stats.mean[split::2], stats.m2[split::2]
    )


def significance(
    t: np.ndarray,
    p: np.ndarray,
    q_threshold: float = 0.05,
    alternative: str = "greater",
    fdr_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BH q values and the significance mask (``q < q_threshold``, and ``t > 0`` if one-sided).

    Parameters
    ----------
    t, p : ndarray [U]
    q_threshold : float
    alternative : {"greater", "two-sided"}
    fdr_groups : ndarray [U], optional
        Label per unit to run BH within (e.g. ``sheet.area``); None: over all units.
    """
    q = bh_fdr(p, fdr_groups)
    finite = np.isfinite(t) & np.isfinite(q)
    with np.errstate(invalid="ignore"):
        sig = finite & (q < q_threshold)
        if alternative == "greater":
            sig &= t > 0
    return q, sig


def contrast_maps(
    weights: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    alternative: str = "greater",
    q_threshold: float = 0.05,
    fdr_groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """t, df, p, q, d and the significance mask of one weighted contrast.

    Parameters
    ----------
    weights : ndarray [C]
        Contrast weights per condition.
    n, mean, var : ndarray [C], [C, U], [C, U]
        Per-condition moments (ddof-1 variances).
    alternative : {"greater", "two-sided"}
    q_threshold : float
        Significant when ``q < q_threshold`` (and ``t > 0`` for ``greater``).
    fdr_groups : ndarray [U], optional
        Label per unit to run BH within (e.g. ``sheet.area``); None: over all units.
    """
    res = contrast_t(weights, n, mean, var, alternative)
    q, sig = significance(res.t, res.p, q_threshold, alternative, fdr_groups)
    d = contrast_d(weights, n, mean, var)
    return {"t": res.t, "df": res.df, "p": res.p, "q": q, "d": d, "significant": sig}
