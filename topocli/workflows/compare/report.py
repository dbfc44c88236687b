"""What ``topo compare`` writes and prints: tables, figures, ``report.html``, terminal summary.

Nothing here computes a number of the comparison; everything reads a
:class:`~topocli.workflows.compare.result.CompareResult`.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

from topocli.errors import TopoInputError
from topocli.workflows.compare.conditions import in_human_names
from topocli.workflows.compare.human_side import ISLAND_COLUMNS, parse_map_specs
from topocli.workflows.compare.models import ModelResults, model_profile, model_spatial
from topocli.workflows.compare.pairs import Pair
from topocli.workflows.compare.result import CompareResult


def _png(fig: Any) -> bytes:
    from topocli.reporting.plotting import figure_to_bytes

    return figure_to_bytes(fig, "png", dpi=110)


def side_by_side(left: bytes, right: bytes, gap: int = 16, shrink: float = 0.6) -> bytes:
    """Two PNG images next to each other as PNG bytes.

    The taller one is scaled down towards the shorter one's height, by at most ``1 - shrink``
    (a wide glass brain beside a tall sheet map both stay readable); the shorter one keeps its
    size and is centred vertically.
    """
    from PIL import Image

    with Image.open(io.BytesIO(left)) as a, Image.open(io.BytesIO(right)) as b:
        a, b = a.convert("RGB"), b.convert("RGB")
    short, tall = sorted((a.height, b.height))
    target = max(short, round(shrink * tall))
    a, b = (_to_height(im, target) if im.height > target else im for im in (a, b))
    height = max(a.height, b.height)
    canvas = Image.new("RGB", (a.width + gap + b.width, height), "white")
    canvas.paste(a, (0, (height - a.height) // 2))
    canvas.paste(b, (a.width + gap, (height - b.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_height(image: Any, height: int) -> Any:
    from PIL import Image

    if image.height == height:
        return image
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _profile_figures(
    result: CompareResult, label: str, contrast: str, target: str, pairs: list[Pair]
) -> tuple[Any, Any]:
    """The model's and the human fROI profile as two figures.

    Two figures, each shown at its own size, rather than one image pasted side by side: the
    pasted image was wider than the page and shrank its text to about 6 px.
    """
    from topocli.reporting.plotting import plot_profile_bars

    conditions = result.agreements[(label, pairs[0].froi, target)]["conditions"]
    model_rows = []
    for pair in pairs:
        profile = in_human_names(model_profile(pair.model, pair.froi), result.cmap)
        profile = profile.reindex(conditions)
        model_rows.append(profile.assign(area=pair.area).reset_index())
    model_table = pd.concat(model_rows, ignore_index=True)
    hue = "area" if len(pairs) > 1 else None
    width = max(4.0, min(9.5, 1.8 + 0.3 * len(conditions) * len(pairs)))
    model_fig = plot_profile_bars(
        model_table,
        x="condition",
        y="mean",
        hue=hue,
        err="sem",
        title=f"model {label}: {contrast} fROI(s)",
        ylabel="response (held-out)",
        figsize=(width, 3.6),
    )
    human_table = result.human.profiles[target].reindex(conditions).reset_index()
    human_fig = plot_profile_bars(
        human_table,
        x="condition",
        y="mean",
        err="sem",
        title=f"human: {target}",
        ylabel="response (beta)" if result.human.kind == "table" else "response",
        figsize=(max(4.0, min(9.5, 1.8 + 0.9 * len(conditions))), 3.6),
    )
    return model_fig, human_fig


def _model_map_png(model: ModelResults, contrast: str) -> bytes | None:
    from topocli.reporting.plotting import plot_sheet_map
    from topocli.reporting.reader import load_sheet_maps, sheet_map_file

    path = sheet_map_file(model.path, "tmap.nii.gz")
    if path is None:
        return None
    try:
        values, names, sheet = load_sheet_maps(path)
    except TopoInputError:
        return None
    if contrast not in names:
        return None
    t = values[names.index(contrast)]
    labels = _cluster_labels(model, contrast, sheet.n_units)
    finite = np.abs(t[np.isfinite(t)])
    vmax = float(np.percentile(finite, 99)) if finite.size else None
    fig = plot_sheet_map(
        t,
        sheet,
        title=f"model {model.label}: {contrast} t; clusters outlined",
        outline_labels=labels,
        colorbar_label="t",
        vmax=vmax or None,
    )
    return _png(fig)


def _cluster_labels(model: ModelResults, contrast: str, n_units: int) -> np.ndarray | None:
    """Cluster label per sheet unit (``units.csv``) to outline on the t map; None: no outlines."""
    folder = model.folder
    if folder is None or not folder.has("units.csv"):
        return None
    try:
        rows = folder.unit_maps(("unit", "cluster"))
    except (TopoInputError, ValueError):  # a units.csv without clusters only costs the outlines
        return None
    rows = rows[rows["contrast"] == contrast]
    if len(rows) != n_units:
        return None
    labels = np.zeros(n_units, dtype=np.int64)
    labels[rows["unit"].to_numpy(dtype=int)] = rows["cluster"].fillna(0).astype(int)
    return labels


def _human_map_png(item: Any, title: str, threshold: float | None, mesh: tuple | None) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from nilearn import plotting

    shown = threshold if threshold is not None and math.isfinite(threshold) else None
    if item.kind == "volume":
        fig = Figure(figsize=(7.5, 2.8))
        FigureCanvasAgg(fig)
        plotting.plot_glass_brain(
            item.to_nifti(),
            figure=fig,
            display_mode="lzry",
            threshold=shown,
            plot_abs=False,
            colorbar=True,
            title=title,
        )
    else:
        fig = Figure(figsize=(4.5, 4.0))
        FigureCanvasAgg(fig)
        plotting.plot_surf_stat_map(
            mesh,
            np.asarray(item.data, dtype=float),
            hemi="left",
            view="lateral",
            figure=fig,
            threshold=shown,
            colorbar=True,
            title=title,
        )
    return _png(fig)


def _moran_figure(result: CompareResult) -> Any | None:
    from topocli.reporting.plotting import STREAM_COLORS, new_figure

    groups: list[tuple[str, np.ndarray]] = []
    for model in result.models:
        for contrast in dict.fromkeys(p.contrast for p in result.pairs if p.model is model):
            values = model_spatial(model, contrast)["moran"]
            groups.append((f"{model.label}\n{contrast}", values[np.isfinite(values)]))
    for target, spatial in result.human.spatial.items():
        values = spatial.islands["moran_i"].to_numpy(dtype=float)
        groups.append((f"human\n{target}", values[np.isfinite(values)]))
    if not any(v.size for _, v in groups):
        return None
    fig = new_figure((max(4.0, 1.1 * len(groups) + 1.5), 3.6))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for k, (_, values) in enumerate(groups):
        color = STREAM_COLORS[k % len(STREAM_COLORS)]
        if values.size:
            ax.scatter(k + rng.uniform(-0.18, 0.18, values.size), values, s=14, color=color)
            ax.hlines(values.mean(), k - 0.3, k + 0.3, color="#222222", lw=1.6)
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], fontsize=9)
    ax.set_ylabel("island Moran's I")
    ax.set_title("Island Moran's I per island (bar: mean)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _fmt(value: Any, spec: str = ".3g") -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "—"
    return format(x, spec) if math.isfinite(x) else "—"


def build_report(result: CompareResult, command_line: str | None = None) -> Any:
    """The ``report.html`` of a compare run."""
    from topocli.reporting.html import Report

    labels = ", ".join(f"{m.label}{' (control)' if m.is_control else ''}" for m in result.models)
    rep = Report(
        "topo compare: model vs human localizer",
        subtitle=f"{labels} vs {result.human.source}",
        command=command_line,
    )
    p = result.params
    rep.add_section("Summary")
    rep.add_key_values(
        {
            "model results": "; ".join(
                f"{m.label}: {m.path}" + (" — non-topographic control" if m.is_control else "")
                for m in result.models
            ),
            "human data": result.human.source
            + (f" (parcels {p['parcels']})" if p.get("parcels") else ""),
            "condition map": result.cmap_source,
            "conditions (model → human)": ", ".join(
                f"{k} → {v}" for k, v in result.cmap.conditions.items()
            ),
            "fROIs (model → human)": ", ".join(f"{k} → {v}" for k, v in result.cmap.frois.items()),
            "profile agreement": f"Pearson and Spearman r; permutation p ({p['permutations']} "
            f"orderings, exact when n! is fewer); bootstrap 95% CI ({p['bootstrap']} resamples); "
            f"seed {p['seed']}",
        }
    )
    summary = result.summary_table()
    rep.add_table(
        summary,
        "Per fROI pair: profile correlation (p: permutation; CI: bootstrap 95%), selectivity "
        "d' on each side, split-half Dice",
        csv_name="metrics.csv",
    )
    for note in _limits(result):
        rep.add_note(note, "warning")
    groups: dict[tuple[str, str, str], list[Pair]] = {}
    for pair in result.pairs:
        groups.setdefault((pair.model.label, pair.contrast, pair.target), []).append(pair)
    model_maps: dict[tuple[str, str], bytes | None] = {}
    for (label, contrast, target), pairs in groups.items():
        rep.add_section(f"{label}: {contrast} ↔ human {target}")
        for note in result.human.notes.get(target, []):
            rep.add_paragraph(note)
        model_fig, human_fig = _profile_figures(result, label, contrast, target, pairs)
        rep.add_figure(
            model_fig,
            f"The model's {contrast} fROI profile(s) (held-out halves, both directions "
            "averaged; error bars: SEM bound). Shared conditions only, in human names.",
        )
        rep.add_figure(
            human_fig,
            f"Human {target} (error bars: SEM across participants where known), the same "
            "conditions in the same order.",
        )
        model = pairs[0].model
        if (label, contrast) not in model_maps:
            model_maps[(label, contrast)] = _model_map_png(model, contrast)
        model_png = model_maps[(label, contrast)]
        human_item = result.human.maps.get(target)
        if human_item is not None and model_png is not None:
            spatial = result.human.spatial.get(target)
            threshold = spatial.threshold if spatial is not None else None
            human_png = _human_map_png(human_item, f"human {target}", threshold, result.human.mesh)
            rep.add_image(
                side_by_side(human_png, model_png),
                f"Left: human {target} contrast map (nilearn; thresholded at the FDR "
                f"q < {p['human_q']:g} level when anything survives). Right: the model's "
                f"{contrast} t map on the sheet with its clusters.",
            )
        elif model_png is not None:
            rep.add_image(model_png, f"The model's {contrast} t map on the sheet with its clusters")
        table = result.metrics[
            (result.metrics["model"] == label)
            & (result.metrics["human_froi"] == target)
            & (result.metrics["model_froi"].isin([pr.froi for pr in pairs] + [contrast]))
        ]
        rep.add_table(
            table.drop(columns=["model", "human_froi"]),
            f"Metrics of {label} {contrast} vs human {target}",
            csv_name="metrics.csv",
        )
    rep.add_section(
        "Spatial organisation",
        "Island Moran's I of every cluster (model: clusters.csv; human: supra-threshold "
        "islands of the contrast map), Welch t and Mann-Whitney U between the distributions, "
        "and cluster counts and sizes relative to the searched surface (sheet units, brain "
        "voxels or vertices).",
    )
    fig = _moran_figure(result)
    if fig is not None:
        rep.add_figure(fig, "Island Moran's I per island and group")
    spatial = result.metrics[result.metrics["family"] == "spatial"]
    rep.add_table(spatial, "Spatial metrics", csv_name="metrics.csv")
    if result.notes:
        rep.add_section("Notes")
        for note in result.notes:
            rep.add_paragraph(note)
    return rep


def _limits(result: CompareResult) -> list[str]:
    """Plain statements of what limits the comparison."""
    out = []
    ns = sorted({a["n_conditions"] for a in result.agreements.values()})
    exact = [a for a in result.agreements.values() if a["permutation_exact"]]
    if exact:
        orderings = min(a["n_permutations"] for a in exact)
        out.append(
            f"Profiles share {', '.join(map(str, ns))} condition(s): the exact permutation test "
            f"has only n! = {orderings} orderings, so p can be no smaller than "
            f"1/{orderings} = {1 / orderings:.3g} ({2 / orderings:.3g} for |r| = 1, whose "
            "reversal ties it), and bootstrap CIs over so few conditions are wide (resamples "
            "hold 2-3 distinct conditions, where r is often +-1)."
        )
    outside = _conditions_outside_contrasts(result)
    if outside:
        out.append(
            "The conditions that define a contrast are also in its fROI profile: a fROI "
            "selected for the contrast (even on held-out data) orders them alike on both sides "
            "by construction. Only the other shared conditions test the profile freely: "
            + "; ".join(f"{c}: {', '.join(names) or 'none'}" for c, names in outside.items())
            + "."
        )
    controls = [m.label for m in result.models if m.is_control]
    trained = [m.label for m in result.models if not m.is_control]
    if controls and not trained:
        out.append(
            f"Every model compared is a non-topographic control ({', '.join(controls)}): "
            "untrained adaptors, no spatial loss."
        )
    if controls and trained:
        out.append(
            "Adaptors are invertible, so a trained model and its identity-adaptor control "
            "compute the same function (probe and fidelity read-outs agree by construction); "
            "only the unit basis differs. Their fROI profiles differ only through the units "
            "each fROI selects in that basis, and spatial statistics (Moran's I, islands) and "
            "interventions are what can tell them apart (docs/concepts.md)."
        )
    for model in result.models:
        asked = model.parameters.get("model", "?")
        if model.is_control and asked in (None, "", "minilm"):
            out.append(
                f"{model.label} ({model.path}) was localized with the default model "
                f"({'none given' if not asked else asked!r}), which resolved to the control: "
                "the trained topographic default is not installed."
            )
    if result.human.kind == "table":
        out.append(
            "The human side is a table of group fROI responses: no human islands, cluster "
            "counts or split-half Dice can be computed from it."
        )
    return out


def _conditions_outside_contrasts(result: CompareResult) -> dict[str, list[str]]:
    """Per contrast, the shared (human-named) conditions that carry no contrast weight."""
    out: dict[str, list[str]] = {}
    for pair in result.pairs:
        weights = pair.model.contrasts.get(pair.contrast)
        if not weights or pair.contrast in out:
            continue
        inside = {result.cmap.conditions.get(c) for c, w in weights.items() if w}
        shared = result.agreements[(pair.model.label, pair.froi, pair.target)]["conditions"]
        out[pair.contrast] = [c for c in shared if c not in inside]
    return out


def write_compare_results(rf: Any, result: CompareResult, command_line: str | None = None) -> None:
    """Write metrics.csv, profiles.csv, human tables, report.html and the manifest."""
    rf.write_csv("metrics.csv", result.metrics)
    rf.write_csv("profiles.csv", result.profiles)
    human = result.human
    if human.spatial:
        islands = [s.islands.assign(human_froi=t)[ISLAND_COLUMNS] for t, s in human.spatial.items()]
        islands_table = pd.concat(islands, ignore_index=True)
        islands_table["peak_index"] = islands_table["peak_index"].map(str)
        rf.write_csv("human_islands.csv", islands_table)
        tables = [
            s.cluster_table.assign(human_froi=t)
            for t, s in human.spatial.items()
            if s.cluster_table is not None
        ]
        if tables:
            rf.write_csv("human_clusters.csv", pd.concat(tables, ignore_index=True))
    if human.dice:
        rf.write_csv("human_dice.csv", pd.concat(human.dice.values(), ignore_index=True))
    report = build_report(result, command_line)
    report.set_summary(summary_of_result(result))
    rf.write_report(report)
    inputs: dict[str, Any] = {
        "model_results": [str(m.path) for m in result.models],
        "condition_map": result.cmap.path,
    }
    p = result.params
    if p["human_profiles"]:
        inputs["human_profiles"] = p["human_profiles"]
    if p["human_maps"]:
        inputs["human_maps"] = [str(s.path) for s in parse_map_specs(p["human_maps"])]
    if p["parcels"]:
        inputs["parcels"] = p["parcels"]
    if p["mesh"]:
        inputs["mesh"] = p["mesh"]
    rf.write_manifest(
        "compare",
        p,
        inputs,
        seed=p["seed"],
        extra={
            "models": [
                {
                    "label": m.label,
                    "path": str(m.path),
                    "is_control": m.is_control,
                    "identity": m.identity,
                    "localizer": m.localizer,
                }
                for m in result.models
            ],
            "pairs": [
                {"model": pr.model.label, "model_froi": pr.froi, "human_froi": pr.target}
                for pr in result.pairs
            ],
            "human_kind": human.kind,
            "notes": result.notes,
            "summary": result.summary_table().to_dict(orient="records"),
        },
    )


SUMMARY_COLUMNS = (
    "model",
    "model_froi",
    "human_froi",
    "n_conditions",
    "pearson_r",
    "pearson_p",
    "pearson_ci_low",
    "pearson_ci_high",
    "spearman_r",
    "dprime_model",
    "dprime_human",
)


def summary_of_result(result: CompareResult) -> dict[str, Any]:
    """What :func:`print_summary` prints, as data (``summary.json``)."""
    from topocli.reporting.summary import summary_rows

    return {
        "agreement": summary_rows(result.summary_table(), SUMMARY_COLUMNS),
        "notes": [*_limits(result), *result.notes],
    }


def print_summary(result: CompareResult, console: Any) -> None:
    """A rich table: per fROI pair r, permutation p and bootstrap CI (fits the console)."""
    from topocli.reporting.terminal import Column, fit_table

    rows = [
        [
            row.model,
            row.model_froi,
            row.human_froi,
            str(row.n_conditions),
            _fmt(row.pearson_r),
            _fmt(row.pearson_p),
            f"[{_fmt(row.pearson_ci_low)}, {_fmt(row.pearson_ci_high)}]",
            _fmt(row.spearman_r),
            f"{_fmt(row.dprime_model)} / {_fmt(row.dprime_human)}",
        ]
        for row in result.summary_table().itertuples(index=False)
    ]
    columns = [
        Column("model", "left", 1, name=True),
        Column("model fROI", "left", 0, name=True),
        Column("human", "left", 0, name=True),
        Column("n", priority=2),
        Column("r", priority=0),
        Column("p", priority=0),
        Column("95% CI", priority=1),
        Column("Spearman", priority=3),
        Column("d' m/h", priority=2),
    ]
    console.print(
        fit_table(
            columns,
            rows,
            console.width,
            title="Profile agreement (Pearson r; permutation p; bootstrap 95% CI)",
            more="in metrics.csv and summary.json",
        )
    )
    for note in [*_limits(result), *result.notes]:
        console.print(f"note: {note}")
