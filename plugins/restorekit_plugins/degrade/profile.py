"""The measurements that describe text-to-music output: edge, upper-band levels, flatness, envelope tracking.

`text_to_music_profile` is what the `text-to-music` degradation preset was fitted with
(docs/stages/degrade.md gives the figures of 22 real MusicGen files) and what its test
checks; `python scripts/profile_t2m.py FILE...` prints it for any files.
"""

from __future__ import annotations

import numpy as np

N_FFT = 1024
HOP = 256
REFERENCE_BAND_HZ = (1000.0, 4000.0)
EDGE_BELOW_DB = 50.0  # the edge: the highest frequency within this many dB of the 1-4 kHz level
TOP_BAND_HZ = (12000.0, 15000.0)
MID_BAND_HZ = (2000.0, 6000.0)
ENVELOPE_FRAMES = 6  # STFT frames averaged for the envelopes (~50 ms at 32 kHz)


def _power_spectrogram(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin frequencies, power spectrogram (bins, frames)) of a mono signal, Hann window."""
    from numpy.lib.stride_tricks import sliding_window_view

    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    frames = sliding_window_view(x.astype(np.float64), N_FFT)[::HOP] * np.hanning(N_FFT)
    spec = np.fft.rfft(frames, axis=-1)
    return np.fft.rfftfreq(N_FFT, 1.0 / rate), (spec.real ** 2 + spec.imag ** 2).T


def text_to_music_profile(samples: np.ndarray, rate: int) -> dict[str, float]:
    """Profile of (channels, frames) or mono audio, measured on the channel mean.

    - `edge_hz`: the highest frequency whose long-term level (smoothed over 5 bins) is
      within 50 dB of the mean level of 1-4 kHz.
    - `band_8_12_db`, `band_12_16_db`: mean power per bin of 8-12 kHz and of 12-16 kHz
      (to the Nyquist frequency if lower) relative to that of 1-4 kHz, in dB.
    - `flatness_12_15`: median over non-silent frames of the spectral flatness
      (geometric over arithmetic mean of power) of 12-15 kHz; white noise gives ~0.56,
      tones near 0. NaN when the rate has no 12-15 kHz band or it is silent.
    - `envelope_corr`: correlation over time of the log energy of 12-15 kHz with that of
      2-6 kHz, both averaged over ~50 ms: near 1 when the top octave follows the music,
      near 0 for steady hiss.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    freqs, power = _power_spectrogram(x, rate)
    longterm = power.mean(axis=1)

    def level(lo: float, hi: float) -> float:
        sel = (freqs >= lo) & (freqs < hi)
        return float(10 * np.log10(longterm[sel].mean() + 1e-30)) if sel.any() else float("nan")

    reference = level(*REFERENCE_BAND_HZ)
    smooth = 10 * np.log10(np.convolve(longterm, np.ones(5) / 5, mode="same") + 1e-30)
    inside = np.flatnonzero(smooth > reference - EDGE_BELOW_DB)
    out = {
        "edge_hz": float(freqs[inside[-1]]) if inside.size else 0.0,
        "band_8_12_db": level(8000.0, 12000.0) - reference,
        "band_12_16_db": level(12000.0, min(16000.0, rate / 2 + 1)) - reference,
        "flatness_12_15": float("nan"),
        "envelope_corr": float("nan"),
    }
    top = (freqs >= TOP_BAND_HZ[0]) & (freqs < TOP_BAND_HZ[1])
    if not top.any():
        return out
    band = np.maximum(power[top], 1e-20)
    loud = band.mean(axis=0) > 1e-10
    if loud.any():
        flatness = np.exp(np.log(band).mean(axis=0)) / band.mean(axis=0)
        out["flatness_12_15"] = float(np.median(flatness[loud]))
    kernel = np.ones(ENVELOPE_FRAMES) / ENVELOPE_FRAMES
    mid = (freqs >= MID_BAND_HZ[0]) & (freqs < MID_BAND_HZ[1])
    a = np.log10(np.convolve(power[top].sum(axis=0), kernel, "valid") + 1e-12)
    b = np.log10(np.convolve(power[mid].sum(axis=0), kernel, "valid") + 1e-12)
    if a.size > 2 and a.std() > 0 and b.std() > 0:
        out["envelope_corr"] = float(np.corrcoef(a, b)[0, 1])
    return out
