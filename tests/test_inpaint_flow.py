"""inpaint.flow and the inpaintflow model family: masks, locality, bit-identity, determinism, and (shipped
weights) a fill that carries the music where the untrained network gives noise, at the music's level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from restorekit.audio import Audio
from restorekit.testing import check_stage
from restorekit_plugins.inpaint_flow import (
    HOP,
    N_FFT,
    InpaintFlow,
    InpaintFlowSpec,
    gap_frames,
    zero_runs,
)
from test_inpaint import SR, audio, phrase_music, with_gaps


def tiny(**params) -> InpaintFlow:
    return InpaintFlow(checkpoint="tiny", **params)


def fill(stage: InpaintFlow, a: Audio, seed: int = 0) -> tuple[Audio, list[str]]:
    """Run the stage on the CPU, as the runner would."""
    stage.place("cpu")
    return stage.run(a, seed=seed)


def spectrum_correlation(ref: np.ndarray, est: np.ndarray) -> float:
    """Correlation of the log power spectra (one 8192-point Hann spectrum each) over 100 Hz - 5 kHz, where
    the test music's partials are: 1 for the same partials at the same relative levels, ~0 for noise."""
    f = np.fft.rfftfreq(8192, 1 / SR)
    band = (f >= 100) & (f < 5000)
    p, q = (10 * np.log10(np.abs(np.fft.rfft(v * np.hanning(len(v)), 8192)) ** 2 + 1e-12) for v in (ref, est))
    return float(np.corrcoef(p[band], q[band])[0, 1])


def level_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(est ** 2) / np.sum(ref ** 2)))


# -- masks -------------------------------------------------------------------------------------
def test_zero_runs_marks_only_long_runs_of_exact_zeros():
    x = torch.ones(1, 400)
    x[0, 100:140] = 0  # 40 samples: a gap
    x[0, 200:210] = 0  # 10 samples: a zero crossing region, not a gap
    runs = zero_runs(x, min_run=32)[0]
    assert runs[100:140].all() and not runs[:100].any() and not runs[140:].any()


def test_gap_frames_are_the_frames_whose_windows_reach_into_the_gap():
    n = 20 * HOP
    gap = torch.zeros(1, n, dtype=torch.bool)
    gap[0, 5 * HOP + 10:5 * HOP + 20] = True
    frames = gap_frames(gap)[0]
    assert frames.shape[0] == n // HOP + 1
    expected = [j for j in range(n // HOP + 1) if abs(5 * HOP + 15 - j * HOP) < N_FFT // 2 + 6]
    assert frames.nonzero()[:, 0].tolist() == expected == [5, 6]


def test_make_batch_masks_the_gap_frames_and_weights_them_away_from_the_edges():
    spec = InpaintFlowSpec()
    spec.hparams = spec.Hparams()
    clean = torch.from_numpy(phrase_music(3.0)[: 128 * HOP].astype(np.float32))[None, None]
    degraded = clean.clone()
    degraded[..., 60 * HOP:70 * HOP] = 0
    inputs, targets = spec.make_batch(degraded, clean)
    mask = inputs[0, 2, 0]
    assert mask.nonzero()[:, 0].tolist() == list(range(60, 71))  # frame j spans [(j - 1) HOP, (j + 1) HOP)
    assert (inputs[0, 2] == mask).all()  # every bin of a masked frame
    assert torch.equal(targets[0, 2], inputs[0, 2])  # gap far from the segment's edges: weight = mask
    same, _ = spec.make_batch(clean, clean)
    assert not same[:, 2].any()  # no gap, nothing to learn


# -- the stage -----------------------------------------------------------------------------------
def test_contract():
    check_stage(InpaintFlow)


def test_no_gaps_means_bit_identical_output():
    a = audio(np.stack([phrase_music(4.0), phrase_music(4.0, seed=3)]))
    out, notes = fill(tiny(), a)
    assert torch.equal(out.samples, a.samples)
    assert notes == ["inpaint.flow: no gaps found"]


@pytest.mark.parametrize("rate", [SR, 32000])
def test_only_the_gaps_and_their_crossfades_change(rate):
    x = np.stack([phrase_music(6.0, rate=rate), phrase_music(6.0, seed=7, rate=rate)])
    y, spans = with_gaps(x, (30, 250), rate=rate)
    out, notes = fill(tiny(crossfade_ms=5), audio(y, rate))
    xf = round(0.005 * rate)
    changed = np.flatnonzero((out.numpy() != audio(y, rate).numpy()).any(axis=0))
    allowed = np.zeros(y.shape[1], dtype=bool)
    for a, b in spans:
        allowed[a - xf:b + xf] = True
        assert np.abs(out.numpy()[:, a:b]).max() > 0  # something was generated in every gap
    assert changed.size and allowed[changed].all()
    assert out.sample_rate == rate and out.numpy().shape == y.shape
    assert "2 gap(s) filled by the learned inpainting flow (1 euler step)" in notes[0]


def test_deterministic_for_a_seed():
    y, _ = with_gaps(phrase_music(5.0), (80,))
    a = fill(tiny(seed=3), audio(y))[0].numpy()
    b = fill(tiny(seed=3), audio(y), seed=9)[0].numpy()
    c = fill(tiny(seed=4), audio(y))[0].numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_gaps_outside_its_range_are_left_alone():
    y, spans = with_gaps(phrase_music(8.0), (50, 1500))
    out, _ = fill(tiny(), audio(y))
    a, b = spans[1]
    assert not out.numpy()[0, a:b].any()


# -- the shipped weights ---------------------------------------------------------------------
@pytest.mark.parametrize("gap_ms", [50, 200, 500])
def test_shipped_network_continues_the_music_and_the_untrained_one_does_not(gap_ms):
    """The network alone (no envelope match): its fill carries the music's partials (spectrum correlation
    about 0.3-0.6 on this music, measured) where the untrained tiny network's is noise (about 0-0.2).
    Broken or missing weights turn this red."""
    x = phrase_music(10.0, seed=12)
    shipped, untrained = [], []
    for seed in range(2):
        y, [(a, b)] = with_gaps(x, (gap_ms,), seed=seed)
        raw = {"match_envelope_db": 0, "steps": 4}  # at one step the untrained net's skip path passes some context
        shipped.append(spectrum_correlation(x[a:b], fill(InpaintFlow(**raw), audio(y))[0].numpy()[0, a:b]))
        untrained.append(spectrum_correlation(x[a:b], fill(tiny(**raw), audio(y))[0].numpy()[0, a:b]))
    assert np.mean(shipped) > np.mean(untrained) + 0.15, (shipped, untrained)


@pytest.mark.parametrize("gap_ms", [50, 500])
def test_envelope_match_brings_the_fill_to_the_music_level(gap_ms):
    """The network's own fill is 13-22 dB too quiet (measured); matched to the context's third-octave
    envelope it comes within 10 dB of the music and keeps its partials; silence is -inf."""
    x = phrase_music(10.0, seed=12)
    y, [(a, b)] = with_gaps(x, (gap_ms,), seed=0)
    raw = fill(InpaintFlow(match_envelope_db=0), audio(y))[0].numpy()[0, a:b]
    matched = fill(InpaintFlow(), audio(y))[0].numpy()[0, a:b]
    assert abs(level_db(x[a:b], matched)) < 10.0 and level_db(x[a:b], raw) < level_db(x[a:b], matched)
    assert spectrum_correlation(x[a:b], matched) > 0.55  # and still the music's partials


def test_envelope_match_follows_the_context_level_and_boosts_at_most_its_cap():
    import torch
    from restorekit_plugins.inpaint_flow import match_envelope

    rng = np.random.default_rng(0)
    given = torch.from_numpy(rng.standard_normal((1, 513, 60)) + 1j * rng.standard_normal((1, 513, 60)))
    missing = torch.zeros(60, dtype=torch.bool)
    missing[25:35] = True
    generated = given * 0.01  # 40 dB too quiet
    out = match_envelope(generated, given, missing, max_gain_db=24.0)
    gain_db = 20 * np.log10(out[..., 25:35].abs().mean().item() / generated[..., 25:35].abs().mean().item())
    assert gain_db == pytest.approx(24.0, abs=0.01)  # capped
    assert torch.equal(out[..., :25], generated[..., :25]) and torch.equal(out[..., 35:], generated[..., 35:])
    for scale in (0.5, 1000.0):  # 6 dB too quiet, 60 dB too loud: both brought to the context's level
        out = match_envelope(given * scale, given, missing, max_gain_db=24.0)
        ratio = out[..., 25:35].abs().square().mean().item() / given[..., 25:35].abs().square().mean().item()
        assert ratio == pytest.approx(1.0, rel=0.1), scale
