"""The graph runner: chains and graphs, named outputs, merges, freeing, adaptation, seeds, timings, loading."""

from __future__ import annotations

import logging
import weakref

import numpy as np
import pytest
import torch
from core_fakes import (CachedModel, Fails, MakesNaN, MonoOnly, NeedsCheckpoint, Rate48k, Recorder, RngNoise,
                        Scale, Split, StereoOnly, TorchNoise, TwoRates, UpToStereo)

from restorekit import cache
from restorekit.audio import Audio
from restorekit.errors import PipelineError, StageError
from restorekit.runner import Node, Pipeline
from restorekit.stage import Accepts, Stage
from restorekit.testing import synth_audio
from restorekit_plugins.mix import MixSum
from restorekit_plugins.util import Channels, Resample


def sine(freq_hz=1000.0, rate=44100, seconds=0.5, channels=1, peak=0.5) -> Audio:
    t = np.arange(int(rate * seconds)) / rate
    x = np.tile(peak * np.sin(2 * np.pi * freq_hz * t), (channels, 1)).astype(np.float32)
    return Audio.from_numpy(x, rate)


def peak_hz(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * rate / len(x))


# -- chains and graphs -------------------------------------------------------------------------

def test_a_chain_of_stage_instances_equals_the_same_graph_of_nodes():
    x = synth_audio(2, 44100)
    chain = Pipeline([Scale(factor=2), Scale(factor=0.25)], device="cpu")
    assert [n.id for n in chain.nodes] == ["scale", "scale_2"]
    graph = Pipeline([Node("a", Scale(factor=2)), Node("b", Scale(factor=0.25), "a")], device="cpu")
    out_chain, out_graph = chain(x), graph(x)
    assert torch.equal(out_chain.samples, out_graph.samples)
    assert torch.allclose(out_chain.samples, x.samples * 0.5)


def test_named_outputs_and_merge():
    x = synth_audio(1, 44100)
    p = Pipeline([
        Node("stems", Split()),
        Node("louder", Scale(factor=4), "stems.half"),  # 2.0 x
        Node("mix", MixSum(gains_db=[0.0, -6.0206]), ["louder", "stems.quarter"]),  # + 0.125 x
    ], device="cpu")
    out = p(x)
    assert torch.allclose(out.samples, x.samples * 2.125, atol=1e-6)
    assert "mix = mix.sum(louder, stems.quarter)" in p.describe()


def test_a_pipeline_ending_in_a_splitter_returns_named_outputs():
    x = synth_audio(1, 44100)
    p = Pipeline([Scale(factor=2), Split()], device="cpu")
    assert p.output_names() == ("half", "quarter")
    out = p(x)
    assert set(out) == {"half", "quarter"}
    assert torch.allclose(out["quarter"].samples, x.samples * 0.5)
    result = p.run(x)
    with pytest.raises(ValueError, match="read .outputs by name"):
        result.audio


def test_stages_run_in_dependency_order_not_file_order():
    order = []

    class Log(Scale):
        def process(self, audio):
            order.append(self.params.factor)
            return super().process(audio)

    p = Pipeline([Node("late", Log(factor=3), "early"), Node("early", Log(factor=2), "input"),
                  Node("out", MixSum(), ["late", "input"])], device="cpu")
    x = synth_audio(1, 8000)
    assert torch.allclose(p(x).samples, x.samples * 7)
    assert order == [2, 3]


def test_merge_aligns_rates_and_channels():
    x = sine(1000.0, 44100, channels=1)
    p = Pipeline([
        Node("low", Resample(sample_rate_hz=22050), "input"),
        Node("wide", Channels(to="stereo"), "input"),
        Node("mix", MixSum(gains_db=[-6.0206, -6.0206], length="shortest"), ["low", "wide"]),
    ], device="cpu")
    result = p.run(x)
    out = result.audio
    assert (out.sample_rate, out.channels) == (44100, 2)
    assert "mix: resampled an input 22050 -> 44100 Hz to merge" in result.notes
    # both halves hold the same sine, so the mix is the sine again (edges aside)
    mid = slice(2000, out.frames - 2000)
    assert np.abs(out.numpy()[:, mid] - x.numpy()[:, mid]).max() < 1e-3


def test_running_leaves_the_input_untouched_even_when_it_feeds_two_branches():
    x = synth_audio(2, 44100)
    before = x.samples.clone()
    p = Pipeline([Node("a", Scale(factor=3), "input"), Node("b", Scale(factor=-1), "input"),
                  Node("m", MixSum(), ["a", "b"])], device="cpu")
    assert torch.allclose(p(x).samples, before * 2, atol=1e-6)
    assert torch.equal(x.samples, before)


# -- freeing intermediate audio -------------------------------------------------------------------

def test_intermediate_audio_is_freed_after_its_last_consumer():
    refs: dict[str, weakref.ref] = {}
    alive_at: dict[str, list[str]] = {}

    class Track(Scale):
        def process(self, audio):
            alive_at[self.name] = [k for k, r in refs.items() if r() is not None]
            out = super().process(audio)
            refs[self.name] = weakref.ref(out.samples)
            return out

    def track(name, **kw):
        s = Track(**kw)
        s.name = name
        return s

    p = Pipeline([
        Node("a", track("a", factor=2), "input"),
        Node("b", track("b", factor=3), "a"),
        Node("c", track("c", factor=5), "a"),  # a's output lives until c has taken it
        Node("d", track("d", factor=7), "b"),
        Node("m", MixSum(), ["d", "c"]),
    ], device="cpu")
    x = synth_audio(1, 8000)
    out = p(x)
    assert torch.allclose(out.samples, x.samples * (2 * 3 * 7 + 2 * 5), atol=1e-5)
    assert alive_at["b"] == ["a"]
    assert alive_at["c"] == ["a", "b"]
    assert alive_at["d"] == ["b", "c"]  # a is gone once b and c have run


# -- adapting audio to what a stage accepts --------------------------------------------------------

@pytest.mark.parametrize("rate", [8000, 44100, 192000])
def test_runner_resamples_to_a_declared_rate(rate):
    stage = Rate48k()
    x = sine(1000.0, rate)
    result = Pipeline([stage], device="cpu").run(x)
    assert stage.seen[0][0] == 48000
    assert result.audio.sample_rate == 48000
    assert f"rate48k: resampled {rate} -> 48000 Hz" in result.notes
    assert abs(peak_hz(result.audio.numpy()[0], 48000) - 1000.0) < 3
    level = float(np.sqrt(np.mean(result.audio.numpy()[0, 4000:-4000] ** 2)))
    assert 20 * np.log10(level / (0.5 / np.sqrt(2))) == pytest.approx(0.0, abs=0.05)


def test_no_resampling_when_the_rate_is_accepted():
    stage = Rate48k()
    result = Pipeline([stage], device="cpu").run(sine(rate=48000))
    assert result.notes == []


def test_pipeline_output_rate_and_channels():
    x = sine(1000.0, 44100, channels=2)
    result = Pipeline([Rate48k()], device="cpu", sample_rate=44100, channels=1).run(x)
    out = result.audio
    assert (out.sample_rate, out.channels) == (44100, 1)
    assert abs(out.frames - x.frames) <= 1
    assert "output: resampled 48000 -> 44100 Hz" in result.notes
    assert "output: converted 2 -> 1 channels" in result.notes
    mid = slice(1000, x.frames - 1000)
    assert np.abs(out.numpy()[0, mid] - x.numpy()[0, mid]).max() < 1e-3  # round trip through 48 kHz


@pytest.mark.parametrize("rate,expected", [(8000, 16000), (16000, 16000), (22050, 48000), (96000, 48000)])
def test_the_closest_rate_at_or_above_is_picked(rate, expected):
    stage = TwoRates()
    Pipeline([stage], device="cpu").run(synth_audio(1, rate, frames=2000))
    assert stage.seen[0][0] == expected
    assert Accepts(sample_rates={16000, 48000}).pick_sample_rate(rate) == expected


def test_stereo_is_downmixed_for_a_mono_stage_with_a_warning(caplog):
    stage = MonoOnly()
    x = Audio(torch.tensor([[1.0] * 32, [0.0] * 32]), 44100)
    with caplog.at_level(logging.WARNING, logger="restorekit"):
        result = Pipeline([Node("m", stage)], device="cpu").run(x)
    assert stage.seen[0][1] == 1
    assert torch.allclose(result.audio.samples, torch.full((1, 32), 0.5))
    assert "m: converted 2 -> 1 channels" in result.notes
    assert "stage 'm' (test.mono_only) takes mono only: downmixing stereo" in caplog.text


def test_mono_is_duplicated_for_a_stereo_stage():
    stage = StereoOnly()
    x = synth_audio(1, 44100, frames=100)
    out = Pipeline([stage], device="cpu")(x)
    assert stage.seen[0][1] == 2
    assert torch.equal(out.samples[0], out.samples[1]) and torch.equal(out.samples[0], x.samples[0])


@pytest.mark.parametrize("cls", [UpToStereo, MonoOnly])
def test_eight_channels_into_a_stage_for_fewer_is_a_clear_error(cls):
    with pytest.raises(StageError) as info:
        Pipeline([Node("narrow", cls())], device="cpu").run(synth_audio(8, 48000, frames=64))
    message = str(info.value)
    assert message.startswith(f"stage 'narrow' ({cls.id}): accepts ")
    assert "channel(s), the audio has 8; add a `util.channels` stage with `to: mono`" in message


def test_stages_that_accept_any_channel_count_process_eight():
    stage = Recorder()
    out = Pipeline([stage, Scale(factor=0.5)], device="cpu")(synth_audio(8, 48000, frames=64))
    assert out.channels == 8 and stage.seen[0][1] == 8


# -- seeds -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [RngNoise, TorchNoise])
def test_seeds_make_runs_repeatable_and_distinct(cls):
    x = synth_audio(1, 8000)
    p = Pipeline([cls()], device="cpu")
    a, b = p.run(x, seed=7).audio.numpy(), p.run(x, seed=7).audio.numpy()
    c = p.run(x, seed=8).audio.numpy()
    assert np.array_equal(a, b)
    noise_a, noise_c = a - x.numpy(), c - x.numpy()
    assert abs(np.corrcoef(noise_a[0], noise_c[0])[0, 1]) < 0.1  # another seed, independent noise
    assert np.array_equal(p.run(x).audio.numpy(), p.run(x, seed=0).audio.numpy())  # default: pipeline seed 0
    assert np.array_equal(Pipeline([cls()], device="cpu", seed=7)(x).numpy(), a)


def test_two_instances_of_a_random_stage_draw_different_noise():
    x = Audio(torch.zeros(1, 4000), 8000)
    p = Pipeline([Node("a", RngNoise(), "input"), Node("b", RngNoise(), "input"),
                  Node("m", MixSum(gains_db=[0, 0]), ["a", "b"])], device="cpu")
    mixed = p(x).numpy()[0]
    alone = Pipeline([Node("a", RngNoise(), "input"), Node("b", RngNoise(), "input"),
                      Node("m", MixSum(gains_db=[0, -120]), ["a", "b"])], device="cpu")(x).numpy()[0]
    noise_b = mixed - alone  # what b added
    assert np.std(noise_b) > 0.05 and abs(np.corrcoef(alone, noise_b)[0, 1]) < 0.1


def test_a_stage_draws_the_same_noise_wherever_it_sits_in_the_chain():
    """Seeds come from the stage's id, not its position: a pass-through stage added in front (a repair that
    found nothing) leaves the random stage's output bit-identical."""
    x = synth_audio(1, 8000)
    alone = Pipeline([Node("noise", RngNoise())], device="cpu").run(x, seed=3).audio.numpy()
    behind = Pipeline([Node("pass", Scale(factor=1.0)), Node("noise", RngNoise())], device="cpu")
    assert np.array_equal(behind.run(x, seed=3).audio.numpy(), alone)
    renamed = Pipeline([Node("other", RngNoise())], device="cpu").run(x, seed=3).audio.numpy()
    assert not np.array_equal(renamed, alone)


@pytest.mark.parametrize("seed", [-1, 2**40, 2**62])
def test_any_integer_seed_works(seed):
    x = synth_audio(1, 8000, frames=100)
    p = Pipeline([RngNoise(), TorchNoise()], device="cpu")
    assert np.array_equal(p.run(x, seed=seed).audio.numpy(), p.run(x, seed=seed).audio.numpy())


# -- timings, failures, loading -----------------------------------------------------------------------

def test_timings_are_recorded_per_stage_id():
    p = Pipeline([Node("first", Scale()), Node("second", Resample(sample_rate_hz=48000)), Node("third", Scale())],
                 device="cpu")
    result = p.run(synth_audio(2, 44100))
    assert list(result.timings) == ["first", "second", "third"]
    assert all(isinstance(t, float) and t >= 0 for t in result.timings.values())
    assert result.timings["second"] > 0


def test_stage_errors_name_the_stage():
    with pytest.raises(StageError, match=r"^stage 'quiet' \(test.fails\): this audio is too quiet to restore; "
                                         r"raise its level first$"):
        Pipeline([Scale(), Node("quiet", Fails())], device="cpu").run(synth_audio())


def test_nan_from_a_stage_or_in_the_input_is_an_error():
    with pytest.raises(StageError, match=r"stage 'makes_nan' \(test.makes_nan\) produced NaN or Inf samples"):
        Pipeline([MakesNaN()], device="cpu").run(synth_audio())
    x = synth_audio()
    x.samples[0, 3] = float("inf")
    with pytest.raises(StageError, match="the input contains NaN or Inf samples"):
        Pipeline([Scale()], device="cpu").run(x)


def test_wrong_return_values_are_errors():
    class WrongNames(Split):
        def process(self, audio):
            return {"half": audio}

    class NotAudio(Scale):
        def process(self, audio):
            return audio.samples

    with pytest.raises(StageError, match=r"returned \['half'\], expected outputs \['half', 'quarter'\]"):
        Pipeline([Node("s", WrongNames()), Node("m", MixSum(), ["s.half", "s.quarter"])], device="cpu")(synth_audio())
    with pytest.raises(StageError, match="returned Tensor, expected Audio"):
        Pipeline([NotAudio()], device="cpu")(synth_audio())


def test_models_load_once():
    cache.clear()
    CachedModel.factory_calls = CachedModel.load_calls = 0
    p = Pipeline([CachedModel()], device="cpu")
    x = synth_audio(1, 8000, frames=100)
    for _ in range(3):
        assert torch.allclose(p(x).samples, x.samples * 0.5)
    p.prepare()
    assert CachedModel.load_calls == 1
    Pipeline([CachedModel()], device="cpu")(x)  # a second instance shares the loaded model
    assert (CachedModel.load_calls, CachedModel.factory_calls) == (2, 1)
    cache.clear()


def test_models_load_lazily_on_first_use():
    stage = Recorder()
    p = Pipeline([stage], device="cpu")
    assert stage.loaded_on == []  # building a pipeline loads nothing
    p(synth_audio(1, 8000, frames=100))
    assert stage.loaded_on == ["cpu"]


def test_a_stage_that_cannot_run_here_is_refused_before_processing():
    p = Pipeline([Scale(), Node("sr", NeedsCheckpoint())], device="cpu")
    with pytest.raises(PipelineError) as info:
        p.run(synth_audio())
    assert str(info.value) == ("stage 'sr' (test.needs_checkpoint): cannot run here: the checkpoint test.ckpt is "
                               "missing; run `restorekit fetch test` first")
    assert info.value.exit_code == 2


def test_an_empty_pipeline_is_refused():
    with pytest.raises(PipelineError, match="a pipeline needs at least one stage"):
        Pipeline([])


def test_pipeline_graph_errors_for_code_built_pipelines():
    with pytest.raises(PipelineError, match=r"stage 'b' \(test.scale\): input: 'nope' names no stage"):
        Pipeline([Node("a", Scale()), Node("b", Scale(), "nope")])


def test_load_pipeline_is_the_public_api(tmp_path):
    import restorekit

    path = tmp_path / "p.yaml"
    path.write_text("device: cpu\nseed: 3\nstages:\n  - id: level\n    use: util.gain\n    with: {gain_db: -6.0206}\n")
    p = restorekit.load_pipeline(path, overrides=["level.gain_db=0"])
    x = synth_audio(2, 44100)
    assert isinstance(p, restorekit.Pipeline) and p.seed == 3
    assert torch.allclose(p(x).samples, x.samples)


def test_a_custom_stage_subclass_runs_in_a_pipeline():
    class Invert(Stage):
        id = "custom.invert"
        summary = "Flip the polarity."

        def process(self, audio):
            return audio.with_samples(-audio.samples)

    x = synth_audio(2, 22050)
    assert torch.equal(Pipeline([Invert()], device="cpu")(x).samples, -x.samples)
