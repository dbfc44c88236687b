#!/usr/bin/env bash
# Trained vs control topography on the shipped default, at FWHM 0 and at a display FWHM of 8 mm.
# Every topography column is measured on the unsmoothed map; only detection (significant units,
# clusters at the display FWHM) changes with --fwhm-mm. Prints one CSV table.
#   bash bench/topography_table.sh [OUT_DIR]
set -euo pipefail
out=${1:-$(mktemp -d)}
for loc in language tom md; do
  for model in minilm minilm-control; do
    for fwhm in 0 8; do
      topo localize -l "$loc" -m "$model" --fwhm-mm "$fwhm" --quiet --overwrite \
        --out "$out/$loc-$model-$fwhm" 2>/dev/null
    done
  done
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
rows = []
for folder in sorted(Path(sys.argv[1]).iterdir()):
    m = json.loads((folder / "manifest.json").read_text())
    for s in m["extra"]["summary"]:
        rows.append([folder.name.rsplit("-", 1)[0].split("-", 1)[1], m["parameters"]["localizer"],
                     m["parameters"]["fwhm_mm"], s["n_significant"], s["n_clusters"],
                     s["mean_moran_i"], s["island_moran_i_unsmoothed"],
                     s["map_moran_i_unsmoothed"], s["join_count_z_unsmoothed"],
                     s["n_clusters_unsmoothed"], s["n_clusters_random_placement"]])
print("model,localizer,display_fwhm_mm,significant_at_display,clusters_at_display,"
      "island_I_at_display,island_I_unsmoothed,map_moran_I_unsmoothed,join_count_z_unsmoothed,"
      "clusters_unsmoothed,clusters_random_placement")
for r in sorted(rows, key=lambda r: (r[1], r[0], r[2])):
    print(",".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r))
PY
