"""Sample-rate and channel conversion shared by the runner and the utility stages."""

from __future__ import annotations

import numpy as np
import soxr
import torch

from restorekit.audio import Audio
from restorekit.errors import StageError

RESAMPLE_QUALITY = "VHQ"


def resample(audio: Audio, sample_rate: int, quality: str = RESAMPLE_QUALITY) -> Audio:
    """Resample with soxr (CPU); the result is on the same device as the input."""
    if audio.sample_rate == sample_rate:
        return audio
    x = audio.numpy() if audio.device.type == "cpu" else audio.samples.cpu().numpy()
    out_frames = None
    rows = []
    for ch in x:  # each row is contiguous; soxr wants (frames,) or (frames, channels)
        y = soxr.resample(ch, audio.sample_rate, sample_rate, quality=quality)
        out_frames = len(y) if out_frames is None else out_frames
        rows.append(y)
    out = np.stack(rows).astype(np.float32, copy=False)
    return Audio(torch.from_numpy(out).to(audio.device), sample_rate)


def convert_channels(audio: Audio, channels: int) -> Audio:
    """Mono to stereo by duplication, any count to mono by averaging; other changes are refused."""
    if audio.channels == channels:
        return audio
    x = audio.samples
    if channels == 1:
        return audio.with_samples(x.mean(dim=0, keepdim=True))
    if audio.channels == 1:
        return audio.with_samples(x.expand(channels, -1).contiguous())
    raise StageError(
        f"cannot convert {audio.channels} channels to {channels}: only mono to N channels and "
        "N channels to mono are defined; add a `util.channels` stage with `to: mono` first"
    )


def to_mid_side(x: torch.Tensor) -> torch.Tensor:
    """Left/right (2, frames) to mid/side, scaled so the inverse is exact."""
    left, right = x[0], x[1]
    return torch.stack([(left + right) * 0.5, (left - right) * 0.5])


def from_mid_side(x: torch.Tensor) -> torch.Tensor:
    """Mid/side (2, frames) back to left/right."""
    mid, side = x[0], x[1]
    return torch.stack([mid + side, mid - side])


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))
