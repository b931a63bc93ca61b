#!/usr/bin/env python
"""restorekit's mel filterbank, HPSS masks and Griffin-Lim against librosa's: agreement and speed.

    pip install 'restorekit[test]'                 # librosa is in the test extra
    python benchmarks/bench_librosa.py             # 30 s of 44.1 kHz stereo
    python benchmarks/bench_librosa.py --seconds 10

- mel filterbank: `restorekit_plugins.spectral.mel_filterbank` vs `librosa.filters.mel(htk=True,
  norm=None)` on the configurations the project uses; max |difference| and time per call.
- HPSS: the harmonic soft mask of `separate.hpss` (`_hpss.harmonic_mask`, the stage's
  kernels) vs `librosa.decompose.hpss(mask=True)` on the same magnitude; max |difference|,
  harmonic energy share, time; and the whole `separate.hpss` for scale.
- Griffin-Lim: `mel_resynth.resynthesize` on an all-zero input (every band missing, so it
  is plain fast Griffin-Lim, momentum 0.99) vs `librosa.griffinlim` towards the same
  magnitude (`fill_magnitude`) with the same STFT; spectral convergence and time.
- cold import: a fresh interpreter importing librosa (and making one filterbank) vs
  restorekit's.

Input: a synthetic mix (six vibrato partials, percussive clicks every 0.25 s, a little noise).
Times are the best of `--repeats` runs, on the CPU, torch at its default thread count.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch


def best(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def mix(rate: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = np.zeros((2, n))
    for k, f0 in enumerate([110, 220, 330, 440, 554, 659]):
        x += (0.1 / (k + 1)) * np.sin(2 * np.pi * f0 * t * (1 + 0.002 * np.sin(2 * np.pi * 0.3 * t)))[None]
    clicks = np.zeros(n)
    for start in np.arange(0.05, seconds - 0.05, 0.25):
        i = int(start * rate)
        clicks[i:i + 800] += 0.5 * rng.standard_normal(800) * np.exp(-np.arange(800) / 120)
    x[0] += clicks
    x[1] += 0.8 * clicks
    return (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)


def cold_imports() -> None:
    for stmt in ("import librosa; librosa.filters.mel(sr=22050, n_fft=512)",
                 "from restorekit.metrics import mel_filterbank; mel_filterbank(22050, 512, 64)"):
        times = []
        for _ in range(3):
            code = f"import time; s = time.perf_counter(); {stmt}; print(time.perf_counter() - s)"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            times.append(float(out.stdout.split()[-1]))
        print(f"cold `{stmt}`: {min(times):.2f} s")


def filterbanks(repeats: int) -> None:
    import librosa

    from restorekit_plugins.spectral import mel_filterbank

    print("\n== mel filterbank: mel_filterbank vs librosa.filters.mel(htk=True, norm=None)")
    for rate, n_fft, n_mels, fmin, fmax in [(22050, 1024, 40, 0.0, 8000.0), (32000, 1024, 128, 0.0, 16000.0),
                                            (32000, 1024, 64, 0.0, None), (44100, 1412, 128, 0.0, 16000.0),
                                            (48000, 2048, 80, 20.0, 20000.0), (44100, 2048, 128, 0.0, None)]:
        t_own, own = best(lambda: mel_filterbank(rate, n_fft, n_mels, fmin, fmax), repeats * 10)
        t_lib, lib = best(lambda: librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                                      htk=True, norm=None, dtype=np.float64), repeats * 10)
        print(f"{rate} Hz, n_fft {n_fft}, {n_mels} mels, {fmin:g}-{fmax} Hz: max |diff| {np.abs(own - lib).max():.1e}; "
              f"own {t_own * 1e3:.2f} ms, librosa {t_lib * 1e3:.2f} ms")


def hpss(x: np.ndarray, rate: int, repeats: int) -> None:
    import librosa

    from restorekit_plugins.separate import _hpss

    settings = _hpss.HpssSettings()
    n_fft = _hpss.fft_size(rate)
    hop = n_fft // 4
    h_frames = _hpss._odd(settings.harmonic_kernel_ms / 1000 * rate / hop)
    p_bins = _hpss._odd(settings.percussive_kernel_hz / (rate / n_fft))
    spec = librosa.stft(x, n_fft=n_fft, hop_length=hop)
    mag = np.abs(spec)
    print(f"\n== HPSS masks, magnitude {mag.shape}, kernels {h_frames} frames x {p_bins} bins")
    t_own, own = best(lambda: _hpss.harmonic_mask(mag, h_frames, p_bins, settings.mask_power), repeats)
    t_lib, lib = best(lambda: librosa.decompose.hpss(mag, kernel_size=(h_frames, p_bins), power=settings.mask_power,
                                                     mask=True)[0], repeats)
    def share(mask):  # of the energy in the harmonic part
        return float(((mask * mag) ** 2).sum() / (mag ** 2).sum())

    print(f"max |diff| {np.abs(own - lib).max():.1e}; harmonic energy share own {share(own):.6f}, "
          f"librosa {share(lib):.6f}; own {t_own:.2f} s, librosa {t_lib:.2f} s")
    t_stage, _ = best(lambda: _hpss.separate(x, rate, settings), 1)
    print(f"whole separate.hpss (STFT, masks, bass, vocals, inverse STFT, blocks): {t_stage:.2f} s")


def griffin_lim(x: np.ndarray, rate: int, repeats: int) -> None:
    import librosa

    from restorekit_plugins.mel_resynth import fill_magnitude, resynthesize
    from restorekit_plugins.nets.crnn_mel import MelFrontend

    front = MelFrontend(rate)
    n = x.shape[-1]
    spec = front.stft(torch.from_numpy(x))
    target = front.spec_mel(spec)
    zero = torch.zeros_like(spec)
    mag = fill_magnitude(front, target) * (front.bin_share.sum(0) > 0.5)[None, :, None]

    def convergence_db(y: torch.Tensor) -> float:
        return float(20 * torch.log10((front.stft(y).abs() - mag).norm() / mag.norm()))

    print(f"\n== fast Griffin-Lim (momentum 0.99), STFT {front.n_fft}/{front.hop}, {tuple(spec.shape)}")
    for iterations in (2, 32):
        t_own, own = best(lambda: resynthesize(front, zero, target, n, iterations=iterations), repeats)
        t_lib, lib = best(lambda: librosa.griffinlim(
            (mag / front.scale).numpy(), n_iter=iterations, hop_length=front.hop, n_fft=front.n_fft, window="hann",
            center=True, pad_mode="reflect", momentum=0.99, init="random", random_state=0, length=n), repeats)
        print(f"{iterations} iterations: spectral convergence own {convergence_db(own):.2f} dB, librosa "
              f"{convergence_db(torch.from_numpy(lib)):.2f} dB; own (torch) {t_own:.2f} s, librosa {t_lib:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import librosa

    print(f"librosa {librosa.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}; {args.seconds:g} s of {args.rate} Hz stereo")
    cold_imports()
    filterbanks(args.repeats)
    x = mix(args.rate, args.seconds)
    hpss(x, args.rate, args.repeats)
    griffin_lim(x, args.rate, args.repeats)


if __name__ == "__main__":
    main()
