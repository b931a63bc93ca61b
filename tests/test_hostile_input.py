"""Hostile and broken input never hangs, crashes or prints a traceback: YAML bombs and recursion,
absurd nesting and sizes, non-finite parameters, broken checkpoint configs, odd file names, and
property-based tests that throw random YAML structures and random audio at `validate` and `run`.

Anything that could hang or eat memory if it regressed runs in a subprocess with a timeout and a
memory limit, so a regression fails instead of taking the machine down.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restorekit.cli import cli
from restorekit.errors import PipelineError
from restorekit.pipeline import MAX_STAGES, pipeline_from_text
from restorekit.yaml_lines import MAX_DEPTH, MAX_VALUES

GUARD_S = 60  # a hang guard, not a speed target: these finish in well under a second
MEMORY_LIMIT = 3 << 30


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_guarded(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m restorekit ARGS` with a time limit and an address-space limit."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "restorekit", *args], cwd=cwd, capture_output=True,
                          timeout=GUARD_S, preexec_fn=limit, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nstages: *a{levels}\n"


# -- YAML ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [7, 8, 9])
def test_alias_bombs_are_refused_at_once_with_their_line(tmp_path, levels):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(levels))  # 334 bytes that would expand to 9**(levels+1) strings
    result = run_guarded("validate", str(bomb), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    # line 6: a5, the first anchor whose expansion (9**6 strings) passes the limit
    assert result.stderr.decode() == (f"error: {bomb}:6: invalid YAML: the aliases here expand to more "
                                      f"than {MAX_VALUES} values; a pipeline is far smaller (an alias bomb?)\n")


def test_a_small_alias_use_still_works():
    text = textwrap.dedent("""\
        description: Twice six dB down.
        stages:
          - id: a
            use: util.gain
            with: &quiet {gain_db: -6}
          - id: b
            use: util.gain
            with: *quiet
        """)
    pipeline = pipeline_from_text(text, "x.yaml")
    assert [n.stage.params.gain_db for n in pipeline.nodes] == [-6, -6]
    with pytest.raises(PipelineError) as info:
        pipeline_from_text(text.replace("-6", "100"), "x.yaml")
    assert [str(p).split(": with")[0] for p in info.value.problems] == [
        "x.yaml:5: stage 'a' (util.gain)", "x.yaml:8: stage 'b' (util.gain)"]  # the alias: its own line


@pytest.mark.parametrize("text, line, message", [
    ("description: &a [1, *a]\nstages: []\n", 1, "a recursive alias (an anchor used inside itself)"),
    ("stages:\n  - use: util.gain\n    with: &w {x: *w}\n", 3, "a recursive alias (an anchor used inside itself)"),
    ("description: " + "[" * 5000 + "]" * 5000 + "\n", 1, f"nesting is too deep (a pipeline nests at most "
                                                          f"{MAX_DEPTH} levels)"),
    ("description: " + "{a: " * 200 + "1" + "}" * 200 + "\n", 1, "nesting is too deep"),
])
def test_recursion_and_deep_nesting_are_file_line_errors(tmp_path, text, line, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = run_guarded("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith(f"error: {path}:{line}: invalid YAML: {message}") and "Traceback" not in err


def test_oversized_files_and_too_many_stages_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("description: '" + "x" * 1_100_000 + "'\nstages: []\n")
    result = invoke("validate", big)
    assert result.exit_code == 2 and "a pipeline may have at most 1000000" in result.stderr
    many = "stages:\n" + "  - use: util.gain\n" * (MAX_STAGES + 1)
    with pytest.raises(PipelineError, match=f"{MAX_STAGES + 1} stages; a pipeline may have at most {MAX_STAGES}"):
        pipeline_from_text(many, "many.yaml")


def test_a_pipeline_of_ten_thousand_stages_validates(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("stages:\n" + "  - use: util.gain\n" * MAX_STAGES)
    result = run_guarded("validate", str(path), cwd=tmp_path)  # was quadratic: minutes
    assert result.returncode == 0 and f"{MAX_STAGES} stage(s)" in result.stdout.decode()


# -- parameters and checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("use, key", [("util.trim", "start_s"), ("util.gain", "gain_db"),
                                      ("dynamics.compress", "threshold_db"), ("bwe.harmonic", "gain_db")])
def test_non_finite_parameters_are_refused_at_validation(use, key, value):
    with pytest.raises(PipelineError, match=rf"x.yaml:3: stage '\w+' \({use}\): with.{key}: Input should be a "
                                            r"finite number"):
        pipeline_from_text(f"stages:\n  - use: {use}\n    with: {{{key}: {value}}}\n", "x.yaml")


def test_non_finite_overrides_are_refused_too(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - use: util.trim\n")
    result = invoke("validate", path, "--set", "trim.start_s=.inf")
    assert result.exit_code == 2 and "finite number" in result.stderr and "--set trim.start_s=inf" in result.stderr


def tiny_unet_checkpoint(path: Path, hparams: dict, weights_from: dict | None = None) -> Path:
    """A unet checkpoint whose config says `hparams` and whose weights are a tiny net's (or `weights_from`'s)."""
    import torch

    from restorekit import checkpoints
    from restorekit.plugins import get_registry

    spec = get_registry().models["unet"]()
    torch.manual_seed(0)
    model = spec.build(spec.Hparams(**{**spec.tiny, **(weights_from or {})}))
    return checkpoints.save(path, model.state_dict(), {"architecture": spec.architecture, "hparams": hparams})


@pytest.mark.parametrize("hparams, weights_from, message", [
    ({"channels": "lots", "depth": 2}, None, "hparams.channels: Input should be a valid integer"),
    ({"channels": 2, "depth": 2, "colour": "blue"}, None, "hparams.colour: Extra inputs are not permitted"),
    ({"channels": 2, "depth": 2, "stride": float("inf")}, None, "hparams.stride: Input should be a finite number"),
    ({"channels": 4, "depth": 2, "upsample": "nearest"}, None, "the weights do not fit the network its config (bad.json) describes: "
                                        "size mismatch for"),
    ({"channels": 2, "depth": 3, "upsample": "nearest"}, {"depth": 2}, "the weights do not fit the network its config (bad.json) "
                                                "describes: Missing key(s)"),
])
def test_a_broken_checkpoint_config_is_one_line_naming_the_file_and_field(tmp_path, hparams, weights_from, message):
    weights = tiny_unet_checkpoint(tmp_path / "bad", hparams, weights_from)
    clip = tmp_path / "in.wav"
    sf.write(clip, np.zeros((8000, 1), np.float32) + 0.1, 32000)
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"stages:\n  - use: restore.unet\n    with: {{checkpoint: '{weights}', only_band_limited: false}}\n")
    result = invoke("run", pipe, clip, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: stage 'unet' (restore.unet, plugin 'unet'): cannot load: ")
    assert message in lines[0] and str(tmp_path / "bad") in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- file names ------------------------------------------------------------------------------------

NAMES = [b"caf\xe9.wav", "café ünï.wav".encode(), b"with space.wav", b"new\nline.wav", b"-dash.wav",
         b"UPPER.WAV", b"semi;colon 'quote\".flac"]


def test_any_name_the_file_system_accepts_works(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rate = 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    for name in NAMES:
        sf.write(tmp_path / "tmp.flac" if name.endswith(b".flac") else tmp_path / "tmp.wav", x, rate)
        os.rename(tmp_path / ("tmp.flac" if name.endswith(b".flac") else "tmp.wav"), os.fsencode(src) + b"/" + name)
    pipe = tmp_path / "gain.yaml"
    pipe.write_text("stages:\n  - use: util.gain\n    with: {gain_db: -6}\n")
    result = run_guarded("run", str(pipe), str(src), "-o", str(tmp_path / "out"), "--bit-depth", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"restored {len(NAMES)} of {len(NAMES)} file(s)".encode() in result.stdout
    written = sorted(os.listdir(os.fsencode(tmp_path / "out")))
    expected = sorted([n.rsplit(b".", 1)[0] + b".wav" for n in NAMES] + [b"manifest.json"])
    assert written == expected
    y, _ = sf.read(os.fsencode(tmp_path / "out") + b"/caf\xe9.wav", dtype="float32")
    assert np.allclose(y, x * 10 ** (-6 / 20), atol=1e-4)  # the input was written as 16-bit PCM
    one = run_guarded("run", str(pipe), os.fsdecode(os.fsencode(src) + b"/caf\xe9.wav"), "-o",
                      str(tmp_path / "one"), cwd=tmp_path)
    assert one.returncode == 0 and b"FAILED" not in one.stderr and b"caf\xe9.wav: 1.0 s of audio" in one.stderr


# -- property-based: random YAML structures and random audio ----------------------------------------

KEYS = st.sampled_from(["name", "description", "device", "sample_rate", "channels", "bit_depth", "seed", "stages",
                        "id", "use", "with", "input", "gain_db", "to", "start_s", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["util.gain", "util.trim", "mix.sum", "cpu", "cuda:7",
                                                           "input", "a", "a.b", "-inf", "1e400"]))
STRUCTURES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)
STAGE = st.fixed_dictionaries({"use": st.sampled_from(["util.gain", "util.trim", "util.channels", "mix.sum",
                                                       "util.gain.x", "nope"])},
                              optional={"id": st.sampled_from(["a", "b", "c", "input"]),
                                        "with": STRUCTURES, "input": STRUCTURES})


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(STRUCTURES, st.fixed_dictionaries({"stages": st.lists(STAGE, min_size=1, max_size=4)},
                                                   optional={"seed": STRUCTURES, "device": STRUCTURES})))
def test_random_yaml_structures_validate_or_fail_cleanly(data):
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        pipeline_from_text(text, "random.yaml")
    except PipelineError as exc:
        assert str(exc).startswith("random.yaml"), str(exc)


@settings(max_examples=60, deadline=None, database=None)
@given(st.one_of(st.text(max_size=300), st.sampled_from(["\x1f", "a: \x00", "stages:\n  - use: util.gain\n\x07"])))
def test_random_text_validates_or_fails_cleanly(text):
    try:
        pipeline_from_text(text, "random.yaml")
    except PipelineError as exc:
        assert str(exc).startswith("random.yaml")


AUDIO_VALUES = st.sampled_from([0.0, 1e-38, -1e-42, 0.5, -1.0, 1.0, 3.0, 1e30, -1e30, np.nan, np.inf, -np.inf])


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channels=st.sampled_from([1, 2, 3, 8, 33]), rate=st.sampled_from([1000, 8000, 22050, 44100, 192000]),
       frames=st.sampled_from([0, 1, 15, 16, 17, 1000, 48000]), fill=AUDIO_VALUES, spikes=st.lists(
           st.tuples(st.integers(0, 47999), AUDIO_VALUES), max_size=4), subtype=st.sampled_from(["FLOAT", "PCM_16"]))
def test_random_audio_is_restored_or_refused_cleanly(tmp_path_factory, channels, rate, frames, fill, spikes, subtype):
    from restorekit.batch import run_batch

    tmp = tmp_path_factory.mktemp("audio")
    x = np.full((frames, channels), fill, np.float32)
    for at, value in spikes:
        if frames:
            x[at % frames, at % channels] = value
    path = tmp / "clip.wav"
    try:
        sf.write(path, x, rate, subtype=subtype)
    except (sf.LibsndfileError, ValueError, RuntimeError):  # libsndfile itself refuses (e.g. 0 frames of 33 ch)
        path.write_bytes(b"RIFF")
    pipe = tmp / "chain.yaml"
    pipe.write_text("stages:\n  - use: util.gain\n    with: {gain_db: -6}\n  - use: util.resample\n"
                    "    with: {sample_rate_hz: 44100}\n  - use: dynamics.limit\n")
    report = run_batch(pipe, [path], tmp / "out", progress=False)
    [result] = report.files
    if result.status == "ok":
        y, out_rate = sf.read(result.outputs[0], dtype="float32", always_2d=True)
        assert out_rate == 44100 and np.isfinite(y).all() and np.abs(y).max() <= 1.0
    else:
        assert result.error and "internal error" not in result.error and "Traceback" not in result.error, result.error
    assert sorted(p.name for p in (tmp / "out").iterdir()) == sorted(
        ["manifest.json", *(["clip.wav"] if result.status == "ok" else [])])


# -- usage errors come before the heavy imports ------------------------------------------------------

TORCH_FREE = """
import sys
from click.testing import CliRunner
from restorekit.cli import cli
results = [CliRunner().invoke(cli, args) for args in (
    ["validate", "zero_shot"], ["validate", "unet"], ["run", "zero_shot", "nosuch.wav", "-o", "{out}"],
    ["run", "dsp_chain", "{clip}", "--device", "cuda", "-o", "{out}"])]
print([r.exit_code for r in results], "torch" in sys.modules)
print(results[2].stderr.strip())
print(results[3].stderr.strip())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or bool(__import__("glob").glob("/dev/nvidia[0-9]*")),
                    reason="the GPU-less fast path applies to Linux machines without a GPU driver")
def test_validation_missing_inputs_and_a_missing_gpu_fail_before_torch_loads(tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros((1600, 1), np.float32), 16000)
    code = TORCH_FREE.replace("{out}", str(tmp_path / "out")).replace("{clip}", str(clip))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD_S)
    codes, _, rest = result.stdout.partition("\n")
    assert codes == "[0, 0, 2, 2] False", result.stdout + result.stderr
    assert rest.splitlines() == ["error: nothing to restore: nosuch.wav: no such file or directory",
                                 "error: device 'cuda' was requested but this machine has no GPU driver (no "
                                 "/dev/nvidia* or /dev/kfd); use --device cpu or --device auto"]
    assert not (tmp_path / "out").exists()
