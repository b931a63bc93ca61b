"""Contract checks for stages and metrics, for restorekit's own tests and for plugin authors' tests.

    from restorekit.testing import check_metric, check_stage
    def test_contract():
        check_stage(MyStage)
        check_metric(MyMetric)

`check_stage` first checks the declaration (id, summary, parameters with defaults,
descriptions and ranges, unknown and out-of-range values rejected, outputs, devices),
then runs the stage through a one-stage pipeline (so the runner adapts rates and
channels as in real use): every sample rate, mono and stereo, very short input (16
frames) and a few seconds, and checks finite output of the declared rate and channel
count, on the CPU, without touching the input, the same twice for the same seed. Any
exception becomes an AssertionError naming the case. A stage that does not declare
"cuda" is also checked to stay on the CPU when the pipeline asks for CUDA; on a machine
with a GPU, a stage that declares "cuda" also runs there.
A stage whose `unavailable()` gives a reason is skipped (pytest.skip) after the
declaration checks, with that reason.

`check_metric` checks a metric's declaration the same way, then computes it on
synthetic stereo audio at two rates: a finite float, the inputs untouched, the same
value twice; a reference metric must also score a copy of the reference at least as
well as a noisy copy (in its `higher_is_better` direction).
"""

from __future__ import annotations

import math
import re
import typing
from types import UnionType
from typing import Any
from unittest import mock

import numpy as np
from pydantic import ValidationError
from restorekit.audio import Audio
from restorekit.io import MIN_FRAMES
from restorekit.stage import Stage, check_stage_class

__all__ = ["check_metric", "check_stage", "check_stage_declaration", "synth_audio"]

DEFAULT_RATES = (8000, 32000, 44100, 48000, 192000)
SHORT_FRAMES = MIN_FRAMES
NORMAL_S = 0.5
LONG_S = 3.0
DEVICE_TYPES = frozenset({"cpu", "cuda"})
BIT_DEPTHS = (16, 24, 32)
OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
NOT_A_CHOICE = "definitely-not-a-choice"


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
            for attr in ("ge", "gt", "le", "lt"):
                bound = getattr(meta, attr, None)
                if bound is None or not isinstance(bound, (int, float)):
                    continue
                delta = max(abs(bound) * 0.5, 1) * (1 if attr in ("le", "lt") else -1)
                value = bound + delta
                cases.append((name, int(value) if isinstance(bound, int) and float(value).is_integer() else value))
    return cases


def invalid_choice_values(cls: type[Stage]) -> list[tuple[str, Any]]:
    """(param, value) pairs for parameters limited to a set of choices (Literal), with a value outside it."""
    cases = []
    for name, field in cls.Params.model_fields.items():
        annotation = field.annotation
        union = typing.get_origin(annotation) in (typing.Union, UnionType)
        options = typing.get_args(annotation) if union else (annotation,)
        if any(typing.get_origin(o) is typing.Literal for o in options):
            cases.append((name, NOT_A_CHOICE))
    return cases


def _check_params(cls: type, params: dict[str, Any]) -> Any:
    """An instance from `params`, after checking every parameter has a default and a description and
    that unknown, out-of-range and not-a-choice values are refused (stages and metrics alike)."""
    for name, field in cls.Params.model_fields.items():
        assert not field.is_required(), f"{cls.id}: parameter '{name}' has no default"
        assert field.description, f"{cls.id}: parameter '{name}' has no description (help text)"
    try:
        instance = cls(params)
    except ValidationError as exc:
        raise AssertionError(f"{cls.id}: its parameters {params} are refused: {exc}") from exc
    for name, value in [("definitely_not_a_parameter", 1), *out_of_range_values(cls), *invalid_choice_values(cls)]:
        try:
            cls({**params, name: value})
        except ValidationError:
            continue
        raise AssertionError(f"{cls.id}: {name}={value!r} should be refused (unknown parameter, outside its "
                             "declared range or not one of its choices) but was accepted")
    return instance


def check_stage_declaration(cls: type[Stage], params: dict[str, Any] | None = None) -> Stage:
    """Assert the parts of the contract that need no audio; return an instance built from `params`.

    `params` defaults to the class's `test_params`.
    """
    problems = check_stage_class(cls)
    assert not problems, "; ".join(problems)
    params = dict(cls.test_params if params is None else params)
    stage = _check_params(cls, params)

    accepts = cls.accepts
    assert accepts.devices and accepts.devices <= DEVICE_TYPES, \
        f"{cls.id}: accepts.devices {sorted(accepts.devices)} must be a non-empty subset of {sorted(DEVICE_TYPES)}"
    assert "cpu" in accepts.devices, \
        f"{cls.id}: every stage must run on the CPU (the runner puts it there when the pipeline's device is not " \
        "one it declares); add 'cpu' to accepts.devices"
    for attr in ("sample_rates", "channels"):
        values = getattr(accepts, attr)
        assert values is None or (values and all(isinstance(v, int) and v > 0 for v in values)), \
            f"{cls.id}: accepts.{attr} must be None (any) or a non-empty set of positive integers, got {values}"
    names = stage.output_names()
    if names is not None:
        assert isinstance(names, tuple) and names, f"{cls.id}: output_names() must be a non-empty tuple or None"
        assert len(set(names)) == len(names), f"{cls.id}: output names repeat: {names}"
        bad = [n for n in names if not (isinstance(n, str) and OUTPUT_NAME.match(n))]
        assert not bad, f"{cls.id}: output names {bad} must be identifiers (letters, digits, _ and -)"
    bits = stage.output_bit_depth()
    assert bits is None or bits in BIT_DEPTHS, f"{cls.id}: output_bit_depth() {bits!r} not in {BIT_DEPTHS}"
    if cls.merges:
        for count in (1, 2):
            message = stage.check_inputs(count)
            assert message is None or isinstance(message, str), f"{cls.id}: check_inputs must return str or None"
    return stage


def _check_source(cls, stage, one_stage, check_outputs) -> None:
    """The run checks of a source stage: no input, its declared rate and channels, repeatable for a seed."""
    rate, channels = stage.output_spec(None, None)
    pipeline = one_stage(stage, "cpu")
    runs = {}
    for seed in (1234, 1234, 99):
        try:
            outputs = pipeline.run(None, seed=seed).outputs
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise AssertionError(f"{cls.id} (source) with seed {seed}: {type(cause).__name__}: {cause}") from exc
        check_outputs(f"{cls.id} (source) with seed {seed}", outputs, rate, channels)
        runs.setdefault(seed, []).append(outputs)
    first, again = runs[1234]
    for key in first:
        assert np.allclose(first[key].numpy(), again[key].numpy(), rtol=0, atol=1e-6), \
            f"{cls.id}: two runs with the same seed differ"
        assert not np.array_equal(runs[99][0][key].numpy(), first[key].numpy()), \
            f"{cls.id}: another seed gives the same audio (draw from the run's seed)"


def check_stage(cls: type[Stage], params: dict[str, Any] | None = None,
                sample_rates: tuple[int, ...] | None = None, channel_counts: tuple[int, ...] = (1, 2)) -> None:
    """Assert the stage contract; raises AssertionError naming the case that broke it.

    `params` defaults to the class's `test_params`. When the stage's `unavailable()` gives
    a reason, the run checks are skipped with pytest.skip and that reason.
    """
    import torch
    from restorekit import runner
    from restorekit.runner import Node, Pipeline

    stage = check_stage_declaration(cls, params)
    params = dict(cls.test_params if params is None else params)
    reason = cls.unavailable()
    if reason:
        import pytest

        pytest.skip(f"{cls.id} cannot run here: {reason}")

    accepted_rates = cls.accepts.sample_rates
    rates = sample_rates or (tuple(sorted(accepted_rates))[:3] if accepted_rates else DEFAULT_RATES)
    counts = [c for c in channel_counts if cls.accepts.channels is None or c in cls.accepts.channels]
    assert counts, f"{cls.id}: accepts none of the channel counts {channel_counts}"
    if cls.merges:
        message = stage.check_inputs(2)
        assert message is None, f"{cls.id}: refuses 2 inputs with these parameters ({message}); set test_params"

    def one_stage(instance: Stage, device: str) -> Pipeline:
        return Pipeline([Node("stage", instance, ["input", "input"] if cls.merges else None)], device=device)

    def check_outputs(case: str, outputs: dict, rate: int, channels: int) -> None:
        names = stage.output_names()
        expected_keys = {None} if names is None else set(names)
        assert set(outputs) == expected_keys, f"{case}: outputs {set(outputs)} != {expected_keys}"
        want_rate, want_channels = stage.output_spec(rate, channels)
        for key, out in outputs.items():
            label = case if key is None else f"{case}, output {key}"
            assert isinstance(out, Audio), f"{label}: returned {type(out).__name__}"
            assert out.samples.dtype == torch.float32, f"{label}: dtype {out.samples.dtype}"
            assert out.device.type == "cpu", f"{label}: the pipeline returned audio on {out.device}"
            assert out.sample_rate == want_rate, f"{label}: rate {out.sample_rate} != declared {want_rate}"
            assert out.channels == want_channels, f"{label}: {out.channels} ch != declared {want_channels}"
            assert out.frames > 0, f"{label}: empty output"
            assert bool(np.isfinite(out.numpy()).all()), f"{label}: NaN or Inf in the output"
            assert math.isfinite(float(out.samples.abs().max())), label

    def run(pipeline: Pipeline, case: str, channels: int, rate: int, frames: int, seed: int | None = None) -> dict:
        audio = synth_audio(channels, rate, frames=frames)
        before = audio.samples.clone()
        try:
            outputs = pipeline.run(audio, seed=seed).outputs
        except Exception as exc:
            cause = exc.__cause__ or exc  # the runner wraps the stage's own exception, naming the stage
            raise AssertionError(f"{case}: {type(cause).__name__}: {cause}") from exc
        assert torch.equal(audio.samples, before), f"{case}: the stage modified its input in place"
        check_outputs(case, outputs, rate, channels)
        return outputs

    if cls.source:
        _check_source(cls, stage, one_stage, check_outputs)
        return

    # every rate (most channels), every channel count (main rate), short input, a longer one
    main_rate = 44100 if 44100 in rates else rates[0]
    cases = [(rate, counts[-1], int(NORMAL_S * rate) | 1) for rate in rates]
    cases += [(main_rate, c, int(NORMAL_S * main_rate) | 1) for c in counts[:-1]]
    cases += [(min(rates), c, SHORT_FRAMES) for c in counts]
    cases += [(main_rate, counts[-1], int(LONG_S * main_rate))]
    pipeline = one_stage(stage, "cpu")
    first = None
    for rate, channels, frames in cases:
        outputs = run(pipeline, f"{cls.id} on {channels} ch, {rate} Hz, {frames} frames", channels, rate, frames,
                      seed=1234)
        first = first or (rate, channels, frames, outputs)

    rate, channels, frames, outputs = first
    again = run(pipeline, f"{cls.id} run again", channels, rate, frames, seed=1234)
    for key in outputs:
        assert np.allclose(outputs[key].numpy(), again[key].numpy(), rtol=0, atol=1e-6), \
            f"{cls.id}: two runs with the same seed differ (use self.rng() or torch's seeded generator)"

    if "cuda" not in cls.accepts.devices:  # as on a GPU machine: the runner must keep this stage on the CPU
        cpu_stage = cls(params)
        with mock.patch.object(runner, "resolve_device", lambda spec: "cuda"):
            on_gpu_machine = one_stage(cpu_stage, "cuda")
            assert on_gpu_machine.prepare() == "cuda"
        assert cpu_stage.device == "cpu", f"{cls.id}: declares no cuda but was placed on {cpu_stage.device}"
        run(on_gpu_machine, f"{cls.id} in a cuda pipeline", channels, rate, frames)
    elif torch.cuda.is_available():
        gpu_stage = cls(params)
        run(one_stage(gpu_stage, "cuda"), f"{cls.id} on cuda", channels, rate, frames)
        assert gpu_stage.device.startswith("cuda"), f"{cls.id}: declares cuda but ran on {gpu_stage.device}"


def check_metric(cls: type, params: dict[str, Any] | None = None) -> None:
    """Assert that `cls` fulfils the metric contract (see the module docstring)."""
    import torch
    from restorekit.metrics import Metric, check_metric_class

    problems = check_metric_class(cls)
    assert not problems, f"{getattr(cls, '__name__', cls)}: " + "; ".join(problems)
    metric: Metric = _check_params(cls, dict(params or {}))
    reason = cls.unavailable()
    if reason:
        import pytest

        pytest.skip(f"{cls.id} cannot run here: {reason}")
    for rate in (44100, 48000):
        ref = synth_audio(2, rate, duration_s=1.0, seed=1)
        noisy = ref.with_samples(ref.samples + 0.05 * torch.randn(ref.samples.shape, generator=torch.Generator()
                                                                   .manual_seed(2)))
        before = noisy.samples.clone(), ref.samples.clone()
        case = f"{cls.id} at {rate} Hz"
        try:
            value = metric(noisy, ref if cls.needs_reference else None)
            again = metric(noisy, ref if cls.needs_reference else None)
            same = metric(ref, ref) if cls.needs_reference else None
        except Exception as exc:
            raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc
        assert torch.equal(noisy.samples, before[0]) and torch.equal(ref.samples, before[1]), \
            f"{case}: compute modified its input in place"
        assert isinstance(value, float) and math.isfinite(value), f"{case}: {value!r} is not a finite float"
        assert math.isclose(value, again, rel_tol=1e-9, abs_tol=1e-9), \
            f"{case}: two computations on the same audio differ ({value} and {again})"
        if same is not None and cls.higher_is_better is not None:
            better = same >= value if cls.higher_is_better else same <= value
            assert better, f"{case}: the reference itself scores {same}, worse than a noisy copy ({value})"
