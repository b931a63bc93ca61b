"""master.normalize (peak, true peak, LUFS), master.dither (TPDF on the bit-depth grid), master.dc_remove.

The limiter budget with a real limiter after it, and DC removal measured, are in test_mastering_dynamics.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from restorekit.audio import Audio
from restorekit.io import write_audio
from restorekit.runner import Pipeline
from restorekit.testing import check_stage, synth_audio
from pydantic import ValidationError

from restorekit_plugins.master import DCRemove, Dither, Normalize, integrated_loudness, true_peak

NORMALIZE_TOL_DB = 0.05


def audio(x, rate=44100) -> Audio:
    return Audio.from_numpy(np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32), rate)


def peak_db(x) -> float:
    return float(20 * np.log10(np.abs(x).max()))


def music_like(channels=2, rate=44100, seconds=6.0, seed=0) -> np.ndarray:
    """Tones and noise with a quiet first third, so both loudness gates matter."""
    x = synth_audio(channels, rate, duration_s=seconds, seed=seed).numpy().copy()
    x[:, : x.shape[1] // 3] *= 0.02
    return x


# -- normalize -------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"mode": "true_peak"}, {"mode": "lufs"},
                                    {"mode": "lufs", "tolerance_lu": 0, "max_peak_reduction_db": None}])
def test_normalize_contract(params):
    check_stage(Normalize, params)


@pytest.mark.parametrize(("channels", "rate", "target"), [(1, 32000, -1.0), (2, 44100, -1.0), (2, 48000, -6.0)])
def test_peak_normalize_lands_on_target(channels, rate, target):
    x = audio(music_like(channels, rate, seconds=1.0) * 0.3, rate)
    y = Normalize(target_dbfs=target).process(x).numpy()
    assert peak_db(y) == pytest.approx(target, abs=NORMALIZE_TOL_DB)


def test_true_peak_catches_inter_sample_peaks():
    rate = 44100
    n = np.arange(rate)
    fade = np.minimum(1.0, np.minimum(n, n[::-1]) / 2000)  # no clicks at the ends (they ring)
    # a sine at rate/4 sampled 45 degrees off its crests: samples peak 3.01 dB below the waveform
    x = 0.5 * np.sin(2 * np.pi * n / 4 + np.pi / 4)[None] * fade
    assert true_peak(x) == pytest.approx(0.5, rel=1e-4)  # measured 0.500010
    y = Normalize(mode="true_peak", target_dbfs=-1.0).process(audio(x, rate)).numpy()
    waveform_peak_db = peak_db(y) + 20 * np.log10(np.sqrt(2))
    assert waveform_peak_db == pytest.approx(-1.0, abs=NORMALIZE_TOL_DB)
    assert peak_db(y) == pytest.approx(-4.01, abs=NORMALIZE_TOL_DB)


@pytest.mark.parametrize(("channels", "rate"), [(1, 32000), (2, 44100), (2, 48000)])
def test_loudness_matches_pyloudnorm(channels, rate):
    x = music_like(channels, rate)
    reference = pyloudnorm.Meter(rate).integrated_loudness(x.T.astype(np.float64))
    assert integrated_loudness(x, rate) == pytest.approx(reference, abs=0.01)  # measured 1e-13
    assert integrated_loudness(x, rate, block_frames=1001) == pytest.approx(reference, abs=0.01)


@pytest.mark.parametrize("target", [-14.0, -23.0])
def test_lufs_normalize_lands_on_target(target):
    x = audio(music_like(), 44100)
    y = Normalize(mode="lufs", target_lufs=target).process(x).numpy()
    assert pyloudnorm.Meter(44100).integrated_loudness(y.T.astype(np.float64)) == pytest.approx(
        target, abs=NORMALIZE_TOL_DB)


def test_target_lufs_alone_selects_lufs_mode():
    assert Normalize(target_lufs=-16).params.mode == "lufs"
    assert Normalize().params.mode == "peak"
    assert Normalize(mode="peak", target_lufs=-16).params.mode == "peak"


def test_lufs_of_a_clip_shorter_than_a_gating_block():
    rate = 44100
    x = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(int(0.2 * rate)) / rate)[None]
    # the -0.691 dB offset cancels K-weighting's gain at 1 kHz: a 1 kHz sine reads its RMS, -23.0 dBFS
    assert integrated_loudness(x, rate) == pytest.approx(-23.0, abs=0.1)
    y = Normalize(target_lufs=-20).process(audio(x, rate)).numpy()
    assert peak_db(y) - peak_db(x) == pytest.approx(-20 - integrated_loudness(x, rate), abs=0.01)


def test_lufs_notes_peaks_above_full_scale():
    stage = Normalize(target_lufs=-3)
    stage.process(audio(music_like()))
    assert any("dynamics.limit" in note for note in stage.take_notes())


def test_silence_passes_and_gain_is_capped(caplog):
    silent = audio(np.zeros((2, 1000)))
    assert Normalize().process(silent) is silent
    quiet = audio(np.full((1, 1000), 1e-4))  # -80 dBFS: 79 dB needed, 40 dB allowed
    with caplog.at_level(logging.WARNING, logger="restorekit"):
        y = Normalize().process(quiet).numpy()
    assert peak_db(y) == pytest.approx(-40.0, abs=0.01)
    assert "max_gain_db" in caplog.text


def test_lufs_within_tolerance_is_left_bit_identical():
    x = audio(music_like())  # -9.32 LUFS
    stage = Normalize(target_lufs=-9.0)  # 0.32 LU away, within the default tolerance_lu of 1
    y = stage.process(x)
    assert np.array_equal(y.numpy(), x.numpy())
    [note] = stage.take_notes()
    assert "within tolerance_lu 1 of the target -9 LUFS: left unchanged (gain 0 dB)" in note


@pytest.mark.parametrize("tolerance", [0.0, 0.1])
def test_lufs_outside_tolerance_lands_on_target(tolerance):
    x = audio(music_like())
    y = Normalize(target_lufs=-9.0, tolerance_lu=tolerance).process(x).numpy()
    assert integrated_loudness(y, 44100) == pytest.approx(-9.0, abs=NORMALIZE_TOL_DB)
    assert not np.array_equal(y, x.numpy())


def test_tolerance_does_not_apply_to_peak_modes():
    x = audio(music_like() * 0.9)
    y = Normalize(target_dbfs=peak_db(x.numpy()) + 0.5).process(x).numpy()  # 0.5 dB away: still applied
    assert peak_db(y) - peak_db(x.numpy()) == pytest.approx(0.5, abs=0.01)


def test_budget_lowers_the_target_by_what_the_peaks_need():
    x = music_like()  # -9.32 LUFS, true peak -6.31 dBTP
    stage = Normalize(target_lufs=-1.0, ceiling_dbtp=-3.0, max_peak_reduction_db=1.0)
    y = stage.process(audio(x)).numpy()
    assert 20 * np.log10(true_peak(y)) == pytest.approx(-2.0, abs=0.01)  # ceiling + budget
    reached = integrated_loudness(y, 44100)
    assert reached == pytest.approx(-9.32 + 4.31, abs=0.02)
    assert any(f"normalized to {reached:.2f} LUFS instead of -1 LUFS" in n for n in stage.take_notes())
    unlimited = Normalize(target_lufs=-1.0, max_peak_reduction_db=None).process(audio(x)).numpy()
    assert integrated_loudness(unlimited, 44100) == pytest.approx(-1.0, abs=NORMALIZE_TOL_DB)


@pytest.mark.parametrize("bad", [{"tolerance_lu": -0.5}, {"tolerance_lu": 11}, {"ceiling_dbtp": 0.5},
                                 {"max_peak_reduction_db": -1}, {"max_peak_reduction_db": 61}])
def test_normalize_budget_params_are_validated(bad):
    with pytest.raises(ValidationError):
        Normalize(mode="lufs", **bad)


def test_normalize_budget_defaults():
    p = Normalize(target_lufs=-14).params
    assert (p.tolerance_lu, p.ceiling_dbtp, p.max_peak_reduction_db) == (1.0, -1.0, 2.0)
    assert Normalize(target_lufs=-14, max_peak_reduction_db=None).params.max_peak_reduction_db is None


def test_true_peak_blocks_equal_whole():
    x = np.random.default_rng(5).standard_normal((2, 30_011)) * 0.2
    assert true_peak(x, block_frames=777) == true_peak(x)


# -- dc_remove (behaviour measured in test_mastering_dynamics.py) ---------------------------

@pytest.mark.parametrize("params", [{}, {"cutoff_hz": 10.0, "threshold_dbfs": -90.0}])
def test_dc_remove_contract(params):
    check_stage(DCRemove, params)


def test_dc_remove_takes_a_constant_offset_off_mono():
    x = music_like(1, 32000, seconds=2.0) + np.float32(0.25)
    stage = DCRemove()
    y = stage.process(audio(x, 32000)).numpy()
    assert abs(float(y.mean())) < 1e-3
    [note] = stage.take_notes()
    assert note.startswith("mono: removed DC offset +0.2") and "(-12.0 dBFS)" in note


# -- dither ----------------------------------------------------------------------------

def dithered(x, bits=16, shaping="none", seed=0, rate=44100) -> np.ndarray:
    stage = Dither(bit_depth=bits, noise_shaping=shaping)
    return stage.run(audio(x, rate), seed)[0].numpy()


def error_lsb(x, bits=16, **kw) -> np.ndarray:
    """Total error (output - input) in LSB, in float64."""
    scale = 2.0 ** (bits - 1)
    x32 = np.asarray(x, np.float32)
    return dithered(x32, bits, **kw).astype(np.float64) * scale - x32.astype(np.float64) * scale


@pytest.mark.parametrize("params", [{}, {"bit_depth": 16, "noise_shaping": "highpass"}])
def test_dither_contract(params):
    check_stage(Dither, params)


@pytest.mark.parametrize("bits", [16, 24])
def test_dither_output_is_on_the_grid_and_written_exactly(bits, tmp_path):
    x = music_like(2, 44100, seconds=0.5) * 1.9  # some samples past full scale: clipped onto the grid
    y = dithered(x, bits)
    scale = 2.0 ** (bits - 1)
    k = y.astype(np.float64) * scale
    assert np.array_equal(k, np.rint(k)), "samples are not integers times 2**-(bits-1)"
    assert k.min() >= -scale and k.max() <= scale - 1
    path = write_audio(tmp_path / "d.wav", audio(y), bit_depth=bits)
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    assert sf.info(path).subtype == f"PCM_{bits}"
    assert np.array_equal(back.T, y)


@pytest.mark.parametrize("bits", [16, 24])
@pytest.mark.parametrize("offset_lsb", [0.0, 0.25, 0.5])
def test_tpdf_error_power_does_not_depend_on_the_signal(bits, offset_lsb):
    """TPDF with rounding: total error mean 0 and variance LSB**2/4 at any input (RPDF: 0..1/6)."""
    x = np.full((1, 200_000), (123 + offset_lsb) / 2.0 ** (bits - 1))
    e = error_lsb(x, bits)
    assert abs(e.mean()) < 0.005
    assert e.var() == pytest.approx(0.25, rel=0.02)
    assert np.abs(e).max() <= 1.5


def test_tpdf_error_statistics_on_music():
    rng = np.random.default_rng(6)
    x = rng.uniform(-0.5, 0.5, (2, 200_000))
    e = error_lsb(x, 16)
    assert abs(e.mean()) < 0.005
    assert e.var() == pytest.approx(0.25, rel=0.02)
    kurtosis = np.mean(e ** 4) / e.var() ** 2
    # rounding error (uniform) plus TPDF (two uniforms): Irwin-Hall of 3, kurtosis 2.6;
    # RPDF would give 2.4, no dither 1.8
    assert kurtosis == pytest.approx(2.6, abs=0.03)
    assert abs(np.corrcoef(e.ravel(), x.ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(e[0], e[1])[0, 1]) < 0.01  # channels get independent noise


def test_highpass_shaping_moves_noise_up():
    x = np.zeros((1, 2 ** 18)) + 0.3 / 2 ** 15  # 0.3 LSB offset at 16 bits
    flat, shaped = error_lsb(x, 16), error_lsb(x, 16, shaping="highpass")
    assert shaped.var() == pytest.approx(0.25, rel=0.02)  # still TPDF per sample

    def band_power(e, lo, hi):
        spectrum = np.abs(np.fft.rfft(e[0] - e[0].mean())) ** 2
        f = np.fft.rfftfreq(e.shape[1])
        return spectrum[(f >= lo) & (f < hi)].mean()

    low = 10 * np.log10(band_power(shaped, 0, 1 / 16) / band_power(flat, 0, 1 / 16))
    high = 10 * np.log10(band_power(shaped, 3 / 8, 1 / 2) / band_power(flat, 3 / 8, 1 / 2))
    assert low < -3.0  # measured -4.6 dB below fs/16 (2.8 kHz at 44.1 kHz)
    assert high > 1.0  # measured +2.0 dB in the top quarter


def test_dither_is_reproducible_and_blocks_equal_whole():
    x = music_like(2, 44100, seconds=0.3)
    a, b, c = dithered(x, seed=1), dithered(x, seed=1), dithered(x, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for shaping in ("none", "highpass"):
        stage = Dither(bit_depth=16, noise_shaping=shaping)
        whole = stage.process(audio(x)).numpy()
        stage.block_frames = 513
        assert np.array_equal(stage.process(audio(x)).numpy(), whole)


def test_dither_sets_the_pipeline_bit_depth():
    assert Pipeline([Dither(bit_depth=16)]).output_bit_depth() == 16
    assert Pipeline([Normalize(), Dither()]).output_bit_depth() == 24
