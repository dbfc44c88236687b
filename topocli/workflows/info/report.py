"""Terminal summary, layout figure, report and results folder of ``topo info``."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Console

AREA_COLUMNS = ("area", "stream", "n_units", "rows", "cols", "row0", "col0", "x_mm", "y_mm")


# what stays when the console is narrow: lower numbers are kept longer
AREA_PRIORITY = {
    "area": 0,
    "n_units": 0,
    "rows": 1,
    "cols": 1,
    "stream": 2,
    "row0": 3,
    "col0": 3,
    "x_mm": 4,
    "y_mm": 4,
}


def print_summary(summary: dict, table: pd.DataFrame, console: Console) -> None:
    """The model summary as key: value lines, then the area table (fits the console)."""
    from topocli.reporting.terminal import Column, fit_table

    for key, value in summary.items():
        console.print(f"[bold]{key}:[/] {value}")
    columns = [
        Column(
            c,
            "left" if c in ("area", "stream") else "right",
            AREA_PRIORITY[c],
            name=c in ("area", "stream"),
        )
        for c in AREA_COLUMNS
    ]
    rows = [[str(r[c]) for c in AREA_COLUMNS] for _, r in table.iterrows()]
    console.print(
        fit_table(
            columns,
            rows,
            console.width,
            title="areas (top to bottom on the sheet)",
            more="in areas.csv",
        )
    )


def write_info_results(ctx: Any, model: Any, summary: dict, table: pd.DataFrame) -> None:
    """``layout.png``, ``areas.csv``, ``report.html`` and ``manifest.json`` in ``ctx.out``."""
    from topocli.models.checkpoint import model_identity
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_layout
    from topocli.reporting.results import ResultsFolder

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
        report.set_summary({**summary, "areas": table.to_dict(orient="records")})
        rf.write_report(report)
        rf.write_manifest(
            "info",
            {"model": ctx.model_spec, "device": ctx.device_name},
            {},
            seed=ctx.seed,
            extra={"model": model_identity(model)},
        )
