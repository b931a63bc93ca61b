"""A dilated 1-D convolution stack over STFT frames: band levels in, band levels out (srenvelope)."""

from __future__ import annotations

import torch
from torch import nn


class EnvelopeTCN(nn.Module):
    """(B, in_channels, T) -> (B, bands, T); residual blocks of a dilated 3-tap and a 1x1 convolution."""

    def __init__(self, in_channels: int, bands: int, channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.inp = nn.Conv1d(in_channels, channels, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv1d(channels, channels, 3, dilation=d, padding=d), nn.GELU(),
                          nn.Conv1d(channels, channels, 1))
            for d in dilations)
        self.out = nn.Conv1d(channels, bands, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)
