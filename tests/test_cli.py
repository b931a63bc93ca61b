"""The command line: in-process with click's CliRunner, plus a real subprocess run and a fast-start check."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from core_fakes import files_under

from restorekit import __version__
from restorekit.cli import cli

# like the first shipped zero_shot: a chain of the core utility stages
UTIL_CHAIN = """
    name: util_chain
    description: Stereo at 44.1 kHz.
    device: auto
    stages:
      - id: to_stereo
        use: util.channels
        with: {to: stereo}
      - id: upsample
        use: util.resample
        with: {sample_rate_hz: 44100}
      - id: level
        use: util.gain
        with: {gain_db: 0.0}
    """

GAIN_PIPELINE = """
    name: level
    description: Gain only.
    device: cpu
    stages:
      - id: level
        use: util.gain
        with: {gain_db: 0}
    """


def invoke(*args: str | Path):
    """Run the CLI in-process; an exception other than SystemExit fails the test; never a traceback."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def gain_yaml(tmp_path):
    path = tmp_path / "level.yaml"
    path.write_text(textwrap.dedent(GAIN_PIPELINE))
    return path


@pytest.fixture
def chain_yaml(tmp_path):
    path = tmp_path / "util_chain.yaml"
    path.write_text(textwrap.dedent(UTIL_CHAIN))
    return path


def peak(path: Path) -> float:
    return float(np.abs(sf.read(str(path), always_2d=True)[0]).max())


# -- run -------------------------------------------------------------------------------------------

def test_run_restores_a_file(tmp_path, make_wav, chain_yaml):
    src = make_wav(tmp_path / "in" / "song.wav", rate=32000, channels=1)
    result = invoke("run", chain_yaml, src, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = sf.info(str(tmp_path / "out" / "song.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
    assert abs(info.frames - 0.25 * 44100) <= 1
    assert f"restored 1 of 1 file(s) into {tmp_path / 'out'} (device cpu;" in result.stdout
    assert files_under(tmp_path / "out") == ["manifest.json", "song.wav"]


def test_outputs_mirror_the_input_tree(tmp_path, make_wav, gain_yaml):
    for rel in ("a.wav", "album/b.flac", "album/disc2/c.wav"):
        make_wav(tmp_path / "music" / rel)
    (tmp_path / "music" / "album" / "cover.jpg").write_bytes(b"not audio, ignored")
    result = invoke("run", gain_yaml, tmp_path / "music", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out") == ["a.wav", "album/b.wav", "album/disc2/c.wav", "manifest.json"]


@pytest.mark.parametrize("args,fmt,subtype", [
    ([], "WAV", "PCM_24"),
    (["--bit-depth", "16"], "WAV", "PCM_16"),
    (["--bit-depth", "32"], "WAV", "FLOAT"),
    (["--format", "flac"], "FLAC", "PCM_24"),
    (["--format", "flac", "--bit-depth", "16"], "FLAC", "PCM_16"),
])
def test_format_and_bit_depth(tmp_path, make_wav, gain_yaml, args, fmt, subtype):
    src = make_wav(tmp_path / "x.wav")
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out", *args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / f"x.{fmt.lower()}"
    info = sf.info(str(out))
    assert (info.format, info.subtype) == (fmt, subtype)


def test_flac_at_32_bit_is_refused_per_file(tmp_path, make_wav, gain_yaml):
    src = make_wav(tmp_path / "x.wav")
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out", "--format", "flac", "--bit-depth", "32")
    assert result.exit_code == 1
    assert "FLAC stores integers only" in result.stderr
    assert files_under(tmp_path / "out") == ["manifest.json"]


def test_set_overrides_a_parameter(tmp_path, make_wav, gain_yaml):
    src = make_wav(tmp_path / "x.wav")  # peak 0.5
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out", "--set", "level.gain_db=-6.0206")
    assert result.exit_code == 0, result.output
    assert peak(tmp_path / "out" / "x.wav") == pytest.approx(0.25, abs=1e-4)


@pytest.mark.parametrize("item,fragment", [
    ("nope.gain_db=1", "--set nope.gain_db=1: no stage 'nope' in this pipeline"),
    ("level.gian_db=1", "with.gian_db: unknown parameter; did you mean 'gain_db'?"),
    ("level.gain_db=1000", "with.gain_db: Input should be less than or equal to 60 (got 1000)"),
    ("level", "expected stage_id.param=value"),
])
def test_bad_set_is_a_usage_error_before_anything_is_written(tmp_path, make_wav, gain_yaml, item, fragment):
    src = make_wav(tmp_path / "x.wav")
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out", "--set", item)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert not (tmp_path / "out").exists()


def test_pipeline_error_names_file_and_line(tmp_path, make_wav):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - id: level\n    use: util.gain\n    with: {gain_db: 100}\n")
    result = invoke("run", bad, make_wav(tmp_path / "x.wav"), "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {bad}:4: stage 'level' (util.gain): with.gain_db: Input should be less than or "
                             "equal to 60 (got 100)\n")
    assert not (tmp_path / "out").exists()


def test_a_shipped_pipeline_is_found_by_name(tmp_path, monkeypatch, chain_yaml):
    from restorekit import pipeline

    monkeypatch.setattr(pipeline, "named_pipelines", lambda registry=None: {"util_chain": chain_yaml})
    result = invoke("validate", "util_chain")
    assert result.exit_code == 0 and result.stdout.startswith(f"ok: {chain_yaml}: 3 stage(s)")


def test_unknown_pipeline_is_a_usage_error(tmp_path):
    result = invoke("run", "zero_shto", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "Did you mean 'zero_shot'?" in result.stderr


def test_bad_device_spelling_and_missing_cuda(tmp_path, make_wav, gain_yaml, monkeypatch):
    src = make_wav(tmp_path / "x.wav")
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out", "--device", "gpu")
    assert result.exit_code == 2 and "device must be auto, cpu, cuda or cuda:N, got 'gpu'" in result.stderr
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("run", gain_yaml, src, "-o", tmp_path / "out", "--device", "cuda")
    assert result.exit_code == 2
    assert "device 'cuda' was requested but torch sees no CUDA GPU on this machine" in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_input_the_demo_clip_is_restored(tmp_path, gain_yaml):
    result = invoke("run", gain_yaml, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "no input given: restoring the built-in demo clip" in result.stderr
    assert files_under(tmp_path / "out") == ["demo.wav", "demo_input.wav", "manifest.json"]
    info = sf.info(str(tmp_path / "out" / "demo.wav"))
    assert (info.samplerate, info.channels) == (32000, 1) and info.duration == pytest.approx(10.0)
    assert peak(tmp_path / "out" / "demo.wav") > 0.5


def test_some_failures_exit_1_name_each_failure_and_restore_the_rest(tmp_path, make_wav, gain_yaml):
    good = make_wav(tmp_path / "in" / "good.wav")
    (tmp_path / "in" / "bad.wav").write_text("not audio")
    missing = tmp_path / "in" / "missing.wav"
    result = invoke("run", gain_yaml, good, tmp_path / "in" / "bad.wav", missing, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert f"FAILED {tmp_path / 'in' / 'bad.wav'}: {tmp_path / 'in' / 'bad.wav'}: not a readable audio file" \
        in result.stderr
    assert f"FAILED {missing}: no such file or directory" in result.stderr
    assert "restored 1 of 3 file(s)" in result.stdout
    assert files_under(tmp_path / "out") == ["good.wav", "manifest.json"]


def test_an_unexpected_exception_in_a_stage_fails_that_file_without_a_traceback(tmp_path, make_wav, fake_registry):
    from restorekit.stage import Stage

    class Crashes(Stage):
        id = "test.crashes"
        summary = "Raises a bug."

        def process(self, audio):
            raise RuntimeError("a bug in a plugin")

    fake_registry.stages.add(Crashes, "tests")
    yaml = tmp_path / "p.yaml"
    yaml.write_text("stages:\n  - use: test.crashes\n")
    result = invoke("run", yaml, make_wav(tmp_path / "x.wav"), "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert ("FAILED" in result.stderr and "stage 'crashes' (test.crashes, plugin 'tests'): internal error: "
            "RuntimeError: a bug in a plugin" in result.stderr), "an unexpected error names the stage and plugin"


def test_a_stage_that_cannot_run_here_is_a_usage_error_before_anything_is_written(tmp_path, make_wav,
                                                                                  fake_registry):
    yaml = tmp_path / "p.yaml"
    yaml.write_text("stages:\n  - id: sr\n    use: test.needs_checkpoint\n")
    result = invoke("run", yaml, make_wav(tmp_path / "x.wav"), "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr == ("error: stage 'sr' (test.needs_checkpoint, plugin 'tests'): cannot run here: the checkpoint test.ckpt "
                             "is missing; run `restorekit fetch test` first\n")
    assert not (tmp_path / "out").exists()


def test_a_splitting_pipeline_writes_one_file_per_output(tmp_path, make_wav, fake_registry):
    yaml = tmp_path / "split.yaml"
    yaml.write_text("stages:\n  - use: test.split\n")
    result = invoke("run", yaml, make_wav(tmp_path / "x.wav"), "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert files_under(tmp_path / "out") == ["manifest.json", "x.half.wav", "x.quarter.wav"]
    assert peak(tmp_path / "out" / "x.quarter.wav") == pytest.approx(0.125, abs=1e-4)


def test_pipeline_bit_depth_key_is_used(tmp_path, make_wav):
    yaml = tmp_path / "p.yaml"
    yaml.write_text("bit_depth: 16\nstages:\n  - use: util.gain\n")
    invoke("run", yaml, make_wav(tmp_path / "x.wav"), "-o", tmp_path / "out")
    assert sf.info(str(tmp_path / "out" / "x.wav")).subtype == "PCM_16"


def test_quiet_and_verbose(tmp_path, make_wav, gain_yaml):
    srcs = [make_wav(tmp_path / "in" / f"{i}.wav") for i in range(2)]
    (tmp_path / "in" / "bad.wav").write_text("x")
    quiet = invoke("-q", "run", gain_yaml, tmp_path / "in", "-o", tmp_path / "q")
    assert quiet.stdout == "" and "files:" not in quiet.stderr  # no progress bar
    assert "FAILED" in quiet.stderr  # failures are still named
    verbose = invoke("-v", "run", gain_yaml, *srcs, tmp_path / "in" / "bad.wav", "-o", tmp_path / "v")
    assert "INFO: " in verbose.stderr and "not a readable audio file" in verbose.stderr


# -- the manifest ----------------------------------------------------------------------------------

def test_manifest(tmp_path, make_wav, chain_yaml):
    src = make_wav(tmp_path / "in" / "song.wav", rate=48000, channels=2)
    bad = tmp_path / "in" / "broken.wav"
    bad.write_text("x")
    result = invoke("run", chain_yaml, tmp_path / "in", "-o", tmp_path / "out", "--device", "cpu", "--seed", "5")
    assert result.exit_code == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {"created", "pipeline", "device", "output", "environment", "files"} <= set(manifest)
    assert manifest["device"] == "cpu"
    assert manifest["output"] == {"format": "wav", "bit_depth": 24, "seed": 5}
    pipeline = manifest["pipeline"]
    assert pipeline["name"] == "util_chain" and pipeline["source"] == str(chain_yaml)
    assert pipeline["device"] == "cpu" and pipeline["description"] == "Stereo at 44.1 kHz."
    assert [s["id"] for s in pipeline["stages"]] == ["to_stereo", "upsample", "level"]
    assert pipeline["stages"][1]["with"] == {"sample_rate_hz": 44100, "quality": "VHQ"}  # defaults resolved
    env = manifest["environment"]
    assert env["restorekit"] == __version__ and env["packages"]["torch"] == torch.__version__
    assert {"name": "util", "distribution": "restorekit", "version": __version__, "error": None} in env["plugins"]
    files = {Path(f["input"]).name: f for f in manifest["files"]}
    ok = files["song.wav"]
    assert ok["status"] == "ok" and ok["error"] is None
    assert ok["input_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (ok["input_sample_rate"], ok["input_channels"], ok["duration_s"]) == (48000, 2, 0.25)
    assert list(ok["timings_s"]) == ["to_stereo", "upsample", "level"]
    assert all(t >= 0 for t in ok["timings_s"].values())
    assert ok["outputs"] == [str(tmp_path / "out" / "song.wav")]
    failed = files["broken.wav"]
    assert failed["status"] == "failed" and "not a readable audio file" in failed["error"]
    assert failed["outputs"] == [] and failed["input_sha256"] == hashlib.sha256(b"x").hexdigest()


def test_seeds_differ_per_file_but_repeat_per_run(tmp_path, make_wav, fake_registry):
    yaml = tmp_path / "noise.yaml"
    yaml.write_text("stages:\n  - use: test.rng_noise\n")
    silence = np.zeros((4000, 1), np.float32)
    make_wav(tmp_path / "in" / "a.wav", data=silence, subtype="FLOAT")
    make_wav(tmp_path / "in" / "b.wav", data=silence, subtype="FLOAT")
    for run in ("r1", "r2"):
        assert invoke("run", yaml, tmp_path / "in", "-o", tmp_path / run, "--bit-depth", "32").exit_code == 0
    a1, b1, a2 = (sf.read(str(tmp_path / r / f))[0] for r, f in (("r1", "a.wav"), ("r1", "b.wav"), ("r2", "a.wav")))
    assert np.array_equal(a1, a2)
    assert abs(np.corrcoef(a1, b1)[0, 1]) < 0.1


# -- other commands ------------------------------------------------------------------------------------

def test_validate(tmp_path, gain_yaml):
    result = invoke("validate", gain_yaml)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"ok: {gain_yaml}: 1 stage(s)\nlevel: Gain only.\n  level = util.gain(input)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - use: util.gian\n")
    result = invoke("validate", bad)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:2: stage 'gian' (util.gian): use: unknown stage 'util.gian'.")
    result = invoke("validate", gain_yaml, "--set", "level.gain_db=100")
    assert result.exit_code == 2 and "(from --set level.gain_db=100)" in result.stderr


def test_stages_lists_every_stage_and_describes_one():
    from restorekit.plugins import get_registry

    result = invoke("stages")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == sorted(get_registry().stages)
    result = invoke("stages", "util.pad")
    assert result.exit_code == 0
    text = result.stdout
    assert text.startswith("util.pad: Add silence before and after the audio, or up to a total duration.\n")
    assert "plugin: util" in text and "accepts: sample rates: any; channels: any; devices: cpu\n" in text
    assert "  before_s: float = 0.0  [>= 0, <= 3600]\n      Silence added at the start, in seconds." in text
    assert "  to_duration_s: float | None = None  [> 0, <= 86400]" in text
    result = invoke("stages", "mix.sum")
    assert "  length: one of longest, shortest = 'longest'" in result.stdout
    assert "merges several inputs" in result.stdout


def test_stages_with_an_unknown_id():
    result = invoke("stages", "util.gian")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown stage 'util.gian'. Did you mean 'util.gain'")


def test_plugins_and_pipelines_and_version():
    result = invoke("plugins")
    assert result.exit_code == 0
    util = next(line for line in result.stdout.splitlines() if line.startswith("util "))
    assert f"restorekit {__version__}" in util and "restorekit_plugins.util" in util and "5 stage(s)" in util
    assert "util.resample, util.channels, util.gain, util.trim, util.pad" in result.stdout
    result = invoke("pipelines")
    assert result.exit_code == 0 and "zero_shot " in result.stdout
    assert invoke("--version").stdout == f"restorekit, version {__version__}\n"


def test_usage_errors_exit_2():
    assert invoke("run").exit_code == 2  # missing PIPELINE
    assert invoke("run", "zero_shot", "--bit-depth", "8").exit_code == 2
    assert invoke("run", "zero_shot", "--format", "mp3").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


# -- real subprocesses ---------------------------------------------------------------------------------

def _env():
    env = dict(os.environ)
    env.pop("RESTOREKIT_STRICT_PLUGINS", None)
    return env


def test_real_subprocess_run(tmp_path, make_wav, gain_yaml):
    make_wav(tmp_path / "in" / "one.wav", channels=2)
    make_wav(tmp_path / "in" / "sub" / "two.flac")
    (tmp_path / "in" / "sub" / "three.wav").write_text("broken")
    proc = subprocess.run([sys.executable, "-m", "restorekit", "-q", "run", str(gain_yaml), str(tmp_path / "in"),
                           "-o", str(tmp_path / "out"), "--set", "level.gain_db=-6.0206"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"FAILED {tmp_path / 'in' / 'sub' / 'three.wav'}: " in proc.stderr
    assert files_under(tmp_path / "out") == ["manifest.json", "one.wav", "sub/two.wav"]
    assert peak(tmp_path / "out" / "one.wav") == pytest.approx(0.25, abs=1e-4)


def test_help_and_plugins_do_not_import_torch():
    code = textwrap.dedent("""
        import sys
        from restorekit.cli import main
        for args in (["--help"], ["plugins"], ["stages"], ["pipelines"], ["stages", "util.gain"]):
            sys.argv = ["restorekit", *args]
            try:
                main()
            except SystemExit as exc:
                assert exc.code in (0, None), (args, exc.code)
            assert "torch" not in sys.modules, args
        print("NO-TORCH-OK")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("NO-TORCH-OK")
    assert "Usage: restorekit" in proc.stdout and "util.gain" in proc.stdout


def test_writer_warns_when_pcm_output_clips(tmp_path):
    """Peaks above full scale are named in the notes and on stderr, not clipped silently."""
    import soundfile as sf
    from click.testing import CliRunner

    from restorekit.cli import cli

    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    sf.write(tmp_path / "in.wav", x.astype(np.float32), 8000, subtype="FLOAT")
    pipe = tmp_path / "loud.yaml"
    pipe.write_text("stages:\n  - use: util.gain\n    with: {gain_db: 12}\n")
    result = CliRunner().invoke(cli, ["run", str(pipe), str(tmp_path / "in.wav"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert "clipped to full scale" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("clipped" in n for n in manifest["files"][0]["notes"])
