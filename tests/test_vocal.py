"""vocal.deess: cuts sibilant bursts in the 5-9 kHz band, leaves vowels and the rest of the spectrum alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from restorekit.audio import Audio
from restorekit.runner import Pipeline
from restorekit_plugins import vocal
from restorekit_plugins.vocal import Deess

RATE = 44100
BURSTS_S = [(0.30, 0.38), (0.70, 0.78)]


def vowel(n: int, rate: int = RATE) -> np.ndarray:
    """A sung 'a': 200 Hz with 49 harmonics rolling off at 9 dB/octave (5-9 kHz band about -33 dB)."""
    t = np.arange(n) / rate
    return sum((0.3 / k ** 1.5) * np.sin(2 * np.pi * 200 * k * t) for k in range(1, 50))


def band_noise(n: int, low_hz: float, high_hz: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[(f < low_hz) | (f > high_hz)] = 0
    y = np.fft.irfft(spec, n)
    return y / np.sqrt(np.mean(y ** 2))


def sung(sibilant_rms: float, seconds: float = 1.0) -> np.ndarray:
    """Stereo vowel with two 80 ms 's' bursts (5.5-8.5 kHz noise), a bit quieter on the right."""
    n = int(seconds * RATE)
    sib = np.zeros(n)
    for a, b in BURSTS_S:
        i, j = int(a * RATE), int(b * RATE)
        sib[i:j] = sibilant_rms * band_noise(j - i, 5500, 8500, seed=i)
    v = vowel(n)
    return np.stack([v + sib, v + 0.8 * sib]).astype(np.float32)


def deess(x: np.ndarray, rate: int = RATE, **params) -> np.ndarray:
    out = Pipeline([Deess(**params)], device="cpu").run(Audio(torch.from_numpy(x), rate)).outputs[None]
    assert out.sample_rate == rate and out.samples.shape == x.shape
    return out.numpy()


def band_db(x: np.ndarray, low_hz: float, high_hz: float, start_s: float, stop_s: float) -> float:
    seg = x[:, int(start_s * RATE):int(stop_s * RATE)]
    spec = np.fft.rfft(seg, axis=-1)
    f = np.fft.rfftfreq(seg.shape[1], 1 / RATE)
    return 10 * np.log10((np.abs(spec[:, (f >= low_hz) & (f <= high_hz)]) ** 2).sum())


def test_sibilant_bursts_are_cut_and_nothing_else_changes():
    x = sung(0.2)  # band about 3 dB below the full band during a burst: 12 dB over the -15 dB threshold
    y = deess(x)
    for a, b in BURSTS_S:
        cut = band_db(y, 5000, 9000, a, b) - band_db(x, 5000, 9000, a, b)
        assert -10.5 < cut < -7.0, cut  # max_reduction_db 10, ramps at the burst edges
        assert abs(band_db(y, 50, 3500, a, b) - band_db(x, 50, 3500, a, b)) < 0.01  # the vowel under it
    # away from the bursts (beyond attack and release) the output is the input, sample for sample
    for a, b in [(0.0, 0.29), (0.47, 0.69), (0.87, 1.0)]:
        seg = slice(int(a * RATE), int(b * RATE))
        assert np.abs(y[:, seg] - x[:, seg]).max() < 1e-6


def test_a_band_that_is_bright_all_the_time_is_not_sibilance():
    """Sibilants are brief; a stem whose 5-9 kHz band is over the threshold most of the time (a bright
    instrument in a weightless 'vocals' stem, a codec-noised top octave) is left alone, with a note."""
    n = RATE
    x = np.stack([vowel(n) + 0.2 * band_noise(n, 5500, 8500, seed=3)] * 2).astype(np.float32)
    stage = Deess()
    result = Pipeline([stage], device="cpu").run(Audio(torch.from_numpy(x), RATE))
    assert np.array_equal(result.audio.numpy(), x)
    assert any("steady brightness, not sibilance" in note for note in result.notes)
    assert not np.array_equal(deess(x, max_sibilant_fraction=None), x)  # without the diagnosis it cuts


def test_a_vowel_alone_is_left_exactly_as_it_is():
    x = np.stack([vowel(RATE // 2)] * 2).astype(np.float32)
    assert band_db(x, 5000, 9000, 0, 0.5) - band_db(x, 0, RATE / 2, 0, 0.5) == pytest.approx(-33, abs=2)
    assert np.array_equal(deess(x), x)


def test_below_the_threshold_or_the_floor_nothing_is_cut():
    x = sung(0.02)  # band about 21 dB below the full band: under the -15 dB threshold
    assert np.array_equal(deess(x), x)
    loud = sung(0.2)
    assert np.array_equal(deess(loud, floor_db=-10), loud)  # the band is below -10 dBFS
    assert not np.array_equal(deess(loud, threshold_db=-25), loud)


def test_release_sets_how_long_the_cut_lasts():
    x = sung(0.2)
    b = BURSTS_S[0][1]
    after = slice(int((b + 0.015) * RATE), int((b + 0.05) * RATE))  # 15-50 ms after the burst
    fast = deess(x, release_ms=10)
    slow = deess(x, release_ms=400)
    assert np.abs(fast[:, after] - x[:, after]).max() < 1e-6  # recovered within 10 ms
    assert np.abs(slow[:, after] - x[:, after]).max() > 1e-3  # still recovering


def test_long_input_runs_in_blocks_with_the_same_result(monkeypatch):
    x = np.concatenate([sung(0.2)] * 3, axis=1)
    whole = deess(x)
    monkeypatch.setattr(vocal, "BLOCK_FRAMES", 20000)  # many seams, also inside bursts
    blocks = deess(x)
    assert np.abs(blocks - whole).max() < 1e-5


def test_low_rates_and_band_edges():
    x = np.stack([vowel(8000, 8000)]).astype(np.float32)
    assert np.array_equal(deess(x, 8000), x)  # the band is above 4 kHz Nyquist: untouched
    with pytest.raises(ValueError, match="low_hz"):
        Deess(low_hz=9000, high_hz=5000)
    y = deess(sung(0.2)[:, : RATE // 2], RATE, high_hz=24000)  # above Nyquist: capped, still works
    assert np.isfinite(y).all()
