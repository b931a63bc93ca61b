"""Bad input through the CLI: a clear message, a non-zero exit, nothing half-written, the good files restored."""

from __future__ import annotations

import hashlib
import json
import textwrap

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from core_fakes import files_under, tone

from restorekit.cli import cli

GAIN = "stages:\n  - id: level\n    use: util.gain\n    with: {gain_db: -6.0206}\n"


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def gain_yaml(tmp_path):
    path = tmp_path / "gain.yaml"
    path.write_text(GAIN)
    return path


def write_yaml(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- one bad file: exit 1, the file named with the reason, no output for it ----------------------------

def _missing(d, make_wav):
    return d / "missing.wav"


def _empty(d, make_wav):
    (d / "empty.wav").write_bytes(b"")
    return d / "empty.wav"


def _text(d, make_wav):
    (d / "readme.wav").write_text("These are my notes, not audio.\n" * 10)
    return d / "readme.wav"


def _truncated(d, make_wav):
    whole = make_wav(d / "whole.wav", seconds=0.2).read_bytes()
    (d / "whole.wav").unlink()
    (d / "cut.wav").write_bytes(whole[: len(whole) * 2 // 3])
    return d / "cut.wav"


def _zero_length(d, make_wav):
    return make_wav(d / "zero.wav", data=np.zeros((0, 2), np.float32))


def _nan(d, make_wav):
    data = tone(4410, 44100)
    data[2205, 0] = np.nan
    return make_wav(d / "nan.wav", data=data, subtype="FLOAT")


def _inf(d, make_wav):
    data = tone(4410, 44100, channels=2)
    data[100:110, 1] = np.inf
    return make_wav(d / "inf.wav", data=data, subtype="FLOAT")


def _one_sample(d, make_wav):
    return make_wav(d / "one.wav", data=np.full((1, 1), 0.25, np.float32))


BAD = {
    "empty file": (_empty, "the file is empty (0 bytes)"),
    "text file named .wav": (_text, "not a readable audio file"),
    "truncated wav": (_truncated, "truncated WAV: the header declares"),
    "zero-length audio": (_zero_length, "holds no audio (0 frames)"),
    "NaN samples": (_nan, "1 samples are NaN or Inf (first at 0.050 s); fix or re-export the source file"),
    "Inf samples": (_inf, "10 samples are NaN or Inf (first at 0.002 s)"),
    "one-sample file": (_one_sample, "only 1 frame(s) of audio; restorekit needs at least 16 frames"),
}


def test_nothing_but_missing_inputs_is_a_usage_error_before_any_model_loads(tmp_path, gain_yaml):
    missing = tmp_path / "in" / "missing.wav"
    result = invoke("run", gain_yaml, missing, tmp_path / "nodir", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr == (f"error: nothing to restore: {missing}: no such file or directory; "
                             f"{tmp_path / 'nodir'}: no such file or directory\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_fails_clearly_and_leaves_nothing(tmp_path, make_wav, gain_yaml, case):
    make, reason = BAD[case]
    d = tmp_path / "in"
    d.mkdir()
    path = make(d, make_wav)
    result = invoke("run", gain_yaml, path, "-o", tmp_path / "out")
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {path}: ") and reason in failed[0]
    assert "restored 0 of 1 file(s)" in result.stdout
    assert files_under(tmp_path / "out") == ["manifest.json"]  # no output, no temporary file
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"][0]["status"] == "failed" and reason in manifest["files"][0]["error"]


def test_a_directory_of_mixed_files_restores_the_good_ones(tmp_path, make_wav, gain_yaml):
    d = tmp_path / "in"
    good = [make_wav(d / "good1.wav"), make_wav(d / "deeper" / "good2.flac", channels=2)]
    (d / "bad").mkdir()
    bad = [make(d / "bad", make_wav) for make, _ in BAD.values() if make is not _missing]
    result = invoke("run", gain_yaml, d, "-o", tmp_path / "out")
    assert result.exit_code == 1
    for path in bad:
        assert f"FAILED {path}: " in result.stderr
    assert f"restored 2 of {2 + len(bad)} file(s)" in result.stdout
    assert files_under(tmp_path / "out") == ["deeper/good2.wav", "good1.wav", "manifest.json"]
    for src, out in zip(good, ["good1.wav", "deeper/good2.wav"]):
        x, y = sf.read(str(src))[0], sf.read(str(tmp_path / "out" / out))[0]
        assert np.abs(y - x / 2).max() < 1e-4  # really processed: -6 dB


def test_a_directory_without_audio_fails(tmp_path, gain_yaml, make_wav):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    result = invoke("run", gain_yaml, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "nothing to restore" in result.stderr
    assert "no audio files (.wav, .flac" in result.stderr
    good = make_wav(tmp_path / "good.wav")  # beside a file that exists, it is one failure among the files
    result = invoke("run", gain_yaml, tmp_path / "in", good, "-o", tmp_path / "out")
    assert result.exit_code == 1 and f"FAILED {tmp_path / 'in'}: no audio files (.wav, .flac" in result.stderr


# -- unusual but valid input ------------------------------------------------------------------------

def test_eight_channels_are_processed_by_stages_that_take_any_count(tmp_path, make_wav, gain_yaml):
    src = make_wav(tmp_path / "8ch.wav", channels=8, rate=48000, seconds=0.1)
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    y, rate = sf.read(str(tmp_path / "out" / "8ch.wav"))
    assert y.shape == (4800, 8) and rate == 48000
    assert np.abs(y - sf.read(str(src))[0] / 2).max() < 1e-4


def test_eight_channels_into_a_stage_for_one_or_two_names_util_channels(tmp_path, make_wav, fake_registry):
    src = make_wav(tmp_path / "8ch.wav", channels=8, seconds=0.1)
    yaml = write_yaml(tmp_path, "stages:\n  - id: narrow\n    use: test.up_to_stereo\n")
    result = invoke("run", yaml, src, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert (f"FAILED {src}: stage 'narrow' (test.up_to_stereo, plugin 'tests'): accepts 1, 2 channel(s), the audio has 8; "
            "add a `util.channels` stage with `to: mono`") in result.stderr
    assert files_under(tmp_path / "out") == ["manifest.json"]
    yaml = write_yaml(tmp_path, """
        stages:
          - use: util.channels
            with: {to: mono}
          - id: narrow
            use: test.up_to_stereo
        """, "fixed.yaml")
    assert invoke("run", yaml, src, "-o", tmp_path / "out2").exit_code == 0
    assert sf.info(str(tmp_path / "out2" / "8ch.wav")).channels == 1


TO_CD = """
    stages:
      - use: util.channels
        with: {to: stereo}
      - use: util.resample
        with: {sample_rate_hz: 44100}
    """


@pytest.mark.parametrize("rate", [8000, 192000])
def test_extreme_sample_rates_are_processed(tmp_path, make_wav, rate):
    src = make_wav(tmp_path / f"{rate}.wav", rate=rate, seconds=0.3, channels=1)
    result = invoke("run", write_yaml(tmp_path, TO_CD), src, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    y, out_rate = sf.read(str(tmp_path / "out" / f"{rate}.wav"))
    assert out_rate == 44100 and abs(len(y) - 0.3 * 44100) <= 1
    assert np.abs(y[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)  # the 440 Hz tone survives


@pytest.mark.parametrize("rate", [8000, 192000])
def test_the_runner_resamples_for_a_stage_that_declares_rates(tmp_path, make_wav, fake_registry, rate):
    src = make_wav(tmp_path / "x.wav", rate=rate, seconds=0.3)
    yaml = write_yaml(tmp_path, "stages:\n  - use: test.rate48k\n")
    result = invoke("run", yaml, src, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sf.info(str(tmp_path / "out" / "x.wav")).samplerate == 48000
    notes = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"][0]["notes"]
    assert notes == [f"rate48k: resampled {rate} -> 48000 Hz",
                     "the whole file was held in memory: stage 'rate48k' (test.rate48k, plugin 'tests'): "
                     "it works on the whole file"]


# -- where outputs may and may not go ------------------------------------------------------------------

def test_unwritable_output_directory_is_a_usage_error_before_processing(tmp_path, make_wav, gain_yaml):
    src = make_wav(tmp_path / "in" / "x.wav")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a directory should be")
    before = files_under(tmp_path)
    for outdir in (blocker / "out", blocker):
        result = invoke("run", gain_yaml, src, "-o", outdir)
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: cannot write to output directory {outdir}: ")
        assert "FAILED" not in result.stderr and "restored" not in result.stdout
    assert files_under(tmp_path) == before  # nothing written anywhere, not even a manifest


def test_an_output_that_cannot_be_written_fails_that_file_only(tmp_path, make_wav, gain_yaml):
    make_wav(tmp_path / "in" / "a.wav")
    make_wav(tmp_path / "in" / "sub" / "b.wav")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where the output folder for sub/ would go")
    result = invoke("run", gain_yaml, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert f"FAILED {tmp_path / 'in' / 'sub' / 'b.wav'}: {tmp_path / 'out' / 'sub' / 'b.wav'}: cannot write" \
        in result.stderr
    assert files_under(tmp_path / "out") == ["a.wav", "manifest.json", "sub"]


def test_outputs_never_overwrite_an_input(tmp_path, make_wav, gain_yaml):
    src = make_wav(tmp_path / "in" / "x.wav")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "in")
    assert result.exit_code == 1
    assert f"refusing to write {tmp_path / 'in' / 'x.wav'}: it is an input file; choose another -o" in result.stderr
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_outputs_never_land_outside_the_output_directory(tmp_path, make_wav, gain_yaml):
    make_wav(tmp_path / "in" / "sub" / "x.wav")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(elsewhere, target_is_directory=True)
    result = invoke("run", gain_yaml, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "outside the output directory" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_two_inputs_for_one_output_name_are_not_both_written(tmp_path, make_wav, gain_yaml):
    a = make_wav(tmp_path / "in" / "song.wav", data=tone(4410, 44100, freq_hz=440))
    b = make_wav(tmp_path / "in" / "song.flac", data=tone(4410, 44100, freq_hz=1000))
    result = invoke("run", gain_yaml, a, b, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert f"FAILED {b}: {tmp_path / 'out' / 'song.wav'} is also the output of {a}; rename one input" in result.stderr
    y = sf.read(str(tmp_path / "out" / "song.wav"))[0]
    assert np.abs(y - sf.read(str(a))[0] / 2).max() < 1e-4  # the first one's output, untouched by the second


def test_a_failed_output_of_a_splitter_removes_its_other_outputs(tmp_path, make_wav, fake_registry):
    src = make_wav(tmp_path / "x.wav")
    yaml = write_yaml(tmp_path, "stages:\n  - use: test.split\n")
    (tmp_path / "out" / "x.quarter.wav").mkdir(parents=True)  # the second output cannot be written
    refused = invoke("run", yaml, src, "-o", tmp_path / "out")  # not written by this project: refused up front
    assert refused.exit_code == 2 and "refusing to replace 1 file(s) this project did not write" in refused.stderr
    result = invoke("run", yaml, src, "-o", tmp_path / "out", "--overwrite")
    assert result.exit_code == 1
    assert "x.quarter.wav: cannot write" in result.stderr
    assert not (tmp_path / "out" / "x.half.wav").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"][0]["outputs"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "x.quarter.wav"]


def test_an_output_directory_inside_the_input_directory_is_not_read_again(tmp_path, make_wav, gain_yaml):
    make_wav(tmp_path / "music" / "x.wav")
    for _ in range(2):  # the second run must not restore the first run's outputs, nor refuse x.wav
        result = invoke("run", gain_yaml, tmp_path / "music", "-o", tmp_path / "music" / "restored")
        assert result.exit_code == 0, result.output
        assert "restored 1 of 1 file(s)" in result.stdout
    assert files_under(tmp_path / "music") == ["restored/manifest.json", "restored/x.wav", "x.wav"]


def test_output_directory_equal_to_or_above_the_input_directory(tmp_path, make_wav, gain_yaml, monkeypatch):
    src = make_wav(tmp_path / "music" / "x.wav")
    result = invoke("run", gain_yaml, tmp_path / "music", "-o", tmp_path / "music")
    assert result.exit_code == 1 and f"refusing to write {src}: it is an input file" in result.stderr
    monkeypatch.chdir(tmp_path)
    result = invoke("run", gain_yaml, "music", "-o", ".")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.wav").is_file()
