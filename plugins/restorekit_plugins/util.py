"""Utility stages every pipeline needs: resample, channel conversion, gain, trim, pad."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from restorekit.hookspecs import hookimpl
from restorekit.stage import Accepts, Stage, StageParams

ANY_DEVICE = frozenset({"cpu"})  # gains, trims and channel maps: cheaper on the CPU the track lives on


class Resample(Stage):
    id = "util.resample"
    summary = "Resample to a given rate with soxr (very high quality sinc)."
    accepts = Accepts(devices=frozenset({"cpu"}))

    class Params(StageParams):
        sample_rate_hz: int = Field(44100, ge=1000, le=768000, description="Target sample rate in Hz.")
        quality: Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] = Field(
            "VHQ", description="soxr quality preset: QQ (quick) to VHQ (very high).")

    def output_spec(self, sample_rate, channels):
        return self.params.sample_rate_hz, channels

    def process(self, audio):
        from restorekit.dsp import resample

        return resample(audio, self.params.sample_rate_hz, self.params.quality)


class Channels(Stage):
    id = "util.channels"
    summary = "Convert channels: mono, stereo, left/right to mid/side and back."
    accepts = Accepts(devices=ANY_DEVICE)

    class Params(StageParams):
        to: Literal["mono", "stereo", "mid_side", "left_right"] = Field(
            "stereo", description="mono: average all channels; stereo: duplicate mono (stereo passes); "
                                  "mid_side: L/R to M/S; left_right: M/S back to L/R.")

    def output_spec(self, sample_rate, channels):
        return sample_rate, {"mono": 1, "stereo": 2}.get(self.params.to, channels)

    def process(self, audio):
        from restorekit.dsp import convert_channels, from_mid_side, to_mid_side
        from restorekit.errors import StageError

        to = self.params.to
        if to == "mono":
            return convert_channels(audio, 1)
        if to == "stereo":
            if audio.channels > 2:
                raise StageError(f"cannot make stereo from {audio.channels} channels; use `to: mono` first")
            return convert_channels(audio, 2)
        if audio.channels != 2:
            raise StageError(f"{to} needs 2 channels, the audio has {audio.channels}")
        return audio.with_samples(to_mid_side(audio.samples) if to == "mid_side" else from_mid_side(audio.samples))


class Gain(Stage):
    id = "util.gain"
    summary = "Change the level by a fixed number of decibels."
    accepts = Accepts(devices=ANY_DEVICE)

    class Params(StageParams):
        gain_db: float = Field(0.0, ge=-120, le=60, description="Gain in dB (negative attenuates).")

    def process(self, audio):
        from restorekit.dsp import db_to_gain

        return audio.with_samples(audio.samples * db_to_gain(self.params.gain_db))


class Trim(Stage):
    id = "util.trim"
    summary = "Keep a time range of the audio."
    accepts = Accepts(devices=ANY_DEVICE)

    class Params(StageParams):
        start_s: float = Field(0.0, ge=0, description="Start of the kept range in seconds.")
        duration_s: float | None = Field(None, gt=0, description="Length kept in seconds; empty: to the end.")

    def process(self, audio):
        from restorekit.errors import StageError

        start = round(self.params.start_s * audio.sample_rate)
        if start >= audio.frames:
            raise StageError(f"start_s {self.params.start_s} is past the end of the audio ({audio.duration_s:.3f} s)")
        stop = audio.frames if self.params.duration_s is None else start + round(self.params.duration_s * audio.sample_rate)
        return audio.with_samples(audio.samples[:, start:max(stop, start + 1)].contiguous())


class Pad(Stage):
    id = "util.pad"
    summary = "Add silence before and after the audio, or up to a total duration."
    accepts = Accepts(devices=ANY_DEVICE)

    class Params(StageParams):
        before_s: float = Field(0.0, ge=0, le=3600, description="Silence added at the start, in seconds.")
        after_s: float = Field(0.0, ge=0, le=3600, description="Silence added at the end, in seconds.")
        to_duration_s: float | None = Field(
            None, gt=0, le=86400, description="Pad the end until the audio lasts this long (after before_s).")

        @model_validator(mode="after")
        def one_way_for_the_end(self):
            if self.after_s and self.to_duration_s is not None:
                raise ValueError("give after_s or to_duration_s, not both")
            return self

    def process(self, audio):
        import torch.nn.functional as F

        before = round(self.params.before_s * audio.sample_rate)
        after = round(self.params.after_s * audio.sample_rate)
        if self.params.to_duration_s is not None:
            after = max(0, round(self.params.to_duration_s * audio.sample_rate) - before - audio.frames)
        return audio.with_samples(F.pad(audio.samples, (before, after)))


@hookimpl
def register_stages(register):
    for cls in (Resample, Channels, Gain, Trim, Pad):
        register(cls)
