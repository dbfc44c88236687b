"""``topo info``: what a model records and where each area sits on the sheet."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

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
    from topocli.workflows.info.report import print_summary, write_info_results

    model = ctx.load_model()
    summary = model_summary(model)
    table = area_table(model)
    if not ctx.quiet:
        print_summary(summary, table, out_console)
    if ctx.out is None:
        return
    write_info_results(ctx, model, summary, table)
    if not ctx.quiet:
        out_console.print(f"wrote {ctx.out}/layout.png")
