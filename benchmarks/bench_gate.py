"""Real-time factor of `denoise.spectral_gate` (torch path against noisereduce) and `bwe.harmonic`.

    python benchmarks/bench_gate.py                  # 180 s of 44.1 kHz stereo, all cases
    python benchmarks/bench_gate.py --seconds 30 --skip-noisereduce --threads 1

The signal is synthesized with numpy (tones with vibrato, decaying plucks and white noise).
Each figure is the best of --repeats runs (the machine is shared; the best run is the one
least disturbed), with that run's CPU time: with --threads 1 the CPU time is close to what
an idle core would take. torch's thread count is left at its default unless --threads is
given. On a shared machine run it with OMP_WAIT_POLICY=PASSIVE: with OpenMP's default
spinning waits, two torch threads competing with other jobs are several times slower.
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


CPU_TIMES: list[float] = []


def best_of(fn, repeats: int) -> float:
    """Best wall time of `repeats` runs; the CPU time of that run is appended to CPU_TIMES."""
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    best = min(times)
    CPU_TIMES.append(best[1])
    return best[0]


def _run(stage, audio, device: str) -> None:
    stage.process(audio)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def report(label: str, audio_s: float, seconds: float) -> None:
    cpu = CPU_TIMES[-1]
    print(f"  {label:46s} {seconds:7.3f} s {audio_s / seconds:6.0f}x real time   (CPU {cpu:6.3f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--rate", type=int, default=44100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-noisereduce", action="store_true")
    ap.add_argument("--skip-bwe", action="store_true")
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
        stage.place(args.device)
        report(label, args.seconds, best_of(lambda s=stage: _run(s, audio, args.device), args.repeats))
    if not args.skip_bwe:
        bench_bwe(args, x)
    if not args.skip_noisereduce:
        import noisereduce

        seconds = best_of(lambda: noisereduce.reduce_noise(y=x, sr=args.rate, stationary=True, prop_decrease=0.8),
                          max(1, args.repeats - 1))
        report("noisereduce.reduce_noise defaults, stationary", args.seconds, seconds)


def bench_bwe(args, x) -> None:
    """bwe.harmonic on full-band input (detection only) and on 32 kHz audio band-limited at 8 kHz."""
    import soxr

    from restorekit.audio import Audio
    from restorekit_plugins.bwe import HarmonicBWE

    low = np.ascontiguousarray(np.stack([soxr.resample(soxr.resample(ch, args.rate, 16000), 16000, 32000)
                                         for ch in x]).astype(np.float32))
    cases = [(f"bwe full band {args.rate} Hz (passes through)", Audio.from_numpy(x, args.rate)),
             ("bwe 32 kHz cut at 8 kHz -> 44.1 kHz", Audio.from_numpy(low, 32000))]
    for label, audio in cases:
        stage = HarmonicBWE()
        stage.place(args.device)
        moved = audio.to(args.device)
        report(label, args.seconds, best_of(lambda s=stage, a=moved: _run(s, a, args.device), args.repeats))


if __name__ == "__main__":
    main()
