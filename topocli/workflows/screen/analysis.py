"""Per-category analysis of a screen, from per-(category, split) sufficient statistics.

Per category: one-sided Welch t (category > reference: the rest, or the baseline pool), BH-FDR,
significant units, clusters with island Moran's I, the split-half fROI profile (top
``--top-percent`` % of the sheet defined on one half, read on the other) and its held-out
effect; then novelty against the known maps, the rank, and the exemplar stimuli.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from topocli.activations.source import IN_MEMORY_BYTES, ActivationSource, project
from topocli.errors import TopoInputError
from topocli.sheet import Sheet
from topocli.stats.clusters import clusters_with_moran
from topocli.stats.maps import ContrastMap, merge_splits, significance, split_stats
from topocli.stats.suffstats import SufficientStats
from topocli.stats.topography import place_at_random
from topocli.stimuli.stimulus_set import StimulusSet
from topocli.workflows.screen.discovery import Discovery
from topocli.workflows.screen.inputs import MIN_STIMULI

RANK_BY = ("units", "peak-t")
EXEMPLAR_COLUMNS = ["category", "exemplar", "stimulus", "id", "response", "units"]
CATEGORY_COLUMNS = [
    "category",
    "n_stimuli",
    "n_significant_units",
    "n_clusters",
    "peak_t",
    "moran_i",
    "best_known_match",
    "max_dice",
    "novelty",
    "novelty_random_placement",
    "rank",
    "mean_t",
    "heldout_effect",
    "reference",
    "exemplars",
]

@dataclass
class ScreenOptions:
    """Every analysis option of a screen (the CLI's flags, with their defaults)."""

    q: float = 0.05
    fdr_scope: str = "sheet"
    min_cluster: int = 8
    connectivity: int = 8
    permutations: int = 999
    seed: int = 0
    top_percent: float = 10.0
    fwhm_mm: float = 0.0
    across_areas: bool = False
    n_exemplars: int = 5
    rank_by: str = "units"
    pooling: str = "mean"
    batch_size: int = 128
    use_cache: bool = True
    min_size: int = 10
    max_size: int | None = None
    area: str | None = None
    memory_bytes: int = IN_MEMORY_BYTES

    def check(self) -> None:
        """One-line TopoInputError for any option out of range (before the model runs)."""
        from topocli.activations.extraction import check_pooling
        from topocli.stats.validation import check_map_options

        check_map_options(
            self.q,
            "greater",
            self.fdr_scope,
            self.top_percent,
            self.min_cluster,
            self.connectivity,
            self.permutations,
            self.fwhm_mm,
        )
        check_pooling(self.pooling)
        if self.rank_by not in RANK_BY:
            raise TopoInputError(f"--rank-by must be one of {', '.join(RANK_BY)}")
        if int(self.n_exemplars) < 0:
            raise TopoInputError(f"--exemplars must be >= 0, got {self.n_exemplars}")
        if int(self.batch_size) < 1:
            raise TopoInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.min_size < MIN_STIMULI:
            raise TopoInputError(
                f"--min-size must be at least {MIN_STIMULI} (2 stimuli per split), "
                f"got {self.min_size}"
            )
        if self.max_size is not None and self.min_size > self.max_size:
            raise TopoInputError(
                f"--min-size {self.min_size} is larger than --max-size {self.max_size}"
            )

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("memory_bytes")
        return out


@dataclass
class CategoryResult(ContrastMap):
    """Maps and numbers of one screened category (arrays are per sheet unit)."""

    name: str
    n_stimuli: int
    reference: str
    t_split: np.ndarray
    vs_baseline: dict[str, np.ndarray] | None = None
    heldout_effect: float = float("nan")
    best_known: str = ""
    max_dice: float = float("nan")
    novelty: float = float("nan")
    rank: int = 0
    exemplar_rows: list[int] = field(default_factory=list)
    exemplar_scores: list[float] = field(default_factory=list)
    exemplar_units: str = ""
    novelty_random: float = float("nan")
    topography: pd.DataFrame | None = None
    moran_unsmoothed: float = float("nan")

    @property
    def peak_t(self) -> float:
        t = self.t[np.isfinite(self.t)]
        return float(t.max()) if t.size else float("nan")

    @property
    def mean_t(self) -> float:
        sel = self.significant & np.isfinite(self.t)
        return float(self.t[sel].mean()) if sel.any() else float("nan")


@dataclass
class ScreenResult:
    """Everything a screen computed; written by :func:`write_screen_results`."""

    sheet: Sheet
    stim_set: StimulusSet
    conditions: list[str]
    categories: list[CategoryResult]
    profiles: pd.DataFrame
    stats: SufficientStats
    known: list[Any]
    dice: pd.DataFrame
    params: dict[str, Any]
    mode: str
    discovery: Discovery | None = None
    cache_key: str | None = None
    from_cache: bool = False
    notes: list[str] = field(default_factory=list)
    exemplars: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXEMPLAR_COLUMNS))
    control: Any = None
    control_comparison: pd.DataFrame | None = None

    def category_table(self) -> pd.DataFrame:
        """``categories.csv``: one row per category, in rank order."""
        rows = []
        for c in self.categories:
            snippets = [self.stim_set.stimuli[i].label for i in c.exemplar_rows[:3]]
            row = {
                "category": c.name,
                "n_stimuli": c.n_stimuli,
                "n_significant_units": c.n_significant,
                "n_clusters": c.n_clusters,
                "peak_t": c.peak_t,
                "moran_i": c.moran_mean,
                "best_known_match": c.best_known,
                "max_dice": c.max_dice,
                "novelty": c.novelty,
                "novelty_random_placement": c.novelty_random,
                "island_moran_i_unsmoothed": c.moran_unsmoothed,
                "map_moran_i_unsmoothed": column_mean(c.topography, "moran_i"),
                "join_count_z_unsmoothed": _column_max(c.topography, "bb_z"),
                "rank": c.rank,
                "mean_t": c.mean_t,
                "heldout_effect": c.heldout_effect,
                "reference": c.reference,
                "exemplars": " | ".join(snippets),
            }
            if c.vs_baseline is not None:
                row["n_significant_vs_baseline"] = int(c.vs_baseline["significant"].sum())
                tb = c.vs_baseline["t"][np.isfinite(c.vs_baseline["t"])]
                row["peak_t_vs_baseline"] = float(tb.max()) if tb.size else float("nan")
            rows.append(row)
        extra = [k for k in (rows[0] if rows else {}) if k not in CATEGORY_COLUMNS]
        return pd.DataFrame(rows, columns=CATEGORY_COLUMNS + extra)


def column_mean(table: pd.DataFrame | None, column: str) -> float:
    return float(table[column].mean()) if table is not None and len(table) else float("nan")


def _column_max(table: pd.DataFrame | None, column: str) -> float:
    return float(table[column].max()) if table is not None and len(table) else float("nan")


def category_maps(
    stats: SufficientStats,
    category_ids: Sequence[int],
    reference: str,
    baseline_id: int | None = None,
    pvalues: bool = True,
) -> Any:
    """t, df, p, d [K, U] of the listed conditions against their rest or the baseline."""
    from topocli.stats.contrasts import category_vs_baseline, category_vs_rest

    ids = np.asarray(category_ids, dtype=np.int64)
    if reference == "rest":
        res = category_vs_rest(stats, "greater", pvalues)
        return type(res)(*(a[ids] for a in res))
    if baseline_id is None:
        raise ValueError("a baseline reference needs baseline_id")
    return category_vs_baseline(stats, ids, [baseline_id], "greater", pvalues)


def analyse_categories(
    stats: SufficientStats,
    conditions: Sequence[str],
    categories: Sequence[str],
    sheet: Sheet,
    opts: ScreenOptions,
    reference: str = "rest",
    baseline: str | None = None,
) -> tuple[list[CategoryResult], pd.DataFrame]:
    """Every category's maps, clusters, Moran's I and split-half profile from the statistics.

    Parameters
    ----------
    stats : SufficientStats
        Groups ``2 * condition + split`` over ``conditions``.
    categories : sequence of str
        The conditions to screen (the others only serve as rest / baseline / profile columns).
    reference : {"rest", "baseline"}
        Against the union of all other conditions, or against ``baseline`` alone. With
        ``reference="rest"`` and a ``baseline`` condition, each category is also tested against
        the baseline alone (``vs_baseline``).
    """
    conditions = list(conditions)
    ids = [conditions.index(c) for c in categories]
    base_id = conditions.index(baseline) if baseline is not None else None
    merged = merge_splits(stats)
    maps = category_maps(merged, ids, reference, base_id)
    t_split = np.stack(
        [category_maps(split_stats(stats, s), ids, reference, base_id, False).t for s in (0, 1)],
        axis=1,
    )
    extra = None
    if reference == "rest" and base_id is not None:
        extra = category_maps(merged, ids, "baseline", base_id)
    n_cond = len(conditions)
    n_s = stats.count.reshape(n_cond, 2)
    mean_s = stats.mean.reshape(n_cond, 2, stats.n_units)
    var_s = stats.variance().reshape(n_cond, 2, stats.n_units)
    profiles, responses = category_profiles(
        t_split, list(categories), n_s, mean_s, var_s, conditions, opts.top_percent
    )
    fdr_groups = sheet.area if opts.fdr_scope == "area" else None
    results = []
    for k, name in enumerate(categories):
        q, sig = significance(maps.t[k], maps.p[k], opts.q, "greater", fdr_groups)
        labels, table, moran, _ = clusters_with_moran(
            maps.t[k],
            sig,
            sheet,
            True,
            opts.connectivity,
            opts.min_cluster,
            opts.permutations,
            opts.seed,
        )
        vs_base = None
        if extra is not None:
            qb, sigb = significance(extra.t[k], extra.p[k], opts.q, "greater", fdr_groups)
            vs_base = {"t": extra.t[k], "q": qb, "significant": sigb}
        own = ids[k]
        others = np.delete(responses[k], own)
        effect = float(responses[k, own] - np.nanmean(others)) if others.size else float("nan")
        results.append(
            CategoryResult(
                name=name,
                n_stimuli=int(merged.count[own]),
                reference=baseline if reference == "baseline" else "rest",
                t=maps.t[k],
                df=maps.df[k],
                p=maps.p[k],
                q=q,
                d=maps.d[k],
                significant=sig,
                labels=labels,
                clusters=table,
                moran_mean=moran,
                t_split=t_split[k],
                vs_baseline=vs_base,
                heldout_effect=effect,
            )
        )
    return results, profiles


def category_profiles(
    t_split: np.ndarray,
    names: Sequence[str],
    n: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    conditions: Sequence[str],
    top_percent: float = 10.0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Split-half fROI profiles of K categories over the whole sheet, vectorised over conditions.

    The same table as :func:`topocli.stats.froi.froi_profiles` (``areas="sheet"``) called once per
    category, without its Python loop over conditions (K categories x C conditions).

    Parameters
    ----------
    t_split : ndarray [K, 2, U]
        Each category's t map on the even and the odd half.
    names : K category names (the fROIs' contrasts).
    n, mean, var : ndarray [C, 2], [C, 2, U], [C, 2, U]
        Per-(condition, split) moments.

    Returns
    -------
    table : DataFrame
        Columns of :data:`topocli.stats.froi.PROFILE_COLUMNS`.
    responses : ndarray [K, C]
        The ``mean`` direction's responses (average of the two held-out halves).
    """
    from topocli.stats.froi import DIRECTIONS, PROFILE_COLUMNS, WHOLE_SHEET, top_percent_mask

    n = np.asarray(n, dtype=np.float64)
    sd = np.sqrt(np.clip(var, 0.0, None))
    everywhere = np.ones(mean.shape[-1], dtype=bool)
    n_cond = len(conditions)
    frames, responses = [], np.full((len(names), n_cond), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        root_n = np.sqrt(n)
        for k, name in enumerate(names):
            m_even = top_percent_mask(t_split[k, 0], everywhere, top_percent)
            m_odd = top_percent_mask(t_split[k, 1], everywhere, top_percent)
            parts = []
            for measure, mask in ((1, m_even), (0, m_odd)):  # define on one half, read the other
                size = int(mask.sum())
                if size:
                    r = mean[:, measure, mask].mean(axis=1)
                    sem = sd[:, measure, mask].mean(axis=1) / root_n[:, measure]
                    sem = np.where(n[:, measure] > 0, sem, np.nan)
                else:
                    r = sem = np.full(n_cond, np.nan)
                parts.append((r, sem, size))
            (r1, s1, k1), (r2, s2, k2) = parts
            r_mean = (r1 + r2) / 2.0
            responses[k] = r_mean
            resp = np.stack([r1, r2, r_mean], axis=1)
            sems = np.stack([s1, s2, np.sqrt(s1**2 + s2**2) / 2.0], axis=1)
            sizes = np.array([k1, k2, int(round((k1 + k2) / 2.0))])
            stims = np.stack([n[:, 1], n[:, 0], n[:, 0] + n[:, 1]], axis=1)
            frames.append(
                pd.DataFrame(
                    {
                        "froi": f"{name}@{WHOLE_SHEET}",
                        "contrast": name,
                        "area": WHOLE_SHEET,
                        "condition": np.repeat(np.asarray(conditions, dtype=object), 3),
                        "split_direction": np.tile(np.asarray(DIRECTIONS, dtype=object), n_cond),
                        "response_mean": resp.reshape(-1),
                        "response_sem": sems.reshape(-1),
                        "n_units": np.tile(sizes, n_cond),
                        "n_stimuli": stims.reshape(-1).astype(np.int64),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=PROFILE_COLUMNS), responses
    return pd.concat(frames, ignore_index=True)[PROFILE_COLUMNS], responses


def score_novelty(
    results: Sequence[CategoryResult],
    known: Sequence[Any],
    sheet: Sheet | None = None,
    placements: int = 99,
    seed: int = 0,
) -> pd.DataFrame:
    """Fill best match, max Dice and novelty of every category; the Dice table (long).

    With a ``sheet``, also ``novelty_random``: the novelty the same number of significant units
    per area would have if they were placed at random (mean over ``placements``), the base rate
    a novelty must beat: many significant units overlap any known map by chance.
    """
    from topocli.stats.froi import dice

    rows = []
    for r in results:
        values = []
        for k in known:
            d = dice(r.significant, k.significant) if r.n_significant else float("nan")
            d = 0.0 if r.n_significant and not np.isfinite(d) else d
            values.append(d)
            rows.append({"category": r.name, "known": k.name, "dice": d})
        if r.n_significant and values:
            best = int(np.argmax(values))
            r.best_known, r.max_dice = known[best].name, float(values[best])
            r.novelty = 1.0 - r.max_dice
            if sheet is not None and placements:
                r.novelty_random = _random_novelty(r.significant, known, sheet, placements, seed)
        else:
            r.best_known, r.max_dice, r.novelty = "", float("nan"), float("nan")
    return pd.DataFrame(rows, columns=["category", "known", "dice"])


def _random_novelty(
    mask: np.ndarray, known: Sequence[Any], sheet: Sheet, placements: int, seed: int
) -> float:
    from topocli.stats.froi import dice

    rng = np.random.default_rng([int(seed), int(mask.sum())])
    novelties = []
    for _ in range(int(placements)):
        placed = place_at_random(mask, sheet, rng)
        best = max(dice(placed, k.significant) for k in known)
        novelties.append(1.0 - (best if np.isfinite(best) else 0.0))
    return float(np.mean(novelties))


def measure_topography(
    results: Sequence[CategoryResult],
    raw_stats: SufficientStats | None,
    conditions: Sequence[str],
    sheet: Sheet,
    opts: ScreenOptions,
    reference: str = "rest",
    baseline: str | None = None,
) -> None:
    """Fill every category's measures of topography, on the unsmoothed map.

    ``raw_stats`` are the statistics of the unsmoothed activations (None: the screen was not
    smoothed, and its own maps are the unsmoothed ones).
    """
    from topocli.stats.topography import topography_table

    conditions = list(conditions)
    fdr_groups = sheet.area if opts.fdr_scope == "area" else None
    raw = None
    if raw_stats is not None:
        ids = [conditions.index(r.name) for r in results]
        base_id = conditions.index(baseline) if baseline is not None else None
        raw = category_maps(merge_splits(raw_stats), ids, reference, base_id)
    for k, r in enumerate(results):
        if raw is None:
            t, sig, r.moran_unsmoothed = r.t, r.significant, r.moran_mean
        else:
            t = raw.t[k]
            _, sig = significance(t, raw.p[k], opts.q, "greater", fdr_groups)
            _, _, r.moran_unsmoothed, _ = clusters_with_moran(
                t, sig, sheet, True, opts.connectivity, opts.min_cluster, opts.permutations,
                opts.seed,
            )
        finite = np.where(np.isfinite(t), t, np.nan)
        r.topography = topography_table(
            finite, sig, sheet, opts.connectivity, opts.permutations, opts.seed
        )


def control_comparison(result: Any, twin: Any) -> pd.DataFrame:
    """Per category: trained vs identity-adaptor control topography (unsmoothed) and the test."""
    from topocli.stats.topography import compare_topography

    theirs = {c.name: c for c in twin.categories}
    rows = []
    for c in result.categories:
        k = theirs.get(c.name)
        if k is None or c.topography is None or k.topography is None:
            continue
        test = compare_topography(c.topography, k.topography)
        rows.append(
            {
                "category": c.name,
                "map_moran_i_trained": test["moran_i_trained"],
                "map_moran_i_control": test["moran_i_control"],
                "map_moran_i_difference_z": test["z"],
                "map_moran_i_difference_p": test["p"],
                "n_areas": test["n_areas"],
                "n_significant_trained": c.n_significant,
                "n_significant_control": k.n_significant,
                "join_count_z_trained": _column_max(c.topography, "bb_z"),
                "join_count_z_control": _column_max(k.topography, "bb_z"),
            }
        )
    return pd.DataFrame(rows)


def rank_categories(results: list[CategoryResult], rank_by: str = "units") -> list[CategoryResult]:
    """Sort by the documented score (see the module docstring) and set ``rank`` (1 = top)."""

    def neg(x: float) -> float:
        return -x if np.isfinite(x) else math.inf

    def key(r: CategoryResult) -> tuple:
        if rank_by == "peak-t":
            return (neg(r.peak_t), neg(r.novelty), -r.n_significant, r.name)
        return (-r.n_significant, neg(r.novelty), neg(r.peak_t), r.name)

    ordered = sorted(results, key=key)
    for i, r in enumerate(ordered, start=1):
        r.rank = i
    return ordered


def exemplar_mask(r: CategoryResult) -> tuple[np.ndarray, str]:
    """Units whose mean response picks the exemplars: largest cluster, else significant, else
    the top 1 % by t."""
    if r.n_clusters:
        mask = r.labels == 1  # clusters are numbered by decreasing size
        return mask, f"largest cluster ({int(mask.sum())} units)"
    if r.n_significant:
        return r.significant.copy(), f"significant units ({r.n_significant})"
    t = np.where(np.isfinite(r.t), r.t, -np.inf)
    k = max(1, int(math.ceil(0.01 * t.size)))
    mask = np.zeros(t.size, dtype=bool)
    mask[np.argsort(-t, kind="stable")[:k]] = True
    return mask, f"top 1% units by t ({k}; nothing significant)"


def pick_exemplars(
    source: ActivationSource,
    stim_set: StimulusSet,
    results: Sequence[CategoryResult],
    n_exemplars: int,
    transform: Any = None,
) -> pd.DataFrame:
    """Each category's stimuli with the highest mean response in its exemplar units."""
    if not results:
        return pd.DataFrame(columns=EXEMPLAR_COLUMNS)
    masks = [exemplar_mask(r) for r in results]
    w = np.stack([m / max(1, m.sum()) for m, _ in masks], axis=1)
    scores = project(source, w, transform)
    cond = stim_set.condition_index()
    rows = []
    for k, r in enumerate(results):
        ci = stim_set.conditions.index(r.name)
        members = np.flatnonzero(cond == ci)
        order = members[np.argsort(-scores[members, k], kind="stable")][: int(n_exemplars)]
        r.exemplar_rows = [int(i) for i in order]
        r.exemplar_scores = [float(scores[i, k]) for i in order]
        r.exemplar_units = masks[k][1]
        for j, i in enumerate(order, start=1):
            s = stim_set.stimuli[i]
            rows.append(
                {
                    "category": r.name,
                    "exemplar": j,
                    "stimulus": s.text if s.text is not None else s.label,
                    "id": s.id,
                    "response": float(scores[i, k]),
                    "units": masks[k][1],
                }
            )
    return pd.DataFrame(rows, columns=EXEMPLAR_COLUMNS)
