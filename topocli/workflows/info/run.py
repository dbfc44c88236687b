"""``topo info``: what a model records and where each area sits on the sheet."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from topocli.models.topo_model import TopoModel


def area_table(model: TopoModel) -> pd.DataFrame:
    """One row per area: name, stream, units, grid box and its position in mm."""
    sheet = model.sheet
    mm = sheet.mm_per_unit
    rows = []
    for k, a in enumerate(sheet.areas):
        rows.append(
            {
                "area": a.name,
                "stream": a.stream,
                "n_units": a.n_units,
                "rows": a.rows,
                "cols": a.cols,
                "row0": a.row0,
                "col0": a.col0,
                "x_mm": a.col0 * mm,
                "y_mm": a.row0 * mm,
                "width_mm": a.cols * mm,
                "height_mm": a.rows * mm,
                "first_unit": int(sheet.area_offsets[k]),
            }
        )
    return pd.DataFrame(rows)


def model_summary(model: TopoModel) -> dict:
    sheet = model.sheet
    src = model.source
    return {
        "model": src.get("name") or src.get("checkpoint") or src.get("base_model"),
        "base model": src.get("base_model"),
        "model type": src.get("model_type"),
        "mode": model.mode,
        "topographic training": "yes" if src.get("training") else "no (untrained adaptors)",
        "modalities": ", ".join(sorted(model.modalities)) or "none",
        "areas": len(sheet.areas),
        "units": sheet.n_units,
        "sheet": f"{sheet.layout}, {sheet.grid_shape[0]} x {sheet.grid_shape[1]} units, "
        f"{sheet.mm_per_unit:g} mm per unit "
        f"({sheet.grid_shape[0] * sheet.mm_per_unit:g} x "
        f"{sheet.grid_shape[1] * sheet.mm_per_unit:g} mm)",
        "position permutation": "none"
        if sheet.permutation_seed is None
        else f"seed {sheet.permutation_seed}",
    }


def run_info(ctx, out_console: Console) -> None:
    """Print the summary and area table; with ``--out`` write a results folder with the PNG."""
    from topocli.reporting.results import ResultsFolder

    model = ctx.load_model()
    summary = model_summary(model)
    table = area_table(model)
    if not ctx.quiet:
        for key, value in summary.items():
            out_console.print(f"[bold]{key}:[/] {value}")
        t = Table(title="areas (top to bottom on the sheet)", show_lines=False)
        for col in ("area", "stream", "n_units", "rows", "cols", "row0", "col0", "x_mm", "y_mm"):
            t.add_column(col, justify="left" if col in ("area", "stream") else "right")
        for _, r in table.iterrows():
            t.add_row(
                *(
                    str(r[c])
                    for c in (
                        "area",
                        "stream",
                        "n_units",
                        "rows",
                        "cols",
                        "row0",
                        "col0",
                        "x_mm",
                        "y_mm",
                    )
                )
            )
        out_console.print(t)
    if ctx.out is None:
        return
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_layout

    with ResultsFolder(ctx.out, ctx.overwrite) as rf:
        fig = plot_layout(model.sheet, title="sheet layout")
        rf.save_figure("layout.png", fig)
        rf.write_csv("areas.csv", table)
        report = Report("topo info", subtitle=str(summary["model"]))
        report.add_section("Model")
        report.add_key_values(summary)
        report.add_section("Sheet layout")
        report.add_figure(fig, caption="Each area's box on the sheet, coloured by stream.")
        report.add_table(table, caption="Areas")
        rf.write_report(report)
        rf.write_manifest(
            "info",
            {"model": ctx.model_spec, "device": ctx.device_name},
            {},
            seed=ctx.seed,
            extra={"model": model_identity(model)},
        )
    if not ctx.quiet:
        out_console.print(f"wrote {ctx.out}/layout.png")
