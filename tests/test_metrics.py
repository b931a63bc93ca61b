"""Metrics: formulas against stated numbers, alignment and its notes, the registry and the
`register_metrics` hook through a real entry point, optional ViSQOL, and `restorekit metrics`."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from pydantic import ValidationError

from restorekit.audio import Audio
from restorekit.errors import UsageError
from restorekit.metrics import MAX_RATIO_DB, Metric, MetricError, check_metric_class
from restorekit.metrics import LengthMismatchError, align
from restorekit_plugins.spectral import mel_filterbank
from restorekit_tools.measure import measure, resolve_metrics
from restorekit.plugins import ENTRY_POINT_GROUP, get_registry, load_registry, reset_registry

RATE = 44100
BUILTIN = ["snr", "si_sdr", "lsd", "lsd_band", "lsd_norm", "mel_l1", "mel_cosine", "spec_psnr", "visqol",
           "bandwidth_hz", "centroid_hz", "flatness", "rms_dbfs", "lufs", "true_peak_dbtp", "clipped_fraction",
           "band_level_db", "band_tracking"]


def audio(x, rate: int = RATE) -> Audio:
    x = np.asarray(x, dtype=np.float32)
    return Audio(torch.from_numpy(np.ascontiguousarray(x if x.ndim == 2 else x[None])), rate)


def sine(freq_hz: float, seconds: float = 1.0, rate: int = RATE, amp: float = 0.5, phase: float = 0.0):
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq_hz * t + phase)


def noise(seconds: float = 1.0, rate: int = RATE, seed: int = 0, channels: int | None = None):
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    return 0.1 * rng.standard_normal(n if channels is None else (channels, n))


def brick_lowpass(x: np.ndarray, cutoff_hz: float, rate: int = RATE, low_hz: float = 0.0) -> np.ndarray:
    """Keep only the FFT bins between low_hz and cutoff_hz (an ideal band-pass)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.shape[-1], 1 / rate)
    spec[..., (f > cutoff_hz) | (f < low_hz)] = 0
    return np.fft.irfft(spec, x.shape[-1])


def metric(metric_id: str, **params) -> Metric:
    return get_registry().metrics[metric_id](params)


# -- registry and contract ------------------------------------------------------------------------

def test_every_builtin_metric_is_registered_and_valid():
    metrics = get_registry().metrics
    plugin = next(p for p in get_registry().plugins if p.name == "metrics")
    assert plugin.metrics == BUILTIN and plugin.error is None
    for mid in BUILTIN:
        cls = metrics[mid]
        assert check_metric_class(cls) == [], mid
        assert get_registry().metrics.owner(mid) == "metrics"
        for name, field in cls.Params.model_fields.items():
            assert field.description, f"{mid}.{name} needs a description"


@pytest.mark.parametrize("metric_id", sorted(get_registry().metrics))
def test_check_metric_passes_every_registered_metric(metric_id):
    from restorekit.testing import check_metric

    cls = get_registry().metrics[metric_id]
    check_metric(cls, {"checkpoint": "tiny"} if "checkpoint" in cls.Params.model_fields else None)


def test_check_metric_catches_a_metric_that_prefers_noise_and_one_that_is_not_deterministic():
    from restorekit.testing import check_metric

    class PrefersNoise(Metric):
        id = "rktest.prefers_noise"
        summary = "Distance to the reference, wrongly declared higher-is-better."
        unit = ""
        higher_is_better = True
        needs_reference = True

        def compute(self, est, ref):
            return float((est.samples - ref.samples).abs().mean())

    with pytest.raises(AssertionError, match="the reference itself scores 0.0, worse than a noisy copy"):
        check_metric(PrefersNoise)

    class Random(Metric):
        id = "rktest.random"
        summary = "A different number every time."

        def compute(self, est, ref):
            return float(np.random.default_rng().random())

    with pytest.raises(AssertionError, match="two computations on the same audio differ"):
        check_metric(Random)


def test_check_metric_class_reports_what_is_wrong():
    class Bad(Metric):
        id = "Bad Id"
        summary = "two\nlines"

    problems = " ".join(check_metric_class(Bad))
    assert "id 'Bad Id'" in problems and "summary" in problems
    assert check_metric_class(int) == [f"{int!r} is not a subclass of restorekit.metrics.Metric"]


def test_params_are_validated_before_any_audio():
    with pytest.raises(ValidationError, match="high_hz"):
        metric("lsd_band", low_hz=8000, high_hz=4000)
    with pytest.raises(ValidationError):
        metric("lsd", definitely_not_a_parameter=1)
    with pytest.raises(ValidationError):
        metric("lsd", n_fft=1024, hop_length=2048)
    with pytest.raises(UsageError, match="Did you mean 'si_sdr'"):
        resolve_metrics(["si_sdrr"], reference=True)
    with pytest.raises(UsageError, match="compares against a reference"):
        resolve_metrics(["snr"], reference=False)
    with pytest.raises(UsageError, match="lsd_band: low_hz"):
        resolve_metrics(["lsd_band"], reference=True, params={"lsd_band": {"low_hz": "x"}})
    with pytest.raises(UsageError, match="not selected: mel_l1"):
        resolve_metrics(["lsd"], reference=True, params={"mel_l1": {"n_mels": 64}})


@pytest.mark.parametrize("rate", [8000, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_every_metric_survives_very_short_input(rate, channels):
    """16 frames: a finite value or a MetricError that says why, never a crash."""
    x = audio(noise(16 / rate, rate, channels=channels), rate)
    y = audio(noise(16 / rate, rate, seed=1, channels=channels), rate)
    result = measure(y, x, list(get_registry().metrics))
    for v in result.values:
        assert (v.value is not None and math.isfinite(v.value)) or v.error, v
        assert v.error is None or not v.error.startswith("internal error"), v
    free = measure(y, None, [m for m, c in get_registry().metrics.items() if not c.needs_reference])
    for v in free.values:
        assert (v.value is not None and math.isfinite(v.value)) or v.error, v
        assert v.error is None or not v.error.startswith("internal error"), v


# -- reference metrics ------------------------------------------------------------------------------

@pytest.mark.parametrize("target_db", [0.0, 20.0, 45.0])
def test_snr_of_signal_plus_noise_at_a_known_snr(target_db):
    x = sine(440) + sine(3000, amp=0.2)
    n = noise()
    n *= math.sqrt(np.sum(x ** 2) / np.sum(n ** 2)) * 10 ** (-target_db / 20)
    got = metric("snr")(audio(x + n), audio(x))
    assert abs(got - target_db) < 0.1


def test_snr_is_the_mean_over_channels_and_capped_for_identical_signals():
    x = np.stack([sine(440), sine(660)])
    n = np.stack([noise(seed=1)[0:RATE], noise(seed=2)])
    n[0] *= math.sqrt(np.sum(x[0] ** 2) / np.sum(n[0] ** 2)) * 10 ** (-10 / 20)
    n[1] *= math.sqrt(np.sum(x[1] ** 2) / np.sum(n[1] ** 2)) * 10 ** (-30 / 20)
    assert abs(metric("snr")(audio(x + n), audio(x)) - 20.0) < 0.1
    assert metric("snr")(audio(x), audio(x)) == MAX_RATIO_DB


def test_si_sdr_matches_its_definition_and_ignores_scaling():
    ref = sine(440) + noise(seed=3)
    est = ref + 0.3 * noise(seed=4) + 0.05
    r0, e0 = ref - ref.mean(), est - est.mean()
    target = (e0 @ r0) / (r0 @ r0) * r0
    expected = 10 * math.log10((target @ target) / ((e0 - target) @ (e0 - target)))
    si = metric("si_sdr")
    got = si(audio(est), audio(ref))
    assert abs(got - expected) < 1e-3
    assert abs(si(audio(0.25 * est), audio(ref)) - got) < 1e-3
    snr = metric("snr")
    assert abs(snr(audio(0.25 * est), audio(ref)) - snr(audio(est), audio(ref))) > 3.0


def test_lsd_is_zero_for_identical_and_the_normalized_variant_ignores_scale():
    ref = noise(seed=5) + sine(1000)
    est = ref + 0.02 * noise(seed=6)
    lsd, lsd_norm = metric("lsd"), metric("lsd_norm")
    assert lsd(audio(ref), audio(ref)) == 0.0
    assert lsd_norm(audio(ref), audio(ref)) < 1e-6
    # half the amplitude: every bin's log10 power differs by log10(4) = 0.602
    assert abs(lsd(audio(0.5 * ref), audio(ref)) - math.log10(4)) < 0.01
    base = lsd(audio(est), audio(ref))
    assert lsd(audio(0.5 * est), audio(ref)) - base > 0.3
    assert abs(lsd_norm(audio(0.5 * est), audio(ref)) - lsd_norm(audio(est), audio(ref))) < 1e-3


def test_lsd_band_only_sees_its_band():
    ref = noise(seed=7)
    est = ref + brick_lowpass(noise(seed=8), 16000, low_hz=8000)  # changes 8-16 kHz only
    low = metric("lsd_band", low_hz=100, high_hz=4000)(audio(est), audio(ref))
    high = metric("lsd_band", low_hz=8000, high_hz=16000)(audio(est), audio(ref))
    assert low < 0.05 < 0.3 < high
    with pytest.raises(MetricError, match="Nyquist"):
        metric("lsd_band", low_hz=5000)(audio(sine(100, rate=8000), 8000), audio(sine(100, rate=8000), 8000))


def test_mel_metrics_on_identical_and_scaled_signals():
    ref = noise(seed=9)
    cos, l1 = metric("mel_cosine"), metric("mel_l1")
    assert abs(cos(audio(ref), audio(ref)) - 1.0) < 1e-9
    assert l1(audio(ref), audio(ref)) == 0.0
    # -6.02 dB on every mel band of a broadband signal far above the -100 dB floor
    assert abs(l1(audio(0.5 * ref), audio(ref)) - 20 * math.log10(2)) < 0.05
    assert cos(audio(ref + 3 * noise(seed=10)), audio(ref)) < cos(audio(ref + 0.1 * noise(seed=10)), audio(ref))


@pytest.mark.parametrize("rate, n_fft, n_mels, fmin, fmax", [
    (22050, 1024, 40, 0.0, 8000.0),
    (32000, 1024, 128, 0.0, 16000.0),  # restore.crnn's front end
    (32000, 1024, 64, 0.0, None),  # the quality CNN
    (44100, 1412, 128, 0.0, 16000.0),  # restore.crnn's front end at 44.1 kHz
    (48000, 2048, 80, 20.0, 20000.0),
])
def test_mel_filterbank_matches_librosa_htk_triangles(rate, n_fft, n_mels, fmin, fmax):
    import librosa  # the `test` extra: this comparison must run, not skip

    ours = mel_filterbank(rate, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None,
                                 dtype=np.float64)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-12


def test_spec_psnr_is_capped_for_identical_and_falls_with_noise():
    ref = sine(440) + noise(seed=11)
    psnr = metric("spec_psnr")
    assert psnr(audio(ref), audio(ref)) == MAX_RATIO_DB
    light = psnr(audio(ref + 0.01 * noise(seed=12)), audio(ref))
    heavy = psnr(audio(ref + 0.3 * noise(seed=12)), audio(ref))
    assert light - heavy > 20  # 30x the noise amplitude is ~29.5 dB


def test_a_silent_reference_is_an_error_with_a_reason_not_a_crash():
    # Every reference metric refuses a silent reference now, LSD included: it used to give a
    # large "valid" number (the log of epsilon), which measured nothing about the estimate.
    ids = [m for m, c in get_registry().metrics.items() if c.needs_reference]
    for ref in (np.zeros(RATE), 1e-7 * noise(seed=30)):  # digital silence, and -140 dBFS
        result = measure(audio(noise()), audio(ref), ids)
        assert result.values and all(v.value is None for v in result.values), result.values
        assert all("the reference is silent" in v.error and "-120 dBFS" in v.error for v in result.values)
        with pytest.raises(MetricError, match="the reference is silent"):
            metric("snr")(audio(noise()), audio(ref))
    assert metric("lsd")(audio(noise()), audio(1e-4 * noise(seed=30))) > 0  # quiet (-100 dBFS) is not silent


def test_a_length_mismatch_is_an_error_unless_trimming_is_asked():
    ref = sine(440, 2.0) + noise(2.0, seed=31)
    ids = ["snr", "lsd", "mel_cosine"]
    # the probe's cases: 20 frames of a 2 s reference, and an estimate twice as long; both used
    # to score 200 dB / 0 / 1 because everything beyond the common part was silently trimmed
    for est in (ref[:20], np.concatenate([ref, ref])):
        with pytest.raises(LengthMismatchError, match=r"pass trim=True") as info:
            measure(audio(est), audio(ref), ids)
        assert isinstance(info.value, MetricError)
        assert f"est is {len(est) / RATE:.3f} s long and ref 2.000 s" in str(info.value)
        with pytest.raises(MetricError, match="differ by"):
            metric("snr")(audio(est), audio(ref))
        with pytest.raises(MetricError, match="differ by"):
            align(audio(est), audio(ref))
        trimmed = measure(audio(est), audio(ref), ids, trim=True)
        assert all(v.error is None for v in trimmed.values), trimmed.values
        assert any(n.startswith("trimmed") and "as asked (trim)" in n for n in trimmed.notes), trimmed.notes
        assert metric("snr")(audio(est), audio(ref), trim=True) == MAX_RATIO_DB  # the common part is identical
    # within max(1 %, 50 ms) trimming stays automatic, with its note; the tolerance is at ref's rate
    ok = align(audio(ref[: len(ref) - int(0.049 * RATE)]), audio(ref))
    assert ok.notes and ok.notes[0].startswith("trimmed ref")
    with pytest.raises(LengthMismatchError):
        align(audio(ref[: len(ref) - int(0.052 * RATE)]), audio(ref))
    long_ref = noise(10.0, seed=32)  # 1 % of 10 s = 100 ms
    assert align(audio(long_ref[: -int(0.09 * RATE)]), audio(long_ref)).notes
    with pytest.raises(LengthMismatchError):
        align(audio(long_ref[: -int(0.11 * RATE)]), audio(long_ref))
    up = audio(np.concatenate([ref, ref])[: 2 * 48000], 48000)  # 2 s at another rate: same length
    assert align(up, audio(ref)).est.frames == len(ref)


def test_channels_that_cancel_in_a_downmix_are_an_error_not_silence():
    x = sine(440) + noise(seed=33)
    opposite = np.stack([x, -x])  # L = -R: the mono downmix is digital silence
    for est, ref, which in ((x, opposite, "ref"), (opposite, x, "est")):
        result = measure(audio(est), audio(ref), ["snr", "lsd"])
        for v in result.values:
            assert v.value is None and f"channels of {which} cancel in the mono downmix" in v.error, v
            assert "same channel count" in v.error
        with pytest.raises(MetricError, match="cancel"):
            metric("snr")(audio(est), audio(ref))
    nearly = np.stack([x, -0.999 * x])  # 66 dB below the channels: still cancelling
    with pytest.raises(MetricError, match="dB below the channels' own level"):
        align(audio(x), audio(nearly))
    assert align(audio(x), audio(np.stack([x, 0.2 * x]))).est.channels == 1  # a real stereo pair is fine
    # with matching channel counts nothing is downmixed, so opposite channels are measured as they are
    assert metric("snr")(audio(opposite), audio(opposite)) == MAX_RATIO_DB
    # the delay search sums the channels' correlations instead of correlating the (silent) downmix
    base = noise(1.1, RATE, seed=34)
    st_ref = np.stack([base[100:100 + RATE], -base[100:100 + RATE]])
    st_est = np.stack([base[80:80 + RATE], -base[80:80 + RATE]])
    assert align(audio(st_est), audio(st_ref), max_delay_ms=5.0).delay_frames == 20


# -- ViSQOL (optional) --------------------------------------------------------------------------

def test_visqol_is_skipped_cleanly_when_its_package_is_missing(monkeypatch):
    cls = get_registry().metrics["visqol"]
    monkeypatch.setattr(cls, "requires", ("visqol_not_installed_here",))
    assert cls.unavailable() is not None
    assert "pip install 'restorekit[visqol]'" in cls.unavailable()
    chosen, skipped = resolve_metrics(None, reference=True)
    assert "visqol" not in [m.id for m in chosen] and "restorekit[visqol]" in skipped["visqol"]
    result = measure(audio(sine(440)), audio(sine(440)), ["visqol", "snr"])
    assert [v.metric for v in result.values] == ["snr"] and "visqol" in result.skipped
    runner = CliRunner()
    with runner.isolated_filesystem():
        sf.write("a.wav", sine(440).astype(np.float32), RATE)
        out = runner.invoke(_cli(), ["metrics", "a.wav", "a.wav", "-m", "visqol", "-m", "snr"])
    assert out.exit_code == 0, out.output
    assert "skipped visqol" in out.output and "restorekit[visqol]" in out.output


@pytest.mark.skipif(importlib.util.find_spec("visqol") is None,
                    reason="visqol-python is not installed (pip install 'restorekit[visqol]'); "
                           "its clean skip is tested above")
def test_visqol_scores_a_light_degradation_above_a_heavy_one():
    rate = 48000
    ref = sine(440, 2.0, rate, 0.3) + sine(2500, 2.0, rate, 0.1) + 0.2 * noise(2.0, rate, seed=13)
    hiss = noise(2.0, rate, seed=14)
    vq = metric("visqol")
    assert vq.unavailable() is None
    light = vq(audio(ref + 0.02 * hiss, rate), audio(ref, rate))
    heavy = vq(audio(ref + 1.0 * hiss, rate), audio(ref, rate))
    assert 1.0 <= heavy < light <= 5.0
    assert light - heavy > 0.5
    with pytest.raises(MetricError, match="at least 1 s"):
        vq(audio(ref[: rate // 2], rate), audio(ref[: rate // 2], rate))


def test_slow_metrics_are_left_out_by_default_and_run_when_asked():
    cls = get_registry().metrics["visqol"]
    assert cls.slow is True and "per second of audio" in cls.cost
    assert not any(c.slow for mid, c in get_registry().metrics.items() if mid != "visqol")
    chosen, skipped = resolve_metrics(None, reference=True)
    assert "visqol" not in [m.id for m in chosen] and "snr" in [m.id for m in chosen]
    if cls.unavailable() is None:
        assert skipped["visqol"] == f"not run by default (slow: {cls.cost}); -m visqol to include it"
        assert "visqol" in [m.id for m in resolve_metrics(None, reference=True, include_slow=True)[0]]
        assert [m.id for m in resolve_metrics(["visqol"], reference=True)[0]] == ["visqol"]
    assert "visqol" not in measure(audio(sine(440)), audio(sine(440))).as_dict()


# -- reference-free metrics -------------------------------------------------------------------------

@pytest.mark.parametrize(("rate", "cutoff"), [(44100, 8000.0), (48000, 12000.0), (32000, 4000.0)])
def test_bandwidth_of_band_limited_white_noise(rate, cutoff):
    x = brick_lowpass(noise(2.0, rate, seed=15), cutoff, rate)
    got = metric("bandwidth_hz")(audio(x, rate))
    assert abs(got - cutoff) / cutoff < 0.05
    full = metric("bandwidth_hz")(audio(noise(2.0, rate, seed=16), rate))
    assert full > 0.95 * rate / 2


def test_centroid_and_flatness():
    assert abs(metric("centroid_hz")(audio(sine(1000))) - 1000) < 20
    white = metric("flatness")(audio(noise(seed=17)))
    assert abs(white - math.exp(-np.euler_gamma)) < 0.03  # E[geo/arith] of exponential power
    assert metric("flatness")(audio(sine(1000))) < 0.01
    with pytest.raises(MetricError, match="silent"):
        metric("flatness")(audio(np.zeros(4096)))


@pytest.mark.parametrize("level", [0.0, 1e-7])  # digital silence, and -140 dBFS RMS noise
def test_reference_free_metrics_on_silence_are_errors_or_documented_floors(level):
    x = audio(level * noise(2.0, seed=44) / 0.1)  # noise() has RMS 0.1
    for mid in ("bandwidth_hz", "centroid_hz", "flatness", "band_level_db", "band_tracking"):
        with pytest.raises(MetricError, match="the audio is silent"):
            metric(mid)(x)
    with pytest.raises(MetricError, match="silent"):
        metric("lufs")(x)
    if level == 0:  # documented floors, finite numbers (never NaN or -inf)
        assert metric("rms_dbfs")(x) == -200.0
        assert metric("true_peak_dbtp")(x) == -200.0
        assert metric("clipped_fraction")(x) == 0.0
    with pytest.raises(MetricError, match="the clip is silent: no quality score"):
        metric("cqs")(x)


def test_cqs_scores_only_the_audible_windows_and_refuses_cancelling_channels():
    music = sine(440, 4.0, 32000, 0.3) + noise(4.0, 32000, seed=45)
    cqs = metric("cqs")  # the shipped weights: they score digital silence about 2.9, this noisy tone lower
    alone = cqs(audio(music, 32000))
    with_silence = cqs(audio(np.concatenate([music, np.zeros(4 * 32000)]), 32000))
    assert abs(with_silence - alone) < 1e-6  # the silent window is left out, not averaged in
    with pytest.raises(MetricError, match="the clip is silent: no quality score"):
        cqs(audio(1e-6 * noise(4.0, 32000, seed=46), 32000))  # -140 dBFS
    with pytest.raises(MetricError, match="cancel in the mono downmix"):
        cqs(audio(np.stack([music, -music]), 32000))


@pytest.mark.parametrize("rms_dbfs", [-85.0, -75.0])  # above silence_dbfs (-90), below near_silence_dbfs (-70)
def test_cqs_flags_near_silence_instead_of_scoring_it(rms_dbfs):
    cqs = metric("cqs")
    music = sine(440, 4.0, 32000, 0.3) + noise(4.0, 32000, seed=45)
    faint = 10 ** (rms_dbfs / 20) / 0.1 * noise(8.0, 32000, seed=47)  # noise() has RMS 0.1
    with pytest.raises(MetricError, match=rf"the clip is near-silent: no quality score \(RMS {rms_dbfs:.0f} dBFS"):
        cqs(audio(faint, 32000))
    # a near-silent window next to music is left out of the mean, as a silent one is
    assert abs(cqs(audio(np.concatenate([music, faint[:4 * 32000]]), 32000)) - cqs(audio(music, 32000))) < 1e-6
    # the threshold is a parameter: lowered below the clip's level, the clip is scored
    assert 1.0 <= metric("cqs", near_silence_dbfs=rms_dbfs - 5)(audio(faint, 32000)) <= 5.0
    just_above = 10 ** (-69.0 / 20) / 0.1 * noise(4.0, 32000, seed=48)
    assert 1.0 <= cqs(audio(just_above, 32000)) <= 5.0


def test_rms_of_a_full_scale_sine():
    assert abs(metric("rms_dbfs")(audio(sine(997, amp=1.0))) - (-3.0103)) < 0.01
    assert metric("rms_dbfs")(audio(np.zeros(100))) == -200.0


def test_lufs_of_a_minus_20_dbfs_1khz_sine_per_bs1770():
    import pyloudnorm

    x = sine(1000, 3.0, 48000, amp=0.1)  # peak -20 dBFS
    got = metric("lufs")(audio(x, 48000))
    reference = pyloudnorm.Meter(48000).integrated_loudness(x)
    assert abs(got - reference) < 1e-6
    assert abs(got - (-23.0)) < 0.1  # K-weighting is ~ +0.69 dB at 1 kHz, cancelling the -0.691 offset
    stereo = metric("lufs")(audio(np.stack([x, x]), 48000))
    assert abs(stereo - got - 10 * math.log10(2)) < 0.01  # two channels sum their power
    with pytest.raises(MetricError, match="0.4 s"):
        metric("lufs")(audio(x[:4800], 48000))
    with pytest.raises(MetricError, match="silent"):
        metric("lufs")(audio(np.zeros(48000), 48000))


def test_true_peak_finds_the_inter_sample_peak():
    rate = 48000
    x = sine(rate / 4, 0.5, rate, amp=1.0, phase=math.pi / 4)  # samples at +-0.707, peaks between them
    sample_peak_db = 20 * math.log10(np.abs(x).max())
    assert abs(sample_peak_db - (-3.01)) < 0.01
    tp = metric("true_peak_dbtp")(audio(x, rate))
    assert abs(tp) < 0.3
    rng_sig = noise(1.0, RATE, seed=18, channels=2)
    assert metric("true_peak_dbtp")(audio(rng_sig)) >= 20 * math.log10(np.abs(rng_sig).max()) - 1e-9


def test_band_level_of_full_band_and_band_limited_noise():
    x = noise(2.0, RATE, seed=21)
    assert abs(metric("band_level_db")(audio(x))) < 0.5  # white: 16-20 kHz as loud per Hz as 13-15.5 kHz
    import soxr

    limited = soxr.resample(soxr.resample(x, RATE, 32000), 32000, RATE)  # what 32 kHz output leaves
    assert metric("band_level_db")(audio(limited)) < -60
    with pytest.raises(MetricError, match="above the Nyquist"):
        metric("band_level_db")(audio(noise(1.0, 32000, seed=2), 32000))


def test_band_tracking_follows_a_shared_envelope_and_not_a_steady_band():
    from scipy import signal as sps

    rng = np.random.default_rng(22)
    n = 4 * RATE
    env = np.repeat(rng.uniform(0.05, 1.0, n // 4410 + 1), 4410)[:n]  # a new level every 100 ms
    hi = sps.sosfilt(sps.butter(8, [16500, 19500], "bandpass", fs=RATE, output="sos"), rng.standard_normal(n))
    ref = sps.sosfilt(sps.butter(8, [13200, 15300], "bandpass", fs=RATE, output="sos"), rng.standard_normal(n))
    assert metric("band_tracking")(audio(env * hi + env * ref)) > 0.9
    assert abs(metric("band_tracking")(audio(0.3 * hi + env * ref))) < 0.3


def test_clipped_fraction_of_a_clipped_sine():
    x = sine(441, 1.0, RATE, amp=1.0)
    clipped = np.clip(x, -0.5, 0.5)
    expected = 1 - 2 * math.asin(0.5) / (math.pi / 2) / 2  # |sin| > 0.5 two thirds of the time
    assert abs(metric("clipped_fraction")(audio(clipped)) - expected) < 0.01
    assert abs(expected - 2 / 3) < 1e-12
    positive_only = np.minimum(x, 0.5)
    assert abs(metric("clipped_fraction")(audio(positive_only)) - expected / 2) < 0.01
    for freq in (50.0, 441.0, 5000.0):
        assert metric("clipped_fraction")(audio(sine(freq, 1.0, RATE, amp=0.9))) < 1e-3, freq


# -- alignment ---------------------------------------------------------------------------------------

def test_alignment_matches_rate_channels_and_length_and_says_so():
    ref = audio(sine(440, 1.0, 32000), 32000)
    est = audio(np.stack([sine(440, 1.01, 48000), sine(440, 1.01, 48000)])[:, : 48000 + 12], 48000)
    a = align(est, ref)
    assert a.est.sample_rate == a.ref.sample_rate == 32000
    assert a.est.channels == a.ref.channels == 1
    assert a.est.frames == a.ref.frames == 32000
    text = "; ".join(a.notes)
    assert "resampled est 48000 -> 32000 Hz" in text
    assert "downmixed est 2 -> 1 channel" in text
    assert "trimmed est 32008 -> 32000 frames" in text
    assert metric("snr")(est, ref) > 40  # the metric aligns by itself
    assert align(ref, ref).notes == []


@pytest.mark.parametrize("delay", [37, -23])
def test_alignment_removes_a_constant_delay_when_asked(delay):
    base = noise(1.1, RATE, seed=19)
    ref = base[100:100 + RATE]
    est = base[100 - delay:100 - delay + RATE]  # est[n] = ref[n - delay]
    a = align(audio(est), audio(ref), max_delay_ms=5.0)
    assert a.delay_frames == delay
    assert ("lags" if delay > 0 else "leads") in a.notes[0] and f"{abs(delay)} frames" in a.notes[0]
    assert metric("snr")(audio(est), audio(ref), max_delay_ms=5.0) > 100
    assert metric("snr")(audio(est), audio(ref)) < 3


# -- the register_metrics hook through a real entry point --------------------------------------------

PLUGIN = """
from pydantic import Field
from restorekit.hookspecs import hookimpl
from restorekit.metrics import Metric, MetricParams


class Peak(Metric):
    id = "rkmetrictest.peak"
    summary = "Sample peak (plain number)."
    higher_is_better = None

    class Params(MetricParams):
        scale_factor: float = Field(1.0, gt=0, le=10, description="Multiply the peak by this.")

    def compute(self, est, ref):
        return float(est.samples.abs().max()) * self.params.scale_factor


class Broken(Metric):
    id = "Not Valid"
    summary = "Invalid id."


@hookimpl
def register_metrics(register):
    register(Peak)
    register(Broken)
"""


def test_register_metrics_hook_through_a_real_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "rkmetrictest-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rkmetrictest\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nrkmetrictest = rkmetrictest_plugin\n")
    (site / "rkmetrictest_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(site))
    try:
        registry = load_registry()
        assert "rkmetrictest.peak" in registry.metrics
        assert registry.metrics.owner("rkmetrictest.peak") == "rkmetrictest"
        plugin = next(p for p in registry.plugins if p.name == "rkmetrictest")
        assert plugin.metrics == ["rkmetrictest.peak"] and plugin.distribution == "rkmetrictest"
        assert "Not Valid" in plugin.error  # the invalid class is reported, the valid one still registers
        assert set(BUILTIN) <= set(registry.metrics)
        x = audio(sine(440, 0.1, amp=0.25))
        result = measure(x, None, ["rkmetrictest.peak", "rms_dbfs"], registry=registry)
        assert abs(result.as_dict()["rkmetrictest.peak"] - 0.25) < 1e-3
        chosen, _ = resolve_metrics(["rkmetrictest.peak"], reference=False,
                                    params={"rkmetrictest.peak": {"scale_factor": 2}}, registry=registry)
        assert abs(chosen[0](x) - 0.5) < 1e-3
    finally:
        sys.modules.pop("rkmetrictest_plugin", None)
        reset_registry()


def test_loading_the_metrics_plugin_does_not_import_torch():
    code = ("import sys; from restorekit.plugins import get_registry; r = get_registry(); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "print(len(r.metrics))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= len(BUILTIN)


# -- restorekit metrics ------------------------------------------------------------------------------

def _cli():
    from restorekit.cli import cli

    return cli


def test_cli_metrics_with_a_reference_prints_values_and_alignment_notes(tmp_path):
    ref = sine(440, 1.0, 32000) + 0.05 * noise(1.0, 32000, seed=20)
    est = ref + 0.05 * noise(1.0, 32000, seed=21)
    sf.write(tmp_path / "ref.wav", ref.astype(np.float32), 32000, subtype="FLOAT")
    sf.write(tmp_path / "est.wav", np.stack([est, est], axis=1)[:-10].astype(np.float32), 32000, subtype="FLOAT")
    out = CliRunner().invoke(_cli(), ["metrics", str(tmp_path / "ref.wav"), str(tmp_path / "est.wav"),
                                      "-m", "snr", "-m", "lsd_band", "--set", "lsd_band.low_hz=1000"])
    assert out.exit_code == 0, out.output
    snr_line = next(line for line in out.output.splitlines() if line.startswith("snr"))
    assert "dB" in snr_line and "higher is better" in snr_line
    value = float(snr_line.split()[1])
    assert abs(value - metric("snr")(audio(np.stack([est, est])[:, :-10], 32000), audio(ref, 32000))) < 0.006
    assert "note: downmixed est 2 -> 1 channel" in out.output
    assert "note: trimmed ref 32000 -> 31990 frames" in out.output

    js = CliRunner().invoke(_cli(), ["metrics", str(tmp_path / "est.wav"), "--json", "-m", "rms_dbfs"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.output)
    assert data["reference"] is None and data["metrics"][0]["id"] == "rms_dbfs"
    assert abs(data["metrics"][0]["value"] - 10 * math.log10(np.mean(est[:-10] ** 2))) < 0.01


def test_cli_metrics_reference_free_by_default_and_errors(tmp_path):
    sf.write(tmp_path / "short.wav", sine(440, 0.2).astype(np.float32), RATE)
    out = CliRunner().invoke(_cli(), ["metrics", str(tmp_path / "short.wav")])
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.strip()}
    assert "bandwidth_hz" in lines and "snr" not in lines
    assert "error" in lines["lufs"] and "0.4 s" in lines["lufs"]
    assert out.exit_code == 1  # one metric could not be measured
    bad = CliRunner().invoke(_cli(), ["metrics", str(tmp_path / "short.wav"), "-m", "bandwith_hz"])
    assert bad.exit_code == 2 and "Did you mean 'bandwidth_hz'" in bad.output
    none = CliRunner().invoke(_cli(), ["metrics"])
    assert none.exit_code == 2 and "give EST, or REF and EST" in none.output
    listing = CliRunner().invoke(_cli(), ["metrics", "--list"])
    assert listing.exit_code == 0
    for mid in BUILTIN:
        assert any(line.startswith(mid + " ") for line in listing.output.splitlines()), mid


def _write_pair(folder: Path, ref: np.ndarray, est: np.ndarray, rate: int = RATE) -> tuple[str, str]:
    sf.write(folder / "ref.wav", np.asarray(ref, dtype=np.float32).T, rate, subtype="FLOAT")
    sf.write(folder / "est.wav", np.asarray(est, dtype=np.float32).T, rate, subtype="FLOAT")
    return str(folder / "ref.wav"), str(folder / "est.wav")


@pytest.mark.parametrize("case", ["20 frames", "twice as long"])
def test_cli_metrics_refuses_a_length_mismatch_unless_trim(tmp_path, case):
    ref = sine(440, 2.0) + noise(2.0, seed=40)
    est = ref[:20] if case == "20 frames" else np.concatenate([ref, ref])
    ref_path, est_path = _write_pair(tmp_path, ref, est)
    out = CliRunner().invoke(_cli(), ["metrics", ref_path, est_path, "-m", "snr", "-m", "lsd", "-m", "mel_cosine"])
    assert out.exit_code == 2, out.output
    assert f"is {len(est) / RATE:.3f} s long and" in out.output and "2.000 s" in out.output
    assert "--trim measures the common part" in out.output
    assert "200" not in out.output.replace("2.000", "")  # no score at all
    trimmed = CliRunner().invoke(_cli(), ["metrics", ref_path, est_path, "-m", "snr", "--trim"])
    assert trimmed.exit_code == 0, trimmed.output
    assert "note: trimmed" in trimmed.output and "as asked (trim)" in trimmed.output
    assert next(x for x in trimmed.output.splitlines() if x.startswith("snr")).split()[1] == "200.00"


def test_cli_metrics_on_degenerate_references(tmp_path):
    x = sine(440, 1.0) + noise(1.0, seed=41)
    ref_path, est_path = _write_pair(tmp_path, np.stack([x, -x]), x)  # L = -R against a mono estimate
    out = CliRunner().invoke(_cli(), ["metrics", ref_path, est_path, "-m", "snr", "-m", "mel_cosine"])
    assert out.exit_code == 1, out.output
    for mid in ("snr", "mel_cosine"):
        line = next(x for x in out.output.splitlines() if x.startswith(mid))
        assert "error" in line and "cancel in the mono downmix" in line and "same channel count" in line
    ref_path, est_path = _write_pair(tmp_path, np.zeros(RATE), x)
    silent = CliRunner().invoke(_cli(), ["metrics", ref_path, est_path, "-m", "snr", "-m", "lsd"])
    assert silent.exit_code == 1, silent.output
    assert silent.output.count("the reference is silent") == 2


def test_cli_metrics_skips_visqol_by_default_and_runs_it_with_m(tmp_path):
    ref = sine(440, 1.5) + noise(1.5, seed=42)
    ref_path, est_path = _write_pair(tmp_path, ref, ref + 0.3 * noise(1.5, seed=43))
    out = CliRunner().invoke(_cli(), ["metrics", ref_path, est_path])
    assert out.exit_code == 0, out.output
    ids = [line.split()[0] for line in out.output.splitlines() if line.strip()]
    assert "snr" in ids and "visqol" not in ids
    if importlib.util.find_spec("visqol") is None:
        pytest.skip("visqol-python is not installed (pip install 'restorekit[visqol]'); its clean skip is tested above")
    assert "skipped visqol: not run by default (slow: about" in out.output and "-m visqol to include it" in out.output
    asked = CliRunner().invoke(_cli(), ["metrics", ref_path, est_path, "-m", "visqol", "-m", "snr"])
    assert asked.exit_code == 0, asked.output
    line = next(x for x in asked.output.splitlines() if x.startswith("visqol"))
    assert 1.0 <= float(line.split()[1]) <= 5.0 and "MOS" in line
    assert "measuring visqol (slow:" in asked.output  # not a terminal: one line before each slow metric
    assert "skipped visqol" not in asked.output


def test_cli_metrics_progress_on_a_terminal(monkeypatch):
    import io

    from restorekit_tools.cli_metrics import _Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    progress = _Progress(2, 3.0)
    for i, mid in enumerate(["snr", "visqol"]):
        progress(i, get_registry().metrics[mid]())
    progress.close()
    text = err.getvalue()
    assert "\rmeasuring snr [1/2]" in text and "\rmeasuring visqol [2/2] (slow:" in text
    assert text.endswith("\r")  # the status line is erased at the end


def test_docs_define_every_builtin_metric():
    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text(encoding="utf-8")
    for mid in BUILTIN:
        assert f"`{mid}`" in text, f"docs/metrics.md does not describe {mid}"
