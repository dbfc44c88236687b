"""Tables, report and terminal summary of ``topo intervene``, and the writing of its folder.

- ``effects.csv``: per condition, read-out and dose, the unperturbed value, the target
  intervention's and the mean (and SD) over each control kind's draws;
- ``controls.csv``: every control draw's value;
- ``stats.csv``: the target's effect against each control distribution (:mod:`.statistics`);
- ``targets.csv``: the targeted units of each dose and their values;
- ``report.html``: summary, dose-response plots, the targeted units on the sheet, the tables.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from topocli.sheet import Sheet
from topocli.workflows.intervene.controls import CONTROL_KINDS
from topocli.workflows.intervene.readouts import Baseline
from topocli.workflows.intervene.statistics import (
    Design,
    DoseResult,
    effect_size_z,
    mean_over,
    per_stimulus_effects,
    permutation_p,
    readout_values,
    target_bias,
    welch_greater,
)

EFFECT_LABELS = {
    "fidelity": "1 - cosine to unperturbed",
    "lm-loss": "loss increase (nats / token)",
    "probe": "probe accuracy drop",
    "generation": "continuation tokens changed (share)",
}


@dataclass
class Tables:
    """The result tables of one run: ``effects.csv``, ``controls.csv`` and ``stats.csv``."""

    effects: pd.DataFrame
    controls: pd.DataFrame
    stats: pd.DataFrame


def result_tables(
    doses: Sequence[DoseResult],
    readouts: Sequence[str],
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    mode: str,
    driving: bool,
) -> Tables:
    """Effects, control draws and statistics of every dose and read-out.

    Parameters
    ----------
    doses : sequence of DoseResult
    readouts : sequence of str
    base : Baseline
        The unperturbed read-outs.
    probe_base : ndarray or None
        The probe's predictions on the unperturbed representations (``probe`` read-out).
    design : Design
    mode : str
        The intervention (``ablate``, ``mean``, ``steer``, ``stimulate``).
    driving : bool
        Whether the intervention drives the units (steer / stimulate with strength > 0): the
        sign of the probe's target bias.

    Returns
    -------
    Tables
    """
    effects, controls = effects_tables(doses, readouts, base, probe_base, design, mode)
    stats = stats_table(doses, readouts, base, probe_base, design, driving)
    return Tables(effects, controls, stats)


def effects_tables(
    doses: Sequence[DoseResult],
    readouts: Sequence[str],
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    mode: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``effects.csv`` (unperturbed, target, control means) and ``controls.csv`` (every draw)."""
    eff_rows: list[dict] = []
    ctrl_rows: list[dict] = []
    for readout in readouts:
        for cond, name, _values, base_v in readout_values(
            readout, None, base, probe_base, design, 1
        ):
            eff_rows.append(_eff_row(cond, "none", "unperturbed", np.nan, name, base_v, base_v, 0))
        for res in doses:
            kinds = [c.kind for c in res.controls]
            for cond, name, values, base_v in readout_values(
                readout, res.outcome, base, probe_base, design, 1 + len(res.controls)
            ):
                n_t = int(res.target.units.size)
                eff_rows.append(
                    _eff_row(cond, mode, "target", res.dose, name, values[0], base_v, n_t)
                )
                for kind in dict.fromkeys(kinds):
                    sel = np.array([k == kind for k in kinds])
                    v = values[1:][sel]
                    row = _eff_row(
                        cond, mode, f"{kind} (mean)", res.dose, name, v.mean(), base_v, n_t
                    )
                    row["sd"] = float(v.std(ddof=1)) if v.size > 1 else np.nan
                    row["n_draws"] = int(v.size)
                    eff_rows.append(row)
                for c, v in zip(res.controls, values[1:]):
                    ctrl_rows.append(
                        {
                            "control": c.kind,
                            "draw": c.draw,
                            "dose": res.dose,
                            "condition": cond,
                            "readout": name,
                            "value": float(v),
                            "change": float(v - base_v),
                            "n_units": int(c.selection.units.size),
                            "distance_mm": c.distance_mm,
                        }
                    )
    effects = pd.DataFrame(eff_rows)
    for col in ("sd", "n_draws"):
        if col not in effects.columns:
            effects[col] = np.nan
    controls = pd.DataFrame(
        ctrl_rows,
        columns=[
            "control",
            "draw",
            "dose",
            "condition",
            "readout",
            "value",
            "change",
            "n_units",
            "distance_mm",
        ],
    )
    return effects, controls


def _eff_row(cond, mode, intervention, dose, readout, value, base_v, n_units) -> dict:
    return {
        "condition": cond,
        "mode": mode,
        "intervention": intervention,
        "dose": dose,
        "readout": readout,
        "value": float(value),
        "change": float(value - base_v),
        "n_units": int(n_units),
    }


def stats_table(
    doses: Sequence[DoseResult],
    readouts: Sequence[str],
    base: Baseline,
    probe_base: np.ndarray | None,
    design: Design,
    driving: bool,
) -> pd.DataFrame:
    """``stats.csv``: the target's effect against each control distribution, per dose/readout."""
    rows = []
    for res in doses:
        kinds = np.array([c.kind for c in res.controls])
        for readout in readouts:
            eff, used = per_stimulus_effects(readout, res.outcome, base, probe_base, design)
            mask = np.zeros(design.split.size, dtype=bool)
            mask[used] = True
            t_rows = design.rows_of(design.targets, mask)
            o_rows = design.rows_of(design.others, mask)
            target_eff = mean_over(eff, t_rows)
            other_eff = mean_over(eff, o_rows)
            stats = {
                "target_effect": target_eff,
                "selectivity": target_eff - other_eff,
            }
            if readout == "probe":
                stats["target_bias"] = target_bias(res.outcome, probe_base, design, driving)
            welch = welch_greater(eff[0, t_rows], eff[0, o_rows])
            for name, vals in stats.items():
                for kind in [k for k in CONTROL_KINDS if k in set(kinds)] or ["none"]:
                    ctrl = vals[1:][kinds == kind] if kind != "none" else np.array([])
                    rows.append(
                        {
                            "dose": res.dose,
                            "readout": readout,
                            "statistic": name,
                            "target_conditions": ",".join(design.targets),
                            "other_conditions": ",".join(design.others),
                            "target_value": float(vals[0]),
                            "on_target_conditions": float(target_eff[0]),
                            "on_other_conditions": float(other_eff[0]),
                            "control": kind,
                            "n_controls": int(np.isfinite(ctrl).sum()),
                            "control_mean": float(np.nanmean(ctrl)) if ctrl.size else np.nan,
                            "control_sd": float(np.nanstd(ctrl, ddof=1))
                            if np.isfinite(ctrl).sum() > 1
                            else np.nan,
                            "control_max": float(np.nanmax(ctrl)) if ctrl.size else np.nan,
                            "p_permutation": permutation_p(float(vals[0]), ctrl),
                            "effect_size_z": effect_size_z(float(vals[0]), ctrl),
                            "welch_t_target_vs_others": welch[0],
                            "welch_p_target_vs_others": welch[1],
                            "cohens_d_target_vs_others": welch[2],
                        }
                    )
    return pd.DataFrame(rows)


def targets_table(sheet: Sheet, doses: Sequence[DoseResult]) -> pd.DataFrame:
    """``targets.csv``: one row per (dose, targeted unit) with its place, weight and value."""
    frames = []
    for res in doses:
        u = res.target.units
        frames.append(
            pd.DataFrame(
                {
                    "dose": res.dose,
                    "unit": u,
                    "area": np.asarray(sheet.area_names, dtype=object)[sheet.area[u]],
                    "row": sheet.row[u],
                    "col": sheet.col[u],
                    "x_mm": sheet.x_mm[u],
                    "y_mm": sheet.y_mm[u],
                    "weight": res.target.weights,
                    "value": res.values,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def build_report(
    sheet: Sheet,
    t: np.ndarray,
    doses: Sequence[DoseResult],
    effects: pd.DataFrame,
    stats: pd.DataFrame,
    readouts: Sequence[str],
    summary: Mapping[str, Any],
    notes: Sequence[str],
):
    """report.html: summary, dose-response plots, the targeted units on the sheet, tables."""
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_lines, plot_sheet_map

    rep = Report(
        f"Intervention: {summary['mode']} of {summary['target']}",
        subtitle=str(summary.get("model")),
    )
    rep.add_section("Summary")
    rep.add_key_values(summary)
    for note in notes:
        rep.add_note(note, "warning")
    rep.add_section(
        "Dose-response",
        "Effect on the target condition(s) of the targeted units and of the control draws "
        "(mean ± SD over draws); then the target intervention's change per condition.",
    )
    for readout in readouts:
        sub = stats[(stats["readout"] == readout) & (stats["statistic"] == "target_effect")].copy()
        if sub.empty:
            continue
        lines = [
            {"dose": r.dose, "intervention": "target", "effect": r.target_value, "sd": np.nan}
            for r in sub.drop_duplicates("dose").itertuples()
        ]
        for r in sub[sub["control"] != "none"].itertuples():
            lines.append(
                {
                    "dose": r.dose,
                    "intervention": f"{r.control} control",
                    "effect": r.control_mean,
                    "sd": r.control_sd,
                }
            )
        df = pd.DataFrame(lines)
        xlabel = "spread (mm)" if summary["mode"] == "stimulate" else "dose (% of units)"
        fig = plot_lines(
            df,
            "dose",
            "effect",
            hue="intervention",
            err="sd",
            title=f"{readout}: effect on {summary['target conditions']}",
            xlabel=xlabel,
            ylabel=EFFECT_LABELS[readout],
        )
        rep.add_figure(fig, f"{readout}: target vs control draws")
        main = {
            "fidelity": "fidelity_cosine",
            "lm-loss": "lm_loss",
            "probe": "probe_accuracy",
            "generation": "generation_agreement",
        }
        per_cond = effects[
            (effects["readout"] == main[readout]) & (effects["intervention"] == "target")
        ]
        if len(per_cond):
            fig = plot_lines(
                per_cond,
                "dose",
                "change",
                hue="condition",
                title=f"{readout}: change vs unperturbed, per condition",
                xlabel=xlabel,
                ylabel=f"change in {main[readout]}",
            )
            rep.add_figure(fig, f"{readout}: change per condition (target intervention)")
    rep.add_section("Targeted units on the sheet")
    last = doses[-1]
    labels = np.zeros(sheet.n_units, dtype=np.int64)
    dm = next((c for c in last.controls if c.kind == "distance-matched"), None)
    if dm is not None:
        labels[dm.selection.units] = 2
    labels[last.target.units] = 1
    caption = f"t map of the contrast; outlined: the targeted units at dose {last.dose:g} (1)" + (
        " and the first distance-matched control (2)" if dm is not None else ""
    )
    values = np.where(np.isfinite(t), t, np.nan)
    fig = plot_sheet_map(values, sheet, "targeted units", outline_labels=labels)
    rep.add_figure(fig, caption)
    rep.add_paragraph(
        "Hover a unit: its area, row/col, mm and t; 'cluster' 1 marks the targeted units at "
        f"dose {last.dose:g}"
        + (", 2 the first distance-matched control." if dm is not None else ".")
    )
    rep.add_sheet_viewer(sheet, [{"name": "contrast t", "t": values, "cluster": labels}])
    rep.add_section("Statistics")
    rep.add_paragraph(
        "p_permutation = (1 + #{control >= target}) / (n_controls + 1), or h / L when the "
        "sequential test (Besag & Clifford 1991) stopped at draw L once h draws reached the "
        "target (see p_method); effect_size_z = "
        "(target - mean(controls)) / sd(controls). target_effect: the effect on the target "
        "condition(s); selectivity: target minus other conditions; Welch t / Cohen's d compare "
        "per-stimulus effects of the target intervention on target vs other conditions."
    )
    rep.add_table(
        stats,
        "stats.csv",
        csv_name="stats.csv",
        first=["dose", "readout", "statistic", "control", "p_permutation", "effect_size_z"],
    )
    rep.add_table(
        effects[effects["intervention"].isin(["none", "target"])],
        "effects.csv (target rows)",
        csv_name="effects.csv",
    )
    return rep


def write_results(
    rf: Any,
    sheet: Sheet,
    t: np.ndarray,
    doses: Sequence[DoseResult],
    tables: Tables,
    readouts: Sequence[str],
    summary: Mapping[str, Any],
    notes: Sequence[str],
    *,
    parameters: Mapping[str, Any],
    inputs: Mapping[str, Any],
    seed: int,
    extra: Mapping[str, Any],
    started: float,
) -> None:
    """Write the tables, ``report.html`` and (last, so it lists them all) the manifest.

    Parameters
    ----------
    rf : ResultsFolder
        The open results folder.
    sheet : Sheet
    t : ndarray
        The contrast's t per unit (the report's sheet map).
    doses : sequence of DoseResult
    tables : Tables
    readouts : sequence of str
    summary : mapping
        The report's key values (``mode``, ``target``, ``target conditions``, ``model``, ...).
    notes : sequence of str
        Warnings for the report.
    parameters, inputs, seed, extra
        What the manifest records; ``extra`` gets the run's ``seconds`` appended.
    started : float
        ``time.perf_counter()`` at the start of the run.
    """
    rf.write_csv("effects.csv", tables.effects)
    rf.write_csv("controls.csv", tables.controls)
    rf.write_csv("stats.csv", tables.stats)
    rf.write_csv("targets.csv", targets_table(sheet, doses))
    report = build_report(sheet, t, doses, tables.effects, tables.stats, readouts, summary, notes)
    report.set_summary(summary_of_result(summary, tables.stats, notes))
    rf.write_report(report)
    elapsed = time.perf_counter() - started
    rf.write_manifest(
        "intervene",
        dict(parameters),
        dict(inputs),
        seed=seed,
        extra={**extra, "seconds": round(elapsed, 3)},
    )


STATS_SUMMARY_COLUMNS = (
    "dose",
    "readout",
    "statistic",
    "target_value",
    "control",
    "control_mean",
    "p_permutation",
    "effect_size_z",
)


def summary_of_result(
    summary: Mapping[str, Any], stats: pd.DataFrame, notes: Sequence[str] = ()
) -> dict[str, Any]:
    """What the run prints, as data (``summary.json``): the key values and the effect table."""
    from topocli.reporting.summary import summary_rows

    return {
        "run": dict(summary),
        "effects": summary_rows(stats, STATS_SUMMARY_COLUMNS),
        "notes": list(notes),
    }


def print_summary(stats: pd.DataFrame, console: Any) -> None:
    """A rich table of the target effects against the controls, fitting the console width."""
    from topocli.reporting.terminal import Column, fit_table

    def num(x: float, spec: str) -> str:
        return "—" if not np.isfinite(x) else format(x, spec)

    rows = [
        [
            f"{r.dose:g}",
            r.readout,
            r.statistic,
            f"{r.target_value:.4g}",
            r.control,
            num(r.control_mean, ".4g"),
            num(r.p_permutation, ".3g"),
            num(r.effect_size_z, ".2f"),
        ]
        for r in stats.itertuples()
    ]
    columns = [
        Column("dose", priority=0),
        Column("readout", "left", 0, name=True),
        Column("statistic", "left", 2, name=True),
        Column("target", priority=1),
        Column("control", "left", 0, name=True),
        Column("control mean", priority=3),
        Column("p", priority=0),
        Column("z", priority=1),
    ]
    console.print(
        fit_table(
            columns,
            rows,
            console.width,
            title="effect of the intervention vs controls (permutation p)",
            more="in stats.csv and summary.json",
        )
    )
