"""Spectrogram figures of super-resolution: degraded input, sr.flow output, bwe.harmonic output, reference.

    python scripts/sr_figures.py data/heldout44-fullband -o docs/results/sr-figures --clips 3 \
        --degrade lowres-8k --degrade text-to-music [--checkpoint srflow] [--steps 2] [--detail auto]

For the first `--clips` files (sorted by name, evenly spaced through the folder), each
degraded with each preset (seeded as `restorekit compare` seeds file 0, 1, ...), writes one
PNG per clip and preset: four log-power spectrograms (0-22 kHz, the same colour scale).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def log_spectrogram(x: np.ndarray, rate: int, nperseg: int = 2048,
                    overlap: float = 0.75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequencies, times, power in dB) of a Hann spectrogram."""
    from scipy import signal

    f, t, s = signal.spectrogram(x, rate, window="hann", nperseg=nperseg, noverlap=round(overlap * nperseg),
                                 mode="psd")
    return f, t, 10 * np.log10(s + 1e-14)


def pick_clips(folder: Path, count: int) -> list[Path]:
    """`count` WAV files evenly spaced through `folder`, sorted by name."""
    files = sorted(folder.glob("*.wav"))
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from restorekit.dsp import convert_channels, resample
    from restorekit.io import read_audio
    from restorekit.pipeline import find_degradation, load_pipeline
    from restorekit.plugins import get_registry
    from restorekit.runner import Pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clean", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--degrade", action="append", default=[])
    parser.add_argument("--checkpoint", default="srflow")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--detail", default="auto", choices=["auto", "flow", "noise"])
    args = parser.parse_args()
    picks = pick_clips(args.clean, args.clips)
    stages = get_registry().stages
    flow_params = {"checkpoint": args.checkpoint, "detail": args.detail}
    if args.detail != "noise":
        flow_params["steps"] = args.steps
    flow = Pipeline([stages["sr.flow"](**flow_params)], device="cpu")
    harmonic = Pipeline([stages["bwe.harmonic"](sample_rate_hz=44100)], device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    for preset in args.degrade or ["lowres-8k", "text-to-music"]:
        damage = load_pipeline(find_degradation(preset), device="cpu")
        for k, path in enumerate(picks):
            clean = convert_channels(read_audio(path), 1)
            degraded = damage.run(clean, seed=k).audio
            result = flow.run(degraded, seed=0)
            detail = "noise detail" if any("noise detail" in n for n in result.notes) else f"flow, {args.steps} steps"
            versions = {"degraded input": degraded, f"sr.flow ({detail})": result.audio,
                        "bwe.harmonic": harmonic(degraded), "reference": clean}
            fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=True)
            for ax, (name, audio) in zip(axes, versions.items()):
                audio = resample(audio, 44100)
                f, t, s = log_spectrogram(audio.numpy().mean(axis=0), 44100)
                ax.pcolormesh(t, f / 1000, s, vmin=-130, vmax=-30, shading="auto", cmap="magma")
                ax.set_title(name)
                ax.set_xlabel("s")
            axes[0].set_ylabel("kHz")
            fig.suptitle(f"{path.stem}, {preset}")
            fig.tight_layout()
            fig.savefig(args.out / f"{preset}-{path.stem}.png", dpi=70)
            plt.close(fig)
            print(args.out / f"{preset}-{path.stem}.png")


if __name__ == "__main__":
    main()
