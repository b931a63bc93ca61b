"""A small CNN on log-mel spectrograms that predicts a quality score on a 1-5 scale."""

from __future__ import annotations

import torch
from torch import nn


class LogMel(nn.Module):
    """Waveform (batch, frames) to log-mel in dB (batch, n_mels, time), differentiable."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop: int = 320, n_mels: int = 64):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        from restorekit_plugins.spectral import mel_filterbank

        fb = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)).to(torch.float32)
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = torch.matmul(self.fb, power)
        return 10.0 * torch.log10(mel + 1e-10)


class QualityCNN(nn.Module):
    """Log-mel → 4 conv blocks (BatchNorm, GELU, pooling) → global pooling → score in [1, 5].

    The log-mel is referenced to the clip's own loudest bin (so the score does not
    depend on playback level) and clamped to an 80 dB range.
    """

    def __init__(self, sample_rate: int = 32000, channels: int = 16, n_mels: int = 64, dropout: float = 0.1):
        super().__init__()
        self.features = LogMel(sample_rate, n_mels=n_mels)
        layers, cin = [], 1
        for i in range(4):
            cout = channels * 2 ** i
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.GELU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.GELU(),
                       nn.MaxPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * cin, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, 1, frames) or (batch, frames) waveforms → (batch,) scores in [1, 5]."""
        if audio.ndim == 3:
            audio = audio[:, 0]
        mel = self.features(audio)
        mel = mel - mel.amax(dim=(1, 2), keepdim=True)
        mel = (mel.clamp_min(-80.0) + 40.0) / 40.0
        h = self.body(mel[:, None])
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return 1.0 + 4.0 * torch.sigmoid(self.head(h)[:, 0])


def quality_loss(model: QualityCNN, audio: torch.Tensor) -> torch.Tensor:
    """A perceptual loss for training other models: 5 minus the predicted score, on a 0-1 scale."""
    return ((5.0 - model(audio)) / 4.0).mean()


