#!/usr/bin/env bash
# The figures of issue 11 (docs/results/, docs/models.md, docs/pipelines.md): the shipped
# pipelines and learned models on held-out music degraded like text-to-music output, and the
# learned models on their own presets.
#
#   bash scripts/get_training_data.sh            # the music (Debian packages), into data/
#   bash scripts/evaluate_text_to_music.sh
#
# Held-out excerpts are cut from the test tracks (split by file name, as `restorekit train`
# splits them). The 44.1 kHz references for bandwidth extension must have the band that is
# extended: the project's music is Ogg Vorbis, whose encoder low-passes many tracks at
# 16.5-18.5 kHz, so two sets are measured: every held-out excerpt whose own band reaches
# 16 kHz (data/heldout44) and those whose band reaches 19 kHz (data/heldout44-fullband).
# Earlier checkpoints, where present (PREVIOUS="name=path ..."), are compared side by side;
# the shipped figures used v3 and v1 as committed before issue 11 and the U-Net's first phase
# (docs/models.md), in the lowres-8k comparison only:
#
#   mkdir -p runs/old && for f in unet.safetensors unet.json crnn.safetensors crnn.json; do
#     git show 4b530f8:plugins/restorekit_plugins/weights/$f > runs/old/$f; done
#   PREVIOUS_LOWRES="unet-v4a=runs/unet-v4a/best.safetensors" bash scripts/evaluate_text_to_music.sh
#
# Set PARTS to run some of it: "pipelines models" (default both).
set -euo pipefail
OUT=${OUT:-docs/results}
MUSIC=${MUSIC:-data/music}
python scripts/make_heldout_set.py "$MUSIC" data/heldout --excerpts 3 --seconds 8
python scripts/make_heldout_set.py "$MUSIC" data/heldout44 --excerpts 3 --seconds 8 --rate 44100 --min-edge-hz 16000
python scripts/make_heldout_set.py "$MUSIC" data/heldout44-fullband --excerpts 6 --seconds 8 --rate 44100 \
  --min-edge-hz 19000

PARTS=${PARTS:-"pipelines models"}

# 1. zero_shot and dsp_chain on text-to-music damage
if [[ " $PARTS " == *" pipelines "* ]]; then
EXTENSION=(-m lsd -m lsd_norm -m lsd_band -m si_sdr -m visqol -m band_level_db -m band_tracking
           --set lsd_band.low_hz=16000 --set lsd_band.high_hz=20000)
restorekit -q compare zero_shot dsp_chain --clean data/heldout44-fullband --degrade text-to-music \
  "${EXTENSION[@]}" -o "$OUT/text-to-music-pipelines-fullband"
restorekit -q compare zero_shot dsp_chain --clean data/heldout44 --degrade text-to-music \
  "${EXTENSION[@]}" -o "$OUT/text-to-music-pipelines"
fi
[[ " $PARTS " == *" models "* ]] || exit 0

# 2. the learned models: earlier checkpoints (if given) next to the shipped ones
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unets=() crnns=() lowres_only=()
PREVIOUS=${PREVIOUS:-"unet-v3=runs/old/unet.safetensors crnn-v1=runs/old/crnn.safetensors"}
for entry in $PREVIOUS ${PREVIOUS_LOWRES:-}; do
  name=${entry%%=*} ckpt=${entry#*=}
  [[ -f "$ckpt" ]] || continue
  case "$name" in
    unet*) sed -e "s/^name: unet$/name: $name/" -e "s#checkpoint: unet,#checkpoint: $ckpt,#" pipelines/unet.yaml \
             > "$tmp/$name.yaml"
           if [[ " ${PREVIOUS_LOWRES:-} " == *" $entry "* ]]; then lowres_only+=("$tmp/$name.yaml")
           else unets+=("$tmp/$name.yaml"); fi ;;
    crnn*) sed -e "s/^name: crnn$/name: $name/" -e "s#checkpoint: crnn,#checkpoint: $ckpt,#" pipelines/crnn.yaml \
             > "$tmp/$name.yaml"; crnns+=("$tmp/$name.yaml") ;;
  esac
done
sed -e 's/^name: unet$/name: unet-v4/' pipelines/unet.yaml > "$tmp/unet-v4.yaml"
# the network itself, without the stage's band-limit diagnosis
sed -e 's/^name: unet$/name: unet-v4-always/' -e 's/batch_size: 8}/batch_size: 8, only_band_limited: false}/' \
  pipelines/unet.yaml > "$tmp/unet-v4-always.yaml"
sed -e 's/^name: crnn$/name: crnn-v2/' pipelines/crnn.yaml > "$tmp/crnn-v2.yaml"
sed -e 's/^name: crnn$/name: crnn-direct/' -e 's/checkpoint: crnn,/checkpoint: crnn-direct,/' \
  pipelines/crnn.yaml > "$tmp/crnn-direct.yaml"
unets+=("$tmp/unet-v4.yaml" "$tmp/unet-v4-always.yaml")
crnns+=("$tmp/crnn-v2.yaml" "$tmp/crnn-direct.yaml")
restorekit -q compare "${unets[0]}" "${lowres_only[@]}" "${unets[@]:1}" --clean data/heldout --degrade lowres-8k \
  -m lsd -m si_sdr -m snr -m mel_l1 -m visqol -o "$OUT/unet-lowres-8k"
restorekit -q compare "${crnns[@]}" --clean data/heldout --degrade generative-mix \
  -m lsd -m si_sdr -m mel_l1 -m visqol -o "$OUT/crnn-generative-mix"
# what they do to text-to-music output: the 8-15.5 kHz band against 1-4 kHz, and LSD
restorekit -q compare "${unets[@]}" "${crnns[@]}" --clean data/heldout --degrade text-to-music \
  -m lsd -m visqol -m band_level_db --set band_level_db.low_hz=8000 --set band_level_db.high_hz=15500 \
  --set band_level_db.ref_low_hz=1000 --set band_level_db.ref_high_hz=4000 -o "$OUT/models-text-to-music"
