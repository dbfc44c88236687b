"""The rows of ``metrics.csv``: one row per number, with its uncertainty and method.

Families: ``profile`` (Pearson and Spearman r with permutation p and bootstrap CI),
``selectivity`` (d' on each side), ``reliability`` (split-half Dice on each side) and ``spatial``
(island Moran's I, cluster counts and sizes, model-vs-human and trained-vs-control tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from topocli.stats.agreement import (
    ConditionMap,
    compare_moran_distributions,
    selectivity_dprime,
)
from topocli.workflows.compare.human_side import HumanData
from topocli.workflows.compare.models import ModelResults, model_spatial
from topocli.workflows.compare.pairs import Pair

METRIC_COLUMNS = [
    "model",
    "model_froi",
    "human_froi",
    "family",
    "metric",
    "value",
    "sd",
    "ci_low",
    "ci_high",
    "df",
    "p_value",
    "n",
    "method",
    "note",
]


def metric_row(**values: Any) -> dict[str, Any]:
    """One ``metrics.csv`` row: ``values`` over NaN numbers and empty ``method`` / ``note``."""
    row = {c: np.nan for c in METRIC_COLUMNS}
    row.update({"method": "", "note": ""})
    row.update(values)
    return row


def profile_rows(pair: Pair, agreement: dict) -> list[dict[str, Any]]:
    """Pearson and Spearman r of a pair, with permutation p and bootstrap CI.

    Parameters
    ----------
    pair : Pair
    agreement : dict
        :func:`topocli.stats.agreement.profile_agreement` of the pair's two profiles.
    """
    base = {"model": pair.model.label, "model_froi": pair.froi, "human_froi": pair.target}
    exact = agreement["permutation_exact"]
    perm = (
        f"exact permutation p over {agreement['n_permutations']} orderings"
        if exact
        else f"permutation p, {agreement['n_permutations']} random orderings"
    )
    boot = (
        f"bootstrap 95% percentile CI ({agreement['n_bootstrap_valid']} of "
        f"{agreement['n_bootstrap']} resamples had an r)"
    )
    rows = []
    for name in ("pearson", "spearman"):
        rows.append(
            metric_row(
                **base,
                family="profile",
                metric=f"{name}_r",
                value=agreement[f"{name}_r"],
                ci_low=agreement[f"{name}_ci_low"],
                ci_high=agreement[f"{name}_ci_high"],
                p_value=agreement[f"{name}_p_perm"],
                n=agreement["n_conditions"],
                method=f"{perm}; {boot}; conditions: {', '.join(agreement['conditions'])}",
                note=agreement["note"],
            )
        )
    return rows


def contrast_baseline_row(
    pair: Pair, model_p: pd.DataFrame, human_p: pd.DataFrame, cmap: Any
) -> dict[str, Any] | None:
    """Pearson r between the fROI's own defining contrast weights and the human profile.

    A localizer's fROI responds most to the conditions its contrast weighs positively, so its
    profile matches a human fROI defined the same way partly by construction: a model r at or
    below this baseline says nothing about the model.
    """
    from scipy import stats as sps

    weights = pair.model.contrasts.get(pair.contrast)
    if not weights:
        return None
    shared = [c for c in model_p.index if c in human_p.index]
    back = {human: model for model, human in cmap.conditions.items()}
    w = np.array([float(weights.get(back.get(c, c), 0.0)) for c in shared])
    h = human_p.loc[shared, "mean"].to_numpy(dtype=float)
    ok = np.isfinite(h)
    r = float("nan")
    if ok.sum() >= 3 and np.ptp(w[ok]) > 0 and np.ptp(h[ok]) > 0:
        r = float(sps.pearsonr(w[ok], h[ok]).statistic)
    return metric_row(
        model=pair.model.label,
        model_froi=pair.froi,
        human_froi=pair.target,
        family="profile",
        metric="pearson_r_contrast_weights",
        value=r,
        n=int(ok.sum()),
        method="Pearson r of the fROI's defining contrast weights with the human profile "
        "(the baseline: a model r at or below it says nothing)",
    )


def selectivity_rows(
    pair: Pair, model_p: pd.DataFrame, human_p: pd.DataFrame | None, cmap: ConditionMap
) -> list[dict[str, Any]]:
    """d' of the contrast's target against its other conditions, on each side.

    Parameters
    ----------
    pair : Pair
    model_p, human_p : pandas.DataFrame
        The two profiles in human condition names (``mean`` and ``sd`` per condition); d' is in
        units of each side's own per-condition spread. ``human_p`` None: no human profile.
    cmap : ConditionMap

    Returns
    -------
    list of dict
        ``dprime_model`` and ``dprime_human`` (NaN with a note when a side cannot give one).
    """
    weights = pair.model.contrasts.get(pair.contrast)
    base = {"model": pair.model.label, "model_froi": pair.froi, "human_froi": pair.target}
    if not weights:
        note = "contrast weights not in the model manifest"
        return [
            metric_row(**base, family="selectivity", metric=f"dprime_{side}", note=note)
            for side in ("model", "human")
        ]
    shared = set(model_p.index) & (set(human_p.index) if human_p is not None else set())
    target = [cmap.conditions[c] for c, w in weights.items() if w > 0 and c in cmap.conditions]
    other = [cmap.conditions[c] for c, w in weights.items() if w < 0 and c in cmap.conditions]
    target = [c for c in target if c in shared]
    other = [c for c in other if c in shared]
    method = f"({' + '.join(target) or '?'}) vs ({' + '.join(other) or '?'})"
    rows = []
    for side, profile, spread in (
        ("model", model_p, "SD across held-out stimuli (upper bound)"),
        ("human", human_p, "SD across participants"),
    ):
        note = ""
        value = float("nan")
        if not target or not other:
            note = "the contrast's target or other conditions are not shared"
        elif profile is None:
            note = "no human profile"
        elif not np.isfinite(profile.loc[target + other, "sd"]).all():
            note = "no per-condition spread on this side"
        else:
            value = selectivity_dprime(
                profile["mean"], target, other, sem=profile["sd"].astype(float)
            )
        rows.append(
            metric_row(
                **base,
                family="selectivity",
                metric=f"dprime_{side}",
                value=value,
                n=len(target) + len(other),
                method=f"{method} / pooled {spread}",
                note=note,
            )
        )
    return rows


def reliability_rows(pair: Pair, human: HumanData) -> list[dict[str, Any]]:
    """Split-half Dice of the model fROI (``dice.csv``) and of the human fROIs (mean over parcels).

    Returns
    -------
    list of dict
        ``dice_model`` and ``dice_human`` (NaN with a note when a side has no split halves).
    """
    base = {"model": pair.model.label, "model_froi": pair.froi, "human_froi": pair.target}
    rows = []
    table = pair.model.dice
    hit = None if table is None else table[table["froi"] == pair.froi]
    if hit is not None and len(hit):
        rows.append(
            metric_row(
                **base,
                family="reliability",
                metric="dice_model",
                value=float(hit["dice"].iloc[0]),
                n=1,
                method="Dice of the even- and odd-defined model fROIs",
            )
        )
    else:
        rows.append(
            metric_row(**base, family="reliability", metric="dice_model", note="no dice.csv entry")
        )
    parcels = human.dice.get(pair.target)
    if parcels is not None and len(parcels):
        values = parcels["dice"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        rows.append(
            metric_row(
                **base,
                family="reliability",
                metric="dice_human",
                value=float(finite.mean()) if finite.size else np.nan,
                sd=float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
                n=int(finite.size),
                method="Dice of the even- and odd-defined human fROIs, mean over parcels",
            )
        )
    else:
        note = "needs even and odd human contrast maps"
        rows.append(metric_row(**base, family="reliability", metric="dice_human", note=note))
    return rows


def spatial_rows(
    pairs: Sequence[Pair], models: Sequence[ModelResults], human: HumanData
) -> list[dict[str, Any]]:
    """Island Moran's I, cluster counts and sizes, and the tests between distributions.

    One group per (model, contrast, human target) of ``pairs``: both sides' statistics and
    model-vs-human Welch t and Mann-Whitney U; then trained-vs-control tests for every contrast
    a trained model and a control share.
    """
    rows: list[dict[str, Any]] = []
    groups = list(dict.fromkeys((p.model.label, p.contrast, p.target) for p in pairs))
    by_label = {m.label: m for m in models}
    for label, contrast, target in groups:
        model = by_label[label]
        base = {"model": label, "model_froi": contrast, "human_froi": target}
        side = model_spatial(model, contrast)
        rows.extend(_side_rows(base, "model", side["moran"], side["sizes"], side["n_elements"]))
        spatial = human.spatial.get(target)
        if spatial is None:
            continue
        sizes = spatial.islands["n_units"].to_numpy(dtype=float)
        moran = spatial.islands["moran_i"].to_numpy(dtype=float)
        rows.extend(_side_rows(base, "human", moran, sizes, spatial.n_elements))
        rows.extend(_moran_test_rows(base, side["moran"], moran, "model_vs_human"))
    controls = [m for m in models if m.is_control]
    for trained in (m for m in models if not m.is_control):
        for control in controls:
            shared = [
                c
                for c in dict.fromkeys(p.contrast for p in pairs if p.model is trained)
                if c in set(control.profiles["contrast"])
            ]
            for contrast in shared:
                base = {
                    "model": f"{trained.label} vs {control.label}",
                    "model_froi": contrast,
                    "human_froi": "",
                }
                a = model_spatial(trained, contrast)["moran"]
                b = model_spatial(control, contrast)["moran"]
                rows.extend(_moran_test_rows(base, a, b, "trained_vs_control"))
                row = _map_moran_row(base, trained, control, contrast)
                rows.extend([row] if row else [])
    return rows


def _map_moran_row(
    base: dict[str, Any], trained: ModelResults, control: ModelResults, contrast: str
) -> dict[str, Any] | None:
    """Trained vs control on the whole unsmoothed maps, the areas as samples (the honest test).

    Uses the folders' ``topography.csv`` (written by ``topo localize``); None without them.
    """
    from topocli.stats.topography import compare_topography

    tables = []
    for model in (trained, control):
        folder = getattr(model, "folder", None)
        if folder is None or not folder.has("topography.csv"):
            return None
        table = folder.table("topography.csv", ["contrast", "area", "moran_i", "moran_null_sd"])
        tables.append(table[table["contrast"].astype(str) == contrast])
    if not all(len(t) for t in tables):
        return None
    test = compare_topography(*tables)
    return metric_row(
        **base,
        family="spatial",
        metric="map_moran_i_z_trained_vs_control",
        value=test["z"],
        p_value=test["p"],
        n=test["n_areas"],
        method="whole-map Moran's I per area (unsmoothed), each against its position-"
        "permutation null; z of the difference, Stouffer over areas (areas are the samples)",
    )


def _side_rows(
    base: dict[str, Any], side: str, moran: np.ndarray, sizes: np.ndarray, n_elements: int | None
) -> list[dict[str, Any]]:
    finite = moran[np.isfinite(moran)]
    rows = [
        metric_row(
            **base,
            family="spatial",
            metric=f"moran_i_{side}",
            value=float(finite.mean()) if finite.size else np.nan,
            sd=float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
            n=int(finite.size),
            method="island Moran's I (mean, SD over islands)",
            note="" if finite.size else "no island",
        )
    ]
    if n_elements:
        rows.append(
            metric_row(
                **base,
                family="spatial",
                metric=f"clusters_per_1000_{side}",
                value=1000.0 * sizes.size / n_elements,
                n=int(sizes.size),
                method=f"clusters per 1000 searched elements ({n_elements})",
            )
        )
        pct = 100.0 * sizes / n_elements
        rows.append(
            metric_row(
                **base,
                family="spatial",
                metric=f"cluster_size_pct_{side}",
                value=float(pct.mean()) if pct.size else np.nan,
                sd=float(pct.std(ddof=1)) if pct.size > 1 else np.nan,
                n=int(sizes.size),
                method="mean cluster size, % of searched elements",
            )
        )
    return rows


def _moran_test_rows(
    base: dict[str, Any], a: np.ndarray, b: np.ndarray, what: str
) -> list[dict[str, Any]]:
    test = compare_moran_distributions(a, b)
    n = f"{test['n_a']} vs {test['n_b']} islands"
    return [
        metric_row(
            **base,
            family="spatial",
            metric=f"moran_welch_t_{what}",
            value=test["welch_t"],
            df=test["welch_df"],
            p_value=test["welch_p"],
            n=test["n_a"] + test["n_b"],
            method=f"Welch t of island Moran's I ({n})",
            note=(
                "islands of one map are not independent samples (pseudo-replication): read "
                "map_moran_i_z_trained_vs_control"
                if what == "trained_vs_control"
                else ""
            )
            if np.isfinite(test["welch_t"])
            else "needs >= 2 islands a side",
        ),
        metric_row(
            **base,
            family="spatial",
            metric=f"moran_mannwhitney_u_{what}",
            value=test["mannwhitney_u"],
            p_value=test["mannwhitney_p"],
            n=test["n_a"] + test["n_b"],
            method=f"two-sided Mann-Whitney U of island Moran's I ({n})",
            note="" if np.isfinite(test["mannwhitney_u"]) else "needs >= 1 island a side",
        ),
    ]


def metrics_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """``metrics.csv`` from its rows: :data:`METRIC_COLUMNS`, ``n`` as nullable integers."""
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    table["n"] = pd.array(table["n"].to_numpy(dtype=float), dtype="Int64")
    return table
