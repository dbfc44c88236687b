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
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import topo_smollm2_table as text  # noqa: E402  (the text step's own readers)

BEGIN, END = "<!-- findings table -->", "<!-- end findings table -->"
VISUAL = ("faces", "bodies", "scenes", "words", "objects")
NOT = "not measured"


def curve_pair(ckpt: Path) -> tuple[str, str]:
    """Held-out correlation vs distance after training, and before it (W = I + 1e-3 noise:
    the control up to that noise), from the curves ``topo train`` writes."""
    return (
        text.curve_at(ckpt / "corr_vs_distance_after.csv"),
        text.curve_at(ckpt / "corr_vs_distance_before.csv") + " (before training, W ~ I)",
    )


def control_rows(folder: Path) -> pd.DataFrame | None:
    path = folder / "control.csv"
    return pd.read_csv(path).set_index("contrast") if path.is_file() else None


def islands(c: pd.DataFrame | None, contrast: str) -> tuple[str, str]:
    """Island and map Moran's I, trained and control, of one contrast of a ``control.csv``."""
    if c is None or contrast not in c.index:
        return NOT, NOT
    cols = text.island_columns(c.loc[contrast])
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
        f"{r['map_moran_i_difference_z']:.1f}, p {text.pval(r['map_moran_i_difference_p'])}; "
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
    tt, tv, ta = text.times(text_dir), text.times(vision), text.times(audio)
    c_text = text.control_row(text_dir)
    tcols = text.island_columns(c_text)
    rows = [
        (
            "1. text: corr vs distance (held-out corpus)",
            text.curve_at(text_dir / "curve_trained.csv"),
            text.curve_at(text_dir / "curve_control.csv"),
            "falls with distance on trained, flat on control",
            "`bench/topo_smollm2.sh` (topo train --model smollm2 ...)",
            text.wall(tt, "train"),
        ),
        (
            "1. text: island / map Moran's I, sentences-nonwords, FWHM 0",
            f"island {tcols['isl_t']}; map {tcols['moran_t']}",
            f"island {tcols['isl_c']}; map {tcols['moran_c']}",
            "island ratio >= 2 (Topo-Omni voice 0.575 vs 0.235)",
            "`topo localize --model smollm2-topo -l language --control`",
            text.wall(tt, "localize"),
        ),
        (
            "2. language: ablate the top 1% sentences>nonwords units, next-token loss, "
            "100 random controls",
            text.ablation(text_dir / "abl-1pct-100"),
            "at 20 controls: see the next row",
            "AlKhamissi et al.: top 1% collapses language, random does not (p < 0.01)",
            "`topo intervene --from loc --contrast sentences-nonwords --mode ablate "
            "--dose 1 --readout lm-loss --controls random --n-controls 100`",
            text.wall(tt, "intervene-loc-1pct-100"),
        ),
        (
            "2. language: doses 0.5% and 5% (trained), 0.5 / 1 / 5% (control), 20 controls",
            text.ablation(text_dir / "abl"),
            text.ablation(text_dir / "abl-control"),
            "as above",
            "`... --dose 0.5,5 --n-controls 20` (trained), `--dose 0.5,1,5` (control)",
            text.wall(tt, "intervene-loc") + " / " + text.wall(tt, "intervene-loc-control"),
        ),
    ]
    rows.append(
        (
            "5. text: EMFL text fROI profiles vs human (spoken conditions' text versions)",
            *human_r(text_dir / "compare-loc-emfl"),
            "model fROI profiles correlate with the human ones",
            "`topo localize --model smollm2-topo -l emfl_text --control`; `topo compare --from "
            "loc-emfl loc-emfl-control --human-profiles ... --condition-map emfl_text`",
            text.wall(tt, "compare-text"),
        )
    )
    ckpt = vision / "efficientnet-lite0-topo"
    rows.append(
        (
            "1. vision: corr vs distance (held-out training images)",
            *curve_pair(ckpt),
            "falls with distance on trained, flat on control",
            "`bench/topo_sensory.sh vision` (topo train --model efficientnet-lite0 ...)",
            text.wall(tv, "train"),
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
                text.wall(tv, "localize"),
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
            text.wall(tv, "screen"),
        )
    )
    rows.append(
        (
            "5. vision: fROI profiles vs human EMFL fROIs",
            *human_r(vision / "compare-loc"),
            "model fROI profiles correlate with the human ones",
            "`topo compare --from loc loc-control --human-profiles "
            "emfl_human_froi_responses.csv`",
            text.wall(tv, "compare-loc"),
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
            text.wall(ta, "train"),
        ),
        (
            "1/4. audio: vocal > non-vocal islands, FWHM 0",
            *islands(c_voice, "vocal-non_vocal"),
            "Topo-Omni voice islands 0.575 +- 0.042 vs 0.235 +- 0.012 (ratio 2.4)",
            "`topo localize --model whisper-tiny-topo -l voice --control`",
            text.wall(ta, "localize"),
        ),
        (
            "4. audio: tonotopy",
            *tonotopy(c_tono),
            "a smooth preferred-frequency map (trained > control)",
            "`topo localize --model whisper-tiny-topo -l tonotopy --control`",
            text.wall(ta, "localize-tonotopy"),
        ),
        (
            "5. audio: spoken EMFL fROI profiles vs human",
            *human_r(audio / "compare-loc-emfl"),
            "model fROI profiles correlate with the human ones",
            "`topo compare --from loc-emfl loc-emfl-control --human-profiles ...`",
            text.wall(ta, "compare-loc-emfl"),
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
