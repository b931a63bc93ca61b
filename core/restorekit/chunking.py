"""The one chunked overlap-add inference helper every neural stage uses.

The whole track stays on the CPU; segments (with extra context on both sides that is
computed and then discarded) visit the device in batches, under `torch.inference_mode`
and, on CUDA, float16 autocast (`precision="auto"`; `bfloat16` is an opt-in for CPUs
with native bfloat16 instructions: about 3x faster convolutions, at a measured cost in
quality for some models). Overlapping segment cores are cross-faded with complementary
raised-cosine windows and normalised by the summed weights, so there are no seams.
Memory beyond the input is one output buffer plus one batch of segments (with `emit`, not
even the output buffer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChunkPlan:
    """Segment geometry in frames: `segment` core length, `overlap` cross-fade, `context` each side."""

    segment: int
    overlap: int
    context: int = 0

    def __post_init__(self) -> None:
        if self.segment <= 0:
            raise ValueError(f"segment must be positive, got {self.segment}")
        if not 0 <= self.overlap < self.segment:
            raise ValueError(f"overlap must be in [0, segment), got {self.overlap} for segment {self.segment}")
        if self.context < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")

    @classmethod
    def from_seconds(cls, sample_rate: int, segment_s: float, overlap_s: float, context_s: float = 0.0,
                     multiple_of: int = 1) -> ChunkPlan:
        """A plan from durations; lengths are rounded up to a multiple of `multiple_of` frames."""

        def frames(seconds: float) -> int:
            n = max(0, round(seconds * sample_rate))
            return int(math.ceil(n / multiple_of) * multiple_of)

        segment = max(frames(segment_s), multiple_of)
        return cls(segment, min(frames(overlap_s), segment - multiple_of) if segment > multiple_of else 0,
                   frames(context_s))

    @property
    def hop(self) -> int:
        return self.segment - self.overlap

    def starts(self, frames: int) -> list[int]:
        if frames <= self.segment:
            return [0]
        n = math.ceil((frames - self.segment) / self.hop) + 1
        return [min(i * self.hop, frames - self.segment) for i in range(n)]


def _fade(length: int, device: torch.device) -> torch.Tensor:
    """Rising half of a raised cosine; fade(t) + fade(length-1-t) == 1."""
    if length == 0:
        return torch.ones(0, device=device)
    t = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) / length
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(torch.float32)


def process_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    samples: torch.Tensor,
    plan: ChunkPlan,
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    pad_mode: str = "reflect",
    progress: Callable[[int, int], None] | None = None,
    positions: bool = False,
    emit: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor | None:
    """Apply `fn` to `samples` (channels, frames) in overlapping segments and overlap-add the results.

    `fn` maps a batch (batch, channels, context + segment + context) to
    (batch, out_channels, same length) on `device`. The result is (out_channels, frames),
    float32, on the CPU. Edges of the signal are padded (`reflect`, else zeros) to give
    the first and last segments context too. `precision`: `auto`, `float32`, `bfloat16`
    or `float16` (see `autocast_dtype`). `positions=True` calls `fn(batch, starts)`, with
    `starts` the frame of the signal where each piece begins (negative in the padding
    before the start): for work that must depend on where it is, such as noise that two
    overlapping pieces draw alike. `samples` may be a `restorekit.streaming.Source` (read a
    piece at a time); with `emit`, finished output frames go to `emit((out_channels, n))` in
    order as soon as no later segment reaches them, nothing is returned, and memory is one
    batch of segments whatever the length (the values are the same).
    """
    from restorekit.runner import release_freed_memory
    from restorekit.streaming import as_source

    if len(samples.shape) != 2:
        raise ValueError(f"samples must be (channels, frames), got {tuple(samples.shape)}")
    samples = as_source(samples)
    device = torch.device(device)
    channels, frames = samples.shape
    seg = min(plan.segment, frames)
    plan = ChunkPlan(seg, min(plan.overlap, seg - 1) if seg > 1 else 0, plan.context)
    starts = plan.starts(frames)
    ctx = plan.context
    fade = _fade(plan.overlap, torch.device("cpu"))

    whole: torch.Tensor | None = None  # without `emit`: the finished blocks, written into one output
    filled = 0  # (so no weight as long as the file is kept: the same path either way)
    if emit is None:

        def emit(block: torch.Tensor) -> None:
            nonlocal whole, filled
            if whole is None:
                whole = torch.empty(block.shape[0], frames, dtype=torch.float32)
            whole[:, filled:filled + block.shape[1]] = block
            filled += block.shape[1]
    out: torch.Tensor | None = None
    window = min(frames, seg + batch_size * plan.hop)
    weight = torch.zeros(window, dtype=torch.float32)
    base = 0  # the frame at out[:, 0]
    dtype = autocast_dtype(precision, device)
    for b in range(0, len(starts), batch_size):
        batch_starts = starts[b:b + batch_size]
        pieces = [_window_with_context(samples, s, seg, ctx, pad_mode) for s in batch_starts]
        batch = torch.stack(pieces).to(device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            result = fn(batch, [s - ctx for s in batch_starts]) if positions else fn(batch)
        if result.ndim != 3 or result.shape[0] != len(batch_starts) or result.shape[-1] != batch.shape[-1]:
            raise ValueError(f"fn returned {tuple(result.shape)} for input {tuple(batch.shape)}; "
                             "it must keep the batch size and the length")
        result = result[..., ctx:ctx + seg].float().cpu()
        if out is None:
            out = torch.zeros(result.shape[1], window, dtype=torch.float32)
        for piece, start in zip(result, batch_starts):
            w = torch.ones(seg)
            if plan.overlap and start > 0:
                w[:plan.overlap] = fade
            if plan.overlap and start + seg < frames:
                w[seg - plan.overlap:] = fade.flip(0)
            out[:, start - base:start - base + seg].addcmul_(piece, w)
            weight[start - base:start - base + seg] += w
        # frames before the next batch's first segment are final
        done = starts[b + batch_size] - base if b + batch_size < len(starts) else frames - base
        emit(out[:, :done] / weight[:done].clamp_min(1e-8))
        out = torch.cat([out[:, done:], out.new_zeros(out.shape[0], done)], dim=1)
        weight = torch.cat([weight[done:], weight.new_zeros(done)])
        base += done
        release_freed_memory()  # this batch's temporaries: else the heap keeps them and grows
        if progress:
            progress(min(b + batch_size, len(starts)), len(starts))
    assert out is not None
    return whole


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: plain float32).

    `auto` is float16 on CUDA and float32 on the CPU. `bfloat16` on the CPU is about 3x
    faster for convolutions where the CPU has native bfloat16 (AVX512-BF16 or AMX, see
    benchmarks/bench_neural.py reports which) and slower where it is emulated; its rounding noise (about
    -60 dB) is audible to log-spectral metrics in quiet high bands (docs/performance.md).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return None
    if precision != "auto":
        return getattr(torch, precision)
    return torch.float16 if device.type == "cuda" else None


def _window_with_context(samples, start: int, seg: int, ctx: int, pad_mode: str) -> torch.Tensor:
    frames = samples.frames
    lo, hi = start - ctx, start + seg + ctx
    piece = samples.read(max(lo, 0), min(hi, frames))
    left, right = max(0, -lo), max(0, hi - frames)
    if left or right:
        mode = pad_mode if pad_mode == "reflect" and left < frames and right < frames else "constant"
        piece = torch.nn.functional.pad(piece[None], (left, right), mode=mode)[0]
    return piece
