"""Tables, report and terminal summary of ``topo localize`` (the results of
:func:`topocli.workflows.localize.run.localize`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from topocli.reporting.tables import PEAK_COLUMNS, unit_frame, with_peak_position
from topocli.reporting.tables import UNIT_COLUMNS as UNIT_MAP_COLUMNS
from topocli.stats.clusters import CLUSTER_TABLE_COLUMNS as CLUSTER_COLUMNS

UNIT_COLUMNS = ["contrast", *UNIT_MAP_COLUMNS]


CLUSTER_TABLE_COLUMNS = ["contrast", *CLUSTER_COLUMNS, "sign", *PEAK_COLUMNS]


def units_table(result: Any) -> pd.DataFrame:
    """``units.csv``: one row per (contrast, unit), columns as in every command."""
    sheet = result.sheet
    frames = [
        unit_frame(
            sheet,
            {
                "t": c.t,
                "df": c.df,
                "p": c.p,
                "q": c.q,
                "d": c.d,
                "significant": c.significant,
                "cluster": c.labels,
            },
            {"contrast": c.name},
        )
        for c in result.contrasts
    ]
    return pd.concat(frames, ignore_index=True)[UNIT_COLUMNS]


def clusters_table(result: Any) -> pd.DataFrame:
    """``clusters.csv``: one row per (contrast, cluster)."""
    frames = [
        with_peak_position(c.clusters, result.sheet).assign(contrast=c.name)
        for c in result.contrasts
        if len(c.clusters)
    ]
    if not frames:
        return pd.DataFrame(columns=CLUSTER_TABLE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CLUSTER_TABLE_COLUMNS]


def topography_frame(result: Any) -> pd.DataFrame:
    """``topography.csv``: per (contrast, area), the measures of topography (unsmoothed map)."""
    frames = []
    for c in result.contrasts:
        if c.topography is None:
            continue
        base = c.cluster_baseline
        frames.append(
            c.topography.assign(
                contrast=c.name,
                map_fwhm_mm=0.0,
                n_clusters_sheet=base.get("n_clusters"),
                n_clusters_random_placement=base.get("n_clusters_random"),
                largest_cluster=base.get("largest"),
                largest_cluster_random_placement=base.get("largest_random"),
                island_moran_i=c.moran_unsmoothed,
            )
        )
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    first = ["contrast", "area", "map_fwhm_mm"]
    return table[first + [col for col in table.columns if col not in first]]


def counts_table(result: Any) -> pd.DataFrame:
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


def build_report(result: Any, model_name: str | None, params: Mapping[str, Any]):
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
            "smoothing (detection and display)": "none (FWHM 0 mm)"
            if not rp["fwhm_mm"]
            else f"FWHM {rp['fwhm_mm']:g} mm on per-stimulus activations, "
            f"{'across areas' if rp['across_areas'] else 'within each area'}; FDR then controls "
            "false discoveries among smoothed units, and a significant unit may owe its "
            "significance to its neighbours (spill-over): see docs/concepts.md",
            "topography measured on": "the unsmoothed map (FWHM 0 mm), whatever the display FWHM",
            "clusters": f">= {rp['min_cluster']} units, {rp['connectivity']}-connectivity; island "
            f"Moran's I with {rp['permutations']} permutations (seed {rp['seed']})",
            "fROIs": f"top {rp['top_percent']:g}% per "
            f"{'area' if rp['froi_areas'] == 'each' else str(rp['froi_areas'])}, split-half",
            "activations": f"{rp['pooling']} pooling"
            + (" (from the activation cache)" if result.from_cache else ""),
        }
    )
    summary = result.summary_table()
    rep.add_table(
        summary,
        f"Per contrast: detection at FWHM {rp['fwhm_mm']:g} mm (significant units, clusters, "
        "peak t, mean island Moran's I) and topography on the unsmoothed map",
    )
    rep.add_section(
        "Sheet viewer",
        "Hover a unit for its area, grid row and column, position in mm, t, q and cluster; "
        "pick the contrast above the map. Red: t > 0, blue: t < 0 (clipped at the 99th "
        "percentile of |t|); white: no unit. Row 0 is at the top, as in every topo figure and "
        "in nilearn's view of tmap.nii.gz.",
    )
    rep.add_sheet_viewer(
        sheet, [{"name": c.name, "t": c.t, "q": c.q, "cluster": c.labels} for c in result.contrasts]
    )
    topo = topography_frame(result)
    if len(topo):
        rep.add_section(
            "Topography (unsmoothed map)",
            "Per area: whole-map Moran's I of t (queen, row-standardised; permutation p), the "
            "join-count test of the significant units against random placement of the same "
            "number in the area (z, p), and the sheet's cluster count beside its mean under "
            "random placement. Island Moran's I is circular (it is measured inside islands cut "
            "from the same map), so read it beside these. A significant fraction above the "
            "percolation density (0.41 for 8-connectivity) makes cluster counts base rate.",
        )
        rep.add_table(topo, "Measures of topography per contrast and area (FWHM 0 mm)")
    if result.control_comparison is not None:
        _control_section(rep, result, sheet)
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
            shown = with_peak_position(c.clusters, sheet)[
                [col for col in CLUSTER_TABLE_COLUMNS if col != "contrast"]
            ]
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
            width = min(9.5, 1.8 + 0.3 * len(result.conditions) * n_hue)
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
        if a.topography is not None:
            rep.add_table(
                a.topography,
                "Smoothness of the preferred-condition map per area (FWHM 0 mm): whole-map "
                "Moran's I of the preferred condition's index (every unit), join-count test of "
                "the significant units",
                csv_name="anova_topography.csv",
            )
    return rep


def _p_text(p: float) -> str:
    """A p value as text; below float64's reach of the normal tail it is a bound, not 0."""
    return "< 1e-15" if np.isfinite(p) and p < 1e-15 else _fmt(p, ".2g")


def _control_section(rep: Any, result: Any, sheet: Any) -> None:
    """Trained beside its identity-adaptor control: maps on one scale, the test, the caveat."""
    from topocli.reporting.plotting import plot_sheet_maps

    rep.add_section(
        "Trained vs non-topographic control",
        "The control is the same base model with identity adaptors, localized on the same "
        "stimuli with the same options. Adaptors are invertible, so both compute the same "
        "function; only the unit basis differs (and with it which units a contrast selects). The "
        "test compares each area's whole-map Moran's I (unsmoothed) with its null (positions "
        "permuted within the area) on both sides; the areas, not islands, are the samples.",
    )
    rep.add_table(result.control_comparison, "Trained vs control, unsmoothed maps")
    for c, k in zip(result.contrasts, result.control.contrasts, strict=True):
        fig = plot_sheet_maps(
            [(c.t, f"{c.name}: trained"), (k.t, f"{c.name}: control")],
            sheet,
            ncols=2,
            shared_scale=True,
            colorbar_label="t",
        )
        rep.add_figure(fig, f"Welch t of {c.name}, trained and control on one colour scale.")


def write_localize_results(rf: Any, result: Any, model: Any, params: Mapping[str, Any]) -> None:
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
    rf.write_csv("topography.csv", topography_frame(result))
    if result.control_comparison is not None:
        rf.write_csv("control.csv", result.control_comparison)
        rf.write_csv("control_topography.csv", topography_frame(result.control))
    rf.write_sheet_nifti(
        "tmap.nii.gz",
        np.stack([c.t for c in result.contrasts]),
        sheet,
        names,
        stat="t",
        df=np.stack([c.df for c in result.contrasts]),
    )
    rf.write_sheet_nifti(
        "qmap.nii.gz", np.stack([c.q for c in result.contrasts]), sheet, names, stat="q"
    )
    rf.write_sheet_nifti(
        "pmap.nii.gz", np.stack([c.p for c in result.contrasts]), sheet, names, stat="p"
    )
    rf.write_sheet_nifti(
        "clusters.nii.gz",
        np.stack([c.labels for c in result.contrasts]).astype(np.float64),
        sheet,
        names,
        stat="label",
    )
    if result.anova is not None:
        rf.write_csv("anova.csv", result.anova.table(sheet))
        if result.anova.topography is not None:
            rf.write_csv("anova_topography.csv", result.anova.topography)
        rf.write_sheet_nifti(
            "anova.nii.gz",
            np.stack([result.anova.f, result.anova.q]),
            sheet,
            ["F", "q"],
            stat=["F", "q"],
        )
    result.stats.save(rf.path("stats.safetensors"))
    identity = model_identity(model) if model is not None and hasattr(model, "blocks") else None
    model_name = (
        params.get("model")
        or (identity or {}).get("name")
        or ((identity or {}).get("checkpoint") or (identity or {}).get("base_model"))
    )
    report = build_report(result, model_name, params)
    report.set_summary(summary_of_result(result))
    rf.write_report(report)
    all_params = {**result.params, **{k: v for k, v in params.items() if k != "command_line"}}
    inputs = {"stimuli": [str(p) for p in result.stimulus_inputs]}
    if params.get("localizer_file"):
        inputs["localizer"] = str(params["localizer_file"])
    if params.get("smoothed_from"):  # topo smooth's re-localization: its report links the source
        inputs["smoothed_from"] = str(params["smoothed_from"])
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
            "control": None
            if result.control is None
            else {
                "model": model_identity(result.control_model) if result.control_model else None,
                "comparison": result.control_comparison.to_dict(orient="records"),
            },
            "summary": result.summary_table().to_dict(orient="records"),
        },
    )


def summary_of_result(result: Any) -> dict[str, Any]:
    """What :func:`print_summary` prints, as data (``summary.json``)."""
    p = result.params
    n_units = result.sheet.n_units
    detection, topography = [], []
    for c in result.contrasts:
        s = c.summary()
        detection.append(
            {
                "contrast": c.name,
                "n_significant": c.n_significant,
                "n_units": n_units,
                "n_clusters": c.n_clusters,
                "peak_t": c.peak_t,
            }
        )
        topography.append(
            {
                "contrast": c.name,
                "map_moran_i": s["map_moran_i_unsmoothed"],
                "join_count_z": s["join_count_z_unsmoothed"],
                "n_clusters": s["n_clusters_unsmoothed"],
                "n_clusters_random_placement": s["n_clusters_random_placement"],
                "island_moran_i": c.moran_unsmoothed,
            }
        )
    out: dict[str, Any] = {
        "settings": {
            "q": p["q"],
            "alternative": p["alternative"],
            "fdr_scope": p["fdr_scope"],
            "fwhm_mm": p["fwhm_mm"],
            "min_cluster": p["min_cluster"],
        },
        "detection": detection,
        "topography_unsmoothed": topography,
    }
    if result.control_comparison is not None:
        out["control"] = result.control_comparison.to_dict(orient="records")
    return out


def print_summary(result: Any, console: Any) -> None:
    """Rich tables: detection at the display FWHM, then topography on the unsmoothed map.

    The tables fit the console's width (80 columns included): columns are dropped by
    priority, contrast names fold instead of being cut.
    """
    from topocli.reporting.terminal import Column, fit_table

    summary = summary_of_result(result)
    p = summary["settings"]
    width = console.width
    rows = [
        [
            r["contrast"],
            f"{r['n_significant']} / {r['n_units']}",
            r["n_clusters"],
            _fmt(r["peak_t"]),
        ]
        for r in summary["detection"]
    ]
    console.print(
        fit_table(
            [
                Column("contrast", "left", 0, name=True),
                Column("significant units", priority=0),
                Column("clusters", priority=1),
                Column("peak t", priority=2),
            ],
            rows,
            width,
            title=f"detection: q < {p['q']:g} ({p['alternative']}, FDR over {p['fdr_scope']}), "
            f"FWHM {p['fwhm_mm']:g} mm, clusters >= {p['min_cluster']} units",
        )
    )
    rows = [
        [
            r["contrast"],
            _fmt(r["map_moran_i"], ".3f"),
            _fmt(r["join_count_z"], ".1f"),
            _fmt(r["n_clusters"], ".0f"),
            _fmt(r["n_clusters_random_placement"], ".1f"),
            _fmt(r["island_moran_i"], ".3f"),
        ]
        for r in summary["topography_unsmoothed"]
    ]
    console.print(
        fit_table(
            [
                Column("contrast", "left", 0, name=True),
                Column("map Moran's I", priority=0),
                Column("join-count z", priority=1),
                Column("clusters", priority=2),
                Column("at random", priority=2),
                Column("island I", priority=3),
            ],
            rows,
            width,
            title="topography, unsmoothed map (FWHM 0 mm), whatever the display FWHM",
        )
    )
    if result.control_comparison is not None:
        rows = [
            [
                str(r["contrast"]),
                _fmt(r["map_moran_i_trained"], ".3f"),
                _fmt(r["map_moran_i_control"], ".3f"),
                _fmt(r["map_moran_i_difference_z"], ".1f"),
                _p_text(r["map_moran_i_difference_p"]),
                f"{_fmt(r['join_count_z_trained'], '.1f')} / "
                f"{_fmt(r['join_count_z_control'], '.1f')}",
            ]
            for _, r in result.control_comparison.iterrows()
        ]
        console.print(
            fit_table(
                [
                    Column("contrast", "left", 0, name=True),
                    Column("map I trained", priority=0),
                    Column("map I control", priority=0),
                    Column("z", priority=1),
                    Column("p", priority=1),
                    Column("join z t / c", priority=2),
                ],
                rows,
                width,
                title="trained vs identity-adaptor control (unsmoothed; areas as samples)",
            )
        )
