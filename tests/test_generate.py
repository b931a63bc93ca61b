"""generate.musicgen: parameters checked before any audio, the tiny random-weight MusicGen (duration,
rate, determinism, prompt and melody conditioning), the weight cache and offline behaviour without
touching the network, and the message when transformers is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError
from restorekit.cache import clear as clear_model_cache
from restorekit.errors import StageError
from restorekit.pipeline import pipeline_from_text
from restorekit.plugins import get_registry
from restorekit_plugins import _network
from restorekit_plugins.generate import HUB_MODELS, MusicGen, model_spec

pytest.importorskip("transformers")

from restorekit_plugins import _musicgen

TINY = {"model": "tiny", "prompt": "lo-fi piano", "duration_s": 0.5}
NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("the network was touched")
socket.create_connection = socket.getaddrinfo = refuse
sys.argv = ["restorekit", *sys.argv[1:]]
from restorekit.cli import main
main()
"""


def generate(seed: int = 0, **params):
    stage = MusicGen({**TINY, **params})
    stage.place("cpu")
    out, notes = stage.run(None, seed=seed)
    return out, notes


def sine(path, freq_hz: float, seconds: float = 2.0, rate: int = 44100):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32), rate)
    return path


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty Hugging Face cache in tmp_path, and any socket use fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    _musicgen.reset_network_state()
    yield tmp_path / "hf" / "hub"
    _musicgen.reset_network_state()


# -- parameters --------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("duration_s", 0.0), ("duration_s", 30.5), ("guidance_scale", 0.5), ("top_k", -1), ("top_k", 5000),
    ("top_p", 1.5), ("temperature", 0.0), ("seed", -1), ("prompt", ""), ("precision", "float8"),
])
def test_out_of_range_parameters_are_refused(key, value):
    with pytest.raises(ValidationError, match=key):
        MusicGen({**TINY, key: value})


def test_unknown_model_is_refused_with_the_closest_name_and_the_choices():
    with pytest.raises(ValidationError) as info:
        MusicGen(model="facebook/musicgen-smal")
    message = str(info.value)
    assert "Did you mean 'facebook/musicgen-small'?" in message
    assert all(name in message for name in HUB_MODELS)


def test_melody_path_only_with_a_melody_model_and_only_an_existing_file(tmp_path):
    melody = sine(tmp_path / "melody.wav", 440.0)
    with pytest.raises(ValidationError, match="melody_path needs a melody model, and 'tiny' is not one"):
        MusicGen({**TINY, "melody_path": str(melody)})
    with pytest.raises(ValidationError, match="melody_path needs a melody model.*facebook/musicgen-melody"):
        MusicGen(model="facebook/musicgen-stereo-small", melody_path=str(melody))
    with pytest.raises(ValidationError, match="does not exist"):
        MusicGen({**TINY, "model": "tiny-melody", "melody_path": str(tmp_path / "missing.wav")})
    MusicGen({**TINY, "model": "tiny-melody", "melody_path": str(melody)})
    MusicGen(model="facebook/musicgen-stereo-melody-large", melody_path=str(melody))


def test_a_local_model_directory_is_read_for_its_kind_and_channels(tmp_path):
    with pytest.raises(ValidationError, match="config.json cannot be read"):
        MusicGen(model=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValidationError, match="is not a MusicGen model"):
        MusicGen(model=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "musicgen_melody",
                                                      "decoder": {"audio_channels": 2}}))
    spec = model_spec(str(tmp_path))
    assert (spec.kind, spec.channels, spec.melody) == ("local", 2, True)
    assert MusicGen(model=str(tmp_path)).output_spec(44100, 1) == (32000, 2)


def test_a_pipeline_file_reports_every_bad_parameter_with_its_line(tmp_path):
    text = textwrap.dedent("""\
        name: gen
        stages:
          - id: gen
            use: generate.musicgen
            with: {model: tiny, duration_s: 45, melody_path: melody.wav}
        """)
    with pytest.raises(Exception) as info:
        pipeline_from_text(text, "gen.yaml")
    message = str(info.value)
    assert "gen.yaml:5: stage 'gen' (generate.musicgen): with.duration_s" in message
    assert "with.melody_path" in message


# -- the tiny model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model, duration_s, channels", [("tiny", 0.5, 1), ("tiny", 1.23, 1), ("tiny-stereo", 0.7, 2)])
def test_tiny_model_generates_the_requested_duration_at_32_khz(model, duration_s, channels):
    out, notes = generate(model=model, duration_s=duration_s)
    x = out.numpy()
    assert out.sample_rate == 32000 and out.channels == channels
    assert out.frames == round(duration_s * 32000)
    assert np.isfinite(x).all() and x.dtype == np.float32
    rms_db = 20 * np.log10(np.sqrt(np.mean(x ** 2)))
    assert -40 < rms_db < -6, rms_db  # not silent, not clipping
    assert np.abs(x).max() < 1.0
    assert np.abs(x.mean()) < 0.05 * np.abs(x).max()  # audio, not a constant
    if channels == 2:
        assert not np.allclose(x[0], x[1], atol=1e-3)
    assert len(notes) == 1 and notes[0].startswith(f"generated by MusicGen {model} on cpu (float32): prompt "
                                                   f"'lo-fi piano', {duration_s:g} s at 32000 Hz")


def test_same_seed_same_clip_another_seed_another_clip():
    a, notes = generate(seed=11)
    b, _ = generate(seed=11)
    c, _ = generate(seed=12)
    assert np.array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 0.05
    assert "seed 11" in notes[0]


def test_the_seed_parameter_overrides_the_run_seed():
    stage = MusicGen({**TINY, "seed": 7})
    stage.place("cpu")
    first, notes = stage.run(None, seed=1)
    second, _ = stage.run(None, seed=2)
    assert np.array_equal(first.numpy(), second.numpy()) and "seed 7" in notes[0]


def test_different_prompts_give_different_audio():
    a, _ = generate(seed=3, prompt="lo-fi piano")
    b, _ = generate(seed=3, prompt="heavy metal guitars")
    assert np.abs(a.numpy() - b.numpy()).max() > 0.05


def test_guidance_and_temperature_change_the_sampling():
    base, _ = generate(seed=3)
    for change in ({"guidance_scale": 1.0}, {"temperature": 0.3}, {"top_k": 5}, {"top_p": 0.5}):
        other, _ = generate(seed=3, **change)
        assert not np.array_equal(base.numpy(), other.numpy()), change


def test_a_melody_conditions_the_melody_model_and_its_chroma_is_the_right_pitch_class(tmp_path):
    a4 = sine(tmp_path / "a4.wav", 440.0)
    c4 = sine(tmp_path / "c4.wav", 261.63, rate=32000)
    chroma = _musicgen.melody_chroma(str(a4), _musicgen.MELODY_DEFAULTS)
    assert chroma.shape[0] == 1 and chroma.shape[2] == 12 and chroma.shape[1] >= 10
    assert (chroma[0].argmax(-1) == 9).all()  # A (pitch classes from C)
    assert (_musicgen.melody_chroma(str(c4), _musicgen.MELODY_DEFAULTS)[0].argmax(-1) == 0).all()  # C
    plain, _ = generate(seed=4, model="tiny-melody")
    with_a, notes = generate(seed=4, model="tiny-melody", melody_path=str(a4))
    with_c, _ = generate(seed=4, model="tiny-melody", melody_path=str(c4))
    assert f"melody from {a4}" in notes[0]
    assert not np.array_equal(plain.numpy(), with_a.numpy())
    assert not np.array_equal(with_a.numpy(), with_c.numpy())


def test_the_model_loads_once_per_process_and_device():
    clear_model_cache()
    first, second = MusicGen(TINY), MusicGen({**TINY, "prompt": "other"})
    first.place("cpu")
    second.place("cpu")
    assert first._bundle is second._bundle
    clear_model_cache()


def test_half_precision_needs_cuda():
    with pytest.raises(StageError, match="precision float16 needs a CUDA device"):
        MusicGen({**TINY, "precision": "float16"}).place("cpu")


def test_a_source_pipeline_runs_without_input_and_refuses_audio():
    from restorekit.runner import Node, Pipeline
    from restorekit_tools.testing import synth_audio

    pipeline = Pipeline([Node("gen", MusicGen({**TINY, "duration_s": 0.5})),
                         Node("half", get_registry().stages["util.gain"](gain_db=-6.0))], device="cpu")
    result = pipeline.run(None, seed=5)
    assert result.audio.sample_rate == 32000 and result.audio.frames == 16000
    assert any(n.startswith("gen: generated by MusicGen tiny") for n in result.notes), result.notes
    with pytest.raises(StageError, match="starts from the source stage 'gen' .* takes no input audio"):
        pipeline.run(synth_audio(1, 32000), seed=5)
    stage = MusicGen(TINY)
    stage.place("cpu")
    with pytest.raises(ValueError, match="source stage: it takes no input audio"):
        stage.run(synth_audio(1, 32000), seed=5)


@pytest.mark.parametrize("stages, message", [
    ("  - {id: g, use: util.gain}\n  - {id: gen, use: generate.musicgen, with: {model: tiny}}",
     "must be the first stage"),
    ("  - {id: gen, use: generate.musicgen, input: input, with: {model: tiny}}", "takes no input; remove"),
    ("  - {id: gen, use: generate.musicgen, with: {model: tiny}}\n  - {id: g, use: util.gain, input: input}",
     "has no input audio; take a stage's output instead"),
])
def test_a_source_stage_comes_first_and_takes_nothing(tmp_path, stages, message):
    from restorekit.errors import PipelineError
    from restorekit.pipeline import load_pipeline

    path = tmp_path / "gen.yaml"
    path.write_text("stages:\n" + stages + "\n")
    with pytest.raises(PipelineError, match=message):
        load_pipeline(path)


# -- weights, cache and network ----------------------------------------------------------------------

def test_offline_and_not_cached_is_one_line_naming_model_and_cache_without_network(no_network):
    stage = MusicGen(model="facebook/musicgen-small")
    with pytest.raises(_network.WeightsUnavailable) as info:
        stage.place("cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "MusicGen model 'facebook/musicgen-small'" in message
    assert "offline: RESTOREKIT_OFFLINE is set" in message
    assert str(no_network / "models--facebook--musicgen-small") in message
    assert "restorekit fetch-musicgen facebook/musicgen-small" in message
    assert info.value.short == "offline: RESTOREKIT_OFFLINE set"


def test_hf_hub_offline_forbids_downloads_too(no_network, monkeypatch):
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StageError, match="offline: HF_HUB_OFFLINE is set"):
        MusicGen(model="facebook/musicgen-stereo-small").place("cpu")


def test_an_unreachable_hub_is_probed_once_and_the_download_is_never_tried(no_network, monkeypatch):
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    probes, fetches = [], []
    monkeypatch.setattr(_network, "probe", lambda url, timeout=3.0: probes.append(url) or "no answer from "
                        "huggingface.co within 3 s")
    monkeypatch.setattr(_musicgen, "fetch", lambda *a: fetches.append(a))
    for _ in range(2):
        with pytest.raises(StageError, match="offline: no answer from huggingface.co within 3 s"):
            MusicGen(model="facebook/musicgen-small").place("cpu")
    assert probes == ["https://huggingface.co/api/models/facebook/musicgen-small"] * 2 and fetches == []


def test_download_false_fails_at_once(no_network, monkeypatch):
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    monkeypatch.setattr(_network, "probe", lambda *a, **k: pytest.fail("probed although download is false"))
    with pytest.raises(StageError, match="not cached, and `download` is false"):
        MusicGen(model="facebook/musicgen-small", download=False).place("cpu")


def fake_snapshot(cache, repo, files):
    folder = cache / ("models--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123456789abcdef")
    for name in files:
        (snap / name).write_text("{}")
    return snap


def test_an_incomplete_cached_snapshot_says_what_it_lacks(no_network):
    fake_snapshot(no_network, "facebook/musicgen-small", ["config.json", "tokenizer.json"])
    with pytest.raises(StageError, match="the cached snapshot 0123456789ab lacks model.safetensors"):
        _musicgen.ensure_weights(model_spec("facebook/musicgen-small"), download=True)


def test_a_complete_cached_snapshot_is_used_offline(no_network, tmp_path):
    snap = fake_snapshot(no_network, "facebook/musicgen-small", ["config.json", "spiece.model", "model.safetensors"])
    assert _musicgen.ensure_weights(model_spec("facebook/musicgen-small"), download=True) == snap
    sharded = fake_snapshot(no_network, "facebook/musicgen-large", ["config.json", "tokenizer.json"])
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (sharded / "model-00001-of-00002.safetensors").write_text("")
    with pytest.raises(StageError, match="lacks model-00002-of-00002.safetensors"):
        _musicgen.ensure_weights(model_spec("facebook/musicgen-large"), download=True)


def test_a_download_goes_to_the_hub_cache_once_and_a_failure_is_not_retried(no_network, monkeypatch):
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    monkeypatch.setattr(_network, "probe", lambda *a, **k: None)
    calls = []

    def fetch(repo, cache, progress):
        calls.append((repo, cache, progress))
        if repo.endswith("medium"):
            raise OSError("connection reset")
        return fake_snapshot(cache, repo, ["config.json", "tokenizer.json", "model.safetensors"])

    monkeypatch.setattr(_musicgen, "fetch", fetch)
    folder = _musicgen.ensure_weights(model_spec("facebook/musicgen-small"), download=True)
    assert calls == [("facebook/musicgen-small", no_network, False)] and folder.is_dir()
    assert _musicgen.ensure_weights(model_spec("facebook/musicgen-small"), download=True) == folder  # cached now
    for _ in range(2):
        with pytest.raises(StageError, match="download failed: OSError: connection reset"):
            _musicgen.ensure_weights(model_spec("facebook/musicgen-medium"), download=True)
    assert len(calls) == 2


def test_only_the_files_transformers_loads_are_fetched():
    files = ["config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin", "state_dict.bin",
             "compression_state_dict.bin", "spiece.model", "tokenizer.json", "tokenizer_config.json", "README.md",
             "special_tokens_map.json", "preprocessor_config.json", ".gitattributes"]
    assert sorted(_musicgen.wanted_files(files)) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "spiece.model", "tokenizer.json",
         "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"])
    assert "pytorch_model.bin" in _musicgen.wanted_files(["config.json", "pytorch_model.bin", "state_dict.bin"])


@pytest.mark.slow
def test_the_cli_fails_in_one_line_with_exit_2_offline_without_touching_the_network(tmp_path):
    (tmp_path / "gen.yaml").write_text("name: gen\nstages:\n  - id: gen\n    use: generate.musicgen\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(RESTOREKIT_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    run = subprocess.run([sys.executable, "-c", NO_NETWORK, "run", str(tmp_path / "gen.yaml"), "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "generate.musicgen" in lines[0] and "'facebook/musicgen-small'" in lines[0]
    assert str(tmp_path / "hf" / "hub" / "models--facebook--musicgen-small") in lines[0]
    fetch = subprocess.run([sys.executable, "-c", NO_NETWORK, "fetch-musicgen", "facebook/musicgen-small"],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert fetch.returncode == 1 and "RESTOREKIT_OFFLINE is set" in fetch.stderr, fetch.stderr


# -- without transformers ----------------------------------------------------------------------------

def test_without_transformers_unavailable_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "transformers" else real(name, *a, **k))
    reason = MusicGen.unavailable()
    assert reason == "the transformers package is not installed (pip install 'restorekit[generate]' " \
                     "(transformers>=4.40,<6))"
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    with pytest.raises(StageError, match=r"needs the transformers package .*pip install 'restorekit\[generate\]'"):
        MusicGen(TINY).place("cpu")


def test_transformers_present_means_available():
    assert MusicGen.unavailable() is None


def test_help_plugins_stages_and_validate_import_neither_torch_nor_transformers(tmp_path):
    (tmp_path / "gen.yaml").write_text("name: gen\nstages:\n  - id: gen\n    use: generate.musicgen\n"
                                       "    with: {model: tiny, duration_s: 2}\n")
    code = textwrap.dedent(f"""
        import sys
        from restorekit.cli import main
        for args in (["--help"], ["plugins"], ["stages"], ["stages", "generate.musicgen"],
                     ["validate", {str(tmp_path / "gen.yaml")!r}], ["fetch-musicgen", "--help"]):
            sys.argv = ["restorekit", *args]
            try:
                main()
            except SystemExit as exc:
                assert exc.code in (0, None), (args, exc.code)
            heavy = [m for m in ("torch", "transformers", "huggingface_hub", "tokenizers") if m in sys.modules]
            assert not heavy, (args, heavy)
        print("LIGHT-OK")
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("LIGHT-OK")
