"""Mastering stages: `master.dc_remove`, `master.normalize` (peak, true peak, LUFS), `master.dither` (TPDF).

All work in blocks: dc_remove filters block by block with the filter state carried over;
normalize measures block by block (memory stays flat), then applies one gain; dither draws
its noise block by block in an order that does not depend on the block size, so any block
size gives the same output.
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
    Loudness normalization can push peaks past 0 dBFS: that is noted, and a
    `dynamics.limit` after it catches them.
    In `lufs` mode two rules keep the dynamics: a file already within `tolerance_lu` of the
    target is left alone (gain 0, output bit-identical); and the limiter budget: when the
    gain to the target would put the true peak more than `max_peak_reduction_db` above
    `ceiling_dbtp` (the ceiling of the limiter that follows), the gain is lowered so the
    limiter takes at most that much off, and a note names the loudness reached instead.
    Giving `target_lufs` without `mode` selects `mode: lufs`. Silence is passed through.
    """

    id = "master.normalize"
    summary = "Normalize to a sample peak or true peak in dBFS, or to integrated loudness in LUFS."
    accepts = CPU
    streams = True  # measures in a first pass over its input, applies the gain in a second
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        mode: Literal["peak", "true_peak", "lufs"] = Field(
            "peak", description="What to normalize: sample peak, true peak (4x oversampled), or loudness.")
        target_dbfs: float = Field(-1.0, ge=-60, le=0, description="Target peak in dBFS (dBTP for true_peak).")
        target_lufs: float = Field(-14.0, ge=-70, le=0, description="Target integrated loudness in LUFS (mode lufs).")
        max_gain_db: float = Field(40.0, ge=0, le=120, description="Largest boost applied in dB, so near-silent "
                                                                   "input is not raised to full level.")
        tolerance_lu: float = Field(1.0, ge=0, le=10, description=(
            "mode lufs: a file measured within this many LU of target_lufs is left unchanged (gain 0, "
            "bit-identical); 0 always applies the gain."))
        ceiling_dbtp: float = Field(-1.0, ge=-60, le=0, description=(
            "mode lufs: true-peak ceiling in dBTP of the limiter that follows (dynamics.limit ceiling_db), "
            "used by max_peak_reduction_db."))
        max_peak_reduction_db: float | None = Field(2.0, ge=0, le=60, description=(
            "mode lufs: most the following limiter may take off the true peaks, in dB; when the target would "
            "put them further above ceiling_dbtp, the gain is lowered (and noted). Empty (null): no budget, "
            "the target is always reached."))

        @model_validator(mode="before")
        @classmethod
        def _lufs_when_target_lufs(cls, data):
            if isinstance(data, dict) and "target_lufs" in data and "mode" not in data:
                data = {**data, "mode": "lufs"}
            return data

    def measure(self, audio) -> float:
        """The measured level in the mode's unit (dBFS, dBTP or LUFS); -inf for silence (Audio or a Source)."""
        from restorekit.streaming import as_source

        x = as_source(audio)
        mode = self.params.mode
        if mode == "peak":
            return _db(sample_peak(x))
        if mode == "true_peak":
            return _db(true_peak(x, self.block_frames))
        return integrated_loudness(x, x.sample_rate, self.block_frames)

    def process(self, audio):
        gain = self.gain(audio)
        return audio if gain is None else audio.with_samples(audio.samples * gain)

    def stream(self, source, sink):
        from restorekit.streaming import copy

        gain = self.gain(source)
        if gain is None:
            return copy(source, sink, self.block_frames)
        for _, block in source.blocks(self.block_frames):
            sink.write(block * gain)

    def gain(self, audio) -> float | None:
        """The gain to apply to `audio` (Audio or a Source), with the notes; None: leave it unchanged."""
        import math

        from restorekit.streaming import as_source

        audio = as_source(audio)
        p = self.params
        level = self.measure(audio)
        target = p.target_lufs if p.mode == "lufs" else p.target_dbfs
        unit = {"peak": "dBFS", "true_peak": "dBTP", "lufs": "LUFS"}[p.mode]
        if not math.isfinite(level):
            self._warn(f"the audio is silent ({level} {unit}): left unchanged")
            return None
        gain_db = target - level
        within = p.mode == "lufs" and abs(gain_db) <= p.tolerance_lu
        if within:
            gain_db = 0.0
        if gain_db > p.max_gain_db:
            self._warn(f"{gain_db:.1f} dB of gain needed to reach {target:g} {unit} from {level:.1f} {unit}; "
                       f"applying max_gain_db = {p.max_gain_db:g} dB")
            gain_db = p.max_gain_db
        if p.mode == "lufs":
            gain_db = self._limiter_budget(audio, level, target, gain_db)
        if within and gain_db == 0.0:
            self.note(f"measured {level:.2f} {unit}, within tolerance_lu {p.tolerance_lu:g} of the target "
                      f"{target:g} {unit}: left unchanged (gain 0 dB)")
            return None
        gain = 10.0 ** (gain_db / 20.0)
        if p.mode == "lufs":
            peak = sample_peak(audio) * gain
            if peak > 1.0:
                # a note, not a warning: a limiter usually follows (the writer warns if peaks remain)
                self.note(f"at {level + gain_db:.2f} LUFS the peaks reach {_db(peak):+.2f} dBFS: a dynamics.limit "
                          "stage after this one must catch them, or they clip when written as PCM")
        self.note(f"measured {level:.2f} {unit}, gain {gain_db:+.2f} dB")
        return gain

    def _limiter_budget(self, audio, level: float, target: float, gain_db: float) -> float:
        """`gain_db`, lowered so the true peak lands at most max_peak_reduction_db above ceiling_dbtp."""
        p = self.params
        if p.max_peak_reduction_db is None:
            return gain_db
        peak_dbtp = _db(true_peak(audio, self.block_frames))
        allowed_db = p.ceiling_dbtp + p.max_peak_reduction_db - peak_dbtp
        if gain_db <= allowed_db + 1e-9:
            return gain_db
        self.note(f"limiter budget: at {level + gain_db:.2f} LUFS the true peak would reach "
                  f"{peak_dbtp + gain_db:+.2f} dBTP, {peak_dbtp + gain_db - p.ceiling_dbtp:.2f} dB above "
                  f"ceiling_dbtp {p.ceiling_dbtp:g}; normalized to {level + allowed_db:.2f} LUFS instead of "
                  f"{target:g} LUFS (true peak {p.ceiling_dbtp + p.max_peak_reduction_db:+.2f} dBTP), so the "
                  f"dynamics.limit after this stage takes at most max_peak_reduction_db = "
                  f"{p.max_peak_reduction_db:g} dB off the peaks")
        return allowed_db

    def _warn(self, message: str) -> None:
        log.warning("master.normalize: %s", message)
        self.note(message)


def _db(amplitude: float) -> float:
    import math

    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


def sample_peak(x, block_frames: int = BLOCK_FRAMES) -> float:
    """Largest |sample| of a (channels, frames) array or a Source, without a temporary of its size."""
    from restorekit.streaming import Source

    if isinstance(x, Source):
        return max([sample_peak(block.numpy()) for _, block in x.blocks(block_frames)], default=0.0)
    return float(max(x.max(), -x.min())) if x.size else 0.0


def true_peak(x, block_frames: int = BLOCK_FRAMES, oversampling: int = TRUE_PEAK_OVERSAMPLING) -> float:
    """Peak of `x` (channels, frames, or a Source) oversampled `oversampling` times (polyphase Kaiser FIR), in blocks.

    Each block is upsampled with TRUE_PEAK_MARGIN frames of context on both sides, so the
    result equals upsampling the whole signal at once. Never below the sample peak.
    """
    import numpy as np
    from scipy.signal import firwin, resample_poly

    from restorekit.streaming import as_source

    taps = firwin(TRUE_PEAK_TAPS, 1 / oversampling, window=("kaiser", 8.6)).astype(np.float32)
    x = as_source(x)
    frames = x.frames
    peak = sample_peak(x, block_frames)
    for start, stop in block_bounds(frames, block_frames):
        lo, hi = max(0, start - TRUE_PEAK_MARGIN), min(frames, stop + TRUE_PEAK_MARGIN)
        up = resample_poly(x.read(lo, hi).numpy(), oversampling, 1, axis=1, window=taps)
        seg = up[:, (start - lo) * oversampling:(stop - lo) * oversampling]
        peak = max(peak, float(seg.max()), float(-seg.min()))
    return peak


def integrated_loudness(x, sample_rate: int, block_frames: int = BLOCK_FRAMES) -> float:
    """Integrated loudness (LUFS) of `x` (channels, frames, or a Source) per BS.1770-4, streamed in blocks.

    Same K-weighting filters (taken from pyloudnorm), gating blocks and gates as
    `pyloudnorm.Meter(rate).integrated_loudness`; only the mean squares of the 400 ms
    gating blocks are kept, from running sums of squares at the block boundaries.
    """
    import numpy as np
    import pyloudnorm
    from scipy.signal import sosfilt

    from restorekit.streaming import as_source

    x = as_source(x)
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
        y, state = sosfilt(sos, x.read(start, stop).numpy().astype(np.float64), axis=1, zi=state)
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
    streams = True
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

        out = np.empty((audio.channels, audio.frames), np.float32)
        self._dither(audio.numpy(), lambda start, stop, y: None, out)
        return Audio.from_numpy(out, audio.sample_rate)

    def stream(self, source, sink):
        import numpy as np

        block = np.empty((source.channels, self.block_frames), np.float32)
        self._dither(source, lambda start, stop, y: sink.write(y[:, :stop - start]), block, blockwise=True)

    def _dither(self, x, emit, out, blockwise: bool = False) -> None:
        """Dither x (an array or a Source) block by block into `out` (the whole output, or one block's buffer)."""
        import numpy as np

        from restorekit.streaming import as_source

        x = as_source(x)
        scale = float(1 << (self.params.bit_depth - 1))
        highpass = self.params.noise_shaping == "highpass"
        rng = self.rng()
        channels, frames = x.shape
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
            v = np.multiply(x.read(start, stop).numpy(), scale, dtype=np.float64)
            v += dither
            np.rint(v, out=v)
            np.clip(v, -scale, scale - 1, out=v)
            at = 0 if blockwise else start
            np.multiply(v, 1.0 / scale, out=out[:, at:at + n], casting="same_kind")
            emit(start, stop, out)


class DCRemove(Stage):
    """Measure DC offset and slow drift per channel; remove them only where found.

    The DC-and-drift component is the signal low-passed zero-phase at `cutoff_hz` (4th-order
    Butterworth run forward, then backward: 8th order, no phase shift, no delay), computed
    in blocks with the filter state carried over; each pass starts settled at the mean of
    the first (last) 1/cutoff_hz seconds, so a constant offset has no start-up transient.
    It is measured away from the ends (1/cutoff_hz in from each, where a low note can pass
    for drift). A channel whose component has an RMS at or above `threshold_dbfs` gets it
    subtracted (a zero-phase high-pass, response 1 - |H|^2: the band above 4 x cutoff_hz
    changes by under 0.001 dB); the other channels, and the whole signal when no channel
    has DC, pass bit-identical. Notes give the offset (mean) and the drift (RMS of the
    component about its mean) per channel. Clips shorter than 1/cutoff_hz cannot tell DC
    from low notes: they pass unchanged.
    """

    id = "master.dc_remove"
    summary = "Find DC offset and slow drift (below a few Hz) per channel and remove them where found."
    accepts = CPU
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        cutoff_hz: float = Field(5.0, ge=1, le=10, description=(
            "Upper edge in Hz of the band taken as DC and drift (zero-phase 8th-order low-pass); content "
            "above 4 x cutoff_hz is untouched."))
        threshold_dbfs: float = Field(-60.0, ge=-140, le=0, description=(
            "A channel is treated when the RMS of its component below cutoff_hz reaches this level in dBFS."))

    def process(self, audio):
        import numpy as np
        from scipy.signal import butter, sosfilt, sosfilt_zi

        from restorekit.audio import Audio

        p = self.params
        x = audio.numpy()
        channels, frames = x.shape
        window = int(round(audio.sample_rate / p.cutoff_hz))
        if frames < window:
            self.note(f"{frames / audio.sample_rate:.3f} s is shorter than 1/cutoff_hz ({1 / p.cutoff_hz:g} s): "
                      "DC cannot be told from low notes; left unchanged")
            return audio
        sos = butter(4, p.cutoff_hz, btype="lowpass", fs=audio.sample_rate, output="sos")
        zi = sosfilt_zi(sos)[:, None, :]  # (sections, 1, 2): the settled state for a unit step
        bounds = list(block_bounds(frames, self.block_frames))
        low = np.empty((channels, frames), np.float32)  # the forward pass, then the component itself
        state = zi * x[:, :window].mean(axis=1, dtype=np.float64)[None, :, None]
        for start, stop in bounds:
            low[:, start:stop], state = sosfilt(sos, x[:, start:stop].astype(np.float64), axis=1, zi=state)
        state = zi * x[:, -window:].mean(axis=1, dtype=np.float64)[None, :, None]
        lo, hi = (window, frames - window) if frames >= 3 * window else (0, frames)  # measured span
        sums = np.zeros((4, channels))  # x, x**2, component, component**2 over [lo, hi)
        for start, stop in reversed(bounds):
            y, state = sosfilt(sos, low[:, start:stop][:, ::-1].astype(np.float64), axis=1, zi=state)
            y = y[:, ::-1]
            low[:, start:stop] = y
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                block, part = x[:, a:b].astype(np.float64), y[:, a - start:b - start]
                sums += [block.sum(axis=1), np.square(block).sum(axis=1), part.sum(axis=1),
                         np.square(part).sum(axis=1)]
        mean_x, power_x, mean_low, power_low = sums / (hi - lo)
        component = np.sqrt(power_low)
        drift = np.sqrt(np.maximum(power_low - mean_low ** 2, 0.0))
        signal = np.sqrt(power_x)
        with np.errstate(divide="ignore"):
            found = 20 * np.log10(component) >= p.threshold_dbfs

        def db(v) -> str:
            return f"{20 * np.log10(v):.1f}" if v > 0 else "-inf"

        if not found.any():
            self.note(f"no DC offset or drift found: below {p.cutoff_hz:g} Hz "
                      f"{', '.join(db(c) for c in component)} dBFS RMS per channel (threshold "
                      f"{p.threshold_dbfs:g} dBFS); left unchanged")
            return audio
        out = low
        for c in range(channels):
            label = f"channel {c}" if channels > 1 else "mono"
            if not found[c]:
                out[c] = x[c]
                self.note(f"{label}: {db(component[c])} dBFS RMS below {p.cutoff_hz:g} Hz, under the threshold: "
                          "unchanged")
                continue
            for start, stop in bounds:
                np.subtract(x[c, start:stop], out[c, start:stop], out=out[c, start:stop])
            relative = db(component[c] / signal[c]) if signal[c] > 0 else "-inf"
            self.note(f"{label}: removed DC offset {mean_x[c]:+.4f} ({db(abs(mean_x[c]))} dBFS) and drift "
                      f"{drift[c]:.4f} RMS ({db(drift[c])} dBFS) below {p.cutoff_hz:g} Hz ({relative} dB "
                      "relative to the signal)")
        return Audio.from_numpy(out, audio.sample_rate)


@hookimpl
def register_stages(register):
    register(DCRemove)
    register(Normalize)
    register(Dither)
