"""Pipelines that start from nothing and pipelines with named outputs (issue 17): `outputs:` in YAML,
`restorekit run` of a source pipeline (naming, manifest, resume, refusals) and
`restorekit compare --source` (generated clips judged by reference-free metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from restorekit.audio import Audio
from restorekit.cli import cli
from restorekit.errors import PipelineError, UsageError
from restorekit.pipeline import load_pipeline, pipeline_from_text

GAIN_WITH_ORIGINAL = textwrap.dedent("""\
    name: side_by_side
    stages:
      - id: quiet
        use: util.gain
        with: {gain_db: -6.0206}
    outputs:
      original: input
      quieter: quiet
    """)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def tone(seconds: float = 1.0, rate: int = 44100) -> Audio:
    t = torch.arange(int(seconds * rate)) / rate
    return Audio((0.5 * torch.sin(2 * torch.pi * 440 * t))[None].float(), rate)


# -- named outputs -------------------------------------------------------------------------------

def test_named_outputs_return_each_reference_including_the_untouched_input():
    pipeline = pipeline_from_text(GAIN_WITH_ORIGINAL, "p.yaml")
    assert pipeline.output_names() == ("original", "quieter")
    audio = tone()
    out = pipeline(audio)
    assert set(out) == {"original", "quieter"}
    assert torch.equal(out["original"].samples, audio.samples)
    assert torch.allclose(out["quieter"].samples, audio.samples / 2, atol=1e-6)
    assert "outputs: original = input, quieter = quiet" in pipeline.describe()


def test_a_pipeline_that_names_its_outputs_holds_the_file_and_says_why():
    text = "name: n\nstages:\n  - id: dither\n    use: master.dither\n"
    assert pipeline_from_text(text).whole_file_reason() is None  # it streams without `outputs:`
    named = pipeline_from_text(text + "outputs:\n  dithered: dither\n")
    assert named.whole_file_reason() == "the pipeline names its outputs (`outputs:`)"


def test_the_cli_writes_named_outputs_side_by_side(tmp_path):
    (tmp_path / "p.yaml").write_text(GAIN_WITH_ORIGINAL)
    audio = tone()
    sf.write(tmp_path / "song.wav", audio.numpy().T, audio.sample_rate, subtype="FLOAT")
    result = invoke("run", tmp_path / "p.yaml", tmp_path / "song.wav", "-o", tmp_path / "out", "--bit-depth", "32")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "song.original.wav",
                                                                    "song.quieter.wav"]
    original, _ = sf.read(tmp_path / "out" / "song.original.wav", dtype="float32")
    quieter, _ = sf.read(tmp_path / "out" / "song.quieter.wav", dtype="float32")
    assert np.array_equal(original, audio.numpy()[0])
    assert np.allclose(quieter, audio.numpy()[0] / 2, atol=1e-6)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pipeline"]["outputs"] == {"original": "input", "quieter": "quiet"}


def test_bad_named_outputs_are_reported_with_their_lines():
    text = textwrap.dedent("""\
        name: bad
        stages:
          - id: a
            use: util.gain
          - id: b
            use: util.gain
        outputs:
          first: inptu
          bad name: a
          left: a.left
        """)
    with pytest.raises(PipelineError) as info:
        pipeline_from_text(text, "bad.yaml")
    message = str(info.value)
    assert "bad.yaml:8: outputs.first: 'inptu' names no stage of this pipeline" in message
    assert "bad.yaml:9: outputs.bad name: an output name uses letters" in message
    assert "bad.yaml:10: outputs.left: 'a.left': stage 'a' has a single output" in message
    assert "never used" not in message  # no cascade from the broken `outputs`
    with pytest.raises(PipelineError) as info:  # with `outputs`, the last stage must be in it (or be used)
        pipeline_from_text(text.split("outputs:")[0] + "outputs:\n  first: a\n", "bad.yaml")
    assert str(info.value).endswith("bad.yaml:5: stage 'b' (util.gain): its output is never used: no later stage "
                                    "takes it and it is not in `outputs`; give a stage `input: b` or remove it")


def test_a_source_pipeline_cannot_output_the_input_it_does_not_have():
    text = textwrap.dedent("""\
        name: gen
        stages:
          - id: gen
            use: generate.musicgen
            with: {model: tiny}
        outputs:
          raw: input
          made: gen
        """)
    with pytest.raises(PipelineError, match="outputs.raw: this pipeline starts from the source stage 'gen'"):
        pipeline_from_text(text, "gen.yaml")


# -- restorekit run with a source pipeline -------------------------------------------------------

def run_offline(tmp_path, *args):
    """The CLI in a child process with downloads forbidden, as a user without the weights runs it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RESTOREKIT_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch_home"), HF_HOME=str(tmp_path / "hf"),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "restorekit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, check=False, cwd=tmp_path)


def band_energy_db(path, low_hz: float) -> float:
    """Energy above low_hz relative to the whole, in dB."""
    x, rate = sf.read(path, always_2d=True)
    spec = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(10 * np.log10(spec[freqs > low_hz].sum() / spec.sum() + 1e-30))


@pytest.mark.slow
def test_generate_and_restore_writes_the_raw_and_the_restored_clip_and_resumes(tmp_path):
    pytest.importorskip("transformers")
    tiny = ["--set", "gen.model=tiny", "--set", "gen.duration_s=2", "--set", "gen.prompt=Jazz trio, brushes!"]
    run = run_offline(tmp_path, "run", "generate_and_restore", "-o", "out", *tiny)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    raw, restored = out / "jazz-trio-brushes-seed0.raw.wav", out / "jazz-trio-brushes-seed0.restored.wav"
    assert sorted(p.name for p in out.iterdir()) == ["jazz-trio-brushes-seed0.raw.wav",
                                                     "jazz-trio-brushes-seed0.restored.wav", "manifest.json"]
    raw_info, restored_info = sf.info(str(raw)), sf.info(str(restored))
    assert (raw_info.samplerate, raw_info.frames) == (32000, 64000)
    assert (restored_info.samplerate, restored_info.subtype) == (44100, "PCM_24")
    assert abs(restored_info.duration - 2.0) < 1e-3
    # restored, not copied: the band above the raw clip's 16 kHz Nyquist is filled
    assert band_energy_db(restored, 16500) > band_energy_db(raw, 15000) - 30 > -200
    assert band_energy_db(restored, 16500) > -60
    manifest = json.loads((out / "manifest.json").read_text())
    [entry] = manifest["files"]
    assert entry["input"] == "<generated: jazz-trio-brushes-seed0>" and entry["input_sha256"] is None
    assert entry["status"] == "ok" and entry["duration_s"] == 2.0
    assert entry["outputs"] == [str(raw.relative_to(tmp_path)), str(restored.relative_to(tmp_path))]
    assert any(n.startswith("gen: generated by MusicGen tiny") for n in entry["notes"])
    assert any(n.startswith("bwe: cutoff") for n in entry["notes"])

    # the raw clip is what the generate pipeline alone makes with the same seed
    alone = run_offline(tmp_path, "run", "generate", "-o", "alone", *tiny)
    assert alone.returncode == 0, alone.stderr
    assert np.array_equal(sf.read(raw, dtype="int32")[0],
                          sf.read(tmp_path / "alone" / "jazz-trio-brushes-seed0.wav", dtype="int32")[0])

    # a rerun with the same settings does nothing; another seed makes another pair beside it
    stamp = restored.stat().st_mtime_ns
    again = run_offline(tmp_path, "run", "generate_and_restore", "-o", "out", *tiny)
    assert again.returncode == 0 and "1 file(s) already up to date" in again.stderr, again.stderr
    assert restored.stat().st_mtime_ns == stamp
    other = run_offline(tmp_path, "run", "generate_and_restore", "-o", "out", "--seed", "1", *tiny)
    assert other.returncode == 0, other.stderr
    assert (out / "jazz-trio-brushes-seed1.raw.wav").is_file()
    assert not np.array_equal(sf.read(raw)[0], sf.read(out / "jazz-trio-brushes-seed1.raw.wav")[0])
    assert len(json.loads((out / "manifest.json").read_text())["files"]) == 2


def test_a_source_run_on_a_terminal_shows_a_bar_without_a_total(tmp_path, monkeypatch, capsys):
    """A generated clip's length is not known ahead: the bar counts seconds without a total (it crashed once)."""
    pytest.importorskip("transformers")
    from restorekit.batch import run_batch

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    report = run_batch("generate", [], tmp_path / "out", overrides=["gen.model=tiny", "gen.duration_s=0.5"],
                       device="cpu", progress=True)
    assert report.generated and [f.status for f in report.files] == ["ok"]
    assert "s audio" in capsys.readouterr().err


def test_input_files_given_to_a_source_pipeline_are_a_usage_error(tmp_path, make_wav):
    pytest.importorskip("transformers")
    song = make_wav(tmp_path / "song.wav")
    result = invoke("run", "generate", song, "-o", tmp_path / "out", "--set", "gen.model=tiny")
    assert result.exit_code == 2
    assert "starts from the source stage 'gen' (generate.musicgen)" in result.output
    assert "takes no input files" in result.output and str(song) in result.output
    assert not (tmp_path / "out").exists()


def test_validate_says_a_source_pipeline_runs_without_inputs():
    result = invoke("validate", "generate_and_restore")
    assert result.exit_code == 0, result.output
    assert "starts from the source stage 'gen' (generate.musicgen): run it without input files" in result.output
    assert "outputs: raw = gen, restored = dither" in result.output


def test_the_musicgen_source_names_its_files_after_the_prompt():
    pipeline = load_pipeline("generate", ["gen.prompt=  Lo-Fi piano; soft DRUMS (rainy night)  "])
    assert pipeline.nodes[0].stage.source_name() == "lo-fi-piano-soft-drums-rainy-night"
    assert load_pipeline("generate", ["gen.prompt=???"]).nodes[0].stage.source_name() == "musicgen"
    assert len(load_pipeline("generate", ["gen.prompt=" + "word " * 40]).nodes[0].stage.source_name()) <= 48


# -- compare --source ----------------------------------------------------------------------------

def tiny_source(**params):
    sets = {"gen.model": "tiny", "gen.duration_s": 1.5, **params}
    return load_pipeline("generate", [f"{k}={v}" for k, v in sets.items()], device="cpu")


def test_compare_judges_pipelines_on_generated_clips():
    pytest.importorskip("transformers")
    from restorekit_tools.compare.run import run_comparison

    run = run_comparison(["dsp_chain"], source=tiny_source(), takes=2, metrics=["bandwidth_hz", "centroid_hz"],
                         device="cpu")
    assert run.mode == "generated" and run.baseline == "generated" and run.row_labels() == ["generated", "dsp_chain"]
    assert run.files == ["lo-fi-piano-with-soft-drums-take1", "lo-fi-piano-with-soft-drums-take2"]
    values = {(r["file"], r["pipeline"], r["metric"]): r["value"] for r in run.rows}
    assert len(values) == 8 and all(v is not None for v in values.values())
    for name in run.files:  # the DSP chain's bandwidth extension widens every generated clip
        assert values[(name, "generated", "bandwidth_hz")] <= 16000 < values[(name, "dsp_chain", "bandwidth_hz")]
    take1, take2 = (values[(n, "generated", "centroid_hz")] for n in run.files)
    assert take1 != take2  # each take has its own seed
    notes = [r["notes"] for r in run.rows if r["pipeline"] == "generated"]
    assert all("generated by MusicGen tiny" in n for n in notes)


def test_compare_source_is_exclusive_and_must_start_from_a_source(tmp_path, make_wav):
    pytest.importorskip("transformers")
    from restorekit_tools.compare.run import run_comparison

    with pytest.raises(UsageError, match="give one of"):
        run_comparison(["dsp_chain"], source=tiny_source(), inputs=[make_wav(tmp_path / "a.wav")])
    with pytest.raises(UsageError, match="its first stage 'gate' .* is not a source stage"):
        run_comparison(["dsp_chain"], source="dsp_chain")
    with pytest.raises(UsageError, match="several outputs"):
        run_comparison(["dsp_chain"], source="generate_and_restore")
    with pytest.raises(UsageError, match="starts from a source stage and restores nothing; give it as --source"):
        run_comparison(["generate"], source=tiny_source())
    for takes in ("3", "1"):
        result = invoke("compare", "dsp_chain", "--takes", takes, "--inputs", tmp_path)
        assert result.exit_code == 2 and "--takes counts the clips a --source pipeline makes" in result.output


@pytest.mark.slow
def test_compare_source_through_the_cli_writes_a_report(tmp_path):
    pytest.importorskip("transformers")
    run = run_offline(tmp_path, "compare", "dsp_chain", "--source", "generate", "--takes", "2",
                      "--set-source", "gen.model=tiny", "--set-source", "gen.duration_s=1",
                      "-m", "bandwidth_hz", "-m", "lufs", "-o", "report")
    assert run.returncode == 0, run.stderr
    assert "generated" in run.stdout and "dsp_chain" in run.stdout
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "mode: generated: the source pipeline `generate` makes each clip" in summary
    rows = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2
