"""Stem separation: separate.demucs (offline, tiny models), separate.hpss, separate.auto.

No test touches the network: `offline` sets RESTOREKIT_OFFLINE, points the torch hub and
home caches at empty temporary directories and makes any socket connection fail the test.
The contract (rates, mono/stereo, 16 frames, seeds) is in test_contract.py for every stage.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import restorekit_plugins.separate as separate_plugin
import soundfile as sf
import torch
from restorekit.audio import Audio
from restorekit.cache import clear as clear_model_cache
from restorekit.errors import StageError
from restorekit.pipeline import pipeline_from_text
from restorekit.runner import Node, Pipeline
from restorekit_plugins.separate import STEMS4, Auto, Demucs, Hpss, _demucs, _hpss

pytest.importorskip("demucs")
ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "demucs_unittest", "segment_s": 0.5, "shifts": 0}


# -- signals --------------------------------------------------------------------------------------

def corr_fraction(stem: np.ndarray, source: np.ndarray) -> float:
    """How much of `source` is in `stem`: <stem, source> / <source, source>."""
    return float((stem * source).sum() / (source * source).sum())


def music(rate: int, seconds: float = 3.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Known sources: 55 Hz bass, a centred vibrato voice, percussive clicks, a pad hard left."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(330 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / rate
    clicks = np.zeros(n)
    for start in np.arange(0.1, seconds - 0.05, 0.25):
        i = int(start * rate)
        clicks[i:i + 400] += 0.8 * rng.standard_normal(400) * np.exp(-np.arange(400) / 60)
    return {
        "bass": 0.3 * np.sin(2 * np.pi * 55 * t),
        "voice": sum((0.2 / k) * np.sin(k * phase) for k in range(1, 8)),
        "clicks": clicks,
        "pad": 0.15 * np.sin(2 * np.pi * 1000 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t),
    }


def stereo_mix(src: dict[str, np.ndarray]) -> np.ndarray:
    centre = src["bass"] + src["voice"] + src["clicks"]
    return np.stack([centre + src["pad"], centre]).astype(np.float32)


def run_stage(stage, x: np.ndarray, rate: int, seed: int = 0):
    return Pipeline([stage], device="cpu").run(Audio(torch.from_numpy(x), rate), seed=seed).outputs


def level_db(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return 10 * np.log10(np.mean(x ** 2) + 1e-30)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny models are 5-10x faster on one thread than on two contended ones (shared CI cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, empty caches: the state of a fresh offline machine."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(separate_plugin, "_warned", set())  # a fresh process: nothing warned yet
    _demucs.reset_network_state()
    clear_model_cache()
    yield tmp_path
    clear_model_cache()
    _demucs.reset_network_state()


class FakeNet:
    """Stands in for the network: `probe` answers `reachable`, `fetch` records its calls and then
    writes the file or raises `fail`."""

    def __init__(self, reachable: bool = True, fail: Exception | None = None):
        self.reachable, self.fail = reachable, fail
        self.probes: list[str] = []
        self.fetches: list[tuple[str, Path, str | None, bool]] = []

    def probe(self, url=_demucs.ROOT_URL, timeout=_demucs.PROBE_TIMEOUT_S):
        self.probes.append(url)
        return None if self.reachable else "cannot reach dl.fbaipublicfiles.com (test)"

    def fetch(self, url, dst, checksum, progress):
        self.fetches.append((url, Path(dst), checksum, progress))
        if self.fail is not None:
            raise self.fail
        Path(dst).write_bytes(b"weights")


@pytest.fixture
def online(offline, monkeypatch):
    """Empty caches, downloads allowed, and a fake network (no socket is ever opened)."""
    monkeypatch.delenv("RESTOREKIT_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def install(net: FakeNet) -> FakeNet:
        monkeypatch.setattr(_demucs, "probe", net.probe)
        monkeypatch.setattr(_demucs, "fetch", net.fetch)
        return net

    return install


# -- separate.hpss ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [32000, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_hpss_stems_sum_to_the_input_exactly(rate, channels):
    x = stereo_mix(music(rate, 1.5))[:channels]
    out = run_stage(Hpss(), x, rate)
    assert tuple(out) == STEMS4
    for stem in out.values():
        assert stem.sample_rate == rate and stem.samples.shape == x.shape
    total = sum(out[name].numpy().astype(np.float64) for name in STEMS4)
    assert level_db(total - x) - level_db(x) < -120  # float32 rounding only


def test_hpss_sends_each_kind_of_source_to_its_stem():
    rate = 44100
    src = music(rate)
    out = run_stage(Hpss(), stereo_mix(src), rate)
    mid = {name: out[name].numpy().mean(axis=0) for name in STEMS4}
    assert corr_fraction(mid["bass"], src["bass"]) > 0.95
    assert corr_fraction(mid["drums"], src["clicks"]) > 0.9
    assert corr_fraction(mid["vocals"], src["voice"]) > 0.85
    assert corr_fraction(out["other"].numpy()[0], src["pad"]) > 0.8  # off-centre pad: not vocals
    assert corr_fraction(out["vocals"].numpy()[0], src["pad"]) < 0.25
    assert corr_fraction(mid["vocals"], src["bass"]) < 0.02


def test_hpss_mono_finds_the_melody_that_does_not_repeat():
    rate, seconds = 32000, 6.0
    n = int(seconds * rate)
    t = np.arange(n) / rate

    def notes(freqs, note_s):
        out = np.zeros(n)
        step = int(note_s * rate)
        for j, f in enumerate(freqs[: -(-n // step)]):
            seg = slice(j * step, min(n, (j + 1) * step))
            tt = t[seg] - t[seg][0]
            env = np.minimum(1.0, np.minimum(tt * 50, (tt[-1] - tt) * 50))
            out[seg] = env * sum((0.15 / k) * np.sin(2 * np.pi * k * f * tt) for k in range(1, 6))
        return out

    loop = notes([262, 330, 392, 330] * 8, 0.25)  # repeats every second
    melody = notes(list(np.random.default_rng(1).uniform(500, 900, 40)), 0.3)  # never repeats
    stage = Hpss()
    out = run_stage(stage, (loop + melody)[None].astype(np.float32), rate)
    assert stage.last_method == "repeat"
    assert corr_fraction(out["vocals"].numpy()[0], melody) > 0.45
    assert corr_fraction(out["other"].numpy()[0], loop) > 0.85
    assert corr_fraction(out["vocals"].numpy()[0], loop) < 0.05


def test_hpss_blocks_give_the_same_stems_as_one_pass(monkeypatch):
    rate = 32000
    x = stereo_mix(music(rate, 3.5))
    whole, method = _hpss.separate(x, rate, _hpss.HpssSettings())
    assert method == "centre"
    monkeypatch.setattr(_hpss, "BLOCK_S", 1.0)  # 3.5 s in four blocks: three seams
    blocks, _ = _hpss.separate(x, rate, _hpss.HpssSettings())
    for i in range(4):
        assert level_db(blocks[i] - whole[i]) - level_db(whole[i]) < -100, STEMS4[i]


def test_hpss_masks_are_librosas():
    """The harmonic/percussive soft masks are librosa.decompose.hpss(mask=True) with the stage's kernels."""
    import librosa  # the `test` extra: this comparison must run, not skip

    rate = 44100
    x = stereo_mix(music(rate, 3.0))
    settings = _hpss.HpssSettings()
    n_fft = _hpss.fft_size(rate)
    hop = n_fft // 4
    mag = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop))  # (channels, frequency, frames)
    h_frames = _hpss._odd(settings.harmonic_kernel_ms / 1000 * rate / hop)  # as _block_stems sizes them
    p_bins = _hpss._odd(settings.percussive_kernel_hz / (rate / n_fft))
    ours = _hpss.harmonic_mask(mag, h_frames, p_bins, settings.mask_power)
    harm, perc = librosa.decompose.hpss(mag, kernel_size=(h_frames, p_bins), power=settings.mask_power, mask=True)
    assert ours.min() < 0.01 and ours.max() > 0.99  # both kinds of content are there
    assert np.abs(ours - harm).max() < 1e-6
    assert np.abs((1 - ours) - perc).max() < 1e-6


def test_hpss_two_stems_and_its_summary_is_honest():
    rate = 32000
    x = stereo_mix(music(rate, 1.0))
    out = run_stage(Hpss(two_stems="vocals"), x, rate)
    assert tuple(out) == ("vocals", "no_vocals")
    assert np.abs(out["vocals"].numpy() + out["no_vocals"].numpy() - x).max() < 1e-6
    assert "rough" in Hpss.summary and "Demucs" in Hpss.summary


def test_hpss_parameters_are_checked():
    with pytest.raises(ValueError, match="vocal_low_hz"):
        Hpss(vocal_low_hz=5000, vocal_high_hz=3000)


# -- separate.demucs with the tiny unittest model -----------------------------------------------

@pytest.mark.parametrize("rate,channels", [(32000, 1), (32000, 2), (44100, 1), (44100, 2)])
def test_demucs_stems_are_named_shaped_and_sum_back(rate, channels):
    x = stereo_mix(music(rate, 0.5))[:channels]
    stage = Demucs(TINY)
    out = run_stage(stage, x, rate)
    assert tuple(out) == ("drums", "bass", "other", "vocals") == tuple(stage._model.sources)
    for stem in out.values():
        assert stem.sample_rate == rate and stem.samples.shape == x.shape
        assert stem.samples.dtype == torch.float32 and stem.device.type == "cpu"
    total = sum(out[n].numpy().astype(np.float64) for n in STEMS4)
    assert level_db(total - x) - level_db(x) < -100  # the residual went to `other`


def test_without_the_residual_random_stems_do_not_sum_back():
    rate = 44100
    x = stereo_mix(music(rate, 1.0))
    out = run_stage(Demucs(TINY, residual_stem=None), x, rate)
    total = sum(out[n].numpy().astype(np.float64) for n in STEMS4)
    assert level_db(total - x) - level_db(x) > -20  # so the reconstruction test above can fail


def test_demucs_stage_equals_apply_model_at_the_model_rate():
    """At 44.1 kHz stereo the stage adds only demucs's own normalisation around apply_model."""
    rate = 44100
    x = torch.from_numpy(stereo_mix(music(rate, 1.0)))
    stage = Demucs(TINY, residual_stem=None)
    out = run_stage(stage, x.numpy(), rate)
    backend = _demucs.get_backend()
    ref = x.mean(0)
    mean, std = float(ref.mean()), float(ref.std())
    with torch.no_grad():
        direct = backend.apply.apply_model(stage._model, ((x - mean) / std)[None], shifts=0, split=True,
                                           overlap=0.25, segment=0.5)[0] * std + mean / 4
    for i, name in enumerate(stage._model.sources):
        assert torch.allclose(out[name].samples, direct[i], atol=1e-5), name


def test_demucs_two_stems_and_seeded_shifts():
    rate = 32000
    x = stereo_mix(music(rate, 0.5))
    out = run_stage(Demucs(TINY, two_stems="vocals"), x, rate)
    assert tuple(out) == ("vocals", "no_vocals")
    assert np.abs(out["vocals"].numpy() + out["no_vocals"].numpy() - x).max() < 1e-5
    shifted = Demucs({**TINY, "shifts": 2})
    first, again, other_seed = (run_stage(shifted, x, rate, seed)["vocals"].numpy() for seed in (1, 1, 2))
    assert np.array_equal(first, again)
    assert np.abs(first - other_seed).max() > 1e-4  # the shifts really are random draws


def test_a_sliver_of_a_last_segment_does_not_break_the_model():
    """apply_model runs its last segment as it is; HDemucs fails on 4 samples or fewer."""
    stride = int(0.75 * int(44100 * 0.5))
    x = stereo_mix(music(44100, 1.0))[:, : 2 * stride + 3]  # the last segment would be 3 samples
    stage = Demucs(TINY)
    out = run_stage(stage, x, 44100)
    assert out["vocals"].samples.shape == x.shape
    assert _demucs.tail_padding(stage._model, x.shape[1], 0.5, 0.25) == 4096 - 3
    with torch.no_grad(), pytest.raises(ValueError):  # what the padding avoids
        stage._model(torch.zeros(1, 2, 3))


def test_demucs_parameters_are_checked_before_audio():
    with pytest.raises(ValueError, match="two_stems 'guitar'"):
        Demucs(model="htdemucs", two_stems="guitar")
    assert Demucs(model="htdemucs_6s", two_stems="guitar").output_names() == ("guitar", "no_guitar")
    assert len(Demucs(model="htdemucs_6s").output_names()) == 6
    with pytest.raises(ValueError, match="residual_stem 'other'"):
        Demucs(stems=["speech", "music"])
    with pytest.raises(ValueError):
        Demucs(overlap=1.5)


def test_the_model_loads_once_per_process_and_device():
    clear_model_cache()
    a, b = Demucs(TINY), Demucs({**TINY, "shifts": 1})
    a.ensure_loaded()
    b.ensure_loaded()
    assert a._model is b._model


# -- a local repo of real checkpoints ----------------------------------------------------------------

def save_like_demucs(model, path_stem: Path) -> Path:
    """What demucs.states.serialize_model + save_with_checksum write: `<sig>-<sha256[:8]>.th`.

    The class is pickled under the upstream path `demucs.htdemucs.HTDemucs`, as in Meta's files.
    """
    import hashlib
    import io

    args, kwargs = model._init_args_kwargs
    package = {"klass": type(model), "args": args, "kwargs": kwargs,
               "state": {k: v.half() for k, v in model.state_dict().items()},
               "training_args": {"dset": {"samplerate": model.samplerate}, "seed": 42}}
    cls = type(model)
    real_module = cls.__module__
    cls.__module__ = "demucs.htdemucs"
    try:
        buf = io.BytesIO()
        torch.save(package, buf)
    finally:
        cls.__module__ = real_module
    sig = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    path = path_stem.parent / f"{path_stem.name}-{sig}.th"
    path.write_bytes(buf.getvalue())
    return path


def tiny_htdemucs(seed: int):
    backend = _demucs.get_backend()
    HTDemucs = dict(backend.classes)["htdemucs"]
    torch.manual_seed(seed)
    model = HTDemucs(sources=list(STEMS4), channels=8, depth=2, t_layers=1, t_heads=2, nfft=512, dconv_comp=4,
                     segment=Fraction(3, 2), samplerate=32000)
    return model.eval()


@pytest.fixture
def repo(tmp_path):
    """A local repo with two tiny HTDemucs checkpoints (32 kHz) and a bag of both."""
    root = tmp_path / "repo"
    root.mkdir()
    for sig, seed in (("aaaa1111", 0), ("bbbb2222", 1)):
        save_like_demucs(tiny_htdemucs(seed), root / sig)
    (root / "tinybag.yaml").write_text(textwrap.dedent("""\
        models: ['aaaa1111', 'bbbb2222']
        weights: [[1., 1., 0., 1.], [1., 0., 1., 1.]]
        segment: 1.5
    """))
    return root


def test_repo_loads_real_checkpoints_safely_and_like_demucs_does(repo, offline):
    rate = 32000
    x = stereo_mix(music(rate, 1.0))
    stage = Demucs(model="aaaa1111", repo=str(repo), shifts=0, residual_stem=None)
    out = run_stage(stage, x, rate)
    assert type(stage._model).__name__ == "HTDemucs" and stage._model.samplerate == rate
    assert stage._model.segment == Fraction(3, 2)
    # demucs's own loader (LocalRepo, weights_only=False) builds the same model from the same file
    backend = _demucs.get_backend()
    reference = backend.pretrained.get_model("aaaa1111", repo=repo)
    for (name, a), (_, b) in zip(stage._model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    xt = torch.from_numpy(x)
    ref = xt.mean(0)
    mean, std = float(ref.mean()), float(ref.std())
    with torch.no_grad():
        direct = backend.apply.apply_model(reference, ((xt - mean) / std)[None], shifts=0, split=True,
                                           overlap=0.25)[0] * std + mean / 4
    assert torch.allclose(out["vocals"].samples, direct[3], atol=1e-5)
    bag = Demucs(model="tinybag", repo=str(repo), shifts=0)
    out = run_stage(bag, x[:1], 44100)
    assert type(bag._model).__name__ == "BagOfModels" and len(bag._model.models) == 2
    assert tuple(out) == STEMS4 and out["drums"].samples.shape == (1, x.shape[1])


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("PAYLOAD RAN",))

    root = tmp_path / "repo"
    root.mkdir()
    torch.save({"klass": Payload(), "args": (), "kwargs": {}, "state": {}}, root / "evil.th")
    with pytest.raises(StageError, match="refusing to load .*evil.th.*weights_only=True"):
        Demucs(model="evil", repo=str(root)).ensure_loaded()
    assert "PAYLOAD RAN" not in capsys.readouterr().out


def test_a_corrupt_checkpoint_is_named(repo):
    path = next(repo.glob("aaaa1111-*.th"))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StageError, match="corrupt"):
        Demucs(model="aaaa1111", repo=str(repo)).ensure_loaded()


def test_repo_without_the_model_says_what_it_holds(repo):
    with pytest.raises(StageError, match=r"has no model 'htdemucs'.*aaaa1111, bbbb2222, tinybag"):
        Demucs(model="htdemucs", repo=str(repo)).ensure_loaded()


# -- missing weights -------------------------------------------------------------------------------------

def test_missing_weights_give_one_message_with_every_way_out(offline):
    with pytest.raises(_demucs.WeightsUnavailable) as info:
        Demucs(model="htdemucs").ensure_loaded()
    message = str(info.value)
    hub = Path(offline / "torch_home" / "hub" / "checkpoints")
    for part in ("separate.demucs", "'htdemucs'", "955717e8-8726e21a.th", str(hub), "RESTOREKIT_OFFLINE",
                 "`repo`", "separate.hpss", "separate.auto"):
        assert part in message, part
    assert "\n" not in message
    with pytest.raises(_demucs.WeightsUnavailable, match="`download` is false"):
        Demucs(model="htdemucs_ft", download=False).ensure_loaded()


def test_cached_weights_are_found_without_the_network(offline):
    """A file in the torch hub cache counts as available; no download is attempted."""
    hub = offline / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "955717e8-8726e21a.th").write_bytes(b"")
    plan = _demucs.plan_model(_demucs.get_backend(), "htdemucs", None)
    assert plan.missing == [] and plan.files[0].path == hub / "955717e8-8726e21a.th"
    _demucs.ensure_weights(plan, download=True)  # nothing missing: no probe, no download


def test_unknown_model_names_the_known_ones():
    with pytest.raises(StageError, match=r"unknown Demucs model 'htdemux'. Did you mean 'htdemucs'\?"):
        Demucs(model="htdemux").ensure_loaded()


# -- separate.auto -------------------------------------------------------------------------------------

def warnings_of(caplog) -> list[str]:
    """The fallback warnings (the download, when tried, announces itself in a line of its own)."""
    return [r.getMessage() for r in caplog.records if r.name == "restorekit" and r.levelno == logging.WARNING
            and r.getMessage().startswith("separate.auto:")]


def assert_one_short_fallback_line(message: str, why: str) -> None:
    """What ran instead, why in a few words, and how to get Demucs, in one line of at most 25 words."""
    assert "\n" not in message and len(message.split()) <= 25, message
    assert message.startswith("separate.auto: used rough HPSS stems, not Demucs htdemucs"), message
    assert f"({why})" in message and "restorekit fetch-demucs htdemucs" in message, message


def test_auto_falls_back_to_hpss_and_says_so_in_one_short_line(offline, caplog):
    caplog.set_level(logging.INFO, logger="restorekit")
    rate = 32000
    x = stereo_mix(music(rate, 1.0))
    stage = Auto()  # htdemucs, not cached, RESTOREKIT_OFFLINE=1
    result = Pipeline([Node("stems", stage)], device="cpu").run(Audio(torch.from_numpy(x), rate))
    assert stage.choice == "separate.hpss"
    [warning] = warnings_of(caplog)
    assert_one_short_fallback_line(warning, "offline: RESTOREKIT_OFFLINE set")
    # the whole story (missing file, where it was looked for) is at INFO, shown with -v
    assert any(r.levelno == logging.INFO and "955717e8-8726e21a.th" in r.getMessage() for r in caplog.records)
    assert result.notes == [("stems: separated with separate.hpss (vocal method centre), not Demucs htdemucs: "
                             "offline: RESTOREKIT_OFFLINE set")]
    hpss = run_stage(Hpss(), x, rate)
    for name in STEMS4:
        assert torch.equal(result.outputs[name].samples, hpss[name].samples)


def test_the_fallback_line_is_logged_once_per_process_and_noted_for_every_file(offline, caplog):
    x = Audio(torch.from_numpy(stereo_mix(music(32000, 0.5))), 32000)
    notes = []
    for _ in range(2):  # two pipelines (the Python API in a loop), two files each
        pipeline = Pipeline([Node("stems", Auto())], device="cpu")
        notes += [pipeline.run(x).notes for _ in range(2)]
    assert len(warnings_of(caplog)) == 1
    assert all(len(n) == 1 and n[0].startswith("stems: separated with separate.hpss") for n in notes)


def test_missing_weights_are_downloaded_when_allowed(online):
    net = online(FakeNet())
    plan = _demucs.plan_model(_demucs.get_backend(), "htdemucs", None)
    _demucs.ensure_weights(plan, download=True)
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert net.probes and len(net.fetches) == 1
    url, dst, checksum, progress = net.fetches[0]
    assert url == "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"
    assert dst == hub / "955717e8-8726e21a.th" and checksum == "8726e21a"
    assert progress is False  # not a terminal: no progress bar in logs
    assert plan.missing == [] and plan.files[0].path == hub / "955717e8-8726e21a.th"
    # cached now: found without the network
    again = _demucs.plan_model(_demucs.get_backend(), "htdemucs", None)
    _demucs.ensure_weights(again, download=True)
    assert len(net.fetches) == 1


@pytest.mark.parametrize("forbid", ["RESTOREKIT_OFFLINE", "HF_HUB_OFFLINE", "download: false"])
def test_no_download_is_attempted_when_forbidden(online, monkeypatch, caplog, forbid):
    net = online(FakeNet())
    if forbid == "download: false":
        stage, why = Auto(download=False), "not cached, download: false"
    else:
        monkeypatch.setenv(forbid, "1")
        stage, why = Auto(), f"offline: {forbid} set"
    stage.place("cpu")
    assert stage.choice == "separate.hpss" and net.probes == [] and net.fetches == []
    [warning] = warnings_of(caplog)
    assert_one_short_fallback_line(warning, why)


def test_a_failed_download_falls_back_at_once_and_is_not_retried(online, caplog):
    net = online(FakeNet(fail=OSError("connection reset by peer")))
    start = time.perf_counter()
    first = Auto()
    first.place("cpu")
    assert time.perf_counter() - start < 2.0
    assert first.choice == "separate.hpss" and len(net.fetches) == 1
    [warning] = warnings_of(caplog)
    assert_one_short_fallback_line(warning, "download failed")
    assert any(r.getMessage().startswith("separate.demucs: downloading the weights of Demucs model 'htdemucs' once")
               for r in caplog.records)
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert list(hub.iterdir()) == []  # nothing half-written left behind
    second = Auto()  # same process: no second attempt, no second warning
    second.place("cpu")
    assert second.choice == "separate.hpss" and len(net.fetches) == 1 and len(warnings_of(caplog)) == 1


def test_without_a_network_nothing_is_fetched_and_the_line_says_so(online, caplog):
    net = online(FakeNet(reachable=False))
    for _ in range(2):
        Auto().place("cpu")
    assert net.probes and net.fetches == []
    [warning] = warnings_of(caplog)
    assert_one_short_fallback_line(warning, "no network")


def test_the_real_probe_is_bounded_and_asked_once_per_host(offline, monkeypatch):
    """A name lookup or TLS handshake that hangs costs the probe's timeout, once per process."""
    import urllib.request

    calls = []

    def hanging_urlopen(request, timeout=None):
        calls.append(request.full_url)
        time.sleep(2)
        raise OSError("too late")

    monkeypatch.setattr(urllib.request, "urlopen", hanging_urlopen)
    start = time.perf_counter()
    reason = _demucs.probe("https://dl.fbaipublicfiles.com/demucs/x.th", timeout=0.3)
    assert time.perf_counter() - start < 1.0
    assert reason == "no answer from dl.fbaipublicfiles.com within 0.3 s"
    start = time.perf_counter()
    assert _demucs.probe("https://dl.fbaipublicfiles.com/demucs/y.th", timeout=0.3) == reason
    assert time.perf_counter() - start < 0.05 and len(calls) == 1
    assert _demucs.PROBE_TIMEOUT_S <= 3.0


def test_fetch_demucs_command_downloads_ahead(online, monkeypatch):
    from click.testing import CliRunner
    from restorekit.cli import cli

    net = online(FakeNet())
    result = CliRunner().invoke(cli, ["fetch-demucs"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(net.fetches) == 1 and "955717e8-8726e21a.th" in result.output
    monkeypatch.setenv("RESTOREKIT_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["fetch-demucs", "htdemucs_ft"])
    assert result.exit_code == 1 and "RESTOREKIT_OFFLINE is set" in result.output
    assert len(net.fetches) == 1


def test_auto_uses_demucs_when_it_can(offline):
    stage = Auto(TINY)
    result = Pipeline([Node("stems", stage)], device="cpu").run(Audio(torch.from_numpy(stereo_mix(music(44100, 0.5))), 44100))
    assert stage.choice.startswith("separate.demucs (model demucs_unittest")
    assert result.notes == [f"stems: separated with {stage.choice}"]


def test_auto_refuses_stems_hpss_cannot_stand_in_for():
    with pytest.raises(ValueError, match="use separate.demucs"):
        Auto(model="htdemucs_6s")
    assert Auto(model="htdemucs_6s", two_stems="vocals").output_names() == ("vocals", "no_vocals")


# -- the graph end to end through the CLI --------------------------------------------------------------

def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "restorekit", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300, check=False)


def offline_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RESTOREKIT_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch_home"), HOME=str(tmp_path / "home"),
               OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_stems_pipeline_writes_one_file_per_stem(tmp_path):
    rate = 32000
    x = stereo_mix(music(rate, 1.0))
    sf.write(tmp_path / "song.wav", x.T, rate, subtype="FLOAT")
    run = cli("run", str(ROOT / "pipelines" / "stems.yaml"), str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"),
              "--set", "stems.model=demucs_unittest", "--set", "stems.segment_s=0.5", "--bit-depth", "32",
              env=offline_env(tmp_path))
    assert run.returncode == 0, run.stderr
    stems = {name: sf.read(tmp_path / "out" / f"song.{name}.wav", always_2d=True) for name in STEMS4}
    for data, file_rate in stems.values():
        assert file_rate == rate and data.shape == x.T.shape
    total = sum(data for data, _ in stems.values())
    assert level_db(total - x.T) - level_db(x) < -100
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    ran = "stems: separated with separate.demucs (model demucs_unittest, demucs)"
    assert manifest["files"][0]["notes"][:1] == [ran]
    assert manifest["files"][0]["notes"][1].startswith("the whole file was held in memory: stage 'stems'")


@pytest.mark.slow
def test_remix_graph_runs_through_the_cli_and_reconstructs_the_mix(tmp_path):
    """separate -> untouched stems -> mix.sum, mono 44.1 kHz: the output is the input again."""
    rate = 44100
    x = stereo_mix(music(rate, 1.0))[:1]
    sf.write(tmp_path / "song.wav", x.T, rate, subtype="FLOAT")
    (tmp_path / "remix.yaml").write_text(textwrap.dedent("""\
        name: remix
        stages:
          - id: stems
            use: separate.demucs
            with: {model: demucs_unittest, segment_s: 0.5}
          - id: remix
            use: mix.sum
            input: [stems.drums, stems.bass, stems.other, stems.vocals]
    """))
    run = cli("run", str(tmp_path / "remix.yaml"), str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"),
              "--bit-depth", "32", env=offline_env(tmp_path))
    assert run.returncode == 0, run.stderr
    y, file_rate = sf.read(tmp_path / "out" / "song.wav", always_2d=True)
    assert file_rate == rate and y.shape == x.T.shape
    assert level_db(y - x.T) - level_db(x) < -100


@pytest.mark.slow
def test_missing_weights_through_the_cli_is_one_clean_message(tmp_path):
    sf.write(tmp_path / "song.wav", stereo_mix(music(32000, 0.5)).T, 32000)
    (tmp_path / "demucs.yaml").write_text("stages:\n  - id: stems\n    use: separate.demucs\n"
                                          "  - use: mix.sum\n    input: [stems.drums, stems.bass, stems.other, "
                                          "stems.vocals]\n")
    run = cli("run", str(tmp_path / "demucs.yaml"), str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"),
              env=offline_env(tmp_path))
    assert run.returncode == 2  # a stage that cannot load: a pipeline error, before any file
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "separate.demucs: the weights of Demucs model 'htdemucs'" in lines[0]
    assert "separate.hpss" in lines[0] and "repo" in lines[0]


def test_graph_validation_knows_the_stem_names_before_any_audio():
    text = textwrap.dedent("""\
        stages:
          - id: stems
            use: separate.auto
            with: {two_stems: vocals}
          - use: mix.sum
            input: [stems.vocals, stems.drums]
    """)
    with pytest.raises(Exception, match=r"no output 'drums'; its outputs are vocals, no_vocals"):
        pipeline_from_text(text)
