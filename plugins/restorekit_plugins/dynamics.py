"""Dynamics stages (pedalboard): `dynamics.compress` and `dynamics.limit`.

Both stream the signal through pedalboard in blocks with `reset=False`, so block output
equals whole-file output exactly and temporaries stay the size of a block. The compressor
can diagnose first (`min_peak_to_loudness_db`): it then acts only when the peak-to-loudness
ratio says the dynamics need it, and passes the input through unchanged otherwise.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams
from restorekit_plugins._blocks import BLOCK_FRAMES

CPU = Accepts(devices=frozenset({"cpu"}))
MIN_RATIO_GAIN_DB = 0.5  # compressing must lower the peak-to-loudness ratio this much to be kept


class Compress(Stage):
    """Feed-forward compressor (pedalboard's `Compressor`, JUCE): peak envelope, hard knee.

    The envelope follows |x| with `attack_ms`/`release_ms`; above `threshold_db` the gain
    makes the level rise 1/`ratio` dB per dB. Measured on settled sines the output sits
    about 0.9 dB above the textbook threshold + (in - threshold)/ratio (the envelope rides
    below a sine's peak), with the slope exactly 1/ratio; below threshold nothing changes.
    `stereo_link` computes one gain from the loudest channel (the stereo image stays put);
    without it each channel is compressed alone, as pedalboard does by itself.

    With `min_peak_to_loudness_db` the stage measures first: the peak-to-loudness ratio
    (true peak in dBTP minus integrated loudness in LUFS, ITU-R BS.1770; it does not depend
    on the level) must exceed it, else the input passes through bit-identical. The compressed
    result is kept only when it lowered the ratio by MIN_RATIO_GAIN_DB (0.5 dB) or more (a
    slow attack or a threshold above the music lets the peaks through); otherwise the input
    passes through too. Either way a note gives the measured ratio and, after compressing,
    the ratio reached.
    """

    id = "dynamics.compress"
    summary = "Dynamic range compressor (pedalboard): threshold, ratio, attack, release, makeup gain."
    accepts = CPU
    streams = True  # measures its input, compresses into a spill file and measures that, then writes one of them
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        threshold_db: float = Field(-20.0, ge=-80, le=0, description="Level in dBFS above which gain is reduced.")
        ratio: float = Field(4.0, ge=1, le=100, description="Compression ratio (4 means 4:1); 1 leaves the level alone.")
        attack_ms: float = Field(10.0, ge=0, le=1000, description="Envelope attack time in milliseconds.")
        release_ms: float = Field(100.0, ge=0, le=5000, description="Envelope release time in milliseconds.")
        makeup_gain_db: float = Field(0.0, ge=-24, le=40, description="Gain in dB applied after compression.")
        stereo_link: bool = Field(True, description="One gain for all channels from the loudest one "
                                                    "(keeps the stereo image); false: each channel alone.")
        min_peak_to_loudness_db: float | None = Field(
            None, ge=0, le=60, description="Diagnose first: compress only when the input's peak-to-loudness ratio "
                                           "(true peak dBTP minus integrated LUFS) is above this many dB, else "
                                           "pass it through unchanged (bit-identical). Before a loudness "
                                           "normalization to T LUFS and a limiter at C dBTP allowed to take B dB "
                                           "off the peaks: C + B - T (zero_shot: -1 + 2 + 14 = 15). The "
                                           "result is kept only if it lowers the ratio by 0.5 dB or more. "
                                           "Empty: always compress.")

    def process(self, audio):
        import numpy as np

        from restorekit.audio import Audio

        def compress():
            out = np.empty((audio.channels, audio.frames), np.float32)
            at = 0
            for block in self._compressed(audio):
                out[:, at:at + block.shape[1]] = block
                at += block.shape[1]
            return Audio.from_numpy(out, audio.sample_rate)

        return self._decide(audio, compress)

    def stream(self, source, sink):
        from restorekit.streaming import copy, spill

        def compress():
            out = spill(source.sample_rate, source.channels)
            for block in self._compressed(source):
                out.write(block)
            return out

        chosen = self._decide(source, compress)
        copy(chosen, sink, self.block_frames)
        if chosen is not source:
            chosen.close()

    def _decide(self, audio, compress):
        """`audio` (Audio or a Source) or `compress()`'s result, per the diagnosis; the notes say which."""
        p = self.params
        if p.min_peak_to_loudness_db is None:
            return compress()
        ratio, peak, loudness = peak_to_loudness(audio)
        measured = f"peak-to-loudness ratio {ratio:.1f} dB (true peak {peak:+.1f} dBTP, {loudness:.1f} LUFS)"
        limit = f"min_peak_to_loudness_db {p.min_peak_to_loudness_db:g} dB"
        if not math.isfinite(ratio):
            self.note("silent (no loudness to measure): left unchanged")
            return audio
        if ratio <= p.min_peak_to_loudness_db:
            self.note(f"{measured}, not above {limit}: the dynamics need no compression; left unchanged")
            return audio
        out = compress()
        after = peak_to_loudness(out)[0]
        if not after <= ratio - MIN_RATIO_GAIN_DB:  # the peaks got through (slow attack, high threshold)
            self.note(f"{measured}, above {limit}, but compressing did not lower it by {MIN_RATIO_GAIN_DB:g} dB "
                      f"({after:.1f} dB after): left unchanged")
            if hasattr(out, "close"):
                out.close()
            return audio
        self.note(f"{measured}, above {limit}: compressed (ratio now {after:.1f} dB)")
        return out

    def _compressed(self, audio):
        """The compressed signal of `audio` (Audio or a Source), block by block."""
        import numpy as np
        from pedalboard import Compressor, Gain

        from restorekit.streaming import as_source
        from restorekit_plugins._blocks import PedalboardStream

        p = self.params
        source = as_source(audio)
        comp = Compressor(threshold_db=p.threshold_db, ratio=p.ratio, attack_ms=p.attack_ms, release_ms=p.release_ms)
        if not p.stereo_link or source.channels == 1:  # the compressor has no latency: blocks come back whole
            plugins = [comp] + ([Gain(gain_db=p.makeup_gain_db)] if p.makeup_gain_db else [])
            stream = PedalboardStream(plugins, source.sample_rate, source.channels)
            for _, block in source.blocks(max(self.block_frames, stream.min_frames)):
                yield stream.process(block.numpy())[:, :block.shape[1]]
            return
        # Linked: compress the detector max|x_c| (mono); the compressor's output over its input
        # is exactly the gain it applied (JUCE has no lookahead), and that gain goes to every channel.
        stream = PedalboardStream([comp], source.sample_rate, 1)
        makeup = np.float32(10.0 ** (p.makeup_gain_db / 20.0))
        for _, block in source.blocks(self.block_frames):
            block = block.numpy()
            detector = np.abs(block).max(axis=0, keepdims=True)
            compressed = stream.process(detector)[:, :block.shape[1]]
            gain = np.ones_like(detector)
            np.divide(compressed, detector, out=gain, where=detector > 0)
            if makeup != 1:
                gain *= makeup
            yield np.multiply(block, gain)


def peak_to_loudness(audio) -> tuple[float, float, float]:
    """(true peak dBTP - integrated loudness LUFS, true peak dBTP, loudness LUFS); nan ratio for silence."""
    from restorekit.streaming import as_source
    from restorekit_plugins.master import integrated_loudness, true_peak

    x = as_source(audio)
    peak = true_peak(x)
    peak_db = 20.0 * math.log10(peak) if peak > 0 else -math.inf
    loudness = integrated_loudness(x, x.sample_rate)
    ratio = peak_db - loudness if math.isfinite(loudness) and math.isfinite(peak_db) else math.nan
    return ratio, peak_db, loudness


class Limit(Stage):
    """Lookahead brick-wall limiter (pedalboard's `BrickwallLimiter`): a ceiling, no makeup gain.

    Instant attack through a `lookahead_ms` delay line, exponential release; the delay is
    compensated, so the output lines up with the input. All channels share one gain. With
    `true_peak` the detector is 4x oversampled and catches most inter-sample peaks (keep a
    margin, e.g. -1.5 dB, for strict true-peak limits). pedalboard's plain `Limiter` is not
    used: it adds automatic makeup gain and clips at 0 dBFS whatever its threshold.
    """

    id = "dynamics.limit"
    summary = "Lookahead brick-wall limiter (pedalboard): output peaks stay at or below ceiling_db."
    accepts = CPU
    streams = True
    block_frames: ClassVar[int] = BLOCK_FRAMES

    class Params(StageParams):
        ceiling_db: float = Field(-1.0, ge=-60, le=0, description="Highest output sample peak in dBFS.")
        release_ms: float = Field(100.0, ge=1, le=5000, description="Gain recovery time in milliseconds.")
        lookahead_ms: float = Field(5.0, ge=0.1, le=100, description="Lookahead (and internal delay) in milliseconds.")
        true_peak: bool = Field(False, description="Detect 4x oversampled (inter-sample) peaks; about 5x slower.")

    @classmethod
    def unavailable(cls):
        import pedalboard

        if not hasattr(pedalboard, "BrickwallLimiter"):
            return (f"dynamics.limit needs pedalboard's BrickwallLimiter, which pedalboard {pedalboard.__version__} "
                    "lacks; upgrade with `pip install -U 'pedalboard>=0.9.26'`")
        return None

    def process(self, audio):
        from restorekit.audio import Audio
        from restorekit_plugins._blocks import PedalboardStream

        out = PedalboardStream([self._limiter()], audio.sample_rate, audio.channels).run(audio.numpy(),
                                                                                        self.block_frames)
        return Audio.from_numpy(out, audio.sample_rate)

    def stream(self, source, sink):
        from restorekit_plugins._blocks import stream_plugins

        stream_plugins([self._limiter()], source, sink, self.block_frames)

    def _limiter(self):
        import pedalboard

        from restorekit.errors import StageError

        reason = self.unavailable()
        if reason:
            raise StageError(reason)
        p = self.params
        return pedalboard.BrickwallLimiter(ceiling_db=p.ceiling_db, release_ms=p.release_ms,
                                           lookahead_ms=p.lookahead_ms, true_peak=p.true_peak)


@hookimpl
def register_stages(register):
    register(Compress)
    register(Limit)
