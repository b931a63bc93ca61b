"""sr.flow: generative super-resolution keeps the band the input has, generates above the cutoff,
is seamless across chunks, deterministic for a seed, and (shipped weights) beats harmonic DSP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restorekit.audio import Audio
from restorekit.chunking import ChunkPlan, process_in_chunks
from restorekit_tools.demo import make_clean_clip
from restorekit.dsp import resample
from restorekit.pipeline import find_degradation, load_pipeline
from restorekit.plugins import get_registry
from restorekit.runner import Pipeline
from restorekit_plugins.degrade import ops

RATE = 44100


def music(seconds=6.0, seed=21, rate=RATE) -> Audio:
    return resample(Audio(torch.from_numpy(make_clean_clip(seconds, seed=seed)[None].copy()), 44100), rate)


def lowpassed(audio: Audio, cutoff_hz: float) -> Audio:
    return Audio(torch.from_numpy(ops.lowpass_fir(audio.numpy(), audio.sample_rate, cutoff_hz)), audio.sample_rate)


def band_db(audio: Audio, lo: float, hi: float) -> float:
    x = audio.numpy().mean(axis=0).astype(np.float64)
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / audio.sample_rate)
    return float(10 * np.log10(p[(f >= lo) & (f < hi)].mean() + 1e-30))


def run_stage(audio: Audio, **params) -> tuple[Audio, list[str]]:
    stage = get_registry().stages["sr.flow"](**params)
    result = Pipeline([stage], device="cpu").run(audio, seed=0)
    return result.audio, list(result.notes)


# -- the chunk helper's positions ------------------------------------------------------------
def test_chunk_helper_passes_each_piece_its_position():
    x = torch.arange(1000, dtype=torch.float32)[None]
    seen = []

    def fn(batch, starts):
        seen.extend(starts)
        for piece, s in zip(batch, starts):  # the piece holds the signal from its start on (where inside it)
            if s >= 0:
                assert float(piece[0, 0]) == s
        return batch

    out = process_in_chunks(fn, x, ChunkPlan(256, 64, 32), positions=True)
    assert torch.allclose(out, x)
    assert seen[0] == -32 and len(seen) == len(ChunkPlan(256, 64, 32).starts(1000))
    assert seen[1:] == [s - 32 for s in ChunkPlan(256, 64, 32).starts(1000)[1:]]


# -- degrade.random_lowpass ------------------------------------------------------------------
@pytest.mark.parametrize("family", ["butterworth", "chebyshev1", "chebyshev2", "elliptic", "bessel", "fir", "resample"])
def test_random_lowpass_families_cut_above_and_keep_below(family):
    clean = music(3.0)
    stage = get_registry().stages["degrade.random_lowpass"](cutoff_min_hz=5000, cutoff_max_hz=5000,
                                                              families=[family], order_min=10, order_max=10)
    out = Pipeline([stage], device="cpu").run(clean, seed=1).audio
    assert abs(band_db(out, 500, 2500) - band_db(clean, 500, 2500)) < 1.5
    stopband_db = 20 if family == "bessel" else 40  # Bessel: the gentlest slope (37 dB at 1.8 times the cutoff)
    assert band_db(out, 9000, 15000) < band_db(clean, 9000, 15000) - stopband_db


def test_random_lowpass_draws_per_seed():
    clean = music(2.0)
    stage = get_registry().stages["degrade.random_lowpass"]()
    a, b, c = (Pipeline([stage], device="cpu").run(clean, seed=s).audio for s in (1, 1, 2))
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)


# -- training pairs: what is missing, and what may be taught ---------------------------------
def test_training_pairs_mark_the_missing_band_and_teach_only_inside_the_targets_own_band():
    from restorekit_plugins.sr import N_FFT, FlowSpec

    spec = FlowSpec()
    clean = music(1.4745, seed=3)
    lossy = lowpassed(clean, 17000.0)  # a target that ends at 17 kHz, as Vorbis tracks do
    pairs = [(lowpassed(clean, 6000.0), clean), (lowpassed(lossy, 6000.0), lossy), (clean, clean)]
    degraded = torch.stack([d.samples for d, _ in pairs])
    target = torch.stack([t.samples for _, t in pairs])
    inputs, targets = spec.make_batch(degraded, target)
    bin_hz = RATE / N_FFT
    missing, weight = inputs[:, 2, :, 10], targets[:, 2, :, 10]
    first_missing = [int(m.argmax()) * bin_hz if m.any() else None for m in missing]
    assert 5000 < first_missing[0] < 6500 and 5000 < first_missing[1] < 6500, first_missing
    assert first_missing[2] is None and not weight[2].any()  # nothing missing: nothing to learn
    top_taught = [int(w.nonzero().max()) * bin_hz for w in weight[:2]]
    assert top_taught[0] > 21500, top_taught  # the full-band target teaches up to the top
    assert 16000 < top_taught[1] < 17200, top_taught  # the lossy one only up to its own edge
    assert not targets[:, 2, :, :2].any() and not targets[:, 2, :, -2:].any()  # the cut edges are not taught


# -- the stage, with the tiny random-weight model (fast, offline) ---------------------------------
@pytest.fixture(scope="module")
def band_limited():
    return lowpassed(music(), 8000.0)


@pytest.mark.parametrize("params, note", [
    ({"detail": "flow"}, "generating (2 euler steps) 7.8-20.00 kHz at 44100 Hz; level: srenvelope, boost at most 24 dB"),
    ({"detail": "noise"}, "generating (noise detail) 7.8-20.00 kHz at 44100 Hz; level: srenvelope"),
    ({}, "generating (noise detail) 7.8-20.00 kHz at 44100 Hz; level: srenvelope"),  # auto: noise below 14.5 kHz
    ({"match_envelope_db": 0.0}, "generating (2 euler steps) 7.8-20.00 kHz at 44100 Hz; level: the network's own"),
])
def test_keeps_the_band_below_the_cutoff_and_generates_above(band_limited, params, note):
    out, notes = run_stage(band_limited, checkpoint="tiny", **params)
    assert out.sample_rate == RATE and out.samples.shape == band_limited.samples.shape
    head, tail = note.split(" 7.8")
    assert any(head in n and n.endswith(tail) for n in notes), notes
    cutoff = float(notes[0].split("cutoff ")[1].split(" kHz")[0]) * 1000
    assert 7000 < cutoff < 8000
    change = out.with_samples(out.samples - band_limited.samples)
    for lo, hi in ((100, 1000), (1000, 4000), (4000, 0.97 * cutoff)):  # what changed, not just the level
        assert band_db(change, lo, hi) < band_db(band_limited, lo, hi) - 40, (lo, hi)
    assert band_db(out, 10000, 20000) > band_db(band_limited, 10000, 20000) + 20


@pytest.mark.parametrize("cutoff_hz, detail", [(14400.0, "noise detail"), (14500.0, "2 euler steps")])
def test_auto_detail_switches_to_the_flow_at_a_14_5khz_cutoff(cutoff_hz, detail):
    _, notes = run_stage(lowpassed(music(2.0), 15500.0), checkpoint="tiny", cutoff_hz=cutoff_hz)
    assert f"generating ({detail}) {cutoff_hz / 1000:.2f}-20.00 kHz" in notes[0], notes


def test_level_offset_moves_the_noise_band_without_a_cap(band_limited):
    """With noise detail the envelope match sets the whole level, uncapped: -6 dB is -6 dB, and the note
    names no boost cap."""
    base, _ = run_stage(band_limited, checkpoint="tiny", detail="noise")
    darker, notes = run_stage(band_limited, checkpoint="tiny", detail="noise", level_offset_db=-6.0)
    assert notes[0].endswith("level: srenvelope -6 dB"), notes
    assert abs(band_db(darker, 10000, 18000) - band_db(base, 10000, 18000) + 6.0) < 0.5


def test_level_offset_moves_the_generated_band_and_is_noted(band_limited):
    """level_offset_db shifts the envelope match's level of the whole generated band by that many dB and
    leaves the band below the cutoff alone (the cap at 60 dB, so that the tiny model's quiet band is never
    held back by it)."""
    base, _ = run_stage(band_limited, checkpoint="tiny", detail="flow", match_envelope_db=60.0)
    darker, notes = run_stage(band_limited, checkpoint="tiny", detail="flow", match_envelope_db=60.0,
                              level_offset_db=-6.0)
    assert any("level: srenvelope -6 dB, boost at most 60 dB" in n for n in notes), notes
    assert abs(band_db(darker, 10000, 18000) - band_db(base, 10000, 18000) + 6.0) < 0.5
    change = darker.with_samples(darker.samples - band_limited.samples)
    assert band_db(change, 1000, 6500) < band_db(band_limited, 1000, 6500) - 40


def test_flow_settings_unused_by_auto_detail_are_noted(band_limited):
    _, notes = run_stage(band_limited, checkpoint="tiny", steps=4)
    assert "generating (noise detail)" in notes[0] and "(steps unused: detail auto runs the flow" in notes[0], notes


@pytest.mark.parametrize("settings, expected", [
    (["sr.detail=flow", "sr.match_envelope_db=0", "sr.level_offset_db=3"],
     ["level_offset_db", "match_envelope_db above 0"]),
    (["sr.detail=noise", "sr.match_envelope_db=0"], ["detail: noise has no level of its own", "set detail: flow"]),
    (["sr.detail=noise", "sr.steps=4"], ["steps tells the flow how to sample", "set detail: flow or auto, or leave "
                                                                                "steps out"]),
    (["sr.detail=noise", "sr.steps=4", "sr.solver=heun"], ["solver and steps tell the flow",
                                                           "leave solver and steps out"]),
])
def test_settings_that_would_do_nothing_are_refused(tmp_path, settings, expected):
    """A level offset without the envelope match, noise detail without a level, flow steps without the flow:
    a usage error naming the fix, before any audio is written."""
    import soundfile as sf

    from click.testing import CliRunner

    from restorekit.cli import cli

    src = tmp_path / "in.wav"
    sf.write(src, lowpassed(music(1.0, rate=32000), 7000.0).numpy().T, 32000, subtype="FLOAT")
    args = ["run", "sr", str(src), "-o", str(tmp_path / "out"), "--set", "sr.checkpoint=tiny"]
    for item in settings:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "pipelines/sr.yaml" in result.output and "stage 'sr' (sr.flow)" in result.output, result.output
    assert all(text in result.output for text in expected), result.output
    assert not (tmp_path / "out" / "in.wav").exists()


@pytest.mark.parametrize("detail", ["flow", "noise"])
def test_output_is_the_same_chunked_or_whole(band_limited, detail):
    """6 s in 1.5 s pieces: the last piece starts where the hop grid alone would not put it in step
    with the U-Net's down-sampling; pieces must start on the grid of both (and draw the same noise)."""
    chunked, _ = run_stage(band_limited, checkpoint="tiny", detail=detail, segment_s=1.5, overlap_s=0.25,
                           context_s=1.0)
    whole, _ = run_stage(band_limited, checkpoint="tiny", detail=detail, segment_s=30.0)
    generated = (whole.samples - band_limited.samples).square().mean().sqrt()
    error = (chunked.samples - whole.samples).square().mean().sqrt()
    # measured: 2e-7 (tiny), 2e-6 (trained); off the down-sampling grid 3e-4 (tiny) and 3e-2 (trained)
    assert error < 1e-5 * generated, f"chunked differs from whole by {float(error / generated):.2e} of the band"


def channel_correlation(audio: Audio, lo: float, hi: float) -> float:
    """Correlation of the two channels of `audio` between lo and hi Hz."""
    from scipy.signal import butter, sosfilt

    sos = butter(8, [lo, hi], btype="band", fs=audio.sample_rate, output="sos")
    left, right = (sosfilt(sos, x) for x in audio.numpy().astype(np.float64))
    return float(left @ right / np.sqrt((left @ left) * (right @ right)))


def test_noise_detail_is_as_wide_as_the_octave_below_the_cutoff():
    """Stereo: the noise detail mixes a draw all channels share with one per channel by how alike the
    channels are, frame by frame, in the octave below the cutoff. Identical channels get identical bands;
    unrelated ones unrelated bands (measured: 9-18 kHz correlate 0.005 where the input's 4-7.5 kHz
    correlate 0.003; 0.02 for channels in opposite phase, whose envelopes are the same, so only the noise
    can make the bands differ); a partly shared one a partly shared band (0.94 against 0.96). Chunked
    equals whole-file output in stereo too."""
    a, b = music(4.0, seed=21).samples[0], music(4.0, seed=77).samples[0].flip(0)
    same, wide, opposite, mixed = (lowpassed(Audio(torch.stack(pair), RATE), 8000.0)
                                   for pair in ((a, a), (a, b), (a, -a), (a, 0.8 * a + 0.2 * b)))
    out, notes = run_stage(same, checkpoint="tiny", detail="noise")
    assert "noise detail" in notes[0] and torch.equal(out.samples[0], out.samples[1])
    for unrelated in (wide, opposite):
        out, _ = run_stage(unrelated, checkpoint="tiny", detail="noise")
        assert abs(channel_correlation(out, 9000, 18000)) < 0.15
    out, _ = run_stage(mixed, checkpoint="tiny", detail="noise")
    assert 0.85 < channel_correlation(out, 9000, 18000) < 0.99
    chunked, _ = run_stage(wide, checkpoint="tiny", detail="noise", segment_s=1.5, overlap_s=0.25, context_s=1.0)
    whole, _ = run_stage(wide, checkpoint="tiny", detail="noise", segment_s=30.0)
    generated = (whole.samples - wide.samples).square().mean().sqrt()
    assert (chunked.samples - whole.samples).square().mean().sqrt() < 1e-5 * generated


def test_shipped_envelope_sees_no_further_than_the_chunk_context(band_limited):
    """The shipped level predictor's receptive field (78 frames, 0.9 s, each side) must fit inside the
    default context (1 s), or chunked output would differ from whole-file output."""
    chunked, _ = run_stage(band_limited, checkpoint="tiny", envelope="srenvelope", segment_s=1.5, overlap_s=0.25,
                           context_s=1.0)
    whole, _ = run_stage(band_limited, checkpoint="tiny", envelope="srenvelope", segment_s=30.0)
    generated = (whole.samples - band_limited.samples).square().mean().sqrt()
    error = (chunked.samples - whole.samples).square().mean().sqrt()
    # measured: 1e-7 of the band (with context_s 0.5, inside the receptive field: 1e-5)
    assert error < 1e-6 * generated, f"chunked differs from whole by {float(error / generated):.2e} of the band"


@pytest.mark.parametrize("detail", ["flow", "noise"])
def test_seed_makes_it_deterministic(band_limited, detail):
    a, _ = run_stage(band_limited, checkpoint="tiny", detail=detail, seed=5)
    b, _ = run_stage(band_limited, checkpoint="tiny", detail=detail, seed=5)
    c, _ = run_stage(band_limited, checkpoint="tiny", detail=detail, seed=6)
    assert torch.equal(a.samples, b.samples)
    assert not torch.allclose(a.samples, c.samples, atol=1e-4)


def test_full_band_input_is_only_resampled():
    clean = music(3.0, rate=48000)
    out, _ = run_stage(clean, checkpoint="tiny")
    assert torch.equal(out.samples, resample(clean, RATE).samples)


def test_given_cutoff_and_48k_output(band_limited):
    out, _ = run_stage(band_limited, checkpoint="tiny", cutoff_hz=6000.0, sample_rate_hz=48000)
    assert out.sample_rate == 48000
    reference = resample(band_limited, 48000)
    assert abs(band_db(out, 1000, 5000) - band_db(reference, 1000, 5000)) < 0.1
    change = out.with_samples(out.samples - reference.samples)
    assert band_db(change, 6500, 7900) > band_db(reference, 6500, 7900) - 10  # 6-8 kHz is generated, not kept
    assert band_db(change, 1000, 5000) < band_db(reference, 1000, 5000) - 50


def test_cli_runs_the_sr_pipeline_offline_with_the_tiny_model(tmp_path):
    import soundfile as sf

    from click.testing import CliRunner

    from restorekit.cli import cli

    src = tmp_path / "in.wav"
    sf.write(src, lowpassed(music(2.0, rate=32000), 7000.0).numpy().T, 32000, subtype="FLOAT")
    result = CliRunner().invoke(cli, ["run", "sr", str(src), "-o", str(tmp_path / "out"), "--set",
                                      "sr.checkpoint=tiny"])
    assert result.exit_code == 0, result.output
    out, rate = sf.read(tmp_path / "out" / "in.wav")
    assert rate == RATE and abs(len(out) - 2.0 * RATE) < 2


def test_envelope_match_extends_the_top_octaves_slope_frame_by_frame():
    """A top octave falling 6 dB per octave, 10 dB louder in the second frame: each generated band lands on
    the extended line in each frame; boosts stop at the cap, cuts at 80 dB."""
    from restorekit_plugins.sr import N_FFT, EnvelopeMatch, LineEnvelope

    bins, first, top = N_FFT // 2 + 1, 186, 465  # 8 kHz and 20 kHz at 44.1 kHz
    f = torch.arange(bins, dtype=torch.float64) * RATE / N_FFT
    line_db = -20 - 6 * torch.log2(f.clamp_min(1) / 8000)  # dB per bin, -20 dB at the cutoff
    spec = torch.zeros(1, bins, 2, dtype=torch.complex128)
    spec[0, :first, 0] = torch.pow(10, line_db[:first] / 20)
    spec[0, :first, 1] = torch.pow(10, (line_db[:first] + 10) / 20)
    rng = np.random.default_rng(0)
    phases = torch.from_numpy(np.exp(2j * np.pi * rng.random((1, bins, 2))))
    quiet = torch.pow(10, torch.full((1, bins, 2), -90.0) / 20) * phases  # 70 dB below the line at the cutoff

    def level(z, frame, lo_hz, hi_hz):
        band = (f >= lo_hz) & (f < hi_hz)
        return float(10 * torch.log10(z[0, band, frame].abs().square().mean()))

    line = LineEnvelope(first, top, RATE, 3.0, 24.0, "cpu")
    matched = EnvelopeMatch(first, top, RATE, 120.0, line, "cpu")(spec, quiet)
    assert torch.equal(matched[:, :first], quiet[:, :first])  # only the band above the cutoff is touched
    for frame, offset in ((0, 0.0), (1, 10.0)):
        for lo_hz, hi_hz in ((9000, 10000), (15000, 17000)):
            want = float(10 * torch.log10(torch.pow(10, (line_db[(f >= lo_hz) & (f < hi_hz)] + offset) / 10).mean()))
            assert abs(level(matched, frame, lo_hz, hi_hz) - want) < 1.0, (frame, lo_hz)
    capped = EnvelopeMatch(first, top, RATE, 24.0, line, "cpu")(spec, quiet)
    assert abs(level(capped, 0, 9000, 10000) - (-90 + 24)) < 0.01  # boosted by the cap only
    darker = EnvelopeMatch(first, top, RATE, 120.0, line, "cpu", offset_db=-6.0)(spec, quiet)
    assert abs(level(darker, 0, 9000, 10000) - level(matched, 0, 9000, 10000) + 6.0) < 0.01  # level_offset_db
    assert torch.equal(darker[:, :first], quiet[:, :first])
    loud = quiet * 10 ** (200 / 20)  # 130 dB above the line
    cut = EnvelopeMatch(first, top, RATE, 24.0, line, "cpu")(spec, loud)
    assert abs(level(cut, 0, 9000, 10000) - (110 - 80)) < 0.01  # cut by 80 dB at most


def test_envelope_features_mark_known_bands_and_spread_levels_over_bins():
    """The predictor's inputs: bands wholly below the cutoff are known, their levels relative to the octave
    below the cutoff; the band levels spread back over the bins land on a smooth spectrum's own levels."""
    from restorekit_plugins.sr import N_FFT
    from restorekit_plugins.sr_envelope import BANDS, LEVEL_SCALE_DB, Layout

    bins, first = N_FFT // 2 + 1, 186  # 8 kHz
    f = torch.arange(bins, dtype=torch.float64) * RATE / N_FFT
    line_db = -6 * torch.log2(f.clamp_min(20) / 8000)  # 0 dB at the cutoff, -6 dB per octave
    power = torch.pow(10, line_db / 10)[None, :, None].repeat(1, 1, 3)
    power[..., 1] *= 100  # the second frame 20 dB louder: levels are relative, the loudness input says it
    layout = Layout()
    x, ref_db, known = layout.features(power, torch.tensor([first]))
    assert known[0].sum() == int((layout.hi <= 8000).sum()) and not known[0][layout.hi > 8000].any()
    assert abs(float(ref_db[0, 1] - ref_db[0, 0]) - 20) < 1e-6
    assert torch.allclose(x[0, :BANDS, 0], x[0, :BANDS, 1])  # relative levels do not move with loudness
    assert float(x[0, 3 * BANDS, 1] - x[0, 3 * BANDS, 0]) * LEVEL_SCALE_DB == pytest.approx(20, abs=1e-4)
    assert (x[0, :3 * BANDS].reshape(3, BANDS, -1)[:, ~known[0]] == 0).all()  # levels, flatness, mask
    assert (x[0, 2 * BANDS:3 * BANDS][known[0]] == 1).all()
    assert x[0, BANDS:2 * BANDS][known[0]][2:].min() * LEVEL_SCALE_DB > -0.1  # smooth: flat in each 1/6-octave band
    tonal = power.clone()
    tonal[0, 1::2] *= 1e-3  # every other bin 30 dB down: far from flat
    tonal_flatness = layout.features(tonal, torch.tensor([first]))[0][0, BANDS:2 * BANDS][known[0]][2:]
    assert x[0, BANDS:2 * BANDS][known[0]][2:].mean() > tonal_flatness.mean() + 0.25
    true_db = 10 * torch.log10(power[0, :, 0] @ layout.avg)  # every band's level, known or not
    spread = true_db @ layout.interpolation(first, 465)
    assert (spread - line_db[first:465]).abs().max() < 0.6  # 1/6-octave bands of a 6 dB/octave slope


@pytest.mark.parametrize("first", [93, 186, 372])  # 4, 8, 16 kHz
def test_envelope_edge_view_follows_the_spectrum_down_from_any_cutoff(first):
    """`edge_points`: the level at points 1/24 octave apart going down from the cutoff, relative to the
    reference octave; on a 6 dB/octave slope it rises 0.25 dB a point, whatever the cutoff, and a bump
    in the spectrum shows at its place."""
    from restorekit_plugins.sr import N_FFT
    from restorekit_plugins.sr_envelope import INPUTS, LEVEL_SCALE_DB, Layout

    f = torch.arange(N_FFT // 2 + 1, dtype=torch.float64) * RATE / N_FFT
    line_db = -6 * torch.log2(f.clamp_min(20) / 1000)
    power = torch.pow(10, line_db / 10)[None, :, None].repeat(1, 1, 2)
    layout = Layout()
    plain, _, _ = layout.features(power, torch.tensor([first]))
    x, ref_db, _ = layout.features(power, torch.tensor([first]), edge_points=48)
    assert plain.shape[1] == INPUTS and x.shape[1] == INPUTS + 48
    assert torch.equal(x[:, :INPUTS], plain)  # the fixed inputs are unchanged
    edge = x[0, INPUTS:, 0].double() * LEVEL_SCALE_DB  # dB relative to the reference octave, going down
    steps = edge.diff()[12:]  # past the lowest point's bin spacing effects near the cutoff
    assert steps.mean() == pytest.approx(0.25, abs=0.03), steps
    bump = power.clone()
    k = int(round(first * 2 ** -1.5))  # 1.5 octaves below the cutoff (under the reference octave): point 36
    bump[0, k] *= 1000
    bumped = layout.features(bump, torch.tensor([first]), edge_points=48)[0][0, INPUTS:, 0]
    moved = ((bumped - x[0, INPUTS:, 0]).abs() * LEVEL_SCALE_DB > 3).nonzero().flatten().tolist()
    assert moved and all(abs(i + 1 - 36) <= 2 for i in moved), moved


# -- the shipped model ----------------------------------------------------------------------------
def lsd_above(est: Audio, ref: Audio, low_hz: float, high_hz: float = 20000.0) -> float:
    return get_registry().metrics["lsd_band"](low_hz=low_hz, high_hz=high_hz)(est, ref)


@pytest.mark.parametrize("cutoff_hz", [4000.0, 8000.0])
def test_shipped_models_lower_lsd_above_the_cutoff_and_keep_the_band_below(cutoff_hz):
    """On synthesized music the default (noise detail at the shipped envelope's level) cuts LSD above the
    cutoff by more than a quarter (measured 4.63 -> 2.65 at 4 kHz, 4.45 -> 2.18 at 8 kHz), and only with
    the trained envelope: the same noise at the level of a random-weight predictor stays far worse (3.92,
    3.36). The flow's detail (`detail: flow`) does a little worse than noise here (2.72, 2.31), as on
    held-out music (docs/models.md), but its own output (no envelope match) must still beat the same
    network with random weights (measured 3.23 against 3.36 at 4 kHz, 3.31 against 3.39 at 8 kHz: any
    noise at a plausible level already lowers LSD against an empty band, so the weights must earn their
    margin). bwe.harmonic, whose harmonic continuation suits these synthesized tones, comes close (2.70,
    2.23) but must stay behind the default."""
    clean = music(6.0, seed=31)
    degraded = lowpassed(clean, cutoff_hz)

    def lsd(**params):
        out, _ = run_stage(degraded, **params)
        return lsd_above(out, clean, cutoff_hz * 1.05), out

    before = lsd_above(degraded, clean, cutoff_hz * 1.05)
    default, out = lsd()
    assert default < 0.75 * before, (before, default)
    bwe = get_registry().stages["bwe.harmonic"](sample_rate_hz=RATE)
    harmonic = lsd_above(Pipeline([bwe], device="cpu").run(degraded, seed=0).audio, clean, cutoff_hz * 1.05)
    assert default < harmonic, (default, harmonic)
    random_envelope, _ = lsd(envelope="tiny")
    assert default < random_envelope - 0.5, (default, random_envelope)
    flow, _ = lsd(detail="flow")
    assert flow < 0.75 * before, (before, flow)
    own, _ = lsd(detail="flow", match_envelope_db=0.0)
    random_weights, _ = lsd(detail="flow", checkpoint="tiny", match_envelope_db=0.0)
    assert own < random_weights - 0.05, (own, random_weights)
    change = out.with_samples(out.samples - degraded.samples)
    assert band_db(change, 200, cutoff_hz * 0.95) < band_db(degraded, 200, cutoff_hz * 0.95) - 40


@pytest.mark.parametrize("cutoff_hz", [4000.0, 8000.0])
def test_shipped_envelope_predicts_the_level_of_the_missing_bands(cutoff_hz):
    """The envelope predictor alone, on synthesized music low-passed at the cutoff: the mean error of its
    per-frame 1/6-octave levels above the cutoff against the clean clip's must beat random weights by
    5 dB (measured: 11.1 against 20.3 dB at 4 kHz, 8.4 against 16.8 at 8 kHz) and, at 4 kHz where a line
    extended over 2.3 octaves strays, the line rule by 2 dB (14.7 dB; at 8 kHz 8.7, closer)."""
    from restorekit_plugins.sr import N_FFT, LineEnvelope, cutoff_bin, stft
    from restorekit_plugins.sr_envelope import EnvelopeSpec, Layout, LearnedEnvelope

    clean = music(6.0, seed=31)
    degraded = lowpassed(clean, cutoff_hz)
    first, top = cutoff_bin(cutoff_hz), 465  # to 20 kHz
    power_in, power_clean = (stft(a.samples).abs().square() for a in (degraded, clean))
    layout = Layout()
    avg = layout.avg[first:top]
    bands = (avg > 0).any(0) & (layout.lo >= first * RATE / N_FFT)  # the bands wholly above the first bin
    avg = avg[:, bands] / avg[:, bands].sum(0)

    def levels(per_bin):  # (1, T, top - first) power -> (1, T, bands) dB
        return 10 * torch.log10(per_bin.double() @ avg + 1e-20)

    truth = levels(power_clean[:, first:top].transpose(1, 2))
    loud = truth.mean(-1) > truth.mean(-1).amax(-1, keepdim=True) - 60

    def error(per_bin):
        return float((levels(per_bin) - truth).abs()[loud].mean())

    shipped, random_weights = (error(LearnedEnvelope(*EnvelopeSpec().load_with_hparams(name)[:2], first, top,
                                                     "cpu")(power_in)) for name in ("srenvelope", "tiny"))
    assert shipped < random_weights - 5, (shipped, random_weights)
    line_error = error(LineEnvelope(first, top, RATE, 3.0, 24.0, "cpu")(power_in))
    if cutoff_hz == 4000.0:
        assert shipped < line_error - 2, (shipped, line_error)


def test_shipped_model_extends_text_to_music_output_past_16khz():
    """32 kHz generated-music-like input (noise-like top octave, cliff at 16 kHz): the band above 16 kHz
    is generated (empty it reads about 120 dB below the top octave, random weights 44 dB) and not louder
    than the top octave; the band below 14 kHz stays as it was. Measured on this synthesized clip: 13.6 dB
    below the top octave with the envelope match (the default, learned envelope; the line rule 12.8 dB),
    30.8 dB without it (the network alone is too dark, docs/models.md); the clean clip's band is level
    with its top octave."""
    clean = music(6.0, seed=41)
    t2m = load_pipeline(find_degradation("text-to-music-keep"), device="cpu").run(resample(clean, 32000), seed=2).audio
    out, notes = run_stage(t2m)
    assert "generating (2 euler steps) 15.67-20.00 kHz" in notes[0], notes  # auto: the flow from 14.5 kHz up
    top_octave = band_db(out, 12000, 15500)
    generated = band_db(out, 16500, 20000)
    assert top_octave - 20 < generated < top_octave + 3, (top_octave, generated)
    alone, _ = run_stage(t2m, detail="flow", match_envelope_db=0.0)
    assert band_db(alone, 16500, 20000) < generated - 10  # the envelope match brightens the band
    change = out.with_samples(out.samples - resample(t2m, RATE).samples)
    assert band_db(change, 1000, 14000) < band_db(out, 1000, 14000) - 40
