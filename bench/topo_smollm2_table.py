"""Findings 1 and 2 on text (issue 17) from the folders bench/topo_smollm2.sh wrote.

    python bench/topo_smollm2_table.py WORKDIR

Prints a Markdown table (finding, trained, control, anchor figure, command, run time) read
from the CSVs topo wrote: the held-out curves of bench/topo_smollm2_curve.py (trained and
identity-adaptor control, ``curve_{trained,control}.csv``),
the localizer's ``control.csv`` and the interventions' ``stats.csv``. A folder that is missing
is reported as not measured, never filled in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

CONTRAST = "sentences-nonwords"


def times(work: Path) -> dict[str, int]:
    """Step name -> wall seconds (the last run of each step counts)."""
    path = work / "times.tsv"
    if not path.is_file():
        return {}
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return {name: int(sec) for name, sec in rows}


def wall(t: dict[str, int], *names: str) -> str:
    """``12.3 min`` for the named steps together, ``-`` when one is missing."""
    if not all(n in t for n in names):
        return "-"
    return f"{sum(t[n] for n in names) / 60:.1f} min"


def curve_at(path: Path, mm: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0)) -> str:
    """``r(1 mm) 0.12, r(5 mm) ...`` from a correlation-vs-distance CSV."""
    if not path.is_file():
        return "not measured"
    c = pd.read_csv(path).dropna(subset=["mean_r"])
    parts = []
    for d in mm:
        row = c.iloc[(c["distance_mm"] - d).abs().argmin()]
        parts.append(f"r({row['distance_mm']:g} mm) {row['mean_r']:.3f}")
    return ", ".join(parts)


def pval(p: float) -> str:
    """``3.2e-05``; ``< 1e-15`` where the float underflowed to 0."""
    return "< 1e-15" if p < 1e-15 else f"{p:.2g}"


def control_row(work: Path, folder: str = "loc") -> pd.Series | None:
    """The primary contrast's row of ``FOLDER/control.csv``."""
    path = work / folder / "control.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame.set_index("contrast").loc[CONTRAST]


def ablation(folder: Path) -> str:
    """Per dose: loss increase on sentences / nonwords, random-control mean, permutation p."""
    path = folder / "stats.csv"
    if not path.is_file():
        return "not measured"
    s = pd.read_csv(path)
    s = s[(s["readout"] == "lm-loss") & (s["control"] == "random")]
    parts = []
    for dose, g in s.groupby("dose", sort=True):
        eff = g[g["statistic"] == "target_effect"].iloc[0]
        sel = g[g["statistic"] == "selectivity"].iloc[0]
        parts.append(
            f"{dose:g}%: +{eff['on_target_conditions']:.3f} sent / "
            f"+{eff['on_other_conditions']:.3f} nonw nats/token, random "
            f"{eff['control_mean']:.3f} (max {eff['control_max']:.3f}, n={eff['n_controls']}), "
            f"p {eff['p_permutation']:.3g}; selectivity p {sel['p_permutation']:.3g}"
        )
    return "<br>".join(parts)


def island_columns(c: pd.Series | None) -> dict[str, str]:
    """Map and island Moran's I cells, trained and control, from a ``control.csv`` row."""
    cols = dict.fromkeys(("moran_t", "moran_c", "isl_t", "isl_c"), "not measured")
    if c is None:
        return cols
    ctl = c["island_moran_i_control"]
    ratio = (
        f"ratio {c['island_moran_i_trained'] / ctl:.2f}" if ctl > 0 else "no ratio: control <= 0"
    )
    return {
        "moran_t": f"{c['map_moran_i_trained']:.3f} (difference z "
        f"{c['map_moran_i_difference_z']:.1f}, p {pval(c['map_moran_i_difference_p'])})",
        "moran_c": f"{c['map_moran_i_control']:.3f}",
        "isl_t": f"{c['island_moran_i_trained']:.3f} ({ratio}; "
        f"{int(c['n_significant_trained'])} significant units)",
        "isl_c": f"{c['island_moran_i_control']:.3f} "
        f"({int(c['n_significant_control'])} significant units)",
    }


def table(work: Path) -> str:
    """The Markdown table of findings 1 and 2."""
    t = times(work)
    c = control_row(work)
    cols = island_columns(c)
    q001 = island_columns(control_row(work, "loc-q001"))
    rows = [
        (
            "1a. corr vs distance (held-out corpus, 100 sentences)",
            curve_at(work / "curve_trained.csv"),
            curve_at(work / "curve_control.csv"),
            "falls with distance on trained, flat on control",
            "`topo train --model smollm2 ...` (bench/topo_smollm2.sh step 1)",
            wall(t, "train"),
        ),
        (
            "1b. map Moran's I, sentences>nonwords, FWHM 0",
            cols["moran_t"],
            cols["moran_c"],
            "-",
            "`topo localize --model CKPT -l language --control`",
            wall(t, "localize"),
        ),
        (
            "1c. island Moran's I, FWHM 0, q 0.05",
            cols["isl_t"],
            cols["isl_c"],
            "Topo-Omni voice 0.575 vs 0.235, ratio 2.4 (>= 2)",
            "same run, `control.csv`",
            wall(t, "localize"),
        ),
        (
            "1c (experiment). island Moran's I at q 0.001",
            q001["isl_t"],
            q001["isl_c"],
            "as 1c",
            "`topo localize ... --control --q 0.001`",
            wall(t, "localize-q001"),
        ),
        (
            "2. ablate top sentences>nonwords units, next-token loss",
            ablation(work / "abl"),
            ablation(work / "abl-control"),
            "AlKhamissi et al.: top 1% collapses language, random does not; p < 0.01 "
            "(100 controls)",
            "`topo intervene --from loc --contrast sentences-nonwords --mode ablate "
            "--dose 0.5,1,5 --readout lm-loss --controls random`",
            wall(t, "intervene-loc") + " / " + wall(t, "intervene-loc-control"),
        ),
        (
            "2 (100 controls). the same at 5% only",
            ablation(work / "abl-5pct-100"),
            "not measured",
            "as 2",
            "`... --dose 5 --n-controls 100`",
            wall(t, "intervene-loc-5pct-100"),
        ),
    ]
    head = "| finding | trained | control | anchor | command | run time |\n" + "|---" * 6 + "|"
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "out/topo_smollm2")))
