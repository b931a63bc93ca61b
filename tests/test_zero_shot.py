"""pipelines/zero_shot.yaml: its graph, and a run end to end through the CLI (offline, no weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from restorekit.graph import Ref
from restorekit.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
ZERO_SHOT = ROOT / "pipelines" / "zero_shot.yaml"
STEM_CHAINS = {  # stem -> the stage ids of its chain, in order
    "vocals": ["vocal_gate", "deess", "vocal_eq"],
    "drums": ["drums_gate", "drums_eq"],
    "bass": ["bass_gate", "bass_eq"],
    "other": ["other_gate", "other_eq"],
}
MASTER = ["remix", "bwe", "compress", "normalize", "limit", "dither"]


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(ZERO_SHOT)


def inputs_of(pipeline, node_id: str) -> list[Ref]:
    index = [n.id for n in pipeline.nodes].index(node_id)
    return list(pipeline.graph.inputs[index])


def test_graph_separates_cleans_each_stem_remixes_and_masters(pipeline):
    uses = {n.id: n.stage.id for n in pipeline.nodes}
    assert uses["stems"] == "separate.auto"
    assert pipeline.stage("stems").params.model == "htdemucs"
    for stem, chain in STEM_CHAINS.items():
        assert inputs_of(pipeline, chain[0]) == [Ref("stems", stem)]
        for before, after in pairwise(chain):
            assert inputs_of(pipeline, after) == [Ref(before)]
    assert inputs_of(pipeline, "remix") == [Ref(chain[-1]) for chain in STEM_CHAINS.values()]
    for before, after in pairwise(MASTER):
        assert inputs_of(pipeline, after) == [Ref(before)]
    assert [uses[i] for i in MASTER] == ["mix.sum", "bwe.harmonic", "dynamics.compress", "master.normalize",
                                         "dynamics.limit", "master.dither"]
    assert pipeline.nodes[pipeline.graph.output].id == "dither" and pipeline.output_bit_depth() == 24


def test_vocals_get_voice_enhancement_and_the_rest_light_cleanup(pipeline):
    gate = pipeline.stage("vocal_gate")
    assert gate.id == "denoise.spectral_gate" and gate.params.stationary is False
    assert pipeline.stage("deess").id == "vocal.deess"
    eq = pipeline.stage("vocal_eq")
    assert eq.id == "eq.shape" and any(2000 <= p.freq_hz <= 5000 and p.gain_db > 0 for p in eq.params.peaks)
    for stem in ("drums", "bass", "other"):
        light = pipeline.stage(f"{stem}_gate")
        assert light.params.stationary is True
        assert light.params.prop_decrease <= 0.5 < gate.params.prop_decrease
    assert pipeline.stage("bwe").params.sample_rate_hz == 44100
    assert pipeline.stage("normalize").params.target_lufs == -14.0


def test_the_shipped_file_validates():
    run = subprocess.run([sys.executable, "-m", "restorekit", "validate", str(ZERO_SHOT)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr


def loudness_lufs(x: np.ndarray, rate: int) -> float:
    import pyloudnorm

    return float(pyloudnorm.Meter(rate).integrated_loudness(x))


@pytest.mark.slow
@pytest.mark.parametrize("separator", ["hpss", "demucs_unittest"])
def test_runs_end_to_end_through_the_cli(tmp_path, separator):
    """MusicGen-like input (32 kHz mono, 8 kHz bandwidth, noise) becomes 44.1 kHz, -14 LUFS, 24-bit."""
    from restorekit.demo import make_demo_clip

    clip = make_demo_clip(duration_s=2.0)
    sf.write(tmp_path / "song.wav", clip.numpy().T, clip.sample_rate, subtype="FLOAT")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RESTOREKIT_OFFLINE="1", TORCH_HOME=str(tmp_path / "torch_home"), HOME=str(tmp_path / "home"),
               OMP_NUM_THREADS="1")  # tiny workloads: one thread beats two contended ones
    extra = [] if separator == "hpss" else ["--set", "stems.model=demucs_unittest", "--set", "stems.segment_s=1",
                                            "--set", "stems.shifts=0"]
    run = subprocess.run([sys.executable, "-m", "restorekit", "run", str(ZERO_SHOT), str(tmp_path / "song.wav"),
                          "-o", str(tmp_path / "out"), *extra],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    info = sf.info(str(tmp_path / "out" / "song.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_24")
    y, rate = sf.read(tmp_path / "out" / "song.wav", always_2d=True)
    assert y.shape[0] == pytest.approx(2.0 * 44100, abs=2)
    assert loudness_lufs(y, rate) == pytest.approx(-14.0, abs=1.0)
    assert 20 * np.log10(np.abs(y).max()) <= -0.9
    notes = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"][0]["notes"]
    ran = [n for n in notes if n.startswith("stems: separated with")]
    assert len(ran) == 1
    assert ran[0].startswith("stems: separated with separate.hpss" if separator == "hpss"
                             else "stems: separated with separate.demucs (model demucs_unittest")
    if separator == "hpss":
        assert "using separate.hpss" in run.stderr  # the warning says which ran, and why
