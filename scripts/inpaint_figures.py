"""Spectrogram figures of gap inpainting: gapped input, inpaint.ar, inpaint.similarity, inpaint.flow, reference.

    python scripts/inpaint_figures.py data/heldout44-fullband -o docs/results/inpaint-figures --clips 3 \
        --gap-ms 200 --gap-ms 500 [--checkpoint inpaintflow] [--steps 1]

For the first `--clips` files (evenly spaced through the folder, sorted by name), zeroes one
block of each length in the middle of the clip and writes one PNG per clip and length: five
log-power spectrograms of the 2 s around the gap (0-22 kHz, the same colour scale), with
the gap's edges marked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sr_figures import log_spectrogram as _log_spectrogram  # scripts/ is on the path when run as a script
from sr_figures import pick_clips


def log_spectrogram(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finer in time than the super-resolution figures (1024-point frames, 87.5 % overlap): gaps are short."""
    return _log_spectrogram(x, rate, 1024, 0.875)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from restorekit.audio import Audio
    from restorekit.dsp import convert_channels
    from restorekit.io import read_audio
    from restorekit.plugins import get_registry
    from restorekit.runner import Pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, action="append", default=[])
    parser.add_argument("--checkpoint", default="inpaintflow")
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    picks = pick_clips(args.clean, args.clips)
    stages = get_registry().stages
    methods = {"inpaint.ar": Pipeline([stages["inpaint.ar"](max_gap_ms=2000)], device="cpu"),
               "inpaint.similarity": Pipeline([stages["inpaint.similarity"](min_gap_ms=5)], device="cpu"),
               f"inpaint.flow ({args.steps} steps)": Pipeline(
                   [stages["inpaint.flow"](checkpoint=args.checkpoint, steps=args.steps, max_gap_ms=2000)],
                   device="cpu")}
    args.out.mkdir(parents=True, exist_ok=True)
    for gap_ms in args.gap_ms or [200.0, 500.0]:
        for path in picks:
            clean = convert_channels(read_audio(path), 1)
            rate = clean.sample_rate
            m = int(gap_ms * rate / 1000)
            a = clean.frames // 2 - m // 2
            gapped = clean.samples.clone()
            gapped[:, a:a + m] = 0
            gapped_audio = Audio(gapped, rate)
            versions = {"gapped input": gapped_audio}
            versions.update({name: p(Audio(gapped.clone(), rate)) for name, p in methods.items()})
            versions["reference"] = clean
            lo, hi = max(0, a - rate), min(clean.frames, a + m + rate)
            fig, axes = plt.subplots(1, len(versions), figsize=(4 * len(versions), 3.6), sharey=True)
            for ax, (name, audio) in zip(axes, versions.items()):
                x = audio.samples[0, lo:hi].to(torch.float64).numpy()
                f, t, s = log_spectrogram(x, rate)
                ax.pcolormesh(t, f / 1000, s, vmin=-140, vmax=-30, shading="auto", cmap="magma")
                for edge in (a - lo, a + m - lo):
                    ax.axvline(edge / rate, color="cyan", linewidth=0.6, linestyle="--")
                ax.set_title(name, fontsize=9)
                ax.set_xlabel("s")
            axes[0].set_ylabel("kHz")
            fig.suptitle(f"{path.stem}: {gap_ms:g} ms gap", fontsize=10)
            fig.tight_layout()
            fig.savefig(args.out / f"{int(gap_ms)}ms-{path.stem}.png", dpi=80)
            plt.close(fig)
            print(args.out / f"{int(gap_ms)}ms-{path.stem}.png")


if __name__ == "__main__":
    main()
