#!/usr/bin/env bash
# The figures of issue 12 (docs/models.md, docs/results/sr-*): sr.flow against bwe.harmonic
# and restore.unet on held-out music, four damages, and a table over the number of steps.
#
#   bash scripts/get_training_data.sh            # the music (Debian packages), into data/
#   bash scripts/evaluate_sr.sh                  # CKPT=runs/srflow-v1/best.safetensors for a run
#
# References: the held-out excerpts (test tracks, split by file name as `restorekit train`
# splits them) whose own band reaches 19 kHz (data/heldout44-fullband, 44.1 kHz mono): the
# Vorbis encoder low-passes many tracks at 16.5-18.5 kHz, and a band the reference lacks
# cannot be scored. Damages: lowres-8k (32 kHz, 4 kHz band, 35 dB noise), text-to-music
# (32 kHz, the 16 kHz cliff and codec-like top octave of MusicGen output), and a steep
# low-pass at 8 and at 16 kHz at 44.1 kHz. LSD above the cutoff is `lsd_band` from the
# cutoff to 20 kHz. For each damage: sr.flow at its default (2 steps) against bwe.harmonic and
# restore.unet with ViSQOL (docs/results/sr-DAMAGE; the published lowpass-8k and lowpass-16k
# tables were made with VISQOL= for time), and for lowres-8k and text-to-music
# a table over 1/2/4/8 Euler steps and 2 Heun steps (docs/results/sr-steps-DAMAGE). About
# 20 minutes per damage on one core, most of it ViSQOL. Part `zero-shot`: the zero_shot
# pipeline (bwe.auto, which extends text-to-music output with bwe.harmonic) against the same pipeline extending with sr.flow,
# on text-to-music damage (docs/results/sr-zero-shot-text-to-music). Part `envelope`: the envelope
# match (match_envelope_db 0/12/24/48) against bwe.harmonic on lowres-8k and text-to-music with
# ViSQOL (docs/results/sr-envelope-DAMAGE), and zero_shot extending with sr.flow at the default
# against zero_shot (docs/results/sr-zero-shot-envelope-text-to-music); since the learned envelope
# (srenvelope) became the default, part `envelope` measures the line rule only with `envelope: line`
# added to its pipelines (the published sr-envelope-* tables predate the predictor). Part `learned`:
# the learned envelope (boost cap 24 and 48 dB) against the line rule and bwe.harmonic on both
# damages (docs/results/sr-learned-envelope-DAMAGE) and inside zero_shot
# (docs/results/sr-zero-shot-learned-text-to-music). Part `detail`: the band's detail from the
# flow against Gaussian noise, and `detail: auto` (the default since issue 12's seventh session:
# noise below a 12 kHz cutoff then, 14.5 kHz since the eighth), on all four damages with ViSQOL
# (docs/results/sr-detail-DAMAGE). Part `switch`: where `bwe.auto` (zero_shot's extender) hands
# over from sr.flow to bwe.harmonic, and where sr.flow's `detail: auto` hands over from noise to
# the flow: sr.flow with noise and with the flow's detail against bwe.harmonic after a steep
# low-pass at 10, 12, 14 and 16 kHz and on text-to-music damage (SWITCH_DAMAGES; empty: none;
# docs/results/bwe-auto-DAMAGE), zero_shot against the same pipeline extending with
# bwe.harmonic on lowres-8k (docs/results/zero-shot-auto-lowres-8k), and against it extending
# with sr.flow at text-to-music's edge too (docs/results/zero-shot-sr-text-to-music). Every part
# but `detail` and `switch` runs the flow (`detail: flow`), as when its tables were published. Set PARTS to run some of it (default
# "lowres-8k text-to-music lowpass-8k lowpass-16k zero-shot envelope learned detail switch");
# parts can run in parallel.
set -euo pipefail
OUT=${OUT:-docs/results}
MUSIC=${MUSIC:-data/music}
CKPT=${CKPT:-srflow}
CLEAN=${CLEAN:-data/heldout44-fullband}
PARTS=${PARTS:-"lowres-8k text-to-music lowpass-8k lowpass-16k zero-shot envelope learned detail switch"}
VISQOL=${VISQOL-1}  # VISQOL= (empty) leaves ViSQOL out of the main comparisons (it is most of the time)
[[ -d "$CLEAN" ]] || python scripts/make_heldout_set.py "$MUSIC" "$CLEAN" --excerpts 6 \
  --seconds 8 --rate 44100 --min-edge-hz 19000

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for cut in 8000 10000 12000 14000 16000; do
  cat > "$tmp/lowpass-$((cut / 1000))k.yaml" <<EOF
name: lowpass-$((cut / 1000))k
description: A steep low-pass (Kaiser FIR, 100 dB stopband) at $cut Hz, 44.1 kHz.
stages:
  - {id: band, use: degrade.band_limit, with: {method: lowpass, cutoff_hz: $cut}}
EOF
done
flow() {  # flow STEPS [SOLVER]: the sr pipeline with this checkpoint and step count
  local name="sr-flow-$1${2:+-$2}"
  sed -e "s/^name: sr$/name: $name/" \
    -e "s#detail: auto,#detail: flow, steps: $1, checkpoint: $CKPT${2:+, solver: $2},#" \
    pipelines/sr.yaml > "$tmp/$name.yaml"
  echo "$tmp/$name.yaml"
}
sr_detail() {  # sr_detail NAME DETAIL: the sr pipeline named NAME with this detail and checkpoint
  sed -e "s/^name: sr$/name: $1/" -e "s#detail: auto,#detail: $2, checkpoint: $CKPT,#" \
    pipelines/sr.yaml > "$tmp/$1.yaml"
}
cat > "$tmp/bwe-harmonic.yaml" <<EOF
name: bwe-harmonic
description: Harmonic bandwidth extension to 44.1 kHz (bwe.harmonic), the DSP baseline.
stages:
  - {id: bwe, use: bwe.harmonic, with: {sample_rate_hz: 44100}}
EOF
zero_shot_sr() {  # zero_shot_sr EXTRA_PARAMS OUTNAME: zero_shot against zero_shot extending with sr.flow, with ViSQOL
  sed -e "s/^name: zero_shot$/name: zero_shot-sr/" -e "s/use: bwe.auto$/use: sr.flow/" \
    -e "s/with: {sample_rate_hz: 44100}$/with: {sample_rate_hz: 44100, detail: flow, steps: 2, checkpoint: $CKPT$1}/" \
    pipelines/zero_shot.yaml > "$tmp/zero_shot-sr.yaml"
  restorekit -q compare zero_shot "$tmp/zero_shot-sr.yaml" --clean "$CLEAN" --degrade text-to-music \
    -m lsd -m lsd_norm -m lsd_band -m si_sdr -m visqol -m band_level_db -m band_tracking \
    --set lsd_band.low_hz=16000 --set lsd_band.high_hz=20000 -o "$OUT/$2"
}
metrics=(-m lsd -m lsd_band -m si_sdr -m snr --set lsd_band.high_hz=20000)
for part in $PARTS; do
  case "$part" in
    lowres-8k) degrade=lowres-8k cutoff=4000 ;;
    text-to-music) degrade=text-to-music cutoff=16000 ;;
    lowpass-8k) degrade="$tmp/lowpass-8k.yaml" cutoff=8000 ;;
    lowpass-16k) degrade="$tmp/lowpass-16k.yaml" cutoff=16000 ;;
    zero-shot)  # zero_shot (bwe.harmonic) against the same pipeline extending with sr.flow, on text-to-music damage
      sed -e "s/^name: zero_shot$/name: zero_shot-sr/" -e "s/use: bwe.auto$/use: sr.flow/" \
        -e "s/with: {sample_rate_hz: 44100}$/with: {sample_rate_hz: 44100, detail: flow, steps: 2, checkpoint: $CKPT}/" \
        pipelines/zero_shot.yaml > "$tmp/zero_shot-sr.yaml"
      restorekit -q compare zero_shot "$tmp/zero_shot-sr.yaml" --clean "$CLEAN" --degrade text-to-music \
        -m lsd -m lsd_norm -m lsd_band -m si_sdr -m band_level_db -m band_tracking ${STEPS_VISQOL:+-m visqol} \
        --set lsd_band.low_hz=16000 --set lsd_band.high_hz=20000 -o "$OUT/sr-zero-shot-text-to-music"
      continue ;;
    learned)  # the learned envelope (the default) against the line rule and bwe.harmonic, then inside zero_shot
      for v in "learned24:srenvelope:24" "learned48:srenvelope:48" "line24:line:24"; do
        IFS=: read -r name env db <<< "$v"
        sed -e "s/^name: sr$/name: sr-$name/" \
          -e "s#match_envelope_db: 24.0,#match_envelope_db: $db, envelope: $env, checkpoint: $CKPT,#" \
          -e "s#detail: auto,#detail: flow,#" \
          pipelines/sr.yaml > "$tmp/sr-$name.yaml"
      done
      for d in lowres-8k:4000 text-to-music:16000; do
        restorekit -q compare "$tmp"/sr-{learned24,learned48,line24}.yaml "$tmp/bwe-harmonic.yaml" --clean "$CLEAN" \
          --degrade "${d%%:*}" -m lsd -m lsd_band -m si_sdr -m visqol -m band_level_db -m band_tracking \
          --set lsd_band.low_hz="${d##*:}" --set lsd_band.high_hz=20000 -o "$OUT/sr-learned-envelope-${d%%:*}"
      done
      zero_shot_sr "" sr-zero-shot-learned-text-to-music
      continue ;;
    envelope)  # the envelope match's strength, then zero_shot extending with sr.flow at the default
      for db in 0 12 24 48; do
        sed -e "s/^name: sr$/name: sr-env$db/" \
          -e "s#match_envelope_db: 24.0,#match_envelope_db: $db, envelope: line, checkpoint: $CKPT,#" \
          -e "s#detail: auto,#detail: flow,#" \
          pipelines/sr.yaml > "$tmp/sr-env$db.yaml"
      done
      for d in lowres-8k:4000 text-to-music:16000; do
        restorekit -q compare "$tmp"/sr-env{0,12,24,48}.yaml "$tmp/bwe-harmonic.yaml" --clean "$CLEAN" \
          --degrade "${d%%:*}" -m lsd -m lsd_band -m si_sdr -m visqol -m band_level_db -m band_tracking \
          --set lsd_band.low_hz="${d##*:}" --set lsd_band.high_hz=20000 -o "$OUT/sr-envelope-${d%%:*}"
      done
      zero_shot_sr ", envelope: line" sr-zero-shot-envelope-text-to-music
      continue ;;
    detail)  # the band's detail: the flow, noise, and auto (the default), with ViSQOL
      for v in flow noise auto; do sr_detail "sr-detail-$v" "$v"; done
      for d in lowres-8k:4000 text-to-music:16000 "$tmp/lowpass-8k.yaml:8000" "$tmp/lowpass-16k.yaml:16000"; do
        name=$(basename "${d%%:*}" .yaml)
        restorekit -q compare "$tmp"/sr-detail-{flow,noise,auto}.yaml --clean "$CLEAN" --degrade "${d%%:*}" \
          -m lsd -m lsd_band -m visqol --set lsd_band.low_hz="${d##*:}" --set lsd_band.high_hz=20000 \
          --against sr-detail-flow -o "$OUT/sr-detail-$name"
      done
      continue ;;
    switch)  # bwe.auto's hand-over: sr.flow against bwe.harmonic from 10 kHz up, then zero_shot both ways
      for v in noise flow; do sr_detail "sr-$v" "$v"; done
      for d in ${SWITCH_DAMAGES-lowpass-10k lowpass-12k lowpass-14k lowpass-16k text-to-music}; do
        [[ $d == text-to-music ]] && degrade=$d cutoff=16000 || degrade="$tmp/$d.yaml" cutoff=${d//[^0-9]/}000
        restorekit -q compare "$tmp"/sr-{noise,flow}.yaml "$tmp/bwe-harmonic.yaml" --clean "$CLEAN" \
          --degrade "$degrade" -m lsd -m lsd_band -m visqol --set lsd_band.low_hz=$cutoff \
          --set lsd_band.high_hz=20000 --against bwe-harmonic -o "$OUT/bwe-auto-$d"
      done
      # zero_shot (bwe.auto: sr.flow on lowres-8k's 4 kHz band) against it extending with bwe.harmonic
      sed -e "s/^name: zero_shot$/name: zero_shot-harmonic/" -e "s/use: bwe.auto$/use: bwe.harmonic/" \
        pipelines/zero_shot.yaml > "$tmp/zero_shot-harmonic.yaml"
      restorekit -q compare zero_shot "$tmp/zero_shot-harmonic.yaml" --clean "$CLEAN" --degrade lowres-8k \
        -m lsd -m lsd_band -m si_sdr -m visqol --set lsd_band.low_hz=4000 --set lsd_band.high_hz=20000 \
        --against zero_shot-harmonic -o "$OUT/zero-shot-auto-lowres-8k"
      # zero_shot (bwe.harmonic at text-to-music's 16 kHz edge) against it extending with sr.flow there too
      sed -e "s/^name: zero_shot$/name: zero_shot-sr/" \
        -e "s/with: {sample_rate_hz: 44100}$/with: {sample_rate_hz: 44100, sr_below_hz: 24000, checkpoint: $CKPT}/" \
        pipelines/zero_shot.yaml > "$tmp/zero_shot-sr.yaml"
      restorekit -q compare zero_shot "$tmp/zero_shot-sr.yaml" --clean "$CLEAN" --degrade text-to-music \
        -m lsd -m lsd_band -m si_sdr -m visqol -m band_level_db -m band_tracking --set lsd_band.low_hz=16000 \
        --set lsd_band.high_hz=20000 --against zero_shot -o "$OUT/zero-shot-sr-text-to-music"
      continue ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
  # the stage at its default step count against the DSP extender and the U-Net, with ViSQOL
  restorekit -q compare "$(flow 2)" "$tmp/bwe-harmonic.yaml" unet --clean "$CLEAN" \
    --degrade "$degrade" "${metrics[@]}" ${VISQOL:+-m visqol} --set lsd_band.low_hz=$cutoff -o "$OUT/sr-$part"
  # the number of steps (and Heun's solver), without ViSQOL (STEPS_VISQOL=1 adds it)
  if [[ "$part" == lowres-8k || "$part" == text-to-music ]]; then
    restorekit -q compare "$(flow 1)" "$(flow 2)" "$(flow 4)" "$(flow 8)" "$(flow 2 heun)" \
      --clean "$CLEAN" --degrade "$degrade" "${metrics[@]}" ${STEPS_VISQOL:+-m visqol} \
      --set lsd_band.low_hz=$cutoff -o "$OUT/sr-steps-$part"
  fi
done
