"""Behaviour of the core utility stages (util.*) and mix.sum, measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from restorekit.audio import Audio
from restorekit.errors import StageError
from restorekit.runner import Node, Pipeline
from restorekit.testing import synth_audio
from restorekit_plugins.mix import MixSum
from restorekit_plugins.util import Channels, Gain, Pad, Resample, Trim


def rms_db(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(20 * np.log10(np.sqrt(np.mean(x ** 2))))


def run(stage, audio):
    return Pipeline([stage], device="cpu")(audio)


# -- util.resample ------------------------------------------------------------------------------------

@pytest.mark.parametrize("quality", ["QQ", "HQ", "VHQ"])
def test_resample_changes_rate_and_keeps_the_tone(quality):
    t = np.arange(32000) / 32000
    x = Audio.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None], 32000)
    out = run(Resample(sample_rate_hz=44100, quality=quality), x)
    assert out.sample_rate == 44100 and abs(out.frames - 44100) <= 1
    spectrum = np.abs(np.fft.rfft(out.numpy()[0] * np.hanning(out.frames)))
    assert abs(np.argmax(spectrum) * 44100 / out.frames - 1000) < 2
    assert rms_db(out.numpy()[0, 2000:-2000]) == pytest.approx(rms_db(x.numpy()[0]), abs=0.1)


def test_resample_rate_range():
    for bad in (999, 768001):
        with pytest.raises(ValidationError):
            Resample(sample_rate_hz=bad)


# -- util.channels -----------------------------------------------------------------------------------

def test_channels_mono_averages_every_channel():
    x = Audio(torch.tensor([[1.0] * 16, [0.0] * 16, [0.5] * 16, [-0.5] * 16]), 44100)
    assert torch.allclose(run(Channels(to="mono"), x).samples, torch.full((1, 16), 0.25))


def test_channels_stereo_duplicates_mono_and_passes_stereo():
    mono = synth_audio(1, 44100)
    out = run(Channels(to="stereo"), mono)
    assert out.channels == 2 and torch.equal(out.samples[0], mono.samples[0]) and torch.equal(out.samples[1],
                                                                                               mono.samples[0])
    stereo = synth_audio(2, 44100)
    assert torch.equal(run(Channels(to="stereo"), stereo).samples, stereo.samples)


def test_channels_stereo_from_more_channels_is_refused_clearly():
    with pytest.raises(StageError, match=r"cannot make stereo from 8 channels; use `to: mono` first"):
        run(Channels(to="stereo"), synth_audio(8, 44100, frames=64))


def test_mid_side_and_back_is_exact():
    x = synth_audio(2, 44100)
    ms = run(Channels(to="mid_side"), x)
    assert torch.allclose(ms.samples[0], (x.samples[0] + x.samples[1]) / 2)
    back = run(Channels(to="left_right"), ms)
    assert torch.allclose(back.samples, x.samples, atol=1e-7)


def test_mid_side_needs_two_channels():
    with pytest.raises(StageError, match="mid_side needs 2 channels, the audio has 1"):
        run(Channels(to="mid_side"), synth_audio(1, 44100))


def test_channels_declares_its_output():
    assert Channels(to="mono").output_spec(44100, 2) == (44100, 1)
    assert Channels(to="stereo").output_spec(44100, 1) == (44100, 2)
    assert Channels(to="mid_side").output_spec(48000, 2) == (48000, 2)


# -- util.gain ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gain_db", [-20.0, -6.0, 0.0, 3.5, 12.0])
def test_gain_changes_the_level_by_the_given_db(gain_db):
    x = synth_audio(2, 44100, duration_s=0.2)
    out = run(Gain(gain_db=gain_db), x)
    assert rms_db(out.numpy()) - rms_db(x.numpy()) == pytest.approx(gain_db, abs=1e-4)


# -- util.trim and util.pad ------------------------------------------------------------------------------

def test_trim_keeps_the_range():
    x = Audio(torch.arange(44100, dtype=torch.float32)[None] / 44100, 44100)
    out = run(Trim(start_s=0.25, duration_s=0.5), x)
    assert out.frames == 22050
    assert float(out.samples[0, 0]) == pytest.approx(0.25)
    assert run(Trim(start_s=0.75), x).frames == 11025


def test_trim_past_the_end_is_a_clear_error():
    with pytest.raises(StageError, match=r"start_s 2.0 is past the end of the audio \(1.000 s\)"):
        run(Trim(start_s=2.0), synth_audio(1, 8000, duration_s=1.0))


def test_pad_adds_exact_silence():
    x = synth_audio(2, 8000, frames=800)
    out = run(Pad(before_s=0.1, after_s=0.05), x)
    assert out.frames == 800 + 800 + 400
    assert float(out.samples[:, :800].abs().max()) == 0.0 and float(out.samples[:, -400:].abs().max()) == 0.0
    assert torch.equal(out.samples[:, 800:1600], x.samples)


def test_pad_to_a_duration():
    x = synth_audio(1, 8000, frames=800)
    assert run(Pad(before_s=0.1, to_duration_s=1.0), x).frames == 8000
    assert run(Pad(to_duration_s=0.05), x).frames == 800  # never shortens


def test_pad_refuses_after_and_to_duration_together():
    with pytest.raises(ValidationError, match="give after_s or to_duration_s, not both"):
        Pad(after_s=1, to_duration_s=5)


# -- mix.sum ----------------------------------------------------------------------------------------------

def _two_inputs(**params):
    return Pipeline([Node("a", Gain(gain_db=0), "input"), Node("b", Trim(duration_s=0.25), "input"),
                     Node("m", MixSum(**params), ["a", "b"])], device="cpu")


def test_mix_sum_applies_a_gain_per_input():
    x = synth_audio(2, 8000, frames=4000)
    p = Pipeline([Node("a", Gain(gain_db=0), "input"), Node("b", Gain(gain_db=0), "input"),
                  Node("m", MixSum(gains_db=[-6.0206, -120]), ["a", "b"])], device="cpu")
    assert torch.allclose(p(x).samples, x.samples * (0.5 + 1e-6), atol=1e-6)


def test_mix_sum_longest_pads_and_shortest_cuts():
    x = synth_audio(1, 8000, frames=4000)
    longest = _two_inputs()(x)
    assert longest.frames == 4000
    assert torch.allclose(longest.samples[:, :2000], 2 * x.samples[:, :2000])
    assert torch.allclose(longest.samples[:, 2000:], x.samples[:, 2000:])
    shortest = _two_inputs(length="shortest")(x)
    assert shortest.frames == 2000


def test_mix_sum_parameters_are_validated():
    with pytest.raises(ValidationError, match="less than or equal to 60"):
        MixSum(gains_db=[0, 100])
    with pytest.raises(ValidationError, match="'longest' or 'shortest'"):
        MixSum(length="middle")
    assert MixSum(gains_db=[0, 0]).check_inputs(3) == ("with.gains_db has 2 value(s) for 3 input(s); "
                                                      "give one gain per input")
    with pytest.raises(StageError, match="gains_db has 2 values for 1 inputs"):
        MixSum(gains_db=[0, 0]).process([synth_audio()])


def test_mix_sum_does_not_modify_its_inputs():
    a, b = synth_audio(1, 8000, seed=1), synth_audio(1, 8000, seed=2)
    before = a.samples.clone()
    MixSum().process([a, b])
    assert torch.equal(a.samples, before)
