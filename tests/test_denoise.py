"""denoise.spectral_gate: contract, agreement with noisereduce, blocks == whole, and measured behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from pydantic import ValidationError

from restorekit.audio import Audio
from restorekit.errors import RestorekitError
from restorekit.runner import Pipeline
from restorekit.testing import check_stage
from restorekit_plugins.denoise import SpectralGate

HOP = 256  # the default hop at n_fft 1024


def db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-30))


def music_and_noise(sample_rate: int, seconds: float, channels: int = 2, seed: int = 0):
    """Tones that come and go plus white noise; (signal, noise-only clip), float32 (channels, frames)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate) // HOP * HOP  # noisereduce leaves the last n % hop samples at zero
    t = np.arange(n) / sample_rate
    rows = []
    for c in range(channels):
        tone = 0.3 * np.sin(2 * np.pi * (440 + 220 * c) * t) * ((t % 0.8) < 0.5)
        tone += 0.1 * np.sin(2 * np.pi * 1500 * t + c)
        rows.append(tone + 0.02 * rng.standard_normal(n))
    noise = 0.02 * rng.standard_normal((channels, sample_rate))
    return np.asarray(rows, np.float32), noise.astype(np.float32)


def gate(x: np.ndarray, sample_rate: int, **params) -> np.ndarray:
    return SpectralGate(params).process(Audio.from_numpy(np.ascontiguousarray(x), sample_rate)).numpy()


def error_db(out: np.ndarray, ref: np.ndarray) -> float:
    """Energy of the difference relative to the reference, in dB."""
    return db(out - ref) - db(ref)


# -- contract and parameters ------------------------------------------------------------------
@pytest.mark.parametrize("params", [{}, {"stationary": False, "n_fft": 2048, "hop_length": 384},
                                    {"detect_noise_floor": False}])
def test_contract(params):
    check_stage(SpectralGate, params)


def test_contract_of_the_noisereduce_implementation():
    check_stage(SpectralGate, {"implementation": "noisereduce", "stationary": False}, sample_rates=(16000,))


@pytest.mark.parametrize("params, words", [
    ({"hop_length": 600}, "hop_length"),
    ({"noise_clip": "noise.wav", "stationary": False}, "stationary"),
    ({"implementation": "cuda"}, "implementation"),
    ({"n_fft": 1023}, "n_fft"),
    ({"prop_decrease": 1.5}, "prop_decrease"),
])
def test_bad_parameters_are_refused_before_any_audio(params, words):
    with pytest.raises(ValidationError, match=words):
        SpectralGate(params)


def test_a_missing_noise_clip_is_a_clear_error_at_load(tmp_path):
    stage = SpectralGate(noise_clip=str(tmp_path / "nope.wav"))
    with pytest.raises(RestorekitError, match="noise_clip: .*nope.wav: no such file"):
        Pipeline([stage], device="cpu").prepare()


def test_a_noise_clip_shorter_than_n_fft_is_refused(tmp_path):
    sf.write(tmp_path / "n.wav", np.zeros(100, np.float32) + 0.01, 16000)
    x, _ = music_and_noise(16000, 0.5, channels=1)
    with pytest.raises(RestorekitError, match="longer noise clip"):
        gate(x, 16000, noise_clip=str(tmp_path / "n.wav"))


# -- the torch path against noisereduce ----------------------------------------------------------
# noisereduce runs on the whole signal (chunk_size=None, padding=0: its own chunking zero-pads
# each chunk, which changes the result near chunk edges) and our path keeps noisereduce's
# zero-padded mask smoothing (normalize_mask_edges=False). The difference must stay 80 dB below
# the output (measured: about -138 dB, float32 rounding).
MATCH_DB = -80.0


def test_stationary_with_a_noise_clip_matches_noisereduce(tmp_path):
    import noisereduce

    sr = 22050
    x, noise = music_and_noise(sr, 2.0)
    sf.write(tmp_path / "noise.wav", noise.T, sr, subtype="FLOAT")
    ref = noisereduce.reduce_noise(y=x, sr=sr, stationary=True, y_noise=noise, prop_decrease=0.8,
                                   freq_mask_smooth_hz=200, chunk_size=None, padding=0, clip_noise_stationary=False)
    out = gate(x, sr, noise_clip=str(tmp_path / "noise.wav"), normalize_mask_edges=False, per_channel_profile=False)
    assert error_db(out, ref) < MATCH_DB


def test_per_channel_profiles_match_noisereduce_run_on_each_channel(tmp_path):
    import noisereduce

    sr = 22050
    x, noise = music_and_noise(sr, 2.0, seed=14)
    noise[1] *= 3  # a noisier right channel
    sf.write(tmp_path / "noise.wav", noise.T, sr, subtype="FLOAT")
    ref = np.stack([noisereduce.reduce_noise(y=x[c], sr=sr, stationary=True, y_noise=noise[c], prop_decrease=0.8,
                                             freq_mask_smooth_hz=200, chunk_size=None, padding=0,
                                             clip_noise_stationary=False) for c in range(2)])
    out = gate(x, sr, noise_clip=str(tmp_path / "noise.wav"), normalize_mask_edges=False)
    assert error_db(out, ref) < MATCH_DB


def test_stationary_profile_from_every_frame_matches_noisereduce_without_a_clip():
    import noisereduce

    sr = 22050
    x, _ = music_and_noise(sr, 2.0, seed=1)
    ref = noisereduce.reduce_noise(y=x, sr=sr, stationary=True, prop_decrease=0.5, n_std_thresh_stationary=1.0,
                                   time_mask_smooth_ms=30, chunk_size=None, padding=0)
    out = gate(x, sr, noise_quietest_fraction=1.0, prop_decrease=0.5, n_std_thresh=1.0, freq_mask_smooth_hz=500,
               time_mask_smooth_ms=30, normalize_mask_edges=False, per_channel_profile=False,
               detect_noise_floor=False)
    assert error_db(out, ref) < MATCH_DB


@pytest.mark.parametrize("time_constant_s", [0.3, 2.0])
def test_nonstationary_matches_noisereduce(time_constant_s):
    import noisereduce

    sr = 16000
    x, _ = music_and_noise(sr, 2.0, seed=2)
    ref = noisereduce.reduce_noise(y=x, sr=sr, stationary=False, prop_decrease=0.9, time_constant_s=time_constant_s,
                                   freq_mask_smooth_hz=200, chunk_size=None, padding=0)
    out = gate(x, sr, stationary=False, prop_decrease=0.9, time_constant_s=time_constant_s,
               normalize_mask_edges=False, detect_noise_floor=False)
    assert error_db(out, ref) < MATCH_DB


def test_the_noisereduce_implementation_is_the_library_itself():
    import noisereduce

    sr = 16000
    x, _ = music_and_noise(sr, 1.0, seed=3)
    ref = noisereduce.reduce_noise(y=x, sr=sr, stationary=False, prop_decrease=0.8, freq_mask_smooth_hz=200,
                                   chunk_size=None, padding=0)
    out = gate(x, sr, stationary=False, implementation="noisereduce", detect_noise_floor=False)
    assert np.abs(out - ref).max() < 1e-6


@pytest.mark.parametrize("detect", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_both_implementations_share_the_quietest_frames_profile(per_channel, detect):
    """Also with detection on: both then gate only the bands where the floor was found."""
    sr = 16000
    x, _ = music_and_noise(sr, 1.5, seed=4)
    ref = gate(x, sr, implementation="noisereduce", per_channel_profile=per_channel, detect_noise_floor=detect)
    out = gate(x, sr, normalize_mask_edges=False, per_channel_profile=per_channel, detect_noise_floor=detect)
    assert error_db(out, ref) < MATCH_DB


# -- blocks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [
    {},
    {"stationary": False, "time_constant_s": 0.5},
    {"n_fft": 2048, "hop_length": 512, "normalize_mask_edges": False},
    {"n_fft": 1000, "hop_length": 300},  # hop does not divide n_fft: torch.istft fallback
    {"freq_mask_smooth_hz": 0, "time_mask_smooth_ms": 0, "prop_decrease": 1.0},
    {"detect_noise_floor": False},
    {"detect_noise_floor": False, "stationary": False, "time_constant_s": 0.5},
])
def test_blocks_give_the_whole_signal_result(params):
    """Blocks of 0.1 s (a few frames of context each) against one block: max difference < 1e-5."""
    sr = 16000
    x, _ = music_and_noise(sr, 2.0, seed=5)
    whole = gate(x, sr, block_s=60, **params)
    for block_s in (0.1, 0.37):
        assert np.abs(gate(x, sr, block_s=block_s, **params) - whole).max() < 1e-5


# -- behaviour ---------------------------------------------------------------------------------
def tone_bursts(sr: int, seconds: float, tone_hz: float = 1000.0):
    """A 0.3-amplitude tone on 60% of each second plus white noise at 0.01 (-40 dBFS rms)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * sr)) / sr
    on = (t % 1.0) < 0.6
    tone = 0.3 * np.sin(2 * np.pi * tone_hz * t) * on
    return t, tone, (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def tone_and_residual(y: np.ndarray, t: np.ndarray, tone_hz: float) -> tuple[float, float]:
    """Amplitude of the tone (least-squares fit) and the dB level of what is left."""
    basis = np.stack([np.sin(2 * np.pi * tone_hz * t), np.cos(2 * np.pi * tone_hz * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef)), db(y - basis @ coef)


def test_stationary_gate_lowers_the_noise_floor_and_keeps_the_tone():
    """Defaults, profile from the quietest frames: noise -10 dB or more, tone within 0.5 dB.

    Measured: noise -12.3 dB in the gaps and -11.4 dB under the tone (prop_decrease 0.8 caps it
    at -14 dB), tone -0.006 dB.
    """
    sr = 44100
    t, _, x = tone_bursts(sr, 3.0)
    y = gate(x[None], sr)[0]
    phase = t % 1.0
    steady = (phase > 0.1) & (phase < 0.5)
    gaps = (phase > 0.7) & (phase < 0.95)
    amp_in, floor_in = tone_and_residual(x[steady], t[steady], 1000.0)
    amp_out, floor_out = tone_and_residual(y[steady], t[steady], 1000.0)
    assert abs(20 * np.log10(amp_out / amp_in)) < 0.5
    assert floor_out - floor_in < -10
    assert db(y[gaps]) - db(x[gaps]) < -10


def test_full_gating_with_a_noise_clip_removes_more_noise(tmp_path):
    """prop_decrease 1 with a noise clip: the gaps drop 20 dB or more, a steady tone stays within 0.5 dB."""
    sr = 44100
    rng = np.random.default_rng(8)
    sf.write(tmp_path / "noise.wav", (0.01 * rng.standard_normal(sr)).astype(np.float32), sr, subtype="FLOAT")
    t, _, x = tone_bursts(sr, 3.0)
    y = gate(x[None], sr, prop_decrease=1.0, noise_clip=str(tmp_path / "noise.wav"))[0]
    phase = t % 1.0
    steady, gaps = (phase > 0.1) & (phase < 0.5), (phase > 0.7) & (phase < 0.95)
    assert abs(20 * np.log10(tone_and_residual(y[steady], t[steady], 1000.0)[0] /
                             tone_and_residual(x[steady], t[steady], 1000.0)[0])) < 0.5
    assert db(y[gaps]) - db(x[gaps]) < -20


def test_nonstationary_gate_lowers_steady_noise():
    """Non-stationary: steady noise between short bursts drops 10 dB or more (measured -13.7 dB)."""
    sr = 22050
    rng = np.random.default_rng(9)
    t = np.arange(4 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 1000 * t) * ((t % 1.0) < 0.1) + 0.01 * rng.standard_normal(t.size))
    y = gate(x[None].astype(np.float32), sr, stationary=False)[0]
    gaps = (t % 1.0 > 0.3) & (t > 0.5) & (t < 3.5)
    assert db(y[gaps]) - db(x[gaps]) < -10


@pytest.mark.parametrize("normalize, max_loss_db", [(True, 0.05), (False, None)])
def test_normalized_mask_edges_keep_the_bass(tmp_path, normalize, max_loss_db):
    """A clean 50 Hz tone: noisereduce's zero-padded smoothing takes > 0.5 dB off it (measured 0.95 dB
    with 200 Hz smoothing, 2.3 dB at 60 Hz with its own 500 Hz default), ours < 0.05 dB."""
    sr = 44100
    rng = np.random.default_rng(10)
    t = np.arange(2 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 50 * t) + 0.001 * rng.standard_normal(t.size)).astype(np.float32)
    sf.write(tmp_path / "noise.wav", (0.001 * rng.standard_normal(sr)).astype(np.float32), sr, subtype="FLOAT")
    y = gate(x[None], sr, normalize_mask_edges=normalize, noise_clip=str(tmp_path / "noise.wav"))[0]
    body = slice(sr // 4, -sr // 4)
    loss = -20 * np.log10(tone_and_residual(y[body], t[body], 50)[0] / tone_and_residual(x[body], t[body], 50)[0])
    if max_loss_db is None:
        assert loss > 0.5
    else:
        assert loss < max_loss_db


def test_identical_channels_give_the_mono_result():
    sr = 16000
    x, _ = music_and_noise(sr, 1.0, channels=1, seed=11)
    mono = gate(x, sr)
    stereo = gate(np.concatenate([x, x]), sr)
    assert np.abs(stereo - mono).max() < 1e-6


@pytest.mark.parametrize("per_channel, max_change_db", [(True, -10.0), (False, -6.0)])
def test_per_channel_profiles_remove_uncorrelated_stereo_noise(per_channel, max_change_db):
    """Independent noise in each channel: the channel-mean profile sits 3 dB low, so noisereduce's way
    removes less (measured -8.3 dB in the gaps) than a profile per channel (-12.3 dB, as mono)."""
    sr = 44100
    rng = np.random.default_rng(15)
    t = np.arange(3 * sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t) * ((t % 1.0) < 0.6)
    x = np.stack([tone + 0.01 * rng.standard_normal(t.size) for _ in range(2)]).astype(np.float32)
    y = gate(x, sr, per_channel_profile=per_channel)
    gaps = (t % 1.0 > 0.7) & (t % 1.0 < 0.95)
    change = db(y[:, gaps]) - db(x[:, gaps])
    assert change < max_change_db
    if not per_channel:
        assert change > -10.0


def test_digital_silence_passes_unchanged():
    x = np.zeros((2, 8000), np.float32)
    assert np.array_equal(gate(x, 16000), x)
    assert np.array_equal(gate(x, 16000, stationary=False), x)


def test_a_noise_clip_at_another_rate_is_resampled(tmp_path):
    rng = np.random.default_rng(12)
    sf.write(tmp_path / "noise.wav", (0.01 * rng.standard_normal(48000)).astype(np.float32), 48000, subtype="FLOAT")
    t, _, x = tone_bursts(44100, 2.0)
    y = gate(x[None], 44100, noise_clip=str(tmp_path / "noise.wav"))[0]
    gaps = (t % 1.0 > 0.7) & (t % 1.0 < 0.95)
    assert db(y[gaps]) - db(x[gaps]) < -10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("stationary", [True, False])
def test_cuda_matches_cpu(stationary):
    sr = 22050
    x, _ = music_and_noise(sr, 3.0, seed=13)
    cpu = gate(x, sr, stationary=stationary)
    stage = SpectralGate(stationary=stationary)
    stage.device = "cuda"
    out = stage.process(Audio.from_numpy(x, sr).to("cuda"))
    assert out.device.type == "cuda"
    assert error_db(out.numpy(), cpu) < -80


# -- diagnose, then treat: the noise-floor detection ---------------------------------------------
GEN_RATE = 32000  # text-to-music output rate


def band_db(x: np.ndarray, sr: int, low_hz: float, high_hz: float) -> float:
    """Mean power density (dB) of x (channels, frames) in low_hz..high_hz (Welch, 4096 points)."""
    from scipy import signal

    f, p = signal.welch(x, sr, nperseg=4096, axis=-1)
    band = (f >= low_hz) & (f <= high_hz)
    return float(10 * np.log10(np.mean(p[..., band])))


def generated_music(seconds: float = 6.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Synthesized music at 32 kHz whose top octave is noise that follows the music, as in MusicGen output.

    Band-limited white noise (12-15.8 kHz) times the square root of the music's 2-6 kHz
    envelope and a slow random +-3 dB wobble: noise-like within the band (flatness ~0.45,
    white noise 0.56), 26 dB under the music, never steady. Float64, (channels, frames).
    """
    from scipy import signal

    from restorekit_tools.demo import make_clean_clip

    rng = np.random.default_rng(seed)
    music = make_clean_clip(seconds, seed, rate=GEN_RATE).astype(np.float64)
    mid = signal.sosfilt(signal.butter(4, [2000, 6000], btype="band", fs=GEN_RATE, output="sos"), music)
    env = signal.sosfiltfilt(signal.butter(2, 20, fs=GEN_RATE, output="sos"), np.abs(mid)).clip(1e-9)
    top_band = signal.butter(6, [12000, 15800], btype="band", fs=GEN_RATE, output="sos")
    rows = []
    for c in range(channels):
        wobble = signal.sosfiltfilt(signal.butter(2, 8, fs=GEN_RATE, output="sos"), rng.standard_normal(music.size))
        top = signal.sosfilt(top_band, rng.standard_normal(music.size))
        top *= np.sqrt(env / env.mean()) * 10 ** (3 * wobble / wobble.std() / 20)
        rows.append(np.roll(music, 331 * c) + top * 0.05 * music.std() / top.std())
    return np.asarray(rows)


def gate_with_notes(x: np.ndarray, sr: int, **params) -> tuple[np.ndarray, list[str]]:
    stage = SpectralGate(params)
    out = stage.process(Audio.from_numpy(np.ascontiguousarray(x, dtype=np.float32), sr)).numpy()
    return out, stage.take_notes()


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("stationary", [True, False])
def test_clean_music_with_a_music_following_noisy_top_octave_passes_bit_identical(stationary, channels):
    """Nothing steady to remove: the output is the input, and the notes say why. Without detection the
    gate eats the top octave (measured -1.4 dB stationary, -8.8 dB non-stationary)."""
    x = generated_music(channels=channels).astype(np.float32)
    y, notes = gate_with_notes(x, GEN_RATE, stationary=stationary)
    assert np.array_equal(y, x)
    assert len(notes) == 1 and notes[0].startswith("no steady noise floor found")
    old = gate(x, GEN_RATE, stationary=stationary, detect_noise_floor=False)
    assert band_db(old, GEN_RATE, 12000, 15800) - band_db(x, GEN_RATE, 12000, 15800) < -1.0


@pytest.mark.parametrize("stationary", [True, False])
def test_a_white_noise_floor_under_band_limited_music_is_found_and_gated(stationary):
    """Demo-like: music band-limited at 8 kHz plus white noise at -50 dBFS. The floor is found above
    the music; the noise-only band drops 10 dB or more (measured -12.6 dB stationary, -13.9 dB not) and
    the SI-SDR against the noise-free clip does not fall (measured 32.4 -> 34.8 dB). Gating every band,
    as without detection, costs it 10 dB or more (measured 11.7 and 7.1 dB)."""
    from scipy import signal

    from restorekit_tools.demo import make_clean_clip

    music = make_clean_clip(6.0, 1, rate=GEN_RATE).astype(np.float64)
    music = signal.sosfiltfilt(signal.butter(12, 8000, fs=GEN_RATE, output="sos"), music)[None]
    x = (music + 10 ** (-50 / 20) * np.random.default_rng(3).standard_normal(music.shape)).astype(np.float32)
    y, notes = gate_with_notes(x, GEN_RATE, stationary=stationary)
    assert len(notes) == 1 and notes[0].startswith("noise floor found in 8.7-16 kHz")
    assert "below the signal" in notes[0] and "gating only those bands" in notes[0]
    assert band_db(y, GEN_RATE, 9000, 15000) - band_db(x, GEN_RATE, 9000, 15000) < -10

    def si_sdr(est):
        s = np.sum(est * music) / np.sum(music ** 2) * music
        return 10 * np.log10(np.sum(s ** 2) / np.sum((est - s) ** 2))

    assert si_sdr(y) >= si_sdr(x)
    old = gate(x, GEN_RATE, stationary=stationary, detect_noise_floor=False)
    assert si_sdr(old) < si_sdr(x) - 10


def test_a_steady_hiss_shelf_over_generated_music_is_gated_only_where_it_is():
    """MusicGen-like music plus a steady hiss shelf 7-15.5 kHz (16 dB under the music): the floor is found
    in the bands above 6 kHz only; below 5 kHz the output equals the input to -60 dB (measured -72 dB),
    and the hiss left is at least 3 dB lower (measured -6.2 dB)."""
    from scipy import signal

    music = generated_music()
    hiss = signal.sosfilt(signal.butter(8, [7000, 15500], btype="band", fs=GEN_RATE, output="sos"),
                          np.random.default_rng(9).standard_normal(music.shape))
    hiss *= 10 ** (-30 / 20) / hiss.std()
    x = (music + hiss).astype(np.float32)
    y, notes = gate_with_notes(x, GEN_RATE, prop_decrease=0.8)
    assert notes[0].startswith("noise floor found in 6.2-16 kHz")
    low = signal.sosfiltfilt(signal.butter(8, 5000, fs=GEN_RATE, output="sos"), y - x)
    assert db(low) - db(x) < -60
    assert db(y - music) - db(hiss) < -3


def test_input_too_short_to_measure_passes_unchanged():
    x = (0.01 * np.random.default_rng(4).standard_normal((1, 800))).astype(np.float32)  # 50 ms at 16 kHz
    y, notes = gate_with_notes(x, 16000)
    assert np.array_equal(y, x) and "too short to measure" in notes[0]


def test_a_noise_clip_is_the_diagnosis(tmp_path):
    """With noise_clip the input is gated without detection, as before (no note)."""
    rng = np.random.default_rng(12)
    sf.write(tmp_path / "noise.wav", (0.01 * rng.standard_normal(16000)).astype(np.float32), 16000, subtype="FLOAT")
    x, _ = music_and_noise(16000, 1.0, channels=1, seed=6)
    y, notes = gate_with_notes(x, 16000, noise_clip=str(tmp_path / "noise.wav"))
    assert notes == []
    assert np.array_equal(y, gate(x, 16000, noise_clip=str(tmp_path / "noise.wav"), detect_noise_floor=False))
