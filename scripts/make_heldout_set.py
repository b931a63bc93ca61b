"""Cut evaluation excerpts from the held-out (test) tracks of a training run.

    python scripts/make_heldout_set.py runs/unet-v1/split.json data/heldout --excerpts 3 --seconds 10
    python scripts/make_heldout_set.py data/music data/heldout44 --rate 44100 --min-edge-hz 16000

Reads the run's split.json, or splits a music directory by file name the way `restorekit
train` does (files split by track, never by excerpt), takes evenly spaced excerpts from each
test track (fewer where the track is short: excerpts overlap by at most half, so an 8 s loop
gives one 8 s excerpt, not six copies of it), skipping near-silent ones, and writes them as
mono 24-bit WAV at `--rate` (32 kHz by default): the clean references for `restorekit
compare --clean`. `--min-edge-hz` skips excerpts whose own band ends lower (the edge of
`restorekit_plugins.degrade.profile`), for references of bandwidth extension.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from restorekit.audio import Audio
from restorekit.dsp import convert_channels, resample
from restorekit.io import read_audio, write_audio
from restorekit_tools.training.data import find_audio_files, split_files
from restorekit_plugins.degrade.profile import text_to_music_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path, help="a run's split.json, or a directory of music: its files are "
                                                 "split by name as `restorekit train` splits them")
    parser.add_argument("out", type=Path)
    parser.add_argument("--excerpts", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=32000)
    parser.add_argument("--split-name", default="test")
    parser.add_argument("--min-edge-hz", type=float, default=0.0)
    args = parser.parse_args()
    if args.split.is_dir():
        files = [str(f) for f in split_files(find_audio_files([args.split]))[args.split_name]]
    else:
        files = json.loads(args.split.read_text())[args.split_name]
    args.out.mkdir(parents=True, exist_ok=True)
    n = int(args.seconds * args.rate)
    written = 0
    for f in files:
        audio = resample(convert_channels(read_audio(f), 1), args.rate)
        x = audio.numpy()[0]
        x = x / max(1.0, float(np.abs(x).max()))
        if len(x) < n:
            continue
        starts = []
        for s in np.linspace(0, len(x) - n, args.excerpts + 2)[1:-1].astype(int):
            if not starts or s - starts[-1] >= n // 2:  # a short track gives fewer excerpts, never copies of one
                starts.append(s)
        for k, s in enumerate(starts):
            seg = np.ascontiguousarray(x[s:s + n], dtype=np.float32)
            if 20 * np.log10(np.sqrt(np.mean(seg ** 2)) + 1e-12) < -40:
                continue
            if args.min_edge_hz and text_to_music_profile(seg, args.rate)["edge_hz"] < args.min_edge_hz:
                print(f"skipped {Path(f).stem}.{k}: its band ends below {args.min_edge_hz:g} Hz")
                continue
            write_audio(args.out / f"{Path(f).stem}.{k}.wav", Audio.from_numpy(seg[None], args.rate), bit_depth=24)
            written += 1
    print(f"{written} excerpts from {len(files)} held-out tracks in {args.out}")


if __name__ == "__main__":
    main()
