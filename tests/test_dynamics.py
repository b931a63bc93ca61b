"""dynamics.compress and dynamics.limit: static curve, crest factor, stereo link, ceiling, blocks."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.audio import Audio
from restorekit.testing import check_stage
from restorekit_plugins.dynamics import Compress, Limit

SR = 44100
STEP_S = 0.5
LEVELS_DB = (-40.0, -30.0, -20.0, -10.0, 0.0)
# pedalboard's (JUCE) peak envelope rides below a steady sine's peak, so above threshold the
# settled level sits 0.86 dB above threshold + (in - threshold) / ratio (measured at 100 Hz,
# 1 kHz and 5 kHz); the slope is exactly 1/ratio. Stated tolerance: 0..1.0 dB above the curve.
CURVE_OFFSET_MAX_DB = 1.0


def audio(x: np.ndarray, rate: int = SR) -> Audio:
    return Audio.from_numpy(np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32), rate)


def db(x: float) -> float:
    return 20 * np.log10(x)


def stepped_sine(levels_db=LEVELS_DB, freq_hz=1000.0) -> np.ndarray:
    t = np.arange(int(STEP_S * SR)) / SR
    return np.concatenate([10 ** (lv / 20) * np.sin(2 * np.pi * freq_hz * t) for lv in levels_db])[None]


def settled_levels(y: np.ndarray, steps: int) -> list[float]:
    """Level of each step as the peak of a sine with the same RMS (dBFS), over its second half."""
    n = int(STEP_S * SR)
    return [db(np.sqrt(2 * np.mean(y[0, i * n + n // 2:(i + 1) * n] ** 2))) for i in range(steps)]


def drum_loop(seconds: float = 3.0, rise_ms: float = 2.0, seed: int = 0) -> np.ndarray:
    """Noise hits (2 ms rise, ~80 ms decay) in a 16th-note accent pattern 1, .3, .6, .3."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = np.zeros(n)
    t = np.arange(int(0.2 * SR)) / SR
    env = np.minimum(1.0, t / (rise_ms / 1000)) * np.exp(-t * 12)
    for i, start in enumerate(range(0, n - len(t), int(0.25 * SR))):
        x[start:start + len(t)] += (1.0, 0.3, 0.6, 0.3)[i % 4] * rng.standard_normal(len(t)) * env
    return (x / np.abs(x).max() * 0.9)[None]


def crest_db(x: np.ndarray) -> float:
    return db(np.abs(x).max() / np.sqrt(np.mean(x ** 2)))


@pytest.mark.parametrize("params", [{}, {"stereo_link": False, "makeup_gain_db": 3.0},
                                    {"min_peak_to_loudness_db": 15.0}])
def test_compress_contract(params):
    check_stage(Compress, params)


def test_limit_contract():
    check_stage(Limit)


@pytest.mark.parametrize(("threshold_db", "ratio"), [(-20.0, 4.0), (-30.0, 2.0)])
def test_static_curve_follows_threshold_and_ratio(threshold_db, ratio):
    y = Compress(threshold_db=threshold_db, ratio=ratio).process(audio(stepped_sine())).numpy()
    out = settled_levels(y, len(LEVELS_DB))
    for level, got in zip(LEVELS_DB, out):
        if level <= threshold_db:  # at threshold the textbook curve is the identity too
            assert abs(got - level) < 0.01, f"{level} dBFS is not above threshold: changed to {got:.3f}"
        else:
            textbook = threshold_db + (level - threshold_db) / ratio
            assert 0.0 <= got - textbook <= CURVE_OFFSET_MAX_DB, f"{level} dBFS -> {got:.3f}, textbook {textbook}"
    slope = (out[-1] - out[-2]) / (LEVELS_DB[-1] - LEVELS_DB[-2])
    assert slope == pytest.approx(1 / ratio, abs=0.01)


def test_fast_attack_lowers_crest_factor():
    x = drum_loop()
    y = Compress(attack_ms=1.0).process(audio(x)).numpy()
    assert crest_db(x) - crest_db(y) >= 3.0  # measured 5.7 dB (23.2 -> 17.5)


def test_chain_settings_shrink_accents():
    """At the chain's settings (attack 10 ms) loud hits come down relative to soft ones."""
    x = drum_loop(rise_ms=5.0)
    y = Compress(threshold_db=-20, ratio=4, attack_ms=10, release_ms=100).process(audio(x)).numpy()
    hop, win = int(0.25 * SR), int(0.1 * SR)

    def accent_range(sig):
        rms = [np.sqrt(np.mean(sig[0, s:s + win] ** 2)) for s in range(0, sig.shape[1] - hop, hop)]
        loud, soft = np.mean(rms[0::4]), np.mean(rms[1::4])
        return db(loud / soft)

    assert accent_range(x) - accent_range(y) >= 3.0  # measured 10.6 -> 5.8 dB


def test_stereo_link_applies_one_gain():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, SR)) * np.array([[0.5], [0.01]])
    linked = Compress().process(audio(x)).numpy()
    alone = Compress(stereo_link=False).process(audio(x)).numpy()
    both = (np.abs(x[0]) > 1e-3) & (np.abs(x[1]) > 1e-3)
    gain_l, gain_r = linked[0, both] / x[0, both], linked[1, both] / x[1, both]
    assert db(np.median(gain_l)) < -3.0
    np.testing.assert_allclose(gain_r, gain_l, rtol=1e-4)  # the same gain, sample by sample
    np.testing.assert_allclose(alone[1], x[1], atol=1e-6)  # quiet channel untouched when unlinked
    # the loud channel drives the linked detector (R wins only near L's zero crossings): measured 3.4e-5
    np.testing.assert_allclose(alone[0], linked[0], atol=1e-4)


def test_makeup_gain_below_threshold():
    x = 0.01 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)[None]
    y = Compress(makeup_gain_db=6.0).process(audio(x)).numpy()
    assert db(np.abs(y).max() / np.abs(x).max()) == pytest.approx(6.0, abs=0.01)


@pytest.mark.parametrize("stage", [Compress(), Compress(stereo_link=False), Limit(), Limit(true_peak=True)],
                         ids=["linked", "unlinked", "limit", "limit_true_peak"])
def test_blocks_equal_whole(stage):
    rng = np.random.default_rng(2)
    x = audio(rng.standard_normal((2, 50_003)) * 0.4)
    whole = stage.process(x).numpy()
    stage.block_frames = 997
    blocks = stage.process(x).numpy()
    assert blocks.shape == whole.shape
    assert np.abs(blocks - whole).max() <= 1e-6  # measured: identical


# -- diagnose, then treat: min_peak_to_loudness_db --------------------------------------------------
def compress_with_notes(x: np.ndarray, **params) -> tuple[np.ndarray, Audio, list[str]]:
    stage = Compress(**params)
    a = audio(x)
    return stage.process(a).numpy(), a, stage.take_notes()


@pytest.mark.parametrize("signal_name", ["noise", "sine_steps"])
def test_low_peak_to_loudness_input_passes_bit_identical(signal_name):
    """Dense noise (ratio 7.6 dB) and stepped sines: nothing for the compressor to do at 15 dB."""
    rng = np.random.default_rng(4)
    x = 0.2 * rng.standard_normal((2, SR)) if signal_name == "noise" else stepped_sine()
    y, a, notes = compress_with_notes(x, min_peak_to_loudness_db=15.0)
    assert np.array_equal(y, a.numpy())
    assert len(notes) == 1 and "not above min_peak_to_loudness_db 15 dB" in notes[0]
    assert not np.array_equal(Compress().process(a).numpy(), a.numpy())  # the always-on default acts


def test_peaky_input_is_compressed_as_before_and_its_ratio_falls():
    """Drum hits (ratio 20.4 dB) with a 1 ms attack: compressed exactly as without the criterion, ratio
    down 3 dB or more (measured 20.4 -> 15.3 dB), and the note gives both."""
    from restorekit_plugins.dynamics import peak_to_loudness

    x = drum_loop()
    y, a, notes = compress_with_notes(x, min_peak_to_loudness_db=15.0, attack_ms=1.0)
    assert np.array_equal(y, Compress(attack_ms=1.0).process(a).numpy())
    before, after = peak_to_loudness(a)[0], peak_to_loudness(audio(y))[0]
    assert before > 15.0 and after < before - 3.0
    _, peak, loudness = peak_to_loudness(a)
    assert notes == [(f"peak-to-loudness ratio {before:.1f} dB (true peak {peak:+.1f} dBTP, {loudness:.1f} LUFS), "
                      f"above min_peak_to_loudness_db 15 dB: compressed (ratio now {after:.1f} dB)")]


def test_compression_that_does_not_lower_the_ratio_is_not_kept():
    """The same hits 34 dB quieter sit below the -20 dBFS threshold: compressing cannot help, so the
    input passes bit-identical and the note says so."""
    x = drum_loop() * 0.02
    y, a, notes = compress_with_notes(x, min_peak_to_loudness_db=15.0)
    assert np.array_equal(y, a.numpy())
    assert "compressing did not lower it" in notes[0]


def test_silence_passes_the_criterion_unchanged():
    y, a, notes = compress_with_notes(np.zeros((2, SR)), min_peak_to_loudness_db=15.0)
    assert np.array_equal(y, a.numpy()) and notes[0].startswith("silent")


def test_limit_holds_ceiling_and_leaves_quiet_audio_alone():
    rng = np.random.default_rng(3)
    loud = rng.standard_normal((2, SR)) * 0.5  # peaks near +6 dBFS
    y = Limit(ceiling_db=-3.0).process(audio(loud)).numpy()
    assert db(np.abs(y).max()) <= -3.0 + 0.01
    quiet = audio(rng.standard_normal((2, SR)) * 0.05)  # peaks near -14 dBFS
    out = Limit(ceiling_db=-1.0).process(quiet).numpy()
    np.testing.assert_allclose(out, quiet.numpy(), atol=1e-6)  # no makeup gain, latency compensated


def test_limit_mono_and_sixteen_frames():
    for channels in (1, 2):
        x = audio(np.full((channels, 16), 0.99))
        y = Limit(ceiling_db=-6.0).process(x).numpy()
        assert y.shape == (channels, 16)
        assert np.isfinite(y).all() and np.abs(y).max() <= 10 ** (-6 / 20) + 1e-4
