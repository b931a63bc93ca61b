"""A 1-D convolutional U-Net on waveforms that predicts a residual correction."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x))


class UNet1d(nn.Module):
    """Encoder-decoder with skip connections; output = input + a learned residual.

    Each level downsamples by `stride` with a strided convolution and widens the
    channels by `growth`; the decoder mirrors it and concatenates the skips. It upsamples
    with `upsample="nearest"` (nearest-neighbour repetition, then a convolution) or
    `"transposed"` (transposed convolutions, the v1-v3 design). Transposed convolutions
    turn the constant (bias) part of their input into a pattern that repeats every
    `stride` frames at each level, i.e. fixed tones at multiples of rate / stride**depth
    (125 Hz at 32 kHz) in every output, silence included (v3: 15 kHz at -93 dBFS);
    nearest-neighbour upsampling keeps a constant constant. The last layer starts at zero,
    so an untrained network is the identity. Input and output are (batch, 1, frames); any
    length is accepted (padded internally to a multiple of stride**depth).
    """

    def __init__(self, channels: int = 16, depth: int = 3, stride: int = 4, kernel: int = 9, growth: int = 2,
                 upsample: str = "nearest"):
        super().__init__()
        if upsample not in ("nearest", "transposed"):
            raise ValueError(f"upsample must be 'nearest' or 'transposed', got {upsample!r}")
        self.depth, self.stride, self.upsample = depth, stride, upsample
        widths = [channels * growth ** i for i in range(depth + 1)]
        self.stem = _Block(1, widths[0], kernel)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i in range(depth):
            self.down.append(nn.Conv1d(widths[i], widths[i + 1], 2 * stride, stride=stride, padding=stride // 2))
            self.enc.append(_Block(widths[i + 1], widths[i + 1], kernel))
        self.bottleneck = _Block(widths[-1], widths[-1], kernel)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            if upsample == "transposed":
                self.up.append(nn.ConvTranspose1d(widths[i + 1], widths[i], 2 * stride, stride=stride,
                                                  padding=stride // 2))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=stride, mode="nearest"),
                                             nn.Conv1d(widths[i + 1], widths[i], 2 * stride - 1, padding=stride - 1)))
            self.dec.append(_Block(2 * widths[i], widths[i], kernel))
        self.head = nn.Conv1d(widths[0], 1, kernel, padding=kernel // 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        return self.stride ** self.depth

    def receptive_field(self) -> int:
        """Frames of context on each side that influence one output frame (an upper bound)."""
        k = self.stem.conv.kernel_size[0]
        total, scale = k // 2, 1
        for _ in range(self.depth):
            total += scale * self.stride  # strided conv
            scale *= self.stride
            total += scale * (k // 2)
        total += scale * (k // 2)  # bottleneck
        for _ in range(self.depth):
            total += scale * (k // 2) + scale  # decoder conv at the coarse level; upsampling holds one frame
            if self.upsample == "nearest":  # and the convolution after the repetition reaches stride - 1 fine frames
                total += (self.stride - 1) * (scale // self.stride)
            scale //= self.stride
        return total + k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        pad = (-n) % self.multiple
        h = F.pad(x, (0, pad)) if pad else x
        h = self.stem(h)
        skips = []
        for down, enc in zip(self.down, self.enc):
            skips.append(h)
            h = enc(F.gelu(down(h)))
        h = self.bottleneck(h)
        for up, dec in zip(self.up, self.dec):
            skip = skips.pop()
            h = F.gelu(up(h))[..., :skip.shape[-1]]
            h = dec(torch.cat([h, skip], dim=1))
        return x + self.head(h)[..., :n]
