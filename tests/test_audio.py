"""The Audio type (fixed layout, zero-copy numpy) and the shared DSP helpers (soxr resampling, channels)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from restorekit import dsp
from restorekit.audio import Audio
from restorekit.errors import StageError


def sine(freq_hz: float, rate: int, seconds: float = 1.0, channels: int = 1, peak: float = 0.5) -> Audio:
    t = np.arange(int(rate * seconds)) / rate
    x = np.tile(peak * np.sin(2 * np.pi * freq_hz * t), (channels, 1)).astype(np.float32)
    return Audio.from_numpy(x, rate)


def peak_hz_and_level_db(x: np.ndarray, rate: int) -> tuple[float, float]:
    """Frequency of the largest spectral peak and the RMS level of the middle half (dBFS)."""
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window))
    mid = x[len(x) // 4: 3 * len(x) // 4]
    return float(np.argmax(spectrum) * rate / len(x)), float(20 * np.log10(np.sqrt(np.mean(mid ** 2))))


# -- Audio ----------------------------------------------------------------------------

def test_audio_holds_float32_channels_by_frames():
    a = Audio(torch.zeros(2, 100), 44100)
    assert (a.channels, a.frames, a.sample_rate) == (2, 100, 44100)
    assert a.duration_s == pytest.approx(100 / 44100)
    assert a.device.type == "cpu"
    assert "channels=2" in repr(a) and "frames=100" in repr(a)


def test_a_1d_array_is_refused_not_guessed():
    with pytest.raises(ValueError, match=r"\(channels, frames\).*samples\[None\]"):
        Audio(torch.zeros(100), 44100)
    with pytest.raises(ValueError, match="channels, frames"):
        Audio(torch.zeros(1, 2, 100), 44100)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int16])
def test_other_dtypes_are_refused(dtype):
    with pytest.raises(TypeError, match="float32"):
        Audio(torch.zeros(1, 10, dtype=dtype), 44100)


@pytest.mark.parametrize("rate", [0, -44100, 44100.5])
def test_bad_sample_rates_are_refused(rate):
    with pytest.raises(ValueError, match="positive integer"):
        Audio(torch.zeros(1, 10), rate)


def test_numpy_samples_are_refused_in_the_constructor():
    with pytest.raises(TypeError, match="torch.Tensor"):
        Audio(np.zeros((1, 10), np.float32), 44100)


def test_integral_float_rate_is_stored_as_int():
    a = Audio(torch.zeros(1, 10), 48000.0)
    assert a.sample_rate == 48000 and isinstance(a.sample_rate, int)


def test_audio_is_frozen():
    a = Audio(torch.zeros(1, 10), 44100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.sample_rate = 48000


def test_from_numpy_and_numpy_share_memory_on_cpu():
    x = np.zeros((2, 64), np.float32)
    a = Audio.from_numpy(x, 44100)
    x[1, 5] = 0.25  # a write through the numpy array shows in the tensor: no copy was made
    assert float(a.samples[1, 5]) == 0.25
    back = a.numpy()
    assert np.shares_memory(back, x)
    back[0, 0] = -0.5
    assert float(a.samples[0, 0]) == -0.5


def test_from_numpy_refuses_float64():
    with pytest.raises(TypeError, match="float32"):
        Audio.from_numpy(np.zeros((1, 10)), 44100)


def test_with_samples_keeps_rate_and_to_same_device_is_identity():
    a = Audio(torch.ones(1, 10), 22050)
    b = a.with_samples(torch.zeros(2, 5))
    assert (b.sample_rate, b.channels, b.frames) == (22050, 2, 5)
    assert a.to("cpu") is a  # no move, no copy when already there
    assert a.to(torch.device("cpu")) is a


# -- resampling and channels ------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [(44100, 48000), (48000, 44100), (8000, 48000), (192000, 44100)])
def test_resample_keeps_frequency_and_level(src, dst):
    a = sine(1000.0, src, seconds=0.5)
    b = dsp.resample(a, dst)
    assert b.sample_rate == dst
    assert abs(b.frames - a.frames * dst / src) <= 1
    f_in, db_in = peak_hz_and_level_db(a.numpy()[0], src)
    f_out, db_out = peak_hz_and_level_db(b.numpy()[0], dst)
    assert abs(f_out - 1000.0) <= 2.5  # bin width is 2 Hz for 0.5 s
    assert abs(db_out - db_in) < 0.05
    assert b.samples.dtype == torch.float32


def test_resample_removes_content_above_the_new_nyquist():
    a = sine(20000.0, 48000, seconds=0.5)  # above 8 kHz (the Nyquist of 16 kHz)
    b = dsp.resample(a, 16000)
    _, db = peak_hz_and_level_db(b.numpy()[0], 16000)
    assert db < -90  # soxr VHQ stopband; an aliased 20 kHz would come back at about -9 dBFS


def test_resample_to_same_rate_is_identity_and_channels_are_kept():
    a = sine(440.0, 44100, 0.1, channels=3)
    assert dsp.resample(a, 44100) is a
    b = dsp.resample(a, 22050)
    assert b.channels == 3
    assert np.allclose(b.numpy()[0], b.numpy()[2])


def test_convert_channels():
    stereo = Audio(torch.tensor([[1.0, 0.5], [0.0, -0.5]]), 44100)
    mono = dsp.convert_channels(stereo, 1)
    assert mono.samples.tolist() == [[0.5, 0.0]]
    up = dsp.convert_channels(mono, 2)
    assert up.samples.tolist() == [[0.5, 0.0], [0.5, 0.0]]
    assert dsp.convert_channels(stereo, 2) is stereo
    eight = dsp.convert_channels(mono, 8)
    assert eight.channels == 8


def test_convert_channels_refuses_undefined_changes_naming_util_channels():
    with pytest.raises(StageError, match="util.channels"):
        dsp.convert_channels(Audio(torch.zeros(2, 10), 44100), 8)


def test_mid_side_round_trip_is_exact_and_mono_has_no_side():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (2, 1000)).astype(np.float32))
    ms = dsp.to_mid_side(x)
    assert torch.allclose(dsp.from_mid_side(ms), x, atol=1e-7)
    same = torch.stack([x[0], x[0]])
    assert float(dsp.to_mid_side(same)[1].abs().max()) == 0.0


def test_db_to_gain():
    assert dsp.db_to_gain(0) == 1.0
    assert dsp.db_to_gain(20) == pytest.approx(10.0)
    assert dsp.db_to_gain(-6.0206) == pytest.approx(0.5, rel=1e-4)
