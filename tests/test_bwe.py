"""bwe.harmonic: cutoff detection, the band below the cutoff untouched, the band above filled, full band alone."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import soxr
import torch
from pydantic import ValidationError

from restorekit.audio import Audio
from restorekit.dsp import resample
from restorekit.runner import Pipeline
from restorekit.testing import check_stage
from restorekit_plugins._band_limit import analyze_spectrum, detect_cutoff, find_cutoff
from restorekit_plugins.bwe import HarmonicBWE


def full_band(sample_rate: int, seconds: float, channels: int = 2, seed: int = 0,
              slope_db_per_oct: float = -6.0) -> np.ndarray:
    """Music-like test signal up to its Nyquist frequency: noise with a spectral slope whose level
    changes every 0.25 s, plus harmonic tones below 2 kHz; float32 (channels, frames), peak 0.5.

    Above 2 kHz the spectrum follows the slope, which is what the extension extrapolates, so the
    original is the right answer to compare the synthesized band with."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    f = np.fft.rfftfreq(n, 1 / sample_rate)
    shape = np.zeros_like(f)
    shape[1:] = (np.maximum(f[1:], 50) / 1000) ** (slope_db_per_oct / 6.02)
    steps = np.repeat(rng.uniform(0.2, 1.0, (channels, int(seconds * 4) + 1)), sample_rate // 4, axis=1)[:, :n]
    rows = []
    for c in range(channels):
        noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n)
        tones = sum(np.sin(2 * np.pi * (220 + 110 * c) * h * t) / h for h in range(1, 7))
        rows.append(noise / noise.std() * 0.1 * steps[c] + 0.05 * tones)
    x = np.asarray(rows)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def band_limit(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """soxr down to 2*cutoff_hz and back: what a low-rate model or codec leaves of x."""
    low = int(2 * cutoff_hz)
    rows = [soxr.resample(soxr.resample(ch, sample_rate, low, "VHQ"), low, sample_rate, "VHQ")[:x.shape[1]]
            for ch in x]
    return np.ascontiguousarray(np.asarray(rows, np.float32))


def psd(x: np.ndarray, sample_rate: int):
    """Welch power spectrum (5.4 Hz bins at 44.1 kHz) averaged over channels."""
    f, p = scipy.signal.welch(x, sample_rate, nperseg=8192, axis=-1)
    return f, p.mean(axis=0)


def band_db(f, p, lo, hi) -> float:
    sel = (f >= lo) & (f < hi)
    return float(10 * np.log10(p[sel].sum() + 1e-30))


def extend(x: np.ndarray, sample_rate: int, **params) -> tuple[np.ndarray, HarmonicBWE]:
    stage = HarmonicBWE(params)
    return stage.process(Audio.from_numpy(x, sample_rate)).numpy(), stage


# -- contract and parameters ------------------------------------------------------------------
@pytest.mark.parametrize("params", [{}, {"cutoff_hz": 2000, "sample_rate_hz": 48000}])
def test_contract(params):
    check_stage(HarmonicBWE, params)


def test_output_spec_is_the_target_rate():
    assert HarmonicBWE(sample_rate_hz=48000).output_spec(32000, 2) == (48000, 2)


def test_inconsistent_rolloff_limits_are_refused():
    with pytest.raises(ValidationError, match="min_rolloff_db_per_oct"):
        HarmonicBWE(min_rolloff_db_per_oct=12, max_rolloff_db_per_oct=6)


# -- detection -------------------------------------------------------------------------------
@pytest.mark.parametrize("rate, cutoff", [(32000, 8000), (44100, 4000), (44100, 11025), (44100, 16000),
                                          (48000, 12000), (16000, 3400)])
def test_detects_a_band_limit_from_the_spectrum_not_the_rate(rate, cutoff):
    """soxr keeps 95% of the band it resamples to: the detected cutoff lies in [0.9, 1.0] x cutoff."""
    x = band_limit(full_band(rate, 2.0, seed=1), rate, cutoff)
    found = detect_cutoff(torch.from_numpy(x), rate, 30.0)
    assert found is not None and 0.9 * cutoff <= found <= cutoff


def test_detects_the_band_limit_under_a_16_bit_noise_floor():
    x = band_limit(full_band(44100, 2.0, seed=2), 44100, 8000)
    x = np.round(x * 32767) / 32767 + np.random.default_rng(0).uniform(-0.5, 0.5, x.shape) / 32767
    found = detect_cutoff(torch.from_numpy(x.astype(np.float32)), 44100, 30.0)
    assert found is not None and 7200 <= found <= 8000


@pytest.mark.parametrize("rate, slope", [(44100, -6.0), (44100, -12.0), (32000, -3.0), (48000, -9.0)])
def test_full_band_audio_has_no_cutoff(rate, slope):
    """Steep but natural roll-offs (up to -12 dB/octave) are not cliffs, nor falls onto a noise floor."""
    x = torch.from_numpy(full_band(rate, 2.0, slope_db_per_oct=slope))
    assert detect_cutoff(x, rate, 30.0) is None
    assert detect_cutoff(x, rate, 30.0, floor_drop_db=10.0, floor_spread_db=4.0) is None


def demo_like(rate: int = 32000, cutoff: float = 8000, floor_dbfs: float = -58.0, seed: int = 13) -> np.ndarray:
    """Band-limited at `cutoff` with a white noise floor under the missing band, like the demo clip."""
    x = band_limit(full_band(rate, 3.0, channels=1, seed=seed), rate, cutoff)
    noise = np.random.default_rng(seed).standard_normal(x.shape) * 10 ** (floor_dbfs / 20)
    return (x + noise).astype(np.float32)


def test_a_band_limit_over_a_noise_floor_is_found():
    """The fall onto a -50 dBFS floor is only ~15-20 dB, short of the 30 dB a bare cliff needs."""
    x = torch.from_numpy(demo_like())
    assert detect_cutoff(x, 32000, 30.0) is None  # a cliff alone is not enough here
    found = find_cutoff(analyze_spectrum(x, 32000), 30.0, floor_drop_db=10.0, floor_spread_db=4.0)
    assert found.kind == "floor" and 0.9 * 8000 <= found.cutoff_hz <= 8000


# -- full band passes through ----------------------------------------------------------------
def test_full_band_input_at_the_target_rate_is_returned_unchanged():
    x = full_band(44100, 2.0, seed=3)
    y, stage = extend(x, 44100)
    assert stage.plan(Audio.from_numpy(x, 44100))[0] is None
    assert np.array_equal(y, x)


def test_full_band_input_at_a_higher_rate_is_only_resampled():
    """48 kHz full band to 44.1 kHz: the output adds no band, so soxr resampling and nothing else."""
    x = full_band(48000, 1.5, seed=4)
    y, stage = extend(x, 48000)
    expected = resample(Audio.from_numpy(x, 48000), 44100).numpy()
    assert y.shape == expected.shape and np.array_equal(y, expected)
    assert stage.take_notes() == ["no cutoff: no cliff in the spectrum (a fall of the detection thresholds within "
                                  "6% of a frequency that stays down); only resampled to 44100 Hz"]


@pytest.mark.parametrize("rate", [32000, 22050])
def test_content_up_to_the_input_nyquist_is_extended_when_the_output_band_is_wider(rate):
    """Text-to-music output is 32 kHz with content to its Nyquist frequency: the rate is the band limit.
    The band above it is filled, the band below is left alone, and the note says why."""
    x = full_band(rate, 3.0, seed=4)
    y, stage = extend(x, rate)
    finding = stage.find(Audio.from_numpy(x, rate))
    assert finding.kind == "nyquist" and 0.9 * rate / 2 <= finding.cutoff_hz <= rate / 2
    note = stage.take_notes()[0]
    assert "reaches the input's Nyquist frequency" in note and f"{finding.cutoff_hz / 1000:.2f} kHz" in note
    f, before = psd(resample(Audio.from_numpy(x, rate), 44100).numpy(), 44100)
    _, after = psd(y, 44100)
    below = (f >= 50) & (f < 0.98 * finding.cutoff_hz)  # the input rolls off at its edge: the fade-in's leak shows
    assert np.abs(10 * np.log10(after[below] / before[below])).max() < 0.1
    nyq = rate / 2
    assert band_db(f, after, nyq * 1.05, nyq * 1.2) - band_db(f, before, nyq * 1.05, nyq * 1.2) > 30
    # within 30 dB per Hz of the band just below the input's edge
    per_hz = [band_db(f, after, a, b) - 10 * np.log10(b - a) for a, b in ((0.8 * nyq, 0.95 * nyq),
                                                                          (1.05 * nyq, 1.2 * nyq))]
    assert per_hz[1] > per_hz[0] - 30


def test_with_an_explicit_cutoff_the_edge_is_not_detected():
    x = full_band(32000, 1.0, seed=4)
    stage = HarmonicBWE(cutoff_hz=12000)
    assert stage.find(Audio.from_numpy(x, 32000)).kind == "given"


def test_a_cutoff_at_or_above_max_hz_leaves_the_audio_alone():
    x = band_limit(full_band(48000, 1.5, seed=5), 48000, 21000)
    y, _ = extend(x, 48000, sample_rate_hz=48000, full_band_fraction=1.0)
    assert np.array_equal(y, x)


# -- extension -------------------------------------------------------------------------------
CASES = [(44100, 8000), (32000, 8000), (16000, 4000), (44100, 14000)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{r}Hz-cut{c}" for r, c in CASES])
def extended(request):
    rate, cutoff = request.param
    original = full_band(rate, 3.0, seed=6)
    x = band_limit(original, rate, cutoff)
    y, stage = extend(x, rate)
    found, top = stage.plan(Audio.from_numpy(x, rate))
    return {"rate": rate, "x": x, "y": y, "cutoff": found, "top": top,
            "resampled": resample(Audio.from_numpy(x, rate), 44100).numpy(),
            "original": resample(Audio.from_numpy(original, rate), 44100).numpy()}


def test_the_band_below_the_cutoff_is_left_as_it_was(extended):
    """Every 5.4 Hz bin from 50 Hz to the cutoff within 0.1 dB of the resampled input (measured < 0.015 dB)."""
    f, before = psd(extended["resampled"], 44100)
    _, after = psd(extended["y"], 44100)
    below = (f >= 50) & (f < extended["cutoff"])
    assert np.abs(10 * np.log10(after[below] / before[below])).max() < 0.1


def test_the_band_above_the_cutoff_is_filled_near_the_original_level(extended):
    """Energy from the cutoff to min(top, the original's band) rises 20 dB or more and lands within
    4 dB of the band-unlimited original in each of four log-spaced sub-bands (measured within 1.5 dB)."""
    c = extended["cutoff"]
    top = min(extended["top"], 0.95 * extended["rate"] / 2)  # the original has nothing above its Nyquist
    f, before = psd(extended["resampled"], 44100)
    _, after = psd(extended["y"], 44100)
    _, truth = psd(extended["original"], 44100)
    lo = c * 1.05  # above the fade-in
    assert band_db(f, after, lo, top) - band_db(f, before, lo, top) > 20
    edges = np.geomspace(lo, top, 5)
    for a, b in itertools.pairwise(edges):
        assert abs(band_db(f, after, a, b) - band_db(f, truth, a, b)) < 4, (a, b)


def test_the_band_above_the_original_nyquist_follows_the_extrapolated_slope():
    """From 32 kHz (nothing above 16 kHz): the synthesized 16-19 kHz band sits near the -6 dB/octave
    line through the top octave, within 6 dB, and below the band under it."""
    rate = 32000
    x = band_limit(full_band(rate, 3.0, seed=7), rate, 8000)
    y, stage = extend(x, rate)
    c, _ = stage.plan(Audio.from_numpy(x, rate))
    f, p = psd(y, 44100)

    def per_hz(a, b):
        return band_db(f, p, a, b) - 10 * np.log10(b - a)

    top_octave = per_hz(c / 2, c)
    expected = top_octave - 6.0 * np.log2(np.sqrt(16000 * 19000) / np.sqrt(c / 2 * c))
    assert abs(per_hz(16000, 19000) - expected) < 6
    assert per_hz(16000, 19000) < per_hz(c, 2 * c)


def test_mono_and_stereo_give_the_same_channel():
    x = band_limit(full_band(32000, 1.5, channels=1, seed=8), 32000, 6000)
    mono, _ = extend(x, 32000, cutoff_hz=5700)
    stereo, _ = extend(np.concatenate([x, x]), 32000, cutoff_hz=5700)
    assert stereo.shape == (2, mono.shape[1])
    assert np.abs(stereo - mono).max() < 1e-6


@pytest.mark.parametrize("rate", [44100, 32000])
def test_blocks_give_the_whole_signal_result(rate):
    """Blocks of 0.1 s and 0.37 s against one block: max difference < 1e-5 (measured ~6e-8)."""
    x = band_limit(full_band(rate, 2.0, seed=9), rate, 5000)
    whole, _ = extend(x, rate, block_s=60)
    for block_s in (0.1, 0.37):
        assert np.abs(extend(x, rate, block_s=block_s)[0] - whole).max() < 1e-5


def test_gain_db_scales_the_synthesized_band():
    x = band_limit(full_band(44100, 1.5, seed=10), 44100, 6000)
    base, _ = extend(x, 44100, cutoff_hz=5700)
    quieter, _ = extend(x, 44100, cutoff_hz=5700, gain_db=-10)
    f, p0 = psd(base - x, 44100)
    _, p1 = psd(quieter - x, 44100)
    assert abs(band_db(f, p1, 6000, 20000) - band_db(f, p0, 6000, 20000) + 10) < 0.1


def test_runs_in_a_pipeline_and_changes_the_rate():
    x = band_limit(full_band(32000, 1.0, seed=11), 32000, 8000)
    out = Pipeline([HarmonicBWE()], device="cpu").run(Audio.from_numpy(x, 32000)).audio
    assert out.sample_rate == 44100 and out.channels == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    x = band_limit(full_band(32000, 2.0, seed=12), 32000, 8000)
    cpu, _ = extend(x, 32000)
    stage = HarmonicBWE()
    stage.device = "cuda"
    out = stage.process(Audio.from_numpy(x, 32000).to("cuda"))
    assert out.device.type == "cuda"
    assert np.abs(out.numpy() - cpu).max() < 1e-4
