"""A small 2-D U-Net over (frequency, time) for the super-resolution flow (`sr.flow`).

Input channels: the current state x_t (2: real and imaginary part of the compressed
spectrum), the condition (2: the input's compressed spectrum, zero where missing), the
mask of the band to generate (1) and the absolute frequency of each bin (1), so the
network knows where in the spectrum a cropped region lies. The flow time t enters as a
learned per-channel bias at every level. Each level is a residual block of two 3x3
convolutions; down-sampling is a stride-2 convolution over both axes, up-sampling
nearest-neighbour repetition after a 1x1 convolution at the coarse level, skips are added.
The head predicts the clean compressed spectrum (x-prediction) as a correction added to
skip_scale(t) * x_t (an EDM-style skip: at t = 0 the state is the prior's noise and nothing
of it passes; towards t = 1 the state passes through).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

IN_CHANNELS = 6
OUT_CHANNELS = 2


def time_features(t: torch.Tensor, dims: int = 16) -> torch.Tensor:
    """Sinusoidal features of flow times t (batch,) in [0, 1]: (batch, dims)."""
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), dims // 2, device=t.device, dtype=t.dtype))
    angle = t[:, None] * freqs[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def skip_scale(t: torch.Tensor) -> torch.Tensor:
    """How much of the state x_t the x1 estimate passes through: t / (t^2 + (1 - t)^2), the best linear
    estimate of x1 from x_t = (1 - t) x0 + t x1 when prior and data have equal variance (0 at t = 0, where
    x_t is the prior's noise and must not leak into the estimate; 1 at t = 1/2 and t = 1)."""
    return t / (t * t + (1 - t) * (1 - t))


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv1(x).add_(bias[:, :, None, None]))  # in place on the convolutions' fresh outputs:
        return self.conv2(h).add_(x)  # two full-size temporaries fewer per block (autograd needs neither)


class FlowUNet2d(nn.Module):
    """(batch, 6, freq, time) -> (batch, 2, freq, time); freq and time multiples of `multiple`."""

    def __init__(self, channels: int = 16, depth: int = 4, max_channels: int = 256, time_dims: int = 16):
        super().__init__()
        widths = [min(channels * 2 ** i, max_channels) for i in range(depth + 1)]
        self.widths = widths
        self.multiple = 2 ** depth
        self.time_dims = time_dims
        self.time_mlp = nn.Sequential(nn.Linear(time_dims, 64), nn.GELU())
        self.stem = nn.Conv2d(IN_CHANNELS, widths[0], 3, padding=1)
        self.enc = nn.ModuleList(ResBlock(w) for w in widths[:-1])
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = ResBlock(widths[-1])
        self.up = nn.ModuleList(nn.Conv2d(b, a, 1) for a, b in zip(widths[:-1], widths[1:]))
        self.dec = nn.ModuleList(ResBlock(w) for w in widths[:-1])
        self.bias_enc = nn.ModuleList(nn.Linear(64, w) for w in widths[:-1])
        self.bias_mid = nn.Linear(64, widths[-1])
        self.bias_dec = nn.ModuleList(nn.Linear(64, w) for w in widths[:-1])
        self.head = nn.Conv2d(widths[0], OUT_CHANNELS, 3, padding=1)

    def forward(self, inputs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(time_features(t.to(inputs.dtype), self.time_dims))
        h = self.stem(inputs)
        skips = []
        for block, down, bias in zip(self.enc, self.down, self.bias_enc):
            h = block(h, bias(emb))
            skips.append(h)
            h = down(h)
        h = self.mid(h, self.bias_mid(emb))
        for i in reversed(range(len(self.dec))):  # each skip is popped: freed as soon as it is added
            h = F.interpolate(self.up[i](h), scale_factor=2.0, mode="nearest").add_(skips.pop())
            h = self.dec[i](h, self.bias_dec[i](emb))
        return skip_scale(t)[:, None, None, None].to(inputs.dtype) * inputs[:, :OUT_CHANNELS] + self.head(F.gelu(h))
