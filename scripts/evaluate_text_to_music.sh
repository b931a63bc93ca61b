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
prev_unets=() lowres_only=() crnns=()
PREVIOUS=${PREVIOUS:-"unet-v3=runs/old/unet.safetensors crnn-v1=runs/old/crnn.safetensors"}
variant() {  # variant FAMILY NAME [CHECKPOINT] [EXTRA]: the shipped pipeline, renamed, other weights or params
  local yaml="$tmp/$2.yaml"
  sed -e "s/^name: $1$/name: $2/" ${3:+-e "s#checkpoint: $1,#checkpoint: $3,#"} \
    ${4:+-e "s/batch_size: 8}/batch_size: 8, $4}/"} "pipelines/$1.yaml" > "$yaml"
  echo "$yaml"
}
for entry in $PREVIOUS ${PREVIOUS_LOWRES:-}; do
  name=${entry%%=*} ckpt=${entry#*=}
  [[ -f "$ckpt" ]] || continue
  case "$name" in
    unet*) if [[ " ${PREVIOUS_LOWRES:-} " == *" $entry "* ]]; then lowres_only+=("$(variant unet "$name" "$ckpt")")
           else prev_unets+=("$(variant unet "$name" "$ckpt")"); fi ;;
    crnn*) crnns+=("$(variant crnn "$name" "$ckpt")") ;;
  esac
done
# v4 with the stage's band-limit diagnosis, and the network itself without it
unets=("$(variant unet unet-v4)" "$(variant unet unet-v4-always "" "only_band_limited: false")")
crnns+=("$(variant crnn crnn-v2)" "$(variant crnn crnn-direct crnn-direct)")
restorekit -q compare "${prev_unets[@]}" "${lowres_only[@]}" "${unets[@]}" --clean data/heldout --degrade lowres-8k \
  -m lsd -m si_sdr -m snr -m mel_l1 -m visqol -o "$OUT/unet-lowres-8k"
restorekit -q compare "${crnns[@]}" --clean data/heldout --degrade generative-mix \
  -m lsd -m si_sdr -m mel_l1 -m visqol -o "$OUT/crnn-generative-mix"
# what they do to text-to-music output: the 8-15.5 kHz band against 1-4 kHz, and LSD
restorekit -q compare "${prev_unets[@]}" "${unets[@]}" "${crnns[@]}" --clean data/heldout --degrade text-to-music \
  -m lsd -m visqol -m band_level_db --set band_level_db.low_hz=8000 --set band_level_db.high_hz=15500 \
  --set band_level_db.ref_low_hz=1000 --set band_level_db.ref_high_hz=4000 -o "$OUT/models-text-to-music"
