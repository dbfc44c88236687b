"""Report of ``topo smooth``: every map before and after smoothing."""

from __future__ import annotations

import math

import numpy as np


def build_report(jobs, smoothed, sheet, fwhm, across_areas, input_path, manifest):
    """The report of a smooth run: settings, then each map before and after.

    Its summary (``summary.json``) names the input, the FWHM and the maps smoothed; the
    results folder it was made from is linked at the top (from the manifest's input).
    """
    from topocli.reporting.html import Report
    from topocli.reporting.plotting import plot_sheet_maps

    rep = Report(
        f"topo smooth: FWHM {fwhm:g} mm",
        subtitle=f"from {input_path} (topo {manifest.get('command')})",
    )
    rep.add_section("Settings")
    rep.add_key_values(
        {
            "input": str(input_path),
            "source command": manifest.get("command"),
            "FWHM": f"{fwhm:g} mm (sigma {fwhm / math.sqrt(8 * math.log(2)):.3g} mm), "
            "truncated at 3 sigma",
            "region": "across the whole contiguous sheet"
            if across_areas
            else "within each area (nothing crosses an area border)",
            "sheet": f"{sheet.layout}, {sheet.grid_shape[0]} x {sheet.grid_shape[1]} units, "
            f"{sheet.mm_per_unit:g} mm per unit",
        }
    )
    for (rel, before, names, _), after in zip(jobs, smoothed, strict=True):
        rep.add_section(rel)
        for name, b, a in zip(names, before, after, strict=True):
            symmetric = bool(np.nanmin(b) < 0 < np.nanmax(b)) if np.isfinite(b).any() else True
            fig = plot_sheet_maps(
                [(b, f"{name}: before"), (a, f"{name}: FWHM {fwhm:g} mm")],
                sheet,
                ncols=2,
                cmap="RdBu_r" if symmetric else "viridis",
                symmetric=symmetric,
                shared_scale=False,
                colorbar_label=name,
            )
            rep.add_figure(fig, f"{name} before and after smoothing (each with its own scale).")
    rep.set_summary(
        {
            "input": str(input_path),
            "source_command": manifest.get("command"),
            "fwhm_mm": fwhm,
            "across_areas": bool(across_areas),
            "maps": {rel: list(names) for rel, _, names, _ in jobs},
        }
    )
    return rep
