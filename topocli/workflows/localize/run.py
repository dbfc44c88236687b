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

The steps, in order, are :func:`localize` (one extraction pass through
:func:`topocli.activations.extraction.extract`, then :func:`analyse_contrast` per contrast and
:func:`analyse_anova`) and :func:`run_localize` (the command); its tables, report and terminal
summary are built in :mod:`topocli.workflows.localize.report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topocli.activations.extraction import check_pooling
from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.stats.clusters import clusters_with_moran
from topocli.stats.maps import (
    ContrastMap,
    condition_moments,
    contrast_maps,
    require_some_variation,
    split_moments,
)
from topocli.stats.suffstats import SufficientStats
from topocli.stats.validation import check_map_options
from topocli.stimuli.localizers import LocalizerSpec, resolve_contrasts, resolve_localizer
from topocli.stimuli.stimulus_set import StimulusSet

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


@dataclass
class ContrastResult(ContrastMap):
    """Maps and tables of one contrast (arrays are per sheet unit)."""

    name: str
    weights: dict[str, float]
    moran_sem: float
    t_split: np.ndarray
    profiles: pd.DataFrame
    dice: pd.DataFrame
    alternative: str = "greater"
    topography: pd.DataFrame | None = None
    cluster_baseline: dict[str, float] = field(default_factory=dict)
    moran_unsmoothed: float = float("nan")

    @property
    def peak_t(self) -> float:
        """Largest t ('greater'), or the signed t of largest magnitude ('two-sided')."""
        t = self.t[np.isfinite(self.t)]
        if not t.size:
            return float("nan")
        return float(t.max() if self.alternative == "greater" else t[np.argmax(np.abs(t))])

    def summary(self) -> dict[str, Any]:
        topo = self.topography if self.topography is not None else pd.DataFrame()
        return {
            "contrast": self.name,
            "n_significant": self.n_significant,
            "n_clusters": self.n_clusters,
            "peak_t": self.peak_t,
            "mean_moran_i": self.moran_mean,
            # the measures of topography, always on the unsmoothed map
            "island_moran_i_unsmoothed": self.moran_unsmoothed,
            "map_moran_i_unsmoothed": float(topo["moran_i"].mean()) if len(topo) else np.nan,
            "join_count_z_unsmoothed": float(topo["bb_z"].max()) if len(topo) else np.nan,
            "n_clusters_unsmoothed": self.cluster_baseline.get("n_clusters", np.nan),
            "n_clusters_random_placement": self.cluster_baseline.get("n_clusters_random", np.nan),
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
    # per area, on the unsmoothed activations: the join-count test of the significant units
    # and the whole-map Moran's I of the preferred-condition index (the conditions are in the
    # localizer's parametric order, so for octave-spaced tones the index is log2 frequency):
    # how smooth the tonotopic map is on the sheet
    topography: pd.DataFrame | None = None

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
    control: LocalizeResult | None = None
    control_comparison: pd.DataFrame | None = None
    control_model: Any = None

    def summary_table(self) -> pd.DataFrame:
        return pd.DataFrame([c.summary() for c in self.contrasts])


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
    labels, table, mean_i, sem_i = clusters_with_moran(
        maps["t"],
        maps["significant"],
        sheet,
        alternative == "greater",
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


def control_run(
    model: Any, stim_set: StimulusSet, contrasts: Any, wanted: bool, progress: Any, **options
) -> LocalizeResult | None:
    """The same localizer on the model's non-topographic control (None when not wanted)."""
    if not wanted:
        return None
    from topocli.models.checkpoint import identity_control

    twin = identity_control(model)
    if twin is None:
        from topocli.errors import warn

        warn(
            "--control: this model is itself a non-topographic control (untrained adaptors); "
            "nothing to compare it with"
        )
        return None
    result = localize(twin, stim_set, contrasts, progress=progress, **options)
    result.control_model = twin
    return result


def control_comparison(result: LocalizeResult, twin: LocalizeResult) -> pd.DataFrame:
    """Per contrast: trained vs control topography on the unsmoothed maps, and the test."""
    from topocli.stats.topography import compare_topography

    rows = []
    for c, k in zip(result.contrasts, twin.contrasts, strict=True):
        test = compare_topography(c.topography, k.topography)
        mine, theirs = c.summary(), k.summary()
        rows.append(
            {
                "contrast": c.name,
                "map_moran_i_trained": test["moran_i_trained"],
                "map_moran_i_control": test["moran_i_control"],
                "map_moran_i_difference_z": test["z"],
                "map_moran_i_difference_p": test["p"],
                "n_areas": test["n_areas"],
                "join_count_z_trained": mine["join_count_z_unsmoothed"],
                "join_count_z_control": theirs["join_count_z_unsmoothed"],
                "island_moran_i_trained": c.moran_unsmoothed,
                "island_moran_i_control": k.moran_unsmoothed,
                "n_significant_trained": c.n_significant,
                "n_significant_control": k.n_significant,
            }
        )
    mine, theirs = result.anova, twin.anova
    if mine is not None and theirs is not None and mine.topography is not None:
        # the tonotopic map: Moran's I of the preferred-condition index, trained vs control
        test = compare_topography(mine.topography, theirs.topography)
        rows.append(
            {
                "contrast": "anova:preferred",
                "map_moran_i_trained": test["moran_i_trained"],
                "map_moran_i_control": test["moran_i_control"],
                "map_moran_i_difference_z": test["z"],
                "map_moran_i_difference_p": test["p"],
                "n_areas": test["n_areas"],
                "n_significant_trained": int(mine.significant.sum()),
                "n_significant_control": int(theirs.significant.sum()),
            }
        )
    return pd.DataFrame(rows)


def measure_topography(
    result: ContrastResult,
    raw_stats: SufficientStats,
    conditions: Sequence[str],
    sheet: Sheet,
    q: float,
    alternative: str,
    fdr_scope: str,
    connectivity: int,
    min_cluster: int,
    permutations: int,
    seed: int,
    raw_is_display: bool,
) -> None:
    """Fill the contrast's measures of topography, computed on the unsmoothed map.

    Whatever FWHM detected and displays the map, smoothing makes any map autocorrelated, so the
    whole-map Moran's I per area, the join-count test, the island Moran's I and the cluster count
    (beside its value under random placement of the same number of units per area) all use the
    t map of the unsmoothed activations.
    """
    from topocli.stats.contrasts import weights_vector
    from topocli.stats.topography import random_placement_clusters, topography_table

    if raw_is_display:
        t, sig, moran = result.t, result.significant, result.moran_mean
    else:
        n, mean, var = condition_moments(raw_stats)
        groups = sheet.area if fdr_scope == "area" else None
        w = weights_vector(result.weights, conditions)
        raw = contrast_maps(w, n, mean, var, alternative, q, groups)
        t, sig = raw["t"], raw["significant"]
        _, _, moran, _ = clusters_with_moran(
            t, sig, sheet, alternative == "greater", connectivity, min_cluster, permutations, seed
        )
    t_measured = np.where(np.isfinite(t), t, np.nan)
    result.topography = topography_table(t_measured, sig, sheet, connectivity, permutations, seed)
    result.cluster_baseline = random_placement_clusters(
        sig, sheet, connectivity, min_cluster, min(99, permutations), seed
    )
    result.moran_unsmoothed = moran


def warn_if_percolating(
    name: str, n_significant: int, n_units: int, connectivity: int, top_percent: float
) -> None:
    """A TopoWarning when so many units are significant that clusters say little."""
    from topocli.errors import warn
    from topocli.stats.topography import PERCOLATION

    fraction = n_significant / max(n_units, 1)
    threshold = PERCOLATION[int(connectivity)]
    if fraction > threshold:
        warn(
            f"{name}: {fraction:.0%} of units are significant, above the {connectivity}-"
            f"connectivity percolation density ({threshold:.2f}): units placed at random would "
            "already form one spanning cluster, so cluster counts and Dice are mostly base rate; "
            f"use a stricter --q or the top-{top_percent:g}% fROIs"
        )


def _stimulus_inputs(stim_set: StimulusSet) -> list[Path]:
    # a manifest: the CSV and every file it references; a folder set: its condition folders
    return stim_set.input_paths()


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
    absolute: bool = False,
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
    absolute : bool
        Test absolute activations ``|a|`` (llm-localization's convention: a unit whose
        response is larger in magnitude, of either sign) instead of signed ones.

    Returns
    -------
    LocalizeResult
    """
    from topocli.activations.extraction import extract
    from topocli.stats.froi import search_regions
    from topocli.stats.smoothing import smoothing_transform

    check_map_options(
        q, alternative, fdr_scope, top_percent, min_cluster, connectivity, permutations, fwhm_mm
    )
    check_pooling(pooling)
    sheet: Sheet = model.sheet
    conditions = list(stim_set.conditions)
    weights = check_contrasts(contrasts, conditions)
    anova_conds = check_anova_conditions(anova_conditions, conditions)
    stim_set.require_min_per_split(2)
    search_regions(sheet, froi_areas)  # unknown area names fail before the model runs
    transform = smoothing_transform(sheet, float(fwhm_mm), across_areas)
    ext = extract(
        model,
        stim_set,
        batch_size,
        pooling,
        transform=transform,
        use_cache=use_cache,
        progress=progress,
        also_raw=True,
        rectify=bool(absolute),
    )
    stats = ext.stats
    stats.metadata.update(
        {
            "conditions": _json(conditions),
            "groups": "2*condition+split",
            "pooling": pooling,
            "fwhm_mm": repr(float(fwhm_mm)),
            "across_areas": str(bool(across_areas)).lower(),
            "absolute": str(bool(absolute)).lower(),
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
    require_some_variation(results, stim_set.root)
    for c in results:
        measure_topography(
            c,
            ext.raw_stats,
            conditions,
            sheet,
            q,
            alternative,
            fdr_scope,
            connectivity,
            int(min_cluster),
            int(permutations),
            seed,
            raw_is_display=transform is None,
        )
        warn_if_percolating(c.name, c.n_significant, sheet.n_units, connectivity, top_percent)
    anova = (
        analyse_anova(anova_conds, stats, conditions, sheet, q, fdr_scope) if anova_conds else None
    )
    if anova is not None:
        from topocli.stats.topography import topography_table

        raw = anova if transform is None else analyse_anova(
            anova_conds, ext.raw_stats, conditions, sheet, q, fdr_scope
        )
        anova.topography = topography_table(
            raw.preferred.astype(np.float64), raw.significant, sheet, connectivity,
            int(permutations), seed,
        )  # fmt: skip
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
        "absolute": bool(absolute),
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
    control: bool | None = None,
    smoothed_from: Path | None = None,
    expected_identity: dict | None = None,
    absolute: bool = False,
) -> Path:
    """``topo localize``: run a localizer on ``ctx``'s model and write a results folder.

    ``control`` also localizes the model's non-topographic control (the same base with
    identity adaptors, :func:`topocli.models.checkpoint.identity_control`) on the same stimuli
    and options, and tests trained against control on the unsmoothed maps; None: on for the
    shipped default (one more pass over the stimuli: a few seconds on MiniLM), off otherwise.

    Options left as None take the localizer file's defaults, then the built-in ones
    (:data:`DEFAULTS`). ``smoothed_from`` marks the folder as ``topo smooth``'s re-localization
    of that folder; ``expected_identity`` (its model identity) refuses a model that has changed
    since. Returns the results folder's path.
    """
    from topocli.reporting.results import ResultsFolder
    from topocli.stimuli.stimulus_set import load_stimulus_set
    from topocli.workflows.localize.report import print_summary, write_localize_results

    spec = resolve_localizer(localizer)
    opts = {
        # smoothing is opt-in: the localizer's literature FWHM is recorded, not applied
        "fwhm_mm": float(fwhm_mm) if fwhm_mm is not None else 0.0,
        "q": _pick(q, spec, "q"),
        "alternative": _pick(alternative, spec, "alternative"),
        "fdr_scope": _pick(fdr_scope, spec, "fdr_scope"),
        "top_percent": _pick(top_percent, spec, "top_percent"),
        "min_cluster": int(_pick(min_cluster, spec, "min_cluster")),
        "connectivity": int(_pick(connectivity, spec, "connectivity")),
        "permutations": int(_pick(permutations, spec, "permutations")),
    }
    check_map_options(**opts)
    check_pooling(pooling)
    out = Path(ctx.out) if ctx.out is not None else Path(f"localize-{_safe(spec.name)}")
    with ExitStack() as stack:
        if stimuli is not None:
            stim_set = load_stimulus_set(
                stimuli, allow_outside=getattr(ctx, "allow_outside", False)
            )
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
        model = ctx.load_model(stim_set.modality)
        if expected_identity is not None:
            _require_identity(model, expected_identity, smoothed_from)
        # the trained model and its control are localized with the same options
        run_options = dict(
            across_areas=across_areas,
            froi_areas=froi_areas,
            seed=int(ctx.seed),
            batch_size=int(ctx.batch_size),
            use_cache=cache,
            anova_conditions=anova,
            pooling=pooling,
            absolute=absolute,
            **opts,
        )
        with ctx.progress() as progress:
            result = localize(model, stim_set, contrasts, progress=progress, **run_options)
            if control is None:
                from topocli.models.registry import is_shipped

                control = is_shipped(ctx.model_spec)
            twin = control_run(model, stim_set, contrasts, control, progress, **run_options)
        if twin is not None:
            result.control, result.control_model = twin, twin.control_model
            result.control_comparison = control_comparison(result, twin)
        params = {
            "model": ctx.model_spec,
            "localizer": spec.name,
            "localizer_file": str(spec.path) if spec.path else None,
            # the FWHM the localizer's literature smooths at: recorded, applied only on request
            "literature_fwhm_mm": spec.defaults.get("fwhm_mm"),
            "stimuli": str(stimuli) if stimuli is not None else None,
            "contrast_options": list(contrast) if contrast else None,
            "device": getattr(ctx, "device_name", None),
            "dtype": getattr(ctx, "dtype_name", None),
            "cache": bool(cache),
            "source": spec.source,
        }
        if smoothed_from is not None:
            params["smoothed_from"] = str(Path(smoothed_from).resolve())
        write_localize_results(rf, result, model, params)
    if not ctx.quiet and out_console is not None:
        print_summary(result, out_console)
        out_console.print(f"wrote {out}")
    return out


def _require_identity(model: Any, expected: dict, folder: Path | None) -> None:
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.reader import describe_identity, identity_differences

    diff = identity_differences(expected, model_identity(model))
    if diff:
        raise TopoInputError(
            f"the model {describe_identity(expected)!r} this folder was made with has changed "
            f"since ({', '.join(diff)} differ)",
            folder,
        )


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "localizer"
