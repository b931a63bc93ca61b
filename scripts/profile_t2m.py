"""Print the text-to-music profile of audio files (edge, upper-band levels, flatness, envelope tracking).

    python scripts/profile_t2m.py song.wav generated/*.wav

The definitions are in restorekit_plugins.degrade.profile; docs/stages/degrade.md gives
the figures of 22 real MusicGen files and of the `text-to-music` preset, so a user can
check whether their generator's output looks like what the preset simulates.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from restorekit.io import read_audio
from restorekit_plugins.degrade.profile import text_to_music_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    rows = []
    for f in args.files:
        audio = read_audio(f)
        p = text_to_music_profile(audio.numpy(), audio.sample_rate)
        rows.append(p)
        print(f"{f}: {audio.sample_rate} Hz  " + "  ".join(f"{k} {v:.2f}" for k, v in p.items()))
    if len(rows) > 1:
        for key in rows[0]:
            values = np.array([r[key] for r in rows if not math.isnan(r[key])])
            if values.size:
                print(f"{key}: median {np.median(values):.2f}, range {values.min():.2f} .. {values.max():.2f}")


if __name__ == "__main__":
    main()
