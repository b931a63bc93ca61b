"""bwe.auto: the extender measured best for where the input's band ends runs exactly as it runs alone,
and the notes say which one and why; `sr_below_hz` moves the switch."""

from __future__ import annotations

import pytest
import torch

from restorekit.audio import Audio
from restorekit.dsp import resample
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry
from restorekit_plugins.degrade import ops
from restorekit_tools.demo import make_clean_clip


def run(stage_id: str, audio: Audio, **params) -> tuple[Audio, list[str]]:
    stage = get_registry().stages[stage_id](**params)
    stage.place("cpu")
    return stage.run(audio, seed=5)


@pytest.fixture(scope="module")
def clean() -> Audio:
    return Audio(torch.from_numpy(make_clean_clip(4.0, seed=8)[None].copy()), 44100)


@pytest.fixture(scope="module")
def dark(clean) -> Audio:
    """32 kHz with nothing above 4 kHz (as `lowres-8k` leaves music)."""
    low = resample(clean, 32000)
    return Audio(torch.from_numpy(ops.lowpass_fir(low.numpy(), 32000, 4000.0)), 32000)


@pytest.fixture(scope="module")
def generated(clean) -> Audio:
    """The text-to-music damage: 32 kHz, a noise-like top octave up to the 16 kHz Nyquist frequency."""
    return load_pipeline(find_degradation("text-to-music"), device="cpu").run(clean, seed=2).audio


@pytest.mark.parametrize("signal, used, rule, found", [
    ("dark", "sr.flow", "below", "generating (noise detail)"),
    ("generated", "bwe.harmonic", "not below", "reaches the input's Nyquist frequency"),
])
def test_each_side_runs_its_extender_exactly_as_alone(request, signal, used, rule, found):
    """A 4 kHz band goes to sr.flow, text-to-music output's 16 kHz edge to bwe.harmonic."""
    audio = request.getfixturevalue(signal)
    out, notes = run("bwe.auto", audio)
    alone, alone_notes = run(used, audio)
    assert notes[0].startswith(f"extending with {used}: the band ends at "), notes
    assert notes[0].endswith(f" kHz, {rule} sr_below_hz 14.5 kHz"), notes
    assert notes[1:] == alone_notes and found in notes[1], notes
    assert out.sample_rate == 44100 and torch.equal(out.samples, alone.samples)


@pytest.mark.parametrize("sr_below_hz, used", [(0.0, "bwe.harmonic"), (24000.0, "sr.flow")])
def test_sr_below_hz_moves_the_switch(dark, generated, sr_below_hz, used):
    audio = dark if used == "bwe.harmonic" else generated  # each the other side of the default switch
    out, notes = run("bwe.auto", audio, sr_below_hz=sr_below_hz, checkpoint="tiny", envelope="tiny")
    assert notes[0].startswith(f"extending with {used}:"), notes
    alone, _ = run(used, audio, **({"checkpoint": "tiny", "envelope": "tiny"} if used == "sr.flow" else {}))
    assert torch.equal(out.samples, alone.samples)


def test_the_shared_settings_reach_the_extender(dark):
    out, notes = run("bwe.auto", dark, cutoff_hz=3000.0, sample_rate_hz=48000, max_hz=16000.0)
    assert notes[0] == "extending with sr.flow: the band ends at 3.00 kHz, below sr_below_hz 14.5 kHz"
    assert notes[1].startswith("cutoff 3.00 kHz (cutoff_hz); generating (noise detail) 3.00-16.00 kHz at 48000 Hz")
    assert out.sample_rate == 48000


def test_full_band_input_is_only_resampled(clean):
    out, notes = run("bwe.auto", clean)
    assert notes[0] == "passing to bwe.harmonic: sr.flow finds no band to generate", notes
    assert notes[1].startswith("no cutoff"), notes
    assert torch.equal(out.samples, clean.samples)


@pytest.mark.parametrize("cutoff_hz, used", [(14400.0, "sr.flow"), (14500.0, "bwe.harmonic")])
def test_the_switch_is_at_sr_below_hz(dark, cutoff_hz, used):
    _, notes = run("bwe.auto", dark, cutoff_hz=cutoff_hz, checkpoint="tiny", envelope="tiny")
    assert notes[0].startswith(f"extending with {used}: the band ends at {cutoff_hz / 1000:.2f} kHz"), notes


def test_each_extender_acts_on_its_own_finding(dark):
    """sr.flow's finding picks: where only sr.flow would generate (a band ending 3 % below max_hz, inside
    bwe.harmonic's 6 % margin), sr.flow runs; above sr.flow's 22.05 kHz model band (48 kHz output of
    44.1 kHz input) bwe.harmonic still extends, as it does alone."""
    out, notes = run("bwe.auto", dark, cutoff_hz=11400.0, max_hz=12000.0, checkpoint="tiny", envelope="tiny")
    alone, _ = run("sr.flow", dark, cutoff_hz=11400.0, max_hz=12000.0, checkpoint="tiny", envelope="tiny")
    assert notes[0].startswith("extending with sr.flow") and "generating" in notes[1], notes
    assert torch.equal(out.samples, alone.samples)
    full = resample(dark, 44100).with_samples(torch.randn(1, 44100 * 2, generator=torch.Generator().manual_seed(0)))
    out, notes = run("bwe.auto", full, sample_rate_hz=48000, max_hz=24000.0, sr_below_hz=24000.0,
                     checkpoint="tiny", envelope="tiny")
    alone, alone_notes = run("bwe.harmonic", full, sample_rate_hz=48000, max_hz=24000.0)
    assert notes[0] == "passing to bwe.harmonic: sr.flow finds no band to generate", notes
    assert notes[1:] == alone_notes and "synthesizing" in notes[1], notes
    assert torch.equal(out.samples, alone.samples)


def test_detection_settings_reach_the_detector(dark):
    """With a fall of 150 dB required and no noise-floor rule, the 4 kHz cliff is not band-limitation: what
    is left is the 32 kHz input's own Nyquist edge, which bwe.harmonic extends."""
    _, notes = run("bwe.auto", dark, detect_drop_db=150.0, detect_floor_drop_db=None)
    assert notes[0].startswith("extending with bwe.harmonic: the band ends at 15.67 kHz"), notes
    assert "reaches the input's Nyquist frequency" in notes[1]
