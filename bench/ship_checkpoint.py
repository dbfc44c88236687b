"""Copy a trained checkpoint into the package as a shipped model (``topocli/data/NAME``).

    python bench/ship_checkpoint.py CHECKPOINT NAME "RECIPE COMMAND"

Copies only what loading and reading it need (``topo.json``, ``adaptors.safetensors``,
``sheet.safetensors``, ``train_log.csv``, the held-out curves and ``report.html``; never the
optimizer state) and writes a README from its ``topo.json``: base model, areas, sheet, the
training settings and the command that reproduces it. The checkpoint loads only if its base
weights match the sha256 it records.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

SHIPPED_FILES = (
    "topo.json",
    "adaptors.safetensors",
    "sheet.safetensors",
    "train_log.csv",
    "corr_vs_distance_before.csv",
    "corr_vs_distance_after.csv",
    "report.html",
)
DATA = Path(__file__).resolve().parents[1] / "topocli" / "data"


def readme(name: str, meta: dict, recipe: str) -> str:
    t = meta.get("training") or {}
    extra = t.get("extra") or {}
    sheet = meta["sheet"]
    units = sum(a["n_units"] for a in sheet["areas"])
    rows = max(a["row0"] + a["rows"] for a in sheet["areas"])
    cols = max(a["col0"] + a["cols"] for a in sheet["areas"])
    base = str(meta["base_model"]).removeprefix("package:")
    return f"""# The shipped topographic model `--model {name}`

The packaged backbone `{base}` (`topo models` names its pip package; its weights are checked
by sha256 `{str(meta["weights_sha256"])[:16]}...` on load) with trained cortical adaptors
(`{meta["mode"]}` mode: Z = X W per area, X passed on) on {len(meta["areas"])} areas:
{", ".join(f"`{a}`" for a in meta["areas"])} ({units} units on a {extra.get("layout", "")} sheet of
{rows} x {cols} units, {extra.get("mm_per_unit", 1.0):g} mm per unit). Its control is
`--model {name}-control`: the same base, areas and sheet with identity adaptors.

Training: spatial loss alpha {t.get("alpha")}, radius {t.get("radius_mm")} mm,
{t.get("neighbourhoods")} neighbourhoods per step, {t.get("step")} of {t.get("steps")} steps of
{t.get("batch_size")} stimuli, AdamW lr {t.get("lr")}, {t.get("warmup")} warm-up steps, seed
{t.get("seed")}; training data sha256 `{str(t.get("data_hash"))[:16]}...`. Reproduced by:

    {recipe}

`train_log.csv`, `corr_vs_distance_*.csv` (held-out correlation of unit responses against
distance on the sheet, before and after training) and `report.html` are that run's own outputs.
`docs/findings.md` says what it reproduces and what it does not.
"""


def ship(src: Path, name: str, recipe: str) -> Path:
    meta = json.loads((src / "topo.json").read_text())
    out = DATA / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in SHIPPED_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, out / f)
    (out / "README.md").write_text(readme(name, meta, recipe), encoding="utf-8")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.splitlines()[2].strip())
    folder = ship(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"{folder}: {size:.1f} MB")
