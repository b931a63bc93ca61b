"""Block processing shared by the DSP stages: block bounds and streaming pedalboard plugins.

Stages here hold the whole signal (it is in memory as `Audio` anyway) but process it in
blocks of `BLOCK_FRAMES`, writing into one preallocated output, so temporaries stay the
size of a block and memory does not grow with file length beyond input + output.

Nothing heavy is imported at module import time (pedalboard and numpy load on first use).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

BLOCK_FRAMES = 1 << 16  # 65536 frames: ~1.5 s at 44.1 kHz, 512 KiB per stereo float32 block


def block_bounds(frames: int, block_frames: int = BLOCK_FRAMES) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks covering `frames` frames."""
    if block_frames < 1:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    for start in range(0, frames, block_frames):
        yield start, min(start + block_frames, frames)


class PedalboardStream:
    """Pedalboard plugins run block by block with `reset=False`: the same output as one call.

    pedalboard guesses the layout of a 2-D array from its shape (the smaller dimension is
    taken as channels), so a block shorter than channels + 1 frames is padded with zeros;
    the padding only ever sits after the last real frame, where the flush feeds zeros anyway.
    Plugins with latency (a lookahead limiter) return fewer frames at first; `run` writes
    what comes back in order and drains the tail with zeros, so the output is aligned.
    """

    def __init__(self, plugins: Sequence[Any], sample_rate: int, channels: int) -> None:
        from pedalboard import Pedalboard

        self.board = Pedalboard(list(plugins))
        self.board.reset()
        self.sample_rate = sample_rate
        self.channels = channels
        self.min_frames = channels + 1

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed one (channels, frames) block; returns what the plugins give back (maybe fewer frames)."""
        import numpy as np

        if block.shape[1] < self.min_frames:
            padded = np.zeros((block.shape[0], self.min_frames), np.float32)
            padded[:, :block.shape[1]] = block
            block = padded
        return self.board.process(block, self.sample_rate, reset=False)

    def run(self, x: np.ndarray, block_frames: int = BLOCK_FRAMES, out: np.ndarray | None = None) -> np.ndarray:
        """Process all of `x` (channels, frames) into `out` (allocated when None), latency compensated."""
        import numpy as np

        channels, frames = x.shape
        block_frames = max(block_frames, self.min_frames)  # only the last block may be short
        if out is None:
            out = np.empty((channels, frames), np.float32)
        written = 0
        for start, stop in block_bounds(frames, block_frames):
            written = _put(out, written, self.process(x[:, start:stop]))
        zeros = None
        for _ in range(1000):  # drain the latency with silence; a plugin's latency is far below this
            if written >= frames:
                break
            if zeros is None:
                zeros = np.zeros((channels, max(self.min_frames, min(block_frames, 8192))), np.float32)
            written = _put(out, written, self.process(zeros))
        else:  # pragma: no cover - a plugin that never returns audio
            raise RuntimeError("pedalboard plugins returned no audio while draining their latency")
        return out


def _put(out: np.ndarray, written: int, y: np.ndarray) -> int:
    k = min(y.shape[1], out.shape[1] - written)
    if k > 0:
        out[:, written:written + k] = y[:, :k]
    return written + max(k, 0)


def run_plugins(plugins: Sequence[Any], x: np.ndarray, sample_rate: int,
                block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """Run pedalboard `plugins` over `x` (channels, frames) in blocks; a new float32 array."""
    return PedalboardStream(plugins, sample_rate, x.shape[0]).run(x, block_frames)
