"""Real-time factor of `denoise.spectral_gate`: the torch path against noisereduce.

    python benchmarks/bench_gate.py                  # 180 s of 44.1 kHz stereo, both paths
    python benchmarks/bench_gate.py --seconds 30 --skip-noisereduce --threads 1

The signal is synthesized with numpy (tones with vibrato, decaying plucks and white noise).
Each figure is the best of --repeats runs (the machine is shared; the best run is the one
least disturbed). torch's thread count is left at its default unless --threads is given.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synth(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Music-like stereo test signal (channels, frames), float32, peak below 1."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.empty((2, n), np.float32)
    for c in range(2):
        f0 = 110.0 * (c + 1)
        x = 0.2 * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 0.5 * t))
        x += 0.1 * np.sin(2 * np.pi * 3.01 * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t))
        pluck = np.exp(-(t % 0.5) * 8) * np.sin(2 * np.pi * 880 * t)
        x += 0.1 * pluck + 0.01 * rng.standard_normal(n)
        out[c] = x
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--rate", type=int, default=44100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-noisereduce", action="store_true")
    args = ap.parse_args()

    import torch

    from restorekit.audio import Audio
    from restorekit_plugins.denoise import SpectralGate

    if args.threads:
        torch.set_num_threads(args.threads)
    x = synth(args.seconds, args.rate)
    audio = Audio.from_numpy(x, args.rate).to(args.device)
    print(f"{args.seconds:g} s of {args.rate} Hz stereo on {args.device}, torch threads {torch.get_num_threads()}")
    cases = [("torch stationary", {}), ("torch non-stationary", {"stationary": False})]
    if not args.skip_noisereduce:
        cases += [("noisereduce stationary (whole signal)", {"implementation": "noisereduce"})]
    for label, params in cases:
        stage = SpectralGate(params)
        stage.device = args.device

        def run():
            stage.process(audio)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        seconds = best_of(run, args.repeats)
        print(f"  {label:40s} {seconds:7.3f} s  {args.seconds / seconds:7.0f}x real time")
    if not args.skip_noisereduce:
        import noisereduce

        seconds = best_of(lambda: noisereduce.reduce_noise(y=x, sr=args.rate, stationary=True, prop_decrease=0.8),
                          max(1, args.repeats - 1))
        print(f"  {'noisereduce.reduce_noise defaults, stationary':40s} {seconds:7.3f} s  "
              f"{args.seconds / seconds:7.0f}x real time")


if __name__ == "__main__":
    main()
