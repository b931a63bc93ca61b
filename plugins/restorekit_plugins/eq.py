"""Spectral shaping: `eq.shape` (pedalboard filters plus a linear-phase "air" band blend)."""

from __future__ import annotations

import logging
from typing import ClassVar

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
from restorekit_plugins._blocks import BLOCK_FRAMES

log = logging.getLogger("restorekit")

AIR_TRANSITION_HZ = 1000.0  # width of each edge of the air band filter
AIR_STOPBAND_DB = 60.0  # attenuation of the air band filter outside the band (Kaiser window)


class PeakBand(StageParams):
    """One peaking (bell) band."""

    freq_hz: float = Field(1000.0, ge=10, le=40000, description="Centre frequency in Hz.")
    gain_db: float = Field(0.0, ge=-24, le=24, description="Boost (positive) or cut (negative) in dB at the centre.")
    q: float = Field(1.0, ge=0.1, le=20, description="Bandwidth as Q (higher is narrower).")


class Shape(Stage):
    """High-pass, low-pass, shelves and peaking bands (pedalboard), then an "air" band blend.

    Filters run in this order: high-pass, low shelf, peaks, high shelf, low-pass. pedalboard's
    high-pass and low-pass are first order (6 dB/octave, -3 dB at the cutoff): gentle, for
    removing DC/rumble and taming the very top. Shelves and peaks are RBJ biquads.

    Air blend: `air_blend` times the `air_low_hz`-`air_high_hz` band is added to the signal,
    so 0.15 raises that band by 20*log10(1.15) = 1.21 dB and leaves the rest alone. The band
    comes from a linear-phase FIR (Kaiser, 60 dB stopband, ~1 kHz edges with the cutoffs at
    the -6 dB points), added in phase with the dry signal; the FIR delay is compensated.

    Near Nyquist: a low-pass, peak, high shelf or air band at or above Nyquist has nothing to
    act on and is skipped (logged), so the stage runs at 8 or 16 kHz too; an air band whose
    top is above Nyquist ends at Nyquist. A high-pass or low shelf at or above Nyquist would
    change the whole band and is refused with an error.
    """

    id = "eq.shape"
    summary = "EQ: high/low-pass, shelves, peaking bands (pedalboard) and an 'air' band blend."
    accepts = Accepts(devices=frozenset({"cpu"}))
    streams = True
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        highpass_hz: float | None = Field(None, ge=1, le=20000,
                                          description="First-order high-pass cutoff in Hz; empty: off.")
        lowpass_hz: float | None = Field(None, ge=20, le=100000,
                                         description="First-order low-pass cutoff in Hz; empty: off; "
                                                     "skipped at or above Nyquist.")
        low_shelf_hz: float | None = Field(None, ge=10, le=20000, description="Low shelf corner in Hz; empty: off.")
        low_shelf_db: float = Field(0.0, ge=-24, le=24, description="Low shelf gain in dB.")
        high_shelf_hz: float | None = Field(None, ge=100, le=40000,
                                            description="High shelf corner in Hz; empty: off.")
        high_shelf_db: float = Field(0.0, ge=-24, le=24, description="High shelf gain in dB.")
        shelf_q: float = Field(0.7071, ge=0.1, le=10, description="Q of both shelves (0.7071: no overshoot).")
        peaks: list[PeakBand] = Field(default_factory=list, max_length=32,
                                      description="Peaking bands, each {freq_hz, gain_db, q}.")
        air_low_hz: float = Field(10000.0, ge=1000, le=40000, description="Bottom of the air band in Hz.")
        air_high_hz: float = Field(16000.0, ge=1000, le=48000, description="Top of the air band in Hz.")
        air_blend: float = Field(0.0, ge=-1, le=1, description="Fraction of the air band added: 0.15 adds 15 % "
                                                               "(+1.2 dB in the band), negative cuts, 0: off.")

        @model_validator(mode="after")
        def _consistent(self):
            if self.air_low_hz >= self.air_high_hz:
                raise ValueError(f"air_low_hz ({self.air_low_hz}) must be below air_high_hz ({self.air_high_hz})")
            if self.highpass_hz is not None and self.lowpass_hz is not None and self.highpass_hz >= self.lowpass_hz:
                raise ValueError(f"highpass_hz ({self.highpass_hz}) must be below lowpass_hz ({self.lowpass_hz})")
            for side in ("low", "high"):
                if getattr(self, f"{side}_shelf_db") and getattr(self, f"{side}_shelf_hz") is None:
                    raise ValueError(f"{side}_shelf_db is set but {side}_shelf_hz is empty; give the corner frequency")
            return self

    def plan(self, sample_rate: int) -> tuple[list, object | None]:
        """The pedalboard filters and the air FIR (numpy array or None) used at `sample_rate`."""
        from pedalboard import HighpassFilter, HighShelfFilter, LowpassFilter, LowShelfFilter, PeakFilter

        from restorekit.errors import StageError

        p = self.params
        nyquist = sample_rate / 2
        filters = []

        def skip(what: str, freq: float) -> None:
            message = f"{what} at {freq:g} Hz is at or above Nyquist ({nyquist:g} Hz): skipped"
            log.info("eq.shape: %s", message)
            self.note(message)

        if p.highpass_hz is not None:
            if p.highpass_hz >= nyquist:
                raise StageError(f"highpass_hz {p.highpass_hz:g} is at or above Nyquist ({nyquist:g} Hz) of this "
                                 f"{sample_rate} Hz audio and would remove everything; lower it")
            filters.append(HighpassFilter(cutoff_frequency_hz=p.highpass_hz))
        if p.low_shelf_hz is not None and p.low_shelf_db:
            if p.low_shelf_hz >= nyquist:
                raise StageError(f"low_shelf_hz {p.low_shelf_hz:g} is at or above Nyquist ({nyquist:g} Hz) of this "
                                 f"{sample_rate} Hz audio; use util.gain for a broadband change, or lower it")
            filters.append(LowShelfFilter(cutoff_frequency_hz=p.low_shelf_hz, gain_db=p.low_shelf_db, q=p.shelf_q))
        for band in p.peaks:
            if not band.gain_db:
                continue
            if band.freq_hz >= nyquist:
                skip("peak", band.freq_hz)
                continue
            filters.append(PeakFilter(cutoff_frequency_hz=band.freq_hz, gain_db=band.gain_db, q=band.q))
        if p.high_shelf_hz is not None and p.high_shelf_db:
            if p.high_shelf_hz >= nyquist:
                skip("high shelf", p.high_shelf_hz)
            else:
                filters.append(HighShelfFilter(cutoff_frequency_hz=p.high_shelf_hz, gain_db=p.high_shelf_db,
                                               q=p.shelf_q))
        if p.lowpass_hz is not None:
            if p.lowpass_hz >= nyquist:
                skip("low-pass", p.lowpass_hz)
            else:
                filters.append(LowpassFilter(cutoff_frequency_hz=p.lowpass_hz))
        fir = None
        if p.air_blend:
            if p.air_low_hz >= nyquist:
                skip("air band", p.air_low_hz)
            else:
                fir = air_filter(sample_rate, p.air_low_hz, p.air_high_hz, p.air_blend)
        return filters, fir

    def process(self, audio):
        import numpy as np

        from restorekit.audio import Audio

        out = np.empty((audio.channels, audio.frames), np.float32)
        at = 0

        def put(y):
            nonlocal at
            out[:, at:at + y.shape[1]] = y
            at += y.shape[1]

        return audio if not self._shape(audio, put) else Audio.from_numpy(out, audio.sample_rate)

    def stream(self, source, sink):
        from restorekit.streaming import copy

        if not self._shape(source, lambda y: sink.write(y.astype("float32", copy=False))):
            copy(source, sink, self.block_frames)

    def _shape(self, audio, emit) -> bool:
        """emit() the shaped signal of `audio` (Audio or a Source) in order; False (nothing emitted): no filter."""
        import numpy as np

        from restorekit.streaming import as_source
        from restorekit_plugins._blocks import PedalboardStream

        source = as_source(audio)
        filters, fir = self.plan(source.sample_rate)
        if not filters and fir is None:
            return False
        stream = PedalboardStream(filters, source.sample_rate, source.channels) if filters else None
        fir_stream = LinearPhaseFIR(fir, source.channels, emit, source.frames) if fir is not None else None
        block_frames = self.block_frames if stream is None else max(self.block_frames, stream.min_frames)
        for _, block in source.blocks(block_frames):
            block = block.numpy()
            if stream is not None:  # the filters have no latency: output frames match input frames
                block = stream.process(block)[:, :block.shape[1]]
            if fir_stream is None:
                emit(np.ascontiguousarray(block))
            else:
                fir_stream.feed(block)
        if fir_stream is not None:
            fir_stream.finish()
        return True


def air_filter(sample_rate: int, low_hz: float, high_hz: float, blend: float):
    """The linear-phase FIR `delta + blend * bandpass(low_hz, high_hz)` (odd length, float32)."""
    import numpy as np
    from scipy.signal import firwin, kaiser_beta, kaiserord

    nyquist = sample_rate / 2
    to_nyquist = high_hz >= nyquist
    # each edge's transition straddles its cutoff: keep both inside the band and below Nyquist
    width = min(AIR_TRANSITION_HZ, 2 * (nyquist - low_hz) if to_nyquist else high_hz - low_hz)
    width = max(width, 100.0)  # a band hugging Nyquist gets a softer edge, not thousands of taps
    numtaps, _ = kaiserord(AIR_STOPBAND_DB, width / nyquist)
    numtaps = max(3, numtaps | 1)  # odd: type I, linear phase, any band
    window = ("kaiser", kaiser_beta(AIR_STOPBAND_DB))
    if to_nyquist:  # the band runs to Nyquist: a high-pass
        band = firwin(numtaps, low_hz, window=window, pass_zero=False, fs=sample_rate)
    else:
        band = firwin(numtaps, [low_hz, high_hz], window=window, pass_zero=False, fs=sample_rate)
    taps = blend * band
    taps[numtaps // 2] += 1.0
    return taps.astype(np.float32)


class LinearPhaseFIR:
    """Streams blocks through an odd-length linear-phase FIR to `emit`, in order, delay compensated.

    Overlap-save with FFT convolution per block; the `frames` frames emitted equal the
    whole-signal `convolve(x, taps, mode="same")` (zeros outside the signal) to float rounding.
    """

    def __init__(self, taps, channels: int, emit, frames: int) -> None:
        import numpy as np

        self.taps = np.asarray(taps, np.float32)[None, :]
        self.delay = (self.taps.shape[1] - 1) // 2
        self.history = np.zeros((channels, self.taps.shape[1] - 1), np.float32)
        self.emit, self.frames, self.channels = emit, frames, channels
        self.position = -self.delay  # output index of the next filtered frame

    def feed(self, block) -> None:
        import numpy as np
        from scipy.signal import oaconvolve

        context = np.concatenate([self.history, block], axis=1)
        y = oaconvolve(context, self.taps, mode="valid", axes=1)
        self.history = context[:, context.shape[1] - self.history.shape[1]:]
        start = self.position
        self.position += y.shape[1]
        lo, hi = max(start, 0), min(self.position, self.frames)
        if hi > lo:
            self.emit(np.ascontiguousarray(y[:, lo - start:hi - start]))

    def finish(self) -> None:
        import numpy as np

        if self.delay:
            self.feed(np.zeros((self.channels, self.delay), np.float32))


@hookimpl
def register_stages(register):
    register(Shape)
