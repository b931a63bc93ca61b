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


def stream_plugins(plugins: Sequence[Any], source, sink, block_frames: int = BLOCK_FRAMES) -> None:
    """`run_plugins` from a `restorekit.streaming.Source` to a sink: the same output, block by block."""
    import numpy as np

    stream = PedalboardStream(plugins, source.sample_rate, source.channels)
    block_frames = max(block_frames, stream.min_frames)
    frames, written = source.frames, 0

    def put(y) -> None:
        nonlocal written
        k = min(y.shape[1], frames - written)
        if k > 0:
            sink.write(np.ascontiguousarray(y[:, :k]))
            written += k

    for _, block in source.blocks(block_frames):
        put(stream.process(block.numpy()))
    zeros = np.zeros((source.channels, max(stream.min_frames, min(block_frames, 8192))), np.float32)
    for _ in range(1000):  # drain the latency with silence, as `PedalboardStream.run` does
        if written >= frames:
            return
        put(stream.process(zeros))
    raise RuntimeError("pedalboard plugins returned no audio while draining their latency")  # pragma: no cover


class Resampler:
    """soxr (VHQ) as a stream: blocks in, blocks out; the same samples as `restorekit.dsp.resample` at once."""

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        import soxr

        from restorekit.dsp import RESAMPLE_QUALITY

        self.channels = channels
        self._soxr = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality=RESAMPLE_QUALITY)

    def push(self, block, last: bool = False):
        """(channels, n) in, (channels, m) out (a torch tensor)."""
        import numpy as np
        import torch

        x = block.numpy() if hasattr(block, "numpy") else block
        y = self._soxr.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return torch.from_numpy(np.ascontiguousarray(y.reshape(-1, self.channels).T))

    def finish(self):
        import numpy as np

        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


def resampled(source, rate: int):
    """`source` at `rate`: itself when it is there already, else resampled block by block into a spill file."""
    from restorekit.streaming import spill

    if source.sample_rate == rate:
        return source
    out = spill(rate, source.channels)
    resampler = Resampler(source.sample_rate, rate, source.channels)
    for _, block in source.blocks():
        out.write(resampler.push(block))
    out.write(resampler.finish())
    return out


class RowSpill:
    """Per-frame statistics (rows x frames, float64) kept on disk once they pass `memory_bytes`.

    `append((rows, n))` adds n frames to every row; `row(r)` reads one row back whole. The
    values are the same whether they stayed in memory or went to disk; on disk they are
    written in chunks of about CHUNK_BYTES, each chunk row-major.
    """

    CHUNK_BYTES = 1 << 22

    def __init__(self, rows: int, memory_bytes: int = 1 << 22) -> None:
        self.rows, self.memory_bytes = rows, memory_bytes
        self.pending: list = []  # arrays not yet on disk
        self.chunks: list[tuple[int, int]] = []  # (offset, frames) on disk
        self.frames, self._pending_frames, self._file = 0, 0, None

    def append(self, values) -> None:
        import numpy as np

        values = np.ascontiguousarray(values, dtype=np.float64).reshape(self.rows, -1)
        self.pending.append(values)
        self.frames += values.shape[1]
        self._pending_frames += values.shape[1]
        limit = self.CHUNK_BYTES if self._file is not None else self.memory_bytes
        if 8 * self.rows * self._pending_frames > limit:
            self._flush()

    def _flush(self) -> None:
        import tempfile

        import numpy as np

        if not self.pending:
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile()
        block = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        self._file.seek(0, 2)
        self.chunks.append((self._file.tell(), block.shape[1]))
        self._file.write(np.ascontiguousarray(block).tobytes())
        self.pending, self._pending_frames = [], 0

    def row(self, r: int):
        import numpy as np

        out = np.empty(self.frames)
        at = 0
        for offset, n in self.chunks:
            self._file.seek(offset + 8 * r * n)
            self._file.readinto(memoryview(out[at:at + n]).cast("B"))
            at += n
        for values in self.pending:
            out[at:at + values.shape[1]] = values[r]
            at += values.shape[1]
        return out
