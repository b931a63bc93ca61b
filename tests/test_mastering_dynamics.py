"""Mastering that keeps dynamics: the loudness limiter budget, DC removal, float input above full scale.

Figures in docs/stages/master.md come from the same kind of signals (synthesized here; no audio
files are committed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from restorekit.audio import Audio
from restorekit.cli import cli
from restorekit_plugins.dynamics import Limit
from restorekit_plugins.master import DCRemove, Normalize, integrated_loudness, true_peak

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
BUDGET_TOL_DB = 0.25  # the limiter's own true-peak detector against ours (measured: 1.98-2.07 dB taken)


def audio(x, rate=RATE) -> Audio:
    return Audio.from_numpy(np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32), rate)


def db(v: float) -> float:
    return float(20 * np.log10(v))


def tp_db(x) -> float:
    return db(true_peak(np.atleast_2d(x)))


def peaky(seconds=4.0, lufs=-23.0, click_gain=3.0, rate=RATE, seed=0) -> np.ndarray:
    """Stereo tones and noise with short clicks every 250 ms: a high crest factor, at `lufs`."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros((2, n))
    for k, f in enumerate((110.0, 220.0, 330.0, 660.0)):
        x += 0.1 / (k + 1) * np.stack([np.sin(2 * np.pi * f * t + k), np.sin(2 * np.pi * 1.002 * f * t + 2 * k)])
    x += 0.01 * rng.standard_normal((2, n))
    length = int(0.05 * rate)
    tt = np.arange(length) / rate
    click = np.exp(-tt * 600) * np.sin(2 * np.pi * 2500 * tt + 0.3)
    for start in range(0, n - length, int(0.25 * rate)):
        x[:, start:start + length] += click_gain * click * np.array([[1.0], [0.9]])
    x *= 10 ** ((lufs - integrated_loudness(x, rate)) / 20)
    return x.astype(np.float32)


# -- master.normalize: the limiter budget -------------------------------------------------------------

def normalize_then_limit(x, **params):
    stage = Normalize(mode="lufs", target_lufs=-14.0, **params)
    normalized = stage.process(audio(x)).numpy()
    limited = Limit(ceiling_db=-1.0, true_peak=True).process(audio(normalized)).numpy()
    return normalized, limited, stage.take_notes()


def test_budget_limits_what_the_limiter_takes_off_the_peaks():
    x = peaky()
    tp_in = tp_db(x)
    assert -3.0 < tp_in < -1.0  # -23 LUFS with peaks at -1.6 dBTP: at -14 LUFS the limiter would take 8.4 dB
    normalized, limited, notes = normalize_then_limit(x)
    gain_db = db(np.abs(normalized).max() / np.abs(x).max())
    taken_db = tp_in + gain_db - tp_db(limited)  # what the limiter took off the true peak
    assert taken_db <= 2.0 + BUDGET_TOL_DB
    assert tp_db(normalized) == pytest.approx(-1.0 + 2.0, abs=0.01)  # the budget put the peak at ceiling + 2 dB
    reached = integrated_loudness(normalized, RATE)
    assert reached == pytest.approx(-23.0 + (1.0 - tp_in), abs=0.05)
    budget = next(n for n in notes if n.startswith("limiter budget"))
    assert f"normalized to {reached:.2f} LUFS instead of -14 LUFS" in budget
    assert "max_peak_reduction_db = 2 dB" in budget


def test_without_a_budget_the_limiter_takes_much_more():
    """The old behaviour (no budget): the target is reached and the limiter squashes the peaks."""
    x = peaky()
    normalized, limited, notes = normalize_then_limit(x, max_peak_reduction_db=None)
    assert integrated_loudness(normalized, RATE) == pytest.approx(-14.0, abs=0.05)
    taken_db = tp_db(normalized) - tp_db(limited)
    assert taken_db > 6.0  # measured 8.4 dB
    assert not any("limiter budget" in n for n in notes)


def test_budget_leaves_a_file_with_headroom_alone():
    x = peaky(click_gain=0.2)  # low crest factor: at -14 LUFS the true peak stays below ceiling + 2 dB
    normalized, _, notes = normalize_then_limit(x)
    assert integrated_loudness(normalized, RATE) == pytest.approx(-14.0, abs=0.05)
    assert not any("limiter budget" in n for n in notes)


def test_budget_also_applies_when_the_level_is_lowered():
    x = peaky(lufs=-12.0) * np.float32(10 ** (4 / 20))  # -8 LUFS, true peak above 0 dBTP (a float file)
    normalized, _, notes = normalize_then_limit(x)
    assert tp_db(normalized) == pytest.approx(1.0, abs=0.01)
    assert integrated_loudness(normalized, RATE) < -14.0 - 1.0
    assert any(n.startswith("limiter budget") for n in notes)


# -- master.dc_remove ---------------------------------------------------------------------------------

def tones(seconds=6.0, rate=RATE, freqs=(20.0, 30.0, 50.0, 100.0, 1000.0, 10000.0)) -> tuple[np.ndarray, np.ndarray]:
    """Stereo sines (sub-bass included) plus a little noise, and the time axis."""
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(0.08 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)) + 0.01 * rng.standard_normal(t.size)
    return np.stack([x, np.roll(x, 777)]).astype(np.float32), t


def amplitude(x, t, f) -> float:
    """Amplitude of the sine at `f` Hz, measured away from the ends (whole periods of every tone)."""
    keep = slice(RATE, RATE * 5)
    return float(2 * np.abs(np.mean(x[keep] * np.exp(-2j * np.pi * f * t[keep]))))


def dc_remove(x, **params):
    stage = DCRemove(**params)
    out = stage.process(audio(x))
    return out, stage.take_notes()


def test_dc_offset_and_drift_are_removed_and_the_band_above_20_hz_is_kept():
    clean, t = tones()
    dc = 0.2 + 0.05 * np.sin(2 * np.pi * 0.3 * t)  # offset plus a slow drift, left channel only
    x = clean + np.stack([dc, np.zeros_like(dc)]).astype(np.float32)
    out, notes = dc_remove(x)
    y = out.numpy()
    assert abs(float(y[0].mean())) < 1e-3  # measured 5e-5
    inner = slice(RATE // 2, -RATE // 2)
    assert np.abs(y[0, inner] - clean[0, inner]).max() < 2e-3  # measured 3e-4 (the noise below 5 Hz goes too)
    for f in (20.0, 30.0, 50.0, 100.0, 1000.0, 10000.0):
        change = db(amplitude(y[0], t, f) / amplitude(clean[0], t, f))
        assert abs(change) < 0.05, f"{f} Hz changed by {change:.4f} dB"  # measured 0.0002 dB at 20 Hz
    assert np.array_equal(y[1], x[1])  # the channel without DC is untouched
    assert re.search(r"channel 0: removed DC offset \+0\.2\d* \(-1[34]\.\d dBFS\) and drift 0\.03\d* RMS", notes[0])
    assert "channel 1" in notes[1] and "unchanged" in notes[1]
    again, notes = dc_remove(y)  # what is left is below the threshold
    assert again.numpy() is y or np.array_equal(again.numpy(), y)
    assert notes[0].startswith("no DC offset or drift found")


def test_dc_free_audio_passes_bit_identical():
    x, _ = tones(seconds=3.0)
    out, notes = dc_remove(x)
    assert np.array_equal(out.numpy(), x)
    assert len(notes) == 1 and notes[0].startswith("no DC offset or drift found")
    assert "threshold -60 dBFS" in notes[0]


def test_strong_sub_bass_is_not_taken_for_drift():
    t = np.arange(4 * RATE) / RATE
    x = (0.5 * np.sin(2 * np.pi * 25 * t) + 0.3 * np.sin(2 * np.pi * 41 * t)).astype(np.float32)[None]
    out, notes = dc_remove(x)
    assert np.array_equal(out.numpy(), x) and notes[0].startswith("no DC offset")


def test_dc_remove_blocks_equal_whole_and_short_clips_pass():
    clean, t = tones(seconds=2.0)
    x = clean + np.float32(0.1)
    whole = DCRemove().process(audio(x)).numpy()
    stage = DCRemove()
    stage.block_frames = 1001
    assert np.abs(stage.process(audio(x)).numpy() - whole).max() < 1e-7
    short = x[:, : RATE // 10]  # 0.1 s: shorter than 1/cutoff_hz = 0.2 s
    out, notes = dc_remove(short)
    assert np.array_equal(out.numpy(), short) and "shorter than 1/cutoff_hz" in notes[0]


def test_dc_remove_params_are_validated():
    from pydantic import ValidationError

    for bad in ({"cutoff_hz": 0.5}, {"cutoff_hz": 25.0}, {"threshold_dbfs": 3.0}):
        with pytest.raises(ValidationError):
            DCRemove(**bad)


# -- float input above full scale: the output bit depth -------------------------------------------------

def float_input(path: Path, rate=32000, seconds=1.5, peak=1.06) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 3000 * t)
    x = x + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    x = np.stack([x, np.roll(x, 100)], axis=1)
    x *= peak / np.abs(x).max()
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), rate, subtype="FLOAT")
    return path


def assert_not_clipped(path: Path, min_peak=1.0):
    y, _ = sf.read(path, always_2d=True, dtype="float32")
    assert sf.info(str(path)).subtype == "FLOAT"
    assert np.abs(y).max() > min_peak
    assert not np.any(np.abs(y) == 1.0), "samples sit flat at full scale"


def run_in_process(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def gain_yaml(tmp_path):
    path = tmp_path / "gain.yaml"
    path.write_text("stages:\n  - use: util.gain\n")
    return path


def test_float_input_above_full_scale_is_written_as_float(tmp_path, gain_yaml):
    src = float_input(tmp_path / "in" / "loud.wav")
    result = run_in_process("run", gain_yaml, src, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert_not_clipped(tmp_path / "out" / "loud.wav", min_peak=1.05)
    assert "clipped" not in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["output"]["bit_depth"] == 24 and manifest["output"]["float_input_bit_depth"] == 32
    assert "loud.wav" in manifest["output"]["bit_depth_reason"]
    entry = manifest["files"][0]
    assert entry["output_bit_depth"] == 32
    assert any(n.startswith("written as 32-bit float") and "+0.51 dBFS" in n for n in entry["notes"])


def test_a_set_depth_wins_and_the_clipping_is_named(tmp_path, gain_yaml):
    """What the old default did to such a file: 24-bit PCM, clipped (and named in the notes)."""
    src = float_input(tmp_path / "in" / "loud.wav")
    result = run_in_process("run", gain_yaml, src, "-o", tmp_path / "out", "--bit-depth", "24")
    assert result.exit_code == 0 and "clipped to full scale" in result.output
    y, _ = sf.read(tmp_path / "out" / "loud.wav", always_2d=True)
    assert sf.info(str(tmp_path / "out" / "loud.wav")).subtype == "PCM_24" and np.abs(y).max() <= 1.0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "float_input_bit_depth" not in manifest["output"] and manifest["files"][0]["output_bit_depth"] == 24
    flac = run_in_process("run", gain_yaml, src, "-o", tmp_path / "flac", "--format", "flac")
    assert flac.exit_code == 0 and "--format wav --bit-depth 32" in flac.output  # FLAC cannot hold float


def test_inputs_within_full_scale_keep_the_default_depth(tmp_path, gain_yaml):
    src = float_input(tmp_path / "in" / "quiet.wav", peak=0.9)
    pcm = tmp_path / "in" / "pcm.wav"
    sf.write(pcm, sf.read(src)[0] * 0.5, 32000, subtype="PCM_16")
    assert run_in_process("run", gain_yaml, tmp_path / "in", "-o", tmp_path / "out").exit_code == 0
    for name in ("quiet.wav", "pcm.wav"):
        assert sf.info(str(tmp_path / "out" / name)).subtype == "PCM_24"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["output"] == {"format": "wav", "bit_depth": 24, "seed": 0}


def cli_subprocess(*args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RESTOREKIT_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch_home"), HOME=str(tmp_path / "home"),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "restorekit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["unet", "crnn"])
def test_restorers_keep_float_input_above_full_scale(tmp_path, pipeline):
    src = float_input(tmp_path / "song.wav")
    run = cli_subprocess("run", pipeline, src, "-o", tmp_path / "out", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "clipped" not in run.stderr
    assert_not_clipped(tmp_path / "out" / "song.wav")  # measured peaks: unet 1.035, crnn 1.109


@pytest.mark.slow
def test_stems_keep_float_input_above_full_scale(tmp_path):
    src = float_input(tmp_path / "song.wav")
    run = cli_subprocess("run", "stems", src, "-o", tmp_path / "out", "--set", "stems.download=false",
                         tmp_path=tmp_path)  # no Demucs weights here: the weightless separate.hpss runs
    assert run.returncode == 0, run.stderr
    stems = []
    for name in ("drums", "bass", "other", "vocals"):
        path = tmp_path / "out" / f"song.{name}.wav"
        assert sf.info(str(path)).subtype == "FLOAT"
        stems.append(sf.read(path, always_2d=True, dtype="float32")[0])
    total = sum(stems)
    x, _ = sf.read(src, always_2d=True, dtype="float32")
    assert np.abs(total).max() > 1.05 and np.abs(total - x).max() < 1e-4  # the stems still sum to the input
    assert not any(np.any(np.abs(s) == 1.0) for s in stems)


# -- the figures in docs/stages/master.md: python tests/test_mastering_dynamics.py ----------------------

def raw_level_file(seconds=20.0, lufs=-20.0, peak=1.06, dc=0.1) -> np.ndarray:
    """Raw generator-like output: tones, kick/snare bodies and clicks at `lufs`, float peak `peak`, DC `dc`."""
    rng = np.random.default_rng(0)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    bed = 0.01 * rng.standard_normal((2, n))
    for k, f in enumerate((110, 165, 220, 330, 440, 660)):
        amp = 0.1 / (k + 1) * (1 + 0.5 * np.sin(2 * np.pi * 0.25 * t + k))
        bed += amp * np.stack([np.sin(2 * np.pi * f * t + k), np.sin(2 * np.pi * f * 1.002 * t + 2 * k)])
    body, clicks = np.zeros((2, n)), np.zeros((2, n))
    length = int(0.2 * RATE)
    tt = np.arange(length) / RATE
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12)
    snare = rng.standard_normal(length) * np.exp(-tt * 25)
    click = np.exp(-tt * 600) * np.sin(2 * np.pi * 2500 * tt + 0.3)
    for i, start in enumerate(range(0, n - length, int(0.25 * RATE))):
        body[:, start:start + length] += 0.15 * (kick if i % 2 == 0 else 0.6 * snare) * np.array([[1.0], [0.8]])
        clicks[:, start:start + length] += (1.0 if i % 8 else 1.5) * click * np.array([[1.0], [0.9]])
    lo, hi = -3.0, 2.0  # log10 of the clicks' gain, bisected until the peak at `lufs` is `peak`
    for _ in range(40):
        mid = (lo + hi) / 2
        x = bed + body + 10 ** mid * clicks
        x *= 10 ** ((lufs - integrated_loudness(x, RATE)) / 20)
        lo, hi = (mid, hi) if np.abs(x + dc).max() < peak else (lo, mid)
    return (x + dc).astype(np.float32)


def envelope_spread_db(x, window_s=0.05) -> float:
    """Std of 20 log10 of the RMS over consecutive 50 ms windows (channels together, DC removed first)."""
    x = x - x.mean(axis=1, keepdims=True)
    w = int(window_s * RATE)
    k = x.shape[1] // w
    rms = np.sqrt(np.mean(np.square(x[:, :k * w].reshape(x.shape[0], k, w).astype(np.float64)), axis=(0, 2)))
    return float(np.std(20 * np.log10(np.maximum(rms, 1e-9))))


def main() -> None:
    from restorekit_plugins.dynamics import Compress

    x = raw_level_file()
    print(f"input: {integrated_loudness(x, RATE):.2f} LUFS, sample peak {np.abs(x).max():.3f}, "
          f"true peak {tp_db(x):+.2f} dBTP, spread {envelope_spread_db(x):.2f} dB")
    compress = {"threshold_db": -18.0, "ratio": 2.0, "attack_ms": 15.0, "release_ms": 150.0}
    old = {"tolerance_lu": 0.0, "max_peak_reduction_db": None}
    for name, first, params in (("before", [], old), ("after", [DCRemove()], {}),
                                ("before, compress first", [Compress(**compress)], old),
                                ("after, compress first", [DCRemove(), Compress(**compress)], {})):
        a = audio(x)
        for stage in first:
            a = stage.process(a)
        normalized = Normalize(mode="lufs", target_lufs=-14.0, **params).process(a).numpy()
        y = Limit(ceiling_db=-1.0, true_peak=True).process(audio(normalized)).numpy()
        print(f"{name}: limiter takes {tp_db(normalized) - tp_db(y):.2f} dB off the true peak; output "
              f"{integrated_loudness(y, RATE):.2f} LUFS, spread {envelope_spread_db(y):.2f} dB")


if __name__ == "__main__":
    main()
