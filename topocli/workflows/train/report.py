"""Report of ``topo train``: loss curves and correlation vs distance beside the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_train_report(
    out: Path, log: list[dict], curves: dict[str, pd.DataFrame], summary: dict
) -> None:
    """report.html beside the checkpoint: loss curves and correlation vs distance.

    Also writes the report's figures as ``figures/*.png`` / ``*.svg`` and the printed summary
    as ``summary.json``, as every command's results folder has them.
    """
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_lines
    from topocli.reporting.results import (
        SUMMARY,
        atomic_write_bytes,
        atomic_write_text,
        json_dumps,
        summary_payload,
    )

    report = Report("topo train", subtitle=str(out))
    report.add_section("Summary")
    report.add_key_values(summary)
    df = pd.DataFrame(log)
    if not df.empty:
        long = df.melt(
            id_vars="step",
            value_vars=["task_loss", "spatial_loss"],
            var_name="loss",
            value_name="value",
        )
        report.add_section("Losses")
        report.add_figure(
            plot_lines(long, x="step", y="value", hue="loss", title="training losses"),
            caption="Task and spatial loss per step.",
        )
    if curves:
        frames = [c.assign(when=name) for name, c in curves.items()]
        both = pd.concat(frames, ignore_index=True)
        report.add_section("Correlation vs distance (held-out stimuli)")
        report.add_figure(
            plot_lines(
                both,
                x="distance_mm",
                y="mean_r",
                hue="when",
                title="unit response correlation vs distance",
            ),
            caption="Topographic sheets: correlation falls with distance; untrained: flat.",
        )
        report.add_table(both, caption="Binned pairwise correlations")
    report.set_summary(summary)
    for rel, data in report.figure_files():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / rel, data)
    payload = summary_payload({"command": "train", "created": report.created}, summary)
    atomic_write_text(out / SUMMARY, json_dumps(payload))
    atomic_write_text(out / "report.html", report.render())
