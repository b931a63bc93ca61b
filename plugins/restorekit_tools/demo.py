"""The built-in demo clip: music synthesized here, degraded like text-to-music output.

About 10 s of drums, bass, a chord pad and a plucked melody, rendered at 44.1 kHz
by this module's own code, then band-limited to ~8 kHz, given a little noise and
turned into 32 kHz mono, the way MusicGen-style output typically sounds.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

RENDER_RATE = 44100
OUTPUT_RATE = 32000
BPM = 112
# A minor - F - C - G, two bars each at 112 bpm is ~17 s; we use the first 10 s.
CHORDS = [(57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62)]
MELODY = [69, 72, 76, 74, 72, 69, 67, 69, 65, 69, 72, 69, 67, 64, 67, 71]


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _note(freq: float, dur: float, rate: int, harmonics: int, decay: float, bright: float) -> np.ndarray:
    t = np.arange(int(dur * rate)) / rate
    k = np.arange(1, harmonics + 1)[:, None]
    k = k[(k[:, 0] * freq) < rate / 2.2]
    amps = (bright ** (k - 1)) / k
    tone = (amps * np.sin(2 * np.pi * freq * k * t)).sum(axis=0)
    env = np.exp(-t / decay) * np.minimum(1.0, t / 0.005)
    return tone * env


def _render(duration_s: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(duration_s * rate)
    out = np.zeros(n)
    beat = 60.0 / BPM

    def add(x: np.ndarray, start_s: float, gain: float) -> None:
        i = int(start_s * rate)
        if i >= n:
            return
        x = x[: n - i]
        out[i:i + len(x)] += gain * x

    beats = int(duration_s / beat) + 1
    for b in range(beats):  # drums
        t0 = b * beat
        if b % 2 == 0:
            tk = np.arange(int(0.35 * rate)) / rate
            kick = np.sin(2 * np.pi * (50 * tk + 60 * (1 - np.exp(-tk * 30)) / 30)) * np.exp(-tk * 9)
            add(kick, t0, 0.5)
        else:
            ts = np.arange(int(0.25 * rate)) / rate
            snare = (rng.standard_normal(len(ts)) * 0.6 + np.sin(2 * np.pi * 190 * ts)) * np.exp(-ts * 18)
            add(snare, t0, 0.25)
        for half in (0.0, 0.5):
            th = np.arange(int(0.06 * rate)) / rate
            hat = np.diff(rng.standard_normal(len(th) + 1)) * np.exp(-th * 60)
            add(hat, t0 + half * beat, 0.08)
    bar = 4 * beat
    for c in range(int(duration_s / bar) + 1):  # chord pad and bass
        chord = CHORDS[(c // 2) % len(CHORDS)]
        for m in chord:
            add(_note(_hz(m), bar, rate, 12, 1.6, 0.75), c * bar, 0.07)
        for q in range(4):
            add(_note(_hz(chord[0] - 24), beat, rate, 8, 0.35, 0.6), c * bar + q * beat, 0.28)
    for k in range(int(duration_s / (beat / 2)) + 1):  # plucked melody in eighths
        m = MELODY[k % len(MELODY)]
        add(_note(_hz(m + 12), beat, rate, 20, 0.25, 0.8), k * beat / 2, 0.09 if k % 2 else 0.12)
    fade = int(0.05 * rate)
    out[-fade:] *= np.linspace(1, 0, fade)
    return out / (np.abs(out).max() + 1e-9) * 0.8


def make_clean_clip(duration_s: float = 10.0, seed: int = 0, rate: int = RENDER_RATE) -> np.ndarray:
    """The clean synthesized music, mono float32 at `rate` (1-D)."""
    return _render(duration_s, rate, np.random.default_rng(seed)).astype(np.float32)


def make_demo_clip(duration_s: float = 10.0, seed: int = 0):
    """The degraded demo clip as `Audio`: 32 kHz mono, ~8 kHz bandwidth, light noise."""
    import torch

    from restorekit.audio import Audio

    rng = np.random.default_rng(seed + 1)
    clean = make_clean_clip(duration_s, seed).astype(np.float64)
    sos = signal.butter(12, 8000, fs=RENDER_RATE, output="sos")
    band_limited = signal.sosfiltfilt(sos, clean)
    x = signal.resample_poly(band_limited, OUTPUT_RATE // 100, RENDER_RATE // 100)
    noise = rng.standard_normal(len(x)) * 10 ** (-50 / 20)
    y = (x + noise).astype(np.float32)[None, :]
    return Audio(torch.from_numpy(np.ascontiguousarray(y)), OUTPUT_RATE)
