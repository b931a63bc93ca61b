"""Spectral helpers shared by the built-in metrics, models and reports (and open to metric authors).

Blockwise STFT with bounded memory, the periodic Hann window and an HTK mel filterbank
(identical to librosa's `filters.mel(htk=True, norm=None)`; tests/test_metrics.py checks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from restorekit.metrics import MetricError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def stft_blocks(x: np.ndarray, n_fft: int, hop: int, block_frames: int = 256,
                center: bool = True) -> Iterator[np.ndarray]:
    """Complex STFT of (channels, frames) `x` in blocks of STFT frames, (channels, frames, bins) each.

    Periodic Hann window. With `center`, frames are centred (zero padding of n_fft/2 at
    both ends), so n samples give 1 + n // hop frames; without it, only frames that lie
    inside the signal are taken, 1 + (n - n_fft) // hop of them (a signal shorter than
    n_fft is zero-padded to one frame). Memory stays at one block, whatever the length
    of `x`; within a block everything is vectorized.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import fft

    x = np.asarray(x, dtype=np.float32)
    n = x.shape[-1]
    pad = n_fft // 2 if center else 0
    total = 1 + n // hop if center else 1 + max(0, n - n_fft) // hop
    window = hann(n_fft).astype(np.float32)
    for f0 in range(0, total, block_frames):
        nb = min(block_frames, total - f0)
        start = f0 * hop - pad
        stop = start + (nb - 1) * hop + n_fft
        seg = x[:, max(start, 0):min(stop, n)]
        if start < 0 or stop > n:
            seg = np.pad(seg, ((0, 0), (max(0, -start), max(0, stop - n))))
        frames = sliding_window_view(seg, n_fft, axis=-1)[:, ::hop][:, :nb]
        yield fft.rfft(frames * window, axis=-1)


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length n (float64)."""
    import numpy as np

    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float = 0.0,
                   fmax_hz: float | None = None) -> np.ndarray:
    """Triangular mel filters (HTK mel scale, peak 1), shaped (n_mels, n_fft // 2 + 1)."""
    import numpy as np

    fmax_hz = sample_rate / 2 if fmax_hz is None else min(fmax_hz, sample_rate / 2)
    if fmin_hz >= fmax_hz:
        raise MetricError(f"mel band {fmin_hz:g}-{fmax_hz:g} Hz is empty at {sample_rate} Hz")
    mel = np.linspace(_hz_to_mel(fmin_hz), _hz_to_mel(fmax_hz), n_mels + 2)
    edges = 700.0 * (10 ** (mel / 2595.0) - 1)
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1 + hz / 700.0)
