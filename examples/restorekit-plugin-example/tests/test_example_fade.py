"""Behaviour and contract tests of `example.fade` (no entry point needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from restorekit.audio import Audio
from restorekit.testing import check_stage, synth_audio

from restorekit_example.fade import Fade

RATE = 48000


def ones(channels=2, seconds=1.0, rate=RATE):
    return Audio(torch.ones(channels, int(seconds * rate)), rate)


def test_contract():
    check_stage(Fade)
    check_stage(Fade, {"shape": "linear", "fade_in_ms": 0, "fade_out_ms": 50})


def test_linear_fade_in_is_a_straight_ramp_from_silence():
    out = Fade(fade_in_ms=100, fade_out_ms=0, shape="linear").process(ones()).numpy()
    n = 4800  # 100 ms at 48 kHz
    assert np.all(out[:, 0] == 0)
    assert out[0, n // 2] == pytest.approx(0.5, abs=1e-6)
    assert out[0, n // 4] == pytest.approx(0.25, abs=1e-6)
    assert np.all(np.diff(out[:, :n + 1], axis=1) > 0), "the ramp must rise at every sample"
    assert np.all(out[:, n:] == 1), "after the fade-in the audio is untouched"


def test_cosine_fade_is_half_a_cosine_and_starts_gently():
    audio = ones()
    cos = Fade(fade_in_ms=100, fade_out_ms=0, shape="cosine").process(audio).numpy()[0]
    lin = Fade(fade_in_ms=100, fade_out_ms=0, shape="linear").process(audio).numpy()[0]
    n = 4800
    assert cos[n // 2] == pytest.approx(0.5, abs=1e-6)
    assert cos[n // 4] == pytest.approx(0.5 - 0.5 * math.cos(math.pi / 4), abs=1e-6)  # 0.1464
    assert cos[10] < 0.05 * lin[10], "a cosine fade starts far more gently than a linear one"


def test_fade_out_ends_in_silence_and_leaves_the_rest_alone():
    audio = synth_audio(2, RATE, duration_s=2.0)
    out = Fade(fade_in_ms=0, fade_out_ms=500, shape="linear").process(audio).numpy()
    x = audio.numpy()
    n = 24000  # 500 ms
    assert np.all(out[:, -1] == 0)
    assert np.array_equal(out[:, :-n], x[:, :-n]), "before the fade-out nothing may change"
    gain = out[:, -n:] / np.where(np.abs(x[:, -n:]) > 0.05, x[:, -n:], np.nan)
    expected = np.arange(n - 1, -1, -1) / n  # (n-1)/n ... 1/n, 0
    assert np.nanmax(np.abs(gain - expected)) < 1e-5


def test_fade_out_removes_the_click_of_a_clip_cut_mid_note():
    t = np.arange(3 * RATE) / RATE
    tone = Audio(torch.from_numpy((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))[None], RATE)

    def tail_vs_body_db(a):
        x = a.numpy()[0]
        tail = np.sqrt(np.mean(x[-RATE // 100:] ** 2))  # last 10 ms
        body = np.sqrt(np.mean(x[RATE:2 * RATE] ** 2))
        return 20 * np.log10(tail / body + 1e-12)

    assert tail_vs_body_db(tone) > -1  # cut at full level: a click
    assert tail_vs_body_db(Fade(fade_out_ms=1000).process(tone)) < -60


def test_overlapping_fades_on_very_short_audio():
    audio = synth_audio(1, RATE, frames=16)
    out = Fade(fade_in_ms=1000, fade_out_ms=1000, shape="linear").process(audio).numpy()[0]
    ramp = np.arange(16) / 16
    assert np.allclose(out, audio.numpy()[0] * ramp * ramp[::-1], atol=1e-7)
    assert out[0] == 0 and out[-1] == 0


def test_no_fade_returns_the_input_and_the_input_is_never_changed():
    audio = synth_audio(2, RATE)
    before = audio.samples.clone()
    assert Fade(fade_in_ms=0, fade_out_ms=0).process(audio) is audio
    Fade(fade_in_ms=200, fade_out_ms=200).process(audio)
    assert torch.equal(audio.samples, before)


@pytest.mark.parametrize("params", [
    {"fade_in_ms": -1},
    {"fade_out_ms": 60_001},
    {"shape": "exponential"},
    {"fade_ms": 10},
])
def test_bad_parameters_are_rejected_before_any_audio(params):
    with pytest.raises(ValidationError):
        Fade(params)
