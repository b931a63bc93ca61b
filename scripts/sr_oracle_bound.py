"""What LSD a band generator could reach at best: oracles that know the reference's level.

    python scripts/sr_oracle_bound.py data/heldout44-fullband --degrade lowres-8k --cutoff-hz 4000 \\
        --degrade text-to-music --cutoff-hz 16000 [--json docs/results/sr-oracle-bound.json]

Each clean clip is degraded with the preset (seeded per file, as `restorekit compare` does);
below the cutoff every oracle keeps the degraded input, above it (STFT n_fft 2048, hop 512,
per channel) it writes the reference's power with random phase: exactly (`exact`: the
texture right, only the phase wrong), or smoothed per frame over 1/24 or 1/6 of an octave
(`smooth-1/24`, `smooth-1/6`: the level right at that resolution, the detail a random draw,
which is what a generator with a perfect envelope predictor produces). Reported: LSD over the
whole band and from the cutoff to 20 kHz (the metrics of docs/results/sr-*), mean over clips,
next to the degraded input's. No network runs here; a few seconds per clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.signal import istft, stft

from restorekit.audio import Audio
from restorekit.batch import file_seed
from restorekit.dsp import resample
from restorekit.io import read_audio
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry

N_FFT, HOP = 2048, 512
ORACLES = {"exact": 0.0, "smooth-1/24": 1 / 24, "smooth-1/6": 1 / 6}


def oracle(ref: np.ndarray, deg: np.ndarray, rate: int, cutoff_hz: float, octaves: float,
           rng: np.random.Generator) -> np.ndarray:
    """(channels, frames): `deg` below the cutoff, the reference's (smoothed) power with random phase above."""
    out = np.zeros_like(ref)
    for c in range(ref.shape[0]):
        f, _, r = stft(ref[c], rate, nperseg=N_FFT, noverlap=N_FFT - HOP)
        _, _, d = stft(deg[c], rate, nperseg=N_FFT, noverlap=N_FFT - HOP)
        above = np.flatnonzero(f >= cutoff_hz)
        power = np.abs(r) ** 2
        if octaves > 0:
            smooth = np.empty((len(above), power.shape[1]))
            for i, k in enumerate(above):
                near = above[(f[above] >= f[k] * 2 ** (-octaves / 2)) & (f[above] <= f[k] * 2 ** (octaves / 2))]
                smooth[i] = power[near].mean(axis=0)
        else:
            smooth = power[above]
        d[above] = np.sqrt(smooth) * np.exp(2j * np.pi * rng.random(smooth.shape))
        out[c] = istft(d, rate, nperseg=N_FFT, noverlap=N_FFT - HOP)[1][:ref.shape[1]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path)
    parser.add_argument("--degrade", action="append", required=True, help="a preset (repeatable)")
    parser.add_argument("--cutoff-hz", action="append", type=float, required=True, help="one per --degrade")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if len(args.degrade) != len(args.cutoff_hz):
        parser.error("give one --cutoff-hz per --degrade")
    metrics = get_registry().metrics
    files = sorted(p for p in args.clean.iterdir() if p.suffix == ".wav")
    report = {}
    for preset, cutoff in zip(args.degrade, args.cutoff_hz):
        damage = load_pipeline(find_degradation(preset), device="cpu")
        lsd, band = metrics["lsd"](), metrics["lsd_band"](low_hz=cutoff, high_hz=20000)
        rows: dict[str, list[tuple[float, float]]] = {"degraded": [], **{k: [] for k in ORACLES}}
        rng = np.random.default_rng(args.seed)
        for path in files:
            ref = read_audio(path)
            deg = resample(damage.run(ref, seed=file_seed(args.seed, Path(path.name))).audio, ref.sample_rate)
            n = min(ref.frames, deg.frames)
            ref, deg = Audio(ref.samples[:, :n], ref.sample_rate), Audio(deg.samples[:, :n], ref.sample_rate)
            if deg.channels != ref.channels:
                deg = Audio(deg.samples.expand(ref.channels, -1).contiguous(), ref.sample_rate)
            rows["degraded"].append((lsd(deg, ref), band(deg, ref)))
            for name, octaves in ORACLES.items():
                est = oracle(ref.numpy(), deg.numpy(), ref.sample_rate, cutoff, octaves, rng)
                est = ref.with_samples(ref.samples.new_tensor(est))
                rows[name].append((lsd(est, ref), band(est, ref)))
        base = np.mean(rows["degraded"], axis=0)
        report[preset] = {"cutoff_hz": cutoff, "clips": len(files)}
        print(f"{preset} (cutoff {cutoff:g} Hz, {len(files)} clips)")
        for name, values in rows.items():
            m = np.mean(values, axis=0)
            report[preset][name] = {"lsd": float(m[0]), "lsd_band": float(m[1]),
                                    "lsd_change": float(m[0] / base[0] - 1), "lsd_band_change": float(m[1] / base[1] - 1)}
            print(f"  {name:12s} LSD {m[0]:.3f} ({m[0] / base[0] - 1:+.0%})   LSD {cutoff / 1000:g}-20 kHz "
                  f"{m[1]:.3f} ({m[1] / base[1] - 1:+.0%})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
