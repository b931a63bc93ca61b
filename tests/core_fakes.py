"""Test-only stages for the core tests: what the runner, pipeline loader and CLI are checked against."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from restorekit.cache import load_once
from restorekit.errors import StageError
from restorekit.plugins import Registry, get_registry
from restorekit.stage import Accepts, Stage, StageParams

BOTH_DEVICES = frozenset({"cpu", "cuda"})


def tone(frames: int, rate: int, channels: int = 1, freq_hz: float = 440.0, peak: float = 0.5) -> np.ndarray:
    """A sine per channel (channel c at freq_hz * (c + 1)), shaped (frames, channels) for soundfile."""
    t = np.arange(frames) / rate
    return np.stack([peak * np.sin(2 * np.pi * freq_hz * (c + 1) * t) for c in range(channels)], axis=1) \
        .astype(np.float32)


def files_under(path: Path) -> list[str]:
    """Every file below `path`, relative, sorted (hidden temporary files included)."""
    return sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*") if p.is_file())


class Recorder(Stage):
    """Passes audio through and records what it was given: (rate, channels, frames, device)."""

    id = "test.recorder"
    summary = "Pass-through that records what it receives."
    accepts = Accepts(devices=BOTH_DEVICES)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, int, int, str]] = []
        self.loaded_on: list[str] = []

    def load(self):
        self.loaded_on.append(self.device)

    def process(self, audio):
        self.seen.append((audio.sample_rate, audio.channels, audio.frames, str(audio.device)))
        return audio


class Rate48k(Recorder):
    id = "test.rate48k"
    summary = "Takes 48 kHz only."
    accepts = Accepts(sample_rates={48000}, devices=BOTH_DEVICES)


class TwoRates(Recorder):
    id = "test.two_rates"
    summary = "Takes 16 or 48 kHz."
    accepts = Accepts(sample_rates={16000, 48000}, devices=BOTH_DEVICES)


class MonoOnly(Recorder):
    id = "test.mono_only"
    summary = "Takes mono only."
    accepts = Accepts(channels={1}, devices=BOTH_DEVICES)


class StereoOnly(Recorder):
    id = "test.stereo_only"
    summary = "Takes stereo only."
    accepts = Accepts(channels={2}, devices=BOTH_DEVICES)


class UpToStereo(Recorder):
    id = "test.up_to_stereo"
    summary = "Takes mono or stereo."
    accepts = Accepts(channels={1, 2}, devices=BOTH_DEVICES)


class CpuOnly(Recorder):
    id = "test.cpu_only"
    summary = "Runs on the CPU only."
    accepts = Accepts(devices=frozenset({"cpu"}))


class Split(Stage):
    """Splits into two named outputs: `half` (x * 0.5) and `quarter` (x * 0.25)."""

    id = "test.split"
    summary = "Splits into half and quarter level."
    accepts = Accepts(devices=BOTH_DEVICES)

    def output_names(self):
        return ("half", "quarter")

    def process(self, audio):
        return {"half": audio.with_samples(audio.samples * 0.5),
                "quarter": audio.with_samples(audio.samples * 0.25)}


class Scale(Stage):
    """Multiplies by a factor (a new tensor every time, so freeing can be observed)."""

    id = "test.scale"
    summary = "Multiply by a factor."
    accepts = Accepts(devices=BOTH_DEVICES)

    class Params(StageParams):
        factor: float = Field(2.0, ge=-100, le=100, description="Multiplier (linear, no unit).")

    def process(self, audio):
        return audio.with_samples(audio.samples * self.params.factor)


class RngNoise(Stage):
    """Adds noise from `self.rng()` (numpy, seeded per run)."""

    id = "test.rng_noise"
    summary = "Adds seeded numpy noise."

    class Params(StageParams):
        level: float = Field(0.1, ge=0, le=1, description="Noise amplitude (linear).")

    def process(self, audio):
        noise = self.rng().standard_normal(audio.samples.shape).astype(np.float32) * self.params.level
        return audio.with_samples(audio.samples + torch.from_numpy(noise))


class TorchNoise(Stage):
    """Adds noise from torch's global generator (seeded per stage by the runner)."""

    id = "test.torch_noise"
    summary = "Adds seeded torch noise."

    def process(self, audio):
        return audio.with_samples(audio.samples + 0.1 * torch.randn(audio.samples.shape))


class CachedModel(Stage):
    """Loads a 'model' through `load_once`; counts the factory calls."""

    id = "test.cached_model"
    summary = "Loads a model once per process."
    factory_calls: ClassVar[int] = 0
    load_calls: ClassVar[int] = 0

    def load(self):
        type(self).load_calls += 1

        def factory():
            type(self).factory_calls += 1
            return torch.full((1,), 0.5)

        self.model = load_once(("test.cached_model", self.device), factory)

    def process(self, audio):
        return audio.with_samples(audio.samples * self.model)


class NeedsCheckpoint(Stage):
    id = "test.needs_checkpoint"
    summary = "Cannot run without a checkpoint."

    @classmethod
    def unavailable(cls):
        return "the checkpoint test.ckpt is missing; run `restorekit fetch test` first"

    def process(self, audio):  # pragma: no cover - never reached
        return audio


class Fails(Stage):
    id = "test.fails"
    summary = "Always raises StageError."

    def process(self, audio):
        raise StageError("this audio is too quiet to restore; raise its level first")


class MakesNaN(Stage):
    id = "test.makes_nan"
    summary = "Returns NaN."

    def process(self, audio):
        return audio.with_samples(audio.samples * float("nan"))


FAKES = (Recorder, Rate48k, TwoRates, MonoOnly, StereoOnly, UpToStereo, CpuOnly, Split, Scale, RngNoise,
         TorchNoise, CachedModel, NeedsCheckpoint, Fails, MakesNaN)


def registry_with(*classes: type[Stage]) -> Registry:
    """A registry holding the built-in util.* and mix.* stages plus `classes` (default: every fake)."""
    real = get_registry()
    registry = Registry()
    for stage_id, cls in real.stages.items():
        if stage_id.split(".")[0] in ("util", "mix"):
            registry.stages.add(cls, real.stages.owner(stage_id))
    for cls in classes or FAKES:
        registry.stages.add(cls, "tests")
    return registry
