"""Measure each track's real bandwidth and collect the full-band material for super-resolution training.

    python scripts/make_fullband_set.py data/music data/unpacked/sonic-pi-samples -o data/fullband44

Lossy sources (the Debian game music is Ogg Vorbis) often end between 16 and 20 kHz:
their band above that is silence, not content, and must not be taught as a target. For
every file under the given folders this measures, on 10 s windows at `--rate`, where the
band ends (`edge_hz`: the highest frequency whose long-term level is within 50 dB of
1-4 kHz, as `restorekit_plugins.degrade.profile` defines it). A file whose windows reach
`--min-edge-hz` in at least `--min-fraction` of them is linked into OUT (names kept, so
`restorekit train` splits OUT by track exactly as it splits the source folders: held-out
tracks stay held out). OUT/bandwidth.json lists every file's figures and verdict.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from restorekit.dsp import convert_channels, resample
from restorekit.io import read_audio
from restorekit_tools.training.data import find_audio_files, split_of
from restorekit_plugins.degrade.profile import text_to_music_profile


def window_edges(x: np.ndarray, rate: int, seconds: float = 10.0) -> list[float]:
    """edge_hz of each non-silent `seconds`-long window of a mono signal."""
    n = int(seconds * rate)
    edges = []
    for start in range(0, max(1, len(x) - n // 2), n):
        seg = x[start:start + n]
        if len(seg) < rate // 4 or 20 * np.log10(np.sqrt(np.mean(seg ** 2)) + 1e-12) < -45:
            continue
        edges.append(text_to_music_profile(seg, rate)["edge_hz"])
    return edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--min-edge-hz", type=float, default=19500.0)
    parser.add_argument("--min-fraction", type=float, default=0.8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for f in find_audio_files(args.dirs):
        audio = read_audio(f)
        if audio.sample_rate < args.rate:
            report[str(f)] = {"kept": False, "why": f"recorded at {audio.sample_rate} Hz"}
            continue
        x = resample(convert_channels(audio, 1), args.rate).numpy()[0]
        edges = window_edges(x, args.rate)
        fraction = float(np.mean([e >= args.min_edge_hz for e in edges])) if edges else 0.0
        kept = fraction >= args.min_fraction
        report[str(f)] = {"kept": kept, "split": split_of(f), "windows": len(edges),
                          "median_edge_hz": float(np.median(edges)) if edges else 0.0,
                          "fraction_full_band": fraction, "seconds": len(x) / args.rate}
        if kept:
            link = args.out / f.name
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(f.resolve(), link)
        print(f"{'kept   ' if kept else 'skipped'} {f.name}: median edge {report[str(f)]['median_edge_hz']:.0f} Hz, "
              f"{fraction:.0%} of windows full band", flush=True)
    (args.out / "bandwidth.json").write_text(json.dumps(report, indent=1) + "\n")
    kept = [v for v in report.values() if v["kept"]]
    print(f"kept {len(kept)} of {len(report)} files, {sum(v['seconds'] for v in kept) / 60:.1f} min "
          f"({sum(v['split'] == 'train' for v in kept)} train, {sum(v['split'] == 'val' for v in kept)} val, "
          f"{sum(v['split'] == 'test' for v in kept)} test)")


if __name__ == "__main__":
    main()
