"""The `Audio` type: samples shaped (channels, frames) with the sample rate they were taken at."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Audio:
    """Float32 samples shaped (channels, frames) and their sample rate in Hz.

    The layout is fixed and never guessed: a 1-D array is refused rather than taken as
    mono, because a (frames, channels) array passed by mistake would look the same.
    """

    samples: torch.Tensor
    sample_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.samples, torch.Tensor):
            raise TypeError(f"Audio.samples must be a torch.Tensor, got {type(self.samples).__name__}")
        if self.samples.ndim != 2:
            raise ValueError(
                f"Audio.samples must be shaped (channels, frames), got {tuple(self.samples.shape)}; "
                "use samples[None] for mono"
            )
        if self.samples.dtype != torch.float32:
            raise TypeError(f"Audio.samples must be float32, got {self.samples.dtype}")
        if int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise ValueError(f"Audio.sample_rate must be a positive integer, got {self.sample_rate!r}")
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    @classmethod
    def from_numpy(cls, samples: np.ndarray, sample_rate: int) -> Audio:
        """Wrap a float32 (channels, frames) array without copying it."""
        if samples.dtype != np.float32:
            raise TypeError(f"expected a float32 array, got {samples.dtype}")
        return cls(torch.from_numpy(samples), sample_rate)

    def numpy(self) -> np.ndarray:
        """The samples as a (channels, frames) numpy array; no copy when they live on the CPU."""
        return self.samples.detach().cpu().numpy()

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def frames(self) -> int:
        return self.samples.shape[1]

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def device(self) -> torch.device:
        return self.samples.device

    def to(self, device: str | torch.device) -> Audio:
        """The same audio on `device`; returns self when it is already there."""
        device = torch.device(device)
        if self.samples.device == device or (
            device.type == self.samples.device.type and device.index is None
        ):
            return self
        return Audio(self.samples.to(device), self.sample_rate)

    def with_samples(self, samples: torch.Tensor) -> Audio:
        """New audio at the same sample rate."""
        return Audio(samples, self.sample_rate)

    def __repr__(self) -> str:
        return (
            f"Audio(channels={self.channels}, frames={self.frames}, "
            f"sample_rate={self.sample_rate}, device={self.samples.device})"
        )
