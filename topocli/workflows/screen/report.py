"""Tables, figures, report and terminal summary of ``topo screen``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.reporting.tables import PEAK_COLUMNS, unit_frame, with_peak_position
from topocli.reporting.tables import UNIT_COLUMNS as UNIT_MAP_COLUMNS
from topocli.stats.clusters import CLUSTER_TABLE_COLUMNS
from topocli.workflows.screen.analysis import CategoryResult, ScreenResult, column_mean
from topocli.workflows.screen.discovery import Discovery
from topocli.workflows.screen.inputs import BASELINE

REPORT_MAX_CATEGORIES = 30  # per-category report sections (all categories are in the files)
REPORT_MAX_HEATMAP = 40  # rows of the Dice / profile heatmaps

CLUSTER_COLUMNS = ["category", *CLUSTER_TABLE_COLUMNS, *PEAK_COLUMNS]


UNIT_COLUMNS = ["category", "reference", *UNIT_MAP_COLUMNS]


def units_table(result: ScreenResult) -> pd.DataFrame:
    """``units.csv`` (long): one row per (category, reference, unit), columns as in localize."""
    sheet = result.sheet
    frames = []
    for c in result.categories:
        maps = [
            (
                c.reference,
                {
                    "t": c.t,
                    "df": c.df,
                    "p": c.p,
                    "q": c.q,
                    "d": c.d,
                    "significant": c.significant,
                    "cluster": c.labels,
                },
            )
        ]
        if c.vs_baseline is not None:
            vb = c.vs_baseline
            maps.append(
                (BASELINE, {k: vb.get(k) for k in ("t", "df", "p", "q", "d", "significant")})
            )
        for ref, values in maps:
            frames.append(unit_frame(sheet, values, {"category": c.name, "reference": ref}))
    if not frames:
        return pd.DataFrame(columns=UNIT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[UNIT_COLUMNS]


def clusters_table(result: ScreenResult) -> pd.DataFrame:
    """``clusters.csv``: one row per (category, cluster), with the peak's position in mm."""
    frames = [
        with_peak_position(c.clusters, result.sheet).assign(category=c.name)
        for c in result.categories
        if c.n_clusters
    ]
    if not frames:
        return pd.DataFrame(columns=CLUSTER_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CLUSTER_COLUMNS]


def topography_frame(result: ScreenResult) -> pd.DataFrame:
    """``topography.csv``: per (category, area), the measures of topography (unsmoothed)."""
    frames = [
        c.topography.assign(category=c.name, map_fwhm_mm=0.0, island_moran_i=c.moran_unsmoothed)
        for c in result.categories
        if c.topography is not None
    ]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    first = ["category", "area", "map_fwhm_mm"]
    return table[first + [col for col in table.columns if col not in first]]


def known_table(result: ScreenResult) -> pd.DataFrame:
    """``known.csv``: the known localizer maps novelty was measured against."""
    return pd.DataFrame(
        [
            {
                "known": k.name,
                "contrast": k.contrast,
                "source": k.source,
                "n_significant_units": k.n_significant,
            }
            for k in result.known
        ],
        columns=["known", "contrast", "source", "n_significant_units"],
    )


def assignments_table(result: ScreenResult) -> pd.DataFrame:
    """``assignments.csv`` (discovery): every pool stimulus and its discovered cluster."""
    return pd.DataFrame(
        {
            "stimulus": [s.text if s.text is not None else s.label for s in result.stim_set],
            "id": [s.id for s in result.stim_set],
            "cluster": [s.condition for s in result.stim_set],
        }
    )


def contrast_weights(result: ScreenResult) -> dict[str, dict[str, float]]:
    """Each category's test as condition weights: +1 on the category, -n_j / n_reference on
    each reference condition (the reference's mean is the count-weighted mean of its parts)."""
    counts = result.stim_set.counts()
    out = {}
    for c in result.categories:
        ref = [c.reference] if c.reference != "rest" else [x for x in counts if x != c.name]
        total = sum(counts[x] for x in ref)
        out[c.name] = {c.name: 1.0, **{x: -counts[x] / total for x in ref}}
    return out


def _display_limit(values: Iterable[np.ndarray]) -> float | None:
    finite = np.concatenate([np.abs(v[np.isfinite(v)]) for v in values] or [np.zeros(0)])
    if not finite.size:
        return None
    lim = float(np.percentile(finite, 99))
    return lim if lim > 0 else None


def _heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    cbar: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    boxes: Sequence[tuple[int, int]] = (),
    fmt: str = "{:.2f}",
) -> Any:
    from matplotlib.patches import Rectangle

    from topocli.reporting.plotting import new_figure

    m = np.asarray(matrix, dtype=np.float64)
    w = min(9.5, 2.6 + 0.55 * len(cols))
    h = min(12.0, 1.4 + 0.36 * len(rows))
    fig = new_figure((w, h))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(np.arange(len(cols)), [str(c) for c in cols], rotation=40, ha="right")
    ax.set_yticks(np.arange(len(rows)), [str(r) for r in rows])
    ax.tick_params(labelsize=9)
    if m.size <= 400:
        lo, hi = im.get_clim()
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                light = (
                    (v - lo) / (hi - lo + 1e-12) < 0.55
                    if cmap == "viridis"
                    else abs(v) > 0.6 * max(abs(lo), abs(hi))
                )
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color="white" if light else "black",
                )
    for i, j in boxes:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=1.6))
    cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label(cbar, fontsize=9)
    ax.set_title(title, fontsize=10)
    return fig


def profile_matrix(result: ScreenResult) -> tuple[np.ndarray, list[str], list[str]]:
    """Held-out fROI responses [categories in rank order, conditions] (mean of directions)."""
    rows = [c.name for c in result.categories[:REPORT_MAX_HEATMAP]]
    others = [c for c in result.conditions if c not in {x.name for x in result.categories}]
    cols = rows + others
    prof = result.profiles
    if prof.empty:
        return np.full((len(rows), len(cols)), np.nan), rows, cols
    mean = prof[prof["split_direction"] == "mean"]
    table = mean.pivot_table(
        index="contrast", columns="condition", values="response_mean", aggfunc="mean"
    )
    table = table.reindex(index=rows, columns=cols)
    return table.to_numpy(dtype=np.float64), rows, cols


def _row_z(m: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.nanmean(m, axis=1, keepdims=True)
        sd = np.nanstd(m, axis=1, keepdims=True)
        return np.where(sd > 0, (m - mu) / sd, 0.0)


def plot_dendrogram(disc: Discovery, n_stimuli: int) -> Any:
    """The Ward tree (top 60 merges) with each kept cluster's branches in its colour."""
    from scipy.cluster.hierarchy import dendrogram

    from topocli.reporting.plotting import STREAM_COLORS, new_figure

    z = disc.linkage
    n = n_stimuli
    colour: dict[int, str] = {}
    for j, node in enumerate(disc.kept_nodes):
        c = STREAM_COLORS[j % len(STREAM_COLORS)]
        stack = [node]
        while stack:
            k = stack.pop()
            if k >= n:
                colour[k] = c
                stack.extend(int(v) for v in z[k - n, :2])

    fig = new_figure((9.0, 3.8))  # below the page width: text shown at its size
    ax = fig.add_subplot()
    p = min(60, n)
    dendrogram(
        z,
        ax=ax,
        truncate_mode="lastp" if n > p else None,
        p=p,
        no_labels=True,
        link_color_func=lambda k: colour.get(int(k), "#9aa5b1"),
    )
    ax.set_ylabel("Ward distance", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(
        f"Ward tree of the pool's final representations; coloured: the {len(disc.names)} kept "
        "clusters",
        fontsize=10,
    )
    return fig


def _fmt(x: Any, spec: str = ".3g") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "—" if not np.isfinite(v) else format(v, spec)


def _exemplar_blocks(rep: Any, result: ScreenResult, c: CategoryResult) -> None:
    from topocli.stimuli.stimulus_set import load_image

    if not c.exemplar_rows:
        return
    stims = [result.stim_set.stimuli[i] for i in c.exemplar_rows]
    caption = (
        f"Exemplars: the {len(stims)} {c.name} stimuli with the highest mean response over the "
        f"{c.exemplar_units}."
    )
    modality = stims[0].modality
    if modality == "image":
        try:
            images = [
                (load_image(s.path), f"{s.label} ({_fmt(v, '.2f')})")
                for s, v in zip(stims, c.exemplar_scores, strict=True)
            ]
            rep.add_image_grid(images, caption=caption, thumb_px=128)
            return
        except TopoInputError:
            pass
    label = "stimulus" if modality == "text" else "file"
    table = pd.DataFrame(
        {
            "#": np.arange(1, len(stims) + 1),
            label: [s.text if s.text is not None else s.label for s in stims],
            "response": c.exemplar_scores,
        }
    )
    rep.add_table(table, caption, float_format="{:.3f}")


def _mode_text(result: ScreenResult) -> str:
    p = result.params
    if result.mode == "single":
        return "against the baseline pool"
    if result.mode == "discover":
        return "against the rest of the pool"
    if p.get("baseline"):
        return "against all the other categories plus the baseline pool"
    return "against all the other categories"


def build_report(result: ScreenResult, model_name: str | None, params: Mapping[str, Any]) -> Any:
    """The ``report.html`` of a screen: ranked table first, then maps, novelty, profiles."""
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_sheet_map, plot_sheet_maps

    sheet = result.sheet
    p = result.params
    cats = result.categories
    k = len(cats)
    what = "discovered clusters" if result.mode == "discover" else "categories"
    rep = Report(
        f"topo screen: {k} {what}",
        subtitle=f"model {model_name}" if model_name else None,
        command=params.get("command_line"),
    )
    top = cats[0] if cats else None
    novel = [c for c in cats if np.isfinite(c.novelty) and c.n_significant]
    if top is not None:
        lines = [
            f"Strongest territory: {top.name}, {top.n_significant} significant units in "
            f"{top.n_clusters} cluster{'s' if top.n_clusters != 1 else ''} (peak t "
            f"{_fmt(top.peak_t, '.2f')})."
        ]
        if novel:
            best = max(novel, key=lambda c: (c.novelty, c.n_significant))
            lines.append(
                f"Most novel: {best.name} (novelty {_fmt(best.novelty, '.2f')}; closest known "
                f"localizer {best.best_known or '—'})."
            )
        none = [c.name for c in cats if not c.n_significant]
        if none:
            lines.append(f"No significant unit: {', '.join(none)}.")
        rep.add_note(" ".join(lines))
    for note in result.notes:
        rep.add_note(note, "warning")

    order = (
        "has the highest peak t"
        if p["rank_by"] == "peak-t"
        else "has the most significant units (the largest selective territory)"
    )
    rep.add_section(
        "Ranked categories",
        f"Each of the {k} {what} was tested {_mode_text(result)} with a one-sided Welch t on every "
        f"unit of the sheet; units with BH-FDR q < {p['q']:g} and t > 0 are significant. Rank 1 "
        f"{order}; ties: higher novelty. Novelty = 1 − the highest Dice overlap "
        "with a known localizer's significant units. The held-out effect is split-half "
        "cross-validated: the category's fROI (top "
        f"{p['top_percent']:g}% units) is chosen on one half of the stimuli and measured on the "
        "other.",
    )
    table = result.category_table()
    shown = pd.DataFrame(
        {
            "rank": table["rank"],
            "category": table["category"],
            "stimuli": table["n_stimuli"],
            "sig. units": table["n_significant_units"],
            "clusters": table["n_clusters"],
            "peak t": table["peak_t"],
            "Moran's I": table["moran_i"],
            "held-out": table["heldout_effect"],
            "novelty": table["novelty"],
            "closest known": [
                f"{m} {_fmt(d, '.2f')}" if m else "—"
                for m, d in zip(table["best_known_match"], table["max_dice"], strict=True)
            ],
        }
    )
    decisive = ["rank", "category", "sig. units", "peak t", "novelty", "closest known"]
    if k and table["n_stimuli"].nunique() == 1:  # said in the caption instead
        shown = shown.drop(columns="stimuli")
    same_n = f"; {int(table['n_stimuli'].iloc[0])} stimuli each" if "stimuli" not in shown else ""
    rep.add_table(
        shown,
        f"Categories by rank (closest known: localizer and its Dice){same_n}",
        float_format="{:.2f}",
        csv_name="categories.csv",
        first=decisive,
    )
    if k:
        maps = cats[:36]
        lim = _display_limit([c.t for c in maps])
        clipped = [(np.clip(c.t, -lim, lim) if lim else c.t, f"#{c.rank} {c.name}") for c in maps]
        fig = plot_sheet_maps(
            clipped,
            sheet,
            ncols=min(6, len(maps)),
            shared_scale=True,
            outline_labels=[c.labels for c in maps],
            suptitle="t maps, one per category (rank order); outlined: significant clusters",
        )
        rep.add_figure(
            fig,
            f"All {what} at a glance on one colour scale (clipped at the 99th percentile of |t|, "
            f"{_fmt(lim)}). Red: the category responds more than its reference. Each panel is "
            "the whole sheet, areas as dashed boxes.",
        )

    if k:
        rep.add_section(
            "Sheet viewer",
            "Hover a unit for its area, grid row and column, position in mm, t, q and cluster; "
            "pick the category above the map (rank order). Red: the category responds more "
            "than its reference; white: no unit. Row 0 is at the top, as in tmap.nii.gz in "
            "nilearn.",
        )
        rep.add_sheet_viewer(
            sheet, [{"name": c.name, "t": c.t, "q": c.q, "cluster": c.labels} for c in cats]
        )

    rep.add_section(
        "Novelty against known localizers",
        "Dice overlap between each category's significant units and each known localizer's "
        "(run on the same model with the same threshold). A category that re-finds a known "
        "network scores a high Dice and a low novelty.",
    )
    if result.known and k:
        names = [kn.name for kn in result.known]
        top = [c.name for c in cats[:REPORT_MAX_HEATMAP]]
        m = result.dice.pivot(index="category", columns="known", values="dice")
        m = m.reindex(index=top, columns=names).to_numpy(dtype=np.float64)
        fig = _heatmap(
            m,
            top,
            names,
            "Dice with known localizers",
            "Dice",
            "viridis",
            0.0,
            max(0.2, float(np.nanmax(m)) if np.isfinite(m).any() else 1),
        )
        rep.add_figure(fig, "Rows in rank order; empty: the category has no significant unit.")
        kmaps = [
            (kn.t if kn.t is not None else kn.significant.astype(float), kn.name)
            for kn in result.known
        ]
        lim = _display_limit([v for v, _ in kmaps])
        fig = plot_sheet_maps(
            [(np.clip(v, -lim, lim) if lim else v, nm) for v, nm in kmaps],
            sheet,
            ncols=min(4, len(kmaps)),
            shared_scale=True,
            outline_labels=[kn.significant.astype(np.int32) for kn in result.known],
            suptitle="known localizers: t maps, significant units outlined",
        )
        rep.add_figure(fig, "The known localizer maps the novelty is measured against.")
        rep.add_table(known_table(result), "Known localizer maps", csv_name="known.csv")
    else:
        rep.add_note("No known localizer map was available: novelty is empty.", "warning")

    mat, rows, cols = profile_matrix(result)
    if k and np.isfinite(mat).any():
        rep.add_section(
            "Held-out response profiles",
            "Row: a category's fROI (its top units, chosen on one half of the stimuli). Column: "
            "the mean response to each condition on the other half. Values are z-scored within "
            "each row; a selective fROI lights up its own (boxed) column.",
        )
        z = _row_z(mat)
        lim = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        boxes = [(i, cols.index(r)) for i, r in enumerate(rows)]
        fig = _heatmap(
            z,
            rows,
            cols,
            "held-out fROI responses (z within row)",
            "z",
            "RdBu_r",
            -lim,
            lim,
            boxes,
            "{:.1f}",
        )
        rep.add_figure(
            fig, "Split-half cross-validated: selection and measurement never share stimuli."
        )

    shown_cats = cats[:REPORT_MAX_CATEGORIES]
    rep.add_section(
        "Categories one by one",
        "In rank order."
        + (
            f" The top {len(shown_cats)} of {k} are shown; every category's maps are in "
            "tmap.nii.gz and units.csv."
            if k > len(shown_cats)
            else ""
        ),
    )
    for c in shown_cats:
        rep.add_subsection(f"#{c.rank} {c.name}")
        lim = _display_limit([c.t])
        fig = plot_sheet_map(
            c.t,
            sheet,
            title=f"{c.name} > {c.reference}: t; outlined: clusters (q < {p['q']:g})",
            outline_labels=c.labels,
            vmax=lim,
        )
        rep.add_figure(
            fig,
            f"{c.n_significant} significant units, {c.n_clusters} clusters of >= "
            f"{p['min_cluster']} units (numbered by size); colours clipped at {_fmt(lim)}.",
            dpi=120,
        )
        kv = {
            "stimuli": c.n_stimuli,
            "reference": c.reference,
            "significant units": f"{c.n_significant} of {sheet.n_units}",
            "clusters": c.n_clusters,
            "peak t": _fmt(c.peak_t, ".2f"),
            "mean t (significant units)": _fmt(c.mean_t, ".2f"),
            "island Moran's I (mean)": _fmt(c.moran_mean, ".3f"),
            "held-out effect": _fmt(c.heldout_effect, ".3g"),
            "closest known localizer": f"{c.best_known or '—'} (Dice {_fmt(c.max_dice, '.2f')})",
            "novelty": _fmt(c.novelty, ".2f"),
            "novelty of random placement": _fmt(c.novelty_random, ".2f"),
        }
        if c.vs_baseline is not None:
            kv["significant units vs baseline alone"] = int(c.vs_baseline["significant"].sum())
        rep.add_key_values(kv)
        _exemplar_blocks(rep, result, c)
        if c.n_clusters:
            rep.add_table(
                with_peak_position(c.clusters, sheet)[
                    [col for col in CLUSTER_COLUMNS if col != "category"]
                ],
                f"Clusters of {c.name}",
                max_rows=10,
                csv_name="clusters.csv",
            )

    if result.discovery is not None:
        disc = result.discovery
        rep.add_section(
            "Discovery",
            "The pool's stimuli were embedded with the model's final representation, clustered "
            "with Ward's method and the tree walked from the top: a node was split while one of "
            "its children had a higher sheet selectivity score (median t of the node against "
            "the rest of the pool over its significant units in "
            f"{p['area'] or 'the sheet'}) and kept otherwise, "
            f"keeping clusters of {p['min_size']} to {p['max_size'] or 'half the pool'} "
            "stimuli.",
        )
        rep.add_figure(plot_dendrogram(disc, len(result.stim_set)), "Kept clusters in colour.")
        n_un = int((disc.labels < 0).sum())
        if n_un:
            rep.add_note(f"{n_un} stimuli were left unassigned (in nodes below --min-size).")
        rep.add_table(disc.log, "The walk, node by node", max_rows=100, csv_name="discovery.csv")

    rep.add_section("Methods and settings")
    rep.add_key_values(
        {
            "model": model_name or "—",
            "reference": _mode_text(result),
            "stimuli": ", ".join(f"{c} {n}" for c, n in result.stim_set.counts().items()),
            "test": f"one-sided Welch t; BH-FDR over the "
            f"{'sheet' if p['fdr_scope'] == 'sheet' else 'units of each area'}, q < {p['q']:g}",
            "smoothing": "none" if not p["fwhm_mm"] else f"FWHM {p['fwhm_mm']:g} mm per stimulus",
            "clusters": f">= {p['min_cluster']} units, {p['connectivity']}-connectivity; island "
            f"Moran's I with {p['permutations']} permutations (seed {p['seed']})",
            "fROI": f"top {p['top_percent']:g}% units of the sheet, split-half",
            "rank": "by peak t" if p["rank_by"] == "peak-t" else "by significant units",
            "activations": f"{p['pooling']} pooling"
            + (" (from the activation cache)" if result.from_cache else ""),
        }
    )
    return rep


def write_screen_results(
    rf: Any, result: ScreenResult, model: Any, params: Mapping[str, Any]
) -> None:
    """Write the CSV tables, NIfTI maps, statistics, report and manifest of a screen."""
    from topocli.models.checkpoint import model_identity

    sheet = result.sheet
    names = [c.name for c in result.categories]
    rf.write_csv("categories.csv", result.category_table())
    rf.write_csv("clusters.csv", clusters_table(result))
    rf.write_csv("units.csv", units_table(result))
    rf.write_csv("profiles.csv", result.profiles)
    rf.write_csv("exemplars.csv", result.exemplars)
    rf.write_csv("dice.csv", result.dice)
    rf.write_csv("known.csv", known_table(result))
    rf.write_csv("topography.csv", topography_frame(result))
    if result.control_comparison is not None:
        rf.write_csv("control.csv", result.control_comparison)
    if names:
        cats = result.categories
        rf.write_sheet_nifti(
            "tmap.nii.gz",
            np.stack([c.t for c in cats]),
            sheet,
            names,
            stat="t",
            df=np.stack([c.df for c in cats]),
        )
        rf.write_sheet_nifti("qmap.nii.gz", np.stack([c.q for c in cats]), sheet, names, stat="q")
        rf.write_sheet_nifti("pmap.nii.gz", np.stack([c.p for c in cats]), sheet, names, stat="p")
        rf.write_sheet_nifti(
            "clusters.nii.gz",
            np.stack([c.labels for c in cats]).astype(np.float64),
            sheet,
            names,
            stat="label",
        )
    if result.known:
        rf.write_sheet_nifti(
            "known_maps.nii.gz",
            np.stack([k.significant.astype(np.float64) for k in result.known]),
            sheet,
            [k.name for k in result.known],
            stat="label",
        )
    if result.discovery is not None:
        rf.write_csv("discovery.csv", result.discovery.log)
        rf.write_csv("assignments.csv", assignments_table(result))
    result.stats.save(
        rf.path("stats.safetensors"),
        {"conditions": json.dumps(result.conditions), "groups": "2*condition+split"},
    )
    identity = model_identity(model) if hasattr(model, "blocks") else None
    model_name = params.get("model") or (identity or {}).get("name")
    report = build_report(result, model_name, params)
    report.set_summary(summary_of_result(result))
    rf.write_report(report)
    inputs = {k: v for k, v in params.get("inputs", {}).items() if v}
    rf.write_manifest(
        "screen",
        {
            **result.params,
            **{k: v for k, v in params.items() if k not in ("command_line", "inputs")},
        },
        inputs,
        seed=result.params["seed"],
        extra={
            "model": identity,
            "mode": result.mode,
            "conditions": result.conditions,
            "counts": result.stim_set.counts(),
            "stats_groups": "2*condition+split",
            "contrasts": contrast_weights(result),
            "known": known_table(result).to_dict(orient="records"),
            "cache_key": result.cache_key,
            "from_cache": result.from_cache,
            "timings_s": params.get("timings_s"),
            "ranking": [
                {"rank": c.rank, "category": c.name, "n_significant_units": c.n_significant}
                for c in result.categories
            ],
        },
    )


def summary_of_result(result: ScreenResult) -> dict[str, Any]:
    """What :func:`print_summary` prints, as data (``summary.json``): every category."""
    p = result.params
    return {
        "settings": {
            "q": p["q"],
            "fwhm_mm": p["fwhm_mm"],
            "min_cluster": p["min_cluster"],
            "rank_by": p.get("rank_by"),
        },
        "mode": result.mode,
        "categories": [
            {
                "rank": c.rank,
                "category": c.name,
                "n_stimuli": c.n_stimuli,
                "n_significant": c.n_significant,
                "n_clusters": c.n_clusters,
                "peak_t": c.peak_t,
                "map_moran_i": column_mean(c.topography, "moran_i"),
                "closest_known": c.best_known or None,
                "max_dice": c.max_dice,
                "novelty": c.novelty,
                "novelty_random_placement": c.novelty_random,
            }
            for c in result.categories
        ],
        "control": None
        if result.control_comparison is None
        else result.control_comparison.to_dict(orient="records"),
    }


def print_summary(result: ScreenResult, console: Any, max_rows: int = 20) -> None:
    """A rich table of the ranked categories that fits the console (80 columns included).

    Less decisive columns are dropped first when the console is narrow (the caption names
    them); category names fold onto a second line rather than being cut.
    """
    from topocli.reporting.terminal import Column, fit_table

    summary = summary_of_result(result)
    p = summary["settings"]
    n = len(result.categories)
    columns = [
        Column("rank", priority=0),
        Column("category", "left", 0, name=True),
        Column("sig. units", priority=0),
        Column("clusters", priority=3),
        Column("peak t", priority=1),
        Column("map I", priority=3),
        Column("closest known (Dice)", "left", 1, wrap=True),
        Column("novelty", priority=2),
        Column("at random", priority=2),
        Column("stimuli", priority=4),
    ]
    rows = [
        [
            r["rank"],
            r["category"],
            r["n_significant"],
            r["n_clusters"],
            _fmt(r["peak_t"], ".2f"),
            _fmt(r["map_moran_i"], ".3f"),
            f"{r['closest_known'] or '—'} ({_fmt(r['max_dice'], '.2f')})",
            _fmt(r["novelty"], ".2f"),
            _fmt(r["novelty_random_placement"], ".2f"),
            r["n_stimuli"],
        ]
        for r in summary["categories"][:max_rows]
    ]
    console.print(
        fit_table(
            columns,
            rows,
            console.width,
            title=f"{n} categor{'y' if n == 1 else 'ies'} ranked; q < {p['q']:g}, FWHM "
            f"{p['fwhm_mm']:g} mm, clusters >= {p['min_cluster']} units; 'map I': whole-map "
            "Moran's I on the unsmoothed map; 'at random': the novelty of the same number of "
            "units per area placed at random",
            more="in categories.csv and summary.json",
        )
    )
    if result.control_comparison is not None and len(result.control_comparison):
        rows = [
            [
                str(r["category"]),
                _fmt(r["map_moran_i_trained"], ".3f"),
                _fmt(r["map_moran_i_control"], ".3f"),
                _fmt(r["map_moran_i_difference_z"], ".1f"),
                f"{int(r['n_significant_trained'])} / {int(r['n_significant_control'])}",
            ]
            for _, r in result.control_comparison.head(max_rows).iterrows()
        ]
        console.print(
            fit_table(
                [
                    Column("category", "left", 0, name=True),
                    Column("map I trained", priority=0),
                    Column("map I control", priority=0),
                    Column("z", priority=1),
                    Column("sig. t / c", priority=2),
                ],
                rows,
                console.width,
                title="trained vs identity-adaptor control (unsmoothed; areas as samples)",
            )
        )
    if n > max_rows:
        console.print(f"... {n - max_rows} more in categories.csv")
