"""Mastering stages: `master.normalize` (peak, true peak, LUFS) and `master.dither` (TPDF).

Both work in blocks: normalize measures block by block (memory stays flat), then applies
one gain; dither draws its noise block by block in an order that does not depend on the
block size, so any block size gives the same output.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
from restorekit_plugins._blocks import BLOCK_FRAMES, block_bounds

log = logging.getLogger("restorekit")

CPU = Accepts(devices=frozenset({"cpu"}))
TRUE_PEAK_OVERSAMPLING = 4
TRUE_PEAK_TAPS = 129  # interpolation FIR: within 0.001 dB up to 0.4 fs, -0.34 dB at 0.45 fs
TRUE_PEAK_MARGIN = 64  # input frames of context on each side of a block (the filter reaches 16)
LUFS_BLOCK_S = 0.4  # BS.1770 gating block
LUFS_OVERLAP = 0.75
LUFS_ABSOLUTE_GATE = -70.0
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770: L, R, C, Ls, Rs; channels past 5 weigh 1.0


class Normalize(Stage):
    """One gain that brings the sample peak, true peak or integrated loudness to a target.

    Two passes: measure (in blocks, so memory stays flat), then apply the gain.
    `peak`: the largest |sample| of any channel. `true_peak`: the peak of the signal 4x
    oversampled (ITU-R BS.1770 style, dBTP), which catches inter-sample peaks.
    `lufs`: integrated loudness per ITU-R BS.1770-4 (K-weighting and the two gates, the
    way pyloudnorm computes it; agrees with `pyloudnorm.Meter.integrated_loudness` to
    0.01 LU); a clip shorter than one 0.4 s gating block is measured as one block.
    Loudness normalization can push peaks past 0 dBFS: that is logged, and a
    `dynamics.limit` after it catches them.
    Giving `target_lufs` without `mode` selects `mode: lufs`. Silence is passed through.
    """

    id = "master.normalize"
    summary = "Normalize to a sample peak or true peak in dBFS, or to integrated loudness in LUFS."
    accepts = CPU
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        mode: Literal["peak", "true_peak", "lufs"] = Field(
            "peak", description="What to normalize: sample peak, true peak (4x oversampled), or loudness.")
        target_dbfs: float = Field(-1.0, ge=-60, le=0, description="Target peak in dBFS (dBTP for true_peak).")
        target_lufs: float = Field(-14.0, ge=-70, le=0, description="Target integrated loudness in LUFS (mode lufs).")
        max_gain_db: float = Field(40.0, ge=0, le=120, description="Largest boost applied in dB, so near-silent "
                                                                   "input is not raised to full level.")

        @model_validator(mode="before")
        @classmethod
        def _lufs_when_target_lufs(cls, data):
            if isinstance(data, dict) and "target_lufs" in data and "mode" not in data:
                data = {**data, "mode": "lufs"}
            return data

    def measure(self, audio) -> float:
        """The measured level in the mode's unit (dBFS, dBTP or LUFS); -inf for silence."""
        x = audio.numpy()
        mode = self.params.mode
        if mode == "peak":
            return _db(sample_peak(x))
        if mode == "true_peak":
            return _db(true_peak(x, self.block_frames))
        return integrated_loudness(x, audio.sample_rate, self.block_frames)

    def process(self, audio):
        import math

        p = self.params
        level = self.measure(audio)
        target = p.target_lufs if p.mode == "lufs" else p.target_dbfs
        unit = {"peak": "dBFS", "true_peak": "dBTP", "lufs": "LUFS"}[p.mode]
        if not math.isfinite(level):
            self._warn(f"the audio is silent ({level} {unit}): left unchanged")
            return audio
        gain_db = target - level
        if gain_db > p.max_gain_db:
            self._warn(f"{gain_db:.1f} dB of gain needed to reach {target:g} {unit} from {level:.1f} {unit}; "
                       f"applying max_gain_db = {p.max_gain_db:g} dB")
            gain_db = p.max_gain_db
        gain = 10.0 ** (gain_db / 20.0)
        if p.mode == "lufs":
            peak = sample_peak(audio.numpy()) * gain
            if peak > 1.0:
                # a note, not a warning: a limiter usually follows (the writer warns if peaks remain)
                self.note(f"at {target:g} LUFS the peaks reach {_db(peak):+.2f} dBFS: a dynamics.limit stage "
                          "after this one must catch them, or they clip when written as PCM")
        self.note(f"measured {level:.2f} {unit}, gain {gain_db:+.2f} dB")
        return audio.with_samples(audio.samples * gain)

    def _warn(self, message: str) -> None:
        log.warning("master.normalize: %s", message)
        self.note(message)


def _db(amplitude: float) -> float:
    import math

    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


def sample_peak(x) -> float:
    """Largest |sample| of a (channels, frames) array, without a temporary of its size."""
    return float(max(x.max(), -x.min())) if x.size else 0.0


def true_peak(x, block_frames: int = BLOCK_FRAMES, oversampling: int = TRUE_PEAK_OVERSAMPLING) -> float:
    """Peak of `x` (channels, frames) oversampled `oversampling` times (polyphase Kaiser FIR), in blocks.

    Each block is upsampled with TRUE_PEAK_MARGIN frames of context on both sides, so the
    result equals upsampling the whole signal at once. Never below the sample peak.
    """
    import numpy as np
    from scipy.signal import firwin, resample_poly

    taps = firwin(TRUE_PEAK_TAPS, 1 / oversampling, window=("kaiser", 8.6)).astype(np.float32)
    frames = x.shape[1]
    peak = sample_peak(x)
    for start, stop in block_bounds(frames, block_frames):
        lo, hi = max(0, start - TRUE_PEAK_MARGIN), min(frames, stop + TRUE_PEAK_MARGIN)
        up = resample_poly(x[:, lo:hi], oversampling, 1, axis=1, window=taps)
        seg = up[:, (start - lo) * oversampling:(stop - lo) * oversampling]
        peak = max(peak, float(seg.max()), float(-seg.min()))
    return peak


def integrated_loudness(x, sample_rate: int, block_frames: int = BLOCK_FRAMES) -> float:
    """Integrated loudness (LUFS) of `x` (channels, frames) per BS.1770-4, streamed in blocks.

    Same K-weighting filters (taken from pyloudnorm), gating blocks and gates as
    `pyloudnorm.Meter(rate).integrated_loudness`; only the mean squares of the 400 ms
    gating blocks are kept, from running sums of squares at the block boundaries.
    """
    import numpy as np
    import pyloudnorm
    from scipy.signal import sosfilt

    channels, frames = x.shape
    duration_s = frames / sample_rate
    meter = pyloudnorm.Meter(sample_rate)
    sos = np.array([np.concatenate([f.b / f.a[0], f.a / f.a[0]]) for f in meter._filters.values()])
    gain = float(np.prod([f.passband_gain for f in meter._filters.values()]))
    step = 1.0 - LUFS_OVERLAP
    block_s = LUFS_BLOCK_S
    if duration_s > LUFS_BLOCK_S:
        count = int(np.round((duration_s - LUFS_BLOCK_S) / (LUFS_BLOCK_S * step))) + 1
        j = np.arange(count)
        lower = (LUFS_BLOCK_S * (j * step) * sample_rate).astype(np.int64)
        upper = np.minimum((LUFS_BLOCK_S * (j * step + 1) * sample_rate).astype(np.int64), frames)
    else:  # shorter than one gating block (pyloudnorm refuses): one block over the whole clip
        log.info("master.normalize: %.3f s is shorter than a %g s loudness block: measuring the clip as one "
                 "block", duration_s, LUFS_BLOCK_S)
        block_s = duration_s
        lower, upper = np.array([0]), np.array([frames])
    bounds = np.unique(np.concatenate([lower, upper]))
    sums = np.zeros((channels, len(bounds)))  # sum of squares of the weighted signal before each bound
    state = np.zeros((sos.shape[0], channels, 2))
    total = np.zeros(channels)
    for start, stop in block_bounds(frames, block_frames):
        y, state = sosfilt(sos, x[:, start:stop].astype(np.float64), axis=1, zi=state)
        if gain != 1.0:
            y *= gain
        running = np.cumsum(np.square(y, out=y), axis=1)
        running += total[:, None]
        inside = (bounds > start) & (bounds <= stop)
        sums[:, inside] = running[:, bounds[inside] - start - 1]
        total = running[:, -1].copy()
    at = {int(b): i for i, b in enumerate(bounds)}
    energy = (sums[:, [at[int(u)] for u in upper]] - sums[:, [at[int(lo)] for lo in lower]]) / (
        block_s * sample_rate)
    weights = np.array([CHANNEL_WEIGHTS[c] if c < len(CHANNEL_WEIGHTS) else 1.0 for c in range(channels)])
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(weights @ energy)
        above_abs = block_lufs >= LUFS_ABSOLUTE_GATE
        if not above_abs.any():
            return -np.inf
        relative = -0.691 + 10.0 * np.log10(weights @ energy[:, above_abs].mean(axis=1)) - 10.0
        gated = (block_lufs > relative) & (block_lufs > LUFS_ABSOLUTE_GATE)
        if not gated.any():
            return -np.inf
        return float(-0.691 + 10.0 * np.log10(weights @ energy[:, gated].mean(axis=1)))


class Dither(Stage):
    """TPDF dither and rounding to the 16- or 24-bit grid; the writer then stores it exactly.

    Output samples are k / 2**(bits-1) for integers k in [-2**(bits-1), 2**(bits-1) - 1],
    so the PCM writer (which rounds x * 2**(bits-1)) writes them unchanged, and
    `output_bit_depth()` tells it to write at this depth. Dither: the sum of two independent
    uniform(-0.5, 0.5) LSB draws (triangular, 2 LSB wide); the total error (dither plus
    rounding) has zero mean and a variance of LSB**2/4 whatever the signal.
    `noise_shaping: highpass` uses u[n] - u[n-1] (still triangular per sample, spectrum
    rising 6 dB/octave: less noise in the low and mid range, more near Nyquist). It shapes
    the dither, not the rounding error (error-feedback shaping needs a per-sample loop).
    The noise comes from the run's seed: the same seed gives the same output.
    """

    id = "master.dither"
    summary = "TPDF dither and quantization to 16 or 24 bits (sets the output bit depth)."
    accepts = CPU
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        bit_depth: Literal[16, 24] = Field(24, description="Target bit depth: 16 or 24 (the file is written at it).")
        noise_shaping: Literal["none", "highpass"] = Field(
            "none", description="none: flat TPDF; highpass: TPDF with a rising (first-difference) spectrum.")

    def output_bit_depth(self) -> int:
        return self.params.bit_depth

    def process(self, audio):
        import numpy as np

        from restorekit.audio import Audio

        scale = float(1 << (self.params.bit_depth - 1))
        highpass = self.params.noise_shaping == "highpass"
        rng = self.rng()
        x = audio.numpy()
        channels, frames = x.shape
        out = np.empty((channels, frames), np.float32)
        previous = rng.random((1, channels), dtype=np.float32) if highpass else None
        for start, stop in block_bounds(frames, self.block_frames):
            n = stop - start
            # draws are frame-major, so the stream does not depend on the block size
            if highpass:
                u = rng.random((n, channels), dtype=np.float32)
                dither = np.diff(np.concatenate([previous, u]), axis=0).T
                previous = u[-1:]
            else:
                u = rng.random((n, channels, 2), dtype=np.float32)
                dither = (u[:, :, 0] - u[:, :, 1]).T
            v = np.multiply(x[:, start:stop], scale, dtype=np.float64)
            v += dither
            np.rint(v, out=v)
            np.clip(v, -scale, scale - 1, out=v)
            np.multiply(v, 1.0 / scale, out=out[:, start:stop], casting="same_kind")
        return Audio.from_numpy(out, audio.sample_rate)


@hookimpl
def register_stages(register):
    register(Normalize)
    register(Dither)
