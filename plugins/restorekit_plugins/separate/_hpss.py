"""The weightless separator behind `separate.hpss`: median-filter HPSS, a bass band, a vocal estimate.

Per STFT bin (Hann window of about 46 ms, hop a quarter of it):

- harmonic/percussive soft masks from median filters of the magnitude along time
  (sustained partials) and along frequency (broadband hits), as in Fitzgerald (2010) and
  `librosa.decompose.hpss`; `drums` is the percussive part;
- `bass` is the harmonic part below `bass_crossover_hz` (raised-cosine crossover, one
  octave wide);
- `vocals` is the harmonic part in the vocal band that is also *centred* (stereo: bins
  where left and right agree in level and phase) or *not repeating* (mono: REPET-SIM,
  nearest-neighbour filtering of frames as in `librosa.decompose.nn_filter`);
- `other` is the input minus the three others, so the stems sum to the input exactly.

Long input runs in blocks of ~20 s with enough context on each side that the masks of a
block's core do not depend on where it was cut, cross-faded over 0.25 s; temporaries are
the size of a block. numpy/scipy/torch are imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

BLOCK_S = 20.0
FADE_S = 0.25
WINDOW_S = 0.0464  # 2048 samples at 44.1 kHz
EPS = 1e-10
MONO_SIDE_DB = -30.0  # side/mid energy below this: treat stereo as mono (no centre cue)
REPEAT_NEIGHBOURS = 10
REPEAT_MIN_GAP_S = 1.0  # neighbours are frames at least this far away (REPET-SIM)


@dataclass(frozen=True)
class HpssSettings:
    harmonic_kernel_ms: float = 200.0
    percussive_kernel_hz: float = 500.0
    mask_power: float = 2.0
    bass_crossover_hz: float = 180.0
    vocal_low_hz: float = 200.0
    vocal_high_hz: float = 8000.0
    vocal_method: str = "auto"  # auto | centre | repeat


def fft_size(sample_rate: int) -> int:
    return 1 << max(6, round(math.log2(WINDOW_S * sample_rate)))


def _odd(n: float) -> int:
    n = max(1, round(n))
    return n if n % 2 else n + 1


def _band(freqs: np.ndarray, low_hz: float | None, high_hz: float | None) -> np.ndarray:
    """Weights in [0, 1] over `freqs`: a band with raised-cosine edges one octave wide (log frequency)."""
    import numpy as np

    f = np.maximum(freqs, 1e-3)
    w = np.ones_like(f)
    if low_hz is not None:  # rises from low/sqrt2 to low*sqrt2
        t = np.clip((np.log2(f / low_hz) + 0.5), 0.0, 1.0)
        w *= 0.5 - 0.5 * np.cos(np.pi * t)
    if high_hz is not None:
        t = np.clip((np.log2(high_hz / f) + 0.5), 0.0, 1.0)
        w *= 0.5 - 0.5 * np.cos(np.pi * t)
    return w.astype(np.float32)


def _softmask(x: np.ndarray, ref: np.ndarray, power: float) -> np.ndarray:
    """x^p / (x^p + ref^p), 0.5 where both are zero (librosa.util.softmask without the margin)."""
    import numpy as np

    scale = np.maximum(np.maximum(x, ref), EPS)
    xp = (x / scale) ** power
    rp = (ref / scale) ** power
    total = xp + rp
    return np.divide(xp, total, out=np.full_like(xp, 0.5), where=total > 0)


def harmonic_mask(mag: np.ndarray, harmonic_frames: int, percussive_bins: int, power: float) -> np.ndarray:
    """Harmonic soft mask of a magnitude spectrogram (..., frequency, frames), as librosa.decompose.hpss(mask=True).

    Median filter along time (sustained partials) against median filter along frequency
    (broadband hits); the percussive mask is 1 minus this one.
    """
    from scipy.ndimage import median_filter

    lead = (1,) * (mag.ndim - 2)
    harm = median_filter(mag, size=(*lead, 1, harmonic_frames), mode="reflect")
    perc = median_filter(mag, size=(*lead, percussive_bins, 1), mode="reflect")
    return _softmask(harm, perc, power)


def _repeat_mask(mag: np.ndarray, hop_s: float, power: float) -> np.ndarray:
    """REPET-SIM foreground mask (frequency, frames): what the most similar distant frames lack."""
    import numpy as np
    import torch

    frames = mag.shape[1]
    gap = max(1, round(REPEAT_MIN_GAP_S / hop_s))
    candidates = frames - (2 * gap - 1)
    k = min(REPEAT_NEIGHBOURS, candidates - 1)
    if k < 2:  # too short to find repetitions: no evidence either way
        return np.full(mag.shape, 0.5, dtype=np.float32)
    v = torch.from_numpy(np.ascontiguousarray(mag))
    unit = v / v.norm(dim=0, keepdim=True).clamp_min(EPS)
    sim = unit.T @ unit  # (frames, frames) cosine similarity
    idx = torch.arange(frames)
    sim[(idx[:, None] - idx[None, :]).abs() < gap] = -math.inf
    nearest = sim.topk(k, dim=1).indices  # (frames, k)
    background = v[:, nearest].median(dim=-1).values.numpy()  # (freq, frames, k) -> (freq, frames)
    background = np.minimum(background, mag)
    return _softmask(mag - background, background, power)


def _block_stems(x: np.ndarray, sample_rate: int, s: HpssSettings, method: str):
    """drums, bass, vocals for one block (channels, frames) as time signals of the same shape."""
    import numpy as np
    import torch

    channels, length = x.shape
    n_fft = fft_size(sample_rate)
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(torch.from_numpy(x), n_fft, hop, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (channels, freq, frames)
    mag = spec.abs().numpy()
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    h_frames = _odd(s.harmonic_kernel_ms / 1000 * sample_rate / hop)
    p_bins = _odd(s.percussive_kernel_hz / (sample_rate / n_fft))
    m_harm = harmonic_mask(mag, h_frames, p_bins, s.mask_power)
    low = _band(freqs, None, s.bass_crossover_hz)[:, None]
    vocal_band = (_band(freqs, s.vocal_low_hz, s.vocal_high_hz)[:, None] * (1.0 - low)).astype(np.float32)
    if method == "centre":
        left, right = spec[0], spec[1]
        agree = 2.0 * (left * right.conj()).real / (left.abs() ** 2 + right.abs() ** 2).clamp_min(EPS)
        fore = agree.clamp(0.0, 1.0).numpy() ** 2
    else:
        fore = _repeat_mask(mag.mean(axis=0), hop / sample_rate, s.mask_power)
    masks = np.stack([1.0 - m_harm, m_harm * low, m_harm * vocal_band * fore[None]])  # drums, bass, vocals
    del m_harm, mag
    masked = (spec[None] * torch.from_numpy(masks.astype(np.float32, copy=False))).reshape(3 * channels, *spec.shape[1:])
    out = torch.istft(masked, n_fft, hop, window=window, center=True, length=length)
    return out.reshape(3, channels, length).numpy()  # drums, bass, vocals


def choose_method(x: np.ndarray, requested: str) -> str:
    """centre for real stereo, repeat for mono or stereo with (almost) no side signal."""
    import numpy as np

    if requested != "auto":
        return requested if (requested == "repeat" or x.shape[0] == 2) else "repeat"
    if x.shape[0] != 2:
        return "repeat"
    mid = 0.5 * (x[0] + x[1])
    side = 0.5 * (x[0] - x[1])
    ratio_db = 10 * np.log10((np.mean(side.astype(np.float64) ** 2) + EPS) /
                             (np.mean(mid.astype(np.float64) ** 2) + EPS))
    return "centre" if ratio_db > MONO_SIDE_DB else "repeat"


def separate(x: np.ndarray, sample_rate: int, settings: HpssSettings) -> tuple[np.ndarray, str]:
    """(drums, bass, other, vocals) of `x` (channels, frames) as (4, channels, frames), and the method used."""
    import numpy as np

    channels, frames = x.shape
    method = choose_method(x, settings.vocal_method)
    n_fft = fft_size(sample_rate)
    hop = n_fft // 4
    block = max(hop, round(BLOCK_S * sample_rate / hop) * hop)
    fade = min(round(FADE_S * sample_rate), block // 4)
    h_frames = _odd(settings.harmonic_kernel_ms / 1000 * sample_rate / hop)
    # context so that a block's core (plus fade) sees the same STFT frames and median windows as
    # the whole signal would; REPET-SIM also wants room for its neighbours
    context = math.ceil((fade + (h_frames // 2 + 2) * hop + n_fft) / hop) * hop
    stems = np.zeros((4, channels, frames), dtype=np.float32)
    bounds = block_bounds(frames, block)
    for i, (start, stop) in enumerate(bounds):
        lo = start - context
        hi = stop + context
        seg = np.zeros((channels, hi - lo), dtype=np.float32)
        a, b = max(lo, 0), min(hi, frames)
        seg[:, a - lo:b - lo] = x[:, a:b]
        parts = _block_stems(seg, sample_rate, settings, method)  # drums, bass, vocals
        o_lo = start - fade if i > 0 else 0
        o_hi = stop + fade if i < len(bounds) - 1 else frames
        weight = np.ones(o_hi - o_lo, dtype=np.float32)
        if i > 0:
            weight[:2 * fade] = _rising(2 * fade)
        if i < len(bounds) - 1:
            n = o_hi - (stop - fade)
            weight[-n:] *= 1.0 - _rising(2 * fade)[:n]
        piece = parts[:, :, o_lo - lo:o_hi - lo] * weight
        stems[0, :, o_lo:o_hi] += piece[0]
        stems[1, :, o_lo:o_hi] += piece[1]
        stems[3, :, o_lo:o_hi] += piece[2]
    np.subtract(x, stems[0] + stems[1] + stems[3], out=stems[2])  # other: exactly what is left
    return stems, method


def block_bounds(frames: int, block: int) -> list[tuple[int, int]]:
    """(start, stop) of blocks of `block` frames; a short remainder joins the last block."""
    n = max(1, frames // block)
    if frames - n * block >= block // 2:
        n += 1
    starts = [i * block for i in range(n)]
    return [(s, starts[i + 1] if i + 1 < n else frames) for i, s in enumerate(starts)]


def _rising(n: int) -> np.ndarray:
    """Raised-cosine fade-in of n samples; rising(n) + rising(n)[::-1] == 1."""
    import numpy as np

    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
