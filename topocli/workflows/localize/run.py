"""``topo localize``: contrast t-maps on the sheet, FDR, clusters, island Moran's I, fROIs.

One pass over the stimuli streams per-stimulus sheet activations into sufficient statistics per
(condition, split) cell (group ``2 * condition + split``). fMRI-like smoothing, when asked, is
applied to every batch of per-stimulus activations *before* they are accumulated (the variance of
smoothed responses is not the smoothed variance); the raw activation cache therefore serves any
FWHM without running the model again. Everything else is computed from the statistics:

- per contrast (weights over conditions summing to 0): Welch / Satterthwaite t and df, one-sided
  (``greater``) or two-sided p, Benjamini–Hochberg q over the whole sheet or per area, Cohen's d;
  a unit is significant when ``q < q_threshold`` (and ``t > 0`` for ``greater``); a unit whose
  responses do not vary in any weighted condition gets ``t = NaN`` and is never significant;
- clusters: connected components of significant units (>= ``min_cluster`` units), and island
  Moran's I of the t-map inside each cluster with a permutation p (mean over islands too);
- split-half fROI profiles: the contrast's t-map on the even half defines the top ``x`` % units
  per area (or sheet), every condition's response is read on the odd half, and vice versa, plus
  the split-half Dice of the two fROIs;
- optionally a one-way ANOVA across parametric conditions (tonotopy-like) with the preferred
  condition of every unit.

:func:`write_localize_results` writes the results folder; :func:`run_localize` is the command.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.stats.suffstats import SufficientStats
from topocli.stimuli.stimulus_set import StimulusSet

ALTERNATIVES = ("greater", "two-sided")
FDR_SCOPES = ("sheet", "area")
POOLINGS = ("mean", "last")
# a condition's responses count as constant when their SD is below this fraction of |mean|
# (float64 rounding of a constant float32 input is ~1e-16 relative; real variation >= ~1e-7)
ZERO_VARIANCE_RTOL = 1e-12
UNIT_COLUMNS = [
    "contrast",
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
CLUSTER_TABLE_COLUMNS = [
    "contrast",
    "cluster",
    "areas",
    "n_units",
    "peak_t",
    "mean_t",
    "centroid_x_mm",
    "centroid_y_mm",
    "moran_i",
    "moran_p",
    "sign",
    "peak_unit",
]
DEFAULTS: dict[str, Any] = {
    "fwhm_mm": 0.0,
    "q": 0.05,
    "alternative": "greater",
    "fdr_scope": "sheet",
    "top_percent": 10.0,
    "min_cluster": 8,
    "connectivity": 8,
    "permutations": 999,
    "froi_areas": "each",
}


# ---------------------------------------------------------------------- results
@dataclass
class ContrastResult:
    """Maps and tables of one contrast (arrays are per sheet unit)."""

    name: str
    weights: dict[str, float]
    t: np.ndarray
    df: np.ndarray
    p: np.ndarray
    q: np.ndarray
    d: np.ndarray
    significant: np.ndarray
    labels: np.ndarray
    clusters: pd.DataFrame
    moran_mean: float
    moran_sem: float
    t_split: np.ndarray
    profiles: pd.DataFrame
    dice: pd.DataFrame
    alternative: str = "greater"

    @property
    def n_significant(self) -> int:
        return int(self.significant.sum())

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def peak_t(self) -> float:
        """Largest t ('greater'), or the signed t of largest magnitude ('two-sided')."""
        t = self.t[np.isfinite(self.t)]
        if not t.size:
            return float("nan")
        return float(t.max() if self.alternative == "greater" else t[np.argmax(np.abs(t))])

    def summary(self) -> dict[str, Any]:
        return {
            "contrast": self.name,
            "n_significant": self.n_significant,
            "n_clusters": self.n_clusters,
            "peak_t": self.peak_t,
            "mean_moran_i": self.moran_mean,
        }


@dataclass
class AnovaMap:
    """One-way ANOVA across parametric conditions, per unit."""

    conditions: list[str]
    f: np.ndarray
    df1: float
    df2: float
    p: np.ndarray
    q: np.ndarray
    preferred: np.ndarray
    significant: np.ndarray

    def table(self, sheet: Sheet) -> pd.DataFrame:
        names = np.asarray(self.conditions, dtype=object)
        return pd.DataFrame(
            {
                "unit": np.arange(sheet.n_units),
                "area": np.asarray(sheet.area_names, dtype=object)[sheet.area],
                "row": sheet.row,
                "col": sheet.col,
                "x_mm": sheet.x_mm,
                "y_mm": sheet.y_mm,
                "f": self.f,
                "df1": self.df1,
                "df2": self.df2,
                "p": self.p,
                "q": self.q,
                "preferred": names[self.preferred],
                "significant": self.significant,
            }
        )


@dataclass
class LocalizeResult:
    """Everything :func:`localize` computed; written by :func:`write_localize_results`."""

    sheet: Sheet
    conditions: list[str]
    counts: np.ndarray
    stats: SufficientStats
    contrasts: list[ContrastResult]
    params: dict[str, Any]
    anova: AnovaMap | None = None
    cache_key: str | None = None
    from_cache: bool = False
    stimulus_inputs: list[Path] = field(default_factory=list)

    def summary_table(self) -> pd.DataFrame:
        return pd.DataFrame([c.summary() for c in self.contrasts])


# ---------------------------------------------------------------------- validation
def check_options(
    q: float,
    alternative: str,
    fdr_scope: str,
    top_percent: float,
    min_cluster: int,
    connectivity: int,
    permutations: int,
    fwhm_mm: float,
    pooling: str = "mean",
) -> None:
    """One-line TopoInputError for any option out of range (before the model runs)."""
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
    if pooling not in POOLINGS:
        raise TopoInputError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def check_contrasts(
    contrasts: Mapping[str, Mapping[str, float]], conditions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Known conditions, finite weights summing to 0; returns plain float dicts."""
    from topocli.stats.contrasts import check_weights

    if not contrasts:
        raise TopoInputError("no contrast given; name at least one (e.g. 'sentences>nonwords')")
    known = list(conditions)
    out: dict[str, dict[str, float]] = {}
    for name, weights in contrasts.items():
        unknown = [c for c in weights if c not in known]
        if unknown:
            raise TopoInputError(
                f"contrast {name!r} names unknown condition {unknown[0]!r}; known conditions: "
                f"{', '.join(known)}"
            )
        w = {str(c): float(v) for c, v in weights.items() if float(v) != 0.0}
        try:
            check_weights(w or dict(weights), require_zero_sum=True)
        except TopoInputError as exc:
            raise TopoInputError(f"contrast {name!r}: {exc}") from None
        out[str(name)] = w
    return out


def check_anova_conditions(
    anova_conditions: Sequence[str] | None, conditions: Sequence[str]
) -> list[str] | None:
    if anova_conditions is None:
        return None
    chosen = list(dict.fromkeys(str(c) for c in anova_conditions))
    unknown = [c for c in chosen if c not in conditions]
    if unknown:
        raise TopoInputError(
            f"ANOVA condition {unknown[0]!r} is unknown; known conditions: {', '.join(conditions)}"
        )
    if len(chosen) < 2:
        raise TopoInputError("a one-way ANOVA needs at least 2 conditions")
    return chosen


# ---------------------------------------------------------------------- moments
def _clean_variance(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
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
    return n, mean, _clean_variance(mean, var)


def split_moments(stats: SufficientStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-(condition, split) ``n`` [C, 2], ``mean`` [C, 2, U], ``var`` [C, 2, U]."""
    n_cond = stats.n_groups // 2
    n = stats.count.reshape(n_cond, 2)
    mean = stats.mean.reshape(n_cond, 2, stats.n_units)
    var = stats.variance().reshape(n_cond, 2, stats.n_units)
    return n, mean, _clean_variance(mean, var)


# ---------------------------------------------------------------------- statistics
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
    from topocli.stats.contrasts import bh_fdr, contrast_d, contrast_t

    res = contrast_t(weights, n, mean, var, alternative)
    q = bh_fdr(res.p, fdr_groups)
    d = contrast_d(weights, n, mean, var)
    finite = np.isfinite(res.t) & np.isfinite(q)
    with np.errstate(invalid="ignore"):
        sig = finite & (q < q_threshold)
        if alternative == "greater":
            sig &= res.t > 0
    return {"t": res.t, "df": res.df, "p": res.p, "q": q, "d": d, "significant": sig}


def _clusters_with_moran(
    t: np.ndarray,
    sig: np.ndarray,
    sheet: Sheet,
    alternative: str,
    connectivity: int,
    min_cluster: int,
    permutations: int,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame, float, float]:
    from topocli.stats.clusters import find_clusters, island_morans_i

    labels, table = find_clusters(
        t, sig, sheet, connectivity, min_cluster, one_sided=alternative == "greater"
    )
    if len(table):
        islands = island_morans_i(
            sheet.to_grid(t), sheet.to_grid(labels, fill=0), permutations, seed, min_cluster
        )
        table = table.merge(
            islands.table[["cluster", "moran_i", "moran_p"]], on="cluster", how="left"
        )
        mean_i, sem_i = islands.mean_i, islands.sem_i
    else:
        table = table.assign(moran_i=pd.Series(dtype=float), moran_p=pd.Series(dtype=float))
        mean_i = sem_i = float("nan")
    return labels, table, mean_i, sem_i


def analyse_contrast(
    name: str,
    weights: Mapping[str, float],
    stats: SufficientStats,
    conditions: Sequence[str],
    sheet: Sheet,
    q: float = 0.05,
    alternative: str = "greater",
    fdr_scope: str = "sheet",
    top_percent: float = 10.0,
    froi_areas: str | Sequence[str] = "each",
    min_cluster: int = 8,
    connectivity: int = 8,
    permutations: int = 999,
    seed: int = 0,
) -> ContrastResult:
    """All maps and tables of one contrast from the (condition, split) statistics."""
    from topocli.stats.contrasts import contrast_t, weights_vector
    from topocli.stats.froi import froi_profiles, split_half_dice

    w = weights_vector(weights, conditions)
    n, mean, var = condition_moments(stats)
    groups = sheet.area if fdr_scope == "area" else None
    maps = contrast_maps(w, n, mean, var, alternative, q, groups)
    labels, table, mean_i, sem_i = _clusters_with_moran(
        maps["t"],
        maps["significant"],
        sheet,
        alternative,
        connectivity,
        min_cluster,
        permutations,
        seed,
    )
    n_s, mean_s, var_s = split_moments(stats)
    t_split = np.stack(
        [contrast_t(w, n_s[:, s], mean_s[:, s], var_s[:, s], alternative).t for s in (0, 1)]
    )
    profiles = froi_profiles(
        t_split, mean_s, sheet, list(conditions), name, froi_areas, top_percent, n=n_s, var=var_s
    )
    dice = split_half_dice(t_split, sheet, name, froi_areas, top_percent)
    return ContrastResult(
        name=name,
        weights=dict(weights),
        t=maps["t"],
        df=maps["df"],
        p=maps["p"],
        q=maps["q"],
        d=maps["d"],
        significant=maps["significant"],
        labels=labels,
        clusters=table,
        moran_mean=mean_i,
        moran_sem=sem_i,
        t_split=t_split,
        profiles=profiles,
        dice=dice,
        alternative=alternative,
    )


def analyse_anova(
    anova_conditions: Sequence[str],
    stats: SufficientStats,
    conditions: Sequence[str],
    sheet: Sheet,
    q: float = 0.05,
    fdr_scope: str = "sheet",
) -> AnovaMap:
    """One-way ANOVA across ``anova_conditions`` with the preferred condition per unit."""
    from topocli.stats.contrasts import bh_fdr, one_way_anova

    idx = [list(conditions).index(c) for c in anova_conditions]
    n, mean, var = condition_moments(stats)
    res = one_way_anova(n[idx], mean[idx], var[idx])
    qv = bh_fdr(res.p, sheet.area if fdr_scope == "area" else None)
    with np.errstate(invalid="ignore"):
        sig = np.isfinite(qv) & (qv < q)
    return AnovaMap(list(anova_conditions), res.f, res.df1, res.df2, res.p, qv, res.preferred, sig)


# ---------------------------------------------------------------------- the pipeline
def _stimulus_inputs(stim_set: StimulusSet) -> list[Path]:
    root = Path(stim_set.root)
    if root.is_file():
        return [root]
    parents = [s.path.parent for s in stim_set.stimuli if s.path is not None]
    return list(dict.fromkeys(parents)) or [root]


def smoothing_transform(sheet: Sheet, fwhm_mm: float, across_areas: bool = False):
    """The per-batch transform for :func:`topocli.activations.extraction.extract` (None for FWHM 0).

    Checks the options at once (e.g. ``across_areas`` on a tiled sheet) so a bad option fails
    before the model runs.
    """
    from topocli.stats.smoothing import smooth_units

    if not fwhm_mm:
        if across_areas and sheet.layout != "stacked":
            smooth_units(np.zeros((1, sheet.n_units), np.float32), sheet, 1.0, True)
        return None
    smooth_units(np.zeros((1, sheet.n_units), np.float32), sheet, fwhm_mm, across_areas)
    return lambda acts: smooth_units(acts, sheet, fwhm_mm, across_areas)


def localize(
    model: Any,
    stim_set: StimulusSet,
    contrasts: Mapping[str, Mapping[str, float]],
    fwhm_mm: float = 0.0,
    across_areas: bool = False,
    q: float = 0.05,
    alternative: str = "greater",
    fdr_scope: str = "sheet",
    top_percent: float = 10.0,
    froi_areas: str | Sequence[str] = "each",
    min_cluster: int = 8,
    connectivity: int = 8,
    permutations: int = 999,
    seed: int = 0,
    batch_size: int = 32,
    use_cache: bool = True,
    progress: Any = None,
    anova_conditions: Sequence[str] | None = None,
    pooling: str = "mean",
) -> LocalizeResult:
    """Run a localizer on a model: one extraction pass, then every contrast's maps.

    Parameters
    ----------
    model : TopoModel
    stim_set : StimulusSet
        Every condition needs at least 2 stimuli in each split.
    contrasts : mapping of name -> {condition: weight}
        Weights must sum to 0 and name known conditions.
    fwhm_mm : float
        Gaussian smoothing of per-stimulus activations before the statistics (0: none).
    across_areas : bool
        Smooth over the whole contiguous (stacked) sheet instead of within each area.
    q : float
        FDR threshold in (0, 1).
    alternative : {"greater", "two-sided"}
    fdr_scope : {"sheet", "area"}
        BH over all units, or separately within each area.
    top_percent : float
        fROI size in % of each search region's units.
    froi_areas : "each", "sheet", or area names
        fROI search regions.
    min_cluster, connectivity : int
        Smallest cluster kept (units) and grid connectivity (4 or 8).
    permutations, seed : int
        Island Moran's I permutation test.
    batch_size, use_cache, progress, pooling
        Passed to :func:`topocli.activations.extraction.extract`.
    anova_conditions : sequence of str, optional
        Also run a one-way ANOVA across these conditions (parametric localizers).

    Returns
    -------
    LocalizeResult
    """
    from topocli.activations import extraction

    check_options(
        q,
        alternative,
        fdr_scope,
        top_percent,
        min_cluster,
        connectivity,
        permutations,
        fwhm_mm,
        pooling,
    )
    sheet: Sheet = model.sheet
    conditions = list(stim_set.conditions)
    weights = check_contrasts(contrasts, conditions)
    anova_conds = check_anova_conditions(anova_conditions, conditions)
    stim_set.require_min_per_split(2)
    from topocli.stats.froi import search_regions

    search_regions(sheet, froi_areas)  # unknown area names fail before the model runs
    transform = smoothing_transform(sheet, float(fwhm_mm), across_areas)
    ext = extraction.extract(
        model,
        stim_set,
        batch_size,
        pooling,
        transform=transform,
        use_cache=use_cache,
        progress=progress,
    )
    stats = ext.stats
    stats.metadata.update(
        {
            "conditions": _json(conditions),
            "groups": "2*condition+split",
            "pooling": pooling,
            "fwhm_mm": repr(float(fwhm_mm)),
            "across_areas": str(bool(across_areas)).lower(),
        }
    )
    results = [
        analyse_contrast(
            name,
            w,
            stats,
            conditions,
            sheet,
            q,
            alternative,
            fdr_scope,
            top_percent,
            froi_areas,
            int(min_cluster),
            connectivity,
            int(permutations),
            seed,
        )
        for name, w in weights.items()
    ]
    anova = (
        analyse_anova(anova_conds, stats, conditions, sheet, q, fdr_scope) if anova_conds else None
    )
    params = {
        "fwhm_mm": float(fwhm_mm),
        "across_areas": bool(across_areas),
        "q": float(q),
        "alternative": alternative,
        "fdr_scope": fdr_scope,
        "top_percent": float(top_percent),
        "froi_areas": froi_areas if isinstance(froi_areas, str) else list(froi_areas),
        "min_cluster": int(min_cluster),
        "connectivity": int(connectivity),
        "permutations": int(permutations),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "pooling": pooling,
        "use_cache": bool(use_cache),
        "anova_conditions": anova_conds,
        "contrasts": weights,
    }
    return LocalizeResult(
        sheet=sheet,
        conditions=conditions,
        counts=stats.count.reshape(len(conditions), 2).astype(np.int64),
        stats=stats,
        contrasts=results,
        params=params,
        anova=anova,
        cache_key=ext.cache_key,
        from_cache=ext.from_cache,
        stimulus_inputs=_stimulus_inputs(stim_set),
    )


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj)


# ---------------------------------------------------------------------- writing
def units_table(result: LocalizeResult) -> pd.DataFrame:
    """``units.csv``: one row per (contrast, unit)."""
    sheet = result.sheet
    area_names = np.asarray(sheet.area_names, dtype=object)[sheet.area]
    frames = []
    for c in result.contrasts:
        frames.append(
            pd.DataFrame(
                {
                    "contrast": c.name,
                    "unit": np.arange(sheet.n_units),
                    "area": area_names,
                    "row": sheet.row,
                    "col": sheet.col,
                    "x_mm": sheet.x_mm,
                    "y_mm": sheet.y_mm,
                    "t": c.t,
                    "df": c.df,
                    "p": c.p,
                    "q": c.q,
                    "d": c.d,
                    "significant": c.significant,
                    "cluster": c.labels,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[UNIT_COLUMNS]


def clusters_table(result: LocalizeResult) -> pd.DataFrame:
    """``clusters.csv``: one row per (contrast, cluster)."""
    frames = [c.clusters.assign(contrast=c.name) for c in result.contrasts if len(c.clusters)]
    if not frames:
        return pd.DataFrame(columns=CLUSTER_TABLE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CLUSTER_TABLE_COLUMNS]


def counts_table(result: LocalizeResult) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "condition": result.conditions,
            "n_even": result.counts[:, 0],
            "n_odd": result.counts[:, 1],
            "n_total": result.counts.sum(axis=1),
        }
    )


def _fmt(x: float, spec: str = ".3g") -> str:
    return "—" if x is None or not np.isfinite(x) else format(float(x), spec)


def _contrast_text(weights: Mapping[str, float]) -> str:
    parts = []
    for i, (c, w) in enumerate(weights.items()):
        sign = "-" if w < 0 else ("+" if i else "")
        mag = abs(w)
        coef = "" if mag == 1 else f"{mag:g}*"
        parts.append(f"{sign} {coef}{c}".strip())
    return " ".join(parts)


def build_report(result: LocalizeResult, model_name: str | None, params: Mapping[str, Any]):
    """The ``report.html`` of a localize run (summary on top, then one section per contrast)."""
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_profile_bars, plot_sheet_map

    sheet = result.sheet
    rp = result.params
    localizer = params.get("localizer") or "custom"
    rep = Report(
        f"topo localize: {localizer}",
        subtitle=f"model {model_name}" if model_name else None,
        command=params.get("command_line"),
    )
    rep.add_section("Summary")
    counts = ", ".join(
        f"{c} {int(n.sum())} ({int(n[0])} even / {int(n[1])} odd)"
        for c, n in zip(result.conditions, result.counts, strict=True)
    )
    rep.add_key_values(
        {
            "model": model_name or "—",
            "localizer": localizer,
            "stimuli": counts,
            "contrasts": "; ".join(
                f"{c.name} = {_contrast_text(c.weights)}" for c in result.contrasts
            ),
            "test": f"Welch t, {rp['alternative']}; BH-FDR over the "
            f"{'whole sheet' if rp['fdr_scope'] == 'sheet' else 'units of each area'}, "
            f"q < {rp['q']:g}",
            "smoothing": "none"
            if not rp["fwhm_mm"]
            else f"FWHM {rp['fwhm_mm']:g} mm on per-stimulus activations, "
            f"{'across areas' if rp['across_areas'] else 'within each area'}",
            "clusters": f">= {rp['min_cluster']} units, {rp['connectivity']}-connectivity; island "
            f"Moran's I with {rp['permutations']} permutations (seed {rp['seed']})",
            "fROIs": f"top {rp['top_percent']:g}% per "
            f"{'area' if rp['froi_areas'] == 'each' else str(rp['froi_areas'])}, split-half",
            "activations": f"{rp['pooling']} pooling"
            + (" (from the activation cache)" if result.from_cache else ""),
        }
    )
    summary = result.summary_table()
    rep.add_table(summary, "Per contrast: significant units, clusters, peak t, mean Moran's I")
    for c in result.contrasts:
        rep.add_section(f"Contrast {c.name}", _contrast_text(c.weights))
        finite = np.abs(c.t[np.isfinite(c.t)])
        vmax = float(np.percentile(finite, 99)) if finite.size else None
        fig = plot_sheet_map(
            c.t,
            sheet,
            title=f"{c.name}: t ({rp['alternative']}); outlined: clusters at q < {rp['q']:g}",
            outline_labels=c.labels,
            colorbar_label="t",
            vmax=vmax if vmax else None,
        )
        rep.add_figure(
            fig,
            f"Welch t on the sheet (colours clipped at the 99th percentile of |t|, "
            f"{_fmt(vmax)}); {c.n_significant} significant units, {c.n_clusters} "
            f"clusters (>= {rp['min_cluster']} units) outlined and numbered; grey: no unit or "
            "zero variance.",
        )
        if len(c.clusters):
            shown = c.clusters[[col for col in CLUSTER_TABLE_COLUMNS if col != "contrast"]]
            rep.add_table(
                shown,
                f"Clusters of {c.name} (mean island Moran's I {_fmt(c.moran_mean)})",
                max_rows=50,
                csv_name="clusters.csv",
            )
        else:
            rep.add_note(f"No cluster of >= {rp['min_cluster']} significant units.")
        mean_rows = c.profiles[c.profiles["split_direction"] == "mean"]
        if len(mean_rows):
            n_hue = mean_rows["area"].nunique()
            multi = n_hue > 1
            width = min(10.0, 1.8 + 0.3 * len(result.conditions) * n_hue)
            fig = plot_profile_bars(
                mean_rows,
                x="condition",
                y="response_mean",
                hue="area" if multi else None,
                err="response_sem",
                title=f"fROI profiles of {c.name} (held-out halves, mean of both directions)",
                ylabel="response (held-out)",
                figsize=(max(4.0, width), 3.6),
            )
            rep.add_figure(
                fig,
                f"Each fROI is the top {rp['top_percent']:g}% of units of the contrast "
                "defined on one half of the stimuli; bars are every condition's mean response "
                "on the other half (averaged over both directions), error bars the SEM bound.",
            )
        rep.add_table(c.dice, "Split-half reliability (Dice of even- and odd-defined fROIs)")
    if result.anova is not None:
        a = result.anova
        rep.add_section(
            "Preferred condition (one-way ANOVA)",
            f"F-test across {', '.join(a.conditions)} per unit; BH q < {rp['q']:g}. Units are "
            "coloured by the condition with the highest mean response (significant units only).",
        )
        pref = np.where(a.significant, a.preferred.astype(float), np.nan)
        fig = plot_sheet_map(
            pref,
            sheet,
            title="preferred condition (index)",
            cmap="viridis",
            symmetric=False,
            colorbar_label="condition index: "
            + ", ".join(f"{i}={n}" for i, n in enumerate(a.conditions)),
            vmin=-0.5,
            vmax=len(a.conditions) - 0.5,
        )
        rep.add_figure(fig, f"{int(a.significant.sum())} units with a significant F.")
        share = pd.Series(np.asarray(a.conditions, dtype=object)[a.preferred[a.significant]])
        rep.add_table(
            share.value_counts().rename_axis("preferred").reset_index(name="n_units"),
            "Significant units per preferred condition",
        )
    return rep


def write_localize_results(
    rf: Any, result: LocalizeResult, model: Any, params: Mapping[str, Any]
) -> None:
    """Write units/clusters/profiles/dice CSVs, t/q NIfTI maps, stats, report and manifest.

    Parameters
    ----------
    rf : ResultsFolder
        An open results folder.
    result : LocalizeResult
    model : TopoModel or None
        Its identity goes into the manifest (``extra.model``).
    params : mapping
        Command-level parameters recorded in the manifest (e.g. ``localizer``, ``model``,
        ``stimuli``); merged over the analysis parameters of ``result``.
    """
    from topocli.models.checkpoint import model_identity

    sheet = result.sheet
    names = [c.name for c in result.contrasts]
    rf.write_csv("units.csv", units_table(result))
    rf.write_csv("clusters.csv", clusters_table(result))
    rf.write_csv("profiles.csv", pd.concat([c.profiles for c in result.contrasts]))
    rf.write_csv("dice.csv", pd.concat([c.dice for c in result.contrasts]))
    rf.write_csv("conditions.csv", counts_table(result))
    rf.write_sheet_nifti("tmap.nii.gz", np.stack([c.t for c in result.contrasts]), sheet, names)
    rf.write_sheet_nifti("qmap.nii.gz", np.stack([c.q for c in result.contrasts]), sheet, names)
    if result.anova is not None:
        rf.write_csv("anova.csv", result.anova.table(sheet))
        rf.write_sheet_nifti(
            "anova.nii.gz", np.stack([result.anova.f, result.anova.q]), sheet, ["F", "q"]
        )
    result.stats.save(rf.path("stats.safetensors"))
    identity = model_identity(model) if model is not None and hasattr(model, "blocks") else None
    model_name = (
        params.get("model")
        or (identity or {}).get("name")
        or ((identity or {}).get("checkpoint") or (identity or {}).get("base_model"))
    )
    rf.write_report(build_report(result, model_name, params))
    all_params = {**result.params, **{k: v for k, v in params.items() if k != "command_line"}}
    inputs = {"stimuli": [str(p) for p in result.stimulus_inputs]}
    if params.get("localizer_file"):
        inputs["localizer"] = str(params["localizer_file"])
    rf.write_manifest(
        "localize",
        all_params,
        inputs,
        seed=result.params["seed"],
        extra={
            "model": identity,
            "localizer": params.get("localizer"),
            "contrasts": {c.name: c.weights for c in result.contrasts},
            "conditions": result.conditions,
            "counts": {
                c: {"even": int(n[0]), "odd": int(n[1])}
                for c, n in zip(result.conditions, result.counts, strict=True)
            },
            "stats_groups": "2*condition+split",
            "cache_key": result.cache_key,
            "from_cache": result.from_cache,
            "summary": result.summary_table().to_dict(orient="records"),
        },
    )


# ---------------------------------------------------------------------- localizer files
@dataclass
class LocalizerSpec:
    """What ``topo localize`` needs from a localizer definition (see :func:`resolve_localizer`).

    ``obj`` is the :class:`topocli.stimuli.localizers.Localizer` it was read from: its
    ``stimulus_folders()`` gives shipped stimuli, its ``generate(dir)`` generated ones.
    """

    name: str
    conditions: list[str]
    contrasts: dict[str, dict[str, float]]
    default_contrasts: list[str]
    defaults: dict[str, Any]
    anova_conditions: list[str] | None = None
    path: Path | None = None
    source: Any = None
    generated: bool = False
    user_stimuli: bool = False
    obj: Any = None

    def stimulus_set(self, stack: ExitStack) -> StimulusSet:
        """The localizer's own stimuli (generated ones go to a temp folder ``stack`` removes)."""
        from topocli.stimuli.stimulus_set import load_condition_folders

        if self.user_stimuli or self.obj is None:
            raise TopoInputError(
                f"localizer {self.name!r} needs your stimuli: pass --stimuli DIR with one "
                f"sub-folder per condition ({', '.join(self.conditions)})"
            )
        if self.generated:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="topo-stimuli-")))
            folders = self.obj.generate(tmp)
        else:
            folders = self.obj.stimulus_folders()
        return load_condition_folders({str(k): Path(v) for k, v in dict(folders).items()})


def resolve_localizer(name_or_path: str | Path) -> LocalizerSpec:
    """Load a shipped localizer (by name) or a ``.toml`` definition, for :func:`run_localize`.

    The definition's thresholds become the defaults of the options left unset; a ``parametric``
    localizer (tonotopy, retinotopy) also gets a one-way ANOVA across all its conditions.
    """
    from dataclasses import asdict

    from topocli.stimuli.localizers import load_localizer

    loc = load_localizer(name_or_path)
    contrasts = {str(k): dict(c.weights) for k, c in loc.contrasts.items()}
    default = loc.default_contrast or next(iter(contrasts), None)
    return LocalizerSpec(
        name=loc.name,
        conditions=list(loc.conditions),
        contrasts=contrasts,
        default_contrasts=[default] if default else [],
        defaults=asdict(loc.thresholds),
        anova_conditions=list(loc.conditions) if loc.analysis == "parametric" else None,
        path=loc.path,
        source=list(loc.source),
        generated=loc.stimuli == "generated",
        user_stimuli=loc.stimuli == "user",
        obj=loc,
    )


def resolve_contrasts(
    spec: LocalizerSpec, contrast: Sequence[str] | None, conditions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``--contrast`` values (the localizer's contrast names or expressions) -> weights."""
    from topocli.stats.contrasts import parse_contrast

    chosen = list(contrast) if contrast else list(spec.default_contrasts)
    if not chosen:
        raise TopoInputError(
            f"localizer {spec.name!r} defines no default contrast; pass --contrast "
            f"(conditions: {', '.join(conditions)})"
        )
    out: dict[str, dict[str, float]] = {}
    for expr in chosen:
        if expr in spec.contrasts:
            out[expr] = dict(spec.contrasts[expr])
        else:
            out[" ".join(str(expr).split())] = parse_contrast(expr, conditions)
    return out


# ---------------------------------------------------------------------- the command
def _pick(value: Any, spec: LocalizerSpec, key: str) -> Any:
    if value is not None:
        return value
    return spec.defaults.get(key, DEFAULTS[key])


def run_localize(
    ctx: Any,
    localizer: str = "language",
    stimuli: Path | None = None,
    contrast: list[str] | None = None,
    fwhm_mm: float | None = None,
    across_areas: bool = False,
    q: float | None = None,
    alternative: str | None = None,
    fdr_scope: str | None = None,
    top_percent: float | None = None,
    min_cluster: int | None = None,
    connectivity: int | None = None,
    permutations: int | None = None,
    pooling: str = "mean",
    cache: bool = True,
    out_console: Any = None,
    froi_areas: str = "each",
) -> Path:
    """``topo localize``: run a localizer on ``ctx``'s model and write a results folder.

    Options left as None take the localizer file's defaults, then the built-in ones
    (:data:`DEFAULTS`). Returns the results folder's path.
    """
    from topocli.reporting.results import ResultsFolder
    from topocli.stimuli.stimulus_set import load_stimulus_set

    spec = resolve_localizer(localizer)
    opts = {
        "fwhm_mm": float(_pick(fwhm_mm, spec, "fwhm_mm")),
        "q": _pick(q, spec, "q"),
        "alternative": _pick(alternative, spec, "alternative"),
        "fdr_scope": _pick(fdr_scope, spec, "fdr_scope"),
        "top_percent": _pick(top_percent, spec, "top_percent"),
        "min_cluster": int(_pick(min_cluster, spec, "min_cluster")),
        "connectivity": int(_pick(connectivity, spec, "connectivity")),
        "permutations": int(_pick(permutations, spec, "permutations")),
    }
    check_options(
        opts["q"],
        opts["alternative"],
        opts["fdr_scope"],
        opts["top_percent"],
        opts["min_cluster"],
        opts["connectivity"],
        opts["permutations"],
        opts["fwhm_mm"],
        pooling,
    )
    out = Path(ctx.out) if ctx.out is not None else Path(f"localize-{_safe(spec.name)}")
    with ExitStack() as stack:
        if stimuli is not None:
            stim_set = load_stimulus_set(stimuli)
        else:
            stim_set = spec.stimulus_set(stack)
        conditions = list(stim_set.conditions)
        contrasts = resolve_contrasts(spec, contrast, conditions)
        check_contrasts(contrasts, conditions)
        stim_set.require_min_per_split(2)
        anova = spec.anova_conditions
        if anova is not None and not set(anova) <= set(conditions):
            anova = None
        # open the results folder first: a bad --out fails before the model runs, and a
        # failure below leaves nothing behind
        rf = stack.enter_context(ResultsFolder(out, getattr(ctx, "overwrite", False)))
        model = ctx.load_model()
        with ctx.progress() as progress:
            result = localize(
                model,
                stim_set,
                contrasts,
                across_areas=across_areas,
                froi_areas=froi_areas,
                seed=int(ctx.seed),
                batch_size=int(ctx.batch_size),
                use_cache=cache,
                progress=progress,
                anova_conditions=anova,
                pooling=pooling,
                **opts,
            )
        params = {
            "model": ctx.model_spec,
            "localizer": spec.name,
            "localizer_file": str(spec.path) if spec.path else None,
            "stimuli": str(stimuli) if stimuli is not None else None,
            "contrast_options": list(contrast) if contrast else None,
            "device": getattr(ctx, "device_name", None),
            "dtype": getattr(ctx, "dtype_name", None),
            "cache": bool(cache),
            "source": spec.source,
        }
        write_localize_results(rf, result, model, params)
    if not ctx.quiet and out_console is not None:
        print_summary(result, out_console)
        out_console.print(f"wrote {out}")
    return out


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "localizer"


def print_summary(result: LocalizeResult, console: Any) -> None:
    """A rich table: per contrast n significant units, n clusters, peak t, mean Moran's I."""
    from rich.table import Table

    p = result.params
    table = Table(
        title=f"q < {p['q']:g} ({p['alternative']}, FDR over {p['fdr_scope']}), "
        f"FWHM {p['fwhm_mm']:g} mm, clusters >= {p['min_cluster']} units"
    )
    for col in ("contrast", "significant units", "clusters", "peak t", "mean Moran's I"):
        table.add_column(col, justify="left" if col == "contrast" else "right")
    n_units = result.sheet.n_units
    for c in result.contrasts:
        table.add_row(
            c.name,
            f"{c.n_significant} / {n_units}",
            str(c.n_clusters),
            _fmt(c.peak_t, ".2f"),
            _fmt(c.moran_mean, ".3f"),
        )
    console.print(table)
