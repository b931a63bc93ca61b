"""eq.shape: air blend, high-pass, low-pass, shelves, peaks, Nyquist handling, blocks."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from restorekit.audio import Audio
from restorekit.errors import StageError
from restorekit.pipeline import pipeline_from_text
from restorekit.testing import check_stage
from restorekit_plugins.eq import Shape

AIR_DB = 20 * np.log10(1.15)  # 1.214 dB
CHAIN = {"highpass_hz": 20, "lowpass_hz": 20000, "air_low_hz": 10000, "air_high_hz": 16000, "air_blend": 0.15}


def tone_gain_db(stage: Shape, freq_hz: float, rate: int = 44100, channels: int = 1, seconds: float = 0.5) -> float:
    """Gain of the stage for a sine at `freq_hz`, measured by RMS over the middle half."""
    t = np.arange(int(seconds * rate)) / rate
    x = np.repeat(0.5 * np.sin(2 * np.pi * freq_hz * t)[None], channels, axis=0).astype(np.float32)
    y = stage.process(Audio.from_numpy(x, rate)).numpy()
    mid = slice(len(t) // 4, 3 * len(t) // 4)
    return float(10 * np.log10(np.mean(y[:, mid].astype(np.float64) ** 2) / np.mean(x[:, mid].astype(np.float64) ** 2)))


def test_contract_with_everything_on():
    check_stage(Shape, {**CHAIN, "low_shelf_hz": 120, "low_shelf_db": -2, "high_shelf_hz": 6000,
                        "high_shelf_db": 2, "peaks": [{"freq_hz": 3000, "gain_db": 3, "q": 1.5}]})


def test_no_filters_is_identity():
    x = Audio.from_numpy(np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32), 44100)
    assert Shape().process(x) is x


@pytest.mark.parametrize("rate", [44100, 48000])
def test_air_blend_raises_band_only(rate):
    stage = Shape(air_blend=0.15)
    for f in (11000, 13000, 15000):  # inside the band, clear of the 1 kHz edges
        assert tone_gain_db(stage, f, rate) == pytest.approx(AIR_DB, abs=0.02), f  # measured +-0.002
    for f in (100, 1000, 5000, 8500, 17500):  # outside: the band filter is 60 dB down
        assert abs(tone_gain_db(stage, f, rate)) < 0.01, f


def test_air_blend_stereo_and_negative_blend():
    assert tone_gain_db(Shape(air_blend=0.15), 12000, channels=2) == pytest.approx(AIR_DB, abs=0.02)
    assert tone_gain_db(Shape(air_blend=-0.5), 12000) == pytest.approx(20 * np.log10(0.5), abs=0.02)


def test_air_band_is_cut_at_nyquist_of_32k():
    stage = Shape(**CHAIN)  # 32 kHz: the band ends at Nyquist (16 kHz), the low-pass is skipped
    assert tone_gain_db(stage, 13000, 32000) == pytest.approx(AIR_DB, abs=0.05)
    assert abs(tone_gain_db(stage, 1000, 32000)) < 0.01


@pytest.mark.parametrize("rate", [8000, 16000])
def test_low_rates_skip_what_is_above_nyquist(rate):
    stage = Shape(lowpass_hz=20000, air_blend=0.15)  # both above Nyquist: nothing left to do
    for f in (440, 3000):
        assert abs(tone_gain_db(stage, f, rate)) < 1e-4


def test_highpass_removes_dc_and_subsonic():
    rate = 44100
    t = np.arange(2 * rate) / rate
    x = (0.3 + 0.3 * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32)
    y = Shape(highpass_hz=20).process(Audio.from_numpy(x, rate)).numpy()
    assert abs(y[0, rate:].mean()) < 1e-4  # DC of 0.3 gone after the first second
    stage = Shape(highpass_hz=20)
    assert tone_gain_db(stage, 5, seconds=2.0) < -12.0  # first order: -12.3 dB two octaves down
    assert abs(tone_gain_db(stage, 1000)) < 0.01


def test_lowpass_first_order_slope():
    stage = Shape(lowpass_hz=1000)
    assert tone_gain_db(stage, 1000) == pytest.approx(-3.01, abs=0.1)
    assert tone_gain_db(stage, 4000) < -12.0
    assert abs(tone_gain_db(stage, 100)) < 0.05


def test_peak_and_shelves():
    peak = Shape(peaks=[{"freq_hz": 1000, "gain_db": 6, "q": 1}])
    assert tone_gain_db(peak, 1000) == pytest.approx(6.0, abs=0.05)
    assert abs(tone_gain_db(peak, 100)) < 0.3
    shelf = Shape(high_shelf_hz=3000, high_shelf_db=-6, low_shelf_hz=100, low_shelf_db=4)
    assert tone_gain_db(shelf, 15000) == pytest.approx(-6.0, abs=0.3)
    assert tone_gain_db(shelf, 30, seconds=1.0) == pytest.approx(4.0, abs=0.3)
    assert abs(tone_gain_db(shelf, 800)) < 1.0


def test_blocks_equal_whole():
    rng = np.random.default_rng(4)
    x = Audio.from_numpy(rng.standard_normal((2, 40_001)).astype(np.float32) * 0.3, 44100)
    stage = Shape(**CHAIN, peaks=[{"freq_hz": 2500, "gain_db": -3}])
    whole = stage.process(x).numpy()
    stage.block_frames = 1009
    blocks = stage.process(x).numpy()
    assert np.abs(blocks - whole).max() < 1e-5  # FFT rounding only: measured 5e-7


def test_sixteen_frames_with_air():
    for channels in (1, 2):
        x = Audio.from_numpy(np.full((channels, 16), 0.5, np.float32), 44100)
        y = Shape(**CHAIN).process(x).numpy()
        assert y.shape == (channels, 16) and np.isfinite(y).all()


def test_invalid_params_are_refused_before_audio():
    with pytest.raises(ValidationError, match="air_low_hz"):
        Shape(air_low_hz=16000, air_high_hz=10000)
    with pytest.raises(ValidationError, match="high_shelf_hz"):
        Shape(high_shelf_db=3)
    with pytest.raises(ValidationError, match="below lowpass_hz"):
        Shape(highpass_hz=5000, lowpass_hz=4000)
    with pytest.raises(ValidationError):
        Shape(peaks=[{"freq_hz": 1000, "gain_db": 6, "bandwidth": 2}])


def test_highpass_above_nyquist_is_an_error_that_says_what_to_do():
    x = Audio.from_numpy(np.zeros((1, 1000), np.float32), 8000)
    with pytest.raises(StageError, match="Nyquist.*lower it"):
        Shape(highpass_hz=5000).process(x)


def test_peaks_from_yaml():
    text = """
stages:
  - id: shape
    use: eq.shape
    with:
      peaks:
        - {freq_hz: 1000, gain_db: 6, q: 1}
"""
    pipeline = pipeline_from_text(text)
    stage = pipeline.stage("shape")
    assert stage.params.peaks[0].gain_db == 6
    assert tone_gain_db(stage, 1000) == pytest.approx(6.0, abs=0.05)
