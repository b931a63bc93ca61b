#!/usr/bin/env bash
# The U-Net and the CRNN (both modes) side by side on held-out tracks, for both presets
# (issue 7; figures in docs/models.md and docs/results/restorers/README.md).
#
#   bash scripts/get_training_data.sh                    # the music (Debian packages), into data/
#   python scripts/make_heldout_set.py runs/unet-v1/split.json data/heldout --excerpts 3 --seconds 8
#   bash scripts/evaluate_restorers.sh
#
# 1. mel-domain L1 / LSD / cosine of the CRNN's restored mel (both modes), before resynthesis,
# 2. `restorekit compare` of unet, crnn and crnn-direct against the degraded input for
#    `lowres-8k` and `generative-mix` (waveform LSD, SI-SDR, mel L1, mel cosine, ViSQOL),
# 3. one side-by-side table of both presets.
set -euo pipefail
HELDOUT=${HELDOUT:-data/heldout}
OUT=${OUT:-docs/results}
FIGURES=${FIGURES:-"David02_0_wav Deprecation_1_wav thunder_2_wav"}
python scripts/evaluate_crnn_mel.py "$HELDOUT" --checkpoints crnn crnn-direct \
  --presets generative-mix lowres-8k --out "$OUT/crnn-mel"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e 's/^name: crnn$/name: crnn-direct/' -e 's/checkpoint: crnn,/checkpoint: crnn-direct,/' \
  pipelines/crnn.yaml > "$tmp/crnn-direct.yaml"
for preset in lowres-8k generative-mix; do
  restorekit -q compare pipelines/unet.yaml pipelines/crnn.yaml "$tmp/crnn-direct.yaml" \
    --clean "$HELDOUT" --degrade "$preset" \
    -m lsd -m si_sdr -m mel_l1 -m mel_cosine -m visqol -o "$OUT/restorers/$preset"
done
# shellcheck disable=SC2086
python scripts/side_by_side.py "$OUT/restorers/README.md" "$OUT/restorers/lowres-8k" \
  "$OUT/restorers/generative-mix" --figures $FIGURES \
  --title "U-Net and CRNN side by side on held-out music" \
  --intro "$(find "$HELDOUT" -name '*.wav' | wc -l) excerpts of held-out tracks (split by track), each degraded by the preset and restored; every version measured against the clean excerpt. Δ = restored − degraded with its 95 % t-interval. Made by \`bash scripts/evaluate_restorers.sh\`; mel-domain figures of the CRNN's own output: [../crnn-mel/summary.md](../crnn-mel/summary.md). \`generative-mix\` leaves 15 % of clips clean (3 of the 36 here): their degraded SI-SDR is capped very high, so the SI-SDR means and intervals of that preset are dominated by those 3 clips; docs/models.md gives SI-SDR on the 33 degraded clips. The U-Net (v4) was trained on \`lowres-8k\` and the CRNN (v2; \`crnn-direct\`: v1 era) on \`generative-mix\`, both then fine-tuned with identity and \`text-to-music-keep\` pairs: each column outside its own preset is out of domain. The U-Net stage diagnoses first: it restores the 34 \`lowres-8k\` excerpts it finds band-limited below 12 kHz and passes the rest through."
