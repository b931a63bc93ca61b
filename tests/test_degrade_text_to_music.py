"""The text-to-music damage model: its stages, the `text-to-music` preset against the figures
measured on real MusicGen output, and the training recipe that keeps such content.

Figures of 22 real MusicGen files (docs/stages/degrade.md): all 32 kHz, content to at least
14 kHz then a cliff at the 16 kHz Nyquist frequency; 8-12 kHz at about -15 dB and 12-16 kHz
at about -22 dB relative to 1-4 kHz (range -60 to -5 dB); a noise-like top octave (spectral
flatness over 12-15 kHz about 0.48, white noise 0.56) whose envelope follows the music
(correlation with 2-6 kHz about 0.65).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import signal

from restorekit.audio import Audio
from restorekit_tools.demo import make_clean_clip
from restorekit.dsp import resample
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.runner import Pipeline
from restorekit_tools.training.data import Degrader
from restorekit_plugins.degrade.profile import text_to_music_profile
from restorekit_plugins.degrade.stages import DcFault, Level, Mp3, NoiseSubstitute, Tilt
from restorekit_plugins.master import integrated_loudness

RATE = 32000


def run(stage, x: np.ndarray, rate: int, seed: int = 0) -> np.ndarray:
    audio = Audio(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), rate)
    return Pipeline([stage], device="cpu").run(audio, seed=seed).audio.numpy()


def band_db(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    f, p = signal.welch(x, rate, nperseg=2048)
    return float(10 * np.log10(p[..., (f >= lo) & (f < hi)].sum() + 1e-30))


def bright_tones(seconds: float = 3.0, rate: int = RATE) -> np.ndarray:
    """Steady partials from 300 Hz to 15 kHz under a 4 Hz amplitude envelope: tonal, so flatness ~0."""
    t = np.arange(int(seconds * rate)) / rate
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    x = sum(np.sin(2 * np.pi * f * t + f) / (1 + f / 3000) for f in np.arange(300, 15000, 437.0))
    return (0.05 * x * env).astype(np.float32)[None]


def flatness(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    return text_to_music_profile(x, rate)["flatness_12_15"] if (lo, hi) == (12000, 15000) else float("nan")


def test_noise_substitution_keeps_band_levels_and_makes_the_top_noise_like():
    x = bright_tones()
    y = run(NoiseSubstitute(onset_min_hz=8000, onset_max_hz=8000, keep_min=0, keep_max=0), x, RATE)
    assert flatness(x, RATE, 12000, 15000) < 0.05
    assert flatness(y, RATE, 12000, 15000) > 0.45  # noise-like, as a codec leaves it
    for lo, hi in ((9000, 11000), (11000, 13000), (13000, 15500)):
        assert abs(band_db(y, RATE, lo, hi) - band_db(x, RATE, lo, hi)) < 1.0  # the band's level is kept
    # nothing below the onset changes: the difference there is > 60 dB below the signal
    assert band_db(y - x, RATE, 0, 6000) < band_db(x, RATE, 0, 16000) - 60
    # the substituted band follows the 4 Hz envelope of the music
    assert text_to_music_profile(y, RATE)["envelope_corr"] > 0.8


def test_noise_substitution_keep_mixes_the_original_back():
    x = bright_tones()
    partial = run(NoiseSubstitute(onset_min_hz=8000, onset_max_hz=8000, keep_min=0.9, keep_max=0.9), x, RATE)
    full = run(NoiseSubstitute(onset_min_hz=8000, onset_max_hz=8000, keep_min=0.0, keep_max=0.0), x, RATE)
    assert flatness(partial, RATE, 12000, 15000) < flatness(full, RATE, 12000, 15000) - 0.2


@pytest.mark.parametrize("slope", [-6.0, 3.0])
def test_tilt_slope_above_the_corner_and_nothing_below(slope):
    x = (0.1 * np.random.default_rng(0).standard_normal((1, RATE * 3))).astype(np.float32)
    y = run(Tilt(corner_hz=2000, slope_min_db_per_oct=slope, slope_max_db_per_oct=slope), x, RATE)
    assert abs(band_db(y, RATE, 200, 1800) - band_db(x, RATE, 200, 1800)) < 0.05
    at_8k = band_db(y, RATE, 7600, 8400) - band_db(x, RATE, 7600, 8400)  # two octaves above the corner
    assert at_8k == pytest.approx(2 * slope, abs=0.3)


def test_level_draws_the_loudness_and_lets_peaks_exceed_full_scale():
    x = bright_tones(rate=44100) * 0.2
    for seed in range(4):
        y = run(Level(lufs_min=-23, lufs_max=-15, peak_max=4.0), x, 44100, seed=seed)
        assert -23.05 <= integrated_loudness(y, 44100) <= -14.95
    loud = run(Level(lufs_min=-3, lufs_max=-3, peak_max=1.06), x, 44100)
    assert np.abs(loud).max() == pytest.approx(1.06, abs=1e-4)  # capped at the peak limit, above 1.0


def test_dc_fault_adds_a_drifting_offset_and_clips_one_side():
    x = bright_tones()
    x *= 0.85 / np.abs(x).max()  # peaks at 0.85: only the side the offset pushes passes full scale
    y = run(DcFault(probability=1.0, offset_min=0.25, offset_max=0.25), x, RATE, seed=1)
    offset = float(np.mean(y - x))
    assert 0.1 < abs(offset) < 0.3
    side = np.sign(offset)
    assert np.isclose(y * side, 1.0).sum() > 10 and not np.isclose(y * side, -1.0).any()  # one-sided clipping
    assert np.array_equal(run(DcFault(probability=0.0), x, RATE), x)


def test_mp3_probability_skips_files():
    x = bright_tones()
    assert np.array_equal(run(Mp3(probability=0.0), x, RATE), x)
    assert not np.array_equal(run(Mp3(probability=1.0), x, RATE), x)


@pytest.fixture(scope="module")
def preset_outputs():
    """The text-to-music preset on synthesized full-band 44.1 kHz music, six seeds."""
    pipeline = load_pipeline(find_degradation("text-to-music"), device="cpu")
    outs = []
    for seed in range(6):
        clean = make_clean_clip(6.0, seed=seed)
        outs.append((clean, pipeline.run(Audio(torch.from_numpy(clean[None].copy()), 44100), seed=seed).audio))
    return outs


def test_preset_lands_inside_the_measured_ranges(preset_outputs):
    for clean, out in preset_outputs:
        assert out.sample_rate == 32000
        before = text_to_music_profile(clean, 44100)
        p = text_to_music_profile(out.numpy(), out.sample_rate)
        assert before["edge_hz"] > 20000 and before["flatness_12_15"] < 0.1  # full band and tonal before
        assert 14000 <= p["edge_hz"] <= 16000  # content to at least 14 kHz, the cliff at the Nyquist frequency
        assert -60 <= p["band_8_12_db"] <= -5 and -60 <= p["band_12_16_db"] <= -5
        assert 0.35 <= p["flatness_12_15"] <= 0.6  # noise-like, as real output (0.48; white noise 0.56)
        assert p["envelope_corr"] > 0.4  # and it follows the music


def test_preset_draws_levels_and_faults_per_file(preset_outputs):
    loudness = [integrated_loudness(out.numpy(), out.sample_rate) for _, out in preset_outputs]
    assert all(-23.5 <= v <= -13.5 for v in loudness) and np.ptp(loudness) > 2  # raw-generator levels vary


def test_keep_recipe_makes_identity_pairs_of_text_to_music_content():
    clean = resample(Audio(torch.from_numpy(make_clean_clip(1.0)[None].copy()), 44100), 32000).numpy()[0]
    degrader = Degrader("lowres-8k,text-to-music-keep", 32000)
    lowres_in, lowres_target = degrader.pair(clean, 0)
    keep_in, keep_target = degrader.pair(clean, 1)
    assert np.array_equal(lowres_target, clean) and not np.array_equal(lowres_in, clean)
    assert np.array_equal(keep_in, keep_target)  # nothing after the `target` stage: an identity pair
    assert text_to_music_profile(keep_target, 32000)["flatness_12_15"] > 0.35  # of text-to-music-like content
