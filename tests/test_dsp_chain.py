"""pipelines/dsp_chain.yaml: the published chain, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from click.testing import CliRunner
from scipy import signal

from restorekit.cli import cli
from restorekit_tools.demo import make_clean_clip

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ROOT / "pipelines" / "dsp_chain.yaml"
IN_RATE = 32000


def test_file_shows_the_published_chain():
    spec = yaml.safe_load(CHAIN.read_text())
    stages = [(s["id"], s["use"], s.get("with", {})) for s in spec["stages"]]
    assert stages == [
        ("gate", "denoise.spectral_gate", {"stationary": True, "prop_decrease": 0.8, "detect_noise_floor": True}),
        ("bwe", "bwe.harmonic", {"sample_rate_hz": 44100}),
        ("compress", "dynamics.compress", {"threshold_db": -20.0, "ratio": 4.0, "attack_ms": 10.0,
                                           "release_ms": 100.0, "min_peak_to_loudness_db": 15.0}),
        ("eq", "eq.shape", {"highpass_hz": 20.0, "lowpass_hz": 20000.0, "air_low_hz": 10000.0,
                            "air_high_hz": 16000.0, "air_blend": 0.15}),
        ("normalize", "master.normalize", {"mode": "peak", "target_dbfs": -1.0}),
        ("dither", "master.dither", {"bit_depth": 24, "noise_shaping": "none"}),
    ]
    assert "bit_depth" not in spec and "sample_rate" not in spec  # the dither and bwe stages decide them


def musicgen_like_clip(seconds: float, channels: int, seed: int) -> np.ndarray:
    """Synthesized music plus noise, all band-limited at 8 kHz, at 32 kHz: (frames, channels)."""
    rng = np.random.default_rng(seed)
    music = make_clean_clip(seconds, seed, rate=IN_RATE).astype(np.float64)
    rows = [np.roll(music, 331 * c) + 0.003 * rng.standard_normal(len(music)) for c in range(channels)]
    sos = signal.butter(10, 8000, fs=IN_RATE, output="sos")
    x = signal.sosfilt(sos, np.array(rows), axis=1) * 0.5
    return x.T.astype(np.float32)


def test_chain_runs_end_to_end_through_the_cli(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, channels in (("mono", 1), ("stereo", 2)):
        sf.write(inputs / f"{name}.wav", musicgen_like_clip(2.0, channels, seed=channels), IN_RATE, subtype="PCM_16")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["-q", "run", str(CHAIN), str(inputs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name, channels in (("mono", 1), ("stereo", 2)):
        path = out / f"{name}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.subtype, info.channels) == (44100, "PCM_24", channels)
        assert abs(info.duration - 2.0) < 0.01
        y, _ = sf.read(str(path), dtype="float64")
        assert abs(20 * np.log10(np.abs(y).max()) + 1.0) <= 0.1, f"{name}: peak is not -1 dBFS"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output"]["bit_depth"] == 24
    assert all(f["status"] == "ok" for f in manifest["files"])
    assert list(manifest["files"][0]["timings_s"]) == ["gate", "bwe", "compress", "eq", "normalize", "dither"]
    for f in manifest["files"]:  # gate and compressor say what they measured and whether they acted
        assert sum(n.startswith(("gate: noise floor found", "gate: no steady noise floor")) for n in f["notes"]) == 1
        assert sum(n.startswith("compress: peak-to-loudness ratio") for n in f["notes"]) == 1
