"""Contract checks for stages, for restorekit's own tests and for plugin authors' tests.

    from restorekit.testing import check_stage
    def test_contract():
        check_stage(MyStage)

`check_stage` runs the stage through a one-stage pipeline (so the runner adapts rates
and channels as in real use) on mono and stereo, several sample rates and very short
input, checks finite output of the declared rate and channel count, and checks that
unknown and out-of-range parameters are rejected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import ValidationError

from restorekit.audio import Audio
from restorekit.io import MIN_FRAMES
from restorekit.stage import Stage, check_stage_class

DEFAULT_RATES = (8000, 32000, 44100, 48000)
SHORT_FRAMES = MIN_FRAMES
NORMAL_S = 0.5


def synth_audio(channels: int = 1, sample_rate: int = 44100, frames: int | None = None,
                duration_s: float = NORMAL_S, seed: int = 0) -> Audio:
    """Two tones plus a little noise, a different mix in each channel, peak about 0.5."""
    import torch

    n = frames if frames is not None else int(duration_s * sample_rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    rows = []
    for c in range(channels):
        f1, f2 = 220.0 * (c + 1), min(3000.0 * (c + 1), sample_rate * 0.4)
        x = 0.3 * np.sin(2 * np.pi * f1 * t) + 0.15 * np.sin(2 * np.pi * f2 * t)
        rows.append(x + 0.01 * rng.standard_normal(n))
    return Audio(torch.from_numpy(np.asarray(rows, dtype=np.float32)), sample_rate)


def out_of_range_values(cls: type[Stage]) -> list[tuple[str, Any]]:
    """(param, value) pairs just outside each declared numeric bound."""
    cases = []
    for name, field in cls.Params.model_fields.items():
        for meta in field.metadata:
            for attr, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
                bound = getattr(meta, attr, None)
                if bound is None or not isinstance(bound, (int, float)):
                    continue
                delta = max(abs(bound) * 0.5, 1) * (1 if attr in ("le", "lt") else -1)
                value = bound + delta
                cases.append((name, int(value) if isinstance(bound, int) and float(value).is_integer() else value))
    return cases


def check_stage(cls: type[Stage], params: dict[str, Any] | None = None,
                sample_rates: tuple[int, ...] | None = None, channel_counts: tuple[int, ...] = (1, 2)) -> None:
    """Assert the stage contract; raises AssertionError naming the case that broke it."""
    from restorekit.runner import Pipeline

    problems = check_stage_class(cls)
    assert not problems, "; ".join(problems)
    params = params or {}
    stage = cls(params)
    try:
        cls({**params, "definitely_not_a_parameter": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{cls.id}: an unknown parameter was accepted")
    for name, value in out_of_range_values(cls):
        try:
            cls({**params, name: value})
        except ValidationError:
            continue
        raise AssertionError(f"{cls.id}: {name}={value!r} is outside its declared range but was accepted")

    accepted_rates = cls.accepts.sample_rates
    rates = sample_rates or (tuple(sorted(accepted_rates))[:3] if accepted_rates else DEFAULT_RATES)
    counts = [c for c in channel_counts if cls.accepts.channels is None or c in cls.accepts.channels]
    assert counts, f"{cls.id}: accepts none of the channel counts {channel_counts}"
    for rate in rates:
        for channels in counts:
            for frames in (SHORT_FRAMES, int(NORMAL_S * rate)):
                case = f"{cls.id} on {channels} ch, {rate} Hz, {frames} frames"
                audio = synth_audio(channels, rate, frames=frames)
                if cls.merges:
                    n = 2
                    message = stage.check_inputs(n)
                    if message:
                        continue
                    outputs = {None: stage.process([audio, synth_audio(channels, rate, frames=frames, seed=1)])}
                else:
                    outputs = Pipeline([stage], device="cpu").run(audio).outputs
                names = stage.output_names()
                expected_keys = {None} if names is None else set(names)
                assert set(outputs) == expected_keys, f"{case}: outputs {set(outputs)} != {expected_keys}"
                want_rate, want_channels = stage.output_spec(rate, channels)
                for key, out in outputs.items():
                    label = case if key is None else f"{case}, output {key}"
                    assert isinstance(out, Audio), f"{label}: returned {type(out).__name__}"
                    assert out.samples.dtype.is_floating_point and out.samples.dtype == _float32(), label
                    assert out.sample_rate == want_rate, f"{label}: rate {out.sample_rate} != declared {want_rate}"
                    assert out.channels == want_channels, f"{label}: {out.channels} ch != declared {want_channels}"
                    assert out.frames > 0, f"{label}: empty output"
                    assert bool(np.isfinite(out.numpy()).all()), f"{label}: NaN or Inf in the output"
                    assert math.isfinite(float(out.samples.abs().max())), label


def _float32():
    import torch

    return torch.float32
