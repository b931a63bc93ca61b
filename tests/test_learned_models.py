"""The shipped learned models do what they claim on synthesized music they never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from restorekit.audio import Audio
from restorekit_tools.demo import make_clean_clip
from restorekit.dsp import resample
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry
from restorekit.runner import Pipeline
from restorekit_plugins.degrade.ops import make_noise

RATE = 32000


def synthesized_pair(clip_seed, degrade, seed):
    """(clean, degraded): 6 s of the synthesized demo music at 32 kHz, degraded by `degrade` (a Pipeline)."""
    clean = resample(Audio(torch.from_numpy(make_clean_clip(6.0, seed=clip_seed)[None].copy()), 44100), RATE)
    return clean, degrade.run(clean, seed=seed).audio


@pytest.fixture(scope="module")
def clean_and_degraded():
    return synthesized_pair(7, load_pipeline(find_degradation("lowres-8k"), device="cpu"), seed=3)


def metric(name, est, ref=None):
    return get_registry().metrics[name]()(est, ref)


def test_shipped_unet_improves_lsd_on_unseen_synthesized_music(clean_and_degraded):
    clean, degraded = clean_and_degraded
    stage = get_registry().stages["restore.unet"]()
    restored = Pipeline([stage], device="cpu")(degraded)
    before, after = metric("lsd", degraded, clean), metric("lsd", restored, clean)
    # measured 2.792 -> 2.685 with the shipped weights (held-out music: docs/models.md)
    assert after < before - 0.05, f"LSD {before:.3f} -> {after:.3f}"



def test_shipped_unet_leaves_the_low_band_close_to_the_input(clean_and_degraded):
    clean, degraded = clean_and_degraded
    restored = Pipeline([get_registry().stages["restore.unet"]()], device="cpu")(degraded)
    lsd_low = get_registry().metrics["lsd_band"](low_hz=50, high_hz=3500)(restored, degraded)
    assert lsd_low < 0.5, f"the U-Net rewrote the band the input already had (LSD {lsd_low:.2f})"


def test_shipped_quality_estimator_ranks_degradations(clean_and_degraded):
    """Clean music above the same music with white noise (SNR about 9 dB) or band-limited, and noise cannot fake
    the missing band. ViSQOL on this clip: clean+noise 2.25, lowres 1.84, lowres+noise 1.85; cqs v5: 4.83, 2.40,
    2.42, 2.14 (v4, trained without noise-only clips: lowres 2.54, lowres+noise 2.78). Ordering lowres strictly
    above lowres+noise, asserted until v5, is not what ViSQOL says here, and v2's score moved by ±0.16 with the
    (then unseeded) noise draw, mean +0.01: that assertion held by the draw (docs/models.md)."""
    clean, degraded = clean_and_degraded
    cqs = get_registry().metrics["cqs"]()
    hiss = 0.05 * torch.randn(clean.samples.shape, generator=torch.Generator().manual_seed(0))
    scores = {"clean": cqs(clean), "clean+noise": cqs(clean.with_samples(clean.samples + hiss)),
              "lowres": cqs(degraded), "lowres+noise": cqs(degraded.with_samples(degraded.samples + hiss))}
    assert scores["clean"] > scores["clean+noise"] + 1.0, scores
    assert scores["clean"] > scores["lowres"] + 1.5, scores
    assert scores["lowres+noise"] < scores["lowres"] + 0.2, scores  # ViSQOL has them level
    assert all(1.0 <= s <= 5.0 for s in scores.values())


def noise(color: str, seconds: float = 6.0) -> Audio:
    """Seeded white or pink noise (the degradation stages' own, `make_noise`) at 32 kHz, RMS 0.1."""
    x = make_noise(1, int(seconds * RATE), RATE, color, np.random.default_rng(0))
    return Audio(torch.from_numpy(0.1 * x / x.std()), RATE)


@pytest.mark.parametrize("color", ["white", "pink"])
def test_shipped_quality_estimator_does_not_take_noise_for_music(color):
    """Noise alone is not music: ViSQOL gives music buried in noise about 1. v4, never trained on noise, scored
    this white noise 3.55 and this pink noise 2.75 (v2 2.09, 2.09), and the tiny MusicGen's noise-like output
    3.53; v5 1.13 and 1.87 (docs/models.md)."""
    score = get_registry().metrics["cqs"]()(noise(color))
    assert score < MAX_NOISE_SCORE, (color, score)


# -- the quality estimator judges restorations too (issue 17) ---------------------------------------
TRAINING_RECIPES = Path(__file__).resolve().parents[1] / "pipelines" / "training"
# measured with v5: clean 4.83; low-passed at 4 and 8 kHz 2.10 and 2.51 (v2 1.88, 2.24; v1 4.48, 3.40);
# restored-unet 2.57, restored-bwe-lowres 3.94, restored-flow-lowres 2.86, restored-sr-lowres 3.78 (ViSQOL 3.50;
# v2 2.47, 3.50, 2.76, 4.64; v1 4.75, 4.74, 4.65, -)
MAX_NOISE_SCORE = 2.0
MARGIN_LP, MARGIN_RESTORED = 1.5, 0.8


@pytest.fixture(scope="module")
def cqs_of_clean_music():
    clean = resample(Audio(torch.from_numpy(make_clean_clip(6.0, seed=7)[None].copy()), 44100), RATE)
    return clean, get_registry().metrics["cqs"]()(clean)


@pytest.mark.parametrize("cutoff_hz", [4000, 8000])
def test_shipped_quality_estimator_scores_band_limited_music_below_clean(cqs_of_clean_music, cutoff_hz):
    """v1 gave real MusicGen output low-passed at 4 kHz almost its score, and clips of sr-lowpass 4.06 on
    average where ViSQOL gave 2.51 (held-out music, docs/models.md)."""
    clean, clean_score = cqs_of_clean_music
    lowpass = get_registry().stages["degrade.band_limit"](method="lowpass", cutoff_hz=cutoff_hz)
    score = get_registry().metrics["cqs"]()(Pipeline([lowpass], device="cpu")(clean))
    assert score < clean_score - MARGIN_LP, (cutoff_hz, score, clean_score)


@pytest.mark.parametrize("recipe", ["restored-unet", "restored-bwe-lowres", "restored-flow-lowres",
                                    "restored-sr-lowres"])
def test_shipped_quality_estimator_scores_restored_low_resolution_music_below_clean(cqs_of_clean_music, recipe):
    """lowres-8k damage, then a restorer that synthesizes the missing band: ViSQOL 2.0-3.5 on this music,
    v1 of the estimator 4.65-4.75, as high as the clean clip (4.79); v2 gave sr.flow's default output (noise
    detail at the learned envelope, `restored-sr-lowres`) 4.64."""
    clean, clean_score = cqs_of_clean_music
    restored = load_pipeline(find_degradation(TRAINING_RECIPES / f"{recipe}.yaml"), device="cpu").run(clean, seed=3)
    score = get_registry().metrics["cqs"]()(restored.audio)
    assert score < clean_score - MARGIN_RESTORED, (recipe, score, clean_score)


@pytest.fixture(scope="module")
def clean_and_generative_mix():
    every_clip_degraded = get_registry().stages["degrade.generative_mix"](clean_fraction=0.0)
    return synthesized_pair(11, Pipeline([every_clip_degraded], device="cpu"), seed=5)


@pytest.mark.parametrize("checkpoint", ["crnn", "crnn-direct"])
def test_shipped_crnn_improves_mel_l1_on_unseen_synthesized_music(clean_and_generative_mix, checkpoint):
    clean, degraded = clean_and_generative_mix
    stage = get_registry().stages["restore.crnn"](checkpoint=checkpoint)
    restored = Pipeline([stage], device="cpu")(degraded)
    before, after = metric("mel_l1", degraded, clean), metric("mel_l1", restored, clean)
    assert after < before - 0.2, f"mel L1 {before:.3f} -> {after:.3f} dB"


def test_shipped_crnn_leaves_clean_music_nearly_alone(clean_and_generative_mix):
    clean, _ = clean_and_generative_mix
    restored = Pipeline([get_registry().stages["restore.crnn"]()], device="cpu")(clean)
    assert metric("mel_l1", restored, clean) < 1.0


# -- do no harm: full-band music and text-to-music-like content keep their upper band ----------
def band_db(audio: Audio, lo: float, hi: float) -> float:
    import numpy as np

    x = audio.numpy().mean(axis=0)
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / audio.sample_rate)
    return float(10 * np.log10(p[(f >= lo) & (f < hi)].mean() + 1e-30))


@pytest.fixture(scope="module")
def good_material():
    """Synthesized music at 32 kHz: full band, and made text-to-music-like (a noise-like top octave that
    follows the music, tilted), which is content a restorer must keep."""
    clean = resample(Audio(torch.from_numpy(make_clean_clip(6.0, seed=13)[None].copy()), 44100), RATE)
    keep = load_pipeline(find_degradation("text-to-music-keep"), device="cpu")
    return {"full_band": clean, "text_to_music": keep.run(clean, seed=4).audio}


# (stage, parameters, largest change allowed in 8-12 kHz and in 12-15.5 kHz, dB)
KEEP_BOUNDS = {
    "crnn": ("restore.crnn", {}, 1.0, 1.0),
    "crnn-direct": ("restore.crnn", {"checkpoint": "crnn-direct"}, 1.0, 1.0),
    # The U-Net's network itself, without the stage's diagnosis (which passes such input through
    # untouched: the next test). Fine-tuned with identity pairs it keeps 8-12 kHz within 0.3 dB but still
    # takes 3.5-4 dB off 12-15.5 kHz (v3: 4.9 and 10.8 dB); more identity pairs made it the identity
    # everywhere, lowres-8k included (docs/models.md).
    "unet-network": ("restore.unet", {"only_band_limited": False}, 1.0, 5.0),
}


@pytest.mark.parametrize("material", ["full_band", "text_to_music"])
@pytest.mark.parametrize("model", list(KEEP_BOUNDS))
def test_shipped_models_keep_8_to_15_khz_of_good_input(good_material, material, model):
    """Trained only on band-limited inputs, a model learns that anything noise-like up there is noise;
    trained with identity pairs of such content (docs/models.md) it keeps it."""
    stage_id, params, *bounds = KEEP_BOUNDS[model]
    x = good_material[material]
    out = Pipeline([get_registry().stages[stage_id](**params)], device="cpu")(x)
    for (lo, hi), bound in zip(((8000, 12000), (12000, 15500)), bounds):
        change = band_db(out, lo, hi) - band_db(x, lo, hi)
        assert abs(change) < bound, f"{stage_id} {params} moved {lo}-{hi} Hz of {material} music by {change:+.2f} dB"


@pytest.mark.parametrize("material", ["full_band", "text_to_music"])
def test_unet_stage_passes_input_without_a_band_limit_through(good_material, material):
    x = good_material[material]
    result = Pipeline([get_registry().stages["restore.unet"]()], device="cpu").run(x)
    assert torch.equal(result.audio.samples, x.samples)
    assert any("nothing to restore" in n for n in result.notes), result.notes


def test_shipped_unet_keeps_the_band_under_a_cutoff(good_material):
    """Where the stage does run (a band limit at 9 kHz over a -60 dBFS noise floor), the music under the
    cutoff is content: within 1 dB in every band (v3 took 1.8 dB off 5.4-8.5 kHz)."""
    limited = resample(resample(good_material["full_band"], 18000), RATE)
    floor = 1e-3 * torch.randn(limited.samples.shape, generator=torch.Generator().manual_seed(0))
    limited = limited.with_samples(limited.samples + floor)
    result = Pipeline([get_registry().stages["restore.unet"]()], device="cpu").run(limited)
    assert any("band limit at 8." in n and "restoring" in n for n in result.notes), result.notes
    for lo, hi in ((1000, 4000), (4000, 5400), (5400, 8500)):
        change = band_db(result.audio, lo, hi) - band_db(limited, lo, hi)
        assert abs(change) < 1.0, f"restore.unet moved {lo}-{hi} Hz under a 9 kHz cutoff by {change:+.2f} dB"


def test_shipped_unet_adds_no_fixed_tone():
    """v3's transposed convolutions added a 15 kHz tone (-93 dBFS) to every output; silence must stay silent
    but for a constant."""
    stage = get_registry().stages["restore.unet"](only_band_limited=False)
    out = Pipeline([stage], device="cpu")(Audio(torch.zeros(1, 2 * RATE), RATE)).numpy()[0]
    varying = out[RATE // 2:-RATE // 2] - out[RATE // 2:-RATE // 2].mean()
    assert float(abs(varying).max()) < 1e-6
