#!/usr/bin/env bash
# Measure the shipped learned models on held-out tracks (the figures in docs/models.md).
#
#   bash scripts/get_training_data.sh                 # the music (Debian packages), into data/
#   bash scripts/evaluate_models.sh [RUN_DIR]         # RUN_DIR: a training run with split.json
#
# 1. cuts 8 s excerpts from the run's held-out test tracks (split by track, never by excerpt),
# 2. `restorekit compare` of the U-Net against the lowres-8k-degraded input, with 95 % CIs,
# 3. Spearman correlation of the quality estimator (cqs) with ViSQOL on the held-out
#    excerpts degraded by several presets.
set -euo pipefail
RUN=${1:-runs/unet-c8}
OUT=${OUT:-docs/results}
python scripts/make_heldout_set.py "$RUN/split.json" data/heldout --excerpts 3 --seconds 8
# the shipped U-Net (v3) in float32 and bfloat16, and earlier checkpoints where they exist
PREVIOUS=${PREVIOUS:-"unet-v1=runs/unet-v1/best.safetensors unet-v2=runs/unet-v2/best.safetensors"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pipelines=()
for entry in $PREVIOUS; do
  name=${entry%%=*} ckpt=${entry#*=}
  [[ -f "$ckpt" ]] || continue
  sed -e "s/^name: unet$/name: $name/" -e "s#checkpoint: unet,#checkpoint: $ckpt,#" pipelines/unet.yaml > "$tmp/$name.yaml"
  pipelines+=("$tmp/$name.yaml")
done
sed -e 's/^name: unet$/name: unet-v3/' pipelines/unet.yaml > "$tmp/unet-v3.yaml"
sed -e 's/^name: unet$/name: unet-v3-bf16/' -e 's/batch_size: 8}/batch_size: 8, precision: bfloat16}/' \
  pipelines/unet.yaml > "$tmp/unet-v3-bf16.yaml"
pipelines+=("$tmp/unet-v3.yaml" "$tmp/unet-v3-bf16.yaml")
restorekit -q compare "${pipelines[@]}" --clean data/heldout --degrade lowres-8k \
  -m lsd -m si_sdr -m snr -m mel_l1 -m visqol -o "$OUT/unet-lowres-8k"
python scripts/evaluate_cqs.py data/heldout --presets lowres-8k generative-mix gaps \
  --json "$OUT/cqs-spearman.json"
