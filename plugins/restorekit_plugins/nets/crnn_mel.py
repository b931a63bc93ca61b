"""The mel front end and the CRNN that restores normalized log-mel spectrograms.

`MelFrontend` turns waveforms at any rate into the model's features: the magnitude STFT
with frames of fixed duration (32 ms window, 10 ms hop at every rate, so one bin is
31.25 Hz wide everywhere), scaled so a full-scale sine peaks at 1, summed into mel
bands up to 16 kHz, in dB, mapped linearly from [FLOOR_DB, TOP_DB] to [0, 1]. The
scale is absolute (not per clip), so chunks of one track get consistent features.

`CRNNMel` maps (batch, 1, mels, frames) features in [0, 1] to restored features: three
convolutional encoder blocks (BatchNorm, GELU, dropout; each halves the mel axis), a
bidirectional GRU over time at the bottleneck, and a decoder of transposed convolutions
with additive skips from the encoder and residual blocks. `direct` predicts the clean
features (sigmoid); `residual` predicts a correction added to the input (its last layer
starts at zero, so an untrained residual model is the identity).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MODEL_RATE = 32000
WINDOW_S = 0.032
HOP_S = 0.010
FMAX_HZ = 16000.0
FLOOR_DB = -100.0
TOP_DB = 10.0


class MelFrontend(nn.Module):
    """Waveform (batch, frames) at `sample_rate` <-> complex STFT <-> normalized log-mel."""

    def __init__(self, sample_rate: int, n_mels: int = 128):
        super().__init__()
        from restorekit_plugins.spectral import mel_filterbank

        if sample_rate < 2 * FMAX_HZ:
            raise ValueError(f"the mel front end needs at least {2 * FMAX_HZ:g} Hz, got {sample_rate}")
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.n_fft = 2 * round(WINDOW_S * sample_rate / 2)
        self.hop = round(HOP_S * sample_rate)
        window = torch.hann_window(self.n_fft, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)
        self.scale = float(2.0 / window.sum())  # a full-scale sine peaks at 1
        fb = torch.from_numpy(mel_filterbank(sample_rate, self.n_fft, n_mels, 0.0, FMAX_HZ).astype(np.float32))
        self.register_buffer("fb", fb, persistent=False)  # (mels, bins)
        # per bin, each band's share of the filter weight covering it (columns sum to 1; 0 above the mel range)
        self.register_buffer("bin_share", fb / fb.sum(0).clamp_min(1e-6), persistent=False)
        self.register_buffer("band_bins", fb.sum(1), persistent=False)  # effective bins per band

    @property
    def frame_multiple(self) -> int:
        return self.hop

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, frames) -> complex (batch, bins, steps), scaled."""
        spec = torch.stft(x.float(), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True)
        return spec * self.scale

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec / self.scale, self.n_fft, self.hop, window=self.window, center=True,
                           length=length)

    def mel_power(self, power: torch.Tensor) -> torch.Tensor:
        """(batch, bins, steps) power -> (batch, mels, steps)."""
        return torch.einsum("mk,bkt->bmt", self.fb, power)

    def spec_mel(self, spec: torch.Tensor) -> torch.Tensor:
        """Mel power of a complex STFT from `stft`."""
        return self.mel_power(spec.real.square() + spec.imag.square())

    def to_bins(self, per_band: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """(batch, mels, steps) values -> (batch, bins lo:hi, steps), interpolated with the filters' weights."""
        return torch.einsum("mk,bmt->bkt", self.bin_share[:, lo:hi], per_band)

    @staticmethod
    def normalize(mel_power: torch.Tensor) -> torch.Tensor:
        db = 10 * torch.log10(mel_power.clamp_min(10 ** (FLOOR_DB / 10)))
        return ((db - FLOOR_DB) / (TOP_DB - FLOOR_DB)).clamp(0.0, 1.0)

    @staticmethod
    def denormalize(features: torch.Tensor) -> torch.Tensor:
        """Normalized features -> mel power."""
        db = features.clamp(0.0, 1.0) * (TOP_DB - FLOOR_DB) + FLOOR_DB
        return torch.pow(10.0, db / 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, frames) waveform -> (batch, 1, mels, steps) features in [0, 1]."""
        return self.normalize(self.spec_mel(self.stft(x)))[:, None]


class _ConvBlock(nn.Module):
    """conv 3x3 -> BatchNorm -> GELU -> dropout, with a 1x1 (or identity) residual path."""

    def __init__(self, cin: int, cout: int, dropout: float, stride=(1, 1)):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.norm = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout2d(dropout)
        self.skip = (nn.Identity() if cin == cout and stride == (1, 1)
                     else nn.Conv2d(cin, cout, 1, stride=stride))

    def forward(self, x):
        return self.drop(F.gelu(self.norm(self.conv(x)))) + self.skip(x)


class CRNNMel(nn.Module):
    """Convolutional encoder, BiGRU bottleneck over time, transposed-convolution decoder."""

    def __init__(self, n_mels: int = 128, channels: int = 16, gru_hidden: int = 128, dropout: float = 0.1,
                 mode: str = "residual"):
        super().__init__()
        if mode not in ("direct", "residual"):
            raise ValueError(f"mode must be direct or residual, got {mode!r}")
        if n_mels % 8:
            raise ValueError(f"n_mels must be a multiple of 8 (three halvings), got {n_mels}")
        self.mode, self.n_mels = mode, n_mels
        widths = [channels, channels * 2, channels * 4]
        self.stem = _ConvBlock(1, widths[0], dropout)
        self.enc = nn.ModuleList([
            _ConvBlock(widths[0], widths[0], dropout, stride=(2, 1)),
            _ConvBlock(widths[0], widths[1], dropout, stride=(2, 1)),
            _ConvBlock(widths[1], widths[2], dropout, stride=(2, 1)),
        ])
        bottom = widths[2] * (n_mels // 8)
        self.to_gru = nn.Linear(bottom, 2 * gru_hidden)
        self.gru = nn.GRU(2 * gru_hidden, gru_hidden, batch_first=True, bidirectional=True)
        self.from_gru = nn.Linear(2 * gru_hidden, bottom)
        ups = [widths[2], widths[1], widths[0], widths[0]]
        self.up = nn.ModuleList([nn.ConvTranspose2d(ups[i], ups[i + 1], (4, 3), stride=(2, 1), padding=(1, 1))
                                 for i in range(3)])
        self.dec = nn.ModuleList([_ConvBlock(ups[i + 1], ups[i + 1], dropout) for i in range(3)])
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)
        if mode == "residual":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, mels, steps) in [0, 1] -> same shape (unclamped in residual mode)."""
        h = self.stem(x)
        skips = []
        for block in self.enc:
            skips.append(h)
            h = block(h)
        b, c, m, t = h.shape
        seq = h.permute(0, 3, 1, 2).reshape(b, t, c * m)
        seq, _ = self.gru(F.gelu(self.to_gru(seq)))
        h = h + self.from_gru(seq).reshape(b, t, c, m).permute(0, 2, 3, 1)
        for up, dec in zip(self.up, self.dec):
            h = dec(F.gelu(up(h)) + skips.pop())
        out = self.head(h)
        return x + out if self.mode == "residual" else torch.sigmoid(out)

    def restore(self, features: torch.Tensor) -> torch.Tensor:
        """Restored features in [0, 1] (inference)."""
        return self.forward(features).clamp(0.0, 1.0)


def high_frequency_weights(n_mels: int, device=None) -> torch.Tensor:
    """Per-mel-band loss weights rising linearly from 1 to 3, normalized to mean 1: (mels, 1)."""
    w = 1.0 + 2.0 * torch.arange(n_mels, device=device, dtype=torch.float32) / max(1, n_mels - 1)
    return (w / w.mean())[:, None]


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean sqrt((x - y)^2 + eps^2): a smooth L1."""
    return torch.sqrt((x - y).square() + eps * eps).mean()

