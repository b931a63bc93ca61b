"""Streaming: a chain of block-capable stages reads, processes and writes a file in blocks.

A stage that declares `streams` gets a `Source` (its input, read in explicit ranges, in as
many passes as its analysis needs) and a sink (`write` its output in order). Between
stages the audio waits in a spill file next to the output (raw float32 read back with
explicit reads, never a memmap whose pages would count in the RSS; named like the
writer's temporaries, so a killed run's spills are removed by the next run). Memory
therefore does not grow with the file's length.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BLOCK_FRAMES = 1 << 16  # 65536 frames: ~1.5 s at 44.1 kHz
SEEKABLE = frozenset({"WAV", "WAVEX", "W64", "RF64", "AIFF", "FLAC", "CAF"})  # exact seeks; others are decoded once
_spill_dir: list[Path | None] = [None]


class Source:
    """Audio read in explicit ranges: `read(start, stop)` is (channels, stop - start) on the CPU."""

    sample_rate: int = 0
    channels: int = 0
    frames: int = 0

    def read(self, start: int, stop: int) -> torch.Tensor:
        raise NotImplementedError

    def blocks(self, block_frames: int = BLOCK_FRAMES):
        """(start, samples) of consecutive blocks, in order."""
        for start in range(0, self.frames, block_frames):
            yield start, self.read(start, min(start + block_frames, self.frames))

    @property
    def shape(self) -> tuple[int, int]:
        return self.channels, self.frames

    @property
    def device(self) -> torch.device:
        """Where `read` returns its tensors."""
        return torch.device("cpu")


class TensorSource(Source):
    """A track in memory (the whole-file path, or a test), read by slicing: no copy."""

    def __init__(self, samples, sample_rate: int = 0) -> None:
        self.samples = torch.as_tensor(samples)  # a numpy array is shared, not copied
        self.channels, self.frames = self.samples.shape
        self.sample_rate = sample_rate

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.samples[:, start:stop]

    @property
    def device(self) -> torch.device:
        return self.samples.device


def as_source(x, sample_rate: int = 0) -> Source:
    """`x` itself when it is a Source; an Audio, tensor or (channels, frames) array wrapped in a TensorSource."""
    if isinstance(x, Source):
        return x
    if hasattr(x, "sample_rate") and hasattr(x, "samples"):
        return TensorSource(x.samples, x.sample_rate)
    return TensorSource(x, sample_rate)


class FileSource(Source):
    """An audio file on disk that seeks exactly (WAV, AIFF, FLAC), decoded block by block on each read."""

    def __init__(self, path) -> None:
        from restorekit.io import open_audio

        self._file = open_audio(path)
        self.sample_rate, self.channels, self.frames = self._file.samplerate, self._file.channels, self._file.frames

    def read(self, start: int, stop: int) -> torch.Tensor:
        self._file.seek(start)
        data = self._file.read(stop - start, dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T))

    def close(self) -> None:
        self._file.close()


class Spill(Source):
    """A sink that spills to a temporary raw float32 file; after the writes, a Source reading it back."""

    _fd = None

    def __init__(self, sample_rate: int, channels: int, directory: str | Path | None = None) -> None:
        directory = directory or _spill_dir[0]
        fd, name = tempfile.mkstemp(prefix=".restorekit-spill.", suffix=".part", dir=directory)
        self.path, self._fd = Path(name), fd
        self.sample_rate, self.channels, self.frames = sample_rate, channels, 0

    def write(self, samples) -> None:
        block = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"wrote a block shaped {block.shape}, expected ({self.channels}, frames)")
        view = memoryview(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            from restorekit.errors import AudioFileError
            from restorekit.io import write_failure

            raise AudioFileError(f"{self.path}: cannot write a spill file: {write_failure(exc, self.path.parent)}") from exc
        self.frames += block.shape[1]

    def read(self, start: int, stop: int) -> torch.Tensor:
        data = np.empty((stop - start, self.channels), np.float32)
        os.preadv(self._fd, [data], start * 4 * self.channels)
        return torch.from_numpy(np.ascontiguousarray(data.T))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)

    def __del__(self) -> None:
        self.close()


def spill(sample_rate: int, channels: int) -> Spill:
    """A new spill file (next to the output being written, else in the temporary directory)."""
    return Spill(sample_rate, channels)


def copy(source: Source, sink, block_frames: int = BLOCK_FRAMES) -> None:
    """Write all of `source` to `sink`, block by block (a stage that passes its input through)."""
    for _, block in source.blocks(block_frames):
        sink.write(block)


@contextlib.contextmanager
def spilling_into(directory: str | Path | None):
    """Spill files made inside the block go to `directory`."""
    outer, _spill_dir[0] = _spill_dir[0], directory
    try:
        yield
    finally:
        _spill_dir[0] = outer


@contextlib.contextmanager
def open_input(path):
    """(Source, peak) of an input file, checked as `read_audio` checks it (NaN and Inf in float files
    included). Formats that do not seek exactly (mp3, ogg, opus) are decoded once into a spill."""
    from restorekit.io import FLOAT_SUBTYPES, check_finite, check_frames, open_audio

    source = FileSource(path)
    try:
        check_frames(path, source.frames)
        peak, is_float = 0.0, source._file.subtype in FLOAT_SUBTYPES
        if is_float or source._file.format not in SEEKABLE:
            copied = spill(source.sample_rate, source.channels) if source._file.format not in SEEKABLE else None
            bad, first, position = 0, 0, 0
            with open_audio(path) as f:  # read in order: also for formats that cannot seek
                for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                    wrong = ~np.isfinite(block)
                    if wrong.any():
                        first = first if bad else position + int(np.argmax(wrong.any(axis=1)))
                        bad += int(wrong.sum())
                    elif block.size:
                        peak = max(peak, float(np.abs(block).max()))
                    if copied is not None:
                        copied.write(block.T)
                    position += block.shape[0]
            check_finite(path, bad, first, source.sample_rate)
            if copied is not None:
                source.close()
                source = copied
                check_frames(path, source.frames)
        yield source, peak
    finally:
        source.close()


class _StageSink:
    """What a stage writes to: checks the blocks (layout, finite), counts them, passes them on."""

    def __init__(self, sink, label: str) -> None:
        self.sink, self.label, self.frames = sink, label, 0
        self.sample_rate, self.channels = sink.sample_rate, sink.channels

    def write(self, samples) -> None:
        from restorekit.errors import StageError
        from restorekit.runner import _all_finite

        samples = torch.as_tensor(samples).cpu()
        if samples.dtype != torch.float32 or samples.ndim != 2 or samples.shape[0] != self.channels:
            raise StageError(f"{self.label} wrote a {samples.dtype} block shaped {tuple(samples.shape)}, expected "
                             f"float32 ({self.channels}, frames)")
        if not _all_finite(samples):
            raise StageError(f"{self.label} produced NaN or Inf samples")
        self.frames += samples.shape[1]
        self.sink.write(samples)


def run_streamed(pipeline, source: Source, open_output, seed: int, on_stage=None):
    """Run a chain of streaming stages over `source`; the last one writes to `open_output(rate, channels)`.

    Returns (per-stage seconds, notes). Each stage reads the previous one's spill file, which
    is removed once the stage is done. Errors name the stage and its plugin.
    """
    from restorekit.errors import StageError, describe_failure
    from restorekit.runner import fix_mmap_threshold, release_freed_memory, seed_for_stage

    fix_mmap_threshold()
    timings: dict[str, float] = {}
    notes: list[str] = []
    current, previous = source, None
    order = pipeline.graph.order
    try:
        for k, i in enumerate(order):
            node = pipeline.nodes[i]
            rate, channels = node.stage.output_spec(current.sample_rate, current.channels)
            sink = open_output(rate, channels) if k == len(order) - 1 else spill(rate, channels)
            if on_stage:
                on_stage(node.id)
            stage_seed = seed_for_stage(seed, node.id)
            torch.manual_seed(stage_seed)
            start = time.perf_counter()
            try:
                checked = _StageSink(sink, node.label())
                stage_notes = node.stage.run_stream(current, checked, stage_seed)
                if checked.frames == 0:
                    raise StageError(f"{node.label()} wrote no audio")
            except Exception as exc:  # noqa: BLE001 - expected or not, the message names the stage
                if isinstance(sink, Spill):
                    sink.close()
                raise exc if isinstance(exc, StageError) else StageError(
                    f"{node.label()}: {describe_failure(exc)}") from exc
            timings[node.id] = time.perf_counter() - start
            notes.extend(f"{node.id}: {message}" for message in stage_notes)
            if previous is not None:
                previous.close()
            previous = current = sink if isinstance(sink, Spill) else None
            release_freed_memory()
    finally:
        if previous is not None:
            previous.close()
    return timings, notes
