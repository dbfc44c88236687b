"""The table of issue 17's five findings, from the folders the bench scripts wrote.

    python bench/findings.py [--text DIR] [--vision DIR] [--audio DIR] [--write docs/findings.md]

Reads what ``bench/topo_smollm2.sh`` (text, default ``out/topo_smollm2``) and
``bench/topo_sensory.sh vision|audio`` (``out/topo_vision``, ``out/topo_audio``) wrote: the
training curves, the localizers' ``control.csv`` (trained vs identity-adaptor control on the
unsmoothed maps), ``anova_topography.csv``, the screen's ``categories.csv``, compare's
``metrics.csv`` and every step's wall time (``times.tsv``). Prints one Markdown table (finding,
trained, control, anchor figure, command, run time); ``--write FILE`` replaces the text between
the ``<!-- findings table -->`` markers of FILE with it. A folder that is missing is reported as
not measured, never filled in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

BEGIN, END = "<!-- findings table -->", "<!-- end findings table -->"
VISUAL = ("faces", "bodies", "scenes", "words", "objects")
NOT = "not measured"
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


def curve_pair(ckpt: Path) -> tuple[str, str]:
    """Held-out correlation vs distance after training, and before it (W = I + 1e-3 noise:
    the control up to that noise), from the curves ``topo train`` writes."""
    return (
        curve_at(ckpt / "corr_vs_distance_after.csv"),
        curve_at(ckpt / "corr_vs_distance_before.csv") + " (before training, W ~ I)",
    )


def control_rows(folder: Path) -> pd.DataFrame | None:
    path = folder / "control.csv"
    return pd.read_csv(path).set_index("contrast") if path.is_file() else None


def islands(c: pd.DataFrame | None, contrast: str) -> tuple[str, str]:
    """Island and map Moran's I, trained and control, of one contrast of a ``control.csv``."""
    if c is None or contrast not in c.index:
        return NOT, NOT
    cols = island_columns(c.loc[contrast])
    return (
        f"island {cols['isl_t']}; map {cols['moran_t']}",
        f"island {cols['isl_c']}; map {cols['moran_c']}",
    )


def tonotopy(c: pd.DataFrame | None) -> tuple[str, str]:
    if c is None or "anova:preferred" not in c.index:
        return NOT, NOT
    r = c.loc["anova:preferred"]
    return (
        f"Moran's I of the preferred-frequency map {r['map_moran_i_trained']:.3f} (difference z "
        f"{r['map_moran_i_difference_z']:.1f}, p {pval(r['map_moran_i_difference_p'])}; "
        f"{int(r['n_significant_trained'])} units with a significant F)",
        f"{r['map_moran_i_control']:.3f} ({int(r['n_significant_control'])} significant F)",
    )


def screen_ranks(folder: Path, watch: tuple[str, ...] = ("landscapes", "animals")) -> str:
    """Categories in rank order: significant units, clusters, novelty against the known
    localizers' clusters beside its value under random placement of as many units."""
    path = folder / "categories.csv"
    if not path.is_file():
        return NOT
    cats = pd.read_csv(path).sort_values("rank")
    parts = []
    for _, r in cats.iterrows():
        name = f"**{r['category']}**" if r["category"] in watch else str(r["category"])
        parts.append(
            f"{int(r['rank'])}. {name} {int(r['n_significant_units'])} units, "
            f"{int(r['n_clusters'])} clusters, novelty {r['novelty']:.2f} (random "
            f"{r['novelty_random_placement']:.2f}; nearest {r['best_known_match']})"
        )
    return "<br>".join(parts)


def screen_control(folder: Path) -> str:
    """Per category: significant units and map Moran's I on the control, from control.csv."""
    path = folder / "control.csv"
    if not path.is_file():
        return NOT
    c = pd.read_csv(path)
    return "<br>".join(
        f"{r['category']} {int(r['n_significant_control'])} units, map I "
        f"{r['map_moran_i_control']:.3f} (trained {r['map_moran_i_trained']:.3f}, z "
        f"{r['map_moran_i_difference_z']:.1f})"
        for _, r in c.iterrows()
    )


def human_r(folder: Path) -> tuple[str, str]:
    """Per contrast: mean Pearson r over areas of the model fROI's condition profile with the
    human fROI category's (range of the permutation p), trained and control."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return NOT, NOT
    m = pd.read_csv(path)
    m = m[m["metric"] == "pearson_r"].copy()
    m["contrast"] = m["model_froi"].astype(str).str.split("@").str[0]
    out = []
    for is_control in (False, True):
        rows = m[m["model"].astype(str).str.endswith("control") == is_control]
        if rows.empty:
            out.append(NOT)
            continue
        per = "; ".join(
            f"{name}->{g['human_froi'].iloc[0]} r {g['value'].mean():.2f} "
            f"(p {g['p_value'].min():.2f}-{g['p_value'].max():.2f}, {len(g)} areas)"
            for name, g in rows.groupby("contrast", sort=False)
        )
        out.append(f"mean r {rows['value'].mean():.2f}: {per}")
    return out[0], out[1]


def table(text_dir: Path, vision: Path, audio: Path) -> str:
    tt, tv, ta = times(text_dir), times(vision), times(audio)
    rows = [
        (
            "1. text: corr vs distance (held-out corpus)",
            curve_at(text_dir / "curve_trained.csv"),
            curve_at(text_dir / "curve_control.csv"),
            "falls with distance on trained, flat on control",
            "`bench/topo_smollm2.sh` (topo train --model smollm2 ...)",
            wall(tt, "train"),
        ),
        (
            "1. text: island / map Moran's I, sentences-nonwords, FWHM 0",
            *islands(control_rows(text_dir / "loc"), CONTRAST),
            "island ratio >= 2 (Topo-Omni voice 0.575 vs 0.235)",
            "`topo localize --model smollm2-topo -l language --control`",
            wall(tt, "localize"),
        ),
        (
            "2. language: ablate the top 1% sentences>nonwords units, next-token loss, "
            "100 random controls",
            ablation(text_dir / "abl-1pct-100"),
            "at 20 controls: see the next row",
            "AlKhamissi et al.: top 1% collapses language, random does not (p < 0.01)",
            "`topo intervene --from loc --contrast sentences-nonwords --mode ablate "
            "--dose 1 --readout lm-loss --controls random --n-controls 100`",
            wall(tt, "intervene-loc-1pct-100"),
        ),
        (
            "2. language: doses 0.5% and 5% (trained), 0.5 / 1 / 5% (control), 20 controls",
            ablation(text_dir / "abl"),
            ablation(text_dir / "abl-control"),
            "as above",
            "`... --dose 0.5,5 --n-controls 20` (trained), `--dose 0.5,1,5` (control)",
            wall(tt, "intervene-loc") + " / " + wall(tt, "intervene-loc-control"),
        ),
    ]
    rows.append(
        (
            "5. text: EMFL text fROI profiles vs human (spoken conditions' text versions)",
            *human_r(text_dir / "compare-loc-emfl"),
            "model fROI profiles correlate with the human ones",
            "`topo localize --model smollm2-topo -l emfl_text --control`; `topo compare --from "
            "loc-emfl loc-emfl-control --human-profiles ... --condition-map emfl_text`",
            wall(tt, "compare-text"),
        )
    )
    ckpt = vision / "efficientnet-lite0-topo"
    rows.append(
        (
            "1. vision: corr vs distance (held-out training images)",
            *curve_pair(ckpt),
            "falls with distance on trained, flat on control",
            "`bench/topo_sensory.sh vision` (topo train --model efficientnet-lite0 ...)",
            wall(tv, "train"),
        )
    )
    c_vis = control_rows(vision / "loc")
    for contrast in VISUAL:
        rows.append(
            (
                f"1/3. vision: {contrast} (q 0.001), FWHM 0",
                *islands(c_vis, contrast),
                "face, body, scene, word clusters; island ratio >= 2",
                "`topo localize --model efficientnet-lite0-topo -l emfl_visual --control`",
                wall(tv, "localize"),
            )
        )
    rows.append(
        (
            "3. vision: screen of categories-visual (rank order)",
            screen_ranks(vision / "screen"),
            screen_control(vision / "screen"),
            "Topo-Omni: new landscape and animal networks",
            "`topo screen --model efficientnet-lite0-topo --stimuli categories-visual/ "
            "--from loc --control`",
            wall(tv, "screen"),
        )
    )
    rows.append(
        (
            "5. vision: fROI profiles vs human EMFL fROIs",
            *human_r(vision / "compare-loc"),
            "model fROI profiles correlate with the human ones",
            "`topo compare --from loc loc-control --human-profiles "
            "emfl_human_froi_responses.csv`",
            wall(tv, "compare-loc"),
        )
    )
    ckpt = audio / "whisper-tiny-topo"
    c_voice = control_rows(audio / "loc")
    c_tono = control_rows(audio / "loc-tonotopy")
    rows += [
        (
            "1. audio: corr vs distance (held-out training sounds)",
            *curve_pair(ckpt),
            "falls with distance on trained, flat on control",
            "`bench/topo_sensory.sh audio` (topo train --model whisper-tiny ...)",
            wall(ta, "train"),
        ),
        (
            "1/4. audio: vocal > non-vocal islands, FWHM 0",
            *islands(c_voice, "vocal-non_vocal"),
            "Topo-Omni voice islands 0.575 +- 0.042 vs 0.235 +- 0.012 (ratio 2.4)",
            "`topo localize --model whisper-tiny-topo -l voice --control`",
            wall(ta, "localize"),
        ),
        (
            "4. audio: tonotopy",
            *tonotopy(c_tono),
            "a smooth preferred-frequency map (trained > control)",
            "`topo localize --model whisper-tiny-topo -l tonotopy --control`",
            wall(ta, "localize-tonotopy"),
        ),
        (
            "5. audio: spoken EMFL fROI profiles vs human",
            *human_r(audio / "compare-loc-emfl"),
            "model fROI profiles correlate with the human ones",
            "`topo compare --from loc-emfl loc-emfl-control --human-profiles ...`",
            wall(ta, "compare-loc-emfl"),
        ),
    ]
    head = "| finding | trained | control | anchor | command | run time |\n" + "|---" * 6 + "|"
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def write_between_markers(path: Path, body: str) -> None:
    doc = path.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to replace")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=Path, default=Path("out/topo_smollm2"))
    ap.add_argument("--vision", type=Path, default=Path("out/topo_vision"))
    ap.add_argument("--audio", type=Path, default=Path("out/topo_audio"))
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args(argv)
    body = table(args.text, args.vision, args.audio)
    if args.write is not None:
        write_between_markers(args.write, body)
    print(body)


if __name__ == "__main__":
    main()
